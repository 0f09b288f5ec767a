/* Firmware entry for MPS2-AN385.
 *
 * Boot: board (UARTs, SysTick) -> per-device blob at WB_BLOB_ADDRESS -> crypto (key,
 * certificates, RNG) -> TLS transport over UART1 -> either
 *   - WB_SELFTEST_TLS: handshake, write a line, read a reply, print "selftest ok", halt; or
 *   - the device core: wb_device_init + for (;;) wb_device_poll().
 * A bad blob or bad credentials are reported on the console and the device halts cleanly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

static void __attribute__((noreturn)) halt_with(const char *why)
{
    wb_platform_log("HALT: %s", why);
    board_halt();
}

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

#include "wb/device.h"
#include "wb/device_service.h"

static void console_poll(wb_device_t *dev);

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

static uint32_t clamp(uint32_t value, uint32_t lo, uint32_t hi)
{
    return value < lo ? lo : value > hi ? hi : value;
}

/* The blob's optional configuration entry, within what this image's buffers allow. */
static void apply_blob_config(wb_device_config_t *c)
{
    const uint32_t *v = blob.config;
    if (v[WB_CFG_MAX_FRAME_SIZE]) {
        c->max_frame_size = clamp(v[WB_CFG_MAX_FRAME_SIZE], WB_MIN_FRAME, WB_MAX_FRAME_SIZE);
    }
    if (v[WB_CFG_MAX_MODULE_SIZE]) {
        c->max_module_size = clamp(v[WB_CFG_MAX_MODULE_SIZE], 1, WB_MAX_MODULE_SIZE);
    }
    if (v[WB_CFG_WINDOW]) c->window = (uint16_t)clamp(v[WB_CFG_WINDOW], 1, 16);
    if (v[WB_CFG_MAX_APPS]) c->max_apps = (uint16_t)clamp(v[WB_CFG_MAX_APPS], 1, WB_MAX_APPS);
    c->backoff_initial_ms = v[WB_CFG_BACKOFF_INITIAL_MS];
    c->backoff_max_ms = v[WB_CFG_BACKOFF_MAX_MS];
    c->reject_backoff_ms = v[WB_CFG_REJECT_BACKOFF_MS];
    wb_platform_log("config: max_frame_size %lu, max_module_size %lu, window %u, max_apps %u",
                    (unsigned long)c->max_frame_size, (unsigned long)c->max_module_size,
                    (unsigned)c->window, (unsigned)c->max_apps);
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
    apply_blob_config(&config);
    void *storage = aligned_alloc(8, (wb_device_state_size() + 7u) & ~(size_t)7u);
    if (!storage) {
        halt_with("no memory for the device state");
    }
    wb_device_t *dev = wb_device_init(storage, &config, &transport);
    if (!dev) {
        halt_with("wb_device_init failed");
    }
    for (;;) {
        wb_device_poll(dev);
        console_poll(dev);
        board_idle(50);
    }
}

#endif

#ifndef WB_SELFTEST_TLS
/* Console commands typed into UART0 ("silent 1", "silent 0", "forget"): test controls. */
static void console_poll(wb_device_t *dev)
{
    static char line[32];
    static size_t len;
    uint8_t c;
    while (uart_getc_nb(WB_UART0_BASE, &c)) {
        if (c == '\r' || c == '\n') {
            if (len == 0) continue;
            line[len] = 0;
            len = 0;
            if (!wb_device_console_command(dev, line)) {
                wb_platform_log("console: unknown command \"%s\"", line);
            }
        } else if (len < sizeof(line) - 1) {
            line[len++] = (char)c;
        }
    }
}

/* wasm3's guard calls this every few ms of a run: keep heartbeats and StopApp served. */
void wb_runtime_guard_hook(void)
{
    wb_device_service_during_run();
}
#endif

int main(void)
{
    char err[160];
    board_init();
    printf("\n");
    wb_platform_log("wasmbed firmware %s, board mps2-an385 (cortex-m3)", WB_FIRMWARE_VERSION);
    wb_platform_log("WARNING: no TRNG on this board: entropy = blob seed + SysTick. "
                    "FIT FOR TESTS ONLY.");
    if (wb_blob_parse((const uint8_t *)WB_BLOB_ADDRESS, WB_BLOB_MAX_SIZE, &blob, err,
                      sizeof(err)) != 0) {
        wb_platform_log("blob error at 0x%08lx: %s", (unsigned long)WB_BLOB_ADDRESS, err);
        halt_with("invalid per-device blob");
    }
    wb_platform_log("blob ok: device \"%s\", server name \"%s\"", blob.name, blob.server_name);
    if (wb_crypto_init(&blob) != 0) {
        halt_with("device credentials unusable");
    }
    int ret = wb_tls_transport_init(&transport, &tls);
    if (ret != 0) {
        wb_platform_log("tls: init: %s", wb_crypto_strerror(ret, err, sizeof(err)));
        halt_with("TLS configuration failed");
    }
#ifdef WB_SELFTEST_TLS
    selftest();
#else
    run_device();
#endif
}
