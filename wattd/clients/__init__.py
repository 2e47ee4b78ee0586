"""Connections to services outside wattd, shared by sinks and commands."""
