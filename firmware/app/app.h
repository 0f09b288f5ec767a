/* The device application both images run around the portable core: the bare-metal image
 * (ports/mps2-an385/main.c) and the Zephyr image (ports/zephyr/src/main.c). Each main() keeps
 * only what is its board's or OS's: where the blob and the buffers live, the transport, the
 * banner, how to wait between two polls.
 *
 * It sits with the other board-independent code both images compile (blob.c, platform.c,
 * tls_transport.c), not in firmware/core, because it needs what they need and the core does
 * not know: the per-device blob (blob.h), the device credentials (crypto.h) and the console
 * UART and halt of board.h, which every port implements. */
#ifndef WB_APP_H
#define WB_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "blob.h"
#include "wb/device.h"

/* Log "HALT: why" and stop for good (board_halt(): the console stays alive for the harness). */
void wb_app_halt(const char *why) __attribute__((noreturn));

/* Parse the per-device blob at mem (at most cap bytes) into *blob and log it, then build the
 * device credentials and RNG from it (wb_crypto_init). A bad blob ("blob error at 0x... (where):
 * reason"; where may be NULL) or unusable credentials are reported and halt the device. */
void wb_app_load_credentials(const uint8_t *mem, size_t cap, const char *where, wb_blob_t *blob);

/* The blob's optional configuration entry (blob.h, WB_CFG_*), applied to the image's
 * configuration and logged. The image's max_frame_size, max_module_size and max_apps are what
 * its buffers allow: the blob may lower them, never raise them; the window may be 1..16. */
void wb_app_apply_blob_config(wb_device_config_t *config, const wb_blob_t *blob);

/* What differs between the images in the device loop. */
typedef struct {
    /* Between two polls: wait for input or the next tick (and the image's housekeeping). */
    void (*idle)(void);
    /* A console line the image handles itself, tried before the core's commands; returns false
     * when the line is not the image's. NULL: none. */
    bool (*console_command)(const char *line);
} wb_app_ops_t;

/* Start the device core in state (wb_device_state_size() bytes, 8-byte aligned) and serve it
 * for good: wb_device_poll(), the console commands typed into UART0 (test controls: the image's,
 * then the core's "silent 1", "silent 0", "forget"), ops->idle(). Halts if the core does not
 * start. The image also gets wb_runtime_guard_hook() from here: heartbeats and StopApp are
 * served during a run (wb_device_service_during_run). */
void wb_app_run_device(void *state, const wb_device_config_t *config, wb_transport_t *transport,
                       const wb_app_ops_t *ops) __attribute__((noreturn));

#endif
