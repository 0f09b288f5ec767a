/* wasmbed device on Zephyr with WAMR: the entry point.
 *
 * Boot: console banner -> per-device blob (format version 1 of the bare-metal image, parsed by
 * the unchanged app/blob.c; see README.md for where it comes from on each board)
 * -> mbedTLS heap -> device credentials and RNG (wb_crypto_init, reused) -> TLS 1.3 transport
 * on the "wasmbed,transport-uart" UART -> WAMR worker -> the portable device core:
 * wb_device_init + for (;;) wb_device_poll(). A bad blob or bad credentials are reported on
 * the console and the device halts, as the bare-metal image does: the blob, credentials,
 * configuration and device loop are the bare-metal image's (app/app.c); this
 * file keeps what is Zephyr's: where the blob and buffers live, the transport, WAMR, waiting. */
#include <stdio.h>
#include <string.h>

#include <zephyr/devicetree.h>
#include <zephyr/kernel.h>
#include <zephyr/linker/section_tags.h>
#include <zephyr/version.h>

#include "app.h"
#include "blob.h"
#include "board.h" /* WB_BLOB_MAX_SIZE */
#include "mbedtls/memory_buffer_alloc.h"
#include "runtime_wamr.h"
#include "tls_transport.h"
#include "wb/device.h"
#include "wb/platform.h"
#include "zephyr_port.h"

#if defined(CONFIG_CPU_CORTEX_M3)
#define WB_ARCH "cortex-m3"
#elif defined(CONFIG_CPU_CORTEX_M4)
#define WB_ARCH "cortex-m4"
#elif defined(CONFIG_CPU_CORTEX_M7)
#define WB_ARCH "cortex-m7"
#elif defined(CONFIG_CPU_CORTEX_M33)
#define WB_ARCH "cortex-m33"
#else
#define WB_ARCH CONFIG_ARCH
#endif

/* Large static buffers go to the core-coupled memory where the board has one and the
 * application asks for it (stm32f4_disco: 64 KiB CCM next to 128 KiB SRAM). */
#if defined(CONFIG_WASMBED_USE_CCM) && defined(__ccm_noinit_section)
#define WB_BIG __ccm_noinit_section
#else
#define WB_BIG
#endif

static uint8_t mbedtls_heap[CONFIG_WASMBED_MBEDTLS_HEAP_SIZE] WB_BIG __aligned(8);
static uint8_t module_store[CONFIG_WASMBED_MODULE_STORE_SIZE] WB_BIG __aligned(8);
static uint8_t frame_buffer[CONFIG_WASMBED_MAX_FRAME_SIZE + 4] __aligned(8);
static uint8_t device_state[CONFIG_WASMBED_DEVICE_STATE_SIZE] __aligned(8);

static wb_blob_t blob;
static wb_tls_t tls;
static wb_transport_t transport;

/* ---- the per-device blob ------------------------------------------------------------------- */

#if defined(CONFIG_WASMBED_BLOB_FROM_PARTITION)
#if !DT_HAS_CHOSEN(wasmbed_blob_partition)
#error "CONFIG_WASMBED_BLOB_FROM_PARTITION needs a 'wasmbed,blob-partition' chosen node"
#endif
/* A fixed partition of the SoC's internal, memory-mapped flash: partition -> partitions ->
 * flash node, whose reg is the flash base address. */
#define WB_BLOB_NODE DT_CHOSEN(wasmbed_blob_partition)
#define WB_BLOB_FLASH_NODE DT_GPARENT(WB_BLOB_NODE)
BUILD_ASSERT(DT_NODE_HAS_COMPAT(WB_BLOB_FLASH_NODE, soc_nv_flash),
             "the blob partition must be in the SoC's memory-mapped flash (soc-nv-flash)");
#define WB_BLOB_MEM ((const uint8_t *)(uintptr_t)(DT_REG_ADDR(WB_BLOB_FLASH_NODE) + \
                                                  DT_REG_ADDR(WB_BLOB_NODE)))
#define WB_BLOB_CAP MIN((size_t)DT_REG_SIZE(WB_BLOB_NODE), (size_t)WB_BLOB_MAX_SIZE)
#define WB_BLOB_WHERE "flash partition"
#elif defined(CONFIG_WASMBED_BLOB_FROM_RAM)
/* Placed in RAM by the emulator before reset (Renode: sysbus LoadBinary; QEMU: -device
 * loader), outside the RAM Zephyr links into (see boards/mps2_an385.overlay). */
#define WB_BLOB_MEM ((const uint8_t *)(uintptr_t)CONFIG_WASMBED_BLOB_RAM_ADDRESS)
#define WB_BLOB_CAP ((size_t)WB_BLOB_MAX_SIZE)
#define WB_BLOB_WHERE "RAM"
#elif defined(CONFIG_WASMBED_BLOB_BUILTIN)
/* Compiled in from CONFIG_WASMBED_BLOB_FILE: one image per device, for development only. */
static const uint8_t builtin_blob[] = {
#include "wb_blob.inc"
};
#define WB_BLOB_MEM builtin_blob
#define WB_BLOB_CAP MIN(sizeof(builtin_blob), (size_t)WB_BLOB_MAX_SIZE)
#define WB_BLOB_WHERE "the image (built in)"
#else
#error "choose where the per-device blob comes from (CONFIG_WASMBED_BLOB_*)"
#endif

/* ---- the device loop ----------------------------------------------------------------------- */

/* Between two polls: report dropped link bytes, then sleep until a byte arrives (or 5 ms). */
static void idle(void)
{
    wb_zephyr_link_report();
    wb_zephyr_wait_rx(5);
}

/* "reboot" on the console (test control, this image only): a cold reboot through Zephyr. */
static bool console_command(const char *line)
{
    if (strcmp(line, "reboot") == 0) {
        wb_zephyr_reboot("console command");
    }
    return false;
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(void)
{
    char err[160];
    printf("\n");
    wb_platform_log("wasmbed firmware %s, Zephyr %s, board %s (%s), runtime wamr",
                    CONFIG_WASMBED_FIRMWARE_VERSION, KERNEL_VERSION_STRING, CONFIG_BOARD,
                    WB_ARCH);
#if defined(CONFIG_TEST_RANDOM_GENERATOR)
    wb_platform_log("WARNING: CONFIG_TEST_RANDOM_GENERATOR: entropy = blob seed + a "
                    "non-cryptographic generator. FIT FOR TESTS ONLY.");
#endif
    /* mbedTLS allocates from its own static heap: set it up before anything uses mbedTLS
     * (the blob check only hashes, the credentials parse keys and certificates). */
    mbedtls_memory_buffer_alloc_init(mbedtls_heap, sizeof(mbedtls_heap));
    wb_app_load_credentials(WB_BLOB_MEM, WB_BLOB_CAP, WB_BLOB_WHERE, &blob);
    if (wb_zephyr_transport_init(&transport, &tls) != 0) {
        wb_app_halt("transport initialisation failed (see above)");
    }
    if (wb_wamr_start() != 0) {
        wb_app_halt("WAMR did not start");
    }

    static wb_device_config_t config = {
        .architecture = WB_ARCH,
        .runtime = "wamr",
        .firmware = CONFIG_WASMBED_FIRMWARE_VERSION,
        .max_module_size = CONFIG_WASMBED_MODULE_STORE_SIZE,
        .max_frame_size = CONFIG_WASMBED_MAX_FRAME_SIZE,
        .max_apps = CONFIG_WASMBED_MAX_APPS,
        .window = CONFIG_WASMBED_WINDOW,
        .module_store = module_store,
        .module_store_size = sizeof(module_store),
        .frame_buffer = frame_buffer,
        .frame_buffer_size = sizeof(frame_buffer),
    };
    config.memory_total = (uint32_t)wb_wamr_pool_size();
    wb_app_apply_blob_config(&config, &blob);

    size_t need = wb_device_state_size();
    if (need > sizeof(device_state)) {
        snprintf(err, sizeof(err), "device state needs %lu bytes, CONFIG_WASMBED_DEVICE_STATE_SIZE "
                 "is %lu", (unsigned long)need, (unsigned long)sizeof(device_state));
        wb_app_halt(err);
    }
    static const wb_app_ops_t ops = {.idle = idle, .console_command = console_command};
    wb_app_run_device(device_state, &config, &transport, &ops);
}
