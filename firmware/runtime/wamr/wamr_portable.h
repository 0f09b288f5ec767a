/* The portable half of the WAMR runtime (runtime_wamr.c): what needs neither WAMR nor Zephyr,
 * so that it is compiled and tested on the host (tests/test_zephyr_app.py builds
 * firmware/runtime/wamr/tests/test_wamr_portable.c with gcc -Werror and ASan/UBSan).
 *
 *  - the plan for a run: the module scan and entry plan of runtime/common/wb_wasm_scan.h
 *    (shared with the wasm3 runtime), then what is WAMR's own: start functions are refused,
 *    the memory and instruction limits in WAMR's terms;
 *  - the mapping from WAMR exception strings and load errors to the core's outcomes, with the
 *    wasmtime trap code in the detail ("UNREACHABLE: unreachable"), as the wasm3 runtime
 *    reports them.
 *
 * The words are the shared unit's wherever the situation is the same as on wasm3, so that the
 * gateway and the tests see one vocabulary whatever runtime a device has. */
#ifndef WB_WAMR_PORTABLE_H
#define WB_WAMR_PORTABLE_H

#include "wb/types.h"
#include "wb_wasm_scan.h"

/* What wb_wamr_prepare() found and decided, for the WAMR calls that follow. */
typedef struct {
    wb_wasm_entry_t entry;      /* arguments, result types, memory export, env.log import */
    bool has_memory;            /* a memory is defined (imported ones are refused) */
    uint32_t memory_min_pages;
    uint32_t max_memory_pages;  /* floor(limit / 64 KiB): wb_wamr_patch_memory_max()'s max */
    int32_t instruction_limit;  /* for wasm_runtime_set_instruction_count_limit(); -1: none */
} wb_wamr_plan_t;

/* Everything decided before WAMR sees the module, in the order of the wasm3 runtime:
 * framing, the entry plan (wb_wasm_prepare_entry: export, signature, arguments, imports),
 * start section, declared memory against limits->memory_bytes. Returns WB_OUTCOME_RETURNED
 * when the run may proceed (plan filled), else LOAD_FAILED or OUT_OF_MEMORY with the reason in
 * detail. limits must not be NULL. */
wb_outcome_t wb_wamr_prepare(const uint8_t *wasm, size_t len, const char *entry,
                             const wb_value_t *args, size_t n_args, const wb_limits_t *limits,
                             wb_wamr_plan_t *plan, char *detail, size_t cap);

/* ---- the memory limit in the module's own bytes ---------------------------------------------
 * InstantiationArgs.max_memory_pages = 0 means "no override" to WAMR 2.4.3
 * (wasm_runtime_get_max_mem), so a limit below one page cannot be given that way, and a
 * module without a declared maximum could then grow to 65536 pages. The adapter therefore
 * writes the limit into its private copy of the module: the first defined memory's maximum
 * becomes min(declared maximum, max_pages). The section and limits are re-encoded, which may
 * make the module up to WB_WAMR_PATCH_SLACK bytes longer. */
#define WB_WAMR_PATCH_SLACK 16u

/* Copy wasm[0, len) to out (capacity out_cap >= len + WB_WAMR_PATCH_SLACK) with the first
 * defined memory's maximum lowered to max_pages where it is absent or larger; modules without
 * a memory section, or whose memory type is not a plain MVP one (flags other than 0 and 1), are
 * copied unchanged (WAMR's loader judges them). Returns the length written, or 0 with the
 * reason in why: broken framing (section or LEB128 past the end, over-long LEB128), a
 * minimum above max_pages, or out_cap too small. Never reads or writes out of bounds. */
size_t wb_wamr_patch_memory_max(const uint8_t *wasm, size_t len, uint32_t max_pages,
                                uint8_t *out, size_t out_cap, char *why, size_t why_cap);

/* One known WAMR exception message (matched as a substring, after "Exception: "). */
typedef struct {
    const char *needle;
    const char *code;       /* wasmtime's trap code name, NULL if none */
    wb_outcome_t outcome;   /* TRAPPED, OUT_OF_FUEL or OUT_OF_MEMORY */
} wb_wamr_trap_t;

extern const wb_wamr_trap_t wb_wamr_traps[];
extern const size_t wb_wamr_n_traps;

/* WAMR's wasm_runtime_get_exception() text without its "Exception: " prefix ("" for NULL). */
const char *wb_wamr_strip_exception(const char *exception);

/* The first table entry whose needle occurs in message (prefix stripped or not), or NULL. */
const wb_wamr_trap_t *wb_wamr_match_exception(const char *message);

/* How a run ended, as seen by runtime_wamr.c. */
typedef struct {
    bool call_ok;               /* wasm_runtime_call_wasm_a() returned true */
    bool started;               /* the entry was called (not skipped by an early stop) */
    const char *exception;      /* wasm_runtime_get_exception() after the call, or NULL */
    wb_outcome_t requested;     /* what the guard asked for (STOPPED, TIMED_OUT); RETURNED: none */
    bool host_fault;            /* env.log trapped; its detail is already in place */
    bool grow_refused;          /* a memory.grow within the limit failed: the pool is full */
    bool memory_exported;
    uint64_t memory_bytes;      /* size of the default memory when the call ended */
    uint64_t fuel;              /* limits->fuel (0: no budget) */
    uint32_t memory_limit;      /* limits->memory_bytes */
    uint32_t timeout_ms;        /* limits->timeout_ms */
    size_t pool_bytes;          /* the WAMR pool, for "device heap" messages */
} wb_wamr_end_t;

/* The outcome of a run whose module was instantiated, and its detail (written unless a host
 * fault already wrote it). *fuel_used is set to the budget for OUT_OF_FUEL and left alone
 * otherwise (WAMR's public API does not tell how many instructions a run used). */
wb_outcome_t wb_wamr_classify(const wb_wamr_end_t *end, char *detail, size_t cap,
                              uint64_t *fuel_used);

/* A failure of wasm_runtime_load (stage "load") or wasm_runtime_instantiate_ex (stage
 * "instantiate") with WAMR's error text: OUT_OF_MEMORY when the pool ran out, else
 * LOAD_FAILED. */
wb_outcome_t wb_wamr_load_failure(const char *stage, const char *error, size_t pool_bytes,
                                  char *detail, size_t cap);

#endif
