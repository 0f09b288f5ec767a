/* The runtime-independent half of the firmware runtimes: module scan, entry plan, wording.
 * See wb_wasm_scan.h. Used by runtime/wasm3/wb_runtime_wasm3.c and
 * runtime/wamr/wamr_portable.c, which keep only what needs their runtime. */
#include "wb_wasm_scan.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- text ------------------------------------------------------------------------------------ */

void wb_wasm_detail(char *buf, size_t cap, const char *fmt, ...)
{
    if (!cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
}

void wb_wasm_append(char *buf, size_t cap, const char *text)
{
    if (!cap) return;
    size_t used = 0; /* strnlen is POSIX, not C11 */
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

/* ---- the reader ------------------------------------------------------------------------------ */

typedef wb_wasm_rd_t rd_t;

static uint8_t rd_u8(rd_t *r)
{
    if (!r->ok || r->p >= r->end) {
        r->ok = false;
        return 0;
    }
    return *r->p++;
}

/* Unsigned LEB128 of at most 5 bytes; bits beyond 32 in the fifth byte are dropped. That is
 * how wasm3 reads a u32 (m3_core.c ReadLebUnsigned + ReadLEB_u32), so the scan and wasm3's
 * parser agree on every module wasm3 accepts. WAMR's loader refuses such encodings itself. */
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

/* limits of a table or memory: returns the minimum */
static uint32_t rd_limits(rd_t *r)
{
    uint8_t flags = rd_u8(r);
    uint32_t min = rd_u32(r);
    if (flags & 1) rd_u32(r);
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

/* ---- sections -------------------------------------------------------------------------------- */

bool wb_wasm_find_sections(const uint8_t *wasm, size_t len, wb_wasm_sections_t *out, char *why,
                           size_t cap)
{
    memset(out, 0, sizeof *out);
    static const uint8_t magic[8] = {0, 'a', 's', 'm', 1, 0, 0, 0};
    if (!wasm || len < 4 || memcmp(wasm, magic, 4) != 0) {
        wb_wasm_detail(why, cap,
                       "not a WebAssembly binary module (no \\0asm magic; text format is not "
                       "accepted)");
        return false;
    }
    if (len < 8 || memcmp(wasm + 4, magic + 4, 4) != 0) {
        wb_wasm_detail(why, cap, "unsupported WebAssembly binary version");
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
        wb_wasm_detail(why, cap, "section framing runs past the end of the module");
        return false;
    }
    return true;
}

bool wb_wasm_check_framing(const uint8_t *wasm, size_t len, char *why, size_t cap)
{
    wb_wasm_sections_t sec;
    return wb_wasm_find_sections(wasm, len, &sec, why, cap);
}

bool wb_wasm_find_export(const wb_wasm_sections_t *s, const char *name, uint8_t *kind,
                         uint32_t *index)
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

static void list_exports(const wb_wasm_sections_t *s, char *buf, size_t cap)
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
            if (any) wb_wasm_append(buf, cap, ", ");
            wb_wasm_append(buf, cap, name);
            any = true;
        }
    }
    if (!any) wb_wasm_append(buf, cap, "none");
}

/* ---- function types -------------------------------------------------------------------------- */

typedef struct {
    uint32_t n_params, n_results;
    wb_valtype_t params[WB_MAX_ARGS + 1]; /* only the first WB_MAX_ARGS + 1 are kept */
    wb_valtype_t results[WB_MAX_ARGS + 1];
    rd_t at;                              /* the parameter vector, for type_names() */
} functype_t;

/* Type `index` of the type section. */
static bool read_type(const wb_wasm_sections_t *s, uint32_t index, functype_t *ft)
{
    memset(ft, 0, sizeof *ft);
    if (!s->types.p) return false;
    rd_t r = s->types;
    uint32_t n = rd_u32(&r);
    if (!r.ok || index >= n) return false;
    for (uint32_t i = 0; i <= index && r.ok; i++) {
        if (rd_u8(&r) != 0x60) return false; /* only plain function types */
        if (i == index) ft->at = r;
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

/* "i32, f64": every parameter (or result) type of ft, however many (not only the kept ones). */
static void type_names(const functype_t *ft, bool results, char *buf, size_t cap)
{
    rd_t r = ft->at;
    uint32_t n = rd_u32(&r);
    if (results) {
        rd_skip(&r, n); /* one byte per value type */
        n = rd_u32(&r);
    }
    for (uint32_t i = 0; i < n && r.ok; i++) {
        uint8_t b = rd_u8(&r);
        if (i) wb_wasm_append(buf, cap, ", ");
        wb_wasm_append(buf, cap, type_name(valtype(b)));
    }
}

/* "(i32, i32) -> ()" */
static void signature_text(const functype_t *ft, char *buf, size_t cap)
{
    buf[0] = '\0';
    wb_wasm_append(buf, cap, "(");
    type_names(ft, false, buf, cap);
    wb_wasm_append(buf, cap, ") -> (");
    type_names(ft, true, buf, cap);
    wb_wasm_append(buf, cap, ")");
}

/* The type index of function `func` (imports first, then the function section). */
static bool func_type_index(const wb_wasm_sections_t *s, uint32_t func, uint32_t *type_index)
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
            case 1: rd_u8(&r); rd_limits(&r); break; /* reftype, limits */
            case 2: rd_limits(&r); break;
            case 3: rd_u8(&r); rd_u8(&r); break;     /* valtype, mut */
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

/* ---- imports --------------------------------------------------------------------------------- */

/* Why the imports cannot be satisfied (first problem, in import order), or false. */
static bool import_error(const wb_wasm_sections_t *s, bool *imports_log, char *why, size_t cap)
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
            wb_wasm_detail(why, cap, "unknown import %s.%s (%s); this runtime offers only env.log",
                           mod, field, kind_name(kind));
            return true;
        }
        if (kind != 0) {
            wb_wasm_detail(why, cap, "import %s.%s must be a function, not %s", mod, field,
                           kind_name(kind));
            return true;
        }
        functype_t ft;
        if (!read_type(s, type_index, &ft)) {
            wb_wasm_detail(why, cap, "invalid WebAssembly module: import %s.%s has no valid type",
                           mod, field);
            return true;
        }
        if (ft.n_params != 2 || ft.n_results != 0 || ft.params[0] != WB_VAL_I32 ||
            ft.params[1] != WB_VAL_I32) {
            char sig[96];
            signature_text(&ft, sig, sizeof sig);
            wb_wasm_detail(why, cap, "import %s.%s has type %s, expected (i32, i32) -> ()", mod,
                           field, sig);
            return true;
        }
        *imports_log = true;
    }
    if (!r.ok) {
        wb_wasm_detail(why, cap, "invalid WebAssembly module: malformed import section");
        return true;
    }
    return false;
}

/* ---- arguments ------------------------------------------------------------------------------- */

/* Convert args to the entry's parameter types (runtime.py _convert_args). */
static bool convert_args(const functype_t *ft, const char *entry, const wb_value_t *args,
                         size_t n_args, wb_raw_value_t *out, char *why, size_t cap)
{
    if (n_args != ft->n_params) {
        char params[WB_MAX_REASON / 2] = "";
        type_names(ft, false, params, sizeof params);
        wb_wasm_detail(why, cap, "entry '%s' takes %lu argument(s) (%s), got %lu", entry,
                       (unsigned long)ft->n_params, params, (unsigned long)n_args);
        return false;
    }
    /* Only reachable with more than WB_MAX_ARGS arguments given (n_args is clamped to
     * WB_MAX_ARGS + 1 by the caller): out has room for WB_MAX_ARGS. */
    if (ft->n_params > WB_MAX_ARGS) {
        wb_wasm_detail(why, cap, "entry '%s' takes %lu arguments; at most %d are supported",
                       entry, (unsigned long)ft->n_params, WB_MAX_ARGS);
        return false;
    }
    for (uint32_t i = 0; i < ft->n_params; i++) {
        const wb_value_t *a = &args[i];
        char num[22];
        out[i].type = ft->params[i];
        switch (ft->params[i]) {
        case WB_VAL_I32:
            if (a->is_float) {
                wb_wasm_detail(why, cap, "argument %lu for i32 must be an int, got a float",
                               (unsigned long)i);
                return false;
            }
            if (a->v.i < -(INT64_C(1) << 31) || a->v.i >= (INT64_C(1) << 32)) {
                wb_wasm_detail(why, cap, "argument %lu = %s does not fit in i32",
                               (unsigned long)i, wb_i64_text(a->v.i, num));
                return false;
            }
            out[i].of.i32 = (int32_t)(uint32_t)a->v.i;
            break;
        case WB_VAL_I64:
            if (a->is_float) {
                wb_wasm_detail(why, cap, "argument %lu for i64 must be an int, got a float",
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
            wb_wasm_detail(why, cap, "entry '%s' parameter %lu has unsupported type", entry,
                           (unsigned long)i);
            return false;
        }
    }
    return true;
}

/* ---- the entry plan -------------------------------------------------------------------------- */

wb_outcome_t wb_wasm_prepare_entry(const wb_wasm_sections_t *s, const char *entry,
                                   const wb_value_t *args, size_t n_args, wb_wasm_entry_t *out,
                                   char *detail, size_t cap)
{
    memset(out, 0, sizeof *out);
    uint8_t kind = 0;
    uint32_t index = 0;
    if (!wb_wasm_find_export(s, entry, &kind, &index)) {
        wb_wasm_detail(detail, cap, "entry '%s' is not exported (exports: ", entry);
        list_exports(s, detail, cap);
        wb_wasm_append(detail, cap, ")");
        return WB_OUTCOME_LOAD_FAILED;
    }
    if (kind != 0) {
        wb_wasm_detail(detail, cap, "export '%s' is a %s, not a function", entry,
                       kind_name(kind));
        return WB_OUTCOME_LOAD_FAILED;
    }
    uint32_t type_index = 0;
    functype_t ft;
    if (!func_type_index(s, index, &type_index) || !read_type(s, type_index, &ft)) {
        wb_wasm_detail(detail, cap,
                       "invalid WebAssembly module: export '%s' names no function of a valid "
                       "type",
                       entry);
        return WB_OUTCOME_LOAD_FAILED;
    }
    out->func_index = index;
    if (ft.n_results > WB_MAX_ARGS) {
        wb_wasm_detail(detail, cap, "entry '%s' returns %lu values; at most %d are supported",
                       entry, (unsigned long)ft.n_results, WB_MAX_ARGS);
        return WB_OUTCOME_LOAD_FAILED;
    }
    for (uint32_t i = 0; i < ft.n_results; i++) {
        if (ft.results[i] == WB_VAL_UNSUPPORTED) {
            wb_wasm_detail(detail, cap, "entry '%s' result %lu has unsupported type", entry,
                           (unsigned long)i);
            return WB_OUTCOME_LOAD_FAILED;
        }
        out->results[i] = ft.results[i];
    }
    out->n_results = ft.n_results;
    if (n_args > WB_MAX_ARGS) n_args = WB_MAX_ARGS + 1; /* reported as a count mismatch */
    if (!convert_args(&ft, entry, args, n_args, out->args, detail, cap)) {
        return WB_OUTCOME_LOAD_FAILED;
    }
    out->n_args = n_args;
    if (import_error(s, &out->imports_env_log, detail, cap)) return WB_OUTCOME_LOAD_FAILED;
    uint8_t mkind = 0;
    uint32_t midx = 0;
    out->memory_exported = wb_wasm_find_export(s, "memory", &mkind, &midx) && mkind == 2;
    return WB_OUTCOME_RETURNED;
}

wb_outcome_t wb_wasm_check_memory(const wb_wasm_sections_t *s, uint32_t memory_limit,
                                  bool *has_memory, uint32_t *min_pages, char *detail,
                                  size_t cap)
{
    *has_memory = false;
    *min_pages = 0;
    if (!s->memories.p) return WB_OUTCOME_RETURNED;
    rd_t r = s->memories;
    uint32_t n = rd_u32(&r);
    if (!r.ok || n == 0) return WB_OUTCOME_RETURNED;
    uint32_t min = rd_limits(&r);
    if (!r.ok) return WB_OUTCOME_RETURNED;
    *has_memory = true;
    if (min > memory_limit / WB_WASM_PAGE) {
        char num[22];
        wb_wasm_detail(detail, cap, "module declares %s bytes of memory, limit is %lu",
                       wb_u64_text((uint64_t)min * WB_WASM_PAGE, num),
                       (unsigned long)memory_limit);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    *min_pages = min;
    return WB_OUTCOME_RETURNED;
}

/* ---- how runs end ---------------------------------------------------------------------------- */

wb_outcome_t wb_wasm_load_failure(bool instantiating, bool heap_exhausted, const char *error,
                                  size_t heap_bytes, char *detail, size_t cap)
{
    const char *err = (error && *error) ? error : "unknown error";
    if (heap_exhausted) {
        wb_wasm_detail(detail, cap, "device heap of %lu bytes exhausted %s: %s",
                       (unsigned long)heap_bytes,
                       instantiating ? "instantiating" : "loading the module", err);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    if (instantiating) {
        wb_wasm_detail(detail, cap, "instantiation failed: %s", err);
    } else {
        wb_wasm_detail(detail, cap, "invalid WebAssembly module: %s", err);
    }
    return WB_OUTCOME_LOAD_FAILED;
}

void wb_wasm_interrupted(wb_outcome_t outcome, uint64_t fuel, uint32_t timeout_ms, char *detail,
                         size_t cap)
{
    char num[22];
    switch (outcome) {
    case WB_OUTCOME_OUT_OF_FUEL:
        wb_wasm_detail(detail, cap, "fuel budget of %s exhausted", wb_u64_text(fuel, num));
        break;
    case WB_OUTCOME_TIMED_OUT:
        wb_wasm_detail(detail, cap, "wall-clock budget of %lu ms exhausted",
                       (unsigned long)timeout_ms);
        break;
    default:
        wb_wasm_detail(detail, cap, "stopped on request");
        break;
    }
}

wb_outcome_t wb_wasm_trap(const char *code, const char *message, const wb_wasm_memory_state_t *m,
                          char *detail, size_t cap)
{
    char what[WB_MAX_REASON];
    if (code) {
        wb_wasm_detail(what, sizeof what, "%s: %s", code, message);
    } else {
        wb_wasm_detail(what, sizeof what, "%s", message);
    }
    char num[22];
    if (m->memory_exported && m->memory_limit >= m->memory_bytes &&
        m->memory_limit - m->memory_bytes < WB_WASM_PAGE) {
        wb_wasm_detail(detail, cap, "memory at %s bytes reached the limit of %lu, then %s",
                       wb_u64_text(m->memory_bytes, num), (unsigned long)m->memory_limit, what);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    if (m->grow_refused) {
        wb_wasm_detail(detail, cap,
                       "memory.grow beyond %s bytes failed: device heap of %lu bytes exhausted "
                       "(limit %lu), then %s",
                       wb_u64_text(m->memory_bytes, num), (unsigned long)m->heap_bytes,
                       (unsigned long)m->memory_limit, what);
        return WB_OUTCOME_OUT_OF_MEMORY;
    }
    wb_wasm_detail(detail, cap, "%s", what);
    return WB_OUTCOME_TRAPPED;
}

bool wb_wasm_log_allowed(bool memory_exported, uint64_t memory_bytes, uint32_t ptr, uint32_t len,
                         char *detail, size_t cap)
{
    if (!memory_exported) {
        wb_wasm_detail(detail, cap, "env.log: the module exports no memory named 'memory'");
        return false;
    }
    uint64_t end = (uint64_t)ptr + len;
    if (end > memory_bytes) {
        char a[22], b[22];
        wb_wasm_detail(detail, cap, "env.log: range [%lu, %s) is outside the memory of %s bytes",
                       (unsigned long)ptr, wb_u64_text(end, a), wb_u64_text(memory_bytes, b));
        return false;
    }
    return true;
}
