"""Cost reports: the engine and its text and HTML renderings."""
