/* Portable half of the WAMR runtime: the plan before WAMR sees a module, and the mapping of
 * WAMR's exception strings and load errors to outcomes. No WAMR or Zephyr header here (see
 * wamr_portable.h); compiled on the host by the tests. The module scan, argument conversion
 * and the wording both runtimes share are in runtime/common/wb_wasm_scan.c. */
#include "wamr_portable.h"

#include <string.h>

/* ---- prepare ------------------------------------------------------------------------------- */

wb_outcome_t wb_wamr_prepare(const uint8_t *wasm, size_t len, const char *entry,
                             const wb_value_t *args, size_t n_args, const wb_limits_t *limits,
                             wb_wamr_plan_t *plan, char *detail, size_t cap)
{
    memset(plan, 0, sizeof *plan);
    if (cap) detail[0] = '\0';
    if (!entry) entry = "";

    wb_wasm_sections_t sec;
    char why[WB_MAX_REASON];
    if (!wb_wasm_find_sections(wasm, len, &sec, why, sizeof why)) {
        wb_wasm_detail(detail, cap, "invalid WebAssembly module: %s", wasm ? why : "no module");
        return WB_OUTCOME_LOAD_FAILED;
    }
    wb_outcome_t o = wb_wasm_prepare_entry(&sec, entry, args, n_args, &plan->entry, detail, cap);
    if (o != WB_OUTCOME_RETURNED) return o;
    if (sec.has_start) {
        /* WAMR runs the start function inside wasm_runtime_instantiate(): before an exec env
         * exists, so outside the instruction limit and out of reach of wasm_runtime_terminate. */
        wb_wasm_detail(detail, cap,
                       "the module has a start function; this runtime (WAMR) does not run start "
                       "functions (they would run during instantiation, outside the fuel and "
                       "time limits)");
        return WB_OUTCOME_LOAD_FAILED;
    }
    o = wb_wasm_check_memory(&sec, limits->memory_bytes, &plan->has_memory,
                             &plan->memory_min_pages, detail, cap);
    if (o != WB_OUTCOME_RETURNED) return o;
    plan->max_memory_pages = limits->memory_bytes / WB_WASM_PAGE;
    if (limits->fuel == 0) {
        plan->instruction_limit = -1;
    } else if (limits->fuel > (uint64_t)INT32_MAX) {
        plan->instruction_limit = INT32_MAX;
    } else {
        plan->instruction_limit = (int32_t)limits->fuel;
    }
    return WB_OUTCOME_RETURNED;
}

/* ---- the memory limit in the module's bytes -------------------------------------------------- */

/* An unsigned LEB128 of at most 5 bytes (u32) from [*p, end); false on overrun or overflow. */
static bool read_u32(const uint8_t **p, const uint8_t *end, uint32_t *v)
{
    uint32_t result = 0;
    for (unsigned shift = 0; shift < 35; shift += 7) {
        if (*p >= end) return false;
        uint8_t b = *(*p)++;
        if (shift == 28 && (b & 0x70)) return false; /* bits beyond 32 */
        result |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = result;
            return true;
        }
    }
    return false;
}

static size_t put_u32(uint8_t *out, uint32_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        out[n++] = (uint8_t)(b | (v ? 0x80 : 0));
    } while (v);
    return n;
}

static size_t patch_fail(char *why, size_t cap, const char *reason)
{
    wb_wasm_detail(why, cap, "%s", reason);
    return 0;
}

size_t wb_wamr_patch_memory_max(const uint8_t *wasm, size_t len, uint32_t max_pages,
                                uint8_t *out, size_t out_cap, char *why, size_t why_cap)
{
    if (why_cap) why[0] = '\0';
    if (!wasm || !out || len < 8 || len > UINT32_MAX || memcmp(wasm, "\0asm", 4) != 0) {
        return patch_fail(why, why_cap, "no module header");
    }
    if (out_cap < len + WB_WAMR_PATCH_SLACK) {
        return patch_fail(why, why_cap, "no room for the patched module");
    }
    const uint8_t *end = wasm + len;
    const uint8_t *p = wasm + 8;
    while (p < end) {
        const uint8_t *section = p;
        uint8_t id = *p++;
        uint32_t size = 0;
        if (!read_u32(&p, end, &size) || size > (size_t)(end - p)) {
            return patch_fail(why, why_cap, "a section runs past the end of the module");
        }
        const uint8_t *payload = p;
        const uint8_t *payload_end = p + size;
        p = payload_end;
        if (id != 5) continue; /* the memory section */

        const uint8_t *q = payload;
        uint32_t count = 0, flags = 0, min = 0, max = 0;
        if (!read_u32(&q, payload_end, &count)) {
            return patch_fail(why, why_cap, "broken memory section");
        }
        if (count == 0) break;
        const uint8_t *limits = q;
        if (!read_u32(&q, payload_end, &flags) || q - limits != 1) {
            return patch_fail(why, why_cap, "broken memory limits");
        }
        if (flags > 1) break; /* shared or 64-bit memory: not ours to rewrite */
        if (!read_u32(&q, payload_end, &min) || (flags && !read_u32(&q, payload_end, &max))) {
            return patch_fail(why, why_cap, "broken memory limits");
        }
        if (min > max_pages) {
            return patch_fail(why, why_cap, "the declared minimum exceeds the memory limit");
        }
        if (flags && max <= max_pages) break; /* already within the limit */

        /* [wasm, section) id size' payload[.., limits) 01 min max_pages q.. payload_end.. end */
        uint8_t limits_new[11];
        size_t n_limits = 0;
        limits_new[n_limits++] = 0x01;
        n_limits += put_u32(limits_new + n_limits, min);
        n_limits += put_u32(limits_new + n_limits, max_pages);
        size_t old_limits = (size_t)(q - limits);
        uint64_t new_size = (uint64_t)size - old_limits + n_limits;
        if (new_size > UINT32_MAX) {
            return patch_fail(why, why_cap, "the memory section is too large");
        }
        size_t o = 0;
        memcpy(out, wasm, (size_t)(section - wasm));
        o += (size_t)(section - wasm);
        out[o++] = id;
        o += put_u32(out + o, (uint32_t)new_size);
        memcpy(out + o, payload, (size_t)(limits - payload));
        o += (size_t)(limits - payload);
        memcpy(out + o, limits_new, n_limits);
        o += n_limits;
        memcpy(out + o, q, (size_t)(end - q));
        o += (size_t)(end - q);
        return o;
    }
    memcpy(out, wasm, len);
    return len;
}

/* ---- exceptions ---------------------------------------------------------------------------- */

/* WAMR's messages (core/iwasm: exception_msgs[] and the interpreters), first match wins.
 * Codes are wasmtime's trap code names, as in the wasm3 runtime's details. */
const wb_wamr_trap_t wb_wamr_traps[] = {
    {"instruction limit exceeded", NULL, WB_OUTCOME_OUT_OF_FUEL},
    /* The pool ran out (WAMR-2.4.3): runtime_malloc() and loader_malloc() in the interpreter's
     * wasm_runtime.c / wasm_loader.c, EXCE_OUT_OF_MEMORY in wasm_runtime_common.c; and
     * memory_instantiate() when the linear memory does not fit (on Zephyr os_mmap() takes it
     * from wasm_runtime_malloc(), i.e. the pool: iwasm_common.cmake sets
     * BH_MALLOC=wasm_runtime_malloc). Load failures are matched against these entries too
     * (wb_wamr_load_failure), so the two places cannot disagree on the words. */
    {"allocate memory failed", NULL, WB_OUTCOME_OUT_OF_MEMORY},
    {"allocate linear memory failed", NULL, WB_OUTCOME_OUT_OF_MEMORY},
    {"unreachable", "UNREACHABLE", WB_OUTCOME_TRAPPED},
    {"out of bounds memory access", "MEMORY_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
    {"integer divide by zero", "INTEGER_DIVISION_BY_ZERO", WB_OUTCOME_TRAPPED},
    {"integer overflow", "INTEGER_OVERFLOW", WB_OUTCOME_TRAPPED},
    {"invalid conversion to integer", "BAD_CONVERSION_TO_INTEGER", WB_OUTCOME_TRAPPED},
    {"indirect call type mismatch", "BAD_SIGNATURE", WB_OUTCOME_TRAPPED},
    {"uninitialized element", "INDIRECT_CALL_TO_NULL", WB_OUTCOME_TRAPPED},
    {"undefined element", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
    {"out of bounds table access", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
    {"invalid function index", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
    {"stack overflow", "STACK_OVERFLOW", WB_OUTCOME_TRAPPED}, /* operand, native, auxiliary */
    {"call stack exhausted", "STACK_OVERFLOW", WB_OUTCOME_TRAPPED},
    {"unaligned atomic", "HEAP_MISALIGNED", WB_OUTCOME_TRAPPED},
    {"null function reference", "INDIRECT_CALL_TO_NULL", WB_OUTCOME_TRAPPED},
    {"null reference", "NULL_REFERENCE", WB_OUTCOME_TRAPPED},
};
const size_t wb_wamr_n_traps = sizeof wb_wamr_traps / sizeof wb_wamr_traps[0];

static const char k_prefix[] = "Exception: ";

const char *wb_wamr_strip_exception(const char *exception)
{
    if (!exception) return "";
    size_t n = sizeof k_prefix - 1;
    return strncmp(exception, k_prefix, n) == 0 ? exception + n : exception;
}

const wb_wamr_trap_t *wb_wamr_match_exception(const char *message)
{
    const char *msg = wb_wamr_strip_exception(message);
    if (!*msg) return NULL;
    for (size_t i = 0; i < wb_wamr_n_traps; i++) {
        if (strstr(msg, wb_wamr_traps[i].needle)) return &wb_wamr_traps[i];
    }
    return NULL;
}

wb_outcome_t wb_wamr_classify(const wb_wamr_end_t *end, char *detail, size_t cap,
                              uint64_t *fuel_used)
{
    if (end->call_ok) {
        if (cap) detail[0] = '\0';
        return WB_OUTCOME_RETURNED;
    }
    if (end->requested == WB_OUTCOME_TIMED_OUT || end->requested == WB_OUTCOME_STOPPED) {
        wb_wasm_interrupted(end->requested, end->fuel, end->timeout_ms, detail, cap);
        return end->requested;
    }
    if (end->host_fault) return WB_OUTCOME_TRAPPED; /* detail written by env.log */

    const char *msg = wb_wamr_strip_exception(end->exception);
    const wb_wamr_trap_t *t = wb_wamr_match_exception(msg);
    if (t && t->outcome == WB_OUTCOME_OUT_OF_FUEL) {
        if (fuel_used) *fuel_used = end->fuel;
        wb_wasm_interrupted(WB_OUTCOME_OUT_OF_FUEL, end->fuel, end->timeout_ms, detail, cap);
        if (end->fuel > (uint64_t)INT32_MAX) {
            wb_wasm_append(detail, cap, " (WAMR counts at most 2147483647 instructions per run)");
        }
        return WB_OUTCOME_OUT_OF_FUEL;
    }
    if (t && t->outcome == WB_OUTCOME_OUT_OF_MEMORY) {
        wb_wasm_detail(detail, cap, "device heap of %lu bytes exhausted: %s",
                       (unsigned long)end->pool_bytes, msg);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    const wb_wasm_memory_state_t memory = {
        .memory_exported = end->memory_exported,
        .memory_bytes = end->memory_bytes,
        .memory_limit = end->memory_limit,
        .grow_refused = end->grow_refused,
        .heap_bytes = end->pool_bytes,
    };
    return wb_wasm_trap(t ? t->code : NULL, *msg ? msg : "the call failed without an exception",
                        &memory, detail, cap);
}

wb_outcome_t wb_wamr_load_failure(const char *stage, const char *error, size_t pool_bytes,
                                  char *detail, size_t cap)
{
    /* The same words as a run's exceptions: the OUT_OF_MEMORY entries of wb_wamr_traps[]. */
    const wb_wamr_trap_t *t = wb_wamr_match_exception(error);
    bool heap = t && t->outcome == WB_OUTCOME_OUT_OF_MEMORY;
    bool instantiate = stage && strcmp(stage, "instantiate") == 0;
    return wb_wasm_load_failure(instantiate, heap, error, pool_bytes, detail, cap);
}
