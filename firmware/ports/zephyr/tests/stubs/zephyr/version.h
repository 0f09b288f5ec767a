/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_VERSION_H
#define STUB_ZEPHYR_VERSION_H
#define KERNEL_VERSION_STRING "4.3.0"
#endif
