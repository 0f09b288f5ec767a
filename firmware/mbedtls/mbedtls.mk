# Make fragment: mbedTLS 3.6 static libraries for the board's CPU and for the host.
#
# Include it from a Makefile (firmware/Makefile does, after the board's board.mk); it works on
# its own too:
#   make -C firmware mbedtls-host        -> firmware/build/host/libmbed{tls,x509,crypto}.a
# Inputs (with defaults): WB_FW_DIR (firmware/), MBEDTLS_DIR (fetched source root),
#   WB_BUILD_ROOT (firmware/build), ARM_CC, HOST_CC, BOARD_CPU and BOARD_CPU_FLAGS (the
#   board's CPU: cortex-m3, -mcpu=cortex-m3 -mthumb).
# Outputs for users:
#   MBEDTLS_ARM_CFLAGS, MBEDTLS_ARM_LIBS   (link order: tls x509 crypto; build/mbedtls-<cpu>/)
#   MBEDTLS_HOST_CFLAGS, MBEDTLS_HOST_LIBS
# Host users compile with $(MBEDTLS_HOST_CFLAGS) (config wb_mbedtls_config_host.h: same
# features as the board, entropy from the OS) and link $(MBEDTLS_HOST_LIBS).

WB_FW_DIR ?= $(abspath $(dir $(lastword $(MAKEFILE_LIST)))/..)
MBEDTLS_DIR ?= $(abspath $(WB_FW_DIR)/../.cache/firmware-deps/mbedtls)
WB_BUILD_ROOT ?= $(WB_FW_DIR)/build
ARM_CC ?= arm-none-eabi-gcc
ARM_AR ?= arm-none-eabi-ar
HOST_CC ?= cc
HOST_AR ?= ar
BOARD_CPU ?= cortex-m3
BOARD_CPU_FLAGS ?= -mcpu=$(BOARD_CPU) -mthumb

MBEDTLS_LIB_SRCS := $(notdir $(wildcard $(MBEDTLS_DIR)/library/*.c))
MBEDTLS_X509_SRCS := $(filter x509%.c pkcs7.c,$(MBEDTLS_LIB_SRCS))
MBEDTLS_TLS_SRCS := $(filter ssl_%.c debug.c mps_%.c net_sockets.c,$(MBEDTLS_LIB_SRCS))
MBEDTLS_CRYPTO_SRCS := $(filter-out $(MBEDTLS_X509_SRCS) $(MBEDTLS_TLS_SRCS),$(MBEDTLS_LIB_SRCS))

MBEDTLS_INCLUDES := -I$(WB_FW_DIR)/mbedtls -I$(MBEDTLS_DIR)/include
MBEDTLS_ARM_CFLAGS := $(MBEDTLS_INCLUDES) '-DMBEDTLS_CONFIG_FILE="wb_mbedtls_config.h"'
MBEDTLS_HOST_CFLAGS := $(MBEDTLS_INCLUDES) '-DMBEDTLS_CONFIG_FILE="wb_mbedtls_config_host.h"'

MBEDTLS_ARM_DIR := $(WB_BUILD_ROOT)/mbedtls-$(BOARD_CPU)
MBEDTLS_HOST_DIR := $(WB_BUILD_ROOT)/host
MBEDTLS_ARM_LIBS := $(addprefix $(MBEDTLS_ARM_DIR)/,libmbedtls.a libmbedx509.a libmbedcrypto.a)
MBEDTLS_HOST_LIBS := $(addprefix $(MBEDTLS_HOST_DIR)/,libmbedtls.a libmbedx509.a libmbedcrypto.a)

# mbedTLS is built with -O2, not -Os: the TLS 1.3 handshake under QEMU drops from about
# 450 ms to about 250 ms (bignum/ECP speed) for about 12 KB more flash (4 MiB available).
MBEDTLS_ARM_OPT ?= -O2
MBEDTLS_ARM_BUILD_FLAGS ?= $(BOARD_CPU_FLAGS) --specs=picolibc.specs $(MBEDTLS_ARM_OPT) -g \
	-ffunction-sections -fdata-sections -Wall -Wextra
MBEDTLS_HOST_BUILD_FLAGS ?= -O2 -g -fPIC -ffunction-sections -fdata-sections -Wall -Wextra
MBEDTLS_CONFIGS := $(WB_FW_DIR)/mbedtls/wb_mbedtls_config.h $(WB_FW_DIR)/mbedtls/wb_mbedtls_config_host.h

# $(1): build dir, $(2): compiler, $(3): flags, $(4): ar
define wb_mbedtls_rules
$(1)/obj/%.o: $(MBEDTLS_DIR)/library/%.c $(MBEDTLS_CONFIGS)
	@mkdir -p $$(@D)
	@echo "  CC    mbedtls/$$*.c ($(notdir $(1)))"
	@$(2) $(3) -I$(MBEDTLS_DIR)/library -MMD -MP -c $$< -o $$@
$(1)/libmbedcrypto.a: $(addprefix $(1)/obj/,$(MBEDTLS_CRYPTO_SRCS:.c=.o))
$(1)/libmbedx509.a: $(addprefix $(1)/obj/,$(MBEDTLS_X509_SRCS:.c=.o))
$(1)/libmbedtls.a: $(addprefix $(1)/obj/,$(MBEDTLS_TLS_SRCS:.c=.o))
$(1)/libmbed%.a:
	@rm -f $$@
	@$(4) rcs $$@ $$^
	@echo "  AR    $$@"
-include $(wildcard $(1)/obj/*.d)
endef

$(eval $(call wb_mbedtls_rules,$(MBEDTLS_ARM_DIR),$(ARM_CC),$(MBEDTLS_ARM_BUILD_FLAGS) $(MBEDTLS_ARM_CFLAGS),$(ARM_AR)))
$(eval $(call wb_mbedtls_rules,$(MBEDTLS_HOST_DIR),$(HOST_CC),$(MBEDTLS_HOST_BUILD_FLAGS) $(MBEDTLS_HOST_CFLAGS),$(HOST_AR)))
