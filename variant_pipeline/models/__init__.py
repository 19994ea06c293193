"""The model layer: the registry of model families, their loaders (offline by default), a
load-once cache, device/dtype, the tiny offline bundle, and the Ray Serve layer that serves the
families outside the runs (serving.py, serve_client.py, ray_head.py).

Importing the package or its ``registry`` imports no model library (torch, transformers, ...):
the loader modules do, and only when a model is loaded. Always ``import variant_pipeline`` first:
it sets the offline switches.
"""
