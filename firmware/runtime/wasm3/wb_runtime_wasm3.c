/* wb_runtime_validate / wb_runtime_run on wasm3 (firmware/core/include/wb/runtime.h).
 *
 * Semantics follow the Python reference runtime (wasmbed_hil/bench/virtual/runtime.py); what differs on
 * wasm3 is documented in README.md next to this file ("fuel" in particular). The module scan,
 * the entry plan (argument conversion, imports) and the wording of outcomes are shared with the
 * Zephyr/WAMR runtime: runtime/common/wb_wasm_scan.c. This file keeps what needs wasm3.
 *
 * Guard: wasm3 has no fuel metering and no interruption. Every unbounded execution in wasm needs
 * either a loop back-edge or a call, so the guard runs at exactly those two places:
 *   - taken loop back-edges: op_ContinueLoop / op_ContinueLoopIf, replaced (wb_wasm3_hooks.h);
 *   - every call (wasm and host functions): m3_Yield, wasm3's weak per-call hook.
 * Each such event costs 1 fuel. Every WB_WASM3_GUARD_INTERVAL events (and on the first) the
 * slow path checks the fuel budget, *stop, the wall clock (wb_platform_now_ms) and calls
 * wb_runtime_guard_hook() every WB_RUNTIME_GUARD_HOOK_MS. Ending a run = returning a trap
 * pointer that wasm3 unwinds like any trap; the outcome is taken from the guard state.
 * m3_Yield also bounds the native C stack used by wasm3's recursive interpreter.
 *
 * Not reentrant: one run at a time (a run started while one is active is LOAD_FAILED).
 */
#undef calloc
#undef malloc
#undef realloc
#undef free
#undef op_ContinueLoop
#undef op_ContinueLoopIf
#undef op_MemGrow

#include <string.h>

#include "wasm3.h"
#include "m3_env.h"
#include "m3_exec_defs.h"

#include "wb/platform.h"
#include "wb/runtime.h"
#include "wb_wasm3_arena.h"
#include "wb_wasm_scan.h"

#ifndef WB_WASM3_OP_REPLACED
#error "wasm3 must be compiled with -include wb_wasm3_hooks.h (see wasm3.mk)"
#endif

/* ---- configuration (override with -D) ------------------------------------------------------ */

/* wasm3 value stack per run (bytes, taken from the arena). */
#ifndef WB_WASM3_STACK_BYTES
#define WB_WASM3_STACK_BYTES (32u * 1024u)
#endif
/* Native C stack the interpreter may use below wb_runtime_run's frame before a wasm call traps
 * with a stack overflow (wasm3 recurses natively on every wasm call). Must be below the board's
 * stack size minus what the caller uses. */
#ifndef WB_WASM3_NATIVE_STACK_BYTES
#define WB_WASM3_NATIVE_STACK_BYTES (32u * 1024u)
#endif
/* Guard events (calls + loop back-edges) between two slow-path checks. */
#ifndef WB_WASM3_GUARD_INTERVAL
#define WB_WASM3_GUARD_INTERVAL 256u
#endif
/* Period of wb_runtime_guard_hook() during a run, in ms. */
#ifndef WB_RUNTIME_GUARD_HOOK_MS
#define WB_RUNTIME_GUARD_HOOK_MS 20u
#endif

/* ---- platform hooks ------------------------------------------------------------------------ */

/* Called from the guard every ~WB_RUNTIME_GUARD_HOOK_MS ms of a run (the protocol core
 * overrides it to serve heartbeats). It may set the run's stop flag; it must not start a run. */
__attribute__((weak)) void wb_runtime_guard_hook(void) {}

/* Microseconds for duration_us; a platform with a finer clock overrides it. */
__attribute__((weak)) uint64_t wb_runtime_now_us(void) { return wb_platform_now_ms() * 1000u; }

/* ---- guard --------------------------------------------------------------------------------- */

static const char s_guard_trap[] = "[guard] run interrupted";

typedef struct {
    bool active;
    wb_outcome_t outcome;        /* OUT_OF_FUEL / TIMED_OUT / STOPPED once interrupted, else RETURNED */
    uint64_t fuel_budget;        /* 0: none */
    uint64_t fuel_used;
    uint64_t next_check;
    uint64_t deadline_ms;
    uint64_t last_hook_ms;
    uint32_t timeout_ms;
    volatile const bool *stop;
    uintptr_t stack_base;
    uint32_t memory_limit_pages;
    bool grow_refused_by_heap;   /* a memory.grow within the limit failed: arena exhausted */
    bool host_fault;             /* env.log trapped; detail already in result */
    wb_run_result_t *result;
    bool memory_exported;        /* an export named "memory" that is a memory */
} guard_t;

static guard_t s_guard;
static bool s_busy;

static M3Result guard_interrupt(wb_outcome_t outcome)
{
    s_guard.outcome = outcome;
    s_guard.next_check = 0;
    return s_guard_trap;
}

static M3Result guard_slow(void)
{
    if (!s_guard.active) {
        s_guard.next_check = UINT64_MAX;
        return m3Err_none;
    }
    if (s_guard.outcome != WB_OUTCOME_RETURNED) return s_guard_trap;
    if (s_guard.fuel_budget && s_guard.fuel_used > s_guard.fuel_budget) {
        s_guard.fuel_used = s_guard.fuel_budget; /* the event over budget did not happen */
        return guard_interrupt(WB_OUTCOME_OUT_OF_FUEL);
    }
    if (s_guard.stop && *s_guard.stop) return guard_interrupt(WB_OUTCOME_STOPPED);
    uint64_t now = wb_platform_now_ms();
    if (now >= s_guard.deadline_ms) return guard_interrupt(WB_OUTCOME_TIMED_OUT);
    if (now - s_guard.last_hook_ms >= WB_RUNTIME_GUARD_HOOK_MS) {
        s_guard.last_hook_ms = now;
        wb_runtime_guard_hook();
        if (s_guard.stop && *s_guard.stop) return guard_interrupt(WB_OUTCOME_STOPPED);
    }
    uint64_t next = s_guard.fuel_used + WB_WASM3_GUARD_INTERVAL;
    if (s_guard.fuel_budget && next > s_guard.fuel_budget + 1) next = s_guard.fuel_budget + 1;
    s_guard.next_check = next;
    return m3Err_none;
}

static inline M3Result guard_tick(void)
{
    if (++s_guard.fuel_used < s_guard.next_check) return m3Err_none;
    return guard_slow();
}

/* wasm3 calls this before every function call (m3_exec.h: Call). Strong over m3_core.c's weak. */
M3Result m3_Yield(void)
{
    if (s_guard.active) {
        uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
        if (s_guard.stack_base - sp > WB_WASM3_NATIVE_STACK_BYTES) return m3Err_trapStackOverflow;
    }
    return guard_tick();
}

/* ---- replaced interpreter operations (see wb_wasm3_hooks.h) -------------------------------- */

/* Original: { void * loopId = immediate (void *); return loopId; } */
m3ret_t vectorcall op_ContinueLoop(d_m3OpSig)
{
    (void)_sp, (void)_mem, (void)_r0;
#if d_m3HasFloat
    (void)_fp0;
#endif
    M3Result trap = guard_tick();
    if (M3_UNLIKELY(trap)) return trap;
    void *loopId = *(void **)_pc;
    return loopId;
}

/* Original: { i32 condition = (i32) _r0; void * loopId = immediate (void *);
 *             if (condition) return loopId; else nextOp (); } */
m3ret_t vectorcall op_ContinueLoopIf(d_m3OpSig)
{
    i32 condition = (i32)_r0;
    void *loopId = *(void **)_pc++;
    if (condition) {
        M3Result trap = guard_tick();
        if (M3_UNLIKELY(trap)) return trap;
        return loopId;
    }
    return nextOpImpl();
}

/* Original grows by memory->numPages + n in u32 (wraps for huge n) and knows no per-run limit. */
m3ret_t vectorcall op_MemGrow(d_m3OpSig)
{
    IM3Runtime runtime = m3MemRuntime(_mem);
    IM3Memory memory = &runtime->memory;

    u32 numPagesToGrow = (u32)_r0;
    _r0 = memory->numPages;

    if (numPagesToGrow) {
        u64 required = (u64)memory->numPages + numPagesToGrow;
        if (required > memory->maxPages) {
            _r0 = -1;
        } else {
            wb_wasm3_arena_stats_t before, after;
            wb_wasm3_arena_stats(&before);
            M3Result r = ResizeMemory(runtime, (u32)required);
            if (r) {
                _r0 = -1;
                wb_wasm3_arena_stats(&after);
                if (after.failures != before.failures) s_guard.grow_refused_by_heap = true;
            }
        }
        _mem = memory->mallocated;
    }
    return nextOpImpl();
}

/* ---- outcomes ------------------------------------------------------------------------------ */

/* wasmtime's trap code names, so details compare with the Python runtime ("CODE: message"). */
static const char *trap_code(M3Result r)
{
    if (r == m3Err_trapOutOfBoundsMemoryAccess) return "MEMORY_OUT_OF_BOUNDS";
    if (r == m3Err_trapDivisionByZero) return "INTEGER_DIVISION_BY_ZERO";
    if (r == m3Err_trapIntegerOverflow) return "INTEGER_OVERFLOW";
    if (r == m3Err_trapIntegerConversion) return "BAD_CONVERSION_TO_INTEGER";
    if (r == m3Err_trapIndirectCallTypeMismatch) return "BAD_SIGNATURE";
    if (r == m3Err_trapTableIndexOutOfRange) return "TABLE_OUT_OF_BOUNDS";
    if (r == m3Err_trapTableElementIsNull) return "INDIRECT_CALL_TO_NULL";
    if (r == m3Err_trapUnreachable) return "UNREACHABLE";
    if (r == m3Err_trapStackOverflow) return "STACK_OVERFLOW";
    return NULL;
}

static bool heap_failed(void)
{
    wb_wasm3_arena_stats_t st;
    wb_wasm3_arena_stats(&st);
    return st.failures != 0;
}

/* The outcome of a wasm3 error raised while executing (start function or entry). */
static void classify(M3Result r, IM3Runtime runtime, const wb_limits_t *limits,
                     wb_run_result_t *res)
{
    if (s_guard.outcome != WB_OUTCOME_RETURNED) {
        res->outcome = s_guard.outcome;
        wb_wasm_interrupted(s_guard.outcome, limits->fuel, limits->timeout_ms, res->detail,
                            sizeof res->detail);
        return;
    }
    if (s_guard.host_fault) {
        res->outcome = WB_OUTCOME_TRAPPED; /* detail written by env.log */
        return;
    }
    const wb_wasm_memory_state_t memory = {
        .memory_exported = s_guard.memory_exported,
        .memory_bytes = m3_GetMemorySize(runtime),
        .memory_limit = limits->memory_bytes,
        .grow_refused = s_guard.grow_refused_by_heap,
        .heap_bytes = WB_WASM3_ARENA_BYTES,
    };
    res->outcome = wb_wasm_trap(trap_code(r), r, &memory, res->detail, sizeof res->detail);
}

/* ---- env.log --------------------------------------------------------------------------------- */

static m3ApiRawFunction(wb_env_log)
{
    m3ApiGetArg(uint32_t, ptr);
    m3ApiGetArg(uint32_t, len);
    (void)_ctx;
    wb_run_result_t *res = s_guard.result;
    if (!res) m3ApiTrap("env.log: called outside of a run");
    if (!wb_wasm_log_allowed(s_guard.memory_exported, m3_GetMemorySize(runtime), ptr, len,
                             res->detail, sizeof res->detail)) {
        s_guard.host_fault = true;
        m3ApiTrap(s_guard.memory_exported ? "env.log: out of range"
                                          : "env.log: no exported memory");
    }
    size_t room = WB_MAX_LOG - res->log_len;
    size_t n = len < room ? len : room;
    if (n) memcpy(res->log + res->log_len, (const uint8_t *)_mem + ptr, n);
    res->log_len += n;
    m3ApiSuccess();
}

/* ---- validate -------------------------------------------------------------------------------- */

wb_error_t wb_runtime_validate(const uint8_t *wasm, size_t len, char *detail, size_t cap)
{
    if (cap) detail[0] = '\0';
    char why[WB_MAX_REASON];
    if (!wb_wasm_check_framing(wasm, len, why, sizeof why)) {
        wb_wasm_detail(detail, cap, "%s", wasm ? why : "no module");
        return WB_ERR_INVALID_MODULE;
    }
    if (!s_busy) wb_wasm3_arena_reset(); /* inside a run (guard hook): share the arena */
    IM3Environment env = m3_NewEnvironment();
    if (!env) {
        wb_wasm_detail(detail, cap, "device heap exhausted while validating");
        return WB_ERR_INVALID_MODULE;
    }
    IM3Module module = NULL;
    M3Result r = m3_ParseModule(env, &module, wasm, (uint32_t)len);
    wb_error_t err = WB_OK;
    if (r) {
        wb_wasm_detail(detail, cap, "invalid WebAssembly module: %s", r);
        err = WB_ERR_INVALID_MODULE;
    }
    if (module) m3_FreeModule(module);
    m3_FreeEnvironment(env);
    if (!s_busy) wb_wasm3_arena_reset();
    return err;
}

/* ---- run ------------------------------------------------------------------------------------- */

static void run_module(const uint8_t *wasm, size_t len, const char *entry, const wb_value_t *args,
                       size_t n_args, const wb_limits_t *limits, volatile const bool *stop,
                       wb_run_result_t *res)
{
    char *detail = res->detail;
    const size_t cap = sizeof res->detail;

    /* The scan keeps what wasm3 does not (export names, kinds, the raw import section). */
    wb_wasm_sections_t sec;
    char why[WB_MAX_REASON];
    if (!wb_wasm_find_sections(wasm, len, &sec, why, sizeof why)) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        wb_wasm_detail(detail, cap, "invalid WebAssembly module: %s", wasm ? why : "no module");
        return;
    }

    IM3Environment env = m3_NewEnvironment();
    if (!env) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        wb_wasm_detail(detail, cap, "device heap exhausted creating the wasm3 environment");
        return;
    }
    IM3Module module = NULL;
    M3Result r = m3_ParseModule(env, &module, wasm, (uint32_t)len);
    if (r) {
        res->outcome = heap_failed() ? WB_OUTCOME_OUT_OF_MEMORY : WB_OUTCOME_LOAD_FAILED;
        wb_wasm_detail(detail, cap, "%s WebAssembly module: %s",
                       heap_failed() ? "device heap exhausted parsing the" : "invalid", r);
        return;
    }

    /* The entry, its arguments, the imports; then the declared memory against the limit. */
    wb_wasm_entry_t plan;
    wb_outcome_t o = wb_wasm_prepare_entry(&sec, entry, args, n_args, &plan, detail, cap);
    if (o != WB_OUTCOME_RETURNED) {
        res->outcome = o;
        return;
    }
    if (plan.func_index >= module->numFunctions) { /* wasm3's parser checks it too */
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        wb_wasm_detail(detail, cap, "invalid WebAssembly module: export '%s' names no function",
                       entry);
        return;
    }
    IM3Function func = &module->functions[plan.func_index];
    s_guard.memory_exported = plan.memory_exported;
    bool has_memory = false;
    uint32_t min_pages = 0;
    o = wb_wasm_check_memory(&sec, limits->memory_bytes, &has_memory, &min_pages, detail, cap);
    if (o != WB_OUTCOME_RETURNED) {
        res->outcome = o;
        return;
    }

    /* Instantiate. */
    IM3Runtime runtime = m3_NewRuntime(env, WB_WASM3_STACK_BYTES, NULL);
    if (!runtime) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        wb_wasm_detail(detail, cap, "device heap exhausted creating the wasm3 runtime (%lu bytes)",
                       (unsigned long)WB_WASM3_ARENA_BYTES);
        return;
    }
    r = m3_LoadModule(runtime, module);
    if (r) {
        res->outcome = wb_wasm_load_failure(true, heap_failed(), r, WB_WASM3_ARENA_BYTES, detail,
                                            cap);
        return;
    }
    uint32_t limit_pages = limits->memory_bytes / WB_WASM_PAGE;
    if (runtime->memory.maxPages > limit_pages) runtime->memory.maxPages = limit_pages;

    if (module->numFuncImports) {
        r = m3_LinkRawFunction(module, "env", "log", "v(ii)", &wb_env_log);
        if (r && r != m3Err_functionLookupFailed) {
            res->outcome = WB_OUTCOME_LOAD_FAILED;
            wb_wasm_detail(detail, cap, "cannot link env.log: %s", r);
            return;
        }
    }
    r = m3_CompileModule(module);
    if (r) {
        res->outcome = heap_failed() ? WB_OUTCOME_OUT_OF_MEMORY : WB_OUTCOME_LOAD_FAILED;
        wb_wasm_detail(detail, cap, "%s: %s",
                       heap_failed() ? "device heap exhausted compiling the module"
                                     : "invalid WebAssembly module: compile error",
                       r);
        return;
    }

    /* Run under the guard. */
    uint64_t now = wb_platform_now_ms();
    s_guard.fuel_budget = limits->fuel;
    s_guard.fuel_used = 0;
    s_guard.next_check = 1; /* the first event checks stop and clock */
    /* +1: `now` is truncated to the millisecond, so the run may have begun up to 1 ms
     * before it; a budget of N ms must never end a run after less than N ms. */
    s_guard.deadline_ms = now + limits->timeout_ms + 1;
    s_guard.last_hook_ms = now;
    s_guard.timeout_ms = limits->timeout_ms;
    s_guard.stop = stop;
    s_guard.stack_base = (uintptr_t)__builtin_frame_address(0);
    s_guard.outcome = WB_OUTCOME_RETURNED;
    s_guard.result = res;
    s_guard.active = true;

    if (stop && *stop) {
        s_guard.active = false;
        res->outcome = WB_OUTCOME_STOPPED;
        wb_wasm_interrupted(WB_OUTCOME_STOPPED, limits->fuel, limits->timeout_ms, detail, cap);
        return;
    }

    r = m3_RunStart(module);
    if (!r) {
        const void *ptrs[WB_MAX_ARGS];
        for (size_t i = 0; i < plan.n_args; i++) ptrs[i] = &plan.args[i].of;
        r = m3_Call(func, (uint32_t)plan.n_args, ptrs);
    }
    s_guard.active = false;
    res->fuel_used = s_guard.fuel_used;
    if (r) {
        classify(r, runtime, limits, res);
        return;
    }

    wb_raw_value_t rets[WB_MAX_ARGS];
    const void *rptrs[WB_MAX_ARGS];
    for (size_t i = 0; i < plan.n_results; i++) rptrs[i] = &rets[i].of;
    r = m3_GetResults(func, (uint32_t)plan.n_results, rptrs);
    if (r) {
        res->outcome = WB_OUTCOME_TRAPPED;
        wb_wasm_detail(detail, cap, "cannot read the results: %s", r);
        return;
    }
    for (size_t i = 0; i < plan.n_results; i++) {
        wb_value_t *v = &res->values[i];
        switch (plan.results[i]) {
        case WB_VAL_I32: v->is_float = false; v->v.i = rets[i].of.i32; break;
        case WB_VAL_I64: v->is_float = false; v->v.i = rets[i].of.i64; break;
        case WB_VAL_F32: v->is_float = true; v->v.f = rets[i].of.f32; break;
        default: v->is_float = true; v->v.f = rets[i].of.f64; break;
        }
    }
    res->n_values = plan.n_results;
    res->outcome = WB_OUTCOME_RETURNED;
    detail[0] = '\0';
}

void wb_runtime_run(const uint8_t *wasm, size_t len, const char *entry, const wb_value_t *args,
                    size_t n_args, const wb_limits_t *limits, volatile const bool *stop,
                    wb_run_result_t *result)
{
    uint64_t start_us = wb_runtime_now_us();
    memset(result, 0, sizeof *result);
    if (s_busy) {
        result->outcome = WB_OUTCOME_LOAD_FAILED;
        wb_wasm_detail(result->detail, sizeof result->detail,
                       "runtime busy: a run is in progress");
        return;
    }
    static const wb_limits_t no_limits = {0, 0, 0};
    if (!limits) limits = &no_limits;
    if (!entry) entry = "";
    s_busy = true;
    memset(&s_guard, 0, sizeof s_guard);
    wb_wasm3_arena_reset();

    run_module(wasm, len, entry, args, n_args, limits, stop, result);

    if (result->outcome != WB_OUTCOME_RETURNED) result->n_values = 0;
    memset(&s_guard, 0, sizeof s_guard);
    wb_wasm3_arena_reset(); /* reclaims environment, runtime, module, code pages, memory */
    s_busy = false;
    result->duration_us = wb_runtime_now_us() - start_us;
}
