/* Serving the protocol while an application runs (added by the core; see core/README.md).
 *
 * Runs are synchronous: wb_device_poll() calls wb_runtime_run(), which does not return until
 * the run ends. The runtime's guard (the code that counts fuel and checks the clock and *stop)
 * MUST call wb_device_service_during_run() periodically, ideally every few milliseconds of
 * run time (e.g. every N guard checks and at most once per millisecond). It keeps the link
 * alive: sends due heartbeats, detects a dead link, reconnects, reads and handles frames
 * (StopApp for the running app sets the *stop flag passed to wb_runtime_run). It never
 * calls back into the runtime and never starts a run. Outside a run it does nothing. */
#ifndef WB_DEVICE_SERVICE_H
#define WB_DEVICE_SERVICE_H

void wb_device_service_during_run(void);

#endif
