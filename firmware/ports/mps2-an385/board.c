/* Board support for MPS2-AN385: UARTs, console on UART0 through picolibc stdio, SysTick
 * time base (board_now_ms: timer 0, DWT or SysTick, probed at boot), HardFault reporting. */
#include "board.h"
#include "eth.h"
#include "wb/platform.h"

#include <stdio.h>

#define REG(addr) (*(volatile uint32_t *)(addr))

/* CMSDK APB UART registers */
#define UART_DATA(b) REG((b) + 0x00)
#define UART_STATE(b) REG((b) + 0x04)
#define UART_CTRL(b) REG((b) + 0x08)
#define UART_INTSTATUS(b) REG((b) + 0x0C)
#define UART_BAUDDIV(b) REG((b) + 0x10)
#define UART_STATE_TXFULL 0x1u
#define UART_STATE_RXFULL 0x2u
#define UART_CTRL_TXEN 0x1u
#define UART_CTRL_RXEN 0x2u

/* System control space */
#define SYST_CSR REG(0xE000E010)
#define SYST_RVR REG(0xE000E014)
#define SYST_CVR REG(0xE000E018)
#define SCB_CFSR REG(0xE000ED28)
#define SCB_HFSR REG(0xE000ED2C)
#define SCB_MMFAR REG(0xE000ED34)
#define SCB_BFAR REG(0xE000ED38)

void uart_init(uint32_t base)
{
    UART_BAUDDIV(base) = WB_CPU_HZ / 115200u;
    UART_CTRL(base) = UART_CTRL_TXEN | UART_CTRL_RXEN;
    /* QEMU 7.2 quirk: without one read of DATA right after enabling RX, the first received
     * bytes stall for about a second. */
    (void)UART_DATA(base);
}

void uart_putc(uint32_t base, uint8_t c)
{
    while (UART_STATE(base) & UART_STATE_TXFULL) {
    }
    UART_DATA(base) = c;
}

static bool link_eth; /* the link is the LAN9118 (board_link_select), not UART1 */

void uart_write(uint32_t base, const uint8_t *buf, size_t len)
{
    if (base == WB_UART1_BASE && link_eth) {
        eth_send(buf, len);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        uart_putc(base, buf[i]);
    }
}

/* --- link UART receive: interrupt driven ----------------------------------------------------
 *
 * The CMSDK APB UART holds one received byte (no FIFO), and QEMU's model hands it the next
 * byte only after DATA has been read and its main loop has run again. Polled, the link moved
 * nothing while the CPU was busy (decrypting a record, verifying a signature) and its
 * polling of STATE competed with QEMU's I/O thread. So UART1's RX interrupt (AN385 NVIC 2)
 * moves each byte into a ring as soon as it arrives, whatever the main program is doing,
 * and the idle wait sleeps (wfi) until a byte or the next SysTick wakes it. (Measured on
 * QEMU 7.2 under load: a 64 KiB deploy twice as fast as polled. Staying awake while bytes
 * flow, polling the ring, was slower than sleeping: the busy vCPU's register reads contend
 * with QEMU's I/O thread for its lock.)
 *
 * The ISR clears the interrupt before reading: a byte that lands after its last read raises
 * it again. A full ring leaves the byte in the UART (the emulator then holds back the next
 * one; real hardware would overrun); the reader takes it straight from the UART once the
 * ring is empty, which also keeps the link working where the interrupt never comes.
 * picolibc's vector table has only the 16 system exceptions, so board_init() copies it into
 * a RAM table with the external interrupts and points VTOR at that. */
#ifndef WB_LINK_RX_RING
#define WB_LINK_RX_RING 8192u /* a power of two; make LINK_RX_RING=<n> for a test image */
#endif
_Static_assert(WB_LINK_RX_RING >= 16u && (WB_LINK_RX_RING & (WB_LINK_RX_RING - 1u)) == 0,
               "WB_LINK_RX_RING must be a power of two, at least 16");
#define LINK_RX_IRQ 2u        /* AN385: UART1 RX */
#define UART_CTRL_RXINTEN 0x8u
#define UART_INT_RX 0x2u
#define NVIC_ISER0 REG(0xE000E100)
#define SCB_VTOR REG(0xE000ED08)
#define VECTORS (16u + 32u) /* system exceptions + AN385's 32 external interrupts */

static uint8_t link_ring[WB_LINK_RX_RING];
static volatile uint32_t link_head;  /* written by the ISR only */
static volatile uint32_t link_tail;  /* written by the reader only */
static volatile bool link_held;      /* the ring was full: a byte may wait in the UART */
static volatile uint32_t rx_count;   /* bytes taken from the UART (ISR, RAM only) */

/* 64 entries * 4 bytes: VTOR needs the table aligned to its size rounded up to a power of 2 */
static void (*ram_vectors[VECTORS])(void) __attribute__((aligned(256)));

/* Every register access is an exit to the emulator (under QEMU's big lock): four per byte,
 * and no clock read here (board_link_last_rx_ms stamps lazily). */
static void link_rx_isr(void)
{
    UART_INTSTATUS(WB_UART1_BASE) = UART_INT_RX;
    uint32_t head = link_head;
    const uint32_t first = head;
    while (UART_STATE(WB_UART1_BASE) & UART_STATE_RXFULL) {
        if (head - link_tail >= WB_LINK_RX_RING) {
            link_held = true; /* the byte waits in the UART */
            break;
        }
        link_ring[head & (WB_LINK_RX_RING - 1u)] = (uint8_t)UART_DATA(WB_UART1_BASE);
        head++;
        link_head = head;
    }
    if (head != first) {
        rx_count = rx_count + (head - first);
    }
}

static void link_rx_init(void)
{
    const uint32_t *current = (const uint32_t *)SCB_VTOR; /* 0 after reset */
    for (unsigned i = 0; i < 16u; i++) {
        ram_vectors[i] = (void (*)(void))current[i];
    }
    for (unsigned i = 16u; i < VECTORS; i++) {
        ram_vectors[i] = ram_vectors[2]; /* NMI's (picolibc: arm_ignore_isr) */
    }
    ram_vectors[16u + LINK_RX_IRQ] = link_rx_isr;
    __asm__ volatile("dsb" ::: "memory");
    SCB_VTOR = (uint32_t)ram_vectors;
    __asm__ volatile("dsb\n isb" ::: "memory");
    UART_CTRL(WB_UART1_BASE) = UART_CTRL(WB_UART1_BASE) | UART_CTRL_RXINTEN;
    NVIC_ISER0 = 1u << LINK_RX_IRQ;
}

/* Masked: the ISR's work done by the reader, for a byte left in the UART. The first time
 * (per boot) it says so on the console: tests/test_qemu_backend.py checks, with a tiny ring,
 * that this path carries the link. */
static void link_pull(void)
{
    static bool said;
    if (!said) {
        said = true;
        wb_platform_log("link: receive ring full (%u bytes): a byte waited in the UART",
                        (unsigned)WB_LINK_RX_RING);
    }
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    link_held = false;
    link_rx_isr();
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
}

static bool link_getc(uint8_t *c)
{
    uint32_t tail = link_tail;
    if (tail == link_head) {
        if (!link_held) {
            return false;
        }
        link_pull();
        if (tail == link_head) {
            return false;
        }
    }
    *c = link_ring[tail & (WB_LINK_RX_RING - 1u)];
    link_tail = tail + 1u;
    if (link_eth && (tail & 0xFFu) == 0xFFu) {
        /* Every 256 bytes taken: room for more frames may have opened (eth.h, credits). */
        uint32_t primask;
        __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
        eth_credit_update();
        __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    }
    return true;
}

/* The Ethernet link's side of the ring (eth.c, from its ISR). */
uint32_t link_ring_free(void)
{
    return WB_LINK_RX_RING - (link_head - link_tail);
}

void link_ring_put(const uint8_t *data, uint32_t len)
{
    uint32_t head = link_head;
    for (uint32_t i = 0; i < len; i++) {
        link_ring[(head + i) & (WB_LINK_RX_RING - 1u)] = data[i];
    }
    link_head = head + len;
    rx_count = rx_count + len;
}

void board_set_irq(unsigned irq, void (*handler)(void))
{
    ram_vectors[16u + irq] = handler;
    __asm__ volatile("dsb" ::: "memory");
    NVIC_ISER0 = 1u << irq;
}

bool board_link_select(uint32_t kind, uint32_t nonce)
{
    if (kind != WB_LINK_ETHERNET) {
        return false;
    }
    if (!eth_init(nonce)) {
        wb_platform_log("link: no LAN9118 at 0x%08x: the link stays on UART1", ETH_BASE);
        return false;
    }
    /* UART1 is left as it is: nothing dials it. */
    link_eth = true;
    wb_platform_log("link: ethernet (LAN9118, frames of up to %u bytes, window %u)",
                    (unsigned)ETH_MAX_PAYLOAD, (unsigned)ETH_WINDOW);
    return true;
}

bool board_link_fresh(void)
{
    return link_eth;
}

bool uart_getc_nb(uint32_t base, uint8_t *c)
{
    if (base == WB_UART1_BASE) {
        return link_getc(c);
    }
    if (!(UART_STATE(base) & UART_STATE_RXFULL)) {
        return false;
    }
    *c = (uint8_t)UART_DATA(base);
    return true;
}

/* When the link last delivered a byte: stamped by the first call after the ISR counted new
 * bytes (the device loop asks on every pass), so the ISR reads no clock. */
uint64_t board_link_last_rx_ms(void)
{
    static uint32_t seen;
    static uint64_t stamp;
    static uint32_t dropped_said;
    uint32_t dropped = link_eth ? eth_dropped_frames() : 0;
    if (dropped != dropped_said) {
        /* A lost frame stalls the stream (later ones are out of sequence): say so. Credits
         * keep the bridge from overrunning the controller; tests/test_qemu_ethernet.py checks
         * that this line appears when the bridge ignores them, and never otherwise. */
        dropped_said = dropped;
        wb_platform_log("link: dropped %u ethernet frames (out of sequence), %u new streams "
                        "after a lost frame, %u stale frames of an earlier stream",
                        (unsigned)dropped, (unsigned)eth_resyncs(),
                        (unsigned)eth_stale_frames());
    }
    uint32_t count = rx_count;
    if (count != seen) {
        seen = count;
        stamp = board_now_ms();
    }
    return stamp;
}

void board_idle(void)
{
    /* Sleep until an interrupt: a byte on the link (its RX interrupt) or the next SysTick
     * (1 ms), which also bounds how long a console byte (UART0, polled) waits. Masked
     * between the check and the wfi, so a byte arriving in between still wakes it. A byte
     * waiting in the link UART with an empty ring (no interrupt came) is pulled instead. */
    __asm__ volatile("cpsid i" ::: "memory");
    if (link_tail == link_head) {
        if (!link_eth && (UART_STATE(WB_UART1_BASE) & UART_STATE_RXFULL)) {
            link_held = false;
            link_rx_isr();
        } else if (!(UART_STATE(WB_UART0_BASE) & UART_STATE_RXFULL)) {
            __asm__ volatile("wfi");
        }
    }
    __asm__ volatile("cpsie i" ::: "memory");
}

/* --- console: picolibc stdio on UART0 ----------------------------------------------------- */

static int console_put(char c, FILE *file)
{
    (void)file;
    if (c == '\n') {
        uart_putc(WB_UART0_BASE, '\r');
    }
    uart_putc(WB_UART0_BASE, (uint8_t)c);
    return (unsigned char)c;
}

static FILE console = FDEV_SETUP_STREAM(console_put, NULL, NULL, _FDEV_SETUP_WRITE);
FILE *const stdin = &console;
FILE *const stdout = &console;
FILE *const stderr = &console;

/* --- time base ---------------------------------------------------------------------------- */

/* Time comes from a free-running 32-bit counter read when asked, so it stays right even when
 * the host is too busy to deliver every SysTick interrupt (counting interrupts ran slow under
 * load on QEMU). Which counter is probed once at boot, because the emulators differ:
 *   - CMSDK APB timer 0 (0x40000000, 25 MHz): QEMU's mps2-an385 has it (hw/timer/
 *     cmsdk-apb-timer.c, PID0/PID1 = 0x22/0xB8); Renode releases up to 1.16.1 have no model
 *     of it (renode/mps2-an385.repl leaves it out), and an unmapped read there returns 0.
 *   - DWT CYCCNT (0xE0001004), counting the 25 MHz processor clock: Renode's
 *     Miscellaneous.DWT (in every release since 1.15.0, renode/mps2-an385.repl maps it);
 *     QEMU 7.2 has no DWT, so its CYCCNT does not count there.
 *   - otherwise SysTick wraps (1 ms each) counted by the interrupt, plus the current count.
 * The choice is logged once as "time base: <name>" (board_time_base()).
 * Build flags for tests: -DWB_TIME_BASE_SKIP_TIMER0, -DWB_TIME_BASE_SKIP_DWT. */
#define TIMER0_BASE 0x40000000u
#define TIMER_CTRL REG(TIMER0_BASE + 0x00)
#define TIMER_VALUE REG(TIMER0_BASE + 0x04)
#define TIMER_RELOAD REG(TIMER0_BASE + 0x08)
#define TIMER_PID0 REG(TIMER0_BASE + 0xFE0)
#define TIMER_PID1 REG(TIMER0_BASE + 0xFE4)
#define TIMER_HZ 25000000u /* MPS2-AN385 peripheral clock */

#define DEMCR REG(0xE000EDFC)
#define DEMCR_TRCENA (1u << 24)
#define DWT_BASE 0xE0001000u
#define DWT_CTRL REG(DWT_BASE + 0x000)
#define DWT_CYCCNT REG(DWT_BASE + 0x004)
#define DWT_CTRL_CYCCNTENA 0x1u

enum time_base { TIME_BASE_TIMER0, TIME_BASE_DWT, TIME_BASE_SYSTICK };
static enum time_base time_base = TIME_BASE_SYSTICK;

static volatile uint32_t count_last;  /* counter value (elapsed, counting up) at the last read */
static volatile uint64_t count_wraps; /* full 2^32 periods before it */
static volatile uint64_t systick_ms;  /* SysTick wraps (fallback time base) */

static uint32_t counter_now(void)
{
    return time_base == TIME_BASE_TIMER0 ? 0xFFFFFFFFu - TIMER_VALUE : DWT_CYCCNT;
}

static uint64_t counter_ticks(void)
{
    uint32_t primask;
    __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
    uint32_t elapsed = counter_now();
    if (elapsed < count_last) {
        count_wraps = count_wraps + 1;
    }
    count_last = elapsed;
    uint64_t ticks = (count_wraps << 32) | elapsed;
    __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
    return ticks;
}

void arm_systick_isr(void)
{
    if (time_base == TIME_BASE_SYSTICK) {
        systick_ms = systick_ms + 1;
    } else {
        (void)counter_ticks(); /* at least one read per wrap period (171 s) */
    }
}

uint64_t board_now_ms(void)
{
    if (time_base == TIME_BASE_SYSTICK) {
        uint32_t primask;
        __asm__ volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
        uint64_t ms = systick_ms;
        __asm__ volatile("msr primask, %0" ::"r"(primask) : "memory");
        return ms;
    }
    return counter_ticks() / (TIMER_HZ / 1000u);
}

uint32_t board_systick_value(void)
{
    return SYST_CVR;
}

const char *board_time_base(void)
{
    static const char *const names[] = {"cmsdk-timer0", "dwt-cyccnt", "systick"};
    return names[time_base];
}

static bool timer0_present(void)
{
#ifdef WB_TIME_BASE_SKIP_TIMER0
    return false;
#else
    return (TIMER_PID0 & 0xFFu) == 0x22u && (TIMER_PID1 & 0xFFu) == 0xB8u;
#endif
}

static bool dwt_counts(void)
{
#ifdef WB_TIME_BASE_SKIP_DWT
    return false;
#else
    DEMCR = DEMCR | DEMCR_TRCENA;
    DWT_CYCCNT = 0;
    DWT_CTRL = DWT_CTRL | DWT_CTRL_CYCCNTENA;
    uint32_t first = DWT_CYCCNT;
    /* A counting CYCCNT moves within a few thousand cycles (on Renode before 1.16 a read
     * without a time sync moves once per quantum: give it long enough). */
    for (volatile uint32_t i = 0; i < 200000u; i++) {
        if (DWT_CYCCNT != first) {
            return true;
        }
    }
    return false;
#endif
}

static void time_base_init(void)
{
    if (timer0_present()) {
        TIMER_RELOAD = 0xFFFFFFFFu;
        TIMER_VALUE = 0xFFFFFFFFu;
        TIMER_CTRL = 0x1; /* enable, no interrupt */
        time_base = TIME_BASE_TIMER0;
    } else if (dwt_counts()) {
        time_base = TIME_BASE_DWT;
    } else {
        time_base = TIME_BASE_SYSTICK;
    }
    count_last = counter_now();
}

void board_init(void)
{
    uart_init(WB_UART0_BASE);
    uart_init(WB_UART1_BASE);
    time_base_init();
    SYST_RVR = WB_CPU_HZ / 1000u - 1u;
    SYST_CVR = 0;
    SYST_CSR = 0x7; /* processor clock, interrupt, enable */
    link_rx_init();
}

void board_halt(void)
{
    SYST_CSR = 0;
    for (;;) {
        __asm__ volatile("wfi");
    }
}

/* --- HardFault ---------------------------------------------------------------------------- */

/* Direct UART output: the fault may have happened inside stdio. */
static void fault_puts(const char *s)
{
    while (*s) {
        if (*s == '\n') {
            uart_putc(WB_UART0_BASE, '\r');
        }
        uart_putc(WB_UART0_BASE, (uint8_t)*s++);
    }
}

static void fault_hex(const char *label, uint32_t value)
{
    static const char digits[] = "0123456789abcdef";
    char buf[11];
    buf[0] = '0';
    buf[1] = 'x';
    for (int i = 0; i < 8; i++) {
        buf[2 + i] = digits[(value >> (28 - 4 * i)) & 0xF];
    }
    buf[10] = 0;
    fault_puts(label);
    fault_puts(buf);
}

void wb_hardfault_report(const uint32_t *frame, uint32_t exc_return) __attribute__((used, noreturn));
void wb_hardfault_report(const uint32_t *frame, uint32_t exc_return)
{
    fault_puts("\n*** HARDFAULT");
    fault_hex(" pc=", frame[6]);
    fault_hex(" lr=", frame[5]);
    fault_hex(" psr=", frame[7]);
    fault_hex(" sp=", (uint32_t)frame);
    fault_hex(" exc_return=", exc_return);
    fault_hex("\n*** cfsr=", SCB_CFSR);
    fault_hex(" hfsr=", SCB_HFSR);
    fault_hex(" bfar=", SCB_BFAR);
    fault_hex(" mmfar=", SCB_MMFAR);
    fault_puts("\n*** halted\n");
    board_halt();
}

/* Overrides picolibc's weak vector entries (libc: picolib/machine/arm/interrupt.c). */
__attribute__((naked)) void arm_hardfault_isr(void)
{
    __asm__ volatile(
        "tst lr, #4\n"
        "ite eq\n"
        "mrseq r0, msp\n"
        "mrsne r0, psp\n"
        "mov r1, lr\n"
        "b wb_hardfault_report\n");
}

__attribute__((naked)) void arm_memmanage_isr(void) { __asm__ volatile("b arm_hardfault_isr\n"); }
__attribute__((naked)) void arm_busfault_isr(void) { __asm__ volatile("b arm_hardfault_isr\n"); }
__attribute__((naked)) void arm_usagefault_isr(void) { __asm__ volatile("b arm_hardfault_isr\n"); }
