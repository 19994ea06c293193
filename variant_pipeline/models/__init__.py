"""The model layer: the registry of model families, their loaders (offline by default), a
load-once cache, device/dtype and the tiny offline bundle.

Importing the package or its ``registry`` imports no model library (torch, transformers, ...):
the loader modules do, and only when a model is loaded. Always ``import variant_pipeline`` first:
it sets the offline switches.
"""
