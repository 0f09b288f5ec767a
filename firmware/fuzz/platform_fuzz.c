/* wb_platform_* for the session harness: the fake clock of the host port (host_now_ms, which
 * ports/host/runtime_stub.c advances during a run), SHA-256 from mbedTLS, and a key and a
 * signature that are fixed bytes. The core treats both as opaque bytes it copies into
 * EnrollProof, so a real ECDSA signature (ports/host/platform_host.c: about a millisecond)
 * would cost executions without reaching any more of the core. Log lines are formatted (ASan
 * checks the arguments, e.g. a "%.*s" of a received reason) and dropped, unless FUZZ_TRACE is
 * set in the environment. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "doubles.h"
#include "mbedtls/sha256.h"
#include "wb/platform.h"

uint64_t host_now_ms;
bool fuzz_trace;
uint8_t host_stored_id[WB_DEVICE_ID_LEN];
bool host_has_id;

void fuzz_platform_reset(bool has_id)
{
    static int trace = -1;
    if (trace < 0) trace = getenv("FUZZ_TRACE") != NULL;
    fuzz_trace = trace;
    host_now_ms = 0;
    host_has_id = has_id;
    memset(host_stored_id, 0x5A, sizeof host_stored_id);
}

uint64_t wb_platform_now_ms(void) { return host_now_ms; }

void wb_platform_log(const char *fmt, ...)
{
    static char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (fuzz_trace) fprintf(stderr, "  [%llu ms] %s\n", (unsigned long long)host_now_ms, line);
}

void wb_platform_sha256(const uint8_t *data, size_t len, uint8_t out[WB_DIGEST_LEN])
{
    mbedtls_sha256(data, len, out, 0);
}

/* A P-256 SubjectPublicKeyInfo is 91 bytes, a DER ECDSA signature at most 72. */
size_t wb_platform_public_key(uint8_t *out, size_t cap)
{
    if (cap < 91) return 0;
    memset(out, 0x04, 91);
    return 91;
}

size_t wb_platform_sign(const uint8_t *data, size_t len, uint8_t *sig, size_t cap)
{
    if (cap < 72) return 0;
    uint8_t digest[WB_DIGEST_LEN];
    mbedtls_sha256(data, len, digest, 0); /* reads what a real signature would read */
    memset(sig, 0x30, 72);
    memcpy(sig + 8, digest, sizeof digest);
    return 72;
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
}

void wb_platform_forget_device_id(void) { host_has_id = false; }
