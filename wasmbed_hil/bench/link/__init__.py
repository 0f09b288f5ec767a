"""Byte links between devices and the servers they talk to: the UART bridge, the fault proxy."""
