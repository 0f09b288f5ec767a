/* The per-device blob: everything that differs between devices, placed where the port's main.c
 * reads it. On MPS2-AN385 in RAM at WB_BLOB_ADDRESS (ports/mps2-an385/board_port.h) by the
 * emulator (QEMU: -device loader,file=blob.bin,addr=0x203FC000; Renode: sysbus LoadBinary
 * @blob.bin 0x203FC000); on Zephyr see ports/zephyr/README.md. Nothing per device is compiled
 * in.
 *
 * Layout version 1 (all integers little-endian; built by wasmbed_hil/bench/firmware/blob.py):
 *   off  size
 *   0    4    magic "WBLB"
 *   4    2    version = 1
 *   6    2    flags = 0
 *   8    4    total_len: bytes of the whole blob, header and trailing digest included
 *   12   ...  entries: type u16, length u16, value[length] (no padding), until total_len-32
 *   end  32   SHA-256 over bytes [0, total_len - 32)
 * Entry types (each required exactly once; unknown types are skipped):
 *   1 device private key, PKCS#8 DER (ECDSA P-256)   2 device certificate, DER
 *   3 CA certificate, DER                            4 entropy seed, exactly 32 bytes
 *   5 device name, UTF-8, 1..64 bytes                6 TLS server name (SNI), 1..253 bytes
 * Optional entry (at most once):
 *   7 configuration: pairs of (key u16, value u32); unknown keys are skipped. Keys:
 *     1 max_frame_size  2 max_module_size  3 window  4 max_apps
 *     5 backoff_initial_ms  6 backoff_max_ms  7 reject_backoff_ms  8 setup_timeout_ms
 *     Values are clamped by the firmware to what its buffers allow (it logs the result).
 */
#ifndef WB_BLOB_H
#define WB_BLOB_H

#include <stddef.h>
#include <stdint.h>

#define WB_BLOB_MAGIC "WBLB"
#define WB_BLOB_VERSION 1
#define WB_BLOB_HEADER_LEN 12
#define WB_BLOB_DIGEST_LEN 32
#define WB_BLOB_SEED_LEN 32
#define WB_BLOB_MAX_NAME 64
#define WB_BLOB_MAX_SNI 253

enum {
    WB_BLOB_KEY = 1,
    WB_BLOB_CERT = 2,
    WB_BLOB_CA = 3,
    WB_BLOB_SEED = 4,
    WB_BLOB_NAME = 5,
    WB_BLOB_SERVER_NAME = 6,
    WB_BLOB_CONFIG = 7,
};

enum {
    WB_CFG_MAX_FRAME_SIZE = 1,
    WB_CFG_MAX_MODULE_SIZE = 2,
    WB_CFG_WINDOW = 3,
    WB_CFG_MAX_APPS = 4,
    WB_CFG_BACKOFF_INITIAL_MS = 5,
    WB_CFG_BACKOFF_MAX_MS = 6,
    WB_CFG_REJECT_BACKOFF_MS = 7,
    WB_CFG_SETUP_TIMEOUT_MS = 8,
    WB_CFG_LINK = 9, /* the port's link: 0 or 1 its UART, 2 Ethernet where it has one */
    WB_CFG_KEYS = 10,
};

typedef struct {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *cert;
    size_t cert_len;
    const uint8_t *ca;
    size_t ca_len;
    uint8_t seed[WB_BLOB_SEED_LEN];
    char name[WB_BLOB_MAX_NAME + 1];
    char server_name[WB_BLOB_MAX_SNI + 1];
    uint32_t config[WB_CFG_KEYS];  /* 0: not given (use the firmware's default) */
} wb_blob_t;

/* Parse and check a blob of at most cap bytes at mem. Returns 0, or -1 with a one-line reason
 * in err. Never reads outside [mem, mem + cap). */
int wb_blob_parse(const uint8_t *mem, size_t cap, wb_blob_t *out, char *err, size_t err_cap);

#endif
