/* Stub runtime: validates the wasm magic, returns canned results; a run takes run_ms of the
 * fake clock in 1 ms steps, calling the core's service hook at each step like a guard would,
 * and ends STOPPED as soon as *stop is set. */
#include <stdio.h>
#include <string.h>
#include "doubles.h"
#include "wb/device_service.h"
#include "wb/platform.h"
#include "wb/runtime.h"

stub_runtime_t stub_rt;

void stub_runtime_reset(void)
{
    memset(&stub_rt, 0, sizeof stub_rt);
    stub_rt.outcome = WB_OUTCOME_RETURNED;
    stub_rt.value = 42;
}

wb_error_t wb_runtime_validate(const uint8_t *wasm, size_t len, char *detail, size_t cap)
{
    stub_rt.validations++;
    if (len >= 8 && memcmp(wasm, "\0asm", 4) == 0) return WB_OK;
    snprintf(detail, cap, "not a WebAssembly module (bad magic)");
    return WB_ERR_INVALID_MODULE;
}

extern uint64_t host_now_ms;

void wb_runtime_run(const uint8_t *wasm, size_t len, const char *entry, const wb_value_t *args,
                    size_t n_args, const wb_limits_t *limits, volatile const bool *stop,
                    wb_run_result_t *result)
{
    (void)wasm; (void)len; (void)limits;
    stub_rt.runs++;
    snprintf(stub_rt.last_entry, sizeof stub_rt.last_entry, "%s", entry);
    stub_rt.last_n_args = n_args;
    memcpy(stub_rt.last_args, args, n_args * sizeof *args);
    memset(result, 0, sizeof *result);
    uint64_t t0 = wb_platform_now_ms();
    result->outcome = stub_rt.outcome;
    for (uint32_t i = 0; i < stub_rt.run_ms; i++) {
        if (*stop) {
            result->outcome = WB_OUTCOME_STOPPED;
            break;
        }
        host_now_ms++;
        if (stub_rt.on_step) stub_rt.on_step(i);
        wb_device_service_during_run();
    }
    if (*stop) result->outcome = WB_OUTCOME_STOPPED;
    if (result->outcome == WB_OUTCOME_RETURNED) {
        result->n_values = 1;
        result->values[0].v.i = stub_rt.value;
    }
    if (stub_rt.log) {
        result->log_len = strlen(stub_rt.log) < WB_MAX_LOG ? strlen(stub_rt.log) : WB_MAX_LOG;
        memcpy(result->log, stub_rt.log, result->log_len);
    }
    if (stub_rt.detail) snprintf(result->detail, sizeof result->detail, "%s", stub_rt.detail);
    result->fuel_used = 1000;
    result->duration_us = (wb_platform_now_ms() - t0) * 1000;
}
