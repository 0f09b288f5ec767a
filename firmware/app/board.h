/* The board API of the application code (app.c, platform.c, tls_transport.c): time, halt and
 * the two UARTs. Every port implements it: ports/mps2-an385/board.c on the bare metal,
 * ports/zephyr/src/{platform_zephyr,transport_uart_tls}.c on Zephyr.
 *
 * The port's board_port.h (on its include path) names what differs between boards:
 *   WB_UART0_BASE     the console UART (log, test commands typed by the harness)
 *   WB_UART1_BASE     the link UART (the raw TLS byte stream to the bridge)
 *   WB_BLOB_MAX_SIZE  the most bytes of the per-device blob the port reads
 * The uart_* functions take WB_UART0_BASE or WB_UART1_BASE: register addresses on
 * MPS2-AN385, plain handles on Zephyr. */
#ifndef WB_BOARD_H
#define WB_BOARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "board_port.h"

uint64_t board_now_ms(void);
uint64_t board_link_last_rx_ms(void);  /* when the link UART last delivered a byte */
/* True when the link itself guarantees that nothing of an earlier boot reaches this one (the
 * mps2-an385 port's Ethernet link: a boot nonce in every frame), so the first connect after
 * boot need not wait for the link to be quiet. A serial link's port returns false. */
bool board_link_fresh(void);
uint32_t board_systick_value(void);    /* a fast-moving counter (entropy mixing) */
void board_halt(void) __attribute__((noreturn));

void uart_putc(uint32_t base, uint8_t c);
bool uart_getc_nb(uint32_t base, uint8_t *c);   /* false when nothing has arrived */
void uart_write(uint32_t base, const uint8_t *buf, size_t len);

#endif
