/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_PRINTK_H
#define STUB_ZEPHYR_PRINTK_H
void printk(const char *fmt, ...);
#endif
