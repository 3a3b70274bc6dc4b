/*
 * store_mem.c: the in-memory store backend (dht_store_mem_new).
 *
 * It serves the simulator and `dhtd --memory`, where thousands of stores live
 * in one process and nothing must survive a restart. Records are kept in one
 * array of pointers sorted by (key id, key bytes), so that a ring interval is
 * a contiguous run found by binary search, exactly as in the LMDB backend:
 * hand-off and anti-entropy read ranges, never the whole table. Inserts and
 * deletes pay an O(n) memmove of pointers, which is cheap next to a hash map's
 * lack of order at the sizes a simulated node holds.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/store.h"

/* One record, one allocation: the key bytes followed by the value bytes. */
typedef struct mem_rec {
  dht_id key_id;    /* the key's position on the ring, the primary order */
  size_t key_len;   /* bytes of key at the start of data, >= 1 */
  size_t value_len; /* bytes of value right after the key, may be 0 */
  uint8_t data[];   /* key_len + value_len bytes */
} mem_rec;

typedef struct mem_store {
  dht_store base;  /* must stay first: dht_store pointers are cast back */
  mem_rec **recs;  /* sorted by (key_id, key bytes), no duplicates */
  size_t len;      /* records in use in recs */
  size_t cap;      /* slots allocated in recs */
  bool scanning;   /* true inside a scan callback, to catch modifications */
} mem_store;

/* The smallest array allocated, so that a few puts do not realloc each. */
#define MEM_CAP_MIN 16

static mem_store *mem_of(dht_store *st) {
  return (mem_store *)st;
}

static const uint8_t *rec_key(const mem_rec *r) {
  return r->data;
}

static const uint8_t *rec_value(const mem_rec *r) {
  return r->data + r->key_len;
}

/* Orders by id first, then by key bytes with a shorter prefix first, so the
 * order matches LMDB's on the (id || key) composite key. */
static int rec_cmp(const mem_rec *r, const dht_id *key_id, const uint8_t *key,
                   size_t key_len) {
  int c = dht_id_cmp(&r->key_id, key_id);
  size_t n;

  if (c != 0) {
    return c;
  }
  n = r->key_len < key_len ? r->key_len : key_len;
  c = memcmp(rec_key(r), key, n);
  if (c != 0) {
    return c;
  }
  return (r->key_len > key_len) - (r->key_len < key_len);
}

/* Index of the first record not below (key_id, key); sets *found when that
 * record is equal to it. */
static size_t lower_bound(const mem_store *m, const dht_id *key_id,
                          const uint8_t *key, size_t key_len, bool *found) {
  size_t lo = 0;
  size_t hi = m->len;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (rec_cmp(m->recs[mid], key_id, key, key_len) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  *found = lo < m->len && rec_cmp(m->recs[lo], key_id, key, key_len) == 0;
  return lo;
}

/* Index of the first record whose key id is above id (m->len if none): the
 * first record of the ring interval (id, ...]. */
static size_t first_after_id(const mem_store *m, const dht_id *id) {
  size_t lo = 0;
  size_t hi = m->len;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (dht_id_cmp(&m->recs[mid]->key_id, id) <= 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Builds a record; NULL when out of memory or when the size overflows. */
static mem_rec *rec_new(const dht_id *key_id, const uint8_t *key,
                        size_t key_len, const uint8_t *value,
                        size_t value_len) {
  mem_rec *r;

  if (key_len > SIZE_MAX - sizeof(mem_rec) ||
      value_len > SIZE_MAX - sizeof(mem_rec) - key_len) {
    return NULL;
  }
  r = malloc(sizeof(mem_rec) + key_len + value_len);
  if (r == NULL) {
    return NULL;
  }
  r->key_id = *key_id;
  r->key_len = key_len;
  r->value_len = value_len;
  memcpy(r->data, key, key_len);
  /* value may be NULL when value_len is 0, and memcpy(NULL) is undefined. */
  if (value_len > 0) {
    memcpy(r->data + key_len, value, value_len);
  }
  return r;
}

/* Makes room for one more pointer. Returns 0 or DHT_ERR_NOMEM. */
static int reserve_one(mem_store *m) {
  size_t cap;
  mem_rec **recs;

  if (m->len < m->cap) {
    return 0;
  }
  if (m->cap > SIZE_MAX / 2 / sizeof(*recs)) {
    return DHT_ERR_NOMEM;
  }
  cap = m->cap < MEM_CAP_MIN ? MEM_CAP_MIN : 2 * m->cap;
  recs = realloc(m->recs, cap * sizeof(*recs));
  if (recs == NULL) {
    return DHT_ERR_NOMEM;
  }
  m->recs = recs;
  m->cap = cap;
  return 0;
}

static int mem_get(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t **value, size_t *value_len) {
  mem_store *m = mem_of(st);
  bool found;
  size_t i;

  assert(key != NULL && key_len >= 1);
  assert(value != NULL && value_len != NULL);
  i = lower_bound(m, key_id, key, key_len, &found);
  if (!found) {
    return DHT_ERR_NOT_FOUND;
  }
  *value = rec_value(m->recs[i]);
  *value_len = m->recs[i]->value_len;
  return 0;
}

static int mem_put(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t *value, size_t value_len) {
  mem_store *m = mem_of(st);
  mem_rec *r;
  bool found;
  size_t i;

  assert(key != NULL && key_len >= 1);
  assert(value != NULL || value_len == 0);
  assert(!m->scanning && "the store must not be modified during a scan");
  i = lower_bound(m, key_id, key, key_len, &found);
  /* Reserve before building the record, so a failure leaves the store as it
   * was and nothing to undo. */
  if (!found && reserve_one(m) != 0) {
    return DHT_ERR_NOMEM;
  }
  r = rec_new(key_id, key, key_len, value, value_len);
  if (r == NULL) {
    return DHT_ERR_NOMEM;
  }
  if (found) {
    /* A fresh record rather than an in-place copy: the value may grow, and
     * the old one stays intact if the allocation fails. */
    free(m->recs[i]);
  } else {
    memmove(&m->recs[i + 1], &m->recs[i], (m->len - i) * sizeof(*m->recs));
    m->len++;
  }
  m->recs[i] = r;
  return 0;
}

static int mem_del(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len) {
  mem_store *m = mem_of(st);
  bool found;
  size_t i;

  assert(key != NULL && key_len >= 1);
  assert(!m->scanning && "the store must not be modified during a scan");
  i = lower_bound(m, key_id, key, key_len, &found);
  if (!found) {
    return DHT_ERR_NOT_FOUND;
  }
  free(m->recs[i]);
  memmove(&m->recs[i], &m->recs[i + 1], (m->len - i - 1) * sizeof(*m->recs));
  m->len--;
  /* Give memory back after a large hand-off empties the store; a failed
   * shrink is harmless, the bigger array stays. */
  if (m->cap > MEM_CAP_MIN && m->len < m->cap / 4) {
    size_t cap = m->cap / 2;
    mem_rec **recs = realloc(m->recs, cap * sizeof(*recs));
    if (recs != NULL) {
      m->recs = recs;
      m->cap = cap;
    }
  }
  return 0;
}

/* Calls cb on records [begin, end); returns true when cb asked to stop. */
static bool visit(mem_store *m, size_t begin, size_t end, dht_store_scan_cb cb,
                  void *ud) {
  size_t i;

  for (i = begin; i < end; i++) {
    const mem_rec *r = m->recs[i];
    if (cb(ud, &r->key_id, rec_key(r), r->key_len, rec_value(r),
           r->value_len) != 0) {
      return true;
    }
  }
  return false;
}

static int mem_scan(dht_store *st, const dht_id *from, const dht_id *to,
                    dht_store_scan_cb cb, void *ud) {
  mem_store *m = mem_of(st);
  /* (from, to] is [start, end) when it does not wrap; otherwise it is
   * [start, len) followed by [0, end). With from == to, end == start and the
   * two runs cover the whole ring, beginning just after from. */
  size_t start = first_after_id(m, from);
  size_t end = first_after_id(m, to);

  assert(cb != NULL);
  assert(!m->scanning && "scans do not nest");
  m->scanning = true;
  if (dht_id_cmp(from, to) < 0) {
    visit(m, start, end, cb, ud);
  } else if (!visit(m, start, m->len, cb, ud)) {
    visit(m, 0, end, cb, ud);
  }
  m->scanning = false;
  return 0;
}

static size_t mem_count(dht_store *st) {
  return mem_of(st)->len;
}

static void mem_del_store(dht_store *st) {
  mem_store *m = mem_of(st);
  size_t i;

  for (i = 0; i < m->len; i++) {
    free(m->recs[i]);
  }
  free(m->recs);
  free(m);
}

/* The memory store fails only for want of memory. */
static const char *mem_errmsg(dht_store *st) {
  (void)st;
  return "out of memory";
}

static const dht_store_ops mem_ops = {
    .get = mem_get,
    .put = mem_put,
    .del = mem_del,
    .scan = mem_scan,
    .count = mem_count,
    .del_store = mem_del_store,
    .errmsg = mem_errmsg,
};

dht_store *dht_store_mem_new(void) {
  mem_store *m = calloc(1, sizeof(*m));

  if (m == NULL) {
    return NULL;
  }
  m->base.ops = &mem_ops;
  return &m->base;
}
