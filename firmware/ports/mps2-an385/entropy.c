/* MBEDTLS_ENTROPY_HARDWARE_ALT for a board WITHOUT a TRNG.
 *
 * FIT FOR TESTS ONLY. Output block i = SHA-256(seed || i || SysTick value || ms since boot),
 * where seed is the 32 bytes from the per-device blob. Anyone who knows the blob can predict
 * the output up to the (small) timing uncertainty. Real hardware must use a TRNG. */
#include <string.h>

#include "board.h"
#include "crypto.h"
#include "mbedtls/entropy.h"
#include "mbedtls/sha256.h"

static uint8_t seed[32];
static uint32_t counter;

void wb_entropy_set_seed(const uint8_t s[32])
{
    memcpy(seed, s, sizeof(seed));
}

int mbedtls_hardware_poll(void *data, unsigned char *output, size_t len, size_t *olen)
{
    (void)data;
    size_t done = 0;
    while (done < len) {
        mbedtls_sha256_context sha;
        uint8_t block[32];
        uint32_t mix[4] = {counter++, board_systick_value(), 0, 0};
        uint64_t now = board_now_ms();
        mix[2] = (uint32_t)now;
        mix[3] = (uint32_t)(now >> 32);
        mbedtls_sha256_init(&sha);
        mbedtls_sha256_starts(&sha, 0);
        mbedtls_sha256_update(&sha, seed, sizeof(seed));
        mbedtls_sha256_update(&sha, (const uint8_t *)mix, sizeof(mix));
        mbedtls_sha256_finish(&sha, block);
        mbedtls_sha256_free(&sha);
        size_t n = len - done < sizeof(block) ? len - done : sizeof(block);
        memcpy(output + done, block, n);
        done += n;
    }
    *olen = len;
    return 0;
}
