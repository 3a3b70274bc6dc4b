/*
 * test_util.h: small helpers the unit tests share: ids from integers, a
 * deterministic generator for the randomized tests (a fixed seed, so a
 * failure reproduces), and a store check. Include it after <cmocka.h>.
 */
#ifndef DHT_TEST_UTIL_H
#define DHT_TEST_UTIL_H

#include <stdint.h>
#include <string.h>

#include "dht/id.h"
#include "dht/store.h"

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

/* Asserts that st holds key (under id) with exactly value. */
static inline void assert_get_str(dht_store *st, const dht_id *id,
                                  const char *key, const char *value) {
  const uint8_t *v = NULL;
  size_t v_len = 0;

  assert_int_equal(
      dht_store_get(st, id, (const uint8_t *)key, strlen(key), &v, &v_len), 0);
  assert_int_equal(v_len, strlen(value));
  if (v_len > 0) {
    assert_memory_equal(v, value, v_len);
  }
}

#endif /* DHT_TEST_UTIL_H */
