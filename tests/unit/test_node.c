/*
 * test_node.c: one dht_node driven by a fake host. Each test feeds frames and
 * timer expiries in and checks the actions that come out: what a peer or a
 * client on the other end of a connection would see.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/node.h"

#define CLIENT 7 /* connection number of the test's client */
#define PEER 9   /* connection number of a peer's connection to us */

typedef struct host {
  dht_node *node;
  dht_store *store;
  uint64_t now;
  dht_buf frame; /* the frame behind the last decoded action */
} host;

/* One action taken from the node, with its frame decoded. */
typedef struct out {
  dht_action_type type;
  char addr[DHT_ADDR_LEN_MAX + 1];
  uint64_t conn;
  dht_event event;
  int error;
  dht_msg msg; /* SEND and REPLY */
} out;

/* A node with replicas copies of each key. */
static void host_init_replicated(host *h, const char *addr,
                                 uint32_t succ_list_len, uint32_t replicas) {
  dht_node_config cfg;

  memset(h, 0, sizeof(*h));
  h->now = 1000;
  h->store = dht_store_mem_new();
  assert_non_null(h->store);
  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = addr;
  cfg.store = h->store;
  cfg.seed = 42;
  dht_settings_default(&cfg.settings);
  cfg.settings.succ_list_len = succ_list_len;
  cfg.settings.replicas = replicas;
  assert_int_equal(dht_node_new(&h->node, &cfg, h->now), 0);
  dht_buf_init(&h->frame);
}

/* A node that keeps one copy: routing and hand-off on their own. */
static void host_init(host *h, const char *addr, uint32_t succ_list_len) {
  host_init_replicated(h, addr, succ_list_len, 1);
}

static void host_free(host *h) {
  dht_node_del(h->node);
  dht_store_del(h->store);
  dht_buf_free(&h->frame);
}

static int host_recv(host *h, uint64_t conn, const dht_msg *msg) {
  dht_buf buf;
  int rv;

  dht_buf_init(&buf);
  assert_int_equal(dht_msg_encode(msg, &buf), 0);
  rv = dht_node_recv(h->node, conn, buf.data + DHT_FRAME_HEADER_LEN,
                     buf.len - DHT_FRAME_HEADER_LEN, h->now);
  dht_buf_free(&buf);
  return rv;
}

/* Takes the next action; false when there is none. Call out_free after. */
static bool host_poll(host *h, out *o) {
  dht_wire_limits lim;
  dht_action a;

  memset(o, 0, sizeof(*o));
  if (!dht_node_poll_action(h->node, &a)) {
    return false;
  }
  o->type = a.type;
  o->conn = a.conn;
  o->event = a.event;
  o->error = a.error;
  if (a.addr != NULL) {
    strcpy(o->addr, a.addr);
  }
  if (a.type == DHT_ACTION_SEND || a.type == DHT_ACTION_REPLY) {
    h->frame.len = 0;
    dht_wire_limits_default(&lim);
    assert_int_equal(dht_buf_append(&h->frame, a.frame, a.frame_len), 0);
    assert_int_equal(dht_msg_decode(&o->msg,
                                    h->frame.data + DHT_FRAME_HEADER_LEN,
                                    h->frame.len - DHT_FRAME_HEADER_LEN, &lim),
                     0);
  }
  return true;
}

static void out_free(out *o) { dht_msg_free(&o->msg); }

/* Expects exactly one more action, of type and (for messages) msg_type. */
static void expect_one(host *h, out *o, dht_action_type type, int msg_type) {
  out extra;

  assert_true(host_poll(h, o));
  assert_int_equal(o->type, type);
  if (msg_type >= 0) {
    assert_int_equal(o->msg.type, msg_type);
  }
  assert_false(host_poll(h, &extra));
}

static void drain(host *h) {
  out o;

  while (host_poll(h, &o)) {
    out_free(&o);
  }
}

static void advance(host *h, uint64_t ms) {
  h->now += ms;
  dht_node_handle_expiry(h->node, h->now);
}

static void peer_ref(dht_peer_ref *ref, const char *addr) {
  dht_id_hash(&ref->id, addr, strlen(addr));
  ref->addr.p = (const uint8_t *)addr;
  ref->addr.len = strlen(addr);
}

static void msg_init(dht_msg *m, dht_msg_type type, uint64_t rid) {
  memset(m, 0, sizeof(*m));
  m->type = type;
  m->rid = rid;
}

static void notify_from(host *h, const char *addr) {
  dht_msg m;

  msg_init(&m, DHT_MSG_NOTIFY, 5);
  m.has_peer = true;
  peer_ref(&m.peer, addr);
  assert_int_equal(host_recv(h, PEER, &m), 0);
}

static void put_key(host *h, const char *key, const char *value) {
  dht_id id;

  dht_id_hash(&id, key, strlen(key));
  assert_int_equal(dht_store_put(h->store, &id, (const uint8_t *)key,
                                 strlen(key), (const uint8_t *)value,
                                 strlen(value)),
                   0);
}

/* Finds an address whose id lies in (a, b] (or outside it, with !inside). */
static void addr_in(char *buf, size_t len, const dht_id *a, const dht_id *b,
                    bool inside) {
  dht_id id;
  int i;

  for (i = 0;; i++) {
    snprintf(buf, len, "peer%d:7000", i);
    dht_id_hash(&id, buf, strlen(buf));
    if (dht_id_in_oc(&id, a, b) == inside) {
      return;
    }
  }
}

/* ---- tests ------------------------------------------------------------------- */

static void test_requests_before_joining_get_state_error(void **state) {
  host h;
  dht_msg m;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  msg_init(&m, DHT_MSG_PING, 77);
  host_recv(&h, PEER, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
  assert_int_equal(o.conn, PEER);
  assert_int_equal(o.msg.rid, 77);
  assert_int_equal(o.msg.error_code, DHT_ERR_STATE);
  out_free(&o);
  host_free(&h);
}

static void test_alone_serves_everything(void **state) {
  host h;
  dht_msg m;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  assert_int_equal(dht_node_create_ring(h.node, h.now), 0);
  assert_int_equal(dht_node_create_ring(h.node, h.now), DHT_ERR_STATE);

  msg_init(&m, DHT_MSG_PING, 1);
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_PONG);
  assert_true(dht_id_eq(&o.msg.peer.id, dht_node_id(h.node)));
  out_free(&o);

  msg_init(&m, DHT_MSG_FIND_SUCC, 2);
  dht_id_from_u64(&m.target, 12345);
  m.trace = true;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_FIND_SUCC_R);
  assert_int_equal(o.msg.rid, 2);
  assert_int_equal(o.msg.hops, 0);
  assert_int_equal(o.msg.n_path, 1);
  assert_memory_equal(o.msg.peer.addr.p, "a:1", 3);
  out_free(&o);

  msg_init(&m, DHT_MSG_PUT, 3);
  m.key.p = (const uint8_t *)"k";
  m.key.len = 1;
  m.value.p = (const uint8_t *)"hello";
  m.value.len = 5;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_OK);
  out_free(&o);

  msg_init(&m, DHT_MSG_GET, 4);
  m.key.p = (const uint8_t *)"k";
  m.key.len = 1;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_VALUE);
  assert_int_equal(o.msg.value.len, 5);
  assert_memory_equal(o.msg.value.p, "hello", 5);
  out_free(&o);

  msg_init(&m, DHT_MSG_DEL, 5);
  m.key.p = (const uint8_t *)"k";
  m.key.len = 1;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_OK);
  out_free(&o);

  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
  assert_int_equal(o.msg.error_code, DHT_ERR_NOT_FOUND);
  out_free(&o);

  msg_init(&m, DHT_MSG_GET, 6);
  m.key.p = (const uint8_t *)"k";
  m.key.len = 1;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
  assert_int_equal(o.msg.error_code, DHT_ERR_NOT_FOUND);
  out_free(&o);
  assert_int_equal(dht_node_get_counters(h.node)->not_found, 2);
  host_free(&h);
}

static void test_notify_makes_a_ring_of_two(void **state) {
  host h;
  dht_msg m;
  dht_id pred, succ;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, "b:2");
  assert_false(host_poll(&h, &o)); /* NOTIFY has no reply */
  assert_true(dht_node_pred(h.node, &pred, NULL));
  assert_int_equal(dht_node_succs(h.node, &succ, NULL, 1), 1);
  assert_true(dht_id_eq(&pred, &succ));

  msg_init(&m, DHT_MSG_GET_NEIGHBORS, 8);
  host_recv(&h, PEER, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_NEIGHBORS);
  assert_true(o.msg.has_pred);
  assert_int_equal(o.msg.n_succs, 1);
  assert_memory_equal(o.msg.succs[0].addr.p, "b:2", 3);
  out_free(&o);
  host_free(&h);
}

/* A node whose successor is b forwards a lookup for a key b owns, answers
 * the client ACCEPTED at once, and relays b's answer with the client's rid. */
static void test_forward_and_relay(void **state) {
  host h;
  dht_msg m, r;
  out o;
  uint64_t fwd_rid;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  dht_node_set_maintenance(h.node, false, h.now);
  notify_from(&h, "b:2");

  msg_init(&m, DHT_MSG_FIND_SUCC, 100);
  peer_ref(&m.peer, "b:2");
  m.target = m.peer.id; /* b's own id: b owns it */
  m.has_peer = false;
  host_recv(&h, CLIENT, &m);
  assert_true(host_poll(&h, &o));
  assert_int_equal(o.type, DHT_ACTION_SEND);
  assert_string_equal(o.addr, "b:2");
  assert_int_equal(o.msg.type, DHT_MSG_FIND_SUCC);
  assert_true(o.msg.final);
  assert_int_equal(o.msg.hops, 0); /* delivery to the owner is no hop */
  fwd_rid = o.msg.rid;
  out_free(&o);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ACCEPTED);
  assert_int_equal(o.conn, CLIENT);
  assert_int_equal(o.msg.rid, 100);
  out_free(&o);

  msg_init(&r, DHT_MSG_FIND_SUCC_R, fwd_rid);
  r.has_peer = true;
  peer_ref(&r.peer, "b:2");
  r.hops = 3;
  host_recv(&h, PEER, &r);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_FIND_SUCC_R);
  assert_int_equal(o.conn, CLIENT);
  assert_int_equal(o.msg.rid, 100);
  assert_int_equal(o.msg.hops, 3); /* relayed as the owner said */
  out_free(&o);

  /* The same answer again is a duplicate: counted, not relayed. */
  host_recv(&h, PEER, &r);
  assert_false(host_poll(&h, &o));
  assert_int_equal(dht_node_get_counters(h.node)->replies_unmatched, 1);
  host_free(&h);
}

/* A next hop that never answers is resent to once, then declared dead, and
 * the request is served by the node that is left. */
static void test_dead_next_hop_is_routed_around(void **state) {
  host h;
  dht_msg m;
  out o;
  int sends = 0;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  dht_node_set_maintenance(h.node, false, h.now); /* only the lookup talks */
  notify_from(&h, "b:2");
  drain(&h);

  msg_init(&m, DHT_MSG_FIND_SUCC, 200);
  peer_ref(&m.peer, "b:2");
  m.target = m.peer.id;
  host_recv(&h, CLIENT, &m);
  drain(&h);
  assert_int_equal(dht_node_next_deadline(h.node), h.now + 500);

  advance(&h, 500); /* first timeout: resend */
  while (host_poll(&h, &o)) {
    sends += o.type == DHT_ACTION_SEND && o.msg.type == DHT_MSG_FIND_SUCC;
    out_free(&o);
  }
  assert_int_equal(sends, 1);

  advance(&h, 1000); /* backed off to twice the wait: b is dead; a is
                       alone and answers itself */
  assert_true(host_poll(&h, &o));
  while (o.type != DHT_ACTION_REPLY) {
    out_free(&o);
    assert_true(host_poll(&h, &o));
  }
  /* First a keepalive: the client learns the request is still alive. */
  assert_int_equal(o.msg.type, DHT_MSG_ACCEPTED);
  assert_int_equal(o.msg.rid, 200);
  out_free(&o);
  assert_true(host_poll(&h, &o));
  assert_int_equal(o.type, DHT_ACTION_REPLY);
  assert_int_equal(o.msg.type, DHT_MSG_FIND_SUCC_R);
  assert_int_equal(o.msg.rid, 200);
  assert_memory_equal(o.msg.peer.addr.p, "a:1", 3);
  out_free(&o);
  drain(&h);
  assert_int_equal(dht_node_succs(h.node, NULL, NULL, 0), 0);
  assert_false(dht_node_pred(h.node, NULL, NULL));
  assert_int_equal(dht_node_get_counters(h.node)->peers_failed, 1);
  host_free(&h);
}

static void test_hop_limit(void **state) {
  host h;
  dht_msg m;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, "b:2");
  msg_init(&m, DHT_MSG_FIND_SUCC, 300);
  m.hops = 32;
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
  assert_int_equal(o.msg.error_code, DHT_ERR_HOPS);
  out_free(&o);
  host_free(&h);
}

static void test_garbage_is_answered_then_closed(void **state) {
  host h;
  static const uint8_t junk[] = {0xc1, 0x00, 0x01};
  /* {"v":9,"t":1,"rid":5}: a future version, but a request id to answer */
  static const uint8_t future[] = {0x83, 0xa1, 'v', 0x09, 0xa1, 't', 0x01,
                                   0xa3, 'r', 'i', 'd', 0x05};
  out o;
  int i;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  assert_int_equal(dht_node_recv(h.node, PEER, future, sizeof(future), h.now),
                   DHT_ERR_BAD_VERSION);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
  assert_int_equal(o.msg.rid, 5);
  assert_int_equal(o.msg.error_code, DHT_ERR_BAD_VERSION);
  out_free(&o);
  /* A request type from a newer revision is answered UNKNOWN_TYPE ... */
  {
    static const uint8_t newer[] = {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0x63,
                                    0xa3, 'r', 'i', 'd', 0x09};
    dht_node_recv(h.node, PEER, newer, sizeof(newer), h.now);
    expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_ERROR);
    assert_int_equal(o.msg.rid, 9);
    assert_int_equal(o.msg.error_code, DHT_ERR_UNKNOWN_TYPE);
    out_free(&o);
  }
  /* ... but a broken reply (a PONG without its peer) is never answered. */
  {
    static const uint8_t pong[] = {0x83, 0xa1, 'v', 0x01, 0xa1, 't', 0x02,
                                   0xa3, 'r', 'i', 'd', 0x0a};
    dht_node_recv(h.node, PEER, pong, sizeof(pong), h.now);
    assert_false(host_poll(&h, &o));
  }
  for (i = 3; i < 7; i++) {
    assert_int_not_equal(dht_node_recv(h.node, PEER, junk, sizeof(junk), h.now),
                         0);
    assert_false(host_poll(&h, &o)); /* no rid: nothing to answer */
  }
  dht_node_recv(h.node, PEER, junk, sizeof(junk), h.now);
  expect_one(&h, &o, DHT_ACTION_CLOSE, -1);
  assert_int_equal(o.conn, PEER);
  assert_int_equal(dht_node_get_counters(h.node)->bad_frames, 8);
  /* Another connection is served as before. */
  {
    dht_msg m;
    msg_init(&m, DHT_MSG_PING, 6);
    host_recv(&h, CLIENT, &m);
    expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_PONG);
    out_free(&o);
  }
  host_free(&h);
}

static void test_join_through_bootstrap(void **state) {
  host h;
  dht_msg r;
  dht_id succ;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  assert_int_equal(dht_node_join(h.node, "a:1", h.now), DHT_ERR_INVAL);
  assert_int_equal(dht_node_join(h.node, "boot:9", h.now), 0);
  expect_one(&h, &o, DHT_ACTION_SEND, DHT_MSG_FIND_SUCC);
  assert_string_equal(o.addr, "boot:9");
  assert_true(o.msg.trace);
  assert_int_equal(dht_node_get_state(h.node), DHT_NODE_JOINING);

  msg_init(&r, DHT_MSG_FIND_SUCC_R, o.msg.rid);
  out_free(&o);
  r.has_peer = true;
  peer_ref(&r.peer, "c:3");
  host_recv(&h, PEER, &r);
  assert_true(host_poll(&h, &o));
  assert_int_equal(o.type, DHT_ACTION_EVENT);
  assert_int_equal(o.event, DHT_EVENT_JOINED);
  assert_int_equal(dht_node_get_state(h.node), DHT_NODE_JOINED);
  assert_int_equal(dht_node_succs(h.node, &succ, NULL, 1), 1);
  assert_true(dht_id_eq(&succ, &r.peer.id));
  drain(&h);
  /* The first stabilize round asks the new successor for its neighbours. */
  advance(&h, 0);
  assert_true(host_poll(&h, &o));
  assert_int_equal(o.msg.type, DHT_MSG_GET_NEIGHBORS);
  assert_string_equal(o.addr, "c:3");
  out_free(&o);
  host_free(&h);
}

static void test_join_fails_when_bootstrap_is_silent(void **state) {
  host h;
  out o;
  int rounds;
  bool failed = false;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_join(h.node, "boot:9", h.now);
  for (rounds = 0; rounds < 100 && !failed; rounds++) {
    uint64_t next = dht_node_next_deadline(h.node);
    assert_int_not_equal(next, DHT_TIME_NEVER);
    h.now = next;
    dht_node_handle_expiry(h.node, h.now);
    while (host_poll(&h, &o)) {
      if (o.type == DHT_ACTION_EVENT) {
        assert_int_equal(o.event, DHT_EVENT_JOIN_FAILED);
        assert_int_equal(o.error, DHT_ERR_UNAVAILABLE);
        failed = true;
      }
      out_free(&o);
    }
  }
  assert_true(failed);
  assert_int_equal(dht_node_get_state(h.node), DHT_NODE_IDLE);
  /* 3 attempts of 2 sends (500 ms, then 1 s), with 1 s between attempts. */
  assert_true(h.now - 1000 <= 8000);
  host_free(&h);
}

/* When a new predecessor appears, the keys between the old one and it move
 * to it, and only those; they leave this node once it has them. */
static void test_new_predecessor_receives_its_keys(void **state) {
  host h;
  char addr_b[32] = "b:2";
  dht_id b_id, new_pred_id, key_id;
  dht_msg ok;
  out o;
  char pred_addr[64];
  int i, n_mine = 0, n_theirs = 0;
  size_t k;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, addr_b); /* ring {a, b}: a owns (b, a] */
  drain(&h);
  dht_id_hash(&b_id, addr_b, strlen(addr_b));
  /* A node p between b and a will take (b, p]. */
  addr_in(pred_addr, sizeof(pred_addr), &b_id, dht_node_id(h.node), true);
  dht_id_hash(&new_pred_id, pred_addr, strlen(pred_addr));
  for (i = 0; n_mine < 5 || n_theirs < 5; i++) {
    char key[32];
    snprintf(key, sizeof(key), "key%d", i);
    dht_id_hash(&key_id, key, strlen(key));
    if (dht_id_in_oc(&key_id, &b_id, &new_pred_id) && n_theirs < 5) {
      put_key(&h, key, "v");
      n_theirs++;
    } else if (dht_id_in_oc(&key_id, &new_pred_id, dht_node_id(h.node)) &&
               n_mine < 5) {
      put_key(&h, key, "v");
      n_mine++;
    }
  }
  notify_from(&h, pred_addr);
  expect_one(&h, &o, DHT_ACTION_SEND, DHT_MSG_HANDOFF);
  assert_string_equal(o.addr, pred_addr);
  assert_int_equal(o.msg.n_items, 5);
  for (k = 0; k < o.msg.n_items; k++) {
    dht_id_hash(&key_id, o.msg.items[k].key.p, o.msg.items[k].key.len);
    assert_true(dht_id_in_oc(&key_id, &b_id, &new_pred_id));
  }
  assert_int_equal(dht_store_count(h.store), 10); /* kept until acknowledged */
  msg_init(&ok, DHT_MSG_OK, o.msg.rid);
  out_free(&o);
  host_recv(&h, PEER, &ok);
  drain(&h);
  assert_int_equal(dht_store_count(h.store), 5);
  assert_int_equal(dht_node_get_counters(h.node)->handoff_keys_out, 5);
  host_free(&h);
}

static void test_handoff_in_stores_and_acks(void **state) {
  host h;
  dht_msg m;
  dht_kv items[2];
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  msg_init(&m, DHT_MSG_HANDOFF, 50);
  items[0].key.p = (const uint8_t *)"x";
  items[0].key.len = 1;
  items[0].value.p = (const uint8_t *)"1";
  items[0].value.len = 1;
  items[1].key.p = (const uint8_t *)"y";
  items[1].key.len = 1;
  items[1].value.p = NULL;
  items[1].value.len = 0;
  m.items = items;
  m.n_items = 2;
  host_recv(&h, PEER, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_OK);
  assert_int_equal(o.msg.rid, 50);
  out_free(&o);
  assert_int_equal(dht_store_count(h.store), 2);
  host_free(&h);
}

/* A leaving node hands every key to its successor, tells both neighbours,
 * and says LEFT once they have answered. */
static void test_leave_hands_keys_to_successor(void **state) {
  host h;
  dht_msg ok;
  out o;
  int i, oks = 0;
  bool left = false;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, "b:2"); /* b is both predecessor and successor */
  drain(&h);
  for (i = 0; i < 20; i++) {
    char key[16];
    snprintf(key, sizeof(key), "k%d", i);
    put_key(&h, key, "value");
  }
  assert_int_equal(dht_node_leave(h.node, h.now), 0);
  assert_int_equal(dht_node_get_state(h.node), DHT_NODE_LEAVING);
  /* Without a predecessor change, a hand-off to b of whatever b owns may
   * already be in flight; either way every key ends at b. */
  while (!left && oks < 10) {
    assert_true(host_poll(&h, &o));
    if (o.type == DHT_ACTION_EVENT) {
      assert_int_equal(o.event, DHT_EVENT_LEFT);
      left = true;
    } else if (o.type == DHT_ACTION_SEND) {
      assert_string_equal(o.addr, "b:2");
      assert_true(o.msg.type == DHT_MSG_HANDOFF || o.msg.type == DHT_MSG_LEAVE);
      msg_init(&ok, DHT_MSG_OK, o.msg.rid);
      out_free(&o);
      host_recv(&h, PEER, &ok);
      oks++;
      continue;
    }
    out_free(&o);
  }
  assert_true(left);
  assert_int_equal(dht_node_get_state(h.node), DHT_NODE_LEFT);
  assert_int_equal(dht_store_count(h.store), 0);
  assert_int_equal(dht_node_get_counters(h.node)->handoff_keys_out, 20);
  host_free(&h);
}

/* While leaving, a node refuses keys (the sender keeps them) and sends new
 * writes to its successor, dropping its own older copy first. */
static void test_leaving_node_refuses_keys_and_passes_writes_on(void **state) {
  host h;
  dht_msg m;
  dht_kv item;
  out o;
  bool forwarded = false, refused = false;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, "b:2");
  drain(&h);
  put_key(&h, "k", "old");
  put_key(&h, "other", "x");
  dht_node_leave(h.node, h.now);
  drain(&h); /* the first HANDOFF batch, unanswered */

  msg_init(&m, DHT_MSG_HANDOFF, 90);
  item.key.p = (const uint8_t *)"z";
  item.key.len = 1;
  item.value.p = (const uint8_t *)"1";
  item.value.len = 1;
  m.items = &item;
  m.n_items = 1;
  host_recv(&h, PEER, &m);
  msg_init(&m, DHT_MSG_PUT, 91);
  m.key.p = (const uint8_t *)"k";
  m.key.len = 1;
  m.value.p = (const uint8_t *)"new";
  m.value.len = 3;
  m.final = true;
  host_recv(&h, CLIENT, &m);
  while (host_poll(&h, &o)) {
    if (o.type == DHT_ACTION_REPLY && o.msg.rid == 90) {
      assert_int_equal(o.msg.type, DHT_MSG_ERROR);
      assert_int_equal(o.msg.error_code, DHT_ERR_STATE);
      refused = true;
    }
    if (o.type == DHT_ACTION_SEND && o.msg.type == DHT_MSG_PUT) {
      assert_string_equal(o.addr, "b:2");
      assert_true(o.msg.final);
      forwarded = true;
    }
    out_free(&o);
  }
  assert_true(refused);
  assert_true(forwarded);
  assert_int_equal(dht_store_count(h.store), 1); /* "other" still to go */
  host_free(&h);
}

static void test_leave_alone_is_immediate(void **state) {
  host h;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  assert_int_equal(dht_node_leave(h.node, h.now), DHT_ERR_STATE);
  dht_node_create_ring(h.node, h.now);
  assert_int_equal(dht_node_leave(h.node, h.now), 0);
  expect_one(&h, &o, DHT_ACTION_EVENT, -1);
  assert_int_equal(o.event, DHT_EVENT_LEFT);
  host_free(&h);
}

/* A LEAVE from our successor splices in its successors; from our
 * predecessor, its predecessor becomes ours. */
static void test_leave_notice_repairs_neighbours(void **state) {
  host h;
  dht_msg m;
  dht_peer_ref succs[1];
  dht_id succ, pred, c_id;
  out o;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  notify_from(&h, "b:2");
  drain(&h);
  msg_init(&m, DHT_MSG_LEAVE, 60);
  m.has_peer = true;
  peer_ref(&m.peer, "b:2");
  m.has_pred = true;
  peer_ref(&m.pred, "c:3");
  peer_ref(&succs[0], "c:3");
  m.succs = succs;
  m.n_succs = 1;
  host_recv(&h, PEER, &m);
  assert_true(host_poll(&h, &o));
  while (o.type != DHT_ACTION_REPLY) {
    out_free(&o);
    assert_true(host_poll(&h, &o));
  }
  assert_int_equal(o.msg.type, DHT_MSG_OK);
  out_free(&o);
  dht_id_hash(&c_id, "c:3", 3);
  assert_int_equal(dht_node_succs(h.node, &succ, NULL, 1), 1);
  assert_true(dht_id_eq(&succ, &c_id));
  assert_true(dht_node_pred(h.node, &pred, NULL));
  assert_true(dht_id_eq(&pred, &c_id));
  host_free(&h);
}

static void test_stats_reply(void **state) {
  host h;
  dht_msg m;
  out o;
  size_t i;
  bool saw_keys = false;

  (void)state;
  host_init(&h, "a:1", 2);
  dht_node_create_ring(h.node, h.now);
  put_key(&h, "k", "v");
  msg_init(&m, DHT_MSG_STATS, 70);
  host_recv(&h, CLIENT, &m);
  expect_one(&h, &o, DHT_ACTION_REPLY, DHT_MSG_STATS_R);
  for (i = 0; i < o.msg.n_counters; i++) {
    if (o.msg.counters[i].name.len == 4 &&
        memcmp(o.msg.counters[i].name.p, "keys", 4) == 0) {
      assert_int_equal(o.msg.counters[i].value, 1);
      saw_keys = true;
    }
  }
  assert_true(saw_keys);
  out_free(&o);
  host_free(&h);
}

static void test_settings_are_checked(void **state) {
  dht_settings s;

  (void)state;
  dht_settings_default(&s);
  assert_int_equal(dht_settings_check(&s), 0);
  s.succ_list_len = 0;
  assert_int_equal(dht_settings_check(&s), DHT_ERR_INVAL);
  dht_settings_default(&s);
  s.succ_list_len = DHT_SUCC_LIST_MAX + 1;
  assert_int_equal(dht_settings_check(&s), DHT_ERR_INVAL);
  dht_settings_default(&s);
  s.max_hops = DHT_HOPS_MAX + 1;
  assert_int_equal(dht_settings_check(&s), DHT_ERR_INVAL);
  dht_settings_default(&s);
  s.limits.value_len_max = s.limits.frame_len_max;
  assert_int_equal(dht_settings_check(&s), DHT_ERR_INVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_requests_before_joining_get_state_error),
      cmocka_unit_test(test_alone_serves_everything),
      cmocka_unit_test(test_notify_makes_a_ring_of_two),
      cmocka_unit_test(test_forward_and_relay),
      cmocka_unit_test(test_dead_next_hop_is_routed_around),
      cmocka_unit_test(test_hop_limit),
      cmocka_unit_test(test_garbage_is_answered_then_closed),
      cmocka_unit_test(test_join_through_bootstrap),
      cmocka_unit_test(test_join_fails_when_bootstrap_is_silent),
      cmocka_unit_test(test_new_predecessor_receives_its_keys),
      cmocka_unit_test(test_handoff_in_stores_and_acks),
      cmocka_unit_test(test_leave_hands_keys_to_successor),
      cmocka_unit_test(test_leaving_node_refuses_keys_and_passes_writes_on),
      cmocka_unit_test(test_leave_alone_is_immediate),
      cmocka_unit_test(test_leave_notice_repairs_neighbours),
      cmocka_unit_test(test_stats_reply),
      cmocka_unit_test(test_settings_are_checked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
