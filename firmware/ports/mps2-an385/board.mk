# MPS2-AN385 (Cortex-M3; QEMU -M mps2-an385, Renode renode/mps2-an385.repl): what
# firmware/Makefile needs to build this board.   make -C firmware BOARD=mps2-an385
#
# A bare-metal board is a directory ports/<board>/ with this file, its board_port.h (the C
# side of the same memory map, see app/board.h) and its sources.

# The CPU: compiler flags for the image and for its mbedTLS libraries (build/mbedtls-<cpu>/).
BOARD_CPU := cortex-m3
BOARD_CPU_FLAGS := -mcpu=cortex-m3 -mthumb

# Memory map for picolibc's linker script. The per-device blob sits in the top 16 KiB of RAM
# at 0x203FC000 (board_port.h WB_BLOB_ADDRESS, wasmbed_hil/bench/firmware/blob.py BLOB_ADDRESS),
# outside what the linker may use: __ram + __ram_size ends where the blob starts.
BOARD_LDFLAGS := -Wl,--defsym=__flash=0 -Wl,--defsym=__flash_size=0x400000 \
	-Wl,--defsym=__ram=0x20000000 -Wl,--defsym=__ram_size=0x3FC000 \
	-Wl,--defsym=__stack_size=0x10000

# This port's own sources, relative to this directory (the application's: app/sources.txt).
BOARD_SRCS := main.c board.c entropy.c eth.c
