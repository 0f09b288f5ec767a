/* wb_platform_* (core/include/wb/platform.h) on mbedTLS and the board API (board.h), for the
 * bare-metal and the Zephyr images. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "board.h"
#include "crypto.h"
#include "mbedtls/error.h"
#include "mbedtls/sha256.h"
#include "psa/crypto.h"
#include "wb/platform.h"

wb_crypto_t wb_crypto;

const char *wb_crypto_strerror(int err, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "-0x%04x ", (unsigned)-err);
    if (n > 0 && (size_t)n < cap) {
        mbedtls_strerror(err, buf + n, cap - (size_t)n);
    }
    return buf;
}

int wb_crypto_init(const wb_blob_t *blob)
{
    char msg[120];
    int ret;
    wb_crypto_t *c = &wb_crypto;
    c->blob = blob;
    wb_entropy_set_seed(blob->seed);
    mbedtls_entropy_init(&c->entropy);
    mbedtls_ctr_drbg_init(&c->drbg);
    mbedtls_pk_init(&c->key);
    mbedtls_x509_crt_init(&c->own_cert);
    mbedtls_x509_crt_init(&c->ca_cert);
    psa_status_t status = psa_crypto_init();
    if (status != PSA_SUCCESS) {
        wb_platform_log("crypto: psa_crypto_init failed: %d", (int)status);
        return -1;
    }
    static const char pers[] = "wasmbed-mps2-an385";
    ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy,
                                (const uint8_t *)pers, sizeof(pers) - 1);
    if (ret != 0) {
        wb_platform_log("crypto: DRBG seed failed: %s", wb_crypto_strerror(ret, msg, sizeof(msg)));
        return ret;
    }
    ret = mbedtls_pk_parse_key(&c->key, blob->key, blob->key_len, NULL, 0,
                               mbedtls_ctr_drbg_random, &c->drbg);
    if (ret != 0) {
        wb_platform_log("crypto: device key: %s", wb_crypto_strerror(ret, msg, sizeof(msg)));
        return ret;
    }
    if (!mbedtls_pk_can_do(&c->key, MBEDTLS_PK_ECKEY)) {
        wb_platform_log("crypto: device key is not an EC key (ECDSA P-256 required)");
        return -1;
    }
    ret = mbedtls_x509_crt_parse_der(&c->own_cert, blob->cert, blob->cert_len);
    if (ret != 0) {
        wb_platform_log("crypto: device certificate: %s",
                        wb_crypto_strerror(ret, msg, sizeof(msg)));
        return ret;
    }
    ret = mbedtls_x509_crt_parse_der(&c->ca_cert, blob->ca, blob->ca_len);
    if (ret != 0) {
        wb_platform_log("crypto: CA certificate: %s", wb_crypto_strerror(ret, msg, sizeof(msg)));
        return ret;
    }
    ret = mbedtls_pk_check_pair(&c->own_cert.pk, &c->key, mbedtls_ctr_drbg_random, &c->drbg);
    if (ret != 0) {
        wb_platform_log("crypto: device key does not match its certificate: %s",
                        wb_crypto_strerror(ret, msg, sizeof(msg)));
        return ret;
    }
    return 0;
}

uint64_t wb_platform_now_ms(void)
{
    return board_now_ms();
}

void wb_platform_log(const char *fmt, ...)
{
    uint64_t now = board_now_ms();
    printf("[%6lu.%03lu] ", (unsigned long)(now / 1000u), (unsigned long)(now % 1000u));
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

void wb_platform_sha256(const uint8_t *data, size_t len, uint8_t out[WB_DIGEST_LEN])
{
    (void)mbedtls_sha256(data, len, out, 0);
}

size_t wb_platform_public_key(uint8_t *out, size_t cap)
{
    int n = mbedtls_pk_write_pubkey_der(&wb_crypto.key, out, cap);
    if (n <= 0) {
        return 0;
    }
    /* mbedtls writes at the end of the buffer */
    memmove(out, out + cap - (size_t)n, (size_t)n);
    return (size_t)n;
}

size_t wb_platform_sign(const uint8_t *data, size_t len, uint8_t *sig, size_t cap)
{
    uint8_t hash[32];
    size_t sig_len = 0;
    if (mbedtls_sha256(data, len, hash, 0) != 0) {
        return 0;
    }
    /* deterministic ECDSA (RFC 6979, MBEDTLS_ECDSA_DETERMINISTIC): no dependence on the RNG */
    int ret = mbedtls_pk_sign(&wb_crypto.key, MBEDTLS_MD_SHA256, hash, sizeof(hash), sig, cap,
                              &sig_len, mbedtls_ctr_drbg_random, &wb_crypto.drbg);
    return ret == 0 ? sig_len : 0;
}

static uint8_t device_id[WB_DEVICE_ID_LEN];
static bool device_id_valid;

bool wb_platform_load_device_id(uint8_t id[WB_DEVICE_ID_LEN])
{
    if (device_id_valid) {
        memcpy(id, device_id, WB_DEVICE_ID_LEN);
    }
    return device_id_valid;
}

void wb_platform_store_device_id(const uint8_t id[WB_DEVICE_ID_LEN])
{
    memcpy(device_id, id, WB_DEVICE_ID_LEN);
    device_id_valid = true;
}

void wb_platform_forget_device_id(void)
{
    device_id_valid = false;
}
