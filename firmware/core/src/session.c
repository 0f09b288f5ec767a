/* Session state machine and framing. See wb/session.h and docs/protocol.md sections 2, 7. */
#include <string.h>

#include "wb/session.h"

void wb_framer_init(wb_framer_t *f, uint8_t *buf, size_t cap, uint32_t max_frame)
{
    f->buf = buf;
    f->cap = cap;
    f->max_frame = max_frame;
    f->have = 0;
    f->len = 0;
}

size_t wb_framer_want(const wb_framer_t *f, uint8_t **dst)
{
    *dst = f->buf + f->have;
    if (f->have < WB_FRAME_HEADER) {
        return WB_FRAME_HEADER - f->have;
    }
    return WB_FRAME_HEADER + (size_t)f->len - f->have;
}

wb_frame_status_t wb_framer_commit(wb_framer_t *f, size_t n, wb_error_t *code)
{
    f->have += n;
    if (f->have == WB_FRAME_HEADER) {
        uint32_t len = ((uint32_t)f->buf[0] << 24) | ((uint32_t)f->buf[1] << 16) |
                       ((uint32_t)f->buf[2] << 8) | f->buf[3];
        if (len == 0 || len > f->max_frame || (size_t)len + WB_FRAME_HEADER > f->cap) {
            *code = len == 0 ? WB_ERR_MALFORMED : WB_ERR_FRAME_TOO_LARGE;
            f->have = 0;
            return WB_FRAME_ERROR;
        }
        f->len = len;
        return WB_FRAME_MORE;
    }
    if (f->have > WB_FRAME_HEADER && f->have == WB_FRAME_HEADER + (size_t)f->len) {
        return WB_FRAME_READY;
    }
    return WB_FRAME_MORE;
}

void wb_framer_consume(wb_framer_t *f)
{
    f->have = 0;
    f->len = 0;
}

void wb_session_init(wb_session_t *s, wb_role_t role, uint32_t max_frame)
{
    memset(s, 0, sizeof(*s));
    s->role = role;
    s->state = role == WB_ROLE_DEVICE ? WB_ST_IDLE : WB_ST_AWAIT_HELLO;
    s->max_frame = max_frame;
    s->peer_max_frame = WB_MIN_FRAME;
}

/* The handshake transitions of both roles (msg_catalogue.h, generated from session.py). */
typedef struct {
    uint8_t role, state, tag, next;
} transition_t;

#define TRANSITION(r, st, t, nx) {r, st, t, nx},
static const transition_t handshake[] = {WB_HANDSHAKE(TRANSITION)};

/* Next state when `role` in `st` (not CLOSED) sends or receives `tag`, whose direction the
 * caller checked, or WB_ST_IDLE meaning "not allowed" (IDLE is never a target). The phase of
 * the message says where to look, as in session.py. */
static wb_state_t next_state(wb_role_t role, wb_state_t st, uint32_t tag)
{
    switch (wb_msg_phase(tag)) {
    case WB_PHASE_ANY:
        return WB_ST_CLOSED;
    case WB_PHASE_ESTABLISHED:
        return st == WB_ST_ESTABLISHED ? WB_ST_ESTABLISHED : WB_ST_IDLE;
    case WB_PHASE_HANDSHAKE:
        for (size_t i = 0; i < sizeof(handshake) / sizeof(handshake[0]); i++) {
            const transition_t *t = &handshake[i];
            if (t->role == role && t->state == st && t->tag == tag) {
                return (wb_state_t)t->next;
            }
        }
        return WB_ST_IDLE;
    default:
        return WB_ST_IDLE;
    }
}

void wb_session_fail(wb_session_t *s, wb_error_t code)
{
    if (s->state != WB_ST_CLOSED) {
        s->state = WB_ST_CLOSED;
        s->closed_code = code;
    }
}

#define VIOLATION(code, why)          \
    do {                              \
        if (reason) *reason = why;    \
        wb_session_fail(s, code);     \
        return code;                  \
    } while (0)

wb_error_t wb_session_receive(wb_session_t *s, const uint8_t *payload, size_t len, wb_msg_t *msg,
                              const char **reason)
{
    if (reason) *reason = "";
    if (s->state == WB_ST_CLOSED) {
        return WB_ERR_UNEXPECTED_MESSAGE;
    }
    const char *why = "";
    wb_error_t err = wb_msg_decode(payload, len, msg, &why);
    if (err != WB_OK) {
        VIOLATION(err, why);
    }
    if (msg->tag == WB_TAG_ERROR) {
        s->state = WB_ST_CLOSED;
        s->closed_code = (wb_error_t)msg->u.error.code;
        return WB_OK;
    }
    int inbound = s->role == WB_ROLE_DEVICE ? WB_DIR_G2D : WB_DIR_D2G;
    if (!(wb_msg_direction(msg->tag) & inbound)) {
        VIOLATION(WB_ERR_UNKNOWN_MESSAGE, "message of the other direction");
    }
    wb_state_t next = next_state(s->role, s->state, msg->tag);
    if (next == WB_ST_IDLE) {
        VIOLATION(WB_ERR_UNEXPECTED_MESSAGE, "message not allowed in this state");
    }
    if (msg->tag == WB_TAG_WELCOME) {
        if (msg->u.welcome.max_frame_size < WB_MIN_FRAME) {
            VIOLATION(WB_ERR_MALFORMED, "gateway max_frame_size below the minimum");
        }
        s->peer_max_frame = msg->u.welcome.max_frame_size;
    } else if (msg->tag == WB_TAG_HELLO || msg->tag == WB_TAG_DEVICE_INFO_REPORT) {
        const wb_device_info_t *info = msg->tag == WB_TAG_HELLO
                                           ? &msg->u.hello.info
                                           : &msg->u.device_info_report.info;
        if (info->max_frame_size < WB_MIN_FRAME) {
            VIOLATION(WB_ERR_MALFORMED, "device max_frame_size below the minimum");
        }
        if (info->window < 1) {
            VIOLATION(WB_ERR_MALFORMED, "device window must be at least 1");
        }
        if (msg->tag == WB_TAG_DEVICE_INFO_REPORT && info->max_frame_size != s->peer_max_frame) {
            VIOLATION(WB_ERR_MALFORMED, "device max_frame_size changed within a session");
        }
        s->peer_max_frame = info->max_frame_size;
    }
    s->state = next;
    if (next == WB_ST_CLOSED) {
        s->closed_code = (wb_error_t)msg->u.enroll_reject.code;
    }
    return WB_OK;
}

size_t wb_session_send(wb_session_t *s, wb_msg_t *msg, int64_t reply_to, uint8_t *out,
                       size_t cap)
{
    if (s->state == WB_ST_CLOSED) {
        return 0;
    }
    int outbound = s->role == WB_ROLE_DEVICE ? WB_DIR_D2G : WB_DIR_G2D;
    if (!(wb_msg_direction(msg->tag) & outbound)) {
        return 0;
    }
    wb_state_t next = next_state(s->role, s->state, msg->tag); /* Error: CLOSED */
    if (next == WB_ST_IDLE) {
        return 0;
    }
    msg->message_id = reply_to < 0 ? s->next_id : (uint32_t)reply_to;
    size_t n = wb_msg_encode_frame(msg, out, cap);
    if (n == 0 || n - WB_FRAME_HEADER > s->peer_max_frame) {
        return 0;
    }
    if (reply_to < 0) {
        s->next_id++; /* wraps at 2^32 */
    }
    s->state = next;
    if (msg->tag == WB_TAG_ERROR) {
        s->closed_code = (wb_error_t)msg->u.error.code;
    }
    return n;
}

size_t wb_error_frame(wb_error_t code, const char *reason, uint8_t *out, size_t cap)
{
    wb_msg_t m;
    memset(&m, 0, sizeof(m));
    m.tag = WB_TAG_ERROR;
    m.u.error.code = (uint16_t)code;
    m.u.error.reason.ptr = (const uint8_t *)reason;
    m.u.error.reason.len = reason ? strlen(reason) : 0;
    if (m.u.error.reason.len > 200) {
        m.u.error.reason.len = 200;
    }
    return wb_msg_encode_frame(&m, out, cap);
}

#define STATE_NAME(st, text) [st] = text,
const char *wb_state_name(wb_state_t st)
{
    static const char *const names[] = {WB_STATES(STATE_NAME)};
    return (unsigned)st < sizeof(names) / sizeof(names[0]) ? names[st] : "?";
}
