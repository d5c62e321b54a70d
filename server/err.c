/* err.c: names for the error codes of err.h. */
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
