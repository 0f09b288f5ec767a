#include "tls_transport.h"

#include <stdio.h>
#include <string.h>

#include "board.h"
#include "wb/platform.h"

#define LINK_UART WB_UART1_BASE

/* --- BIO on UART1 ------------------------------------------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
    (void)ctx;
    uart_write(LINK_UART, buf, len);
    return (int)len;
}

/* The gateway's first record of a session starts with a TLS record header: 0x16 (its
 * ServerHello) or 0x15 (an alert), then 0x03. Bytes before it are leftovers of the dead
 * session still trickling in over the UART (drain_stale_rx() cannot wait for the slowest):
 * they are dropped until that header, as the bridge drops the device's own leftovers before
 * a ClientHello. Otherwise one late byte of an old record fails the new handshake. */
static struct {
    bool synced;
    uint8_t held[2];
    size_t held_n, held_at;
    unsigned skipped;
} rx;

static void rx_reset(void)
{
    memset(&rx, 0, sizeof(rx));
}

static bool rx_sync(void)
{
    uint8_t c;
    while (!rx.synced && uart_getc_nb(LINK_UART, &c)) {
        if (rx.held_n == 1 && c == 0x03 && (rx.held[0] == 0x16 || rx.held[0] == 0x15)) {
            rx.held[1] = c;
            rx.held_n = 2;
            rx.synced = true;
        } else {
            rx.skipped += (unsigned)rx.held_n;
            rx.held[0] = c;
            rx.held_n = 1;
        }
    }
    if (rx.synced && rx.skipped) {
        wb_platform_log("tls: discarded %u stale bytes before the gateway's first record",
                        rx.skipped);
        rx.skipped = 0;
    }
    return rx.synced;
}

/* Takes what the port has received (its ring) and returns at once: mbedTLS asks again for
 * the rest of a record, and WANT_READ lets the device loop sleep until more bytes come
 * (the port's idle wait), rather than spinning here for the next byte. */
static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
    (void)ctx;
    size_t n = 0;
    if (!rx.synced && !rx_sync()) {
        return MBEDTLS_ERR_SSL_WANT_READ;
    }
    while (n < len && rx.held_at < rx.held_n) {
        buf[n++] = rx.held[rx.held_at++];
    }
    while (n < len && uart_getc_nb(LINK_UART, &buf[n])) {
        n++;
    }
    return n == 0 ? MBEDTLS_ERR_SSL_WANT_READ : (int)n;
}

/* Drops what the link received before this session and waits until it has been quiet for
 * WB_TLS_QUIET_MS. Quiet time that has already passed counts: since the last byte received,
 * or since boot when none came (a first connect after power-on waits only what remains of
 * the 50 ms after boot, not 50 ms more). */
static void drain_stale_rx(void)
{
    static bool connected_before;
    uint8_t c;
    unsigned dropped = 0;
    if (!connected_before && board_link_fresh()) {
        connected_before = true;
        /* first connect of this boot on a link that carries nothing older */
        wb_platform_log("tls: fresh link: no quiet wait before the first connect (%u ms "
                        "after boot)", (unsigned)board_now_ms());
        return;
    }
    connected_before = true;
    uint64_t quiet_since = board_link_last_rx_ms();
    while (board_now_ms() - quiet_since < WB_TLS_QUIET_MS) {
        if (uart_getc_nb(LINK_UART, &c)) {
            dropped++;
            quiet_since = board_now_ms();
        }
    }
    while (uart_getc_nb(LINK_UART, &c)) {
        dropped++;
    }
    if (dropped) {
        wb_platform_log("tls: discarded %u stale bytes", dropped);
    }
}

/* --- transport ---------------------------------------------------------------------------- */

static uint64_t t_last_rx_ms(wb_transport_t *t)
{
    (void)t;
    return board_link_last_rx_ms();
}

static void log_error(wb_tls_t *tls, const char *what, int err)
{
    char msg[160];
    tls->last_error = err;
    wb_platform_log("tls: %s: %s", what, wb_crypto_strerror(err, msg, sizeof(msg)));
    if (err == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && tls->verify_flags) {
        char info[256];
        mbedtls_x509_crt_verify_info(info, sizeof(info), "tls:   ", tls->verify_flags);
        /* info holds one line per reason, each ending in a newline */
        for (char *line = info, *end; *line; line = end + 1) {
            end = strchr(line, '\n');
            if (!end) {
                wb_platform_log("%s", line);
                break;
            }
            *end = 0;
            wb_platform_log("%s", line);
        }
    }
}

static void go_down(wb_tls_t *tls)
{
    tls->state = WB_LINK_DOWN;
}

static int t_connect(wb_transport_t *t)
{
    wb_tls_t *tls = t->ctx;
    int ret;
    if (tls->ssl_ready) {
        mbedtls_ssl_free(&tls->ssl);
        tls->ssl_ready = false;
    }
    tls->state = WB_LINK_DOWN;
    tls->last_error = 0;
    tls->verify_flags = 0;
    drain_stale_rx();
    rx_reset();
    mbedtls_ssl_init(&tls->ssl);
    ret = mbedtls_ssl_setup(&tls->ssl, &tls->conf);
    if (ret == 0) {
        tls->ssl_ready = true;
        ret = mbedtls_ssl_set_hostname(&tls->ssl, wb_crypto.blob->server_name);
    }
    if (ret != 0) {
        log_error(tls, "setup", ret);
        return -1;
    }
    mbedtls_ssl_set_bio(&tls->ssl, NULL, bio_send, bio_recv, NULL);
    tls->started_ms = board_now_ms();
    tls->state = WB_LINK_CONNECTING;
    wb_platform_log("tls: connecting to \"%s\"", wb_crypto.blob->server_name);
    return 0;
}

static wb_link_state_t t_poll(wb_transport_t *t)
{
    wb_tls_t *tls = t->ctx;
    if (tls->state != WB_LINK_CONNECTING) {
        return tls->state;
    }
    int ret = mbedtls_ssl_handshake(&tls->ssl);
    if (ret == 0) {
        tls->handshake_ms = (uint32_t)(board_now_ms() - tls->started_ms);
        tls->state = WB_LINK_UP;
        wb_platform_log("tls: up in %lu ms (%s, %s)", (unsigned long)tls->handshake_ms,
                        mbedtls_ssl_get_version(&tls->ssl),
                        mbedtls_ssl_get_ciphersuite(&tls->ssl));
    } else if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
        if (board_now_ms() - tls->started_ms > WB_TLS_HANDSHAKE_TIMEOUT_MS) {
            tls->last_error = MBEDTLS_ERR_SSL_TIMEOUT;
            wb_platform_log("tls: handshake timed out after %u ms", WB_TLS_HANDSHAKE_TIMEOUT_MS);
            go_down(tls);
        }
    } else {
        tls->verify_flags = mbedtls_ssl_get_verify_result(&tls->ssl);
        if (tls->verify_flags == (uint32_t)-1) {
            tls->verify_flags = 0;
        }
        log_error(tls, "handshake failed", ret);
        go_down(tls);
    }
    return tls->state;
}

static int t_read(wb_transport_t *t, uint8_t *buf, size_t cap)
{
    wb_tls_t *tls = t->ctx;
    if (tls->state == WB_LINK_CONNECTING) {
        return 0;
    }
    if (tls->state != WB_LINK_UP) {
        return -1;
    }
    for (;;) {
        int ret = mbedtls_ssl_read(&tls->ssl, buf, cap);
        if (ret > 0) {
            return ret;
        }
        if (ret == MBEDTLS_ERR_SSL_WANT_READ || ret == MBEDTLS_ERR_SSL_WANT_WRITE) {
            return 0;
        }
        if (ret == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
            continue; /* not resumable (no ticket support), just go on */
        }
        if (ret == 0 || ret == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            wb_platform_log("tls: peer closed the session");
            tls->last_error = MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY;
        } else {
            log_error(tls, "read", ret);
        }
        go_down(tls);
        return -1;
    }
}

static int t_write(wb_transport_t *t, const uint8_t *buf, size_t len)
{
    wb_tls_t *tls = t->ctx;
    if (tls->state != WB_LINK_UP) {
        return -1;
    }
    while (len > 0) {
        int ret = mbedtls_ssl_write(&tls->ssl, buf, len);
        if (ret > 0) {
            buf += ret;
            len -= (size_t)ret;
        } else if (ret != MBEDTLS_ERR_SSL_WANT_READ && ret != MBEDTLS_ERR_SSL_WANT_WRITE) {
            log_error(tls, "write", ret);
            go_down(tls);
            return -1;
        }
    }
    return 0;
}

static void t_close(wb_transport_t *t)
{
    wb_tls_t *tls = t->ctx;
    if (tls->state == WB_LINK_UP) {
        (void)mbedtls_ssl_close_notify(&tls->ssl);
    }
    go_down(tls);
}

int wb_tls_transport_init(wb_transport_t *transport, wb_tls_t *tls)
{
    static const int suites[] = {MBEDTLS_TLS1_3_AES_128_GCM_SHA256, 0};
    static const uint16_t groups[] = {MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
                                      MBEDTLS_SSL_IANA_TLS_GROUP_NONE};
    static const uint16_t sig_algs[] = {MBEDTLS_TLS1_3_SIG_ECDSA_SECP256R1_SHA256,
                                        MBEDTLS_TLS1_3_SIG_NONE};
    memset(tls, 0, sizeof(*tls));
    mbedtls_ssl_config_init(&tls->conf);
    int ret = mbedtls_ssl_config_defaults(&tls->conf, MBEDTLS_SSL_IS_CLIENT,
                                          MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
    if (ret != 0) {
        return ret;
    }
    mbedtls_ssl_conf_min_tls_version(&tls->conf, MBEDTLS_SSL_VERSION_TLS1_3);
    mbedtls_ssl_conf_max_tls_version(&tls->conf, MBEDTLS_SSL_VERSION_TLS1_3);
    mbedtls_ssl_conf_authmode(&tls->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ciphersuites(&tls->conf, suites);
    mbedtls_ssl_conf_groups(&tls->conf, groups);
    mbedtls_ssl_conf_sig_algs(&tls->conf, sig_algs);
    mbedtls_ssl_conf_rng(&tls->conf, mbedtls_ctr_drbg_random, &wb_crypto.drbg);
    mbedtls_ssl_conf_ca_chain(&tls->conf, &wb_crypto.ca_cert, NULL);
    ret = mbedtls_ssl_conf_own_cert(&tls->conf, &wb_crypto.own_cert, &wb_crypto.key);
    if (ret != 0) {
        return ret;
    }
    tls->state = WB_LINK_DOWN;
    transport->connect = t_connect;
    transport->poll = t_poll;
    transport->read = t_read;
    transport->write = t_write;
    transport->close = t_close;
    transport->last_rx_ms = t_last_rx_ms;
    transport->ctx = tls;
    return 0;
}
