/* The device application shared by the bare-metal and the Zephyr image (see app.h). */
#include "app.h"

#include <string.h>

#include "board.h"
#include "crypto.h"
#include "wb/platform.h"

void wb_app_halt(const char *why)
{
    wb_platform_log("HALT: %s", why);
    board_halt();
}

void wb_app_load_credentials(const uint8_t *mem, size_t cap, const char *where, wb_blob_t *blob)
{
    char err[160];
    if (wb_blob_parse(mem, cap, blob, err, sizeof(err)) != 0) {
        if (where) {
            wb_platform_log("blob error at 0x%08lx (%s): %s", (unsigned long)(uintptr_t)mem,
                            where, err);
        } else {
            wb_platform_log("blob error at 0x%08lx: %s", (unsigned long)(uintptr_t)mem, err);
        }
        wb_app_halt("invalid per-device blob");
    }
    wb_platform_log("blob ok: device \"%s\", server name \"%s\"", blob->name, blob->server_name);
    if (wb_crypto_init(blob) != 0) {
        wb_app_halt("device credentials unusable");
    }
}

/* The TLS self-test image (make -C firmware SELFTEST=tls) links no device core: it uses
 * only the part above. */
#ifndef WB_SELFTEST_TLS

#include "wb/device_service.h"

static uint32_t clamp(uint32_t value, uint32_t lo, uint32_t hi)
{
    return value < lo ? lo : value > hi ? hi : value;
}

void wb_app_apply_blob_config(wb_device_config_t *c, const wb_blob_t *blob)
{
    const uint32_t *v = blob->config;
    if (v[WB_CFG_MAX_FRAME_SIZE]) {
        c->max_frame_size = clamp(v[WB_CFG_MAX_FRAME_SIZE], WB_MIN_FRAME, c->max_frame_size);
    }
    if (v[WB_CFG_MAX_MODULE_SIZE]) {
        c->max_module_size = clamp(v[WB_CFG_MAX_MODULE_SIZE], 1, c->max_module_size);
    }
    if (v[WB_CFG_WINDOW]) c->window = (uint16_t)clamp(v[WB_CFG_WINDOW], 1, 16);
    if (v[WB_CFG_MAX_APPS]) c->max_apps = (uint16_t)clamp(v[WB_CFG_MAX_APPS], 1, c->max_apps);
    c->backoff_initial_ms = v[WB_CFG_BACKOFF_INITIAL_MS];
    c->backoff_max_ms = v[WB_CFG_BACKOFF_MAX_MS];
    c->reject_backoff_ms = v[WB_CFG_REJECT_BACKOFF_MS];
    c->setup_timeout_ms = v[WB_CFG_SETUP_TIMEOUT_MS];
    wb_platform_log("config: max_frame_size %lu, max_module_size %lu, window %u, max_apps %u",
                    (unsigned long)c->max_frame_size, (unsigned long)c->max_module_size,
                    (unsigned)c->window, (unsigned)c->max_apps);
}

/* Console commands typed into UART0: test controls. */
static void console_poll(wb_device_t *dev, const wb_app_ops_t *ops)
{
    static char line[32];
    static size_t len;
    uint8_t c;
    while (uart_getc_nb(WB_UART0_BASE, &c)) {
        if (c == '\r' || c == '\n') {
            if (len == 0) continue;
            line[len] = 0;
            len = 0;
            if (ops->console_command && ops->console_command(line)) continue;
            if (!wb_device_console_command(dev, line)) {
                wb_platform_log("console: unknown command \"%s\"", line);
            }
        } else if (len < sizeof(line) - 1) {
            line[len++] = (char)c;
        }
    }
}

void wb_app_run_device(void *state, const wb_device_config_t *config, wb_transport_t *transport,
                       const wb_app_ops_t *ops)
{
    wb_device_t *dev = wb_device_init(state, config, transport);
    if (!dev) {
        wb_app_halt("wb_device_init failed");
    }
    for (;;) {
        wb_device_poll(dev);
        console_poll(dev, ops);
        ops->idle();
    }
}

/* The runtime's guard calls this every few ms of a run (wasm3: WB_RUNTIME_GUARD_HOOK_MS; WAMR:
 * the guard thread): keep heartbeats and StopApp served. */
void wb_runtime_guard_hook(void)
{
    wb_device_service_during_run();
}

#endif
