/* Internals of wb_device_t (core only). All storage is inside the struct: no allocation. */
#ifndef WB_DEVICE_IMPL_H
#define WB_DEVICE_IMPL_H

#include "wb/device.h"
#include "wb/msg.h"
#include "wb/session.h"

#ifndef WB_MAX_APPS_CAP
#define WB_MAX_APPS_CAP 8 /* upper bound of config->max_apps */
#endif
#ifndef WB_TX_BUF_SIZE
#define WB_TX_BUF_SIZE 2048 /* largest frame the device sends (logs are truncated to fit) */
#endif
#ifndef WB_RUN_QUEUE
#define WB_RUN_QUEUE 2 /* started runs waiting for the one in progress */
#endif
#ifndef WB_BACKOFF_INITIAL_MS
#define WB_BACKOFF_INITIAL_MS 500
#endif
#ifndef WB_BACKOFF_MAX_MS
#define WB_BACKOFF_MAX_MS 30000
#endif
#ifndef WB_REJECT_BACKOFF_MS
#define WB_REJECT_BACKOFF_MS WB_BACKOFF_MAX_MS /* after EnrollReject, REVOKED, ... */
#endif
#define WB_DEAD_AFTER_INTERVALS 3
/* Transport up -> Welcome (or a refusal) within this long, else the connection is given up:
 * a gateway that refuses the device's certificate after the TLS 1.3 handshake closes its
 * socket without an alert, and a UART bridge cannot pass a TCP close on. */
#define WB_SETUP_TIMEOUT_MS 30000
#define WB_MAX_FRAMES_PER_POLL 8
#define WB_NO_SLOT 0xFF

typedef enum { WB_SLOT_FREE = 0, WB_SLOT_PARTIAL, WB_SLOT_COMPLETE } wb_slot_state_t;

typedef struct { /* one module (by digest) in the module store */
    uint8_t state;
    uint8_t digest[WB_DIGEST_LEN];
    uint32_t held; /* bytes held from 0 */
    uint32_t size; /* announced size */
    uint32_t age;  /* for evicting the oldest partial */
} wb_slot_t;

typedef struct {
    char id[WB_MAX_APP_ID + 1];
    uint8_t id_len;
} wb_app_id_t;

typedef struct {
    bool used;
    wb_app_id_t id;
    uint8_t slot;
    uint8_t state; /* wb_app_state_t */
    wb_limits_t limits;
    bool ran;             /* last_run_id is set */
    uint32_t last_run_id; /* the last StartApp accepted: a repeat of it starts nothing */
} wb_app_t;

typedef struct {
    bool active;
    bool validate_pending; /* complete and hashed during a run: validated after it */
    wb_app_id_t id;
    uint32_t begin_id;
    uint8_t slot;
    uint32_t size, chunk_size;
    wb_limits_t limits;
    bool done; /* completed on this connection: a repeated chunk of it is ignored */
} wb_transfer_t;

typedef struct {
    uint8_t app;
    uint32_t run_id, reply_to;
    char entry[WB_MAX_ENTRY + 1];
    wb_value_t args[WB_MAX_ARGS];
    uint8_t n_args;
} wb_queued_run_t;

typedef enum { WB_L_DOWN = 0, WB_L_CONNECTING, WB_L_UP } wb_link_t;

struct wb_device {
    wb_device_config_t cfg;
    wb_transport_t *tr;
    wb_session_t sess;
    wb_framer_t fr;
    uint8_t link;
    bool link_broken; /* a write failed: close at the next safe point */
    bool established; /* Welcome received on this connection */
    bool rejected;    /* enrollment refused / revoked: long backoff */
    uint32_t backoff_ms;
    uint64_t next_connect_ms;
    uint64_t link_up_ms; /* when the transport came up (the setup deadline counts from it) */
    uint32_t hb_interval_ms;
    uint64_t next_hb_ms, last_ack_ms;
    uint32_t slot_size;
    uint8_t n_slots;
    uint32_t age;
    wb_slot_t slots[WB_MAX_APPS_CAP + 1];
    wb_app_t apps[WB_MAX_APPS_CAP];
    wb_transfer_t xfer;
    wb_queued_run_t runq[WB_RUN_QUEUE];
    uint8_t n_runq;
    struct {
        bool active;
        uint8_t app, slot;
        uint32_t run_id, reply_to;
        volatile bool stop;
        bool stop_pending, stop_remove;
        uint32_t stop_reply_to;
    } run;
    struct {
        bool pending;
        wb_app_id_t id;
        uint32_t run_id, reply_to;
    } outbox; /* its result is in `result` */
    bool in_service;
    bool silent;      /* test control: no heartbeats (and no ack expected) */
    wb_run_result_t result;
    uint32_t stats_connects, stats_dead_links, stats_violations;
    wb_msg_t in;
    wb_msg_t out;
    uint8_t tx[WB_TX_BUF_SIZE];
};

#endif
