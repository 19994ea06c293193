"""What an operator runs beside the pipeline: the Prometheus endpoint, the failure notices and
``doctor``. Light, like the sensors: nothing here loads a model or runs stage work."""
