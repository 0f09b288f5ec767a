"""Byte links between devices and the servers they talk to: the UART bridge, the fault proxy.

Every byte they carry (and Renode's UART pipe) goes through one pump, pump.py, which is also
the one place link impairments hook in; the impairments themselves live in impairments.py.
"""
