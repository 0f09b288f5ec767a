/* The WAMR runtime on Zephyr (runtime_wamr.c): what the Zephyr port's main.c calls before the
 * core runs anything (wb_runtime_validate / wb_runtime_run are wb/runtime.h's). */
#ifndef WB_RUNTIME_WAMR_H
#define WB_RUNTIME_WAMR_H

#include <stddef.h>

/* Start the WAMR worker thread and initialise WAMR on it (pool allocator on a static arena,
 * env.log registered). 0 or -1 (logged). */
int wb_wamr_start(void);

/* Bytes of the static arena WAMR allocates from (= DeviceInfo memory_total). */
size_t wb_wamr_pool_size(void);

#endif
