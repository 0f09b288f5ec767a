/* libFuzzer harness: the per-device blob parser (app/blob.c).
 *
 * Input: the blob region's bytes; the region is exactly the input (ASan sees any read beyond
 * it). Seeds: blobs of wasmbed_hil.bench.firmware.build_blob and variants (seeds.py).
 * Each input is parsed twice: as it is, then with its trailing SHA-256 put right (when its
 * total_len is in range), so that the parser's checks behind the digest are reached too.
 * Oracles, besides ASan and UBSan: a refusal has a one-line reason; an accepted blob has every
 * required entry inside [total_len - 32) of the region, a 32-byte seed, a name and a server
 * name of the allowed lengths, printable and NUL-terminated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"
#include "mbedtls/sha256.h"

#define REQUIRE(cond, ...)                               \
    do {                                                 \
        if (!(cond)) {                                   \
            fprintf(stderr, "fuzz_blob: " __VA_ARGS__);  \
            fputc('\n', stderr);                         \
            abort();                                     \
        }                                                \
    } while (0)

static uint32_t total_len(const uint8_t *p)
{
    return (uint32_t)p[8] | (uint32_t)p[9] << 8 | (uint32_t)p[10] << 16 | (uint32_t)p[11] << 24;
}

static void check_inside(const uint8_t *mem, size_t body, const uint8_t *p, size_t n,
                         const char *what)
{
    REQUIRE(p != NULL && n > 0, "accepted blob without %s", what);
    REQUIRE(p >= mem + WB_BLOB_HEADER_LEN && p + n <= mem + body,
            "%s at offset %td (%zu bytes) outside the entries [12, %zu)", what, p - mem, n, body);
}

static void check_text(const char *s, size_t max, const char *what)
{
    size_t n = strnlen(s, max + 1);
    REQUIRE(n >= 1 && n <= max, "%s of %zu bytes accepted (1..%zu)", what, n, max);
    for (size_t i = 0; i < n; i++) {
        REQUIRE((uint8_t)s[i] >= 0x20 && (uint8_t)s[i] != 0x7F, "%s has byte 0x%02x", what,
                (unsigned)(uint8_t)s[i]);
    }
}

static void parse(const uint8_t *mem, size_t size)
{
    wb_blob_t blob;
    char err[160];
    err[0] = 0;
    if (wb_blob_parse(mem, size, &blob, err, sizeof err) != 0) {
        REQUIRE(err[0] != 0 && strchr(err, '\n') == NULL, "refusal without a one-line reason");
        return;
    }
    size_t body = total_len(mem) - WB_BLOB_DIGEST_LEN;
    REQUIRE(total_len(mem) <= size, "accepted a total_len beyond the region");
    check_inside(mem, body, blob.key, blob.key_len, "a key");
    check_inside(mem, body, blob.cert, blob.cert_len, "a certificate");
    check_inside(mem, body, blob.ca, blob.ca_len, "a CA certificate");
    check_text(blob.name, WB_BLOB_MAX_NAME, "device name");
    check_text(blob.server_name, WB_BLOB_MAX_SNI, "server name");
    REQUIRE(blob.config[0] == 0, "configuration key 0 is not a key");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *mem = malloc(size ? size : 1);
    REQUIRE(mem != NULL, "out of memory");
    memcpy(mem, data, size);
    parse(mem, size);
    if (size >= WB_BLOB_HEADER_LEN + WB_BLOB_DIGEST_LEN) {
        uint32_t total = total_len(mem);
        if (total >= WB_BLOB_HEADER_LEN + WB_BLOB_DIGEST_LEN && total <= size) {
            mbedtls_sha256(mem, total - WB_BLOB_DIGEST_LEN, mem + total - WB_BLOB_DIGEST_LEN, 0);
            parse(mem, size);
        }
    }
    free(mem);
    return 0;
}
