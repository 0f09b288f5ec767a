/* Zephyr: what this port adds to the application's board API (app/board.h). The UARTs are
 * devicetree chosen nodes, not addresses: the two "bases" are plain handles that
 * transport_uart_tls.c maps to their devices. */
#ifndef WB_BOARD_PORT_H
#define WB_BOARD_PORT_H

#define WB_UART0_BASE 0u  /* the "zephyr,console" UART */
#define WB_UART1_BASE 1u  /* the "wasmbed,transport-uart" UART */

/* The per-device blob region of the bare-metal image (16 KiB): the most main.c reads, wherever
 * the board keeps the blob (a flash partition, RAM, the image). */
#define WB_BLOB_MAX_SIZE 0x4000u

#endif
