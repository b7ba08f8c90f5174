"""The control plane shared by the API and the workers: settings, database, models, the job
state machine, leases and fencing, team-scoped queries, artifact paths and dispatch.

Never imports torch, transformers or lco_core: the API process loads this package.
"""
