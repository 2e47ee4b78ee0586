"""Sinks: where readings go (SQLite store, MQTT, InfluxDB, web, summaries)."""
