/* The message catalogue in C: one struct per message, a validating decoder and a canonical
 * encoder (definite lengths, shortest integers, float64 except NaN/inf as half floats), built
 * on zcbor primitives. The catalogue itself (tags, fields, directions) is msg_catalogue.h,
 * generated from wasmbed_hil/protocol/messages.py; the structs below hold each message's
 * fields, named as in Python (codec.c checks them against the generated field tables at
 * compile time). docs/protocol.md is the spec.
 *
 * Decoded strings and byte strings point INTO the decoded payload (zero copy): the payload
 * must outlive the message. Nothing is allocated. */
#ifndef WB_MSG_H
#define WB_MSG_H

#include "types.h"

/* The tags, the direction and phase of each message, the field tables and the size limits
 * (WB_MAX_KEY, WB_MAX_APPS_WIRE...) are generated from the Python catalogue. */
#include "msg_catalogue.h"

#define WB_FRAME_HEADER 4
#define WB_MAX_FRAME_LIMIT (16u * 1024u * 1024u)
#define WB_ENROLL_CONTEXT_LEN 18
extern const uint8_t wb_enroll_context[WB_ENROLL_CONTEXT_LEN]; /* "wasmbed-enroll-v1\0" */

/* A byte or text string (text: UTF-8, len in bytes, not NUL-terminated). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} wb_str_t;

/* A WasmValue exactly as on the wire: an unsigned integer (0..2^64-1), a negative integer
 * (-2^63..-1) or a float. wb_value_t (runtime.h) cannot tell 2^64-1 from -1, this can. */
typedef enum { WB_WV_UINT = 0, WB_WV_NINT = 1, WB_WV_FLOAT = 2 } wb_wv_kind_t;
typedef struct {
    uint8_t kind; /* wb_wv_kind_t */
    union {
        uint64_t u;
        int64_t i;
        double f;
    } v;
} wb_wire_value_t;

typedef struct {
    size_t n;
    wb_wire_value_t items[WB_MAX_ARGS];
} wb_values_t;

typedef struct {
    wb_str_t architecture, runtime, firmware;
    uint64_t memory_total, memory_free;
    uint32_t max_module_size, max_frame_size;
    uint16_t max_apps, window;
} wb_device_info_t;

typedef struct {
    wb_str_t app_id;
    const uint8_t *digest; /* WB_DIGEST_LEN bytes */
    uint8_t state;         /* wb_app_state_t */
} wb_app_summary_t;

typedef struct {
    size_t n;
    wb_app_summary_t items[WB_MAX_APPS_WIRE];
} wb_apps_t;

typedef struct {
    uint16_t code; /* wb_error_t */
    wb_str_t reason;
} wb_msg_error_t; /* Error, EnrollReject */

typedef struct {
    uint32_t tag;
    uint32_t message_id;
    union {
        wb_msg_error_t error;
        struct { const uint8_t *device_id; /* NULL: null */ wb_device_info_t info; } hello;
        struct { wb_str_t public_key, signature; } enroll_proof;
        struct { uint64_t uptime_ms, memory_free; wb_apps_t apps; } heartbeat;
        struct { wb_device_info_t info; } device_info_report;
        struct { wb_str_t app_id; uint32_t offset; } deploy_ready;
        struct { wb_str_t app_id; uint32_t next_offset; } chunk_ack;
        struct { wb_str_t app_id; uint16_t code; wb_str_t reason; } deploy_ack;
        struct { wb_str_t app_id; uint32_t run_id; uint16_t code; wb_str_t reason; } start_ack;
        struct { wb_str_t app_id; uint16_t code; wb_str_t reason; } stop_ack;
        struct {
            wb_str_t app_id;
            uint32_t run_id;
            uint8_t outcome; /* wb_outcome_t */
            wb_values_t values;
            wb_str_t log;
            uint64_t fuel_used, duration_us;
            wb_str_t detail;
        } execution_result;
        struct {
            const uint8_t *device_id;
            uint32_t heartbeat_interval_ms, max_frame_size;
            bool enrolled_now;
        } welcome;
        struct { const uint8_t *nonce; } enroll_challenge;
        wb_msg_error_t enroll_reject;
        struct {
            wb_str_t app_id, name;
            const uint8_t *digest;
            uint32_t size, chunk_size;
            wb_limits_t limits;
        } deploy_begin;
        struct { wb_str_t app_id; uint32_t offset; wb_str_t data; } deploy_chunk;
        struct { wb_str_t app_id; uint32_t run_id; wb_str_t entry; wb_values_t args; } start_app;
        struct { wb_str_t app_id; bool remove; } stop_app;
        struct { wb_str_t app_id; uint32_t run_id; } result_ack;
    } u;
} wb_msg_t;

/* Direction of a known tag: WB_DIR_D2G, WB_DIR_G2D or WB_DIR_BOTH (Error), 0 unknown. */
int wb_msg_direction(uint32_t tag);
/* Phase of a known tag: WB_PHASE_HANDSHAKE, WB_PHASE_ESTABLISHED or WB_PHASE_ANY, 0 unknown. */
int wb_msg_phase(uint32_t tag);
const char *wb_msg_name(uint32_t tag); /* "Hello", ...; NULL for an unknown tag */

/* Decode one envelope (the frame's payload, without the length prefix). Returns WB_OK and
 * fills *out, or MALFORMED / UNSUPPORTED_VERSION / UNKNOWN_MESSAGE in the order of
 * docs/protocol.md section 3 (direction, state and the 1024 minimum are session checks).
 * Strict: input that is not in the protocol's canonical form (indefinite lengths, non-shortest
 * integers, tags, simple values other than false/true/null) is MALFORMED. *reason (optional)
 * gets a static description. */
wb_error_t wb_msg_decode(const uint8_t *payload, size_t len, wb_msg_t *out, const char **reason);

/* Encode `msg` (with msg->message_id) as a whole frame: 4-byte BE length then the envelope.
 * Validates the fields as the decoder would (sizes, enum ranges, UTF-8). Returns the frame
 * length, 0 when invalid or when it does not fit `cap`. */
size_t wb_msg_encode_frame(const wb_msg_t *msg, uint8_t *out, size_t cap);

/* Strict UTF-8 validation (as Python's codec: no overlongs, no surrogates, <= U+10FFFF). */
bool wb_utf8_valid(const uint8_t *s, size_t len);

/* Conversions between the wire form and the runtime's wb_value_t (u64 above INT64_MAX maps to
 * the same 64 bits as an i64, which is how WebAssembly sees it). */
void wb_value_from_wire(const wb_wire_value_t *in, wb_value_t *out);
void wb_value_to_wire(const wb_value_t *in, wb_wire_value_t *out);

#endif
