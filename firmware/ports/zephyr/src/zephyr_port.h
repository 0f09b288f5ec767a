/* The Zephyr port of the wasmbed device (firmware/ports/zephyr/src): what its files, and the
 * WAMR runtime built for Zephyr (firmware/runtime/wamr/runtime_wamr.c), give each other.
 *
 * The port is thin on purpose. Everything else is code proven on the bare-metal MPS2-AN385
 * image and compiled here unchanged: the portable core (firmware/core, a Zephyr module), and
 * the board-independent application (firmware/app: the per-device blob parser, the device
 * crypto and wb_platform_* functions, the TLS 1.3 transport, and the device application:
 * blob and credentials at boot, configuration, the device loop, console commands). The
 * application reaches the board through the small API of app/board.h, which this port
 * implements on Zephyr:
 *   board_now_ms, board_link_last_rx_ms   platform_zephyr.c / transport_uart_tls.c
 *   uart_getc_nb, uart_write, uart_putc    transport_uart_tls.c (WB_UART1_BASE: the
 *                                          "wasmbed,transport-uart" chosen UART; WB_UART0_BASE:
 *                                          the "zephyr,console" UART; see board_port.h)
 *   board_halt, board_systick_value        platform_zephyr.c
 * plus mbedtls_hardware_poll and wb_entropy_set_seed (app/crypto.h) in platform_zephyr.c. */
#ifndef WB_ZEPHYR_PORT_H
#define WB_ZEPHYR_PORT_H

#include <stddef.h>
#include <stdint.h>

#include "tls_transport.h"
#include "wb/transport.h"

/* transport_uart_tls.c ------------------------------------------------------------------------ */

/* Interrupt-driven RX into a ring buffer on the transport UART, then wb_tls_transport_init().
 * 0, or a negative errno / mbedTLS error (logged). */
int wb_zephyr_transport_init(wb_transport_t *transport, wb_tls_t *tls);

/* Sleep until a byte arrives on the transport UART or timeout_ms passes. */
void wb_zephyr_wait_rx(uint32_t timeout_ms);

/* Log how many received bytes the ring buffer had to drop since the last report (if any). */
void wb_zephyr_link_report(void);

/* platform_zephyr.c --------------------------------------------------------------------------- */

/* Print "REBOOT: why" and reboot the SoC (sys_reboot). */
void wb_zephyr_reboot(const char *why) __attribute__((noreturn));

/* Microseconds since boot. */
uint64_t wb_zephyr_now_us(void);

#endif
