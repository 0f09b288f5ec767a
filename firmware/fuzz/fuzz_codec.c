/* libFuzzer harness: the C codec of the protocol messages (core/src/codec.c) and the session's
 * checks on one envelope (core/src/session.c).
 *
 * Input: one envelope, the payload of a frame without its 4-byte length (seeds: every vector
 * of wasmbed_hil/protocol/vectors.json).
 * Oracles, besides ASan and UBSan:
 *   - a refusal is MALFORMED, UNSUPPORTED_VERSION or UNKNOWN_MESSAGE, with a reason;
 *   - what decodes re-encodes (the decoder validated it all), the re-encoded frame decodes to
 *     the same message (same text form) and encodes to the same bytes again (a fixed point);
 *   - the session of each role, in each state, accepts it or refuses it with a protocol code,
 *     and a refusal closes the session. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wb/session.h"

size_t wb_msg_print(const wb_msg_t *msg, char *out, size_t cap); /* codec.c, WB_CODEC_PRINT */

#define REQUIRE(cond, ...)                                   \
    do {                                                     \
        if (!(cond)) {                                       \
            fprintf(stderr, "fuzz_codec: " __VA_ARGS__);     \
            fputc('\n', stderr);                             \
            abort();                                         \
        }                                                    \
    } while (0)

static bool decode_code(wb_error_t e)
{
    return e == WB_ERR_MALFORMED || e == WB_ERR_UNSUPPORTED_VERSION ||
           e == WB_ERR_UNKNOWN_MESSAGE;
}

static bool session_code(wb_error_t e)
{
    return decode_code(e) || e == WB_ERR_UNEXPECTED_MESSAGE;
}

/* Every state in which a session of each role reads messages. */
static const struct {
    wb_role_t role;
    wb_state_t state;
} receivers[] = {
    {WB_ROLE_DEVICE, WB_ST_AWAIT_WELCOME},  {WB_ROLE_DEVICE, WB_ST_PROVING},
    {WB_ROLE_DEVICE, WB_ST_ESTABLISHED},    {WB_ROLE_GATEWAY, WB_ST_AWAIT_HELLO},
    {WB_ROLE_GATEWAY, WB_ST_DECIDING},      {WB_ROLE_GATEWAY, WB_ST_AWAIT_PROOF},
    {WB_ROLE_GATEWAY, WB_ST_ESTABLISHED},
};

static char text1[1 << 16], text2[1 << 16];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wb_msg_t msg;
    const char *why = NULL;
    wb_error_t err = wb_msg_decode(data, size, &msg, &why);
    REQUIRE(why != NULL, "no reason given");
    if (err != WB_OK) {
        REQUIRE(decode_code(err), "decode refused with code %d", (int)err);
        REQUIRE(why[0] != 0, "decode refused (%d) without a reason", (int)err);
        return 0;
    }
    REQUIRE(wb_msg_name(msg.tag) != NULL, "decoded an unknown tag %u", (unsigned)msg.tag);

    /* Round trip. Floats of any width come back as float64 (NaN/inf as half floats): at most
     * three times the bytes, hence the capacity. The buffer is exactly that: ASan sees any
     * write beyond it. */
    size_t cap = 3 * size + 64;
    uint8_t *frame = malloc(cap);
    REQUIRE(frame != NULL, "out of memory");
    size_t n = wb_msg_encode_frame(&msg, frame, cap);
    REQUIRE(n > WB_FRAME_HEADER, "%s decoded but does not re-encode", wb_msg_name(msg.tag));
    uint32_t len = ((uint32_t)frame[0] << 24) | ((uint32_t)frame[1] << 16) |
                   ((uint32_t)frame[2] << 8) | frame[3];
    REQUIRE(len == n - WB_FRAME_HEADER, "frame header %u for %zu payload bytes", (unsigned)len,
            n - WB_FRAME_HEADER);
    wb_msg_t again;
    err = wb_msg_decode(frame + WB_FRAME_HEADER, n - WB_FRAME_HEADER, &again, &why);
    REQUIRE(err == WB_OK, "re-encoded %s does not decode: %d %s", wb_msg_name(msg.tag), (int)err,
            why);
    wb_msg_print(&msg, text1, sizeof text1);
    wb_msg_print(&again, text2, sizeof text2);
    REQUIRE(strcmp(text1, text2) == 0, "round trip changed the message:\n  %s\n  %s", text1,
            text2);
    uint8_t *frame2 = malloc(n);
    REQUIRE(frame2 != NULL, "out of memory");
    size_t n2 = wb_msg_encode_frame(&again, frame2, n);
    REQUIRE(n2 == n && memcmp(frame, frame2, n) == 0, "encoding is not a fixed point for %s",
            wb_msg_name(msg.tag));
    free(frame2);
    free(frame);

    /* The session checks in every receiving state of both roles. */
    for (size_t i = 0; i < sizeof receivers / sizeof receivers[0]; i++) {
        wb_session_t s;
        wb_session_init(&s, receivers[i].role, WB_MAX_FRAME_LIMIT);
        s.state = receivers[i].state;
        wb_msg_t m;
        const char *r = NULL;
        err = wb_session_receive(&s, data, size, &m, &r);
        REQUIRE(r != NULL, "session gave no reason");
        if (err != WB_OK) {
            REQUIRE(session_code(err), "session refused with code %d", (int)err);
            REQUIRE(s.state == WB_ST_CLOSED && s.closed_code == err,
                    "a refusal (%d) left the session in %s", (int)err, wb_state_name(s.state));
        } else {
            REQUIRE(m.tag == msg.tag, "the session decoded another tag");
            REQUIRE(s.state != WB_ST_IDLE, "the session went back to idle");
            /* a closed session reads nothing more */
            if (s.state == WB_ST_CLOSED) {
                REQUIRE(wb_session_receive(&s, data, size, &m, &r) ==
                            WB_ERR_UNEXPECTED_MESSAGE,
                        "a closed session accepted a message");
            }
        }
    }
    return 0;
}
