"""The model layer: the registry of model families, their loaders (offline by default), a
load-once cache, device/dtype, the tiny offline bundle, and the Ray Serve layer that serves the
families outside the runs (serving.py, serve_client.py, ray_head.py).

Importing the package or its ``registry`` imports no model library (torch, transformers, ...):
the loader modules do, and only when a model is loaded; the registry's loaders and builders set
the offline switches (``config.apply_offline_defaults``) before they import one. Code that imports
a loader module directly calls ``apply_offline_defaults()`` first.
"""
