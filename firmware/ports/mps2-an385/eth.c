/* LAN9118 driver for the link: framing and credits in eth.h. Written against QEMU 7.2's
 * model of the chip (hw/net/lan9118.c): 32-bit register access, transmit as soon as the
 * last word of a frame is in the TX data FIFO. A real LAN9118/LAN9220 also needs its PHY
 * brought up (auto-negotiation) and TX/RX FIFO levels checked; that is not done here. */
#include "eth.h"

#include <string.h>

#include "board.h"
#include "wb/platform.h"

#define REG(addr) (*(volatile uint32_t *)(addr))
#define E(off) REG(ETH_BASE + (off))
#define RX_DATA 0x00u
#define TX_DATA 0x20u
#define RX_STATUS 0x40u
#define TX_STATUS 0x48u
#define IRQ_CFG 0x54u
#define INT_STS 0x58u
#define INT_EN 0x5Cu
#define BYTE_TEST 0x64u
#define TX_CFG 0x70u
#define RX_FIFO_INF 0x7Cu
#define TX_FIFO_INF 0x80u
#define MAC_CSR_CMD 0xA4u
#define MAC_CSR_DATA 0xA8u

#define IRQ_CFG_ACTIVE_HIGH_PUSH_PULL 0x111u /* IRQ_EN | IRQ_POL | IRQ_TYPE */
#define INT_RSFL 0x8u                         /* RX status FIFO above its level (0) */
#define TX_CFG_TX_ON 0x2u
#define MAC_CSR_BUSY 0x80000000u
#define MAC_CR 1u
#define MAC_CR_RXEN 0x4u
#define MAC_CR_TXEN 0x8u
#define MAC_CR_PRMS 0x40000u
#define MAC_CR_FDPX 0x100000u
#define RX_STATUS_ERROR 0x8000u
#define TX_CMD_A_FIRST_LAST 0x3000u

#define ETHERTYPE 0x88B5u
#define HDR 23u
#define KIND_DATA 1u
#define KIND_CREDIT 2u
#define KIND_HELLO 3u
#define MAX_FRAME (HDR + ETH_MAX_PAYLOAD) /* 1514 */

static const uint8_t mac_bridge[6] = {0x02, 0x57, 0x42, 0x00, 0x00, 0x02};
static const uint8_t mac_device[6] = {0x02, 0x57, 0x42, 0x00, 0x00, 0x01};

static uint32_t nonce;
static uint32_t tx_seq;
static volatile uint32_t rx_seq;     /* DATA frames accepted this boot */
static volatile uint32_t advertised; /* the limit last granted */
static volatile uint32_t dropped;    /* DATA frames of this stream dropped: out of sequence */
static volatile uint32_t stale;      /* frames of another nonce (an earlier boot or stream) */
static volatile uint32_t resyncs;    /* new streams started after a lost frame */
static uint32_t rx_words[(2048u + 4u) / 4u]; /* one received frame (+ its CRC) */
static uint32_t tx_words[(MAX_FRAME + 3u) / 4u];

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void mac_write(uint32_t reg, uint32_t value)
{
    while (E(MAC_CSR_CMD) & MAC_CSR_BUSY) {
    }
    E(MAC_CSR_DATA) = value;
    E(MAC_CSR_CMD) = MAC_CSR_BUSY | reg; /* busy + write (R/nW clear) */
    while (E(MAC_CSR_CMD) & MAC_CSR_BUSY) {
    }
}

/* One frame: header, then `len` payload bytes (DATA) or none. Interrupts are masked while
 * the frame's words go into the TX FIFO: the ISR may send a CREDIT in between. */
static void send_frame(uint8_t kind, uint32_t value, const uint8_t *payload, size_t len)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    uint8_t *f = (uint8_t *)tx_words;
    memcpy(f, mac_bridge, 6);
    memcpy(f + 6, mac_device, 6);
    f[12] = (uint8_t)(ETHERTYPE >> 8);
    f[13] = (uint8_t)ETHERTYPE;
    f[14] = kind;
    put32(f + 15, nonce);
    put32(f + 19, value);
    if (len) {
        memcpy(f + HDR, payload, len);
    }
    const uint32_t frame_len = HDR + (uint32_t)len;
    const uint32_t words = (frame_len + 3u) / 4u;
    uint32_t inf;
    while (((inf = E(TX_FIFO_INF)) & 0xFFFFu) < words * 4u + 8u) {
    }
    if ((inf >> 16) & 0xFFu) {
        (void)E(TX_STATUS); /* keep the TX status FIFO from filling up */
    }
    E(TX_DATA) = TX_CMD_A_FIRST_LAST | frame_len;
    E(TX_DATA) = frame_len;
    for (uint32_t i = 0; i < words; i++) {
        E(TX_DATA) = tx_words[i];
    }
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

void eth_send(const uint8_t *buf, size_t len)
{
    while (len) {
        size_t n = len < ETH_MAX_PAYLOAD ? len : ETH_MAX_PAYLOAD;
        send_frame(KIND_DATA, tx_seq++, buf, n);
        buf += n;
        len -= n;
    }
}

/* The limit the ring allows now: never more than ETH_WINDOW frames beyond what arrived (the
 * model's RX FIFO), never more full frames than the ring has room for. */
static uint32_t limit_now(void)
{
    uint32_t room = link_ring_free() / ETH_MAX_PAYLOAD;
    return rx_seq + (room < ETH_WINDOW ? room : ETH_WINDOW);
}

void eth_credit_update(void)
{
    const uint32_t limit = limit_now();
    const uint32_t old = advertised;
    if (limit <= old) {
        return; /* limits never go back: what was granted stays granted */
    }
    /* Batch: grant when half a window opened, or at once when the bridge is (nearly) out. */
    if (limit - old >= ETH_WINDOW / 2u || old - rx_seq <= 1u) {
        advertised = limit;
        send_frame(KIND_CREDIT, limit, NULL, 0);
    }
}

/* After a lost frame: a new nonce and HELLO, as at boot. The bridge forgets what it held
 * and the TLS session (which lost bytes) fails and reconnects; the link itself carries on.
 * Called with interrupts masked (the ISR). */
static void resync(void)
{
    nonce = nonce * 1664525u + 1013904223u;
    rx_seq = 0;
    tx_seq = 0;
    resyncs = resyncs + 1u;
    advertised = limit_now();
    send_frame(KIND_HELLO, advertised, NULL, 0);
}

static void eth_isr(void)
{
    E(INT_STS) = INT_RSFL; /* before draining: a frame landing after the last pop raises it */
    const uint8_t *f = (const uint8_t *)rx_words;
    while ((E(RX_FIFO_INF) >> 16) & 0xFFu) {
        const uint32_t status = E(RX_STATUS);
        const uint32_t size = (status >> 16) & 0x3FFFu; /* with the 4-byte CRC */
        const uint32_t words = (size + 3u) / 4u;
        for (uint32_t i = 0; i < words; i++) {
            const uint32_t w = E(RX_DATA);
            if (i < sizeof(rx_words) / 4u) {
                rx_words[i] = w;
            }
        }
        if ((status & RX_STATUS_ERROR) || size < HDR + 4u + 1u || size > 2048u ||
            f[12] != (uint8_t)(ETHERTYPE >> 8) || f[13] != (uint8_t)ETHERTYPE) {
            continue; /* not ours */
        }
        const uint32_t len = size - 4u - HDR;
        if (f[14] != KIND_DATA || get32(f + 15) != nonce) {
            stale = stale + 1u; /* another boot's (in flight at a reset), or not DATA */
            continue;
        }
        const uint32_t seq = get32(f + 19);
        if (seq != rx_seq || rx_seq >= advertised || len > ETH_MAX_PAYLOAD ||
            len > link_ring_free()) {
            dropped = dropped + 1u;
            if (seq > rx_seq) {
                resync(); /* a frame was lost: the stream has a hole, start a new one */
            }
            continue;
        }
        link_ring_put(f + HDR, len);
        rx_seq = rx_seq + 1u;
    }
    eth_credit_update();
}

uint32_t eth_dropped_frames(void)
{
    return dropped;
}

uint32_t eth_stale_frames(void)
{
    return stale;
}

uint32_t eth_resyncs(void)
{
    return resyncs;
}

bool eth_init(uint32_t boot_nonce)
{
    if (E(BYTE_TEST) != 0x87654321u) {
        return false;
    }
    nonce = boot_nonce;
    E(INT_EN) = 0;
    E(INT_STS) = 0xFFFFFFFFu;
    E(TX_CFG) = TX_CFG_TX_ON;
    mac_write(MAC_CR, MAC_CR_TXEN | MAC_CR_RXEN | MAC_CR_PRMS | MAC_CR_FDPX);
    E(IRQ_CFG) = IRQ_CFG_ACTIVE_HIGH_PUSH_PULL;
    board_set_irq(ETH_IRQ, eth_isr);
    E(INT_EN) = INT_RSFL;
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    advertised = limit_now();
    send_frame(KIND_HELLO, advertised, NULL, 0);
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return true;
}
