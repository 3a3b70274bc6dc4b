/*
 * test_store.c: unit tests for the in-memory store (dht_store_mem_new) and
 * dht_store_count_range.
 *
 * The store's order (key id, then key bytes) and its ring-interval scans are
 * what hand-off and anti-entropy rely on, so besides the basic operations the
 * scans are checked on every interval shape (plain, wrapping, whole ring,
 * empty, ends on records) and against a naive model under random walks that
 * grow the store to thousands of records and back, so that the B+tree splits
 * and merges on every level.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/id.h"
#include "dht/store.h"

#include "test_util.h"

/* ---- helpers ------------------------------------------------------------ */

/* Enough for every scan in these tests, including the randomized one. */
#define SEEN_MAX 4096

/* One record as a scan reported it, copied out of the callback. */
typedef struct seen_rec {
  dht_id id;         /* key id */
  char key[16];      /* key bytes (tests use short keys) */
  size_t key_len;    /* bytes in key */
  uint8_t value[64]; /* value bytes (tests use short values) */
  size_t value_len;  /* bytes in value */
} seen_rec;

/* What a scan callback collects. */
typedef struct seen {
  seen_rec recs[SEEN_MAX]; /* records in the order visited */
  size_t n;                /* records visited */
  size_t stop_after;       /* ask to stop after this many (0: never) */
} seen;

static int collect(void *ud, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t *value, size_t value_len) {
  seen *s = ud;
  seen_rec *r;

  assert_true(s->n < SEEN_MAX);
  assert_true(key_len <= sizeof(r->key));
  assert_true(value_len <= sizeof(r->value));
  r = &s->recs[s->n++];
  r->id = *key_id;
  memcpy(r->key, key, key_len);
  r->key_len = key_len;
  if (value_len > 0) {
    memcpy(r->value, value, value_len);
  }
  r->value_len = value_len;
  return s->stop_after != 0 && s->n >= s->stop_after;
}

static seen *scan_all(dht_store *st, const dht_id *from, const dht_id *to,
                      size_t stop_after) {
  seen *s = calloc(1, sizeof(*s));

  assert_non_null(s);
  s->stop_after = stop_after;
  assert_int_equal(dht_store_scan(st, from, to, collect, s), 0);
  return s;
}

static void put_str(dht_store *st, const dht_id *id, const char *key,
                    const char *value) {
  assert_int_equal(dht_store_put(st, id, (const uint8_t *)key, strlen(key),
                                 (const uint8_t *)value, strlen(value)),
                   0);
}

static int get_str(dht_store *st, const dht_id *id, const char *key) {
  const uint8_t *v;
  size_t v_len;

  return dht_store_get(st, id, (const uint8_t *)key, strlen(key), &v, &v_len);
}

static int del_str(dht_store *st, const dht_id *id, const char *key) {
  return dht_store_remove(st, id, (const uint8_t *)key, strlen(key));
}

/* Asserts that record i of s has id v and key key. */
static void assert_seen(const seen *s, size_t i, uint64_t v, const char *key) {
  dht_id id = id_u64(v);

  assert_true(i < s->n);
  assert_true(dht_id_eq(&s->recs[i].id, &id));
  assert_int_equal(s->recs[i].key_len, strlen(key));
  assert_memory_equal(s->recs[i].key, key, strlen(key));
}

/* A store holding one record "k<v>" at each id v in 10, 20, ..., 50. */
static dht_store *five_store(void) {
  dht_store *st = dht_store_mem_new();
  static const uint64_t ids[] = {30, 10, 50, 20, 40}; /* out of order */
  size_t i;

  assert_non_null(st);
  for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
    char key[8];
    dht_id id = id_u64(ids[i]);
    key[0] = 'k';
    key[1] = (char)('0' + ids[i] / 10);
    key[2] = '\0';
    put_str(st, &id, key, "v");
  }
  assert_int_equal(dht_store_count(st), 5);
  return st;
}

/* Asserts that scanning (from, to] on five_store visits exactly the ids in
 * want (tens), in that order. */
static void assert_scan_ids(dht_store *st, uint64_t from, uint64_t to,
                            const uint64_t *want, size_t n_want) {
  dht_id f = id_u64(from);
  dht_id t = id_u64(to);
  seen *s = scan_all(st, &f, &t, 0);
  size_t i;

  assert_int_equal(s->n, n_want);
  for (i = 0; i < n_want; i++) {
    dht_id id = id_u64(want[i]);
    assert_true(dht_id_eq(&s->recs[i].id, &id));
  }
  assert_int_equal(dht_store_count_range(st, &f, &t), n_want);
  free(s);
}

/* ---- basic operations ---------------------------------------------------- */

static void test_empty(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id a = id_u64(1);
  seen *s;

  (void)state;
  assert_non_null(st);
  assert_int_equal(dht_store_count(st), 0);
  assert_int_equal(get_str(st, &a, "x"), DHT_ERR_NOT_FOUND);
  assert_int_equal(del_str(st, &a, "x"), DHT_ERR_NOT_FOUND);
  s = scan_all(st, &a, &a, 0);
  assert_int_equal(s->n, 0);
  free(s);
  assert_int_equal(dht_store_count_range(st, &a, &a), 0);
  dht_store_del(st);
  dht_store_del(NULL); /* a no-op */
}

static void test_put_get_replace_del(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id a;
  dht_id b;

  (void)state;
  dht_id_hash(&a, "alpha", 5);
  dht_id_hash(&b, "beta", 4);
  put_str(st, &a, "alpha", "one");
  put_str(st, &b, "beta", "two");
  assert_int_equal(dht_store_count(st), 2);
  assert_get_str(st, &a, "alpha", "one");
  assert_get_str(st, &b, "beta", "two");

  /* Replacing keeps the count and changes the value, growing and shrinking. */
  put_str(st, &a, "alpha", "a much longer value than before");
  assert_int_equal(dht_store_count(st), 2);
  assert_get_str(st, &a, "alpha", "a much longer value than before");
  put_str(st, &a, "alpha", "1");
  assert_get_str(st, &a, "alpha", "1");

  /* The same key bytes under another id are another record, and the same id
   * with other key bytes too. */
  assert_int_equal(get_str(st, &b, "alpha"), DHT_ERR_NOT_FOUND);
  assert_int_equal(get_str(st, &a, "alph"), DHT_ERR_NOT_FOUND);
  assert_int_equal(get_str(st, &a, "alphab"), DHT_ERR_NOT_FOUND);
  assert_int_equal(del_str(st, &b, "alpha"), DHT_ERR_NOT_FOUND);

  assert_int_equal(del_str(st, &a, "alpha"), 0);
  assert_int_equal(dht_store_count(st), 1);
  assert_int_equal(get_str(st, &a, "alpha"), DHT_ERR_NOT_FOUND);
  assert_int_equal(del_str(st, &a, "alpha"), DHT_ERR_NOT_FOUND);
  assert_get_str(st, &b, "beta", "two");
  assert_int_equal(del_str(st, &b, "beta"), 0);
  assert_int_equal(dht_store_count(st), 0);

  /* Usable again once emptied. */
  put_str(st, &b, "beta", "three");
  assert_get_str(st, &b, "beta", "three");
  dht_store_del(st);
}

static void test_zero_length_value(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id a = id_u64(7);
  const uint8_t *v = NULL;
  size_t v_len = 99;
  seen *s;

  (void)state;
  /* NULL with length 0 is a valid empty value. */
  assert_int_equal(dht_store_put(st, &a, (const uint8_t *)"k", 1, NULL, 0), 0);
  assert_int_equal(dht_store_get(st, &a, (const uint8_t *)"k", 1, &v, &v_len),
                   0);
  assert_int_equal(v_len, 0);
  s = scan_all(st, &a, &a, 0);
  assert_int_equal(s->n, 1);
  assert_int_equal(s->recs[0].value_len, 0);
  free(s);

  /* Empty to non-empty and back. */
  put_str(st, &a, "k", "full");
  assert_get_str(st, &a, "k", "full");
  put_str(st, &a, "k", "");
  assert_get_str(st, &a, "k", "");
  assert_int_equal(dht_store_count(st), 1);
  dht_store_del(st);
}

static void test_binary_keys_and_values(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id a = id_u64(3);
  static const uint8_t k1[] = {0x00};
  static const uint8_t k2[] = {0x00, 0x00};
  static const uint8_t val[] = {0x00, 0xff, 0x00};
  const uint8_t *v;
  size_t v_len;

  (void)state;
  /* Embedded NULs count: {0} and {0,0} are different keys. */
  assert_int_equal(dht_store_put(st, &a, k1, 1, val, 3), 0);
  assert_int_equal(dht_store_put(st, &a, k2, 2, val, 1), 0);
  assert_int_equal(dht_store_count(st), 2);
  assert_int_equal(dht_store_get(st, &a, k1, 1, &v, &v_len), 0);
  assert_int_equal(v_len, 3);
  assert_memory_equal(v, val, 3);
  assert_int_equal(dht_store_get(st, &a, k2, 2, &v, &v_len), 0);
  assert_int_equal(v_len, 1);
  dht_store_del(st);
}

/* ---- ordering ------------------------------------------------------------- */

static void test_equal_ids_order_by_key(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id same = id_u64(100);
  dht_id lower = id_u64(99);
  dht_id higher = id_u64(101);
  seen *s;

  (void)state;
  /* Inserted out of order; a shorter prefix sorts first; the id wins over
   * the key bytes ("zz" at 99 comes before "a" at 100). */
  put_str(st, &same, "b", "4");
  put_str(st, &same, "ab", "3");
  put_str(st, &higher, "a", "5");
  put_str(st, &same, "a", "1");
  put_str(st, &lower, "zz", "0");
  put_str(st, &same, "aa", "2");
  assert_int_equal(dht_store_count(st), 6);

  s = scan_all(st, &same, &same, 0); /* whole ring, starting after 100 */
  assert_int_equal(s->n, 6);
  assert_seen(s, 0, 101, "a");
  assert_seen(s, 1, 99, "zz");
  assert_seen(s, 2, 100, "a");
  assert_seen(s, 3, 100, "aa");
  assert_seen(s, 4, 100, "ab");
  assert_seen(s, 5, 100, "b");
  assert_int_equal(s->recs[2].value[0], '1');
  assert_int_equal(s->recs[5].value[0], '4');
  free(s);

  /* Every one is found by its own (id, key). */
  assert_get_str(st, &same, "a", "1");
  assert_get_str(st, &same, "aa", "2");
  assert_get_str(st, &same, "ab", "3");
  assert_get_str(st, &same, "b", "4");
  assert_get_str(st, &lower, "zz", "0");
  assert_get_str(st, &higher, "a", "5");

  /* Deleting one of the run leaves its neighbours. */
  assert_int_equal(del_str(st, &same, "aa"), 0);
  assert_int_equal(get_str(st, &same, "aa"), DHT_ERR_NOT_FOUND);
  assert_get_str(st, &same, "a", "1");
  assert_get_str(st, &same, "ab", "3");

  /* All records with id 100 are in (99, 100] and none in (100, 101). */
  assert_int_equal(dht_store_count_range(st, &lower, &same), 3);
  dht_store_del(st);
}

/* ---- scans ---------------------------------------------------------------- */

static void test_scan_plain(void **state) {
  dht_store *st = five_store();
  static const uint64_t w1[] = {20, 30};
  static const uint64_t w2[] = {10, 20, 30, 40, 50};

  (void)state;
  assert_scan_ids(st, 15, 35, w1, 2);
  assert_scan_ids(st, 0, 60, w2, 5);
  assert_scan_ids(st, 9, 50, w2, 5);
  dht_store_del(st);
}

static void test_scan_ends_on_records(void **state) {
  dht_store *st = five_store();
  static const uint64_t w1[] = {20, 30};
  static const uint64_t w2[] = {20};
  static const uint64_t w3[] = {50};

  (void)state;
  /* (10, 30]: 10 excluded, 30 included. */
  assert_scan_ids(st, 10, 30, w1, 2);
  assert_scan_ids(st, 10, 20, w2, 1);
  assert_scan_ids(st, 40, 50, w3, 1);
  assert_scan_ids(st, 19, 20, w2, 1);
  assert_scan_ids(st, 20, 29, NULL, 0);
  dht_store_del(st);
}

static void test_scan_wrap(void **state) {
  dht_store *st = five_store();
  static const uint64_t w1[] = {40, 50, 10};
  static const uint64_t w2[] = {50, 10, 20};
  static const uint64_t w3[] = {10};
  static const uint64_t w4[] = {50};

  (void)state;
  /* Ring order: after 35 come 40, 50, then past zero 10. */
  assert_scan_ids(st, 35, 15, w1, 3);
  assert_scan_ids(st, 40, 20, w2, 3);
  /* Only the part past zero has records. */
  assert_scan_ids(st, 55, 10, w3, 1);
  /* Only the part before zero has records. */
  assert_scan_ids(st, 45, 5, w4, 1);
  dht_store_del(st);
}

static void test_scan_whole_ring(void **state) {
  dht_store *st = five_store();
  static const uint64_t w1[] = {30, 40, 50, 10, 20};
  static const uint64_t w2[] = {40, 50, 10, 20, 30};
  static const uint64_t w3[] = {10, 20, 30, 40, 50};

  (void)state;
  /* from == to: everything, starting just after from, from's own records
   * last (they are in (from, from] as the ring's last point). */
  assert_scan_ids(st, 20, 20, w1, 5);
  assert_scan_ids(st, 35, 35, w2, 5);
  assert_scan_ids(st, 0, 0, w3, 5);
  assert_scan_ids(st, 50, 50, w3, 5);
  dht_store_del(st);
}

static void test_scan_empty_intervals(void **state) {
  dht_store *st = five_store();

  (void)state;
  assert_scan_ids(st, 21, 29, NULL, 0);
  assert_scan_ids(st, 51, 1000, NULL, 0);
  assert_scan_ids(st, 0, 9, NULL, 0);
  assert_scan_ids(st, 50, 9, NULL, 0);   /* wraps, nothing either side */
  assert_scan_ids(st, 30, 31, NULL, 0);  /* a one-point interval */
  dht_store_del(st);
}

static void test_scan_extremes(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id zero = id_u64(0);
  dht_id one = id_u64(1);
  dht_id max = id_max();
  dht_id below_max = id_max();
  seen *s;

  (void)state;
  below_max.b[DHT_ID_LEN - 1] = 0xfe;
  put_str(st, &zero, "z", "0");
  put_str(st, &max, "m", "1");
  put_str(st, &one, "o", "2");

  /* (max, 0] holds just zero: the largest id is followed by the smallest. */
  s = scan_all(st, &max, &zero, 0);
  assert_int_equal(s->n, 1);
  assert_true(dht_id_eq(&s->recs[0].id, &zero));
  free(s);

  /* (0, max] holds one and max but not zero. */
  s = scan_all(st, &zero, &max, 0);
  assert_int_equal(s->n, 2);
  assert_true(dht_id_eq(&s->recs[0].id, &one));
  assert_true(dht_id_eq(&s->recs[1].id, &max));
  free(s);

  /* (below_max, one] wraps: max, zero, one. */
  s = scan_all(st, &below_max, &one, 0);
  assert_int_equal(s->n, 3);
  assert_true(dht_id_eq(&s->recs[0].id, &max));
  assert_true(dht_id_eq(&s->recs[1].id, &zero));
  assert_true(dht_id_eq(&s->recs[2].id, &one));
  free(s);

  /* (max, max]: the whole ring, starting at zero, max last. */
  s = scan_all(st, &max, &max, 0);
  assert_int_equal(s->n, 3);
  assert_true(dht_id_eq(&s->recs[0].id, &zero));
  assert_true(dht_id_eq(&s->recs[2].id, &max));
  free(s);
  dht_store_del(st);
}

static void test_scan_early_stop(void **state) {
  dht_store *st = five_store();
  dht_id f = id_u64(35);
  dht_id t = id_u64(35);
  seen *s;

  (void)state;
  /* Stopping after two records visits exactly two and still returns 0. */
  s = scan_all(st, &f, &t, 2);
  assert_int_equal(s->n, 2);
  assert_seen(s, 0, 40, "k4");
  assert_seen(s, 1, 50, "k5");
  free(s);

  /* A stop at the end of the run before zero must not resume after zero. */
  f = id_u64(45);
  t = id_u64(25);
  s = scan_all(st, &f, &t, 1);
  assert_int_equal(s->n, 1);
  assert_seen(s, 0, 50, "k5");
  free(s);

  /* A stop inside the run after zero. */
  s = scan_all(st, &f, &t, 2);
  assert_int_equal(s->n, 2);
  assert_seen(s, 1, 10, "k1");
  free(s);
  dht_store_del(st);
}

static void test_count_range(void **state) {
  dht_store *st = five_store();
  dht_id a = id_u64(10);
  dht_id b = id_u64(40);
  dht_id c = id_u64(45);

  (void)state;
  assert_int_equal(dht_store_count_range(st, &a, &b), 3);  /* 20, 30, 40 */
  assert_int_equal(dht_store_count_range(st, &b, &a), 2);  /* 50, 10 */
  assert_int_equal(dht_store_count_range(st, &a, &a), 5);  /* whole ring */
  assert_int_equal(dht_store_count_range(st, &b, &c), 0);
  /* The two halves of the ring always add up to the whole. */
  assert_int_equal(dht_store_count_range(st, &a, &c) +
                       dht_store_count_range(st, &c, &a),
                   dht_store_count(st));
  dht_store_del(st);
}

static void test_many_records(void **state) {
  dht_store *st = dht_store_mem_new();
  dht_id f;
  dht_id t;
  seen *s;
  uint64_t i;

  (void)state;
  /* Enough to grow and shrink the array several times. */
  for (i = 0; i < 1000; i++) {
    dht_id id = id_u64(i * 7 % 1000); /* a permutation of 0..999 */
    put_str(st, &id, "k", "v");
  }
  assert_int_equal(dht_store_count(st), 1000);
  f = id_u64(500);
  t = id_u64(510);
  s = scan_all(st, &f, &t, 0);
  assert_int_equal(s->n, 10);
  assert_seen(s, 0, 501, "k");
  assert_seen(s, 9, 510, "k");
  free(s);
  for (i = 0; i < 1000; i += 2) {
    dht_id id = id_u64(i);
    assert_int_equal(del_str(st, &id, "k"), 0);
  }
  assert_int_equal(dht_store_count(st), 500);
  assert_int_equal(dht_store_count_range(st, &f, &t), 5);
  for (i = 1; i < 1000; i += 2) {
    dht_id id = id_u64(i);
    assert_int_equal(del_str(st, &id, "k"), 0);
  }
  assert_int_equal(dht_store_count(st), 0);
  put_str(st, &f, "k", "again");
  assert_get_str(st, &f, "k", "again");
  dht_store_del(st);
}

/* ---- randomized walks against a naive model ---------------------------- */

/* The model: a sorted array with binary search and memmove, the obvious
 * implementation (the memory store used to be one). The array holds indices
 * into a pool of records, so that a memmove moves 4 bytes a record; values
 * are not kept: each is a function of a seed, regenerated to compare. */
#define WALK_KEY_MAX 6
#define WALK_VALUE_MAX 6000
/* A tombstone's value, as the node writes it (docs/STORAGE.md): 0xd7, flags
 * (bit 0: tombstone), an 8-byte stamp and the writer's 20-byte id. */
#define WALK_TOMBSTONE_LEN 30

typedef struct walk_rec {
  dht_id id;                    /* key id */
  uint8_t key[WALK_KEY_MAX];    /* key bytes */
  size_t key_len;               /* 1..WALK_KEY_MAX */
  size_t value_len;             /* 0..WALK_VALUE_MAX */
  uint32_t value_seed;          /* the value's bytes: walk_value() */
  bool tombstone;               /* the value is a tombstone record */
} walk_rec;

typedef struct walk_model {
  walk_rec *pool;  /* the records, in no order; freed slots are reused */
  uint32_t *order; /* pool indices of the n records, in store order: id,
                      key bytes, shorter first */
  uint32_t *spare; /* pool slots freed by deletes */
  size_t n;        /* records in the model */
  size_t n_spare;  /* slots in spare */
  size_t n_pool;   /* pool slots ever used */
} walk_model;

/* Record i in store order. */
static walk_rec *walk_at(const walk_model *m, size_t i) {
  return &m->pool[m->order[i]];
}

/* Inserts r at store position at. The pool has room: it has a slot for
 * each of the n_max records the walk may hold. */
static void walk_insert(walk_model *m, size_t at, const walk_rec *r) {
  uint32_t slot = m->n_spare > 0 ? m->spare[--m->n_spare]
                                 : (uint32_t)m->n_pool++;

  m->pool[slot] = *r;
  memmove(&m->order[at + 1], &m->order[at], (m->n - at) * sizeof(*m->order));
  m->order[at] = slot;
  m->n++;
}

static void walk_remove(walk_model *m, size_t at) {
  m->spare[m->n_spare++] = m->order[at];
  memmove(&m->order[at], &m->order[at + 1],
          (m->n - at - 1) * sizeof(*m->order));
  m->n--;
}

/* How one walk draws its operations. */
typedef struct walk_profile {
  uint64_t seed;            /* of the generator: a failure replays */
  size_t n_max;             /* records the walk grows to, twice */
  size_t value_len_max;     /* the usual value is 0..this many bytes */
  unsigned big_per_mille;   /* values of 1000..WALK_VALUE_MAX bytes */
  unsigned pool_percent;    /* ids from a small pool, so that records share
                               ids and sit on interval ends */
  unsigned scan_per_mille;  /* operations that are scans */
} walk_profile;

/* The bytes of a value: a tombstone record, or a pattern of the seed. */
static void walk_value(const walk_rec *r, uint8_t *out) {
  if (r->tombstone) {
    memset(out, 0, WALK_TOMBSTONE_LEN);
    out[0] = 0xd7;
    out[1] = 0x01;
    memcpy(out + 2, &r->value_seed, sizeof(r->value_seed));
    return;
  }
  /* The seed first, so two values of one length differ; cheap to make and
   * to compare, which the scans of large stores do for every record. */
  memset(out, (uint8_t)(r->value_seed >> 24), r->value_len);
  memcpy(out, &r->value_seed,
         r->value_len < sizeof(r->value_seed) ? r->value_len
                                              : sizeof(r->value_seed));
}

/* The store's order, restated: id, then bytes, then length. */
static int walk_cmp(const walk_rec *a, const dht_id *id, const uint8_t *key,
                    size_t key_len) {
  size_t n = a->key_len < key_len ? a->key_len : key_len;
  int c = memcmp(a->id.b, id->b, DHT_ID_LEN);

  if (c != 0) {
    return c;
  }
  c = memcmp(a->key, key, n);
  if (c != 0) {
    return c;
  }
  return (a->key_len > key_len) - (a->key_len < key_len);
}

/* Index of the first record not below (id, key); *found when equal. */
static size_t walk_find(const walk_model *m, const dht_id *id,
                        const uint8_t *key, size_t key_len, bool *found) {
  size_t lo = 0, hi = m->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (walk_cmp(walk_at(m, mid), id, key, key_len) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  *found = lo < m->n && walk_cmp(walk_at(m, lo), id, key, key_len) == 0;
  return lo;
}

/* Index of the first record whose id is above id. */
static size_t walk_after(const walk_model *m, const dht_id *id) {
  size_t lo = 0, hi = m->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (memcmp(walk_at(m, mid)->id.b, id->b, DHT_ID_LEN) <= 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Interval membership restated with distances rather than dht_id_in_oc:
 * x is in (from, to] when it lies a non-zero distance after from and no
 * further than to; from == to is the whole ring. */
static bool model_in(const dht_id *x, const dht_id *from, const dht_id *to) {
  dht_id dx;
  dht_id dt;

  if (dht_id_eq(from, to)) {
    return true;
  }
  dht_id_distance(&dx, from, x);
  dht_id_distance(&dt, from, to);
  return !dht_id_is_zero(&dx) && dht_id_cmp(&dx, &dt) <= 0;
}

/* A scan in progress, checked record by record against the model. */
typedef struct walk_scan {
  const walk_model *m;
  const dht_id *from;
  const dht_id *to;
  size_t next;       /* model index expected next */
  bool wrapped;      /* past the end of the model, back at its start */
  size_t seen;       /* records visited */
  size_t stop_after; /* ask to stop after this many (0: never) */
  uint8_t *buf;      /* WALK_VALUE_MAX bytes for the expected value */
} walk_scan;

/* The model index of the record a scan of (from, to] visits next: the
 * records above from to the end, then, when the interval wraps or is the
 * whole ring, from the start those up to to. SIZE_MAX when done. */
static size_t walk_scan_expect(walk_scan *ws) {
  const walk_model *m = ws->m;
  bool plain = dht_id_cmp(ws->from, ws->to) < 0;

  if (ws->next == m->n && !plain && !ws->wrapped) {
    ws->next = 0;
    ws->wrapped = true;
  }
  if (ws->next == m->n ||
      ((plain || ws->wrapped) &&
       memcmp(walk_at(m, ws->next)->id.b, ws->to->b, DHT_ID_LEN) > 0)) {
    return SIZE_MAX;
  }
  return ws->next;
}

static int walk_visit(void *ud, const dht_id *key_id, const uint8_t *key,
                      size_t key_len, const uint8_t *value, size_t value_len) {
  walk_scan *ws = ud;
  size_t i = walk_scan_expect(ws);
  const walk_rec *r;

  assert_true(i != SIZE_MAX);
  r = walk_at(ws->m, i);
  assert_true(dht_id_eq(key_id, &r->id));
  assert_true(model_in(key_id, ws->from, ws->to));
  assert_int_equal(key_len, r->key_len);
  assert_memory_equal(key, r->key, key_len);
  assert_int_equal(value_len, r->value_len);
  walk_value(r, ws->buf);
  assert_true(value_len == 0 || memcmp(value, ws->buf, value_len) == 0);
  ws->next++;
  ws->seen++;
  return ws->stop_after != 0 && ws->seen == ws->stop_after;
}

/* Scans (from, to] and checks it visits what the model says, in order, and
 * (when it runs to the end) that count_range agrees and, on every
 * check_all-th call, that no record of the interval was skipped. */
static void walk_check_scan(dht_store *st, const walk_model *m,
                            const dht_id *from, const dht_id *to,
                            size_t stop_after, bool check_all, uint8_t *buf) {
  walk_scan ws;

  memset(&ws, 0, sizeof(ws));
  ws.m = m;
  ws.from = from;
  ws.to = to;
  ws.next = walk_after(m, from);
  ws.stop_after = stop_after;
  ws.buf = buf;
  assert_int_equal(dht_store_scan(st, from, to, walk_visit, &ws), 0);
  if (stop_after != 0 && ws.seen == stop_after) {
    return;
  }
  assert_true(walk_scan_expect(&ws) == SIZE_MAX);
  assert_int_equal(dht_store_count_range(st, from, to), ws.seen);
  if (check_all) {
    size_t i, in = 0;
    for (i = 0; i < m->n; i++) {
      in += model_in(&walk_at(m, i)->id, from, to);
    }
    assert_int_equal(in, ws.seen);
  }
}

/* An id: from a small pool (0, the largest id, 24 points spread over the
 * ring, and the ids of existing records) pool_percent of the time, where
 * equal ids, interval ends on records and the wrap are common; otherwise a
 * random full-width one. */
static dht_id walk_id(uint64_t *rng, const walk_model *m,
                      unsigned pool_percent) {
  uint64_t r = xorshift64(rng);
  dht_id id;
  size_t i;

  if (r % 100 >= pool_percent) {
    for (i = 0; i < DHT_ID_LEN; i++) {
      id.b[i] = (uint8_t)xorshift64(rng);
    }
    return id;
  }
  switch ((r >> 8) % 8) {
  case 0:
    return id_u64(0);
  case 1:
    return id_max();
  case 2:
    if (m->n > 0) {
      return walk_at(m, xorshift64(rng) % m->n)->id;
    }
    return id_u64(1);
  default:
    return id_top((uint8_t)((r >> 16) % 24 * 10));
  }
}

/* One operation of the walk; grow tilts it toward puts, else deletes. */
static void walk_step(dht_store *st, walk_model *m, const walk_profile *pf,
                      uint64_t *rng, bool grow, uint8_t *buf, size_t step) {
  uint64_t r = xorshift64(rng);
  unsigned op = (unsigned)(r % 1000);
  unsigned put_until = grow ? 600 : 250;
  unsigned del_until = put_until + (grow ? 150 : 450);
  unsigned get_until = 1000 - pf->scan_per_mille;
  walk_rec want;
  bool found;
  size_t at, i;

  /* The key: an existing record's half the time, so that overwrites and
   * deletes hit; else a new one, short and from two letters on pool ids so
   * that keys share prefixes. */
  memset(&want, 0, sizeof(want));
  if (m->n > 0 && (r >> 10) % 2 == 0) {
    want = *walk_at(m, xorshift64(rng) % m->n);
  } else {
    want.id = walk_id(rng, m, pf->pool_percent);
    want.key_len = 1 + (size_t)(xorshift64(rng) % WALK_KEY_MAX);
    for (i = 0; i < want.key_len; i++) {
      want.key[i] = (uint8_t)('a' + xorshift64(rng) % 2);
    }
  }
  at = walk_find(m, &want.id, want.key, want.key_len, &found);

  if (op < put_until && !found && m->n == pf->n_max) {
    /* the model is full: the shrinking phase starts there */
  } else if (op < put_until) {
    uint64_t v = xorshift64(rng);
    want.value_seed = (uint32_t)(v >> 32);
    want.tombstone = v % 10 == 0;
    if (want.tombstone) {
      want.value_len = WALK_TOMBSTONE_LEN;
    } else if (v % 1000 < pf->big_per_mille) {
      want.value_len = 1000 + (size_t)((v >> 12) % (WALK_VALUE_MAX - 1000));
    } else {
      want.value_len = (size_t)((v >> 12) % (pf->value_len_max + 1));
    }
    walk_value(&want, buf);
    assert_int_equal(dht_store_put(st, &want.id, want.key, want.key_len,
                                   want.value_len > 0 ? buf : NULL,
                                   want.value_len),
                     0);
    if (found) {
      *walk_at(m, at) = want;
    } else {
      walk_insert(m, at, &want);
    }
  } else if (op < del_until) {
    int rc = dht_store_remove(st, &want.id, want.key, want.key_len);
    assert_int_equal(rc, found ? 0 : DHT_ERR_NOT_FOUND);
    if (found) {
      walk_remove(m, at);
    }
  } else if (op < get_until) {
    const uint8_t *v;
    size_t v_len;
    int rc = dht_store_get(st, &want.id, want.key, want.key_len, &v, &v_len);
    assert_int_equal(rc, found ? 0 : DHT_ERR_NOT_FOUND);
    if (found) {
      assert_int_equal(v_len, walk_at(m, at)->value_len);
      walk_value(walk_at(m, at), buf);
      assert_true(v_len == 0 || memcmp(v, buf, v_len) == 0);
      if (walk_at(m, at)->tombstone) {
        dht_kv kv;
        memset(&kv, 0, sizeof(kv));
        dht_record_parse(v, v_len, &kv);
        assert_true(kv.tombstone);
      }
    }
  } else {
    /* A scan from the chosen id: to a random or pool id, or stopping after
     * a few records, which keeps scans of a large store short. */
    dht_id to = walk_id(rng, m, pf->pool_percent);
    size_t stop = (r >> 20) % 4 == 0 ? 0 : 1 + (size_t)((r >> 24) % 50);
    walk_check_scan(st, m, &want.id, &to, stop, step % 16 == 0, buf);
  }
  assert_int_equal(dht_store_count(st), m->n);
}

/* Grows the store to n_max records, shrinks it to nothing, grows it again,
 * checks every record and the whole ring from many points, then deletes
 * everything in random order. */
static void walk_run(const walk_profile *pf) {
  dht_store *st = dht_store_mem_new();
  walk_model m;
  uint64_t rng = pf->seed;
  uint8_t *buf = malloc(WALK_VALUE_MAX);
  size_t step = 0, i;
  int round;

  memset(&m, 0, sizeof(m));
  m.pool = malloc(pf->n_max * sizeof(*m.pool));
  m.order = malloc(pf->n_max * sizeof(*m.order));
  m.spare = malloc(pf->n_max * sizeof(*m.spare));
  assert_non_null(st);
  assert_non_null(buf);
  assert_true(m.pool != NULL && m.order != NULL && m.spare != NULL);
  for (round = 0; round < 2; round++) {
    while (m.n < pf->n_max) {
      walk_step(st, &m, pf, &rng, true, buf, step++);
    }
    if (round == 0) {
      while (m.n > 0) {
        walk_step(st, &m, pf, &rng, false, buf, step++);
      }
    }
  }
  for (i = 0; i < 64; i++) {
    const dht_id *at = &walk_at(&m, xorshift64(&rng) % m.n)->id;
    walk_check_scan(st, &m, at, at, 0, true, buf);
  }
  for (i = 0; i < m.n; i++) {
    const walk_rec *r = walk_at(&m, i);
    const uint8_t *v;
    size_t v_len;
    assert_int_equal(
        dht_store_get(st, &r->id, r->key, r->key_len, &v, &v_len), 0);
    assert_int_equal(v_len, r->value_len);
  }
  while (m.n > 0) {
    size_t at = xorshift64(&rng) % m.n;
    const walk_rec *r = walk_at(&m, at);
    assert_int_equal(dht_store_remove(st, &r->id, r->key, r->key_len), 0);
    walk_remove(&m, at);
    assert_int_equal(dht_store_count(st), m.n);
  }
  {
    dht_id zero = id_u64(0);
    walk_check_scan(st, &m, &zero, &zero, 0, true, buf);
  }
  free(m.pool);
  free(m.order);
  free(m.spare);
  free(buf);
  dht_store_del(st);
}

/* The walks, each its own test (main names them):
 * - small: few records on few ids: many equal ids, keys that are prefixes of
 *   each other, interval ends on records, and many scans;
 * - tall: values of one to six kilobytes, so that a leaf holds one or two
 *   and a few thousand records make a tree of three levels of inner nodes:
 *   leaves and inner nodes split and merge on every level, the tree grows in
 *   height and collapses back to one leaf; values past a leaf's size, and
 *   runs of one id larger than a leaf, come up too;
 * - wide: tens of thousands of small records: many records per leaf, leaves
 *   that fill, split and merge by bytes rather than by count. */
static const walk_profile walks[] = {
    /* seed, n_max, value_len_max, big_per_mille, pool_percent,
     * scan_per_mille */
    {0x9e3779b97f4a7c15u, 400, 16, 0, 90, 100},
    {0x2545f4914f6cdd1du, 6000, 100, 800, 5, 20},
    {0xd1b54a32d192ed03u, 20000, 200, 2, 10, 10},
};

static void test_random_walk(void **state) {
  walk_run(*state);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty),
      cmocka_unit_test(test_put_get_replace_del),
      cmocka_unit_test(test_zero_length_value),
      cmocka_unit_test(test_binary_keys_and_values),
      cmocka_unit_test(test_equal_ids_order_by_key),
      cmocka_unit_test(test_scan_plain),
      cmocka_unit_test(test_scan_ends_on_records),
      cmocka_unit_test(test_scan_wrap),
      cmocka_unit_test(test_scan_whole_ring),
      cmocka_unit_test(test_scan_empty_intervals),
      cmocka_unit_test(test_scan_extremes),
      cmocka_unit_test(test_scan_early_stop),
      cmocka_unit_test(test_count_range),
      cmocka_unit_test(test_many_records),
      {"test_random_walk_small", test_random_walk, NULL, NULL,
       (void *)&walks[0]},
      {"test_random_walk_tall", test_random_walk, NULL, NULL,
       (void *)&walks[1]},
      {"test_random_walk_wide", test_random_walk, NULL, NULL,
       (void *)&walks[2]},
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
