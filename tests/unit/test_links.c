/*
 * test_links.c: who may send what to a node of an open ring (node.c's
 * sender rules, node_base.c's ids and link tokens), with a fake host and a
 * node that checks its senders as dhtd's does (fake_host.strict):
 *   - a peer's id must be the hash of its address, and a known address's id
 *     is never rewritten by a third party;
 *   - NOTIFY is adopted only once the address it names confirmed, over the
 *     node's own connection (CHECK_LINK), the token and the id;
 *   - LEAVE is taken only from the leaver's own confirmed connection, and
 *     a sender refused UNBOUND sends its request again;
 *   - REPLICATE, SYNC and FETCH only from predecessors, HANDOFF from the
 *     neighbourhood; CHECK_LINK confirms only the node's own tokens.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "dht/err.h"
#include "test_util.h"

#define SELF "a:1"
#define CONN_IN 7     /* a connection some sender opened to the node */
#define CONN_OUT 100  /* the node's own connection to the address it asks */
#define TOKEN 0x5eed5eed5eed5eedull

/* A strict node at SELF in a ring of three with two hash-id peers, pred and
 * succ named as the ids fall. */
typedef struct trio {
  fake_host h;
  const char *pred, *succ; /* "b:2" and "c:3" in ring order */
} trio;

static void trio_init(trio *t, bool trust_ids) {
  dht_routing_peer pred, succ, fingers[DHT_ID_BITS];
  dht_settings s;
  dht_id a, b, c;
  int i;

  dht_settings_default(&s);
  s.trust_ids = trust_ids;
  host_init_strict(&t->h, SELF, NULL, &s, 0);
  dht_id_hash(&a, SELF, strlen(SELF));
  dht_id_hash(&b, "b:2", 3);
  dht_id_hash(&c, "c:3", 3);
  /* Clockwise from a, the first of b and c is a's successor. */
  if (dht_id_in_oo(&b, &a, &c)) {
    t->succ = "b:2";
    t->pred = "c:3";
  } else {
    t->succ = "c:3";
    t->pred = "b:2";
  }
  dht_id_hash(&pred.id, t->pred, 3);
  pred.addr = t->pred;
  dht_id_hash(&succ.id, t->succ, 3);
  succ.addr = t->succ;
  for (i = 0; i < DHT_ID_BITS; i++) {
    fingers[i] = succ;
  }
  assert_int_equal(dht_node_install_routing(t->h.node, &pred, &succ, 1,
                                            fingers, t->h.now),
                   0);
  dht_node_set_maintenance(t->h.node, false, t->h.now);
  host_drain(&t->h);
}

/* Finds the CHECK_LINK the node sent to addr among its actions (taking
 * them all); returns its rid, 0 if there is none. */
static uint64_t check_sent(fake_host *h, const char *addr, uint64_t token) {
  host_actions all;
  uint64_t rid = 0;
  size_t i;

  host_take_all(h, &all);
  for (i = 0; i < all.n; i++) {
    const host_action *a = &all.a[i];
    if (a->type == DHT_ACTION_SEND &&
        a->msg.type == DHT_MSG_CHECK_LINK) {
      assert_string_equal(a->addr, addr);
      assert_true(a->msg.link == token);
      assert_true(bytes_eq_str(a->msg.peer.addr, SELF));
      rid = a->msg.rid;
    }
  }
  host_actions_free(&all);
  return rid;
}

/* The address asked answers a CHECK_LINK: PONG naming peer, or ERROR. */
static void check_answer(fake_host *h, uint64_t rid, const dht_peer_ref *peer) {
  dht_msg m;

  if (peer != NULL) {
    msg_init(&m, DHT_MSG_PONG, rid);
    m.has_peer = true;
    m.peer = *peer;
  } else {
    msg_init(&m, DHT_MSG_ERROR, rid);
    m.error_code = DHT_ERR_UNEXPECTED;
  }
  assert_int_equal(host_recv(h, CONN_OUT, &m), 0);
}

static void notify_in(fake_host *h, const dht_peer_ref *peer) {
  dht_msg m;

  msg_init(&m, DHT_MSG_NOTIFY, 1u << 24);
  m.has_peer = true;
  m.peer = *peer;
  m.link = TOKEN;
  assert_int_equal(host_recv(h, CONN_IN, &m), 0);
}

static bool pred_is(const fake_host *h, const char *addr) {
  const char *got;

  return dht_node_pred(h->node, NULL, &got) && strcmp(got, addr) == 0;
}

static uint64_t counter(const fake_host *h, size_t offset) {
  return *(const uint64_t *)((const char *)dht_node_get_counters(h->node) +
                             offset);
}
#define COUNTER(h, name) counter(h, offsetof(dht_node_counters, name))

/* ---- ids --------------------------------------------------------------- */

/* A NOTIFY under an id that is not the hash of its address is refused
 * before anything is asked; so is one naming a known address with another
 * id. */
static void test_id_must_be_hash_of_address(void **state) {
  dht_peer_ref p;
  trio t;

  (void)state;
  trio_init(&t, false);
  p.id = id_top(0x42); /* not hash("x:9") */
  p.addr = bytes_of("x:9");
  notify_in(&t.h, &p);
  host_expect_none(&t.h); /* nothing asked */
  p.addr = bytes_of(t.pred); /* a member's address, another id */
  notify_in(&t.h, &p);
  host_expect_none(&t.h);
  assert_true(COUNTER(&t.h, ids_refused) >= 2);
  assert_true(pred_is(&t.h, t.pred));
  host_free(&t.h);
}

/* Lets stabilize ask the successor and answers it NEIGHBORS naming one
 * successor, listed. */
static void answer_stabilize(trio *t, dht_peer_ref *listed) {
  host_action a;
  dht_msg m;

  dht_node_set_maintenance(t->h.node, true, t->h.now);
  host_advance(&t->h, 1);
  for (;;) {
    assert_true(host_poll(&t->h, &a));
    if (a.type == DHT_ACTION_SEND && a.msg.type == DHT_MSG_GET_NEIGHBORS &&
        strcmp(a.addr, t->succ) == 0) {
      break;
    }
    action_free(&a);
  }
  msg_init(&m, DHT_MSG_NEIGHBORS, a.msg.rid);
  action_free(&a);
  m.has_peer = true;
  peer_ref(&m.peer, t->succ);
  m.succs = listed;
  m.n_succs = 1;
  assert_int_equal(host_recv(&t->h, CONN_OUT, &m), 0);
  host_drain(&t->h);
}

/* With trust_ids too, a peer at another address with this node's own id is
 * refused: two nodes cannot share an id, and the node would list itself. */
static void test_own_id_elsewhere_refused(void **state) {
  const char *addrs[DHT_SUCC_LIST_MAX];
  dht_peer_ref twin;
  size_t n, i;
  trio t;

  (void)state;
  trio_init(&t, true);
  dht_id_hash(&twin.id, SELF, strlen(SELF));
  twin.addr = bytes_of("d:4");
  answer_stabilize(&t, &twin);
  n = dht_node_succs(t.h.node, NULL, addrs, DHT_SUCC_LIST_MAX);
  for (i = 0; i < n; i++) {
    assert_string_not_equal(addrs[i], "d:4");
  }
  assert_true(COUNTER(&t.h, ids_refused) >= 1);
  host_free(&t.h);
}

/* With trust_ids, a neighbour's list that names a known address with
 * another id does not rewrite it: only the peer itself may. */
static void test_third_party_never_rewrites_an_id(void **state) {
  dht_peer_ref renamed;
  dht_id pred_id, want;
  trio t;

  (void)state;
  trio_init(&t, true);
  dht_id_hash(&want, t.pred, 3);
  /* the successor's list names the predecessor under another id */
  renamed.id = id_top(0x01);
  renamed.addr = bytes_of(t.pred);
  answer_stabilize(&t, &renamed);
  assert_true(dht_node_pred(t.h.node, &pred_id, NULL));
  assert_true(dht_id_eq(&pred_id, &want));
  assert_true(COUNTER(&t.h, ids_refused) >= 1);
  host_free(&t.h);
}

/* ---- NOTIFY ------------------------------------------------------------ */

/* A NOTIFY is adopted once the address it names says it sent the token
 * and gives the same id; not before, and not when it says no. */
static void test_notify_adopted_only_once_confirmed(void **state) {
  dht_peer_ref x, other;
  uint64_t rid;
  trio t;

  (void)state;
  trio_init(&t, false);
  /* x sits between the predecessor and us: it would be the new pred. */
  peer_ref(&x, "x:9");
  peer_ref(&other, "y:8");
  notify_in(&t.h, &x);
  rid = check_sent(&t.h, "x:9", TOKEN);
  assert_true(rid != 0);
  assert_true(pred_is(&t.h, t.pred)); /* not yet */
  /* The address says no: nothing changes. */
  check_answer(&t.h, rid, NULL);
  host_drain(&t.h);
  assert_true(pred_is(&t.h, t.pred));
  assert_int_equal(COUNTER(&t.h, links_refused), 1);
  /* Asked again, it answers with another id: still nothing. */
  notify_in(&t.h, &x);
  rid = check_sent(&t.h, "x:9", TOKEN);
  other.addr = x.addr;
  check_answer(&t.h, rid, &other);
  host_drain(&t.h);
  assert_true(pred_is(&t.h, t.pred));
  assert_int_equal(COUNTER(&t.h, links_refused), 2);
  /* Asked again, it confirms: the NOTIFY is taken then, as if it had just
   * come, and later ones on the confirmed link need no question. */
  notify_in(&t.h, &x);
  rid = check_sent(&t.h, "x:9", TOKEN);
  check_answer(&t.h, rid, &x);
  host_drain(&t.h);
  {
    dht_id xid, pid;
    const char *paddr;
    assert_true(dht_node_pred(t.h.node, &pid, &paddr));
    dht_id_hash(&xid, "x:9", 3);
    dht_id_hash(&pid, t.pred, 3);
    /* x is taken if it lies between the old predecessor and us */
    if (dht_id_in_oo(&xid, &pid, dht_node_id(t.h.node))) {
      assert_string_equal(paddr, "x:9");
    } else {
      assert_string_equal(paddr, t.pred);
    }
  }
  notify_in(&t.h, &x);
  assert_int_equal(check_sent(&t.h, "x:9", TOKEN), 0);
  host_free(&t.h);
}

/* ---- LEAVE -------------------------------------------------------------- */

/* A LEAVE in the successor's name is refused UNBOUND until the successor
 * confirms the connection; on a connection it does not confirm, never. */
static void test_leave_only_from_the_leaver(void **state) {
  dht_peer_ref succ, pred;
  host_action a;
  uint64_t rid;
  dht_msg m;
  trio t;

  (void)state;
  trio_init(&t, false);
  peer_ref(&succ, t.succ);
  peer_ref(&pred, t.pred);
  msg_init(&m, DHT_MSG_LEAVE, 5u << 24);
  m.has_peer = true;
  m.peer = succ;
  m.succs = &pred;
  m.n_succs = 1;
  m.link = TOKEN;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  {
    host_actions all;
    host_take_all(&t.h, &all);
    assert_int_equal(only_reply(&all, CONN_IN, m.rid, DHT_MSG_ERROR)
                         ->msg.error_code,
                     DHT_ERR_UNBOUND);
    rid = only_send(&all, t.succ, DHT_MSG_CHECK_LINK)->msg.rid;
    host_actions_free(&all);
  }
  check_answer(&t.h, rid, NULL); /* the real successor sent no such thing */
  host_drain(&t.h);
  assert_int_equal(dht_node_succs(t.h.node, NULL, NULL, 0), 1);
  /* Without a token at all: refused outright. */
  m.link = 0;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  host_expect_error(&t.h, CONN_IN, m.rid, DHT_ERR_NOT_NEIGHBOR);
  host_drain(&t.h);
  /* The successor really leaving: confirmed, then taken. */
  m.link = TOKEN;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  rid = check_sent(&t.h, t.succ, TOKEN);
  check_answer(&t.h, rid, &succ);
  host_drain(&t.h);
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  host_expect_reply(&t.h, &a, CONN_IN, DHT_MSG_OK, m.rid);
  action_free(&a);
  host_drain(&t.h);
  assert_true(pred_is(&t.h, t.pred));
  {
    const char *addrs[4];
    size_t n = dht_node_succs(t.h.node, NULL, addrs, 4);
    assert_true(n >= 1);
    assert_string_equal(addrs[0], t.pred); /* the gap is closed */
  }
  host_free(&t.h);
}

/* A node refused UNBOUND sends the same request again a moment later, and
 * its CHECK_LINK answer confirms only its own token for the asker. */
static void test_sender_retries_and_confirms_its_token(void **state) {
  host_action a;
  uint64_t rid, token;
  dht_msg m;
  trio t;

  (void)state;
  trio_init(&t, false);
  assert_int_equal(dht_node_leave(t.h.node, t.h.now), 0);
  for (;;) { /* its LEAVE to its successor */
    assert_true(host_poll(&t.h, &a));
    if (a.type == DHT_ACTION_SEND && a.msg.type == DHT_MSG_LEAVE &&
        strcmp(a.addr, t.succ) == 0) {
      break;
    }
    action_free(&a);
  }
  host_drain(&t.h);
  rid = a.msg.rid;
  token = a.msg.link;
  assert_true(token != 0);
  action_free(&a);
  /* The successor asks whether it sent that token: yes for the successor's
   * address, no for anyone else's and for another token. */
  msg_init(&m, DHT_MSG_CHECK_LINK, 9u << 24);
  m.has_peer = true;
  peer_ref(&m.peer, t.succ);
  m.link = token;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  host_expect_reply(&t.h, &a, CONN_IN, DHT_MSG_PONG, m.rid);
  assert_true(bytes_eq_str(a.msg.peer.addr, SELF));
  action_free(&a);
  m.link = token + 1;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  host_expect_error(&t.h, CONN_IN, m.rid, DHT_ERR_UNEXPECTED);
  peer_ref(&m.peer, "x:9");
  m.link = token;
  assert_int_equal(host_recv(&t.h, CONN_IN, &m), 0);
  host_expect_error(&t.h, CONN_IN, m.rid, DHT_ERR_UNEXPECTED);
  /* Refused UNBOUND, the LEAVE goes again, same rid, after a wait. */
  msg_init(&m, DHT_MSG_ERROR, rid);
  m.error_code = DHT_ERR_UNBOUND;
  assert_int_equal(host_recv(&t.h, CONN_OUT, &m), 0);
  host_expect_none(&t.h);
  host_advance(&t.h, 600);
  assert_true(host_poll(&t.h, &a));
  assert_int_equal(a.type, DHT_ACTION_SEND);
  assert_int_equal(a.msg.type, DHT_MSG_LEAVE);
  assert_true(a.msg.rid == rid);
  action_free(&a);
  host_free(&t.h);
}

/* ---- data messages ------------------------------------------------------- */

/* Sends records as type from src on conn, confirming the link first. */
static void records_from(fake_host *h, uint64_t conn, dht_msg_type type,
                         const dht_peer_ref *src, uint64_t rid, dht_kv *item) {
  char addr[16];
  uint64_t check;
  dht_msg m;

  snprintf(addr, sizeof(addr), "%.*s", (int)src->addr.len,
           (const char *)src->addr.p);
  msg_init(&m, type, rid);
  m.items = item;
  m.n_items = 1;
  m.has_src = true;
  m.src = *src;
  m.link = TOKEN;
  assert_int_equal(host_recv(h, conn, &m), 0);
  /* Refused UNBOUND and asked, unless the link was confirmed already (a
   * copy taken twice changes nothing): either way it goes again. */
  check = check_sent(h, addr, TOKEN);
  if (check != 0) {
    check_answer(h, check, src);
    host_drain(h);
  }
  assert_int_equal(host_recv(h, conn, &m), 0);
}

/* REPLICATE is taken from a predecessor, not from a successor nor from a
 * node far before this one (even confirmed at their addresses), nor
 * without a sender; HANDOFF from any confirmed sender. Ids are explicit
 * (trust_ids) so that the positions are the test's: self at 0x80, its
 * predecessor just before, its successor just after, a stranger far. */
static void test_data_messages_by_ring_position(void **state) {
  dht_routing_peer pred, succ, fingers[DHT_ID_BITS];
  dht_peer_ref p, s, far;
  dht_id self = id_top(0x80), writer = id_top(0x77);
  dht_kv item = kv_of("k", "v", version_of(5u << 16, &writer), false);
  dht_settings set;
  host_action a;
  fake_host h;
  int i;

  (void)state;
  dht_settings_default(&set);
  set.trust_ids = true;
  host_init_strict(&h, SELF, &self, &set, 0);
  pred.id = id_top(0x7f);
  pred.addr = "b:2";
  succ.id = id_top(0x81);
  succ.addr = "c:3";
  for (i = 0; i < DHT_ID_BITS; i++) {
    fingers[i] = succ;
  }
  assert_int_equal(
      dht_node_install_routing(h.node, &pred, &succ, 1, fingers, h.now), 0);
  dht_node_set_maintenance(h.node, false, h.now);
  host_drain(&h);
  p.id = pred.id;
  p.addr = bytes_of("b:2");
  s.id = succ.id;
  s.addr = bytes_of("c:3");
  far.id = id_top(0x20);
  far.addr = bytes_of("x:9");

  records_from(&h, CONN_IN, DHT_MSG_REPLICATE, &p, 11u << 24, &item);
  host_expect_reply(&h, &a, CONN_IN, DHT_MSG_OK, 11u << 24);
  action_free(&a);
  host_drain(&h);
  records_from(&h, CONN_IN + 1, DHT_MSG_REPLICATE, &s, 12u << 24, &item);
  host_expect_error(&h, CONN_IN + 1, 12u << 24, DHT_ERR_NOT_NEIGHBOR);
  host_drain(&h);
  records_from(&h, CONN_IN + 2, DHT_MSG_REPLICATE, &far, 13u << 24, &item);
  host_expect_error(&h, CONN_IN + 2, 13u << 24, DHT_ERR_NOT_NEIGHBOR);
  host_drain(&h);
  assert_int_equal(COUNTER(&h, position_refused), 2);
  /* HANDOFF needs a confirmed sender only (a node healed from a partition
   * hands records to whoever its stale view names). */
  records_from(&h, CONN_IN + 2, DHT_MSG_HANDOFF, &far, 14u << 24, &item);
  host_expect_reply(&h, &a, CONN_IN + 2, DHT_MSG_OK, 14u << 24);
  action_free(&a);
  host_drain(&h);
  records_from(&h, CONN_IN + 1, DHT_MSG_HANDOFF, &s, 15u << 24, &item);
  host_expect_reply(&h, &a, CONN_IN + 1, DHT_MSG_OK, 15u << 24);
  action_free(&a);
  host_drain(&h);
  {
    dht_msg m;
    msg_init(&m, DHT_MSG_REPLICATE, 16u << 24);
    m.items = &item;
    m.n_items = 1;
    assert_int_equal(host_recv(&h, CONN_IN, &m), 0);
    host_expect_error(&h, CONN_IN, 16u << 24, DHT_ERR_NOT_NEIGHBOR);
  }
  host_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_id_must_be_hash_of_address),
      cmocka_unit_test(test_third_party_never_rewrites_an_id),
      cmocka_unit_test(test_own_id_elsewhere_refused),
      cmocka_unit_test(test_notify_adopted_only_once_confirmed),
      cmocka_unit_test(test_leave_only_from_the_leaver),
      cmocka_unit_test(test_sender_retries_and_confirms_its_token),
      cmocka_unit_test(test_data_messages_by_ring_position),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
