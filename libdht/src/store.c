/*
 * store.c: helpers shared by every store backend, written once against the
 * dht_store_ops interface so that each backend only implements the basics.
 */
#include <stddef.h>

#include "dht/store.h"

/* Scan callback: counts, never stops. */
static int count_one(void *ud, const dht_id *key_id, const uint8_t *key,
                     size_t key_len, const uint8_t *value, size_t value_len) {
  (void)key_id;
  (void)key;
  (void)key_len;
  (void)value;
  (void)value_len;
  (*(size_t *)ud)++;
  return 0;
}

/* A range count is a scan because a backend's scan already knows how to find
 * the start of a ring interval cheaply; counting needs nothing more. The
 * return type has no room for an error, so if the backend fails midway the
 * records seen so far are returned; a caller that must tell a failure apart
 * scans by itself. */
size_t dht_store_count_range(dht_store *st, const dht_id *from,
                             const dht_id *to) {
  size_t n = 0;

  (void)dht_store_scan(st, from, to, count_one, &n);
  return n;
}
