/* What both firmware runtimes (runtime/wasm3 and runtime/wamr) decide about a
 * module without the runtime itself, and the words they say it in.
 *
 *  - a bounds-checked scan of the module's sections (what neither runtime keeps, or keeps in
 *    runtime-specific form): framing, exports, the entry's signature, imports (only env.log
 *    (i32, i32) -> () is offered), the start section, the declared memory;
 *  - the entry plan: export lookup, result count, argument conversion (the semantics of
 *    wasmbed_hil/bench/virtual/runtime.py _convert_args), imports, memory export;
 *  - the wording of load failures, guard interruptions, traps and env.log faults.
 *
 * One copy, so that the gateway and the tests see one vocabulary whatever runtime a device
 * has: the words are the wasm3 runtime's, which the Python reference runtime's tests check.
 * Plain C11, no runtime, OS or libc extension headers, no allocation; 64-bit numbers are
 * written with wb_u64_text (small libcs, e.g. Zephyr's, may lack %llu). Built for the
 * bare-metal image and the wasm3 host tests by runtime/wasm3/wasm3.mk, for Zephyr by
 * ports/zephyr/CMakeLists.txt (both read sources.txt here), and on the host by
 * tests/test_zephyr_app.py. */
#ifndef WB_WASM_SCAN_H
#define WB_WASM_SCAN_H

#include "wb/types.h"

#define WB_WASM_PAGE 65536u

typedef enum {
    WB_VAL_I32 = 0,
    WB_VAL_I64,
    WB_VAL_F32,
    WB_VAL_F64,
    WB_VAL_UNSUPPORTED, /* v128, references, anything a DeviceInfo value cannot carry */
} wb_valtype_t;

/* An argument converted to its parameter type; `of` is what a runtime's call API takes. */
typedef struct {
    wb_valtype_t type;
    union {
        int32_t i32;
        int64_t i64;
        float f32;
        double f64;
    } of;
} wb_raw_value_t;

/* ---- the scan -------------------------------------------------------------------------------- */

/* A bounds-checked reader over part of the module (ok goes false on the first overrun). */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    bool ok;
} wb_wasm_rd_t;

/* Payloads of the sections the runtimes ask about (p == NULL: absent). */
typedef struct {
    wb_wasm_rd_t types, imports, functions, memories, exports;
    bool has_start;
} wb_wasm_sections_t;

/* Locate the sections: magic, version, section sizes. false with a reason (no prefix) in why
 * when the framing is broken. wasm may be NULL (no magic). */
bool wb_wasm_find_sections(const uint8_t *wasm, size_t len, wb_wasm_sections_t *out, char *why,
                           size_t cap);

/* wb_wasm_find_sections for a caller that only wants the verdict (wb_runtime_validate). */
bool wb_wasm_check_framing(const uint8_t *wasm, size_t len, char *why, size_t cap);

/* Export `name`: its kind (0 function, 1 table, 2 memory, 3 global) and index. */
bool wb_wasm_find_export(const wb_wasm_sections_t *s, const char *name, uint8_t *kind,
                         uint32_t *index);

/* ---- the entry plan -------------------------------------------------------------------------- */

typedef struct {
    uint32_t func_index;        /* the entry's function index (imported functions first) */
    size_t n_args;
    wb_raw_value_t args[WB_MAX_ARGS];
    size_t n_results;
    wb_valtype_t results[WB_MAX_ARGS];
    bool memory_exported;       /* an export named "memory" that is a memory */
    bool imports_env_log;       /* the module imports env.log (with the right type) */
} wb_wasm_entry_t;

/* Everything about the entry decided before the runtime instantiates, in this order: export
 * (not exported: the exports are listed), kind, signature, result count and types, argument
 * count and conversion, imports; then whether "memory" is exported. WB_OUTCOME_RETURNED with
 * *out filled, else WB_OUTCOME_LOAD_FAILED with the reason in detail. entry must not be NULL;
 * n_args above WB_MAX_ARGS is reported as a count mismatch. */
wb_outcome_t wb_wasm_prepare_entry(const wb_wasm_sections_t *s, const char *entry,
                                   const wb_value_t *args, size_t n_args, wb_wasm_entry_t *out,
                                   char *detail, size_t cap);

/* The declared minimum of the first defined memory against memory_limit (bytes): *has_memory
 * and *min_pages say what was found; WB_OUTCOME_OUT_OF_MEMORY with the reason in detail when
 * the minimum does not fit, else WB_OUTCOME_RETURNED. */
wb_outcome_t wb_wasm_check_memory(const wb_wasm_sections_t *s, uint32_t memory_limit,
                                  bool *has_memory, uint32_t *min_pages, char *detail,
                                  size_t cap);

/* ---- shared wording ------------------------------------------------------------------------- */

/* snprintf into detail (nothing when cap is 0). */
void wb_wasm_detail(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append text to the string in buf, truncating at cap. */
void wb_wasm_append(char *buf, size_t cap, const char *text);

/* Decimal text of 64-bit integers (small libcs may lack %llu); buf holds at least 21 bytes. */
const char *wb_u64_text(uint64_t v, char *buf);
const char *wb_i64_text(int64_t v, char *buf);

/* A failure of the runtime's loader (instantiating false) or of instantiation with the
 * runtime's error text: OUT_OF_MEMORY when the runtime's heap of heap_bytes ran out
 * (heap_exhausted), else LOAD_FAILED. */
wb_outcome_t wb_wasm_load_failure(bool instantiating, bool heap_exhausted, const char *error,
                                  size_t heap_bytes, char *detail, size_t cap);

/* The detail of a run the guard ended: OUT_OF_FUEL (budget fuel), TIMED_OUT (timeout_ms) or
 * STOPPED (any other outcome). */
void wb_wasm_interrupted(wb_outcome_t outcome, uint64_t fuel, uint32_t timeout_ms, char *detail,
                         size_t cap);

/* Where linear memory stood when a run trapped. */
typedef struct {
    bool memory_exported;
    uint64_t memory_bytes;      /* size of the default memory when the run ended */
    uint32_t memory_limit;      /* limits->memory_bytes */
    bool grow_refused;          /* a memory.grow within the limit failed: the heap is full */
    size_t heap_bytes;          /* the runtime's heap, for "device heap" messages */
} wb_wasm_memory_state_t;

/* A trap with the runtime's message, prefixed by wasmtime's trap code name when known
 * ("UNREACHABLE: ..."): OUT_OF_MEMORY when the memory sits at its limit (the trap is what
 * hitting it looks like) or a memory.grow was refused by the heap, else TRAPPED. */
wb_outcome_t wb_wasm_trap(const char *code, const char *message, const wb_wasm_memory_state_t *m,
                          char *detail, size_t cap);

/* env.log(ptr, len): true when [ptr, ptr + len) lies in an exported memory of memory_bytes;
 * else false with the Python reference runtime's message in detail. */
bool wb_wasm_log_allowed(bool memory_exported, uint64_t memory_bytes, uint32_t ptr, uint32_t len,
                         char *detail, size_t cap);

#endif
