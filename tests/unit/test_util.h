/*
 * test_util.h: small helpers the unit tests share: ids from integers, a
 * deterministic generator for the randomized tests (a fixed seed, so a
 * failure reproduces), store checks, and the fake host that test_node.c and
 * test_repl.c drive one dht_node with. Include it after <cmocka.h>.
 *
 * The fake host sees a node only as its peers and clients would: frames in,
 * actions out, and the records in the store it lent the node (read with
 * dht_record_parse). It never looks at the node's internals, so the tests
 * that use it hold whatever the node's files become.
 */
#ifndef DHT_TEST_UTIL_H
#define DHT_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/id.h"
#include "dht/node.h"
#include "dht/store.h"
#include "dht/wire.h"

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

/* The id top * 2^152: top / 256 of the way round the ring. */
static inline dht_id id_top(uint8_t top) {
  dht_id id;

  memset(id.b, 0, sizeof(id.b));
  id.b[0] = top;
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

/* ---- keys, values and records ------------------------------------------------ */

static inline dht_id key_id_of(const char *key) {
  dht_id id;

  dht_id_hash(&id, key, strlen(key));
  return id;
}

static inline dht_bytes bytes_of(const char *s) {
  dht_bytes b;

  b.p = (const uint8_t *)s;
  b.len = strlen(s);
  return b;
}

static inline bool bytes_eq_str(dht_bytes b, const char *s) {
  return b.len == strlen(s) && (b.len == 0 || memcmp(b.p, s, b.len) == 0);
}

static inline dht_version version_of(uint64_t hlc, const dht_id *writer) {
  dht_version v;

  v.hlc = hlc;
  v.writer = *writer;
  return v;
}

/* A versioned record as a peer sends it in HANDOFF, REPLICATE, SYNC_R or
 * RECORD. The strings are borrowed. */
static inline dht_kv kv_of(const char *key, const char *value,
                           dht_version version, bool tombstone) {
  dht_kv kv;

  memset(&kv, 0, sizeof(kv));
  kv.key = bytes_of(key);
  kv.value = bytes_of(value);
  kv.has_version = true;
  kv.tombstone = tombstone;
  kv.version = version;
  return kv;
}

/* Writes into buf the first name prefix<i>suffix, for i from *next on, whose
 * hash lies in (a, b], and moves *next past it: a key a given node owns, or
 * an address whose id falls where a test needs a node. */
static inline void name_in(char *buf, size_t len, const char *prefix,
                           const char *suffix, const dht_id *a, const dht_id *b,
                           int *next) {
  dht_id id;

  for (;; (*next)++) {
    snprintf(buf, len, "%s%d%s", prefix, *next, suffix);
    dht_id_hash(&id, buf, strlen(buf));
    if (dht_id_in_oc(&id, a, b)) {
      (*next)++;
      return;
    }
  }
}

/* Reads st's record of key into *kv (pointing into the store until its next
 * call). False when st does not hold key. */
static inline bool store_record(dht_store *st, const char *key, dht_kv *kv) {
  dht_id id = key_id_of(key);
  const uint8_t *rec;
  size_t rec_len;

  memset(kv, 0, sizeof(*kv));
  if (dht_store_get(st, &id, (const uint8_t *)key, strlen(key), &rec,
                    &rec_len) != 0) {
    return false;
  }
  kv->key = bytes_of(key);
  dht_record_parse(rec, rec_len, kv);
  return true;
}

/* Asserts that st holds key at version v: a tombstone, or value. */
static inline void assert_record(dht_store *st, const char *key,
                                 const char *value, dht_version v,
                                 bool tombstone) {
  dht_kv kv;

  assert_true(store_record(st, key, &kv));
  assert_int_equal(kv.tombstone, tombstone);
  assert_int_equal(kv.version.hlc, v.hlc);
  assert_memory_equal(kv.version.writer.b, v.writer.b, DHT_ID_LEN);
  if (!tombstone) {
    assert_true(bytes_eq_str(kv.value, value));
  }
}

/* Asserts that item is, version and value, the record st holds of its key. */
static inline void assert_item_as_stored(dht_store *st, const dht_kv *item) {
  char key[256];
  dht_kv kv;

  assert_true(item->key.len < sizeof(key));
  memcpy(key, item->key.p, item->key.len);
  key[item->key.len] = '\0';
  assert_true(store_record(st, key, &kv));
  assert_true(item->has_version);
  assert_int_equal(item->tombstone, kv.tombstone);
  assert_int_equal(dht_version_cmp(&item->version, &kv.version), 0);
  assert_int_equal(item->value.len, kv.value.len);
  if (kv.value.len > 0) {
    assert_memory_equal(item->value.p, kv.value.p, kv.value.len);
  }
}

static inline int key_index(const char *const *keys, size_t n,
                            const uint8_t *key, size_t key_len) {
  size_t i;

  for (i = 0; i < n; i++) {
    if (strlen(keys[i]) == key_len && memcmp(keys[i], key, key_len) == 0) {
      return (int)i;
    }
  }
  return -1;
}

/* What assert_store_keys' scan has seen. */
typedef struct key_tally {
  const char *const *keys; /* the keys expected */
  size_t n;                /* how many */
  size_t seen;             /* records visited */
  bool stray;              /* a record of a key not in keys */
} key_tally;

static inline int key_tally_visit(void *ud, const dht_id *key_id,
                                  const uint8_t *key, size_t key_len,
                                  const uint8_t *rec, size_t rec_len) {
  key_tally *t = ud;

  (void)key_id;
  (void)rec;
  (void)rec_len;
  t->seen++;
  t->stray = t->stray || key_index(t->keys, t->n, key, key_len) < 0;
  return 0;
}

/* Asserts that the keys st holds are exactly keys[0..n), in any order. */
static inline void assert_store_keys(dht_store *st, const char *const *keys,
                                     size_t n) {
  key_tally t = {keys, n, 0, false};
  dht_id zero = id_u64(0);

  assert_int_equal(dht_store_scan(st, &zero, &zero, key_tally_visit, &t), 0);
  assert_false(t.stray);
  assert_int_equal(t.seen, n); /* a store holds a key once: none missing */
}

/* Asserts that m's items are exactly keys[0..n), each once, in any order. */
static inline void assert_item_keys(const dht_msg *m, const char *const *keys,
                                    size_t n) {
  size_t i, j;

  assert_int_equal(m->n_items, n);
  for (i = 0; i < m->n_items; i++) {
    assert_true(key_index(keys, n, m->items[i].key.p, m->items[i].key.len) >=
                0);
    for (j = 0; j < i; j++) {
      assert_false(m->items[j].key.len == m->items[i].key.len &&
                   memcmp(m->items[j].key.p, m->items[i].key.p,
                          m->items[i].key.len) == 0);
    }
  }
}

/* ---- a store that fails ------------------------------------------------------ */

/* A store that keeps its records in a memory store, counts the writes that
 * reach it, and refuses them on demand as a full or broken disk would,
 * with words of its own. */
typedef struct fail_store {
  dht_store base;     /* ops; first, so a dht_store * is a fail_store * */
  dht_store *inner;   /* the memory store holding the records */
  int write_error;    /* 0, or what put and del return without writing */
  const char *why;    /* errmsg once a call failed, or a commit did */
  bool failed;        /* a call failed, or fail_store_say was called */
  unsigned puts;      /* puts that reached inner */
  unsigned removes;   /* dels that reached inner */
} fail_store;

static inline int fail_store_get(dht_store *st, const dht_id *key_id,
                                 const uint8_t *key, size_t key_len,
                                 const uint8_t **value, size_t *value_len) {
  fail_store *fs = (fail_store *)st;

  return dht_store_get(fs->inner, key_id, key, key_len, value, value_len);
}

static inline int fail_store_put(dht_store *st, const dht_id *key_id,
                                 const uint8_t *key, size_t key_len,
                                 const uint8_t *value, size_t value_len) {
  fail_store *fs = (fail_store *)st;

  if (fs->write_error != 0) {
    fs->failed = true;
    return fs->write_error;
  }
  fs->puts++;
  return dht_store_put(fs->inner, key_id, key, key_len, value, value_len);
}

static inline int fail_store_del(dht_store *st, const dht_id *key_id,
                                 const uint8_t *key, size_t key_len) {
  fail_store *fs = (fail_store *)st;

  if (fs->write_error != 0) {
    fs->failed = true;
    return fs->write_error;
  }
  fs->removes++;
  return dht_store_remove(fs->inner, key_id, key, key_len);
}

static inline int fail_store_scan(dht_store *st, const dht_id *from,
                                  const dht_id *to, dht_store_scan_cb cb,
                                  void *ud) {
  return dht_store_scan(((fail_store *)st)->inner, from, to, cb, ud);
}

static inline size_t fail_store_count(dht_store *st) {
  return dht_store_count(((fail_store *)st)->inner);
}

static inline void fail_store_free(dht_store *st) {
  fail_store *fs = (fail_store *)st;

  dht_store_del(fs->inner);
  free(fs);
}

static inline const char *fail_store_errmsg(dht_store *st) {
  fail_store *fs = (fail_store *)st;

  return fs->failed ? fs->why : "";
}

/* A fail_store that takes every write until told otherwise; its errmsg
 * will say why. */
static inline fail_store *fail_store_new(const char *why) {
  static const dht_store_ops ops = {
      fail_store_get,   fail_store_put,  fail_store_del,    fail_store_scan,
      fail_store_count, fail_store_free, fail_store_errmsg,
  };
  fail_store *fs = calloc(1, sizeof(*fs));

  assert_non_null(fs);
  fs->base.ops = &ops;
  fs->inner = dht_store_mem_new();
  assert_non_null(fs->inner);
  fs->why = why;
  return fs;
}

/* The host's commit of fs failed: from now on errmsg says why, as a
 * backend's does after a failed commit. */
static inline void fail_store_say(fail_store *fs) { fs->failed = true; }

/* ---- the fake host ---------------------------------------------------------- */

/* The time every fake host starts at, in ms. */
#define HOST_START_MS 1000

typedef struct fake_host {
  dht_node *node;    /* the node under test */
  dht_store *store;  /* the store lent to node (memory, or a fail_store) */
  uint64_t now;      /* the time passed to every call, in ms */
  bool group_commit; /* the node waits for dht_node_commit_done */
  bool strict;       /* the node checks its senders as dhtd's does (ids
                        are hash(addr), links confirmed, ring positions);
                        false: it trusts them (trust_ids, trust_links), so
                        that tests of other rules can make up peers */
  /* DISCONNECT actions, which the host carries out itself (it has no
   * connections to close) rather than hand to the test */
  size_t disconnects;                         /* how many */
  char last_disconnect[DHT_ADDR_LEN_MAX + 1]; /* the peer of the last */
} fake_host;

/* One action taken from the node, its frame copied and decoded. */
typedef struct host_action {
  dht_action_type type;            /* what the node asks for */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* SEND: where to */
  uint64_t conn;                   /* REPLY, CLOSE: on which connection */
  dht_event event;                 /* EVENT */
  int error;                       /* EVENT */
  dht_buf frame;                   /* SEND, REPLY: the frame msg points into */
  dht_msg msg;                     /* SEND, REPLY: the frame decoded */
} host_action;

/* What the node under test logged at WARN or ERROR, its lines one after
 * another (the oldest dropped when full), for host_logged. */
static char host_warnings[8192];

static inline void host_log(void *ud, dht_log_level level, const char *line) {
  size_t have = strlen(host_warnings), add = strlen(line) + 1;

  (void)ud;
  if (level > DHT_LOG_WARN || add >= sizeof(host_warnings)) {
    return;
  }
  if (have + add >= sizeof(host_warnings)) {
    have = 0;
  }
  memcpy(host_warnings + have, line, add - 1);
  host_warnings[have + add - 1] = '\n';
  host_warnings[have + add] = '\0';
}

/* True when a WARN or ERROR line since the node started contains text. */
static inline bool host_logged(const char *text) {
  return strstr(host_warnings, text) != NULL;
}

/* Starts a node on h's store at h->now: at addr (id NULL: the hash of
 * addr), with settings s and its wall clock then at wall_ms. */
static inline void host_start_node(fake_host *h, const char *addr,
                                   const dht_id *id, const dht_settings *s,
                                   uint64_t wall_ms) {
  dht_node_config cfg;

  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = addr;
  cfg.id = id;
  cfg.store = h->store;
  cfg.seed = 42;
  cfg.wall_ms = wall_ms;
  cfg.settings = *s;
  if (!h->strict) {
    cfg.settings.trust_ids = true;
    cfg.settings.trust_links = true;
  }
  cfg.group_commit = h->group_commit;
  cfg.log = host_log;
  cfg.log_level = DHT_LOG_WARN;
  host_warnings[0] = '\0';
  assert_int_equal(dht_node_new(&h->node, &cfg, h->now), 0);
}

/* A node (see host_start_node) with a memory store of its own, created at
 * HOST_START_MS. */
static inline void host_init(fake_host *h, const char *addr, const dht_id *id,
                             const dht_settings *s, uint64_t wall_ms) {
  memset(h, 0, sizeof(*h));
  h->now = HOST_START_MS;
  h->store = dht_store_mem_new();
  assert_non_null(h->store);
  host_start_node(h, addr, id, s, wall_ms);
}

/* host_init for a node that checks its senders (fake_host.strict). */
static inline void host_init_strict(fake_host *h, const char *addr,
                                    const dht_id *id, const dht_settings *s,
                                    uint64_t wall_ms) {
  memset(h, 0, sizeof(*h));
  h->now = HOST_START_MS;
  h->strict = true;
  h->store = dht_store_mem_new();
  assert_non_null(h->store);
  host_start_node(h, addr, id, s, wall_ms);
}

/* host_init on store (which host_free deletes), the host committing in
 * groups when group_commit. */
static inline void host_init_with(fake_host *h, const char *addr,
                                  const dht_id *id, const dht_settings *s,
                                  uint64_t wall_ms, dht_store *store,
                                  bool group_commit) {
  memset(h, 0, sizeof(*h));
  h->now = HOST_START_MS;
  h->store = store;
  h->group_commit = group_commit;
  host_start_node(h, addr, id, s, wall_ms);
}

static inline void host_free(fake_host *h) {
  dht_node_del(h->node);
  dht_store_del(h->store);
}

/* Encodes msg and gives it to the node as if it arrived on conn. */
static inline int host_recv(fake_host *h, uint64_t conn, const dht_msg *msg) {
  dht_buf buf;
  int rv;

  dht_buf_init(&buf);
  assert_int_equal(dht_msg_encode(msg, &buf), 0);
  rv = dht_node_recv(h->node, conn, buf.data + DHT_FRAME_HEADER_LEN,
                     buf.len - DHT_FRAME_HEADER_LEN, h->now);
  dht_buf_free(&buf);
  return rv;
}

/* Takes the next action; false when there is none. Call action_free after. */
static inline bool host_poll(fake_host *h, host_action *a) {
  dht_wire_limits lim;
  dht_action da;

  memset(a, 0, sizeof(*a));
  dht_buf_init(&a->frame);
  do {
    if (!dht_node_poll_action(h->node, &da)) {
      return false;
    }
    if (da.type == DHT_ACTION_DISCONNECT) {
      assert_true(strlen(da.addr) < sizeof(h->last_disconnect));
      strcpy(h->last_disconnect, da.addr);
      h->disconnects++;
    }
  } while (da.type == DHT_ACTION_DISCONNECT);
  a->type = da.type;
  a->conn = da.conn;
  a->event = da.event;
  a->error = da.error;
  if (da.addr != NULL) {
    assert_true(strlen(da.addr) < sizeof(a->addr));
    strcpy(a->addr, da.addr);
  }
  if (da.type == DHT_ACTION_SEND || da.type == DHT_ACTION_REPLY) {
    dht_wire_limits_default(&lim);
    assert_int_equal(dht_buf_append(&a->frame, da.frame, da.frame_len), 0);
    assert_int_equal(dht_msg_decode(&a->msg,
                                    a->frame.data + DHT_FRAME_HEADER_LEN,
                                    a->frame.len - DHT_FRAME_HEADER_LEN, &lim),
                     0);
  }
  return true;
}

static inline void action_free(host_action *a) {
  dht_msg_free(&a->msg);
  dht_buf_free(&a->frame);
}

/* Asserts that the node has no action to take. */
static inline void host_expect_none(fake_host *h) {
  host_action a;
  bool any = host_poll(h, &a);

  if (any) {
    print_error("unexpected action %d, message %s to %s / conn %llu\n",
                (int)a.type, dht_msg_type_name((int)a.msg.type), a.addr,
                (unsigned long long)a.conn);
    action_free(&a);
  }
  assert_false(any);
}

/* Expects exactly one more action, of type and (for messages, unless
 * msg_type < 0) message type msg_type. */
static inline void host_expect_one(fake_host *h, host_action *a,
                                   dht_action_type type, int msg_type) {
  assert_true(host_poll(h, a));
  assert_int_equal(a->type, type);
  if (msg_type >= 0) {
    assert_int_equal(a->msg.type, msg_type);
  }
  host_expect_none(h);
}

/* Expects the next action to be a reply on conn of msg_type to rid. */
static inline void host_expect_reply(fake_host *h, host_action *a,
                                     uint64_t conn, int msg_type,
                                     uint64_t rid) {
  assert_true(host_poll(h, a));
  assert_int_equal(a->type, DHT_ACTION_REPLY);
  assert_int_equal(a->conn, conn);
  assert_int_equal(a->msg.type, msg_type);
  assert_int_equal(a->msg.rid, rid);
}

/* Expects the next action to be an ERROR reply on conn to rid with code. */
static inline void host_expect_error(fake_host *h, uint64_t conn, uint64_t rid,
                                     int code) {
  host_action a;

  host_expect_reply(h, &a, conn, DHT_MSG_ERROR, rid);
  assert_int_equal(a.msg.error_code, code);
  action_free(&a);
}

static inline void host_drain(fake_host *h) {
  host_action a;

  while (host_poll(h, &a)) {
    action_free(&a);
  }
}

/* Every action a node had at one moment, in the order taken. Actions to
 * different peers or connections may come in any order, so tests find them
 * by where they go rather than by position. */
#define HOST_ACTIONS_MAX 16
typedef struct host_actions {
  host_action a[HOST_ACTIONS_MAX]; /* the actions */
  size_t n;                        /* how many */
} host_actions;

static inline void host_take_all(fake_host *h, host_actions *all) {
  all->n = 0;
  while (all->n < HOST_ACTIONS_MAX && host_poll(h, &all->a[all->n])) {
    all->n++;
  }
  host_expect_none(h);
}

static inline void host_actions_free(host_actions *all) {
  size_t i;

  for (i = 0; i < all->n; i++) {
    action_free(&all->a[i]);
  }
  all->n = 0;
}

/* The one SEND of msg_type to addr among all; asserts there is one only. */
static inline const host_action *only_send(const host_actions *all,
                                           const char *addr, int msg_type) {
  const host_action *found = NULL;
  size_t i;

  for (i = 0; i < all->n; i++) {
    const host_action *a = &all->a[i];
    if (a->type == DHT_ACTION_SEND && strcmp(a->addr, addr) == 0 &&
        (int)a->msg.type == msg_type) {
      assert_null(found);
      found = a;
    }
  }
  assert_non_null(found);
  return found;
}

/* The one REPLY on conn to rid among all, which must be of msg_type. */
static inline const host_action *
only_reply(const host_actions *all, uint64_t conn, uint64_t rid, int msg_type) {
  const host_action *found = NULL;
  size_t i;

  for (i = 0; i < all->n; i++) {
    const host_action *a = &all->a[i];
    if (a->type == DHT_ACTION_REPLY && a->conn == conn && a->msg.rid == rid) {
      assert_null(found);
      found = a;
    }
  }
  assert_non_null(found);
  assert_int_equal(found->msg.type, msg_type);
  return found;
}

/* Lets ms pass and runs the node's timers. */
static inline void host_advance(fake_host *h, uint64_t ms) {
  h->now += ms;
  dht_node_handle_expiry(h->node, h->now);
}

static inline void msg_init(dht_msg *m, dht_msg_type type, uint64_t rid) {
  memset(m, 0, sizeof(*m));
  m->type = type;
  m->rid = rid;
}

/* The node at addr, its id the hash of addr as a node's would be. */
static inline void peer_ref(dht_peer_ref *ref, const char *addr) {
  dht_id_hash(&ref->id, addr, strlen(addr));
  ref->addr = bytes_of(addr);
}

/* Answers the request the node sent in a with a reply of type (no fields). */
static inline void host_answer(fake_host *h, uint64_t conn,
                               const host_action *a, dht_msg_type type) {
  dht_msg r;

  msg_init(&r, type, a->msg.rid);
  assert_int_equal(host_recv(h, conn, &r), 0);
}

/* Sends a data request (GET, PUT or DEL) for key on conn; value NULL for
 * GET and DEL. final: sent as to the key's owner. */
static inline void host_data_request(fake_host *h, uint64_t conn,
                                     dht_msg_type type, uint64_t rid,
                                     const char *key, const char *value,
                                     bool final) {
  dht_msg m;

  msg_init(&m, type, rid);
  m.key = bytes_of(key);
  if (value != NULL) {
    m.value = bytes_of(value);
  }
  m.final = final;
  assert_int_equal(host_recv(h, conn, &m), 0);
}

/* A client's write of key on conn as rid: a PUT of value, or a DEL when
 * value is NULL, stamped ver (NULL: sent without a version). */
static inline void host_write(fake_host *h, uint64_t conn, uint64_t rid,
                              const char *key, const char *value,
                              const dht_version *ver) {
  dht_msg m;

  msg_init(&m, value != NULL ? DHT_MSG_PUT : DHT_MSG_DEL, rid);
  m.key = bytes_of(key);
  if (value != NULL) {
    m.value = bytes_of(value);
  }
  if (ver != NULL) {
    m.has_ver = true;
    m.ver = *ver;
  }
  assert_int_equal(host_recv(h, conn, &m), 0);
}

/* Sends the node n records in a message of type (HANDOFF or REPLICATE) on
 * conn, as a peer would, and expects its OK to rid first. */
static inline void host_records_in(fake_host *h, uint64_t conn,
                                   dht_msg_type type, dht_kv *items, size_t n,
                                   uint64_t rid) {
  host_action a;
  dht_msg m;

  msg_init(&m, type, rid);
  m.items = items;
  m.n_items = n;
  assert_int_equal(host_recv(h, conn, &m), 0);
  host_expect_reply(h, &a, conn, DHT_MSG_OK, rid);
  action_free(&a);
}

/* The value of the STATS_R counter name, which must be in m. */
static inline uint64_t stats_value(const dht_msg *m, const char *name) {
  size_t i;

  for (i = 0; i < m->n_counters; i++) {
    if (bytes_eq_str(m->counters[i].name, name)) {
      return m->counters[i].value;
    }
  }
  fail_msg("no counter %s", name);
  return 0;
}

#endif /* DHT_TEST_UTIL_H */
