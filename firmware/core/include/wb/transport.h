/* A byte stream to the gateway (TLS on boards; a socket or a buffer pair in host tests).
 * Non-blocking: read returns 0 when nothing is available. */
#ifndef WB_TRANSPORT_H
#define WB_TRANSPORT_H

#include "types.h"

typedef enum {
    WB_LINK_DOWN = 0,  /* no session: connect() must be called */
    WB_LINK_CONNECTING,
    WB_LINK_UP,
} wb_link_state_t;

typedef struct wb_transport {
    /* Start (or restart) a connection, e.g. a TLS handshake. Non-blocking: progress is made
     * by later calls to poll(). */
    int (*connect)(struct wb_transport *t);
    /* Make progress (handshake, flush). Returns the link state. */
    wb_link_state_t (*poll)(struct wb_transport *t);
    /* Read up to cap bytes. >0 bytes read, 0 nothing now, <0 the link went down. */
    int (*read)(struct wb_transport *t, uint8_t *buf, size_t cap);
    /* Write all len bytes (may block until written). 0 ok, <0 the link went down. */
    int (*write)(struct wb_transport *t, const uint8_t *buf, size_t len);
    /* Drop the link (close_notify if possible). */
    void (*close)(struct wb_transport *t);
    void *ctx;
    /* (Members after ctx are optional; positional initializers may stop at ctx.)
     * Optional (NULL if unknown): wb_platform_now_ms() when the link last delivered any byte,
     * ciphertext included. TLS hands out plaintext only per complete record, and a 16 KiB
     * record can take longer than the dead-link limit to cross a slow UART. */
    uint64_t (*last_rx_ms)(struct wb_transport *t);
} wb_transport_t;

#endif
