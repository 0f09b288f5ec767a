/* Sans-I/O session of one connection, either side (mirrors wasmbed_hil/protocol/session.py):
 * framing with the inbound limit checked on the 4 length bytes, decoding, direction and state
 * checks, the handshake limit checks, message ids. The device core uses role DEVICE; the
 * GATEWAY role exists so that host tools can check every vector and diff against Python. */
#ifndef WB_SESSION_H
#define WB_SESSION_H

#include "msg.h"

typedef enum { WB_ROLE_DEVICE = 0, WB_ROLE_GATEWAY = 1 } wb_role_t;

typedef enum {
    WB_ST_IDLE = 0,
    WB_ST_AWAIT_HELLO,
    WB_ST_DECIDING,
    WB_ST_AWAIT_PROOF,
    WB_ST_AWAIT_WELCOME,
    WB_ST_PROVING,
    WB_ST_ESTABLISHED,
    WB_ST_CLOSED,
} wb_state_t;

/* Reassembles frames in a caller-provided buffer of at least max_frame + 4 bytes. Reads go
 * straight into the buffer and never cross a frame boundary (wb_framer_want). */
typedef struct {
    uint8_t *buf;
    size_t cap;
    uint32_t max_frame;
    size_t have;  /* bytes of the current frame held (header included) */
    uint32_t len; /* payload length once the header is complete */
} wb_framer_t;

typedef enum { WB_FRAME_MORE = 0, WB_FRAME_READY = 1, WB_FRAME_ERROR = 2 } wb_frame_status_t;

void wb_framer_init(wb_framer_t *f, uint8_t *buf, size_t cap, uint32_t max_frame);
/* Where the next bytes go and how many the current frame still needs (never 0). */
size_t wb_framer_want(const wb_framer_t *f, uint8_t **dst);
/* n bytes were written at the place wb_framer_want gave. READY: the payload is
 * f->buf + 4, f->len bytes, until wb_framer_consume. ERROR: *code is MALFORMED (N = 0) or
 * FRAME_TOO_LARGE, the buffer is reset. */
wb_frame_status_t wb_framer_commit(wb_framer_t *f, size_t n, wb_error_t *code);
void wb_framer_consume(wb_framer_t *f);

typedef struct {
    wb_role_t role;
    wb_state_t state;
    uint32_t max_frame;      /* what we accept */
    uint32_t peer_max_frame; /* what the peer accepts: 1024 until Hello/Welcome says */
    uint32_t next_id;
    wb_error_t closed_code;  /* why it closed (peer Error code, our violation code), 0 if not */
} wb_session_t;

void wb_session_init(wb_session_t *s, wb_role_t role, uint32_t max_frame);

/* A received envelope (payload of one frame): decode and check it. WB_OK: *msg is valid and
 * allowed, the state advanced (an Error received closes the session and is returned as WB_OK
 * with tag 0). Otherwise the peer violated the protocol: the returned code is the one to send
 * in Error (wb_session_error_frame), the session is CLOSED. Nothing is processed when CLOSED
 * (returns WB_ERR_UNEXPECTED_MESSAGE without changing anything). */
wb_error_t wb_session_receive(wb_session_t *s, const uint8_t *payload, size_t len, wb_msg_t *msg,
                              const char **reason);
/* A framing error found by the framer: the session closes with that code. */
void wb_session_fail(wb_session_t *s, wb_error_t code);

/* Encode msg as a frame ready to write. reply_to < 0: takes the next message id; otherwise the
 * reply copies it. Error is allowed in every state but CLOSED and closes the session. Returns
 * the frame length, 0 when the state does not allow it, it is invalid, does not fit cap or
 * exceeds the peer's limit (the LocalProtocolError of Python: nothing to send). */
size_t wb_session_send(wb_session_t *s, wb_msg_t *msg, int64_t reply_to, uint8_t *out,
                       size_t cap);

/* Frame of Error(code, reason) with id 0 (what a violation sends). */
size_t wb_error_frame(wb_error_t code, const char *reason, uint8_t *out, size_t cap);

const char *wb_state_name(wb_state_t st); /* "idle", "await-hello", ... (as in Python) */

#endif
