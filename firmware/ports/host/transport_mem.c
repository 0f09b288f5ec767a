#include <string.h>
#include "doubles.h"

static int m_connect(wb_transport_t *t)
{
    mem_transport_t *m = t->ctx;
    m->connects++;
    if (m->refuse_connect) return -1;
    m->state = m->polls_to_up ? WB_LINK_CONNECTING : WB_LINK_UP;
    m->polls_left = m->polls_to_up;
    m->drop = false;
    m->rx_len = m->rx_pos = 0;
    m->tx_len = 0;
    return 0;
}

static wb_link_state_t m_poll(wb_transport_t *t)
{
    mem_transport_t *m = t->ctx;
    if (m->drop) m->state = WB_LINK_DOWN;
    if (m->state == WB_LINK_CONNECTING && --m->polls_left <= 0) m->state = WB_LINK_UP;
    return m->state;
}

static int m_read(wb_transport_t *t, uint8_t *buf, size_t cap)
{
    mem_transport_t *m = t->ctx;
    if (m->drop || m->state != WB_LINK_UP) return -1;
    size_t n = m->rx_len - m->rx_pos;
    if (n > cap) n = cap;
    if (m->max_read && n > m->max_read) n = m->max_read;
    memcpy(buf, m->rx + m->rx_pos, n);
    m->rx_pos += n;
    if (m->rx_pos == m->rx_len) m->rx_pos = m->rx_len = 0;
    return (int)n;
}

static int m_write(wb_transport_t *t, const uint8_t *buf, size_t len)
{
    mem_transport_t *m = t->ctx;
    if (m->drop || m->state != WB_LINK_UP || m->tx_len + len > sizeof m->tx) return -1;
    memcpy(m->tx + m->tx_len, buf, len);
    m->tx_len += len;
    return 0;
}

static void m_close(wb_transport_t *t)
{
    mem_transport_t *m = t->ctx;
    m->closes++;
    m->state = WB_LINK_DOWN;
}

void mem_transport_init(mem_transport_t *m)
{
    memset(m, 0, sizeof *m);
    m->t = (wb_transport_t){m_connect, m_poll, m_read, m_write, m_close, m};
    m->state = WB_LINK_DOWN;
}

void mem_push(mem_transport_t *m, const uint8_t *p, size_t n)
{
    memcpy(m->rx + m->rx_len, p, n);
    m->rx_len += n;
}
