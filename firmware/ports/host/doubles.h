/* Host test doubles: fake clock, fixed key, in-memory transport, stub runtime. */
#ifndef HOST_DOUBLES_H
#define HOST_DOUBLES_H
#include "wb/device.h"

/* platform */
extern uint64_t host_now_ms;
extern bool host_log_quiet;
extern uint8_t host_stored_id[WB_DEVICE_ID_LEN];
extern bool host_has_id;
extern int host_store_calls;
void host_platform_reset(void);

/* transport: an in-memory pipe. */
typedef struct {
    wb_transport_t t;
    wb_link_state_t state;
    int connects, closes;
    bool refuse_connect;   /* connect() fails */
    int polls_to_up;       /* CONNECTING for this many polls */
    int polls_left;
    uint8_t rx[1 << 17];   /* gateway -> device */
    size_t rx_len, rx_pos;
    size_t max_read;       /* split reads (0: as much as asked) */
    uint8_t tx[1 << 17];   /* device -> gateway */
    size_t tx_len;
    bool drop;             /* read/write report the link down */
} mem_transport_t;
void mem_transport_init(mem_transport_t *m);
void mem_push(mem_transport_t *m, const uint8_t *p, size_t n);

/* runtime stub */
typedef struct {
    wb_outcome_t outcome;
    int64_t value;          /* one i64 result when RETURNED */
    uint32_t run_ms;        /* simulated run time, in 1 ms steps of the fake clock */
    const char *log;
    const char *detail;
    int runs, validations;
    char last_entry[WB_MAX_ENTRY + 1];
    size_t last_n_args;
    wb_value_t last_args[WB_MAX_ARGS];
    void (*on_step)(uint32_t ms); /* called at each simulated ms of a run */
} stub_runtime_t;
extern stub_runtime_t stub_rt;
void stub_runtime_reset(void);
#endif
