/*
 * test_closed_ring.c: a closed ring (dhtd --cluster-key-file) of real dhtd
 * processes on loopback, and everyone who should not get in.
 *
 * What it holds the ring to:
 *   - with the member key, nodes join and converge, and put/get work;
 *   - with the client key, put/get/del/lookup/ping/stats work, and every
 *     message only ring members may send is answered ERROR FORBIDDEN (a
 *     NOTIFY, one-way, is dropped), counted in role_refused;
 *   - without a key, with another ring's key (a client, a raw socket, a
 *     dhtd trying to join), the connection is closed without a byte back,
 *     counted in auth_failures;
 *   - after every refused attempt, what every node stores is exactly what
 *     it stored before (compared by SCAN, record by record).
 *
 *   test_closed_ring PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <sys/time.h>

#include "dht/err.h"

#define NODES_MAX 8
#define PORTS_MAX 16
#define WHY_LEN 400
#define WAIT_POLL_MS 50
#define RUN_MS 10000
#define SNAPSHOT_LEN 16384

/* The keys of the test's ring and of another ring. */
#define RING_OWN_FIELDS                                                        \
  dht_ring_key member, other;  /* this ring's member key, another ring's */   \
  char member_path[PATH_LEN];  /* their files */                             \
  char client_path[PATH_LEN];  /* the client key, by dht keygen --client */  \
  char other_path[PATH_LEN];

#include "ring_util.h"

/* ---- the ring ------------------------------------------------------------ */


/* Starts n nodes with this ring's member key and waits until they agree. */
static void ring_start(ring *r, int n) { ring_start_first_with(r, n, NULL); }

/* A client of d's address with key (NULL: none). */
static dht_client *client_with(const node *d, const dht_ring_key *key) {
  dht_client_settings set;
  dht_client *c;

  dht_client_settings_default(&set);
  if (key != NULL) {
    set.key = *key;
  }
  assert_int_equal(dht_client_new(&c, d->addr, &set), 0);
  return c;
}


static uint64_t counter_of(const node *d, const char *name) {
  dht_client_stats_result *st = malloc(sizeof(*st));
  uint64_t v = 0;

  assert_non_null(st);
  assert_int_equal(dht_client_stats(d->client, st, CALL_MS), 0);
  assert_int_equal(dht_client_stats_counter(st, name, &v), 0);
  free(st);
  return v;
}

/* Puts a few keys with the member key, so that there is something to
 * protect. */
static void ring_fill(ring *r) {
  char key[32], value[32];
  int i;

  for (i = 0; i < 20; i++) {
    snprintf(key, sizeof(key), "k%02d", i);
    snprintf(value, sizeof(value), "v%02d", i);
    assert_int_equal(dht_client_put(r->nodes[i % r->n_nodes].client, key,
                                    strlen(key), value, strlen(value), CALL_MS),
                     0);
  }
}

/* The daemon closes fd without sending a single byte (within 5 s). */
static bool closed_silently(int fd) {
  struct timeval tv = {5, 0};
  char buf[256];
  ssize_t n;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  n = read(fd, buf, sizeof(buf));
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

static int raw_connect(const node *d) { return connect_loopback(d->port); }

/* ---- tests --------------------------------------------------------------- */

/* Members join and serve; the client key reads and writes. */
static void test_keyed_ring_serves_its_keys(void **state) {
  dht_ring_key client;
  uint8_t *value = NULL;
  size_t value_len = 0;
  dht_client *c;
  ring *r = *state;
  char err[256];

  ring_start(r, 3);
  ring_fill(r);
  assert_int_equal(dht_client_get(r->nodes[2].client, "k07", 3, &value,
                                  &value_len, CALL_MS),
                   0);
  assert_memory_equal(value, "v07", 3);
  free(value);

  assert_int_equal(dht_ring_key_load(&client, r->client_path, err, sizeof(err)),
                   0);
  assert_int_equal(client.kind, DHT_KEY_CLIENT);
  c = client_with(&r->nodes[1], &client);
  assert_int_equal(dht_client_ping(c, NULL, CALL_MS), 0);
  assert_int_equal(dht_client_put(c, "by-client", 9, "yes", 3, CALL_MS), 0);
  assert_int_equal(dht_client_get(c, "k03", 3, &value, &value_len, CALL_MS), 0);
  assert_memory_equal(value, "v03", 3);
  free(value);
  assert_int_equal(dht_client_get(r->nodes[0].client, "by-client", 9, &value,
                                  &value_len, CALL_MS),
                   0);
  assert_memory_equal(value, "yes", 3);
  free(value);
  assert_int_equal(dht_client_remove(c, "by-client", 9, CALL_MS), 0);
  dht_client_del(c);
}

/* No key, another ring's key, plain bytes, a node of another ring: each is
 * closed without a byte back, and nothing stored changes. */
static void test_strangers_are_shut_out(void **state) {
  static const uint8_t plain_ping[] = {0x00, 0x00, 0x00, 0x0c, 0x83, 0xa1,
                                       0x76, 0x01, 0xa1, 0x74, 0x01, 0xa3,
                                       0x72, 0x69, 0x64, 0x2a};
  char before[SNAPSHOT_LEN], after[SNAPSHOT_LEN];
  uint8_t *value = NULL;
  size_t value_len = 0;
  dht_client *c;
  node *d, *stranger;
  ring *r = *state;
  uint64_t failures;
  int fd, i, rv;

  ring_start(r, 3);
  ring_fill(r);
  d = &r->nodes[0];
  ring_records_text(r, before, sizeof(before));
  failures = counter_of(d, "auth_failures");

  /* No key: the node closes at the first frame. */
  c = client_with(d, NULL);
  assert_int_not_equal(dht_client_put(c, "k01", 3, "evil", 4, CALL_MS), 0);
  assert_int_not_equal(dht_client_get(c, "k01", 3, &value, &value_len, 1000),
                       0);
  assert_null(value);
  assert_non_null(strstr(dht_client_last_error(c), "closed the connection"));
  dht_client_del(c);

  /* Another ring's key: the handshake fails. */
  for (i = 0; i < 3; i++) {
    c = client_with(&r->nodes[i], &r->other);
    assert_int_equal(dht_client_put(c, "k01", 3, "evil", 4, CALL_MS),
                     DHT_ERR_AUTH);
    assert_int_equal(dht_client_get(c, "k02", 3, &value, &value_len, CALL_MS),
                     DHT_ERR_AUTH);
    assert_null(value);
    dht_client_del(c);
  }

  /* Plain frames on a raw socket: not a byte back. */
  fd = raw_connect(d);
  assert_int_equal(write(fd, plain_ping, sizeof(plain_ping)),
                   (ssize_t)sizeof(plain_ping));
  assert_true(closed_silently(fd));
  close(fd);
  /* Half a handshake: closed at the handshake deadline (5 s). */
  fd = raw_connect(d);
  assert_int_equal(write(fd, "DHTK", 4), 4);
  {
    struct timeval tv = {8, 0};
    char buf[64];
    ssize_t n;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    n = read(fd, buf, sizeof(buf));
    assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
  }
  close(fd);

  /* A dhtd with another ring's key cannot join. */
  ring_key_use(r->other_path, &r->other);
  stranger = node_add(r, NULL);
  node_start_under(stranger, d, NULL, NULL);
  ring_key_use(r->member_path, &r->member);
  node_wait_exit(stranger, 1, 20000);

  /* Everything is as it was, and the node counted the closes. */
  wait_until(r, ring_succs_settled, SETTLE_MS, "ring still settled");
  ring_records_text(r, after, sizeof(after));
  assert_string_equal(before, after);
  rv = dht_client_get(d->client, "k01", 3, &value, &value_len, CALL_MS);
  assert_int_equal(rv, 0);
  assert_memory_equal(value, "v01", 3);
  free(value);
  assert_true(counter_of(d, "auth_failures") >= failures + 4);
}

/* Builds a request of each type only members may send, as a client key
 * holder (or a confused one) might. */
static void member_only_msg(dht_msg *m, dht_msg_type type, const node *d,
                            dht_kv *item, dht_peer_ref *peer,
                            uint8_t digest[DHT_DIGEST_LEN]) {
  memset(m, 0, sizeof(*m));
  m->type = type;
  peer->id = d->id;
  peer->addr.p = (const uint8_t *)"127.0.0.1:1";
  peer->addr.len = strlen("127.0.0.1:1");
  memset(item, 0, sizeof(*item));
  item->key.p = (const uint8_t *)"k01";
  item->key.len = 3;
  item->value.p = (const uint8_t *)"forged";
  item->value.len = 6;
  item->has_version = true;
  item->version.hlc = UINT64_MAX >> 1; /* newer than anything */
  memset(digest, 0, DHT_DIGEST_LEN);
  switch (type) {
  case DHT_MSG_NOTIFY:
  case DHT_MSG_LEAVE:
    m->has_peer = true;
    m->peer = *peer;
    m->succs = peer;
    m->n_succs = 1;
    break;
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
    m->items = item;
    m->n_items = 1;
    break;
  case DHT_MSG_SYNC:
    memset(&m->from, 0, sizeof(m->from));
    m->to = m->from;
    m->digests = digest;
    m->n_digests = 1;
    break;
  case DHT_MSG_FETCH:
    m->key = item->key;
    break;
  case DHT_MSG_SCAN:
    m->limit = 10;
    break;
  case DHT_MSG_ACK_LOST:
  case DHT_MSG_GET_NEIGHBORS:
  default:
    break;
  }
}

/* The client key may not send a member's messages: each is refused with
 * FORBIDDEN and counted, and nothing stored or routed changes. */
static void test_client_key_cannot_act_as_member(void **state) {
  static const dht_msg_type member_only[] = {
      DHT_MSG_GET_NEIGHBORS, DHT_MSG_NOTIFY, DHT_MSG_LEAVE,
      DHT_MSG_HANDOFF,       DHT_MSG_REPLICATE, DHT_MSG_SYNC,
      DHT_MSG_FETCH,         DHT_MSG_SCAN,   DHT_MSG_ACK_LOST,
  };
  char before[SNAPSHOT_LEN], after[SNAPSHOT_LEN];
  uint8_t digest[DHT_DIGEST_LEN];
  char *argv_check[8], *argv_ring[8];
  uint64_t refused;
  dht_ring_key client;
  dht_peer_ref peer;
  const dht_msg *reply;
  run_result *res;
  dht_client *c;
  ring *r = *state;
  char err[256];
  dht_kv item;
  dht_msg m;
  node *d;
  size_t i;

  ring_start(r, 3);
  ring_fill(r);
  d = &r->nodes[1];
  ring_records_text(r, before, sizeof(before));
  refused = counter_of(d, "role_refused");
  assert_int_equal(dht_ring_key_load(&client, r->client_path, err, sizeof(err)),
                   0);
  c = client_with(d, &client);
  for (i = 0; i < sizeof(member_only) / sizeof(member_only[0]); i++) {
    member_only_msg(&m, member_only[i], d, &item, &peer, digest);
    if (member_only[i] == DHT_MSG_NOTIFY) {
      /* One-way: no answer at all, not even a refusal. */
      assert_int_equal(dht_client_call(c, &m, &reply, 300), DHT_ERR_TIMEOUT);
      continue;
    }
    assert_int_equal(dht_client_call(c, &m, &reply, CALL_MS), 0);
    if (reply->type != DHT_MSG_ERROR ||
        reply->error_code != DHT_ERR_FORBIDDEN) {
      fail_msg("%s from a client key: answered %s %s, not ERROR FORBIDDEN",
               dht_msg_type_name((int)member_only[i]),
               dht_msg_type_name((int)reply->type),
               dht_errname(reply->error_code));
    }
  }
  /* What a client may do still works on the same connection. */
  assert_int_equal(dht_client_ping(c, NULL, CALL_MS), 0);
  dht_client_del(c);
  assert_true(counter_of(d, "role_refused") >=
              refused + sizeof(member_only) / sizeof(member_only[0]));
  /* The forged NOTIFY, LEAVE, HANDOFF and REPLICATE changed nothing. */
  wait_until(r, ring_succs_settled, 0, "ring as it was");
  ring_records_text(r, after, sizeof(after));
  assert_string_equal(before, after);

  /* dht ring and dht check say they need the member key. */
  res = malloc(sizeof(*res));
  assert_non_null(res);
  argv_check[0] = (char *)dht_path;
  argv_check[1] = "--node";
  argv_check[2] = d->addr;
  argv_check[3] = "--cluster-key-file";
  argv_check[4] = r->client_path;
  argv_check[5] = "check";
  argv_check[6] = NULL;
  assert_true(run_within(r, argv_check, RUN_MS, res));
  assert_int_equal(res->status, 2);
  assert_non_null(strstr(res->err, "check needs the ring's member key"));
  memcpy(argv_ring, argv_check, sizeof(argv_ring));
  argv_ring[5] = "ring";
  assert_true(run_within(r, argv_ring, RUN_MS, res));
  assert_int_equal(res->status, 2);
  assert_non_null(strstr(res->err, "ring needs the ring's member key"));
  /* ... and with the member key they pass. */
  argv_check[4] = r->member_path;
  assert_true(run_within(r, argv_check, RUN_MS, res));
  if (res->status != 0) {
    fail_msg("dht check with the member key: exit %d: %s%s", res->status,
             res->out, res->err);
  }
  free(res);
}

/* ---- fixtures and main --------------------------------------------------- */

/* A ring with its keys: the member key, the client key derived by
 * `dht keygen --client`, and another ring's key. */
static int ring_new(void **state) {
  char *argv[6];
  run_result *res = malloc(sizeof(*res));
  ring *r = ring_make();
  char err[256];

  if (r == NULL || res == NULL) {
    free(res);
    free(r);
    return -1;
  }
  char name[64];

  snprintf(r->client_path, sizeof(r->client_path), "%s/client.key", r->dir);
  /* ring_key_new writes into base_dir: a file per ring beside its dir. */
  snprintf(name, sizeof(name), "%s.key", strrchr(r->dir, '/') + 1);
  if (!ring_key_new(name, &r->member, r->member_path,
                    sizeof(r->member_path))) {
    return -1;
  }
  snprintf(r->other_path, sizeof(r->other_path), "%s/%.60s.other", base_dir,
           name);
  {
    uint8_t raw[DHT_KEY_LEN];
    randombytes_buf(raw, sizeof(raw));
    dht_ring_key_from_member(&r->other, raw);
    if (dht_ring_key_save(&r->other, false, r->other_path, err, sizeof(err)) !=
        0) {
      fprintf(stderr, "%s\n", err);
      return -1;
    }
  }
  argv[0] = (char *)dht_path;
  argv[1] = "keygen";
  argv[2] = "--client";
  argv[3] = r->member_path;
  argv[4] = r->client_path;
  argv[5] = NULL;
  if (!run_within(r, argv, RUN_MS, res) || res->status != 0) {
    fprintf(stderr, "dht keygen --client failed: %s\n", res->err);
    free(res);
    return -1;
  }
  free(res);
  ring_key_use(r->member_path, &r->member);
  *state = r;
  return 0;
}

static int ring_del(void **state) {
  ring *r = *state;

  ring_kill_nodes(r);
  unlink(r->member_path);
  unlink(r->other_path);
  ring_dir_remove(r);
  ring_key_use(NULL, NULL);
  free(r);
  return 0;
}

#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_new, ring_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_keyed_ring_serves_its_keys),
      RING_TEST(test_strangers_are_shut_out),
      RING_TEST(test_client_key_cannot_act_as_member),
  };
  int rv;

  if (!ring_tests_args(argc, argv, "test_closed_ring") ||
      sodium_init() < 0 || !ring_tests_begin("/tmp/dht-closed-XXXXXX")) {
    return 2;
  }
  rv = cmocka_run_group_tests(tests, NULL, NULL);
  ring_tests_end();
  return rv;
}
