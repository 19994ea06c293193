"""variant_pipeline: a Dagster-orchestrated, event-driven multi-model ad-image pipeline."""

from variant_pipeline.config import apply_offline_defaults

# No network at import or run time unless the user opts in (VP_ALLOW_NETWORK=1): the model
# libraries read these switches when they are imported, so they are set before anything else.
apply_offline_defaults()
