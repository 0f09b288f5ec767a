/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_REBOOT_H
#define STUB_ZEPHYR_REBOOT_H
#define SYS_REBOOT_WARM 0
#define SYS_REBOOT_COLD 1
void sys_reboot(int type) __attribute__((noreturn));
#endif
