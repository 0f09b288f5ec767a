/* Host runner for the wasm3 runtime: runs one module and prints the wb_run_result_t as one JSON
 * line. Used by the tests' wasm3 adapter (tests/runtime_adapters.py), which passes the module
 * as FILE /dev/stdin.
 *
 *   wb_run_host [options] FILE.wasm ENTRY [ARG...]
 *     ARG: an integer (i:N or N) or a float (f:X, X in any strtod syntax, e.g. 0x1.8p+1)
 *   options:
 *     --memory BYTES      limits.memory_bytes (default 1048576)
 *     --fuel N            limits.fuel (default 50000000; 0 = no budget)
 *     --timeout-ms N      limits.timeout_ms (default 1000)
 *     --stop-after-hooks N  set the stop flag from the N-th wb_runtime_guard_hook call
 *     --stop-before       set the stop flag before the run
 *     --repeat N          run N times, print the last result plus min_duration_us
 *     --validate          only wb_runtime_validate; prints {"validate": code, "detail": ...}
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wb/platform.h"
#include "wb/runtime.h"
#include "wb_wasm3_arena.h"

static volatile bool g_stop;
static long g_stop_after_hooks = -1;
static long g_hooks;

uint64_t wb_platform_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t wb_runtime_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void wb_runtime_guard_hook(void)
{
    g_hooks++;
    if (g_stop_after_hooks >= 0 && g_hooks >= g_stop_after_hooks) g_stop = true;
}

static const char *outcome_name(wb_outcome_t o)
{
    static const char *names[] = {"RETURNED", "TRAPPED", "OUT_OF_FUEL", "OUT_OF_MEMORY",
                                  "TIMED_OUT", "STOPPED", "LOAD_FAILED"};
    return (unsigned)o < sizeof names / sizeof names[0] ? names[o] : "?";
}

static void json_string(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20 || c >= 0x7f) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    for (;;) {
        if (n == cap) buf = realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

static int parse_value(const char *s, wb_value_t *v)
{
    char *end;
    errno = 0;
    if (strncmp(s, "f:", 2) == 0) {
        v->is_float = true;
        v->v.f = strtod(s + 2, &end);
    } else {
        if (strncmp(s, "i:", 2) == 0) s += 2;
        v->is_float = false;
        v->v.i = strtoll(s, &end, 0);
    }
    return (*end || errno) ? -1 : 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: wb_run_host [--memory B] [--fuel N] [--timeout-ms N] "
                    "[--stop-after-hooks N] [--stop-before] [--repeat N] [--validate] "
                    "FILE ENTRY [ARG...]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    wb_limits_t limits = {.memory_bytes = 1u << 20, .fuel = 50000000u, .timeout_ms = 1000u};
    long repeat = 1;
    bool validate = false, stop_before = false;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--validate")) { validate = true; continue; }
        if (!strcmp(opt, "--stop-before")) { stop_before = true; continue; }
        if (i + 1 >= argc) usage();
        const char *val = argv[++i];
        if (!strcmp(opt, "--memory")) limits.memory_bytes = (uint32_t)strtoul(val, NULL, 0);
        else if (!strcmp(opt, "--fuel")) limits.fuel = strtoull(val, NULL, 0);
        else if (!strcmp(opt, "--timeout-ms")) limits.timeout_ms = (uint32_t)strtoul(val, NULL, 0);
        else if (!strcmp(opt, "--stop-after-hooks")) g_stop_after_hooks = strtol(val, NULL, 0);
        else if (!strcmp(opt, "--repeat")) repeat = strtol(val, NULL, 0);
        else usage();
    }
    if (i >= argc || (!validate && i + 1 >= argc)) usage();
    size_t len = 0;
    uint8_t *wasm = read_file(argv[i], &len);
    if (!wasm) {
        perror(argv[i]);
        return 2;
    }
    if (validate) {
        char detail[WB_MAX_REASON];
        wb_error_t err = wb_runtime_validate(wasm, len, detail, sizeof detail);
        printf("{\"validate\": %d, \"detail\": ", (int)err);
        json_string(detail, strlen(detail));
        printf("}\n");
        free(wasm);
        return 0;
    }
    const char *entry = argv[i + 1];
    wb_value_t args[WB_MAX_ARGS + 2];
    size_t n_args = 0;
    for (int a = i + 2; a < argc; a++) {
        if (n_args >= sizeof args / sizeof args[0] || parse_value(argv[a], &args[n_args]) < 0) {
            fprintf(stderr, "bad argument %s\n", argv[a]);
            return 2;
        }
        n_args++;
    }
    static wb_run_result_t res;
    uint64_t min_us = UINT64_MAX;
    for (long r = 0; r < (repeat > 0 ? repeat : 1); r++) {
        g_stop = stop_before;
        g_hooks = 0;
        wb_runtime_run(wasm, len, entry, args, n_args, &limits, &g_stop, &res);
        if (res.duration_us < min_us) min_us = res.duration_us;
    }
    wb_wasm3_arena_stats_t st;
    wb_wasm3_arena_stats(&st);
    printf("{\"outcome\": \"%s\", \"outcome_code\": %d, \"values\": [", outcome_name(res.outcome),
           (int)res.outcome);
    for (size_t v = 0; v < res.n_values; v++) {
        if (v) printf(", ");
        if (res.values[v].is_float) printf("{\"f\": \"%a\"}", res.values[v].v.f);
        else printf("{\"i\": %" PRId64 "}", res.values[v].v.i);
    }
    printf("], \"log_hex\": \"");
    for (size_t b = 0; b < res.log_len; b++) printf("%02x", res.log[b]);
    printf("\", \"fuel_used\": %" PRIu64 ", \"duration_us\": %" PRIu64
           ", \"min_duration_us\": %" PRIu64 ", \"hooks\": %ld, \"arena_capacity\": %zu"
           ", \"detail\": ",
           res.fuel_used, res.duration_us, min_us, g_hooks, st.capacity);
    json_string(res.detail, strnlen(res.detail, sizeof res.detail));
    printf("}\n");
    free(wasm);
    return 0;
}
