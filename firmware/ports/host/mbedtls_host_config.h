/* Minimal mbedTLS configuration for the host test doubles: SHA-256 and ECDSA P-256 signing. */
#ifndef HOST_MBEDTLS_CONFIG_H
#define HOST_MBEDTLS_CONFIG_H
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_ECP_C
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECDSA_DETERMINISTIC
#define MBEDTLS_HMAC_DRBG_C
#define MBEDTLS_MD_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_ASN1_PARSE_C
#endif
