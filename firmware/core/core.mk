# The portable device core, for a target Makefile to include (paths relative to firmware/).
#   include core/core.mk
#   SRCS += $(CORE_SRCS); CFLAGS += $(CORE_CFLAGS) $(addprefix -I,$(CORE_INCLUDES))
# zcbor 0.9.1 sources come from the pinned cache (scripts/fetch_deps.py); nothing is generated
# (the codec is hand-written on zcbor primitives). No malloc, no dynamic allocation.
# Override WB_DEPS if the cache lives elsewhere (default: ../.cache/firmware-deps from firmware/).
WB_DEPS ?= ../.cache/firmware-deps
ZCBOR_DIR ?= $(WB_DEPS)/zcbor/zcbor

# core/src/zcbor_unit.c #includes zcbor's three .c files (found through $(ZCBOR_DIR)/src).
CORE_SRCS := core/src/codec.c core/src/session.c core/src/device.c core/src/zcbor_unit.c \
             core/src/names.c
CORE_INCLUDES := core/include $(ZCBOR_DIR)/include $(ZCBOR_DIR)/src
# ZCBOR_CANONICAL: definite-length arrays on output (the protocol forbids indefinite ones).
# Tunables (defaults in core/src/device_impl.h): WB_MAX_APPS_CAP, WB_TX_BUF_SIZE,
# WB_DEFER_BYTES, WB_RUN_QUEUE, WB_BACKOFF_INITIAL_MS, WB_BACKOFF_MAX_MS.
CORE_CFLAGS := -DZCBOR_CANONICAL -std=c11 -D_DEFAULT_SOURCE
