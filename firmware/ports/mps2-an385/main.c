/* Firmware entry for MPS2-AN385.
 *
 * Boot: board (UARTs, SysTick) -> per-device blob at WB_BLOB_ADDRESS -> crypto (key,
 * certificates, RNG) -> TLS transport over UART1 -> either
 *   - WB_SELFTEST_TLS: handshake, write a line, read a reply, print "selftest ok", halt; or
 *   - the device core: wb_device_init + for (;;) wb_device_poll().
 * A bad blob or bad credentials are reported on the console and the device halts cleanly.
 * The blob, credentials, configuration and device loop are shared with the Zephyr image
 * (app.c); this file keeps what is this board's: addresses, buffers, TLS, the idle wait. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "blob.h"
#include "board.h"
#include "crypto.h"
#include "tls_transport.h"
#include "wb/platform.h"

#ifndef WB_FIRMWARE_VERSION
#define WB_FIRMWARE_VERSION "0.1.0"
#endif

static wb_blob_t blob;
static wb_tls_t tls;
static wb_transport_t transport;

#ifdef WB_SELFTEST_TLS

static void __attribute__((noreturn)) selftest(void)
{
    char line[256];
    char msg[160];
    wb_platform_log("selftest: tls");
    transport.connect(&transport);
    wb_link_state_t state;
    while ((state = transport.poll(&transport)) == WB_LINK_CONNECTING) {
    }
    if (state != WB_LINK_UP) {
        printf("selftest failed: %s\n", wb_crypto_strerror(tls.last_error, msg, sizeof(msg)));
        board_halt();
    }
    int n = snprintf(line, sizeof(line), "hello from %s\n", blob.name);
    if (transport.write(&transport, (const uint8_t *)line, (size_t)n) != 0) {
        printf("selftest failed: write %s\n", wb_crypto_strerror(tls.last_error, msg, sizeof(msg)));
        board_halt();
    }
    size_t got = 0;
    uint64_t deadline = wb_platform_now_ms() + 10000u;
    while (got < sizeof(line) - 1 && (got == 0 || line[got - 1] != '\n')) {
        int r = transport.read(&transport, (uint8_t *)line + got, sizeof(line) - 1 - got);
        if (r < 0) {
            printf("selftest failed: read %s\n",
                   wb_crypto_strerror(tls.last_error, msg, sizeof(msg)));
            board_halt();
        }
        got += (size_t)r;
        if (wb_platform_now_ms() > deadline) {
            printf("selftest failed: no reply within 10 s\n");
            board_halt();
        }
    }
    while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) {
        got--;
    }
    line[got] = 0;
    wb_platform_log("selftest: reply \"%s\"", line);
    transport.close(&transport);
    printf("selftest ok handshake_ms=%lu\n", (unsigned long)tls.handshake_ms);
    board_halt();
}

#else /* the device core */

/* Device configuration (documented in firmware/README.md). */
#define WB_MAX_FRAME_SIZE 8192u
#define WB_MODULE_STORE_SIZE (256u * 1024u)
#define WB_MAX_MODULE_SIZE WB_MODULE_STORE_SIZE
/* = the wasm3 arena (runtime/wasm3: WB_WASM3_ARENA_BYTES, default 1.5 MiB, static) */
#define WB_MEMORY_TOTAL (1536u * 1024u)
#define WB_MAX_APPS 4u
#define WB_WINDOW 4u

static uint8_t module_store[WB_MODULE_STORE_SIZE] __attribute__((aligned(8)));
static uint8_t frame_buffer[WB_MAX_FRAME_SIZE + 4] __attribute__((aligned(8)));

/* Between two polls: sleep until a byte arrives on the link or the next tick (board_idle). */
static void idle(void)
{
    board_idle();
}

static void __attribute__((noreturn)) run_device(void)
{
    static wb_device_config_t config = {
        .architecture = "cortex-m3",
        .runtime = "wasm3",
        .firmware = WB_FIRMWARE_VERSION,
        .memory_total = WB_MEMORY_TOTAL,
        .max_module_size = WB_MAX_MODULE_SIZE,
        .max_frame_size = WB_MAX_FRAME_SIZE,
        .max_apps = WB_MAX_APPS,
        .window = WB_WINDOW,
        .module_store = module_store,
        .module_store_size = sizeof(module_store),
        .frame_buffer = frame_buffer,
        .frame_buffer_size = sizeof(frame_buffer),
    };
    wb_app_apply_blob_config(&config, &blob);
    void *storage = aligned_alloc(8, (wb_device_state_size() + 7u) & ~(size_t)7u);
    if (!storage) {
        wb_app_halt("no memory for the device state");
    }
    static const wb_app_ops_t ops = {.idle = idle};
    wb_app_run_device(storage, &config, &transport, &ops);
}

#endif

int main(void)
{
    char err[160];
    board_init();
    printf("\n");
    wb_platform_log("wasmbed firmware %s, board mps2-an385 (cortex-m3)", WB_FIRMWARE_VERSION);
    wb_platform_log("time base: %s", board_time_base());
    wb_platform_log("WARNING: no TRNG on this board: entropy = blob seed + SysTick. "
                    "FIT FOR TESTS ONLY.");
    wb_app_load_credentials((const uint8_t *)WB_BLOB_ADDRESS, WB_BLOB_MAX_SIZE, NULL, &blob);
    /* The nonce only has to differ from the previous boot's: the blob's seed and the clock. */
    uint32_t nonce = board_systick_value() ^ (uint32_t)board_now_ms() * 2654435761u;
    for (unsigned i = 0; i < 4; i++) {
        nonce ^= (uint32_t)blob.seed[i] << (8 * i);
    }
    board_link_select(blob.config[WB_CFG_LINK], nonce);
    int ret = wb_tls_transport_init(&transport, &tls);
    if (ret != 0) {
        wb_platform_log("tls: init: %s", wb_crypto_strerror(ret, err, sizeof(err)));
        wb_app_halt("TLS configuration failed");
    }
#ifdef WB_SELFTEST_TLS
    selftest();
#else
    run_device();
#endif
}
