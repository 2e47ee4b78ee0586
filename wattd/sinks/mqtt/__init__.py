"""The MQTT sink and Home Assistant discovery."""
