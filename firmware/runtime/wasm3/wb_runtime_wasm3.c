/* wb_runtime_validate / wb_runtime_run on wasm3 (firmware/core/include/wb/runtime.h).
 *
 * Semantics follow the Python reference runtime (wasmbed_hil/device/runtime.py); what differs on
 * wasm3 is documented in README.md next to this file ("fuel" in particular).
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

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "wasm3.h"
#include "m3_env.h"
#include "m3_exec_defs.h"

#include "wb/platform.h"
#include "wb/runtime.h"
#include "wb_wasm3_arena.h"

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

#define PAGE_SIZE 65536u

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

/* ---- small helpers ------------------------------------------------------------------------- */

static void set_detail(char *buf, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_detail(char *buf, size_t cap, const char *fmt, ...)
{
    if (!cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

static void append(char *buf, size_t cap, const char *text)
{
    size_t used = strnlen(buf, cap);
    if (used + 1 >= cap) return;
    size_t n = strlen(text);
    if (n > cap - 1 - used) n = cap - 1 - used;
    memcpy(buf + used, text, n);
    buf[used + n] = '\0';
}

static const char *type_name(uint8_t t)
{
    switch (t) {
    case c_m3Type_i32: return "i32";
    case c_m3Type_i64: return "i64";
    case c_m3Type_f32: return "f32";
    case c_m3Type_f64: return "f64";
    default: return "?";
    }
}

/* "(i32, i32) -> ()" */
static void signature_text(IM3Function f, char *buf, size_t cap)
{
    buf[0] = '\0';
    append(buf, cap, "(");
    for (uint32_t i = 0; i < m3_GetArgCount(f); i++) {
        if (i) append(buf, cap, ", ");
        append(buf, cap, type_name((uint8_t)m3_GetArgType(f, i)));
    }
    append(buf, cap, ") -> (");
    for (uint32_t i = 0; i < m3_GetRetCount(f); i++) {
        if (i) append(buf, cap, ", ");
        append(buf, cap, type_name((uint8_t)m3_GetRetType(f, i)));
    }
    append(buf, cap, ")");
}

static const char *kind_name(uint8_t kind)
{
    switch (kind) {
    case 0: return "function";
    case 1: return "table";
    case 2: return "memory";
    case 3: return "global";
    default: return "unknown";
    }
}

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

/* ---- a bounds-checked reader of the module's sections (what wasm3 does not keep) ----------- */

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
    bool ok;
} rd_t;

static uint8_t rd_u8(rd_t *r)
{
    if (!r->ok || r->p >= r->end) {
        r->ok = false;
        return 0;
    }
    return *r->p++;
}

static uint32_t rd_u32(rd_t *r)
{
    uint32_t v = 0;
    for (unsigned shift = 0; shift < 35; shift += 7) {
        uint8_t b = rd_u8(r);
        if (!r->ok) return 0;
        v |= (uint32_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->ok = false;
    return 0;
}

static void rd_skip(rd_t *r, uint32_t n)
{
    if (!r->ok || (size_t)(r->end - r->p) < n) {
        r->ok = false;
        return;
    }
    r->p += n;
}

static const uint8_t *rd_name(rd_t *r, uint32_t *len)
{
    *len = rd_u32(r);
    const uint8_t *s = r->p;
    rd_skip(r, *len);
    return r->ok ? s : NULL;
}

static void rd_limits(rd_t *r)
{
    uint8_t flags = rd_u8(r);
    rd_u32(r);
    if (flags & 1) rd_u32(r);
}

static bool name_is(const uint8_t *s, uint32_t n, const char *want)
{
    return s && strlen(want) == n && memcmp(s, want, n) == 0;
}

typedef struct {
    rd_t imports; /* payload of the import section (p == NULL: none) */
    rd_t exports; /* payload of the export section */
} sections_t;

/* Locate the sections; false with a reason when the framing is broken. */
static bool find_sections(const uint8_t *wasm, size_t len, sections_t *out, char *why, size_t cap)
{
    memset(out, 0, sizeof *out);
    static const uint8_t magic[8] = {0, 'a', 's', 'm', 1, 0, 0, 0};
    if (len < 4 || memcmp(wasm, magic, 4) != 0) {
        set_detail(why, cap, "not a WebAssembly binary module (no \\0asm magic; text format is not accepted)");
        return false;
    }
    if (len < 8 || memcmp(wasm + 4, magic + 4, 4) != 0) {
        set_detail(why, cap, "unsupported WebAssembly binary version");
        return false;
    }
    rd_t r = {wasm + 8, wasm + len, true};
    while (r.ok && r.p < r.end) {
        uint8_t id = rd_u8(&r);
        uint32_t size = rd_u32(&r);
        const uint8_t *payload = r.p;
        rd_skip(&r, size);
        if (!r.ok) break;
        rd_t sec = {payload, payload + size, true};
        if (id == 2) out->imports = sec;
        if (id == 7) out->exports = sec;
    }
    if (!r.ok) {
        set_detail(why, cap, "section framing runs past the end of the module");
        return false;
    }
    return true;
}

/* Find export `name`: its kind and index. */
static bool find_export(const sections_t *s, const char *name, uint8_t *kind, uint32_t *index)
{
    if (!s->exports.p) return false;
    rd_t r = s->exports;
    uint32_t n = rd_u32(&r);
    for (uint32_t i = 0; i < n && r.ok; i++) {
        uint32_t len;
        const uint8_t *s8 = rd_name(&r, &len);
        uint8_t k = rd_u8(&r);
        uint32_t idx = rd_u32(&r);
        if (r.ok && name_is(s8, len, name)) {
            *kind = k;
            *index = idx;
            return true;
        }
    }
    return false;
}

static void list_exports(const sections_t *s, char *buf, size_t cap)
{
    bool any = false;
    if (s->exports.p) {
        rd_t r = s->exports;
        uint32_t n = rd_u32(&r);
        for (uint32_t i = 0; i < n && r.ok; i++) {
            uint32_t len;
            const uint8_t *s8 = rd_name(&r, &len);
            rd_u8(&r);
            rd_u32(&r);
            if (!r.ok) break;
            char name[WB_MAX_ENTRY + 1];
            size_t l = len < WB_MAX_ENTRY ? len : WB_MAX_ENTRY;
            memcpy(name, s8, l);
            name[l] = '\0';
            if (any) append(buf, cap, ", ");
            append(buf, cap, name);
            any = true;
        }
    }
    if (!any) append(buf, cap, "none");
}

static void copy_name(char *dst, size_t cap, const uint8_t *s, uint32_t len)
{
    size_t l = len < cap - 1 ? len : cap - 1;
    if (s) memcpy(dst, s, l);
    dst[s ? l : 0] = '\0';
}

/* Why the imports cannot be satisfied (first problem, in import order), or false. */
static bool import_error(const sections_t *s, IM3Module module, char *why, size_t cap)
{
    if (!s->imports.p) return false;
    rd_t r = s->imports;
    uint32_t n = rd_u32(&r);
    uint32_t func_import = 0;
    for (uint32_t i = 0; i < n && r.ok; i++) {
        uint32_t mlen, flen;
        const uint8_t *m = rd_name(&r, &mlen);
        const uint8_t *f = rd_name(&r, &flen);
        uint8_t kind = rd_u8(&r);
        uint32_t func_index = func_import;
        switch (kind) {
        case 0: rd_u32(&r); func_import++; break;                        /* type index */
        case 1: rd_u8(&r); rd_limits(&r); break;                          /* reftype, limits */
        case 2: rd_limits(&r); break;
        case 3: rd_u8(&r); rd_u8(&r); break;                              /* valtype, mut */
        default: r.ok = false; break;
        }
        if (!r.ok) break;
        char mod[48], field[48];
        copy_name(mod, sizeof mod, m, mlen);
        copy_name(field, sizeof field, f, flen);
        if (!(name_is(m, mlen, "env") && name_is(f, flen, "log"))) {
            set_detail(why, cap, "unknown import %s.%s (%s); this runtime offers only env.log", mod,
                       field, kind_name(kind));
            return true;
        }
        if (kind != 0) {
            set_detail(why, cap, "import %s.%s must be a function, not %s", mod, field,
                       kind_name(kind));
            return true;
        }
        if (func_index >= module->numFunctions) break;
        IM3Function fn = &module->functions[func_index];
        if (m3_GetArgCount(fn) != 2 || m3_GetRetCount(fn) != 0 ||
            m3_GetArgType(fn, 0) != c_m3Type_i32 || m3_GetArgType(fn, 1) != c_m3Type_i32) {
            char sig[96];
            signature_text(fn, sig, sizeof sig);
            set_detail(why, cap, "import %s.%s has type %s, expected (i32, i32) -> ()", mod, field,
                       sig);
            return true;
        }
    }
    if (!r.ok) {
        set_detail(why, cap, "invalid WebAssembly module: malformed import section");
        return true;
    }
    return false;
}

/* ---- env.log --------------------------------------------------------------------------------- */

static m3ApiRawFunction(wb_env_log)
{
    m3ApiGetArg(uint32_t, ptr);
    m3ApiGetArg(uint32_t, len);
    (void)_ctx;
    wb_run_result_t *res = s_guard.result;
    if (!res) m3ApiTrap("env.log: called outside of a run");
    if (!s_guard.memory_exported) {
        set_detail(res->detail, sizeof res->detail,
                   "env.log: the module exports no memory named 'memory'");
        s_guard.host_fault = true;
        m3ApiTrap("env.log: no exported memory");
    }
    uint32_t size = m3_GetMemorySize(runtime);
    if ((uint64_t)ptr + len > size) {
        set_detail(res->detail, sizeof res->detail,
                   "env.log: range [%" PRIu32 ", %" PRIu64 ") is outside the memory of %" PRIu32
                   " bytes",
                   ptr, (uint64_t)ptr + len, size);
        s_guard.host_fault = true;
        m3ApiTrap("env.log: out of range");
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
    sections_t sec;
    char why[WB_MAX_REASON];
    if (!wasm || !find_sections(wasm, len, &sec, why, sizeof why)) {
        set_detail(detail, cap, "%s", wasm ? why : "no module");
        return WB_ERR_INVALID_MODULE;
    }
    if (!s_busy) wb_wasm3_arena_reset(); /* inside a run (guard hook): share the arena */
    IM3Environment env = m3_NewEnvironment();
    if (!env) {
        set_detail(detail, cap, "device heap exhausted while validating");
        return WB_ERR_INVALID_MODULE;
    }
    IM3Module module = NULL;
    M3Result r = m3_ParseModule(env, &module, wasm, (uint32_t)len);
    wb_error_t err = WB_OK;
    if (r) {
        set_detail(detail, cap, "invalid WebAssembly module: %s", r);
        err = WB_ERR_INVALID_MODULE;
    }
    if (module) m3_FreeModule(module);
    m3_FreeEnvironment(env);
    if (!s_busy) wb_wasm3_arena_reset();
    return err;
}

/* ---- run ------------------------------------------------------------------------------------- */

typedef union {
    int32_t i32;
    int64_t i64;
    float f32;
    double f64;
} raw_value_t;

/* Convert args to the entry's parameter types (runtime.py _convert_args). */
static bool convert_args(IM3Function f, const char *entry, const wb_value_t *args, size_t n_args,
                         raw_value_t *out, char *why, size_t cap)
{
    uint32_t n = m3_GetArgCount(f);
    if (n_args != n) {
        char params[WB_MAX_REASON / 2] = "";
        for (uint32_t i = 0; i < n; i++) {
            if (i) append(params, sizeof params, ", ");
            append(params, sizeof params, type_name((uint8_t)m3_GetArgType(f, i)));
        }
        set_detail(why, cap, "entry '%s' takes %" PRIu32 " argument(s) (%s), got %lu", entry, n,
                   params, (unsigned long)n_args);
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint8_t t = (uint8_t)m3_GetArgType(f, i);
        const wb_value_t *a = &args[i];
        switch (t) {
        case c_m3Type_i32:
            if (a->is_float) {
                set_detail(why, cap, "argument %" PRIu32 " for i32 must be an int, got a float", i);
                return false;
            }
            if (a->v.i < -(INT64_C(1) << 31) || a->v.i >= (INT64_C(1) << 32)) {
                set_detail(why, cap, "argument %" PRIu32 " = %" PRId64 " does not fit in i32", i,
                           a->v.i);
                return false;
            }
            out[i].i32 = (int32_t)(uint32_t)a->v.i;
            break;
        case c_m3Type_i64:
            if (a->is_float) {
                set_detail(why, cap, "argument %" PRIu32 " for i64 must be an int, got a float", i);
                return false;
            }
            out[i].i64 = a->v.i;
            break;
        case c_m3Type_f32:
            out[i].f32 = a->is_float ? (float)a->v.f : (float)a->v.i;
            break;
        case c_m3Type_f64:
            out[i].f64 = a->is_float ? a->v.f : (double)a->v.i;
            break;
        default:
            set_detail(why, cap, "entry '%s' parameter %" PRIu32 " has unsupported type", entry, i);
            return false;
        }
    }
    return true;
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
        switch (s_guard.outcome) {
        case WB_OUTCOME_OUT_OF_FUEL:
            set_detail(res->detail, sizeof res->detail, "fuel budget of %" PRIu64 " exhausted",
                       limits->fuel);
            break;
        case WB_OUTCOME_TIMED_OUT:
            set_detail(res->detail, sizeof res->detail,
                       "wall-clock budget of %" PRIu32 " ms exhausted", limits->timeout_ms);
            break;
        default:
            set_detail(res->detail, sizeof res->detail, "stopped on request");
            break;
        }
        return;
    }
    if (s_guard.host_fault) {
        res->outcome = WB_OUTCOME_TRAPPED; /* detail written by env.log */
        return;
    }
    char what[WB_MAX_REASON];
    const char *code = trap_code(r);
    if (code) set_detail(what, sizeof what, "%s: %s", code, r);
    else set_detail(what, sizeof what, "%s", r);

    uint32_t size = m3_GetMemorySize(runtime);
    if (s_guard.memory_exported && limits->memory_bytes >= size &&
        limits->memory_bytes - size < PAGE_SIZE) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        set_detail(res->detail, sizeof res->detail,
                   "memory at %" PRIu32 " bytes reached the limit of %" PRIu32 ", then %s", size,
                   limits->memory_bytes, what);
        return;
    }
    if (s_guard.grow_refused_by_heap) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        set_detail(res->detail, sizeof res->detail,
                   "memory.grow beyond %" PRIu32 " bytes failed: device heap of %lu bytes "
                   "exhausted (limit %" PRIu32 "), then %s",
                   size, (unsigned long)WB_WASM3_ARENA_BYTES, limits->memory_bytes, what);
        return;
    }
    res->outcome = WB_OUTCOME_TRAPPED;
    set_detail(res->detail, sizeof res->detail, "%s", what);
}

static void run_module(const uint8_t *wasm, size_t len, const char *entry, const wb_value_t *args,
                       size_t n_args, const wb_limits_t *limits, volatile const bool *stop,
                       wb_run_result_t *res)
{
    char *detail = res->detail;
    const size_t cap = sizeof res->detail;

    sections_t sec;
    char why[WB_MAX_REASON];
    if (!wasm || !find_sections(wasm, len, &sec, why, sizeof why)) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "invalid WebAssembly module: %s", wasm ? why : "no module");
        return;
    }

    IM3Environment env = m3_NewEnvironment();
    if (!env) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        set_detail(detail, cap, "device heap exhausted creating the wasm3 environment");
        return;
    }
    IM3Module module = NULL;
    M3Result r = m3_ParseModule(env, &module, wasm, (uint32_t)len);
    if (r) {
        res->outcome = heap_failed() ? WB_OUTCOME_OUT_OF_MEMORY : WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "%s WebAssembly module: %s",
                   heap_failed() ? "device heap exhausted parsing the" : "invalid", r);
        return;
    }

    /* The entry. */
    uint8_t kind = 0;
    uint32_t index = 0;
    if (!find_export(&sec, entry, &kind, &index)) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "entry '%s' is not exported (exports: ", entry);
        list_exports(&sec, detail, cap);
        append(detail, cap, ")");
        return;
    }
    if (kind != 0) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "export '%s' is a %s, not a function", entry, kind_name(kind));
        return;
    }
    if (index >= module->numFunctions) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "invalid WebAssembly module: export '%s' names no function", entry);
        return;
    }
    IM3Function func = &module->functions[index];
    uint32_t n_rets = m3_GetRetCount(func);
    if (n_rets > WB_MAX_ARGS) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "entry '%s' returns %" PRIu32 " values; at most %d are supported",
                   entry, n_rets, WB_MAX_ARGS);
        return;
    }
    raw_value_t argv[WB_MAX_ARGS];
    if (n_args > WB_MAX_ARGS) n_args = WB_MAX_ARGS + 1; /* reported as a count mismatch */
    if (!convert_args(func, entry, args, n_args, argv, detail, cap)) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        return;
    }
    if (import_error(&sec, module, detail, cap)) {
        res->outcome = WB_OUTCOME_LOAD_FAILED;
        return;
    }
    uint8_t mkind = 0;
    uint32_t midx = 0;
    s_guard.memory_exported = find_export(&sec, "memory", &mkind, &midx) && mkind == 2;

    /* Memory: the declared minimum must fit the limit. */
    uint64_t min_bytes = (uint64_t)module->memoryInfo.initPages * PAGE_SIZE;
    if (min_bytes > limits->memory_bytes) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        set_detail(detail, cap, "module declares %" PRIu64 " bytes of memory, limit is %" PRIu32,
                   min_bytes, limits->memory_bytes);
        return;
    }

    /* Instantiate. */
    IM3Runtime runtime = m3_NewRuntime(env, WB_WASM3_STACK_BYTES, NULL);
    if (!runtime) {
        res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
        set_detail(detail, cap, "device heap exhausted creating the wasm3 runtime (%lu bytes)",
                   (unsigned long)WB_WASM3_ARENA_BYTES);
        return;
    }
    r = m3_LoadModule(runtime, module);
    if (r) {
        if (heap_failed()) {
            res->outcome = WB_OUTCOME_OUT_OF_MEMORY;
            set_detail(detail, cap, "device heap of %lu bytes exhausted instantiating: %s",
                       (unsigned long)WB_WASM3_ARENA_BYTES, r);
        } else {
            res->outcome = WB_OUTCOME_LOAD_FAILED;
            set_detail(detail, cap, "instantiation failed: %s", r);
        }
        return;
    }
    uint32_t limit_pages = limits->memory_bytes / PAGE_SIZE;
    if (runtime->memory.maxPages > limit_pages) runtime->memory.maxPages = limit_pages;

    if (module->numFuncImports) {
        r = m3_LinkRawFunction(module, "env", "log", "v(ii)", &wb_env_log);
        if (r && r != m3Err_functionLookupFailed) {
            res->outcome = WB_OUTCOME_LOAD_FAILED;
            set_detail(detail, cap, "cannot link env.log: %s", r);
            return;
        }
    }
    r = m3_CompileModule(module);
    if (r) {
        res->outcome = heap_failed() ? WB_OUTCOME_OUT_OF_MEMORY : WB_OUTCOME_LOAD_FAILED;
        set_detail(detail, cap, "%s: %s",
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
    s_guard.deadline_ms = now + limits->timeout_ms;
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
        set_detail(detail, cap, "stopped on request");
        return;
    }

    r = m3_RunStart(module);
    if (!r) {
        const void *ptrs[WB_MAX_ARGS];
        for (size_t i = 0; i < n_args; i++) ptrs[i] = &argv[i];
        r = m3_Call(func, (uint32_t)n_args, ptrs);
    }
    s_guard.active = false;
    res->fuel_used = s_guard.fuel_used;
    if (r) {
        classify(r, runtime, limits, res);
        return;
    }

    raw_value_t rets[WB_MAX_ARGS];
    const void *rptrs[WB_MAX_ARGS];
    for (uint32_t i = 0; i < n_rets; i++) rptrs[i] = &rets[i];
    r = m3_GetResults(func, n_rets, rptrs);
    if (r) {
        res->outcome = WB_OUTCOME_TRAPPED;
        set_detail(detail, cap, "cannot read the results: %s", r);
        return;
    }
    for (uint32_t i = 0; i < n_rets; i++) {
        wb_value_t *v = &res->values[i];
        switch ((uint8_t)m3_GetRetType(func, i)) {
        case c_m3Type_i32: v->is_float = false; v->v.i = rets[i].i32; break;
        case c_m3Type_i64: v->is_float = false; v->v.i = rets[i].i64; break;
        case c_m3Type_f32: v->is_float = true; v->v.f = rets[i].f32; break;
        default: v->is_float = true; v->v.f = rets[i].f64; break;
        }
    }
    res->n_values = n_rets;
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
        set_detail(result->detail, sizeof result->detail, "runtime busy: a run is in progress");
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
