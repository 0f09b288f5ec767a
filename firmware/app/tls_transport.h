/* wb_transport_t over UART1: mbedTLS 3.6, TLS 1.3-only client, mutual authentication with
 * the device certificate from the blob, gateway verified against the blob's CA and server
 * name. Non-blocking: connect() resets the session, poll() drives the handshake. */
#ifndef WB_TLS_TRANSPORT_H
#define WB_TLS_TRANSPORT_H

#include "crypto.h"
#include "mbedtls/ssl.h"
#include "wb/transport.h"

#define WB_TLS_QUIET_MS 50u              /* connect(): RX must be quiet this long */
#define WB_TLS_HANDSHAKE_TIMEOUT_MS 15000u

typedef struct {
    mbedtls_ssl_config conf;
    mbedtls_ssl_context ssl;
    bool ssl_ready;
    wb_link_state_t state;
    uint64_t started_ms;
    uint32_t handshake_ms;   /* duration of the last successful handshake */
    int last_error;          /* last mbedTLS error, 0 if none */
    uint32_t verify_flags;   /* X.509 verification result of the last handshake */
} wb_tls_t;

/* Fill transport (ctx = tls) for the device credentials in wb_crypto. 0 or mbedTLS error. */
int wb_tls_transport_init(wb_transport_t *transport, wb_tls_t *tls);

#endif
