"""The machines devices run on: one QEMU process, one Renode machine (a real board later)."""
