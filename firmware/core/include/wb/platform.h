/* What the portable core needs from the board. Implemented by app/platform.c for the
 * bare-metal and the Zephyr images (over the board API of app/board.h) and by
 * ports/host/platform_host.c for the host tests. No function here may block longer than its
 * documented bound. */
#ifndef WB_PLATFORM_H
#define WB_PLATFORM_H

#include "types.h"

/* Milliseconds since boot, monotonic. */
uint64_t wb_platform_now_ms(void);

/* Console log line (UART0 on boards). printf-style; adds the newline. */
void wb_platform_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* SHA-256 of data into out[32]. */
void wb_platform_sha256(const uint8_t *data, size_t len, uint8_t out[WB_DIGEST_LEN]);

/* The device's SubjectPublicKeyInfo (DER) of its certificate's key. Returns its length,
 * 0 on failure. */
size_t wb_platform_public_key(uint8_t *out, size_t cap);

/* Sign data with the device's private key: ECDSA P-256 over SHA-256, DER signature.
 * Returns the signature length, 0 on failure. */
size_t wb_platform_sign(const uint8_t *data, size_t len, uint8_t *sig, size_t cap);

/* Persistent storage of the enrolled device id (RAM-backed on boards without NVM). */
bool wb_platform_load_device_id(uint8_t id[WB_DEVICE_ID_LEN]);
void wb_platform_store_device_id(const uint8_t id[WB_DEVICE_ID_LEN]);
/* Erase the stored device id (the next Hello carries none). */
void wb_platform_forget_device_id(void);

#endif
