/* MPS2-AN385 (Cortex-M3) board support: memory map, CMSDK APB UARTs, SysTick, faults.
 *
 * Memory map (QEMU mps2-an385):
 *   0x00000000 .. 0x003FFFFF  code (4 MiB): image
 *   0x20000000 .. 0x203FBFFF  RAM given to the linker (data, bss, heap, 64 KiB stack on top)
 *   0x203FC000 .. 0x203FFFFF  per-device blob (16 KiB, WB_BLOB_ADDRESS), written by the
 *                             emulator's loader before reset; never written by the firmware
 *   0x40004000 UART0 (console)   0x40005000 UART1 (raw byte stream to the bridge)
 */
#ifndef WB_BOARD_H
#define WB_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WB_CPU_HZ 25000000u
#define WB_BLOB_ADDRESS 0x203FC000u
#define WB_BLOB_MAX_SIZE 0x4000u

#define WB_UART0_BASE 0x40004000u
#define WB_UART1_BASE 0x40005000u

void board_init(void);                 /* UARTs, console stdio, SysTick */
uint64_t board_now_ms(void);
void board_idle(uint32_t quiet_ms);
uint64_t board_link_last_rx_ms(void);  /* when UART1 last delivered a byte */    /* wfi until the next tick once UARTs are quiet */
uint32_t board_systick_value(void);    /* current SysTick down-counter (entropy mixing) */
void board_halt(void) __attribute__((noreturn));

/* CMSDK APB UART */
void uart_init(uint32_t base);
void uart_putc(uint32_t base, uint8_t c);
bool uart_getc_nb(uint32_t base, uint8_t *c);   /* false when nothing has arrived */
void uart_write(uint32_t base, const uint8_t *buf, size_t len);

#endif
