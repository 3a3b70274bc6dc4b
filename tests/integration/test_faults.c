/*
 * test_faults.c: real dhtd processes under the faults that "acknowledged
 * means acknowledged" must survive: nodes paused with SIGSTOP, a ring
 * cut in two by a network partition, a node whose wall clock is an hour
 * off, a node whose disk fills up, and three ring neighbours killed at
 * once.
 *
 * What the tests hold the daemons to is what a user would notice, in the
 * words of the guarantee (docs/DESIGN.md): if a write A of key k was
 * acknowledged before a write B of k was issued, then once the ring is
 * quiet every read of k returns B or a write issued after B, never A or
 * anything acknowledged before A. read_verdict() is that rule as a
 * checker: after quiet, a read may return any write of the key unless
 * that write (or, for NOT_FOUND, the key's absence before its first
 * write) was acknowledged before some acknowledged write of the key was
 * issued. Where the node must refuse, the test checks the CLI's exact
 * one-line error and exit status.
 *
 * "Quiet" is polled, never slept for: every node answers with the true
 * predecessor and successor lists, no node has a request pending, every
 * probe key is on exactly its holders with one version on all of them,
 * and, for the partition, no socket of any node still holds bytes the
 * network has not delivered.
 *
 * Each test builds its own ring in its own directory and removes what it
 * created, whether it passed or not: it kills the pids it started (and
 * only those), deletes its network namespaces, unmounts its tmpfs. Tests
 * that need root (namespaces, tmpfs) or libfaketime skip with a message
 * saying so where they are missing.
 *
 *   test_faults PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 *
 * PATTERN picks tests by name ('*' and '?' as wildcards), e.g.
 *   tests/test_faults dhtd/dhtd cli/dht '*pause*'
 * DHT_KEEP_TEST_DIR=1 keeps every node's log and data directory.
 * (`test_faults --clocks` prints its wall and monotonic clocks in ms: the
 * tests run it under libfaketime to see what the skewed daemon sees.)
 */
#define _GNU_SOURCE /* setns(), CLONE_NEWNET */

#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "dht/err.h"

#ifndef DHT_LIBFAKETIME
#define DHT_LIBFAKETIME "" /* not found when the build was configured */
#endif

#define NODES_MAX 10
#define PORTS_MAX 32
#define WHY_LEN 1400 /* a failed condition's reason (with ss -i detail) */
#define WAIT_POLL_MS 100
#define PROBES_MAX 64
#define WRITES_MAX 8        /* per probe key */
#define QUIET_MS 40000      /* for a ring to settle, drain and repair */
#define DRAIN_MS 130000     /* ... after a cut: TCP's longest backoff, 120 s */
#define RUN_MS 30000        /* one dht command */
#define KEY_LEN 32
#define VALUE_LEN 128
#define NETNS_PORT 7000     /* every node of a namespaced ring listens here */
#define SKEW_MS (3600 * 1000)
#define CLOCK_SLACK_MS 5000 /* what the clock probe may be off by */

/* One write of a probe key, as the client saw it. */
typedef struct write_rec {
  bool del;          /* a DEL; else a PUT of value gen */
  unsigned gen;      /* which value (PUTs), unique per key */
  uint64_t issued_ns; /* monotonic, just before it was sent */
  uint64_t acked_ns;  /* just after the OK came back, when acked */
  bool acked;        /* the client got OK */
} write_rec;

/* A key the test writes and checks, with every write it made. */
typedef struct probe {
  char key[KEY_LEN];
  write_rec w[WRITES_MAX];
  int n_w;
  bool lost_ok;      /* every holder was killed: not checked by SCAN */
} probe;

/* How a node is run. */
#define NODE_OWN_FIELDS                                                        \
  char netns[64];       /* the namespace it runs in; "" for the test's */      \
  const char *faketime; /* libfaketime's FAKETIME offset, or NULL */

/* The test's world beyond its nodes: its probe keys, and what it set up. */
#define RING_OWN_FIELDS                                                        \
  probe probes[PROBES_MAX];                                                    \
  int n_probes;                                                                \
  char netns_prefix[32]; /* "" unless the test made namespaces */              \
  int n_netns;           /* node namespaces made: PREFIX-n0 .. */              \
  bool hub_made;         /* PREFIX-hub exists */                               \
  int home_ns_fd;        /* the test's own namespace while in the hub; -1 */   \
  char tmpfs[PATH_LEN];  /* a mounted tmpfs, or "" */                          \
  pid_t load_pid;        /* a background dht load, or 0 */

#include "ring_util.h"

static char self_path[PATH_LEN];

/* ---- waits and shell commands -------------------------------------------- */

/* Fails the test unless cond holds at every poll for ms. */
static void holds_throughout(ring *r, ring_cond cond, int ms,
                             const char *what) {
  uint64_t start = now_ms();
  char why[WHY_LEN] = "";

  while (now_ms() - start < (uint64_t)ms) {
    if (!cond(r, why, sizeof(why))) {
      fail_msg("%s: broken %llu ms in: %s", what,
               (unsigned long long)(now_ms() - start), why);
    }
    pause_ms(100);
  }
}

/* Runs a shell command line; returns its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...) {
  char cmd[1024];
  va_list ap;
  int status;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  status = system(cmd);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* Runs a shell command line that must succeed. */
#define SH_OK(...)                                                             \
  do {                                                                         \
    if (sh(__VA_ARGS__) != 0) {                                                \
      fail_msg("setup command failed: " __VA_ARGS__);                          \
    }                                                                          \
  } while (0)

/* ---- nodes --------------------------------------------------------------- */

/* Starts d as node_start_under does: under `ip netns exec` when it has a
 * namespace, under libfaketime when it has an offset. */
static void node_start(node *d, const node *join) {
  char *in_netns[] = {"ip", "netns", "exec", d->netns, NULL};
  char *env[4] = {NULL};
  static char preload[PATH_LEN + 16], offset[32];

  if (d->faketime != NULL) {
    /* libfaketime preloaded into dhtd itself: the faketime wrapper forks,
     * and the test must signal dhtd's own pid. */
    snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", DHT_LIBFAKETIME);
    snprintf(offset, sizeof(offset), "FAKETIME=%s", d->faketime);
    env[0] = preload;
    env[1] = offset;
    env[2] = "FAKETIME_DONT_FAKE_MONOTONIC=1";
  }
  node_start_under(d, join, d->netns[0] != '\0' ? in_netns : NULL, env);
}

static bool node_running(const node *d) {
  return d->pid > 0 && waitpid(d->pid, NULL, WNOHANG) == 0;
}

/* ring_lists_right's check of order[p]'s lists: every entry, not only the
 * first R - 1, is the true one, as dht check looks at them all. */
static bool every_entry_right(node *const order[], int n, int p, int depth,
                              const dht_client_neighbors_result *nb, char *why,
                              size_t why_len) {
  int k;

  (void)depth;
  for (k = 0; k < n - 1 && ((size_t)k < nb->n_succs || (size_t)k < nb->n_preds);
       k++) {
    const char *succ = order[(p + 1 + k) % n]->addr;
    const char *prev = order[(p + n - 1 - k) % n]->addr;
    if ((size_t)k < nb->n_succs && strcmp(nb->succs[k].addr, succ) != 0) {
      snprintf(why, why_len, "%s lists successor %d as %s, not %s",
               order[p]->addr, k, nb->succs[k].addr, succ);
      return false;
    }
    if ((size_t)k < nb->n_preds && strcmp(nb->preds[k].addr, prev) != 0) {
      snprintf(why, why_len, "%s lists predecessor %d as %s, not %s",
               order[p]->addr, k, nb->preds[k].addr, prev);
      return false;
    }
  }
  return true;
}

/* True when every running node has the true predecessor, lists at least
 * as many successors and predecessors as replication needs, and lists
 * each of them right. */
static bool ring_settled(ring *r, char *why, size_t why_len) {
  return ring_lists_right(r, every_entry_right, why, why_len);
}

/* Starts n nodes at addrs (NULL: loopback ports) in namespaces netns
 * (NULL: the test's own), the first a new ring and the others joining it,
 * and waits until the ring has settled. */
static void ring_start_at(ring *r, int n, char addrs[][40],
                          char netns[][64]) {
  uint64_t deadline = now_ms() + 5000;
  node *first;
  int i;

  for (i = 0; i < n; i++) {
    node *d = node_add(r, addrs != NULL ? addrs[i] : NULL);
    snprintf(d->netns, sizeof(d->netns), "%s", netns != NULL ? netns[i] : "");
  }
  first = &r->nodes[r->n_nodes - n];
  node_start(first, NULL);
  if (!node_answers_by(first, deadline)) {
    fail_msg("%s does not answer after 5 s: %s", first->addr,
             dht_client_last_error(first->client));
  }
  for (i = 1; i < n; i++) {
    node_start(first + i, first);
  }
  wait_until(r, ring_settled, SETTLE_MS, "ring settled");
}

/* Adds n nodes on loopback without starting them (so that a test can set
 * one up first); ring_start_added starts them. */
static void ring_add(ring *r, int n) {
  int i;

  for (i = 0; i < n; i++) {
    node_add(r, NULL);
  }
}

static void ring_start_added(ring *r) {
  uint64_t deadline = now_ms() + 5000;
  node *first = &r->nodes[0];
  int i;

  node_start(first, NULL);
  if (!node_answers_by(first, deadline)) {
    fail_msg("%s does not answer after 5 s (see %s)", first->addr,
             first->log);
  }
  for (i = 1; i < r->n_nodes; i++) {
    node_start(&r->nodes[i], first);
  }
  wait_until(r, ring_settled, SETTLE_MS, "ring settled");
}

/* ---- probe keys and the rule --------------------------------------------- */

/* Adds up to want probe keys ("probe-N") whose owner in order[0..n) is at
 * one of the positions owners[0..n_owners), taking the first names that
 * fit, round-robin over the owners. */
static void probes_owned_by(ring *r, node *const order[], int n,
                            const int owners[], int n_owners, int want) {
  int taken[NODES_MAX] = {0}, per = (want + n_owners - 1) / n_owners;
  int i, k, added = 0;
  char key[KEY_LEN];

  for (i = 0; added < want && i < 100000; i++) {
    int p;
    snprintf(key, sizeof(key), "probe-%d", i);
    p = owner_pos(order, n, key);
    for (k = 0; k < n_owners; k++) {
      if (owners[k] == p && taken[k] < per) {
        assert_true(r->n_probes < PROBES_MAX);
        memset(&r->probes[r->n_probes], 0, sizeof(probe));
        snprintf(r->probes[r->n_probes].key, KEY_LEN, "%s", key);
        r->n_probes++;
        taken[k]++;
        added++;
      }
    }
  }
  assert_int_equal(added, want);
}

/* The value generation gen of a probe key puts: the key's name in it, so
 * that a value served for the wrong key does not pass. */
static void value_of(const probe *pr, unsigned gen, char *buf, size_t len) {
  snprintf(buf, len, "%s=gen%u", pr->key, gen);
}

/* The generation a value of pr holds, or -1 when it is not one of its. */
static long gen_of(const probe *pr, const uint8_t *v, size_t len) {
  size_t head = strlen(pr->key) + 4;
  char buf[VALUE_LEN];
  long gen = 0;
  size_t i;

  if (len <= head || len >= sizeof(buf)) {
    return -1;
  }
  memcpy(buf, v, len);
  buf[len] = '\0';
  if (strncmp(buf, pr->key, strlen(pr->key)) != 0 ||
      strncmp(buf + strlen(pr->key), "=gen", 4) != 0) {
    return -1;
  }
  for (i = head; i < len; i++) {
    if (buf[i] < '0' || buf[i] > '9') {
      return -1;
    }
    gen = gen * 10 + (buf[i] - '0');
  }
  return gen;
}

/* Puts (gen >= 0) or deletes (gen < 0) pr's key through c with timeout_ms,
 * recording when it was issued and whether and when it was acknowledged.
 * Returns the call's result (the error text is the client's). */
static int probe_write(probe *pr, dht_client *c, int gen, int timeout_ms) {
  char value[VALUE_LEN];
  write_rec *w;
  int rv;

  assert_true(pr->n_w < WRITES_MAX);
  w = &pr->w[pr->n_w++];
  w->del = gen < 0;
  w->gen = gen < 0 ? 0 : (unsigned)gen;
  w->issued_ns = mono_ns();
  if (w->del) {
    rv = dht_client_remove(c, pr->key, strlen(pr->key), timeout_ms);
  } else {
    value_of(pr, w->gen, value, sizeof(value));
    rv = dht_client_put(c, pr->key, strlen(pr->key), value, strlen(value),
                        timeout_ms);
  }
  w->acked = rv == 0;
  w->acked_ns = mono_ns();
  return rv;
}

/* A write that must be acknowledged. */
static void probe_write_ok(probe *pr, dht_client *c, int gen) {
  if (probe_write(pr, c, gen, CALL_MS) != 0) {
    fail_msg("%s %s through %s: %s", gen < 0 ? "del" : "put", pr->key,
             dht_client_current_addr(c), dht_client_last_error(c));
  }
}

/*
 * The guarantee as a checker, for one read of pr after quiet: found with
 * value generation gen, or NOT_FOUND. A read may return a write unless
 * that write was acknowledged before some acknowledged write of the key
 * was issued (then it is an "A" of the guarantee, and that later write a
 * "B" it must not win against). NOT_FOUND stands for any delete of the
 * key, or for its absence before its first write, which counts as
 * acknowledged before everything. A write never acknowledged may or may
 * not have been applied, so it is never wrong to read it.
 * Returns NULL when the read is allowed, else what a user would call it:
 * "lost" (an acknowledged write missing), "resurrected" (a value where
 * only a delete may be read), "older" (any other value that may not win)
 * or "garbled" (a value this test never wrote for the key).
 */
static const char *read_verdict(const probe *pr, bool found, long gen) {
  uint64_t last_issue = 0; /* the latest issue of an acknowledged write */
  bool any_acked = false;
  const write_rec *read = NULL;
  int i;

  for (i = 0; i < pr->n_w; i++) {
    if (pr->w[i].acked) {
      any_acked = true;
      last_issue = pr->w[i].issued_ns > last_issue ? pr->w[i].issued_ns
                                                   : last_issue;
    }
  }
  if (!found) {
    for (i = 0; i < pr->n_w; i++) {
      const write_rec *w = &pr->w[i];
      if (w->del && (!w->acked || w->acked_ns >= last_issue)) {
        return NULL;
      }
    }
    return any_acked ? "lost" : NULL;
  }
  for (i = 0; i < pr->n_w; i++) {
    if (!pr->w[i].del && gen >= 0 && pr->w[i].gen == (unsigned)gen) {
      read = &pr->w[i];
    }
  }
  if (read == NULL) {
    return "garbled";
  }
  if (!read->acked || read->acked_ns >= last_issue) {
    return NULL;
  }
  /* A value where the key should read as deleted is a delete undone. */
  return read_verdict(pr, false, -1) == NULL ? "resurrected" : "older";
}

/* What pr's writes were, for a failure message: "put gen0 ok, del -, ...". */
static void describe_writes(const probe *pr, char *out, size_t len) {
  size_t o = 0;
  int i;

  out[0] = '\0';
  for (i = 0; i < pr->n_w && o < len; i++) {
    const write_rec *w = &pr->w[i];
    int k = w->del ? snprintf(out + o, len - o, "%sdel %s", i ? ", " : "",
                              w->acked ? "ok" : "unacknowledged")
                   : snprintf(out + o, len - o, "%sput gen%u %s", i ? ", " : "",
                              w->gen, w->acked ? "ok" : "unacknowledged");
    o += k > 0 ? (size_t)k : 0;
  }
}

/* Reads every probe key through every running node once (no retries:
 * the ring is quiet) and fails the test on the first read the guarantee
 * forbids, saying how many there were. */
static void assert_reads_allowed(ring *r, const char *when) {
  char writes[300], why[WHY_LEN + 400];
  problems pr = {"", 0};
  int i, k;

  for (k = 0; k < r->n_nodes; k++) {
    node *d = &r->nodes[k];
    if (d->pid == 0) {
      continue;
    }
    for (i = 0; i < r->n_probes; i++) {
      probe *p = &r->probes[i];
      const char *verdict;
      uint8_t *value = NULL;
      size_t len = 0;
      int rv = dht_client_get(d->client, p->key, strlen(p->key), &value, &len,
                              CALL_MS);
      if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
        problem(&pr, "get %s through %s: %s", p->key, d->addr,
                dht_client_last_error(d->client));
        continue;
      }
      verdict = read_verdict(p, rv == 0, rv == 0 ? gen_of(p, value, len) : -1);
      if (verdict != NULL) {
        describe_writes(p, writes, sizeof(writes));
        problem(&pr, "%s: get %s through %s gave %s%.*s (writes: %s)",
                verdict, p->key, d->addr, rv == 0 ? "" : "NOT_FOUND",
                rv == 0 ? (int)len : 0, rv == 0 ? (const char *)value : "",
                writes);
      }
      free(value);
    }
  }
  if (!no_problems(&pr, false, why, sizeof(why))) {
    fail_msg("%s: %d reads the guarantee forbids; first: %s", when, pr.n, why);
  }
}

/* ---- quiet --------------------------------------------------------------- */

/* scan_node's index of a record: its probe's, or -1 for any other key
 * (such as dht load's). */
static int probe_record_index(const ring *r, const node *d,
                              const dht_client_scan_item *it, problems *pr) {
  int i;

  (void)d;
  (void)pr;
  for (i = 0; i < r->n_probes; i++) {
    if (strlen(r->probes[i].key) == it->key_len &&
        memcmp(r->probes[i].key, it->key, it->key_len) == 0) {
      return i;
    }
  }
  return -1;
}

/* True when every probe key the test wrote is held by exactly its owner and
 * the owner's R - 1 successors among the running nodes, with one version
 * on all of them (keys whose every holder was killed excepted). */
static bool probes_on_holders(ring *r, char *why, size_t why_len) {
  key_copies copies[PROBES_MAX];
  node *order[NODES_MAX];
  bool holders[NODES_MAX];
  problems pr = {"", 0};
  int n = ring_order(r, order), i, p;

  memset(copies, 0, sizeof(copies));
  for (p = 0; p < n; p++) {
    scan_node(r, order[p], p, probe_record_index, false, copies, &pr);
  }
  for (i = 0; i < r->n_probes; i++) {
    if (r->probes[i].n_w == 0 || r->probes[i].lost_ok) {
      continue;
    }
    key_holders(order, n, r->probes[i].key, holders);
    for (p = 0; p < n; p++) {
      if (holders[p] && !copies[i].held[p]) {
        problem(&pr, "%s lacks %s", order[p]->addr, r->probes[i].key);
      } else if (!holders[p] && copies[i].held[p]) {
        problem(&pr, "%s holds %s, not in its range", order[p]->addr,
                r->probes[i].key);
      }
    }
  }
  return no_problems(&pr, false, why, why_len);
}

/* True when no running node has a request to a peer pending. */
static bool nothing_pending(ring *r, char *why, size_t why_len) {
  dht_client_stats_result *st = malloc(sizeof(*st));
  bool ok = true;
  uint64_t pending;
  int i;

  assert_non_null(st);
  for (i = 0; i < r->n_nodes && ok; i++) {
    node *d = &r->nodes[i];
    if (d->pid == 0) {
      continue;
    }
    if (dht_client_stats(d->client, st, 1000) != 0) {
      snprintf(why, why_len, "%s does not answer STATS: %s", d->addr,
               dht_client_last_error(d->client));
      ok = false;
    } else if (dht_client_stats_counter(st, "pending", &pending) == 0 &&
               pending > 0) {
      snprintf(why, why_len, "%s has %" PRIu64 " requests pending", d->addr,
               pending);
      ok = false;
    }
  }
  free(st);
  return ok;
}

/* Quiet, as far as the nodes can tell: settled, nothing pending, every
 * probe key on its holders with one version. */
static bool ring_quiet(ring *r, char *why, size_t why_len) {
  return ring_settled(r, why, why_len) && nothing_pending(r, why, why_len) &&
         probes_on_holders(r, why, why_len);
}

/* ---- what a user sees ---------------------------------------------------- */

/* Runs the CLI with the arguments up to a NULL, to the end (RUN_MS at
 * most, then it is killed and the test fails). */
__attribute__((sentinel)) static void run_cli(const ring *r, run_result *res,
                                              ...) {
  char *argv[16];
  va_list ap;
  int n = 0;

  argv[n++] = (char *)dht_path;
  va_start(ap, res);
  while ((argv[n++] = va_arg(ap, char *)) != NULL) {
    assert_true(n < 16);
  }
  va_end(ap);
  if (!run_within(r, argv, RUN_MS, res)) {
    fail_msg("dht %s did not finish in %d ms", argv[1], RUN_MS);
  }
}

/* Lines of text that contain word. */
static int lines_with(const char *text, const char *word) {
  int n = 0;

  while (*text != '\0') {
    const char *end = strchr(text, '\n');
    size_t len = end != NULL ? (size_t)(end - text) : strlen(text);
    const char *hit = strstr(text, word);
    n += hit != NULL && hit < text + len;
    text += len + (end != NULL);
  }
  return n;
}

/* Fails unless the last run exited with status and its stderr is exactly
 * the one line err_pattern ('*' wildcards). */
static void assert_run(const run_result *res, const char *what, int status,
                       const char *err_pattern) {
  if (res->status != status || !glob_matches(res->err, err_pattern)) {
    print_error("--- %s: exit %d, stdout:\n%s\n--- stderr:\n%s\n--- want exit "
                "%d, stderr:\n%s---\n",
                what, res->status, res->out, res->err, status, err_pattern);
    fail_msg("%s is not what its user must see (above)", what);
  }
}

/* Starts `dht load` in the background against every running node: traffic
 * while a fault lasts, and its own final pass over the keys it wrote. */
static void load_start(ring *r, int duration_s) {
  static char nodes[NODES_MAX * 41], duration[16], out_path[PATH_LEN];
  char *argv[] = {(char *)dht_path, "--node", nodes, "load",
                  "--rate", "100", "--duration", duration,
                  "--keys", "200", "--connections", "8",
                  "--prefix", "load-", "--quiet-s", "30", NULL};
  size_t o = 0;
  int i;

  for (i = 0; i < r->n_nodes; i++) {
    if (r->nodes[i].pid != 0) {
      o += (size_t)snprintf(nodes + o, sizeof(nodes) - o, "%s%s", o ? "," : "",
                            r->nodes[i].addr);
    }
  }
  snprintf(duration, sizeof(duration), "%d", duration_s);
  snprintf(out_path, sizeof(out_path), "%s/load.txt", r->dir);
  r->load_pid = spawn(argv, NULL, out_path, out_path);
}

/* Waits for the background load to end and returns what it printed. */
static void load_wait(ring *r, char *out, size_t len) {
  char path[PATH_LEN];
  int status = wait_exit(r->load_pid, 120000);

  if (status < 0) {
    fail_msg("dht load did not finish within 120 s");
  }
  r->load_pid = 0;
  snprintf(path, sizeof(path), "%s/load.txt", r->dir);
  read_file(path, out, len);
}

/* ---- pauses -------------------------------------------------------------- */

#define PAUSE_MS 8000   /* how long the paused nodes stay stopped, at least */
#define PAUSE_PUT_MS 3000 /* a put while they are: the first attempt on a
                             paused node gets half of it */

/*
 * Pauses the n_paused nodes at ring positions paused[] of a ring of 6 with
 * SIGSTOP for PAUSE_MS or more under a background load. Meanwhile, for
 * each probe key (owned by a paused node and written once before), a put
 * whose first attempt goes to the key's paused owner (the client library
 * then retries through another node) and, once that is acknowledged, a
 * newer put through a running node. After SIGCONT and quiet, every node
 * must give the newest acknowledged value of every probe key, the same
 * version on every holder: the first put's request, which the paused
 * node finds in its socket when it wakes, must not win. The load's own
 * final pass must find none of its writes lost, older or resurrected.
 */
static void pause_test(ring *r, const int paused[], int n_paused) {
  char load_out[8192];
  node *order[NODES_MAX], *writer;
  uint64_t stopped;
  int i, k;

  ring_start_at(r, 6, NULL, NULL);
  assert_int_equal(ring_order(r, order), 6);
  probes_owned_by(r, order, 6, paused, n_paused, 4);
  writer = order[(paused[n_paused - 1] + 3) % 6]; /* never paused */
  for (i = 0; i < r->n_probes; i++) {
    probe_write_ok(&r->probes[i], writer->client, 1);
  }
  load_start(r, 20);
  pause_ms(1000); /* the load under way before the pause */

  for (k = 0; k < n_paused; k++) {
    assert_int_equal(kill(order[paused[k]]->pid, SIGSTOP), 0);
  }
  stopped = now_ms();
  for (i = 0; i < r->n_probes; i++) {
    probe *pr = &r->probes[i];
    node *owner = order[owner_pos(order, 6, pr->key)];
    dht_client *c = retrying_client(r, owner);
    if (probe_write(pr, c, 2, PAUSE_PUT_MS) != 0) {
      fail_msg("put %s while its owner %s is paused, first through it: %s",
               pr->key, owner->addr, dht_client_last_error(c));
    }
    dht_client_del(c);
    c = retrying_client(r, writer);
    probe_write_ok(pr, c, 3);
    dht_client_del(c);
  }
  if (now_ms() - stopped < PAUSE_MS) {
    pause_ms((int)(PAUSE_MS - (now_ms() - stopped))); /* the fault itself */
  }
  for (k = 0; k < n_paused; k++) {
    assert_int_equal(kill(order[paused[k]]->pid, SIGCONT), 0);
  }
  print_message("paused %d node%s for %llu ms\n", n_paused,
                n_paused > 1 ? "s" : "",
                (unsigned long long)(now_ms() - stopped));
  wait_until(r, ring_quiet, QUIET_MS, "quiet after SIGCONT");
  assert_reads_allowed(r, "after the pause");
  load_wait(r, load_out, sizeof(load_out));
  if (strstr(load_out, "\nlost acknowledged writes: 0\n") == NULL ||
      strstr(load_out, "\nolder: 0\n") == NULL ||
      strstr(load_out, "\nresurrected: 0\n") == NULL) {
    print_error("--- dht load:\n%s---\n", load_out);
    fail_msg("dht load's final pass found acknowledged writes lost, older "
             "or resurrected (above)");
  }
}

static void test_pause_one_node(void **state) {
  static const int paused[] = {2};
  pause_test(*state, paused, 1);
}

static void test_pause_two_adjacent_nodes(void **state) {
  static const int paused[] = {2, 3};
  pause_test(*state, paused, 2);
}

/* ---- a partition --------------------------------------------------------- */

#define CUT_NODES 6
#define CUT_MS 8000 /* how long the ring stays cut, at least */

static bool is_root(void) { return geteuid() == 0; }

/* Enters namespace name (a file under /run/netns). */
static void enter_netns(const char *name) {
  char path[PATH_LEN];
  int fd;

  snprintf(path, sizeof(path), "/run/netns/%s", name);
  fd = open(path, O_RDONLY | O_CLOEXEC);
  assert_true(fd >= 0);
  assert_int_equal(setns(fd, CLONE_NEWNET), 0);
  close(fd);
}

/*
 * Builds CUT_NODES namespaces PREFIX-n<i>, each with eth0 at 10.99.<i>.2,
 * and a hub namespace PREFIX-hub that routes between them (h<i> at
 * 10.99.<i>.1), and moves the test itself into the hub: it reaches every
 * node directly, however the nodes are cut from each other. Nothing is
 * added to the test's own namespace.
 */
static void netns_build(ring *r, char addrs[][40], char names[][64]) {
  const char *pre = r->netns_prefix;
  char hub[64];
  int i;

  snprintf(r->netns_prefix, sizeof(r->netns_prefix), "dhtf%d",
           (int)getpid());
  SH_OK("ip netns add %s-hub", pre);
  r->hub_made = true;
  SH_OK("ip -n %s-hub link set lo up && "
        "ip netns exec %s-hub sysctl -qw net.ipv4.ip_forward=1",
        pre, pre);
  for (i = 0; i < CUT_NODES; i++) {
    SH_OK("ip netns add %s-n%d", pre, i);
    r->n_netns = i + 1;
    SH_OK("ip link add h%d netns %s-hub type veth peer name eth0 netns %s-n%d "
          "&& ip -n %s-hub addr add 10.99.%d.1/24 dev h%d "
          "&& ip -n %s-hub link set h%d up "
          "&& ip -n %s-n%d addr add 10.99.%d.2/24 dev eth0 "
          "&& ip -n %s-n%d link set eth0 up && ip -n %s-n%d link set lo up "
          "&& ip -n %s-n%d route add default via 10.99.%d.1",
          i, pre, pre, i, pre, i, i, pre, i, pre, i, i, pre, i, pre, i, pre, i,
          i);
    snprintf(addrs[i], 40, "10.99.%d.2:%d", i, NETNS_PORT);
    snprintf(names[i], 64, "%s-n%d", pre, i);
  }
  r->home_ns_fd = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
  assert_true(r->home_ns_fd >= 0);
  snprintf(hub, sizeof(hub), "%s-hub", pre);
  enter_netns(hub);
}

/* Cuts (add true) or heals the links between the nodes of side a and
 * side b: the hub drops, silently, every packet from one to the other, as
 * a broken network would; packets to and from the test pass. */
static void netns_cut(ring *r, node *const a[], int n_a, node *const b[],
                      int n_b, bool add) {
  char ha[sizeof(a[0]->addr)], hb[sizeof(b[0]->addr)];
  int i, j;

  for (i = 0; i < n_a; i++) {
    for (j = 0; j < n_b; j++) {
      snprintf(ha, sizeof(ha), "%s", a[i]->addr);
      snprintf(hb, sizeof(hb), "%s", b[j]->addr);
      *strchr(ha, ':') = '\0';
      *strchr(hb, ':') = '\0';
      SH_OK("ip -n %s-hub rule %s from %s to %s blackhole && "
            "ip -n %s-hub rule %s from %s to %s blackhole",
            r->netns_prefix, add ? "add" : "del", ha, hb, r->netns_prefix,
            add ? "add" : "del", hb, ha);
    }
  }
}

/* Whether a socket that holds unacknowledged bytes is still behind the
 * cut: its retransmission timer has retransmitted (TCP backs off up to
 * 120 s), or nothing has been acknowledged for a second. A busy link
 * always holds a few bytes in flight, but when its last acknowledgement is
 * fresh and nothing is being retransmitted, everything it sent before (the
 * cut's bytes included: acknowledgements are cumulative) has arrived.
 * line is ss's line, info the -i line after it. */
static bool socket_behind(const char *line, const char *info) {
  const char *t = strstr(line, "timer:("), *a = strstr(info, "lastack:");
  int retrans = 0, last_ack_ms = -1;

  if (t != NULL) {
    (void)sscanf(t, "timer:(%*[^,],%*[^,],%d)", &retrans);
  }
  if (a != NULL) {
    (void)sscanf(a, "lastack:%d", &last_ack_ms);
  }
  return retrans > 0 || last_ack_ms < 0 || last_ack_ms >= 1000;
}

/* True when no socket of any node still holds bytes from the cut that its
 * peer has not acknowledged (socket_behind): nothing sent during the cut is
 * still on its way. */
static bool network_drained(ring *r, char *why, size_t why_len) {
  char cmd[200], line[512], held[512], first[1100] = "";
  int i;

  for (i = 0; i < r->n_netns; i++) {
    FILE *f;
    long queued = 0, q = 0;
    bool pending = false;
    /* -o -i: the retransmission timer, and on the line after each socket
     * TCP's own state (rto, last send and ack, ...). */
    snprintf(cmd, sizeof(cmd), "ip netns exec %s-n%d ss -Htnoi 2>/dev/null",
             r->netns_prefix, i);
    f = popen(cmd, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL) {
      line[strcspn(line, "\n")] = '\0';
      if (line[0] == ' ' || line[0] == '\t') {
        if (pending && socket_behind(held, line)) {
          if (queued == 0) {
            snprintf(first, sizeof(first), "%s |%.500s", held, line);
          }
          queued += q;
        }
        pending = false;
        continue;
      }
      /* State Recv-Q Send-Q Local Peer [timer] */
      pending = sscanf(line, "%*s %*d %ld", &q) == 1 && q > 0;
      if (pending) {
        snprintf(held, sizeof(held), "%s", line);
      }
    }
    pclose(f);
    if (queued > 0) {
      snprintf(why, why_len, "%s-n%d has %ld bytes not yet delivered (%s)",
               r->netns_prefix, i, queued, first);
      return false;
    }
  }
  return true;
}

static bool partition_quiet(ring *r, char *why, size_t why_len) {
  return network_drained(r, why, why_len) && ring_quiet(r, why, why_len);
}

/* One side of the cut writes: every probe key through node via (retrying
 * on the other nodes of its side only), each write issued after the one
 * before it ended. A write the side cannot complete yet stays
 * unacknowledged, and the guarantee lets it land or not. */
static void side_writes(ring *r, node *via, node *const side[], int n_side,
                        int gen) {
  dht_client *c = client_falling_back(via, side, n_side);
  int i;

  for (i = 0; i < r->n_probes; i++) {
    /* Every fourth key's second round is a delete. */
    probe_write(&r->probes[i], c, gen == 2 && i % 4 == 0 ? -1 : gen, 3000);
  }
  dht_client_del(c);
}

/*
 * A ring of 6 in network namespaces is cut into two arcs of 3. During the
 * cut, each probe key is written through side A (right after the cut,
 * while A still routes some of them to B), then through side B, then
 * through A again, each write issued after the one before it ended. Then
 * the cut heals. Once the ring is quiet (settled, nothing pending, every
 * byte sent during the cut delivered or given up, one version per key),
 * no read through any node may give a value that was acknowledged before
 * another acknowledged write was issued.
 */
static void test_partition_heals_to_newest(void **state) {
  static char addrs[CUT_NODES][40], names[CUT_NODES][64];
  ring *r = *state;
  node *order[NODES_MAX], *a[3], *b[3];
  uint64_t cut_at, took;
  int i, all[CUT_NODES];

  if (!is_root() || sh("command -v ip >/dev/null && command -v ss >/dev/null") !=
                        0) {
    print_message("skipped: needs root and iproute2 (ip, ss) for network "
                  "namespaces\n");
    skip();
  }
  netns_build(r, addrs, names);
  ring_start_at(r, CUT_NODES, addrs, names);
  assert_int_equal(ring_order(r, order), CUT_NODES);
  for (i = 0; i < CUT_NODES; i++) {
    all[i] = i;
  }
  probes_owned_by(r, order, CUT_NODES, all, CUT_NODES, 24);
  for (i = 0; i < 3; i++) {
    a[i] = order[i];
    b[i] = order[i + 3];
  }
  for (i = 0; i < r->n_probes; i++) {
    probe_write_ok(&r->probes[i], order[0]->client, 0);
  }
  wait_until(r, ring_quiet, QUIET_MS, "quiet before the cut");

  netns_cut(r, a, 3, b, 3, true);
  cut_at = now_ms();
  side_writes(r, a[1], a, 3, 1);
  side_writes(r, b[1], b, 3, 2);
  side_writes(r, a[2], a, 3, 3);
  if (now_ms() - cut_at < CUT_MS) {
    pause_ms((int)(CUT_MS - (now_ms() - cut_at))); /* the fault itself */
  }
  netns_cut(r, a, 3, b, 3, false);
  print_message("cut for %llu ms\n", (unsigned long long)(now_ms() - cut_at));
  /* A segment held by the cut goes at the sender's next retransmission,
   * which TCP backs off up to 120 s (Linux's TCP_RTO_MAX): the frames sent
   * early in the cut may take that long to arrive, and must arrive. */
  took = wait_until(r, partition_quiet, DRAIN_MS, "quiet after healing");
  print_message("quiet %llu ms after healing\n", (unsigned long long)took);
  assert_reads_allowed(r, "after the partition healed");
}

/* ---- clock skew ---------------------------------------------------------- */

/* Runs this program under libfaketime with offset and returns the wall and
 * monotonic clocks it saw minus the test's own, in ms. */
static void skewed_clocks(ring *r, const char *offset, int64_t *wall_diff,
                          int64_t *mono_diff) {
  char out_path[PATH_LEN], out[200], preload[PATH_LEN + 16], fake[32];
  char *argv[] = {self_path, "--clocks", NULL};
  char *env[] = {preload, fake, "FAKETIME_DONT_FAKE_MONOTONIC=1", NULL};
  struct timespec wall, mono;
  long long w = 0, m = 0;
  pid_t pid;

  snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", DHT_LIBFAKETIME);
  snprintf(fake, sizeof(fake), "FAKETIME=%s", offset);
  snprintf(out_path, sizeof(out_path), "%s/clocks.out", r->dir);
  unlink(out_path);
  clock_gettime(CLOCK_REALTIME, &wall);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  pid = spawn(argv, env, out_path, out_path);
  assert_int_equal(wait_exit(pid, 5000), 0);
  read_file(out_path, out, sizeof(out));
  assert_int_equal(sscanf(out, "%lld %lld", &w, &m), 2);
  *wall_diff = w - ((long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000);
  *mono_diff = m - ((long long)mono.tv_sec * 1000 + mono.tv_nsec / 1000000);
}

/* Fails unless d's process has libfaketime mapped and the same settings
 * shift a process's wall clock by skew_ms and leave its monotonic clock. */
static void assert_skewed(ring *r, const node *d, int64_t skew_ms) {
  char path[64], maps[1 << 16];
  int64_t wall_diff, mono_diff;
  FILE *f;
  size_t n;

  snprintf(path, sizeof(path), "/proc/%d/maps", (int)d->pid);
  f = fopen(path, "r");
  assert_non_null(f);
  n = fread(maps, 1, sizeof(maps) - 1, f);
  fclose(f);
  maps[n] = '\0';
  if (strstr(maps, "libfaketime") == NULL) {
    fail_msg("%s (pid %d) has not loaded %s", d->addr, (int)d->pid,
             DHT_LIBFAKETIME);
  }
  skewed_clocks(r, d->faketime, &wall_diff, &mono_diff);
  if (wall_diff < skew_ms - CLOCK_SLACK_MS ||
      wall_diff > skew_ms + CLOCK_SLACK_MS ||
      mono_diff < -CLOCK_SLACK_MS || mono_diff > CLOCK_SLACK_MS) {
    fail_msg("FAKETIME=%s shifts the wall clock by %lld ms and the monotonic "
             "clock by %lld ms; want %lld and 0",
             d->faketime, (long long)wall_diff, (long long)mono_diff,
             (long long)skew_ms);
  }
}

/* Puts (gen >= 0) or deletes pr's key with `dht --node via`, as a user
 * does, and requires it acknowledged. */
static void cli_write(ring *r, probe *pr, const node *via, int gen) {
  char value[VALUE_LEN], what[100];
  run_result *res = malloc(sizeof(*res));
  write_rec *w;

  assert_non_null(res);
  assert_true(pr->n_w < WRITES_MAX);
  w = &pr->w[pr->n_w++];
  w->del = gen < 0;
  w->gen = gen < 0 ? 0 : (unsigned)gen;
  value_of(pr, w->gen, value, sizeof(value));
  w->issued_ns = mono_ns();
  if (w->del) {
    run_cli(r, res, "--node", via->addr, "del", pr->key, NULL);
  } else {
    run_cli(r, res, "--node", via->addr, "put", pr->key, value, NULL);
  }
  w->acked_ns = mono_ns();
  w->acked = res->status == 0;
  snprintf(what, sizeof(what), "dht --node %s %s %s", via->addr,
           w->del ? "del" : "put", pr->key);
  assert_run(res, what, 0, "");
  free(res);
}

/* True when `dht check` through a running node passes. */
static bool check_passes(ring *r, char *why, size_t why_len) {
  run_result *res = malloc(sizeof(*res));
  node *order[NODES_MAX];
  bool ok;

  assert_non_null(res);
  assert_true(ring_order(r, order) > 0);
  run_cli(r, res, "--node", order[0]->addr, "check", NULL);
  ok = res->status == 0;
  if (!ok) {
    snprintf(why, why_len, "dht check exits %d: %.400s", res->status,
             res->out);
  }
  free(res);
  return ok;
}

/* Polls `dht check` until it passes, then requires quiet and checks every
 * read. When the check does not pass in time, what a user reading the keys
 * sees is reported first, then the check's report. */
static void wait_check_passes(ring *r, const char *when) {
  uint64_t deadline = now_ms() + QUIET_MS;
  char why[WHY_LEN];

  while (!check_passes(r, why, sizeof(why))) {
    if (now_ms() >= deadline) {
      assert_reads_allowed(r, when);
      fail_msg("dht check %s: %s", when, why);
    }
    pause_ms(500);
  }
  wait_until(r, ring_quiet, QUIET_MS, when);
  assert_reads_allowed(r, when);
}

/* True once S's counters say its clock is behind its neighbours' by at
 * least behind_ms (it tells so, and judges stamps by their time). */
static bool clock_reported_behind(ring *r, const node *s, int64_t behind_ms) {
  dht_client_stats_result *st = malloc(sizeof(*st));
  uint64_t v = 0;
  bool ok;

  (void)r;
  assert_non_null(st);
  ok = dht_client_stats(s->client, st, 1000) == 0 &&
       dht_client_stats_counter(st, "clock_behind_ms", &v) == 0 &&
       (int64_t)v >= behind_ms;
  free(st);
  return ok;
}

/*
 * A ring of 6 whose node S runs with its wall clock skew_ms off (its
 * monotonic clock left alone, which the test verifies). Probe keys owned
 * by S and by its predecessor P are written through S and through others,
 * then half of them deleted and half overwritten, through S and through
 * others. With S ahead, every write must be acknowledged. With S behind,
 * S must say so in its counters (both its neighbours see its clock an
 * hour behind) before the writes, and then take them too, judging stamps
 * by the ring's time. Then P, the owner of the deleted
 * keys S holds copies of, is killed and S takes them over. Once `dht
 * check` passes (it must, within the deadline), no read may give back a
 * value the rule forbids: no acknowledged delete comes back.
 */
static void skew_test(ring *r, const char *offset, int64_t skew_ms) {
  node *order[NODES_MAX], *s, *p, *other;
  int owners[2], i, ps;

  if (DHT_LIBFAKETIME[0] == '\0' || access(DHT_LIBFAKETIME, R_OK) != 0) {
    print_message("skipped: no libfaketime at '%s' (apt-get install "
                  "faketime, then configure again)\n",
                  DHT_LIBFAKETIME);
    skip();
  }
  ring_add(r, 6);
  r->nodes[3].faketime = offset;
  ring_start_added(r);
  assert_skewed(r, &r->nodes[3], skew_ms);
  assert_int_equal(ring_order(r, order), 6);
  for (ps = 0; order[ps] != &r->nodes[3]; ps++) {
  }
  s = order[ps];
  p = order[(ps + 5) % 6];
  other = order[(ps + 3) % 6];
  owners[0] = ps;
  owners[1] = (ps + 5) % 6;
  probes_owned_by(r, order, 6, owners, 2, 16);
  if (skew_ms < 0) {
    uint64_t deadline = now_ms() + SETTLE_MS;
    while (!clock_reported_behind(r, s, -skew_ms - CLOCK_SLACK_MS)) {
      if (now_ms() >= deadline) {
        fail_msg("%s never reported its clock %lld ms behind", s->addr,
                 (long long)-skew_ms);
      }
      pause_ms(100);
    }
  }
  for (i = 0; i < 2 * r->n_probes; i++) {
    probe *pr = &r->probes[i % r->n_probes];
    bool second = i >= r->n_probes;
    /* The second round deletes every other key and overwrites the rest,
     * alternating S and another node as the entry point. */
    cli_write(r, pr, (i / 2) % 2 == 0 ? s : other,
              second && i % 2 == 0 ? -1 : second ? 2 : 1);
  }
  wait_check_passes(r, "after the writes");
  node_stop(p, SIGKILL, 5000);
  wait_until(r, ring_settled, SETTLE_MS, "ring closed over P");
  wait_check_passes(r, "after the owner of deleted keys was killed");
}

static void test_clock_ahead_one_hour(void **state) {
  skew_test(*state, "+1h", SKEW_MS);
}

static void test_clock_behind_one_hour(void **state) {
  skew_test(*state, "-1h", -SKEW_MS);
}

/* ---- a full disk --------------------------------------------------------- */

#define DISK_SMALL "3m"
#define DISK_LARGE "64m"
#define FILL_VALUE_LEN (64 * 1024)
#define FILL_PUTS_MAX 400

/* A key owned by order[pos] in a ring of n, with a name of its own. */
static void key_owned_by(node *const order[], int n, int pos,
                         const char *prefix, int *from, char *key,
                         size_t len) {
  do {
    snprintf(key, len, "%s-%d", prefix, (*from)++);
  } while (owner_pos(order, n, key) != pos);
}

/* A ring of 5 with one node F's data directory on a small tmpfs. F's keys
 * are written until its commits fail. Then, without a restart: writes of
 * F's keys are refused with the exact disk-full line, through F and
 * through another node; F still serves every key it acknowledged; no node
 * drops F from its lists; the rest of the ring takes writes; and once the
 * tmpfs has grown, F takes writes again. */
static void test_full_disk_refuses_writes_keeps_serving(void **state) {
  ring *r = *state;
  run_result *res = malloc(sizeof(*res));
  char *value = malloc(FILL_VALUE_LEN + 1), key[KEY_LEN], want[200];
  char acked[FILL_PUTS_MAX][KEY_LEN];
  node *order[NODES_MAX], *f, *other;
  int n_acked = 0, from = 0, i, fpos, rv;
  pid_t f_pid;
  uint64_t deadline;

  assert_non_null(res);
  assert_non_null(value);
  if (!is_root()) {
    print_message("skipped: needs root to mount a tmpfs\n");
    skip();
  }
  ring_add(r, 5);
  f = &r->nodes[2];
  snprintf(r->tmpfs, sizeof(r->tmpfs), "%s", f->dir);
  assert_int_equal(mkdir(f->dir, 0700), 0);
  if (mount("tmpfs", f->dir, "tmpfs", 0, "size=" DISK_SMALL) != 0) {
    r->tmpfs[0] = '\0';
    print_message("skipped: cannot mount a tmpfs: %s\n", strerror(errno));
    skip();
  }
  ring_start_added(r);
  f_pid = f->pid;
  assert_int_equal(ring_order(r, order), 5);
  for (fpos = 0; order[fpos] != f; fpos++) {
  }
  other = order[(fpos + 3) % 5]; /* not one of F's holders */
  memset(value, 'v', FILL_VALUE_LEN);
  value[FILL_VALUE_LEN] = '\0';

  for (rv = 0; rv == 0 && n_acked < FILL_PUTS_MAX;) {
    key_owned_by(order, 5, fpos, "fill", &from, key, sizeof(key));
    rv = dht_client_put(f->client, key, strlen(key), value, FILL_VALUE_LEN,
                        CALL_MS);
    if (rv == 0) {
      snprintf(acked[n_acked++], KEY_LEN, "%s", key);
    }
  }
  if (rv == 0) {
    fail_msg("%d puts of %d bytes fitted on a %s tmpfs", n_acked,
             FILL_VALUE_LEN, DISK_SMALL);
  }
  print_message("%d puts acknowledged before the disk was full\n", n_acked);

  /* Refused, exactly so, through F and through another node. */
  snprintf(want, sizeof(want), "dht: node %s: disk full: *\n", f->addr);
  key_owned_by(order, 5, fpos, "refused", &from, key, sizeof(key));
  run_cli(r, res, "--node", f->addr, "put", key, "small value", NULL);
  assert_run(res, "dht put through the full node", 2, want);
  run_cli(r, res, "--node", other->addr, "put", key, "small value", NULL);
  assert_run(res, "dht put through another node", 2, want);

  /* Still F's: every acknowledged key served, and every node still lists
   * it where it belongs. */
  for (i = 0; i < n_acked; i++) {
    uint8_t *got;
    size_t len;
    rv = dht_client_get(f->client, acked[i], strlen(acked[i]), &got, &len,
                        CALL_MS);
    if (rv != 0 || len != FILL_VALUE_LEN || memcmp(got, value, len) != 0) {
      fail_msg("get %s through the full node: %s", acked[i],
               rv != 0 ? dht_client_last_error(f->client) : "a wrong value");
    }
    free(got);
  }
  holds_throughout(r, ring_settled, 3000, "ring whole while F's disk is full");
  key_owned_by(order, 5, (fpos + 3) % 5, "elsewhere", &from, key, sizeof(key));
  run_cli(r, res, "--node", f->addr, "put", key, "small value", NULL);
  assert_run(res, "dht put of a key F does not hold", 0, "");

  /* Space back: F takes writes again, the same process. */
  assert_int_equal(mount("tmpfs", f->dir, "tmpfs", MS_REMOUNT,
                         "size=" DISK_LARGE),
                   0);
  key_owned_by(order, 5, fpos, "after", &from, key, sizeof(key));
  deadline = now_ms() + 10000;
  while (dht_client_put(f->client, key, strlen(key), "v", 1, 1000) != 0) {
    if (now_ms() >= deadline) {
      fail_msg("put %s through F 10 s after the disk grew: %s", key,
               dht_client_last_error(f->client));
    }
    pause_ms(200);
  }
  assert_true(node_running(f));
  assert_int_equal(f->pid, f_pid);
  free(value);
  free(res);
}

/* ---- a lost range -------------------------------------------------------- */

/* A ring of 8 with probe keys everywhere; three ring neighbours are killed
 * at once, so the keys the first of them owned have lost every copy (R =
 * 3). Once the rest is repaired: `dht check` names the lost range and
 * exits 1, again and again, until `dht check --ack-lost`, which names it,
 * acknowledges it and exits 0 (nothing else is wrong); then `dht check`
 * passes. A GET of a lost key says it is possibly lost. */
static void test_three_neighbours_killed_lose_a_range(void **state) {
  ring *r = *state;
  run_result *res = malloc(sizeof(*res));
  node *order[NODES_MAX], *survivor;
  int all[8], i, lost = -1;
  char want[200];

  assert_non_null(res);
  ring_start_at(r, 8, NULL, NULL);
  assert_int_equal(ring_order(r, order), 8);
  for (i = 0; i < 8; i++) {
    all[i] = i;
  }
  probes_owned_by(r, order, 8, all, 8, 48);
  for (i = 0; i < r->n_probes; i++) {
    probe_write_ok(&r->probes[i], order[0]->client, 0);
    /* Position 2 owns what is lost: its range does not wrap round zero. */
    if (owner_pos(order, 8, r->probes[i].key) == 2) {
      r->probes[i].lost_ok = true;
      lost = i;
    }
  }
  assert_true(lost >= 0);
  assert_int_equal(kill(order[2]->pid, SIGKILL), 0);
  assert_int_equal(kill(order[3]->pid, SIGKILL), 0);
  assert_int_equal(kill(order[4]->pid, SIGKILL), 0);
  for (i = 2; i <= 4; i++) {
    node_wait_exit(order[i], 128 + SIGKILL, 5000);
  }
  survivor = order[0];
  wait_until(r, ring_quiet, QUIET_MS, "the rest repaired");

  for (i = 0; i < 2; i++) {
    run_cli(r, res, "--node", survivor->addr, "check", NULL);
    assert_run(res, "dht check with a lost range", 1, "*");
    if (lines_with(res->out, "lost range") != 1) {
      print_error("--- dht check:\n%s---\n", res->out);
      fail_msg("dht check (run %d) names %d lost ranges, not 1", i + 1,
               lines_with(res->out, "lost range"));
    }
  }
  snprintf(want, sizeof(want), "dht: key possibly lost: %s (*)\n",
           r->probes[lost].key);
  run_cli(r, res, "--node", survivor->addr, "get", r->probes[lost].key, NULL);
  assert_run(res, "dht get of a lost key", 1, want);
  run_cli(r, res, "--node", survivor->addr, "check", "--ack-lost", NULL);
  assert_run(res, "dht check --ack-lost", 0, "");
  assert_int_equal(lines_with(res->out, "lost range"), 1);
  run_cli(r, res, "--node", survivor->addr, "check", NULL);
  assert_run(res, "dht check after --ack-lost", 0, "");
  assert_int_equal(lines_with(res->out, "lost range"), 0);
  free(res);
}

/* ---- fixtures ------------------------------------------------------------ */

/* Gives the test an empty world in a new directory of its own. */
static int ring_new(void **state) {
  ring *r = ring_make();

  if (r == NULL) {
    return -1;
  }
  r->home_ns_fd = -1;
  *state = r;
  return 0;
}

/* Undoes whatever the test did, passed or not: kills its pids (resuming
 * any it paused), leaves and deletes its namespaces, unmounts its tmpfs,
 * removes its directory. */
static int ring_del(void **state) {
  ring *r = *state;
  int i;

  if (r->load_pid > 0) {
    kill(r->load_pid, SIGKILL);
    wait_exit(r->load_pid, 5000);
  }
  ring_kill_nodes(r);
  if (r->home_ns_fd >= 0) {
    if (setns(r->home_ns_fd, CLONE_NEWNET) != 0) {
      perror("setns back to the test's namespace");
    }
    close(r->home_ns_fd);
  }
  for (i = 0; i < r->n_netns; i++) {
    sh("ip netns del %s-n%d", r->netns_prefix, i);
  }
  if (r->hub_made) {
    sh("ip netns del %s-hub", r->netns_prefix);
  }
  if (r->tmpfs[0] != '\0' && umount2(r->tmpfs, MNT_DETACH) != 0) {
    fprintf(stderr, "could not unmount %s: %s\n", r->tmpfs, strerror(errno));
  }
  ring_dir_remove(r);
  free(r);
  return 0;
}

#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_new, ring_del)

/* `test_faults --clocks`: this process's wall and monotonic clocks, ms. */
static int print_clocks(void) {
  struct timespec wall, mono;

  clock_gettime(CLOCK_REALTIME, &wall);
  clock_gettime(CLOCK_MONOTONIC, &mono);
  printf("%lld %lld\n",
         (long long)wall.tv_sec * 1000 + wall.tv_nsec / 1000000,
         (long long)mono.tv_sec * 1000 + mono.tv_nsec / 1000000);
  return 0;
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_pause_one_node),
      RING_TEST(test_pause_two_adjacent_nodes),
      RING_TEST(test_partition_heals_to_newest),
      RING_TEST(test_clock_ahead_one_hour),
      RING_TEST(test_clock_behind_one_hour),
      RING_TEST(test_full_disk_refuses_writes_keeps_serving),
      RING_TEST(test_three_neighbours_killed_lose_a_range),
  };
  ssize_t n;
  int failed;

  if (argc == 2 && strcmp(argv[1], "--clocks") == 0) {
    return print_clocks();
  }
  if (!ring_tests_args(argc, argv, "test_faults")) {
    return 2;
  }
  n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
  if (n <= 0) {
    perror("readlink /proc/self/exe");
    return 2;
  }
  self_path[n] = '\0';
  if (!ring_tests_begin("/tmp/dht-faults-XXXXXX")) {
    return 2;
  }
  failed = cmocka_run_group_tests(tests, NULL, NULL);
  ring_tests_end();
  return failed;
}
