/* err.c: names for the error codes of err.h and for the gRPC status codes they map to. */
#include "err.h"

const char *err_name(int err)
{
    switch (err) {
    case ERR_OK: return "success";
#define ERR_CASE(name, value, grpc, text) case name: return text;
    ERR_MAP(ERR_CASE)
#undef ERR_CASE
    }
    return "unknown error";
}

const char *err_status_name(int grpc_code)
{
    static const char *const names[17] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
        "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    return grpc_code >= 0 && grpc_code <= 16 ? names[grpc_code] : "UNKNOWN";
}
