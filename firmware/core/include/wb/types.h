/* Shared numeric vocabulary of the Wasmbed device protocol.
 * Mirrors wasmbed_hil/protocol/types.py; a host test checks every value against it. */
#ifndef WB_TYPES_H
#define WB_TYPES_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

typedef enum {
    WB_OUTCOME_RETURNED = 0,
    WB_OUTCOME_TRAPPED = 1,
    WB_OUTCOME_OUT_OF_FUEL = 2,
    WB_OUTCOME_OUT_OF_MEMORY = 3,
    WB_OUTCOME_TIMED_OUT = 4,
    WB_OUTCOME_STOPPED = 5,
    WB_OUTCOME_LOAD_FAILED = 6,
} wb_outcome_t;

typedef enum {
    WB_OK = 0,
    WB_ERR_MALFORMED = 100,
    WB_ERR_UNSUPPORTED_VERSION = 101,
    WB_ERR_UNKNOWN_MESSAGE = 102,
    WB_ERR_UNEXPECTED_MESSAGE = 103,
    WB_ERR_FRAME_TOO_LARGE = 104,
    WB_ERR_TIMEOUT = 105,
    WB_ERR_PAIRING_DISABLED = 200,
    WB_ERR_KEY_MISMATCH = 201,
    WB_ERR_BAD_PROOF = 202,
    WB_ERR_REVOKED = 203,
    WB_ERR_NOT_ENROLLED = 204,
    WB_ERR_CAPACITY = 205,
    WB_ERR_BAD_CERTIFICATE = 206,
    WB_ERR_MODULE_TOO_LARGE = 300,
    WB_ERR_DIGEST_MISMATCH = 301,
    WB_ERR_INVALID_MODULE = 302,
    WB_ERR_UNKNOWN_APP = 303,
    WB_ERR_BAD_OFFSET = 304,
    WB_ERR_NO_SPACE = 305,
    WB_ERR_BUSY = 306,
    WB_ERR_INTERNAL = 500,
    WB_ERR_SHUTTING_DOWN = 501,
} wb_error_t;

typedef enum {
    WB_APP_DEPLOYING = 0,
    WB_APP_INSTALLED = 1,
    WB_APP_RUNNING = 2,
    WB_APP_STOPPED = 3,
    WB_APP_FAILED = 4,
} wb_app_state_t;

/* The ErrorCode's name as in the protocol ("PAIRING_DISABLED"), "UNKNOWN" otherwise. */
const char *wb_error_name(uint32_t code);

#define WB_DEVICE_ID_LEN 16
#define WB_DIGEST_LEN 32
#define WB_NONCE_LEN 32
#define WB_MIN_FRAME 1024
#define WB_MAX_APP_ID 64
#define WB_MAX_NAME 128
#define WB_MAX_ENTRY 64
#define WB_MAX_REASON 256
#define WB_MAX_ARGS 16
#define WB_MAX_LOG 4096

/* A WebAssembly value as carried in StartApp.args and ExecutionResult.values. */
typedef struct {
    bool is_float;
    union {
        int64_t i;
        double f;
    } v;
} wb_value_t;

/* Limits of one application (protocol Limits). fuel == 0: no fuel budget. */
typedef struct {
    uint32_t memory_bytes;
    uint64_t fuel;
    uint32_t timeout_ms;
} wb_limits_t;

#endif
