/* A small first-fit allocator over one static array, for wasm3 only.
 *
 * Blocks tile the arena from its start up to `top`; above `top` is untouched space. Each block
 * is [header][payload]; header.size is the whole block (multiple of ALIGN), header.used the
 * bytes requested (0 = free). Free neighbours are merged lazily while searching, a free block
 * that reaches `top` gives its space back to the top, and realloc grows in place when the
 * following space is free (linear memory grows page by page without copying when it is the
 * last block). wb_wasm3_arena_reset() reclaims everything, so a leak in wasm3 cannot outlive
 * a run.
 *
 * Under AddressSanitizer (host tests) payloads are unpoisoned exactly and everything else
 * (headers, padding, free space) stays poisoned, so wasm3 overruns are still caught.
 */
#undef calloc
#undef malloc
#undef realloc
#undef free

#include "wb_wasm3_arena.h"

#include <stdint.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define WB_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define WB_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#define WB_NO_ASAN __attribute__((no_sanitize_address))
#else
#define WB_POISON(p, n) ((void)(p), (void)(n))
#define WB_UNPOISON(p, n) ((void)(p), (void)(n))
#define WB_NO_ASAN
#endif

typedef struct {
    size_t size; /* whole block, header included */
    size_t used; /* requested payload bytes, 0 when free */
} header_t;

#define ALIGN (2 * sizeof(void *) > 8 ? 2 * sizeof(void *) : 8)
#define HDR (sizeof(header_t) > ALIGN ? sizeof(header_t) : ALIGN)
#define ROUND(n) (((n) + ALIGN - 1) & ~(size_t)(ALIGN - 1))

static uint8_t s_arena[WB_WASM3_ARENA_BYTES] __attribute__((aligned(16)));
static size_t s_top;
static size_t s_in_use;
static size_t s_peak;
static size_t s_failures;

WB_NO_ASAN static inline header_t *hdr_at(size_t off) { return (header_t *)(void *)(s_arena + off); }

WB_NO_ASAN static inline size_t off_of(const void *payload)
{
    return (size_t)((const uint8_t *)payload - s_arena) - HDR;
}

WB_NO_ASAN static bool is_block(const void *payload)
{
    const uint8_t *p = (const uint8_t *)payload;
    if (p < s_arena + HDR || p >= s_arena + s_top) return false;
    size_t off = off_of(p);
    if (off % ALIGN) return false;
    const header_t *h = hdr_at(off);
    return h->used != 0 && h->size >= HDR && off + h->size <= s_top;
}

WB_NO_ASAN static void account(size_t add, size_t sub)
{
    s_in_use = s_in_use + add - sub;
    if (s_in_use > s_peak) s_peak = s_in_use;
}

/* Merge the free blocks that follow `off` into it (off must be free). */
WB_NO_ASAN static void absorb_free_followers(size_t off)
{
    header_t *h = hdr_at(off);
    while (off + h->size < s_top) {
        header_t *next = hdr_at(off + h->size);
        if (next->used) break;
        h->size += next->size;
    }
}

/* Payload of block `off` becomes `n` bytes (n <= payload capacity): split off the rest. */
WB_NO_ASAN static void *take(size_t off, size_t n)
{
    header_t *h = hdr_at(off);
    size_t need = HDR + ROUND(n);
    if (h->size - need >= HDR + ALIGN) {
        header_t *rest = hdr_at(off + need);
        rest->size = h->size - need;
        rest->used = 0;
        h->size = need;
    }
    h->used = n;
    uint8_t *payload = s_arena + off + HDR;
    WB_UNPOISON(payload, n);
    return payload;
}

void wb_wasm3_arena_reset(void)
{
    s_top = 0;
    s_in_use = 0;
    s_peak = 0;
    s_failures = 0;
    WB_POISON(s_arena, sizeof s_arena);
}

void wb_wasm3_arena_stats(wb_wasm3_arena_stats_t *out)
{
    out->capacity = sizeof s_arena;
    out->in_use = s_in_use;
    out->peak = s_peak;
    out->failures = s_failures;
}

WB_NO_ASAN static void *arena_alloc(size_t n)
{
    if (n == 0) n = 1;
    if (n > sizeof s_arena) {
        s_failures++;
        return NULL;
    }
    size_t need = HDR + ROUND(n);
    size_t off = 0;
    while (off < s_top) {
        header_t *h = hdr_at(off);
        if (!h->used) {
            absorb_free_followers(off);
            if (off + h->size == s_top) { /* free space reaching the top: give it back */
                s_top = off;
                break;
            }
            if (h->size >= need) {
                void *p = take(off, n);
                account(h->size, 0); /* take() may keep a remainder too small to split */
                return p;
            }
        }
        off += h->size;
    }
    if (need > sizeof s_arena - s_top) {
        s_failures++;
        return NULL;
    }
    off = s_top;
    s_top += need;
    header_t *h = hdr_at(off);
    h->size = need;
    h->used = 0;
    account(need, 0);
    return take(off, n);
}

WB_NO_ASAN static void arena_free(void *ptr)
{
    if (!ptr) return;
    if (!is_block(ptr)) {
        /* Not ours or already freed: a wasm3 bug. Never corrupt the arena for it. */
        return;
    }
    size_t off = off_of(ptr);
    header_t *h = hdr_at(off);
    WB_POISON(ptr, h->size - HDR);
    h->used = 0;
    account(0, h->size);
    if (off + h->size == s_top) s_top = off;
}

void *wb_wasm3_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size) {
        s_failures++;
        return NULL;
    }
    size_t n = count * size;
    void *p = arena_alloc(n);
    if (p) memset(p, 0, n ? n : 1);
    return p;
}

WB_NO_ASAN void *wb_wasm3_realloc(void *ptr, size_t size)
{
    if (!ptr) return arena_alloc(size);
    if (!is_block(ptr)) return NULL;
    if (size == 0) size = 1;
    size_t off = off_of(ptr);
    header_t *h = hdr_at(off);
    size_t old_used = h->used;
    size_t old_size = h->size;
    size_t need = HDR + ROUND(size);
    if (need > sizeof s_arena) {
        s_failures++;
        return NULL;
    }
    if (h->size < need) {
        absorb_free_followers(off);
        if (h->size < need && off + h->size == s_top && off + need <= sizeof s_arena) {
            s_top = off + need; /* last block: extend into the untouched top */
            h->size = need;
        }
    }
    if (h->size >= need) {
        if (size < old_used) WB_POISON((uint8_t *)ptr + size, old_used - size);
        void *p = take(off, size);
        account(hdr_at(off)->size, old_size);
        return p;
    }
    /* Absorbed followers (if any) stay part of this block until it is freed. */
    account(h->size, old_size);
    void *q = arena_alloc(size);
    if (!q) return NULL; /* the old block stays valid, as realloc requires */
    memcpy(q, ptr, old_used < size ? old_used : size);
    arena_free(ptr);
    return q;
}

void wb_wasm3_free(void *ptr) { arena_free(ptr); }
