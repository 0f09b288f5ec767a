#include <string.h>
#include "feed.h"

void host_receive_data(wb_session_t *s, wb_framer_t *f, const uint8_t *data, size_t len,
                       host_event_fn fn, void *ctx)
{
    if (s->state == WB_ST_CLOSED) return;
    size_t pos = 0;
    while (pos < len) {
        uint8_t *dst;
        size_t want = wb_framer_want(f, &dst);
        size_t n = len - pos < want ? len - pos : want;
        memcpy(dst, data + pos, n);
        pos += n;
        wb_error_t code = WB_OK;
        wb_frame_status_t st = wb_framer_commit(f, n, &code);
        if (st == WB_FRAME_ERROR) {
            wb_session_fail(s, code);
            fn(ctx, code, NULL, NULL, 0);
            return;
        }
        if (st == WB_FRAME_READY) {
            wb_msg_t msg;
            wb_error_t err = wb_session_receive(s, f->buf + WB_FRAME_HEADER, f->len, &msg, NULL);
            if (err != WB_OK) {
                fn(ctx, err, NULL, NULL, 0);
                wb_framer_consume(f);
                return;
            }
            fn(ctx, WB_OK, &msg, f->buf, WB_FRAME_HEADER + (size_t)f->len);
            wb_framer_consume(f);
            if (s->state == WB_ST_CLOSED) return;
        }
    }
}

bool host_session_in(wb_session_t *s, const char *role, const char *state, uint32_t max_frame)
{
    bool dev = strcmp(role, "device") == 0;
    if (!dev && strcmp(role, "gateway") != 0) return false;
    wb_session_init(s, dev ? WB_ROLE_DEVICE : WB_ROLE_GATEWAY, max_frame);
    static const wb_state_t dev_ok[] = {WB_ST_IDLE, WB_ST_AWAIT_WELCOME, WB_ST_PROVING,
                                        WB_ST_ESTABLISHED};
    static const wb_state_t gw_ok[] = {WB_ST_AWAIT_HELLO, WB_ST_DECIDING, WB_ST_AWAIT_PROOF,
                                       WB_ST_ESTABLISHED};
    for (int i = 0; i < 4; i++) {
        wb_state_t st = dev ? dev_ok[i] : gw_ok[i];
        if (strcmp(state, wb_state_name(st)) == 0) {
            s->state = st;
            /* vectors.py: the gateway got Hello(SMALL_DEVICE: 1024), the device Welcome(1024) */
            s->peer_max_frame = WB_MIN_FRAME;
            if (!dev && st != WB_ST_AWAIT_HELLO) s->next_id = st == WB_ST_DECIDING ? 0 : 0;
            if (dev && st != WB_ST_IDLE) s->next_id = 1; /* Hello took id 0 */
            return true;
        }
    }
    return false;
}

size_t host_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = strlen(hex);
    if (n % 2 || n / 2 > cap) return (size_t)-1;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return (size_t)-1;
        out[i] = (uint8_t)v;
    }
    return n / 2;
}
