/*
 * mp_check.h: a bounds pre-scan of a msgpack buffer (internal to libdht).
 *
 * msgpack-c's unpacker allocates an array's or map's element storage from the
 * count the header declares, before it knows whether the elements are there,
 * so a 5-byte body declaring 2^32-1 elements asks for a ~100 GB allocation
 * (and on a 32-bit size_t the multiplication wraps). The wire decoder runs
 * this walker first and hands a buffer to msgpack-c only when it passes.
 */
#ifndef DHT_MP_CHECK_H
#define DHT_MP_CHECK_H

#include <stddef.h>
#include <stdint.h>

/* The deepest nesting dht__mp_check() can track (its stack is fixed-size). */
#define DHT__MP_CHECK_DEPTH_LIMIT 64

/*
 * Checks that buf[0..len) holds exactly one complete msgpack object that is
 * safe to give to msgpack-c: every declared length and count fits in the bytes
 * that remain, and containers nest at most depth_max deep (a top-level map
 * is depth 1; empty containers count too). Never reads outside buf[0..len).
 * Returns 0, or
 *   DHT_ERR_TRUNCATED  the buffer ends before the object does, or a str, bin
 *                      or ext length (or a fixed-size scalar) does not fit in
 *                      the bytes left after those still owed to open
 *                      containers (each owed element needs at least 1 byte);
 *   DHT_ERR_TRAILING   bytes follow the object;
 *   DHT_ERR_TOO_MANY   a container declares more elements (a map entry is two)
 *                      than the unclaimed bytes could hold, or nests deeper
 *                      than depth_max;
 *   DHT_ERR_MALFORMED  the reserved type byte 0xc1;
 *   DHT_ERR_INVAL      depth_max > DHT__MP_CHECK_DEPTH_LIMIT.
 */
int dht__mp_check(const uint8_t *buf, size_t len, unsigned depth_max);

#endif /* DHT_MP_CHECK_H */
