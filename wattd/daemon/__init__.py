"""The running daemon: supervisor, fan-out bus, ports and systemd notification."""
