/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_RING_BUFFER_H
#define STUB_ZEPHYR_RING_BUFFER_H
#include <stdbool.h>
#include <stdint.h>
struct ring_buf {
    uint32_t size;
};
#define RING_BUF_DECLARE(name, size8) struct ring_buf name
uint32_t ring_buf_put(struct ring_buf *buf, const uint8_t *data, uint32_t size);
uint32_t ring_buf_get(struct ring_buf *buf, uint8_t *data, uint32_t size);
bool ring_buf_is_empty(struct ring_buf *buf);
#endif
