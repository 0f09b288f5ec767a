/* The MPS2-AN385's LAN9118 Ethernet controller as the device's link (instead of UART1).
 *
 * Why: QEMU 7.2's CMSDK UART model moves one byte per QEMU main-loop iteration; its LAN9118
 * model takes whole frames (a socket netdev delivers every frame it has read in one go).
 * The TLS byte stream is carried in Ethernet frames of EtherType 0x88B5 (IEEE 802 local
 * experimental) on a point-to-point link to the harness's bridge:
 *
 *   offset 0   destination MAC (6), source MAC (6), EtherType 0x88B5 (2)
 *   offset 14  kind (1): 1 DATA, 2 CREDIT, 3 HELLO
 *   offset 15  nonce (4, big endian): chosen by the device at boot, echoed by the bridge
 *   offset 19  DATA: sequence number (4, BE; per direction, from 0 at each boot)
 *              CREDIT/HELLO: limit (4, BE): the bridge may send DATA frames whose sequence
 *              number is below it (cumulative, never decreases within a boot)
 *   offset 23  DATA only: 1..1491 bytes of the stream (frames of at most 1514 bytes)
 *
 * Flow control: QEMU's model DROPS a frame that does not fit its RX FIFO (lan9118_receive
 * returns -1 when its data FIFO, 2640 words, or status FIFO, 176 entries, is full), and a
 * frame the device cannot store in its receive ring would be lost as well. So the device
 * grants credits: a limit never more than ETH_WINDOW frames ahead of what it received and
 * never more than its ring's free space (in full frames). The bridge sends nothing beyond
 * it. HELLO is the first credit of a boot: the bridge then forgets what it held for the
 * previous boot (a new nonce), and the device drops DATA of any other nonce (frames in flight
 * at a reset: counted as stale) or out of sequence (counted as dropped, said on the console). Should a frame be lost all the same (a sequence
 * number beyond the expected one), the device starts a new stream: a new nonce and HELLO;
 * the TLS session, which lost bytes, fails and reconnects over it. */
#ifndef WB_PORT_ETH_H
#define WB_PORT_ETH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ETH_BASE 0x40200000u /* AN385: LAN9118 (QEMU hw/arm/mps2.c), IRQ 13 */
#define ETH_IRQ 13u
#define ETH_MAX_PAYLOAD 1491u
#define ETH_WINDOW 6u /* frames: 6 full frames use 2,280 of the RX data FIFO's 2,640 words */

/* Probes the controller (BYTE_TEST), enables it and its receive interrupt and sends HELLO.
 * False (and nothing enabled) when there is no LAN9118. */
bool eth_init(uint32_t nonce);
void eth_send(const uint8_t *buf, size_t len);
/* Sends a CREDIT when the ring's free space allows the bridge more frames (call with
 * interrupts masked, or from the ISR). */
void eth_credit_update(void);
uint32_t eth_dropped_frames(void); /* of this stream: a hole in the sequence, a full ring */
uint32_t eth_stale_frames(void);   /* another nonce's: expected after a reset, not a loss */
uint32_t eth_resyncs(void); /* lost frames seen: each started a new stream (a new HELLO) */

/* The receive ring's side (board.c): free bytes, and storing a frame's payload. */
uint32_t link_ring_free(void);
void link_ring_put(const uint8_t *data, uint32_t len);
void board_set_irq(unsigned irq, void (*handler)(void));

#endif
