/*
 * test_forgery.c: an open ring (no cluster key) of three real dhtd
 * processes on loopback, and a process that never joined it forging the
 * messages members send each other (docs/SECURITY.md, "Open ring").
 *
 * The forger is a client connection of its own that writes hand-built
 * frames (dht_client_call): it can claim any address and any id, a real
 * member's included, since everything here runs on 127.0.0.1. Each test
 * makes its forgeries, then holds the ring to:
 *   - every node stores exactly what it stored before (SCAN of every node,
 *     record by record and version by version);
 *   - the ring is as it was: every node's neighbours are its true ones, and
 *     `dht check` passes (membership, ids, copies);
 *   - the daemons keep serving (a put and a get afterwards).
 *
 *   test_forgery PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <sys/time.h>

#include "dht/err.h"

#define NODES_MAX 4
#define PORTS_MAX 8
#define WHY_LEN 400
#define WAIT_POLL_MS 50
#define RUN_MS 20000
#define SNAPSHOT_LEN 16384
#define KEYS_N 12
/* Long enough for anything a forgery set off (an anti-entropy round, a
 * hand-off, a stabilize round at the test's 100 ms) to have happened. */
#define AFTERMATH_MS 2500

#define RING_OWN_FIELDS /* none */

#include "ring_util.h"

/* ---- the ring ------------------------------------------------------------ */

/* order[p]'s first successor is its true one, and its predecessor too. */
static bool neighbours_right(node *const order[], int n, int p, int depth,
                             const dht_client_neighbors_result *nb, char *why,
                             size_t why_len) {
  const node *succ = order[(p + 1) % n];
  const node *pred = order[(p + n - 1) % n];

  (void)depth;
  if (nb->n_succs == 0 || strcmp(nb->succs[0].addr, succ->addr) != 0 ||
      !dht_id_eq(&nb->succs[0].id, &succ->id)) {
    snprintf(why, why_len, "%s has successor %s, not %s", order[p]->addr,
             nb->n_succs > 0 ? nb->succs[0].addr : "(none)", succ->addr);
    return false;
  }
  if (!nb->has_pred || strcmp(nb->pred.addr, pred->addr) != 0 ||
      !dht_id_eq(&nb->pred.id, &pred->id)) {
    snprintf(why, why_len, "%s has predecessor %s, not %s", order[p]->addr,
             nb->has_pred ? nb->pred.addr : "(none)", pred->addr);
    return false;
  }
  return true;
}

static bool ring_settled(ring *r, char *why, size_t why_len) {
  return ring_lists_right(r, neighbours_right, why, why_len);
}

static void ring_start(ring *r, int n) {
  node *first = node_add(r, NULL);
  char key[16], value[16];
  int i;

  node_start_under(first, NULL, NULL, NULL);
  if (!node_answers_by(first, now_ms() + 5000)) {
    fail_msg("%s does not answer after 5 s: %s", first->addr,
             dht_client_last_error(first->client));
  }
  for (i = 1; i < n; i++) {
    node_start_under(node_add(r, NULL), first, NULL, NULL);
  }
  wait_until(r, ring_settled, SETTLE_MS, "ring settled");
  for (i = 0; i < KEYS_N; i++) {
    snprintf(key, sizeof(key), "k%02d", i);
    snprintf(value, sizeof(value), "v%02d", i);
    assert_int_equal(dht_client_put(r->nodes[i % n].client, key, strlen(key),
                                    value, strlen(value), CALL_MS),
                     0);
  }
}

/* Snapshots every node's records now, once the ring has settled. */
static void ring_before(ring *r, char *before, size_t len) {
  /* Copies reach the replicas a moment after the OK: wait until the ring
   * agrees with itself (dht check), then take the picture. */
  char *argv[6] = {(char *)dht_path, "--node", r->nodes[0].addr, "check",
                   NULL};
  run_result *res = malloc(sizeof(*res));
  uint64_t deadline = now_ms() + SETTLE_MS;

  assert_non_null(res);
  for (;;) {
    assert_true(run_within(r, argv, RUN_MS, res));
    if (res->status == 0 || now_ms() > deadline) {
      break;
    }
    pause_ms(200);
  }
  assert_int_equal(res->status, 0);
  free(res);
  ring_records_text(r, before, len);
}

/* After the forgeries: nothing stored changed, the ring is as it was,
 * `dht check` passes, and the nodes serve. */
static void ring_unchanged(ring *r, const char *before) {
  char *after = malloc(SNAPSHOT_LEN);
  char *argv[6] = {(char *)dht_path, "--node", r->nodes[0].addr, "check",
                   NULL};
  run_result *res = malloc(sizeof(*res));
  uint8_t *got = NULL;
  size_t got_len = 0;
  int i;

  assert_non_null(after);
  assert_non_null(res);
  pause_ms(AFTERMATH_MS);
  wait_until(r, ring_settled, 0, "ring as it was");
  ring_records_text(r, after, SNAPSHOT_LEN);
  if (strcmp(before, after) != 0) {
    fail_msg("the records changed:\nbefore: %s\nafter:  %s", before, after);
  }
  assert_true(run_within(r, argv, RUN_MS, res));
  if (res->status != 0) {
    fail_msg("dht check: exit %d: %s%s", res->status, res->out, res->err);
  }
  for (i = 0; i < r->n_nodes; i++) {
    assert_true(r->nodes[i].pid > 0);
    assert_int_equal(dht_client_ping(r->nodes[i].client, NULL, CALL_MS), 0);
  }
  assert_int_equal(dht_client_put(r->nodes[0].client, "after", 5, "yes", 3,
                                  CALL_MS),
                   0);
  assert_int_equal(dht_client_get(r->nodes[1].client, "after", 5,
                                  &got, &got_len, CALL_MS),
                   0);
  assert_int_equal(got_len, 3);
  free(got);
  free(res);
  free(after);
}

/* ---- forging ------------------------------------------------------------- */

static uint64_t wall_now_ms(void) {
  struct timeval tv;

  gettimeofday(&tv, NULL);
  return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

static dht_peer_ref ref_of(const node *d) {
  dht_peer_ref p;

  p.id = d->id;
  p.addr.p = (const uint8_t *)d->addr;
  p.addr.len = strlen(d->addr);
  return p;
}

static dht_peer_ref ref_made_up(const char *addr, uint8_t top) {
  dht_peer_ref p;

  memset(&p.id, 0, sizeof(p.id));
  p.id.b[0] = top;
  p.id.b[19] = 1;
  p.addr.p = (const uint8_t *)addr;
  p.addr.len = strlen(addr);
  return p;
}

/* d's predecessor and successor on the ring. */
static void neighbours_of(ring *r, const node *d, node **pred, node **succ) {
  node *order[NODES_MAX];
  int n = ring_order(r, order), p;

  for (p = 0; p < n && order[p] != d; p++) {
  }
  assert_true(p < n);
  *pred = order[(p + n - 1) % n];
  *succ = order[(p + 1) % n];
}

/* A forger's connection to d. */
static dht_client *forger(const node *d) {
  dht_client_settings set;
  dht_client *c;

  dht_client_settings_default(&set);
  assert_int_equal(dht_client_new(&c, d->addr, &set), 0);
  return c;
}

/* Sends m on c and requires a refusal: an ERROR with one of the codes a
 * node refuses forged senders with (or, when ok_codes is NULL, any). */
static void refused(dht_client *c, dht_msg *m, const char *what) {
  const dht_msg *reply;
  int rv = dht_client_call(c, m, &reply, CALL_MS);

  if (rv != 0) {
    fail_msg("%s: no answer: %s", what, dht_strerror(rv));
  }
  if (reply->type != DHT_MSG_ERROR ||
      (reply->error_code != DHT_ERR_UNBOUND &&
       reply->error_code != DHT_ERR_NOT_NEIGHBOR &&
       reply->error_code != DHT_ERR_CLOCK_SKEW)) {
    fail_msg("%s: answered %s %s, not a refusal", what,
             dht_msg_type_name((int)reply->type),
             reply->type == DHT_MSG_ERROR ? dht_errname(reply->error_code)
                                          : "");
  }
}

/* A NOTIFY gets no answer, refused or not. */
static void notify_sent(dht_client *c, dht_msg *m) {
  const dht_msg *reply;

  assert_int_equal(dht_client_call(c, m, &reply, 200), DHT_ERR_TIMEOUT);
}

static void item_set(dht_kv *it, const char *key, const char *value,
                     uint64_t hlc, bool tombstone) {
  memset(it, 0, sizeof(*it));
  it->key.p = (const uint8_t *)key;
  it->key.len = strlen(key);
  it->value.p = (const uint8_t *)value;
  it->value.len = strlen(value);
  it->has_version = true;
  it->version.hlc = hlc;
  memset(it->version.writer.b, 0xee, DHT_ID_LEN);
  it->tombstone = tombstone;
}

/* ---- tests --------------------------------------------------------------- */

/* REPLICATE and HANDOFF that overwrite, plant and delete keys, stamped a
 * second ahead or at 2^64 - 1, claiming to come from the target's true
 * predecessor (its address and id), from a made-up address, or from
 * nobody; SYNC and FETCH likewise. Every one is refused, at every node. */
static void test_forged_data_messages(void **state) {
  static const dht_msg_type types[] = {DHT_MSG_REPLICATE, DHT_MSG_HANDOFF};
  char before[SNAPSHOT_LEN];
  uint8_t digest[DHT_DIGEST_LEN];
  ring *r = *state;
  dht_kv items[4];
  dht_msg m;
  int i, s;
  size_t t;

  ring_start(r, 3);
  ring_before(r, before, sizeof(before));
  for (i = 0; i < r->n_nodes; i++) {
    node *d = &r->nodes[i], *pred, *succ;
    dht_client *c = forger(d);
    dht_peer_ref srcs[4];
    uint64_t ahead = (wall_now_ms() + 1000) << 16;

    neighbours_of(r, d, &pred, &succ);
    srcs[0] = ref_of(pred); /* its true predecessor, address and id */
    srcs[1] = ref_of(succ); /* ... and successor */
    srcs[2] = ref_made_up("127.0.0.1:1", 0x42); /* an id not hash(addr) */
    srcs[3] = ref_of(d);    /* itself */
    item_set(&items[0], "k01", "forged", ahead, false);      /* overwrite */
    item_set(&items[1], "planted", "forged", ahead, false); /* plant */
    item_set(&items[2], "k02", "", ahead, true);             /* delete */
    item_set(&items[3], "k03", "forged", UINT64_MAX, false); /* lock */
    for (t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
      for (s = -1; s < 4; s++) {
        memset(&m, 0, sizeof(m));
        m.type = types[t];
        m.items = items;
        m.n_items = 4;
        if (s >= 0) {
          m.has_src = true;
          m.src = srcs[s];
          m.link = 0x1234567890abcdefull; /* a made-up token */
        }
        refused(c, &m, dht_msg_type_name((int)types[t]));
      }
    }
    /* Anti-entropy and reads between members, from the true predecessor's
     * name. */
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_SYNC;
    memset(digest, 0, sizeof(digest));
    m.digests = digest;
    m.n_digests = 1;
    m.has_src = true;
    m.src = srcs[0];
    m.link = 99;
    refused(c, &m, "SYNC");
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_FETCH;
    m.key.p = (const uint8_t *)"k01";
    m.key.len = 3;
    m.has_src = true;
    m.src = srcs[0];
    m.link = 99;
    refused(c, &m, "FETCH");
    dht_client_del(c);
  }
  /* A client's PUT stamped 2^64 - 1: refused as too far ahead. */
  {
    dht_client *c = forger(&r->nodes[0]);
    const dht_msg *reply;
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_PUT;
    m.key.p = (const uint8_t *)"k04";
    m.key.len = 3;
    m.value.p = (const uint8_t *)"forged";
    m.value.len = 6;
    m.has_ver = true;
    m.ver.hlc = UINT64_MAX;
    assert_int_equal(dht_client_call(c, &m, &reply, CALL_MS), 0);
    assert_int_equal(reply->type, DHT_MSG_ERROR);
    assert_int_equal(reply->error_code, DHT_ERR_CLOCK_SKEW);
    dht_client_del(c);
  }
  ring_unchanged(r, before);
}

/* NOTIFY under an id that is not its address's hash, under three made-up
 * ids just before the target, under a member's address with another id
 * and with its own id; LEAVE in a live member's name. The ring keeps its
 * members, their ids and its keys. */
static void test_forged_ring_messages(void **state) {
  char before[SNAPSHOT_LEN];
  dht_peer_ref peers[4];
  ring *r = *state;
  dht_msg m;
  int i, k;

  ring_start(r, 3);
  ring_before(r, before, sizeof(before));
  for (i = 0; i < r->n_nodes; i++) {
    node *d = &r->nodes[i], *pred, *succ;
    dht_client *c = forger(d);
    dht_id just_before;

    neighbours_of(r, d, &pred, &succ);
    /* Made-up ids just before the target: the range it owns. */
    just_before = d->id;
    for (k = 0; k < 3; k++) {
      char *addr = malloc(32);
      assert_non_null(addr);
      snprintf(addr, 32, "127.0.0.1:%d", 2 + k);
      peers[k] = ref_made_up(addr, 0);
      peers[k].id = just_before;
      peers[k].id.b[19] = (uint8_t)(peers[k].id.b[19] - 1 - k);
      memset(&m, 0, sizeof(m));
      m.type = DHT_MSG_NOTIFY;
      m.has_peer = true;
      m.peer = peers[k];
      m.link = 7;
      notify_sent(c, &m);
    }
    /* A member's address under another id, and under its own. */
    peers[3] = ref_of(pred);
    peers[3].id.b[0] ^= 0x80;
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_NOTIFY;
    m.has_peer = true;
    m.peer = peers[3];
    m.link = 7;
    notify_sent(c, &m);
    m.peer = ref_of(succ); /* "your successor is your predecessor" */
    notify_sent(c, &m);
    m.peer = ref_of(pred);
    notify_sent(c, &m);
    /* LEAVE in the successor's and the predecessor's names. */
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_LEAVE;
    m.has_peer = true;
    m.peer = ref_of(succ);
    m.succs = &peers[0];
    m.n_succs = 1;
    m.link = 7;
    refused(c, &m, "LEAVE as the successor");
    m.peer = ref_of(pred);
    m.has_pred = true;
    m.pred = peers[1];
    refused(c, &m, "LEAVE as the predecessor");
    m.link = 0;
    refused(c, &m, "LEAVE without a token");
    for (k = 0; k < 3; k++) {
      free((void *)peers[k].addr.p);
    }
    dht_client_del(c);
  }
  ring_unchanged(r, before);
}

/* ---- fixtures and main --------------------------------------------------- */

static int ring_new(void **state) {
  ring *r = ring_make();

  if (r == NULL) {
    return -1;
  }
  *state = r;
  return 0;
}

static int ring_del(void **state) {
  ring *r = *state;

  ring_kill_nodes(r);
  ring_dir_remove(r);
  free(r);
  return 0;
}

#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_new, ring_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_forged_data_messages),
      RING_TEST(test_forged_ring_messages),
  };
  int rv;

  if (!ring_tests_args(argc, argv, "test_forgery") || sodium_init() < 0 ||
      !ring_tests_begin("/tmp/dht-forgery-XXXXXX")) {
    return 2;
  }
  /* An open ring, whatever DHT_TEST_CLUSTER_KEY says: that is the point. */
  ring_key_use(NULL, NULL);
  unsetenv("DHT_CLUSTER_KEY_FILE");
  rv = cmocka_run_group_tests(tests, NULL, NULL);
  ring_tests_end();
  return rv;
}
