/* STUB for the host type-check (see README.md): the part of WAMR's
 * core/iwasm/include/wasm_export.h (and lib_export.h) that runtime_wamr.c uses, with the
 * signatures read from WAMR 2.4.x. Not WAMR's header. */
#ifndef STUB_WASM_EXPORT_H
#define STUB_WASM_EXPORT_H
#include <stdbool.h>
#include <stdint.h>

struct WASMModuleCommon;
typedef struct WASMModuleCommon *wasm_module_t;
struct WASMModuleInstanceCommon;
typedef struct WASMModuleInstanceCommon *wasm_module_inst_t;
typedef void WASMFunctionInstanceCommon;
typedef WASMFunctionInstanceCommon *wasm_function_inst_t;
struct WASMMemoryInstance;
typedef struct WASMMemoryInstance *wasm_memory_inst_t;
struct WASMExecEnv;
typedef struct WASMExecEnv *wasm_exec_env_t;

typedef struct NativeSymbol {
    const char *symbol;
    void *func_ptr;
    const char *signature;
    void *attachment;
} NativeSymbol;

typedef enum {
    Alloc_With_Pool = 0,
    Alloc_With_Allocator,
    Alloc_With_System_Allocator,
} mem_alloc_type_t;

typedef union MemAllocOption {
    struct {
        void *heap_buf;
        uint32_t heap_size;
    } pool;
    struct {
        void *malloc_func;
        void *realloc_func;
        void *free_func;
        void *user_data;
    } allocator;
} MemAllocOption;

typedef enum RunningMode {
    Mode_Interp = 1,
    Mode_Fast_JIT,
    Mode_LLVM_JIT,
    Mode_Multi_Tier_JIT,
} RunningMode;

typedef struct RuntimeInitArgs {
    mem_alloc_type_t mem_alloc_type;
    MemAllocOption mem_alloc_option;
    const char *native_module_name;
    NativeSymbol *native_symbols;
    uint32_t n_native_symbols;
    uint32_t max_thread_num;
    char ip_addr[128];
    int unused;
    int instance_port;
    uint32_t fast_jit_code_cache_size;
    uint32_t gc_heap_size;
    RunningMode running_mode;
    uint32_t llvm_jit_opt_level;
    uint32_t llvm_jit_size_level;
    uint32_t segue_flags;
    bool enable_linux_perf;
} RuntimeInitArgs;

typedef struct InstantiationArgs {
    uint32_t default_stack_size;
    uint32_t host_managed_heap_size;
    uint32_t max_memory_pages;
} InstantiationArgs;

typedef uint8_t wasm_valkind_t;
enum wasm_valkind_enum { WASM_I32, WASM_I64, WASM_F32, WASM_F64, WASM_V128 };
typedef struct wasm_val_t {
    wasm_valkind_t kind;
    uint8_t _paddings[7];
    union {
        int32_t i32;
        int64_t i64;
        float f32;
        double f64;
        uintptr_t foreign;
    } of;
} wasm_val_t;

typedef enum {
    INTERNAL_ERROR,
    MAX_SIZE_REACHED,
} enlarge_memory_error_reason_t;
typedef void (*enlarge_memory_error_callback_t)(
    uint32_t inc_page_count, uint64_t current_memory_size, uint32_t memory_index,
    enlarge_memory_error_reason_t failure_reason, wasm_module_inst_t instance,
    wasm_exec_env_t exec_env, void *user_data);

bool wasm_runtime_full_init(RuntimeInitArgs *init_args);
bool wasm_runtime_register_natives(const char *module_name, NativeSymbol *native_symbols,
                                   uint32_t n_native_symbols);
void wasm_runtime_set_enlarge_mem_error_callback(const enlarge_memory_error_callback_t callback,
                                                 void *user_data);
void wasm_runtime_get_version(uint32_t *major, uint32_t *minor, uint32_t *patch);
void *wasm_runtime_malloc(unsigned int size);
void wasm_runtime_free(void *ptr);
wasm_module_t wasm_runtime_load(uint8_t *buf, uint32_t size, char *error_buf,
                                uint32_t error_buf_size);
void wasm_runtime_unload(wasm_module_t module);
wasm_module_inst_t wasm_runtime_instantiate_ex(const wasm_module_t module,
                                               const InstantiationArgs *args, char *error_buf,
                                               uint32_t error_buf_size);
void wasm_runtime_deinstantiate(wasm_module_inst_t module_inst);
wasm_exec_env_t wasm_runtime_create_exec_env(wasm_module_inst_t module_inst,
                                             uint32_t stack_size);
void wasm_runtime_destroy_exec_env(wasm_exec_env_t exec_env);
wasm_function_inst_t wasm_runtime_lookup_function(const wasm_module_inst_t module_inst,
                                                  const char *name);
void wasm_runtime_set_instruction_count_limit(wasm_exec_env_t exec_env, int instruction_count);
bool wasm_runtime_call_wasm_a(wasm_exec_env_t exec_env, wasm_function_inst_t function,
                              uint32_t num_results, wasm_val_t results[], uint32_t num_args,
                              wasm_val_t *args);
const char *wasm_runtime_get_exception(wasm_module_inst_t module_inst);
void wasm_runtime_set_exception(wasm_module_inst_t module_inst, const char *exception);
void wasm_runtime_terminate(wasm_module_inst_t module_inst);
wasm_module_inst_t wasm_runtime_get_module_inst(wasm_exec_env_t exec_env);
wasm_memory_inst_t wasm_runtime_get_default_memory(const wasm_module_inst_t module_inst);
uint64_t wasm_memory_get_cur_page_count(const wasm_memory_inst_t memory_inst);
uint64_t wasm_memory_get_bytes_per_page(const wasm_memory_inst_t memory_inst);
void *wasm_runtime_addr_app_to_native(wasm_module_inst_t module_inst, uint64_t app_offset);
#endif
