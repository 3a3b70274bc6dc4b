/*
 * test_store.c: unit tests for the in-memory store (dht_store_mem_new) and
 * dht_store_count_range.
 *
 * The store's order (key id, then key bytes) and its ring-interval scans are
 * what hand-off and anti-entropy rely on, so besides the basic operations the
 * scans are checked on every interval shape (plain, wrapping, whole ring,
 * empty, ends on records) and against a naive model under random operations.
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

/* ---- randomized comparison with a naive model ----------------------------- */

/* The model: an unsorted array searched linearly, obviously right. */
#define MODEL_MAX 512

typedef struct model_rec {
  dht_id id;         /* key id */
  char key[4];       /* key bytes */
  size_t key_len;    /* 1..3 */
  uint8_t value[16]; /* value bytes */
  size_t value_len;  /* 0..16 */
} model_rec;

typedef struct model {
  model_rec recs[MODEL_MAX]; /* in insertion order, no duplicates */
  size_t n;                  /* records in use */
} model;

static int model_find(const model *m, const dht_id *id, const char *key,
                      size_t key_len) {
  size_t i;

  for (i = 0; i < m->n; i++) {
    if (dht_id_eq(&m->recs[i].id, id) && m->recs[i].key_len == key_len &&
        memcmp(m->recs[i].key, key, key_len) == 0) {
      return (int)i;
    }
  }
  return -1;
}

/* The store's order, restated naively: id, then bytes, then length. */
static int model_cmp(const void *pa, const void *pb) {
  const model_rec *a = pa;
  const model_rec *b = pb;
  size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
  int c = dht_id_cmp(&a->id, &b->id);

  if (c != 0) {
    return c;
  }
  c = memcmp(a->key, b->key, n);
  if (c != 0) {
    return c;
  }
  return (a->key_len > b->key_len) - (a->key_len < b->key_len);
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

/* The expected scan: sorted records, those after from first, then the ones
 * at or before from (the wrap), each run filtered by the interval. */
static void model_check_scan(dht_store *st, model *m, const dht_id *from,
                             const dht_id *to) {
  model_rec *sorted = malloc(sizeof(model_rec) * (m->n + 1));
  seen *s = scan_all(st, from, to, 0);
  size_t k = 0;
  int pass;
  size_t i;

  assert_non_null(sorted);
  memcpy(sorted, m->recs, sizeof(model_rec) * m->n);
  qsort(sorted, m->n, sizeof(model_rec), model_cmp);
  for (pass = 0; pass < 2; pass++) {
    for (i = 0; i < m->n; i++) {
      const model_rec *r = &sorted[i];
      bool after = dht_id_cmp(&r->id, from) > 0;
      if (after != (pass == 0) || !model_in(&r->id, from, to)) {
        continue;
      }
      assert_true(k < s->n);
      assert_true(dht_id_eq(&s->recs[k].id, &r->id));
      assert_int_equal(s->recs[k].key_len, r->key_len);
      assert_memory_equal(s->recs[k].key, r->key, r->key_len);
      assert_int_equal(s->recs[k].value_len, r->value_len);
      if (r->value_len > 0) {
        assert_memory_equal(s->recs[k].value, r->value, r->value_len);
      }
      k++;
    }
  }
  assert_int_equal(k, s->n);
  assert_int_equal(dht_store_count_range(st, from, to), k);
  free(s);
  free(sorted);
}

/* Draws from a small pool of ids so that equal ids, equal ends and records
 * sitting exactly on interval ends are common; the pool includes 0 and the
 * maximum id. */
static dht_id random_id(uint64_t *rng) {
  uint64_t r = xorshift64(rng);
  dht_id id;

  switch (r % 8) {
  case 0:
    return id_u64(0);
  case 1:
    return id_max();
  case 2:
    /* a random full-width id */
    {
      size_t i;
      for (i = 0; i < DHT_ID_LEN; i++) {
        id.b[i] = (uint8_t)xorshift64(rng);
      }
      return id;
    }
  default:
    /* 24 values spread over the ring via the top byte */
    memset(id.b, 0, sizeof(id.b));
    id.b[0] = (uint8_t)((r >> 8) % 24 * 10);
    return id;
  }
}

static void test_random_vs_model(void **state) {
  dht_store *st = dht_store_mem_new();
  model *m = calloc(1, sizeof(*m));
  uint64_t rng = 0x9e3779b97f4a7c15u; /* fixed seed: failures replay */
  int step;

  (void)state;
  assert_non_null(m);
  for (step = 0; step < 5000; step++) {
    uint64_t r = xorshift64(&rng);
    dht_id id = random_id(&rng);
    char key[4];
    size_t key_len = 1 + (size_t)(r % 3);
    int at;
    size_t i;

    for (i = 0; i < key_len; i++) {
      key[i] = (char)('a' + xorshift64(&rng) % 2);
    }
    /* Half the time aim at an existing record, so that random full-width
     * ids get replaced and deleted too and the store shrinks as well. */
    if (m->n > 0 && (r >> 16) % 2 == 0) {
      const model_rec *pick = &m->recs[xorshift64(&rng) % m->n];
      id = pick->id;
      key_len = pick->key_len;
      memcpy(key, pick->key, key_len);
    }
    at = model_find(m, &id, key, key_len);

    switch ((r >> 8) % 10) {
    case 0:
    case 1:
    case 2:
    case 3: { /* put */
      uint8_t value[16];
      size_t value_len = (size_t)(xorshift64(&rng) % 17);
      model_rec *mr;
      for (i = 0; i < value_len; i++) {
        value[i] = (uint8_t)xorshift64(&rng);
      }
      if (at < 0 && m->n == MODEL_MAX) {
        break;
      }
      assert_int_equal(dht_store_put(st, &id, (const uint8_t *)key, key_len,
                                     value_len > 0 ? value : NULL, value_len),
                       0);
      mr = at >= 0 ? &m->recs[at] : &m->recs[m->n++];
      mr->id = id;
      memcpy(mr->key, key, key_len);
      mr->key_len = key_len;
      memcpy(mr->value, value, value_len);
      mr->value_len = value_len;
      break;
    }
    case 4:
    case 5: { /* delete */
      int rc = dht_store_remove(st, &id, (const uint8_t *)key, key_len);
      if (at < 0) {
        assert_int_equal(rc, DHT_ERR_NOT_FOUND);
      } else {
        assert_int_equal(rc, 0);
        m->recs[at] = m->recs[--m->n];
      }
      break;
    }
    case 6:
    case 7:
    case 8: { /* get */
      const uint8_t *v;
      size_t v_len;
      int rc = dht_store_get(st, &id, (const uint8_t *)key, key_len, &v,
                             &v_len);
      if (at < 0) {
        assert_int_equal(rc, DHT_ERR_NOT_FOUND);
      } else {
        assert_int_equal(rc, 0);
        assert_int_equal(v_len, m->recs[at].value_len);
        if (v_len > 0) {
          assert_memory_equal(v, m->recs[at].value, v_len);
        }
      }
      break;
    }
    default: { /* scan and count_range */
      dht_id to = random_id(&rng);
      model_check_scan(st, m, &id, &to);
      break;
    }
    }
    assert_int_equal(dht_store_count(st), m->n);
  }
  /* A final sweep: every model record is found, and the whole ring from
   * every pool point scans to the model. */
  {
    size_t i;
    for (i = 0; i < m->n; i++) {
      const uint8_t *v;
      size_t v_len;
      assert_int_equal(dht_store_get(st, &m->recs[i].id,
                                     (const uint8_t *)m->recs[i].key,
                                     m->recs[i].key_len, &v, &v_len),
                       0);
      assert_int_equal(v_len, m->recs[i].value_len);
      model_check_scan(st, m, &m->recs[i].id, &m->recs[i].id);
    }
  }
  free(m);
  dht_store_del(st);
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
      cmocka_unit_test(test_random_vs_model),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
