/*
 * test_util.h: small helpers the unit tests share: ids from integers and a
 * deterministic generator for the randomized tests (a fixed seed, so a
 * failure reproduces).
 */
#ifndef DHT_TEST_UTIL_H
#define DHT_TEST_UTIL_H

#include <stdint.h>
#include <string.h>

#include "dht/id.h"

/* The id whose value is v. */
static inline dht_id id_u64(uint64_t v) {
  dht_id id;

  dht_id_from_u64(&id, v);
  return id;
}

/* The largest id, 2^160 - 1: the last point before the ring wraps. */
static inline dht_id id_max(void) {
  dht_id id;

  memset(id.b, 0xff, sizeof(id.b));
  return id;
}

/* xorshift64: the next number of the sequence seeded by *s (never 0). */
static inline uint64_t xorshift64(uint64_t *s) {
  uint64_t x = *s;

  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  *s = x;
  return x;
}

#endif /* DHT_TEST_UTIL_H */
