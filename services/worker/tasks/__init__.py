"""Celery tasks, one module per job kind; each takes a job id and runs its body through ``run_job``."""
