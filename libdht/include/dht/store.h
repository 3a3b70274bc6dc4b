/*
 * dht/store.h: the key-value store a node keeps its keys in.
 *
 * A store is an interface (a table of functions) so that the simulator and
 * `dhtd --memory` use the memory backend here, and the daemon uses LMDB.
 * Records are ordered by (key id, key bytes), so the keys of a ring interval
 * are one range scan. Calls are synchronous; a backend that batches its
 * writes (group commit) does so behind this interface.
 */
#ifndef DHT_STORE_H
#define DHT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/id.h"

typedef struct dht_store dht_store;

/* Called once per record by scan; return non-zero to stop the scan. The
 * pointers are valid only during the call. */
typedef int (*dht_store_scan_cb)(void *ud, const dht_id *key_id,
                                 const uint8_t *key, size_t key_len,
                                 const uint8_t *value, size_t value_len);

typedef struct dht_store_ops {
  /* Finds key. On success *value and *value_len describe the stored bytes,
   * valid until the next call on this store. Returns 0, DHT_ERR_NOT_FOUND,
   * DHT_ERR_STORE. */
  int (*get)(dht_store *st, const dht_id *key_id, const uint8_t *key,
             size_t key_len, const uint8_t **value, size_t *value_len);
  /* Inserts or replaces. Returns 0, DHT_ERR_NOMEM, DHT_ERR_DISK_FULL,
   * DHT_ERR_STORE. */
  int (*put)(dht_store *st, const dht_id *key_id, const uint8_t *key,
             size_t key_len, const uint8_t *value, size_t value_len);
  /* Removes. Returns 0, DHT_ERR_NOT_FOUND, DHT_ERR_STORE. */
  int (*del)(dht_store *st, const dht_id *key_id, const uint8_t *key,
             size_t key_len);
  /* Visits, in ring order starting just after from, every record whose key
   * id is in (from, to] (wrap-around; from == to means the whole ring).
   * Modifying the store from inside cb is not allowed. Returns 0 (also when
   * cb stopped the scan) or DHT_ERR_STORE. */
  int (*scan)(dht_store *st, const dht_id *from, const dht_id *to,
              dht_store_scan_cb cb, void *ud);
  /* Number of records. */
  size_t (*count)(dht_store *st);
  /* Releases the store and everything it holds. */
  void (*del_store)(dht_store *st);
  /* Why the last call that failed did so, for humans ("" if none has);
   * valid until the next call. */
  const char *(*errmsg)(dht_store *st);
} dht_store_ops;

/* The common head of every backend's object. */
struct dht_store {
  const dht_store_ops *ops;
};

static inline int dht_store_get(dht_store *st, const dht_id *key_id,
                                const uint8_t *key, size_t key_len,
                                const uint8_t **value, size_t *value_len) {
  return st->ops->get(st, key_id, key, key_len, value, value_len);
}
static inline int dht_store_put(dht_store *st, const dht_id *key_id,
                                const uint8_t *key, size_t key_len,
                                const uint8_t *value, size_t value_len) {
  return st->ops->put(st, key_id, key, key_len, value, value_len);
}
static inline int dht_store_remove(dht_store *st, const dht_id *key_id,
                                   const uint8_t *key, size_t key_len) {
  return st->ops->del(st, key_id, key, key_len);
}
static inline int dht_store_scan(dht_store *st, const dht_id *from,
                                 const dht_id *to, dht_store_scan_cb cb,
                                 void *ud) {
  return st->ops->scan(st, from, to, cb, ud);
}
static inline size_t dht_store_count(dht_store *st) {
  return st->ops->count(st);
}
static inline const char *dht_store_errmsg(dht_store *st) {
  return st->ops->errmsg(st);
}
/* Releases st; NULL is a no-op. */
static inline void dht_store_del(dht_store *st) {
  if (st != NULL) {
    st->ops->del_store(st);
  }
}

/* Counts the records whose key id is in (from, to]. */
size_t dht_store_count_range(dht_store *st, const dht_id *from,
                             const dht_id *to);

/* Creates an empty in-memory store: a B+tree whose leaves hold their
 * records inline, O(log n) lookups, inserts and deletes. Besides the codes
 * above, its put returns DHT_ERR_TOO_LARGE for a key or a value of 4 GiB or
 * more. Returns NULL when out of memory. */
dht_store *dht_store_mem_new(void);

#endif /* DHT_STORE_H */
