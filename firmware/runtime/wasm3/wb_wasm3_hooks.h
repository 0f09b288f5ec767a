/* Force-included (gcc -include) into every wasm3 translation unit by wasm3.mk.
 *
 * It lets the firmware wrap wasm3 WITHOUT changing a byte of the pinned, hash-checked sources:
 *
 * 1. Heap: wasm3's m3_Malloc/m3_Realloc/m3_FreeImpl (m3_core.c, d_m3FixedHeap off) call the C
 *    library's calloc/realloc/free. Function-like macros route those calls to the bounded static
 *    arena of wb_wasm3_arena.c. <stdlib.h> is included first, so the library's own prototypes
 *    are declared unchanged and only the calls are renamed.
 *    (wasm3's own d_m3FixedHeap is a bump allocator that never frees and cannot be reset between
 *    runs, so it cannot serve a device that runs module after module.)
 *
 * 2. Three interpreter operations are replaced by the runtime's own versions (defined in
 *    wb_runtime_wasm3.c): op_ContinueLoop and op_ContinueLoopIf (every taken loop back-edge: the
 *    fuel / timeout / stop guard) and op_MemGrow (memory.grow under the per-run memory limit,
 *    without wasm3's 32-bit page-count wrap-around).
 *    wasm3 defines its operations as `static inline` functions in m3_exec.h through
 *        d_m3Op(NAME)  ->  ... static inline m3ret_t vectorcall op_##NAME (d_m3OpSig)
 *    and the compiler refers to them by their bare name (EmitOp (o, op_ContinueLoop), the op
 *    tables). A function-like macro only fires where the name is followed by '(' - i.e. at the
 *    definition - so it renames wasm3's definition to wb_m3_orig_NAME and, in the same
 *    expansion, declares an external `op_NAME` (a macro does not expand itself again). Every bare
 *    reference then resolves to the external op_NAME implemented by this runtime.
 *
 * 3. m3_Yield (called by wasm3 before every function call, including host calls) is a weak
 *    symbol in m3_core.c: wb_runtime_wasm3.c defines the strong one (no macro needed).
 *
 * The runtime's own .c files undefine these macros before they include wasm3's headers.
 */
#ifndef WB_WASM3_HOOKS_H
#define WB_WASM3_HOOKS_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

void *wb_wasm3_calloc(size_t count, size_t size);
void *wb_wasm3_realloc(void *ptr, size_t size);
void wb_wasm3_free(void *ptr);

#define calloc(count, size) wb_wasm3_calloc((count), (size))
#define malloc(size) wb_wasm3_calloc(1, (size))
#define realloc(ptr, size) wb_wasm3_realloc((ptr), (size))
#define free(ptr) wb_wasm3_free(ptr)

#define WB_WASM3_OP_REPLACED 1

#define op_ContinueLoop(...)                                         \
    wb_m3_orig_ContinueLoop(__VA_ARGS__);                            \
    m3ret_t vectorcall op_ContinueLoop(__VA_ARGS__);                 \
    static inline m3ret_t vectorcall wb_m3_orig_ContinueLoop(__VA_ARGS__)

#define op_ContinueLoopIf(...)                                       \
    wb_m3_orig_ContinueLoopIf(__VA_ARGS__);                          \
    m3ret_t vectorcall op_ContinueLoopIf(__VA_ARGS__);               \
    static inline m3ret_t vectorcall wb_m3_orig_ContinueLoopIf(__VA_ARGS__)

#define op_MemGrow(...)                                              \
    wb_m3_orig_MemGrow(__VA_ARGS__);                                 \
    m3ret_t vectorcall op_MemGrow(__VA_ARGS__);                      \
    static inline m3ret_t vectorcall wb_m3_orig_MemGrow(__VA_ARGS__)

#endif
