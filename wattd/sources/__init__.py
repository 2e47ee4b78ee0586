"""Sources: where bytes come from (serial ports, captures, the simulator)."""
