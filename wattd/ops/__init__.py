"""Operator jobs that are not the daemon: reprocessing history and radio setup."""
