/* mbedTLS configuration of the Zephyr image (CONFIG_MBEDTLS_CFG_FILE, with
 * CONFIG_CUSTOM_MBEDTLS_CFG_FILE=y in prj.conf).
 *
 * It is the configuration proven on the bare-metal image, firmware/mbedtls/wb_mbedtls_config.h
 * (TLS 1.3-only client, mutual authentication with ECDSA P-256 certificates, ECDHE on
 * secp256r1, TLS_AES_128_GCM_SHA256, PSA crypto for the TLS 1.3 key schedule,
 * MBEDTLS_ENTROPY_HARDWARE_ALT), included unchanged, plus what Zephyr needs:
 *
 *  - mbedTLS allocates from its own static heap (MBEDTLS_MEMORY_BUFFER_ALLOC_C), set up by
 *    main.c with CONFIG_WASMBED_MBEDTLS_HEAP_SIZE bytes, not from the C library's heap;
 *  - mbedtls_hardware_poll() is platform_zephyr.c (sys_csrand_get mixed with the blob seed).
 *
 * Zephyr's Kconfig-generated mbedTLS configuration (and its CONFIG_MBEDTLS_SSL_PROTO_TLS1_3,
 * CONFIG_MBEDTLS_* algorithm options) is not used: a custom file replaces it entirely. This is
 * possible up to Zephyr 4.3 (pinned in west.yml); Zephyr 4.4 removes custom configuration
 * files together with its move to TF-PSA-Crypto, so a move past 4.3 means expressing this
 * file in Kconfig options. */
#ifndef WB_ZEPHYR_MBEDTLS_CONFIG_H
#define WB_ZEPHYR_MBEDTLS_CONFIG_H

#include "wb_mbedtls_config.h"

#define MBEDTLS_PLATFORM_MEMORY
#define MBEDTLS_MEMORY_BUFFER_ALLOC_C

#endif
