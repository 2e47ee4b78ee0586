"""The sans-IO core: XBee frames, power maths, energy and readings. No IO, no clock."""
