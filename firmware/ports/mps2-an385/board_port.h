/* MPS2-AN385 (Cortex-M3): what this port adds to the application's board API (app/board.h).
 *
 * Memory map (QEMU mps2-an385):
 *   0x00000000 .. 0x003FFFFF  code (4 MiB): image
 *   0x20000000 .. 0x203FBFFF  RAM given to the linker (data, bss, heap, 64 KiB stack on top)
 *   0x203FC000 .. 0x203FFFFF  per-device blob (16 KiB, WB_BLOB_ADDRESS), written by the
 *                             emulator's loader before reset; never written by the firmware
 *   0x40004000 UART0 (console)   0x40005000 UART1 (raw byte stream to the bridge)
 * The linker's side of the same map is board.mk (keep the two in step).
 */
#ifndef WB_BOARD_PORT_H
#define WB_BOARD_PORT_H

#include <stdbool.h>
#include <stdint.h>

#define WB_CPU_HZ 25000000u
#define WB_BLOB_ADDRESS 0x203FC000u
#define WB_BLOB_MAX_SIZE 0x4000u

#define WB_UART0_BASE 0x40004000u
#define WB_UART1_BASE 0x40005000u

/* Called by this port's main.c only (board.c). */
void board_init(void);                 /* UARTs, console stdio, SysTick */
void board_idle(void);                 /* wfi until a link byte or the next tick */
void uart_init(uint32_t base);         /* CMSDK APB UART */
const char *board_time_base(void);     /* "cmsdk-timer0", "dwt-cyccnt" or "systick" */
#define WB_LINK_ETHERNET 2u            /* the blob's link key (WB_CFG_LINK) for the LAN9118 */
/* Moves the link to the LAN9118 when `kind` asks for it and the chip is there (eth.h);
 * `nonce` tells this boot's frames from an earlier boot's. True when it did. */
bool board_link_select(uint32_t kind, uint32_t nonce);

#endif
