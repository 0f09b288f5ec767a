/* Host helper: feed a byte stream to a session the way Python's Session.receive_data does. */
#ifndef HOST_FEED_H
#define HOST_FEED_H
#include <stdio.h>
#include "wb/session.h"

size_t wb_msg_print(const wb_msg_t *msg, char *out, size_t cap); /* codec.c, WB_CODEC_PRINT */

/* violation != WB_OK: the peer violated (msg NULL); else a received message with its frame. */
typedef void (*host_event_fn)(void *ctx, wb_error_t violation, const wb_msg_t *msg,
                              const uint8_t *frame, size_t frame_len);
void host_receive_data(wb_session_t *s, wb_framer_t *f, const uint8_t *data, size_t len,
                       host_event_fn fn, void *ctx);
/* A session of `role` put in the state named as in vectors.py session_in(). false: unknown. */
bool host_session_in(wb_session_t *s, const char *role, const char *state, uint32_t max_frame);
size_t host_unhex(const char *hex, uint8_t *out, size_t cap); /* (size_t)-1 on error */
#endif
