/*
 * test_repl.c: replication (node_repl.c) seen from outside one node, with
 * three copies of each key. The test plays the six other nodes of a ring of
 * seven around node A, answering A's frames as they would, and checks what
 * they and A's clients see: which records A sends to whom and when, what it
 * answers, and the records left in its store. Beyond the copies: stamps
 * judged against A's clock and its neighbours', group commits, and ranges
 * whose every copy died (node_lost.c).
 *
 * The ring, clockwise, each id a fraction of the way round:
 *
 *   p2 0x20 | p1 0x40 | p0 0x60 | A 0x80 | s1 0xa0 | s2 0xc0 | s3 0xe0
 *
 * A owns (p0, A]; it replicates (p1, p0] for p0 and (p2, p1] for p1; its
 * writes go to s1 and s2, and s3 stands in for a replica that fails. A keeps
 * five successors (s1, s2, s3, p2, p1), so that it still knows some after
 * a write has tried all it may: with none left it would take itself for a
 * ring of one, which needs no replica.
 */
/* cmocka.h needs these four first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/metrics.h"
#include "dht/node.h"

#include "test_util.h"

#define CLIENT 7 /* connection number of the test's client */
#define PEER 9   /* connection number of a peer's connection to A */

/* A's wall clock when it is created at HOST_START_MS. */
#define WALL_MS 1700000000000ull
#define SYNC_BUCKETS 8
#define SYNC_INTERVAL_MS 1000
#define RPC_TIMEOUT_MS 500
#define SUCC_LIST_LEN 5

typedef struct member {
  const char *addr; /* where A sends to it */
  uint8_t top;      /* its id is top * 2^152 */
} member;

enum { P2, P1, P0, A, S1, S2, S3, RING_N };

static const member ring[RING_N] = {
    {"p2:1", 0x20}, {"p1:1", 0x40}, {"p0:1", 0x60}, {"a:1", 0x80},
    {"s1:1", 0xa0}, {"s2:1", 0xc0}, {"s3:1", 0xe0},
};

static dht_id member_id(int i) { return id_top(ring[i].top); }

static void member_ref(int i, dht_peer_ref *ref) {
  ref->id = member_id(i);
  ref->addr = bytes_of(ring[i].addr);
}

static int member_at(const char *addr) {
  int i;

  for (i = 0; i < RING_N; i++) {
    if (strcmp(ring[i].addr, addr) == 0) {
      return i;
    }
  }
  fail_msg("A sent to %s, not a member of the ring", addr);
  return -1;
}

/* The member that owns id: the first at or after it, clockwise. */
static int owner_of(const dht_id *id) {
  int i;

  for (i = 0; i < RING_N; i++) {
    dht_id pred = member_id((i + RING_N - 1) % RING_N), self = member_id(i);
    if (dht_id_in_oc(id, &pred, &self)) {
      return i;
    }
  }
  fail_msg("no owner");
  return -1;
}

/* The time A stamps a write with when the test's clock reads now. */
static uint64_t hlc_at(uint64_t now) {
  return (WALL_MS + now - HOST_START_MS) << 16;
}

/* A key that member `owner` owns: key<i> for the first i from *next on. */
static void key_owned_by(char *buf, size_t len, int owner, int *next) {
  dht_id from = member_id((owner + RING_N - 1) % RING_N), to = member_id(owner);

  name_in(buf, len, "key", "", &from, &to, next);
}

/* Ring upkeep: frames that keep A's routing state, not its records. */
static bool is_upkeep(dht_msg_type type) {
  return type == DHT_MSG_GET_NEIGHBORS || type == DHT_MSG_FIND_SUCC ||
         type == DHT_MSG_PING || type == DHT_MSG_NOTIFY;
}

/* A's wall clock when the test's clock reads now, in ms. */
static uint64_t wall_at(uint64_t now) { return WALL_MS + now - HOST_START_MS; }

/* What the ring is like beyond its shape, for the tests that need more
 * than members that all answer and carry no clock. */
typedef struct ring_view {
  bool walls;               /* NEIGHBORS carry the responder's wall clock */
  int64_t ahead_ms[RING_N]; /* ... member i's clock minus A's, in ms */
  bool dead[RING_N];        /* member i is dead: frames to it are lost */
  /* Answers a first, as whoever it went to, when it is not for the ring
   * as drawn (a node that joined, a member that refuses); returns false
   * to leave it to the ring. NULL: the ring answers everything. */
  bool (*first)(fake_host *h, const host_action *a, const struct ring_view *v);
} ring_view;

/* Answers what A sent in a as the member it went to would, with its place
 * in the ring and as v says (NULL: alive, no clock); a replica has every
 * record already (in sync, nothing to fetch). */
static void answer_as_ring_in(fake_host *h, const host_action *a,
                              const ring_view *v) {
  int m, i;
  dht_peer_ref succs[SUCC_LIST_LEN], preds[3], path[1];
  dht_msg r;

  if (v != NULL && v->first != NULL && v->first(h, a, v)) {
    return;
  }
  m = member_at(a->addr);
  if (v != NULL && v->dead[m]) {
    return;
  }
  msg_init(&r, DHT_MSG_OK, a->msg.rid);
  switch (a->msg.type) {
  case DHT_MSG_GET_NEIGHBORS:
    r.type = DHT_MSG_NEIGHBORS;
    r.has_peer = true;
    member_ref(m, &r.peer);
    r.has_pred = true;
    member_ref((m + RING_N - 1) % RING_N, &r.pred);
    for (i = 0; i < SUCC_LIST_LEN; i++) {
      member_ref((m + 1 + i) % RING_N, &succs[i]);
    }
    for (i = 0; i < 3; i++) {
      member_ref((m + RING_N - 1 - i) % RING_N, &preds[i]);
    }
    r.succs = succs;
    r.n_succs = SUCC_LIST_LEN;
    r.preds = preds;
    r.n_preds = 3;
    if (v != NULL && v->walls) {
      r.wall_ms = (uint64_t)((int64_t)wall_at(h->now) + v->ahead_ms[m]);
    }
    break;
  case DHT_MSG_FIND_SUCC:
    r.type = DHT_MSG_FIND_SUCC_R;
    r.has_peer = true;
    member_ref(owner_of(&a->msg.target), &r.peer);
    if (a->msg.trace) {
      member_ref(m, &path[0]);
      r.path = path;
      r.n_path = 1;
    }
    break;
  case DHT_MSG_PING:
    r.type = DHT_MSG_PONG;
    r.has_peer = true;
    member_ref(m, &r.peer);
    break;
  case DHT_MSG_NOTIFY:
    return;
  case DHT_MSG_SYNC:
    r.type = DHT_MSG_SYNC_R;
    break;
  case DHT_MSG_FETCH:
    r.type = DHT_MSG_RECORD;
    break;
  case DHT_MSG_REPLICATE:
  case DHT_MSG_HANDOFF:
    break;
  default:
    fail_msg("A sent %s to %s", dht_msg_type_name((int)a->msg.type), a->addr);
  }
  assert_int_equal(host_recv(h, PEER, &r), 0);
}

static void answer_as_ring(fake_host *h, const host_action *a) {
  answer_as_ring_in(h, a, NULL);
}

/* Takes A's next action that is not ring upkeep, answering upkeep as the
 * ring would (as v says) and letting time run to A's next deadline, but
 * not past until_ms. False when none came by then; the clock then reads
 * until_ms. */
static bool next_action_in(fake_host *h, uint64_t until_ms, host_action *a,
                           const ring_view *v) {
  int rounds;

  for (rounds = 0; rounds < 100000; rounds++) {
    uint64_t next;
    while (host_poll(h, a)) {
      if (a->type != DHT_ACTION_SEND || !is_upkeep(a->msg.type)) {
        return true;
      }
      answer_as_ring_in(h, a, v);
      action_free(a);
    }
    next = dht_node_next_deadline(h->node);
    if (next > until_ms) {
      h->now = until_ms > h->now ? until_ms : h->now;
      return false;
    }
    h->now = next > h->now ? next : h->now;
    dht_node_handle_expiry(h->node, h->now);
  }
  fail_msg("A keeps waking up without end");
  return false;
}

static bool next_action(fake_host *h, uint64_t until_ms, host_action *a) {
  return next_action_in(h, until_ms, a, NULL);
}

/* Lets A run until until_ms, the ring answering all it sends as v says.
 * A must only talk to the ring meanwhile. */
static void run_ring(fake_host *h, uint64_t until_ms, const ring_view *v) {
  host_action a;

  while (next_action_in(h, until_ms, &a, v)) {
    assert_int_equal(a.type, DHT_ACTION_SEND);
    answer_as_ring_in(h, &a, v);
    action_free(&a);
  }
}

/* A's STATS counter name, as a client asking would see it. */
static uint64_t stats_counter(fake_host *h, const char *name) {
  host_action a;
  uint64_t value;
  dht_msg m;

  msg_init(&m, DHT_MSG_STATS, 999);
  host_recv(h, CLIENT, &m);
  host_expect_reply(h, &a, CLIENT, DHT_MSG_STATS_R, 999);
  value = stats_value(&a.msg, name);
  action_free(&a);
  return value;
}

/*
 * A joins the ring through p2 and the test answers for everyone: the
 * lookup finds s1, s1's neighbours give the successor list, p0 notifies A
 * as its stabilize would once s1 names A, p0's neighbours give the
 * predecessor list, and a digest exchange with s1 and s2 puts A in sync.
 * Maintenance stays on only with maintenance: otherwise A talks only when
 * a test makes it. A keeps its records in store (NULL: a memory store),
 * waits for group commits when group_commit, and takes s's settings but for
 * the ring's own (ring_join_with: the defaults).
 */
static void ring_join_as(fake_host *h, bool maintenance, dht_store *store,
                         bool group_commit, dht_settings s) {
  dht_id id = member_id(A), ids[SUCC_LIST_LEN + 1];
  host_action a;
  dht_msg notify;
  int i;

  s.succ_list_len = SUCC_LIST_LEN;
  s.replicas = 3;
  s.sync_buckets = SYNC_BUCKETS;
  s.sync_interval_ms = SYNC_INTERVAL_MS;
  s.rpc_timeout_ms = RPC_TIMEOUT_MS;
  /* Replies come at once here, which would shrink every wait to rto_min:
   * the waits stay rpc_timeout_ms, so that a failure's schedule is fixed. */
  s.rto_min_ms = RPC_TIMEOUT_MS;
  host_init_with(h, ring[A].addr, &id, &s, WALL_MS,
                 store != NULL ? store : dht_store_mem_new(), group_commit);
  assert_int_equal(dht_node_join(h->node, ring[P2].addr, h->now), 0);
  while (next_action(h, HOST_START_MS + 3000, &a)) {
    if (a.type == DHT_ACTION_EVENT) {
      assert_int_equal(a.event, DHT_EVENT_JOINED);
      msg_init(&notify, DHT_MSG_NOTIFY, 1);
      notify.has_peer = true;
      member_ref(P0, &notify.peer);
      assert_int_equal(host_recv(h, PEER, &notify), 0);
    } else {
      assert_int_equal(a.type, DHT_ACTION_SEND);
      answer_as_ring(h, &a);
    }
    action_free(&a);
  }
  assert_int_equal(dht_node_get_state(h->node), DHT_NODE_JOINED);
  assert_int_equal(dht_node_succs(h->node, ids, NULL, SUCC_LIST_LEN + 1),
                   SUCC_LIST_LEN);
  for (i = 0; i < SUCC_LIST_LEN; i++) {
    dht_id want = member_id((S1 + i) % RING_N);
    assert_true(dht_id_eq(&ids[i], &want));
  }
  assert_int_equal(dht_node_preds(h->node, ids, NULL, SUCC_LIST_LEN + 1), 3);
  for (i = 0; i < 3; i++) {
    dht_id want = member_id(P0 - i);
    assert_true(dht_id_eq(&ids[i], &want));
  }
  assert_int_equal(dht_node_pending_count(h->node), 0);
  assert_int_equal(stats_counter(h, "range_fresh"), 1);
  if (!maintenance) {
    dht_node_set_maintenance(h->node, false, h->now);
  }
  host_expect_none(h);
}

static void ring_join_with(fake_host *h, bool maintenance, dht_store *store,
                           bool group_commit) {
  dht_settings s;

  dht_settings_default(&s);
  ring_join_as(h, maintenance, store, group_commit, s);
}

static void ring_join(fake_host *h, bool maintenance) {
  ring_join_with(h, maintenance, NULL, false);
}

/* ---- helpers for the exchanges ------------------------------------------------ */

static void client_request(fake_host *h, dht_msg_type type, uint64_t rid,
                           const char *key, const char *value, bool final) {
  host_data_request(h, CLIENT, type, rid, key, value, final);
}

/* Sends A one record in a message of type (REPLICATE or HANDOFF), as a
 * peer would, and expects its OK and nothing else. */
static void record_in(fake_host *h, dht_msg_type type, dht_kv kv) {
  host_records_in(h, PEER, type, &kv, 1, 4242);
  host_expect_none(h);
}

/* Expects the client's GET of key (rid) to be answered VALUE value, or
 * NOT_FOUND when value is NULL. */
static void expect_get(fake_host *h, uint64_t rid, const char *key,
                       const char *value) {
  host_action a;

  client_request(h, DHT_MSG_GET, rid, key, NULL, false);
  if (value != NULL) {
    host_expect_reply(h, &a, CLIENT, DHT_MSG_VALUE, rid);
    assert_true(bytes_eq_str(a.msg.value, value));
    action_free(&a);
  } else {
    host_expect_error(h, CLIENT, rid, DHT_ERR_NOT_FOUND);
  }
  host_expect_none(h);
}

/* Expects a to be a REPLICATE to member m of exactly kv. */
static void assert_replicate(const host_action *a, int m, const dht_kv *kv) {
  const dht_kv *item;

  assert_int_equal(a->type, DHT_ACTION_SEND);
  assert_string_equal(a->addr, ring[m].addr);
  assert_int_equal(a->msg.type, DHT_MSG_REPLICATE);
  assert_int_equal(a->msg.n_items, 1);
  item = &a->msg.items[0];
  assert_int_equal(item->key.len, kv->key.len);
  assert_memory_equal(item->key.p, kv->key.p, kv->key.len);
  assert_true(item->has_version);
  assert_int_equal(item->tombstone, kv->tombstone);
  assert_int_equal(dht_version_cmp(&item->version, &kv->version), 0);
  if (!kv->tombstone) {
    assert_int_equal(item->value.len, kv->value.len);
    assert_memory_equal(item->value.p, kv->value.p, kv->value.len);
  }
}

/* The REPLICATEs of one write, to s1 and s2, kept to be answered. */
typedef struct write_out {
  host_actions sent;        /* what A sent when it took the write */
  const host_action *to_s1; /* in sent: the REPLICATE to s1 */
  const host_action *to_s2; /* ... and to s2 */
} write_out;

/* The client's write (PUT with value, or DEL) of key as rid, stamped ver
 * (NULL: without a version): expects, in any order, the ACCEPTED, a
 * REPLICATE of want to s1 and one to s2, and nothing else. Free w->sent
 * after. */
static void write_sent_at(fake_host *h, uint64_t rid, const char *key,
                          const char *value, const dht_version *ver,
                          const dht_kv *want, write_out *w) {
  host_write(h, CLIENT, rid, key, value, ver);
  host_take_all(h, &w->sent);
  assert_int_equal(w->sent.n, 3);
  only_reply(&w->sent, CLIENT, rid, DHT_MSG_ACCEPTED);
  w->to_s1 = only_send(&w->sent, ring[S1].addr, DHT_MSG_REPLICATE);
  assert_replicate(w->to_s1, S1, want);
  w->to_s2 = only_send(&w->sent, ring[S2].addr, DHT_MSG_REPLICATE);
  assert_replicate(w->to_s2, S2, want);
}

static void write_sent(fake_host *h, uint64_t rid, const char *key,
                       const char *value, const dht_kv *want, write_out *w) {
  write_sent_at(h, rid, key, value, NULL, want, w);
}

/* ---- writes ------------------------------------------------------------------- */

/* A, in its ring, takes the client's PUT (rid) of "v1" for a key it owns,
 * written into key: want is the record it must send to s1 and s2, and w
 * what it sent (write_sent). */
static void put_taken(fake_host *h, uint64_t rid, char key[16], dht_kv *want,
                      write_out *w) {
  dht_id writer = member_id(A);
  int next = 0;

  ring_join(h, false);
  key_owned_by(key, 16, A, &next);
  *want = kv_of(key, "v1", version_of(hlc_at(h->now), &writer), false);
  write_sent(h, rid, key, "v1", want, w);
  assert_record(h->store, key, "v1", want->version, false);
}

/* A PUT is stored with a version (A's clock, A's id) and sent to exactly
 * the first two successors; the client's OK, with its rid, comes once both
 * have answered OK and not before, in whichever order they answer. */
static void test_put_is_replicated_to_the_first_two_successors(void **state) {
  fake_host h;
  write_out w;
  host_action a;
  char key[16];
  dht_kv want;

  (void)state;
  put_taken(&h, 501, key, &want, &w);
  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK);
  host_expect_none(&h);
  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK); /* a duplicate is no second ack */
  host_expect_none(&h);
  host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 501);
  action_free(&a);
  host_expect_none(&h);
  host_actions_free(&w.sent);
  expect_get(&h, 502, key, "v1");
  host_free(&h);
}

/* A replica that does not answer is asked again after rpc_timeout_ms, and
 * found dead after twice that again; then, not sooner, the next successor
 * takes its place, and the client's OK waits for that one. */
static void
test_silent_replica_is_replaced_by_the_next_successor(void **state) {
  dht_id succs[2], s3 = member_id(S3);
  fake_host h;
  write_out w;
  host_action a;
  char key[16];
  dht_kv want;

  (void)state;
  put_taken(&h, 503, key, &want, &w);
  host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
  host_expect_none(&h);

  host_advance(&h, RPC_TIMEOUT_MS - 1);
  host_expect_none(&h);
  host_advance(&h, 1);
  host_expect_one(&h, &a, DHT_ACTION_SEND, DHT_MSG_REPLICATE);
  assert_replicate(&a, S2, &want);
  assert_int_equal(a.msg.rid, w.to_s2->msg.rid); /* the same request again */
  action_free(&a);

  host_advance(&h, 2 * RPC_TIMEOUT_MS - 1);
  host_expect_none(&h);
  host_advance(&h, 1);
  host_expect_one(&h, &a, DHT_ACTION_SEND, DHT_MSG_REPLICATE);
  assert_replicate(&a, S3, &want);
  assert_int_equal(dht_node_succs(h.node, succs, NULL, 2), SUCC_LIST_LEN - 1);
  assert_true(dht_id_eq(&succs[1], &s3));

  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK); /* too late: s2 is gone */
  host_expect_none(&h);
  host_answer(&h, PEER, &a, DHT_MSG_OK);
  action_free(&a);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 503);
  action_free(&a);
  host_expect_none(&h);
  host_actions_free(&w.sent);
  host_free(&h);
}

/* When no replica ever answers, each replica position is tried twice (s1
 * and s2, then s3 and p2 in their places), and once those four are found
 * dead the write fails with UNAVAILABLE, never OK. */
static void test_write_fails_when_no_replica_answers(void **state) {
  static const int tried[] = {S1, S2, S3, P2};
  uint64_t start;
  fake_host h;
  write_out w;
  host_actions all;
  char key[16];
  dht_kv want;
  size_t i;

  (void)state;
  put_taken(&h, 504, key, &want, &w);
  start = h.now;
  host_actions_free(&w.sent);

  /* Each try: resent after rpc_timeout_ms, dead twice that later. */
  host_advance(&h, RPC_TIMEOUT_MS);
  host_take_all(&h, &all);
  assert_int_equal(all.n, 2);
  only_send(&all, ring[S1].addr, DHT_MSG_REPLICATE);
  only_send(&all, ring[S2].addr, DHT_MSG_REPLICATE);
  host_actions_free(&all);
  host_advance(&h, 2 * RPC_TIMEOUT_MS);
  host_take_all(&h, &all);
  for (i = 2; i < 4; i++) {
    assert_replicate(only_send(&all, ring[tried[i]].addr, DHT_MSG_REPLICATE),
                     tried[i], &want);
  }
  for (i = 0; i < all.n; i++) { /* and maybe a keepalive to the client */
    assert_true(all.a[i].type == DHT_ACTION_SEND ||
                all.a[i].msg.type == DHT_MSG_ACCEPTED);
  }
  host_actions_free(&all);
  host_advance(&h, RPC_TIMEOUT_MS);
  host_take_all(&h, &all);
  assert_int_equal(all.n, 2);
  host_actions_free(&all);
  host_advance(&h, 2 * RPC_TIMEOUT_MS - 1);
  host_expect_none(&h);
  host_advance(&h, 1);
  host_expect_error(&h, CLIENT, 504, DHT_ERR_UNAVAILABLE);
  host_expect_none(&h); /* no fifth replica is asked */
  assert_int_equal(h.now - start, 6 * RPC_TIMEOUT_MS);
  host_free(&h);
}

/* A DEL writes a tombstone, newer than the value, sent to the replicas like
 * a value; the OK waits for both, and then the key reads as missing. A
 * second DEL finds nothing to delete: it writes and sends its own
 * tombstone all the same, and its NOT_FOUND waits for both replicas. */
static void test_del_writes_a_tombstone_replicated_like_a_value(void **state) {
  dht_id writer = member_id(A);
  fake_host h;
  write_out w;
  host_action a;
  char key[16];
  dht_kv value, tomb;

  (void)state;
  put_taken(&h, 505, key, &value, &w);
  host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK);
  host_actions_free(&w.sent);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 505);
  action_free(&a);

  h.now += 3;
  tomb = kv_of(key, "", version_of(hlc_at(h.now), &writer), true);
  write_sent(&h, 506, key, NULL, &tomb, &w);
  assert_record(h.store, key, "", tomb.version, true);
  host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
  host_expect_none(&h);
  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 506);
  action_free(&a);
  host_expect_none(&h);
  host_actions_free(&w.sent);
  expect_get(&h, 507, key, NULL);

  h.now += 3;
  tomb = kv_of(key, "", version_of(hlc_at(h.now), &writer), true);
  write_sent(&h, 508, key, NULL, &tomb, &w);
  assert_record(h.store, key, "", tomb.version, true);
  host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
  host_answer(&h, PEER, w.to_s2, DHT_MSG_OK);
  host_expect_error(&h, CLIENT, 508, DHT_ERR_NOT_FOUND);
  host_expect_none(&h);
  host_actions_free(&w.sent);
  host_free(&h);
}

/*
 * A DEL reaches an owner that holds no record of its key, or an older
 * tombstone: the owner on one side of a partition, while the value put
 * before the DEL was issued was acknowledged by the holders on the other
 * side. The DEL is stored and replicated as a tombstone at its version,
 * and answered NOT_FOUND only once both replicas have it, as an OK would
 * be; when the partition heals and the value reaches A (anti-entropy,
 * hand-off), the tombstone wins. Answered NOT_FOUND at once with nothing
 * stored, as it was, the value came back (scripts/churn --cut-every).
 */
static void test_del_finding_no_value_still_writes_its_tombstone(void **state) {
  dht_id client = id_u64(77), other = id_u64(78);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_version put_v = version_of(t + (1000ull << 16), &other);
  dht_version del_v = version_of(t + (2000ull << 16), &client);
  dht_version old_tomb = version_of(t, &other);
  const char *keys[2];
  char never[16], deleted[16];
  fake_host h;
  write_out w;
  dht_kv want;
  int next = 0, i;

  (void)state;
  ring_join(&h, false);
  key_owned_by(never, sizeof(never), A, &next);
  key_owned_by(deleted, sizeof(deleted), A, &next);
  record_in(&h, DHT_MSG_REPLICATE, kv_of(deleted, "", old_tomb, true));
  keys[0] = never;
  keys[1] = deleted;
  for (i = 0; i < 2; i++) {
    want = kv_of(keys[i], "", del_v, true);
    write_sent_at(&h, 600 + (uint64_t)i, keys[i], NULL, &del_v,
                  &want, &w);
    assert_record(h.store, keys[i], "", del_v, true);
    host_answer(&h, PEER, w.to_s1, DHT_MSG_OK);
    host_expect_none(&h);
    host_answer(&h, PEER, w.to_s2, DHT_MSG_OK);
    host_expect_error(&h, CLIENT, 600 + (uint64_t)i, DHT_ERR_NOT_FOUND);
    host_expect_none(&h);
    host_actions_free(&w.sent);

    /* The heal: the value from the other side, older than the DEL. */
    record_in(&h, DHT_MSG_HANDOFF, kv_of(keys[i], "put before", put_v, false));
    assert_record(h.store, keys[i], "", del_v, true);
    expect_get(&h, 610 + (uint64_t)i, keys[i], NULL);
  }
  host_free(&h);
}

/* ---- merging by version ------------------------------------------------------- */

/*
 * Records of one key arrive in messages of type (REPLICATE or HANDOFF) with
 * older, equal and newer versions: a version is its stamp, then its
 * writer's id on equal stamps, and only a newer one replaces the record.
 */
static void merges_by_version(dht_msg_type type) {
  dht_id w4 = id_u64(4), w5 = id_u64(5), w6 = id_u64(6), w1 = id_u64(1);
  dht_id wmax = id_max();
  uint64_t t = hlc_at(HOST_START_MS);
  fake_host h;
  char key[16], fresh[16];
  dht_kv two[2];
  int next = 0;

  ring_join(&h, false);
  key_owned_by(key, sizeof(key), A, &next);
  key_owned_by(fresh, sizeof(fresh), A, &next);
  record_in(&h, type, kv_of(key, "base", version_of(t, &w5), false));
  assert_record(h.store, key, "base", version_of(t, &w5), false);

  record_in(&h, type,
            kv_of(key, "older stamp, larger writer", version_of(t - 1, &wmax),
                  false));
  record_in(&h, type,
            kv_of(key, "the same version", version_of(t, &w5), false));
  record_in(
      &h, type,
      kv_of(key, "same stamp, smaller writer", version_of(t, &w4), false));
  assert_record(h.store, key, "base", version_of(t, &w5), false);
  expect_get(&h, 510, key, "base");

  record_in(&h, type,
            kv_of(key, "same stamp, larger writer", version_of(t, &w6), false));
  assert_record(h.store, key, "same stamp, larger writer", version_of(t, &w6),
                false);
  record_in(
      &h, type,
      kv_of(key, "newer stamp, smaller writer", version_of(t + 1, &w1), false));
  assert_record(h.store, key, "newer stamp, smaller writer",
                version_of(t + 1, &w1), false);
  expect_get(&h, 511, key, "newer stamp, smaller writer");

  /* Several records in one message are merged each on its own. */
  two[0] = kv_of(key, "stale", version_of(t, &w6), false);
  two[1] = kv_of(fresh, "new key", version_of(t, &w1), false);
  host_records_in(&h, PEER, type, two, 2, 512);
  host_expect_none(&h);
  assert_record(h.store, key, "newer stamp, smaller writer",
                version_of(t + 1, &w1), false);
  assert_record(h.store, fresh, "new key", version_of(t, &w1), false);
  host_free(&h);
}

static void test_replicate_merges_by_version(void **state) {
  (void)state;
  merges_by_version(DHT_MSG_REPLICATE);
}

static void test_handoff_merges_by_version(void **state) {
  (void)state;
  merges_by_version(DHT_MSG_HANDOFF);
}

/* A tombstone beats an older value and hides the key; an older value does
 * not bring it back, a newer one does; an older tombstone deletes nothing.
 * A tombstone of a key never seen is kept, so a late value stays dead. */
static void test_tombstones_merge_by_version(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  fake_host h;
  char key[16], unseen[16];
  int next = 0;

  (void)state;
  ring_join(&h, false);
  key_owned_by(key, sizeof(key), A, &next);
  key_owned_by(unseen, sizeof(unseen), A, &next);
  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "v", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "", version_of(t + 1, &w), true));
  assert_record(h.store, key, "", version_of(t + 1, &w), true);
  expect_get(&h, 520, key, NULL);

  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "v", version_of(t, &w), false));
  assert_record(h.store, key, "", version_of(t + 1, &w), true);
  expect_get(&h, 521, key, NULL);

  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(key, "back", version_of(t + 2, &w), false));
  expect_get(&h, 522, key, "back");
  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "", version_of(t + 1, &w), true));
  assert_record(h.store, key, "back", version_of(t + 2, &w), false);
  expect_get(&h, 523, key, "back");

  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(unseen, "", version_of(t + 5, &w), true));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(unseen, "late", version_of(t + 4, &w), false));
  assert_record(h.store, unseen, "", version_of(t + 5, &w), true);
  expect_get(&h, 524, unseen, NULL);
  host_free(&h);
}

/* ---- a store that fails on demand ------------------------------------------- */

/* The memory store's own functions, behind a table that makes the next
 * fail_gets gets and fail_puts puts fail as an I/O error would. */
static const dht_store_ops *mem_ops;
static dht_store_ops failing_ops;
static int fail_gets, fail_puts;

static int failing_get(dht_store *st, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t **value,
                       size_t *value_len) {
  if (fail_gets > 0) {
    fail_gets--;
    return DHT_ERR_STORE;
  }
  return mem_ops->get(st, key_id, key, key_len, value, value_len);
}

static int failing_put(dht_store *st, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t *value,
                       size_t value_len) {
  if (fail_puts > 0) {
    fail_puts--;
    return DHT_ERR_STORE;
  }
  return mem_ops->put(st, key_id, key, key_len, value, value_len);
}

/* From now on A's store fails the calls the test asks to. */
static void store_can_fail(fake_host *h) {
  mem_ops = h->store->ops;
  failing_ops = *mem_ops;
  failing_ops.get = failing_get;
  failing_ops.put = failing_put;
  h->store->ops = &failing_ops;
  fail_gets = 0;
  fail_puts = 0;
}

/* ---- consulting the replicas -------------------------------------------------- */

/* The id of n, a node that joins between p0 and A. */
#define N_TOP 0x70

/* A key in A's range once n is its predecessor, (n, A]. */
static void key_after_n(char *buf, size_t len, int *next) {
  dht_id n_id = id_top(N_TOP), a_id = member_id(A);

  name_in(buf, len, "key", "", &n_id, &a_id, next);
}

/* A, in sync, holding key (in (n, A]) at version held unless that is NULL,
 * learns of its new predecessor n: its range is new, and it is not in sync
 * until it has exchanged digests with its replicas again. */
static void new_predecessor(fake_host *h, char *key, size_t len,
                            const dht_kv *held, int *next) {
  dht_msg notify;

  ring_join(h, false);
  key_after_n(key, len, next);
  if (held != NULL) {
    dht_kv kv = *held;
    kv.key = bytes_of(key);
    record_in(h, DHT_MSG_REPLICATE, kv);
  }
  msg_init(&notify, DHT_MSG_NOTIFY, 2);
  notify.has_peer = true;
  notify.peer.id = id_top(N_TOP);
  notify.peer.addr = bytes_of("n:1");
  assert_int_equal(host_recv(h, PEER, &notify), 0);
  host_expect_none(h);
}

/* Takes A's next actions into all and expects them to be a FETCH of key to
 * member m and, maybe, ACCEPTED to the client's request rid; returns the
 * FETCH's request id. */
static uint64_t fetch_taken(fake_host *h, uint64_t rid, int m, const char *key,
                            host_actions *all) {
  const host_action *fetch;
  size_t i;

  host_take_all(h, all);
  fetch = only_send(all, ring[m].addr, DHT_MSG_FETCH);
  assert_true(bytes_eq_str(fetch->msg.key, key));
  for (i = 0; i < all->n; i++) { /* one position at a time, no answer yet */
    assert_true(&all->a[i] == fetch ||
                (all->a[i].type == DHT_ACTION_REPLY &&
                 all->a[i].conn == CLIENT && all->a[i].msg.rid == rid &&
                 all->a[i].msg.type == DHT_MSG_ACCEPTED));
  }
  return fetch->msg.rid;
}

/* fetch_taken, then answers the FETCH with a RECORD of *rec, or of nothing
 * when rec is NULL. */
static void fetch_answered(fake_host *h, uint64_t rid, int m, const char *key,
                           const dht_kv *rec) {
  host_actions all;
  dht_msg r;
  dht_kv kv;

  msg_init(&r, DHT_MSG_RECORD, fetch_taken(h, rid, m, key, &all));
  if (rec != NULL) {
    kv = *rec;
    kv.key = bytes_of(key);
    r.items = &kv;
    r.n_items = 1;
  }
  assert_int_equal(host_recv(h, PEER, &r), 0);
  host_actions_free(&all);
}

/* An owner not in sync asks each replica position for the key before it
 * answers, and serves the newest record it learnt (here s2's) and keeps it. */
static void test_owner_not_in_sync_consults_every_replica(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_kv mine = kv_of("", "mine", version_of(t, &w), false);
  dht_kv from_s1 = kv_of("", "from s1", version_of(t + 1, &w), false);
  dht_kv from_s2 = kv_of("", "from s2", version_of(t + 2, &w), false);
  fake_host h;
  host_action a;
  char key[16];
  int next = 0;

  (void)state;
  new_predecessor(&h, key, sizeof(key), &mine, &next);
  client_request(&h, DHT_MSG_GET, 601, key, NULL, false);
  fetch_answered(&h, 601, S1, key, &from_s1);
  fetch_answered(&h, 601, S2, key, &from_s2);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_VALUE, 601);
  assert_true(bytes_eq_str(a.msg.value, "from s2"));
  action_free(&a);
  host_expect_none(&h);
  assert_record(h.store, key, "from s2", from_s2.version, false);
  host_free(&h);
}

/* Older or missing records at the replicas change nothing: the owner's own
 * record is served; a key nobody has is NOT_FOUND, after both were asked. */
static void test_consult_keeps_the_owners_newer_record(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_kv mine = kv_of("", "mine", version_of(t + 5, &w), false);
  dht_kv older = kv_of("", "older", version_of(t + 1, &w), false);
  fake_host h;
  host_action a;
  char key[16], missing[16];
  int next = 0;

  (void)state;
  new_predecessor(&h, key, sizeof(key), &mine, &next);
  key_after_n(missing, sizeof(missing), &next);
  client_request(&h, DHT_MSG_GET, 602, key, NULL, false);
  fetch_answered(&h, 602, S1, key, &older);
  fetch_answered(&h, 602, S2, key, NULL);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_VALUE, 602);
  assert_true(bytes_eq_str(a.msg.value, "mine"));
  action_free(&a);
  host_expect_none(&h);
  assert_record(h.store, key, "mine", mine.version, false);

  client_request(&h, DHT_MSG_GET, 603, missing, NULL, false);
  fetch_answered(&h, 603, S1, missing, NULL);
  fetch_answered(&h, 603, S2, missing, NULL);
  host_expect_error(&h, CLIENT, 603, DHT_ERR_NOT_FOUND);
  host_expect_none(&h);
  host_free(&h);
}

/* A write while not in sync consults too, and its version beats the record
 * a replica had, even one stamped by a clock 5 s ahead of A's (within the
 * 10 s skew bound). */
static void
test_write_while_not_in_sync_beats_the_replicas_record(void **state) {
  dht_id w = id_u64(5), a_id = member_id(A);
  uint64_t ahead = hlc_at(HOST_START_MS + 5000);
  dht_kv theirs = kv_of("", "theirs", version_of(ahead, &w), false);
  fake_host h;
  host_actions all;
  char key[16];
  dht_kv kv;
  size_t i;
  int next = 0;

  (void)state;
  new_predecessor(&h, key, sizeof(key), NULL, &next);
  client_request(&h, DHT_MSG_PUT, 604, key, "mine", false);
  fetch_answered(&h, 604, S1, key, &theirs);
  fetch_answered(&h, 604, S2, key, NULL);
  assert_true(store_record(h.store, key, &kv));
  assert_true(bytes_eq_str(kv.value, "mine"));
  assert_true(kv.version.hlc > ahead);
  assert_true(dht_id_eq(&kv.version.writer, &a_id));
  host_take_all(&h, &all);
  assert_replicate(only_send(&all, ring[S1].addr, DHT_MSG_REPLICATE), S1, &kv);
  assert_replicate(only_send(&all, ring[S2].addr, DHT_MSG_REPLICATE), S2, &kv);
  for (i = 0; i < all.n; i++) { /* the client may hear ACCEPTED again */
    assert_true(all.a[i].type == DHT_ACTION_SEND ||
                all.a[i].msg.type == DHT_MSG_ACCEPTED);
  }
  host_actions_free(&all);
  host_free(&h);
}

/* fetch_taken, then answers the FETCH with ERROR code, as a replica whose
 * store failed to read would. */
static void fetch_refused(fake_host *h, uint64_t rid, int m, const char *key,
                          int code) {
  host_actions all;
  dht_msg r;

  msg_init(&r, DHT_MSG_ERROR, fetch_taken(h, rid, m, key, &all));
  r.error_code = code;
  assert_int_equal(host_recv(h, PEER, &r), 0);
  host_actions_free(&all);
}

/*
 * An owner not in sync answers from its store only once it holds what each
 * replica holds: when a replica cannot read its record, or the owner's
 * store cannot take the newer one a replica sent, the request is refused,
 * not answered from a store that may be older than an acknowledged write
 * (seeds 83 and 125 of `dht-sim crashes --nodes-max 48 --crashes 6`). A
 * FETCH that A's store fails to read is answered ERROR, not "none here".
 */
static void test_consult_refuses_what_it_could_not_check(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_kv mine = kv_of("", "mine", version_of(t, &w), false);
  dht_kv newer = kv_of("", "newer", version_of(t + 1, &w), false);
  fake_host h;
  dht_msg fetch;
  char key[16];
  int next = 0;

  (void)state;
  new_predecessor(&h, key, sizeof(key), &mine, &next);
  store_can_fail(&h);

  client_request(&h, DHT_MSG_GET, 611, key, NULL, false);
  fetch_refused(&h, 611, S1, key, DHT_ERR_STORE);
  host_expect_error(&h, CLIENT, 611, DHT_ERR_UNAVAILABLE);
  host_expect_none(&h);

  client_request(&h, DHT_MSG_GET, 612, key, NULL, false);
  fail_puts = 1;
  fetch_answered(&h, 612, S1, key, &newer);
  host_expect_error(&h, CLIENT, 612, DHT_ERR_STORE);
  host_expect_none(&h);
  assert_record(h.store, key, "mine", mine.version, false);

  msg_init(&fetch, DHT_MSG_FETCH, 613);
  fetch.key = bytes_of(key);
  fail_gets = 1;
  assert_int_equal(host_recv(&h, PEER, &fetch), 0);
  host_expect_error(&h, PEER, 613, DHT_ERR_STORE);
  host_expect_none(&h);
  host_free(&h);
}

/* ---- anti-entropy ------------------------------------------------------------- */

/* The bucket of x when (from, to] is split in n, per docs/PROTOCOL.md. */
static uint32_t bucket_of(const dht_id *from, const dht_id *to, uint32_t n,
                          const dht_id *x) {
  double width = dht_id_distance_frac(from, to);
  uint32_t b;

  if (width <= 0) {
    width = 1.0; /* (a, a] is the whole ring */
  }
  b = (uint32_t)(dht_id_distance_frac(from, x) / width * n);
  return b < n ? b : n - 1;
}

/* The digests of a range, computed from a store as a replica would. */
typedef struct digests {
  const dht_id *from; /* the range (from, to] */
  const dht_id *to;
  uint8_t d[SYNC_BUCKETS][DHT_DIGEST_LEN]; /* one per bucket */
} digests;

static int digest_visit(void *ud, const dht_id *key_id, const uint8_t *key,
                        size_t key_len, const uint8_t *rec, size_t rec_len) {
  digests *ds = ud;
  uint8_t in[DHT_ID_LEN + 8 + DHT_ID_LEN + 1], h[DHT_DIGEST_LEN];
  uint32_t b = bucket_of(ds->from, ds->to, SYNC_BUCKETS, key_id);
  dht_kv kv;
  int i;

  (void)key;
  (void)key_len;
  /* No tombstone here is past its grace period: every record counts. */
  dht_record_parse(rec, rec_len, &kv);
  memcpy(in, key_id->b, DHT_ID_LEN);
  for (i = 0; i < 8; i++) {
    in[DHT_ID_LEN + i] = (uint8_t)(kv.version.hlc >> (56 - 8 * i));
  }
  memcpy(in + DHT_ID_LEN + 8, kv.version.writer.b, DHT_ID_LEN);
  in[sizeof(in) - 1] = kv.tombstone ? 1 : 0;
  crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
  for (i = 0; i < DHT_DIGEST_LEN; i++) {
    ds->d[b][i] ^= h[i];
  }
  return 0;
}

/* Expects a to be A's SYNC of its range (p0, A] to member m, its digests
 * those of what A's store holds there: one of the whole range with probe
 * set, or one per bucket. */
static void assert_sync(fake_host *h, const host_action *a, int m,
                        bool probe) {
  dht_id from = member_id(P0), to = member_id(A);
  uint8_t whole[DHT_DIGEST_LEN] = {0};
  digests want;
  size_t b, i;

  assert_int_equal(a->type, DHT_ACTION_SEND);
  assert_string_equal(a->addr, ring[m].addr);
  assert_int_equal(a->msg.type, DHT_MSG_SYNC);
  assert_true(dht_id_eq(&a->msg.from, &from));
  assert_true(dht_id_eq(&a->msg.to, &to));
  assert_int_equal(a->msg.probe, probe);
  assert_int_equal(a->msg.n_digests, probe ? 1 : SYNC_BUCKETS);
  memset(&want, 0, sizeof(want));
  want.from = &from;
  want.to = &to;
  assert_int_equal(dht_store_scan(h->store, &from, &to, digest_visit, &want),
                   0);
  if (!probe) {
    assert_memory_equal(a->msg.digests, want.d, sizeof(want.d));
    return;
  }
  for (b = 0; b < SYNC_BUCKETS; b++) { /* the XOR of every record's hash */
    for (i = 0; i < DHT_DIGEST_LEN; i++) {
      whole[i] ^= want.d[b][i];
    }
  }
  assert_memory_equal(a->msg.digests, whole, sizeof(whole));
}

/* Runs A until its next anti-entropy round, answering ring upkeep, and
 * returns its SYNCs (probes), in either order, to s1 in to_s1 and s2 in
 * to_s2: exactly those two, and no other replication frame before them. */
static void sync_round(fake_host *h, host_action *to_s1, host_action *to_s2) {
  host_action first, second;

  assert_true(next_action(h, h->now + 2 * SYNC_INTERVAL_MS, &first));
  assert_true(next_action(h, h->now, &second)); /* at the same time */
  if (strcmp(first.addr, ring[S1].addr) == 0) {
    *to_s1 = first;
    *to_s2 = second;
  } else {
    *to_s1 = second;
    *to_s2 = first;
  }
  assert_sync(h, to_s1, S1, true);
  assert_sync(h, to_s2, S2, true);
}

/* Answers A's SYNC in a: the buckets that differ and the replica's
 * records in them (none of either: in sync). */
static void sync_answer(fake_host *h, const host_action *a,
                        const uint16_t *buckets, size_t n_buckets,
                        dht_kv *items, size_t n_items) {
  dht_msg r;

  msg_init(&r, DHT_MSG_SYNC_R, a->msg.rid);
  r.buckets = (uint16_t *)buckets;
  r.n_buckets = n_buckets;
  r.items = items;
  r.n_items = n_items;
  assert_int_equal(host_recv(h, PEER, &r), 0);
}

/* Every sync_interval_ms exactly, A sends the digests of its range to each
 * replica (s1, s2; not s3): its own records, not the ones it keeps for its
 * predecessors. A replica that answers "in sync" hears nothing more. */
static void test_sync_digests_go_to_each_replica_every_interval(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS), first_round;
  fake_host h;
  host_action to_s1, to_s2;
  char key[16];
  int next = 0, i;

  (void)state;
  ring_join(&h, true);
  for (i = 0; i < 6; i++) {
    key_owned_by(key, sizeof(key), A, &next);
    record_in(&h, DHT_MSG_REPLICATE,
              kv_of(key, "v", version_of(t + (uint64_t)i, &w), i == 5));
  }
  key_owned_by(key, sizeof(key), P0, &next); /* replicated, not in the range */
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(key, "p0's", version_of(t, &w), false));

  sync_round(&h, &to_s1, &to_s2);
  first_round = h.now;
  sync_answer(&h, &to_s1, NULL, 0, NULL, 0);
  sync_answer(&h, &to_s2, NULL, 0, NULL, 0);
  action_free(&to_s1);
  action_free(&to_s2);

  /* Nothing but upkeep until the next round, a full interval later. */
  sync_round(&h, &to_s1, &to_s2);
  assert_int_equal(h.now, first_round + SYNC_INTERVAL_MS);
  action_free(&to_s1);
  action_free(&to_s2);
  host_free(&h);
}

/* Keys of A's range sorted by digest bucket: three in bucket x, one in y
 * and one in z, three different buckets. */
typedef struct bucket_keys {
  uint16_t x, y, z; /* three different buckets */
  char in_x[3][16]; /* keys in bucket x */
  char in_y[16];    /* a key in bucket y */
  char in_z[16];    /* a key in bucket z */
} bucket_keys;

static void bucket_keys_find(bucket_keys *bk) {
  dht_id from = member_id(P0), to = member_id(A), id;
  int next = 0, n_x = 0;
  bool y = false, z = false;
  char key[16];

  key_owned_by(key, sizeof(key), A, &next);
  id = key_id_of(key);
  bk->x = (uint16_t)bucket_of(&from, &to, SYNC_BUCKETS, &id);
  strcpy(bk->in_x[n_x++], key);
  while (n_x < 3 || !y || !z) {
    uint16_t b;
    key_owned_by(key, sizeof(key), A, &next);
    id = key_id_of(key);
    b = (uint16_t)bucket_of(&from, &to, SYNC_BUCKETS, &id);
    if (b == bk->x && n_x < 3) {
      strcpy(bk->in_x[n_x++], key);
    } else if (b != bk->x && !y) {
      bk->y = b;
      strcpy(bk->in_y, key);
      y = true;
    } else if (b != bk->x && y && b != bk->y && !z) {
      bk->z = b;
      strcpy(bk->in_z, key);
      z = true;
    }
  }
}

/* Asks A for its STATS, whose answer is *out. */
static void stats_exchanges(fake_host *h, host_action *out) {
  dht_msg m;

  msg_init(&m, DHT_MSG_STATS, 77);
  assert_int_equal(host_recv(h, CLIENT, &m), 0);
  host_expect_one(h, out, DHT_ACTION_REPLY, DHT_MSG_STATS_R);
}

/*
 * s1 answers that buckets x and y differ, with its records there: a newer
 * version of one of A's keys and a key A lacks. A keeps both, then pushes
 * its own records of x and y to s1 with REPLICATE (the merged ones
 * included, at their merged versions), and nothing of bucket z, which is
 * in sync; s2, in sync, gets nothing. Once s1 has the push, the exchange
 * is over. Until then its four records there are A's repair backlog;
 * then STATS tells how each exchange went.
 */
static void test_sync_repairs_differing_buckets_both_ways(void **state) {
  static const uint16_t whole_range = 0;
  dht_id w = id_u64(5), w9 = id_u64(9), p0 = member_id(P0), a = member_id(A);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_node_metrics m;
  bucket_keys bk;
  fake_host h;
  host_action to_s1, to_s2, push, st;
  const char *pushed[4];
  dht_kv theirs[2];
  uint16_t differ[2];
  size_t k;

  (void)state;
  ring_join(&h, true);
  bucket_keys_find(&bk);
  /* in_x[0]: both have it, s1 newer; in_x[1]: only A; in_x[2]: only s1. */
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_x[0], "a's", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_x[1], "a's", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_y, "a's", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_z, "a's", version_of(t, &w), false));
  theirs[0] = kv_of(bk.in_x[0], "s1's", version_of(t + 3, &w9), false);
  theirs[1] = kv_of(bk.in_x[2], "s1's", version_of(t + 1, &w9), false);
  differ[0] = bk.x;
  differ[1] = bk.y;

  sync_round(&h, &to_s1, &to_s2);
  sync_answer(&h, &to_s2, NULL, 0, NULL, 0);
  host_expect_none(&h);
  /* s1's probe differs (its one bucket): the digests of every bucket
   * follow at once. */
  sync_answer(&h, &to_s1, &whole_range, 1, NULL, 0);
  action_free(&to_s1);
  host_expect_one(&h, &to_s1, DHT_ACTION_SEND, DHT_MSG_SYNC);
  assert_sync(&h, &to_s1, S1, false);
  sync_answer(&h, &to_s1, differ, 2, theirs, 2);
  action_free(&to_s1);
  action_free(&to_s2);
  assert_record(h.store, bk.in_x[0], "s1's", theirs[0].version, false);
  assert_record(h.store, bk.in_x[2], "s1's", theirs[1].version, false);
  assert_record(h.store, bk.in_x[1], "a's", version_of(t, &w), false);

  /* The four records of x and y are the backlog until s1 takes them. */
  dht_node_get_metrics(h.node, &m);
  assert_true(m.repair_records == 4 && m.repair_bytes > 4 * 3);
  assert_true(m.backlog_eta_ms <= 1 && m.handoff_records == 0);
  host_expect_one(&h, &push, DHT_ACTION_SEND, DHT_MSG_REPLICATE);
  assert_string_equal(push.addr, ring[S1].addr);
  pushed[0] = bk.in_x[0];
  pushed[1] = bk.in_x[1];
  pushed[2] = bk.in_x[2];
  pushed[3] = bk.in_y;
  assert_item_keys(&push.msg, pushed, 4);
  for (k = 0; k < push.msg.n_items; k++) {
    assert_item_as_stored(h.store, &push.msg.items[k]);
  }
  host_answer(&h, PEER, &push, DHT_MSG_OK);
  action_free(&push);
  host_expect_none(&h);
  dht_node_get_metrics(h.node, &m);
  assert_true(m.repair_records == 0 && m.repair_bytes == 0);
  assert_true(m.backlog_eta_ms == 0);
  /* STATS tells how each exchange went: s1's pushed the four, s2's found
   * it in sync. */
  stats_exchanges(&h, &st);
  assert_int_equal(st.msg.n_exchanges, 2);
  for (k = 0; k < 2; k++) {
    const dht_exchange *x = &st.msg.exchanges[k];
    bool s1 = bytes_eq_str(x->peer.addr, ring[S1].addr);
    assert_true(s1 || bytes_eq_str(x->peer.addr, ring[S2].addr));
    assert_true(x->outcome == DHT_EXCHANGE_DONE);
    assert_true(x->buckets == (s1 ? 2u : 0u) && x->pushed == (s1 ? 4u : 0u));
    assert_true(dht_id_eq(&x->from, &p0) && dht_id_eq(&x->to, &a));
  }
  action_free(&st);

  /* Nothing more until the next round. */
  sync_round(&h, &to_s1, &to_s2);
  action_free(&to_s1);
  action_free(&to_s2);
  host_free(&h);
}

/*
 * Repair pushes spend a budget of repair_bytes_per_s. With 1024 bytes a
 * second and a batch of one record, A's first push of bucket x (a record of
 * 1100 bytes) overdraws it: the second waits until the budget is back
 * (about 120 ms at 1024 bytes a second), and A's next deadline says so;
 * then it goes, and the exchange ends once s1 has both.
 */
static void test_sync_push_waits_for_the_repair_budget(void **state) {
  static const uint16_t whole_range = 0;
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS), paused_at;
  char big[1101];
  dht_settings set;
  bucket_keys bk;
  fake_host h;
  host_action to_s1, to_s2, push;
  dht_kv kv;

  (void)state;
  dht_settings_default(&set);
  set.repair_bytes_per_s = 1024;
  set.handoff_batch_bytes = 1;
  ring_join_as(&h, true, NULL, false, set);
  bucket_keys_find(&bk);
  memset(big, 'v', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_x[0], big, version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(bk.in_x[1], big, version_of(t, &w), false));

  sync_round(&h, &to_s1, &to_s2);
  sync_answer(&h, &to_s2, NULL, 0, NULL, 0);
  sync_answer(&h, &to_s1, &whole_range, 1, NULL, 0);
  action_free(&to_s1);
  host_expect_one(&h, &to_s1, DHT_ACTION_SEND, DHT_MSG_SYNC);
  sync_answer(&h, &to_s1, &bk.x, 1, NULL, 0);
  action_free(&to_s1);
  action_free(&to_s2);

  host_expect_one(&h, &push, DHT_ACTION_SEND, DHT_MSG_REPLICATE);
  assert_int_equal(push.msg.n_items, 1);
  host_answer(&h, PEER, &push, DHT_MSG_OK);
  action_free(&push);
  host_expect_none(&h); /* the budget is spent: the second record waits */
  paused_at = h.now;
  assert_true(dht_node_next_deadline(h.node) <= paused_at + 200);

  assert_true(next_action(&h, paused_at + SYNC_INTERVAL_MS / 2, &push));
  assert_int_equal(push.type, DHT_ACTION_SEND);
  assert_int_equal(push.msg.type, DHT_MSG_REPLICATE);
  assert_string_equal(push.addr, ring[S1].addr);
  assert_true(h.now >= paused_at + 50 && h.now <= paused_at + 200);
  assert_int_equal(push.msg.n_items, 1);
  kv = push.msg.items[0];
  assert_item_as_stored(h.store, &kv);
  host_answer(&h, PEER, &push, DHT_MSG_OK);
  action_free(&push);
  host_expect_none(&h);
  host_free(&h);
}

/* ---- hand-off ----------------------------------------------------------------- */

/* p2 refuses every HANDOFF with DISK_FULL, as a node whose disk is full
 * does; the ring answers everything else. */
static bool refuse_handoffs(fake_host *h, const host_action *a,
                            const ring_view *v) {
  dht_msg r;

  (void)v;
  if (a->msg.type != DHT_MSG_HANDOFF) {
    return false;
  }
  assert_string_equal(a->addr, ring[P2].addr);
  msg_init(&r, DHT_MSG_ERROR, a->msg.rid);
  r.error_code = DHT_ERR_DISK_FULL;
  r.error_msg = bytes_of("disk full");
  assert_int_equal(host_recv(h, PEER, &r), 0);
  return true;
}

/*
 * A is handed a record of s2's range, which it neither owns nor
 * replicates, so it hands it on to p2, the farthest predecessor it
 * replicates for. p2 refuses every batch: the record stays A's hand-off
 * backlog, and once no batch has been taken for 10 s A's log says so and
 * why, then again only 30 s later. When p2 takes it, the backlog is gone.
 */
static void test_stalled_handoff_says_why(void **state) {
  dht_id w = id_u64(5);
  ring_view refusing;
  fake_host h;
  char key[16];
  int next = 0;
  dht_kv kv;

  (void)state;
  ring_join(&h, true);
  memset(&refusing, 0, sizeof(refusing));
  refusing.first = refuse_handoffs;
  key_owned_by(key, sizeof(key), S2, &next);
  kv = kv_of(key, "v", version_of(hlc_at(h.now), &w), false);
  host_records_in(&h, PEER, DHT_MSG_HANDOFF, &kv, 1, 4242);
  run_ring(&h, h.now + 9000, &refusing);
  assert_false(host_logged("hand-off stalled"));
  assert_int_equal(stats_counter(&h, "handoff_records"), 1);
  assert_true(stats_counter(&h, "handoff_bytes") > strlen(key));
  run_ring(&h, h.now + 2000, &refusing);
  assert_true(host_logged("hand-off stalled: 1 records"));
  assert_true(host_logged("p2:1 refused the last batch: DISK_FULL (disk full)"));
  host_warnings[0] = '\0';
  run_ring(&h, h.now + 25000, &refusing);
  assert_false(host_logged("hand-off stalled"));
  run_ring(&h, h.now + 10000, &refusing);
  assert_true(host_logged("hand-off stalled"));
  run_ring(&h, h.now + 2000, NULL);
  assert_int_equal(stats_counter(&h, "handoff_records"), 0);
  assert_int_equal(stats_counter(&h, "handoff_bytes"), 0);
  host_free(&h);
}

/* What a leave of A's saw, the ring answering as the test says. */
typedef struct leave_seen {
  int handoffs[RING_N]; /* HANDOFF batches, by receiver */
  int refused;          /* ... refused */
  uint64_t last_refused_ms, min_gap_ms; /* between two refusals to s1
                                           after the first (the first
                                           comes when the leave starts,
                                           at any time before a round) */
  bool left;            /* LEFT came */
} leave_seen;

/* Lets A leave: s1 refuses its first `refusals` HANDOFFs with code (all of
 * them with STATE, which s1 sends while it leaves too), every other
 * receiver takes them, and the ring answers the rest. */
static void run_leave(fake_host *h, int code, int refusals, leave_seen *seen) {
  uint64_t until = h->now + 20000;
  host_action a;
  dht_msg r;

  memset(seen, 0, sizeof(*seen));
  seen->min_gap_ms = UINT64_MAX;
  assert_int_equal(dht_node_leave(h->node, h->now), 0);
  while (!seen->left && next_action(h, until, &a)) {
    int m = a.type == DHT_ACTION_SEND ? member_at(a.addr) : -1;
    if (a.type == DHT_ACTION_EVENT) {
      assert_int_equal(a.event, DHT_EVENT_LEFT);
      seen->left = true;
    } else if (a.msg.type == DHT_MSG_HANDOFF) {
      if (++seen->handoffs[m] > 100) {
        fail_msg("A sent %s HANDOFF after HANDOFF: a loop", a.addr);
      }
      msg_init(&r, DHT_MSG_OK, a.msg.rid);
      if (m == S1 && (code == DHT_ERR_STATE || seen->refused < refusals)) {
        if (seen->refused > 1 &&
            h->now - seen->last_refused_ms < seen->min_gap_ms) {
          seen->min_gap_ms = h->now - seen->last_refused_ms;
        }
        seen->refused++;
        seen->last_refused_ms = h->now;
        msg_init(&r, DHT_MSG_ERROR, a.msg.rid);
        r.error_code = code;
      }
      assert_int_equal(host_recv(h, PEER, &r), 0);
    } else if (a.msg.type == DHT_MSG_LEAVE) {
      host_answer(h, PEER, &a, DHT_MSG_OK);
    } else {
      answer_as_ring(h, &a);
    }
    action_free(&a);
  }
}

/*
 * A leaving node hands its keys to its successor. A successor that answers
 * STATE is out of the ring (leaving too, as when a whole ring stops): it
 * is passed over at once for the next one, which takes the keys. One that
 * refuses for another reason (its disk is full) is asked again at the
 * next stabilize round, not in a loop: a leaving node once sent 75000
 * HANDOFFs in 90 ms to a successor that was leaving too.
 */
static void test_leave_passes_over_a_leaving_successor(void **state) {
  dht_id w = id_u64(5);
  leave_seen seen;
  fake_host h;
  char key[16];
  int next = 0;

  (void)state;
  ring_join(&h, true);
  key_owned_by(key, sizeof(key), A, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(key, "v", version_of(hlc_at(h.now), &w), false));
  run_leave(&h, DHT_ERR_STATE, 0, &seen);
  assert_true(seen.left);
  assert_int_equal(seen.handoffs[S1], 1);
  assert_int_equal(seen.handoffs[S2], 1);
  host_free(&h);

  ring_join(&h, true);
  next = 0;
  key_owned_by(key, sizeof(key), A, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(key, "v", version_of(hlc_at(h.now), &w), false));
  run_leave(&h, DHT_ERR_DISK_FULL, 3, &seen);
  assert_true(seen.left);
  assert_int_equal(seen.handoffs[S1], 4); /* three refused, then taken */
  assert_int_equal(seen.handoffs[S2], 0);
  assert_true(seen.min_gap_ms >= 100);
  host_free(&h);
}

/* ---- replica reads ------------------------------------------------------------ */

/* Expects the request just sent to be passed on: ACCEPTED to its sender, the
 * request to member m with final set, and no answer. */
static void expect_passed_to(fake_host *h, uint64_t conn, uint64_t rid, int m,
                             dht_msg_type type, const char *key) {
  host_action a;
  bool sent = false, accepted = false;

  while (host_poll(h, &a)) {
    if (a.type == DHT_ACTION_SEND) {
      assert_false(sent);
      assert_string_equal(a.addr, ring[m].addr);
      assert_int_equal(a.msg.type, type);
      assert_true(a.msg.final);
      assert_true(bytes_eq_str(a.msg.key, key));
      sent = true;
    } else {
      assert_int_equal(a.type, DHT_ACTION_REPLY);
      assert_int_equal(a.conn, conn);
      assert_int_equal(a.msg.rid, rid);
      assert_int_equal(a.msg.type, DHT_MSG_ACCEPTED);
      accepted = true;
    }
    action_free(&a);
  }
  assert_true(sent);
  assert_true(accepted);
}

/* Sends A a GET or PUT of key from a peer that believes A owns it. */
static void final_request(fake_host *h, dht_msg_type type, uint64_t rid,
                          const char *key) {
  dht_msg m;

  msg_init(&m, type, rid);
  m.key = bytes_of(key);
  if (type == DHT_MSG_PUT) {
    m.value = bytes_of("new");
  }
  m.final = true;
  m.hops = 2;
  assert_int_equal(host_recv(h, PEER, &m), 0);
}

/*
 * A GET marked final for a key A replicates for p0 or p1 and holds is
 * answered from A's store (a tombstone as NOT_FOUND) without asking anyone.
 * Passed back towards the owner instead: the same GET without final, a
 * final GET of a replicated key A does not hold or of a key it holds outside
 * the ranges it replicates (straight to p2, its owner by A's predecessor
 * list), and a final PUT.
 */
static void test_replica_answers_a_final_get_from_its_store(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  fake_host h;
  host_action a;
  char of_p0[16], of_p1[16], gone[16], absent[16], of_p2[16];
  bool routed = false;
  int next = 0;

  (void)state;
  ring_join(&h, false);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);
  key_owned_by(of_p1, sizeof(of_p1), P1, &next);
  key_owned_by(gone, sizeof(gone), P0, &next);
  key_owned_by(absent, sizeof(absent), P0, &next);
  key_owned_by(of_p2, sizeof(of_p2), P2, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p0, "p0's", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p1, "p1's", version_of(t, &w), false));
  record_in(&h, DHT_MSG_REPLICATE, kv_of(gone, "", version_of(t, &w), true));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p2, "p2's", version_of(t, &w), false));

  final_request(&h, DHT_MSG_GET, 701, of_p0);
  host_expect_reply(&h, &a, PEER, DHT_MSG_VALUE, 701);
  assert_true(bytes_eq_str(a.msg.value, "p0's"));
  assert_int_equal(a.msg.hops, 2);
  action_free(&a);
  host_expect_none(&h);
  final_request(&h, DHT_MSG_GET, 702, of_p1);
  host_expect_reply(&h, &a, PEER, DHT_MSG_VALUE, 702);
  assert_true(bytes_eq_str(a.msg.value, "p1's"));
  action_free(&a);
  host_expect_none(&h);
  final_request(&h, DHT_MSG_GET, 703, gone);
  host_expect_error(&h, PEER, 703, DHT_ERR_NOT_FOUND);
  host_expect_none(&h);

  client_request(&h, DHT_MSG_GET, 704, of_p0, NULL, false);
  while (host_poll(&h, &a)) { /* routed towards p0, not answered here */
    routed =
        routed || (a.type == DHT_ACTION_SEND && a.msg.type == DHT_MSG_GET &&
                   bytes_eq_str(a.msg.key, of_p0));
    assert_false(a.type == DHT_ACTION_REPLY && a.msg.type != DHT_MSG_ACCEPTED);
    action_free(&a);
  }
  assert_true(routed);
  final_request(&h, DHT_MSG_GET, 705, absent);
  expect_passed_to(&h, PEER, 705, P0, DHT_MSG_GET, absent);
  final_request(&h, DHT_MSG_GET, 706, of_p2);
  expect_passed_to(&h, PEER, 706, P2, DHT_MSG_GET, of_p2);
  final_request(&h, DHT_MSG_PUT, 707, of_p0);
  expect_passed_to(&h, PEER, 707, P0, DHT_MSG_PUT, of_p0);
  assert_record(h.store, of_p0, "p0's", version_of(t, &w), false);
  host_free(&h);
}

/* ---- last steps for a key before the predecessor ------------------------------- */

/* Sends A a lookup of target from a peer that believes A owns it. */
static void final_lookup(fake_host *h, uint64_t rid, const dht_id *target) {
  dht_msg m;

  msg_init(&m, DHT_MSG_FIND_SUCC, rid);
  m.target = *target;
  m.final = true;
  m.hops = 2;
  assert_int_equal(host_recv(h, PEER, &m), 0);
}

/* Expects the lookup rid just sent to be passed on: ACCEPTED to its
 * sender, the lookup to member m with final set, and nothing else. */
static void expect_lookup_passed_to(fake_host *h, uint64_t rid, int m,
                                    const dht_id *target) {
  host_actions all;
  const host_action *fwd;

  host_take_all(h, &all);
  assert_int_equal(all.n, 2);
  fwd = only_send(&all, ring[m].addr, DHT_MSG_FIND_SUCC);
  assert_true(fwd->msg.final);
  assert_true(dht_id_eq(&fwd->msg.target, target));
  assert_int_equal(fwd->msg.hops, 3); /* a step back is a hop */
  only_reply(&all, PEER, rid, DHT_MSG_ACCEPTED);
  host_actions_free(&all);
}

/*
 * A last step for a key before A's predecessor p0 goes straight to the
 * key's owner by A's predecessor list: p1, or p2 for a key a little before
 * p2. A key further before p2 than p2 is before A came from a sender whose
 * successor pointer skips far more nodes than joins explain (it lost its
 * successors and took a finger most of the ring away): walking back from A
 * would take a hop per node in between, round to the key, so it is refused
 * at once (dht-sim run --seed 7 --nodes 48 reached max_hops 22516 times).
 */
static void test_last_step_before_the_predecessors(void **state) {
  dht_id of_p1 = id_top(0x30), near_p2 = id_top(0xf0), far = id_top(0xb0);
  fake_host h;

  (void)state;
  ring_join(&h, false);
  final_lookup(&h, 801, &of_p1);
  expect_lookup_passed_to(&h, 801, P1, &of_p1);
  final_lookup(&h, 802, &near_p2);
  expect_lookup_passed_to(&h, 802, P2, &near_p2);
  final_lookup(&h, 803, &far);
  host_expect_error(&h, PEER, 803, DHT_ERR_UNAVAILABLE);
  host_expect_none(&h);
  assert_int_equal(stats_counter(&h, "route_refused"), 1);
  host_free(&h);
}

/* ---- stamps of copies, and tombstones past their grace ------------------------- */

#define SKEW_MS 10000u            /* the default max_clock_skew_ms */
#define GRACE_MS (3600u * 1000u)  /* the default tombstone_grace_ms */

/* The greatest stamp A takes from a writer when the test's clock reads
 * now: SKEW_MS ahead of A's clock, the counter full. */
static uint64_t ceiling_at(uint64_t now) {
  return (wall_at(now) + SKEW_MS) << 16 | 0xffffu;
}

/* Answers both REPLICATEs of w with OK and expects the client's OK to rid;
 * frees w. */
static void write_acked(fake_host *h, write_out *w, uint64_t rid) {
  host_action a;

  host_answer(h, PEER, w->to_s1, DHT_MSG_OK);
  host_answer(h, PEER, w->to_s2, DHT_MSG_OK);
  host_actions_free(&w->sent);
  host_expect_reply(h, &a, CLIENT, DHT_MSG_OK, rid);
  action_free(&a);
  host_expect_none(h);
}

/*
 * A copy from another node is taken whatever its stamp, an hour ahead of
 * A's clock included (REPLICATE and HANDOFF: its owner judged the stamp),
 * and is not counted as refused. It moves neither A's skew bound (a
 * client's stamp one tick past it is still refused) nor A's clock past
 * it: the next write A stamps itself stays within the bound.
 */
static void test_copies_are_taken_whatever_their_stamp(void **state) {
  dht_id w = id_u64(5), a_id = member_id(A);
  uint64_t hour = hlc_at(HOST_START_MS + 3600000);
  dht_version beyond;
  fake_host h;
  host_actions all;
  const host_action *to_s1;
  char of_p0[16], of_p0b[16], mine[16], mine2[16];
  int next = 0;

  (void)state;
  ring_join(&h, false);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);
  key_owned_by(of_p0b, sizeof(of_p0b), P0, &next);
  key_owned_by(mine, sizeof(mine), A, &next);
  key_owned_by(mine2, sizeof(mine2), A, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p0, "an hour ahead", version_of(hour, &w), false));
  assert_record(h.store, of_p0, "an hour ahead", version_of(hour, &w), false);
  record_in(&h, DHT_MSG_HANDOFF,
            kv_of(of_p0b, "", version_of(hour + 1, &w), true));
  assert_record(h.store, of_p0b, "", version_of(hour + 1, &w), true);
  assert_int_equal(stats_counter(&h, "clock_skew_refused"), 0);

  beyond = version_of(ceiling_at(h.now) + 1, &w);
  host_write(&h, CLIENT, 801, mine, "v", &beyond);
  host_expect_error(&h, CLIENT, 801, DHT_ERR_CLOCK_SKEW);
  host_expect_none(&h);
  assert_int_equal(stats_counter(&h, "clock_skew_refused"), 1);

  host_write(&h, CLIENT, 802, mine2, "own", NULL);
  host_take_all(&h, &all);
  only_reply(&all, CLIENT, 802, DHT_MSG_ACCEPTED);
  to_s1 = only_send(&all, ring[S1].addr, DHT_MSG_REPLICATE);
  assert_true(dht_id_eq(&to_s1->msg.items[0].version.writer, &a_id));
  assert_true(to_s1->msg.items[0].version.hlc > hlc_at(h.now));
  /* Within the bound to the millisecond: the stamp after the greatest A
   * takes may step a tick or two past it. */
  assert_true(to_s1->msg.items[0].version.hlc >> 16 <=
              wall_at(h.now) + SKEW_MS + 1);
  host_actions_free(&all);
  host_free(&h);
}

/*
 * A tombstone already past its grace (stamp + grace + skew behind A's
 * clock) that arrives by REPLICATE still deletes an older value, and is
 * then not kept: the key is gone from the store and reads as missing. It
 * deletes nothing newer, and of a key A lacks it leaves nothing. One a
 * millisecond short of expiry is kept as a tombstone.
 */
static void test_expired_tombstone_still_deletes_an_older_value(void **state) {
  dht_id w = id_u64(5);
  uint64_t now_wall, expired, edge, old;
  fake_host h;
  char key[16], newer[16], absent[16], kept[16];
  dht_kv kv;
  int next = 0;

  (void)state;
  ring_join(&h, false);
  now_wall = wall_at(h.now);
  expired = (now_wall - GRACE_MS - SKEW_MS - 1) << 16;
  edge = (now_wall - GRACE_MS - SKEW_MS) << 16;
  old = (now_wall - 3 * GRACE_MS) << 16;
  key_owned_by(key, sizeof(key), A, &next);
  key_owned_by(newer, sizeof(newer), A, &next);
  key_owned_by(absent, sizeof(absent), P0, &next);
  key_owned_by(kept, sizeof(kept), A, &next);
  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "old", version_of(old, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(newer, "newer", version_of(expired + 1, &w), false));
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(kept, "old", version_of(old, &w), false));
  expect_get(&h, 810, key, "old");

  record_in(&h, DHT_MSG_REPLICATE, kv_of(key, "", version_of(expired, &w), true));
  assert_false(store_record(h.store, key, &kv));
  expect_get(&h, 811, key, NULL);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(newer, "", version_of(expired, &w), true));
  assert_record(h.store, newer, "newer", version_of(expired + 1, &w), false);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(absent, "", version_of(expired, &w), true));
  assert_false(store_record(h.store, absent, &kv));
  record_in(&h, DHT_MSG_REPLICATE, kv_of(kept, "", version_of(edge, &w), true));
  assert_record(h.store, kept, "", version_of(edge, &w), true);
  expect_get(&h, 812, kept, NULL);
  host_free(&h);
}

/* ---- group commit with replicas ------------------------------------------------ */

#define DISK_WORDS "the file system holding the data directory is full"

/*
 * With group commit, the owner's OK needs both: every live replica's OK
 * and its own commit, in either order. A commit that fails answers the
 * writes of its group DISK_FULL at once, naming the node and quoting the
 * store, whatever the replicas say later. A REPLICATE that A takes as a
 * replica is acknowledged only after its commit, and refused once the
 * commit failed; while A refuses writes it still serves reads.
 */
static void test_group_commit_with_replicas(void **state) {
  fail_store *fs = fail_store_new(DISK_WORDS);
  dht_id w = id_u64(5), writer = member_id(A);
  fake_host h;
  write_out wo;
  host_action a;
  dht_kv want, copy;
  dht_msg m;
  char k1[16], k2[16], k3[16], of_p0[16], of_p0b[16];
  int next = 0;

  (void)state;
  ring_join_with(&h, false, &fs->base, true);
  key_owned_by(k1, sizeof(k1), A, &next);
  key_owned_by(k2, sizeof(k2), A, &next);
  key_owned_by(k3, sizeof(k3), A, &next);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);
  key_owned_by(of_p0b, sizeof(of_p0b), P0, &next);

  /* Replicas first, then the commit. */
  want = kv_of(k1, "v1", version_of(hlc_at(h.now), &writer), false);
  write_sent(&h, 820, k1, "v1", &want, &wo);
  host_answer(&h, PEER, wo.to_s1, DHT_MSG_OK);
  host_answer(&h, PEER, wo.to_s2, DHT_MSG_OK);
  host_actions_free(&wo.sent);
  host_expect_none(&h);
  dht_node_commit_done(h.node, 0, h.now);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 820);
  action_free(&a);
  host_expect_none(&h);

  /* The commit first, then the replicas. */
  h.now += 1;
  want = kv_of(k2, "v2", version_of(hlc_at(h.now), &writer), false);
  write_sent(&h, 821, k2, "v2", &want, &wo);
  dht_node_commit_done(h.node, 0, h.now);
  host_expect_none(&h);
  write_acked(&h, &wo, 821);

  /* A REPLICATE is acknowledged after the commit. */
  copy = kv_of(of_p0, "p0's", version_of(hlc_at(h.now), &w), false);
  msg_init(&m, DHT_MSG_REPLICATE, 822);
  m.items = &copy;
  m.n_items = 1;
  assert_int_equal(host_recv(&h, PEER, &m), 0);
  host_expect_none(&h);
  dht_node_commit_done(h.node, 0, h.now);
  host_expect_reply(&h, &a, PEER, DHT_MSG_OK, 822);
  action_free(&a);
  host_expect_none(&h);

  /* A failed commit: the write in flight and the held REPLICATE OK are
   * refused at once; the replicas' OKs that follow change nothing. */
  h.now += 1;
  want = kv_of(k3, "v3", version_of(hlc_at(h.now), &writer), false);
  write_sent(&h, 823, k3, "v3", &want, &wo);
  copy = kv_of(of_p0b, "p0's", version_of(hlc_at(h.now), &w), false);
  m.rid = 824;
  assert_int_equal(host_recv(&h, PEER, &m), 0);
  host_expect_none(&h);
  fail_store_say(fs);
  dht_node_commit_done(h.node, DHT_ERR_DISK_FULL, h.now);
  {
    host_actions all;
    const host_action *r;

    host_take_all(&h, &all);
    assert_int_equal(all.n, 2);
    r = only_reply(&all, CLIENT, 823, DHT_MSG_ERROR);
    assert_int_equal(r->msg.error_code, DHT_ERR_DISK_FULL);
    assert_true(
        bytes_eq_str(r->msg.error_msg, "node a:1: disk full: " DISK_WORDS));
    r = only_reply(&all, PEER, 824, DHT_MSG_ERROR);
    assert_int_equal(r->msg.error_code, DHT_ERR_DISK_FULL);
    host_actions_free(&all);
  }
  host_answer(&h, PEER, wo.to_s1, DHT_MSG_OK);
  host_answer(&h, PEER, wo.to_s2, DHT_MSG_OK);
  host_actions_free(&wo.sent);
  host_expect_none(&h);

  /* Refusing writes for store_retry_ms: a replica's too (a copy it does
   * not hold: one it holds needs no write, and is acknowledged); reads go
   * on. */
  copy = kv_of(of_p0b, "p0's newer", version_of(hlc_at(h.now) + 1, &w), false);
  m.rid = 825;
  assert_int_equal(host_recv(&h, PEER, &m), 0);
  host_expect_error(&h, PEER, 825, DHT_ERR_DISK_FULL);
  host_write(&h, CLIENT, 826, k1, "again", NULL);
  host_expect_error(&h, CLIENT, 826, DHT_ERR_DISK_FULL);
  host_expect_none(&h);
  expect_get(&h, 827, k1, "v1");
  host_free(&h);
}

/*
 * A commit that fails rolls back the write A served in its group, but the
 * write's REPLICATEs went, and the replicas kept it. Reads go on from A's
 * store (the write was refused: the record it replaced is a right answer),
 * but until A is in sync with its replicas again its writes consult them
 * first, so that a delete stamped between the two (by a client whose clock
 * is behind the first one's) is refused STALE, naming the kept copy, rather
 * than acknowledged and then undone by it (seed 39 of `dht-sim crashes
 * --nodes-max 48 --crashes 6`: delete #5 was acknowledged below put #4,
 * refused on the owner's failed commit, and put #4 came back).
 */
static void test_writes_consult_after_a_rolled_back_write(void **state) {
  dht_id w = id_u64(5), key_id;
  uint64_t t = hlc_at(HOST_START_MS);
  dht_version v1 = version_of(t, &w), v2 = version_of(t + (20u << 16), &w);
  dht_version between = version_of(t + (10u << 16), &w);
  const uint8_t *rec;
  size_t rec_len;
  uint8_t *saved;
  fake_host h;
  write_out wo;
  host_action a;
  dht_kv want;
  char key[16];
  int next = 0;

  (void)state;
  ring_join_with(&h, false, NULL, true);
  key_owned_by(key, sizeof(key), A, &next);
  key_id = key_id_of(key);
  want = kv_of(key, "v1", v1, false);
  write_sent_at(&h, 830, key, "v1", &v1, &want, &wo);
  dht_node_commit_done(h.node, 0, h.now);
  write_acked(&h, &wo, 830);
  assert_int_equal(
      dht_store_get(h.store, &key_id, (const uint8_t *)key, strlen(key), &rec,
                    &rec_len),
      0);
  saved = malloc(rec_len);
  assert_non_null(saved);
  memcpy(saved, rec, rec_len);

  /* v2 goes to the replicas; the commit fails and the store puts v1 back,
   * as LMDB's aborted transaction would; the replicas keep v2. */
  want = kv_of(key, "v2", v2, false);
  write_sent_at(&h, 831, key, "v2", &v2, &want, &wo);
  assert_int_equal(dht_store_put(h.store, &key_id, (const uint8_t *)key,
                                 strlen(key), saved, rec_len),
                   0);
  free(saved);
  dht_node_commit_done(h.node, DHT_ERR_DISK_FULL, h.now);
  host_expect_error(&h, CLIENT, 831, DHT_ERR_DISK_FULL);
  host_answer(&h, PEER, wo.to_s1, DHT_MSG_OK);
  host_answer(&h, PEER, wo.to_s2, DHT_MSG_OK);
  host_actions_free(&wo.sent);
  host_expect_none(&h);
  expect_get(&h, 832, key, "v1");

  host_advance(&h, 1000); /* store_retry_ms: writes are taken again */
  host_expect_none(&h);
  host_write(&h, CLIENT, 833, key, NULL, &between);
  fetch_answered(&h, 833, S1, key, &want);
  fetch_answered(&h, 833, S2, key, &want);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_ERROR, 833);
  assert_int_equal(a.msg.error_code, DHT_ERR_STALE);
  assert_true(a.msg.has_ver);
  assert_int_equal(dht_version_cmp(&a.msg.ver, &v2), 0);
  action_free(&a);
  host_expect_none(&h);
  assert_record(h.store, key, "v2", v2, false);
  host_free(&h);
}

/* Answers A's FETCH of key from s1 and then s2 with nothing, and expects
 * the write rid then to go to both replicas. */
static void fetched_nothing_then_replicated(fake_host *h, uint64_t rid,
                                            const char *key) {
  host_actions all;

  fetch_answered(h, rid, S1, key, NULL);
  fetch_answered(h, rid, S2, key, NULL);
  host_take_all(h, &all);
  only_send(&all, ring[S1].addr, DHT_MSG_REPLICATE);
  only_send(&all, ring[S2].addr, DHT_MSG_REPLICATE);
  host_actions_free(&all);
}

/*
 * Digests sent before a commit failed may count records the failure
 * rolled back, and a write the group sent on may reach the replica after
 * them: an answer "in sync" to those digests does not end the consulting
 * that the failure began; the next round's does.
 */
static void test_digests_out_across_a_failed_commit_count_for_nothing(
    void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_version v = version_of(t, &w);
  fake_host h;
  host_action to_s1, to_s2;
  write_out wo;
  dht_kv want, copy;
  dht_msg m;
  char k1[16], k2[16], of_p0[16];
  int next = 0;

  (void)state;
  ring_join_with(&h, false, NULL, true);
  key_owned_by(k1, sizeof(k1), A, &next);
  key_owned_by(k2, sizeof(k2), A, &next);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);

  dht_node_set_maintenance(h.node, true, h.now);
  sync_round(&h, &to_s1, &to_s2);
  /* While the digests are out, A takes a copy for p0 and its commit
   * fails. */
  copy = kv_of(of_p0, "p0's", v, false);
  msg_init(&m, DHT_MSG_REPLICATE, 840);
  m.items = &copy;
  m.n_items = 1;
  assert_int_equal(host_recv(&h, PEER, &m), 0);
  host_expect_none(&h);
  dht_node_commit_done(h.node, DHT_ERR_DISK_FULL, h.now);
  host_expect_error(&h, PEER, 840, DHT_ERR_DISK_FULL);
  host_expect_none(&h);
  sync_answer(&h, &to_s1, NULL, 0, NULL, 0);
  sync_answer(&h, &to_s2, NULL, 0, NULL, 0);
  action_free(&to_s1);
  action_free(&to_s2);
  dht_node_set_maintenance(h.node, false, h.now);
  host_drain(&h);

  host_advance(&h, 1000); /* store_retry_ms */
  host_drain(&h);
  host_write(&h, CLIENT, 841, k1, "v", &v);
  fetched_nothing_then_replicated(&h, 841, k1);
  dht_node_commit_done(h.node, 0, h.now);
  host_drain(&h);

  /* A round that began after the failure puts A back in sync. */
  dht_node_set_maintenance(h.node, true, h.now);
  sync_round(&h, &to_s1, &to_s2);
  sync_answer(&h, &to_s1, NULL, 0, NULL, 0);
  sync_answer(&h, &to_s2, NULL, 0, NULL, 0);
  action_free(&to_s1);
  action_free(&to_s2);
  dht_node_set_maintenance(h.node, false, h.now);
  host_drain(&h);
  want = kv_of(k2, "v", v, false);
  write_sent_at(&h, 842, k2, "v", &v, &want, &wo);
  host_actions_free(&wo.sent);
  host_free(&h);
}

/* ---- clocks compared with the neighbours' -------------------------------------- */

/* A in its ring with maintenance on, its successor s1 and predecessor p0
 * answering NEIGHBORS with clocks ahead of A's by succ_ms and pred_ms, for
 * 2.5 s: long enough for stabilize and the predecessor check to ask each
 * twice. */
static void clocks_noted(fake_host *h, int64_t succ_ms, int64_t pred_ms) {
  ring_view v;

  memset(&v, 0, sizeof(v));
  v.walls = true;
  v.ahead_ms[S1] = succ_ms;
  v.ahead_ms[P0] = pred_ms;
  ring_join(h, true);
  run_ring(h, h->now + 2500, &v);
}

/* The client's PUT of key stamped ahead_ms ahead of A's clock: expects it
 * taken at exactly that stamp and acknowledged, when taken is true, or
 * refused CLOCK_SKEW. */
static void put_stamped_ahead(fake_host *h, uint64_t rid, const char *key,
                              uint64_t ahead_ms, bool taken) {
  dht_id w = id_u64(9);
  dht_version ver = version_of((wall_at(h->now) + ahead_ms) << 16, &w);
  dht_kv want = kv_of(key, "v", ver, false);
  write_out wo;

  if (!taken) {
    host_write(h, CLIENT, rid, key, "v", &ver);
    host_expect_error(h, CLIENT, rid, DHT_ERR_CLOCK_SKEW);
    host_expect_none(h);
    return;
  }
  write_sent_at(h, rid, key, "v", &ver, &want, &wo);
  write_acked(h, &wo, rid);
  assert_record(h->store, key, "v", ver, false);
}

/*
 * Both neighbours' clocks a minute ahead: A says it is behind
 * (clock_behind_ms) and judges stamps by their time, so a client stamp 65 s
 * ahead of A's own clock (5 s ahead of theirs) is taken, and one more than
 * the bound ahead of theirs is still refused.
 */
static void test_neighbours_agreeing_the_clock_is_behind(void **state) {
  fake_host h;
  char key[16], key2[16];
  int next = 0;

  (void)state;
  clocks_noted(&h, 60000, 60000);
  assert_int_equal(stats_counter(&h, "clock_behind_ms"), 60000);
  assert_int_equal(stats_counter(&h, "clock_ahead_ms"), 0);
  key_owned_by(key, sizeof(key), A, &next);
  key_owned_by(key2, sizeof(key2), A, &next);
  put_stamped_ahead(&h, 830, key, 65000, true);
  put_stamped_ahead(&h, 831, key2, 60000 + SKEW_MS + 1, false);
  host_free(&h);
}

/* One neighbour alone (the successor, or the predecessor) cannot move A's
 * clock, nor can both saying A is ahead (A reports that, but a fast clock
 * is not trusted to be right): a stamp 65 s ahead of A's clock is refused,
 * one 5 s ahead is taken. */
static void test_one_neighbour_or_a_fast_clock_moves_nothing(void **state) {
  static const int64_t cases[][2] = {{60000, 0}, {0, 60000}, {-60000, -60000}};
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    fake_host h;
    char key[16], key2[16];
    int next = 0;

    clocks_noted(&h, cases[i][0], cases[i][1]);
    assert_int_equal(stats_counter(&h, "clock_behind_ms"), 0);
    assert_int_equal(stats_counter(&h, "clock_ahead_ms"),
                     cases[i][0] < 0 ? 60000 : 0);
    key_owned_by(key, sizeof(key), A, &next);
    key_owned_by(key2, sizeof(key2), A, &next);
    put_stamped_ahead(&h, 832, key, 65000, false);
    put_stamped_ahead(&h, 833, key2, 5000, true);
    host_free(&h);
  }
}

/* ---- ranges whose every copy died ------------------------------------------------ */

/* q, a node before p2 that becomes A's predecessor once p0, p1 and p2
 * have died. */
#define Q_ADDR "q:1"
#define Q_TOP 0x10

static void q_ref(dht_peer_ref *ref) {
  ref->id = id_top(Q_TOP);
  ref->addr = bytes_of(Q_ADDR);
}

/* Answers a frame to q as q would in the ring {q, A, s1, s2, s3}. */
static bool answer_as_q(fake_host *h, const host_action *a,
                        const ring_view *v) {
  dht_peer_ref succs[4], preds[3];
  dht_msg r;
  int i;

  (void)v;
  if (strcmp(a->addr, Q_ADDR) != 0) {
    return false;
  }
  msg_init(&r, DHT_MSG_PONG, a->msg.rid);
  r.has_peer = true;
  q_ref(&r.peer);
  if (a->msg.type == DHT_MSG_GET_NEIGHBORS) {
    r.type = DHT_MSG_NEIGHBORS;
    r.has_pred = true;
    member_ref(S3, &r.pred);
    for (i = 0; i < 4; i++) {
      member_ref(A + i, &succs[i]);
    }
    for (i = 0; i < 3; i++) {
      member_ref(S3 - i, &preds[i]);
    }
    r.succs = succs;
    r.n_succs = 4;
    r.preds = preds;
    r.n_preds = 3;
  } else if (a->msg.type != DHT_MSG_PING) {
    fail_msg("A sent %s to q", dht_msg_type_name((int)a->msg.type));
  }
  assert_int_equal(host_recv(h, PEER, &r), 0);
  return true;
}

/* ... and p2, although it died to A's pred check, answers a PING with an
 * error: a live process all the same. */
static bool answer_as_q_p2_refusing(fake_host *h, const host_action *a,
                                    const ring_view *v) {
  dht_msg r;

  if (strcmp(a->addr, ring[P2].addr) == 0 && a->msg.type == DHT_MSG_PING) {
    msg_init(&r, DHT_MSG_ERROR, a->msg.rid);
    r.error_code = DHT_ERR_STATE;
    assert_int_equal(host_recv(h, PEER, &r), 0);
    return true;
  }
  return answer_as_q(h, a, v);
}

/* A in its ring with maintenance on, holding held (a key of p1's range,
 * which A replicates); then p0, p1 and p2 die at once: A's predecessor
 * check finds p0 dead, and q, beyond them all, notifies A. */
static void three_die(fake_host *h, ring_view *v, const char *held) {
  dht_id w = id_u64(5);
  dht_msg notify;

  ring_join(h, true);
  record_in(h, DHT_MSG_REPLICATE,
            kv_of(held, "p1's", version_of(hlc_at(h->now), &w), false));
  memset(v, 0, sizeof(*v));
  v->dead[P0] = v->dead[P1] = v->dead[P2] = true;
  v->first = answer_as_q;
  run_ring(h, h->now + 3000, v);
  assert_false(dht_node_pred(h->node, NULL, NULL));
  msg_init(&notify, DHT_MSG_NOTIFY, 3);
  notify.has_peer = true;
  q_ref(&notify.peer);
  assert_int_equal(host_recv(h, PEER, &notify), 0);
}

/* The client's GET of key as rid, the ring answering what A asks as v
 * says; returns A's final answer in *a (free it after). */
static void get_answered(fake_host *h, uint64_t rid, const char *key,
                         const ring_view *v, host_action *a) {
  client_request(h, DHT_MSG_GET, rid, key, NULL, false);
  for (;;) {
    assert_true(next_action_in(h, h->now + 100, a, v));
    if (a->type == DHT_ACTION_SEND) {
      answer_as_ring_in(h, a, v);
    } else if (a->msg.type != DHT_MSG_ACCEPTED) {
      assert_int_equal(a->type, DHT_ACTION_REPLY);
      assert_int_equal(a->conn, CLIENT);
      assert_int_equal(a->msg.rid, rid);
      return;
    }
    action_free(a);
  }
}

/* Expects the GET of key to be answered ERROR LOST with a text containing
 * words (each of the NULL-terminated list). */
static void expect_lost(fake_host *h, uint64_t rid, const char *key,
                        const ring_view *v, const char *const *words) {
  char text[300];
  host_action a;

  get_answered(h, rid, key, v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_ERROR);
  assert_int_equal(a.msg.error_code, DHT_ERR_LOST);
  assert_true(a.msg.error_msg.len < sizeof(text));
  memcpy(text, a.msg.error_msg.p, a.msg.error_msg.len);
  text[a.msg.error_msg.len] = '\0';
  for (; *words != NULL; words++) {
    if (strstr(text, *words) == NULL) {
      fail_msg("LOST says \"%s\", without \"%s\"", text, *words);
    }
  }
  action_free(&a);
}

/* A's STATS reply to rid (free it after). */
static void stats_of(fake_host *h, uint64_t rid, host_action *a) {
  dht_msg m;

  msg_init(&m, DHT_MSG_STATS, rid);
  assert_int_equal(host_recv(h, CLIENT, &m), 0);
  host_expect_reply(h, a, CLIENT, DHT_MSG_STATS_R, rid);
}

static void ack_lost(fake_host *h, uint64_t rid, const dht_id *from,
                     const dht_id *to) {
  host_action a;
  dht_msg m;

  msg_init(&m, DHT_MSG_ACK_LOST, rid);
  m.from = *from;
  m.to = *to;
  assert_int_equal(host_recv(h, CLIENT, &m), 0);
  host_expect_reply(h, &a, CLIENT, DHT_MSG_OK, rid);
  action_free(&a);
}

/*
 * p0, p1 and p2 die at once, so the keys of (q, p2] had every copy on
 * them. A, whose new predecessor q lies beyond them all, pings each of
 * them; while it waits a missing key of the range reads LOST ("asking them
 * once more"), and once none has answered the range is recorded: counted,
 * listed in STATS_R with its holders and when, and a missing key of it
 * reads LOST naming them, while a key of it A holds a tombstone of and a
 * missing key elsewhere in A's new range are NOT_FOUND and a key A held
 * is served. ACK_LOST of another range
 * changes nothing; of this one, it clears the record.
 */
static void test_lost_range_is_reported_until_acknowledged(void **state) {
  static const char *const asking[] = {"asking them once more", NULL};
  static const char *const named[] = {"p0:1", "p1:1", "p2:1", "died", NULL};
  static const int holders[] = {P0, P1, P2};
  dht_id q_id = id_top(Q_TOP), p2_id = member_id(P2), p1_id = member_id(P1);
  uint64_t noticed;
  fake_host h;
  ring_view v;
  host_action a;
  char in_lost[16], elsewhere[16], held[16], deleted[16];
  dht_id writer = id_u64(6);
  dht_kv tomb;
  int next = 0;
  size_t i;

  (void)state;
  name_in(in_lost, sizeof(in_lost), "key", "", &q_id, &p2_id, &next);
  name_in(deleted, sizeof(deleted), "key", "", &q_id, &p2_id, &next);
  key_owned_by(elsewhere, sizeof(elsewhere), P1, &next);
  key_owned_by(held, sizeof(held), P1, &next);
  three_die(&h, &v, held);
  noticed = wall_at(h.now);
  expect_lost(&h, 840, in_lost, &v, asking);
  assert_int_equal(stats_counter(&h, "ranges_lost"), 0);

  run_ring(&h, h.now + 2000, &v); /* each ping resent, then given up */
  assert_int_equal(stats_counter(&h, "ranges_lost"), 1);
  stats_of(&h, 841, &a);
  assert_int_equal(a.msg.n_lost, 1);
  assert_true(dht_id_eq(&a.msg.lost[0].from, &q_id));
  assert_true(dht_id_eq(&a.msg.lost[0].to, &p2_id));
  assert_true(a.msg.lost[0].at_ms >= noticed &&
              a.msg.lost[0].at_ms <= wall_at(h.now));
  assert_int_equal(a.msg.lost[0].n_holders, 3);
  for (i = 0; i < 3; i++) {
    dht_id want = member_id(holders[i]);
    assert_true(dht_id_eq(&a.msg.lost[0].holders[i].id, &want));
    assert_true(bytes_eq_str(a.msg.lost[0].holders[i].addr,
                             ring[holders[i]].addr));
  }
  action_free(&a);
  expect_lost(&h, 842, in_lost, &v, named);
  /* A tombstone of the range, handed to A since, is the newest write A
   * knows, and answers as a value would: NOT_FOUND, not LOST. */
  tomb = kv_of(deleted, "", version_of(hlc_at(h.now), &writer), true);
  host_records_in(&h, PEER, DHT_MSG_HANDOFF, &tomb, 1, 4243);
  get_answered(&h, 850, deleted, &v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_ERROR);
  assert_int_equal(a.msg.error_code, DHT_ERR_NOT_FOUND);
  action_free(&a);
  get_answered(&h, 843, elsewhere, &v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_ERROR);
  assert_int_equal(a.msg.error_code, DHT_ERR_NOT_FOUND);
  action_free(&a);
  get_answered(&h, 844, held, &v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_VALUE);
  assert_true(bytes_eq_str(a.msg.value, "p1's"));
  action_free(&a);

  ack_lost(&h, 845, &q_id, &p1_id); /* not the range recorded */
  stats_of(&h, 846, &a);
  assert_int_equal(a.msg.n_lost, 1);
  action_free(&a);
  ack_lost(&h, 847, &q_id, &p2_id);
  stats_of(&h, 848, &a);
  assert_int_equal(a.msg.n_lost, 0);
  assert_int_equal(stats_value(&a.msg, "ranges_lost"), 1);
  action_free(&a);
  get_answered(&h, 849, in_lost, &v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_ERROR);
  assert_int_equal(a.msg.error_code, DHT_ERR_NOT_FOUND);
  action_free(&a);
  host_free(&h);
}

/* One former holder that answers at all, even with an error, may still
 * hold the keys: nothing is recorded, and a missing key reads NOT_FOUND
 * once the check is over. */
static void test_any_answer_from_a_holder_records_nothing(void **state) {
  dht_id q_id = id_top(Q_TOP), p2_id = member_id(P2);
  fake_host h;
  ring_view v;
  host_action a;
  char in_lost[16], held[16];
  int next = 0;

  (void)state;
  name_in(in_lost, sizeof(in_lost), "key", "", &q_id, &p2_id, &next);
  key_owned_by(held, sizeof(held), P1, &next);
  three_die(&h, &v, held);
  v.first = answer_as_q_p2_refusing;
  run_ring(&h, h.now + 2000, &v);
  assert_int_equal(stats_counter(&h, "ranges_lost"), 0);
  stats_of(&h, 850, &a);
  assert_int_equal(a.msg.n_lost, 0);
  action_free(&a);
  get_answered(&h, 851, in_lost, &v, &a);
  assert_int_equal(a.msg.type, DHT_MSG_ERROR);
  assert_int_equal(a.msg.error_code, DHT_ERR_NOT_FOUND);
  action_free(&a);
  host_free(&h);
}

/* p0 sends A the digests of (p1, p0], matching what A holds there: A
 * answers that no bucket differs, and is in sync there. */
static void p0_finds_a_in_sync(fake_host *h, uint64_t rid) {
  dht_id from = member_id(P1), to = member_id(P0);
  host_action a;
  digests have;
  dht_msg m;

  memset(&have, 0, sizeof(have));
  have.from = &from;
  have.to = &to;
  assert_int_equal(dht_store_scan(h->store, &from, &to, digest_visit, &have),
                   0);
  msg_init(&m, DHT_MSG_SYNC, rid);
  m.from = from;
  m.to = to;
  m.digests = &have.d[0][0];
  m.n_digests = SYNC_BUCKETS;
  assert_int_equal(host_recv(h, PEER, &m), 0);
  host_expect_reply(h, &a, PEER, DHT_MSG_SYNC_R, rid);
  assert_int_equal(a.msg.n_buckets, 0);
  action_free(&a);
  host_expect_none(h);
}

/*
 * A replica that refused a write it was sent (its store failed) may lack a
 * write its owner acknowledged on the other replicas' word: it passes
 * final GETs of the ranges it replicates back towards the owner, until
 * that range's owner has found it in sync again (seed 222 of `dht-sim
 * crashes --nodes-max 48 --crashes 6` read the value the refused write had
 * replaced, just after the owner died).
 */
static void test_replica_that_missed_a_write_passes_reads_on(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  dht_kv newer;
  fake_host h;
  host_action a;
  dht_msg m;
  char of_p0[16];
  int next = 0;

  (void)state;
  ring_join(&h, false);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p0, "old", version_of(t, &w), false));
  store_can_fail(&h);
  fail_puts = 1;
  newer = kv_of(of_p0, "new", version_of(t + 1, &w), false);
  msg_init(&m, DHT_MSG_REPLICATE, 4243);
  m.items = &newer;
  m.n_items = 1;
  assert_int_equal(host_recv(&h, PEER, &m), 0);
  host_expect_error(&h, PEER, 4243, DHT_ERR_STORE);
  host_expect_none(&h);

  final_request(&h, DHT_MSG_GET, 711, of_p0);
  expect_passed_to(&h, PEER, 711, P0, DHT_MSG_GET, of_p0);
  p0_finds_a_in_sync(&h, 712);
  final_request(&h, DHT_MSG_GET, 713, of_p0);
  host_expect_reply(&h, &a, PEER, DHT_MSG_VALUE, 713);
  assert_true(bytes_eq_str(a.msg.value, "old"));
  action_free(&a);
  host_expect_none(&h);
  host_free(&h);
}

/*
 * A node restarted on its old disk lacks the writes acknowledged while it
 * was down (its owners replaced it with the next successor), so its
 * records are no more enough to answer a read alone than those of a
 * replica that refused a write: it passes final GETs of the ranges it
 * replicates on until each range's owner has found it in sync.
 */
static void test_restart_on_an_old_disk_passes_replica_reads_on(void **state) {
  dht_id w = id_u64(5);
  uint64_t t = hlc_at(HOST_START_MS);
  fake_host h;
  host_action a;
  dht_store *disk;
  char of_p0[16];
  int next = 0;

  (void)state;
  ring_join(&h, false);
  key_owned_by(of_p0, sizeof(of_p0), P0, &next);
  record_in(&h, DHT_MSG_REPLICATE,
            kv_of(of_p0, "old", version_of(t, &w), false));
  disk = h.store;
  dht_node_del(h.node);
  ring_join_with(&h, false, disk, false);

  final_request(&h, DHT_MSG_GET, 721, of_p0);
  expect_passed_to(&h, PEER, 721, P0, DHT_MSG_GET, of_p0);
  p0_finds_a_in_sync(&h, 722);
  final_request(&h, DHT_MSG_GET, 723, of_p0);
  host_expect_reply(&h, &a, PEER, DHT_MSG_VALUE, 723);
  assert_true(bytes_eq_str(a.msg.value, "old"));
  action_free(&a);
  host_expect_none(&h);
  host_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_put_is_replicated_to_the_first_two_successors),
      cmocka_unit_test(test_silent_replica_is_replaced_by_the_next_successor),
      cmocka_unit_test(test_write_fails_when_no_replica_answers),
      cmocka_unit_test(test_del_writes_a_tombstone_replicated_like_a_value),
      cmocka_unit_test(test_del_finding_no_value_still_writes_its_tombstone),
      cmocka_unit_test(test_replicate_merges_by_version),
      cmocka_unit_test(test_handoff_merges_by_version),
      cmocka_unit_test(test_tombstones_merge_by_version),
      cmocka_unit_test(test_owner_not_in_sync_consults_every_replica),
      cmocka_unit_test(test_consult_keeps_the_owners_newer_record),
      cmocka_unit_test(test_write_while_not_in_sync_beats_the_replicas_record),
      cmocka_unit_test(test_consult_refuses_what_it_could_not_check),
      cmocka_unit_test(test_sync_digests_go_to_each_replica_every_interval),
      cmocka_unit_test(test_sync_repairs_differing_buckets_both_ways),
      cmocka_unit_test(test_sync_push_waits_for_the_repair_budget),
      cmocka_unit_test(test_stalled_handoff_says_why),
      cmocka_unit_test(test_leave_passes_over_a_leaving_successor),
      cmocka_unit_test(test_replica_answers_a_final_get_from_its_store),
      cmocka_unit_test(test_last_step_before_the_predecessors),
      cmocka_unit_test(test_copies_are_taken_whatever_their_stamp),
      cmocka_unit_test(test_expired_tombstone_still_deletes_an_older_value),
      cmocka_unit_test(test_group_commit_with_replicas),
      cmocka_unit_test(test_writes_consult_after_a_rolled_back_write),
      cmocka_unit_test(
          test_digests_out_across_a_failed_commit_count_for_nothing),
      cmocka_unit_test(test_neighbours_agreeing_the_clock_is_behind),
      cmocka_unit_test(test_one_neighbour_or_a_fast_clock_moves_nothing),
      cmocka_unit_test(test_lost_range_is_reported_until_acknowledged),
      cmocka_unit_test(test_any_answer_from_a_holder_records_nothing),
      cmocka_unit_test(test_replica_that_missed_a_write_passes_reads_on),
      cmocka_unit_test(test_restart_on_an_old_disk_passes_replica_reads_on),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
