/* The device core: connection lifecycle, enrollment, heartbeats, deployment, runs.
 * Reference model: wasmbed_hil/bench/virtual/device.py. Design notes: core/README.md. */
#include <stdio.h>
#include <string.h>

#include "device_impl.h"
#include "wb/device_service.h"

static wb_device_t *g_dev; /* the device whose run is in progress (for the service hook) */

size_t wb_device_state_size(void)
{
    return sizeof(wb_device_t);
}

/* ------------------------------------------------------------------ helpers */

static wb_str_t str_of(const char *s, size_t n)
{
    wb_str_t r = {(const uint8_t *)s, n};
    return r;
}

static wb_str_t cstr(const char *s)
{
    return str_of(s ? s : "", s ? strlen(s) : 0);
}

/* Longest prefix of at most max bytes that is valid UTF-8. */
static size_t utf8_prefix(const uint8_t *s, size_t len, size_t max)
{
    size_t n = len < max ? len : max;
    while (n > 0 && !wb_utf8_valid(s, n)) n--;
    return n;
}

static void set_id(wb_app_id_t *dst, wb_str_t src)
{
    dst->id_len = (uint8_t)src.len; /* the codec bounds it to 64 */
    memcpy(dst->id, src.ptr, src.len);
    dst->id[src.len] = 0;
}

static wb_str_t id_str(const wb_app_id_t *id)
{
    return str_of(id->id, id->id_len);
}

static bool id_eq(const wb_app_id_t *id, wb_str_t s)
{
    return id->id_len == s.len && memcmp(id->id, s.ptr, s.len) == 0;
}

static int find_app(wb_device_t *d, wb_str_t id)
{
    for (int i = 0; i < (int)d->cfg.max_apps; i++) {
        if (d->apps[i].used && id_eq(&d->apps[i].id, id)) return i;
    }
    return -1;
}

static uint8_t *slot_data(wb_device_t *d, uint8_t slot)
{
    return d->cfg.module_store + (size_t)slot * d->slot_size;
}

static bool slot_in_use(wb_device_t *d, uint8_t slot)
{
    if (d->run.active && d->run.slot == slot) return true;
    if ((d->xfer.active || d->xfer.validate_pending) && d->xfer.slot == slot) return true;
    for (int i = 0; i < (int)d->cfg.max_apps; i++) {
        if (d->apps[i].used && d->apps[i].slot == slot) return true;
    }
    return false;
}

static void free_slot_if_unused(wb_device_t *d, uint8_t slot)
{
    if (slot != WB_NO_SLOT && !slot_in_use(d, slot)) d->slots[slot].state = WB_SLOT_FREE;
}

static int find_slot(wb_device_t *d, const uint8_t *digest, uint8_t state)
{
    for (int i = 0; i < d->n_slots; i++) {
        if (d->slots[i].state == state && memcmp(d->slots[i].digest, digest, WB_DIGEST_LEN) == 0) {
            return i;
        }
    }
    return -1;
}

static uint32_t max_module(const wb_device_t *d)
{
    return d->cfg.max_module_size < d->slot_size ? d->cfg.max_module_size : d->slot_size;
}

static uint64_t memory_free(const wb_device_t *d)
{
    uint64_t used = 0;
    for (int i = 0; i < d->n_slots; i++) {
        if (d->slots[i].state != WB_SLOT_FREE) used += d->slots[i].held;
    }
    return used >= d->cfg.memory_total ? 0 : d->cfg.memory_total - used;
}

static void fill_info(wb_device_t *d, wb_device_info_t *info)
{
    info->architecture = cstr(d->cfg.architecture);
    info->runtime = cstr(d->cfg.runtime);
    info->firmware = cstr(d->cfg.firmware);
    info->memory_total = d->cfg.memory_total;
    info->memory_free = memory_free(d);
    info->max_module_size = max_module(d);
    info->max_frame_size = d->cfg.max_frame_size;
    info->max_apps = d->cfg.max_apps;
    info->window = d->cfg.window;
}

static wb_msg_t *new_msg(wb_device_t *d, uint32_t tag)
{
    memset(&d->out, 0, sizeof(d->out));
    d->out.tag = tag;
    return &d->out;
}

/* Send d->out; reply_to < 0: a request with the next id. false: not sent. */
static bool send_out(wb_device_t *d, int64_t reply_to)
{
    if (d->link != WB_L_UP || d->link_broken) return false;
    size_t n = wb_session_send(&d->sess, &d->out, reply_to, d->tx, sizeof(d->tx));
    if (n == 0) {
        wb_platform_log("wb: cannot send tag %u in state %s", (unsigned)d->out.tag,
                        wb_state_name(d->sess.state));
        return false;
    }
    if (d->tr->write(d->tr, d->tx, n) < 0) {
        d->link_broken = true;
        return false;
    }
    return true;
}

static void send_error(wb_device_t *d, wb_error_t code, const char *reason)
{
    wb_msg_t *m = new_msg(d, WB_TAG_ERROR);
    m->u.error.code = (uint16_t)code;
    m->u.error.reason = cstr(reason);
    send_out(d, 0);
}

/* ------------------------------------------------------------------ link */

static void close_link(wb_device_t *d)
{
    if (d->link == WB_L_UP) {
        wb_platform_log("wb: link down: %s", d->rejected ? "refused by the gateway"
                                           : d->established ? "session ended"
                                                            : "no session");
    } else if (d->link == WB_L_CONNECTING) {
        wb_platform_log("wb: connection failed: transport did not come up");
    }
    if (d->link != WB_L_DOWN) d->tr->close(d->tr);
    uint64_t now = wb_platform_now_ms();
    if (d->rejected) {
        d->next_connect_ms = now + d->cfg.reject_backoff_ms;
        d->backoff_ms = d->cfg.backoff_initial_ms;
    } else {
        if (d->established) d->backoff_ms = d->cfg.backoff_initial_ms;
        d->next_connect_ms = now + d->backoff_ms;
        d->backoff_ms = d->backoff_ms * 2 > d->cfg.backoff_max_ms ? d->cfg.backoff_max_ms
                                                                   : d->backoff_ms * 2;
    }
    d->link = WB_L_DOWN;
    d->link_broken = false;
    d->established = false;
    d->rejected = false;
    d->xfer.active = false; /* a partial module stays in its slot: resumable */
    d->xfer.done = false;
    d->run.stop_pending = false; /* its StopAck can no longer be sent */
    wb_framer_consume(&d->fr);
    d->sess.state = WB_ST_CLOSED;
}

static void link_up(wb_device_t *d)
{
    d->link = WB_L_UP;
    d->link_up_ms = wb_platform_now_ms();
    d->stats_connects++;
    wb_session_init(&d->sess, WB_ROLE_DEVICE, d->cfg.max_frame_size);
    wb_framer_init(&d->fr, d->cfg.frame_buffer, d->cfg.frame_buffer_size, d->cfg.max_frame_size);
    static uint8_t id[WB_DEVICE_ID_LEN]; /* only read while encoding below */
    wb_msg_t *m = new_msg(d, WB_TAG_HELLO);
    m->u.hello.device_id = wb_platform_load_device_id(id) ? id : NULL;
    fill_info(d, &m->u.hello.info);
    send_out(d, -1);
}

/* ------------------------------------------------------------------ results */

static void send_result(wb_device_t *d, wb_str_t app_id, uint32_t run_id, uint32_t reply_to,
                        const wb_run_result_t *r)
{
    wb_msg_t *m = new_msg(d, WB_TAG_EXECUTION_RESULT);
    m->u.execution_result.app_id = app_id;
    m->u.execution_result.run_id = run_id;
    m->u.execution_result.outcome = (uint8_t)(r ? r->outcome : WB_OUTCOME_STOPPED);
    if (r) {
        size_t nv = r->n_values > WB_MAX_ARGS ? WB_MAX_ARGS : r->n_values;
        m->u.execution_result.values.n = r->outcome == WB_OUTCOME_RETURNED ? nv : 0;
        for (size_t i = 0; i < m->u.execution_result.values.n; i++) {
            wb_value_to_wire(&r->values[i], &m->u.execution_result.values.items[i]);
        }
        m->u.execution_result.fuel_used = r->fuel_used;
        m->u.execution_result.duration_us = r->duration_us;
        const char *nul = memchr(r->detail, 0, sizeof(r->detail));
        size_t dl = nul ? (size_t)(nul - r->detail) : sizeof(r->detail);
        m->u.execution_result.detail.ptr = (const uint8_t *)r->detail;
        m->u.execution_result.detail.len = utf8_prefix((const uint8_t *)r->detail, dl, WB_MAX_REASON);
        /* the log is truncated so that the frame fits the peer's limit and our buffer */
        size_t limit = d->sess.peer_max_frame;
        if (limit > sizeof(d->tx) - WB_FRAME_HEADER) limit = sizeof(d->tx) - WB_FRAME_HEADER;
        size_t base = wb_msg_encode_frame(m, d->tx, sizeof(d->tx));
        size_t log_len = r->log_len > WB_MAX_LOG ? WB_MAX_LOG : r->log_len;
        size_t room = (base && base - WB_FRAME_HEADER + 3 < limit)
                          ? limit - (base - WB_FRAME_HEADER) - 3
                          : 0;
        m->u.execution_result.log.ptr = r->log;
        m->u.execution_result.log.len = log_len < room ? log_len : room;
    } else { /* stopped before it started: the runtimes' words for a stopped run */
        m->u.execution_result.detail = cstr("stopped on request");
    }
    send_out(d, reply_to);
}

/* ------------------------------------------------------------------ result outbox */
/* Every result is kept until its ResultAck (docs/protocol.md, section 11), in RAM. */

/* The unacknowledged result that came first after the one numbered after_seq (0: of all). */
static int oldest_unacked(const wb_device_t *d, uint32_t after_seq)
{
    int best = -1;
    for (int i = 0; i < WB_RESULT_OUTBOX; i++) {
        const wb_outbox_entry_t *e = &d->outbox[i];
        if (e->state != WB_OUT_UNACKED || e->seq <= after_seq) continue;
        if (best < 0 || e->seq < d->outbox[best].seq) best = i;
    }
    return best;
}

/* An entry for a new result: a free one, else the oldest unacknowledged result is dropped
 * (logged, counted). Never the run in progress: at most one entry is RUNNING. */
static wb_outbox_entry_t *outbox_reserve(wb_device_t *d, const wb_app_id_t *id, uint32_t run_id,
                                         uint32_t reply_to)
{
    int slot = -1;
    for (int i = 0; i < WB_RESULT_OUTBOX && slot < 0; i++) {
        if (d->outbox[i].state == WB_OUT_FREE) slot = i;
    }
    if (slot < 0) {
        slot = oldest_unacked(d, 0);
        wb_platform_log("wb: result outbox full: result of %s run %lu dropped unacknowledged",
                        d->outbox[slot].id.id, (unsigned long)d->outbox[slot].run_id);
        d->stats_results_dropped++;
    }
    wb_outbox_entry_t *e = &d->outbox[slot];
    e->state = WB_OUT_RUNNING;
    e->seq = 0; /* numbered when its result is in: results go out in the order they ended */
    e->id = *id;
    e->run_id = run_id;
    e->reply_to = reply_to;
    e->ran = false;
    return e;
}

static void send_entry(wb_device_t *d, const wb_outbox_entry_t *e)
{
    send_result(d, id_str(&e->id), e->run_id, e->reply_to, e->ran ? &e->result : NULL);
}

/* The entry holds its result: it waits for the ResultAck, sent now if the session is up,
 * else after the next Welcome. */
static void outbox_commit(wb_device_t *d, wb_outbox_entry_t *e)
{
    e->state = WB_OUT_UNACKED;
    e->seq = ++d->outbox_seq;
    if (d->established) send_entry(d, e);
}

/* After a Welcome: every unacknowledged result again, oldest first. */
static void outbox_resend(wb_device_t *d)
{
    uint32_t seq = 0;
    for (int i; (i = oldest_unacked(d, seq)) >= 0;) {
        seq = d->outbox[i].seq;
        send_entry(d, &d->outbox[i]);
    }
}

/* ResultAck: the gateway holds that result; one that matches nothing (a repeat) is harmless. */
static void on_result_ack(wb_device_t *d, const wb_msg_t *in)
{
    for (int i = 0; i < WB_RESULT_OUTBOX; i++) {
        wb_outbox_entry_t *e = &d->outbox[i];
        if (e->state == WB_OUT_UNACKED && e->run_id == in->u.result_ack.run_id &&
            id_eq(&e->id, in->u.result_ack.app_id)) {
            e->state = WB_OUT_FREE;
            return;
        }
    }
}

static void set_app_state(wb_device_t *d, int app, uint8_t st)
{
    if (app >= 0 && d->apps[app].used) d->apps[app].state = st;
}

/* ------------------------------------------------------------------ deployment */

static void deploy_ack(wb_device_t *d, wb_str_t app_id, uint32_t reply_to, wb_error_t code,
                       const char *reason)
{
    wb_msg_t *m = new_msg(d, WB_TAG_DEPLOY_ACK);
    m->u.deploy_ack.app_id = app_id;
    m->u.deploy_ack.code = (uint16_t)code;
    m->u.deploy_ack.reason = cstr(reason);
    m->u.deploy_ack.reason.len = utf8_prefix(m->u.deploy_ack.reason.ptr,
                                             m->u.deploy_ack.reason.len, WB_MAX_REASON);
    send_out(d, reply_to);
}

/* Validate the complete module in `slot` and install it as `id` (DeployAck either way). */
static void install(wb_device_t *d, const wb_app_id_t *id, uint8_t slot,
                    const wb_limits_t *limits, uint32_t reply_to)
{
    static char detail[WB_MAX_REASON];
    detail[0] = 0;
    int app = find_app(d, id_str(id));
    if (wb_runtime_validate(slot_data(d, slot), d->slots[slot].size, detail, sizeof(detail)) !=
        WB_OK) {
        set_app_state(d, app, WB_APP_FAILED);
        free_slot_if_unused(d, slot);
        deploy_ack(d, id_str(id), reply_to, WB_ERR_INVALID_MODULE,
                   detail[0] ? detail : "invalid module");
        return;
    }
    if (app < 0) {
        for (int i = 0; i < (int)d->cfg.max_apps; i++) {
            if (!d->apps[i].used) {
                app = i;
                d->apps[i].used = true;
                d->apps[i].slot = WB_NO_SLOT;
                d->apps[i].ran = false;
                d->apps[i].id = *id;
                break;
            }
        }
        if (app < 0) {
            free_slot_if_unused(d, slot);
            deploy_ack(d, id_str(id), reply_to, WB_ERR_NO_SPACE, "application table full");
            return;
        }
    }
    uint8_t old = d->apps[app].slot;
    d->apps[app].slot = slot;
    d->apps[app].limits = *limits;
    d->apps[app].state = WB_APP_INSTALLED;
    if (old != slot) free_slot_if_unused(d, old);
    wb_platform_log("wb: installed %s (%u bytes)", id->id, (unsigned)d->slots[slot].size);
    deploy_ack(d, id_str(id), reply_to, WB_OK, "");
}

/* A free slot, else the oldest slot nothing uses: a partial transfer, or a complete module no
 * app refers to (its transfer completed during a run and a new DeployBegin replaced it before
 * it could be validated). Both stay reusable by digest until evicted. -1: all in use. */
static int alloc_slot(wb_device_t *d)
{
    int oldest = -1;
    for (int i = 0; i < d->n_slots; i++) {
        if (d->slots[i].state == WB_SLOT_FREE) return i;
        if (!slot_in_use(d, (uint8_t)i) &&
            (oldest < 0 || d->slots[i].age < d->slots[oldest].age)) {
            oldest = i;
        }
    }
    return oldest;
}

static void on_deploy_begin(wb_device_t *d, const wb_msg_t *in)
{
    const __typeof__(in->u.deploy_begin) *b = &in->u.deploy_begin;
    uint32_t mid = in->message_id;
    int app = find_app(d, b->app_id);
    if (b->size > max_module(d)) {
        char why[64];
        snprintf(why, sizeof(why), "%lu bytes exceeds max_module_size %lu",
                 (unsigned long)b->size, (unsigned long)max_module(d));
        deploy_ack(d, b->app_id, mid, WB_ERR_MODULE_TOO_LARGE, why);
        return;
    }
    if (app < 0) {
        int n = 0;
        for (int i = 0; i < (int)d->cfg.max_apps; i++) n += d->apps[i].used;
        if (n >= (int)d->cfg.max_apps) {
            deploy_ack(d, b->app_id, mid, WB_ERR_NO_SPACE, "application table full");
            return;
        }
    }
    if (b->size == 0 || b->chunk_size == 0) {
        deploy_ack(d, b->app_id, mid, WB_ERR_INVALID_MODULE, "empty module or chunk size");
        return;
    }
    d->xfer.active = false; /* one deployment at a time: a new begin replaces the old one */
    set_app_state(d, app, WB_APP_DEPLOYING);
    wb_app_id_t id;
    set_id(&id, b->app_id);
    int slot = find_slot(d, b->digest, WB_SLOT_COMPLETE);
    if (slot >= 0) { /* idempotent by digest: already held */
        wb_msg_t *m = new_msg(d, WB_TAG_DEPLOY_READY);
        m->u.deploy_ready.app_id = b->app_id;
        m->u.deploy_ready.offset = b->size;
        send_out(d, mid);
        if (d->run.active) { /* the runtime is busy: validate after the run */
            d->xfer = (wb_transfer_t){.validate_pending = true, .id = id, .begin_id = mid,
                                      .slot = (uint8_t)slot, .size = b->size,
                                      .chunk_size = b->chunk_size, .limits = b->limits};
            return;
        }
        install(d, &id, (uint8_t)slot, &b->limits, mid);
        return;
    }
    uint32_t offset = 0;
    slot = find_slot(d, b->digest, WB_SLOT_PARTIAL);
    if (slot >= 0 && (d->slots[slot].held >= b->size || d->xfer.validate_pending)) {
        d->slots[slot].state = WB_SLOT_FREE; /* a stale partial of another length */
        slot = -1;
    }
    if (slot < 0) {
        slot = alloc_slot(d);
        if (slot < 0) {
            deploy_ack(d, b->app_id, mid, WB_ERR_NO_SPACE, "module store full");
            return;
        }
        d->slots[slot].state = WB_SLOT_PARTIAL;
        memcpy(d->slots[slot].digest, b->digest, WB_DIGEST_LEN);
        d->slots[slot].held = 0;
    }
    offset = d->slots[slot].held;
    d->slots[slot].size = b->size;
    d->slots[slot].age = ++d->age;
    d->xfer = (wb_transfer_t){.active = true, .id = id, .begin_id = mid,
                              .slot = (uint8_t)slot, .size = b->size,
                              .chunk_size = b->chunk_size, .limits = b->limits};
    wb_msg_t *m = new_msg(d, WB_TAG_DEPLOY_READY);
    m->u.deploy_ready.app_id = b->app_id;
    m->u.deploy_ready.offset = offset;
    send_out(d, mid);
}

static void on_deploy_chunk(wb_device_t *d, const wb_msg_t *in)
{
    const __typeof__(in->u.deploy_chunk) *c = &in->u.deploy_chunk;
    wb_transfer_t *t = &d->xfer;
    if ((t->active || t->done) && id_eq(&t->id, c->app_id)) {
        /* a repeat of bytes already held (a duplicated chunk): ignored, not acknowledged
         * (docs/protocol.md, section 10) */
        uint32_t held = t->active ? d->slots[t->slot].held : t->size;
        if (c->offset < held && (uint64_t)c->offset + c->data.len <= held) return;
    }
    if (!t->active || !id_eq(&t->id, c->app_id)) {
        send_error(d, WB_ERR_UNKNOWN_APP, "no transfer for this app_id");
        return;
    }
    wb_slot_t *s = &d->slots[t->slot];
    if (c->data.len > t->chunk_size || (uint64_t)c->offset + c->data.len > t->size) {
        send_error(d, WB_ERR_BAD_OFFSET, "chunk beyond the announced size");
        return;
    }
    if (c->offset != s->held) {
        send_error(d, WB_ERR_BAD_OFFSET, "chunk does not continue the transfer");
        return;
    }
    if (c->data.len) memcpy(slot_data(d, t->slot) + c->offset, c->data.ptr, c->data.len);
    s->held += (uint32_t)c->data.len;
    wb_msg_t *m = new_msg(d, WB_TAG_CHUNK_ACK);
    m->u.chunk_ack.app_id = c->app_id;
    m->u.chunk_ack.next_offset = s->held;
    send_out(d, in->message_id);
    if (s->held != t->size) return;
    t->active = false;
    t->done = true;
    uint8_t digest[WB_DIGEST_LEN];
    wb_platform_sha256(slot_data(d, t->slot), s->size, digest);
    if (memcmp(digest, s->digest, WB_DIGEST_LEN) != 0) {
        s->state = WB_SLOT_FREE; /* discarded: a new attempt starts at 0 */
        set_app_state(d, find_app(d, c->app_id), WB_APP_FAILED);
        deploy_ack(d, c->app_id, t->begin_id, WB_ERR_DIGEST_MISMATCH,
                   "SHA-256 of the received module differs from the announced digest");
        return;
    }
    s->state = WB_SLOT_COMPLETE;
    if (d->run.active) {
        t->validate_pending = true;
        return;
    }
    install(d, &t->id, t->slot, &t->limits, t->begin_id);
}

/* ------------------------------------------------------------------ runs */

static int queued_index(wb_device_t *d, int app)
{
    for (int i = 0; i < d->n_runq; i++) {
        if (d->runq[i].app == app) return i;
    }
    return -1;
}

static void start_ack(wb_device_t *d, const wb_msg_t *in, wb_error_t code, const char *reason)
{
    wb_msg_t *m = new_msg(d, WB_TAG_START_ACK);
    m->u.start_ack.app_id = in->u.start_app.app_id;
    m->u.start_ack.run_id = in->u.start_app.run_id;
    m->u.start_ack.code = (uint16_t)code;
    m->u.start_ack.reason = cstr(reason);
    send_out(d, in->message_id);
}

static void on_start_app(wb_device_t *d, const wb_msg_t *in)
{
    const __typeof__(in->u.start_app) *s = &in->u.start_app;
    int app = find_app(d, s->app_id);
    if (app < 0) {
        start_ack(d, in, WB_ERR_UNKNOWN_APP, "not installed");
        return;
    }
    if (d->apps[app].ran && d->apps[app].last_run_id == s->run_id) {
        /* a repeat of the StartApp already accepted (docs/protocol.md, section 11): answered
         * again, nothing runs twice, its one ExecutionResult goes (or went) out */
        start_ack(d, in, WB_OK, "");
        return;
    }
    if ((d->run.active && d->run.app == app) || queued_index(d, app) >= 0) {
        start_ack(d, in, WB_ERR_BUSY, "already running");
        return;
    }
    if (d->n_runq >= WB_RUN_QUEUE) {
        start_ack(d, in, WB_ERR_BUSY, "run queue full");
        return;
    }
    wb_queued_run_t *q = &d->runq[d->n_runq++];
    q->app = (uint8_t)app;
    q->run_id = s->run_id;
    q->reply_to = in->message_id;
    memcpy(q->entry, s->entry.ptr, s->entry.len);
    q->entry[s->entry.len] = 0;
    q->n_args = (uint8_t)s->args.n;
    for (size_t i = 0; i < s->args.n; i++) wb_value_from_wire(&s->args.items[i], &q->args[i]);
    d->apps[app].state = WB_APP_RUNNING;
    d->apps[app].ran = true;
    d->apps[app].last_run_id = s->run_id;
    start_ack(d, in, WB_OK, "");
}

static void stop_ack(wb_device_t *d, wb_str_t app_id, uint32_t reply_to, wb_error_t code,
                     const char *reason)
{
    wb_msg_t *m = new_msg(d, WB_TAG_STOP_ACK);
    m->u.stop_ack.app_id = app_id;
    m->u.stop_ack.code = (uint16_t)code;
    m->u.stop_ack.reason = cstr(reason);
    send_out(d, reply_to);
}

static void finish_stop(wb_device_t *d, int app, bool remove)
{
    d->apps[app].state = WB_APP_STOPPED;
    if (remove) {
        uint8_t slot = d->apps[app].slot;
        d->apps[app].used = false;
        free_slot_if_unused(d, slot);
    }
}

static void on_stop_app(wb_device_t *d, const wb_msg_t *in)
{
    const __typeof__(in->u.stop_app) *s = &in->u.stop_app;
    int app = find_app(d, s->app_id);
    if (app < 0) {
        stop_ack(d, s->app_id, in->message_id, WB_ERR_UNKNOWN_APP, "not installed");
        return;
    }
    if (d->run.active && d->run.app == app) {
        /* the run ends STOPPED; its ExecutionResult, then the StopAck, follow the run */
        d->run.stop = true;
        d->run.stop_pending = true;
        d->run.stop_remove = s->remove;
        d->run.stop_reply_to = in->message_id;
        return;
    }
    int q = queued_index(d, app);
    if (q >= 0) { /* accepted but not started yet: it ends STOPPED at once */
        wb_queued_run_t run = d->runq[q];
        memmove(&d->runq[q], &d->runq[q + 1], (size_t)(d->n_runq - q - 1) * sizeof(run));
        d->n_runq--;
        outbox_commit(d, outbox_reserve(d, &d->apps[app].id, run.run_id, run.reply_to));
    }
    finish_stop(d, app, s->remove);
    stop_ack(d, s->app_id, in->message_id, WB_OK, "");
}

/* ------------------------------------------------------------------ dispatch */

static void on_message(wb_device_t *d, const wb_msg_t *in)
{
    uint64_t now = wb_platform_now_ms();
    switch (in->tag) {
    case WB_TAG_WELCOME:
        wb_platform_store_device_id(in->u.welcome.device_id);
        d->established = true;
        d->hb_interval_ms = in->u.welcome.heartbeat_interval_ms ? in->u.welcome.heartbeat_interval_ms : 1;
        d->next_hb_ms = now;
        d->last_ack_ms = now;
        {
            char hex[2 * WB_DEVICE_ID_LEN + 1];
            for (int i = 0; i < WB_DEVICE_ID_LEN; i++) {
                static const char digits[] = "0123456789abcdef";
                hex[2 * i] = digits[in->u.welcome.device_id[i] >> 4];
                hex[2 * i + 1] = digits[in->u.welcome.device_id[i] & 15];
            }
            hex[2 * WB_DEVICE_ID_LEN] = 0;
            wb_platform_log("wb: online as %s (enrolled_now=%d)", hex,
                            (int)in->u.welcome.enrolled_now);
        }
        outbox_resend(d);
        break;
    case WB_TAG_ENROLL_CHALLENGE: {
        static uint8_t spki[WB_MAX_KEY], sig[WB_MAX_SIGNATURE];
        uint8_t data[WB_ENROLL_CONTEXT_LEN + WB_NONCE_LEN];
        memcpy(data, wb_enroll_context, WB_ENROLL_CONTEXT_LEN);
        memcpy(data + WB_ENROLL_CONTEXT_LEN, in->u.enroll_challenge.nonce, WB_NONCE_LEN);
        size_t klen = wb_platform_public_key(spki, sizeof(spki));
        size_t slen = klen ? wb_platform_sign(data, sizeof(data), sig, sizeof(sig)) : 0;
        if (slen == 0) {
            send_error(d, WB_ERR_INTERNAL, "no device key");
            break;
        }
        wb_msg_t *m = new_msg(d, WB_TAG_ENROLL_PROOF);
        m->u.enroll_proof.public_key = str_of((const char *)spki, klen);
        m->u.enroll_proof.signature = str_of((const char *)sig, slen);
        send_out(d, in->message_id);
        break;
    }
    case WB_TAG_ENROLL_REJECT:
        wb_platform_log("wb: enrollment rejected: %s: %.*s",
                        wb_error_name(in->u.enroll_reject.code),
                        (int)in->u.enroll_reject.reason.len,
                        (const char *)in->u.enroll_reject.reason.ptr);
        d->rejected = true;
        break;
    case WB_TAG_ERROR:
        wb_platform_log("wb: gateway error %s: %.*s", wb_error_name(in->u.error.code),
                        (int)in->u.error.reason.len, (const char *)in->u.error.reason.ptr);
        if (in->u.error.code == WB_ERR_REVOKED || in->u.error.code == WB_ERR_PAIRING_DISABLED) {
            d->rejected = true;
        }
        break;
    case WB_TAG_HEARTBEAT_ACK:
        d->last_ack_ms = now;
        break;
    case WB_TAG_DEVICE_INFO_REQUEST:
        fill_info(d, &new_msg(d, WB_TAG_DEVICE_INFO_REPORT)->u.device_info_report.info);
        send_out(d, in->message_id);
        break;
    case WB_TAG_DEPLOY_BEGIN:
        on_deploy_begin(d, in);
        break;
    case WB_TAG_DEPLOY_CHUNK:
        on_deploy_chunk(d, in);
        break;
    case WB_TAG_START_APP:
        on_start_app(d, in);
        break;
    case WB_TAG_STOP_APP:
        on_stop_app(d, in);
        break;
    case WB_TAG_RESULT_ACK:
        on_result_ack(d, in);
        break;
    default:
        break;
    }
}

static void send_heartbeat(wb_device_t *d)
{
    wb_msg_t *m = new_msg(d, WB_TAG_HEARTBEAT);
    m->u.heartbeat.uptime_ms = wb_platform_now_ms();
    m->u.heartbeat.memory_free = memory_free(d);
    size_t n = 0;
    for (int i = 0; i < (int)d->cfg.max_apps; i++) {
        const wb_app_t *a = &d->apps[i];
        if (!a->used) continue;
        m->u.heartbeat.apps.items[n].app_id = id_str(&a->id);
        m->u.heartbeat.apps.items[n].digest = d->slots[a->slot].digest;
        m->u.heartbeat.apps.items[n].state = a->state;
        n++;
    }
    m->u.heartbeat.apps.n = n;
    send_out(d, -1);
}

/* Read and handle what is available (bounded), keep the link alive. Safe during a run. */
static void service(wb_device_t *d)
{
    if (d->in_service) return;
    d->in_service = true;
    uint64_t now = wb_platform_now_ms();
    switch (d->link) {
    case WB_L_DOWN:
        if (now >= d->next_connect_ms) {
            if (d->tr->connect(d->tr) < 0) {
                d->link = WB_L_CONNECTING; /* close_link schedules the retry */
                close_link(d);
            } else {
                d->link = WB_L_CONNECTING;
            }
        }
        break;
    case WB_L_CONNECTING: {
        wb_link_state_t st = d->tr->poll(d->tr);
        if (st == WB_LINK_UP) link_up(d);
        else if (st == WB_LINK_DOWN) close_link(d);
        break;
    }
    default: {
        if (d->tr->poll(d->tr) == WB_LINK_DOWN) {
            close_link(d);
            break;
        }
        for (int frames = 0; frames < WB_MAX_FRAMES_PER_POLL && d->link == WB_L_UP &&
                             !d->link_broken && d->sess.state != WB_ST_CLOSED;) {
            uint8_t *dst;
            size_t want = wb_framer_want(&d->fr, &dst);
            int n = d->tr->read(d->tr, dst, want);
            if (n < 0) {
                d->link_broken = true;
                break;
            }
            if (n == 0) break;
            /* any byte proves the link alive: a large frame can take longer than the
             * dead-link limit to trickle through a slow UART */
            d->last_ack_ms = wb_platform_now_ms();
            wb_error_t code = WB_OK;
            wb_frame_status_t fs = wb_framer_commit(&d->fr, (size_t)n, &code);
            if (fs == WB_FRAME_ERROR) {
                d->stats_violations++;
                send_error(d, code, code == WB_ERR_MALFORMED ? "empty frame"
                                                             : "frame exceeds max_frame_size");
                break;
            }
            if (fs != WB_FRAME_READY) continue;
            frames++;
            const char *why = "";
            wb_error_t err = wb_session_receive(&d->sess, d->fr.buf + WB_FRAME_HEADER,
                                                d->fr.len, &d->in, &why);
            if (err != WB_OK) {
                d->stats_violations++;
                /* wb_session_receive closed the session; Error still goes out */
                d->sess.state = WB_ST_ESTABLISHED;
                send_error(d, err, why);
                d->sess.state = WB_ST_CLOSED;
            } else {
                d->last_ack_ms = wb_platform_now_ms(); /* any frame proves the link alive */
                on_message(d, &d->in);
            }
            wb_framer_consume(&d->fr);
        }
        now = wb_platform_now_ms();
        if (!d->established && d->link == WB_L_UP && !d->link_broken &&
            now - d->link_up_ms > (uint64_t)d->cfg.setup_timeout_ms) {
            wb_platform_log("wb: no Welcome within %u ms of the link coming up: giving up",
                            (unsigned)d->cfg.setup_timeout_ms);
            close_link(d);
            break;
        }
        if (d->established && d->sess.state == WB_ST_ESTABLISHED && !d->link_broken) {
            if (d->silent) { /* nothing sent, nothing owed */
                d->last_ack_ms = now;
                d->next_hb_ms = now + d->hb_interval_ms;
            }
            if (d->tr->last_rx_ms != NULL) {
                uint64_t rx = d->tr->last_rx_ms(d->tr);
                if (rx > d->last_ack_ms && rx <= now) d->last_ack_ms = rx;
            }
            if (now - d->last_ack_ms > (uint64_t)WB_DEAD_AFTER_INTERVALS * d->hb_interval_ms) {
                wb_platform_log("wb: nothing from the gateway for %u ms: link presumed dead",
                                (unsigned)(now - d->last_ack_ms));
                d->stats_dead_links++;
                close_link(d);
                break;
            }
            if (now >= d->next_hb_ms) {
#ifndef WB_CONFORMANCE_BREAK_NO_HEARTBEAT
                send_heartbeat(d);
#else /* the conformance suite's self-check image: never a heartbeat */
                (void)send_heartbeat;
#endif
                d->next_hb_ms += d->hb_interval_ms;
                if (d->next_hb_ms <= now) d->next_hb_ms = now + d->hb_interval_ms;
            }
        }
        if (d->link_broken || d->sess.state == WB_ST_CLOSED) close_link(d);
        break;
    }
    }
    d->in_service = false;
}

void wb_device_service_during_run(void)
{
    if (g_dev != NULL && g_dev->run.active) service(g_dev);
}

static void execute_next_run(wb_device_t *d)
{
    if (d->n_runq == 0 || d->run.active) return;
    wb_queued_run_t q = d->runq[0];
    memmove(&d->runq[0], &d->runq[1], (size_t)(d->n_runq - 1) * sizeof(q));
    d->n_runq--;
    wb_app_t *app = &d->apps[q.app];
    d->run.active = true;
    d->run.app = q.app;
    d->run.slot = app->slot;
    d->run.run_id = q.run_id;
    d->run.reply_to = q.reply_to;
    d->run.stop = false;
    d->run.stop_pending = false;
    /* the runtime writes the result into its outbox entry (RUNNING: never dropped) */
    wb_outbox_entry_t *out = outbox_reserve(d, &app->id, q.run_id, q.reply_to);
    memset(&out->result, 0, sizeof(out->result));
    out->ran = true;
    g_dev = d;
    wb_limits_t limits = app->limits;
    wb_runtime_run(slot_data(d, app->slot), d->slots[app->slot].size, q.entry, q.args, q.n_args,
                   &limits, &d->run.stop, &out->result);
    d->run.active = false;
    out->result.detail[sizeof(out->result.detail) - 1] = 0;
    wb_outcome_t o = out->result.outcome;
    app->state = o == WB_OUTCOME_STOPPED    ? WB_APP_STOPPED
                 : o == WB_OUTCOME_RETURNED ? WB_APP_INSTALLED
                                            : WB_APP_FAILED;
    outbox_commit(d, out);
    if (d->run.stop_pending) {
        d->run.stop_pending = false;
        wb_app_id_t id = app->id;
        finish_stop(d, q.app, d->run.stop_remove);
        stop_ack(d, id_str(&id), d->run.stop_reply_to, WB_OK, "");
    }
    free_slot_if_unused(d, d->run.slot); /* replaced or removed during the run */
    if (d->xfer.validate_pending) {
        d->xfer.validate_pending = false;
        install(d, &d->xfer.id, d->xfer.slot, &d->xfer.limits, d->xfer.begin_id);
    }
    if (d->link_broken) close_link(d);
}

/* ------------------------------------------------------------------ API */

wb_device_t *wb_device_init(void *storage, const wb_device_config_t *config,
                            wb_transport_t *transport)
{
    if (storage == NULL || config == NULL || transport == NULL ||
        config->max_frame_size < WB_MIN_FRAME || config->max_frame_size > WB_MAX_FRAME_LIMIT ||
        config->frame_buffer == NULL ||
        config->frame_buffer_size < (size_t)config->max_frame_size + WB_FRAME_HEADER ||
        config->window == 0 || config->max_apps == 0) {
        return NULL;
    }
    wb_device_t *d = storage;
    memset(d, 0, sizeof(*d));
    d->cfg = *config;
    if (d->cfg.max_apps > WB_MAX_APPS_CAP) d->cfg.max_apps = WB_MAX_APPS_CAP;
    d->tr = transport;
    d->n_slots = (uint8_t)(d->cfg.max_apps + 1);
    d->slot_size = (uint32_t)((d->cfg.module_store_size / d->n_slots) & ~(size_t)3);
    if (d->cfg.backoff_initial_ms == 0) d->cfg.backoff_initial_ms = WB_BACKOFF_INITIAL_MS;
    if (d->cfg.backoff_max_ms == 0) d->cfg.backoff_max_ms = WB_BACKOFF_MAX_MS;
    if (d->cfg.reject_backoff_ms == 0) d->cfg.reject_backoff_ms = WB_REJECT_BACKOFF_MS;
    if (d->cfg.setup_timeout_ms == 0) d->cfg.setup_timeout_ms = WB_SETUP_TIMEOUT_MS;
    if (d->cfg.backoff_max_ms < d->cfg.backoff_initial_ms) {
        d->cfg.backoff_max_ms = d->cfg.backoff_initial_ms;
    }
    d->backoff_ms = d->cfg.backoff_initial_ms;
    d->next_connect_ms = 0;
    d->sess.state = WB_ST_CLOSED;
    wb_framer_init(&d->fr, d->cfg.frame_buffer, d->cfg.frame_buffer_size, d->cfg.max_frame_size);
    g_dev = d;
    return d;
}

void wb_device_poll(wb_device_t *d)
{
    service(d);
    execute_next_run(d);
}

/* ------------------------------------------------------------------ test controls */

void wb_device_set_silent(wb_device_t *d, bool silent)
{
    d->silent = silent;
    wb_platform_log("wb: heartbeats %s", silent ? "silenced" : "resumed");
}

bool wb_device_console_command(wb_device_t *d, const char *line)
{
    if (strcmp(line, "silent 1") == 0) {
        wb_device_set_silent(d, true);
    } else if (strcmp(line, "silent 0") == 0) {
        wb_device_set_silent(d, false);
    } else if (strcmp(line, "forget") == 0) {
        wb_platform_forget_device_id();
        wb_platform_log("wb: device id forgotten");
    } else {
        return false;
    }
    return true;
}
