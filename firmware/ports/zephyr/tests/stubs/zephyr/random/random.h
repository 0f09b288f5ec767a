/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_RANDOM_H
#define STUB_ZEPHYR_RANDOM_H
#include <stddef.h>
int sys_csrand_get(void *dst, size_t len);
void sys_rand_get(void *dst, size_t len);
#endif
