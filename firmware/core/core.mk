# The portable device core, for a Makefile to include (from any directory):
#   include <firmware>/core/core.mk
#   SRCS += $(CORE_SRCS); CFLAGS += $(CORE_CFLAGS) $(addprefix -I,$(CORE_INCLUDES))
# The paths come out relative to the including Makefile's directory when it names core.mk by a
# relative path. The sources are those of sources.txt (the list the Zephyr module reads too).
# zcbor 0.9.1 sources come from the pinned cache (scripts/fetch_deps.py); nothing is generated
# (the codec is hand-written on zcbor primitives). No malloc, no dynamic allocation.
# Override WB_DEPS if the cache lives elsewhere (default: .cache/firmware-deps of the repo).
WB_CORE_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))
include $(WB_CORE_DIR)/../sources.mk
WB_DEPS ?= $(WB_CORE_DIR)/../../.cache/firmware-deps
ZCBOR_DIR ?= $(WB_DEPS)/zcbor/zcbor

CORE_SRCS := $(call wb_sources,$(WB_CORE_DIR))
CORE_INCLUDES := $(WB_CORE_DIR)/include $(ZCBOR_DIR)/include $(ZCBOR_DIR)/src
# ZCBOR_CANONICAL: definite-length arrays on output (the protocol forbids indefinite ones).
# Tunables (defaults in core/src/device_impl.h): WB_MAX_APPS_CAP, WB_TX_BUF_SIZE,
# WB_DEFER_BYTES, WB_RUN_QUEUE, WB_RESULT_OUTBOX, WB_BACKOFF_INITIAL_MS, WB_BACKOFF_MAX_MS.
# The Zephyr module (zephyr/CMakeLists.txt) passes the same defines; Zephyr sets the -std.
CORE_CFLAGS := -DZCBOR_CANONICAL -std=c11 -D_DEFAULT_SOURCE
