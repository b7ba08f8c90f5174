"""The training core: LCO and baseline policy losses, RL and SFT trainers, rollouts, checkpoints.

A plain library: it takes a validated job spec (`lco_spec.JobSpec`) and callbacks, and runs.
It knows nothing of HTTP, databases or Celery. Importing this package does not import torch;
the modules that need it do.
"""
