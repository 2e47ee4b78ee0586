"""Small shared mechanisms: the worker thread and logging setup."""
