/* Time, entropy, halt and reboot on Zephyr: the app/board.h functions the application calls
 * (board_now_ms, board_systick_value, board_halt: wb_app_halt() of app/app.c logs
 * "HALT: why" and then calls it) and mbedTLS's hardware entropy hook.
 *
 * wb_platform_* itself (log, SHA-256, device key, signatures, device id) is the unchanged
 * app/platform.c: it only needs board_now_ms() from here. Its log lines go
 * through printf(), which Zephyr's console driver routes to the zephyr,console UART.
 *
 * ENTROPY. The mbedTLS configuration (firmware/mbedtls/wb_mbedtls_config.h, reused) uses
 * MBEDTLS_ENTROPY_HARDWARE_ALT. mbedtls_hardware_poll() below returns
 *     SHA-256(blob seed || counter || 32 bytes of sys_csrand_get() || cycle counter || uptime)
 * per 32-byte block. On boards with a hardware RNG (STM32F4/F7 RNG, nRF52 RNG) sys_csrand_get()
 * is backed by that driver (CONFIG_ENTROPY_GENERATOR + the "zephyr,entropy" chosen node) and
 * the seed only adds per-device material. On mps2/an385, which has no TRNG, the board .conf
 * sets CONFIG_TEST_RANDOM_GENERATOR: sys_csrand_get() is then NOT cryptographically secure
 * and the result is as weak as the bare-metal image's (FIT FOR TESTS ONLY, printed at boot). */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/random/random.h>
#include <zephyr/sys/printk.h>
#include <zephyr/sys/reboot.h>

#include "board.h"
#include "crypto.h"
#include "mbedtls/entropy.h"
#include "mbedtls/sha256.h"
#include "wb/platform.h"
#include "zephyr_port.h"

/* ---- time ------------------------------------------------------------------------------------ */

uint64_t board_now_ms(void)
{
    return (uint64_t)k_uptime_get();
}

uint32_t board_systick_value(void)
{
    return k_cycle_get_32();
}

uint64_t wb_zephyr_now_us(void)
{
    return k_ticks_to_us_floor64((uint64_t)k_uptime_ticks());
}

/* ---- halt, reboot -------------------------------------------------------------------------- */

void board_halt(void)
{
    for (;;) {
        k_sleep(K_FOREVER);
    }
}

void wb_zephyr_reboot(const char *why)
{
    wb_platform_log("REBOOT: %s", why);
    k_msleep(50); /* let the console drain */
    sys_reboot(SYS_REBOOT_COLD);
    board_halt(); /* not reached */
}

/* ---- entropy ------------------------------------------------------------------------------- */

/* Fresh bytes from Zephyr's random subsystem. */
static int fresh_random(uint8_t *buf, size_t len)
{
#if defined(CONFIG_CSPRNG_ENABLED) || defined(CONFIG_TEST_CSPRNG_GENERATOR)
    return sys_csrand_get(buf, len);
#elif defined(CONFIG_TEST_RANDOM_GENERATOR)
    sys_rand_get(buf, len); /* no cryptographic generator at all: tests only */
    return 0;
#else
#error "no entropy: enable the board's RNG (zephyr,entropy) or, on emulators only, CONFIG_TEST_RANDOM_GENERATOR"
#endif
}

static uint8_t entropy_seed[32];
static uint32_t entropy_counter;

void wb_entropy_set_seed(const uint8_t seed[32])
{
    memcpy(entropy_seed, seed, sizeof(entropy_seed));
}

/* MBEDTLS_ENTROPY_HARDWARE_ALT: mbedTLS declares no public prototype for it. */
int mbedtls_hardware_poll(void *data, unsigned char *output, size_t len, size_t *olen);

int mbedtls_hardware_poll(void *data, unsigned char *output, size_t len, size_t *olen)
{
    (void)data;
    size_t done = 0;
    while (done < len) {
        uint8_t fresh[32];
        if (fresh_random(fresh, sizeof(fresh)) != 0) {
            *olen = done;
            return MBEDTLS_ERR_ENTROPY_SOURCE_FAILED;
        }
        uint32_t mix[4] = {entropy_counter++, k_cycle_get_32(), 0, 0};
        uint64_t now = (uint64_t)k_uptime_ticks();
        mix[2] = (uint32_t)now;
        mix[3] = (uint32_t)(now >> 32);
        uint8_t block[32];
        mbedtls_sha256_context sha;
        mbedtls_sha256_init(&sha);
        int ret = mbedtls_sha256_starts(&sha, 0);
        if (ret == 0) ret = mbedtls_sha256_update(&sha, entropy_seed, sizeof(entropy_seed));
        if (ret == 0) ret = mbedtls_sha256_update(&sha, (const uint8_t *)mix, sizeof(mix));
        if (ret == 0) ret = mbedtls_sha256_update(&sha, fresh, sizeof(fresh));
        if (ret == 0) ret = mbedtls_sha256_finish(&sha, block);
        mbedtls_sha256_free(&sha);
        if (ret != 0) {
            *olen = done;
            return MBEDTLS_ERR_ENTROPY_SOURCE_FAILED;
        }
        size_t n = len - done < sizeof(block) ? len - done : sizeof(block);
        memcpy(output + done, block, n);
        done += n;
    }
    *olen = len;
    return 0;
}
