"""Celery glue: the task that runs the engine on a stored upload and saves the result."""
