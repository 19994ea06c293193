"""variant_pipeline: a Dagster-orchestrated, event-driven multi-model ad-image pipeline.

Importing it, or any of its modules but the code location (``definitions``), changes nothing in the
process: the entry points call ``config.apply_offline_defaults()`` (the CLI, the Dagster code
location, the model loaders and builders before they import a model library).
"""
