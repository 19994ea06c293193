"""Sensors: the outbox sensor launches runs from pipeline_events; the continuation sensor carries a
hand-started stage on downstream."""
