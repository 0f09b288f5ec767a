/* Table-driven codec of the message catalogue on zcbor primitives. See wb/msg.h. */
#include <stddef.h>
#include <string.h>

#include "wb/msg.h"
#include "zcbor_decode.h"
#include "zcbor_encode.h"

const uint8_t wb_enroll_context[WB_ENROLL_CONTEXT_LEN] = "wasmbed-enroll-v1";

/* ------------------------------------------------------------------ field descriptors */

enum kind {
    K_U16, K_U32, K_U64, K_BOOL, K_TEXT, K_BYTES, K_FIXED, K_OPT_FIXED,
    K_ERRCODE, K_OUTCOME, K_APPSTATE, K_INFO, K_LIMITS, K_APPS, K_VALUES,
};

typedef struct {
    uint8_t kind;
    uint16_t off; /* offset of the value from the record base */
    uint32_t min, max;
} field_t;

typedef struct {
    uint8_t n;
    const field_t *f;
} record_t;

/* The tables come from msg_catalogue.h (generated from messages.py): one row per field. */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define UOFF(m) ((uint16_t)(offsetof(wb_msg_t, u.m) - offsetof(wb_msg_t, u)))
#define MSG_FIELD(m, k, f, lo, hi) {K_##k, UOFF(m.f), lo, hi},
#define REC_FIELD(t, k, f, lo, hi) {K_##k, (uint16_t)offsetof(t, f), lo, hi},

static const field_t f_info[] = {WB_DEVICE_INFO_FIELDS(REC_FIELD)};
static const field_t f_limits[] = {WB_LIMITS_FIELDS(REC_FIELD)};
static const field_t f_summary[] = {WB_APP_SUMMARY_FIELDS(REC_FIELD)};
static const record_t r_info = {COUNT(f_info), f_info};
static const record_t r_limits = {COUNT(f_limits), f_limits};
static const record_t r_summary = {COUNT(f_summary), f_summary};

static const field_t msg_fields[] = {WB_MESSAGE_FIELDS(MSG_FIELD)};

typedef struct {
    uint8_t tag, dir, phase, n;
    const field_t *f; /* n rows of msg_fields */
    const char *name;
} msgdef_t;

#define MSGDEF(t, nm, m, d, ph, first, n) {t, d, ph, n, &msg_fields[first], nm},
static const msgdef_t catalogue[] = {WB_MESSAGES(MSGDEF)};

/* What the generated tables say must hold in the hand-written structs (msg.h, types.h): each
 * field exists with the C type of its kind, and lists fit their arrays. */
#define CTYPE_U16 uint16_t
#define CTYPE_U32 uint32_t
#define CTYPE_U64 uint64_t
#define CTYPE_BOOL bool
#define CTYPE_TEXT wb_str_t
#define CTYPE_BYTES wb_str_t
#define CTYPE_FIXED const uint8_t *
#define CTYPE_OPT_FIXED const uint8_t * /* NULL: null */
#define CTYPE_ERRCODE uint16_t
#define CTYPE_OUTCOME uint8_t
#define CTYPE_APPSTATE uint8_t
#define CTYPE_INFO wb_device_info_t
#define CTYPE_LIMITS wb_limits_t
#define CTYPE_APPS wb_apps_t
#define CTYPE_VALUES wb_values_t
#define IS_A(expr, k) _Generic((expr), CTYPE_##k: 1, default: 0)
#define CHECK_MSG_FIELD(m, k, f, lo, hi) \
    _Static_assert(IS_A(((wb_msg_t *)0)->u.m.f, k), "wb_msg_t u." #m "." #f " is not " #k);
#define CHECK_REC_FIELD(t, k, f, lo, hi) \
    _Static_assert(IS_A(((t *)0)->f, k), #t " ." #f " is not " #k);
WB_MESSAGE_FIELDS(CHECK_MSG_FIELD)
WB_DEVICE_INFO_FIELDS(CHECK_REC_FIELD)
WB_LIMITS_FIELDS(CHECK_REC_FIELD)
WB_APP_SUMMARY_FIELDS(CHECK_REC_FIELD)
#define CHECK_LIST(m, k, f, lo, hi) \
    _Static_assert(K_##k != K_APPS || (hi) <= COUNT(((wb_apps_t *)0)->items), #m "." #f); \
    _Static_assert(K_##k != K_VALUES || (hi) <= COUNT(((wb_values_t *)0)->items), #m "." #f);
WB_MESSAGE_FIELDS(CHECK_LIST)

static const msgdef_t *lookup(uint64_t tag)
{
    for (size_t i = 0; i < COUNT(catalogue); i++) {
        if (catalogue[i].tag == tag) {
            return &catalogue[i];
        }
    }
    return NULL;
}

int wb_msg_direction(uint32_t tag)
{
    const msgdef_t *d = lookup(tag);
    return d ? d->dir : 0;
}

int wb_msg_phase(uint32_t tag)
{
    const msgdef_t *d = lookup(tag);
    return d ? d->phase : 0;
}

const char *wb_msg_name(uint32_t tag)
{
    const msgdef_t *d = lookup(tag);
    return d ? d->name : NULL;
}

/* Outcome and AppState are numbered 0 .. count - 1 (cgen checks it). */
#define ENUM_COUNT(kind) ((kind) == K_OUTCOME ? WB_OUTCOME_COUNT : WB_APP_STATE_COUNT)

#define ERROR_CODE(c) c,
static bool error_code_valid(uint64_t v)
{
    static const uint16_t codes[] = {WB_ERROR_CODES(ERROR_CODE)};
    for (size_t i = 0; i < COUNT(codes); i++) {
        if (codes[i] == v) {
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------ UTF-8 */

bool wb_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1Fu;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0Fu;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07u;
        } else {
            return false;
        }
        if (len - i - 1 < n) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3Fu);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

/* ------------------------------------------------------------------ well-formedness pass
 * One stackless walk over the whole item: definite lengths only, shortest heads, no tags,
 * simple values only false/true/null (floats of any width), strings within the buffer, text
 * valid UTF-8, nothing after the item. This gives MALFORMED before any envelope check, the
 * order of the Python decoder (which parses the whole item first). */
static bool read_head(const uint8_t *p, size_t len, size_t *pos, uint8_t *major, uint8_t *ai,
                      uint64_t *arg)
{
    if (*pos >= len) {
        return false;
    }
    uint8_t b = p[(*pos)++];
    *major = b >> 5;
    *ai = b & 0x1F;
    if (*ai < 24) {
        *arg = *ai;
        return true;
    }
    if (*ai > 27) {
        return false; /* reserved (28..30) or indefinite / break (31) */
    }
    size_t n = (size_t)1 << (*ai - 24);
    if (len - *pos < n) {
        return false;
    }
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++) {
        v = (v << 8) | p[(*pos)++];
    }
    *arg = v;
    if (*major == 7) {
        return *ai != 24; /* floats of any width; one-byte simple values refused */
    }
    static const uint64_t mins[] = {24, 0x100, 0x10000, 0x100000000ull};
    return v >= mins[*ai - 24]; /* shortest form */
}

static bool well_formed(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    uint64_t need = 1;
    while (need > 0) {
        uint8_t major, ai;
        uint64_t arg;
        if (!read_head(p, len, &pos, &major, &ai, &arg)) {
            return false;
        }
        need--;
        size_t left = len - pos;
        switch (major) {
        case 0:
        case 1:
            break;
        case 2:
        case 3:
            if (arg > left) {
                return false;
            }
            if (major == 3 && !wb_utf8_valid(p + pos, (size_t)arg)) {
                return false;
            }
            pos += (size_t)arg;
            break;
        case 4:
        case 5:
            if (arg > left) {
                return false; /* each item takes at least one byte */
            }
            need += (major == 5) ? 2 * arg : arg;
            if (need > left) {
                return false;
            }
            break;
        case 6:
            return false; /* no CBOR tags in this protocol */
        default: /* 7 */
            if (ai < 24 && (arg < 20 || arg > 22)) {
                return false; /* only false, true, null */
            }
            break;
        }
    }
    return pos == len;
}

/* ------------------------------------------------------------------ decoding */

static uint8_t peek_major(const zcbor_state_t *zs)
{
    return (zs->payload < zs->payload_end) ? (uint8_t)(*zs->payload >> 5) : 0xFF;
}

static bool dec_record(zcbor_state_t *zs, uint8_t *base, const field_t *f, size_t n);

static bool dec_uint(zcbor_state_t *zs, uint64_t max, uint64_t *v)
{
    return peek_major(zs) == 0 && zcbor_uint64_decode(zs, v) && *v <= max;
}

static bool dec_value(zcbor_state_t *zs, wb_wire_value_t *out)
{
    switch (peek_major(zs)) {
    case 0:
        out->kind = WB_WV_UINT;
        return zcbor_uint64_decode(zs, &out->v.u);
    case 1:
        out->kind = WB_WV_NINT;
        return zcbor_int64_decode(zs, &out->v.i) && out->v.i < 0;
    case 7:
        out->kind = WB_WV_FLOAT;
        return zcbor_float_decode(zs, &out->v.f);
    default:
        return false;
    }
}

static bool dec_list_start(zcbor_state_t *zs, size_t min, size_t max, size_t *n)
{
    if (peek_major(zs) != 4 || !zcbor_list_start_decode(zs)) {
        return false;
    }
    *n = zs->elem_count;
    return *n >= min && *n <= max;
}

static bool dec_field(zcbor_state_t *zs, uint8_t *base, const field_t *f)
{
    void *dst = base + f->off;
    uint64_t v;
    struct zcbor_string s;
    size_t n;
    switch (f->kind) {
    case K_U16:
        if (!dec_uint(zs, 0xFFFF, &v)) return false;
        *(uint16_t *)dst = (uint16_t)v;
        return true;
    case K_U32:
        if (!dec_uint(zs, 0xFFFFFFFFu, &v)) return false;
        *(uint32_t *)dst = (uint32_t)v;
        return true;
    case K_U64:
        return dec_uint(zs, UINT64_MAX, (uint64_t *)dst);
    case K_BOOL:
        return zcbor_bool_decode(zs, (bool *)dst);
    case K_ERRCODE:
        if (!dec_uint(zs, 0xFFFF, &v) || !error_code_valid(v)) return false;
        *(uint16_t *)dst = (uint16_t)v;
        return true;
    case K_OUTCOME:
    case K_APPSTATE:
        if (!dec_uint(zs, ENUM_COUNT(f->kind) - 1, &v)) return false;
        *(uint8_t *)dst = (uint8_t)v;
        return true;
    case K_TEXT:
    case K_BYTES:
        if (!(f->kind == K_TEXT ? zcbor_tstr_decode(zs, &s) : zcbor_bstr_decode(zs, &s)) ||
            s.len < f->min || s.len > f->max) {
            return false;
        }
        ((wb_str_t *)dst)->ptr = s.value;
        ((wb_str_t *)dst)->len = s.len;
        return true;
    case K_OPT_FIXED:
        if (zs->payload < zs->payload_end && *zs->payload == 0xF6) {
            *(const uint8_t **)dst = NULL;
            return zcbor_nil_expect(zs, NULL);
        }
        /* fall through */
    case K_FIXED:
        if (!zcbor_bstr_decode(zs, &s) || s.len != f->min) return false;
        *(const uint8_t **)dst = s.value;
        return true;
    case K_INFO:
    case K_LIMITS: {
        const record_t *r = f->kind == K_INFO ? &r_info : &r_limits;
        return dec_list_start(zs, r->n, r->n, &n) && dec_record(zs, dst, r->f, r->n) &&
               zcbor_list_end_decode(zs);
    }
    case K_APPS: {
        wb_apps_t *apps = dst;
        if (!dec_list_start(zs, 0, f->max, &apps->n)) return false;
        for (size_t i = 0; i < apps->n; i++) {
            if (!dec_list_start(zs, r_summary.n, r_summary.n, &n) ||
                !dec_record(zs, (uint8_t *)&apps->items[i], r_summary.f, r_summary.n) ||
                !zcbor_list_end_decode(zs)) {
                return false;
            }
        }
        return zcbor_list_end_decode(zs);
    }
    case K_VALUES: {
        wb_values_t *vals = dst;
        if (!dec_list_start(zs, 0, f->max, &vals->n)) return false;
        for (size_t i = 0; i < vals->n; i++) {
            if (!dec_value(zs, &vals->items[i])) return false;
        }
        return zcbor_list_end_decode(zs);
    }
    default:
        return false;
    }
}

static bool dec_record(zcbor_state_t *zs, uint8_t *base, const field_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!dec_field(zs, base, &f[i])) {
            return false;
        }
    }
    return true;
}

#define FAIL(code, why)            \
    do {                           \
        if (reason) *reason = why; \
        return code;               \
    } while (0)

wb_error_t wb_msg_decode(const uint8_t *payload, size_t len, wb_msg_t *out, const char **reason)
{
    if (reason) *reason = "";
    if (len == 0 || !well_formed(payload, len)) {
        FAIL(WB_ERR_MALFORMED, "not one well-formed canonical CBOR item");
    }
    ZCBOR_STATE_D(zs, 6, payload, len, 1, 0);
    size_t n;
    if (!dec_list_start(zs, 3, 3, &n)) {
        FAIL(WB_ERR_MALFORMED, "envelope must be [version, message_id, message]");
    }
    uint8_t major = peek_major(zs);
    if (major > 1) {
        FAIL(WB_ERR_MALFORMED, "envelope version must be an integer");
    }
    uint64_t v;
    if (*zs->payload != 0x00 || !zcbor_uint64_decode(zs, &v)) {
        FAIL(WB_ERR_UNSUPPORTED_VERSION, "unsupported version");
    }
    if (!dec_uint(zs, 0xFFFFFFFFu, &v)) {
        FAIL(WB_ERR_MALFORMED, "message_id must be a u32");
    }
    memset(out, 0, sizeof(*out));
    out->message_id = (uint32_t)v;
    if (!dec_list_start(zs, 1, SIZE_MAX, &n)) {
        FAIL(WB_ERR_MALFORMED, "message must be a non-empty array [tag, ...]");
    }
    major = peek_major(zs);
    if (major > 1) {
        FAIL(WB_ERR_MALFORMED, "message tag must be an integer");
    }
    const msgdef_t *def = NULL;
    if (major == 0 && zcbor_uint64_decode(zs, &v)) {
        def = lookup(v);
    }
    if (def == NULL) {
        FAIL(WB_ERR_UNKNOWN_MESSAGE, "unknown message tag");
    }
    out->tag = def->tag;
    if (zs->elem_count != def->n) {
        FAIL(WB_ERR_MALFORMED, "wrong number of fields");
    }
    if (!dec_record(zs, (uint8_t *)&out->u, def->f, def->n)) {
        FAIL(WB_ERR_MALFORMED, "a field of the wrong type, size or range");
    }
    return WB_OK;
}

/* ------------------------------------------------------------------ encoding */

static bool enc_record(zcbor_state_t *zs, const uint8_t *base, const field_t *f, size_t n);

static bool enc_value(zcbor_state_t *zs, const wb_wire_value_t *v)
{
    switch (v->kind) {
    case WB_WV_UINT:
        return zcbor_uint64_put(zs, v->v.u);
    case WB_WV_NINT:
        return v->v.i < 0 && zcbor_int64_put(zs, v->v.i);
    case WB_WV_FLOAT: {
        double d = v->v.f;
        if (d != d) return zcbor_float16_bytes_put(zs, 0x7E00);
        if (d > 1.7976931348623157e308) return zcbor_float16_bytes_put(zs, 0x7C00);
        if (d < -1.7976931348623157e308) return zcbor_float16_bytes_put(zs, 0xFC00);
        return zcbor_float64_put(zs, d);
    }
    default:
        return false;
    }
}

static bool enc_str(zcbor_state_t *zs, const wb_str_t *s, const field_t *f, bool text)
{
    if (s->len < f->min || s->len > f->max || (s->len && s->ptr == NULL)) return false;
    if (text && !wb_utf8_valid(s->ptr, s->len)) return false;
    struct zcbor_string z = {s->ptr ? s->ptr : (const uint8_t *)"", s->len};
    return text ? zcbor_tstr_encode(zs, &z) : zcbor_bstr_encode(zs, &z);
}

static bool enc_field(zcbor_state_t *zs, const uint8_t *base, const field_t *f)
{
    const void *src = base + f->off;
    switch (f->kind) {
    case K_U16:
        return zcbor_uint64_put(zs, *(const uint16_t *)src);
    case K_U32:
        return zcbor_uint64_put(zs, *(const uint32_t *)src);
    case K_U64:
        return zcbor_uint64_put(zs, *(const uint64_t *)src);
    case K_BOOL:
        return zcbor_bool_put(zs, *(const bool *)src);
    case K_ERRCODE:
        return error_code_valid(*(const uint16_t *)src) &&
               zcbor_uint64_put(zs, *(const uint16_t *)src);
    case K_OUTCOME:
    case K_APPSTATE:
        return *(const uint8_t *)src < ENUM_COUNT(f->kind) &&
               zcbor_uint64_put(zs, *(const uint8_t *)src);
    case K_TEXT:
    case K_BYTES:
        return enc_str(zs, src, f, f->kind == K_TEXT);
    case K_OPT_FIXED:
        if (*(const uint8_t *const *)src == NULL) return zcbor_nil_put(zs, NULL);
        /* fall through */
    case K_FIXED: {
        const uint8_t *p = *(const uint8_t *const *)src;
        struct zcbor_string z = {p, f->min};
        return p != NULL && zcbor_bstr_encode(zs, &z);
    }
    case K_INFO:
    case K_LIMITS: {
        const record_t *r = f->kind == K_INFO ? &r_info : &r_limits;
        return zcbor_list_start_encode(zs, r->n) && enc_record(zs, src, r->f, r->n) &&
               zcbor_list_end_encode(zs, r->n);
    }
    case K_APPS: {
        const wb_apps_t *apps = src;
        if (apps->n > f->max || !zcbor_list_start_encode(zs, apps->n)) return false;
        for (size_t i = 0; i < apps->n; i++) {
            if (!zcbor_list_start_encode(zs, r_summary.n) ||
                !enc_record(zs, (const uint8_t *)&apps->items[i], r_summary.f, r_summary.n) ||
                !zcbor_list_end_encode(zs, r_summary.n)) {
                return false;
            }
        }
        return zcbor_list_end_encode(zs, apps->n);
    }
    case K_VALUES: {
        const wb_values_t *vals = src;
        if (vals->n > f->max || !zcbor_list_start_encode(zs, vals->n)) return false;
        for (size_t i = 0; i < vals->n; i++) {
            if (!enc_value(zs, &vals->items[i])) return false;
        }
        return zcbor_list_end_encode(zs, vals->n);
    }
    default:
        return false;
    }
}

static bool enc_record(zcbor_state_t *zs, const uint8_t *base, const field_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!enc_field(zs, base, &f[i])) {
            return false;
        }
    }
    return true;
}

size_t wb_msg_encode_frame(const wb_msg_t *msg, uint8_t *out, size_t cap)
{
    const msgdef_t *def = lookup(msg->tag);
    if (def == NULL || cap <= WB_FRAME_HEADER) {
        return 0;
    }
    ZCBOR_STATE_E(zs, 6, out + WB_FRAME_HEADER, cap - WB_FRAME_HEADER, 1);
    bool ok = zcbor_list_start_encode(zs, 3) && zcbor_uint32_put(zs, 0) &&
              zcbor_uint32_put(zs, msg->message_id) &&
              zcbor_list_start_encode(zs, (size_t)def->n + 1) &&
              zcbor_uint32_put(zs, def->tag) &&
              enc_record(zs, (const uint8_t *)&msg->u, def->f, def->n) &&
              zcbor_list_end_encode(zs, (size_t)def->n + 1) && zcbor_list_end_encode(zs, 3);
    if (!ok) {
        return 0;
    }
    size_t n = (size_t)(zs->payload - (out + WB_FRAME_HEADER));
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return n + WB_FRAME_HEADER;
}

/* ------------------------------------------------------------------ values */

void wb_value_from_wire(const wb_wire_value_t *in, wb_value_t *out)
{
    out->is_float = in->kind == WB_WV_FLOAT;
    if (out->is_float) {
        out->v.f = in->v.f;
    } else if (in->kind == WB_WV_UINT) {
        out->v.i = (int64_t)in->v.u; /* two's complement: the same 64 bits */
    } else {
        out->v.i = in->v.i;
    }
}

void wb_value_to_wire(const wb_value_t *in, wb_wire_value_t *out)
{
    if (in->is_float) {
        out->kind = WB_WV_FLOAT;
        out->v.f = in->v.f;
    } else if (in->v.i < 0) {
        out->kind = WB_WV_NINT;
        out->v.i = in->v.i;
    } else {
        out->kind = WB_WV_UINT;
        out->v.u = (uint64_t)in->v.i;
    }
}

#ifdef WB_CODEC_PRINT
/* Host-only canonical text form of a message (tests and the differential tool):
 *   <Name> <message_id> [field,...]
 * uint/enum decimal, bool true/false, null, text t:<hex of UTF-8>, bytes b:<hex>, records and
 * lists [..], values i:<decimal> or f:<16 hex digits of the float64 bits> or f:nan. */
#include <stdio.h>
#include <inttypes.h>

typedef struct {
    char *p;
    size_t left;
} outbuf_t;

static void put(outbuf_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#include <stdarg.h>
static void put(outbuf_t *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p, o->left, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < o->left) {
        o->p += n;
        o->left -= (size_t)n;
    } else {
        o->left = 0;
    }
}

static void put_hex(outbuf_t *o, const char *pfx, const uint8_t *p, size_t n)
{
    put(o, "%s", pfx);
    for (size_t i = 0; i < n; i++) put(o, "%02x", p[i]);
}

static void print_record(outbuf_t *o, const uint8_t *base, const field_t *f, size_t n);

static void print_field(outbuf_t *o, const uint8_t *base, const field_t *f)
{
    const void *src = base + f->off;
    switch (f->kind) {
    case K_U16: case K_ERRCODE: put(o, "%u", (unsigned)*(const uint16_t *)src); break;
    case K_U32: put(o, "%" PRIu32, *(const uint32_t *)src); break;
    case K_U64: put(o, "%" PRIu64, *(const uint64_t *)src); break;
    case K_OUTCOME: case K_APPSTATE: put(o, "%u", (unsigned)*(const uint8_t *)src); break;
    case K_BOOL: put(o, "%s", *(const bool *)src ? "true" : "false"); break;
    case K_TEXT: case K_BYTES: {
        const wb_str_t *s = src;
        put_hex(o, f->kind == K_TEXT ? "t:" : "b:", s->ptr, s->len);
        break;
    }
    case K_OPT_FIXED: case K_FIXED: {
        const uint8_t *p = *(const uint8_t *const *)src;
        if (p == NULL) put(o, "null");
        else put_hex(o, "b:", p, f->min);
        break;
    }
    case K_INFO: print_record(o, src, r_info.f, r_info.n); break;
    case K_LIMITS: print_record(o, src, r_limits.f, r_limits.n); break;
    case K_APPS: {
        const wb_apps_t *a = src;
        put(o, "[");
        for (size_t i = 0; i < a->n; i++) {
            if (i) put(o, ",");
            print_record(o, (const uint8_t *)&a->items[i], r_summary.f, r_summary.n);
        }
        put(o, "]");
        break;
    }
    case K_VALUES: {
        const wb_values_t *v = src;
        put(o, "[");
        for (size_t i = 0; i < v->n; i++) {
            const wb_wire_value_t *x = &v->items[i];
            if (i) put(o, ",");
            if (x->kind == WB_WV_UINT) put(o, "i:%" PRIu64, x->v.u);
            else if (x->kind == WB_WV_NINT) put(o, "i:%" PRId64, x->v.i);
            else if (x->v.f != x->v.f) put(o, "f:nan");
            else {
                uint64_t bits;
                memcpy(&bits, &x->v.f, 8);
                put(o, "f:%016" PRIx64, bits);
            }
        }
        put(o, "]");
        break;
    }
    default: put(o, "?"); break;
    }
}

static void print_record(outbuf_t *o, const uint8_t *base, const field_t *f, size_t n)
{
    put(o, "[");
    for (size_t i = 0; i < n; i++) {
        if (i) put(o, ",");
        print_field(o, base, &f[i]);
    }
    put(o, "]");
}

size_t wb_msg_print(const wb_msg_t *msg, char *out, size_t cap)
{
    const msgdef_t *def = lookup(msg->tag);
    outbuf_t o = {out, cap};
    if (cap) out[0] = 0;
    if (def == NULL) return 0;
    put(&o, "%s %" PRIu32 " ", def->name, msg->message_id);
    print_record(&o, (const uint8_t *)&msg->u, def->f, def->n);
    return o.left ? cap - o.left : 0;
}
#endif
