/* The portable device core: the protocol state machine and the device's behaviour
 * (enrollment, heartbeats, chunked deployment with digest check, start/stop, results).
 * A target's main() does:   wb_device_init(&dev, &config, &transport);
 *                           for (;;) wb_device_poll(&dev);
 * Everything else (TLS, UART, clock, keys) reaches the core through platform.h, transport.h
 * and runtime.h. The internals of wb_device_t belong to core/src/ (see device_impl.h). */
#ifndef WB_DEVICE_H
#define WB_DEVICE_H

#include "platform.h"
#include "runtime.h"
#include "transport.h"

typedef struct {
    const char *architecture;    /* "cortex-m3" */
    const char *runtime;         /* "wasm3" */
    const char *firmware;        /* version string */
    uint32_t memory_total;       /* bytes of RAM offered to applications */
    uint32_t max_module_size;    /* largest module accepted */
    uint32_t max_frame_size;     /* largest inbound frame (>= WB_MIN_FRAME) */
    uint16_t max_apps;
    uint16_t window;             /* deploy chunks accepted in flight */
    uint8_t *module_store;       /* RAM region holding received modules */
    size_t module_store_size;
    uint8_t *frame_buffer;       /* at least max_frame_size + 4 bytes */
    size_t frame_buffer_size;
    uint32_t backoff_initial_ms; /* reconnect backoff, doubling; 0: the core's default */
    uint32_t backoff_max_ms;     /* 0: default */
    uint32_t reject_backoff_ms;  /* after an enrollment refusal or revocation; 0: default */
    uint32_t setup_timeout_ms;   /* transport up -> Welcome or a refusal, else reconnect; 0: default */
} wb_device_config_t;

struct wb_device;
typedef struct wb_device wb_device_t;

/* Size of the state the caller must provide (static storage on boards). */
size_t wb_device_state_size(void);

/* storage: wb_device_state_size() bytes, 8-byte aligned. */
wb_device_t *wb_device_init(void *storage, const wb_device_config_t *config,
                            wb_transport_t *transport);

/* One iteration of the main loop: (re)connect with backoff, read and handle frames,
 * send heartbeats when due, detect a dead link (3 intervals without HeartbeatAck), run
 * started applications. Never blocks for long except inside an application run, during
 * which heartbeats and StopApp are still served (see core/README.md). */
void wb_device_poll(wb_device_t *dev);

/* Test controls, reached from the console (UART0): stop or resume sending heartbeats while
 * keeping the link (the gateway must then see the device Unreachable). */
void wb_device_set_silent(wb_device_t *dev, bool silent);

/* Console commands understood by every target: "silent 1", "silent 0", "forget".
 * Returns false for an unknown command. */
bool wb_device_console_command(wb_device_t *dev, const char *line);

#endif
