/* The WebAssembly runtime interface (wasm3 on boards and in host tests, WAMR under Zephyr). */
#ifndef WB_RUNTIME_H
#define WB_RUNTIME_H

#include "types.h"

typedef struct {
    wb_outcome_t outcome;
    wb_value_t values[WB_MAX_ARGS];
    size_t n_values;
    uint8_t log[WB_MAX_LOG];      /* what the module wrote with env.log, truncated */
    size_t log_len;
    uint64_t fuel_used;           /* instructions (or loop iterations) the guard counted */
    uint64_t duration_us;
    char detail[WB_MAX_REASON];   /* trap message or reason, "" when RETURNED */
} wb_run_result_t;

/* Check that bytes are a loadable module (parse only). Returns WB_OK or WB_ERR_INVALID_MODULE
 * with a reason in detail (cap bytes, NUL-terminated). */
wb_error_t wb_runtime_validate(const uint8_t *wasm, size_t len, char *detail, size_t cap);

/* Run entry(args) of a module to completion under limits. Never fails outside the result:
 * every ending is an outcome. *stop is polled by the guard: set it (e.g. from the protocol
 * loop via an interrupt or between guard checks) to end the run with WB_OUTCOME_STOPPED.
 * Host imports offered: env.log(ptr i32, len i32). */
void wb_runtime_run(const uint8_t *wasm, size_t len, const char *entry,
                    const wb_value_t *args, size_t n_args, const wb_limits_t *limits,
                    volatile const bool *stop, wb_run_result_t *result);

#endif
