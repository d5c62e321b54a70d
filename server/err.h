/* err.h: the server's error codes, one X-macro table feeding err_name() and err_grpc_status(). */
#ifndef FRACTALD_ERR_H
#define FRACTALD_ERR_H

/* Failures a caller can act on. 0 is success; every error is negative. The third column is the
 * gRPC status code (google.rpc.Code) the RPC layer sends for it; rpc/rpc_call.c maps them in one place. */
#define ERR_MAP(X)                                                         \
    X(ERR_INVALID, -1, 3, "invalid argument")                              \
    X(ERR_EXHAUSTED, -2, 8, "resource exhausted")                          \
    X(ERR_PRECONDITION, -3, 9, "failed precondition")                      \
    X(ERR_NOMEM, -4, 8, "out of memory")                                   \
    X(ERR_CANCELLED, -5, 1, "cancelled")                                   \
    X(ERR_DEADLINE, -6, 4, "deadline exceeded")                            \
    X(ERR_UNAVAILABLE, -7, 14, "unavailable")                              \
    X(ERR_UNIMPLEMENTED, -8, 12, "unimplemented")                          \
    X(ERR_NOT_FOUND, -9, 5, "not found")                                   \
    X(ERR_DEVICE, -10, 13, "device failure")                               \
    X(ERR_IO, -11, 13, "i/o error")                                        \
    X(ERR_INTERNAL, -12, 13, "internal error")                             \
    X(ERR_DATA_LOSS, -13, 15, "data loss")                                 \
    X(ERR_UNAUTHENTICATED, -14, 16, "unauthenticated")

enum err_code {
    ERR_OK = 0,
#define ERR_ENUM(name, value, grpc, text) name = value,
    ERR_MAP(ERR_ENUM)
#undef ERR_ENUM
};

/* Short English name of an error code ("invalid argument"); "success" for 0, "unknown error"
 * for values outside the table. Never NULL; the string is static. */
const char *err_name(int err);

/* The canonical name of a gRPC status code ("OK", "INVALID_ARGUMENT", ... "UNAUTHENTICATED"), for
 * logs and job records; "UNKNOWN" outside 0..16. Static; needs no grpc header. */
const char *err_status_name(int grpc_code);

#endif
