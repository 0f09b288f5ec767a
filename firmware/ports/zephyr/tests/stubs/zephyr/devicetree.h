/* STUB for the host type-check (see README.md): the chosen nodes and reg values the layer
 * uses. STUB_NO_BLOB_PARTITION removes the wasmbed,blob-partition chosen node. */
#ifndef STUB_ZEPHYR_DEVICETREE_H
#define STUB_ZEPHYR_DEVICETREE_H
#define DT_HAS_CHOSEN(prop) STUB_HAS_CHOSEN_##prop
#define STUB_HAS_CHOSEN_wasmbed_transport_uart 1
#define STUB_HAS_CHOSEN_zephyr_console 1
#ifdef STUB_NO_BLOB_PARTITION
#define STUB_HAS_CHOSEN_wasmbed_blob_partition 0
#else
#define STUB_HAS_CHOSEN_wasmbed_blob_partition 1
#endif
#define DT_CHOSEN(prop) STUB_CHOSEN_##prop
#define STUB_CHOSEN_wasmbed_transport_uart stub_dev_transport
#define STUB_CHOSEN_zephyr_console stub_dev_console
#define STUB_CHOSEN_wasmbed_blob_partition stub_partition
#define DT_GPARENT(node_id) stub_flash
#define DT_NODE_HAS_COMPAT(node_id, compat) 1
#define DT_REG_ADDR(node_id) STUB_REG_ADDR(node_id)
#define STUB_REG_ADDR(node_id) STUB_REG_ADDR_##node_id
#define STUB_REG_ADDR_stub_flash 0x08000000u
#define STUB_REG_ADDR_stub_partition 0x000e0000u
#define DT_REG_SIZE(node_id) 0x4000u
#endif
