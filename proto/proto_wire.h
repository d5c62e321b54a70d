/* proto_wire.h: checks on a message's wire bytes that protobuf-c's unpacked form can no longer
 * show. protobuf-c hands string fields over as NUL-terminated C strings, so a proto3 string with
 * an embedded NUL byte ("cpu\0evil") would silently read as its prefix ("cpu"). */
#ifndef FRACTAL_PROTO_WIRE_H
#define FRACTAL_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* Walks the wire bytes of a message of type desc (and of every sub-message, to a depth of 32) and
 * finds the first string field whose bytes hold a NUL. Returns 0 when there is none; 1 when there
 * is one, with its path in `path` ("device", "coloring.palette", "coloring.stops[2]..." style:
 * repeated fields get their index); -1 when the bytes are not a well-formed message (which
 * protobuf_c_message_unpack would refuse too). Unknown fields are skipped. */
int pwire_find_nul_string(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                          char *path, size_t pathlen);

#endif
