/* Every vector of wasmbed_hil/protocol/vectors.json (in the text form written by
 * scripts/wbcanon.py): valid frames decode to the stated fields and re-encode byte for byte;
 * invalid frames are refused by the stated receiver in the stated state with the stated code. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "feed.h"

static uint8_t frame_buf[1 << 16];
static uint8_t bytes[1 << 16];
static uint8_t out[1 << 16];
static char text[1 << 16];
static char line[1 << 18];

typedef struct {
    int events;
    wb_error_t first_violation;
    wb_msg_t msg;
    uint8_t frame[1 << 16];
    size_t frame_len;
} capture_t;

static void on_event(void *ctx, wb_error_t v, const wb_msg_t *m, const uint8_t *fr, size_t n)
{
    capture_t *c = ctx;
    c->events++;
    if (v != WB_OK) {
        if (c->first_violation == WB_OK) c->first_violation = v;
    } else if (c->events == 1) {
        c->msg = *m;
        memcpy(c->frame, fr, n);
        c->frame_len = n;
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) return 2;
    FILE *fp = fopen(argv[1], "r");
    if (!fp) { perror(argv[1]); return 2; }
    int passed = 0, failed = 0, valid = 0, invalid = 0;
    static capture_t cap;
    while (fgets(line, sizeof line, fp)) {
        line[strcspn(line, "\n")] = 0;
        char *save = NULL;
        char *kind = strtok_r(line, " ", &save);
        char *name = strtok_r(NULL, " ", &save);
        if (!kind || !name) continue;
        bool ok = false;
        memset(&cap, 0, sizeof cap);
        if (strcmp(kind, "valid") == 0) {
            valid++;
            char *hex = strtok_r(NULL, " ", &save);
            char *expect = save;
            size_t n = host_unhex(hex, bytes, sizeof bytes);
            wb_msg_t msg;
            const char *why = "";
            wb_error_t err = WB_ERR_INTERNAL;
            if (n != (size_t)-1 && n > 4) err = wb_msg_decode(bytes + 4, n - 4, &msg, &why);
            if (err == WB_OK) {
                wb_msg_print(&msg, text, sizeof text);
                size_t m = wb_msg_encode_frame(&msg, out, sizeof out);
                ok = strcmp(text, expect) == 0 && m == n && memcmp(out, bytes, n) == 0;
                if (!ok) fprintf(stderr, "  got  %s\n  want %s\n  reencoded %zu/%zu bytes\n",
                                 text, expect, m, n);
            } else {
                fprintf(stderr, "  decode error %d (%s)\n", err, why);
            }
        } else if (strcmp(kind, "invalid") == 0) {
            invalid++;
            char *recv = strtok_r(NULL, " ", &save);
            char *state = strtok_r(NULL, " ", &save);
            char *maxf = strtok_r(NULL, " ", &save);
            char *hex = strtok_r(NULL, " ", &save);
            char *code = strtok_r(NULL, " ", &save);
            wb_session_t s;
            wb_framer_t f;
            size_t n = host_unhex(hex, bytes, sizeof bytes);
            if (n != (size_t)-1 && host_session_in(&s, recv, state, (uint32_t)atol(maxf))) {
                wb_framer_init(&f, frame_buf, sizeof frame_buf, s.max_frame);
                host_receive_data(&s, &f, bytes, n, on_event, &cap);
                ok = (int)cap.first_violation == atoi(code) && s.state == WB_ST_CLOSED &&
                     s.closed_code == cap.first_violation;
                if (!ok) fprintf(stderr, "  got violation %d (events %d), want %s\n",
                                 cap.first_violation, cap.events, code);
            }
        } else {
            continue;
        }
        printf("%s %s %s\n", ok ? "PASS" : "FAIL", kind, name);
        if (ok) passed++; else failed++;
    }
    fclose(fp);
    printf("vectors: %d valid, %d invalid; %d passed, %d failed\n", valid, invalid, passed,
           failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
