#include "blob.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "mbedtls/sha256.h"

static uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static uint32_t le32(const uint8_t *p) { return le16(p) | (le16(p + 2) << 16); }

static bool printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] < 0x20 || p[i] == 0x7F) {
            return false;
        }
    }
    return true;
}

#define FAIL(...)                                \
    do {                                         \
        snprintf(err, err_cap, __VA_ARGS__);     \
        return -1;                               \
    } while (0)

int wb_blob_parse(const uint8_t *mem, size_t cap, wb_blob_t *out, char *err, size_t err_cap)
{
    memset(out, 0, sizeof(*out));
    if (cap < WB_BLOB_HEADER_LEN + WB_BLOB_DIGEST_LEN) {
        FAIL("blob region too small (%u bytes)", (unsigned)cap);
    }
    if (memcmp(mem, WB_BLOB_MAGIC, 4) != 0) {
        FAIL("no blob: bad magic %02x %02x %02x %02x (expected \"WBLB\")", mem[0], mem[1], mem[2],
             mem[3]);
    }
    uint32_t version = le16(mem + 4);
    if (version != WB_BLOB_VERSION) {
        FAIL("unsupported blob version %u (this firmware reads %u)", (unsigned)version,
             WB_BLOB_VERSION);
    }
    uint32_t total = le32(mem + 8);
    if (total < WB_BLOB_HEADER_LEN + WB_BLOB_DIGEST_LEN || total > cap) {
        FAIL("bad blob length %lu (must be %u..%u)", (unsigned long)total,
             WB_BLOB_HEADER_LEN + WB_BLOB_DIGEST_LEN, (unsigned)cap);
    }
    size_t body = total - WB_BLOB_DIGEST_LEN;
    uint8_t digest[32];
    if (mbedtls_sha256(mem, body, digest, 0) != 0) {
        FAIL("blob digest computation failed");
    }
    if (memcmp(digest, mem + body, sizeof(digest)) != 0) {
        FAIL("blob corrupted: SHA-256 mismatch over %u bytes", (unsigned)body);
    }
    unsigned seen = 0;
    size_t off = WB_BLOB_HEADER_LEN;
    while (off < body) {
        if (body - off < 4) {
            FAIL("truncated entry header at offset %u", (unsigned)off);
        }
        uint32_t type = le16(mem + off);
        size_t len = le16(mem + off + 2);
        off += 4;
        if (len > body - off) {
            FAIL("entry type %u at offset %u overruns the blob (%u bytes)", (unsigned)type,
                 (unsigned)(off - 4), (unsigned)len);
        }
        const uint8_t *v = mem + off;
        off += len;
        if (type >= 1 && type <= WB_BLOB_CONFIG) {
            if (seen & (1u << type)) {
                FAIL("duplicate entry type %u", (unsigned)type);
            }
            seen |= 1u << type;
        }
        switch (type) {
        case WB_BLOB_KEY:
            out->key = v;
            out->key_len = len;
            break;
        case WB_BLOB_CERT:
            out->cert = v;
            out->cert_len = len;
            break;
        case WB_BLOB_CA:
            out->ca = v;
            out->ca_len = len;
            break;
        case WB_BLOB_SEED:
            if (len != WB_BLOB_SEED_LEN) {
                FAIL("entropy seed must be %u bytes, got %u", WB_BLOB_SEED_LEN, (unsigned)len);
            }
            memcpy(out->seed, v, len);
            break;
        case WB_BLOB_NAME:
            if (len == 0 || len > WB_BLOB_MAX_NAME || !printable(v, len)) {
                FAIL("device name must be 1..%u printable bytes", WB_BLOB_MAX_NAME);
            }
            memcpy(out->name, v, len);
            out->name[len] = 0;
            break;
        case WB_BLOB_SERVER_NAME:
            if (len == 0 || len > WB_BLOB_MAX_SNI || !printable(v, len)) {
                FAIL("server name must be 1..%u printable bytes", WB_BLOB_MAX_SNI);
            }
            memcpy(out->server_name, v, len);
            out->server_name[len] = 0;
            break;
        case WB_BLOB_CONFIG:
            if (len % 6 != 0) {
                FAIL("configuration entry of %u bytes is not a list of (u16, u32) pairs",
                     (unsigned)len);
            }
            for (size_t i = 0; i < len; i += 6) {
                uint32_t key = le16(v + i);
                uint32_t value = (uint32_t)v[i + 2] | (uint32_t)v[i + 3] << 8 |
                                 (uint32_t)v[i + 4] << 16 | (uint32_t)v[i + 5] << 24;
                if (key > 0 && key < WB_CFG_KEYS) {
                    out->config[key] = value;
                }
            }
            break;
        default:
            break; /* unknown: skipped (later layouts may add entries) */
        }
    }
    static const char *const names[] = {"", "device key", "device certificate",
                                        "CA certificate", "entropy seed", "device name",
                                        "server name"};
    for (unsigned t = 1; t <= 6; t++) {
        if (!(seen & (1u << t))) {
            FAIL("blob has no %s (entry type %u)", names[t], t);
        }
    }
    if (out->key_len == 0 || out->cert_len == 0 || out->ca_len == 0) {
        FAIL("empty key or certificate entry");
    }
    return 0;
}
