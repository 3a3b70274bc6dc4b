/*
 * test_daemons.c: real dhtd processes on loopback, real LMDB files, real
 * signals, and the dht CLI run as a user runs it.
 *
 * What the tests hold the daemons to:
 *   - key sets, not counts: every key the test has had acknowledged is on
 *     exactly its holders (its owner and the owner's next R - 1 nodes),
 *     on no other node, with one version on all of them, a deleted key as
 *     a tombstone; and every read gives back exactly the value last
 *     written, or NOT_FOUND for a deleted key;
 *   - exact output: the CLI's one stderr line and exit status, and dhtd's
 *     start-up error line and exit status, for every mistake; `dht ring`'s
 *     listing and `dht check`'s report, compared in full.
 *
 * Each test builds the ring it needs in a directory of its own: the setup
 * fixture hands it an empty ring, and the teardown kills whatever the test
 * started (by pid, whether the test passed or not) and removes the
 * directory. No test depends on another, so each runs alone or in any
 * order:
 *
 *   test_daemons PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 *
 * PATTERN picks the tests by name, with '*' and '?' as wildcards (cmocka's
 * test filter), e.g. from the build directory:
 *
 *   tests/test_daemons dhtd/dhtd cli/dht test_sigterm_hands_keys_on
 *   tests/test_daemons dhtd/dhtd cli/dht '*sigkill*'
 *
 * DHT_KEEP_TEST_DIR=1 keeps every node's log and data directory.
 *
 * Every wait polls a condition against a deadline; every process's pid is
 * kept and only that pid is ever signalled; every port is one the kernel
 * just handed out for port 0 (and never one this test had already), so
 * runs side by side do not pick the same ports.
 */
#define _DEFAULT_SOURCE

#include <errno.h>
#include <sys/time.h>

#include "dht/cluster.h"
#include "dht/err.h"

#define NODES_MAX 16
#define PORTS_MAX 64 /* ports one test may take */
#define WHY_LEN 400  /* a failed condition's reason */
#define WAIT_POLL_MS 50
#define KEYS 1000
#define GET_DEADLINE_MS 1000 /* a user's get, retries included */
#define REPAIR_MS 15000      /* for the records to follow */
#define STOP_MS 15000        /* for a signalled node to exit (SIGTERM: leave) */
#define RUN_MS 10000         /* one dht or dhtd command */
#define FILL_WINDOW 64       /* PUTs in flight while a ring is filled */

/* What the last acknowledged write of a key did. */
typedef enum key_state { KEY_UNWRITTEN, KEY_WRITTEN, KEY_DELETED } key_state;

/* Everything the ring has been told. */
#define RING_OWN_FIELDS                                                        \
  key_state keys[KEYS]; /* per key: what its last OK was for */                \
  unsigned gen[KEYS];   /* per written key: value_of(i, gen[i]) was put */

#include "ring_util.h"

/* ---- nodes and the ring -------------------------------------------------- */

static void loopback_addr(ring *r, char *out, size_t len) {
  snprintf(out, len, "127.0.0.1:%d", free_port(r));
}

/* Starts d straight from the test, as a user starts dhtd. */
static void node_start(node *d, const node *join) {
  node_start_under(d, join, NULL, NULL);
}

/* ring_lists_right's check of order[p]'s lists: their first depth entries
 * are the true ones. */
static bool first_entries_right(node *const order[], int n, int p, int depth,
                                const dht_client_neighbors_result *nb,
                                char *why, size_t why_len) {
  int k;

  for (k = 0; k < depth; k++) {
    const char *succ = order[(p + 1 + k) % n]->addr;
    const char *prev = order[(p + n - 1 - k) % n]->addr;
    if (strcmp(nb->succs[k].addr, succ) != 0 ||
        strcmp(nb->preds[k].addr, prev) != 0) {
      snprintf(why, why_len,
               "%s lists successor %d as %s and predecessor %d as %s, "
               "not %s and %s",
               order[p]->addr, k, nb->succs[k].addr, k, nb->preds[k].addr, succ,
               prev);
      return false;
    }
  }
  return true;
}

/* True when every running node has the true predecessor and the true
 * first successors and predecessors, as deep as replication needs: only
 * then do its writes reach the right replicas. */
static bool ring_settled(ring *r, char *why, size_t why_len) {
  return ring_lists_right(r, first_entries_right, why, why_len);
}

/* Adds n nodes and starts them, the first as a new ring and the others
 * joining through it, and waits until the ring has settled. */
static void ring_start(ring *r, int n) {
  node *first = node_add(r, NULL);
  uint64_t deadline = now_ms() + 5000;
  int i;

  node_start(first, NULL);
  if (!node_answers_by(first, deadline)) {
    fail_msg("%s does not answer after 5 s: %s", first->addr,
             dht_client_last_error(first->client));
  }
  for (i = 1; i < n; i++) {
    node_start(node_add(r, NULL), first);
  }
  wait_until(r, ring_settled, SETTLE_MS, "ring settled");
}

/* ---- keys ---------------------------------------------------------------- */

static const char *key_name(int i, char *buf, size_t len) {
  snprintf(buf, len, "key-%04d", i);
  return buf;
}

/* The index of key, or -1 for a key this test never writes. */
static int key_index(const uint8_t *key, size_t len) {
  size_t j;
  int i = 0;

  if (len != 8 || memcmp(key, "key-", 4) != 0) {
    return -1;
  }
  for (j = 4; j < len; j++) {
    if (key[j] < '0' || key[j] > '9') {
      return -1;
    }
    i = i * 10 + (key[j] - '0');
  }
  return i < KEYS ? i : -1;
}

/* The value generation gen writes under key i: different for every key and
 * every generation, and of varying length, so that a value served from
 * the wrong key, an old write or a cut copy does not pass for the right
 * one. */
static const char *value_of(int i, unsigned gen, char *buf, size_t len) {
  static const char filler[] = "abcdefghijklmnopqrstuvwxyz0123456789";

  snprintf(buf, len, "value-%d-gen-%u-%.*s", i, gen, i % 37, filler);
  return buf;
}

static void put_key(ring *r, dht_client *c, int i, unsigned gen) {
  char key[16], value[80];
  int rv;

  key_name(i, key, sizeof(key));
  value_of(i, gen, value, sizeof(value));
  rv = dht_client_put(c, key, strlen(key), value, strlen(value), CALL_MS);
  if (rv != 0) {
    fail_msg("put %s through %s: %s", key, dht_client_addr(c),
             dht_client_last_error(c));
  }
  r->keys[i] = KEY_WRITTEN;
  r->gen[i] = gen;
}

static void del_key(ring *r, dht_client *c, int i) {
  char key[16];
  int rv;

  key_name(i, key, sizeof(key));
  rv = dht_client_remove(c, key, strlen(key), CALL_MS);
  if (rv != 0) {
    fail_msg("del %s through %s: %s", key, dht_client_addr(c),
             dht_client_last_error(c));
  }
  r->keys[i] = KEY_DELETED;
}

/* Puts every key (generation 0) through node via, FILL_WINDOW PUTs in
 * flight at a time: the nodes' group commits then take many writes per
 * flush, which keeps a fill quick when the disk is busy. Every PUT must be
 * answered OK. */
static void ring_fill(ring *r, const node *via) {
  char key[16], value[80];
  dht_client *c = via->client;
  const dht_msg *reply;
  int sent = 0, acked = 0, rv;

  if (dht_client_connect(c, CALL_MS) != 0) {
    fail_msg("connect to %s: %s", via->addr, dht_client_last_error(c));
  }
  while (acked < KEYS) {
    while (sent < KEYS && sent - acked < FILL_WINDOW) {
      dht_msg req;
      memset(&req, 0, sizeof(req));
      req.type = DHT_MSG_PUT;
      req.key.p = (const uint8_t *)key_name(sent, key, sizeof(key));
      req.key.len = strlen(key);
      req.value.p = (const uint8_t *)value_of(sent, 0, value, sizeof(value));
      req.value.len = strlen(value);
      if (dht_client_send(c, &req, NULL) != 0) {
        fail_msg("put %s through %s: %s", key, via->addr,
                 dht_client_last_error(c));
      }
      sent++;
    }
    rv = dht_client_recv(c, &reply, CALL_MS);
    if (rv != 0) {
      fail_msg("a put through %s: %s", via->addr, dht_client_last_error(c));
    }
    if (reply->type != DHT_MSG_OK) {
      fail_msg("a put through %s: answered %s %s", via->addr,
               dht_msg_type_name(reply->type),
               reply->type == DHT_MSG_ERROR ? dht_errname(reply->error_code)
                                            : "");
    }
    acked++;
  }
  for (sent = 0; sent < KEYS; sent++) {
    r->keys[sent] = KEY_WRITTEN;
    r->gen[sent] = 0;
  }
}

/* scan_node's index of a record: its key's, or -1 (a problem) for a key
 * this test never writes. */
static int written_key_index(const ring *r, const node *d,
                             const dht_client_scan_item *it, problems *pr) {
  int i = key_index(it->key, it->key_len);

  (void)r;
  if (i < 0) {
    problem(pr, "%s holds '%.*s', a key this test never wrote", d->addr,
            (int)(it->key_len < 40 ? it->key_len : 40), (const char *)it->key);
  }
  return i;
}

/* True when every key whose write or delete was acknowledged is on its
 * owner and the owner's R - 1 successors, as a value or a tombstone as its
 * last OK says, with one version on all of them, and (exactly) on no other
 * node. */
static bool keys_placed(ring *r, bool exactly, char *why, size_t why_len) {
  key_copies *copies = calloc(KEYS, sizeof(*copies));
  node *order[NODES_MAX];
  bool holders[NODES_MAX];
  problems pr = {"", 0};
  char key[16];
  int n = ring_order(r, order), i, p;

  assert_non_null(copies);
  for (p = 0; p < n; p++) {
    scan_node(r, order[p], p, written_key_index, true, copies, &pr);
  }
  for (i = 0; i < KEYS; i++) {
    key_name(i, key, sizeof(key));
    key_holders(order, n, key, holders);
    for (p = 0; p < n; p++) {
      bool want = holders[p] && r->keys[i] != KEY_UNWRITTEN;
      if (want && !copies[i].held[p]) {
        problem(&pr, "%s lacks %s", order[p]->addr, key);
      } else if (!want && copies[i].held[p] && exactly) {
        problem(&pr, "%s holds %s, which is not %s", order[p]->addr, key,
                r->keys[i] == KEY_UNWRITTEN ? "written" : "in its range");
      }
    }
    if (copies[i].first_holder != NULL &&
        copies[i].tombstone != (r->keys[i] == KEY_DELETED)) {
      problem(&pr, "%s holds %s as a %s", copies[i].first_holder, key,
              copies[i].tombstone ? "tombstone" : "value");
    }
  }
  free(copies);
  return no_problems(&pr, true, why, why_len);
}

/* What an OK promises at once: the key's holders have the write. */
static bool keys_on_their_holders_at_least(ring *r, char *why,
                                           size_t why_len) {
  return keys_placed(r, false, why, why_len);
}

/* And once repair is done, no other node holds a copy: a node that took
 * one while its lists were behind hands it back or drops it. */
static bool keys_on_their_holders(ring *r, char *why, size_t why_len) {
  return keys_placed(r, true, why, why_len);
}

/* Where reads go: one client (whose node routes them) or a cluster client
 * (straight to the owners), and the MOVED answers those followed. */
typedef struct read_path {
  dht_client *c;
  dht_cluster *cl;
  unsigned redirects;
} read_path;

static int read_path_get(read_path *rd, const char *key, uint8_t **value,
                         size_t *len, int timeout_ms) {
  int rv;

  if (rd->c != NULL) {
    return dht_client_get(rd->c, key, strlen(key), value, len, timeout_ms);
  }
  rv = dht_cluster_get(rd->cl, key, strlen(key), value, len, timeout_ms);
  rd->redirects += dht_cluster_last_redirects(rd->cl);
  return rv;
}

static const char *read_path_error(const read_path *rd) {
  return rd->c != NULL ? dht_client_last_error(rd->c)
                       : dht_cluster_last_error(rd->cl);
}

/* Reads every key through rd with the given deadline: a written key must
 * give back exactly its last acknowledged value, any other NOT_FOUND.
 * Fails the test with the wrong answers (when says when they came);
 * returns the slowest get's time. */
static uint64_t reads_through(ring *r, read_path *rd, int timeout_ms,
                              const char *when) {
  char key[16], want[80], why[WHY_LEN];
  problems pr = {"", 0};
  uint64_t slowest_ms = 0;
  int i;

  for (i = 0; i < KEYS; i++) {
    uint64_t t0 = now_ms();
    uint8_t *value;
    size_t len;
    int rv;
    key_name(i, key, sizeof(key));
    value_of(i, r->gen[i], want, sizeof(want));
    rv = read_path_get(rd, key, &value, &len, timeout_ms);
    slowest_ms = now_ms() - t0 > slowest_ms ? now_ms() - t0 : slowest_ms;
    if (r->keys[i] != KEY_WRITTEN) {
      if (rv != DHT_ERR_NOT_FOUND) {
        problem(&pr, "get %s: %s, want NOT_FOUND", key,
                rv == 0 ? "a value" : read_path_error(rd));
      }
    } else if (rv != 0) {
      problem(&pr, "get %s: %s", key, read_path_error(rd));
    } else if (len != strlen(want) || memcmp(value, want, len) != 0) {
      problem(&pr, "get %s: '%.*s', want '%s'", key, (int)len,
              (const char *)value, want);
    }
    free(value);
  }
  if (!no_problems(&pr, true, why, sizeof(why))) {
    fail_msg("reads %s: %d wrong: %s", when, pr.n, why);
  }
  return slowest_ms;
}

/* reads_through one client. */
static uint64_t assert_reads(ring *r, dht_client *c, int timeout_ms) {
  char when[DHT_ADDR_LEN_MAX + 16];
  read_path rd = {c, NULL, 0};

  snprintf(when, sizeof(when), "through %s", dht_client_addr(c));
  return reads_through(r, &rd, timeout_ms, when);
}

/* ---- what a user sees ---------------------------------------------------- */

/* Appends to the string in buf, of len bytes in all, cutting what does
 * not fit. */
__attribute__((format(printf, 3, 4))) static void append(char *buf, size_t len,
                                                         const char *fmt, ...) {
  size_t o = strlen(buf);
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(buf + o, len - o, fmt, ap);
  va_end(ap);
}

/* Runs argv to the end (RUN_MS at most, then it is killed and the test
 * fails), capturing its output in files of r's directory. */
static void run(const ring *r, char *const argv[], run_result *res) {
  if (!run_within(r, argv, RUN_MS, res)) {
    fail_msg("%s %s did not finish in %d s", argv[0], argv[1], RUN_MS / 1000);
  }
}

/* A word of a command line or of what it prints that names an address
 * only known when the test runs, such as "@NODE". */
typedef struct placeholder {
  const char *name;  /* "@NODE" */
  const char *value; /* "127.0.0.1:41234" */
} placeholder;

/* Copies text into out with each placeholder of ph (which ends with one
 * named NULL) replaced by its value. */
static void expand(const char *text, const placeholder *ph, char *out,
                   size_t len) {
  size_t o = 0;
  const placeholder *p;

  while (*text != '\0' && o + 1 < len) {
    for (p = ph; p->name != NULL; p++) {
      if (strncmp(text, p->name, strlen(p->name)) == 0) {
        break;
      }
    }
    if (p->name != NULL) {
      snprintf(out + o, len - o, "%s", p->value);
      o += strlen(out + o);
      text += strlen(p->name);
    } else {
      out[o++] = *text++;
    }
  }
  out[o < len ? o : len - 1] = '\0';
}

static int lines(const char *text) {
  int n = 0;

  for (; *text != '\0'; text++) {
    n += *text == '\n';
  }
  return n;
}

/* One command line and everything its user sees. */
typedef struct user_case {
  const char *args[12]; /* after the program, placeholders allowed */
  int status;           /* its exit status */
  const char *out;      /* all of stdout */
  const char *err;      /* all of stderr */
} user_case;

/* Runs each case with program and fails on the first whose exit
 * status, stdout or stderr is not what it says. Whatever the case says,
 * stderr must be one line at most: both programs promise that. */
static void run_cases(const ring *r, const char *program,
                      const user_case *cases, size_t n_cases,
                      const placeholder *ph) {
  char args[12][100], out[2048], err[2048], line[600];
  run_result *res = malloc(sizeof(*res));
  char *argv[14];
  size_t k;
  int a;

  assert_non_null(res);
  for (k = 0; k < n_cases; k++) {
    const user_case *c = &cases[k];
    snprintf(line, sizeof(line), "%s", program);
    argv[0] = (char *)program;
    for (a = 0; c->args[a] != NULL; a++) {
      expand(c->args[a], ph, args[a], sizeof(args[a]));
      argv[a + 1] = args[a];
      append(line, sizeof(line), " %s", args[a]);
    }
    argv[a + 1] = NULL;
    expand(c->out, ph, out, sizeof(out));
    expand(c->err, ph, err, sizeof(err));
    run(r, argv, res);
    if (res->status != c->status || !glob_matches(res->out, out) ||
        !glob_matches(res->err, err) || lines(res->err) > 1) {
      /* Printed whole: a failure message would be cut short. */
      print_error("`%s`\n--- exit %d, stdout:\n%s\n--- stderr:\n%s\n"
                  "--- want exit %d, stdout:\n%s\n--- stderr:\n%s\n---\n",
                  line, res->status, res->out, res->err, c->status, out, err);
      fail_msg("`%s` is not what its user must see (above)", line);
    }
  }
  free(res);
}

/* What `dht ring` prints when asked through start: every running node from
 * start on, in ring order, with its predecessor, the number of records it
 * should hold and nothing left to repair or hand off, then the verdict. */
static void ring_listing(ring *r, const node *start, char *out, size_t len) {
  char short_id[DHT_ID_SHORT_LEN], key[16];
  node *order[NODES_MAX];
  int n = ring_order(r, order), records[NODES_MAX] = {0}, i, p, first = 0;
  bool holders[NODES_MAX];

  for (i = 0; i < KEYS; i++) {
    key_holders(order, n, key_name(i, key, sizeof(key)), holders);
    for (p = 0; p < n; p++) {
      records[p] += holders[p] && r->keys[i] != KEY_UNWRITTEN;
    }
  }
  while (order[first] != start) {
    first++;
  }
  snprintf(out, len, "%-8s  %-21s  %-21s  %-8s  %s\n", "ID", "ADDRESS",
           "PREDECESSOR", "KEYS", "TO REPAIR / HAND OFF");
  for (i = 0; i < n; i++) {
    p = (first + i) % n;
    append(out, len, "%-8s  %-21s  %-21s  %-8d  none\n",
           dht_id_short(&order[p]->id, short_id), order[p]->addr,
           n > 1 ? order[(p + n - 1) % n]->addr : "(none)", records[p]);
  }
  append(out, len, "ring: %d node%s, closed\n", n, n == 1 ? "" : "s");
}

/* `dht ring` through start prints exactly the listing, and nothing on
 * stderr. */
static void assert_ring_listing(ring *r, const node *start) {
  char *argv[] = {(char *)dht_path, "--node", (char *)start->addr, "ring",
                  NULL};
  run_result *res = malloc(sizeof(*res));
  char want[4096];

  assert_non_null(res);
  ring_listing(r, start, want, sizeof(want));
  run(r, argv, res);
  assert_string_equal(res->err, "");
  assert_string_equal(res->out, want);
  assert_int_equal(res->status, 0);
  free(res);
}

/* ---- the ring's life ----------------------------------------------------- */

static void test_ring_of_8_converges(void **state) {
  ring *r = *state;
  uint64_t start = now_ms();

  ring_start(r, 8);
  print_message("ring of 8 settled in %llu ms\n",
                (unsigned long long)(now_ms() - start));
  assert_ring_listing(r, &r->nodes[5]);
}

static void test_ring_of_one_is_whole(void **state) {
  ring *r = *state;

  /* A node alone has no predecessor; the walk must call that whole. */
  ring_start(r, 1);
  assert_ring_listing(r, &r->nodes[0]);
}

/* An OK promises that the owner and every live replica have the write, so
 * right after the last OK, before any repair could have run, each key is
 * on its holders (and, once repair settles, on them only); overwrites and
 * deletes through another node replace it there at once, and every node
 * reads back what was written last: new values, old ones, NOT_FOUND for
 * the deleted. */
static void
test_acknowledged_writes_are_on_exactly_their_holders(void **state) {
  ring *r = *state;
  int i;

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  wait_until(r, keys_on_their_holders_at_least, 0, "every put on its holders");
  wait_until(r, keys_on_their_holders, REPAIR_MS, "no put elsewhere");
  for (i = 0; i < KEYS; i += 3) {
    if (i % 2 == 0) {
      put_key(r, r->nodes[5].client, i, 1);
    } else {
      del_key(r, r->nodes[5].client, i);
    }
  }
  wait_until(r, keys_on_their_holders_at_least, 0,
             "every overwrite on its holders");
  wait_until(r, keys_on_their_holders, REPAIR_MS, "no overwrite elsewhere");
  for (i = 0; i < r->n_nodes; i++) {
    assert_reads(r, r->nodes[i].client, CALL_MS);
  }
  assert_ring_listing(r, &r->nodes[0]);
}

static void test_ninth_node_takes_exactly_its_range(void **state) {
  ring *r = *state;
  node *ninth;

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  ninth = node_add(r, NULL);
  node_start(ninth, &r->nodes[3]);
  wait_until(r, ring_settled, SETTLE_MS, "ring of 9 settled");
  /* Its successor handed it the keys of its range, and only those; the
   * nodes that are no longer holders dropped theirs. */
  wait_until(r, keys_on_their_holders, REPAIR_MS, "keys moved to the ninth");
  assert_reads(r, ninth->client, CALL_MS);
}

static void test_sigterm_hands_keys_on(void **state) {
  ring *r = *state;

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  node_stop(&r->nodes[2], SIGTERM, STOP_MS);
  wait_until(r, ring_settled, SETTLE_MS, "ring of 7 settled");
  wait_until(r, keys_on_their_holders, REPAIR_MS, "keys handed on");
  assert_reads(r, r->nodes[0].client, CALL_MS);
}

/* Each node in turn is killed with SIGKILL. Before any repair every key is
 * still served right through the others (by a replica when the dead node
 * owned it). While it is down, some keys are overwritten or deleted.
 * Restarted on its data directory, with its old copies of those keys, it
 * comes back holding exactly its keys again, in their latest versions: no
 * old value comes back. */
static void test_sigkill_any_node_then_restart(void **state) {
  ring *r = *state;
  int i, k;

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  for (i = 0; i < r->n_nodes; i++) {
    node *d = &r->nodes[i], *reader = &r->nodes[(i + 1) % r->n_nodes];
    node_stop(d, SIGKILL, STOP_MS);
    assert_reads(r, reader->client, CALL_MS);
    wait_until(r, ring_settled, SETTLE_MS, "ring closed over the dead node");
    for (k = i; k < KEYS; k += r->n_nodes) {
      if ((k / r->n_nodes) % 4 == 0) {
        del_key(r, reader->client, k);
      } else {
        put_key(r, reader->client, k, 1);
      }
    }
    node_start(d, reader);
    wait_until(r, ring_settled, SETTLE_MS, "ring settled with it back");
    wait_until(r, keys_on_their_holders, REPAIR_MS, "its keys repaired");
    assert_reads(r, d->client, CALL_MS);
  }
}

/* Two nodes die at once, ring neighbours included: every key stays readable
 * within a user's deadline (the client retrying on other nodes), and the
 * survivors restore R copies of exactly the right keys. */
static void test_sigkill_two_at_once_loses_nothing(void **state) {
  static const int pairs[][2] = {{0, 1}, {7, 8}, {14, 15}, {3, 10}};
  ring *r = *state;
  node *order[NODES_MAX];
  size_t k;

  ring_start(r, 16);
  ring_fill(r, &r->nodes[0]);
  assert_int_equal(ring_order(r, order), 16);
  for (k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
    node *a = order[pairs[k][0]], *b = order[pairs[k][1]];
    node *reader = order[(pairs[k][1] + 2) % 16];
    uint64_t t0, slowest_ms;
    dht_client *c;

    assert_int_equal(kill(a->pid, SIGKILL), 0);
    assert_int_equal(kill(b->pid, SIGKILL), 0);
    t0 = now_ms();
    node_wait_exit(a, 128 + SIGKILL, 5000);
    node_wait_exit(b, 128 + SIGKILL, 5000);
    c = retrying_client(r, reader);
    slowest_ms = assert_reads(r, c, GET_DEADLINE_MS);
    dht_client_del(c);
    wait_until(r, ring_settled, SETTLE_MS, "ring closed over both");
    wait_until(r, keys_on_their_holders, REPAIR_MS, "R copies restored");
    print_message("killed %s and %s (%s): every key read, slowest get %llu "
                  "ms; every key on its holders %llu ms after the kill\n",
                  a->addr, b->addr,
                  pairs[k][1] - pairs[k][0] == 1 ? "neighbours" : "apart",
                  (unsigned long long)slowest_ms,
                  (unsigned long long)(now_ms() - t0));
    node_start(a, reader);
    node_start(b, reader);
    wait_until(r, ring_settled, SETTLE_MS, "ring settled with both back");
    wait_until(r, keys_on_their_holders, REPAIR_MS, "keys back on them");
  }
}

/* Writes generation gen of every key through the cluster client cl;
 * returns the MOVED answers the writes followed. */
static unsigned cluster_puts(ring *r, dht_cluster *cl, unsigned gen) {
  unsigned redirects = 0;
  int i;

  for (i = 0; i < KEYS; i++) {
    char key[16], value[80];
    key_name(i, key, sizeof(key));
    value_of(i, gen, value, sizeof(value));
    if (dht_cluster_put(cl, key, strlen(key), value, strlen(value),
                        CALL_MS) != 0) {
      fail_msg("put %s: %s", key, dht_cluster_last_error(cl));
    }
    redirects += dht_cluster_last_redirects(cl);
    r->keys[i] = KEY_WRITTEN;
    r->gen[i] = gen;
  }
  return redirects;
}

/* Reads every key through the cluster client cl as assert_reads does;
 * returns the MOVED answers the reads followed. */
static unsigned cluster_reads(ring *r, dht_cluster *cl, const char *when) {
  read_path rd = {NULL, cl, 0};

  reads_through(r, &rd, CALL_MS, when);
  return rd.redirects;
}

/* A client that knows the ring sends each request straight to its owner:
 * once it knows every node, no request is redirected. A node that joins
 * after it learned the ring is found through MOVED answers to writes of
 * its keys (reads of them are served by its successor, a replica that
 * holds them); a node that dies leaves the client's map, and its keys are
 * read from the next nodes. Every read gives the last value written. */
static void test_cluster_client_goes_straight_to_owners(void **state) {
  ring *r = *state;
  dht_cluster *cl;
  unsigned redirects;

  ring_start(r, 8);
  assert_int_equal(dht_cluster_new(&cl, r->nodes[0].addr,
                                   &ring_client_settings),
                   0);
  dht_cluster_set_retry(cl, true);
  assert_int_equal(dht_cluster_learn(cl, CALL_MS), 0);
  cluster_puts(r, cl, 0);
  assert_int_equal(dht_cluster_size(cl), 8); /* learned the rest by MOVED */
  assert_int_equal(cluster_puts(r, cl, 1), 0);
  assert_int_equal(cluster_reads(r, cl, "with the whole ring known"), 0);
  wait_until(r, keys_on_their_holders_at_least, 0, "every put on its holders");

  node_start(node_add(r, NULL), &r->nodes[3]);
  wait_until(r, ring_settled, SETTLE_MS, "ring of 9 settled");
  wait_until(r, keys_on_their_holders, REPAIR_MS, "keys moved to the ninth");
  redirects = cluster_puts(r, cl, 2);
  print_message("writes after a ninth node joined: %u redirects\n",
                redirects);
  assert_true(redirects > 0);
  assert_int_equal(dht_cluster_size(cl), 9);
  assert_int_equal(cluster_puts(r, cl, 3), 0);
  assert_int_equal(cluster_reads(r, cl, "with the ninth node known"), 0);

  node_stop(&r->nodes[5], SIGKILL, STOP_MS);
  cluster_reads(r, cl, "right after a node was killed");
  assert_int_equal(dht_cluster_size(cl), 8);
  dht_cluster_del(cl);
}

/* What dht check prints first about a healthy ring of 8. */
#define CHECK_RING_OK                                                          \
  "check from @NODE: 8 nodes\n"                                                \
  "  walk             ok: every node answers, the walk closes\n"               \
  "  id order         ok\n"                                                    \
  "  pred/succ        ok\n"                                                    \
  "  successor lists  ok\n"                                                    \
  "  pred lists       ok\n"

/* Runs dht wait --ring --nodes n from d: every node ready (its lists,
 * deep predecessor entries included, rebuilt from its neighbours). */
static void wait_ring_ready(ring *r, const node *d, int n) {
  char count[8];
  char *wait_argv[] = {(char *)dht_path, "--node", (char *)d->addr,
                       "--timeout-ms", "30000", "wait", "--ring", "--nodes",
                       count, NULL};
  run_result *res = malloc(sizeof(*res));

  assert_non_null(res);
  snprintf(count, sizeof(count), "%d", n);
  assert_true(run_within(r, wait_argv, 40000, res));
  if (res->status != 0) {
    fail_msg("dht wait: exit %d: %s", res->status, res->err);
  }
  free(res);
}

/* dht check really counts copies: it passes on a healthy ring, and told
 * to expect 2 or 4 copies of each key, it finds 3 and says what is wrong
 * with every key. */
static void test_dht_check_counts_copies(void **state) {
  static const user_case cases[] = {
      {{"--node", "@NODE", "check", NULL},
       0,
       CHECK_RING_OK "  replicas         R=3: 1000 keys, 3000 copies, ok\n"
                     "  losses           ok: none\n"
                     "check: ok in * ms\n",
       ""},
      {{"--node", "@NODE", "check", "--replicas", "2", NULL},
       1,
       CHECK_RING_OK "  replicas         R=2: 1000 keys, 3000 copies; "
                     "FAILED: 0 under-replicated, 1000 misplaced, 0 "
                     "divergent\n"
                     "  losses           ok: none\n"
                     "check: FAILED, 1000 problems in * ms\n"
                     "problems (first 20 of 1000):\n*",
       "dht: check failed: 1000 problems (listed above)\n"},
      {{"--node", "@NODE", "check", "--replicas", "4", NULL},
       1,
       CHECK_RING_OK "  replicas         R=4: 1000 keys, 3000 copies; "
                     "FAILED: 1000 under-replicated, 0 misplaced, 0 "
                     "divergent\n"
                     "  losses           ok: none\n"
                     "check: FAILED, 1000 problems in * ms\n"
                     "problems (first 20 of 1000):\n*",
       "dht: check failed: 1000 problems (listed above)\n"},
  };
  ring *r = *state;
  placeholder ph[2] = {{"@NODE", NULL}, {NULL, NULL}};

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  /* ring_start waits for first successors only; check reads every list
   * to its depth (a deep predecessor entry once lagged behind here). */
  wait_ring_ready(r, &r->nodes[0], 8);
  ph[0].value = r->nodes[0].addr;
  run_cases(r, dht_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
}

/* Runs wait_ring_ready from d, then dht check, which must pass at once:
 * ready promises what check verifies. */
static void check_right_after_ready(ring *r, const node *d, int n) {
  char *check_argv[] = {(char *)dht_path, "--node", (char *)d->addr, "check",
                        NULL};
  run_result *res = malloc(sizeof(*res));

  assert_non_null(res);
  wait_ring_ready(r, d, n);
  assert_true(run_within(r, check_argv, 30000, res));
  if (res->status != 0) {
    fail_msg("dht check right after dht wait: exit %d:\n%s", res->status,
             res->out);
  }
  free(res);
}

/* Ready means a dht check passes (docs/DESIGN.md, "Ready"): once dht wait
 * --ring says so, on a ring just built and filled, and on one that has
 * just lost a node holding keys (its ranges take new replicas, which are
 * not ready until they hold them). */
static void test_ready_means_check_passes(void **state) {
  ring *r = *state;

  ring_start(r, 6);
  ring_fill(r, &r->nodes[0]);
  check_right_after_ready(r, &r->nodes[0], 6);
  node_stop(&r->nodes[3], SIGKILL, 5000);
  check_right_after_ready(r, &r->nodes[0], 5);
}

/* dht_on with --timeout-ms 1000 (the wait says its own), which must end. */
static void run_dht_on(ring *r, const node *d, const char *const *args,
                       run_result *res) {
  assert_true(dht_on(r, d, 1000, args, res));
}

/* Lines of text that contain what. */
static int lines_with(const char *text, const char *what) {
  int n = 0;

  for (text = strstr(text, what); text != NULL; text = strstr(text + 1, what)) {
    n++;
  }
  return n;
}

/*
 * dht explain on a healthy ring: the owner and its two successors hold the
 * newest version (exit 0), and dht ring shows nothing left to repair. With
 * one of the key's replicas paused (SIGSTOP), explain exits 2 and names
 * it, as a holder that does not answer or a peer the owner found dead;
 * once it runs again, every holder has the newest version again.
 */
static void test_explain_says_where_copies_are(void **state) {
  static const char *const explain[] = {"explain", "k-explained", NULL};
  static const char *const ring_cmd[] = {"ring", NULL};
  static const char *const wait[] = {"wait", "--ring", "--nodes", "5", NULL};
  run_result *res = malloc(sizeof(*res));
  bool holders[NODES_MAX], named = false;
  node *order[NODES_MAX], *paused = NULL;
  ring *r = *state;
  uint64_t deadline;
  int n, p;

  assert_non_null(res);
  ring_start(r, 5);
  assert_int_equal(dht_client_put(r->nodes[0].client, "k-explained", 11, "v",
                                  1, CALL_MS),
                   0);
  assert_true(dht_on(r, &r->nodes[0], 30000, wait, res));
  assert_int_equal(res->status, 0);
  run_dht_on(r, &r->nodes[0], explain, res);
  if (res->status != 0 ||
      !strstr(res->out, "verdict  all 3 holders have the newest version")) {
    fail_msg("explain on a ready ring: exit %d\n%s%s", res->status, res->out,
             res->err);
  }
  assert_int_equal(lines_with(res->out, "  newest  "), 3);
  run_dht_on(r, &r->nodes[0], ring_cmd, res);
  assert_int_equal(res->status, 0);
  assert_int_equal(lines_with(res->out, "  none\n"), 5);

  n = ring_order(r, order);
  key_holders(order, n, "k-explained", holders);
  for (p = 0; p < n && paused == NULL; p++) {
    if (holders[p] && p != owner_pos(order, n, "k-explained") &&
        order[p] != &r->nodes[0]) {
      paused = order[p];
    }
  }
  assert_non_null(paused);
  assert_int_equal(kill(paused->pid, SIGSTOP), 0);
  for (deadline = now_ms() + 10000; !named && now_ms() < deadline;) {
    run_dht_on(r, &r->nodes[0], explain, res);
    named = res->status == 2 && strstr(res->out, paused->addr) != NULL &&
            (strstr(res->out, "does not answer") != NULL ||
             strstr(res->out, "declared dead") != NULL);
  }
  assert_int_equal(kill(paused->pid, SIGCONT), 0);
  if (!named) {
    fail_msg("explain never named the paused holder %s:\n%s%s", paused->addr,
             res->out, res->err);
  }
  for (deadline = now_ms() + REPAIR_MS; now_ms() < deadline;) {
    run_dht_on(r, &r->nodes[0], explain, res);
    if (res->status == 0) {
      break;
    }
  }
  if (res->status != 0) {
    fail_msg("explain after the holder came back: exit %d\n%s%s",
             res->status, res->out, res->err);
  }
  free(res);
}

/* ---- mistakes ------------------------------------------------------------ */

/* Connects a raw TCP socket to d, for bytes no client would send. */
static int raw_connect(const node *d) { return connect_loopback(d->port); }

/* Garbage and an absurd frame length get the connection closed, and the
 * node goes on serving everyone else, its keys intact. */
static void test_bad_bytes_close_only_their_connection(void **state) {
  /* A 3-byte body that is not msgpack (0xc1 is reserved), eight times. */
  static const uint8_t junk[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1};
  /* A header that announces 2 GiB. */
  static const uint8_t huge[] = {0x80, 0, 0, 0};
  ring *r = *state;
  node *d;
  int fd, i;

  ring_start(r, 3);
  d = &r->nodes[0];
  ring_fill(r, d);
  fd = raw_connect(d);
  assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  /* An open ring closes after a few bad frames; a closed ring at the first
   * (it is no handshake), and then the next write may fail: EPIPE. */
  for (i = 1; i < 8 && write(fd, junk, sizeof(junk)) == (ssize_t)sizeof(junk);
       i++) {
  }
  assert_true(closed_by_peer(fd));
  close(fd);

  fd = raw_connect(d);
  assert_int_equal(write(fd, huge, sizeof(huge)), (ssize_t)sizeof(huge));
  assert_true(closed_by_peer(fd));
  close(fd);

  assert_int_equal(dht_client_ping(d->client, NULL, CALL_MS), 0);
  assert_reads(r, d->client, CALL_MS);
  wait_until(r, keys_on_their_holders_at_least, 0, "keys intact");
}

/* Each mistake a user can make with dht gets its own one-line message on
 * stderr and exit status 2 (1 for a key that is not there), and nothing
 * on stdout but --json's error object. */
static void test_cli_errors_are_one_exact_line(void **state) {
  static const user_case cases[] = {
      /* The way it should go, to know the node is there. */
      {{"--node", "@NODE", "put", "cli-key", "cli value", NULL}, 0, "", ""},
      {{"--node", "@NODE", "get", "cli-key", NULL}, 0, "cli value", ""},
      {{"--node", "@NODE", "del", "cli-key", NULL}, 0, "", ""},
      /* A missing key. */
      {{"--node", "@NODE", "get", "cli-key", NULL},
       1,
       "",
       "dht: key not found: cli-key\n"},
      {{"--node", "@NODE", "del", "no-such-key", NULL},
       1,
       "",
       "dht: key not found: no-such-key\n"},
      {{"--node", "@NODE", "--json", "get", "no-such-key", NULL},
       1,
       "{\"ok\":false,\"command\":\"get\",\"error\":\"NOT_FOUND\","
       "\"code\":-11,\"message\":\"key not found: no-such-key\"}\n",
       "dht: key not found: no-such-key\n"},
      /* Bad addresses, flags and arguments. */
      {{"--node", "no-port", "get", "k", NULL},
       2,
       "",
       "dht: --node: bad address 'no-port' (want HOST:PORT, [IPV6]:PORT or "
       "NAME:PORT, port 1..65535; several are separated by commas)\n"},
      {{"--node", "127.0.0.1:65536", "get", "k", NULL},
       2,
       "",
       "dht: --node: bad address '127.0.0.1:65536' (want HOST:PORT, "
       "[IPV6]:PORT or NAME:PORT, port 1..65535; several are separated by "
       "commas)\n"},
      {{"--bogus", "get", "k", NULL},
       2,
       "",
       "dht: unknown option '--bogus' (see dht --help)\n"},
      {{"--node", "@NODE", "get", "--bogus", "k", NULL},
       2,
       "",
       "dht: unknown option '--bogus' for get (see dht get --help)\n"},
      {{"--node", "@NODE", "--timeout-ms", "0", "get", "k", NULL},
       2,
       "",
       "dht: --timeout-ms: expected an integer in 1..3600000, got '0'\n"},
      {{"--node", "@NODE", "pot", "k", NULL},
       2,
       "",
       "dht: unknown command 'pot' (see dht --help)\n"},
      {{"--node", "@NODE", NULL},
       2,
       "",
       "dht: no command given (see dht --help)\n"},
      {{"--node", "@NODE", "get", NULL},
       2,
       "",
       "dht: get: missing KEY (see dht get --help)\n"},
      {{"--node", "@NODE", "put", "k", "v", "w", NULL},
       2,
       "",
       "dht: too many arguments for put (see dht put --help)\n"},
      {{"--node", "@NODE", "put", "", "v", NULL},
       2,
       "",
       "dht: key must be 1..1024 bytes, got 0\n"},
  };
  /* A node that is not there: said at once, retries or not, not at the
   * 5 s deadline. */
  static const user_case dead_cases[] = {
      {{"--no-retry", "--node", "@DEAD", "get", "k", NULL},
       2,
       "",
       "dht: cannot reach @DEAD: Connection refused\n"},
      {{"--node", "@DEAD", "get", "k", NULL},
       2,
       "",
       "dht: cannot reach @DEAD: Connection refused\n"},
      {{"--node", "@DEAD,@DEAD", "put", "k", "v", NULL},
       2,
       "",
       "dht: cannot reach @DEAD: Connection refused (and so did the 1 other "
       "address)\n"},
  };
  ring *r = *state;
  char dead[32];
  placeholder ph[3] = {{"@NODE", NULL}, {"@DEAD", dead}, {NULL, NULL}};
  uint64_t t0;

  ring_start(r, 1);
  ph[0].value = r->nodes[0].addr;
  loopback_addr(r, dead, sizeof(dead));
  run_cases(r, dht_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
  t0 = now_ms();
  run_cases(r, dht_path, dead_cases, sizeof(dead_cases) / sizeof(dead_cases[0]),
            ph);
  if (now_ms() - t0 > 2500) {
    fail_msg("refused connections took %llu ms to report",
             (unsigned long long)(now_ms() - t0));
  }
}

/* dhtd refuses to start with one line that says why, and exit status 1
 * when the world is in the way, 2 for a bad command line. */
static void test_daemon_refuses_clearly(void **state) {
  static const user_case cases[] = {
      {{"--listen", "@BUSY", "--memory", NULL},
       1,
       "",
       "dhtd: cannot listen on @BUSY: address already in use\n"},
      {{"--listen", "@FREE", "--memory", "--join", "@DEAD", "--timeout-ms",
        "100", NULL},
       1,
       "",
       "dhtd: cannot join the ring through @DEAD: no live node could serve "
       "the request\n"},
      {{"--listen", "@FREE", "--memory", "--successors", "0", NULL},
       2,
       "",
       "dhtd: --successors wants a number in 1..32, not '0'\n"},
      {{"--listen", "@FREE", "--memory", "--replicas", "6", NULL},
       2,
       "",
       "dhtd: --replicas 6 needs --successors 5 or more: replicas live on "
       "the successors\n"},
      {{"--listen", "@FREE", "--memory", "--bogus", "1", NULL},
       2,
       "",
       "dhtd: unknown option '--bogus' (see dhtd --help)\n"},
      /* Unknown even without a value to take. */
      {{"--listen", "@FREE", "--memory", "--bogus", NULL},
       2,
       "",
       "dhtd: unknown option '--bogus' (see dhtd --help)\n"},
      {{"--listen", "@FREE", "--memory", "--join", NULL},
       2,
       "",
       "dhtd: --join needs a value (see dhtd --help)\n"},
      {{"--memory", NULL},
       2,
       "",
       "dhtd: --listen HOST:PORT is required (see dhtd --help)\n"},
      {{"--listen", "@FREE", NULL},
       2,
       "",
       "dhtd: choose one of --data-dir DIR or --memory\n"},
      {{"--listen", "@FREE", "--memory", "--join", "nowhere", NULL},
       2,
       "",
       "dhtd: bad --join address 'nowhere' (want HOST:PORT)\n"},
  };
  ring *r = *state;
  char busy[32], free_addr[32], dead[32];
  placeholder ph[4] = {
      {"@BUSY", busy}, {"@FREE", free_addr}, {"@DEAD", dead}, {NULL, NULL}};
  int port, fd = bind_loopback(&port);

  /* Something else listens on @BUSY: a socket of the test's own. */
  assert_int_equal(listen(fd, 1), 0);
  snprintf(busy, sizeof(busy), "127.0.0.1:%d", port);
  loopback_addr(r, free_addr, sizeof(free_addr));
  loopback_addr(r, dead, sizeof(dead));
  run_cases(r, dhtd_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
  close(fd);
}

/* ---- addresses ----------------------------------------------------------- */

/* A socket of the test's own listening on ip:port. */
static int listen_on(const char *ip, int port) {
  struct sockaddr_in sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0), on = 1;

  assert_true(fd >= 0);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 4), 0);
  return fd;
}

/* A node listening on a specific address connects to its peers from that
 * address too, so that a firewall rule between two nodes' addresses cuts
 * both directions: the peer it joins through (a socket of the test's own
 * on another loopback address) sees the join come from it. */
static void test_connections_come_from_the_listen_address(void **state) {
  ring *r = *state;
  char peer_ip[INET_ADDRSTRLEN], addr[32], target_addr[32];
  struct sockaddr_in from;
  socklen_t from_len = sizeof(from);
  struct timeval tv = {5, 0};
  int port = free_port(r), fd, conn;
  node *d, *target;

  snprintf(addr, sizeof(addr), "127.0.3.1:%d", free_port(r));
  snprintf(target_addr, sizeof(target_addr), "127.0.3.2:%d", port);
  d = node_add(r, addr);
  target = node_add(r, target_addr);
  fd = listen_on("127.0.3.2", port);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  node_start(d, target);
  conn = accept(fd, (struct sockaddr *)&from, &from_len);
  assert_true(conn >= 0);
  assert_non_null(inet_ntop(AF_INET, &from.sin_addr, peer_ip,
                            sizeof(peer_ip)));
  assert_string_equal(peer_ip, "127.0.3.1");
  close(conn);
  close(fd);
}

/* A test with a fresh ring of its own (ring_util.h's plain fixtures). */
#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_fixture_new, ring_fixture_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_ring_of_8_converges),
      RING_TEST(test_ring_of_one_is_whole),
      RING_TEST(test_acknowledged_writes_are_on_exactly_their_holders),
      RING_TEST(test_ninth_node_takes_exactly_its_range),
      RING_TEST(test_sigterm_hands_keys_on),
      RING_TEST(test_sigkill_any_node_then_restart),
      RING_TEST(test_sigkill_two_at_once_loses_nothing),
      RING_TEST(test_cluster_client_goes_straight_to_owners),
      RING_TEST(test_dht_check_counts_copies),
      RING_TEST(test_ready_means_check_passes),
      RING_TEST(test_explain_says_where_copies_are),
      RING_TEST(test_bad_bytes_close_only_their_connection),
      RING_TEST(test_cli_errors_are_one_exact_line),
      RING_TEST(test_daemon_refuses_clearly),
      RING_TEST(test_connections_come_from_the_listen_address),
  };

  return ring_tests_main(argc, argv, "test_daemons", "/tmp/dht-test-XXXXXX",
                         tests, sizeof(tests) / sizeof(tests[0]));
}
