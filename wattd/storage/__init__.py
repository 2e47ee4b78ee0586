"""Durable state on this host: the SQLite store, the spool and the state file."""
