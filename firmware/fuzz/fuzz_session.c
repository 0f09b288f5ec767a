/* libFuzzer harness: the device core (core/src/device.c over session.c and codec.c) reading
 * an arbitrary byte stream from the gateway through a fake transport, with the host port's
 * stub runtime (ports/host/runtime_stub.c: a run takes N ms of the fake clock and serves the
 * link at each ms, as the real runtimes' guards do) and platform_fuzz.c.
 *
 * Input: a 5-byte header, then the bytes the gateway sends.
 *   [0] the most bytes one transport read returns (0: as many as the framer asks)
 *   [1] milliseconds the clock advances between two polls
 *   [2] the duration of a run in ms
 *   [3] bits 0-2 the run's outcome (mod 7); bit 3 the transport reports last_rx_ms; bit 4 a
 *       device id is stored at start; bit 5 the first connect fails; bit 6 every 8th write
 *       fails (the link breaks); bit 7 the end of the input is the end of the link (read < 0)
 *   [4] bits 0-2 max_apps - 1; bits 3-4 max_frame_size 1024 + 512 * n; bits 5-6 window - 1;
 *       bit 7 the device starts silent (console "silent 1")
 * The stream carries on across connections: after a violation, EnrollReject or a dead link the
 * device reconnects (the clock jumps to its next connect time) and reads the next bytes, for at
 * most MAX_CONNECTS connections.
 * Seeds (seeds.py): the gateway-to-device vectors of vectors.json after a Welcome, the
 * device's invalid vectors, and scripted sessions (enrollment, a whole deployment of the
 * vectors' module, runs, stops, resumes).
 *
 * FUZZ_TRACE=1 in the environment prints what the device logs and sends (for reading a
 * regression input: build/fuzz_session FILE).
 *
 * Oracles, besides ASan and UBSan: each write is one whole frame that decodes, travels from
 * the device (or is an Error) and fits the gateway's limit; after each poll the module store
 * is consistent (bytes held within the announced size within the slot; an installed app's
 * slot complete; a transfer's slot partial; queued runs name installed apps), and a deployment
 * refused with "module store full" found every slot in use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/src/device_impl.h"
#include "doubles.h"

#define REQUIRE(cond, ...)                                  \
    do {                                                    \
        if (!(cond)) {                                      \
            fprintf(stderr, "fuzz_session: " __VA_ARGS__);  \
            fputc('\n', stderr);                            \
            abort();                                        \
        }                                                   \
    } while (0)

#define HEADER 5
#define SLOT_BYTES 1024 /* module store per slot */
/* Connections per input: the rest of an input that made the device reconnect this often is
 * not read (each connection of a stream of junk costs a Hello and an Error, and little new). */
#define MAX_CONNECTS 8

void fuzz_platform_reset(bool has_id); /* platform_fuzz.c */
extern bool fuzz_trace;                /* platform_fuzz.c: FUZZ_TRACE set */

typedef struct {
    wb_transport_t t;
    const uint8_t *in;
    size_t len, pos;
    size_t max_read;
    wb_link_state_t state;
    unsigned connects, writes;
    bool refuse_first, fail_writes, eof, eof_sent;
    uint64_t last_rx;
} fuzz_transport_t;

static wb_device_t *dev;

static int t_connect(wb_transport_t *t)
{
    fuzz_transport_t *f = t->ctx;
    if (++f->connects == 1 && f->refuse_first) return -1;
    f->state = WB_LINK_CONNECTING;
    return 0;
}

static wb_link_state_t t_poll(wb_transport_t *t)
{
    fuzz_transport_t *f = t->ctx;
    if (f->state == WB_LINK_CONNECTING) f->state = WB_LINK_UP;
    return f->state;
}

static int t_read(wb_transport_t *t, uint8_t *buf, size_t cap)
{
    fuzz_transport_t *f = t->ctx;
    REQUIRE(cap > 0, "read of 0 bytes");
    if (f->state != WB_LINK_UP) return -1;
    size_t n = f->len - f->pos;
    if (n == 0) {
        if (f->eof && !f->eof_sent) {
            f->eof_sent = true;
            f->state = WB_LINK_DOWN;
            return -1;
        }
        return 0;
    }
    if (n > cap) n = cap;
    if (f->max_read && n > f->max_read) n = f->max_read;
    memcpy(buf, f->in + f->pos, n);
    f->pos += n;
    f->last_rx = wb_platform_now_ms();
    return (int)n;
}

/* "module store full" is the truth: every slot holds the running module, the transfer's or
 * an app's (anything else, e.g. a module whose transfer was replaced, can be evicted). */
static void check_store_full(const wb_device_t *d)
{
    for (int i = 0; i < d->n_slots; i++) {
        bool used = (d->run.active && d->run.slot == i) ||
                    ((d->xfer.active || d->xfer.validate_pending) && d->xfer.slot == i);
        for (int a = 0; a < (int)d->cfg.max_apps && !used; a++) {
            used = d->apps[a].used && d->apps[a].slot == i;
        }
        REQUIRE(used, "\"module store full\" while slot %d (state %u) is in use by nothing", i,
                (unsigned)d->slots[i].state);
    }
}

static int t_write(wb_transport_t *t, const uint8_t *buf, size_t len)
{
    fuzz_transport_t *f = t->ctx;
    REQUIRE(f->state == WB_LINK_UP, "write on a link that is not up");
    REQUIRE(len > WB_FRAME_HEADER, "write of %zu bytes: not a frame", len);
    uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) |
                 buf[3];
    REQUIRE(n == len - WB_FRAME_HEADER, "write of %zu bytes with a frame header of %u", len,
            (unsigned)n);
    REQUIRE(n <= dev->sess.peer_max_frame, "frame of %u bytes over the gateway's limit %u",
            (unsigned)n, (unsigned)dev->sess.peer_max_frame);
    wb_msg_t m;
    const char *why = "";
    wb_error_t err = wb_msg_decode(buf + WB_FRAME_HEADER, n, &m, &why);
    REQUIRE(err == WB_OK, "the device sent a frame that does not decode (%d: %s)", (int)err, why);
    REQUIRE(wb_msg_direction(m.tag) & WB_DIR_D2G, "the device sent %s", wb_msg_name(m.tag));
    if (fuzz_trace) fprintf(stderr, "  [%llu ms] -> %s\n", (unsigned long long)host_now_ms,
                            wb_msg_name(m.tag));
    static const char full[] = "module store full";
    if (m.tag == WB_TAG_DEPLOY_ACK && m.u.deploy_ack.code == WB_ERR_NO_SPACE &&
        m.u.deploy_ack.reason.len == sizeof full - 1 &&
        memcmp(m.u.deploy_ack.reason.ptr, full, sizeof full - 1) == 0) {
        check_store_full(dev);
    }
    if (++f->writes % 8 == 0 && f->fail_writes) {
        f->state = WB_LINK_DOWN;
        return -1;
    }
    return 0;
}

static void t_close(wb_transport_t *t)
{
    fuzz_transport_t *f = t->ctx;
    f->state = WB_LINK_DOWN;
}

static uint64_t t_last_rx(wb_transport_t *t)
{
    fuzz_transport_t *f = t->ctx;
    return f->last_rx;
}

static void check_invariants(const wb_device_t *d)
{
    REQUIRE(d->n_slots == d->cfg.max_apps + 1, "%u slots for %u apps", (unsigned)d->n_slots,
            (unsigned)d->cfg.max_apps);
    for (int i = 0; i < d->n_slots; i++) {
        const wb_slot_t *s = &d->slots[i];
        REQUIRE(s->state <= WB_SLOT_COMPLETE, "slot %d in state %u", i, (unsigned)s->state);
        if (s->state == WB_SLOT_FREE) continue;
        REQUIRE(s->held <= s->size && s->size <= d->slot_size,
                "slot %d holds %u of %u bytes, slots have %u", i, (unsigned)s->held,
                (unsigned)s->size, (unsigned)d->slot_size);
        REQUIRE(s->state != WB_SLOT_COMPLETE || s->held == s->size,
                "complete slot %d holds %u of %u bytes", i, (unsigned)s->held, (unsigned)s->size);
    }
    for (int i = 0; i < (int)d->cfg.max_apps; i++) {
        const wb_app_t *a = &d->apps[i];
        if (!a->used) continue;
        REQUIRE(a->slot < d->n_slots && d->slots[a->slot].state == WB_SLOT_COMPLETE,
                "app %d (%s) refers to slot %u which is not complete", i, a->id.id,
                (unsigned)a->slot);
        REQUIRE(a->id.id_len >= 1 && a->id.id_len <= WB_MAX_APP_ID, "app id of %u bytes",
                (unsigned)a->id.id_len);
    }
    REQUIRE(d->n_runq <= WB_RUN_QUEUE, "%u queued runs", (unsigned)d->n_runq);
    for (int i = 0; i < d->n_runq; i++) {
        uint8_t app = d->runq[i].app;
        REQUIRE(app < d->cfg.max_apps && d->apps[app].used, "queued run of a removed app %u",
                (unsigned)app);
    }
    if (d->xfer.active) {
        REQUIRE(d->xfer.slot < d->n_slots && d->slots[d->xfer.slot].state == WB_SLOT_PARTIAL,
                "transfer into slot %u which is not partial", (unsigned)d->xfer.slot);
    }
    REQUIRE(!d->run.active, "a run is still active between two polls");
}

/* A run's detail longer than the protocol allows, multi-byte UTF-8 cut by the runtime's
 * buffer; a log longer than a frame. */
static char long_detail[600], long_log[WB_MAX_LOG + 1];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < HEADER) return 0;
    if (long_log[0] == 0) {
        memset(long_log, 'l', WB_MAX_LOG);
        for (size_t i = 0; i + 2 < sizeof long_detail; i += 2) memcpy(long_detail + i, "\xc3\xa9", 2);
    }
    uint8_t flags = data[3], shape = data[4];

    fuzz_platform_reset(flags & 0x10);
    stub_runtime_reset();
    stub_rt.outcome = (wb_outcome_t)((flags & 7) % 7);
    stub_rt.run_ms = data[2];
    if (stub_rt.outcome != WB_OUTCOME_RETURNED) {
        stub_rt.detail = long_detail;
        stub_rt.log = long_log;
    }

    fuzz_transport_t ft = {
        .t = {t_connect, t_poll, t_read, t_write, t_close, NULL, NULL},
        .in = data + HEADER,
        .len = size - HEADER,
        .max_read = data[0],
        .state = WB_LINK_DOWN,
        .refuse_first = flags & 0x20,
        .fail_writes = flags & 0x40,
        .eof = flags & 0x80,
    };
    ft.t.ctx = &ft;
    if (flags & 0x08) ft.t.last_rx_ms = t_last_rx;

    uint16_t max_apps = (uint16_t)((shape & 7) + 1);
    uint32_t max_frame = WB_MIN_FRAME + 512u * ((shape >> 3) & 3);
    /* Exactly sized heap buffers: ASan sees a write beyond any of them. */
    size_t store_size = (size_t)(max_apps + 1) * SLOT_BYTES;
    uint8_t *store = malloc(store_size);
    uint8_t *fbuf = malloc(max_frame + WB_FRAME_HEADER);
    void *state = malloc(wb_device_state_size());
    REQUIRE(store && fbuf && state, "out of memory");
    wb_device_config_t cfg = {
        .architecture = "cortex-m3",
        .runtime = "wasm3",
        .firmware = "fuzz",
        .memory_total = 65536,
        .max_module_size = 4096,
        .max_frame_size = max_frame,
        .max_apps = max_apps,
        .window = (uint16_t)(((shape >> 5) & 3) + 1),
        .module_store = store,
        .module_store_size = store_size,
        .frame_buffer = fbuf,
        .frame_buffer_size = max_frame + WB_FRAME_HEADER,
    };
    dev = wb_device_init(state, &cfg, &ft.t);
    REQUIRE(dev != NULL, "wb_device_init refused the configuration");
    if (shape & 0x80) REQUIRE(wb_device_console_command(dev, "silent 1"), "console command");

    /* Poll until the input is consumed, then a few more times (heartbeats, the dead-link
     * rule, queued runs). Every poll reads or (re)connects, so the budget is never reached
     * by a device that works. */
    uint32_t step = data[1];
    size_t budget = 64 + 4 * size;
    int after = 0;
    size_t polls = 0;
    for (; polls < budget && after < 8; polls++) {
        wb_device_poll(dev);
        check_invariants(dev);
        if (ft.pos == ft.len) after++;
        if (ft.connects >= MAX_CONNECTS && ft.state == WB_LINK_DOWN) break;
        host_now_ms += step;
        if (dev->link == WB_L_DOWN && dev->next_connect_ms > host_now_ms) {
            host_now_ms = dev->next_connect_ms;
        }
    }
    if (fuzz_trace) {
        fprintf(stderr, "  %zu bytes read, %zu polls, %u writes, %u connects, %d runs\n",
                ft.pos, polls, ft.writes, (unsigned)dev->stats_connects, stub_rt.runs);
    }
    REQUIRE(ft.pos == ft.len || ft.connects >= MAX_CONNECTS, "the device stopped reading: %zu of %zu bytes left after %zu polls",
            ft.len - ft.pos, ft.len, budget);
    free(state);
    free(fbuf);
    free(store);
    return 0;
}
