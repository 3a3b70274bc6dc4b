/*
 * wire_paths.h: the two paths inside dht_msg_decode() and dht_msg_encode()
 * (wire.c, "the fast path"), apart, so that the tests can hold each to the
 * other: the fast decoder may accept only what the full one accepts, read
 * the same way, and the fast encoder must write the packer's very bytes.
 */
#ifndef DHT_WIRE_PATHS_H
#define DHT_WIRE_PATHS_H

#include <stdbool.h>

#include "dht/wire.h"

/* Decodes body as dht_msg_decode() does if it is a data-path message in
 * its plainest form, and returns true; otherwise returns false with *msg
 * zeroed (it may be valid or not: only the full decoder says). The caller
 * has checked len against lim->frame_len_max. */
bool dht__msg_decode_fast(dht_msg *msg, const uint8_t *body, size_t len,
                          const dht_wire_limits *lim);

/* dht_msg_decode() through msgpack-c alone. */
int dht__msg_decode_full(dht_msg *msg, const uint8_t *body, size_t len,
                         const dht_wire_limits *lim);

/* dht_msg_encode() through msgpack-c's packer alone. */
int dht__msg_encode_packed(const dht_msg *msg, dht_buf *out);

#endif /* DHT_WIRE_PATHS_H */
