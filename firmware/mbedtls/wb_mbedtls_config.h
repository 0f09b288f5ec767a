/* mbedTLS 3.6 configuration of the wasmbed firmware: a TLS 1.3-only client with mutual
 * authentication, ECDSA P-256 certificates, ECDHE on secp256r1 only,
 * TLS_AES_128_GCM_SHA256 only (mandatory-to-implement suite of RFC 8446).
 *
 * Used for the Cortex-M3 image (MBEDTLS_CONFIG_FILE="wb_mbedtls_config.h") and, with
 * wb_mbedtls_config_host.h on top, for the host libraries (same API surface, so code that
 * links on the host links on the board).
 *
 * ENTROPY: the MPS2-AN385 (and its QEMU model) has no TRNG. MBEDTLS_ENTROPY_HARDWARE_ALT is
 * implemented by ports/mps2-an385/entropy.c from the per-device blob's 32-byte seed mixed
 * with the SysTick counter. FIT FOR TESTS ONLY: do not ship devices with this.
 *
 * No MBEDTLS_HAVE_TIME: the board has no real-time clock, so certificate validity dates are
 * NOT checked on the device (the gateway checks the device's). */
#ifndef WB_MBEDTLS_CONFIG_H
#define WB_MBEDTLS_CONFIG_H

/* --- system ------------------------------------------------------------------------------ */
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_DEPRECATED_REMOVED
#define MBEDTLS_NO_PLATFORM_ENTROPY
#define MBEDTLS_ENTROPY_HARDWARE_ALT
#define MBEDTLS_ENTROPY_MIN_HARDWARE 32
#define MBEDTLS_ERROR_C                 /* readable errors on the console */
#define MBEDTLS_PLATFORM_C

/* --- primitives -------------------------------------------------------------------------- */
#define MBEDTLS_AES_C
#define MBEDTLS_AES_ROM_TABLES          /* tables in flash, not 8 KiB of RAM */
#define MBEDTLS_AES_FEWER_TABLES
#define MBEDTLS_GCM_C
#define MBEDTLS_CIPHER_C
#define MBEDTLS_MD_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_HKDF_C
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_HMAC_DRBG_C
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_ECP_C
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_NIST_OPTIM
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECDSA_DETERMINISTIC     /* signatures do not depend on the weak RNG */
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_OID_C
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C              /* SubjectPublicKeyInfo DER of the device key */
#define MBEDTLS_PSA_CRYPTO_C            /* TLS 1.3 key schedule runs on PSA */

/* --- X.509 ------------------------------------------------------------------------------- */
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C

/* --- TLS 1.3 client ---------------------------------------------------------------------- */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE   /* required by the 3.6 TLS 1.3 code */
#define MBEDTLS_SSL_SERVER_NAME_INDICATION
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES
/* Records from a standard server can carry 16 KiB; what we send is split into 4 KiB. */
#define MBEDTLS_SSL_IN_CONTENT_LEN  16384
#define MBEDTLS_SSL_OUT_CONTENT_LEN 4096

#endif
