"""QEMU stand-in boards and the labgrid lab around them (bench-side tooling).

A stand-in lab gives the board backend (bench.backends.board) what a rack of real boards
gives it: serial ports at stable paths, a power switch and a flasher per board, described in
a labgrid environment file, or shared through a labgrid coordinator and exporter. Modules:
standin (the boards and their HTTP power/flash service), files (the labgrid files), lab (a
whole lab, run by ``python -m wasmbed_hil.bench.lab up``), process (starting and stopping
one from the harness). What it proves and what not: docs/boards.md.
"""
