/* Portable half of the WAMR runtime: module scan, argument conversion, outcome mapping.
 * No WAMR or Zephyr header here (see wamr_portable.h); compiled on the host by the tests. */
#include "wamr_portable.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- text helpers -------------------------------------------------------------------------- */

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
    if (!cap) return;
    size_t used = 0;
    while (used < cap && buf[used]) used++;
    if (used + 1 >= cap) return;
    size_t n = strlen(text);
    if (n > cap - 1 - used) n = cap - 1 - used;
    memcpy(buf + used, text, n);
    buf[used + n] = '\0';
}

const char *wb_u64_text(uint64_t v, char *buf)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10u));
        v /= 10u;
    } while (v);
    for (size_t i = 0; i < n; i++) buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return buf;
}

const char *wb_i64_text(int64_t v, char *buf)
{
    if (v >= 0) return wb_u64_text((uint64_t)v, buf);
    buf[0] = '-';
    wb_u64_text((uint64_t)0 - (uint64_t)v, buf + 1);
    return buf;
}

static const char *type_name(wb_valtype_t t)
{
    switch (t) {
    case WB_VAL_I32: return "i32";
    case WB_VAL_I64: return "i64";
    case WB_VAL_F32: return "f32";
    case WB_VAL_F64: return "f64";
    default: return "unsupported";
    }
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

/* ---- a bounds-checked reader --------------------------------------------------------------- */

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

/* unsigned LEB128 of at most 64 bits */
static uint64_t rd_u64(rd_t *r)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 70; shift += 7) {
        uint8_t b = rd_u8(r);
        if (!r->ok) return 0;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return v;
    }
    r->ok = false;
    return 0;
}

static uint32_t rd_u32(rd_t *r)
{
    uint64_t v = rd_u64(r);
    if (v > UINT32_MAX) r->ok = false;
    return r->ok ? (uint32_t)v : 0;
}

static void rd_skip(rd_t *r, uint64_t n)
{
    if (!r->ok || (uint64_t)(r->end - r->p) < n) {
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

/* limits of a table or memory: returns the minimum */
static uint64_t rd_limits(rd_t *r)
{
    uint8_t flags = rd_u8(r);
    uint64_t min = rd_u64(r);
    if (flags & 1) rd_u64(r);
    return min;
}

static bool name_is(const uint8_t *s, uint32_t n, const char *want)
{
    return s && strlen(want) == n && memcmp(s, want, n) == 0;
}

static void copy_name(char *dst, size_t cap, const uint8_t *s, uint32_t len)
{
    size_t l = len < cap - 1 ? len : cap - 1;
    if (s) memcpy(dst, s, l);
    dst[s ? l : 0] = '\0';
}

static wb_valtype_t valtype(uint8_t b)
{
    switch (b) {
    case 0x7f: return WB_VAL_I32;
    case 0x7e: return WB_VAL_I64;
    case 0x7d: return WB_VAL_F32;
    case 0x7c: return WB_VAL_F64;
    default: return WB_VAL_UNSUPPORTED;
    }
}

/* ---- sections ------------------------------------------------------------------------------ */

typedef struct {
    rd_t types, imports, functions, memories, exports; /* payloads; p == NULL: absent */
    bool has_start;
} sections_t;

static bool find_sections(const uint8_t *wasm, size_t len, sections_t *out, char *why,
                          size_t cap)
{
    memset(out, 0, sizeof *out);
    static const uint8_t magic[8] = {0, 'a', 's', 'm', 1, 0, 0, 0};
    if (!wasm || len < 4 || memcmp(wasm, magic, 4) != 0) {
        set_detail(why, cap,
                   "not a WebAssembly binary module (no \\0asm magic; text format is not "
                   "accepted)");
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
        switch (id) {
        case 1: out->types = sec; break;
        case 2: out->imports = sec; break;
        case 3: out->functions = sec; break;
        case 5: out->memories = sec; break;
        case 7: out->exports = sec; break;
        case 8: out->has_start = true; break;
        default: break;
        }
    }
    if (!r.ok) {
        set_detail(why, cap, "section framing runs past the end of the module");
        return false;
    }
    return true;
}

bool wb_wasm_check_framing(const uint8_t *wasm, size_t len, char *why, size_t cap)
{
    sections_t sec;
    return find_sections(wasm, len, &sec, why, cap);
}

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
            copy_name(name, sizeof name, s8, len);
            if (any) append(buf, cap, ", ");
            append(buf, cap, name);
            any = true;
        }
    }
    if (!any) append(buf, cap, "none");
}

typedef struct {
    uint32_t n_params, n_results;
    wb_valtype_t params[WB_MAX_ARGS + 1]; /* only the first WB_MAX_ARGS + 1 are kept */
    wb_valtype_t results[WB_MAX_ARGS + 1];
} functype_t;

/* Type `index` of the type section. */
static bool read_type(const sections_t *s, uint32_t index, functype_t *ft)
{
    memset(ft, 0, sizeof *ft);
    if (!s->types.p) return false;
    rd_t r = s->types;
    uint32_t n = rd_u32(&r);
    if (!r.ok || index >= n) return false;
    for (uint32_t i = 0; i <= index && r.ok; i++) {
        if (rd_u8(&r) != 0x60) return false; /* only plain function types */
        uint32_t np = rd_u32(&r);
        for (uint32_t k = 0; k < np && r.ok; k++) {
            uint8_t b = rd_u8(&r);
            if (i == index && k <= WB_MAX_ARGS) ft->params[k] = valtype(b);
        }
        uint32_t nr = rd_u32(&r);
        for (uint32_t k = 0; k < nr && r.ok; k++) {
            uint8_t b = rd_u8(&r);
            if (i == index && k <= WB_MAX_ARGS) ft->results[k] = valtype(b);
        }
        if (i == index) {
            ft->n_params = np;
            ft->n_results = nr;
        }
    }
    return r.ok;
}

/* The type index of function `func` (imports first, then the function section). */
static bool func_type_index(const sections_t *s, uint32_t func, uint32_t *type_index)
{
    uint32_t n_imported = 0;
    if (s->imports.p) {
        rd_t r = s->imports;
        uint32_t n = rd_u32(&r);
        for (uint32_t i = 0; i < n && r.ok; i++) {
            uint32_t l;
            rd_name(&r, &l);
            rd_name(&r, &l);
            uint8_t kind = rd_u8(&r);
            switch (kind) {
            case 0: {
                uint32_t t = rd_u32(&r);
                if (r.ok && n_imported == func) {
                    *type_index = t;
                    return true;
                }
                n_imported++;
                break;
            }
            case 1: rd_u8(&r); rd_limits(&r); break;
            case 2: rd_limits(&r); break;
            case 3: rd_u8(&r); rd_u8(&r); break;
            default: return false;
            }
        }
        if (!r.ok) return false;
    }
    if (!s->functions.p || func < n_imported) return false;
    rd_t r = s->functions;
    uint32_t n = rd_u32(&r);
    uint32_t local = func - n_imported;
    if (!r.ok || local >= n) return false;
    for (uint32_t i = 0; i < local && r.ok; i++) rd_u32(&r);
    uint32_t t = rd_u32(&r);
    if (!r.ok) return false;
    *type_index = t;
    return true;
}

static void signature_text(const functype_t *ft, char *buf, size_t cap)
{
    buf[0] = '\0';
    append(buf, cap, "(");
    for (uint32_t i = 0; i < ft->n_params && i <= WB_MAX_ARGS; i++) {
        if (i) append(buf, cap, ", ");
        append(buf, cap, type_name(ft->params[i]));
    }
    append(buf, cap, ") -> (");
    for (uint32_t i = 0; i < ft->n_results && i <= WB_MAX_ARGS; i++) {
        if (i) append(buf, cap, ", ");
        append(buf, cap, type_name(ft->results[i]));
    }
    append(buf, cap, ")");
}

/* Why the imports cannot be satisfied (first problem, in import order), or false. */
static bool import_error(const sections_t *s, bool *imports_log, char *why, size_t cap)
{
    *imports_log = false;
    if (!s->imports.p) return false;
    rd_t r = s->imports;
    uint32_t n = rd_u32(&r);
    for (uint32_t i = 0; i < n && r.ok; i++) {
        uint32_t mlen, flen;
        const uint8_t *m = rd_name(&r, &mlen);
        const uint8_t *f = rd_name(&r, &flen);
        uint8_t kind = rd_u8(&r);
        uint32_t type_index = 0;
        switch (kind) {
        case 0: type_index = rd_u32(&r); break;
        case 1: rd_u8(&r); rd_limits(&r); break;
        case 2: rd_limits(&r); break;
        case 3: rd_u8(&r); rd_u8(&r); break;
        default: r.ok = false; break;
        }
        if (!r.ok) break;
        char mod[48], field[48];
        copy_name(mod, sizeof mod, m, mlen);
        copy_name(field, sizeof field, f, flen);
        if (!(name_is(m, mlen, "env") && name_is(f, flen, "log"))) {
            set_detail(why, cap, "unknown import %s.%s (%s); this runtime offers only env.log",
                       mod, field, kind_name(kind));
            return true;
        }
        if (kind != 0) {
            set_detail(why, cap, "import %s.%s must be a function, not %s", mod, field,
                       kind_name(kind));
            return true;
        }
        functype_t ft;
        if (!read_type(s, type_index, &ft)) {
            set_detail(why, cap, "invalid WebAssembly module: import %s.%s has no valid type",
                       mod, field);
            return true;
        }
        if (ft.n_params != 2 || ft.n_results != 0 || ft.params[0] != WB_VAL_I32 ||
            ft.params[1] != WB_VAL_I32) {
            char sig[96];
            signature_text(&ft, sig, sizeof sig);
            set_detail(why, cap, "import %s.%s has type %s, expected (i32, i32) -> ()", mod,
                       field, sig);
            return true;
        }
        *imports_log = true;
    }
    if (!r.ok) {
        set_detail(why, cap, "invalid WebAssembly module: malformed import section");
        return true;
    }
    return false;
}

/* The minimum of the first defined memory, if any. */
static bool declared_memory(const sections_t *s, uint64_t *min_pages)
{
    if (!s->memories.p) return false;
    rd_t r = s->memories;
    uint32_t n = rd_u32(&r);
    if (!r.ok || n == 0) return false;
    *min_pages = rd_limits(&r);
    return r.ok;
}

/* ---- arguments ----------------------------------------------------------------------------- */

static bool convert_args(const functype_t *ft, const char *entry, const wb_value_t *args,
                         size_t n_args, wb_raw_value_t *out, char *why, size_t cap)
{
    if (n_args != ft->n_params) {
        char params[WB_MAX_REASON / 2] = "";
        for (uint32_t i = 0; i < ft->n_params && i <= WB_MAX_ARGS; i++) {
            if (i) append(params, sizeof params, ", ");
            append(params, sizeof params, type_name(ft->params[i]));
        }
        set_detail(why, cap, "entry '%s' takes %lu argument(s) (%s), got %lu", entry,
                   (unsigned long)ft->n_params, params, (unsigned long)n_args);
        return false;
    }
    for (uint32_t i = 0; i < ft->n_params; i++) {
        const wb_value_t *a = &args[i];
        char num[22];
        out[i].type = ft->params[i];
        switch (ft->params[i]) {
        case WB_VAL_I32:
            if (a->is_float) {
                set_detail(why, cap, "argument %lu for i32 must be an int, got a float",
                           (unsigned long)i);
                return false;
            }
            if (a->v.i < -(INT64_C(1) << 31) || a->v.i >= (INT64_C(1) << 32)) {
                set_detail(why, cap, "argument %lu = %s does not fit in i32", (unsigned long)i,
                           wb_i64_text(a->v.i, num));
                return false;
            }
            out[i].of.i32 = (int32_t)(uint32_t)a->v.i;
            break;
        case WB_VAL_I64:
            if (a->is_float) {
                set_detail(why, cap, "argument %lu for i64 must be an int, got a float",
                           (unsigned long)i);
                return false;
            }
            out[i].of.i64 = a->v.i;
            break;
        case WB_VAL_F32:
            out[i].of.f32 = a->is_float ? (float)a->v.f : (float)a->v.i;
            break;
        case WB_VAL_F64:
            out[i].of.f64 = a->is_float ? a->v.f : (double)a->v.i;
            break;
        default:
            set_detail(why, cap, "entry '%s' parameter %lu has unsupported type", entry,
                       (unsigned long)i);
            return false;
        }
    }
    return true;
}

/* ---- prepare ------------------------------------------------------------------------------- */

wb_outcome_t wb_wamr_prepare(const uint8_t *wasm, size_t len, const char *entry,
                             const wb_value_t *args, size_t n_args, const wb_limits_t *limits,
                             wb_wamr_plan_t *plan, char *detail, size_t cap)
{
    memset(plan, 0, sizeof *plan);
    if (cap) detail[0] = '\0';
    if (!entry) entry = "";

    sections_t sec;
    char why[WB_MAX_REASON];
    if (!wasm || !find_sections(wasm, len, &sec, why, sizeof why)) {
        set_detail(detail, cap, "invalid WebAssembly module: %s", wasm ? why : "no module");
        return WB_OUTCOME_LOAD_FAILED;
    }

    uint8_t kind = 0;
    uint32_t index = 0;
    if (!find_export(&sec, entry, &kind, &index)) {
        set_detail(detail, cap, "entry '%s' is not exported (exports: ", entry);
        list_exports(&sec, detail, cap);
        append(detail, cap, ")");
        return WB_OUTCOME_LOAD_FAILED;
    }
    if (kind != 0) {
        set_detail(detail, cap, "export '%s' is a %s, not a function", entry, kind_name(kind));
        return WB_OUTCOME_LOAD_FAILED;
    }
    uint32_t type_index = 0;
    functype_t ft;
    if (!func_type_index(&sec, index, &type_index) || !read_type(&sec, type_index, &ft)) {
        set_detail(detail, cap,
                   "invalid WebAssembly module: export '%s' names no function of a valid type",
                   entry);
        return WB_OUTCOME_LOAD_FAILED;
    }
    if (ft.n_results > WB_MAX_ARGS) {
        set_detail(detail, cap, "entry '%s' returns %lu values; at most %d are supported", entry,
                   (unsigned long)ft.n_results, WB_MAX_ARGS);
        return WB_OUTCOME_LOAD_FAILED;
    }
    for (uint32_t i = 0; i < ft.n_results; i++) {
        if (ft.results[i] == WB_VAL_UNSUPPORTED) {
            set_detail(detail, cap, "entry '%s' result %lu has unsupported type", entry,
                       (unsigned long)i);
            return WB_OUTCOME_LOAD_FAILED;
        }
        plan->results[i] = ft.results[i];
    }
    plan->n_results = ft.n_results;
    if (n_args > WB_MAX_ARGS) n_args = WB_MAX_ARGS + 1; /* reported as a count mismatch */
    if (ft.n_params > WB_MAX_ARGS) {
        set_detail(detail, cap, "entry '%s' takes %lu arguments; at most %d are supported",
                   entry, (unsigned long)ft.n_params, WB_MAX_ARGS);
        return WB_OUTCOME_LOAD_FAILED;
    }
    if (!convert_args(&ft, entry, args, n_args, plan->args, detail, cap)) {
        return WB_OUTCOME_LOAD_FAILED;
    }
    plan->n_args = n_args;
    if (import_error(&sec, &plan->imports_env_log, detail, cap)) {
        return WB_OUTCOME_LOAD_FAILED;
    }
    if (sec.has_start) {
        /* WAMR runs the start function inside wasm_runtime_instantiate(): before an exec env
         * exists, so outside the instruction limit and out of reach of wasm_runtime_terminate. */
        set_detail(detail, cap,
                   "the module has a start function; this runtime (WAMR) does not run start "
                   "functions (they would run during instantiation, outside the fuel and time "
                   "limits)");
        return WB_OUTCOME_LOAD_FAILED;
    }
    uint8_t mkind = 0;
    uint32_t midx = 0;
    plan->memory_exported = find_export(&sec, "memory", &mkind, &midx) && mkind == 2;

    uint64_t min_pages = 0;
    plan->has_memory = declared_memory(&sec, &min_pages);
    if (plan->has_memory) {
        if (min_pages > limits->memory_bytes / WB_WASM_PAGE) {
            char num[22];
            uint64_t bytes =
                min_pages <= UINT64_MAX / WB_WASM_PAGE ? min_pages * WB_WASM_PAGE : UINT64_MAX;
            set_detail(detail, cap, "module declares %s bytes of memory, limit is %lu",
                       wb_u64_text(bytes, num), (unsigned long)limits->memory_bytes);
            return WB_OUTCOME_OUT_OF_MEMORY;
        }
        plan->memory_min_pages = (uint32_t)min_pages;
    }
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

/* ---- exceptions ---------------------------------------------------------------------------- */

/* WAMR's messages (core/iwasm: exception_msgs[] and the interpreters), first match wins.
 * Codes are wasmtime's trap code names, as in the wasm3 runtime's details. */
const wb_wamr_trap_t wb_wamr_traps[] = {
    {"instruction limit exceeded", NULL, WB_OUTCOME_OUT_OF_FUEL},
    {"allocate memory failed", NULL, WB_OUTCOME_OUT_OF_MEMORY},
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
    char num[22];
    if (end->call_ok) {
        if (cap) detail[0] = '\0';
        return WB_OUTCOME_RETURNED;
    }
    if (end->requested == WB_OUTCOME_TIMED_OUT) {
        set_detail(detail, cap, "wall-clock budget of %lu ms exhausted",
                   (unsigned long)end->timeout_ms);
        return WB_OUTCOME_TIMED_OUT;
    }
    if (end->requested == WB_OUTCOME_STOPPED) {
        set_detail(detail, cap, "stopped on request");
        return WB_OUTCOME_STOPPED;
    }
    if (end->host_fault) return WB_OUTCOME_TRAPPED; /* detail written by env.log */

    const char *msg = wb_wamr_strip_exception(end->exception);
    const wb_wamr_trap_t *t = wb_wamr_match_exception(msg);
    if (t && t->outcome == WB_OUTCOME_OUT_OF_FUEL) {
        if (fuel_used) *fuel_used = end->fuel;
        set_detail(detail, cap, "fuel budget of %s exhausted", wb_u64_text(end->fuel, num));
        if (end->fuel > (uint64_t)INT32_MAX) {
            append(detail, cap, " (WAMR counts at most 2147483647 instructions per run)");
        }
        return WB_OUTCOME_OUT_OF_FUEL;
    }
    if (t && t->outcome == WB_OUTCOME_OUT_OF_MEMORY) {
        set_detail(detail, cap, "device heap of %lu bytes exhausted: %s",
                   (unsigned long)end->pool_bytes, msg);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }

    char what[WB_MAX_REASON];
    if (!*msg) {
        set_detail(what, sizeof what, "the call failed without an exception");
    } else if (t && t->code) {
        set_detail(what, sizeof what, "%s: %s", t->code, msg);
    } else {
        set_detail(what, sizeof what, "%s", msg);
    }

    uint64_t limit = end->memory_limit;
    if (end->memory_exported && limit >= end->memory_bytes &&
        limit - end->memory_bytes < WB_WASM_PAGE) {
        set_detail(detail, cap, "memory at %s bytes reached the limit of %lu, then %s",
                   wb_u64_text(end->memory_bytes, num), (unsigned long)end->memory_limit, what);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    if (end->grow_refused) {
        set_detail(detail, cap,
                   "memory.grow beyond %s bytes failed: device heap of %lu bytes exhausted "
                   "(limit %lu), then %s",
                   wb_u64_text(end->memory_bytes, num), (unsigned long)end->pool_bytes,
                   (unsigned long)end->memory_limit, what);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    set_detail(detail, cap, "%s", what);
    return WB_OUTCOME_TRAPPED;
}

wb_outcome_t wb_wamr_load_failure(const char *stage, const char *error, size_t pool_bytes,
                                  char *detail, size_t cap)
{
    const char *err = (error && *error) ? error : "unknown error";
    bool instantiate = stage && strcmp(stage, "instantiate") == 0;
    if (strstr(err, "allocate memory failed")) {
        set_detail(detail, cap, "device heap of %lu bytes exhausted %s: %s",
                   (unsigned long)pool_bytes,
                   instantiate ? "instantiating" : "loading the module", err);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    if (instantiate) {
        set_detail(detail, cap, "instantiation failed: %s", err);
    } else {
        set_detail(detail, cap, "invalid WebAssembly module: %s", err);
    }
    return WB_OUTCOME_LOAD_FAILED;
}

bool wb_wamr_log_allowed(bool memory_exported, uint64_t memory_bytes, uint32_t ptr,
                         uint32_t len, char *detail, size_t cap)
{
    if (!memory_exported) {
        set_detail(detail, cap, "env.log: the module exports no memory named 'memory'");
        return false;
    }
    uint64_t end = (uint64_t)ptr + len;
    if (end > memory_bytes) {
        char a[22], b[22];
        set_detail(detail, cap, "env.log: range [%lu, %s) is outside the memory of %s bytes",
                   (unsigned long)ptr, wb_u64_text(end, a), wb_u64_text(memory_bytes, b));
        return false;
    }
    return true;
}
