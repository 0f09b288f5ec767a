/* Names of the error codes, for console lines (tests parse them: see
 * wasmbed_hil/bench/console.py). Kept equal to wasmbed_hil/protocol/types.py by a test. */
#include "wb/types.h"

const char *wb_error_name(uint32_t code)
{
    switch (code) {
    case 0: return "OK";
    case 100: return "MALFORMED";
    case 101: return "UNSUPPORTED_VERSION";
    case 102: return "UNKNOWN_MESSAGE";
    case 103: return "UNEXPECTED_MESSAGE";
    case 104: return "FRAME_TOO_LARGE";
    case 105: return "TIMEOUT";
    case 200: return "PAIRING_DISABLED";
    case 201: return "KEY_MISMATCH";
    case 202: return "BAD_PROOF";
    case 203: return "REVOKED";
    case 204: return "NOT_ENROLLED";
    case 205: return "CAPACITY";
    case 206: return "BAD_CERTIFICATE";
    case 300: return "MODULE_TOO_LARGE";
    case 301: return "DIGEST_MISMATCH";
    case 302: return "INVALID_MODULE";
    case 303: return "UNKNOWN_APP";
    case 304: return "BAD_OFFSET";
    case 305: return "NO_SPACE";
    case 306: return "BUSY";
    case 500: return "INTERNAL";
    case 501: return "SHUTTING_DOWN";
    default: return "UNKNOWN";
    }
}
