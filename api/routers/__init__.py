"""One router per resource: files, jobs, events (and metrics), checkpoints, health."""
