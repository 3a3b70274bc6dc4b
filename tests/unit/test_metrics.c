/*
 * test_metrics.c: a node's own measurements (dht/metrics.h), driven by the
 * fake host of test_util.h: messages by type, bytes by class, requests by
 * result, ERROR replies by code, the latency of what clients ask from the
 * times the host passes in, and the gauges. What is counted is checked
 * against the frames the host saw go in and out.
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

#include "dht/err.h"
#include "dht/metrics.h"
#include "dht/node.h"

#include "test_util.h"

#define CLIENT 7 /* connection number of the test's client */
#define PEER 9   /* connection number of a peer's connection to us */

static dht_node_metrics metrics_of(fake_host *h) {
  dht_node_metrics m;

  dht_node_get_metrics(h->node, &m);
  return m;
}

/* The latency bucket that holds ms: the first whose bound 2^i is >= ms. */
static unsigned bucket_of(uint64_t ms) {
  unsigned b = 0;

  while (b < DHT_LATENCY_BUCKETS - 1 && (1ull << b) < ms) {
    b++;
  }
  return b;
}

/* A ring of one at "a:1" keeping one copy, answering only, acknowledging
 * writes only once the host says its commit is done. */
static void alone(fake_host *h) {
  dht_settings s;

  dht_settings_default(&s);
  s.replicas = 1;
  host_init_with(h, "a:1", NULL, &s, 0, dht_store_mem_new(), true);
  assert_int_equal(dht_node_create_ring(h->node, h->now), 0);
  dht_node_set_maintenance(h->node, false, h->now);
  host_expect_none(h);
}

/* A ring of one at "a:1" keeping one copy, answering only, that b:2 has
 * just told it is its predecessor (and so its successor too). */
static void with_b(fake_host *h) {
  dht_settings s;
  dht_msg q;

  dht_settings_default(&s);
  s.replicas = 1;
  host_init(h, "a:1", NULL, &s, 0);
  dht_node_create_ring(h->node, h->now);
  dht_node_set_maintenance(h->node, false, h->now);
  msg_init(&q, DHT_MSG_NOTIFY, 5);
  q.has_peer = true;
  peer_ref(&q.peer, "b:2");
  assert_int_equal(host_recv(h, PEER, &q), 0);
  host_drain(h);
}

/* A PUT answered after a commit 5 ms later, a GET at once, a GET and a
 * DEL of a missing key: results, codes, latency and client bytes. */
static void test_client_requests_by_result_and_latency(void **state) {
  fake_host h;
  host_action a;
  dht_node_metrics m;
  size_t bytes_out = 0;

  (void)state;
  alone(&h);
  host_write(&h, CLIENT, 1, "k", "v", NULL);
  host_expect_none(&h); /* held for the commit */
  m = metrics_of(&h);
  assert_int_equal(m.in_progress, 1);
  assert_int_equal(m.acks_held, 1);
  h.now += 5;
  dht_node_commit_done(h.node, 0, h.now);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_OK, 1);
  bytes_out += a.frame.len;
  action_free(&a);

  host_data_request(&h, CLIENT, DHT_MSG_GET, 2, "k", NULL, false);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_VALUE, 2);
  bytes_out += a.frame.len;
  action_free(&a);
  host_data_request(&h, CLIENT, DHT_MSG_GET, 3, "nope", NULL, false);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_ERROR, 3);
  bytes_out += a.frame.len;
  action_free(&a);
  host_write(&h, CLIENT, 4, "nope", NULL, NULL);
  dht_node_commit_done(h.node, 0, h.now);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_ERROR, 4);
  bytes_out += a.frame.len;
  action_free(&a);

  m = metrics_of(&h);
  assert_int_equal(m.in_progress, 0);
  assert_int_equal(m.untracked, 0);
  assert_int_equal(m.msgs_in[DHT_MSG_PUT], 1);
  assert_int_equal(m.msgs_in[DHT_MSG_GET], 2);
  assert_int_equal(m.msgs_out[DHT_MSG_OK], 1);
  assert_int_equal(m.msgs_out[DHT_MSG_VALUE], 1);
  assert_int_equal(m.msgs_out[DHT_MSG_ERROR], 2);
  assert_int_equal(m.errors_out[-DHT_ERR_NOT_FOUND], 2);
  assert_int_equal(m.results[DHT_MSG_PUT][DHT_RESULT_OK], 1);
  assert_int_equal(m.results[DHT_MSG_GET][DHT_RESULT_OK], 1);
  assert_int_equal(m.results[DHT_MSG_GET][DHT_RESULT_NOT_FOUND], 1);
  assert_int_equal(m.results[DHT_MSG_DEL][DHT_RESULT_NOT_FOUND], 1);
  assert_int_equal(m.latency[DHT_OP_PUT][bucket_of(5)], 1);
  assert_int_equal(m.latency_sum_ms[DHT_OP_PUT], 5);
  assert_int_equal(m.latency[DHT_OP_GET][0], 2);
  assert_int_equal(m.latency[DHT_OP_DEL][0], 1);
  /* Every frame was a client's, and every reply answered one. */
  assert_int_equal(m.bytes_out[DHT_MSG_CLASS_CLIENT], bytes_out);
  assert_int_equal(m.bytes_out[DHT_MSG_CLASS_OTHER], 0);
  assert_true(m.bytes_in[DHT_MSG_CLASS_CLIENT] > 0);
  assert_int_equal(m.bytes_in[DHT_MSG_CLASS_RING], 0);
  assert_int_equal(m.keys, 2); /* k, and the DEL's tombstone of nope */
  assert_int_equal(m.state, DHT_NODE_JOINED);
  host_free(&h);
}

/* A FIND_SUCC forwarded to b, whose answer comes 37 ms later: its latency
 * is the relay's, ACCEPTED settles nothing, and every byte is routing's. */
static void test_forwarded_lookup_is_timed_to_its_relay(void **state) {
  fake_host h;
  host_actions all;
  const host_action *fwd;
  host_action a;
  dht_node_metrics m;
  dht_msg q, r;
  size_t sent, relayed;
  uint64_t fwd_rid;

  (void)state;
  with_b(&h);
  m = metrics_of(&h);
  assert_int_equal(m.msgs_in[DHT_MSG_NOTIFY], 1);
  assert_true(m.bytes_in[DHT_MSG_CLASS_RING] > 0);
  assert_int_equal(m.in_progress, 0); /* NOTIFY expects no answer */
  assert_true(m.has_pred);

  msg_init(&q, DHT_MSG_FIND_SUCC, 100);
  q.target = key_id_of("b:2");
  host_recv(&h, CLIENT, &q);
  host_take_all(&h, &all);
  fwd = only_send(&all, "b:2", DHT_MSG_FIND_SUCC);
  fwd_rid = fwd->msg.rid;
  sent = fwd->frame.len;
  only_reply(&all, CLIENT, 100, DHT_MSG_ACCEPTED);
  host_actions_free(&all);
  m = metrics_of(&h);
  assert_int_equal(m.in_progress, 1);
  assert_int_equal(m.pending, 1);
  assert_int_equal(m.msgs_out[DHT_MSG_FIND_SUCC], 1);

  h.now += 37;
  msg_init(&r, DHT_MSG_FIND_SUCC_R, fwd_rid);
  r.has_peer = true;
  peer_ref(&r.peer, "b:2");
  host_recv(&h, PEER, &r);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_FIND_SUCC_R, 100);
  relayed = a.frame.len;
  action_free(&a);

  m = metrics_of(&h);
  assert_int_equal(m.in_progress, 0);
  assert_int_equal(m.results[DHT_MSG_FIND_SUCC][DHT_RESULT_OK], 1);
  assert_int_equal(m.latency[DHT_OP_FIND_SUCC][bucket_of(37)], 1);
  assert_int_equal(m.latency_sum_ms[DHT_OP_FIND_SUCC], 37);
  assert_int_equal(m.msgs_out[DHT_MSG_ACCEPTED], 1);
  /* The forward, the ACCEPTED and the relay are all routing's. */
  assert_true(m.bytes_out[DHT_MSG_CLASS_ROUTING] > sent + relayed);
  assert_int_equal(m.bytes_out[DHT_MSG_CLASS_OTHER], 0);
  assert_true(m.bytes_in[DHT_MSG_CLASS_ROUTING] > 0);

  /* The same answer again matches nothing: its class is its own type's. */
  host_recv(&h, PEER, &r);
  host_expect_none(&h);
  assert_int_equal(metrics_of(&h).msgs_in[DHT_MSG_FIND_SUCC_R], 2);
  host_free(&h);
}

/* Refusals are counted by code, garbage as bytes of no class, and STATS
 * lists the bytes of each class. */
static void test_refusals_garbage_and_stats(void **state) {
  static const uint8_t junk[] = {0xc1, 0xc1, 0xc1};
  fake_host h;
  host_action a;
  dht_node_metrics m;
  dht_msg q;
  dht_settings s;

  (void)state;
  dht_settings_default(&s);
  host_init(&h, "a:1", NULL, &s, 0);
  host_data_request(&h, CLIENT, DHT_MSG_GET, 1, "k", NULL, false);
  host_expect_error(&h, CLIENT, 1, DHT_ERR_STATE); /* not in a ring yet */
  dht_node_recv(h.node, CLIENT, junk, sizeof(junk), h.now);
  host_drain(&h);
  m = metrics_of(&h);
  assert_int_equal(m.state, DHT_NODE_IDLE);
  assert_int_equal(m.errors_out[-DHT_ERR_STATE], 1);
  assert_int_equal(m.results[DHT_MSG_GET][DHT_RESULT_ERROR], 1);
  assert_int_equal(m.bytes_in[DHT_MSG_CLASS_OTHER],
                   sizeof(junk) + DHT_FRAME_HEADER_LEN);

  msg_init(&q, DHT_MSG_STATS, 2);
  host_recv(&h, CLIENT, &q);
  host_expect_reply(&h, &a, CLIENT, DHT_MSG_STATS_R, 2);
  m = metrics_of(&h);
  assert_int_equal(stats_value(&a.msg, "bytes_in_client"),
                   m.bytes_in[DHT_MSG_CLASS_CLIENT]);
  assert_int_equal(stats_value(&a.msg, "bytes_in_other"),
                   m.bytes_in[DHT_MSG_CLASS_OTHER]);
  assert_true(stats_value(&a.msg, "bytes_out_client") > 0);
  assert_int_equal(stats_value(&a.msg, "bytes_out_ring"), 0);
  action_free(&a);
  assert_string_equal(dht_msg_class_name(DHT_MSG_CLASS_REPLICATION),
                      "replication");
  assert_string_equal(dht_msg_class_name(-1), "other");
  host_free(&h);
}

/* Many lookups in flight at once on a few connections, answered in a
 * scrambled order: every one is matched to its arrival (the table grows,
 * and entries move as others leave it), and it empties again. */
static void test_many_in_flight_answered_out_of_order(void **state) {
  enum { N = 3000 };
  static uint64_t fwd_rids[N];
  fake_host h;
  host_action a;
  dht_node_metrics m;
  dht_msg q, r;
  uint64_t seed = 12345;
  int i, n_fwd = 0, replies = 0;

  (void)state;
  with_b(&h);

  for (i = 0; i < N; i++) {
    msg_init(&q, DHT_MSG_FIND_SUCC, 1000 + (uint64_t)i / 3);
    q.target = key_id_of("b:2");
    host_recv(&h, CLIENT + (uint64_t)(i % 3) * 100, &q);
    while (host_poll(&h, &a)) {
      if (a.type == DHT_ACTION_SEND) {
        fwd_rids[n_fwd++] = a.msg.rid;
      }
      action_free(&a);
    }
  }
  assert_int_equal(n_fwd, N);
  assert_int_equal(metrics_of(&h).in_progress, N);
  for (i = N - 1; i > 0; i--) { /* Fisher-Yates */
    int j = (int)(xorshift64(&seed) % (uint64_t)(i + 1));
    uint64_t t = fwd_rids[i];
    fwd_rids[i] = fwd_rids[j];
    fwd_rids[j] = t;
  }
  for (i = 0; i < N; i++) {
    msg_init(&r, DHT_MSG_FIND_SUCC_R, fwd_rids[i]);
    r.has_peer = true;
    peer_ref(&r.peer, "b:2");
    host_recv(&h, PEER, &r);
    while (host_poll(&h, &a)) {
      replies += a.type == DHT_ACTION_REPLY &&
                 a.msg.type == DHT_MSG_FIND_SUCC_R;
      action_free(&a);
    }
  }
  assert_int_equal(replies, N);
  m = metrics_of(&h);
  assert_int_equal(m.in_progress, 0);
  assert_int_equal(m.untracked, 0);
  assert_int_equal(m.results[DHT_MSG_FIND_SUCC][DHT_RESULT_OK], N);
  assert_int_equal(m.latency[DHT_OP_FIND_SUCC][0], N);
  host_free(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_requests_by_result_and_latency),
      cmocka_unit_test(test_forwarded_lookup_is_timed_to_its_relay),
      cmocka_unit_test(test_refusals_garbage_and_stats),
      cmocka_unit_test(test_many_in_flight_answered_out_of_order),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
