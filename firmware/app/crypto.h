/* The device's cryptographic state, built from the blob: private key, certificates, the
 * CTR_DRBG (seeded from the port's entropy source: ports/mps2-an385/entropy.c, test-only;
 * ports/zephyr/src/platform_zephyr.c). */
#ifndef WB_CRYPTO_H
#define WB_CRYPTO_H

#include "blob.h"
#include "mbedtls/ctr_drbg.h"
#include "mbedtls/entropy.h"
#include "mbedtls/pk.h"
#include "mbedtls/x509_crt.h"

typedef struct {
    const wb_blob_t *blob;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_pk_context key;
    mbedtls_x509_crt own_cert;
    mbedtls_x509_crt ca_cert;
} wb_crypto_t;

extern wb_crypto_t wb_crypto;

/* Seed the RNG, start PSA, parse key and certificates. 0 or an mbedTLS error (logged). */
int wb_crypto_init(const wb_blob_t *blob);

/* Entropy seed for mbedtls_hardware_poll (the port implements both). */
void wb_entropy_set_seed(const uint8_t seed[32]);

/* "-0x2700 X509 - Certificate verification failed..." into buf. */
const char *wb_crypto_strerror(int err, char *buf, size_t cap);

#endif
