/* STUB for the host type-check (see README.md). */
#ifndef STUB_ZEPHYR_DEVICE_H
#define STUB_ZEPHYR_DEVICE_H
#include <stdbool.h>
struct device {
    const char *name;
};
bool device_is_ready(const struct device *dev);
/* the devices the stub devicetree names */
extern const struct device stub_dev_transport, stub_dev_console;
#define DEVICE_DT_GET(node_id) (&(node_id))
#endif
