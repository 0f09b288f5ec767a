/* The bounded static heap wasm3 allocates from (see wb_wasm3_hooks.h). Not thread-safe: the
 * device runs one module at a time. */
#ifndef WB_WASM3_ARENA_H
#define WB_WASM3_ARENA_H

#include <stdbool.h>
#include <stddef.h>

/* Size of the arena in bytes (a static array). It holds wasm3's parsed module, compiled code,
 * value stack and the module's linear memory: a run needs roughly
 * linear memory + 4 x code size + stack (WB_WASM3_STACK_BYTES) + ~20 KB. */
#ifndef WB_WASM3_ARENA_BYTES
#define WB_WASM3_ARENA_BYTES (1536u * 1024u)
#endif

typedef struct {
    size_t capacity;    /* WB_WASM3_ARENA_BYTES */
    size_t in_use;      /* bytes handed out now (headers included) */
    size_t peak;        /* high-water mark since the last reset */
    size_t failures;    /* allocations refused since the last reset */
} wb_wasm3_arena_stats_t;

/* Forget every allocation (the start of a run: whatever the last run left is reclaimed). */
void wb_wasm3_arena_reset(void);
/* Counters since the last reset. */
void wb_wasm3_arena_stats(wb_wasm3_arena_stats_t *out);

void *wb_wasm3_calloc(size_t count, size_t size);
void *wb_wasm3_realloc(void *ptr, size_t size);
void wb_wasm3_free(void *ptr);

#endif
