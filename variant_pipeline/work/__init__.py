"""Pure stage work: typed inputs in, typed outputs out; no Dagster, no SQL."""
