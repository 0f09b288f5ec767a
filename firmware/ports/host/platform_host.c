/* Host platform: a fake clock the tests move, a fixed P-256 key, SHA-256 and ECDSA from
 * mbedTLS built for the host (build/mbedtls, minimal config). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "doubles.h"
#include "mbedtls/ecdsa.h"
#include "mbedtls/sha256.h"
#include "wb/platform.h"

uint64_t host_now_ms;
bool host_log_quiet = true;
uint8_t host_stored_id[WB_DEVICE_ID_LEN];
bool host_has_id;
int host_store_calls;

/* fixed private scalar of the test key */
static const uint8_t KEY_D[32] = {
    0x1f, 0x2e, 0x3d, 0x4c, 0x5b, 0x6a, 0x79, 0x88, 0x97, 0xa6, 0xb5, 0xc4, 0xd3, 0xe2, 0xf1, 0x00,
    0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4, 0xc3, 0xd2, 0xe1, 0x01};
static const uint8_t SPKI_PREFIX[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                      0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                      0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};

void host_platform_reset(void)
{
    host_now_ms = 0;
    host_has_id = false;
    host_store_calls = 0;
    memset(host_stored_id, 0, sizeof host_stored_id);
}

uint64_t wb_platform_now_ms(void) { return host_now_ms; }

void wb_platform_log(const char *fmt, ...)
{
    if (host_log_quiet) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void wb_platform_sha256(const uint8_t *data, size_t len, uint8_t out[WB_DIGEST_LEN])
{
    mbedtls_sha256(data, len, out, 0);
}

static int test_rng(void *ctx, unsigned char *out, size_t n)
{
    static uint32_t x = 0x12345678;
    (void)ctx;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        out[i] = (unsigned char)x;
    }
    return 0;
}

static int load_key(mbedtls_ecdsa_context *k)
{
    mbedtls_ecdsa_init(k);
    if (mbedtls_ecp_read_key(MBEDTLS_ECP_DP_SECP256R1, k, KEY_D, sizeof KEY_D) != 0) return -1;
    return mbedtls_ecp_keypair_calc_public(k, test_rng, NULL);
}

size_t wb_platform_public_key(uint8_t *out, size_t cap)
{
    mbedtls_ecdsa_context k;
    size_t n = 0, len = 0;
    if (cap >= sizeof SPKI_PREFIX + 65 && load_key(&k) == 0 &&
        mbedtls_ecp_write_public_key(&k, MBEDTLS_ECP_PF_UNCOMPRESSED, &len,
                                     out + sizeof SPKI_PREFIX, 65) == 0 && len == 65) {
        memcpy(out, SPKI_PREFIX, sizeof SPKI_PREFIX);
        n = sizeof SPKI_PREFIX + 65;
    }
    mbedtls_ecdsa_free(&k);
    return n;
}

size_t wb_platform_sign(const uint8_t *data, size_t len, uint8_t *sig, size_t cap)
{
    mbedtls_ecdsa_context k;
    uint8_t hash[32];
    size_t n = 0;
    mbedtls_sha256(data, len, hash, 0);
    if (load_key(&k) != 0 || mbedtls_ecdsa_write_signature(&k, MBEDTLS_MD_SHA256, hash, 32, sig,
                                                           cap, &n, test_rng, NULL) != 0) {
        n = 0;
    }
    mbedtls_ecdsa_free(&k);
    return n;
}

bool wb_platform_load_device_id(uint8_t id[WB_DEVICE_ID_LEN])
{
    if (host_has_id) memcpy(id, host_stored_id, WB_DEVICE_ID_LEN);
    return host_has_id;
}

void wb_platform_store_device_id(const uint8_t id[WB_DEVICE_ID_LEN])
{
    memcpy(host_stored_id, id, WB_DEVICE_ID_LEN);
    host_has_id = true;
    host_store_calls++;
}

void wb_platform_forget_device_id(void)
{
    host_has_id = false;
}
