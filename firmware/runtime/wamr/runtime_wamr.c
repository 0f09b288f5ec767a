/* wb_runtime_validate / wb_runtime_run (firmware/core/include/wb/runtime.h) on WAMR 2.4.3,
 * classic interpreter, under Zephyr (built by ports/zephyr/CMakeLists.txt; zephyr_port.h there
 * gives it the port's reboot and clock).
 *
 * The wasm3 runtime guards a run from inside the interpreter (loop back-edges and calls).
 * WAMR offers two documented levers instead, and this file combines them:
 *
 *   fuel     wasm_runtime_set_instruction_count_limit(exec_env, n) (WAMR_BUILD_INSTRUCTION_
 *            METERING, classic interpreter): the interpreter counts every opcode and raises
 *            "instruction limit exceeded" -> OUT_OF_FUEL. One fuel = one dispatched opcode,
 *            block/loop/end/nop included, so WAMR counts more than wasmtime (fib: 1.15x;
 *            docs/protocol.md "Fuel, per runtime"); the limit is an int, so budgets above
 *            2^31-1 are clamped (said in the detail if they are reached). fuel_used is the
 *            budget on OUT_OF_FUEL and 0 otherwise: WAMR 2.4.3 keeps the count in a local of
 *            the interpreter loop (instructions_left) and has no API for it.
 *   stop and wall clock
 *            wasm_runtime_terminate(module_inst) from another thread: it raises "terminated by
 *            user" in the instance and, with WAMR_BUILD_THREAD_MGR, flags the exec env so the
 *            interpreter stops at its next suspend-flag check (branches, calls).
 *
 * So a run executes on a dedicated WAMR worker thread (CONFIG_WASMBED_WAMR_WORKER_PRIORITY,
 * lower than main), and the caller of wb_runtime_run() -- the device's main loop, which the
 * core expects to block until the run ends -- becomes the guard. It waits for the worker in
 * slices of CONFIG_WASMBED_WAMR_GUARD_PERIOD_MS and between two slices
 *   - checks *stop (STOPPED) and the deadline (TIMED_OUT) and asks WAMR to terminate;
 *   - every WB_RUNTIME_GUARD_HOOK_MS (20 ms) calls wb_runtime_guard_hook(), which the device
 *     loop both images share (app/app.c) points at
 *     wb_device_service_during_run(): heartbeats, StopApp and the link are served
 *     during a run exactly as with wasm3 (the core's code runs on the main thread only; the
 *     worker touches WAMR and the run result, nothing else).
 * A termination that has not landed after CONFIG_WASMBED_WAMR_TERMINATE_GRACE_MS (a runaway
 * that never reaches a check) aborts the worker thread; WAMR's state is then unusable, the
 * run reports the requested outcome and the device reboots before its next run.
 *
 * All WAMR calls are made on the worker thread (it initialised WAMR), except
 * wasm_runtime_terminate(), which is meant to be called from another thread.
 *
 * Everything that needs neither WAMR nor Zephyr -- the module scan and argument conversion
 * (runtime/common/wb_wasm_scan.c, shared with the wasm3 runtime), the exception -> outcome
 * mapping (wamr_portable.c) -- is tested on the host.
 *
 * Differences from the wasm3 runtime (see README.md): modules with a start function are
 * LOAD_FAILED (WAMR runs it inside instantiation, before any guard exists); fuel counts
 * instructions, not calls and back-edges; fuel_used is only known on OUT_OF_FUEL; validation
 * is WAMR's full loader (bodies included), not a parse; validate during a run is refused. */
#include <stdio.h>
#include <string.h>

#include <zephyr/kernel.h>

#include "runtime_wamr.h"
#include "wasm_export.h"
#include "wamr_portable.h"
#include "wb/platform.h"
#include "wb/runtime.h"
#include "zephyr_port.h"

#if !defined(WASM_ENABLE_INSTRUCTION_METERING) || WASM_ENABLE_INSTRUCTION_METERING == 0
#error "WAMR must be built with WAMR_BUILD_INSTRUCTION_METERING=1 (fuel)"
#endif
#if !defined(WASM_ENABLE_THREAD_MGR) || WASM_ENABLE_THREAD_MGR == 0
#error "WAMR must be built with WAMR_BUILD_THREAD_MGR=1 (wasm_runtime_terminate in loops)"
#endif
#if !defined(WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION) || WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION == 0
#error "WAMR must be built with WASM_ENABLE_HEAP_AUX_STACK_ALLOCATION=1: without it the thread " \
       "manager leaves a run one fifth of the module's auxiliary stack (ports/zephyr/CMakeLists.txt)"
#endif

/* Period of wb_runtime_guard_hook() during a run, in ms (same as the wasm3 runtime). */
#ifndef WB_RUNTIME_GUARD_HOOK_MS
#define WB_RUNTIME_GUARD_HOOK_MS 20u
#endif

#define POOL_BYTES ((size_t)CONFIG_WASMBED_WAMR_POOL_SIZE)
#define WASM_STACK_BYTES ((uint32_t)CONFIG_WASMBED_WAMR_WASM_STACK_SIZE)

/* Called every ~WB_RUNTIME_GUARD_HOOK_MS of a run; app.c serves the protocol from it. */
__attribute__((weak)) void wb_runtime_guard_hook(void) {}

/* ---- state --------------------------------------------------------------------------------- */

static uint8_t wamr_pool[CONFIG_WASMBED_WAMR_POOL_SIZE] __aligned(8);

K_THREAD_STACK_DEFINE(wamr_worker_stack, CONFIG_WASMBED_WAMR_WORKER_STACK_SIZE);
static struct k_thread wamr_worker;
static K_SEM_DEFINE(job_sem, 0, 1);
static K_SEM_DEFINE(done_sem, 0, 1);

typedef enum { JOB_INIT, JOB_VALIDATE, JOB_RUN } job_kind_t;

/* One job at a time; written by the caller before job_sem, read by the worker. */
static struct {
    job_kind_t kind;
    const uint8_t *wasm;
    size_t len;
    const char *entry;
    const wb_wamr_plan_t *plan;
    /* results, written by the worker before done_sem */
    bool init_ok;
    wb_error_t verdict;
    char *detail;   /* validate: the caller's buffer */
    size_t cap;
} job;

/* A run in progress. mutex guards inst and requested (guard thread vs worker). */
static K_MUTEX_DEFINE(ctl_mutex);
static struct {
    wasm_module_inst_t inst;     /* set while the entry may be running */
    wb_outcome_t requested;      /* STOPPED / TIMED_OUT asked by the guard; RETURNED: none */
    wb_run_result_t *res;
    bool failed_early;           /* load/instantiate failed: res->outcome/detail are final */
    bool started, call_ok;
    bool host_fault;             /* env.log trapped, detail written */
    bool grow_refused;           /* a memory.grow within the limit failed for lack of pool */
    bool memory_exported;
    uint64_t memory_bytes;
    char exception[128];
} ctl;

static bool busy;      /* a run is in progress (caller side) */
static bool started;   /* wb_wamr_start() succeeded */
static bool wedged;    /* the worker was aborted: WAMR must not be used again before reboot */

/* ---- helpers (worker thread) --------------------------------------------------------------- */

static uint64_t memory_size(wasm_module_inst_t inst)
{
    wasm_memory_inst_t mem = wasm_runtime_get_default_memory(inst);
    if (!mem) {
        return 0;
    }
    return wasm_memory_get_cur_page_count(mem) * wasm_memory_get_bytes_per_page(mem);
}

/* env.log(ptr i32, len i32): append memory[ptr, ptr+len) to the run's log (truncated). */
static void env_log(wasm_exec_env_t exec_env, uint32_t ptr, uint32_t len)
{
    wasm_module_inst_t inst = wasm_runtime_get_module_inst(exec_env);
    wb_run_result_t *res = ctl.res;
    if (!res) {
        wasm_runtime_set_exception(inst, "env.log: called outside of a run");
        return;
    }
    if (!wb_wasm_log_allowed(ctl.memory_exported, memory_size(inst), ptr, len, res->detail,
                             sizeof(res->detail))) {
        ctl.host_fault = true;
        wasm_runtime_set_exception(inst, "env.log: out of range");
        return;
    }
    size_t room = WB_MAX_LOG - res->log_len;
    size_t n = len < room ? len : room;
    if (n) {
        const uint8_t *src = wasm_runtime_addr_app_to_native(inst, ptr);
        if (!src) {
            ctl.host_fault = true;
            wb_wasm_log_allowed(ctl.memory_exported, 0, ptr, len, res->detail,
                                sizeof(res->detail));
            wasm_runtime_set_exception(inst, "env.log: out of range");
            return;
        }
        memcpy(res->log + res->log_len, src, n);
        res->log_len += n;
    }
}

/* WAMR keeps a pointer to this array (it must stay writable and alive). */
static NativeSymbol env_natives[] = {
    {.symbol = "log", .func_ptr = (void *)env_log, .signature = "(ii)", .attachment = NULL},
};

/* memory.grow failed: remember it when the pool, not the limit, refused. */
static void on_grow_failed(uint32_t inc_page_count, uint64_t current_memory_size,
                           uint32_t memory_index, enlarge_memory_error_reason_t reason,
                           wasm_module_inst_t instance, wasm_exec_env_t exec_env,
                           void *user_data)
{
    (void)inc_page_count, (void)current_memory_size, (void)memory_index;
    (void)instance, (void)exec_env, (void)user_data;
    if (reason == INTERNAL_ERROR) {
        ctl.grow_refused = true;
    }
}

static bool worker_init(void)
{
    RuntimeInitArgs args;
    memset(&args, 0, sizeof(args));
    args.mem_alloc_type = Alloc_With_Pool;
    args.mem_alloc_option.pool.heap_buf = wamr_pool;
    args.mem_alloc_option.pool.heap_size = (uint32_t)sizeof(wamr_pool);
    args.running_mode = Mode_Interp;
    if (!wasm_runtime_full_init(&args)) {
        wb_platform_log("wamr: wasm_runtime_full_init failed (pool of %lu bytes)",
                        (unsigned long)sizeof(wamr_pool));
        return false;
    }
    if (!wasm_runtime_register_natives("env", env_natives,
                                       sizeof(env_natives) / sizeof(env_natives[0]))) {
        wb_platform_log("wamr: cannot register env.log");
        return false;
    }
    wasm_runtime_set_enlarge_mem_error_callback(on_grow_failed, NULL);
    uint32_t major = 0, minor = 0, patch = 0;
    wasm_runtime_get_version(&major, &minor, &patch);
    wb_platform_log("wamr: %lu.%lu.%lu, classic interpreter, pool %lu bytes",
                    (unsigned long)major, (unsigned long)minor, (unsigned long)patch,
                    (unsigned long)sizeof(wamr_pool));
    return true;
}

/* A private, writable copy: WAMR's loader may rewrite the buffer it is given and keeps
 * pointing into it until wasm_runtime_unload(); the module store must stay intact. With a plan
 * (a run), the copy carries the memory limit as the memory's declared maximum
 * (wb_wamr_patch_memory_max: WAMR's max_memory_pages cannot say "less than one page"); *n is
 * the copy's length. NULL with the reason in why (the pool is full: WAMR's own words). */
static uint8_t *copy_module(const uint8_t *wasm, size_t len, const wb_wamr_plan_t *plan,
                            uint32_t *n, char *why, size_t why_cap)
{
    snprintf(why, why_cap, "allocate memory failed");
    if (len == 0 || len > UINT32_MAX - WB_WAMR_PATCH_SLACK) {
        return NULL;
    }
    size_t cap = plan ? len + WB_WAMR_PATCH_SLACK : len;
    uint8_t *copy = wasm_runtime_malloc((unsigned int)cap);
    if (!copy) {
        return NULL;
    }
    size_t used = len;
    if (plan) {
        used = wb_wamr_patch_memory_max(wasm, len, plan->max_memory_pages, copy, cap, why,
                                        why_cap);
        if (used == 0) {
            wasm_runtime_free(copy);
            return NULL;
        }
    } else {
        memcpy(copy, wasm, len);
    }
    *n = (uint32_t)used;
    return copy;
}

static void worker_validate(void)
{
    char err[128] = "";
    uint32_t n = 0;
    uint8_t *copy = copy_module(job.wasm, job.len, NULL, &n, err, sizeof(err));
    if (!copy) {
        wb_wamr_load_failure("load", err, POOL_BYTES, job.detail, job.cap);
        job.verdict = WB_ERR_INVALID_MODULE;
        return;
    }
    wasm_module_t module = wasm_runtime_load(copy, n, err, sizeof(err));
    if (!module) {
        wb_wamr_load_failure("load", err, POOL_BYTES, job.detail, job.cap);
        job.verdict = WB_ERR_INVALID_MODULE;
    } else {
        wasm_runtime_unload(module);
        job.verdict = WB_OK;
    }
    wasm_runtime_free(copy);
}

static void fail_early(wb_outcome_t outcome)
{
    ctl.res->outcome = outcome;
    ctl.failed_early = true;
}

static void worker_run(void)
{
    const wb_wamr_plan_t *plan = job.plan;
    const wb_wasm_entry_t *e = &plan->entry;
    wb_run_result_t *res = ctl.res;
    char err[128] = "";
    wasm_module_t module = NULL;
    wasm_module_inst_t inst = NULL;
    wasm_exec_env_t env = NULL;

    uint32_t n = 0;
    uint8_t *copy = copy_module(job.wasm, job.len, plan, &n, err, sizeof(err));
    if (!copy) {
        fail_early(wb_wamr_load_failure("load", err, POOL_BYTES, res->detail,
                                        sizeof(res->detail)));
        return;
    }
    module = wasm_runtime_load(copy, n, err, sizeof(err));
    if (!module) {
        fail_early(wb_wamr_load_failure("load", err, POOL_BYTES, res->detail,
                                        sizeof(res->detail)));
        goto out;
    }
    InstantiationArgs iargs;
    memset(&iargs, 0, sizeof(iargs));
    iargs.default_stack_size = WASM_STACK_BYTES;
    iargs.host_managed_heap_size = 0;
    /* 0: WAMR takes the module's maximum, which copy_module() set to the limit (a non-zero
     * override cannot express a limit below one page, and would only repeat it). */
    iargs.max_memory_pages = 0;
    inst = wasm_runtime_instantiate_ex(module, &iargs, err, sizeof(err));
    if (!inst) {
        fail_early(wb_wamr_load_failure("instantiate", err, POOL_BYTES, res->detail,
                                        sizeof(res->detail)));
        goto out;
    }
    env = wasm_runtime_create_exec_env(inst, WASM_STACK_BYTES);
    if (!env) {
        fail_early(wb_wamr_load_failure("instantiate", "allocate memory failed", POOL_BYTES,
                                        res->detail, sizeof(res->detail)));
        goto out;
    }
    wasm_function_inst_t func = wasm_runtime_lookup_function(inst, job.entry);
    if (!func) {
        fail_early(WB_OUTCOME_LOAD_FAILED);
        strncpy(res->detail, "entry not found after instantiation", sizeof(res->detail) - 1);
        goto out;
    }
    wasm_runtime_set_instruction_count_limit(env, plan->instruction_limit);

    wasm_val_t args[WB_MAX_ARGS];
    wasm_val_t results[WB_MAX_ARGS];
    memset(args, 0, sizeof(args));
    memset(results, 0, sizeof(results));
    for (size_t i = 0; i < e->n_args; i++) {
        switch (e->args[i].type) {
        case WB_VAL_I32: args[i].kind = WASM_I32; args[i].of.i32 = e->args[i].of.i32; break;
        case WB_VAL_I64: args[i].kind = WASM_I64; args[i].of.i64 = e->args[i].of.i64; break;
        case WB_VAL_F32: args[i].kind = WASM_F32; args[i].of.f32 = e->args[i].of.f32; break;
        default: args[i].kind = WASM_F64; args[i].of.f64 = e->args[i].of.f64; break;
        }
    }
    for (size_t i = 0; i < e->n_results; i++) {
        switch (e->results[i]) {
        case WB_VAL_I32: results[i].kind = WASM_I32; break;
        case WB_VAL_I64: results[i].kind = WASM_I64; break;
        case WB_VAL_F32: results[i].kind = WASM_F32; break;
        default: results[i].kind = WASM_F64; break;
        }
    }

    /* Publish the instance, unless the guard already asked to stop (then skip the call). */
    k_mutex_lock(&ctl_mutex, K_FOREVER);
    bool go = ctl.requested == WB_OUTCOME_RETURNED;
    if (go) {
        ctl.inst = inst;
    }
    k_mutex_unlock(&ctl_mutex);

    bool ok = false;
    if (go) {
        ok = wasm_runtime_call_wasm_a(env, func, (uint32_t)e->n_results, results,
                                      (uint32_t)e->n_args, args);
    }
    k_mutex_lock(&ctl_mutex, K_FOREVER);
    ctl.inst = NULL;
    k_mutex_unlock(&ctl_mutex);

    ctl.started = go;
    ctl.call_ok = ok;
    ctl.memory_bytes = memory_size(inst);
    if (go && !ok) {
        const char *exc = wasm_runtime_get_exception(inst);
        strncpy(ctl.exception, exc ? exc : "", sizeof(ctl.exception) - 1);
        ctl.exception[sizeof(ctl.exception) - 1] = '\0';
    }
    if (ok) {
        for (size_t i = 0; i < e->n_results; i++) {
            wb_value_t *v = &res->values[i];
            switch (e->results[i]) {
            case WB_VAL_I32: v->is_float = false; v->v.i = results[i].of.i32; break;
            case WB_VAL_I64: v->is_float = false; v->v.i = results[i].of.i64; break;
            case WB_VAL_F32: v->is_float = true; v->v.f = results[i].of.f32; break;
            default: v->is_float = true; v->v.f = results[i].of.f64; break;
            }
        }
        res->n_values = e->n_results;
    }
out:
    if (env) {
        wasm_runtime_destroy_exec_env(env);
    }
    if (inst) {
        wasm_runtime_deinstantiate(inst);
    }
    if (module) {
        wasm_runtime_unload(module);
    }
    wasm_runtime_free(copy);
}

static void worker_main(void *p1, void *p2, void *p3)
{
    (void)p1, (void)p2, (void)p3;
    for (;;) {
        k_sem_take(&job_sem, K_FOREVER);
        switch (job.kind) {
        case JOB_INIT: job.init_ok = worker_init(); break;
        case JOB_VALIDATE: worker_validate(); break;
        case JOB_RUN: worker_run(); break;
        }
        k_sem_give(&done_sem);
    }
}

/* ---- the caller's side --------------------------------------------------------------------- */

size_t wb_wamr_pool_size(void)
{
    return POOL_BYTES;
}

int wb_wamr_start(void)
{
    if (started) {
        return 0;
    }
    k_thread_create(&wamr_worker, wamr_worker_stack, K_THREAD_STACK_SIZEOF(wamr_worker_stack),
                    worker_main, NULL, NULL, NULL, CONFIG_WASMBED_WAMR_WORKER_PRIORITY, 0,
                    K_NO_WAIT);
    k_thread_name_set(&wamr_worker, "wamr");
    job.kind = JOB_INIT;
    job.init_ok = false;
    k_sem_give(&job_sem);
    k_sem_take(&done_sem, K_FOREVER);
    started = job.init_ok;
    return started ? 0 : -1;
}

static void check_usable(void)
{
    if (wedged) {
        wb_zephyr_reboot("the WAMR worker was aborted by the last run; WAMR needs a fresh start");
    }
}

wb_error_t wb_runtime_validate(const uint8_t *wasm, size_t len, char *detail, size_t cap)
{
    if (cap) detail[0] = '\0';
    char why[WB_MAX_REASON];
    if (!wasm || !wb_wasm_check_framing(wasm, len, why, sizeof(why))) {
        snprintf(detail, cap, "%s", wasm ? why : "no module");
        return WB_ERR_INVALID_MODULE;
    }
    if (busy || !started) {
        snprintf(detail, cap, "%s", busy ? "runtime busy: a run is in progress"
                                         : "runtime not started");
        return WB_ERR_INVALID_MODULE;
    }
    check_usable();
    job.kind = JOB_VALIDATE;
    job.wasm = wasm;
    job.len = len;
    job.detail = detail;
    job.cap = cap;
    job.verdict = WB_ERR_INVALID_MODULE;
    k_sem_give(&job_sem);
    k_sem_take(&done_sem, K_FOREVER); /* loading is bounded: no guard needed */
    return job.verdict;
}

/* Ask for an end of the run (first request wins) and terminate the running instance. */
static void request(wb_outcome_t outcome)
{
    k_mutex_lock(&ctl_mutex, K_FOREVER);
    if (ctl.requested == WB_OUTCOME_RETURNED) {
        ctl.requested = outcome;
        if (ctl.inst) {
            wasm_runtime_terminate(ctl.inst);
        }
    }
    k_mutex_unlock(&ctl_mutex);
}

static bool in_call(void)
{
    k_mutex_lock(&ctl_mutex, K_FOREVER);
    bool running = ctl.inst != NULL;
    k_mutex_unlock(&ctl_mutex);
    return running;
}

/* The guard: wait for the worker while serving the protocol and enforcing stop and time.
 * The wall-clock budget starts when the entry is seen running (loading and instantiation,
 * which are bounded by the module's size, do not count, as with wasm3); a termination that
 * has not landed within the grace period aborts the worker. */
static void guard(const wb_limits_t *limits, volatile const bool *stop)
{
    uint64_t now = wb_platform_now_ms();
    uint64_t deadline = 0;
    bool call_seen = false;
    uint64_t last_hook = now;
    uint64_t asked_at = 0;
    for (;;) {
        if (k_sem_take(&done_sem, K_MSEC(CONFIG_WASMBED_WAMR_GUARD_PERIOD_MS)) == 0) {
            return;
        }
        now = wb_platform_now_ms();
        bool running = in_call();
        if (running && !call_seen) {
            call_seen = true;
            deadline = now + limits->timeout_ms + 1; /* now is truncated: never < N ms */
        }
        if (stop && *stop) {
            request(WB_OUTCOME_STOPPED);
        } else if (call_seen && now >= deadline) {
            request(WB_OUTCOME_TIMED_OUT);
        }
        if (now - last_hook >= WB_RUNTIME_GUARD_HOOK_MS) {
            last_hook = now;
            wb_runtime_guard_hook();
            if (stop && *stop) {
                request(WB_OUTCOME_STOPPED);
            }
        }
        if (ctl.requested != WB_OUTCOME_RETURNED && in_call()) {
            if (!asked_at) {
                asked_at = now;
            } else if (now - asked_at > CONFIG_WASMBED_WAMR_TERMINATE_GRACE_MS) {
                wb_platform_log("wamr: the run did not stop within %u ms of the request; "
                                "aborting the worker thread",
                                (unsigned)CONFIG_WASMBED_WAMR_TERMINATE_GRACE_MS);
                k_thread_abort(&wamr_worker);
                wedged = true;
                return;
            }
        }
    }
}

void wb_runtime_run(const uint8_t *wasm, size_t len, const char *entry, const wb_value_t *args,
                    size_t n_args, const wb_limits_t *limits, volatile const bool *stop,
                    wb_run_result_t *result)
{
    uint64_t start_us = wb_zephyr_now_us();
    memset(result, 0, sizeof(*result));
    if (busy) {
        result->outcome = WB_OUTCOME_LOAD_FAILED;
        snprintf(result->detail, sizeof(result->detail), "runtime busy: a run is in progress");
        return;
    }
    if (!started) {
        result->outcome = WB_OUTCOME_LOAD_FAILED;
        snprintf(result->detail, sizeof(result->detail), "runtime not started");
        return;
    }
    check_usable();
    static const wb_limits_t no_limits = {0, 0, 0};
    if (!limits) limits = &no_limits;
    if (!entry) entry = "";
    busy = true;

    static wb_wamr_plan_t plan;
    wb_outcome_t o = wb_wamr_prepare(wasm, len, entry, args, n_args, limits, &plan,
                                     result->detail, sizeof(result->detail));
    if (o != WB_OUTCOME_RETURNED) {
        result->outcome = o;
        goto done;
    }

    memset(&ctl, 0, sizeof(ctl));
    ctl.requested = WB_OUTCOME_RETURNED;
    ctl.res = result;
    ctl.memory_exported = plan.entry.memory_exported;
    /* As with wasm3: a stop already set, or a zero timeout, ends the run before the entry
     * runs, but after loading (load errors are reported first). */
    if (stop && *stop) {
        ctl.requested = WB_OUTCOME_STOPPED;
    } else if (limits->timeout_ms == 0) {
        ctl.requested = WB_OUTCOME_TIMED_OUT;
    }

    job.kind = JOB_RUN;
    job.wasm = wasm;
    job.len = len;
    job.entry = entry;
    job.plan = &plan;
    k_sem_give(&job_sem);
    guard(limits, stop);

    if (wedged) {
        result->outcome = ctl.requested;
        result->n_values = 0;
        wb_wamr_end_t end = {.requested = ctl.requested, .timeout_ms = limits->timeout_ms};
        wb_wamr_classify(&end, result->detail, sizeof(result->detail), NULL);
        size_t used = strlen(result->detail);
        snprintf(result->detail + used, sizeof(result->detail) - used,
                 " (the interpreter did not stop: the device reboots before its next run)");
        goto done;
    }
    if (!ctl.failed_early) {
        wb_wamr_end_t end = {
            .call_ok = ctl.call_ok,
            .started = ctl.started,
            .exception = ctl.exception[0] ? ctl.exception : NULL,
            .requested = ctl.call_ok ? WB_OUTCOME_RETURNED : ctl.requested,
            .host_fault = ctl.host_fault,
            .grow_refused = ctl.grow_refused,
            .memory_exported = ctl.memory_exported,
            .memory_bytes = ctl.memory_bytes,
            .fuel = limits->fuel,
            .memory_limit = limits->memory_bytes,
            .timeout_ms = limits->timeout_ms,
            .pool_bytes = POOL_BYTES,
        };
        result->outcome =
            wb_wamr_classify(&end, result->detail, sizeof(result->detail), &result->fuel_used);
    }

done:
    if (result->outcome != WB_OUTCOME_RETURNED) {
        result->n_values = 0;
    }
    ctl.res = NULL;
    busy = false;
    result->duration_us = wb_zephyr_now_us() - start_us;
}
