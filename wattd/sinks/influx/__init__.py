"""The InfluxDB line-protocol sink."""
