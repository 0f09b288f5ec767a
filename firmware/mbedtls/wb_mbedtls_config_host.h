/* Host build of mbedTLS (build/host/): the firmware's configuration with the host's own
 * entropy source (/dev/urandom) instead of the board's test-only seed. */
#ifndef WB_MBEDTLS_CONFIG_HOST_H
#define WB_MBEDTLS_CONFIG_HOST_H
#include "wb_mbedtls_config.h"
#undef MBEDTLS_NO_PLATFORM_ENTROPY
#undef MBEDTLS_ENTROPY_HARDWARE_ALT
#undef MBEDTLS_ENTROPY_MIN_HARDWARE
#endif
