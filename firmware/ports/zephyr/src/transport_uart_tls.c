/* The core's transport (wb/transport.h) on Zephyr: TLS 1.3 over the UART chosen as
 * "wasmbed,transport-uart" in the devicetree, through the bridge to the gateway.
 *
 * The TLS half is app/tls_transport.c, compiled unchanged (mbedTLS 3.6,
 * TLS 1.3-only client, TLS_AES_128_GCM_SHA256 on secp256r1, the blob's device certificate,
 * the blob's CA and server name; non-blocking connect/poll/read, blocking write, close_notify,
 * 15 s handshake limit, stale RX drained until 50 ms of quiet). It moves bytes with the
 * application's board API (app/board.h); this file implements that API on Zephyr:
 *
 *   RX  interrupt driven: the UART ISR drains the hardware FIFO (uart_fifo_read) into a ring
 *       buffer of CONFIG_WASMBED_UART_RX_RING_SIZE bytes and wakes the main thread;
 *       uart_getc_nb(WB_UART1_BASE) takes one byte from it. A full ring drops bytes (counted,
 *       reported on the console): TLS then fails its record MAC and the core reconnects.
 *   TX  uart_poll_out() byte by byte: write() may block until written (transport.h allows it).
 *
 * WB_UART0_BASE in the same API means the console UART ("zephyr,console"), polled: the
 * console test commands ("silent 1", "forget", ...) are read from it. */
#include <errno.h>

#include <zephyr/device.h>
#include <zephyr/devicetree.h>
#include <zephyr/drivers/uart.h>
#include <zephyr/kernel.h>
#include <zephyr/spinlock.h>
#include <zephyr/sys/ring_buffer.h>

#include "board.h"
#include "crypto.h"
#include "tls_transport.h"
#include "wb/platform.h"
#include "zephyr_port.h"

#if !DT_HAS_CHOSEN(wasmbed_transport_uart)
#error "no transport UART: add 'wasmbed,transport-uart = &<uart>;' to /chosen (boards/*.overlay)"
#endif
#if !DT_HAS_CHOSEN(zephyr_console)
#error "no console UART: the board needs a 'zephyr,console' chosen node"
#endif

static const struct device *const link_dev = DEVICE_DT_GET(DT_CHOSEN(wasmbed_transport_uart));
static const struct device *const console_dev = DEVICE_DT_GET(DT_CHOSEN(zephyr_console));

RING_BUF_DECLARE(link_rx_ring, CONFIG_WASMBED_UART_RX_RING_SIZE);
static struct k_spinlock link_lock; /* ring buffer, last_rx_ms, dropped */
static K_SEM_DEFINE(link_rx_sem, 0, 1);
static uint64_t link_last_rx_ms;
static uint32_t link_dropped;
static uint32_t link_dropped_reported;

static void link_isr(const struct device *dev, void *user_data)
{
    (void)user_data;
    while (uart_irq_update(dev) > 0 && uart_irq_rx_ready(dev) > 0) {
        uint8_t buf[32];
        int n = uart_fifo_read(dev, buf, sizeof(buf));
        if (n <= 0) {
            break;
        }
        k_spinlock_key_t key = k_spin_lock(&link_lock);
        uint32_t put = ring_buf_put(&link_rx_ring, buf, (uint32_t)n);
        link_dropped += (uint32_t)n - put;
        link_last_rx_ms = (uint64_t)k_uptime_get();
        k_spin_unlock(&link_lock, key);
        k_sem_give(&link_rx_sem);
    }
}

/* ---- the board API (app/board.h) used by tls_transport.c and app.c ------------------------- */

bool uart_getc_nb(uint32_t base, uint8_t *c)
{
    if (base == WB_UART1_BASE) {
        k_spinlock_key_t key = k_spin_lock(&link_lock);
        uint32_t got = ring_buf_get(&link_rx_ring, c, 1);
        k_spin_unlock(&link_lock, key);
        return got == 1;
    }
    if (base == WB_UART0_BASE) {
        unsigned char ch;
        if (uart_poll_in(console_dev, &ch) == 0) {
            *c = ch;
            return true;
        }
    }
    return false;
}

void uart_write(uint32_t base, const uint8_t *buf, size_t len)
{
    const struct device *dev = base == WB_UART1_BASE ? link_dev : console_dev;
    for (size_t i = 0; i < len; i++) {
        uart_poll_out(dev, buf[i]);
    }
}

void uart_putc(uint32_t base, uint8_t c)
{
    uart_write(base, &c, 1);
}

uint64_t board_link_last_rx_ms(void)
{
    k_spinlock_key_t key = k_spin_lock(&link_lock);
    uint64_t t = link_last_rx_ms;
    k_spin_unlock(&link_lock, key);
    return t;
}

/* A serial line has no notion of a boot: bytes of a session from before a reset can still
 * arrive, so every connect waits for the link to be quiet (app/board.h). */
bool board_link_fresh(void)
{
    return false;
}

/* ---- this layer ---------------------------------------------------------------------------- */

void wb_zephyr_wait_rx(uint32_t timeout_ms)
{
    k_spinlock_key_t key = k_spin_lock(&link_lock);
    bool pending = !ring_buf_is_empty(&link_rx_ring);
    k_spin_unlock(&link_lock, key);
    if (!pending) {
        (void)k_sem_take(&link_rx_sem, K_MSEC(timeout_ms));
    }
}

void wb_zephyr_link_report(void)
{
    k_spinlock_key_t key = k_spin_lock(&link_lock);
    uint32_t dropped = link_dropped;
    k_spin_unlock(&link_lock, key);
    if (dropped != link_dropped_reported) {
        wb_platform_log("uart: receive ring of %u bytes full, %lu bytes dropped so far",
                        (unsigned)CONFIG_WASMBED_UART_RX_RING_SIZE, (unsigned long)dropped);
        link_dropped_reported = dropped;
    }
}

static int link_init(void)
{
    if (!device_is_ready(link_dev)) {
        wb_platform_log("uart: transport UART %s is not ready", link_dev->name);
        return -ENODEV;
    }
    if (!device_is_ready(console_dev)) {
        wb_platform_log("uart: console UART %s is not ready", console_dev->name);
        return -ENODEV;
    }
    if (link_dev == console_dev) {
        wb_platform_log("uart: the transport UART must not be the console UART (%s)",
                        link_dev->name);
        return -EINVAL;
    }
    uart_irq_rx_disable(link_dev);
    uart_irq_tx_disable(link_dev);
    int ret = uart_irq_callback_user_data_set(link_dev, link_isr, NULL);
    if (ret != 0) {
        wb_platform_log("uart: %s has no interrupt-driven API (%d): "
                        "CONFIG_UART_INTERRUPT_DRIVEN and a driver that supports it are needed",
                        link_dev->name, ret);
        return ret;
    }
    uart_irq_rx_enable(link_dev);
    wb_platform_log("uart: transport on %s, console on %s", link_dev->name, console_dev->name);
    return 0;
}

int wb_zephyr_transport_init(wb_transport_t *transport, wb_tls_t *tls)
{
    int ret = link_init();
    if (ret != 0) {
        return ret;
    }
    ret = wb_tls_transport_init(transport, tls);
    if (ret != 0) {
        char msg[160];
        wb_platform_log("tls: init: %s", wb_crypto_strerror(ret, msg, sizeof(msg)));
    }
    return ret;
}
