/*
 * test_store_lmdb.c: unit tests for the LMDB store (dht_store_lmdb_open).
 *
 * Every test works on real LMDB files in a fresh directory under /tmp that is
 * removed afterwards. The store must behave exactly like the memory store
 * (test_store.c's cases are mirrored here, and a randomized run compares the
 * two operation by operation), and on top of that keep its promises about
 * the disk: group commit (reads see pending writes; only committed writes
 * survive a crash, simulated by a child process that SIGKILLs itself), one
 * process per data directory, the map growing when full, and the record
 * format docs/STORAGE.md describes.
 *
 * The store-wide cases run twice: committing after every write, so that
 * reads go through the read-only transaction, and never committing, so that
 * they go through the pending write transaction.
 */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, fork, kill, waitpid, dirent */

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lmdb.h>

#include "dht/err.h"
#include "dht/id.h"
#include "dht/store.h"
#include "dht/store_lmdb.h"

#include "test_util.h"

/* ---- temporary directories and the fixture ------------------------------- */

/* Removes path and everything under it; errors are ignored (a test that
 * fails midway may leave less behind than expected). */
static void rm_rf(const char *path) {
  struct stat sb;
  DIR *d;
  struct dirent *e;

  if (lstat(path, &sb) != 0) {
    return;
  }
  if (!S_ISDIR(sb.st_mode)) {
    unlink(path);
    return;
  }
  d = opendir(path);
  if (d != NULL) {
    while ((e = readdir(d)) != NULL) {
      char child[512];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
        continue;
      }
      snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
      rm_rf(child);
    }
    closedir(d);
  }
  rmdir(path);
}

/* What each test gets in *state. */
typedef struct fixture {
  char dir[64];     /* a fresh directory, removed by the teardown */
  dht_store *st;    /* a store open on dir (store_setup), or NULL */
  bool commit_each; /* commit after every write made through fput/fdel */
} fixture;

/* The two ways the store-wide cases run (cmocka prestates). */
static const bool mode_committed = true;
static const bool mode_pending = false;

static dht_store *open_at(const char *dir, const dht_store_lmdb_options *opt) {
  dht_store_lmdb_options o;
  char err[256] = "";
  dht_store *st = NULL;
  int rc;

  memset(&o, 0, sizeof(o));
  if (opt != NULL) {
    o = *opt;
  }
  o.err = err;
  o.err_len = sizeof(err);
  rc = dht_store_lmdb_open(&st, dir, &o);
  if (rc != 0) {
    print_error("open %s: %s (%s)\n", dir, err, dht_errname(rc));
  }
  assert_int_equal(rc, 0);
  assert_non_null(st);
  assert_string_equal(err, "");
  assert_string_equal(dht_store_lmdb_errmsg(st), "");
  return st;
}

static int dir_setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));

  if (f == NULL) {
    return -1;
  }
  snprintf(f->dir, sizeof(f->dir), "/tmp/test_store_lmdb.XXXXXX");
  if (mkdtemp(f->dir) == NULL) {
    free(f);
    return -1;
  }
  /* The prestate, when there is one, says how writes commit. */
  f->commit_each = *state != NULL ? *(const bool *)*state : true;
  *state = f;
  return 0;
}

static int store_setup(void **state) {
  fixture *f;

  if (dir_setup(state) != 0) {
    return -1;
  }
  f = *state;
  f->st = open_at(f->dir, NULL);
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;

  dht_store_del(f->st);
  rm_rf(f->dir);
  free(f);
  return 0;
}

/* Closes and reopens f's store (closing commits pending writes). */
static void reopen(fixture *f, const dht_store_lmdb_options *opt) {
  dht_store_del(f->st);
  f->st = NULL;
  f->st = open_at(f->dir, opt);
}

/* ---- helpers ------------------------------------------------------------- */

/* Puts, then commits when the fixture says so. */
static void fput(fixture *f, const dht_id *id, const char *key,
                 const char *value) {
  assert_int_equal(dht_store_put(f->st, id, (const uint8_t *)key, strlen(key),
                                 (const uint8_t *)value, strlen(value)),
                   0);
  if (f->commit_each) {
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
    assert_false(dht_store_lmdb_dirty(f->st));
  } else {
    assert_true(dht_store_lmdb_dirty(f->st));
  }
}

/* Deletes, then commits when the fixture says so. Returns del's code. */
static int fdel(fixture *f, const dht_id *id, const char *key) {
  int rc = dht_store_remove(f->st, id, (const uint8_t *)key, strlen(key));

  if (f->commit_each) {
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  }
  return rc;
}

static int get_str(dht_store *st, const dht_id *id, const char *key) {
  const uint8_t *v;
  size_t v_len;

  return dht_store_get(st, id, (const uint8_t *)key, strlen(key), &v, &v_len);
}

/* One record as a scan reported it, copied out of the callback. */
typedef struct rec {
  dht_id id;        /* key id */
  uint8_t *key;     /* key bytes (malloc) */
  size_t key_len;   /* bytes at key */
  uint8_t *value;   /* value bytes (malloc, may be NULL when empty) */
  size_t value_len; /* bytes at value */
} rec;

/* What a scan callback collects. */
typedef struct recs {
  rec *v;            /* records in the order visited */
  size_t n;          /* records visited */
  size_t cap;        /* slots at v */
  size_t stop_after; /* ask to stop after this many (0: never) */
  dht_store *get_st; /* if set, the callback also reads each record back */
} recs;

static uint8_t *dup_bytes(const uint8_t *p, size_t len) {
  uint8_t *q = malloc(len > 0 ? len : 1);

  assert_non_null(q);
  if (len > 0) {
    memcpy(q, p, len);
  }
  return q;
}

static int collect(void *ud, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t *value, size_t value_len) {
  recs *s = ud;
  rec *r;

  if (s->n == s->cap) {
    s->cap = s->cap == 0 ? 16 : 2 * s->cap;
    s->v = realloc(s->v, s->cap * sizeof(*s->v));
    assert_non_null(s->v);
  }
  r = &s->v[s->n++];
  r->id = *key_id;
  r->key = dup_bytes(key, key_len);
  r->key_len = key_len;
  r->value = dup_bytes(value, value_len);
  r->value_len = value_len;
  if (s->get_st != NULL) {
    /* Reading from inside a scan is allowed and must not disturb it. */
    const uint8_t *v;
    size_t v_len;
    assert_int_equal(dht_store_get(s->get_st, key_id, key, key_len, &v, &v_len),
                     0);
    assert_int_equal(v_len, value_len);
  }
  return s->stop_after != 0 && s->n >= s->stop_after;
}

static void recs_free(recs *s) {
  size_t i;

  for (i = 0; i < s->n; i++) {
    free(s->v[i].key);
    free(s->v[i].value);
  }
  free(s->v);
  memset(s, 0, sizeof(*s));
}

static recs scan_ids(dht_store *st, const dht_id *from, const dht_id *to,
                     size_t stop_after) {
  recs s;

  memset(&s, 0, sizeof(s));
  s.stop_after = stop_after;
  s.get_st = st;
  assert_int_equal(dht_store_scan(st, from, to, collect, &s), 0);
  return s;
}

static recs scan_u64(dht_store *st, uint64_t from, uint64_t to,
                     size_t stop_after) {
  dht_id f = id_u64(from);
  dht_id t = id_u64(to);

  return scan_ids(st, &f, &t, stop_after);
}

/* Asserts that record i of s has id v and key key. */
static void assert_seen(const recs *s, size_t i, uint64_t v, const char *key) {
  dht_id id = id_u64(v);

  assert_true(i < s->n);
  assert_true(dht_id_eq(&s->v[i].id, &id));
  assert_int_equal(s->v[i].key_len, strlen(key));
  assert_memory_equal(s->v[i].key, key, strlen(key));
}

/* Asserts that two scans saw the same records in the same order. */
static void assert_same_recs(const recs *a, const recs *b) {
  size_t i;

  assert_int_equal(a->n, b->n);
  for (i = 0; i < a->n; i++) {
    assert_true(dht_id_eq(&a->v[i].id, &b->v[i].id));
    assert_int_equal(a->v[i].key_len, b->v[i].key_len);
    assert_memory_equal(a->v[i].key, b->v[i].key, a->v[i].key_len);
    assert_int_equal(a->v[i].value_len, b->v[i].value_len);
    if (a->v[i].value_len > 0) {
      assert_memory_equal(a->v[i].value, b->v[i].value, a->v[i].value_len);
    }
  }
}

/* Puts one record "k<v/10>" at each id v in 10, 20, ..., 50, out of order. */
static void fill_five(dht_store *st) {
  static const uint64_t ids[] = {30, 10, 50, 20, 40};
  size_t i;

  for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
    char key[3];
    dht_id id = id_u64(ids[i]);
    key[0] = 'k';
    key[1] = (char)('0' + ids[i] / 10);
    key[2] = '\0';
    assert_int_equal(dht_store_put(st, &id, (const uint8_t *)key, 2,
                                   (const uint8_t *)"v", 1),
                     0);
  }
  assert_int_equal(dht_store_count(st), 5);
}

/* ---- the store-wide cases, mirrored from test_store.c -------------------- */

static void test_empty(void **state) {
  fixture *f = *state;
  dht_id a = id_u64(1);
  recs s;

  assert_int_equal(dht_store_count(f->st), 0);
  assert_int_equal(get_str(f->st, &a, "x"), DHT_ERR_NOT_FOUND);
  assert_int_equal(fdel(f, &a, "x"), DHT_ERR_NOT_FOUND);
  /* A delete that found nothing leaves nothing to commit. */
  assert_false(dht_store_lmdb_dirty(f->st));
  s = scan_ids(f->st, &a, &a, 0);
  assert_int_equal(s.n, 0);
  recs_free(&s);
  assert_int_equal(dht_store_count_range(f->st, &a, &a), 0);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0); /* nothing: a no-op */
}

static void test_put_get_replace_del(void **state) {
  fixture *f = *state;
  dht_id a;
  dht_id b;

  dht_id_hash(&a, "alpha", 5);
  dht_id_hash(&b, "beta", 4);
  fput(f, &a, "alpha", "one");
  fput(f, &b, "beta", "two");
  assert_int_equal(dht_store_count(f->st), 2);
  assert_get_str(f->st, &a, "alpha", "one");
  assert_get_str(f->st, &b, "beta", "two");

  /* Replacing keeps the count and changes the value, growing and
   * shrinking. */
  fput(f, &a, "alpha", "a much longer value than before");
  assert_int_equal(dht_store_count(f->st), 2);
  assert_get_str(f->st, &a, "alpha", "a much longer value than before");
  fput(f, &a, "alpha", "1");
  assert_get_str(f->st, &a, "alpha", "1");

  /* Same key bytes under another id, same id with other key bytes: other
   * records. */
  assert_int_equal(get_str(f->st, &b, "alpha"), DHT_ERR_NOT_FOUND);
  assert_int_equal(get_str(f->st, &a, "alph"), DHT_ERR_NOT_FOUND);
  assert_int_equal(get_str(f->st, &a, "alphab"), DHT_ERR_NOT_FOUND);
  assert_int_equal(fdel(f, &b, "alpha"), DHT_ERR_NOT_FOUND);

  assert_int_equal(fdel(f, &a, "alpha"), 0);
  assert_int_equal(dht_store_count(f->st), 1);
  assert_int_equal(get_str(f->st, &a, "alpha"), DHT_ERR_NOT_FOUND);
  assert_int_equal(fdel(f, &a, "alpha"), DHT_ERR_NOT_FOUND);
  assert_get_str(f->st, &b, "beta", "two");
  assert_int_equal(fdel(f, &b, "beta"), 0);
  assert_int_equal(dht_store_count(f->st), 0);

  fput(f, &b, "beta", "three");
  assert_get_str(f->st, &b, "beta", "three");

  /* And all of it is what a reopen finds. */
  reopen(f, NULL);
  assert_int_equal(dht_store_count(f->st), 1);
  assert_get_str(f->st, &b, "beta", "three");
  assert_int_equal(get_str(f->st, &a, "alpha"), DHT_ERR_NOT_FOUND);
}

static void test_zero_length_value(void **state) {
  fixture *f = *state;
  dht_id a = id_u64(7);
  const uint8_t *v = NULL;
  size_t v_len = 99;
  recs s;

  /* NULL with length 0 is a valid empty value. */
  assert_int_equal(dht_store_put(f->st, &a, (const uint8_t *)"k", 1, NULL, 0),
                   0);
  assert_int_equal(
      dht_store_get(f->st, &a, (const uint8_t *)"k", 1, &v, &v_len), 0);
  assert_int_equal(v_len, 0);
  s = scan_ids(f->st, &a, &a, 0);
  assert_int_equal(s.n, 1);
  assert_int_equal(s.v[0].value_len, 0);
  recs_free(&s);

  fput(f, &a, "k", "full");
  assert_get_str(f->st, &a, "k", "full");
  fput(f, &a, "k", "");
  assert_get_str(f->st, &a, "k", "");
  assert_int_equal(dht_store_count(f->st), 1);
  reopen(f, NULL);
  assert_get_str(f->st, &a, "k", "");
}

static void test_binary_keys_and_values(void **state) {
  fixture *f = *state;
  dht_id a = id_u64(3);
  static const uint8_t k1[] = {0x00};
  static const uint8_t k2[] = {0x00, 0x00};
  static const uint8_t val[] = {0x00, 0xff, 0x00};
  const uint8_t *v;
  size_t v_len;

  /* Embedded NULs count: {0} and {0,0} are different keys. */
  assert_int_equal(dht_store_put(f->st, &a, k1, 1, val, 3), 0);
  assert_int_equal(dht_store_put(f->st, &a, k2, 2, val, 1), 0);
  assert_int_equal(dht_store_count(f->st), 2);
  assert_int_equal(dht_store_get(f->st, &a, k1, 1, &v, &v_len), 0);
  assert_int_equal(v_len, 3);
  assert_memory_equal(v, val, 3);
  assert_int_equal(dht_store_get(f->st, &a, k2, 2, &v, &v_len), 0);
  assert_int_equal(v_len, 1);
}

static void test_equal_ids_order_by_key(void **state) {
  fixture *f = *state;
  dht_id same = id_u64(100);
  dht_id lower = id_u64(99);
  dht_id higher = id_u64(101);
  recs s;

  /* Inserted out of order; a shorter prefix sorts first; the id wins over
   * the key bytes ("zz" at 99 comes before "a" at 100). */
  fput(f, &same, "b", "4");
  fput(f, &same, "ab", "3");
  fput(f, &higher, "a", "5");
  fput(f, &same, "a", "1");
  fput(f, &lower, "zz", "0");
  fput(f, &same, "aa", "2");
  assert_int_equal(dht_store_count(f->st), 6);

  s = scan_ids(f->st, &same, &same, 0); /* whole ring, starting after 100 */
  assert_int_equal(s.n, 6);
  assert_seen(&s, 0, 101, "a");
  assert_seen(&s, 1, 99, "zz");
  assert_seen(&s, 2, 100, "a");
  assert_seen(&s, 3, 100, "aa");
  assert_seen(&s, 4, 100, "ab");
  assert_seen(&s, 5, 100, "b");
  assert_int_equal(s.v[2].value[0], '1');
  assert_int_equal(s.v[5].value[0], '4');
  recs_free(&s);

  assert_get_str(f->st, &same, "a", "1");
  assert_get_str(f->st, &same, "aa", "2");
  assert_get_str(f->st, &same, "ab", "3");
  assert_get_str(f->st, &same, "b", "4");
  assert_get_str(f->st, &lower, "zz", "0");
  assert_get_str(f->st, &higher, "a", "5");

  assert_int_equal(fdel(f, &same, "aa"), 0);
  assert_int_equal(get_str(f->st, &same, "aa"), DHT_ERR_NOT_FOUND);
  assert_get_str(f->st, &same, "a", "1");
  assert_get_str(f->st, &same, "ab", "3");
  assert_int_equal(dht_store_count_range(f->st, &lower, &same), 3);
}

/* One scan of fill_five's records: (from, to] must visit want, in order. */
typedef struct scan_case {
  uint64_t from;    /* interval start, excluded */
  uint64_t to;      /* interval end, included */
  size_t n;         /* records expected */
  uint64_t want[5]; /* their ids, in visiting order */
} scan_case;

/* test_store.c's interval shapes: plain, ends on records, wrapping, whole
 * ring (from == to, from's own records last), empty. */
static const scan_case five_cases[] = {
    {15, 35, 2, {20, 30}},
    {0, 60, 5, {10, 20, 30, 40, 50}},
    {9, 50, 5, {10, 20, 30, 40, 50}},
    {10, 30, 2, {20, 30}},
    {10, 20, 1, {20}},
    {40, 50, 1, {50}},
    {19, 20, 1, {20}},
    {20, 29, 0, {0}},
    {35, 15, 3, {40, 50, 10}},
    {40, 20, 3, {50, 10, 20}},
    {55, 10, 1, {10}},
    {45, 5, 1, {50}},
    {20, 20, 5, {30, 40, 50, 10, 20}},
    {35, 35, 5, {40, 50, 10, 20, 30}},
    {0, 0, 5, {10, 20, 30, 40, 50}},
    {50, 50, 5, {10, 20, 30, 40, 50}},
    {21, 29, 0, {0}},
    {51, 1000, 0, {0}},
    {0, 9, 0, {0}},
    {50, 9, 0, {0}},
    {30, 31, 0, {0}},
};

/* Runs every case of five_cases on st. */
static void check_five_cases(dht_store *st) {
  size_t c;

  for (c = 0; c < sizeof(five_cases) / sizeof(five_cases[0]); c++) {
    const scan_case *sc = &five_cases[c];
    dht_id from = id_u64(sc->from);
    dht_id to = id_u64(sc->to);
    recs s = scan_u64(st, sc->from, sc->to, 0);
    size_t i;

    if (s.n != sc->n) {
      print_error("case (%llu, %llu]: %zu records, want %zu\n",
                  (unsigned long long)sc->from, (unsigned long long)sc->to,
                  s.n, sc->n);
    }
    assert_int_equal(s.n, sc->n);
    for (i = 0; i < sc->n; i++) {
      dht_id id = id_u64(sc->want[i]);
      assert_true(dht_id_eq(&s.v[i].id, &id));
    }
    assert_int_equal(dht_store_count_range(st, &from, &to), sc->n);
    recs_free(&s);
  }
}

static void test_scan_table(void **state) {
  fixture *f = *state;
  dht_store *mem = dht_store_mem_new();

  /* The same table on the memory store first: the reference agrees. */
  assert_non_null(mem);
  fill_five(mem);
  check_five_cases(mem);
  dht_store_del(mem);

  fill_five(f->st);
  if (f->commit_each) {
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  }
  check_five_cases(f->st);
}

static void test_scan_extremes(void **state) {
  fixture *f = *state;
  dht_id zero = id_u64(0);
  dht_id one = id_u64(1);
  dht_id max = id_max();
  dht_id below_max = id_max();
  recs s;

  below_max.b[DHT_ID_LEN - 1] = 0xfe;
  fput(f, &zero, "z", "0");
  fput(f, &max, "m", "1");
  fput(f, &one, "o", "2");

  /* (max, 0] holds just zero. */
  s = scan_ids(f->st, &max, &zero, 0);
  assert_int_equal(s.n, 1);
  assert_true(dht_id_eq(&s.v[0].id, &zero));
  recs_free(&s);

  /* (0, max] holds one and max but not zero. */
  s = scan_ids(f->st, &zero, &max, 0);
  assert_int_equal(s.n, 2);
  assert_true(dht_id_eq(&s.v[0].id, &one));
  assert_true(dht_id_eq(&s.v[1].id, &max));
  recs_free(&s);

  /* (below_max, one] wraps: max, zero, one. */
  s = scan_ids(f->st, &below_max, &one, 0);
  assert_int_equal(s.n, 3);
  assert_true(dht_id_eq(&s.v[0].id, &max));
  assert_true(dht_id_eq(&s.v[1].id, &zero));
  assert_true(dht_id_eq(&s.v[2].id, &one));
  recs_free(&s);

  /* (max, max]: the whole ring, starting at zero, max last. */
  s = scan_ids(f->st, &max, &max, 0);
  assert_int_equal(s.n, 3);
  assert_true(dht_id_eq(&s.v[0].id, &zero));
  assert_true(dht_id_eq(&s.v[2].id, &max));
  recs_free(&s);
}

static void test_scan_early_stop(void **state) {
  fixture *f = *state;
  recs s;

  fill_five(f->st);
  if (f->commit_each) {
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  }
  /* Stopping after two records visits exactly two and still returns 0. */
  s = scan_u64(f->st, 35, 35, 2);
  assert_int_equal(s.n, 2);
  assert_seen(&s, 0, 40, "k4");
  assert_seen(&s, 1, 50, "k5");
  recs_free(&s);

  /* A stop at the end of the run before zero must not resume after it. */
  s = scan_u64(f->st, 45, 25, 1);
  assert_int_equal(s.n, 1);
  assert_seen(&s, 0, 50, "k5");
  recs_free(&s);

  /* A stop inside the run after zero. */
  s = scan_u64(f->st, 45, 25, 2);
  assert_int_equal(s.n, 2);
  assert_seen(&s, 1, 10, "k1");
  recs_free(&s);
}

static void test_many_records(void **state) {
  fixture *f = *state;
  dht_id from = id_u64(500);
  dht_id to = id_u64(510);
  recs s;
  uint64_t i;

  for (i = 0; i < 1000; i++) {
    dht_id id = id_u64(i * 7 % 1000); /* a permutation of 0..999 */
    assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)"k", 1,
                                   (const uint8_t *)"v", 1),
                     0);
  }
  if (f->commit_each) {
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  }
  assert_int_equal(dht_store_count(f->st), 1000);
  s = scan_ids(f->st, &from, &to, 0);
  assert_int_equal(s.n, 10);
  assert_seen(&s, 0, 501, "k");
  assert_seen(&s, 9, 510, "k");
  recs_free(&s);
  for (i = 0; i < 1000; i += 2) {
    dht_id id = id_u64(i);
    assert_int_equal(dht_store_remove(f->st, &id, (const uint8_t *)"k", 1), 0);
  }
  assert_int_equal(dht_store_count(f->st), 500);
  assert_int_equal(dht_store_count_range(f->st, &from, &to), 5);
  reopen(f, NULL);
  assert_int_equal(dht_store_count(f->st), 500);
  assert_int_equal(dht_store_count_range(f->st, &from, &to), 5);
}

/* ---- opening, the directory and its lock --------------------------------- */

static void test_open_creates_dir(void **state) {
  fixture *f = *state;
  char path[128];
  char file[192];
  struct stat sb;
  dht_store *st;

  /* Missing parents are created too, all private to the user. */
  snprintf(path, sizeof(path), "%s/a/b/data", f->dir);
  st = open_at(path, NULL);
  assert_int_equal(stat(path, &sb), 0);
  assert_true(S_ISDIR(sb.st_mode));
  assert_int_equal(sb.st_mode & 0777, 0700);
  snprintf(file, sizeof(file), "%s/a", f->dir);
  assert_int_equal(stat(file, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  snprintf(file, sizeof(file), "%s/data.mdb", path);
  assert_int_equal(stat(file, &sb), 0);
  snprintf(file, sizeof(file), "%s/%s", path, DHT_STORE_LMDB_LOCK_NAME);
  assert_int_equal(stat(file, &sb), 0);
  assert_int_equal(dht_store_count(st), 0);
  assert_false(dht_store_lmdb_dirty(st));
  /* A stock LMDB allows 511-byte keys, 20 of which hold the id. */
  assert_int_equal(dht_store_lmdb_key_len_max(st), 511 - DHT_ID_LEN);
  dht_store_del(st);

  /* An existing directory is used as it is. */
  st = open_at(path, NULL);
  dht_store_del(st);
}

/* Expects opening dir with opt to fail with code and a message holding
 * needle. */
static void expect_open_fails(const char *dir, const dht_store_lmdb_options *opt,
                              int code, const char *needle) {
  dht_store_lmdb_options o;
  char err[256] = "unset";
  dht_store *st = (dht_store *)&o; /* must be reset to NULL */
  int rc;

  memset(&o, 0, sizeof(o));
  if (opt != NULL) {
    o = *opt;
  }
  o.err = err;
  o.err_len = sizeof(err);
  rc = dht_store_lmdb_open(&st, dir, &o);
  assert_int_equal(rc, code);
  assert_null(st);
  if (strstr(err, needle) == NULL) {
    print_error("message \"%s\" lacks \"%s\"\n", err, needle);
  }
  assert_non_null(strstr(err, needle));
}

static void test_open_errors(void **state) {
  fixture *f = *state;
  dht_store_lmdb_options o;
  char path[128];
  char file[192];
  int fd;
  size_t i;

  /* A regular file where the directory should be. */
  snprintf(path, sizeof(path), "%s/file", f->dir);
  fd = open(path, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  close(fd);
  expect_open_fails(path, NULL, DHT_ERR_STORE, "Not a directory");
  snprintf(file, sizeof(file), "%s/below", path);
  expect_open_fails(file, NULL, DHT_ERR_STORE, "Not a directory");

  /* Bad options. */
  memset(&o, 0, sizeof(o));
  o.map_size = (size_t)1 << 20;
  o.map_size_max = (size_t)1 << 19;
  expect_open_fails(f->dir, &o, DHT_ERR_INVAL, "map size");
  memset(&o, 0, sizeof(o));
  o.sync = (dht_sync_mode)7;
  expect_open_fails(f->dir, &o, DHT_ERR_INVAL, "sync mode");
  expect_open_fails("", NULL, DHT_ERR_INVAL, "empty");

  /* A data.mdb that is not an LMDB file: LMDB's reason comes through. */
  snprintf(path, sizeof(path), "%s/junk", f->dir);
  assert_int_equal(mkdir(path, 0700), 0);
  snprintf(file, sizeof(file), "%s/data.mdb", path);
  fd = open(file, O_WRONLY | O_CREAT, 0600);
  assert_true(fd >= 0);
  for (i = 0; i < 4; i++) {
    char junk[4096];
    memset(junk, 'j', sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  }
  close(fd);
  expect_open_fails(path, NULL, DHT_ERR_STORE, "MDB_INVALID");
  /* The failed open released its lock: with the junk gone it works. */
  assert_int_equal(unlink(file), 0);
  dht_store_del(open_at(path, NULL));

  /* A NULL err pointer is fine. */
  memset(&o, 0, sizeof(o));
  o.sync = (dht_sync_mode)7;
  {
    dht_store *st;
    assert_int_equal(dht_store_lmdb_open(&st, f->dir, &o), DHT_ERR_INVAL);
    assert_null(st);
  }
}

static void test_lock_same_process(void **state) {
  fixture *f = *state;
  char pid[32];
  dht_store *st = open_at(f->dir, NULL);

  snprintf(pid, sizeof(pid), "pid %ld ", (long)getpid());
  expect_open_fails(f->dir, NULL, DHT_ERR_STORE, "in use by another process");
  expect_open_fails(f->dir, NULL, DHT_ERR_STORE, DHT_STORE_LMDB_LOCK_NAME);
  expect_open_fails(f->dir, NULL, DHT_ERR_STORE, pid);
  /* The store that holds the lock is unharmed. */
  {
    dht_id a = id_u64(1);
    assert_int_equal(dht_store_put(st, &a, (const uint8_t *)"k", 1,
                                   (const uint8_t *)"v", 1),
                     0);
    assert_int_equal(dht_store_lmdb_commit(st), 0);
  }
  dht_store_del(st);
  /* Released on close. */
  st = open_at(f->dir, NULL);
  assert_int_equal(dht_store_count(st), 1);
  dht_store_del(st);
}

static void test_lock_other_process(void **state) {
  fixture *f = *state;
  int ready[2];
  int go[2];
  char c = 0;
  char pid_text[32];
  pid_t pid;
  int status;

  assert_int_equal(pipe(ready), 0);
  assert_int_equal(pipe(go), 0);
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    /* The child holds the directory until the parent says go. */
    dht_store *st = NULL;
    char answer = dht_store_lmdb_open(&st, f->dir, NULL) == 0 ? 'r' : 'e';
    if (write(ready[1], &answer, 1) != 1 || read(go[0], &c, 1) != 1) {
      _exit(2);
    }
    dht_store_del(st);
    _exit(answer == 'r' ? 0 : 1);
  }
  assert_int_equal(read(ready[0], &c, 1), 1);
  assert_int_equal(c, 'r');
  snprintf(pid_text, sizeof(pid_text), "pid %ld ", (long)pid);
  expect_open_fails(f->dir, NULL, DHT_ERR_STORE, pid_text);
  assert_int_equal(write(go[1], "g", 1), 1);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  close(ready[0]);
  close(ready[1]);
  close(go[0]);
  close(go[1]);
  dht_store_del(open_at(f->dir, NULL));
}

/* ---- group commit -------------------------------------------------------- */

static void test_reads_see_pending_writes(void **state) {
  fixture *f = *state;
  dht_id a = id_u64(10);
  dht_id b = id_u64(20);
  recs s;

  assert_int_equal(dht_store_put(f->st, &a, (const uint8_t *)"a", 1,
                                 (const uint8_t *)"1", 1),
                   0);
  assert_true(dht_store_lmdb_dirty(f->st));
  assert_get_str(f->st, &a, "a", "1");
  assert_int_equal(dht_store_count(f->st), 1);
  s = scan_u64(f->st, 0, 0, 0);
  assert_int_equal(s.n, 1);
  recs_free(&s);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_false(dht_store_lmdb_dirty(f->st));
  assert_get_str(f->st, &a, "a", "1");

  /* A second group: a put and a delete, both visible before the commit. */
  assert_int_equal(dht_store_put(f->st, &b, (const uint8_t *)"b", 1,
                                 (const uint8_t *)"2", 1),
                   0);
  assert_int_equal(dht_store_remove(f->st, &a, (const uint8_t *)"a", 1), 0);
  assert_true(dht_store_lmdb_dirty(f->st));
  assert_int_equal(get_str(f->st, &a, "a"), DHT_ERR_NOT_FOUND);
  assert_get_str(f->st, &b, "b", "2");
  assert_int_equal(dht_store_count(f->st), 1);
  s = scan_u64(f->st, 0, 0, 0);
  assert_int_equal(s.n, 1);
  assert_seen(&s, 0, 20, "b");
  recs_free(&s);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_int_equal(dht_store_count(f->st), 1);

  /* The same after a reopen. */
  reopen(f, NULL);
  assert_int_equal(get_str(f->st, &a, "a"), DHT_ERR_NOT_FOUND);
  assert_get_str(f->st, &b, "b", "2");
  assert_int_equal(dht_store_count(f->st), 1);
}

static void test_close_commits(void **state) {
  fixture *f = *state;
  dht_id a = id_u64(1);
  dht_id b = id_u64(2);

  assert_int_equal(dht_store_put(f->st, &a, (const uint8_t *)"a", 1,
                                 (const uint8_t *)"1", 1),
                   0);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_int_equal(dht_store_put(f->st, &b, (const uint8_t *)"b", 1,
                                 (const uint8_t *)"2", 1),
                   0);
  reopen(f, NULL); /* closing commits b */
  assert_get_str(f->st, &a, "a", "1");
  assert_get_str(f->st, &b, "b", "2");
  assert_int_equal(dht_store_count(f->st), 2);
}

static void test_count_across_commits(void **state) {
  fixture *f = *state;
  uint64_t i;

  for (i = 0; i < 10; i++) {
    dht_id id = id_u64(i);
    assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)"k", 1,
                                   (const uint8_t *)"v", 1),
                     0);
    assert_int_equal(dht_store_count(f->st), i + 1);
  }
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_int_equal(dht_store_count(f->st), 10);
  for (i = 0; i < 3; i++) {
    dht_id id = id_u64(i);
    assert_int_equal(dht_store_remove(f->st, &id, (const uint8_t *)"k", 1), 0);
  }
  for (i = 5; i < 12; i++) { /* 5..9 replace, 10 and 11 are new */
    dht_id id = id_u64(i);
    assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)"k", 1,
                                   (const uint8_t *)"w", 1),
                     0);
  }
  assert_int_equal(dht_store_count(f->st), 9);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  assert_int_equal(dht_store_count(f->st), 9);
  reopen(f, NULL);
  assert_int_equal(dht_store_count(f->st), 9);
}

/* What a crashing child does before it SIGKILLs itself. */
typedef struct crash_plan {
  const char *dir;        /* the data directory */
  dht_sync_mode sync;     /* the mode to open it in */
  size_t group_bytes_max; /* 0: the default */
  size_t group_writes_max; /* 0: the default */
  int n_uncommitted;      /* puts made after the last commit */
} crash_plan;

/* The child's side: returns 0 when everything worked (then it is killed),
 * or a code saying which step failed. No cmocka asserts in the child. */
static int crash_child(const crash_plan *p) {
  dht_store_lmdb_options o;
  dht_store *st;
  dht_id kept = id_u64(1);
  int i;

  memset(&o, 0, sizeof(o));
  o.sync = p->sync;
  o.group_bytes_max = p->group_bytes_max;
  o.group_writes_max = p->group_writes_max;
  if (dht_store_lmdb_open(&st, p->dir, &o) != 0) {
    return 10;
  }
  if (dht_store_put(st, &kept, (const uint8_t *)"kept", 4,
                    (const uint8_t *)"yes", 3) != 0 ||
      dht_store_lmdb_commit(st) != 0) {
    return 11;
  }
  for (i = 0; i < p->n_uncommitted; i++) {
    char key[16];
    uint8_t value[100];
    dht_id id = id_u64(1000 + (uint64_t)i);
    int len = snprintf(key, sizeof(key), "lost%03d", i);
    memset(value, 'x', sizeof(value));
    if (dht_store_put(st, &id, (const uint8_t *)key, (size_t)len, value,
                      sizeof(value)) != 0) {
      return 12;
    }
  }
  return 0;
}

/* Runs crash_child(p) in a child process that ends with SIGKILL, the way a
 * crashing daemon ends: no close, no commit, no flush. */
static void run_crash(const crash_plan *p) {
  pid_t pid;
  int status;

  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int rc = crash_child(p);
    if (rc == 0) {
      kill(getpid(), SIGKILL);
    }
    _exit(rc);
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (!WIFSIGNALED(status)) {
    print_error("the child exited with %d\n", WEXITSTATUS(status));
  }
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGKILL);
}

static void test_crash_keeps_committed_only(void **state) {
  fixture *f = *state;
  static const dht_sync_mode modes[] = {DHT_SYNC_ALWAYS, DHT_SYNC_INTERVAL,
                                        DHT_SYNC_NONE};
  size_t m;

  /* Even with no fsync at all, a commit is in the OS page cache, which a
   * process crash does not lose. */
  for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
    char dir[128];
    crash_plan p;
    dht_store *st;
    dht_id kept = id_u64(1);
    dht_id lost = id_u64(1000);

    snprintf(dir, sizeof(dir), "%s/%s", f->dir, dht_sync_mode_name(modes[m]));
    memset(&p, 0, sizeof(p));
    p.dir = dir;
    p.sync = modes[m];
    p.n_uncommitted = 1;
    run_crash(&p);
    /* The kernel released the dead child's lock. */
    st = open_at(dir, NULL);
    assert_get_str(st, &kept, "kept", "yes");
    assert_int_equal(get_str(st, &lost, "lost000"), DHT_ERR_NOT_FOUND);
    assert_int_equal(dht_store_count(st), 1);
    dht_store_del(st);
  }
}

/* Crashes a child that made 100 uncommitted puts ("lost000".."lost099" at
 * ids 1000..1099) under these group limits (0: the default), then reopens
 * its directory. */
static dht_store *crash_after_100_puts(fixture *f, size_t group_bytes_max,
                                       size_t group_writes_max) {
  crash_plan p;

  memset(&p, 0, sizeof(p));
  p.dir = f->dir;
  p.sync = DHT_SYNC_ALWAYS;
  p.group_bytes_max = group_bytes_max;
  p.group_writes_max = group_writes_max;
  p.n_uncommitted = 100;
  run_crash(&p);
  return open_at(f->dir, NULL);
}

static void test_group_bytes_max_commits_early(void **state) {
  dht_store *st;
  dht_id first = id_u64(1000);
  dht_id last = id_u64(1099);
  size_t n;

  /* Puts of about 150 log bytes each, with room for about 27 in a group:
   * the store committed the early ones by itself. */
  st = crash_after_100_puts(*state, 4096, 0);
  assert_int_equal(get_str(st, &first, "lost000"), 0);
  assert_int_equal(get_str(st, &last, "lost099"), DHT_ERR_NOT_FOUND);
  n = dht_store_count(st);
  assert_true(n > 50 && n < 101);
  dht_store_del(st);
}

static void test_group_writes_max_commits_early(void **state) {
  dht_store *st;
  dht_id last_kept = id_u64(1089);
  dht_id first_lost = id_u64(1090);

  /* At most 30 writes in a group: before the 31st, the 61st and the 91st
   * put the store committed the group by itself, so exactly the first 90
   * survive the crash, with the record committed before them. */
  st = crash_after_100_puts(*state, 0, 30);
  assert_int_equal(get_str(st, &last_kept, "lost089"), 0);
  assert_int_equal(get_str(st, &first_lost, "lost090"), DHT_ERR_NOT_FOUND);
  assert_int_equal(dht_store_count(st), 91);
  dht_store_del(st);
}

/* ---- limits -------------------------------------------------------------- */

static void test_key_too_long(void **state) {
  fixture *f = *state;
  size_t max = dht_store_lmdb_key_len_max(f->st);
  uint8_t *key = malloc(max + 1);
  dht_id id = id_u64(5);
  const uint8_t *v;
  size_t v_len;

  assert_non_null(key);
  memset(key, 'k', max + 1);
  assert_int_equal(dht_store_put(f->st, &id, key, max, key, 3), 0);
  assert_int_equal(dht_store_put(f->st, &id, key, max + 1, key, 3),
                   DHT_ERR_TOO_LARGE);
  assert_non_null(strstr(dht_store_lmdb_errmsg(f->st), "exceeds the limit"));
  assert_int_equal(dht_store_get(f->st, &id, key, max + 1, &v, &v_len),
                   DHT_ERR_NOT_FOUND);
  assert_int_equal(dht_store_remove(f->st, &id, key, max + 1),
                   DHT_ERR_NOT_FOUND);
  /* The rejected put did not disturb the group. */
  assert_int_equal(dht_store_count(f->st), 1);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  reopen(f, NULL);
  assert_int_equal(dht_store_get(f->st, &id, key, max, &v, &v_len), 0);
  assert_int_equal(v_len, 3);
  free(key);
}

/* Puts n records of value_len bytes, ids start..start+n-1, one group. */
static void put_many(dht_store *st, uint64_t start, int n, size_t value_len) {
  uint8_t *value = malloc(value_len);
  int i;

  assert_non_null(value);
  for (i = 0; i < n; i++) {
    dht_id id = id_u64(start + (uint64_t)i);
    memset(value, (int)('a' + i % 26), value_len);
    assert_int_equal(
        dht_store_put(st, &id, (const uint8_t *)"key", 3, value, value_len), 0);
  }
  free(value);
}

/* Checks the records put_many made. */
static void check_many(dht_store *st, uint64_t start, int n,
                       size_t value_len) {
  int i;

  for (i = 0; i < n; i++) {
    dht_id id = id_u64(start + (uint64_t)i);
    const uint8_t *v;
    size_t v_len;
    assert_int_equal(
        dht_store_get(st, &id, (const uint8_t *)"key", 3, &v, &v_len), 0);
    assert_int_equal(v_len, value_len);
    assert_int_equal(v[0], 'a' + i % 26);
    assert_int_equal(v[value_len - 1], 'a' + i % 26);
  }
}

static void test_map_grows(void **state) {
  fixture *f = *state;
  dht_store_lmdb_options o;
  char file[192];
  struct stat sb;

  memset(&o, 0, sizeof(o));
  o.map_size = DHT_STORE_LMDB_MAP_SIZE_MIN; /* 64 KiB */
  f->st = open_at(f->dir, &o);
  /* About 1.2 MB in one group: the map fills several times mid-group and
   * the pending writes before each fill must all survive. */
  put_many(f->st, 0, 4000, 200);
  check_many(f->st, 0, 4000, 200);
  assert_int_equal(dht_store_count(f->st), 4000);
  assert_int_equal(dht_store_lmdb_commit(f->st), 0);
  /* Large values (overflow pages), committed every 10. */
  {
    int i;
    for (i = 0; i < 10; i++) {
      put_many(f->st, 10000 + (uint64_t)i * 10, 10, 20000);
      assert_int_equal(dht_store_lmdb_commit(f->st), 0);
    }
  }
  reopen(f, &o);
  check_many(f->st, 0, 4000, 200);
  assert_int_equal(dht_store_count(f->st), 4100);
  snprintf(file, sizeof(file), "%s/data.mdb", f->dir);
  assert_int_equal(stat(file, &sb), 0);
  assert_true(sb.st_size > (off_t)(2 << 20));
}

/* Fills a store whose map may grow to 256 KiB, committing every
 * commit_every puts (0: never), until the map is full, then checks that
 * exactly the committed writes remain. */
static void fill_to_limit(const char *dir, int commit_every) {
  dht_store_lmdb_options o;
  dht_store *st;
  int n = 0;         /* records put */
  int committed = 0; /* records committed */
  int rc;

  memset(&o, 0, sizeof(o));
  o.map_size = DHT_STORE_LMDB_MAP_SIZE_MIN;
  o.map_size_max = 4 * DHT_STORE_LMDB_MAP_SIZE_MIN;
  o.group_writes_max = 100000; /* commits only where commit_every says */
  st = open_at(dir, &o);
  for (;;) {
    uint8_t value[100];
    dht_id id = id_u64((uint64_t)n);
    memset(value, 'a' + n % 26, sizeof(value)); /* as put_many does */
    rc = dht_store_put(st, &id, (const uint8_t *)"key", 3, value,
                       sizeof(value));
    if (rc != 0) {
      break;
    }
    n++;
    assert_true(n < 100000);
    if (commit_every != 0 && n % commit_every == 0) {
      /* Saving the free list needs room too, so a commit may be the one
       * that finds the map full. */
      rc = dht_store_lmdb_commit(st);
      if (rc != 0) {
        break;
      }
      committed = n;
    }
  }
  assert_int_equal(rc, DHT_ERR_DISK_FULL);
  assert_non_null(strstr(dht_store_lmdb_errmsg(st), "full"));
  assert_true(n > 100);
  if (dht_store_lmdb_dirty(st)) {
    /* The full put left the group as it was: every earlier write is still
     * readable, and the commit either makes them durable or fails as a
     * whole. */
    assert_int_equal(dht_store_count(st), (size_t)n);
    check_many(st, 0, n, 100);
    rc = dht_store_lmdb_commit(st);
    assert_true(rc == 0 || rc == DHT_ERR_DISK_FULL);
    if (rc == 0) {
      committed = n;
    }
  }
  /* A failed commit drops its whole group, nothing more. */
  assert_false(dht_store_lmdb_dirty(st));
  assert_int_equal(dht_store_count(st), (size_t)committed);
  dht_store_del(st);
  st = open_at(dir, &o);
  assert_int_equal(dht_store_count(st), (size_t)committed);
  check_many(st, 0, committed, 100);
  dht_store_del(st);
  /* With a higher limit it takes writes again. (At the limit even a delete
   * may fail: LMDB copies the pages it changes.) */
  o.map_size_max = 0;
  st = open_at(dir, &o);
  put_many(st, 100000, 100, 100);
  assert_int_equal(dht_store_lmdb_commit(st), 0);
  assert_int_equal(dht_store_count(st), (size_t)committed + 100);
  dht_store_del(st);
}

static void test_map_limit(void **state) {
  fixture *f = *state;
  char dir[128];

  snprintf(dir, sizeof(dir), "%s/every50", f->dir);
  fill_to_limit(dir, 50);
  snprintf(dir, sizeof(dir), "%s/never", f->dir);
  fill_to_limit(dir, 0);
}

/* ---- disk errors --------------------------------------------------------- */

/* The child of test_disk_full: returns 0 when the store behaved, else the
 * number of the check that failed. No cmocka asserts in the child. */
static int disk_full_child(const char *dir) {
  dht_store_lmdb_options o;
  dht_store *st;
  struct rlimit lim;
  struct stat sb;
  char file[192];
  uint8_t big[1500];
  const uint8_t *v;
  size_t v_len;
  uint64_t i;

  memset(&o, 0, sizeof(o));
  o.group_bytes_max = 4096; /* about two big puts per group */
  memset(big, 'b', sizeof(big));
  if (dht_store_lmdb_open(&st, dir, &o) != 0) {
    return 1;
  }
  for (i = 0; i < 10; i++) {
    dht_id id = id_u64(i);
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, 10) != 0) {
      return 2;
    }
  }
  if (dht_store_lmdb_commit(st) != 0) {
    return 3;
  }
  /* From now on the data file cannot grow: writes past its end fail with
   * EFBIG, as they would with ENOSPC on a full disk. */
  snprintf(file, sizeof(file), "%s/data.mdb", dir);
  signal(SIGXFSZ, SIG_IGN);
  if (stat(file, &sb) != 0) {
    return 4;
  }
  lim.rlim_cur = (rlim_t)sb.st_size;
  lim.rlim_max = RLIM_INFINITY;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
    return 5;
  }
  /* A commit that fails drops its group, and only its group. */
  {
    dht_id id = id_u64(100);
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, sizeof(big)) !=
        0) {
      return 6;
    }
    if (dht_store_lmdb_commit(st) != DHT_ERR_STORE ||
        strstr(dht_store_lmdb_errmsg(st), "commit failed") == NULL) {
      return 7;
    }
    if (dht_store_lmdb_dirty(st) || dht_store_count(st) != 10 ||
        dht_store_get(st, &id, (const uint8_t *)"k", 1, &v, &v_len) !=
            DHT_ERR_NOT_FOUND) {
      return 8;
    }
  }
  /* An early commit (group_bytes_max) that fails: the write that caused it
   * fails, later writes fail until the commit call, which reports the loss
   * of the writes that had returned 0. */
  for (i = 200; i < 202; i++) {
    dht_id id = id_u64(i);
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, sizeof(big)) !=
        0) {
      return 9;
    }
  }
  {
    dht_id id = id_u64(202);
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, sizeof(big)) !=
        DHT_ERR_STORE) {
      return 10;
    }
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, 1) !=
            DHT_ERR_STORE ||
        strstr(dht_store_lmdb_errmsg(st), "lost") == NULL) {
      return 11;
    }
    /* Dirty until the commit call has reported the loss. */
    if (!dht_store_lmdb_dirty(st) ||
        dht_store_lmdb_commit(st) != DHT_ERR_STORE ||
        dht_store_lmdb_dirty(st) || dht_store_count(st) != 10) {
      return 12;
    }
  }
  /* The store was never broken: with room again it works. */
  lim.rlim_cur = RLIM_INFINITY;
  if (setrlimit(RLIMIT_FSIZE, &lim) != 0) {
    return 13;
  }
  {
    dht_id id = id_u64(300);
    if (dht_store_put(st, &id, (const uint8_t *)"k", 1, big, sizeof(big)) !=
            0 ||
        dht_store_lmdb_commit(st) != 0 || dht_store_count(st) != 11) {
      return 14;
    }
  }
  dht_store_del(st);
  return 0;
}

static void test_disk_full(void **state) {
  fixture *f = *state;
  dht_store *st;
  pid_t pid;
  int status;

  /* In a child, so that the file size limit and the ignored signal stay
   * there. */
  fflush(NULL);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    _exit(disk_full_child(f->dir));
  }
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  if (WEXITSTATUS(status) != 0) {
    print_error("check %d failed in the child\n", WEXITSTATUS(status));
  }
  assert_int_equal(WEXITSTATUS(status), 0);
  st = open_at(f->dir, NULL);
  assert_int_equal(dht_store_count(st), 11);
  {
    dht_id id = id_u64(300);
    assert_int_equal(get_str(st, &id, "k"), 0);
    id = id_u64(200);
    assert_int_equal(get_str(st, &id, "k"), DHT_ERR_NOT_FOUND);
  }
  dht_store_del(st);
}

/* ---- sync modes ---------------------------------------------------------- */

static void test_sync_modes(void **state) {
  fixture *f = *state;
  static const dht_sync_mode modes[] = {DHT_SYNC_ALWAYS, DHT_SYNC_INTERVAL,
                                        DHT_SYNC_NONE};
  dht_sync_mode parsed;
  size_t m;

  for (m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
    dht_store_lmdb_options o;
    dht_id id = id_u64(m + 1);

    assert_int_equal(dht_sync_mode_parse(&parsed, dht_sync_mode_name(modes[m])),
                     0);
    assert_int_equal(parsed, modes[m]);
    memset(&o, 0, sizeof(o));
    o.sync = modes[m];
    f->st = open_at(f->dir, &o);
    assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)"k", 1,
                                   (const uint8_t *)"v", 1),
                     0);
    assert_int_equal(dht_store_lmdb_sync(f->st), 0); /* does not commit */
    assert_true(dht_store_lmdb_dirty(f->st));
    assert_int_equal(dht_store_lmdb_commit(f->st), 0);
    assert_int_equal(dht_store_lmdb_sync(f->st), 0);
    dht_store_del(f->st);
    f->st = NULL;
  }
  f->st = open_at(f->dir, NULL);
  assert_int_equal(dht_store_count(f->st), 3);
  assert_int_equal(dht_sync_mode_parse(&parsed, "sometimes"), DHT_ERR_INVAL);
  assert_string_equal(dht_sync_mode_name((dht_sync_mode)9), "?");
}

/* ---- the on-disk format -------------------------------------------------- */

/* Opens dir's environment with LMDB directly (the store must be closed:
 * LMDB forbids opening one environment twice in a process). */
static MDB_env *raw_open(const char *dir) {
  MDB_env *env;

  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
  return env;
}

static void test_on_disk_format(void **state) {
  fixture *f = *state;
  dht_id id;
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_val k;
  MDB_val d;
  uint8_t raw_key[DHT_ID_LEN + 5];
  const uint8_t *v;
  size_t v_len;
  recs s;

  dht_id_hash(&id, "hello", 5);
  assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)"hello", 5,
                                 (const uint8_t *)"world", 5),
                   0);
  dht_store_del(f->st);
  f->st = NULL;

  /* The LMDB key is id || key; the value is the format byte 1 || value. */
  memcpy(raw_key, id.b, DHT_ID_LEN);
  memcpy(raw_key + DHT_ID_LEN, "hello", 5);
  env = raw_open(f->dir);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
  k.mv_size = sizeof(raw_key);
  k.mv_data = raw_key;
  assert_int_equal(mdb_get(txn, dbi, &k, &d), 0);
  assert_int_equal(d.mv_size, 6);
  assert_memory_equal(d.mv_data, "\x01world", 6);
  /* A record in a format this version does not know. */
  d.mv_size = 3;
  d.mv_data = "\x7fzz";
  raw_key[DHT_ID_LEN] = 'j';
  assert_int_equal(mdb_put(txn, dbi, &k, &d, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  f->st = open_at(f->dir, NULL);
  assert_get_str(f->st, &id, "hello", "world");
  assert_int_equal(dht_store_get(f->st, &id, (const uint8_t *)"jello", 5, &v,
                                 &v_len),
                   DHT_ERR_STORE);
  assert_non_null(strstr(dht_store_lmdb_errmsg(f->st), "format 127"));
  memset(&s, 0, sizeof(s));
  assert_int_equal(dht_store_scan(f->st, &id, &id, collect, &s),
                   DHT_ERR_STORE);
  recs_free(&s);
  /* Not fatal: the rest of the store still works. */
  assert_get_str(f->st, &id, "hello", "world");
}

/* ---- randomized comparison with the memory store ------------------------- */

/* Ids from a small pool (0, the maximum, 24 points spread over the ring)
 * plus some random full-width ones, so equal ids and interval ends that
 * sit on records are common. */
static dht_id random_id(uint64_t *rng) {
  uint64_t r = xorshift64(rng);
  dht_id id;
  size_t i;

  switch (r % 8) {
  case 0:
    return id_u64(0);
  case 1:
    return id_max();
  case 2:
    for (i = 0; i < DHT_ID_LEN; i++) {
      id.b[i] = (uint8_t)xorshift64(rng);
    }
    return id;
  default:
    memset(id.b, 0, sizeof(id.b));
    id.b[0] = (uint8_t)((r >> 8) % 24 * 10);
    return id;
  }
}

/* A record the random run put, to aim later operations at. */
typedef struct known {
  dht_id id;     /* key id */
  char key[4];   /* key bytes */
  size_t key_len; /* 1..3 */
} known;

#define KNOWN_MAX 256

static void compare_scan(dht_store *db, dht_store *mem, const dht_id *from,
                         const dht_id *to, size_t stop_after) {
  recs a = scan_ids(db, from, to, stop_after);
  recs b = scan_ids(mem, from, to, stop_after);

  assert_same_recs(&a, &b);
  recs_free(&a);
  recs_free(&b);
}

static void test_random_vs_memory(void **state) {
  fixture *f = *state;
  dht_store_lmdb_options o;
  dht_store *mem = dht_store_mem_new();
  known *kn = calloc(KNOWN_MAX, sizeof(*kn));
  uint8_t *value = malloc(5000);
  size_t n_known = 0;
  uint64_t rng = 0x2545f4914f6cdd1du; /* fixed seed: failures replay */
  int commits = 0;
  int step;

  assert_non_null(mem);
  assert_non_null(kn);
  assert_non_null(value);
  /* A small map, so that it fills mid-group now and then. */
  memset(&o, 0, sizeof(o));
  o.map_size = DHT_STORE_LMDB_MAP_SIZE_MIN;
  f->st = open_at(f->dir, &o);
  for (step = 0; step < 4000; step++) {
    uint64_t r = xorshift64(&rng);
    dht_id id = random_id(&rng);
    char key[4];
    size_t key_len = 1 + (size_t)(r % 3);
    size_t i;

    for (i = 0; i < key_len; i++) {
      key[i] = (char)('a' + xorshift64(&rng) % 2);
    }
    if (n_known > 0 && (r >> 16) % 2 == 0) {
      const known *k = &kn[xorshift64(&rng) % n_known];
      id = k->id;
      key_len = k->key_len;
      memcpy(key, k->key, key_len);
    }
    switch ((r >> 8) % 20) {
    case 0:
    case 1:
    case 2:
    case 3:
    case 4:
    case 5:
    case 6:
    case 7: { /* put, now and then a large value (overflow pages) */
      uint64_t rv = xorshift64(&rng);
      size_t value_len = rv % 16 == 0 ? 1000 + (size_t)(rv >> 8) % 4000
                                      : (size_t)(rv >> 8) % 17;
      for (i = 0; i < value_len; i++) {
        value[i] = (uint8_t)xorshift64(&rng);
      }
      assert_int_equal(dht_store_put(f->st, &id, (const uint8_t *)key,
                                     key_len, value_len > 0 ? value : NULL,
                                     value_len),
                       0);
      assert_int_equal(dht_store_put(mem, &id, (const uint8_t *)key, key_len,
                                     value_len > 0 ? value : NULL, value_len),
                       0);
      {
        known *k = &kn[n_known < KNOWN_MAX ? n_known++
                                           : xorshift64(&rng) % KNOWN_MAX];
        k->id = id;
        memcpy(k->key, key, key_len);
        k->key_len = key_len;
      }
      break;
    }
    case 8:
    case 9:
    case 10:
    case 11: /* delete */
      assert_int_equal(
          dht_store_remove(f->st, &id, (const uint8_t *)key, key_len),
          dht_store_remove(mem, &id, (const uint8_t *)key, key_len));
      break;
    case 12:
    case 13:
    case 14:
    case 15: { /* get */
      const uint8_t *v1;
      const uint8_t *v2;
      size_t l1;
      size_t l2;
      int rc1 = dht_store_get(f->st, &id, (const uint8_t *)key, key_len, &v1,
                              &l1);
      int rc2 = dht_store_get(mem, &id, (const uint8_t *)key, key_len, &v2,
                              &l2);
      assert_int_equal(rc1, rc2);
      if (rc1 == 0) {
        assert_int_equal(l1, l2);
        if (l1 > 0) {
          assert_memory_equal(v1, v2, l1);
        }
      }
      break;
    }
    case 16:
    case 17: { /* scan, sometimes stopped early */
      dht_id to = random_id(&rng);
      compare_scan(f->st, mem, &id, &to, (size_t)(xorshift64(&rng) % 4));
      break;
    }
    default: /* commit */
      assert_int_equal(dht_store_lmdb_commit(f->st), 0);
      assert_false(dht_store_lmdb_dirty(f->st));
      commits++;
      break;
    }
    assert_int_equal(dht_store_count(f->st), dht_store_count(mem));
    if (step == 2000) {
      reopen(f, &o); /* closing commits whatever is pending */
      assert_int_equal(dht_store_count(f->st), dht_store_count(mem));
    }
  }
  assert_true(commits > 100);
  {
    dht_id zero = id_u64(0);
    compare_scan(f->st, mem, &zero, &zero, 0);
    reopen(f, &o);
    compare_scan(f->st, mem, &zero, &zero, 0);
    assert_int_equal(dht_store_count(f->st), dht_store_count(mem));
  }
  free(value);
  free(kn);
  dht_store_del(mem);
}

#define BOTH_MODES(t)                                                          \
  cmocka_unit_test_prestate_setup_teardown(t, store_setup, teardown,           \
                                           (void *)&mode_committed),           \
      cmocka_unit_test_prestate_setup_teardown(t, store_setup, teardown,       \
                                               (void *)&mode_pending)

int main(void) {
  const struct CMUnitTest tests[] = {
      BOTH_MODES(test_empty),
      BOTH_MODES(test_put_get_replace_del),
      BOTH_MODES(test_zero_length_value),
      BOTH_MODES(test_binary_keys_and_values),
      BOTH_MODES(test_equal_ids_order_by_key),
      BOTH_MODES(test_scan_table),
      BOTH_MODES(test_scan_extremes),
      BOTH_MODES(test_scan_early_stop),
      BOTH_MODES(test_many_records),
      cmocka_unit_test_setup_teardown(test_open_creates_dir, dir_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_open_errors, dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_lock_same_process, dir_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_lock_other_process, dir_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_reads_see_pending_writes,
                                      store_setup, teardown),
      cmocka_unit_test_setup_teardown(test_close_commits, store_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_count_across_commits, store_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_crash_keeps_committed_only,
                                      dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_group_bytes_max_commits_early,
                                      dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_group_writes_max_commits_early,
                                      dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_too_long, store_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_map_grows, dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_limit, dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_disk_full, dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_sync_modes, dir_setup, teardown),
      cmocka_unit_test_setup_teardown(test_on_disk_format, store_setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_random_vs_memory, dir_setup,
                                      teardown),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
