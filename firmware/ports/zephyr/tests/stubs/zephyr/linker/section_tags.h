/* STUB for the host type-check (see README.md): no CCM, so no __ccm_noinit_section. */
#ifndef STUB_ZEPHYR_SECTION_TAGS_H
#define STUB_ZEPHYR_SECTION_TAGS_H
#endif
