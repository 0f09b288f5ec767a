/* STUB for the host type-check (see README.md): not Zephyr's kernel.h. */
#ifndef STUB_ZEPHYR_KERNEL_H
#define STUB_ZEPHYR_KERNEL_H
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifndef __aligned
#define __aligned(x) __attribute__((aligned(x)))
#endif
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define BUILD_ASSERT(cond, msg) _Static_assert(cond, msg)

typedef struct {
    int64_t ticks;
} k_timeout_t;
#define K_MSEC(ms) ((k_timeout_t){(ms)})
#define K_FOREVER ((k_timeout_t){-1})
#define K_NO_WAIT ((k_timeout_t){0})

struct k_sem {
    int count;
};
struct k_mutex {
    int owner;
};
struct k_thread {
    int id;
};
typedef struct k_thread *k_tid_t;
typedef struct {
    char bytes[1];
} k_thread_stack_t;
typedef void (*k_thread_entry_t)(void *p1, void *p2, void *p3);

#define K_SEM_DEFINE(name, initial, limit) struct k_sem name
#define K_MUTEX_DEFINE(name) struct k_mutex name
#define K_THREAD_STACK_DEFINE(name, size) k_thread_stack_t name[size]
#define K_THREAD_STACK_SIZEOF(sym) sizeof(sym)

int k_sem_take(struct k_sem *sem, k_timeout_t timeout);
void k_sem_give(struct k_sem *sem);
int k_mutex_lock(struct k_mutex *mutex, k_timeout_t timeout);
int k_mutex_unlock(struct k_mutex *mutex);
int64_t k_uptime_get(void);
int64_t k_uptime_ticks(void);
uint32_t k_cycle_get_32(void);
uint64_t k_ticks_to_us_floor64(uint64_t t);
int32_t k_sleep(k_timeout_t timeout);
int32_t k_msleep(int32_t ms);
k_tid_t k_thread_create(struct k_thread *new_thread, k_thread_stack_t *stack, size_t stack_size,
                        k_thread_entry_t entry, void *p1, void *p2, void *p3, int prio,
                        uint32_t options, k_timeout_t delay);
int k_thread_name_set(k_tid_t thread, const char *str);
void k_thread_abort(k_tid_t thread);
#endif
