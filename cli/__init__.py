"""The `lco` console script: a thin dispatcher over the service, the workers and the core."""
