# wasm3 runtime for Wasmbed firmware: make fragment.
#
# The including Makefile defines DEPS (the .cache/firmware-deps directory filled by
# firmware/scripts/fetch_deps.py) and then, for example:
#     include $(FIRMWARE)/runtime/wasm3/wasm3.mk
#     SRCS     += $(WASM3_SRCS)
#     CPPFLAGS += $(WASM3_INCLUDES)
#     $(WASM3_OBJS): CFLAGS += $(WASM3_CFLAGS)      # or: CFLAGS += $(WASM3_CFLAGS) for all
# WASM3_CFLAGS must reach every file of WASM3_SRCS (wasm3's and ours); it is harmless elsewhere
# only if the file does not call calloc/realloc/free/malloc (it force-includes the hooks header):
# the simplest is to compile WASM3_SRCS with it and nothing else.
# wasm3's sources are used exactly as fetched (pinned, hash-checked); see README.md for how the
# runtime wraps them without patching.
#
# Tunables (add -D... to WASM3_CFLAGS or the target's CFLAGS):
#   WB_WASM3_ARENA_BYTES        static heap for wasm3 incl. linear memory (default 1.5 MiB)
#   WB_WASM3_STACK_BYTES        wasm value stack per run (default 32 KiB, from the arena)
#   WB_WASM3_NATIVE_STACK_BYTES C stack the interpreter may use (default 32 KiB)
#   WB_WASM3_GUARD_INTERVAL     guard events between clock/stop checks (default 256)
#   WB_RUNTIME_GUARD_HOOK_MS    period of wb_runtime_guard_hook() (default 20 ms)

ifndef DEPS
$(error wasm3.mk: define DEPS (the .cache/firmware-deps directory) before including it)
endif

WASM3_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
WASM3_SRC_DIR := $(DEPS)/wasm3/wasm3

WASM3_CORE_SRCS := $(addprefix $(WASM3_SRC_DIR)/, \
	m3_bind.c m3_code.c m3_compile.c m3_core.c m3_emit.c m3_env.c m3_exec.c \
	m3_function.c m3_info.c m3_module.c m3_parse.c)

WASM3_OWN_SRCS := $(WASM3_DIR)/wb_runtime_wasm3.c $(WASM3_DIR)/wb_wasm3_arena.c

# The runtime-independent half (module scan, entry plan, wording), shared with the Zephyr/WAMR
# runtime: the files of runtime/common/sources.txt, which ports/zephyr/CMakeLists.txt reads
# too. It calls no allocator, so WASM3_CFLAGS are harmless for it.
WASM3_COMMON_DIR := $(WASM3_DIR)/../common
include $(WASM3_DIR)/../../sources.mk
WASM3_COMMON_SRCS := $(call wb_sources,$(WASM3_COMMON_DIR))

WASM3_SRCS := $(WASM3_CORE_SRCS) $(WASM3_OWN_SRCS) $(WASM3_COMMON_SRCS)

WASM3_INCLUDES := -I$(WASM3_SRC_DIR) -I$(WASM3_DIR) -I$(WASM3_COMMON_DIR) \
	-I$(abspath $(WASM3_DIR)/../../core/include)

# -include: the heap and operation hooks (wb_wasm3_hooks.h).
# -Dd_m3HasWASI=0: no WASI (only env.log is offered). d_m3LogOutput off, no profiling/tracing.
# -fwrapv: wasm3 implements i32.add etc. with signed C arithmetic; wasm wraps, C calls it UB.
# -Wno-...: wasm3's own code is not warning-clean; our files are built with the same flags.
WASM3_CFLAGS := -include $(WASM3_DIR)/wb_wasm3_hooks.h \
	-Dd_m3HasWASI=0 \
	-Dd_m3VerboseErrorMessages=1 \
	-Dd_m3EnableOpProfiling=0 -Dd_m3EnableOpTracing=0 -Dd_m3EnableStrace=0 \
	-Dd_m3RecordBacktraces=0 -Dd_m3LogNativeStack=0 \
	-Dd_m3CodePageAlignSize=2048 \
	-fno-strict-aliasing -fwrapv \
	-Wno-unused-parameter -Wno-unused-function -Wno-unused-variable -Wno-sign-compare \
	-Wno-missing-field-initializers -Wno-implicit-fallthrough

# wasm3's interpreter needs sibling-call optimisation (every operation tail-calls the next):
# build it with -O2 or -Os, never -O0 (the C stack would grow with every instruction).
