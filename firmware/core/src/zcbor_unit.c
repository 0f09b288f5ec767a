/* zcbor 0.9.1 (pinned, fetched into the cache, never committed) compiled as one unit so that
 * its own -Wextra warnings can be silenced here without touching the core's flags. */
/* zcbor_common.c type-puns floats through pointer casts: compile it without strict aliasing
 * (correct code), and silence the warnings that come with it. */
#pragma GCC optimize("no-strict-aliasing")
#pragma GCC diagnostic ignored "-Wstrict-aliasing"
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include "zcbor_common.c"
#include "zcbor_decode.c"
#include "zcbor_encode.c"
