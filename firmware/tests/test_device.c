/* Unit tests of the device core against a scripted gateway (a C GatewaySession), the fake
 * clock, the in-memory transport and the stub runtime. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doubles.h"
#include "feed.h"
#include "mbedtls/ecdsa.h"
#include "mbedtls/sha256.h"
#include "../core/src/device_impl.h"

static int checks, failures;
#define CHECK(c)                                                                    \
    do {                                                                            \
        checks++;                                                                   \
        if (!(c)) {                                                                 \
            failures++;                                                             \
            fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__,    \
                    cur_test, #c);                                                  \
        }                                                                           \
    } while (0)
static const char *cur_test = "";

/* ---------------------------------------------------------------- fixture */
static mem_transport_t mt;
static uint8_t store[8 * 1024];
static uint8_t fbuf[2048 + 4];
static _Alignas(8) uint8_t dev_state[64 * 1024];
static wb_device_t *dev;
static wb_session_t gw;
static wb_framer_t gwf;
static uint8_t gwbuf[1 << 17];
static uint8_t tmp[1 << 16];

#define MAXF 64
static uint8_t frames[MAXF][4096];
static wb_msg_t got[MAXF];
static int n_got, n_viol;
static wb_error_t viol;
static size_t tx_seen;

static void setup_cfg(uint16_t max_apps)
{
    host_platform_reset();
    stub_runtime_reset();
    mem_transport_init(&mt);
    wb_device_config_t cfg = {.architecture = "cortex-m3", .runtime = "wasm3",
                              .firmware = "wb-core test", .memory_total = 65536,
                              .max_module_size = 4096, .max_frame_size = 2048,
                              .max_apps = max_apps, .window = 2, .module_store = store,
                              .module_store_size = sizeof store, .frame_buffer = fbuf,
                              .frame_buffer_size = sizeof fbuf};
    dev = wb_device_init(dev_state, &cfg, &mt.t);
    n_got = 0;
    tx_seen = 0;
}
static void setup(void) { setup_cfg(2); }

static void on_gw(void *ctx, wb_error_t v, const wb_msg_t *m, const uint8_t *fr, size_t n)
{
    (void)ctx;
    if (v != WB_OK) { n_viol++; viol = v; return; }
    if (n_got >= MAXF || n > sizeof frames[0]) return;
    memcpy(frames[n_got], fr, n); /* re-decode from our own copy: strings stay valid */
    wb_msg_decode(frames[n_got] + 4, n - 4, &got[n_got], NULL);
    n_got++;
    (void)m;
}

/* Decode what the device wrote since the last call. Returns the number of new messages. */
static int take(void)
{
    int before = n_got;
    if (mt.tx_len > tx_seen) {
        host_receive_data(&gw, &gwf, mt.tx + tx_seen, mt.tx_len - tx_seen, on_gw, NULL);
        tx_seen = mt.tx_len;
    }
    return n_got - before;
}
static const wb_msg_t *last(void) { return n_got ? &got[n_got - 1] : NULL; }
static int count_tag(uint32_t tag, int from)
{
    int c = 0;
    for (int i = from; i < n_got; i++) c += got[i].tag == tag;
    return c;
}

static void gw_reset(void)
{
    wb_session_init(&gw, WB_ROLE_GATEWAY, 1 << 16);
    wb_framer_init(&gwf, gwbuf, sizeof gwbuf, 1 << 16);
    tx_seen = 0;
    n_viol = 0;
}

/* The gateway sends m (state-checked by its session). */
static void gw_send(wb_msg_t *m, int64_t reply_to)
{
    size_t n = wb_session_send(&gw, m, reply_to, tmp, sizeof tmp);
    if (n == 0) fprintf(stderr, "%s: gateway cannot send tag %u\n", cur_test, (unsigned)m->tag);
    mem_push(&mt, tmp, n);
}
/* Raw frame, no gateway session check (for illegal messages). */
static void raw_send(wb_msg_t *m)
{
    size_t n = wb_msg_encode_frame(m, tmp, sizeof tmp);
    CHECK(n > 0);
    mem_push(&mt, tmp, n);
}

static void poll_n(int n) { while (n--) wb_device_poll(dev); }
static void advance(uint64_t ms) { host_now_ms += ms; poll_n(2); }

static const uint8_t DEV_ID[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
static const uint8_t NONCE[32] = {0xAA, 1, 2, 3};

static wb_msg_t M(uint32_t tag)
{
    wb_msg_t m;
    memset(&m, 0, sizeof m);
    m.tag = tag;
    return m;
}
static wb_str_t S(const char *s) { return (wb_str_t){(const uint8_t *)s, strlen(s)}; }
static bool str_is(wb_str_t s, const char *c) { return s.len == strlen(c) && !memcmp(s.ptr, c, s.len); }

static void welcome(uint32_t interval)
{
    wb_msg_t w = M(WB_TAG_WELCOME);
    w.u.welcome.device_id = DEV_ID;
    w.u.welcome.heartbeat_interval_ms = interval;
    w.u.welcome.max_frame_size = 4096;
    gw_send(&w, got[n_got - 1].message_id);
}

/* Connect and establish (no enrollment). */
static void connect_established(uint32_t interval)
{
    gw_reset();
    poll_n(3);
    take();
    CHECK(last() && last()->tag == WB_TAG_HELLO);
    welcome(interval);
    poll_n(1);
    take();
}

static int find_slot(wb_device_t *d, const uint8_t *digest, uint8_t state)
{
    for (int i = 0; i < d->n_slots; i++)
        if (d->slots[i].state == state && memcmp(d->slots[i].digest, digest, 32) == 0) return i;
    return -1;
}

/* ---------------------------------------------------------------- tests */

static void test_enroll_flow(void)
{
    setup();
    gw_reset();
    poll_n(3);
    CHECK(mt.connects == 1);
    CHECK(take() == 1);
    const wb_msg_t *h = last();
    CHECK(h->tag == WB_TAG_HELLO && h->message_id == 0 && h->u.hello.device_id == NULL);
    CHECK(str_is(h->u.hello.info.architecture, "cortex-m3"));
    CHECK(h->u.hello.info.max_frame_size == 2048 && h->u.hello.info.max_apps == 2);
    CHECK(h->u.hello.info.window == 2);
    wb_msg_t c = M(WB_TAG_ENROLL_CHALLENGE);
    c.u.enroll_challenge.nonce = NONCE;
    gw_send(&c, 0);
    poll_n(1);
    CHECK(take() == 1);
    const wb_msg_t *p = last();
    CHECK(p->tag == WB_TAG_ENROLL_PROOF && p->message_id == 0);
    CHECK(p->u.enroll_proof.public_key.len == 91);
    /* the signature verifies over ENROLL_CONTEXT || nonce with the SPKI's point */
    uint8_t data[50], hash[32];
    memcpy(data, "wasmbed-enroll-v1", 18);
    memcpy(data + 18, NONCE, 32);
    mbedtls_sha256(data, 50, hash, 0);
    mbedtls_ecdsa_context k;
    mbedtls_ecdsa_init(&k);
    mbedtls_ecp_group_id gid = MBEDTLS_ECP_DP_SECP256R1;
    int ok = mbedtls_ecp_group_load(&k.MBEDTLS_PRIVATE(grp), gid) == 0 &&
             mbedtls_ecp_point_read_binary(&k.MBEDTLS_PRIVATE(grp), &k.MBEDTLS_PRIVATE(Q),
                                           p->u.enroll_proof.public_key.ptr + 26, 65) == 0 &&
             mbedtls_ecdsa_read_signature(&k, hash, 32, p->u.enroll_proof.signature.ptr,
                                          p->u.enroll_proof.signature.len) == 0;
    mbedtls_ecdsa_free(&k);
    CHECK(ok);
    welcome(1000);
    poll_n(1);
    CHECK(host_has_id && memcmp(host_stored_id, DEV_ID, 16) == 0);
    take();
    CHECK(last()->tag == WB_TAG_HEARTBEAT && last()->message_id == 1);
    CHECK(dev->sess.state == WB_ST_ESTABLISHED);
    /* the link drops: reconnect with backoff, the Hello carries the stored id */
    mt.drop = true;
    poll_n(1);
    CHECK(mt.closes == 1 && dev->link == WB_L_DOWN);
    poll_n(2);
    CHECK(mt.connects == 1); /* backoff: not at once */
    host_now_ms += WB_BACKOFF_INITIAL_MS;
    gw_reset();
    n_got = 0;
    poll_n(3);
    CHECK(mt.connects == 2);
    take();
    CHECK(n_got == 1 && got[0].tag == WB_TAG_HELLO && got[0].u.hello.device_id &&
          memcmp(got[0].u.hello.device_id, DEV_ID, 16) == 0);
}

static void test_heartbeat_timing_and_dead_link(void)
{
    setup();
    connect_established(1000);
    int hb0 = n_got;
    CHECK(count_tag(WB_TAG_HEARTBEAT, 0) == 1);
    advance(999);
    take();
    CHECK(n_got == hb0);
    advance(1);
    take();
    CHECK(n_got == hb0 + 1 && last()->tag == WB_TAG_HEARTBEAT);
    wb_msg_t ack = M(WB_TAG_HEARTBEAT_ACK);
    gw_send(&ack, last()->message_id);
    poll_n(1); /* acked at t=1000 */
    advance(1000);
    take();
    CHECK(count_tag(WB_TAG_HEARTBEAT, 0) == 3);
    CHECK(dev->link == WB_L_UP);
    /* acked at t=1000: dead once more than 3 intervals pass without an ack */
    advance(1000); /* 3000 */
    advance(1000); /* 4000: exactly 3 intervals */
    CHECK(dev->link == WB_L_UP);
    advance(1);
    CHECK(dev->link == WB_L_DOWN && dev->stats_dead_links == 1 && mt.closes == 1);
    advance(WB_BACKOFF_INITIAL_MS);
    CHECK(mt.connects == 2);
}

static void test_heartbeat_contents(void)
{
    setup();
    connect_established(1000);
    const wb_msg_t *hb = last();
    CHECK(hb->tag == WB_TAG_HEARTBEAT && hb->u.heartbeat.apps.n == 0);
    CHECK(hb->u.heartbeat.memory_free == 65536 && hb->u.heartbeat.uptime_ms == host_now_ms);
}

static void test_reject_backoff(void)
{
    setup();
    gw_reset();
    poll_n(3);
    take();
    wb_msg_t r = M(WB_TAG_ENROLL_REJECT);
    r.u.enroll_reject.code = WB_ERR_PAIRING_DISABLED;
    r.u.enroll_reject.reason = S("pairing off");
    gw_send(&r, 0);
    poll_n(1);
    CHECK(dev->link == WB_L_DOWN && mt.closes == 1);
    advance(WB_REJECT_BACKOFF_MS - 1);
    CHECK(mt.connects == 1);
    advance(1);
    CHECK(mt.connects == 2);
    /* Error(REVOKED) also backs off long; another error code only briefly */
    gw_reset();
    poll_n(2);
    take();
    welcome(1000);
    poll_n(1);
    wb_msg_t e = M(WB_TAG_ERROR);
    e.u.error.code = WB_ERR_REVOKED;
    raw_send(&e);
    poll_n(1);
    CHECK(dev->link == WB_L_DOWN);
    advance(WB_BACKOFF_MAX_MS - 1);
    CHECK(mt.connects == 2);
}

/* No Welcome (nor a refusal) within setup_timeout_ms of the link coming up: the connection is
 * given up and retried after the backoff. A gateway that refuses the device's certificate
 * after the TLS 1.3 handshake closes without an alert, which a UART bridge cannot pass on. */
static void test_setup_deadline(void)
{
    setup();
    gw_reset();
    poll_n(3);
    take();
    CHECK(last() && last()->tag == WB_TAG_HELLO && dev->link == WB_L_UP);
    advance(WB_SETUP_TIMEOUT_MS);
    CHECK(dev->link == WB_L_UP && mt.closes == 0);
    advance(1);
    CHECK(dev->link == WB_L_DOWN && mt.closes == 1);
    advance(WB_BACKOFF_INITIAL_MS);
    CHECK(mt.connects == 2 && dev->link == WB_L_UP);
    /* once welcomed, the deadline no longer applies (the heartbeat rules do) */
    gw_reset();
    n_got = 0;
    take();
    CHECK(last() && last()->tag == WB_TAG_HELLO);
    welcome(100000);
    poll_n(1);
    advance(WB_SETUP_TIMEOUT_MS + 1);
    CHECK(dev->link == WB_L_UP && mt.closes == 1 && dev->established);
}

static void test_connect_backoff_doubles(void)
{
    setup();
    mt.refuse_connect = true;
    uint64_t expect[] = {0, 500, 1500, 3500, 7500};
    for (int i = 0; i < 5; i++) {
        if (i) {
            host_now_ms = expect[i] - 1;
            poll_n(1);
            CHECK(mt.connects == i);
        }
        host_now_ms = expect[i];
        poll_n(1);
        CHECK(mt.connects == i + 1);
    }
    /* capped */
    for (int i = 0; i < 10; i++) advance(WB_BACKOFF_MAX_MS);
    CHECK(dev->backoff_ms == WB_BACKOFF_MAX_MS);
}

/* A 40-byte module with the wasm magic, its digest. */
static uint8_t MOD[40];
static uint8_t MOD_DIGEST[32];
static void make_module(uint8_t salt)
{
    memset(MOD, salt, sizeof MOD);
    memcpy(MOD, "\0asm\1\0\0\0", 8);
    mbedtls_sha256(MOD, sizeof MOD, MOD_DIGEST, 0);
}

static wb_msg_t begin_msg(const char *app, uint32_t size, uint32_t chunk)
{
    wb_msg_t b = M(WB_TAG_DEPLOY_BEGIN);
    b.u.deploy_begin.app_id = S(app);
    b.u.deploy_begin.name = S("n");
    b.u.deploy_begin.digest = MOD_DIGEST;
    b.u.deploy_begin.size = size;
    b.u.deploy_begin.chunk_size = chunk;
    b.u.deploy_begin.limits = (wb_limits_t){65536, 1000, 500};
    return b;
}
static void chunk(const char *app, uint32_t off, uint32_t len)
{
    wb_msg_t c = M(WB_TAG_DEPLOY_CHUNK);
    c.u.deploy_chunk.app_id = S(app);
    c.u.deploy_chunk.offset = off;
    c.u.deploy_chunk.data = (wb_str_t){MOD + off, len};
    gw_send(&c, -1);
}

/* Deploy MOD as app in 16-byte chunks; returns the DeployAck code. */
static int deploy(const char *app)
{
    int from = n_got;
    wb_msg_t b = begin_msg(app, sizeof MOD, 16);
    gw_send(&b, -1);
    uint32_t bid = b.message_id;
    poll_n(1);
    take();
    if (last()->tag == WB_TAG_DEPLOY_ACK) return last()->u.deploy_ack.code;
    CHECK(last()->tag == WB_TAG_DEPLOY_READY && last()->message_id == bid);
    uint32_t off = last()->u.deploy_ready.offset;
    while (off < sizeof MOD) {
        uint32_t len = sizeof MOD - off < 16 ? (uint32_t)(sizeof MOD - off) : 16;
        chunk(app, off, len);
        uint32_t cid = gw.next_id - 1;
        poll_n(1);
        take();
        int i = n_got - 1;
        while (i > from && got[i].tag != WB_TAG_CHUNK_ACK) i--;
        CHECK(got[i].tag == WB_TAG_CHUNK_ACK && got[i].message_id == cid &&
              got[i].u.chunk_ack.next_offset == off + len);
        off += len;
    }
    CHECK(last()->tag == WB_TAG_DEPLOY_ACK && last()->message_id == bid);
    return last()->u.deploy_ack.code;
}

static void test_deploy_install_and_idempotent(void)
{
    setup();
    make_module(7);
    connect_established(100000);
    CHECK(deploy("hello") == 0);
    CHECK(stub_rt.validations == 1);
    CHECK(dev->apps[0].used && dev->apps[0].state == WB_APP_INSTALLED);
    advance(100000);
    take();
    CHECK(last()->tag == WB_TAG_HEARTBEAT && last()->u.heartbeat.apps.n == 1 &&
          str_is(last()->u.heartbeat.apps.items[0].app_id, "hello") &&
          memcmp(last()->u.heartbeat.apps.items[0].digest, MOD_DIGEST, 32) == 0 &&
          last()->u.heartbeat.apps.items[0].state == WB_APP_INSTALLED);
    CHECK(last()->u.heartbeat.memory_free == 65536 - sizeof MOD);
    /* the same digest again: DeployReady(size) then DeployAck 0 at once */
    int from = n_got;
    wb_msg_t b = begin_msg("hello2", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(n_got == from + 2 && got[from].tag == WB_TAG_DEPLOY_READY &&
          got[from].u.deploy_ready.offset == sizeof MOD && got[from + 1].tag == WB_TAG_DEPLOY_ACK &&
          got[from + 1].u.deploy_ack.code == 0 && got[from + 1].message_id == b.message_id);
    /* both apps share the module's bytes */
    CHECK(dev->apps[1].used && dev->apps[1].slot == dev->apps[0].slot);
}

static void test_deploy_refusals(void)
{
    setup_cfg(1);
    make_module(3);
    connect_established(100000);
    wb_msg_t b = begin_msg("big", 5000, 16); /* slot size: 8192 / 2 = 4096 */
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_DEPLOY_ACK && last()->u.deploy_ack.code == WB_ERR_MODULE_TOO_LARGE &&
          last()->message_id == b.message_id);
    b = begin_msg("zero", 0, 16);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->u.deploy_ack.code == WB_ERR_INVALID_MODULE);
    b = begin_msg("zchunk", 10, 0);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->u.deploy_ack.code == WB_ERR_INVALID_MODULE);
    CHECK(deploy("one") == 0);
    make_module(4);
    b = begin_msg("two", sizeof MOD, 16); /* max_apps 1: full */
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->u.deploy_ack.code == WB_ERR_NO_SPACE);
    /* replacing the installed app is allowed */
    CHECK(deploy("one") == 0);
    CHECK(memcmp(dev->slots[dev->apps[0].slot].digest, MOD_DIGEST, 32) == 0);
    CHECK(dev->link == WB_L_UP);
}

static void test_deploy_digest_mismatch_and_invalid(void)
{
    setup();
    make_module(9);
    connect_established(100000);
    uint8_t good[32];
    memcpy(good, MOD_DIGEST, 32);
    MOD_DIGEST[0] ^= 1; /* announce a wrong digest */
    CHECK(deploy("m") == WB_ERR_DIGEST_MISMATCH);
    /* discarded: the next attempt starts at 0 */
    int from = n_got;
    wb_msg_t b = begin_msg("m", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(got[from].tag == WB_TAG_DEPLOY_READY && got[from].u.deploy_ready.offset == 0);
    memcpy(MOD_DIGEST, good, 32);
    /* bytes that hash right but are no module */
    memset(MOD, 0x55, sizeof MOD);
    mbedtls_sha256(MOD, sizeof MOD, MOD_DIGEST, 0);
    CHECK(deploy("bad") == WB_ERR_INVALID_MODULE);
    CHECK(find_slot(dev, MOD_DIGEST, WB_SLOT_COMPLETE) < 0);
}

static void test_deploy_resume_after_disconnect(void)
{
    setup();
    make_module(5);
    connect_established(100000);
    wb_msg_t b = begin_msg("r", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    chunk("r", 0, 16);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_CHUNK_ACK && last()->u.chunk_ack.next_offset == 16);
    mt.drop = true;
    poll_n(1);
    advance(WB_BACKOFF_INITIAL_MS);
    n_got = 0;
    connect_established(100000);
    b = begin_msg("r", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_DEPLOY_READY && last()->u.deploy_ready.offset == 16);
    chunk("r", 16, 16);
    chunk("r", 32, 8);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_DEPLOY_ACK && last()->u.deploy_ack.code == 0 &&
          last()->message_id == b.message_id);
}

static void test_deploy_violations(void)
{
    setup();
    make_module(6);
    connect_established(100000);
    chunk("nobody", 0, 4); /* no transfer */
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_UNKNOWN_APP);
    CHECK(dev->link == WB_L_DOWN);
    advance(WB_BACKOFF_INITIAL_MS);
    n_got = 0;
    connect_established(100000);
    wb_msg_t b = begin_msg("x", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    chunk("x", 8, 8); /* does not continue at 0 */
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_BAD_OFFSET);
    CHECK(dev->link == WB_L_DOWN);
    advance(WB_BACKOFF_INITIAL_MS);
    n_got = 0;
    connect_established(100000);
    b = begin_msg("x", sizeof MOD, 8);
    gw_send(&b, -1);
    poll_n(1);
    chunk("x", 0, 16); /* above chunk_size */
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_BAD_OFFSET);
}

static wb_msg_t start_msg(const char *app, uint32_t run_id)
{
    wb_msg_t s = M(WB_TAG_START_APP);
    s.u.start_app.app_id = S(app);
    s.u.start_app.run_id = run_id;
    s.u.start_app.entry = S("main");
    s.u.start_app.args.n = 2;
    s.u.start_app.args.items[0] = (wb_wire_value_t){WB_WV_NINT, {.i = -5}};
    s.u.start_app.args.items[1] = (wb_wire_value_t){WB_WV_UINT, {.u = UINT64_MAX}};
    return s;
}

static const wb_msg_t *find_tag(uint32_t tag, int from)
{
    for (int i = from; i < n_got; i++) if (got[i].tag == tag) return &got[i];
    return NULL;
}

static void test_start_result(void)
{
    setup();
    make_module(1);
    connect_established(100000);
    CHECK(deploy("app") == 0);
    int from = n_got;
    wb_msg_t s = start_msg("nope", 1);
    gw_send(&s, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_START_ACK && last()->u.start_ack.code == WB_ERR_UNKNOWN_APP &&
          last()->message_id == s.message_id);
    s = start_msg("app", 7);
    wb_msg_t s2 = start_msg("app", 8);
    gw_send(&s, -1);
    gw_send(&s2, -1);
    stub_rt.log = "hello log";
    poll_n(1);
    take();
    const wb_msg_t *a = find_tag(WB_TAG_START_ACK, from + 1);
    CHECK(a && a->u.start_ack.code == 0 && a->message_id == s.message_id && a->u.start_ack.run_id == 7);
    CHECK(last()->tag == WB_TAG_EXECUTION_RESULT || last()->tag == WB_TAG_START_ACK);
    const wb_msg_t *r = find_tag(WB_TAG_EXECUTION_RESULT, from);
    CHECK(r && r->message_id == s.message_id && r->u.execution_result.run_id == 7 &&
          r->u.execution_result.outcome == WB_OUTCOME_RETURNED &&
          r->u.execution_result.values.n == 1 &&
          r->u.execution_result.values.items[0].v.u == 42 &&
          str_is(r->u.execution_result.log, "hello log"));
    /* the second StartApp arrived while the first was queued: BUSY */
    int busy = 0;
    for (int i = from; i < n_got; i++)
        busy += got[i].tag == WB_TAG_START_ACK && got[i].u.start_ack.code == WB_ERR_BUSY &&
                got[i].message_id == s2.message_id;
    CHECK(busy == 1);
    CHECK(stub_rt.runs == 1 && strcmp(stub_rt.last_entry, "main") == 0 &&
          stub_rt.last_n_args == 2 && stub_rt.last_args[0].v.i == -5 &&
          stub_rt.last_args[1].v.i == -1);
    CHECK(dev->apps[0].state == WB_APP_INSTALLED);
    /* a trap leaves the app FAILED */
    stub_rt.outcome = WB_OUTCOME_TRAPPED;
    stub_rt.detail = "integer divide by zero";
    s = start_msg("app", 9);
    gw_send(&s, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_EXECUTION_RESULT &&
          last()->u.execution_result.outcome == WB_OUTCOME_TRAPPED &&
          last()->u.execution_result.values.n == 0 &&
          str_is(last()->u.execution_result.detail, "integer divide by zero"));
    CHECK(dev->apps[0].state == WB_APP_FAILED);
}

static uint32_t stop_at;
static bool stop_remove;
static void ack_all(uint32_t ms);
static void push_stop(uint32_t ms)
{
    ack_all(ms);
    if (ms == stop_at) {
        wb_msg_t st = M(WB_TAG_STOP_APP);
        st.u.stop_app.app_id = S("app");
        st.u.stop_app.remove = stop_remove;
        gw_send(&st, -1);
    }
}

static void test_stop_during_run_and_heartbeats(void)
{
    setup();
    make_module(2);
    connect_established(1000);
    CHECK(deploy("app") == 0);
    int from = n_got;
    stub_rt.run_ms = 10000;
    stop_at = 3500;
    stop_remove = true;
    stub_rt.on_step = push_stop;
    wb_msg_t s = start_msg("app", 1);
    gw_send(&s, -1);
    /* the gateway acks heartbeats during the run */
    poll_n(1);
    take();
    CHECK(stub_rt.runs == 1);
    CHECK(count_tag(WB_TAG_HEARTBEAT, from) >= 3); /* served during the run */
    const wb_msg_t *r = find_tag(WB_TAG_EXECUTION_RESULT, from);
    CHECK(r && r->u.execution_result.outcome == WB_OUTCOME_STOPPED && r->message_id == s.message_id);
    const wb_msg_t *a = find_tag(WB_TAG_STOP_ACK, from);
    CHECK(a && a->u.stop_ack.code == 0 && a > r); /* the result first */
    CHECK(host_now_ms < 4000); /* stopped at once */
    CHECK(!dev->apps[0].used); /* removed */
    CHECK(find_slot(dev, MOD_DIGEST, WB_SLOT_COMPLETE) < 0); /* its bytes forgotten */
    wb_msg_t st = M(WB_TAG_STOP_APP);
    st.u.stop_app.app_id = S("app");
    gw_send(&st, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_STOP_ACK && last()->u.stop_ack.code == WB_ERR_UNKNOWN_APP);
}

/* Found by fuzzing (firmware/fuzz/regressions/session/replaced-validation-orphans-slot): a
 * transfer that completes during a run waits for its validation until the run ends; a
 * DeployBegin that replaced it left that complete slot held by nothing, and the store evicted
 * only partial slots. Three slots (max_apps 2): "app" runs from slot 0; during the run M2
 * completes (slot 1), M3 replaces it and completes (slot 2); M4 must evict M2's slot instead
 * of getting NO_SPACE "module store full". */
static uint32_t m4_begin_id;
static void push_replacing_deploys(uint32_t ms)
{
    if (ms != 1) return;
    for (uint8_t salt = 2; salt <= 3; salt++) {
        make_module(salt);
        wb_msg_t b = begin_msg("app", sizeof MOD, 16);
        gw_send(&b, -1);
        chunk("app", 0, 16);
        chunk("app", 16, 16);
        chunk("app", 32, 8);
    }
    make_module(4);
    wb_msg_t b = begin_msg("app", sizeof MOD, 16);
    gw_send(&b, -1);
    m4_begin_id = b.message_id;
}

static void test_replaced_validation_frees_its_slot(void)
{
    setup();
    make_module(1);
    connect_established(100000);
    CHECK(deploy("app") == 0);
    int from = n_got;
    stub_rt.run_ms = 20;
    stub_rt.on_step = push_replacing_deploys;
    wb_msg_t s = start_msg("app", 1);
    gw_send(&s, -1);
    poll_n(2);
    take();
    CHECK(stub_rt.runs == 1);
    const wb_msg_t *reply = NULL;
    for (int i = from; i < n_got; i++) {
        if (got[i].message_id == m4_begin_id &&
            (got[i].tag == WB_TAG_DEPLOY_READY || got[i].tag == WB_TAG_DEPLOY_ACK)) {
            reply = &got[i];
        }
    }
    CHECK(reply && reply->tag == WB_TAG_DEPLOY_READY && reply->u.deploy_ready.offset == 0);
    CHECK(find_slot(dev, MOD_DIGEST, WB_SLOT_PARTIAL) >= 0); /* M4's transfer has a slot */
    CHECK(n_viol == 0);
}

/* A StopApp that arrives while the run is accepted but not started yet: the run ends
 * STOPPED at once, saying why as a stopped run does ("stopped on request"), then the StopAck. */
static void test_stop_of_a_queued_run(void)
{
    setup();
    make_module(2);
    connect_established(1000);
    CHECK(deploy("app") == 0);
    int from = n_got;
    wb_msg_t s = start_msg("app", 3);
    wb_msg_t st = M(WB_TAG_STOP_APP);
    st.u.stop_app.app_id = S("app");
    gw_send(&s, -1);
    gw_send(&st, -1); /* in the same read: the run is still queued when it is handled */
    poll_n(1);
    take();
    CHECK(stub_rt.runs == 0);
    const wb_msg_t *r = find_tag(WB_TAG_EXECUTION_RESULT, from);
    CHECK(r && r->message_id == s.message_id && r->u.execution_result.run_id == 3 &&
          r->u.execution_result.outcome == WB_OUTCOME_STOPPED &&
          str_is(r->u.execution_result.detail, "stopped on request"));
    const wb_msg_t *a = find_tag(WB_TAG_STOP_ACK, from);
    CHECK(a && a->u.stop_ack.code == 0 && a > r);
    CHECK(dev->apps[0].state == WB_APP_STOPPED);
}

static void ack_all(uint32_t ms)
{
    (void)ms;
    int before = n_got;
    take();
    for (int i = before; i < n_got; i++) {
        if (got[i].tag == WB_TAG_HEARTBEAT) {
            wb_msg_t a = M(WB_TAG_HEARTBEAT_ACK);
            gw_send(&a, got[i].message_id);
        }
    }
}

static void test_long_run_acked_stays_up(void)
{
    setup();
    make_module(2);
    connect_established(1000);
    CHECK(deploy("app") == 0);
    stub_rt.run_ms = 8000;
    stub_rt.on_step = ack_all;
    wb_msg_t s = start_msg("app", 1);
    gw_send(&s, -1);
    int from = n_got;
    poll_n(1);
    take();
    CHECK(dev->link == WB_L_UP && dev->stats_dead_links == 0);
    CHECK(count_tag(WB_TAG_HEARTBEAT, from) >= 8);
    const wb_msg_t *r = find_tag(WB_TAG_EXECUTION_RESULT, from);
    CHECK(r && r->u.execution_result.outcome == WB_OUTCOME_RETURNED);
}

static void test_result_outbox_after_reconnect(void)
{
    setup();
    make_module(2);
    connect_established(1000);
    CHECK(deploy("app") == 0);
    stub_rt.run_ms = 10000; /* no acks: the link dies during the run */
    wb_msg_t s = start_msg("app", 33);
    gw_send(&s, -1);
    poll_n(1);
    take();
    CHECK(dev->stats_dead_links == 1);
    CHECK(find_tag(WB_TAG_EXECUTION_RESULT, 0) == NULL);
    CHECK(dev->outbox.pending);
    /* reconnect (the hook may already have reconnected during the run) */
    for (int i = 0; i < 5 && dev->link != WB_L_UP; i++) advance(WB_BACKOFF_MAX_MS);
    n_got = 0;
    gw_reset();
    mt.tx_len = 0;
    mt.rx_len = mt.rx_pos = 0;
    dev->link = WB_L_DOWN;
    dev->next_connect_ms = 0;
    dev->sess.state = WB_ST_CLOSED;
    poll_n(3);
    take();
    CHECK(n_got == 1 && got[0].tag == WB_TAG_HELLO);
    welcome(1000);
    poll_n(1);
    take();
    const wb_msg_t *r = find_tag(WB_TAG_EXECUTION_RESULT, 0);
    CHECK(r && r->message_id == s.message_id && r->u.execution_result.run_id == 33);
    CHECK(!dev->outbox.pending);
}

static void test_device_info_request(void)
{
    setup();
    connect_established(100000);
    wb_msg_t q = M(WB_TAG_DEVICE_INFO_REQUEST);
    gw_send(&q, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_DEVICE_INFO_REPORT && last()->message_id == q.message_id &&
          last()->u.device_info_report.info.max_frame_size == 2048);
    CHECK(n_viol == 0);
}

static void test_split_reads_and_frame_limits(void)
{
    setup();
    mt.max_read = 1;
    connect_established(100000);
    CHECK(dev->established);
    wb_msg_t q = M(WB_TAG_DEVICE_INFO_REQUEST);
    gw_send(&q, -1);
    poll_n(20);
    take();
    CHECK(last()->tag == WB_TAG_DEVICE_INFO_REPORT);
    uint8_t big[4] = {0, 0, 0x08, 0x01}; /* 2049 > 2048 */
    mem_push(&mt, big, 4);
    poll_n(8);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_FRAME_TOO_LARGE &&
          last()->message_id == 0);
    CHECK(dev->link == WB_L_DOWN);
}

/* A valid instance of every message. */
static wb_msg_t sample(uint32_t tag)
{
    static const uint8_t d32[32];
    wb_msg_t m = M(tag);
    switch (tag) {
    case WB_TAG_ERROR: m.u.error.code = WB_ERR_INTERNAL; break;
    case WB_TAG_HELLO:
        m.u.hello.info = (wb_device_info_t){S("a"), S("b"), S(""), 1, 1, 1, 1024, 1, 1};
        break;
    case WB_TAG_DEVICE_INFO_REPORT:
        m.u.device_info_report.info = (wb_device_info_t){S("a"), S("b"), S(""), 1, 1, 1, 1024, 1, 1};
        break;
    case WB_TAG_DEPLOY_READY: case WB_TAG_CHUNK_ACK: case WB_TAG_DEPLOY_ACK: case WB_TAG_START_ACK:
    case WB_TAG_STOP_ACK: case WB_TAG_EXECUTION_RESULT: case WB_TAG_DEPLOY_CHUNK:
    case WB_TAG_STOP_APP:
        m.u.deploy_ready.app_id = S("a"); /* app_id is the first field of each */
        break;
    case WB_TAG_WELCOME:
        m.u.welcome.device_id = DEV_ID;
        m.u.welcome.max_frame_size = 1024;
        m.u.welcome.heartbeat_interval_ms = 1000;
        break;
    case WB_TAG_ENROLL_CHALLENGE: m.u.enroll_challenge.nonce = NONCE; break;
    case WB_TAG_ENROLL_REJECT: m.u.enroll_reject.code = WB_ERR_CAPACITY; break;
    case WB_TAG_DEPLOY_BEGIN:
        m.u.deploy_begin.app_id = S("a");
        m.u.deploy_begin.digest = d32;
        break;
    case WB_TAG_START_APP:
        m.u.start_app.app_id = S("a");
        m.u.start_app.entry = S("main");
        break;
    default: break;
    }
    return m;
}

static const uint32_t ALL_TAGS[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 32, 33, 34, 35, 36, 37, 38, 39, 40};

/* Every message in AWAIT_WELCOME and ESTABLISHED (IDLE and PROVING are left at once by the
 * device: it sends Hello on link-up and answers a challenge in the same step). */
static void test_illegal_messages_each_state(void)
{
    for (int st = 0; st < 2; st++) {
        for (size_t i = 0; i < sizeof ALL_TAGS / sizeof ALL_TAGS[0]; i++) {
            uint32_t tag = ALL_TAGS[i];
            setup();
            if (st == 0) {
                gw_reset();
                poll_n(3);
                take();
            } else {
                connect_established(100000);
            }
            CHECK(dev->sess.state == (st ? WB_ST_ESTABLISHED : WB_ST_AWAIT_WELCOME));
            int from = n_got;
            wb_msg_t m = sample(tag);
            raw_send(&m);
            poll_n(1);
            take();
            bool allowed = st == 0 ? (tag == 32 || tag == 33 || tag == 34)
                                   : (tag >= 35 && tag <= 40);
            wb_error_t want = tag < 32 ? WB_ERR_UNKNOWN_MESSAGE : WB_ERR_UNEXPECTED_MESSAGE;
            const wb_msg_t *e = find_tag(WB_TAG_ERROR, from);
            if (st == 1 && tag == WB_TAG_DEPLOY_CHUNK) {
                /* allowed by the session; the application refuses a stray chunk */
                CHECK(e && e->u.error.code == WB_ERR_UNKNOWN_APP);
            } else if (allowed) {
                CHECK(e == NULL);
                if (e) fprintf(stderr, "  state %d tag %u: error %u\n", st, (unsigned)tag, (unsigned)e->u.error.code);
            } else {
                CHECK(e && e->u.error.code == want && e->message_id == 0);
                CHECK(dev->link == WB_L_DOWN && mt.closes == 1);
                if (!(e && e->u.error.code == want))
                    fprintf(stderr, "  state %d tag %u\n", st, (unsigned)tag);
            }
        }
    }
    /* malformed bytes in ESTABLISHED: Error(MALFORMED) then reset */
    setup();
    connect_established(100000);
    uint8_t junk[] = {0, 0, 0, 1, 0xff};
    mem_push(&mt, junk, sizeof junk);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_MALFORMED);
    CHECK(dev->link == WB_L_DOWN);
}

static void test_init_rejects_bad_config(void)
{
    wb_device_config_t cfg = {.architecture = "a", .runtime = "b", .firmware = "c",
                              .memory_total = 1, .max_module_size = 1000,
                              .max_frame_size = 2048, .max_apps = 2, .window = 2,
                              .module_store = store, .module_store_size = sizeof store,
                              .frame_buffer = fbuf, .frame_buffer_size = 100};
    CHECK(wb_device_init(dev_state, &cfg, &mt.t) == NULL); /* frame buffer too small */
    cfg.frame_buffer_size = sizeof fbuf;
    cfg.max_frame_size = 1000;
    CHECK(wb_device_init(dev_state, &cfg, &mt.t) == NULL); /* below 1024 */
    CHECK(wb_device_state_size() <= sizeof dev_state);
}

#define RUN(t) do { cur_test = #t; int f0 = failures; t(); printf("%s %s\n", failures == f0 ? "PASS" : "FAIL", #t); tests++; } while (0)

/* The transport reports ciphertext arriving (a TLS record still incomplete): the link is
 * alive although no frame came through; once the bytes stop, it goes dead as usual. */
static uint64_t fake_rx_ms;
static uint64_t fake_last_rx(wb_transport_t *t)
{
    (void)t;
    return fake_rx_ms;
}

static void test_ciphertext_keeps_the_link_alive(void)
{
    setup();
    mt.t.last_rx_ms = fake_last_rx;
    fake_rx_ms = 0;
    connect_established(1000);
    uint64_t t0 = host_now_ms;
    for (int i = 1; i <= 5; i++) {      /* 5 intervals with bytes but no complete frame */
        fake_rx_ms = host_now_ms;
        advance(1000);
    }
    CHECK(dev->link == WB_L_UP && dev->stats_dead_links == 0);
    CHECK(host_now_ms - t0 == 5000);
    advance(2000);                       /* the last byte came 1000 ms before: now 3 intervals */
    CHECK(dev->link == WB_L_UP);
    advance(1);
    CHECK(dev->link == WB_L_DOWN && dev->stats_dead_links == 1);
}

static void test_console_silence_and_forget(void)
{
    setup();
    connect_established(1000);
    int hb = count_tag(WB_TAG_HEARTBEAT, 0);
    CHECK(wb_device_console_command(dev, "silent 1"));
    for (int i = 0; i < 6; i++) advance(1000);  /* silent: no heartbeat, and no dead link */
    take();
    CHECK(count_tag(WB_TAG_HEARTBEAT, 0) == hb && dev->link == WB_L_UP);
    CHECK(wb_device_console_command(dev, "silent 0"));
    advance(1000);
    take();
    CHECK(count_tag(WB_TAG_HEARTBEAT, 0) == hb + 1);
    uint8_t id[WB_DEVICE_ID_LEN];
    CHECK(wb_platform_load_device_id(id));
    CHECK(wb_device_console_command(dev, "forget"));
    CHECK(!wb_platform_load_device_id(id));
    CHECK(!wb_device_console_command(dev, "reboot now"));
}

/* docs/protocol.md, sections 10 and 11: a duplicated DeployChunk is ignored (no second
 * ChunkAck, no Error), also after the transfer ended; a duplicated StartApp is answered
 * StartAck(0) again and runs nothing a second time. */
static void send_frame_twice(wb_msg_t *m)
{
    size_t n = wb_session_send(&gw, m, -1, tmp, sizeof tmp);
    CHECK(n > 0);
    mem_push(&mt, tmp, n);
    mem_push(&mt, tmp, n); /* the same bytes, the same message id: a duplicate */
}

static void test_repeated_chunks_and_starts(void)
{
    setup();
    make_module(9);
    connect_established(100000);
    wb_msg_t b = begin_msg("rep", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_DEPLOY_READY && last()->u.deploy_ready.offset == 0);
    int from = n_got;
    wb_msg_t c = M(WB_TAG_DEPLOY_CHUNK);
    c.u.deploy_chunk.app_id = S("rep");
    c.u.deploy_chunk.offset = 0;
    c.u.deploy_chunk.data = (wb_str_t){MOD, 16};
    send_frame_twice(&c);
    chunk("rep", 16, 16);
    c.u.deploy_chunk.offset = 32;
    c.u.deploy_chunk.data = (wb_str_t){MOD + 32, 8};
    send_frame_twice(&c); /* the last chunk twice: the copy comes after the transfer ended */
    poll_n(3);
    take();
    CHECK(count_tag(WB_TAG_CHUNK_ACK, from) == 3);
    CHECK(count_tag(WB_TAG_ERROR, from) == 0);
    const wb_msg_t *ack = find_tag(WB_TAG_DEPLOY_ACK, from);
    CHECK(ack && ack->u.deploy_ack.code == 0 && count_tag(WB_TAG_DEPLOY_ACK, from) == 1);
    CHECK(dev->link == WB_L_UP);

    from = n_got;
    int runs = stub_rt.runs;
    wb_msg_t s = start_msg("rep", 5);
    send_frame_twice(&s);
    poll_n(3);
    take();
    int ok = 0;
    for (int i = from; i < n_got; i++)
        ok += got[i].tag == WB_TAG_START_ACK && got[i].u.start_ack.code == 0 &&
              got[i].u.start_ack.run_id == 5 && got[i].message_id == s.message_id;
    CHECK(ok == 2);
    CHECK(count_tag(WB_TAG_EXECUTION_RESULT, from) == 1);
    CHECK(stub_rt.runs == runs + 1);
    /* a late copy, after the run ended: answered, not run */
    from = n_got;
    s = start_msg("rep", 5);
    gw_send(&s, -1);
    poll_n(3);
    take();
    CHECK(last()->tag == WB_TAG_START_ACK && last()->u.start_ack.code == 0);
    CHECK(count_tag(WB_TAG_EXECUTION_RESULT, from) == 0 && stub_rt.runs == runs + 1);
    /* a new run id is a new run */
    s = start_msg("rep", 6);
    gw_send(&s, -1);
    poll_n(3);
    take();
    CHECK(count_tag(WB_TAG_EXECUTION_RESULT, from) == 1 && stub_rt.runs == runs + 2);
    /* a chunk overlapping held bytes without repeating them still breaks the transfer */
    make_module(10);
    b = begin_msg("rep2", sizeof MOD, 16);
    gw_send(&b, -1);
    poll_n(1);
    chunk("rep2", 0, 16);
    poll_n(1);
    chunk("rep2", 8, 16);
    poll_n(1);
    take();
    CHECK(last()->tag == WB_TAG_ERROR && last()->u.error.code == WB_ERR_BAD_OFFSET);
}

int main(void)
{
    int tests = 0;
    RUN(test_init_rejects_bad_config);
    RUN(test_enroll_flow);
    RUN(test_heartbeat_timing_and_dead_link);
    RUN(test_heartbeat_contents);
    RUN(test_ciphertext_keeps_the_link_alive);
    RUN(test_console_silence_and_forget);
    RUN(test_reject_backoff);
    RUN(test_setup_deadline);
    RUN(test_connect_backoff_doubles);
    RUN(test_deploy_install_and_idempotent);
    RUN(test_deploy_refusals);
    RUN(test_deploy_digest_mismatch_and_invalid);
    RUN(test_deploy_resume_after_disconnect);
    RUN(test_deploy_violations);
    RUN(test_start_result);
    RUN(test_repeated_chunks_and_starts);
    RUN(test_stop_during_run_and_heartbeats);
    RUN(test_stop_of_a_queued_run);
    RUN(test_replaced_validation_frees_its_slot);
    RUN(test_long_run_acked_stays_up);
    RUN(test_result_outbox_after_reconnect);
    RUN(test_device_info_request);
    RUN(test_split_reads_and_frame_limits);
    RUN(test_illegal_messages_each_state);
    printf("device tests: %d tests, %d checks, %d failed checks\n", tests, checks, failures);
    return failures ? 1 : 0;
}
