/* Differential tool: each stdin line is "<receiver> <state> <max_frame_size> <hex bytes>";
 * the bytes are fed to a C session of that receiver in that state (as vectors.py session_in)
 * and one line of events is printed, separated by " | ":
 *   R <canonical form> =   a received message; "=" when re-encoding gives the same frame, "~" not
 *   V <code>               a violation (the Error the receiver sends), the session closed
 * tests/test_firmware_core.py compares this with Python's Session.receive_data. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "feed.h"

static uint8_t frame_buf[(1 << 20) + 4];
static uint8_t bytes[1 << 20];
static uint8_t reenc[1 << 20];
static char line[(1 << 21) + 256];
static char text[1 << 20];

static void on_event(void *ctx, wb_error_t v, const wb_msg_t *m, const uint8_t *fr, size_t n)
{
    int *count = ctx;
    if ((*count)++) fputs(" | ", stdout);
    if (v != WB_OK) {
        printf("V %d", (int)v);
        return;
    }
    wb_msg_print(m, text, sizeof text);
    size_t r = wb_msg_encode_frame(m, reenc, sizeof reenc);
    printf("R %s %c", text, (r == n && memcmp(reenc, fr, n) == 0) ? '=' : '~');
}

int main(void)
{
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        char *save = NULL;
        char *recv = strtok_r(line, " ", &save);
        char *state = strtok_r(NULL, " ", &save);
        char *maxf = strtok_r(NULL, " ", &save);
        char *hex = strtok_r(NULL, " ", &save);
        wb_session_t s;
        wb_framer_t f;
        size_t n = hex ? host_unhex(hex, bytes, sizeof bytes) : 0;
        if (!recv || !state || !maxf || n == (size_t)-1 ||
            !host_session_in(&s, recv, state, (uint32_t)atol(maxf))) {
            printf("? bad input\n");
            fflush(stdout);
            continue;
        }
        wb_framer_init(&f, frame_buf, sizeof frame_buf, s.max_frame);
        int count = 0;
        host_receive_data(&s, &f, bytes, n, on_event, &count);
        putchar('\n');
        fflush(stdout);
    }
    return 0;
}
