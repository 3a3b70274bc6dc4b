/*
 * test_wire.c: unit tests for the wire codec (dht/wire.h) and the msgpack
 * pre-scan behind it (mp_check.h).
 *
 * Round trips cover every message type with every field, empty and at its
 * limit. Rejections are built by hand with msgpack-c's own packer, so they do
 * not depend on the encoder under test; the per-type schema below is written
 * out again from docs/PROTOCOL.md (and, for the replication types, from the
 * type map in wire.h) on purpose, for the same reason. Every
 * decode of hostile input runs on an exact-size heap copy, so that ASan
 * catches a read one byte past the end. The mutation test is deterministic
 * (fixed-seed xorshift) and is meant to run under ASan and UBSan.
 */
/* cmocka.h needs these four first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "dht/err.h"
#include "dht/wire.h"

#include "test_util.h"
#include "mp_check.h"
#include "wire_paths.h"

#define MIB (1024u * 1024u)
#define KEY_MAX 1024u          /* dht_wire_limits_default's key_len_max */
#define VALUE_MAX MIB          /* ... value_len_max */
#define ERROR_MSG_MAX 256u     /* ... error_msg_len_max */
#define COUNTER_NAME_MAX 64u   /* wire.h: counter names are 1..64 bytes */
#define ITEMS_N 300            /* items in the largest HANDOFF sample */
#define MUTATION_ROUNDS 20000u /* iterations of the mutation test */

/* ---- fixtures ------------------------------------------------------------ */

static char g_addr[DHT_PATH_MAX + 1][32];          /* "10.0.0.N:4000" */
static char g_addr_max[DHT_ADDR_LEN_MAX + 1];      /* 256 'a's: one too many */
static dht_peer_ref g_peers[DHT_PATH_MAX + 1];     /* short addresses */
static dht_peer_ref g_peers_max[DHT_PATH_MAX + 1]; /* 255-byte addresses */
static dht_finger_ref g_fingers[DHT_ID_BITS + 1];
static char g_item_key[ITEMS_N][16];
static dht_kv g_items[ITEMS_N];      /* [key, value]: no version */
static dht_kv g_vitems[ITEMS_N];     /* versioned, every third a tombstone */
static dht_kv g_scan_items[ITEMS_N]; /* g_vitems without values: SCAN_R */
static dht_kv g_record_max;          /* key and value at their limits */
static uint16_t g_buckets[DHT_SYNC_BUCKETS_MAX]; /* 0..255 */
static char g_counter_name[DHT_COUNTERS_MAX + 1][COUNTER_NAME_MAX + 2];
static dht_counter g_counters[DHT_COUNTERS_MAX + 1];
static uint8_t g_big[VALUE_MAX + 1]; /* one byte more than any limit */
/* Lost ranges of STATS_R: the first two (V_MID) with no holder and with
 * three, then up to DHT_LOST_MAX + 1 with DHT_SUCC_LIST_MAX holders of
 * 255-byte addresses each (V_MAX, and one too many). */
static dht_lost_range g_lost[DHT_LOST_MAX + 1];
/* Anti-entropy exchanges and dead peers of STATS_R, one more than the cap
 * each, with 255-byte addresses and every outcome. */
static dht_exchange g_exchanges[DHT_EXCHANGES_MAX + 1];
static dht_dead_peer g_dead[DHT_DEAD_MAX + 1];

static dht_id id_n(unsigned n) {
  dht_id id;
  unsigned i;

  for (i = 0; i < DHT_ID_LEN; i++) {
    id.b[i] = (uint8_t)(n * 31u + i * 7u + 1u);
  }
  return id;
}

static dht_bytes bs(const void *p, size_t len) {
  dht_bytes b;

  b.p = p;
  b.len = len;
  return b;
}

static dht_bytes cs(const char *s) { return bs(s, strlen(s)); }

static int setup_fixtures(void **state) {
  unsigned i;

  (void)state;
  memset(g_addr_max, 'a', DHT_ADDR_LEN_MAX + 1);
  for (i = 0; i <= DHT_PATH_MAX; i++) {
    snprintf(g_addr[i], sizeof(g_addr[i]), "10.0.%u.%u:4000", i / 7, i);
    g_peers[i].id = id_n(i);
    g_peers[i].addr = cs(g_addr[i]);
    g_peers_max[i].id = id_n(i + 100);
    g_peers_max[i].addr = bs(g_addr_max, DHT_ADDR_LEN_MAX);
  }
  for (i = 0; i <= DHT_ID_BITS; i++) {
    g_fingers[i].start_bit = i % DHT_ID_BITS;
    g_fingers[i].peer = g_peers[i % DHT_PATH_MAX];
  }
  for (i = 0; i < ITEMS_N; i++) {
    snprintf(g_item_key[i], sizeof(g_item_key[i]), "key-%u", i);
    g_items[i].key = cs(g_item_key[i]);
    g_items[i].value = bs(g_big, i % 37); /* includes empty values */
    /* The first three (the V_MID sample) hold hlc 0, the largest hlc and a
     * tombstone; tombstones carry no value, as a node sends them. */
    g_vitems[i].key = g_items[i].key;
    g_vitems[i].has_version = true;
    g_vitems[i].tombstone = i % 3 == 1;
    g_vitems[i].value =
        g_vitems[i].tombstone ? bs(NULL, 0) : bs(g_big + i, 1 + i % 29);
    g_vitems[i].version.hlc = i == 0   ? 0
                              : i == 1 ? UINT64_MAX
                                       : (1700000000000ull + i) << 16 | i;
    g_vitems[i].version.writer = id_n(200 + i);
    g_scan_items[i] = g_vitems[i];
    g_scan_items[i].value = bs(NULL, 0);
  }
  g_record_max.key = bs(g_big, KEY_MAX);
  g_record_max.value = bs(g_big, VALUE_MAX);
  g_record_max.has_version = true;
  g_record_max.version.hlc = UINT64_MAX;
  g_record_max.version.writer = id_max();
  for (i = 0; i < DHT_SYNC_BUCKETS_MAX; i++) {
    g_buckets[i] = (uint16_t)i;
  }
  /* Unique names of every length 1..64: the decimal index, then '_' up to
   * the length (the digits end where the '_' start, so no two are equal). */
  for (i = 0; i <= DHT_COUNTERS_MAX; i++) {
    size_t len = 1 + i % COUNTER_NAME_MAX, n;

    n = (size_t)snprintf(g_counter_name[i], sizeof(g_counter_name[i]), "%u", i);
    while (n < len) {
      g_counter_name[i][n++] = '_';
    }
    g_counter_name[i][n] = '\0';
    g_counters[i].name = cs(g_counter_name[i]);
    g_counters[i].value = (uint64_t)i * 0x0101010101ull;
  }
  g_counters[3].value = UINT64_MAX;
  for (i = 0; i <= VALUE_MAX; i++) {
    g_big[i] = (uint8_t)(i * 13u + 5u);
  }
  for (i = 0; i <= DHT_LOST_MAX; i++) {
    g_lost[i].from = id_n(300 + i);
    g_lost[i].to = i == 1 ? id_max() : id_n(330 + i);
    g_lost[i].at_ms = i == 0   ? 0
                      : i == 1 ? UINT64_MAX
                               : 1700000000000ull + i;
    g_lost[i].holders = i == 1 ? g_peers + 7 : g_peers_max + (i % 3);
    g_lost[i].n_holders = i == 0 ? 0 : i == 1 ? 3 : DHT_SUCC_LIST_MAX;
  }
  for (i = 0; i <= DHT_EXCHANGES_MAX; i++) {
    g_exchanges[i].peer = g_peers_max[i];
    g_exchanges[i].from = id_n(400 + i);
    g_exchanges[i].to = i == 1 ? id_max() : id_n(430 + i);
    g_exchanges[i].ago_ms = i == 1 ? UINT64_MAX : 1000u * i;
    g_exchanges[i].took_ms = i;
    g_exchanges[i].buckets = i == 2 ? DHT_SYNC_BUCKETS_MAX : i;
    g_exchanges[i].pushed = i == 1 ? UINT64_MAX : 7u * i;
    g_exchanges[i].outcome = i % (DHT_EXCHANGE_OUTCOME_LAST + 1);
  }
  for (i = 0; i <= DHT_DEAD_MAX; i++) {
    g_dead[i].peer = g_peers_max[i];
    g_dead[i].ago_ms = i == 1 ? UINT64_MAX : 500u * i;
  }
  return 0;
}

static dht_wire_limits lim_default(void) {
  dht_wire_limits lim;

  dht_wire_limits_default(&lim);
  return lim;
}

enum variant { V_MIN, V_MID, V_MAX };

/* The version of a PUT, DEL or STALE ERROR sample: none for V_MIN, a
 * client's stamp for V_MID, every bit set for V_MAX. */
static void sample_ver(dht_msg *m, enum variant v) {
  m->has_ver = v != V_MIN;
  if (v == V_MID) {
    m->ver.hlc = 1700000000000ull << 16 | 7;
    m->ver.writer = id_n(61);
  } else if (v == V_MAX) {
    m->ver.hlc = UINT64_MAX;
    m->ver.writer = id_max();
  }
}

/* A message of type t with every field it uses: V_MIN with empty arrays and
 * zero/false/empty values, V_MID with a few of everything, V_MAX with every
 * length and count at its limit. */
static void sample_msg(dht_msg *m, int t, enum variant v) {
  const dht_peer_ref *peers = v == V_MAX ? g_peers_max : g_peers;

  memset(m, 0, sizeof(*m));
  m->type = (dht_msg_type)t;
  m->rid =
      v == V_MAX ? UINT64_MAX - (uint64_t)t : 1000u * (uint64_t)v + (uint64_t)t;
  switch (t) {
  case DHT_MSG_ERROR:
    m->error_code = v == V_MIN ? DHT_ERR_NOMEM : DHT_ERR_MIN;
    m->error_msg = v == V_MIN   ? bs(NULL, 0)
                   : v == V_MID ? cs("key not found")
                                : bs(g_big, ERROR_MSG_MAX);
    sample_ver(m, v); /* as a STALE refusal carries the stored version */
    break;
  case DHT_MSG_PONG:
  case DHT_MSG_NOTIFY:
    m->has_peer = true;
    m->peer = peers[1];
    break;
  case DHT_MSG_FIND_SUCC:
  case DHT_MSG_FIND_SUCC_R:
    if (t == DHT_MSG_FIND_SUCC) {
      m->target = id_n(77 + (unsigned)v);
      m->trace = v != V_MIN;
    } else {
      m->has_peer = true;
      m->peer = peers[2];
    }
    m->hops = v == V_MIN ? 0 : v == V_MID ? 3 : DHT_HOPS_MAX;
    m->path = (dht_peer_ref *)peers;
    m->n_path = v == V_MIN ? 0 : v == V_MID ? 3 : DHT_PATH_MAX;
    break;
  case DHT_MSG_NEIGHBORS:
  case DHT_MSG_LEAVE:
  case DHT_MSG_STATS_R:
    m->has_peer = true;
    m->peer = peers[0];
    m->has_pred = v != V_MIN;
    if (m->has_pred) {
      m->pred = peers[5];
    }
    m->succs = (dht_peer_ref *)peers + 1;
    m->n_succs = v == V_MIN ? 0 : v == V_MID ? 2 : DHT_SUCC_LIST_MAX;
    if (t != DHT_MSG_LEAVE) {
      m->preds = (dht_peer_ref *)peers + 20;
      m->n_preds = v == V_MIN ? 0 : v == V_MID ? 2 : DHT_SUCC_LIST_MAX;
    }
    if (t == DHT_MSG_STATS_R) {
      m->fingers = g_fingers;
      m->n_fingers = v == V_MIN ? 0 : v == V_MID ? 4 : DHT_ID_BITS;
      m->counters = g_counters;
      m->n_counters = v == V_MIN ? 0 : v == V_MID ? 5 : DHT_COUNTERS_MAX;
      m->lost = g_lost;
      m->n_lost = v == V_MIN ? 0 : v == V_MID ? 2 : DHT_LOST_MAX;
      m->exchanges = g_exchanges;
      m->n_exchanges = v == V_MIN ? 0 : v == V_MID ? 3 : DHT_EXCHANGES_MAX;
      m->dead = g_dead;
      m->n_dead = v == V_MIN ? 0 : v == V_MID ? 2 : DHT_DEAD_MAX;
    }
    if (t == DHT_MSG_NEIGHBORS) { /* 0 is "not sent" */
      m->wall_ms = v == V_MIN ? 0 : v == V_MID ? 1700000000123ull : UINT64_MAX;
      m->view = v == V_MIN ? 0 : v == V_MID ? 0x5eedf00d : UINT64_MAX;
    }
    break;
  case DHT_MSG_GET:
  case DHT_MSG_PUT:
  case DHT_MSG_DEL:
  case DHT_MSG_FETCH:
    m->key = v == V_MIN   ? cs("k")
             : v == V_MID ? cs("user:42")
                          : bs(g_big, KEY_MAX);
    if (t == DHT_MSG_FETCH) {
      break; /* FETCH carries the key only: no hops, no final */
    }
    m->hops = v == V_MIN ? 0 : v == V_MID ? 2 : DHT_HOPS_MAX;
    m->final = v != V_MIN;
    m->direct = v == V_MAX; /* false is "not sent" */
    if (t != DHT_MSG_GET) {
      sample_ver(m, v);
    }
    if (t == DHT_MSG_PUT) {
      m->value = v == V_MIN   ? bs(NULL, 0)
                 : v == V_MID ? cs("hello")
                              : bs(g_big, VALUE_MAX);
    }
    break;
  case DHT_MSG_VALUE:
    m->value = v == V_MIN   ? bs(NULL, 0)
               : v == V_MID ? cs("hello")
                            : bs(g_big, VALUE_MAX);
    m->hops = v == V_MIN ? 0 : 5;
    break;
  case DHT_MSG_OK:
    m->hops = v == V_MIN ? 0 : 7;
    break;
  case DHT_MSG_HANDOFF:
    m->items = g_items;
    m->n_items = v == V_MIN ? 0 : v == V_MID ? 3 : ITEMS_N;
    break;
  case DHT_MSG_REPLICATE:
    m->items = g_vitems;
    m->n_items = v == V_MIN ? 0 : v == V_MID ? 3 : ITEMS_N;
    break;
  case DHT_MSG_SYNC:
    if (v != V_MIN) {
      m->from = id_n(40 + (unsigned)v);
      m->to = v == V_MID ? id_n(45) : id_max();
    }
    m->digests = g_big + v;
    m->n_digests = v == V_MIN ? 1 : v == V_MID ? 4 : DHT_SYNC_BUCKETS_MAX;
    m->probe = v == V_MID;
    break;
  case DHT_MSG_SYNC_R:
    m->buckets = v == V_MID ? g_buckets + DHT_SYNC_BUCKETS_MAX - 3 : g_buckets;
    m->n_buckets = v == V_MIN ? 0 : v == V_MID ? 3 : DHT_SYNC_BUCKETS_MAX;
    m->items = g_vitems;
    m->n_items = v == V_MIN ? 0 : v == V_MID ? 3 : ITEMS_N;
    m->more = v != V_MIN;
    break;
  case DHT_MSG_RECORD: /* none, a tombstone, the largest record */
    m->items = v == V_MAX ? &g_record_max : g_vitems + 1;
    m->n_items = v == V_MIN ? 0 : 1;
    break;
  case DHT_MSG_ACK_LOST:
    if (v != V_MIN) {
      m->from = id_n(47);
      m->to = v == V_MID ? id_n(48) : id_max();
    }
    break;
  case DHT_MSG_SCAN:
    if (v != V_MIN) {
      m->from = v == V_MID ? id_n(46) : id_max();
    }
    m->limit = v == V_MIN ? 0 : v == V_MID ? 100 : UINT32_MAX;
    break;
  case DHT_MSG_SCAN_R:
    m->items = g_scan_items;
    m->n_items = v == V_MIN ? 0 : v == V_MID ? 3 : ITEMS_N;
    m->more = v != V_MIN;
    break;
  case DHT_MSG_CHECK_LINK:
    m->has_peer = true;
    m->peer = peers[3];
    break;
  case DHT_MSG_MOVED:
    m->has_peer = true;
    m->peer = peers[2];
    m->final = v != V_MIN;
    break;
  case DHT_MSG_GET_NEIGHBORS: /* 0 is "not sent" */
    m->seen = v == V_MIN ? 0 : v == V_MID ? 0x5eedf00d : UINT64_MAX;
    break;
  default: /* PING, STATS, ACCEPTED: header only */
    break;
  }
  /* The sender's link token and its own peer, where the type has them
   * (0 and absent are "not sent"; CHECK_LINK always sends its token). */
  switch (t) {
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
  case DHT_MSG_SYNC:
  case DHT_MSG_FETCH:
    m->has_src = v != V_MIN;
    if (m->has_src) {
      m->src = peers[4];
    }
    /* fall through */
  case DHT_MSG_NOTIFY:
  case DHT_MSG_LEAVE:
  case DHT_MSG_CHECK_LINK:
    m->link = v == V_MIN ? (t == DHT_MSG_CHECK_LINK ? 1 : 0)
              : v == V_MID ? 0x0123456789abcdefull
                           : UINT64_MAX;
    break;
  default:
    break;
  }
}

/* ---- comparing messages ----------------------------------------------------
 */

static void assert_bytes_eq(dht_bytes a, dht_bytes b) {
  assert_int_equal(a.len, b.len);
  if (a.len > 0) {
    assert_memory_equal(a.p, b.p, a.len);
  }
}

static void assert_peer_eq(const dht_peer_ref *a, const dht_peer_ref *b) {
  assert_memory_equal(a->id.b, b->id.b, DHT_ID_LEN);
  assert_bytes_eq(a->addr, b->addr);
}

static void assert_msg_eq(const dht_msg *a, const dht_msg *b) {
  size_t i;

  assert_int_equal(a->type, b->type);
  assert_true(a->rid == b->rid);
  assert_memory_equal(a->target.b, b->target.b, DHT_ID_LEN);
  assert_memory_equal(a->from.b, b->from.b, DHT_ID_LEN);
  assert_memory_equal(a->to.b, b->to.b, DHT_ID_LEN);
  assert_int_equal(a->limit, b->limit);
  assert_int_equal(a->more, b->more);
  assert_int_equal(a->hops, b->hops);
  assert_int_equal(a->trace, b->trace);
  assert_int_equal(a->final, b->final);
  assert_int_equal(a->direct, b->direct);
  assert_bytes_eq(a->key, b->key);
  assert_bytes_eq(a->value, b->value);
  assert_int_equal(a->has_peer, b->has_peer);
  if (a->has_peer) {
    assert_peer_eq(&a->peer, &b->peer);
  }
  assert_int_equal(a->has_pred, b->has_pred);
  if (a->has_pred) {
    assert_peer_eq(&a->pred, &b->pred);
  }
  assert_int_equal(a->n_succs, b->n_succs);
  for (i = 0; i < a->n_succs; i++) {
    assert_peer_eq(&a->succs[i], &b->succs[i]);
  }
  assert_int_equal(a->n_preds, b->n_preds);
  for (i = 0; i < a->n_preds; i++) {
    assert_peer_eq(&a->preds[i], &b->preds[i]);
  }
  assert_int_equal(a->n_path, b->n_path);
  for (i = 0; i < a->n_path; i++) {
    assert_peer_eq(&a->path[i], &b->path[i]);
  }
  assert_int_equal(a->n_fingers, b->n_fingers);
  for (i = 0; i < a->n_fingers; i++) {
    assert_int_equal(a->fingers[i].start_bit, b->fingers[i].start_bit);
    assert_peer_eq(&a->fingers[i].peer, &b->fingers[i].peer);
  }
  assert_int_equal(a->n_items, b->n_items);
  for (i = 0; i < a->n_items; i++) {
    assert_bytes_eq(a->items[i].key, b->items[i].key);
    assert_bytes_eq(a->items[i].value, b->items[i].value);
    assert_int_equal(a->items[i].has_version, b->items[i].has_version);
    if (a->items[i].has_version) { /* else neither travels */
      assert_true(a->items[i].version.hlc == b->items[i].version.hlc);
      assert_memory_equal(a->items[i].version.writer.b,
                          b->items[i].version.writer.b, DHT_ID_LEN);
      assert_int_equal(a->items[i].tombstone, b->items[i].tombstone);
    }
  }
  assert_int_equal(a->n_digests, b->n_digests);
  if (a->n_digests > 0) {
    assert_memory_equal(a->digests, b->digests, a->n_digests * DHT_DIGEST_LEN);
  }
  assert_int_equal(a->n_buckets, b->n_buckets);
  for (i = 0; i < a->n_buckets; i++) {
    assert_int_equal(a->buckets[i], b->buckets[i]);
  }
  assert_int_equal(a->n_counters, b->n_counters);
  for (i = 0; i < a->n_counters; i++) {
    assert_bytes_eq(a->counters[i].name, b->counters[i].name);
    assert_true(a->counters[i].value == b->counters[i].value);
  }
  assert_int_equal(a->error_code, b->error_code);
  assert_bytes_eq(a->error_msg, b->error_msg);
  assert_int_equal(a->has_ver, b->has_ver);
  if (a->has_ver) { /* else ver does not travel */
    assert_true(a->ver.hlc == b->ver.hlc);
    assert_memory_equal(a->ver.writer.b, b->ver.writer.b, DHT_ID_LEN);
  }
  assert_true(a->wall_ms == b->wall_ms);
  assert_true(a->seen == b->seen);
  assert_true(a->view == b->view);
  assert_int_equal(a->same, b->same);
  assert_int_equal(a->probe, b->probe);
  assert_true(a->link == b->link);
  assert_int_equal(a->has_src, b->has_src);
  if (a->has_src) {
    assert_peer_eq(&a->src, &b->src);
  }
  assert_int_equal(a->n_lost, b->n_lost);
  for (i = 0; i < a->n_lost; i++) {
    size_t k;

    assert_memory_equal(a->lost[i].from.b, b->lost[i].from.b, DHT_ID_LEN);
    assert_memory_equal(a->lost[i].to.b, b->lost[i].to.b, DHT_ID_LEN);
    assert_true(a->lost[i].at_ms == b->lost[i].at_ms);
    assert_int_equal(a->lost[i].n_holders, b->lost[i].n_holders);
    for (k = 0; k < a->lost[i].n_holders; k++) {
      assert_peer_eq(&a->lost[i].holders[k], &b->lost[i].holders[k]);
    }
  }
  assert_int_equal(a->n_exchanges, b->n_exchanges);
  for (i = 0; i < a->n_exchanges; i++) {
    const dht_exchange *x = &a->exchanges[i], *y = &b->exchanges[i];

    assert_peer_eq(&x->peer, &y->peer);
    assert_memory_equal(x->from.b, y->from.b, DHT_ID_LEN);
    assert_memory_equal(x->to.b, y->to.b, DHT_ID_LEN);
    assert_true(x->ago_ms == y->ago_ms && x->took_ms == y->took_ms);
    assert_true(x->buckets == y->buckets && x->pushed == y->pushed);
    assert_true(x->outcome == y->outcome);
  }
  assert_int_equal(a->n_dead, b->n_dead);
  for (i = 0; i < a->n_dead; i++) {
    assert_peer_eq(&a->dead[i].peer, &b->dead[i].peer);
    assert_true(a->dead[i].ago_ms == b->dead[i].ago_ms);
  }
}

/* Decoded byte strings must borrow the body, not copy it. */
static void assert_in(dht_bytes b, const uint8_t *body, size_t len) {
  if (b.len > 0) {
    assert_true(b.p >= body && b.p + b.len <= body + len);
  }
}

static void assert_borrowed(const dht_msg *m, const uint8_t *body, size_t len) {
  size_t i;

  assert_in(m->key, body, len);
  assert_in(m->value, body, len);
  assert_in(m->peer.addr, body, len);
  assert_in(m->error_msg, body, len);
  for (i = 0; i < m->n_items; i++) {
    assert_in(m->items[i].key, body, len);
    assert_in(m->items[i].value, body, len);
  }
  for (i = 0; i < m->n_succs; i++) {
    assert_in(m->succs[i].addr, body, len);
  }
  for (i = 0; i < m->n_preds; i++) {
    assert_in(m->preds[i].addr, body, len);
  }
  for (i = 0; i < m->n_lost; i++) {
    size_t k;

    for (k = 0; k < m->lost[i].n_holders; k++) {
      assert_in(m->lost[i].holders[k].addr, body, len);
    }
  }
  for (i = 0; i < m->n_exchanges; i++) {
    assert_in(m->exchanges[i].peer.addr, body, len);
  }
  for (i = 0; i < m->n_dead; i++) {
    assert_in(m->dead[i].peer.addr, body, len);
  }
}

/* Encodes in, checks the header, decodes and compares. */
/* The types whose every field the fast codec paths handle (wire.c). */
static bool fast_type(int t) {
  return t == DHT_MSG_GET || t == DHT_MSG_PUT || t == DHT_MSG_DEL ||
         t == DHT_MSG_VALUE || t == DHT_MSG_OK || t == DHT_MSG_PING ||
         t == DHT_MSG_STATS || t == DHT_MSG_ACCEPTED;
}

/* Encodes in, decodes it back and expects the same message; both codec
 * paths agree: the fast encoder writes the packer's bytes, and the fast
 * decoder, which takes every fast type's encoding, reads what the full
 * decoder reads. */
static void roundtrip(const dht_msg *in) {
  dht_wire_limits lim = lim_default();
  dht_buf buf, packed;
  dht_msg out, full;
  size_t body_len = 0;
  const uint8_t *body;

  dht_buf_init(&buf);
  dht_buf_init(&packed);
  assert_int_equal(dht_msg_encode(in, &buf), 0);
  assert_int_equal(dht__msg_encode_packed(in, &packed), 0);
  assert_int_equal(buf.len, packed.len);
  assert_memory_equal(buf.data, packed.data, buf.len);
  assert_int_equal(
      dht_frame_peek(buf.data, buf.len, lim.frame_len_max, &body_len), 0);
  assert_int_equal(body_len + DHT_FRAME_HEADER_LEN, buf.len);
  body = buf.data + DHT_FRAME_HEADER_LEN;
  assert_int_equal(dht_msg_decode(&out, body, body_len, &lim), 0);
  assert_true(dht_msg_can_reply(&out));
  assert_int_equal(out.version, DHT_PROTOCOL_VERSION);
  assert_msg_eq(in, &out);
  assert_borrowed(&out, body, body_len);
  dht_msg_free(&out);
  assert_int_equal(dht__msg_decode_fast(&out, body, body_len, &lim),
                   fast_type((int)in->type));
  assert_int_equal(dht__msg_decode_full(&full, body, body_len, &lim), 0);
  if (fast_type((int)in->type)) {
    assert_msg_eq(&full, &out);
    assert_int_equal(out.replyable_, full.replyable_);
    assert_int_equal(out.version, full.version);
  }
  dht_msg_free(&out);
  dht_msg_free(&full);
  dht_buf_free(&packed);
  dht_buf_free(&buf);
}

/* ---- decoding hostile input ------------------------------------------------
 */

/* What a decode reported, kept after the message and its body are gone. */
typedef struct outcome {
  int rv;
  bool can_reply;
  uint64_t rid;
  int type;
  uint32_t version;
} outcome;

/* Decodes an exact-size heap copy of body, so ASan sees any overread. */
static outcome decode_lim(const void *body, size_t len,
                          const dht_wire_limits *lim) {
  uint8_t *copy = malloc(len ? len : 1);
  dht_msg msg;
  outcome o;

  assert_non_null(copy);
  if (len > 0) {
    memcpy(copy, body, len);
  }
  o.rv = dht_msg_decode(&msg, copy, len, lim);
  o.can_reply = dht_msg_can_reply(&msg);
  o.rid = msg.rid;
  o.type = (int)msg.type;
  o.version = msg.version;
  if (o.rv != 0) {
    /* On error only version, type, rid and can_reply may be set. */
    assert_null(msg.zone_);
    assert_int_equal(msg.n_succs + msg.n_preds + msg.n_path + msg.n_fingers +
                         msg.n_items + msg.n_counters + msg.n_digests +
                         msg.n_buckets + msg.n_lost + msg.n_exchanges +
                         msg.n_dead + msg.key.len +
                         msg.value.len,
                     0);
    assert_false(msg.has_ver);
    assert_true(msg.wall_ms == 0);
  }
  dht_msg_free(&msg);
  free(copy);
  return o;
}

static outcome decode_raw(const void *body, size_t len) {
  dht_wire_limits lim = lim_default();

  return decode_lim(body, len, &lim);
}

/* A msgpack writer for hand-made bodies. */
typedef struct mp {
  msgpack_sbuffer sb;
  msgpack_packer pk;
} mp;

static void mp_init(mp *m) {
  msgpack_sbuffer_init(&m->sb);
  msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_free(mp *m) { msgpack_sbuffer_destroy(&m->sb); }
static void mp_s(mp *m, const char *s) {
  msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}
static void mp_sn(mp *m, const void *p, size_t n) {
  msgpack_pack_str_with_body(&m->pk, p, n);
}
static void mp_u(mp *m, uint64_t v) { msgpack_pack_uint64(&m->pk, v); }
static void mp_i(mp *m, int64_t v) { msgpack_pack_int64(&m->pk, v); }
static void mp_bin(mp *m, const void *p, size_t n) {
  msgpack_pack_bin_with_body(&m->pk, p, n);
}
static void mp_nil(mp *m) { msgpack_pack_nil(&m->pk); }
static void mp_arr(mp *m, size_t n) { msgpack_pack_array(&m->pk, n); }
static void mp_map(mp *m, size_t n) { msgpack_pack_map(&m->pk, n); }
static void mp_raw(mp *m, const void *p, size_t n) {
  msgpack_sbuffer_write(&m->sb, p, n);
}

static void mp_id(mp *m, unsigned n) {
  dht_id id = id_n(n);

  mp_bin(m, id.b, DHT_ID_LEN);
}

static void mp_peer(mp *m, unsigned n) {
  mp_arr(m, 2);
  mp_id(m, n);
  mp_s(m, g_addr[n % DHT_PATH_MAX]);
}

/* A versioned item: [key, value, hlc, writer id_n(writer_n), tombstone]. */
static void mp_vitem(mp *m, const char *key, const char *value, uint64_t hlc,
                     unsigned writer_n, bool tombstone) {
  mp_arr(m, 5);
  mp_bin(m, key, strlen(key));
  mp_bin(m, value, strlen(value));
  mp_u(m, hlc);
  mp_id(m, writer_n);
  if (tombstone) {
    msgpack_pack_true(&m->pk);
  } else {
    msgpack_pack_false(&m->pk);
  }
}

/* The three header entries: "v", "t", "rid". */
static void mp_hdr(mp *m, uint64_t v, uint64_t t, uint64_t rid) {
  mp_s(m, "v");
  mp_u(m, v);
  mp_s(m, "t");
  mp_u(m, t);
  mp_s(m, "rid");
  mp_u(m, rid);
}

static outcome decode_mp(const mp *m) {
  return decode_raw(m->sb.data, m->sb.size);
}

static outcome decode_mp_lim(const mp *m, const dht_wire_limits *lim) {
  return decode_lim(m->sb.data, m->sb.size, lim);
}

/* ---- the schema, written out again from docs/PROTOCOL.md ---------------- */

enum kind {
  K_ID,
  K_HOPS,
  K_BOOL,
  K_KEY,
  K_VALUE,
  K_PEER,
  K_PRED,
  K_PEERS,
  K_FINGERS,
  K_ITEMS,
  K_COUNTERS,
  K_CODE,
  K_STR,
  K_LIMIT,
  K_DIGESTS,
  K_BUCKETS,
  K_VER,
  K_WALL,
  K_LOST
};

static const struct field_spec {
  const char *name;
  enum kind kind;
} field_specs[] = {
    {"target", K_ID},         {"hops", K_HOPS},       {"trace", K_BOOL},
    {"final", K_BOOL},        {"key", K_KEY},         {"value", K_VALUE},
    {"peer", K_PEER},         {"pred", K_PRED},       {"succs", K_PEERS},
    {"path", K_PEERS},        {"fingers", K_FINGERS}, {"items", K_ITEMS},
    {"counters", K_COUNTERS}, {"code", K_CODE},       {"msg", K_STR},
    {"from", K_ID},           {"to", K_ID},           {"limit", K_LIMIT},
    {"more", K_BOOL},         {"preds", K_PEERS},     {"digests", K_DIGESTS},
    {"buckets", K_BUCKETS},   {"ver", K_VER},         {"wall", K_WALL},
    {"lost", K_LOST},         {"link", K_WALL},       {"src", K_PEER},
    {"direct", K_BOOL},
};

static enum kind kind_of(const char *name) {
  size_t i;

  for (i = 0; i < sizeof(field_specs) / sizeof(field_specs[0]); i++) {
    if (strcmp(field_specs[i].name, name) == 0) {
      return field_specs[i].kind;
    }
  }
  fail_msg("no such field %s", name);
  return K_ID;
}

typedef struct type_spec {
  int type;
  const char *req[5]; /* required fields, NULL-terminated */
  const char *opt[5]; /* optional fields, NULL-terminated */
} type_spec;

static const type_spec type_specs[] = {
    {DHT_MSG_ERROR, {"code", NULL}, {"msg", "ver", NULL}},
    {DHT_MSG_PING, {NULL}, {NULL}},
    {DHT_MSG_PONG, {"peer", NULL}, {NULL}},
    {DHT_MSG_FIND_SUCC, {"target", NULL}, {"hops", "trace", "path", NULL}},
    {DHT_MSG_FIND_SUCC_R, {"peer", NULL}, {"hops", "path", NULL}},
    {DHT_MSG_GET_NEIGHBORS, {NULL}, {NULL}},
    {DHT_MSG_NEIGHBORS,
     {"peer", "succs", NULL},
     {"pred", "preds", "wall", NULL}},
    {DHT_MSG_NOTIFY, {"peer", NULL}, {"link", NULL}},
    {DHT_MSG_GET, {"key", NULL}, {"hops", "final", "direct", NULL}},
    {DHT_MSG_PUT,
     {"key", "value", NULL},
     {"hops", "final", "ver", "direct", NULL}},
    {DHT_MSG_DEL, {"key", NULL}, {"hops", "final", "ver", "direct", NULL}},
    {DHT_MSG_VALUE, {"value", NULL}, {"hops", NULL}},
    {DHT_MSG_OK, {NULL}, {"hops", NULL}},
    {DHT_MSG_HANDOFF, {"items", NULL}, {"link", "src", NULL}},
    {DHT_MSG_LEAVE, {"peer", "succs", NULL}, {"pred", "link", NULL}},
    {DHT_MSG_STATS, {NULL}, {NULL}},
    {DHT_MSG_STATS_R,
     {"peer", "succs", "fingers", "counters", NULL},
     {"pred", "preds", "lost", NULL}}, /* exchanges, dead: their own test */
    {DHT_MSG_ACCEPTED, {NULL}, {NULL}},
    {DHT_MSG_REPLICATE, {"items", NULL}, {"link", "src", NULL}},
    {DHT_MSG_SYNC, {"from", "to", "digests", NULL}, {"link", "src", NULL}},
    {DHT_MSG_SYNC_R, {"buckets", "items", NULL}, {"more", NULL}},
    {DHT_MSG_FETCH, {"key", NULL}, {"link", "src", NULL}},
    {DHT_MSG_RECORD, {"items", NULL}, {NULL}},
    {DHT_MSG_SCAN, {"from", "limit", NULL}, {NULL}},
    {DHT_MSG_SCAN_R, {"items", NULL}, {"more", NULL}},
    {DHT_MSG_ACK_LOST, {"from", "to", NULL}, {NULL}},
    {DHT_MSG_CHECK_LINK, {"peer", "link", NULL}, {NULL}},
    {DHT_MSG_MOVED, {"peer", NULL}, {"final", NULL}},
};
#define N_TYPE_SPECS (sizeof(type_specs) / sizeof(type_specs[0]))

/* Packs a valid value of the given kind. */
static void pack_good(mp *m, enum kind k) {
  switch (k) {
  case K_ID:
    mp_id(m, 9);
    break;
  case K_HOPS:
    mp_u(m, 3);
    break;
  case K_LIMIT: /* over DHT_HOPS_MAX: limit has no cap of its own */
    mp_u(m, 1000);
    break;
  case K_BOOL:
    msgpack_pack_true(&m->pk);
    break;
  case K_KEY:
    mp_bin(m, "k", 1);
    break;
  case K_VALUE:
    mp_bin(m, "val", 3);
    break;
  case K_PEER:
  case K_PRED:
    mp_peer(m, 4);
    break;
  case K_PEERS:
    mp_arr(m, 2);
    mp_peer(m, 5);
    mp_peer(m, 6);
    break;
  case K_FINGERS:
    mp_arr(m, 2);
    mp_arr(m, 2);
    mp_u(m, 0);
    mp_peer(m, 7);
    mp_arr(m, 2);
    mp_u(m, DHT_ID_BITS - 1);
    mp_peer(m, 8);
    break;
  case K_ITEMS: /* either form, in any type that carries items */
    mp_arr(m, 2);
    mp_arr(m, 2);
    mp_bin(m, "k", 1);
    mp_bin(m, "v", 1);
    mp_vitem(m, "k2", "v2", 12345, 3, false);
    break;
  case K_DIGESTS:
    mp_arr(m, 2);
    mp_bin(m, g_big, DHT_DIGEST_LEN);
    mp_bin(m, g_big + DHT_DIGEST_LEN, DHT_DIGEST_LEN);
    break;
  case K_BUCKETS:
    mp_arr(m, 2);
    mp_u(m, 0);
    mp_u(m, DHT_SYNC_BUCKETS_MAX - 1);
    break;
  case K_COUNTERS:
    mp_map(m, 1);
    mp_s(m, "a");
    mp_u(m, 1);
    break;
  case K_CODE:
    mp_i(m, DHT_ERR_NOT_FOUND);
    break;
  case K_STR:
    mp_s(m, "oops");
    break;
  case K_VER:
    mp_arr(m, 2);
    mp_u(m, 1700000000000ull << 16);
    mp_id(m, 10);
    break;
  case K_WALL:
    mp_u(m, 1700000000000ull);
    break;
  case K_LOST: /* one range with a holder, one with none */
    mp_arr(m, 2);
    mp_arr(m, 4);
    mp_id(m, 11);
    mp_id(m, 12);
    mp_u(m, 1700000000000ull);
    mp_arr(m, 1);
    mp_peer(m, 13);
    mp_arr(m, 4);
    mp_id(m, 14);
    mp_id(m, 11);
    mp_u(m, 0);
    mp_arr(m, 0);
    break;
  }
}

/* A lost range [from, to, at, holders] with element `bad` (0..3) replaced
 * by the wrong value v: 0 a str, 1 a negative int, 2 nil. */
static void mp_lost_bad(mp *m, int bad, int v) {
  static const uint8_t id19[19];
  int i;

  mp_arr(m, 1);
  mp_arr(m, 4);
  for (i = 0; i < 4; i++) {
    if (i == bad) {
      if (v == 0) {
        mp_s(m, "x");
      } else if (v == 1) {
        mp_i(m, -1);
      } else if (i < 2) {
        mp_bin(m, id19, sizeof(id19)); /* an id one byte short */
      } else {
        mp_nil(m);
      }
    } else if (i < 2) {
      mp_id(m, 20 + (unsigned)i);
    } else if (i == 2) {
      mp_u(m, 5);
    } else {
      mp_arr(m, 0);
    }
  }
}

/* Packs the variant-th wrong value of the given kind (a wrong msgpack type,
 * at any depth, or an id that is not 20 bytes) and returns true, or returns
 * false without packing when there is no such variant. */
static bool pack_bad(mp *m, enum kind k, int variant) {
  static const uint8_t id19[19], id21[21];
  dht_id id = id_n(1);

  switch (k) {
  case K_ID:
    switch (variant) {
    case 0:
      mp_sn(m, id.b, DHT_ID_LEN);
      return true;
    case 1:
      mp_bin(m, id19, sizeof(id19));
      return true;
    case 2:
      mp_bin(m, id21, sizeof(id21));
      return true;
    case 3:
      mp_u(m, 5);
      return true;
    case 4:
      mp_nil(m);
      return true;
    default:
      return false;
    }
  case K_HOPS:
  case K_LIMIT:
    switch (variant) {
    case 0:
      mp_s(m, "3");
      return true;
    case 1:
      mp_i(m, -1);
      return true;
    case 2:
      msgpack_pack_true(&m->pk);
      return true;
    case 3:
      msgpack_pack_double(&m->pk, 3.0);
      return true;
    default:
      return false;
    }
  case K_BOOL:
    switch (variant) {
    case 0:
      mp_u(m, 1);
      return true;
    case 1:
      mp_nil(m);
      return true;
    case 2:
      mp_s(m, "true");
      return true;
    default:
      return false;
    }
  case K_KEY:
  case K_VALUE:
    switch (variant) {
    case 0:
      mp_s(m, "k");
      return true;
    case 1:
      mp_u(m, 1);
      return true;
    case 2:
      mp_nil(m);
      return true;
    case 3:
      mp_arr(m, 1);
      mp_bin(m, "k", 1);
      return true;
    default:
      return false;
    }
  case K_PEER:
  case K_PRED:
    switch (variant) {
    case 0:
      mp_bin(m, id.b, DHT_ID_LEN);
      return true;
    case 1:
      mp_arr(m, 1);
      mp_id(m, 1);
      return true;
    case 2:
      mp_arr(m, 3);
      mp_id(m, 1);
      mp_s(m, "a:1");
      mp_u(m, 0);
      return true;
    case 3:
      mp_arr(m, 2);
      mp_sn(m, id.b, DHT_ID_LEN);
      mp_s(m, "a:1");
      return true;
    case 4:
      mp_arr(m, 2);
      mp_bin(m, id19, sizeof(id19));
      mp_s(m, "a:1");
      return true;
    case 5:
      mp_arr(m, 2);
      mp_bin(m, id21, sizeof(id21));
      mp_s(m, "a:1");
      return true;
    case 6:
      mp_arr(m, 2);
      mp_id(m, 1);
      mp_bin(m, "a:1", 3);
      return true;
    case 7:
      mp_arr(m, 2);
      mp_s(m, "a:1");
      mp_id(m, 1);
      return true;
    case 8:
      mp_map(m, 1);
      mp_s(m, "id");
      mp_id(m, 1);
      return true;
    case 9: /* nil means "none" for pred only */
      if (k == K_PRED) {
        return false;
      }
      mp_nil(m);
      return true;
    default:
      return false;
    }
  case K_PEERS:
    switch (variant) {
    case 0:
      mp_map(m, 0);
      return true;
    case 1:
      mp_bin(m, "x", 1);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_bin(m, "x", 1);
      return true;
    case 3:
      mp_arr(m, 2);
      mp_peer(m, 1);
      mp_arr(m, 2);
      mp_id(m, 1);
      mp_u(m, 1);
      return true;
    case 4:
      mp_arr(m, 1);
      mp_nil(m);
      return true;
    default:
      return false;
    }
  case K_FINGERS:
    switch (variant) {
    case 0:
      mp_map(m, 0);
      return true;
    case 1:
      mp_arr(m, 1);
      mp_u(m, 5);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_arr(m, 1);
      mp_peer(m, 1);
      return true;
    case 3:
      mp_arr(m, 1);
      mp_arr(m, 2);
      mp_s(m, "0");
      mp_peer(m, 1);
      return true;
    case 4:
      mp_arr(m, 1);
      mp_arr(m, 2);
      mp_i(m, -1);
      mp_peer(m, 1);
      return true;
    case 5:
      mp_arr(m, 1);
      mp_arr(m, 2);
      mp_u(m, 0);
      mp_bin(m, "x", 1);
      return true;
    case 6:
      mp_arr(m, 1);
      mp_arr(m, 3);
      mp_u(m, 0);
      mp_peer(m, 1);
      mp_u(m, 0);
      return true;
    default:
      return false;
    }
  case K_ITEMS:
    switch (variant) {
    case 0:
      mp_map(m, 0);
      return true;
    case 1:
      mp_arr(m, 1);
      mp_u(m, 5);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_arr(m, 1);
      mp_bin(m, "k", 1);
      return true;
    case 3:
      mp_arr(m, 1);
      mp_arr(m, 2);
      mp_s(m, "k");
      mp_bin(m, "v", 1);
      return true;
    case 4:
      mp_arr(m, 1);
      mp_arr(m, 2);
      mp_bin(m, "k", 1);
      mp_s(m, "v");
      return true;
    case 5:
      mp_arr(m, 1);
      mp_arr(m, 0);
      return true;
    case 6: /* [key, value, hlc]: versions come whole or not at all */
      mp_arr(m, 1);
      mp_arr(m, 3);
      mp_bin(m, "k", 1);
      mp_bin(m, "v", 1);
      mp_u(m, 1);
      return true;
    case 7: /* a good item, then [key, value, hlc, writer] */
      mp_arr(m, 2);
      mp_vitem(m, "k", "v", 1, 2, false);
      mp_arr(m, 4);
      mp_bin(m, "k", 1);
      mp_bin(m, "v", 1);
      mp_u(m, 1);
      mp_id(m, 2);
      return true;
    case 8: /* hlc as a string, negative, a float */
    case 9:
    case 10:
      mp_arr(m, 1);
      mp_arr(m, 5);
      mp_bin(m, "k", 1);
      mp_bin(m, "v", 1);
      if (variant == 8) {
        mp_s(m, "1");
      } else if (variant == 9) {
        mp_i(m, -1);
      } else {
        msgpack_pack_double(&m->pk, 1.0);
      }
      mp_id(m, 2);
      msgpack_pack_false(&m->pk);
      return true;
    case 11: /* writer 19 or 21 bytes, or a str */
    case 12:
    case 13:
      mp_arr(m, 1);
      mp_arr(m, 5);
      mp_bin(m, "k", 1);
      mp_bin(m, "v", 1);
      mp_u(m, 1);
      if (variant == 11) {
        mp_bin(m, id19, sizeof(id19));
      } else if (variant == 12) {
        mp_bin(m, id21, sizeof(id21));
      } else {
        mp_sn(m, id.b, DHT_ID_LEN);
      }
      msgpack_pack_false(&m->pk);
      return true;
    case 14: /* tombstone as 1, nil */
    case 15:
      mp_arr(m, 1);
      mp_arr(m, 5);
      mp_bin(m, "k", 1);
      mp_bin(m, "v", 1);
      mp_u(m, 1);
      mp_id(m, 2);
      if (variant == 14) {
        mp_u(m, 1);
      } else {
        mp_nil(m);
      }
      return true;
    default:
      return false;
    }
  case K_DIGESTS:
    switch (variant) {
    case 0:
      mp_map(m, 0);
      return true;
    case 1: /* one digest, not in an array */
      mp_bin(m, g_big, DHT_DIGEST_LEN);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_sn(m, g_big, DHT_DIGEST_LEN);
      return true;
    case 3:
      mp_arr(m, 1);
      mp_bin(m, g_big, DHT_DIGEST_LEN - 1);
      return true;
    case 4:
      mp_arr(m, 2);
      mp_bin(m, g_big, DHT_DIGEST_LEN);
      mp_bin(m, g_big, DHT_DIGEST_LEN + 1);
      return true;
    case 5:
      mp_arr(m, 2);
      mp_bin(m, g_big, DHT_DIGEST_LEN);
      mp_u(m, 5);
      return true;
    case 6:
      mp_arr(m, 1);
      mp_nil(m);
      return true;
    default:
      return false;
    }
  case K_BUCKETS:
    switch (variant) {
    case 0:
      mp_map(m, 0);
      return true;
    case 1: /* one bucket, not in an array */
      mp_u(m, 3);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_s(m, "1");
      return true;
    case 3:
      mp_arr(m, 1);
      mp_i(m, -1);
      return true;
    case 4:
      mp_arr(m, 1);
      msgpack_pack_true(&m->pk);
      return true;
    case 5:
      mp_arr(m, 1);
      msgpack_pack_double(&m->pk, 1.0);
      return true;
    case 6:
      mp_arr(m, 2);
      mp_u(m, 0);
      mp_nil(m);
      return true;
    default:
      return false;
    }
  case K_COUNTERS:
    switch (variant) {
    case 0:
      mp_arr(m, 0);
      return true;
    case 1:
      mp_map(m, 1);
      mp_bin(m, "a", 1);
      mp_u(m, 1);
      return true;
    case 2:
      mp_map(m, 1);
      mp_s(m, "a");
      mp_s(m, "1");
      return true;
    case 3:
      mp_map(m, 1);
      mp_s(m, "a");
      mp_i(m, -1);
      return true;
    case 4:
      mp_map(m, 1);
      mp_u(m, 1);
      mp_u(m, 1);
      return true;
    default:
      return false;
    }
  case K_CODE:
    switch (variant) {
    case 0:
      mp_s(m, "-11");
      return true;
    case 1:
      mp_u(m, 11);
      return true;
    case 2:
      mp_u(m, 0);
      return true;
    case 3:
      mp_i(m, (int64_t)INT32_MIN - 1);
      return true;
    case 4:
      msgpack_pack_double(&m->pk, -11.0);
      return true;
    default:
      return false;
    }
  case K_STR:
    switch (variant) {
    case 0:
      mp_bin(m, "oops", 4);
      return true;
    case 1:
      mp_u(m, 1);
      return true;
    default:
      return false;
    }
  case K_VER:
    switch (variant) {
    case 0: /* the stamp alone, the writer alone, nil, a map */
      mp_u(m, 5);
      return true;
    case 1:
      mp_id(m, 1);
      return true;
    case 2:
      mp_nil(m);
      return true;
    case 3:
      mp_map(m, 1);
      mp_s(m, "hlc");
      mp_u(m, 5);
      return true;
    case 4: /* one element, three elements, the two swapped */
      mp_arr(m, 1);
      mp_u(m, 5);
      return true;
    case 5:
      mp_arr(m, 3);
      mp_u(m, 5);
      mp_id(m, 1);
      msgpack_pack_false(&m->pk);
      return true;
    case 6:
      mp_arr(m, 2);
      mp_id(m, 1);
      mp_u(m, 5);
      return true;
    case 7: /* hlc a str, negative, a float, nil */
    case 8:
    case 9:
    case 10:
      mp_arr(m, 2);
      if (variant == 7) {
        mp_s(m, "5");
      } else if (variant == 8) {
        mp_i(m, -5);
      } else if (variant == 9) {
        msgpack_pack_double(&m->pk, 5.0);
      } else {
        mp_nil(m);
      }
      mp_id(m, 1);
      return true;
    case 11: /* writer 19 or 21 bytes, a str, empty, a uint */
    case 12:
    case 13:
    case 14:
    case 15:
      mp_arr(m, 2);
      mp_u(m, 5);
      if (variant == 11) {
        mp_bin(m, id19, sizeof(id19));
      } else if (variant == 12) {
        mp_bin(m, id21, sizeof(id21));
      } else if (variant == 13) {
        mp_sn(m, id.b, DHT_ID_LEN);
      } else if (variant == 14) {
        mp_bin(m, id.b, 0);
      } else {
        mp_u(m, 1);
      }
      return true;
    default:
      return false;
    }
  case K_WALL:
    switch (variant) {
    case 0:
      mp_s(m, "1700000000000");
      return true;
    case 1:
      mp_i(m, -1);
      return true;
    case 2:
      msgpack_pack_true(&m->pk);
      return true;
    case 3:
      msgpack_pack_double(&m->pk, 1.7e12);
      return true;
    case 4:
      mp_nil(m);
      return true;
    case 5:
      mp_arr(m, 1);
      mp_u(m, 1);
      return true;
    case 6:
      mp_bin(m, "\x01", 1);
      return true;
    default:
      return false;
    }
  case K_LOST:
    switch (variant) {
    case 0: /* not an array; a range not an array */
      mp_map(m, 0);
      return true;
    case 1:
      mp_nil(m);
      return true;
    case 2:
      mp_arr(m, 1);
      mp_u(m, 5);
      return true;
    case 3: /* a range of 3 elements, of 5, a map */
      mp_arr(m, 1);
      mp_arr(m, 3);
      mp_id(m, 1);
      mp_id(m, 2);
      mp_u(m, 3);
      return true;
    case 4:
      mp_arr(m, 1);
      mp_arr(m, 5);
      mp_id(m, 1);
      mp_id(m, 2);
      mp_u(m, 3);
      mp_arr(m, 0);
      mp_u(m, 0);
      return true;
    case 5:
      mp_arr(m, 1);
      mp_map(m, 0);
      return true;
    case 6: /* from, to, at, holders each wrong in turn, three ways */
    case 7:
    case 8:
    case 9:
    case 10:
    case 11:
    case 12:
    case 13:
    case 14:
    case 15:
    case 16:
    case 17:
      mp_lost_bad(m, (variant - 6) / 3, (variant - 6) % 3);
      return true;
    case 18: /* a holder that is not a peer */
      mp_arr(m, 1);
      mp_arr(m, 4);
      mp_id(m, 1);
      mp_id(m, 2);
      mp_u(m, 3);
      mp_arr(m, 2);
      mp_peer(m, 4);
      mp_bin(m, "a:1", 3);
      return true;
    case 19: /* a good range, then a bad one */
      mp_arr(m, 2);
      mp_arr(m, 4);
      mp_id(m, 1);
      mp_id(m, 2);
      mp_u(m, 3);
      mp_arr(m, 0);
      mp_arr(m, 2);
      mp_id(m, 1);
      mp_id(m, 2);
      return true;
    default:
      return false;
    }
  }
  return false;
}

enum how { H_GOOD, H_OMIT, H_BAD };

/* Builds a body of spec's type with every required field, the optional ones
 * too when with_opt, and field `which` omitted or given a bad value. */
static bool build(mp *m, const type_spec *spec, bool with_opt,
                  const char *which, enum how how, int variant) {
  const char *names[10];
  size_t n = 0, i;
  mp probe;

  for (i = 0; spec->req[i] != NULL; i++) {
    names[n++] = spec->req[i];
  }
  for (i = 0; with_opt && spec->opt[i] != NULL; i++) {
    names[n++] = spec->opt[i];
  }
  if (how == H_BAD) {
    mp_init(&probe);
    if (!pack_bad(&probe, kind_of(which), variant)) {
      mp_free(&probe);
      return false;
    }
    mp_free(&probe);
  }
  mp_init(m);
  mp_map(m, 3 + n - (how == H_OMIT ? 1 : 0));
  mp_hdr(m, DHT_PROTOCOL_VERSION, (uint64_t)spec->type, 77);
  for (i = 0; i < n; i++) {
    bool is_which = which != NULL && strcmp(names[i], which) == 0;

    if (is_which && how == H_OMIT) {
      continue;
    }
    mp_s(m, names[i]);
    if (is_which && how == H_BAD) {
      pack_bad(m, kind_of(names[i]), variant);
    } else {
      pack_good(m, kind_of(names[i]));
    }
  }
  return true;
}

/* ---- tests: names, limits, framing ----------------------------------------
 */

static void test_type_names(void **state) {
  (void)state;
  assert_string_equal(dht_msg_type_name(DHT_MSG_ERROR), "ERROR");
  assert_string_equal(dht_msg_type_name(DHT_MSG_FIND_SUCC), "FIND_SUCC");
  assert_string_equal(dht_msg_type_name(DHT_MSG_FIND_SUCC_R), "FIND_SUCC_R");
  assert_string_equal(dht_msg_type_name(DHT_MSG_STATS_R), "STATS_R");
  assert_string_equal(dht_msg_type_name(DHT_MSG_ACCEPTED), "ACCEPTED");
  assert_string_equal(dht_msg_type_name(18), "REPLICATE");
  assert_string_equal(dht_msg_type_name(19), "SYNC");
  assert_string_equal(dht_msg_type_name(20), "SYNC_R");
  assert_string_equal(dht_msg_type_name(21), "FETCH");
  assert_string_equal(dht_msg_type_name(22), "RECORD");
  assert_string_equal(dht_msg_type_name(23), "SCAN");
  assert_string_equal(dht_msg_type_name(24), "SCAN_R");
  assert_string_equal(dht_msg_type_name(25), "ACK_LOST");
  assert_string_equal(dht_msg_type_name(26), "CHECK_LINK");
  assert_string_equal(dht_msg_type_name(27), "MOVED");
  assert_int_equal(DHT_MSG_TYPE_LAST, 27);
  assert_string_equal(dht_msg_type_name(DHT_MSG_TYPE_LAST + 1), "UNKNOWN");
  assert_string_equal(dht_msg_type_name(-1), "UNKNOWN");
  assert_string_equal(dht_msg_type_name(31), "UNKNOWN");
}

/* Which types answer a request, written out from wire.h's type map. */
static void test_type_is_reply(void **state) {
  static const bool is_reply[] = {
      [DHT_MSG_ERROR] = true,       [DHT_MSG_PING] = false,
      [DHT_MSG_PONG] = true,        [DHT_MSG_FIND_SUCC] = false,
      [DHT_MSG_FIND_SUCC_R] = true, [DHT_MSG_GET_NEIGHBORS] = false,
      [DHT_MSG_NEIGHBORS] = true,   [DHT_MSG_NOTIFY] = false,
      [DHT_MSG_GET] = false,        [DHT_MSG_PUT] = false,
      [DHT_MSG_DEL] = false,        [DHT_MSG_VALUE] = true,
      [DHT_MSG_OK] = true,          [DHT_MSG_HANDOFF] = false,
      [DHT_MSG_LEAVE] = false,      [DHT_MSG_STATS] = false,
      [DHT_MSG_STATS_R] = true,     [DHT_MSG_ACCEPTED] = true,
      [DHT_MSG_REPLICATE] = false,  [DHT_MSG_SYNC] = false,
      [DHT_MSG_SYNC_R] = true,      [DHT_MSG_FETCH] = false,
      [DHT_MSG_RECORD] = true,      [DHT_MSG_SCAN] = false,
      [DHT_MSG_SCAN_R] = true,      [DHT_MSG_ACK_LOST] = false,
      [DHT_MSG_CHECK_LINK] = false, [DHT_MSG_MOVED] = true,
  };
  int t;

  (void)state;
  assert_int_equal(sizeof(is_reply) / sizeof(is_reply[0]),
                   DHT_MSG_TYPE_LAST + 1);
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    if (dht_msg_type_is_reply(t) != is_reply[t]) {
      fail_msg("%s: is_reply %d", dht_msg_type_name(t), !is_reply[t]);
    }
  }
  assert_false(dht_msg_type_is_reply(DHT_MSG_TYPE_LAST + 1));
  assert_false(dht_msg_type_is_reply(-1));
}

static void test_limits_default(void **state) {
  dht_wire_limits lim = lim_default();

  (void)state;
  assert_int_equal(lim.frame_len_max, 4 * MIB);
  assert_int_equal(lim.key_len_max, 1024);
  assert_int_equal(lim.value_len_max, MIB);
  assert_int_equal(lim.addr_len_max, 255);
  assert_int_equal(lim.items_max, 65536);
  assert_int_equal(lim.error_msg_len_max, 256);
}

static void test_frame_peek(void **state) {
  const uint8_t hdr[] = {0x00, 0x00, 0x01, 0x02, 0xaa};
  const uint8_t big[] = {0xff, 0xff, 0xff, 0xff};
  size_t body_len = 12345, n;

  (void)state;
  for (n = 0; n < DHT_FRAME_HEADER_LEN; n++) {
    assert_int_equal(dht_frame_peek(hdr, n, 4 * MIB, &body_len),
                     DHT_ERR_TRUNCATED);
  }
  assert_int_equal(body_len, 12345); /* untouched when truncated */
  assert_int_equal(dht_frame_peek(hdr, 4, 4 * MIB, &body_len), 0);
  assert_int_equal(body_len, 0x102);
  assert_int_equal(dht_frame_peek(hdr, sizeof(hdr), 0x102, &body_len), 0);
  assert_int_equal(dht_frame_peek(hdr, sizeof(hdr), 0x101, &body_len),
                   DHT_ERR_TOO_LARGE);
  assert_int_equal(dht_frame_peek(big, sizeof(big), 4 * MIB, &body_len),
                   DHT_ERR_TOO_LARGE);
  assert_int_equal(body_len, 0xffffffffu);
  assert_int_equal(dht_frame_peek(big, sizeof(big), UINT32_MAX, &body_len), 0);
}

/* ---- tests: round trips ----------------------------------------------------
 */

static void test_roundtrip_every_type(void **state) {
  dht_msg m;
  int t;

  (void)state;
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    sample_msg(&m, t, V_MIN);
    roundtrip(&m);
    sample_msg(&m, t, V_MID);
    roundtrip(&m);
  }
}

static void test_roundtrip_max(void **state) {
  dht_msg m;
  int t;

  (void)state;
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    sample_msg(&m, t, V_MAX);
    roundtrip(&m);
  }
}

static void test_roundtrip_fingers_all_positions(void **state) {
  dht_finger_ref fingers[DHT_ID_BITS];
  dht_msg m;
  unsigned i;

  (void)state;
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  for (i = 0; i < DHT_ID_BITS; i++) {
    fingers[i].start_bit = DHT_ID_BITS - 1 - i; /* order is kept as sent */
    fingers[i].peer = g_peers[i % 10];
  }
  m.fingers = fingers;
  m.n_fingers = DHT_ID_BITS;
  roundtrip(&m);
}

static void test_roundtrip_edge_values(void **state) {
  dht_msg m;

  (void)state;
  /* rid 0 and the largest rid; an id of all ones and all zeros. */
  sample_msg(&m, DHT_MSG_FIND_SUCC, V_MID);
  m.rid = 0;
  memset(m.target.b, 0xff, DHT_ID_LEN);
  roundtrip(&m);
  m.rid = UINT64_MAX;
  memset(m.target.b, 0, DHT_ID_LEN);
  roundtrip(&m);
  /* Every DHT_ERR_* code travels. */
  sample_msg(&m, DHT_MSG_ERROR, V_MID);
  for (m.error_code = -1; m.error_code >= DHT_ERR_MIN; m.error_code--) {
    roundtrip(&m);
  }
  m.error_code = INT32_MIN;
  roundtrip(&m);
  /* One-byte key, 1-byte address. */
  sample_msg(&m, DHT_MSG_PUT, V_MIN);
  roundtrip(&m);
  sample_msg(&m, DHT_MSG_PONG, V_MIN);
  m.peer.addr = cs("x");
  roundtrip(&m);
}

static void test_roundtrip_many_items(void **state) {
  dht_kv *items = calloc(20000, sizeof(*items));
  dht_msg m;
  size_t i;

  (void)state;
  assert_non_null(items);
  for (i = 0; i < 20000; i++) {
    items[i].key = bs(g_big + i, 1 + i % 40);
    items[i].value = bs(g_big + 2 * i, i % 100);
  }
  sample_msg(&m, DHT_MSG_HANDOFF, V_MIN);
  m.items = items;
  m.n_items = 20000;
  roundtrip(&m);
  /* Keys at their limit. */
  for (i = 0; i < 50; i++) {
    items[i].key = bs(g_big + i, KEY_MAX);
  }
  m.n_items = 50;
  roundtrip(&m);
  free(items);
}

static void test_encode_appends(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg a, b, out;
  dht_buf buf;
  size_t len_a, len_b;

  (void)state;
  dht_buf_init(&buf);
  sample_msg(&a, DHT_MSG_PUT, V_MID);
  sample_msg(&b, DHT_MSG_NEIGHBORS, V_MID);
  assert_int_equal(dht_msg_encode(&a, &buf), 0);
  assert_int_equal(dht_msg_encode(&b, &buf), 0);
  assert_int_equal(dht_frame_peek(buf.data, buf.len, lim.frame_len_max, &len_a),
                   0);
  assert_int_equal(dht_frame_peek(buf.data + 4 + len_a, buf.len - 4 - len_a,
                                  lim.frame_len_max, &len_b),
                   0);
  assert_int_equal(8 + len_a + len_b, buf.len);
  assert_int_equal(dht_msg_decode(&out, buf.data + 4, len_a, &lim), 0);
  assert_msg_eq(&a, &out);
  dht_msg_free(&out);
  assert_int_equal(dht_msg_decode(&out, buf.data + 8 + len_a, len_b, &lim), 0);
  assert_msg_eq(&b, &out);
  dht_msg_free(&out);
  dht_buf_free(&buf);
}

static bool contains(const uint8_t *p, size_t n, const char *s) {
  size_t k = strlen(s), i;

  for (i = 0; i + k <= n; i++) {
    if (memcmp(p + i, s, k) == 0) {
      return true;
    }
  }
  return false;
}

static void test_encode_pred_only_when_set(void **state) {
  dht_msg m;
  dht_buf buf;

  (void)state;
  dht_buf_init(&buf);
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MIN);
  assert_false(m.has_pred);
  m.pred = g_peers[3]; /* ignored: has_pred is false */
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_false(contains(buf.data, buf.len, "\xa4pred"));
  assert_true(contains(buf.data, buf.len, "\xa5succs"));
  buf.len = 0;
  m.has_pred = true;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_true(contains(buf.data, buf.len, "\xa4pred"));
  /* preds, unlike pred, is an array and always there, even empty; LEAVE
   * does not carry it at all. */
  assert_true(contains(buf.data, buf.len, "\xa5preds\x90"));
  buf.len = 0;
  sample_msg(&m, DHT_MSG_LEAVE, V_MID);
  m.preds = g_peers;
  m.n_preds = 2; /* ignored: LEAVE has no preds */
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_false(contains(buf.data, buf.len, "\xa5preds"));
  /* A PING carries exactly v, t, rid: a fixmap of 3. */
  buf.len = 0;
  sample_msg(&m, DHT_MSG_PING, V_MIN);
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_int_equal(buf.data[4], 0x83);
  dht_buf_free(&buf);
}

/* Encodes m and compares with the expected frame, byte for byte. */
static void expect_bytes(const dht_msg *m, const uint8_t *want, size_t len) {
  dht_buf buf;

  dht_buf_init(&buf);
  assert_int_equal(dht_msg_encode(m, &buf), 0);
  assert_int_equal(buf.len, len);
  assert_memory_equal(buf.data, want, len);
  dht_buf_free(&buf);
}

/* The example frames of docs/PROTOCOL.md: if the encoder changes, the
 * documentation must change with it. */
static void test_encode_exact_bytes(void **state) {
  static const uint8_t ping[] = {0x00, 0x00, 0x00, 0x0c, 0x83, 0xa1,
                                 0x76, 0x01, 0xa1, 0x74, 0x01, 0xa3,
                                 0x72, 0x69, 0x64, 0x2a};
  static const uint8_t put[] = {
      0x00, 0x00, 0x00, 0x34, 0x87, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0x09, 0xa3,
      0x72, 0x69, 0x64, 0x07, 0xa4, 0x68, 0x6f, 0x70, 0x73, 0x00, 0xa5, 0x66,
      0x69, 0x6e, 0x61, 0x6c, 0xc2, 0xa3, 0x6b, 0x65, 0x79, 0xc4, 0x08, 0x67,
      0x72, 0x65, 0x65, 0x74, 0x69, 0x6e, 0x67, 0xa5, 0x76, 0x61, 0x6c, 0x75,
      0x65, 0xc4, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f};
  static const uint8_t find_succ_r[] = {
      0x00, 0x00, 0x00, 0x44, 0x86, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0x04, 0xa3,
      0x72, 0x69, 0x64, 0xcd, 0x01, 0x2c, 0xa4, 0x68, 0x6f, 0x70, 0x73, 0x02,
      0xa4, 0x70, 0x65, 0x65, 0x72, 0x92, 0xc4, 0x14, 0x10, 0x11, 0x12, 0x13,
      0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
      0x20, 0x21, 0x22, 0x23, 0xad, 0x31, 0x30, 0x2e, 0x30, 0x2e, 0x30, 0x2e,
      0x32, 0x3a, 0x34, 0x30, 0x30, 0x30, 0xa4, 0x70, 0x61, 0x74, 0x68, 0x90};
  static const uint8_t error[] = {
      0x00, 0x00, 0x00, 0x24, 0x85, 0xa1, 0x76, 0x01, 0xa1, 0x74,
      0x00, 0xa3, 0x72, 0x69, 0x64, 0x07, 0xa4, 0x63, 0x6f, 0x64,
      0x65, 0xf5, 0xa3, 0x6d, 0x73, 0x67, 0xad, 0x6b, 0x65, 0x79,
      0x20, 0x6e, 0x6f, 0x74, 0x20, 0x66, 0x6f, 0x75, 0x6e, 0x64};
  dht_msg m;
  unsigned i;

  (void)state;
  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_PING;
  m.rid = 42;
  m.version = 99; /* ignored: version 1 is written */
  expect_bytes(&m, ping, sizeof(ping));

  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_PUT;
  m.rid = 7;
  m.key = cs("greeting");
  m.value = cs("hello");
  expect_bytes(&m, put, sizeof(put));

  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_FIND_SUCC_R;
  m.rid = 300;
  m.hops = 2;
  m.has_peer = true;
  for (i = 0; i < DHT_ID_LEN; i++) {
    m.peer.id.b[i] = (uint8_t)(0x10 + i);
  }
  m.peer.addr = cs("10.0.0.2:4000");
  expect_bytes(&m, find_succ_r, sizeof(find_succ_r));

  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_ERROR;
  m.rid = 7;
  m.error_code = DHT_ERR_NOT_FOUND;
  m.error_msg = cs("key not found");
  expect_bytes(&m, error, sizeof(error));
}

/* ---- tests: the encoder refuses --------------------------------------------
 */

/* Encodes m into a buffer holding "abc"; expects rv and "abc" unchanged. */
static void expect_encode_fails(const dht_msg *m, int rv) {
  dht_buf buf;

  dht_buf_init(&buf);
  assert_int_equal(dht_buf_append(&buf, "abc", 3), 0);
  assert_int_equal(dht_msg_encode(m, &buf), rv);
  assert_int_equal(buf.len, 3);
  assert_memory_equal(buf.data, "abc", 3);
  dht_buf_free(&buf);
}

static void test_encode_refuses(void **state) {
  dht_peer_ref bad_peers[2];
  dht_finger_ref bad_finger;
  dht_counter bad_counter;
  dht_kv bad_item;
  dht_msg m;

  (void)state;
  memset(&bad_item, 0, sizeof(bad_item));
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
  m.n_succs = DHT_SUCC_LIST_MAX + 1;
  m.succs = g_peers;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  /* preds: the same cap as succs, in both types that carry it. */
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
  m.n_preds = DHT_SUCC_LIST_MAX + 1;
  m.preds = g_peers;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  m.n_preds = DHT_SUCC_LIST_MAX + 1;
  m.preds = g_peers;
  expect_encode_fails(&m, DHT_ERR_INVAL);

  sample_msg(&m, DHT_MSG_FIND_SUCC, V_MID);
  m.n_path = DHT_PATH_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.n_path = 0;
  m.hops = DHT_HOPS_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);

  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  m.n_fingers = DHT_ID_BITS + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  m.n_counters = DHT_COUNTERS_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  bad_finger.start_bit = DHT_ID_BITS;
  bad_finger.peer = g_peers[0];
  m.fingers = &bad_finger;
  m.n_fingers = 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  bad_counter.name = bs(g_addr_max, COUNTER_NAME_MAX + 1);
  bad_counter.value = 1;
  m.counters = &bad_counter;
  m.n_counters = 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad_counter.name = bs(NULL, 0);
  expect_encode_fails(&m, DHT_ERR_INVAL);

  /* Addresses: too long, or empty, wherever a peer appears. */
  sample_msg(&m, DHT_MSG_PONG, V_MID);
  m.peer.addr = bs(g_addr_max, DHT_ADDR_LEN_MAX + 1);
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.peer.addr = bs(NULL, 0);
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_LEAVE, V_MID);
  m.pred.addr = bs(g_addr_max, DHT_ADDR_LEN_MAX + 1);
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_LEAVE, V_MID);
  bad_peers[0] = g_peers[0];
  bad_peers[1] = g_peers[1];
  bad_peers[1].addr = bs(NULL, 0);
  m.succs = bad_peers;
  m.n_succs = 2;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
  m.preds = bad_peers;
  m.n_preds = 2;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad_peers[1].addr = bs(g_addr_max, DHT_ADDR_LEN_MAX + 1);
  expect_encode_fails(&m, DHT_ERR_INVAL);

  /* Keys must not be empty; items too. */
  sample_msg(&m, DHT_MSG_GET, V_MID);
  m.key = bs(NULL, 0);
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_HANDOFF, V_MID);
  bad_item.key = bs(NULL, 0);
  bad_item.value = cs("v");
  m.items = &bad_item;
  m.n_items = 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad_item.has_version = true; /* in a versioned item as well */
  sample_msg(&m, DHT_MSG_REPLICATE, V_MID);
  m.items = &bad_item;
  m.n_items = 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_FETCH, V_MID);
  m.key = bs(NULL, 0);
  expect_encode_fails(&m, DHT_ERR_INVAL);

  /* Error codes are negative. */
  sample_msg(&m, DHT_MSG_ERROR, V_MID);
  m.error_code = 0;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.error_code = 4;
  expect_encode_fails(&m, DHT_ERR_INVAL);

  /* Unknown types, reserved ones included. */
  sample_msg(&m, DHT_MSG_PING, V_MID);
  m.type = (dht_msg_type)(DHT_MSG_TYPE_LAST + 1);
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.type = (dht_msg_type)1000;
  expect_encode_fails(&m, DHT_ERR_INVAL);
}

/* SYNC needs 1..256 digests; SYNC_R's buckets are at most 256 values, each
 * below 256. */
static void test_encode_refuses_sync(void **state) {
  uint16_t buckets[DHT_SYNC_BUCKETS_MAX + 1];
  dht_msg m;

  (void)state;
  sample_msg(&m, DHT_MSG_SYNC, V_MID);
  m.n_digests = 0;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.digests = NULL;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  sample_msg(&m, DHT_MSG_SYNC, V_MID);
  m.n_digests = DHT_SYNC_BUCKETS_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.n_digests = DHT_SYNC_BUCKETS_MAX; /* the limit itself passes */
  roundtrip(&m);

  memset(buckets, 0, sizeof(buckets));
  sample_msg(&m, DHT_MSG_SYNC_R, V_MID);
  m.buckets = buckets;
  m.n_buckets = DHT_SYNC_BUCKETS_MAX + 1; /* every value valid */
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.n_buckets = 3;
  buckets[2] = DHT_SYNC_BUCKETS_MAX;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  buckets[2] = UINT16_MAX;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  buckets[2] = DHT_SYNC_BUCKETS_MAX - 1;
  roundtrip(&m);
}

/* ---- tests: the decoder rejects --------------------------------------------
 */

static void test_schema_builder_is_valid(void **state) {
  size_t i;
  mp m;

  (void)state;
  for (i = 0; i < N_TYPE_SPECS; i++) {
    outcome o;

    build(&m, &type_specs[i], true, NULL, H_GOOD, 0);
    o = decode_mp(&m);
    assert_int_equal(o.rv, 0);
    assert_int_equal(o.type, type_specs[i].type);
    mp_free(&m);
    build(&m, &type_specs[i], false, NULL, H_GOOD, 0);
    assert_int_equal(decode_mp(&m).rv, 0);
    mp_free(&m);
  }
  assert_int_equal(N_TYPE_SPECS, DHT_MSG_TYPE_LAST + 1);
}

static void test_missing_required_fields(void **state) {
  size_t i, j;
  mp m;

  (void)state;
  for (i = 0; i < N_TYPE_SPECS; i++) {
    for (j = 0; type_specs[i].req[j] != NULL; j++) {
      outcome o;

      build(&m, &type_specs[i], true, type_specs[i].req[j], H_OMIT, 0);
      o = decode_mp(&m);
      if (o.rv != DHT_ERR_MISSING_FIELD) {
        fail_msg("type %d without %s: got %d", type_specs[i].type,
                 type_specs[i].req[j], o.rv);
      }
      assert_true(o.can_reply);
      assert_true(o.rid == 77);
      mp_free(&m);
    }
    /* Optional fields really are optional. */
    for (j = 0; type_specs[i].opt[j] != NULL; j++) {
      build(&m, &type_specs[i], true, type_specs[i].opt[j], H_OMIT, 0);
      assert_int_equal(decode_mp(&m).rv, 0);
      mp_free(&m);
    }
  }
}

static void test_wrong_types(void **state) {
  size_t i, j, tried = 0;
  int variant;
  mp m;

  (void)state;
  for (i = 0; i < N_TYPE_SPECS; i++) {
    const char *fields[10];
    size_t n = 0;

    for (j = 0; type_specs[i].req[j] != NULL; j++) {
      fields[n++] = type_specs[i].req[j];
    }
    for (j = 0; type_specs[i].opt[j] != NULL; j++) {
      fields[n++] = type_specs[i].opt[j];
    }
    for (j = 0; j < n; j++) {
      for (variant = 0;
           build(&m, &type_specs[i], true, fields[j], H_BAD, variant);
           variant++) {
        outcome o = decode_mp(&m);

        if (o.rv != DHT_ERR_BAD_TYPE) {
          fail_msg("type %d, bad %s #%d: got %d", type_specs[i].type, fields[j],
                   variant, o.rv);
        }
        assert_true(o.can_reply);
        assert_true(o.rid == 77);
        mp_free(&m);
        tried++;
      }
    }
  }
  assert_true(tried > 300);
}

static void test_header_fields(void **state) {
  outcome o;
  mp m;

  (void)state;
  /* Missing v, t or rid. */
  mp_init(&m);
  mp_map(&m, 2);
  mp_s(&m, "t");
  mp_u(&m, DHT_MSG_PING);
  mp_s(&m, "rid");
  mp_u(&m, 5);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_MISSING_FIELD);
  assert_true(o.can_reply); /* rid and type were read */
  mp_free(&m);

  mp_init(&m);
  mp_map(&m, 2);
  mp_s(&m, "v");
  mp_u(&m, 1);
  mp_s(&m, "rid");
  mp_u(&m, 5);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_MISSING_FIELD);
  assert_false(o.can_reply);
  assert_true(o.rid == 5);
  mp_free(&m);

  mp_init(&m);
  mp_map(&m, 2);
  mp_s(&m, "v");
  mp_u(&m, 1);
  mp_s(&m, "t");
  mp_u(&m, DHT_MSG_PING);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_MISSING_FIELD);
  assert_false(o.can_reply);
  assert_int_equal(o.type, DHT_MSG_PING);
  mp_free(&m);

  /* Wrong types for v, t, rid. */
  mp_init(&m);
  mp_map(&m, 3);
  mp_s(&m, "v");
  mp_s(&m, "1");
  mp_s(&m, "t");
  mp_u(&m, DHT_MSG_PING);
  mp_s(&m, "rid");
  mp_u(&m, 9);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
  assert_true(o.can_reply);
  mp_free(&m);

  mp_init(&m);
  mp_map(&m, 3);
  mp_s(&m, "v");
  mp_u(&m, 1);
  mp_s(&m, "t");
  mp_i(&m, -1);
  mp_s(&m, "rid");
  mp_u(&m, 9);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
  assert_false(o.can_reply);
  mp_free(&m);

  mp_init(&m);
  mp_map(&m, 3);
  mp_s(&m, "v");
  mp_u(&m, 1);
  mp_s(&m, "t");
  mp_u(&m, DHT_MSG_PING);
  mp_s(&m, "rid");
  mp_i(&m, -9);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
  assert_false(o.can_reply);
  mp_free(&m);

  /* rid as the largest uint64 and in any position of the map. */
  mp_init(&m);
  mp_map(&m, 3);
  mp_s(&m, "rid");
  mp_u(&m, UINT64_MAX);
  mp_s(&m, "t");
  mp_u(&m, DHT_MSG_STATS);
  mp_s(&m, "v");
  mp_u(&m, 1);
  o = decode_mp(&m);
  assert_int_equal(o.rv, 0);
  assert_true(o.rid == UINT64_MAX);
  mp_free(&m);
}

static void test_bad_version(void **state) {
  outcome o;
  mp m;

  (void)state;
  /* A known type and a rid: the node can answer BAD_VERSION. */
  mp_init(&m);
  mp_map(&m, 4);
  mp_hdr(&m, 2, DHT_MSG_GET, 4242);
  mp_s(&m, "key"); /* v2 could lay fields out differently: not looked at */
  mp_u(&m, 1);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_VERSION);
  assert_true(o.can_reply);
  assert_true(o.rid == 4242);
  assert_int_equal(o.type, DHT_MSG_GET);
  assert_int_equal(o.version, 2);
  mp_free(&m);

  /* The version is checked before the type and before the map's layout. */
  mp_init(&m);
  mp_map(&m, 4);
  mp_hdr(&m, 0, 99, 1);
  mp_u(&m, 5); /* a non-string key */
  mp_u(&m, 5);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_VERSION);
  assert_true(o.can_reply); /* type 99 is unknown: a newer request */
  assert_true(o.rid == 1);
  assert_int_equal(o.version, 0);
  mp_free(&m);

  mp_init(&m);
  mp_map(&m, 3);
  mp_hdr(&m, UINT64_MAX, DHT_MSG_PING, 1);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_VERSION);
  assert_int_equal(o.version, UINT32_MAX);
  mp_free(&m);
}

static void test_unknown_type(void **state) {
  const uint64_t types[] = {DHT_MSG_TYPE_LAST + 1, 31, 32, 1000, UINT64_MAX};
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    outcome o;
    mp m;

    mp_init(&m);
    mp_map(&m, 3);
    mp_hdr(&m, 1, types[i], 31337);
    o = decode_mp(&m);
    assert_int_equal(o.rv, DHT_ERR_UNKNOWN_TYPE);
    assert_true(o.can_reply); /* answered ERROR UNKNOWN_TYPE */
    assert_true(o.rid == 31337);
    assert_int_equal(o.version, 1);
    mp_free(&m);
  }
}

static void test_truncated_every_prefix(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg m;
  dht_buf buf;
  int t, v;

  (void)state;
  dht_buf_init(&buf);
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    for (v = V_MIN; v <= V_MAX; v++) {
      size_t body_len, n;

      sample_msg(&m, t, (enum variant)v);
      buf.len = 0;
      assert_int_equal(dht_msg_encode(&m, &buf), 0);
      body_len = buf.len - DHT_FRAME_HEADER_LEN;
      if (body_len > 64 * 1024) {
        continue; /* 1 MiB values: quadratic; V_MID covers the structure */
      }
      for (n = 0; n < DHT_FRAME_HEADER_LEN; n++) {
        assert_int_equal(
            dht_frame_peek(buf.data, n, lim.frame_len_max, &body_len),
            DHT_ERR_TRUNCATED);
      }
      for (n = 0; n < body_len; n++) {
        outcome o = decode_raw(buf.data + DHT_FRAME_HEADER_LEN, n);

        if (o.rv >= 0) {
          fail_msg("type %d variant %d: prefix %zu of %zu decoded", t, v, n,
                   body_len);
        }
        assert_true(o.rv == DHT_ERR_TRUNCATED || o.rv == DHT_ERR_TOO_MANY);
      }
      assert_int_equal(decode_raw(buf.data + DHT_FRAME_HEADER_LEN, body_len).rv,
                       0);
    }
  }
  dht_buf_free(&buf);
}

static void test_trailing_bytes(void **state) {
  const uint8_t tails[] = {0x00, 0xc0, 0x80, 0xc1};
  dht_msg m;
  dht_buf buf;
  size_t i;

  (void)state;
  dht_buf_init(&buf);
  sample_msg(&m, DHT_MSG_PUT, V_MID);
  for (i = 0; i < sizeof(tails); i++) {
    buf.len = 0;
    assert_int_equal(dht_msg_encode(&m, &buf), 0);
    assert_int_equal(dht_buf_append(&buf, &tails[i], 1), 0);
    assert_int_equal(decode_raw(buf.data + 4, buf.len - 4).rv,
                     DHT_ERR_TRAILING);
  }
  /* A second complete map after the first. */
  buf.len = 0;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_int_equal(decode_raw(buf.data + 4, buf.len - 4).rv, DHT_ERR_TRAILING);
  dht_buf_free(&buf);
}

static void test_frame_too_large(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg m;
  dht_buf buf;
  size_t body_len;

  (void)state;
  dht_buf_init(&buf);
  sample_msg(&m, DHT_MSG_PUT, V_MID);
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  body_len = buf.len - 4;
  lim.frame_len_max = (uint32_t)body_len;
  assert_int_equal(decode_lim(buf.data + 4, body_len, &lim).rv, 0);
  lim.frame_len_max = (uint32_t)body_len - 1;
  assert_int_equal(decode_lim(buf.data + 4, body_len, &lim).rv,
                   DHT_ERR_TOO_LARGE);
  dht_buf_free(&buf);
}

/* Starts a body map of type t, rid 77: the header and room for extra_fields
 * more entries, which the caller packs next. */
static void begin_one(mp *m, int t, size_t extra_fields) {
  mp_init(m);
  mp_map(m, 3 + extra_fields);
  mp_hdr(m, 1, (uint64_t)t, 77);
}

static void test_oversized_lengths(void **state) {
  dht_wire_limits lim = lim_default();
  outcome o;
  mp m;

  (void)state;
  /* key: 1..1024 */
  begin_one(&m, DHT_MSG_GET, 1);
  mp_s(&m, "key");
  mp_bin(&m, g_big, KEY_MAX + 1);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_LARGE);
  assert_true(o.can_reply);
  mp_free(&m);
  begin_one(&m, DHT_MSG_DEL, 1);
  mp_s(&m, "key");
  mp_bin(&m, g_big, 0);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_GET, 1);
  mp_s(&m, "key");
  mp_bin(&m, g_big, KEY_MAX);
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);

  /* value: 0..1 MiB */
  begin_one(&m, DHT_MSG_PUT, 2);
  mp_s(&m, "key");
  mp_bin(&m, "k", 1);
  mp_s(&m, "value");
  mp_bin(&m, g_big, VALUE_MAX + 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_VALUE, 1);
  mp_s(&m, "value");
  mp_bin(&m, g_big, VALUE_MAX + 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* Configured limits below the defaults. */
  lim.key_len_max = 4;
  lim.value_len_max = 8;
  begin_one(&m, DHT_MSG_PUT, 2);
  mp_s(&m, "key");
  mp_bin(&m, "abcd", 4);
  mp_s(&m, "value");
  mp_bin(&m, g_big, 8);
  assert_int_equal(decode_mp_lim(&m, &lim).rv, 0);
  mp_free(&m);
  begin_one(&m, DHT_MSG_PUT, 2);
  mp_s(&m, "key");
  mp_bin(&m, "abcde", 5);
  mp_s(&m, "value");
  mp_bin(&m, g_big, 8);
  assert_int_equal(decode_mp_lim(&m, &lim).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_PUT, 2);
  mp_s(&m, "key");
  mp_bin(&m, "abcd", 4);
  mp_s(&m, "value");
  mp_bin(&m, g_big, 9);
  assert_int_equal(decode_mp_lim(&m, &lim).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* error msg: 0..256 */
  begin_one(&m, DHT_MSG_ERROR, 2);
  mp_s(&m, "code");
  mp_i(&m, DHT_ERR_HOPS);
  mp_s(&m, "msg");
  mp_sn(&m, g_big, ERROR_MSG_MAX);
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);
  begin_one(&m, DHT_MSG_ERROR, 2);
  mp_s(&m, "code");
  mp_i(&m, DHT_ERR_HOPS);
  mp_s(&m, "msg");
  mp_sn(&m, g_big, ERROR_MSG_MAX + 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* hops: 0..64 */
  begin_one(&m, DHT_MSG_OK, 1);
  mp_s(&m, "hops");
  mp_u(&m, DHT_HOPS_MAX + 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_FIND_SUCC, 2);
  mp_s(&m, "target");
  mp_id(&m, 1);
  mp_s(&m, "hops");
  mp_u(&m, UINT64_MAX);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* finger start bits: 0..159 */
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, 1);
  mp_arr(&m, 2);
  mp_u(&m, DHT_ID_BITS);
  mp_peer(&m, 2);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* counter names: 1..64 */
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, 1);
  mp_sn(&m, g_big, COUNTER_NAME_MAX + 1);
  mp_u(&m, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, 1);
  mp_s(&m, "");
  mp_u(&m, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
}

/* addr in every place a peer appears: peer, pred, succs, path, fingers,
 * preds; empty, over the hard cap, and over a configured limit. */
static void test_oversized_addr(void **state) {
  static const char *where[] = {"peer", "pred",    "succs",
                                "path", "fingers", "preds"};
  const size_t lens[] = {0, DHT_ADDR_LEN_MAX + 1, 9};
  dht_wire_limits def = lim_default(), small = lim_default();
  size_t w, l;

  (void)state;
  small.addr_len_max = 8;
  for (w = 0; w < 6; w++) {
    for (l = 0; l < 3; l++) {
      int rv;
      mp m;

      if (w == 3) { /* path: FIND_SUCC_R */
        begin_one(&m, DHT_MSG_FIND_SUCC_R, 2);
        mp_s(&m, "peer");
        mp_peer(&m, 1);
      } else { /* the others: STATS_R, which has them all */
        begin_one(&m, DHT_MSG_STATS_R, w == 1 || w == 5 ? 5 : 4);
        if (w != 0) {
          mp_s(&m, "peer");
          mp_peer(&m, 1);
        }
        if (w != 2) {
          mp_s(&m, "succs");
          mp_arr(&m, 0);
        }
        if (w != 4) {
          mp_s(&m, "fingers");
          mp_arr(&m, 0);
        }
        mp_s(&m, "counters");
        mp_map(&m, 0);
      }
      mp_s(&m, where[w]);
      if (w == 2 || w == 3 || w == 5) {
        mp_arr(&m, 1);
      } else if (w == 4) {
        mp_arr(&m, 1);
        mp_arr(&m, 2);
        mp_u(&m, 3);
      }
      mp_arr(&m, 2);
      mp_id(&m, 3);
      mp_sn(&m, g_big, lens[l]);
      rv = decode_mp_lim(&m, l == 2 ? &small : &def).rv;
      if (rv != DHT_ERR_TOO_LARGE) {
        fail_msg("addr of %zu bytes in %s: got %d", lens[l], where[w], rv);
      }
      if (l == 2) { /* the same 9 bytes pass the default limit */
        assert_int_equal(decode_mp_lim(&m, &def).rv, 0);
      }
      mp_free(&m);
    }
  }
}

static void test_counts_over_caps(void **state) {
  dht_wire_limits lim = lim_default();
  unsigned i;
  mp m;

  (void)state;
  /* succs: 32 */
  begin_one(&m, DHT_MSG_NEIGHBORS, 2);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, DHT_SUCC_LIST_MAX + 1);
  for (i = 0; i <= DHT_SUCC_LIST_MAX; i++) {
    mp_peer(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* preds: 32, like succs, in NEIGHBORS and STATS_R; 32 itself passes */
  for (i = 0; i < 2; i++) {
    unsigned n;

    for (n = DHT_SUCC_LIST_MAX; n <= DHT_SUCC_LIST_MAX + 1; n++) {
      unsigned j;

      if (i == 0) {
        begin_one(&m, DHT_MSG_NEIGHBORS, 3);
      } else {
        begin_one(&m, DHT_MSG_STATS_R, 5);
        mp_s(&m, "fingers");
        mp_arr(&m, 0);
        mp_s(&m, "counters");
        mp_map(&m, 0);
      }
      mp_s(&m, "peer");
      mp_peer(&m, 1);
      mp_s(&m, "succs");
      mp_arr(&m, 0);
      mp_s(&m, "preds");
      mp_arr(&m, n);
      for (j = 0; j < n; j++) {
        mp_peer(&m, j);
      }
      if (n == DHT_SUCC_LIST_MAX) {
        dht_msg msg;

        assert_int_equal(
            dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim),
            0);
        assert_int_equal(msg.n_preds, DHT_SUCC_LIST_MAX);
        assert_int_equal(msg.n_succs, 0);
        assert_memory_equal(msg.preds[31].id.b, id_n(31).b, DHT_ID_LEN);
        dht_msg_free(&msg);
      } else {
        outcome o = decode_mp(&m);

        assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
        assert_true(o.can_reply);
      }
      mp_free(&m);
    }
  }

  /* path: 64 */
  begin_one(&m, DHT_MSG_FIND_SUCC, 2);
  mp_s(&m, "target");
  mp_id(&m, 1);
  mp_s(&m, "path");
  mp_arr(&m, DHT_PATH_MAX + 1);
  for (i = 0; i <= DHT_PATH_MAX; i++) {
    mp_peer(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* fingers: 160 */
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, DHT_ID_BITS + 1);
  for (i = 0; i <= DHT_ID_BITS; i++) {
    mp_arr(&m, 2);
    mp_u(&m, i % DHT_ID_BITS);
    mp_peer(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* counters: 256 */
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, DHT_COUNTERS_MAX + 1);
  for (i = 0; i <= DHT_COUNTERS_MAX; i++) {
    mp_s(&m, g_counter_name[i]);
    mp_u(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* items: items_max, and the key and value limits inside items */
  lim.items_max = 3;
  begin_one(&m, DHT_MSG_HANDOFF, 1);
  mp_s(&m, "items");
  mp_arr(&m, 4);
  for (i = 0; i < 4; i++) {
    mp_arr(&m, 2);
    mp_bin(&m, "k", 1);
    mp_bin(&m, "v", 1);
  }
  assert_int_equal(decode_mp_lim(&m, &lim).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);
  begin_one(&m, DHT_MSG_REPLICATE, 1);
  mp_s(&m, "items");
  mp_arr(&m, 4);
  for (i = 0; i < 4; i++) {
    mp_vitem(&m, "k", "v", i, i, false);
  }
  assert_int_equal(decode_mp_lim(&m, &lim).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);
  begin_one(&m, DHT_MSG_REPLICATE, 1);
  mp_s(&m, "items");
  mp_arr(&m, 1);
  mp_arr(&m, 5);
  mp_bin(&m, g_big, KEY_MAX + 1);
  mp_bin(&m, "v", 1);
  mp_u(&m, 1);
  mp_id(&m, 1);
  msgpack_pack_false(&m.pk);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_HANDOFF, 1);
  mp_s(&m, "items");
  mp_arr(&m, 1);
  mp_arr(&m, 2);
  mp_bin(&m, g_big, KEY_MAX + 1);
  mp_bin(&m, "v", 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_HANDOFF, 1);
  mp_s(&m, "items");
  mp_arr(&m, 1);
  mp_arr(&m, 2);
  mp_bin(&m, "", 0);
  mp_bin(&m, "v", 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_HANDOFF, 1);
  mp_s(&m, "items");
  mp_arr(&m, 1);
  mp_arr(&m, 2);
  mp_bin(&m, "k", 1);
  mp_bin(&m, g_big, VALUE_MAX + 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
}

static void test_absurd_counts(void **state) {
  static const uint8_t arr32[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
  static const uint8_t map32[] = {0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0, 0xc0};
  static const uint8_t arr16[] = {0xdc, 0xff, 0xff, 0x01, 0x02, 0x03};
  static const uint8_t bin32[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0x00};
  static const uint8_t str32[] = {0xdb, 0x7f, 0xff, 0xff, 0xff, 0x00};
  static const uint8_t ext32[] = {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01};
  mp m;

  (void)state;
  assert_int_equal(decode_raw(arr32, sizeof(arr32)).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(decode_raw(map32, sizeof(map32)).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(decode_raw(arr16, sizeof(arr16)).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(decode_raw(bin32, sizeof(bin32)).rv, DHT_ERR_TRUNCATED);
  assert_int_equal(decode_raw(str32, sizeof(str32)).rv, DHT_ERR_TRUNCATED);
  assert_int_equal(decode_raw(ext32, sizeof(ext32)).rv, DHT_ERR_TRUNCATED);

  /* Inside an otherwise valid body, under a known and an unknown key. */
  begin_one(&m, DHT_MSG_NEIGHBORS, 2);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_raw(&m, arr32, sizeof(arr32));
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);
  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "future");
  mp_raw(&m, map32, 5);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* A map header claiming one entry more than it has: the count fits the
   * bytes (each element could be one byte), so this is a truncation. */
  mp_init(&m);
  mp_map(&m, 4);
  mp_hdr(&m, 1, DHT_MSG_PING, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TRUNCATED);
  mp_free(&m);
}

static void test_nesting(void **state) {
  uint8_t deep[100000];
  outcome o;
  size_t i;
  mp m;

  (void)state;
  /* depth 8 (the map plus 7 arrays) passes; 9 does not. Unknown keys are
   * ignored, but their values are still scanned. */
  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "deep");
  for (i = 0; i < DHT_NESTING_MAX - 1; i++) {
    mp_arr(&m, 1);
  }
  mp_nil(&m);
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);

  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "deep");
  for (i = 0; i < DHT_NESTING_MAX; i++) {
    mp_arr(&m, 1);
  }
  mp_nil(&m);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_false(o.can_reply); /* rejected before the map was read */
  mp_free(&m);

  /* Empty containers count as a level too. */
  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "deep");
  for (i = 0; i < DHT_NESTING_MAX - 1; i++) {
    mp_arr(&m, 1);
  }
  mp_map(&m, 0);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  mp_free(&m);

  /* Very deep: no recursion, no stack to exhaust. */
  memset(deep, 0x91, sizeof(deep));
  assert_int_equal(decode_raw(deep, sizeof(deep)).rv, DHT_ERR_TOO_MANY);
  assert_int_equal(dht__mp_check(deep, sizeof(deep), DHT__MP_CHECK_DEPTH_LIMIT),
                   DHT_ERR_TOO_MANY);
  deep[DHT__MP_CHECK_DEPTH_LIMIT] = 0xc0;
  assert_int_equal(dht__mp_check(deep, DHT__MP_CHECK_DEPTH_LIMIT + 1,
                                 DHT__MP_CHECK_DEPTH_LIMIT),
                   0);
  assert_int_equal(dht__mp_check(deep, DHT__MP_CHECK_DEPTH_LIMIT + 1,
                                 DHT__MP_CHECK_DEPTH_LIMIT + 1),
                   DHT_ERR_INVAL);
}

static void test_reserved_byte(void **state) {
  static const uint8_t c1[] = {0xc1};
  mp m;

  (void)state;
  assert_int_equal(decode_raw(c1, 1).rv, DHT_ERR_MALFORMED);
  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "x");
  mp_raw(&m, c1, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);
  begin_one(&m, DHT_MSG_PONG, 1);
  mp_s(&m, "peer");
  mp_arr(&m, 2);
  mp_id(&m, 1);
  mp_raw(&m, c1, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);
}

static void test_duplicate_keys(void **state) {
  outcome o;
  mp m;

  (void)state;
  begin_one(&m, DHT_MSG_PING, 1);
  mp_s(&m, "rid");
  mp_u(&m, 78);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_MALFORMED);
  assert_true(o.can_reply); /* the first rid is the one reported */
  assert_true(o.rid == 77);
  mp_free(&m);

  begin_one(&m, DHT_MSG_GET, 2);
  mp_s(&m, "key");
  mp_bin(&m, "a", 1);
  mp_s(&m, "key");
  mp_bin(&m, "b", 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);

  /* Known to v1 but unused by PING: still a duplicate. */
  begin_one(&m, DHT_MSG_PING, 2);
  mp_s(&m, "value");
  mp_u(&m, 1);
  mp_s(&m, "value");
  mp_u(&m, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);

  /* A replication key. */
  begin_one(&m, DHT_MSG_SCAN, 3);
  mp_s(&m, "from");
  mp_id(&m, 1);
  mp_s(&m, "limit");
  mp_u(&m, 1);
  mp_s(&m, "from");
  mp_id(&m, 2);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);

  /* Unknown keys. */
  begin_one(&m, DHT_MSG_PING, 3);
  mp_s(&m, "zz");
  mp_u(&m, 1);
  mp_s(&m, "zy");
  mp_u(&m, 1);
  mp_s(&m, "zz");
  mp_u(&m, 2);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);

  /* Empty keys, which msgpack-c hands over without a pointer (found by
   * fuzz_wire: UBSan saw memcmp() get NULL). */
  begin_one(&m, DHT_MSG_PING, 2);
  mp_s(&m, "");
  mp_u(&m, 1);
  mp_s(&m, "");
  mp_u(&m, 2);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);

  /* Counter names. */
  begin_one(&m, DHT_MSG_STATS_R, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "fingers");
  mp_arr(&m, 0);
  mp_s(&m, "counters");
  mp_map(&m, 3);
  mp_s(&m, "a");
  mp_u(&m, 1);
  mp_s(&m, "b");
  mp_u(&m, 1);
  mp_s(&m, "a");
  mp_u(&m, 1);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);
}

static void test_body_not_a_map(void **state) {
  static const uint8_t bodies[][4] = {
      {0x92, 0x01, 0x02}, {0x05}, {0xa1, 'x'}, {0xc0}, {0xc3}, {0xc4, 0x00}};
  static const size_t lens[] = {3, 1, 2, 1, 1, 2};
  outcome o;
  size_t i;
  mp m;

  (void)state;
  for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    o = decode_raw(bodies[i], lens[i]);
    assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
    assert_false(o.can_reply);
  }
  assert_int_equal(decode_raw(bodies[0], 0).rv, DHT_ERR_TRUNCATED);

  /* A non-string key in the body map. */
  begin_one(&m, DHT_MSG_PING, 1);
  mp_u(&m, 1);
  mp_u(&m, 2);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
  assert_true(o.can_reply);
  mp_free(&m);
}

static void test_body_keys_max(void **state) {
  char name[8];
  unsigned i;
  mp m;

  (void)state;
  begin_one(&m, DHT_MSG_PING, 61);
  for (i = 0; i < 61; i++) {
    snprintf(name, sizeof(name), "x%u", i);
    mp_s(&m, name);
    mp_u(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, 0);
  mp_free(&m);
  begin_one(&m, DHT_MSG_PING, 62);
  for (i = 0; i < 62; i++) {
    snprintf(name, sizeof(name), "x%u", i);
    mp_s(&m, name);
    mp_u(&m, i);
  }
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_MANY);
  assert_true(decode_mp(&m).can_reply);
  mp_free(&m);
}

static void test_ids_must_be_20_bytes(void **state) {
  static const uint8_t id19[19], id21[21];
  mp m;

  (void)state;
  begin_one(&m, DHT_MSG_FIND_SUCC, 1);
  mp_s(&m, "target");
  mp_bin(&m, id19, sizeof(id19));
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_FIND_SUCC, 1);
  mp_s(&m, "target");
  mp_bin(&m, id21, sizeof(id21));
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
  mp_free(&m);
  begin_one(&m, DHT_MSG_NOTIFY, 1);
  mp_s(&m, "peer");
  mp_arr(&m, 2);
  mp_bin(&m, id21, sizeof(id21));
  mp_s(&m, "h:1");
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
  mp_free(&m);
}

static void test_accepts_what_v1_ignores(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  mp m;

  (void)state;
  /* Unknown keys of every msgpack type, a known key unused by the type
   * (with a wrong type, even), pred as nil, items with elements after the
   * version, fields in any order, integers in wider encodings than needed. */
  mp_init(&m);
  mp_map(&m, 11);
  mp_s(&m, "items");
  mp_arr(&m, 2);
  mp_arr(&m, 7);
  mp_bin(&m, "k1", 2);
  mp_bin(&m, "v1", 2);
  mp_raw(&m, "\xcf\x00\x00\x00\x00\x00\x00\x30\x39", 9); /* 12345 */
  mp_id(&m, 5);
  msgpack_pack_true(&m.pk);
  mp_s(&m, "ignored");
  mp_map(&m, 1); /* a container too: skipped whole */
  mp_u(&m, 1);
  mp_arr(&m, 0);
  mp_arr(&m, 2);
  mp_bin(&m, "k2", 2);
  mp_bin(&m, "", 0);
  mp_s(&m, "rid");
  mp_raw(&m, "\xcf\x00\x00\x00\x00\x00\x00\x00\x07", 9);
  mp_s(&m, "t");
  mp_raw(&m, "\xd0\x0d", 2); /* int8 13: a non-negative signed int */
  mp_s(&m, "v");
  mp_raw(&m, "\xcd\x00\x01", 3);
  mp_s(&m, "pred");
  mp_nil(&m);
  mp_s(&m, "value");
  mp_s(&m, "not a bin, but HANDOFF does not use value");
  mp_s(&m, "f");
  msgpack_pack_double(&m.pk, 1.5);
  mp_s(&m, "e");
  msgpack_pack_ext_with_body(&m.pk, "abc", 3, 7);
  mp_s(&m, "fe");
  mp_raw(&m, "\xd4\x01\x02", 3);
  mp_s(&m, "mm");
  mp_map(&m, 1);
  mp_u(&m, 1);
  mp_arr(&m, 0);
  mp_s(&m, "");
  mp_nil(&m);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.type, DHT_MSG_HANDOFF);
  assert_true(msg.rid == 7);
  assert_int_equal(msg.n_items, 2);
  assert_memory_equal(msg.items[0].key.p, "k1", 2);
  assert_memory_equal(msg.items[0].value.p, "v1", 2);
  assert_true(msg.items[0].has_version);
  assert_true(msg.items[0].version.hlc == 12345);
  assert_memory_equal(msg.items[0].version.writer.b, id_n(5).b, DHT_ID_LEN);
  assert_true(msg.items[0].tombstone);
  assert_false(msg.items[1].has_version);
  assert_int_equal(msg.items[1].value.len, 0);
  assert_int_equal(msg.value.len, 0);
  assert_false(msg.has_pred);
  dht_msg_free(&msg);
  mp_free(&m);

  /* pred: nil where it is used. */
  begin_one(&m, DHT_MSG_LEAVE, 3);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "pred");
  mp_nil(&m);
  mp_s(&m, "succs");
  mp_arr(&m, 1);
  mp_peer(&m, 2);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_true(msg.has_peer);
  assert_false(msg.has_pred);
  assert_int_equal(msg.n_succs, 1);
  dht_msg_free(&msg);
  mp_free(&m);

  /* The replication keys where a type does not use them, with wrong types
   * and out-of-range values: LEAVE has no preds, FETCH no limit or more,
   * RECORD no digests or buckets, SCAN no to. */
  begin_one(&m, DHT_MSG_LEAVE, 3);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "preds");
  mp_s(&m, "not peers");
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.n_preds, 0);
  assert_null(msg.preds);
  dht_msg_free(&msg);
  mp_free(&m);
  begin_one(&m, DHT_MSG_FETCH, 3);
  mp_s(&m, "key");
  mp_bin(&m, "k", 1);
  mp_s(&m, "limit");
  mp_i(&m, -1);
  mp_s(&m, "more");
  mp_u(&m, 1);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.limit, 0);
  assert_false(msg.more);
  dht_msg_free(&msg);
  mp_free(&m);
  begin_one(&m, DHT_MSG_RECORD, 3);
  mp_s(&m, "items");
  mp_arr(&m, 0);
  mp_s(&m, "digests");
  mp_arr(&m, 0);
  mp_s(&m, "buckets");
  mp_arr(&m, 1);
  mp_u(&m, 9999);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.n_items, 0);
  assert_int_equal(msg.n_digests + msg.n_buckets, 0);
  dht_msg_free(&msg);
  mp_free(&m);
  begin_one(&m, DHT_MSG_SCAN, 3);
  mp_s(&m, "to");
  mp_u(&m, 1);
  mp_s(&m, "from");
  mp_id(&m, 8);
  mp_s(&m, "limit");
  mp_u(&m, 10);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_memory_equal(msg.from.b, id_n(8).b, DHT_ID_LEN);
  assert_int_equal(msg.limit, 10);
  dht_msg_free(&msg);
  mp_free(&m);
}

/* ---- tests: versioned items, SYNC, SYNC_R, SCAN ---------------------------
 */

/* The types whose items may be versioned; HANDOFF accepts both forms too. */
static const int item_types[] = {DHT_MSG_HANDOFF, DHT_MSG_REPLICATE,
                                 DHT_MSG_SYNC_R, DHT_MSG_RECORD,
                                 DHT_MSG_SCAN_R};
#define N_ITEM_TYPES (sizeof(item_types) / sizeof(item_types[0]))

/* Starts a body of item-carrying type t with its other required fields
 * (SYNC_R's buckets), then the key "items": the caller packs the array. */
static void begin_items(mp *m, int t) {
  begin_one(m, t, t == DHT_MSG_SYNC_R ? 2 : 1);
  if (t == DHT_MSG_SYNC_R) {
    mp_s(m, "buckets");
    mp_arr(m, 0);
  }
  mp_s(m, "items");
}

static void test_items_versions(void **state) {
  dht_wire_limits lim = lim_default();
  dht_kv items[5];
  dht_msg m, out;
  dht_buf buf;
  size_t i, k;
  mp want;

  (void)state;
  /* Versioned and plain items side by side; hlc at 0, 1 and its largest,
   * writers at both ends of the ring, tombstones with and without a value
   * (the codec does not require a tombstone to be empty). */
  memset(items, 0, sizeof(items));
  items[0].key = cs("plain");
  items[0].value = cs("v0");
  items[1].key = cs("old");
  items[1].value = cs("v1");
  items[1].has_version = true;
  items[1].version.hlc = 0;
  items[2].key = cs("gone");
  items[2].has_version = true;
  items[2].tombstone = true;
  items[2].version.hlc = 1;
  items[2].version.writer = id_max();
  items[3].key = cs("newest");
  items[3].value = cs("v3");
  items[3].has_version = true;
  items[3].version.hlc = UINT64_MAX;
  items[3].version.writer = id_n(9);
  items[4].key = cs("gone-but-valued");
  items[4].value = cs("v4");
  items[4].has_version = true;
  items[4].tombstone = true;
  items[4].version.hlc = 0x0000018b2f3a4c5dull << 16 | 7;
  items[4].version.writer = id_n(10);

  for (k = 0; k < N_ITEM_TYPES; k++) {
    sample_msg(&m, item_types[k], V_MID);
    m.items = items;
    m.n_items = 5;
    dht_buf_init(&buf);
    assert_int_equal(dht_msg_encode(&m, &buf), 0);
    assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                    buf.len - DHT_FRAME_HEADER_LEN, &lim),
                     0);
    assert_int_equal(out.type, item_types[k]);
    assert_int_equal(out.n_items, 5);
    for (i = 0; i < 5; i++) {
      assert_bytes_eq(out.items[i].key, items[i].key);
      assert_bytes_eq(out.items[i].value, items[i].value);
      assert_int_equal(out.items[i].has_version, items[i].has_version);
      assert_int_equal(out.items[i].tombstone, items[i].tombstone);
      assert_true(out.items[i].version.hlc == items[i].version.hlc);
      assert_memory_equal(out.items[i].version.writer.b,
                          items[i].version.writer.b, DHT_ID_LEN);
    }
    dht_msg_free(&out);
    dht_buf_free(&buf);
  }

  /* A plain item travels as [key, value] even if the caller left a stale
   * tombstone or version in it: the decoder reports neither. */
  sample_msg(&m, DHT_MSG_REPLICATE, V_MIN);
  items[0].tombstone = true;
  items[0].version.hlc = 99;
  m.items = items;
  m.n_items = 1;
  dht_buf_init(&buf);
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                  buf.len - DHT_FRAME_HEADER_LEN, &lim),
                   0);
  assert_false(out.items[0].has_version);
  assert_false(out.items[0].tombstone);
  assert_true(out.items[0].version.hlc == 0);
  dht_msg_free(&out);

  /* The encoder's bytes, against a body packed by hand from the spec:
   * v, t, rid, items; [key, value, hlc, writer, tombstone]. */
  buf.len = 0;
  m.rid = 5;
  m.items = items + 2;
  m.n_items = 3;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  mp_init(&want);
  mp_map(&want, 4);
  mp_hdr(&want, 1, DHT_MSG_REPLICATE, 5);
  mp_s(&want, "items");
  mp_arr(&want, 3);
  mp_arr(&want, 5);
  mp_bin(&want, "gone", 4);
  mp_bin(&want, "", 0);
  mp_u(&want, 1);
  mp_bin(&want, items[2].version.writer.b, DHT_ID_LEN);
  msgpack_pack_true(&want.pk);
  mp_vitem(&want, "newest", "v3", UINT64_MAX, 9, false);
  mp_vitem(&want, "gone-but-valued", "v4", items[4].version.hlc, 10, true);
  assert_int_equal(buf.len - DHT_FRAME_HEADER_LEN, want.sb.size);
  assert_memory_equal(buf.data + DHT_FRAME_HEADER_LEN, want.sb.data,
                      want.sb.size);
  mp_free(&want);
  dht_buf_free(&buf);
}

/* An item is [key, value] or [key, value, hlc, writer, tombstone]; sizes 3
 * and 4 are neither, in every type that carries items, and in any position
 * of the array. Size 6 and more: the extra elements are skipped. */
static void test_items_sizes(void **state) {
  dht_wire_limits lim = lim_default();
  size_t k;
  uint32_t size;

  (void)state;
  for (k = 0; k < N_ITEM_TYPES; k++) {
    for (size = 0; size <= 7; size++) {
      bool good = size == 2 || size >= 5;
      uint32_t j;
      dht_msg msg;
      outcome o;
      mp m;

      begin_items(&m, item_types[k]);
      mp_arr(&m, 2);
      mp_vitem(&m, "first", "ok", 3, 4, false); /* a good item first */
      mp_arr(&m, size);
      for (j = 0; j < size; j++) {
        switch (j) {
        case 0:
          mp_bin(&m, "key", 3);
          break;
        case 1:
          mp_bin(&m, "val", 3);
          break;
        case 2:
          mp_u(&m, 77);
          break;
        case 3:
          mp_id(&m, 6);
          break;
        case 4:
          msgpack_pack_true(&m.pk);
          break;
        default:
          mp_s(&m, "later");
          break;
        }
      }
      o = decode_mp(&m);
      if (o.rv != (good ? 0 : DHT_ERR_BAD_TYPE)) {
        fail_msg("%s: item of %u elements: got %d",
                 dht_msg_type_name(item_types[k]), (unsigned)size, o.rv);
      }
      assert_true(o.can_reply);
      if (good) {
        assert_int_equal(
            dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim),
            0);
        assert_int_equal(msg.n_items, 2);
        assert_true(msg.items[0].has_version);
        assert_true(msg.items[0].version.hlc == 3);
        assert_bytes_eq(msg.items[1].key, cs("key"));
        assert_bytes_eq(msg.items[1].value, cs("val"));
        assert_int_equal(msg.items[1].has_version, size >= 5);
        if (size >= 5) {
          assert_true(msg.items[1].version.hlc == 77);
          assert_memory_equal(msg.items[1].version.writer.b, id_n(6).b,
                              DHT_ID_LEN);
          assert_true(msg.items[1].tombstone);
        }
        dht_msg_free(&msg);
      }
      mp_free(&m);
    }
  }
}

/* Packs a SYNC body with n digests, the last one last_len bytes long. */
static void mp_sync(mp *m, size_t n, size_t last_len) {
  size_t i;

  begin_one(m, DHT_MSG_SYNC, 3);
  mp_s(m, "from");
  mp_id(m, 1);
  mp_s(m, "to");
  mp_id(m, 2);
  mp_s(m, "digests");
  mp_arr(m, n);
  for (i = 0; i < n; i++) {
    mp_bin(m, g_big + i * DHT_DIGEST_LEN,
           i + 1 == n ? last_len : DHT_DIGEST_LEN);
  }
}

static void test_sync_digests(void **state) {
  static const size_t good_n[] = {1, 2, DHT_SYNC_BUCKETS_MAX};
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  outcome o;
  size_t i;
  mp m;

  (void)state;
  /* 1..256 digests, copied out in order. */
  for (i = 0; i < sizeof(good_n) / sizeof(good_n[0]); i++) {
    mp_sync(&m, good_n[i], DHT_DIGEST_LEN);
    assert_int_equal(
        dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
    assert_int_equal(msg.type, DHT_MSG_SYNC);
    assert_memory_equal(msg.from.b, id_n(1).b, DHT_ID_LEN);
    assert_memory_equal(msg.to.b, id_n(2).b, DHT_ID_LEN);
    assert_int_equal(msg.n_digests, good_n[i]);
    assert_memory_equal(msg.digests, g_big, good_n[i] * DHT_DIGEST_LEN);
    dht_msg_free(&msg);
    mp_free(&m);
  }

  /* None, or one more than the cap. */
  mp_sync(&m, 0, DHT_DIGEST_LEN);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_true(o.can_reply);
  mp_free(&m);
  mp_sync(&m, DHT_SYNC_BUCKETS_MAX + 1, DHT_DIGEST_LEN);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_true(o.can_reply);
  mp_free(&m);

  /* A digest of 15 or 17 bytes (or none), alone or after good ones. */
  for (i = 0; i < 2; i++) {
    size_t n = i == 0 ? 1 : 5;

    mp_sync(&m, n, DHT_DIGEST_LEN - 1);
    assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
    mp_free(&m);
    mp_sync(&m, n, DHT_DIGEST_LEN + 1);
    assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
    mp_free(&m);
    mp_sync(&m, n, 0);
    assert_int_equal(decode_mp(&m).rv, DHT_ERR_BAD_TYPE);
    mp_free(&m);
  }
}

/* Packs a SYNC_R body with n buckets 0, 1, ..., the last one last. */
static void mp_sync_r(mp *m, size_t n, uint64_t last) {
  size_t i;

  begin_one(m, DHT_MSG_SYNC_R, 2);
  mp_s(m, "items");
  mp_arr(m, 0);
  mp_s(m, "buckets");
  mp_arr(m, n);
  for (i = 0; i < n; i++) {
    mp_u(m, i + 1 == n ? last : i);
  }
}

static void test_sync_r_buckets(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  outcome o;
  size_t i;
  mp m;

  (void)state;
  /* None, and all 256 with the largest last; "more" absent is false. */
  mp_sync_r(&m, 0, 0);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.n_buckets, 0);
  assert_false(msg.more);
  dht_msg_free(&msg);
  mp_free(&m);
  mp_sync_r(&m, DHT_SYNC_BUCKETS_MAX, DHT_SYNC_BUCKETS_MAX - 1);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.n_buckets, DHT_SYNC_BUCKETS_MAX);
  for (i = 0; i < DHT_SYNC_BUCKETS_MAX; i++) {
    assert_int_equal(msg.buckets[i], i);
  }
  dht_msg_free(&msg);
  mp_free(&m);

  /* A bucket index of 256 or more, alone or after good ones. */
  mp_sync_r(&m, 1, DHT_SYNC_BUCKETS_MAX);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_LARGE);
  assert_true(o.can_reply);
  mp_free(&m);
  mp_sync_r(&m, 10, DHT_SYNC_BUCKETS_MAX);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  mp_sync_r(&m, 3, 65536); /* would wrap to 0 in a uint16 */
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);
  mp_sync_r(&m, 2, UINT64_MAX);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_TOO_LARGE);
  mp_free(&m);

  /* More buckets than a SYNC can have. */
  mp_sync_r(&m, DHT_SYNC_BUCKETS_MAX + 1, 0);
  o = decode_mp(&m);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_true(o.can_reply);
  mp_free(&m);
}

/* limit is any uint; one beyond 32 bits reads as the largest uint32. */
static void test_scan_limit(void **state) {
  static const uint64_t limits[] = {0, 1, UINT32_MAX, (uint64_t)UINT32_MAX + 1,
                                    UINT64_MAX};
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  size_t i;
  mp m;

  (void)state;
  for (i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
    begin_one(&m, DHT_MSG_SCAN, 2);
    mp_s(&m, "limit");
    mp_u(&m, limits[i]);
    mp_s(&m, "from");
    mp_id(&m, 12);
    assert_int_equal(
        dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
    assert_true(msg.limit ==
                (limits[i] > UINT32_MAX ? UINT32_MAX : (uint32_t)limits[i]));
    assert_memory_equal(msg.from.b, id_n(12).b, DHT_ID_LEN);
    dht_msg_free(&msg);
    mp_free(&m);
  }
}

static void test_free_is_idempotent(void **state) {
  dht_msg msg;

  (void)state;
  memset(&msg, 0, sizeof(msg));
  dht_msg_free(&msg);
  dht_msg_free(&msg);
  assert_null(msg.zone_);
}

/* ---- tests: the pre-scan on its own ---------------------------------------
 */

static void test_mp_check(void **state) {
  static const struct {
    const char *bytes;
    size_t len;
    int rv;
  } cases[] = {
      {"", 0, DHT_ERR_TRUNCATED},
      {"\x00", 1, 0},
      {"\xff", 1, 0},
      {"\xc0", 1, 0},
      {"\xc2", 1, 0},
      {"\xcc\x01", 2, 0},
      {"\xcc", 1, DHT_ERR_TRUNCATED},
      {"\xcd\x01", 2, DHT_ERR_TRUNCATED},
      {"\xce\x01\x02\x03", 4, DHT_ERR_TRUNCATED},
      {"\xcf\x01\x02\x03\x04\x05\x06\x07\x08", 9, 0},
      {"\xcf\x01\x02\x03\x04\x05\x06\x07", 8, DHT_ERR_TRUNCATED},
      {"\xd3\x01\x02\x03\x04\x05\x06\x07\x08", 9, 0},
      {"\xca\x00\x00\x00\x00", 5, 0},
      {"\xcb\x00\x00\x00\x00\x00\x00\x00", 8, DHT_ERR_TRUNCATED},
      {"\xd4\x01\x02", 3, 0},
      {"\xd4\x01", 2, DHT_ERR_TRUNCATED},
      {"\xd8\x01"
       "0123456789abcdef",
       18, 0},
      {"\xd8\x01"
       "0123456789abcde",
       17, DHT_ERR_TRUNCATED},
      {"\xc7\x02\x01"
       "ab",
       5, 0},
      {"\xc7\x02\x01"
       "a",
       4, DHT_ERR_TRUNCATED},
      {"\xc7\x00\x01", 3, 0},
      {"\xc7\x00", 2, DHT_ERR_TRUNCATED},
      {"\xc8\x00\x01\x05x", 5, 0},
      {"\xc8\x00", 2, DHT_ERR_TRUNCATED},
      {"\xa3"
       "abc",
       4, 0},
      {"\xa3"
       "ab",
       3, DHT_ERR_TRUNCATED},
      {"\xd9\x00", 2, 0},
      {"\xda\x00\x02xy", 5, 0},
      {"\xda\x00", 2, DHT_ERR_TRUNCATED},
      {"\xc4\x01x", 3, 0},
      {"\xc5\x00\x01x", 4, 0},
      {"\xc6\x00\x00\x00\x01x", 6, 0},
      {"\xc6\x00\x00\x00\x02x", 6, DHT_ERR_TRUNCATED},
      {"\x90", 1, 0},
      {"\x80", 1, 0},
      {"\x92\xc0\xc0", 3, 0},
      {"\x92\xc0", 2, DHT_ERR_TOO_MANY},
      {"\x81\xc0", 2, DHT_ERR_TOO_MANY},
      {"\x81\xc0\xc0", 3, 0},
      {"\xdc\x00\x01\xc0", 4, 0},
      {"\xdc\x00", 2, DHT_ERR_TRUNCATED},
      {"\xde\x00\x01\xc0\xc0", 5, 0},
      {"\xdd\x00\x00\x00\x00", 5, 0},
      {"\xdf\x00\x00\x00\x01\xa1k\xc0", 8, 0},
      /* Elements owed to an outer container leave no room for a string. */
      {"\x92\xa2xy", 4, DHT_ERR_TRUNCATED},
      /* ... nor for an inner container's elements. */
      {"\x92\x92\xc0\xc0", 4, DHT_ERR_TOO_MANY},
      {"\x92\x92\xc0\xc0\xc0", 5, 0},
      {"\xc0\xc0", 2, DHT_ERR_TRAILING},
      {"\x91\xc0\xc0", 3, DHT_ERR_TRAILING},
      {"\x91\xc1", 2, DHT_ERR_MALFORMED},
  };
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint8_t *copy = malloc(cases[i].len ? cases[i].len : 1);
    int rv;

    assert_non_null(copy);
    memcpy(copy, cases[i].bytes, cases[i].len);
    rv = dht__mp_check(copy, cases[i].len, DHT_NESTING_MAX);
    free(copy);
    if (rv != cases[i].rv) {
      fail_msg("case %zu: got %d, want %d", i, rv, cases[i].rv);
    }
  }
}

/* ---- tests: versions, clocks and lost ranges -------------------------------
 */

/* ver travels on PUT, DEL and ERROR, whole (any stamp, any writer); absent,
 * it is not written and reads as absent, so an owner can tell a write it
 * must stamp from one stamped at hlc 0. Set on a type without ver, it is
 * not written at all. */
static void test_ver_roundtrip(void **state) {
  static const int types[] = {DHT_MSG_PUT, DHT_MSG_DEL, DHT_MSG_ERROR};
  static const uint64_t stamps[] = {0, 1, 1700000000000ull << 16 | 0xffff,
                                    UINT64_MAX};
  static const int without[] = {DHT_MSG_GET,   DHT_MSG_OK,    DHT_MSG_VALUE,
                                DHT_MSG_FETCH, DHT_MSG_PONG,  DHT_MSG_RECORD,
                                DHT_MSG_STATS, DHT_MSG_ACCEPTED};
  dht_wire_limits lim = lim_default();
  dht_msg m, out;
  dht_buf buf;
  size_t i, j;

  (void)state;
  dht_buf_init(&buf);
  for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
    for (j = 0; j < sizeof(stamps) / sizeof(stamps[0]); j++) {
      sample_msg(&m, types[i], V_MID);
      m.has_ver = true;
      m.ver.hlc = stamps[j];
      m.ver.writer = j % 2 ? id_max() : id_n(70 + (unsigned)j);
      if (j == 0) {
        memset(m.ver.writer.b, 0, DHT_ID_LEN);
      }
      roundtrip(&m);
    }
    sample_msg(&m, types[i], V_MID);
    m.has_ver = false;
    m.ver.hlc = 99; /* ignored: has_ver is false */
    buf.len = 0;
    assert_int_equal(dht_msg_encode(&m, &buf), 0);
    assert_false(contains(buf.data, buf.len, "\xa3ver"));
    assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                    buf.len - DHT_FRAME_HEADER_LEN, &lim),
                     0);
    assert_false(out.has_ver);
    assert_true(out.ver.hlc == 0);
    dht_msg_free(&out);
  }
  for (i = 0; i < sizeof(without) / sizeof(without[0]); i++) {
    sample_msg(&m, without[i], V_MID);
    m.has_ver = true;
    m.ver.hlc = 5;
    m.ver.writer = id_n(1);
    buf.len = 0;
    assert_int_equal(dht_msg_encode(&m, &buf), 0);
    assert_false(contains(buf.data, buf.len, "\xa3ver"));
    assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                    buf.len - DHT_FRAME_HEADER_LEN, &lim),
                     0);
    assert_false(out.has_ver);
    dht_msg_free(&out);
  }
  dht_buf_free(&buf);
}

/* A stamped PUT, byte for byte: ver is the last entry, a 2-array of the
 * stamp (in the smallest uint encoding) and the writer as a bin of 20. */
static void test_ver_exact_bytes(void **state) {
  static const uint8_t put[] = {
      0x00, 0x00, 0x00, 0x4d, 0x88, 0xa1, 0x76, 0x01, 0xa1, 0x74, 0x09, 0xa3,
      0x72, 0x69, 0x64, 0x07, 0xa4, 0x68, 0x6f, 0x70, 0x73, 0x00, 0xa5, 0x66,
      0x69, 0x6e, 0x61, 0x6c, 0xc2, 0xa3, 0x6b, 0x65, 0x79, 0xc4, 0x01, 0x6b,
      0xa5, 0x76, 0x61, 0x6c, 0x75, 0x65, 0xc4, 0x01, 0x76, 0xa3, 0x76, 0x65,
      0x72, 0x92, 0xcf, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00, 0x03, 0xc4,
      0x14, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a,
      0x3b, 0x3c, 0x3d, 0x3e, 0x3f, 0x40, 0x41, 0x42, 0x43};
  dht_msg m;
  unsigned i;

  (void)state;
  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_PUT;
  m.rid = 7;
  m.key = cs("k");
  m.value = cs("v");
  m.has_ver = true;
  m.ver.hlc = 1700000000000ull << 16 | 3;
  for (i = 0; i < DHT_ID_LEN; i++) {
    m.ver.writer.b[i] = (uint8_t)(0x30 + i);
  }
  expect_bytes(&m, put, sizeof(put));
}

/* A STALE refusal packed by hand (msgpack-c, not the encoder) decodes with
 * its code, its text and the version it names, the stamp in a wider
 * encoding than needed; without ver it decodes as before. */
static void test_ver_decoded_from_hand_made_error(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  mp m;

  (void)state;
  begin_one(&m, DHT_MSG_ERROR, 3);
  mp_s(&m, "ver");
  mp_arr(&m, 2);
  mp_raw(&m, "\xcf\x00\x00\x00\x00\x00\x00\x00\x2a", 9); /* 42 */
  mp_id(&m, 33);
  mp_s(&m, "code");
  mp_i(&m, DHT_ERR_STALE);
  mp_s(&m, "msg");
  mp_s(&m, "node a:1: stale");
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.error_code, DHT_ERR_STALE);
  assert_true(bytes_eq_str(msg.error_msg, "node a:1: stale"));
  assert_true(msg.has_ver);
  assert_true(msg.ver.hlc == 42);
  assert_memory_equal(msg.ver.writer.b, id_n(33).b, DHT_ID_LEN);
  dht_msg_free(&msg);
  mp_free(&m);

  begin_one(&m, DHT_MSG_ERROR, 1);
  mp_s(&m, "code");
  mp_i(&m, DHT_ERR_STALE);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_false(msg.has_ver);
  dht_msg_free(&msg);
  mp_free(&m);
}

/* wall travels on NEIGHBORS, from 1 ms to the largest uint; 0 means "not
 * sent" and is not written. No other type writes it. */
static void test_wall_roundtrip(void **state) {
  static const uint64_t walls[] = {1, 1700000000000ull, UINT64_MAX};
  dht_wire_limits lim = lim_default();
  dht_msg m, out;
  dht_buf buf;
  size_t i;
  mp hand;

  (void)state;
  dht_buf_init(&buf);
  for (i = 0; i < sizeof(walls) / sizeof(walls[0]); i++) {
    sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
    m.wall_ms = walls[i];
    roundtrip(&m);
  }
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
  m.wall_ms = 0;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_false(contains(buf.data, buf.len, "\xa4wall"));
  roundtrip(&m);
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  m.wall_ms = 1700000000000ull;
  buf.len = 0;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_false(contains(buf.data, buf.len, "\xa4wall"));
  assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                  buf.len - DHT_FRAME_HEADER_LEN, &lim),
                   0);
  assert_true(out.wall_ms == 0);
  dht_msg_free(&out);
  dht_buf_free(&buf);

  /* Packed by hand, in a wider encoding, before the required fields. */
  begin_one(&hand, DHT_MSG_NEIGHBORS, 3);
  mp_s(&hand, "wall");
  mp_raw(&hand, "\xcf\x00\x00\x00\x00\x00\x00\x00\x05", 9);
  mp_s(&hand, "peer");
  mp_peer(&hand, 1);
  mp_s(&hand, "succs");
  mp_arr(&hand, 0);
  assert_int_equal(dht_msg_decode(&out, (const uint8_t *)hand.sb.data,
                                  hand.sb.size, &lim),
                   0);
  assert_true(out.wall_ms == 5);
  dht_msg_free(&out);
  mp_free(&hand);
}

/* Decodes a NEIGHBORS with one field, key, whose value is the one msgpack
 * byte raw, and a peer when with_peer; returns the decoder's answer. */
static int neighbors_with(const char *key, const char *raw, bool with_peer) {
  mp hand;
  int rv;

  begin_one(&hand, DHT_MSG_NEIGHBORS, with_peer ? 2 : 1);
  mp_s(&hand, key);
  mp_raw(&hand, raw, 1);
  if (with_peer) {
    mp_s(&hand, "peer");
    mp_peer(&hand, 1);
  }
  rv = decode_raw(hand.sb.data, hand.sb.size).rv;
  mp_free(&hand);
  return rv;
}

/* A NEIGHBORS marked same carries its view, wall and nothing of the view
 * itself, even when the struct holds it; only same lets peer and succs be
 * left out. */
static void test_neighbors_same(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg m, out;
  dht_buf buf;

  (void)state;
  dht_buf_init(&buf);
  sample_msg(&m, DHT_MSG_NEIGHBORS, V_MID);
  m.same = true;
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  assert_false(contains(buf.data, buf.len, "\xa4peer"));
  assert_false(contains(buf.data, buf.len, "\xa4pred"));
  assert_false(contains(buf.data, buf.len, "\xa5succs"));
  assert_false(contains(buf.data, buf.len, "\xa5preds"));
  assert_int_equal(dht_msg_decode(&out, buf.data + DHT_FRAME_HEADER_LEN,
                                  buf.len - DHT_FRAME_HEADER_LEN, &lim),
                   0);
  assert_true(out.same);
  assert_true(out.view == m.view);
  assert_true(out.wall_ms == m.wall_ms);
  assert_false(out.has_peer);
  assert_false(out.has_pred);
  assert_int_equal(out.n_succs + out.n_preds, 0);
  dht_msg_free(&out);
  dht_buf_free(&buf);

  /* Without same, peer and succs are required as ever. */
  assert_int_equal(neighbors_with("view", "\x09", false),
                   DHT_ERR_MISSING_FIELD);
  assert_int_equal(neighbors_with("same", "\xc2", true), /* false */
                   DHT_ERR_MISSING_FIELD);
  assert_int_equal(neighbors_with("same", "\xc3", false), 0); /* true */
  assert_int_equal(neighbors_with("same", "\x01", false), DHT_ERR_BAD_TYPE);
}

/* Packs the start of a STATS_R of rid 77: its required fields, empty,
 * then field, an array of n entries to follow. */
static void mp_stats_r_head(mp *m, const char *field, size_t n) {
  begin_one(m, DHT_MSG_STATS_R, 5);
  mp_s(m, "peer");
  mp_peer(m, 1);
  mp_s(m, "succs");
  mp_arr(m, 0);
  mp_s(m, "fingers");
  mp_arr(m, 0);
  mp_s(m, "counters");
  mp_map(m, 0);
  mp_s(m, field);
  mp_arr(m, n);
}

/* Packs a STATS_R of rid 77 whose lost array has n ranges, the first of
 * them with n_holders holders. */
static void mp_stats_r_lost(mp *m, size_t n, size_t n_holders) {
  size_t i, k;

  mp_stats_r_head(m, "lost", n);
  for (i = 0; i < n; i++) {
    mp_arr(m, 4);
    mp_id(m, 40 + (unsigned)i);
    mp_id(m, 60 + (unsigned)i);
    mp_u(m, 1700000000000ull + i);
    mp_arr(m, i == 0 ? n_holders : 1);
    for (k = 0; k < (i == 0 ? n_holders : 1); k++) {
      mp_peer(m, (unsigned)k);
    }
  }
}

/* STATS_R carries 0, 1 or up to DHT_LOST_MAX lost ranges, each with up to
 * DHT_SUCC_LIST_MAX holders; one more of either is refused by the encoder
 * (INVAL, nothing written) and, packed by hand, by the decoder (TOO_MANY,
 * with the rid still readable). A range with a bad holder address is not
 * encoded either. */
static void test_lost_ranges_roundtrip_and_limits(void **state) {
  dht_wire_limits lim = lim_default();
  dht_peer_ref bad_holders[2];
  dht_lost_range one;
  dht_msg m, out;
  outcome o;
  mp hand;

  (void)state;
  sample_msg(&m, DHT_MSG_STATS_R, V_MID);
  m.n_lost = 0;
  roundtrip(&m);
  m.n_lost = 1; /* no holders, at 0 */
  roundtrip(&m);
  m.lost = g_lost + 1; /* to the last id, at UINT64_MAX, 3 holders */
  roundtrip(&m);
  m.lost = g_lost + 2; /* 32 holders of 255-byte addresses */
  roundtrip(&m);
  m.lost = g_lost;
  m.n_lost = DHT_LOST_MAX;
  roundtrip(&m);
  m.n_lost = DHT_LOST_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  one = g_lost[2];
  one.n_holders = DHT_SUCC_LIST_MAX + 1;
  m.lost = &one;
  m.n_lost = 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad_holders[0] = g_peers[0];
  bad_holders[1] = g_peers[1];
  bad_holders[1].addr = bs(NULL, 0);
  one.holders = bad_holders;
  one.n_holders = 2;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad_holders[1].addr = bs(g_addr_max, DHT_ADDR_LEN_MAX + 1);
  expect_encode_fails(&m, DHT_ERR_INVAL);

  mp_stats_r_lost(&hand, DHT_LOST_MAX, DHT_SUCC_LIST_MAX);
  assert_int_equal(dht_msg_decode(&out, (const uint8_t *)hand.sb.data,
                                  hand.sb.size, &lim),
                   0);
  assert_int_equal(out.n_lost, DHT_LOST_MAX);
  assert_memory_equal(out.lost[0].from.b, id_n(40).b, DHT_ID_LEN);
  assert_memory_equal(out.lost[0].to.b, id_n(60).b, DHT_ID_LEN);
  assert_true(out.lost[0].at_ms == 1700000000000ull);
  assert_int_equal(out.lost[0].n_holders, DHT_SUCC_LIST_MAX);
  assert_true(bytes_eq_str(out.lost[0].holders[31].addr, g_addr[31]));
  assert_memory_equal(out.lost[15].from.b, id_n(55).b, DHT_ID_LEN);
  assert_int_equal(out.lost[15].n_holders, 1);
  dht_msg_free(&out);
  mp_free(&hand);

  mp_stats_r_lost(&hand, DHT_LOST_MAX + 1, 1);
  o = decode_mp(&hand);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_true(o.can_reply);
  assert_true(o.rid == 77);
  mp_free(&hand);
  mp_stats_r_lost(&hand, 1, DHT_SUCC_LIST_MAX + 1);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_TOO_MANY);
  mp_free(&hand);
  /* A huge declared count is refused before anything is allocated. */
  begin_one(&hand, DHT_MSG_STATS_R, 1);
  mp_s(&hand, "lost");
  mp_raw(&hand, "\xdd\xff\xff\xff\xff", 5);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_TOO_MANY);
  mp_free(&hand);
}

/* Packs a STATS_R of rid 77 with one field, name, an array of n entries
 * of elems elements each: [peer, uint...] with the last element last. */
static void mp_stats_r_list(mp *m, const char *name, size_t n, size_t elems,
                            uint64_t last) {
  size_t i, k;

  mp_stats_r_head(m, name, n);
  for (i = 0; i < n; i++) {
    mp_arr(m, elems);
    mp_peer(m, (unsigned)i);
    for (k = 1; k < elems; k++) {
      if (elems == 8 && (k == 1 || k == 2)) {
        mp_id(m, 40 + (unsigned)k); /* an exchange's from and to */
      } else {
        mp_u(m, k + 1 == elems ? last : 1000 + k);
      }
    }
  }
}

/* STATS_R carries up to DHT_EXCHANGES_MAX exchanges, each with one of the
 * three outcomes, and up to DHT_DEAD_MAX dead peers; the encoder refuses
 * one more, an unknown outcome or a bad address (INVAL), the decoder one
 * more (TOO_MANY), an unknown outcome (TOO_LARGE) or a wrong shape
 * (BAD_TYPE), with the rid still readable. */
static void test_exchanges_and_dead_roundtrip_and_limits(void **state) {
  dht_wire_limits lim = lim_default();
  dht_exchange bad;
  dht_msg m, out;
  outcome o;
  mp hand;

  (void)state;
  sample_msg(&m, DHT_MSG_STATS_R, V_MAX);
  roundtrip(&m);
  m.n_exchanges = DHT_EXCHANGES_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.n_exchanges = 1;
  m.n_dead = DHT_DEAD_MAX + 1;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  m.n_dead = 0;
  bad = g_exchanges[0];
  bad.outcome = DHT_EXCHANGE_OUTCOME_LAST + 1;
  m.exchanges = &bad;
  expect_encode_fails(&m, DHT_ERR_INVAL);
  bad.outcome = DHT_EXCHANGE_FAILED;
  bad.peer.addr = bs(NULL, 0);
  expect_encode_fails(&m, DHT_ERR_INVAL);

  mp_stats_r_list(&hand, "exchanges", DHT_EXCHANGES_MAX, 8,
                  DHT_EXCHANGE_FAILED);
  assert_int_equal(dht_msg_decode(&out, (const uint8_t *)hand.sb.data,
                                  hand.sb.size, &lim),
                   0);
  assert_int_equal(out.n_exchanges, DHT_EXCHANGES_MAX);
  assert_true(bytes_eq_str(out.exchanges[7].peer.addr, g_addr[7]));
  assert_memory_equal(out.exchanges[7].to.b, id_n(42).b, DHT_ID_LEN);
  assert_true(out.exchanges[7].ago_ms == 1003 &&
              out.exchanges[7].pushed == 1006);
  assert_true(out.exchanges[7].outcome == DHT_EXCHANGE_FAILED);
  dht_msg_free(&out);
  mp_free(&hand);
  mp_stats_r_list(&hand, "exchanges", DHT_EXCHANGES_MAX + 1, 8, 0);
  o = decode_mp(&hand);
  assert_int_equal(o.rv, DHT_ERR_TOO_MANY);
  assert_true(o.can_reply && o.rid == 77);
  mp_free(&hand);
  mp_stats_r_list(&hand, "exchanges", 1, 8, DHT_EXCHANGE_OUTCOME_LAST + 1);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_TOO_LARGE);
  mp_free(&hand);
  mp_stats_r_list(&hand, "exchanges", 1, 7, 0);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_BAD_TYPE);
  mp_free(&hand);
  mp_stats_r_list(&hand, "dead", DHT_DEAD_MAX, 2, UINT64_MAX);
  assert_int_equal(decode_mp(&hand).rv, 0);
  mp_free(&hand);
  mp_stats_r_list(&hand, "dead", DHT_DEAD_MAX + 1, 2, 5);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_TOO_MANY);
  mp_free(&hand);
  mp_stats_r_list(&hand, "dead", 1, 3, 5);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_BAD_TYPE);
  mp_free(&hand);
}

/* ACK_LOST names the range it acknowledges, both ends, in either order,
 * the whole ring (from == to) included; both are required. */
static void test_ack_lost_roundtrip(void **state) {
  outcome o;
  dht_msg m;
  mp hand;

  (void)state;
  msg_init(&m, DHT_MSG_ACK_LOST, 31);
  m.from = id_n(1);
  m.to = id_n(2);
  roundtrip(&m);
  m.from = id_max(); /* wraps around the top of the ring */
  m.to = id_u64(3);
  roundtrip(&m);
  m.to = m.from;
  roundtrip(&m);

  begin_one(&hand, DHT_MSG_ACK_LOST, 1);
  mp_s(&hand, "from");
  mp_id(&hand, 1);
  o = decode_mp(&hand);
  assert_int_equal(o.rv, DHT_ERR_MISSING_FIELD);
  assert_true(o.can_reply); /* a request: the node answers the error */
  assert_false(dht_msg_type_is_reply(DHT_MSG_ACK_LOST));
  mp_free(&hand);
  begin_one(&hand, DHT_MSG_ACK_LOST, 1);
  mp_s(&hand, "to");
  mp_id(&hand, 1);
  assert_int_equal(decode_mp(&hand).rv, DHT_ERR_MISSING_FIELD);
  mp_free(&hand);
}

/* The codes of the write refusals and of loss: their wire values never
 * change, each has a name and a text of its own, distinct from every other
 * code's, so a client can tell them apart and show them. */
static void test_new_error_codes(void **state) {
  static const struct {
    int code;
    int value;
    const char *name;
  } codes[] = {
      {DHT_ERR_DISK_FULL, -21, "DISK_FULL"},
      {DHT_ERR_CLOCK_SKEW, -22, "CLOCK_SKEW"},
      {DHT_ERR_STALE, -23, "STALE"},
      {DHT_ERR_LOST, -24, "LOST"},
      {DHT_ERR_FORBIDDEN, -25, "FORBIDDEN"},
      {DHT_ERR_AUTH, -26, "AUTH"},
      {DHT_ERR_UNBOUND, -27, "UNBOUND"},
      {DHT_ERR_NOT_NEIGHBOR, -28, "NOT_NEIGHBOR"},
  };
  size_t i;
  int other;

  (void)state;
  assert_int_equal(DHT_ERR_MIN, -28);
  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    const char *text = dht_strerror(codes[i].code);

    assert_int_equal(codes[i].code, codes[i].value);
    assert_string_equal(dht_errname(codes[i].code), codes[i].name);
    assert_non_null(text);
    assert_true(strlen(text) > 0);
    for (other = -1; other >= DHT_ERR_MIN; other--) {
      if (other != codes[i].code) {
        assert_string_not_equal(text, dht_strerror(other));
        assert_string_not_equal(codes[i].name, dht_errname(other));
      }
    }
    assert_string_not_equal(text, dht_strerror(DHT_ERR_MIN - 1));
  }
  assert_string_equal(dht_errname(DHT_ERR_MIN - 1), "UNKNOWN");
  /* The refusal a client shows for a full disk says so. */
  assert_non_null(strstr(dht_strerror(DHT_ERR_DISK_FULL), "disk full"));
}

/* ver, wall and lost are read only where the type uses them: elsewhere a
 * value of any type is ignored, as v1 ignores every key a type does not
 * use. Twice in one map, they are a duplicate key like any other. */
static void test_ver_wall_lost_ignored_elsewhere(void **state) {
  dht_wire_limits lim = lim_default();
  dht_msg msg;
  mp m;

  (void)state;
  begin_one(&m, DHT_MSG_GET, 4);
  mp_s(&m, "key");
  mp_bin(&m, "k", 1);
  mp_s(&m, "ver");
  mp_s(&m, "not a version");
  mp_s(&m, "wall");
  mp_s(&m, "not a clock");
  mp_s(&m, "lost");
  mp_u(&m, 1);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_false(msg.has_ver);
  assert_true(msg.wall_ms == 0);
  assert_int_equal(msg.n_lost, 0);
  dht_msg_free(&msg);
  mp_free(&m);

  begin_one(&m, DHT_MSG_NEIGHBORS, 4);
  mp_s(&m, "peer");
  mp_peer(&m, 1);
  mp_s(&m, "succs");
  mp_arr(&m, 0);
  mp_s(&m, "lost");
  mp_nil(&m);
  mp_s(&m, "ver");
  mp_u(&m, 3);
  assert_int_equal(
      dht_msg_decode(&msg, (const uint8_t *)m.sb.data, m.sb.size, &lim), 0);
  assert_int_equal(msg.n_lost, 0);
  assert_false(msg.has_ver);
  dht_msg_free(&msg);
  mp_free(&m);

  begin_one(&m, DHT_MSG_DEL, 3);
  mp_s(&m, "key");
  mp_bin(&m, "k", 1);
  mp_s(&m, "ver");
  pack_good(&m, K_VER);
  mp_s(&m, "ver");
  pack_good(&m, K_VER);
  assert_int_equal(decode_mp(&m).rv, DHT_ERR_MALFORMED);
  mp_free(&m);
}

/* A PUT whose ver is cut short is refused wherever the body ends inside
 * it, and TRUNCATED once the writer id has begun; a writer id that is
 * whole but 19 bytes long is BAD_TYPE, with the request id readable so
 * that the owner can answer; a writer bin that claims 20 bytes but has 19
 * before the next key leaves the map out of step. */
static void test_ver_truncated_writer(void **state) {
  static const uint8_t id19[19];
  dht_msg m;
  dht_buf buf;
  size_t body_len, ver_at, writer_at, n;
  outcome o;
  mp hand;

  (void)state;
  dht_buf_init(&buf);
  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_PUT;
  m.rid = 7;
  m.key = cs("k");
  m.value = cs("v");
  m.has_ver = true;
  m.ver.hlc = 1700000000000ull << 16;
  m.ver.writer = id_n(5);
  assert_int_equal(dht_msg_encode(&m, &buf), 0);
  body_len = buf.len - DHT_FRAME_HEADER_LEN;
  /* ver is last: "ver", 0x92, a uint 64 (9 bytes), 0xc4 0x14, 20 bytes. */
  ver_at = body_len - (4 + 1 + 9 + 2 + DHT_ID_LEN);
  assert_memory_equal(buf.data + DHT_FRAME_HEADER_LEN + ver_at, "\xa3ver", 4);
  writer_at = body_len - (2 + DHT_ID_LEN);
  for (n = ver_at; n < body_len; n++) {
    o = decode_raw(buf.data + DHT_FRAME_HEADER_LEN, n);
    /* Cut where an element is owed but none of it is there, the counts
     * say so first (TOO_MANY); cut inside the writer, its length runs
     * past the end. */
    if (n > writer_at ? o.rv != DHT_ERR_TRUNCATED
                      : o.rv != DHT_ERR_TRUNCATED && o.rv != DHT_ERR_TOO_MANY) {
      fail_msg("PUT cut at %zu of %zu: got %d", n, body_len, o.rv);
    }
  }
  assert_int_equal(decode_raw(buf.data + DHT_FRAME_HEADER_LEN, body_len).rv,
                   0);
  dht_buf_free(&buf);

  begin_one(&hand, DHT_MSG_PUT, 3);
  mp_s(&hand, "key");
  mp_bin(&hand, "k", 1);
  mp_s(&hand, "value");
  mp_bin(&hand, "v", 1);
  mp_s(&hand, "ver");
  mp_arr(&hand, 2);
  mp_u(&hand, 5);
  mp_bin(&hand, id19, sizeof(id19));
  o = decode_mp(&hand);
  assert_int_equal(o.rv, DHT_ERR_BAD_TYPE);
  assert_true(o.can_reply);
  assert_true(o.rid == 77);
  mp_free(&hand);

  /* The writer's header says 20 bytes, 19 follow, then "key": the bin
   * swallows the next key's first byte, the map goes out of step and ends
   * early, and the well-formedness check (before any field) refuses it. */
  begin_one(&hand, DHT_MSG_PUT, 3);
  mp_s(&hand, "ver");
  mp_arr(&hand, 2);
  mp_u(&hand, 5);
  mp_raw(&hand, "\xc4\x14", 2);
  mp_raw(&hand, id19, sizeof(id19));
  mp_s(&hand, "key");
  mp_bin(&hand, "k", 1);
  mp_s(&hand, "value");
  mp_bin(&hand, "v", 1);
  o = decode_mp(&hand);
  assert_int_equal(o.rv, DHT_ERR_TRAILING); /* "value" is left over */
  assert_false(o.can_reply); /* not well-formed: nothing can be trusted */
  mp_free(&hand);
}

/* ---- tests: mutation -------------------------------------------------------
 */

static bool is_decode_error(int rv) {
  switch (rv) {
  case DHT_ERR_TRUNCATED:
  case DHT_ERR_MALFORMED:
  case DHT_ERR_TRAILING:
  case DHT_ERR_TOO_LARGE:
  case DHT_ERR_TOO_MANY:
  case DHT_ERR_BAD_TYPE:
  case DHT_ERR_MISSING_FIELD:
  case DHT_ERR_BAD_VERSION:
  case DHT_ERR_UNKNOWN_TYPE:
    return true;
  default:
    return false;
  }
}

static void test_mutation(void **state) {
  /* Bytes that make interesting headers: huge containers and strings,
   * reserved, nil, fixmap/fixarray, ext. */
  static const uint8_t spice[] = {0x00, 0xff, 0xc1, 0xc0, 0xdd, 0xdf,
                                  0xc6, 0xdb, 0x8f, 0x9f, 0xd8, 0xc9,
                                  0x7f, 0x80, 0x90, 0xa0, 0x14, 0x40};
  dht_wire_limits lim = lim_default();
  dht_buf samples[2 * (DHT_MSG_TYPE_LAST + 1)];
  uint8_t work[8192];
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  size_t n_samples = 0, ok = 0, bad = 0, i;
  unsigned round;
  int t;

  (void)state;
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    dht_msg m;
    int v;

    for (v = V_MIN; v <= V_MID; v++) {
      sample_msg(&m, t, (enum variant)v);
      dht_buf_init(&samples[n_samples]);
      assert_int_equal(dht_msg_encode(&m, &samples[n_samples]), 0);
      assert_true(samples[n_samples].len < sizeof(work) / 2);
      n_samples++;
    }
  }

  for (round = 0; round < MUTATION_ROUNDS; round++) {
    const dht_buf *s = &samples[xorshift64(&seed) % n_samples];
    size_t len = s->len - DHT_FRAME_HEADER_LEN;
    unsigned edits = 1 + (unsigned)(xorshift64(&seed) % 4), e;
    uint8_t *copy;
    dht_msg msg;
    int rv;

    memcpy(work, s->data + DHT_FRAME_HEADER_LEN, len);
    for (e = 0; e < edits; e++) {
      uint64_t r = xorshift64(&seed);
      size_t at = len ? (size_t)(r >> 8) % len : 0;

      switch (r % 6) {
      case 0: /* flip one bit */
        if (len > 0) {
          work[at] ^= (uint8_t)(1u << ((r >> 40) % 8));
        }
        break;
      case 1: /* overwrite with a random byte */
        if (len > 0) {
          work[at] = (uint8_t)(r >> 48);
        }
        break;
      case 2: /* overwrite with an interesting byte */
        if (len > 0) {
          work[at] = spice[(r >> 48) % sizeof(spice)];
        }
        break;
      case 3: /* insert a byte */
        if (len < sizeof(work)) {
          memmove(work + at + 1, work + at, len - at);
          work[at] = (uint8_t)(r >> 48);
          len++;
        }
        break;
      case 4: /* delete a byte */
        if (len > 0) {
          memmove(work + at, work + at + 1, len - at - 1);
          len--;
        }
        break;
      default: /* cut the tail */
        len = at;
        break;
      }
    }

    copy = malloc(len ? len : 1);
    assert_non_null(copy);
    memcpy(copy, work, len);
    rv = dht_msg_decode(&msg, copy, len, &lim);
    if (rv == 0) {
      /* Whatever decodes must encode again, to the same message. */
      dht_buf again;
      dht_msg back;

      dht_buf_init(&again);
      assert_int_equal(dht_msg_encode(&msg, &again), 0);
      assert_int_equal(
          dht_msg_decode(&back, again.data + 4, again.len - 4, &lim), 0);
      assert_msg_eq(&msg, &back);
      dht_msg_free(&back);
      dht_buf_free(&again);
      ok++;
    } else {
      if (!is_decode_error(rv)) {
        fail_msg("round %u: unexpected %d", round, rv);
      }
      bad++;
    }
    dht_msg_free(&msg);
    free(copy);
  }
  for (i = 0; i < n_samples; i++) {
    dht_buf_free(&samples[i]);
  }
  print_message("mutation: %zu decoded, %zu rejected\n", ok, bad);
  /* Both outcomes must be common, or the mutations test nothing. */
  assert_true(ok > MUTATION_ROUNDS / 50);
  assert_true(bad > MUTATION_ROUNDS / 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_type_names),
      cmocka_unit_test(test_type_is_reply),
      cmocka_unit_test(test_limits_default),
      cmocka_unit_test(test_frame_peek),
      cmocka_unit_test(test_roundtrip_every_type),
      cmocka_unit_test(test_roundtrip_max),
      cmocka_unit_test(test_roundtrip_fingers_all_positions),
      cmocka_unit_test(test_roundtrip_edge_values),
      cmocka_unit_test(test_roundtrip_many_items),
      cmocka_unit_test(test_encode_appends),
      cmocka_unit_test(test_encode_pred_only_when_set),
      cmocka_unit_test(test_encode_exact_bytes),
      cmocka_unit_test(test_encode_refuses),
      cmocka_unit_test(test_encode_refuses_sync),
      cmocka_unit_test(test_schema_builder_is_valid),
      cmocka_unit_test(test_missing_required_fields),
      cmocka_unit_test(test_wrong_types),
      cmocka_unit_test(test_header_fields),
      cmocka_unit_test(test_bad_version),
      cmocka_unit_test(test_unknown_type),
      cmocka_unit_test(test_truncated_every_prefix),
      cmocka_unit_test(test_trailing_bytes),
      cmocka_unit_test(test_frame_too_large),
      cmocka_unit_test(test_oversized_lengths),
      cmocka_unit_test(test_oversized_addr),
      cmocka_unit_test(test_counts_over_caps),
      cmocka_unit_test(test_absurd_counts),
      cmocka_unit_test(test_nesting),
      cmocka_unit_test(test_reserved_byte),
      cmocka_unit_test(test_duplicate_keys),
      cmocka_unit_test(test_body_not_a_map),
      cmocka_unit_test(test_body_keys_max),
      cmocka_unit_test(test_ids_must_be_20_bytes),
      cmocka_unit_test(test_accepts_what_v1_ignores),
      cmocka_unit_test(test_items_versions),
      cmocka_unit_test(test_items_sizes),
      cmocka_unit_test(test_sync_digests),
      cmocka_unit_test(test_sync_r_buckets),
      cmocka_unit_test(test_scan_limit),
      cmocka_unit_test(test_free_is_idempotent),
      cmocka_unit_test(test_ver_roundtrip),
      cmocka_unit_test(test_ver_exact_bytes),
      cmocka_unit_test(test_ver_decoded_from_hand_made_error),
      cmocka_unit_test(test_wall_roundtrip),
      cmocka_unit_test(test_neighbors_same),
      cmocka_unit_test(test_lost_ranges_roundtrip_and_limits),
      cmocka_unit_test(test_exchanges_and_dead_roundtrip_and_limits),
      cmocka_unit_test(test_ack_lost_roundtrip),
      cmocka_unit_test(test_new_error_codes),
      cmocka_unit_test(test_ver_wall_lost_ignored_elsewhere),
      cmocka_unit_test(test_ver_truncated_writer),
      cmocka_unit_test(test_mp_check),
      cmocka_unit_test(test_mutation),
  };

  return cmocka_run_group_tests(tests, setup_fixtures, NULL);
}
