/* Host driver for the portable half of the Zephyr/WAMR runtime (wamr_portable.c and the
 * runtime/common/wb_wasm_scan.c it builds on), built and run by tests/test_zephyr_app.py with
 * gcc -std=c11 -Wall -Wextra -Werror and ASan/UBSan.
 *
 *   test_wamr_portable unit
 *       built-in checks of the exception table and the classification; prints
 *       "wamr portable: N checks, F failed" and exits non-zero if F > 0
 *   test_wamr_portable traps
 *       the exception table, one JSON object per line
 *   test_wamr_portable classify [key=value...]
 *       keys: exception, requested (outcome number), call_ok, started, host_fault,
 *       grow_refused, memory_exported, memory_bytes, fuel, memory_limit, timeout_ms, pool
 *       prints {"outcome": N, "detail": "...", "fuel_used": N}
 *   test_wamr_portable load-failure STAGE ERROR POOL
 *   test_wamr_portable log EXPORTED MEMORY_BYTES PTR LEN
 *   test_wamr_portable framing FILE
 *   test_wamr_portable patch MAX_PAGES IN OUT
 *       wb_wamr_patch_memory_max() of IN written to OUT; prints {"len": N, "why": "..."}
 *   test_wamr_portable prepare [--memory B] [--fuel N] FILE ENTRY [ARG...]
 *       ARG: an integer (i:N or N) or a float (f:X); prints the plan as JSON
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wamr_portable.h"

static void json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
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
    while (buf) {
        if (n == cap) {
            uint8_t *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        if (!got) break;
        n += got;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* ---- unit checks --------------------------------------------------------------------------- */

static int g_checks, g_failed;

#define CHECK(cond)                                                                 \
    do {                                                                            \
        g_checks++;                                                                 \
        if (!(cond)) {                                                              \
            g_failed++;                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                           \
    } while (0)

/* wb_wamr_patch_memory_max() over a hand-made module: header + sections; out gets the result. */
static const uint8_t k_header[8] = {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00};

static size_t patch(const uint8_t *sections, size_t n, uint32_t max_pages, uint8_t *out,
                    size_t out_cap, char *why)
{
    uint8_t in[64];
    memcpy(in, k_header, 8);
    memcpy(in + 8, sections, n);
    return wb_wamr_patch_memory_max(in, 8 + n, max_pages, out, out_cap, why, WB_MAX_REASON);
}

static bool patched_to(const uint8_t *out, size_t len, const uint8_t *sections, size_t n)
{
    return len == 8 + n && memcmp(out, k_header, 8) == 0 && memcmp(out + 8, sections, n) == 0;
}

static void unit_patch(void)
{
    uint8_t out[64 + WB_WAMR_PATCH_SLACK];
    char why[WB_MAX_REASON];
    size_t n;

    /* (memory 0) under a limit below one page: the maximum 0 is written (issue 13 item 7) */
    static const uint8_t zero[] = {0x05, 0x03, 0x01, 0x00, 0x00};
    static const uint8_t zero_max0[] = {0x05, 0x04, 0x01, 0x01, 0x00, 0x00};
    n = patch(zero, sizeof zero, 0, out, sizeof out, why);
    CHECK(patched_to(out, n, zero_max0, sizeof zero_max0));
    CHECK(why[0] == '\0');

    /* (memory 1 100) under 16 pages -> (memory 1 16); the sections after it are kept */
    static const uint8_t big_max[] = {0x05, 0x04, 0x01, 0x01, 0x01, 0x64, 0x00, 0x00};
    static const uint8_t max16[] = {0x05, 0x04, 0x01, 0x01, 0x01, 0x10, 0x00, 0x00};
    n = patch(big_max, sizeof big_max, 16, out, sizeof out, why);
    CHECK(patched_to(out, n, max16, sizeof max16));

    /* a maximum within the limit, and a module without memory, are copied as they are */
    static const uint8_t small_max[] = {0x05, 0x04, 0x01, 0x01, 0x01, 0x02};
    n = patch(small_max, sizeof small_max, 16, out, sizeof out, why);
    CHECK(patched_to(out, n, small_max, sizeof small_max));
    static const uint8_t no_memory[] = {0x01, 0x04, 0x01, 0x60, 0x00, 0x00};
    n = patch(no_memory, sizeof no_memory, 0, out, sizeof out, why);
    CHECK(patched_to(out, n, no_memory, sizeof no_memory));
    static const uint8_t no_memories[] = {0x05, 0x01, 0x00};
    n = patch(no_memories, sizeof no_memories, 0, out, sizeof out, why);
    CHECK(patched_to(out, n, no_memories, sizeof no_memories));

    /* a padded minimum (0x80 0x00) and a large limit: the LEB128s are re-encoded, size too */
    static const uint8_t padded[] = {0x05, 0x04, 0x01, 0x00, 0x80, 0x00};
    static const uint8_t padded_max[] = {0x05, 0x06, 0x01, 0x01, 0x00, 0xff, 0xff, 0x03};
    n = patch(padded, sizeof padded, 65535, out, sizeof out, why);
    CHECK(patched_to(out, n, padded_max, sizeof padded_max));

    /* shared / 64-bit memories are WAMR's loader's to judge */
    static const uint8_t shared[] = {0x05, 0x04, 0x01, 0x03, 0x01, 0x02};
    n = patch(shared, sizeof shared, 0, out, sizeof out, why);
    CHECK(patched_to(out, n, shared, sizeof shared));

    /* refusals, each with a reason */
    static const uint8_t min2[] = {0x05, 0x03, 0x01, 0x00, 0x02};
    CHECK(patch(min2, sizeof min2, 1, out, sizeof out, why) == 0);
    CHECK(strstr(why, "minimum exceeds the memory limit"));
    static const uint8_t past_end[] = {0x05, 0x09, 0x01, 0x00, 0x00};
    CHECK(patch(past_end, sizeof past_end, 0, out, sizeof out, why) == 0);
    CHECK(strstr(why, "past the end"));
    static const uint8_t long_leb[] = {0x05, 0x08, 0x01, 0x00, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
    CHECK(patch(long_leb, sizeof long_leb, 0, out, sizeof out, why) == 0);
    CHECK(strstr(why, "broken memory limits"));
    static const uint8_t cut_limits[] = {0x05, 0x02, 0x01, 0x01};
    CHECK(patch(cut_limits, sizeof cut_limits, 0, out, sizeof out, why) == 0);
    static const uint8_t wide_flags[] = {0x05, 0x04, 0x01, 0x80, 0x00, 0x00};
    CHECK(patch(wide_flags, sizeof wide_flags, 0, out, sizeof out, why) == 0);
    CHECK(patch(zero, sizeof zero, 0, out, 8 + sizeof zero, why) == 0); /* no slack */
    CHECK(strstr(why, "no room"));
    CHECK(wb_wamr_patch_memory_max(zero, sizeof zero, 0, out, sizeof out, why, sizeof why) == 0);
    CHECK(strstr(why, "no module header"));
    CHECK(wb_wamr_patch_memory_max(NULL, 0, 0, out, sizeof out, why, sizeof why) == 0);

    /* every prefix of a module: a clean verdict, never a read or write out of bounds (ASan) */
    static const uint8_t two[] = {0x01, 0x04, 0x01, 0x60, 0x00, 0x00,
                                  0x05, 0x04, 0x01, 0x01, 0x00, 0x7f, 0x07, 0x01, 0x00};
    for (size_t cut = 0; cut <= sizeof two; cut++) {
        n = patch(two, cut, 0, out, 8 + cut + WB_WAMR_PATCH_SLACK, why);
        CHECK(n == 0 ? why[0] != '\0' : n <= 8 + cut + WB_WAMR_PATCH_SLACK);
    }
}

static wb_wamr_end_t base_end(void)
{
    wb_wamr_end_t e;
    memset(&e, 0, sizeof e);
    e.started = true;
    e.requested = WB_OUTCOME_RETURNED;
    e.memory_limit = 1u << 20;
    e.timeout_ms = 1000;
    e.pool_bytes = 131072;
    return e;
}

static wb_outcome_t classify(const wb_wamr_end_t *e, char *detail, uint64_t *fuel)
{
    return wb_wamr_classify(e, detail, WB_MAX_REASON, fuel);
}

static void unit(void)
{
    char d[WB_MAX_REASON];
    uint64_t fuel = 7;

    /* the prefix WAMR puts in front of every exception */
    CHECK(strcmp(wb_wamr_strip_exception("Exception: unreachable"), "unreachable") == 0);
    CHECK(strcmp(wb_wamr_strip_exception("unreachable"), "unreachable") == 0);
    CHECK(strcmp(wb_wamr_strip_exception(NULL), "") == 0);
    CHECK(wb_wamr_match_exception(NULL) == NULL);
    CHECK(wb_wamr_match_exception("Exception: something new") == NULL);

    /* every message of WAMR's exception_msgs[] that a run of an MVP module can raise */
    static const struct {
        const char *msg;
        const char *code;
        wb_outcome_t outcome;
    } known[] = {
        {"unreachable", "UNREACHABLE", WB_OUTCOME_TRAPPED},
        {"allocate memory failed", NULL, WB_OUTCOME_OUT_OF_MEMORY},
        {"allocate linear memory failed", NULL, WB_OUTCOME_OUT_OF_MEMORY},
        {"out of bounds memory access", "MEMORY_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
        {"integer overflow", "INTEGER_OVERFLOW", WB_OUTCOME_TRAPPED},
        {"integer divide by zero", "INTEGER_DIVISION_BY_ZERO", WB_OUTCOME_TRAPPED},
        {"invalid conversion to integer", "BAD_CONVERSION_TO_INTEGER", WB_OUTCOME_TRAPPED},
        {"indirect call type mismatch", "BAD_SIGNATURE", WB_OUTCOME_TRAPPED},
        {"invalid function index", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
        {"undefined element", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
        {"uninitialized element", "INDIRECT_CALL_TO_NULL", WB_OUTCOME_TRAPPED},
        {"native stack overflow", "STACK_OVERFLOW", WB_OUTCOME_TRAPPED},
        {"wasm operand stack overflow", "STACK_OVERFLOW", WB_OUTCOME_TRAPPED},
        {"wasm auxiliary stack overflow", "STACK_OVERFLOW", WB_OUTCOME_TRAPPED},
        {"unaligned atomic", "HEAP_MISALIGNED", WB_OUTCOME_TRAPPED},
        {"out of bounds table access", "TABLE_OUT_OF_BOUNDS", WB_OUTCOME_TRAPPED},
        {"instruction limit exceeded", NULL, WB_OUTCOME_OUT_OF_FUEL},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        char full[128];
        snprintf(full, sizeof full, "Exception: %s", known[i].msg);
        const wb_wamr_trap_t *t = wb_wamr_match_exception(full);
        CHECK(t != NULL);
        if (!t) continue;
        CHECK(t->outcome == known[i].outcome);
        CHECK((t->code == NULL) == (known[i].code == NULL));
        if (t->code && known[i].code) CHECK(strcmp(t->code, known[i].code) == 0);
    }

    /* RETURNED */
    wb_wamr_end_t e = base_end();
    e.call_ok = true;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_RETURNED && d[0] == '\0' && fuel == 7);

    /* the guard's requests win over the exception they cause */
    e = base_end();
    e.exception = "Exception: terminated by user";
    e.requested = WB_OUTCOME_TIMED_OUT;
    e.timeout_ms = 250;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TIMED_OUT);
    CHECK(strcmp(d, "wall-clock budget of 250 ms exhausted") == 0);
    e.requested = WB_OUTCOME_STOPPED;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_STOPPED && strcmp(d, "stopped on request") == 0);
    e.started = false; /* stopped before the call */
    e.exception = NULL;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_STOPPED);

    /* "terminated by user" nobody asked for is a trap, not a stop */
    e = base_end();
    e.exception = "Exception: terminated by user";
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED && strcmp(d, "terminated by user") == 0);

    /* OUT_OF_FUEL uses the whole budget */
    e = base_end();
    e.exception = "Exception: instruction limit exceeded";
    e.fuel = 100000;
    fuel = 0;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_FUEL && fuel == 100000);
    CHECK(strcmp(d, "fuel budget of 100000 exhausted") == 0);
    e.fuel = UINT64_C(5000000000);
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_FUEL && fuel == UINT64_C(5000000000));
    CHECK(strstr(d, "5000000000") && strstr(d, "2147483647"));

    /* traps carry the wasmtime code */
    e = base_end();
    e.exception = "Exception: integer divide by zero";
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED);
    CHECK(strcmp(d, "INTEGER_DIVISION_BY_ZERO: integer divide by zero") == 0);

    /* out of bounds with the exported memory within a page of the limit: OUT_OF_MEMORY */
    e = base_end();
    e.exception = "Exception: out of bounds memory access";
    e.memory_exported = true;
    e.memory_limit = 131072;
    e.memory_bytes = 131072;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_MEMORY);
    CHECK(strstr(d, "reached the limit of 131072") && strstr(d, "MEMORY_OUT_OF_BOUNDS"));
    e.memory_limit = 150000; /* limit not page aligned: still within one page */
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_MEMORY);
    e.memory_bytes = 65536; /* far from the limit: a plain trap */
    e.memory_limit = 1u << 20;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED);
    CHECK(strcmp(d, "MEMORY_OUT_OF_BOUNDS: out of bounds memory access") == 0);
    e.memory_exported = false; /* the rule needs the exported memory */
    e.memory_bytes = e.memory_limit;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED);

    /* a grow refused by the pool, then a trap */
    e = base_end();
    e.exception = "Exception: unreachable";
    e.grow_refused = true;
    e.memory_bytes = 65536;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_MEMORY);
    CHECK(strstr(d, "memory.grow beyond 65536 bytes failed") && strstr(d, "UNREACHABLE"));

    /* the pool itself ran out during the call */
    e = base_end();
    e.exception = "Exception: allocate memory failed";
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_OUT_OF_MEMORY);
    CHECK(strstr(d, "device heap of 131072 bytes exhausted"));

    /* env.log wrote its own detail */
    e = base_end();
    e.exception = "Exception: env.log: out of range";
    e.host_fault = true;
    strcpy(d, "env.log: range [1, 2) is outside the memory of 0 bytes");
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED);
    CHECK(strcmp(d, "env.log: range [1, 2) is outside the memory of 0 bytes") == 0);

    /* unknown messages are traps with the message as it is */
    e = base_end();
    e.exception = "Exception: failed to call unlinked import function (env, x)";
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED);
    CHECK(strcmp(d, "failed to call unlinked import function (env, x)") == 0);
    e.exception = NULL;
    CHECK(classify(&e, d, &fuel) == WB_OUTCOME_TRAPPED && d[0] != '\0');

    /* load and instantiation failures */
    CHECK(wb_wamr_load_failure("load", "WASM module load failed: allocate memory failed", 4096,
                               d, sizeof d) == WB_OUTCOME_OUT_OF_MEMORY);
    CHECK(strstr(d, "device heap of 4096 bytes exhausted loading the module"));
    /* WAMR-2.4.3 memory_instantiate(): the linear memory did not fit in the pool (issue 13:
     * big_memory under a 2 MiB limit was LOAD_FAILED) */
    CHECK(wb_wamr_load_failure("instantiate",
                               "WASM module instantiate failed: allocate linear memory failed",
                               4096, d, sizeof d) == WB_OUTCOME_OUT_OF_MEMORY);
    CHECK(strstr(d, "device heap of 4096 bytes exhausted instantiating"));
    CHECK(wb_wamr_load_failure("instantiate", "allocate memory failed", 4096, d, sizeof d) ==
          WB_OUTCOME_OUT_OF_MEMORY);
    /* every OUT_OF_MEMORY word of the table is a load failure's too, and nothing else is */
    for (size_t i = 0; i < wb_wamr_n_traps; i++) {
        wb_outcome_t o = wb_wamr_load_failure("instantiate", wb_wamr_traps[i].needle, 4096, d,
                                              sizeof d);
        CHECK((o == WB_OUTCOME_OUT_OF_MEMORY) ==
              (wb_wamr_traps[i].outcome == WB_OUTCOME_OUT_OF_MEMORY));
    }
    CHECK(wb_wamr_load_failure("load", "magic header not detected", 4096, d, sizeof d) ==
          WB_OUTCOME_LOAD_FAILED);
    CHECK(strcmp(d, "invalid WebAssembly module: magic header not detected") == 0);
    CHECK(wb_wamr_load_failure("instantiate", "data segment does not fit", 4096, d, sizeof d) ==
          WB_OUTCOME_LOAD_FAILED);
    CHECK(strcmp(d, "instantiation failed: data segment does not fit") == 0);
    CHECK(wb_wamr_load_failure("instantiate", NULL, 4096, d, sizeof d) ==
          WB_OUTCOME_LOAD_FAILED);

    /* env.log bounds */
    CHECK(wb_wasm_log_allowed(true, 65536, 0, 65536, d, sizeof d));
    CHECK(!wb_wasm_log_allowed(true, 65536, 65535, 2, d, sizeof d));
    CHECK(strcmp(d, "env.log: range [65535, 65537) is outside the memory of 65536 bytes") == 0);
    CHECK(!wb_wasm_log_allowed(true, 65536, UINT32_MAX, UINT32_MAX, d, sizeof d));
    CHECK(strstr(d, "8589934590"));
    CHECK(!wb_wasm_log_allowed(false, 65536, 0, 1, d, sizeof d));
    CHECK(strstr(d, "exports no memory named 'memory'"));

    unit_patch();

    /* number texts */
    char num[22];
    CHECK(strcmp(wb_u64_text(0, num), "0") == 0);
    CHECK(strcmp(wb_u64_text(UINT64_MAX, num), "18446744073709551615") == 0);
    CHECK(strcmp(wb_i64_text(INT64_MIN, num), "-9223372036854775808") == 0);
    CHECK(strcmp(wb_i64_text(-42, num), "-42") == 0);

    /* a detail never overflows its buffer */
    char tiny[8];
    e = base_end();
    e.exception = "Exception: out of bounds memory access";
    CHECK(wb_wamr_classify(&e, tiny, sizeof tiny, &fuel) == WB_OUTCOME_TRAPPED);
    CHECK(strlen(tiny) == sizeof tiny - 1);
}

/* ---- command line -------------------------------------------------------------------------- */

static const char *value_of(int argc, char **argv, const char *key)
{
    size_t n = strlen(key);
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
    }
    return NULL;
}

static uint64_t num_of(int argc, char **argv, const char *key, uint64_t dflt)
{
    const char *v = value_of(argc, argv, key);
    return v ? strtoull(v, NULL, 0) : dflt;
}

static int cmd_classify(int argc, char **argv)
{
    wb_wamr_end_t e = base_end();
    e.exception = value_of(argc, argv, "exception");
    e.requested = (wb_outcome_t)num_of(argc, argv, "requested", WB_OUTCOME_RETURNED);
    e.call_ok = num_of(argc, argv, "call_ok", 0) != 0;
    e.started = num_of(argc, argv, "started", 1) != 0;
    e.host_fault = num_of(argc, argv, "host_fault", 0) != 0;
    e.grow_refused = num_of(argc, argv, "grow_refused", 0) != 0;
    e.memory_exported = num_of(argc, argv, "memory_exported", 0) != 0;
    e.memory_bytes = num_of(argc, argv, "memory_bytes", 0);
    e.fuel = num_of(argc, argv, "fuel", 0);
    e.memory_limit = (uint32_t)num_of(argc, argv, "memory_limit", 1u << 20);
    e.timeout_ms = (uint32_t)num_of(argc, argv, "timeout_ms", 1000);
    e.pool_bytes = (size_t)num_of(argc, argv, "pool", 131072);
    char detail[WB_MAX_REASON] = "";
    uint64_t fuel_used = 0;
    wb_outcome_t o = wb_wamr_classify(&e, detail, sizeof detail, &fuel_used);
    char num[22];
    printf("{\"outcome\": %d, \"detail\": ", (int)o);
    json_string(detail);
    printf(", \"fuel_used\": %s}\n", wb_u64_text(fuel_used, num));
    return 0;
}

static int cmd_prepare(int argc, char **argv)
{
    wb_limits_t limits = {1u << 20, 50000000u, 1000u};
    int i = 0;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc) return 2;
        if (strcmp(argv[i], "--memory") == 0) limits.memory_bytes = (uint32_t)strtoul(argv[i + 1], NULL, 0);
        else if (strcmp(argv[i], "--fuel") == 0) limits.fuel = strtoull(argv[i + 1], NULL, 0);
        else return 2;
    }
    if (argc - i < 2) return 2;
    size_t len = 0;
    uint8_t *wasm = read_file(argv[i], &len);
    if (!wasm) {
        perror(argv[i]);
        return 2;
    }
    const char *entry = argv[i + 1];
    wb_value_t args[WB_MAX_ARGS + 4];
    size_t n_args = 0;
    for (int k = i + 2; k < argc && n_args < sizeof args / sizeof args[0]; k++, n_args++) {
        const char *a = argv[k];
        if (strncmp(a, "f:", 2) == 0) {
            args[n_args].is_float = true;
            args[n_args].v.f = strtod(a + 2, NULL);
        } else {
            if (strncmp(a, "i:", 2) == 0) a += 2;
            args[n_args].is_float = false;
            args[n_args].v.i = strtoll(a, NULL, 0);
        }
    }
    wb_wamr_plan_t plan;
    char detail[WB_MAX_REASON];
    wb_outcome_t o = wb_wamr_prepare(wasm, len, entry, args, n_args, &limits, &plan, detail,
                                     sizeof detail);
    free(wasm);
    const wb_wasm_entry_t *e = &plan.entry;
    printf("{\"outcome\": %d, \"detail\": ", (int)o);
    json_string(detail);
    printf(", \"n_args\": %lu, \"n_results\": %lu, \"has_memory\": %s, \"memory_min_pages\": %lu, "
           "\"memory_exported\": %s, \"imports_env_log\": %s, \"max_memory_pages\": %lu, "
           "\"instruction_limit\": %ld, \"arg_types\": [",
           (unsigned long)e->n_args, (unsigned long)e->n_results,
           plan.has_memory ? "true" : "false", (unsigned long)plan.memory_min_pages,
           e->memory_exported ? "true" : "false", e->imports_env_log ? "true" : "false",
           (unsigned long)plan.max_memory_pages, (long)plan.instruction_limit);
    for (size_t k = 0; k < e->n_args; k++) printf("%s%d", k ? ", " : "", (int)e->args[k].type);
    printf("], \"result_types\": [");
    for (size_t k = 0; k < e->n_results; k++) printf("%s%d", k ? ", " : "", (int)e->results[k]);
    printf("], \"arg_i64\": [");
    for (size_t k = 0; k < e->n_args; k++) {
        char num[22];
        int64_t v = e->args[k].type == WB_VAL_I32   ? e->args[k].of.i32
                    : e->args[k].type == WB_VAL_I64 ? e->args[k].of.i64
                                                    : 0;
        printf("%s%s", k ? ", " : "", wb_i64_text(v, num));
    }
    printf("]}\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s unit|traps|classify|load-failure|log|framing|patch|prepare ...\n",
                argv[0]);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "unit") == 0) {
        unit();
        printf("wamr portable: %d checks, %d failed\n", g_checks, g_failed);
        return g_failed ? 1 : 0;
    }
    if (strcmp(cmd, "traps") == 0) {
        for (size_t i = 0; i < wb_wamr_n_traps; i++) {
            printf("{\"needle\": ");
            json_string(wb_wamr_traps[i].needle);
            printf(", \"code\": ");
            if (wb_wamr_traps[i].code) json_string(wb_wamr_traps[i].code);
            else printf("null");
            printf(", \"outcome\": %d}\n", (int)wb_wamr_traps[i].outcome);
        }
        return 0;
    }
    if (strcmp(cmd, "classify") == 0) return cmd_classify(argc - 2, argv + 2);
    if (strcmp(cmd, "load-failure") == 0 && argc == 5) {
        char detail[WB_MAX_REASON];
        wb_outcome_t o = wb_wamr_load_failure(argv[2], argv[3], (size_t)strtoul(argv[4], NULL, 0),
                                              detail, sizeof detail);
        printf("{\"outcome\": %d, \"detail\": ", (int)o);
        json_string(detail);
        printf("}\n");
        return 0;
    }
    if (strcmp(cmd, "log") == 0 && argc == 6) {
        char detail[WB_MAX_REASON] = "";
        bool ok = wb_wasm_log_allowed(strcmp(argv[2], "1") == 0, strtoull(argv[3], NULL, 0),
                                      (uint32_t)strtoul(argv[4], NULL, 0),
                                      (uint32_t)strtoul(argv[5], NULL, 0), detail, sizeof detail);
        printf("{\"allowed\": %s, \"detail\": ", ok ? "true" : "false");
        json_string(detail);
        printf("}\n");
        return 0;
    }
    if (strcmp(cmd, "framing") == 0 && argc == 3) {
        size_t len = 0;
        uint8_t *wasm = read_file(argv[2], &len);
        if (!wasm) {
            perror(argv[2]);
            return 2;
        }
        char why[WB_MAX_REASON] = "";
        bool ok = wb_wasm_check_framing(wasm, len, why, sizeof why);
        free(wasm);
        printf("{\"ok\": %s, \"why\": ", ok ? "true" : "false");
        json_string(why);
        printf("}\n");
        return 0;
    }
    if (strcmp(cmd, "patch") == 0 && argc == 5) {
        size_t len = 0;
        uint8_t *wasm = read_file(argv[3], &len);
        if (!wasm) {
            perror(argv[3]);
            return 2;
        }
        size_t cap = len + WB_WAMR_PATCH_SLACK;
        uint8_t *out = malloc(cap);
        char why[WB_MAX_REASON] = "";
        size_t n = out ? wb_wamr_patch_memory_max(wasm, len, (uint32_t)strtoul(argv[2], NULL, 0),
                                                  out, cap, why, sizeof why)
                       : 0;
        FILE *f = n ? fopen(argv[4], "wb") : NULL;
        if (f) {
            fwrite(out, 1, n, f);
            fclose(f);
        }
        free(out);
        free(wasm);
        printf("{\"len\": %lu, \"why\": ", (unsigned long)n);
        json_string(why);
        printf("}\n");
        return 0;
    }
    if (strcmp(cmd, "prepare") == 0) return cmd_prepare(argc - 2, argv + 2);
    fprintf(stderr, "unknown command or arguments: %s\n", cmd);
    return 2;
}
