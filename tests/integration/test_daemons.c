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

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dht/client.h"
#include "dht/err.h"
#include "dht/id.h"

#define NODES_MAX 16
#define PORTS_MAX 64 /* ports one test may take */
#define KEYS 1000
#define REPLICAS 3           /* dhtd's default */
#define CALL_MS 5000         /* one request of the test's own */
#define GET_DEADLINE_MS 1000 /* a user's get, retries included */
#define SETTLE_MS 30000      /* for a ring to settle after a change */
#define REPAIR_MS 15000      /* for the records to follow */
#define SCAN_PAGE_LEN 4096   /* a node's own cap on one SCAN reply */
#define FILL_WINDOW 64       /* PUTs in flight while a ring is filled */
#define DIR_LEN 240          /* a test's directory */
#define PATH_LEN 300         /* a file in it */
#define WHY_LEN 400

/* One dhtd. */
typedef struct node {
  pid_t pid;          /* 0 when not running */
  int port;           /* loopback port */
  char addr[32];      /* "127.0.0.1:port" */
  char dir[PATH_LEN]; /* data directory */
  char log[PATH_LEN]; /* stdout and stderr of the process */
  dht_id id;          /* hash of addr */
  dht_client *client; /* connection for the test's own requests */
} node;

/* What the last acknowledged write of a key did. */
typedef enum key_state { KEY_UNWRITTEN, KEY_WRITTEN, KEY_DELETED } key_state;

/* One test's ring and everything it has been told. */
typedef struct ring {
  char dir[DIR_LEN];     /* the test's own directory */
  node nodes[NODES_MAX]; /* in the order they were added */
  int n_nodes;           /* entries of nodes in use, running or not */
  int ports[PORTS_MAX];  /* every port handed out, never handed out twice */
  int n_ports;           /* entries of ports in use */
  key_state keys[KEYS];  /* per key: what its last OK was for */
  unsigned gen[KEYS];    /* per written key: value_of(i, gen[i]) was put */
} ring;

/* A condition on a ring: true when it holds; when not, why says why. */
typedef bool (*ring_cond)(ring *r, char *why, size_t why_len);

/* The problems a check found: how many, and the first one in words. */
typedef struct problems {
  char first[WHY_LEN];
  int n;
} problems;

static const char *dhtd_path;
static const char *dht_path;
static char base_dir[200]; /* holds one directory per test */

/* ---- processes and time -------------------------------------------------- */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

__attribute__((format(printf, 2, 3))) static void
problem(problems *p, const char *fmt, ...) {
  va_list ap;

  if (p->n++ == 0) {
    va_start(ap, fmt);
    vsnprintf(p->first, sizeof(p->first), fmt, ap);
    va_end(ap);
  }
}

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

/* Sums the problems up in why; true when there were none. */
static bool no_problems(const problems *p, char *why, size_t why_len) {
  if (p->n > 1) {
    snprintf(why, why_len, "%s (and %d more)", p->first, p->n - 1);
  } else if (p->n == 1) {
    snprintf(why, why_len, "%s", p->first);
  }
  return p->n == 0;
}

/* Polls cond every 50 ms until it holds, or fails the test with its last
 * reason once timeout_ms has passed. A timeout of 0 checks once: for what
 * must hold already. */
static void wait_until(ring *r, ring_cond cond, int timeout_ms,
                       const char *what) {
  uint64_t start = now_ms(), deadline = start + (uint64_t)timeout_ms;
  char why[WHY_LEN] = "";

  while (!cond(r, why, sizeof(why))) {
    if (now_ms() >= deadline) {
      fail_msg("%s: not so after %llu ms: %s", what,
               (unsigned long long)(now_ms() - start), why);
    }
    pause_ms(50);
  }
}

/* A TCP socket bound to a loopback port the kernel picked; *port gets it. */
static int bind_loopback(int *port) {
  struct sockaddr_in sa;
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

/* A loopback port that was free a moment ago and that this test has not
 * been handed before (the kernel may hand a closed port out again). */
static int free_port(ring *r) {
  int port, i;
  bool taken;

  assert_true(r->n_ports < PORTS_MAX);
  do {
    close(bind_loopback(&port));
    for (i = 0, taken = false; i < r->n_ports; i++) {
      taken = taken || r->ports[i] == port;
    }
  } while (taken);
  r->ports[r->n_ports++] = port;
  return port;
}

static void loopback_addr(ring *r, char *out, size_t len) {
  snprintf(out, len, "127.0.0.1:%d", free_port(r));
}

/* Runs argv with stdout appended to out_path and stderr to err_path (which
 * may be the same file); returns the pid. */
static pid_t spawn(char *const argv[], const char *out_path,
                   const char *err_path) {
  pid_t pid = fork();

  assert_true(pid >= 0);
  if (pid == 0) {
    int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int err = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (out >= 0 && err >= 0) {
      dup2(out, 1);
      dup2(err, 2);
      close(out);
      close(err);
    }
    execv(argv[0], argv);
    _exit(127);
  }
  return pid;
}

/* Waits for pid to exit; returns its exit status (128 + the signal that
 * killed it), or -1 when it is still running after timeout_ms. */
static int wait_exit(pid_t pid, int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  int status;

  for (;;) {
    pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (now_ms() > deadline) {
      return -1;
    }
    pause_ms(20);
  }
}

static void read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  size_t n = 0;

  if (f != NULL) {
    n = fread(buf, 1, len - 1, f);
    fclose(f);
  }
  buf[n] = '\0';
}

/* ---- nodes --------------------------------------------------------------- */

static node *node_add(ring *r) {
  char ring_dir[sizeof(r->dir)];
  node *d;

  assert_true(r->n_nodes < NODES_MAX);
  d = &r->nodes[r->n_nodes];
  memset(d, 0, sizeof(*d));
  d->port = free_port(r);
  /* A copy: gcc cannot tell that d's paths and the ring's do not overlap. */
  memcpy(ring_dir, r->dir, sizeof(ring_dir));
  snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%d", d->port);
  snprintf(d->dir, sizeof(d->dir), "%s/node%d", ring_dir, r->n_nodes);
  snprintf(d->log, sizeof(d->log), "%s/node%d.log", ring_dir, r->n_nodes);
  dht_id_hash(&d->id, d->addr, strlen(d->addr));
  assert_int_equal(dht_client_new(&d->client, d->addr, NULL), 0);
  r->n_nodes++;
  return d;
}

/* Starts node d on its data directory, joining through join (NULL: a new
 * ring), with timers shortened so that a ring settles in a second or two. */
static void node_start(node *d, const node *join) {
  char *argv[20];
  int n = 0;

  argv[n++] = (char *)dhtd_path;
  argv[n++] = "--listen";
  argv[n++] = d->addr;
  argv[n++] = "--data-dir";
  argv[n++] = d->dir;
  argv[n++] = "--stabilize-ms";
  argv[n++] = "100";
  argv[n++] = "--fix-fingers-ms";
  argv[n++] = "50";
  argv[n++] = "--ping-ms";
  argv[n++] = "200";
  argv[n++] = "--timeout-ms";
  argv[n++] = "200";
  argv[n++] = "--log-level";
  argv[n++] = "debug";
  if (join != NULL) {
    argv[n++] = "--join";
    argv[n++] = (char *)join->addr;
  }
  argv[n] = NULL;
  assert_int_equal(d->pid, 0);
  d->pid = spawn(argv, d->log, d->log);
}

/* Waits for d to exit with status want (128 + the signal for a kill). */
static void node_wait_exit(node *d, int want, int timeout_ms) {
  int status = wait_exit(d->pid, timeout_ms);

  if (status >= 0) {
    d->pid = 0; /* reaped: the pid may be anyone's now */
  }
  assert_int_equal(status, want);
}

/* Signals d and waits for the exit status that signal must give: 0 for a
 * graceful SIGTERM (the node leaves, handing its keys on), 128 + SIGKILL
 * for SIGKILL. */
static void node_stop(node *d, int sig) {
  assert_true(d->pid > 0);
  assert_int_equal(kill(d->pid, sig), 0);
  node_wait_exit(d, sig == SIGKILL ? 128 + SIGKILL : 0, 15000);
}

static bool node_answers(const node *d) {
  return dht_client_ping(d->client, NULL, 200) == 0;
}

/* The running nodes in ring order (by id); returns how many. */
static int ring_order(ring *r, node *order[NODES_MAX]) {
  int i, j, n = 0;

  for (i = 0; i < r->n_nodes; i++) {
    node *d = &r->nodes[i];
    if (d->pid == 0) {
      continue;
    }
    for (j = n; j > 0 && dht_id_cmp(&order[j - 1]->id, &d->id) > 0; j--) {
      order[j] = order[j - 1];
    }
    order[j] = d;
    n++;
  }
  return n;
}

/* How many nodes beyond itself a node must list either way: its R - 1
 * replicas, or every other node of a smaller ring. */
static int neighbour_depth(int n) {
  return n - 1 < REPLICAS - 1 ? n - 1 : REPLICAS - 1;
}

/* True when every running node has the true predecessor and the true
 * first successors and predecessors, as deep as replication needs: only
 * then do its writes reach the right replicas. */
static bool ring_settled(ring *r, char *why, size_t why_len) {
  dht_client_neighbors_result nb;
  node *order[NODES_MAX];
  int n = ring_order(r, order), depth = neighbour_depth(n), p, k;

  for (p = 0; p < n; p++) {
    const node *d = order[p], *pred = order[(p + n - 1) % n];
    if (dht_client_neighbors(d->client, &nb, 1000) != 0) {
      snprintf(why, why_len, "%s does not answer: %s", d->addr,
               dht_client_last_error(d->client));
      return false;
    }
    if (n > 1 && (!nb.has_pred || strcmp(nb.pred.addr, pred->addr) != 0)) {
      snprintf(why, why_len, "%s has predecessor %s, not %s", d->addr,
               nb.has_pred ? nb.pred.addr : "(none)", pred->addr);
      return false;
    }
    if (nb.n_succs < (size_t)depth || nb.n_preds < (size_t)depth) {
      snprintf(why, why_len, "%s lists %zu successors and %zu predecessors",
               d->addr, nb.n_succs, nb.n_preds);
      return false;
    }
    for (k = 0; k < depth; k++) {
      const char *succ = order[(p + 1 + k) % n]->addr;
      const char *prev = order[(p + n - 1 - k) % n]->addr;
      if (strcmp(nb.succs[k].addr, succ) != 0 ||
          strcmp(nb.preds[k].addr, prev) != 0) {
        snprintf(why, why_len,
                 "%s lists successor %d as %s and predecessor %d as %s, "
                 "not %s and %s",
                 d->addr, k, nb.succs[k].addr, k, nb.preds[k].addr, succ, prev);
        return false;
      }
    }
  }
  return true;
}

/* Adds n nodes and starts them, the first as a new ring and the others
 * joining through it, and waits until the ring has settled. */
static void ring_start(ring *r, int n) {
  node *first = node_add(r);
  uint64_t deadline = now_ms() + 5000;
  int i;

  node_start(first, NULL);
  while (!node_answers(first)) {
    if (now_ms() >= deadline) {
      fail_msg("%s does not answer after 5 s: %s", first->addr,
               dht_client_last_error(first->client));
    }
    pause_ms(50);
  }
  for (i = 1; i < n; i++) {
    node_start(node_add(r), first);
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

/* Which positions of order[0..n) hold key i: holders[p] is set for its
 * owner, the first node at or after the key's id, and the next R - 1. */
static void key_holders(node *const order[], int n, int i,
                        bool holders[NODES_MAX]) {
  char key[16];
  dht_id kid;
  int owner = 0, k;

  key_name(i, key, sizeof(key));
  dht_id_hash(&kid, key, strlen(key));
  while (owner < n && dht_id_cmp(&order[owner]->id, &kid) < 0) {
    owner++;
  }
  memset(holders, 0, NODES_MAX * sizeof(holders[0]));
  for (k = 0; k < n && k < REPLICAS; k++) {
    holders[(owner + k) % n] = true;
  }
}

/* What the scans of keys_on_their_holders have met of one key. */
typedef struct key_copies {
  bool held[NODES_MAX];     /* per ring position: it listed the key */
  const char *first_holder; /* the address of the first that did */
  bool tombstone;           /* ... and what it holds */
  dht_version version;
} key_copies;

/* Lists node d's records (SCAN, paged round the ring from the zero id) into
 * copies, with d at ring position p. */
static void scan_node(const node *d, int p, key_copies *copies, problems *pr) {
  char key[16];
  dht_client_scan_result page;
  dht_id from, prev;
  bool first = true, done = false;
  size_t j;

  memset(&from, 0, sizeof(from));
  memset(&prev, 0, sizeof(prev));
  while (!done) {
    if (dht_client_scan(d->client, &from, SCAN_PAGE_LEN, &page, CALL_MS) != 0) {
      problem(pr, "%s does not answer SCAN: %s", d->addr,
              dht_client_last_error(d->client));
      return;
    }
    for (j = 0; j < page.n_items; j++) {
      const dht_client_scan_item *it = &page.items[j];
      int i = key_index(it->key, it->key_len);
      key_copies *kc;
      /* Ids only grow from the zero id; one that does not has come round. */
      if (!first && dht_id_cmp(&it->key_id, &prev) <= 0) {
        done = true;
        break;
      }
      first = false;
      prev = it->key_id;
      if (i < 0) {
        problem(pr, "%s holds '%.*s', a key this test never wrote", d->addr,
                (int)(it->key_len < 40 ? it->key_len : 40),
                (const char *)it->key);
        continue;
      }
      kc = &copies[i];
      kc->held[p] = true;
      if (!it->has_version) {
        problem(pr, "%s holds %s without a version", d->addr,
                key_name(i, key, sizeof(key)));
      } else if (kc->first_holder == NULL) {
        kc->first_holder = d->addr;
        kc->tombstone = it->tombstone;
        kc->version = it->version;
      } else if (kc->tombstone != it->tombstone ||
                 dht_version_cmp(&kc->version, &it->version) != 0) {
        problem(pr, "%s: %s and %s hold different versions",
                key_name(i, key, sizeof(key)), kc->first_holder, d->addr);
      }
    }
    done = done || !page.more || page.n_items == 0;
    from = prev;
    dht_client_scan_result_free(&page);
  }
}

/* True when every running node holds exactly the records it should: each
 * key whose write or delete was acknowledged is on its owner and the
 * owner's R - 1 successors, as a value or a tombstone as its last OK says,
 * with one version on all of them, and on no other node. */
static bool keys_on_their_holders(ring *r, char *why, size_t why_len) {
  key_copies *copies = calloc(KEYS, sizeof(*copies));
  node *order[NODES_MAX];
  bool holders[NODES_MAX];
  problems pr = {"", 0};
  char key[16];
  int n = ring_order(r, order), i, p;

  assert_non_null(copies);
  for (p = 0; p < n; p++) {
    scan_node(order[p], p, copies, &pr);
  }
  for (i = 0; i < KEYS; i++) {
    key_name(i, key, sizeof(key));
    key_holders(order, n, i, holders);
    for (p = 0; p < n; p++) {
      bool want = holders[p] && r->keys[i] != KEY_UNWRITTEN;
      if (want && !copies[i].held[p]) {
        problem(&pr, "%s lacks %s", order[p]->addr, key);
      } else if (!want && copies[i].held[p]) {
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
  return no_problems(&pr, why, why_len);
}

/* Reads every key through c with the given deadline: a written key must
 * give back exactly its last acknowledged value, any other NOT_FOUND.
 * Fails the test with the first wrong answer; returns the slowest get's
 * time. */
static uint64_t assert_reads(ring *r, dht_client *c, int timeout_ms) {
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
    rv = dht_client_get(c, key, strlen(key), &value, &len, timeout_ms);
    slowest_ms = now_ms() - t0 > slowest_ms ? now_ms() - t0 : slowest_ms;
    if (r->keys[i] != KEY_WRITTEN) {
      if (rv != DHT_ERR_NOT_FOUND) {
        problem(&pr, "get %s: %s, want NOT_FOUND", key,
                rv == 0 ? "a value" : dht_client_last_error(c));
      }
    } else if (rv != 0) {
      problem(&pr, "get %s: %s", key, dht_client_last_error(c));
    } else if (len != strlen(want) || memcmp(value, want, len) != 0) {
      problem(&pr, "get %s: '%.*s', want '%s'", key, (int)len,
              (const char *)value, want);
    }
    free(value);
  }
  if (!no_problems(&pr, why, sizeof(why))) {
    fail_msg("reads through %s: %d wrong: %s", dht_client_addr(c), pr.n, why);
  }
  return slowest_ms;
}

/* ---- what a user sees ---------------------------------------------------- */

/* What a process that ran to the end left. */
typedef struct run_result {
  int status;      /* exit status, or 128 + signal */
  char out[16384]; /* its stdout */
  char err[8192];  /* its stderr */
} run_result;

/* Runs argv to the end (10 s at most, then it is killed and the test
 * fails), capturing its output in files of r's directory. */
static void run(const ring *r, char *const argv[], run_result *res) {
  char out_path[PATH_LEN], err_path[PATH_LEN];
  pid_t pid;

  snprintf(out_path, sizeof(out_path), "%s/run.out", r->dir);
  snprintf(err_path, sizeof(err_path), "%s/run.err", r->dir);
  unlink(out_path);
  unlink(err_path);
  pid = spawn(argv, out_path, err_path);
  res->status = wait_exit(pid, 10000);
  if (res->status < 0) {
    kill(pid, SIGKILL);
    wait_exit(pid, 5000);
    fail_msg("%s %s did not finish in 10 s", argv[0], argv[1]);
  }
  read_file(out_path, res->out, sizeof(res->out));
  read_file(err_path, res->err, sizeof(res->err));
}

/* Runs the CLI with the arguments up to a NULL. */
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
  run(r, argv, res);
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

/* Drops dhtd's log lines ("dhtd LEVEL ..."), keeping what it tells its
 * user ("dhtd: ..."), in place. */
static void drop_log_lines(char *text) {
  char *in = text, *out = text;

  while (*in != '\0') {
    char *end = strchr(in, '\n');
    size_t len = end != NULL ? (size_t)(end - in) + 1 : strlen(in);
    if (strncmp(in, "dhtd ", 5) != 0) {
      memmove(out, in, len);
      out += len;
    }
    in += len;
  }
  *out = '\0';
}

/* True when text matches pattern, in which '*' stands for any text (what
 * varies from run to run: a time, an attempt count, a list of problems). */
static bool glob_matches(const char *text, const char *pattern) {
  if (*pattern == '\0') {
    return *text == '\0';
  }
  if (*pattern == '*') {
    do {
      if (glob_matches(text, pattern + 1)) {
        return true;
      }
    } while (*text++ != '\0');
    return false;
  }
  return *text == *pattern && glob_matches(text + 1, pattern + 1);
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
  const char *err;      /* all of stderr, dhtd's log lines left out */
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
    drop_log_lines(res->err);
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
 * start on, in ring order, with its predecessor and the number of records
 * it should hold, then the verdict. */
static void ring_listing(ring *r, const node *start, char *out, size_t len) {
  char short_id[DHT_ID_SHORT_LEN];
  node *order[NODES_MAX];
  int n = ring_order(r, order), records[NODES_MAX] = {0}, i, p, first = 0;
  bool holders[NODES_MAX];

  for (i = 0; i < KEYS; i++) {
    key_holders(order, n, i, holders);
    for (p = 0; p < n; p++) {
      records[p] += holders[p] && r->keys[i] != KEY_UNWRITTEN;
    }
  }
  while (order[first] != start) {
    first++;
  }
  snprintf(out, len, "%-8s  %-21s  %-21s  %s\n", "ID", "ADDRESS", "PREDECESSOR",
           "KEYS");
  for (i = 0; i < n; i++) {
    p = (first + i) % n;
    append(out, len, "%-8s  %-21s  %-21s  %d\n",
           dht_id_short(&order[p]->id, short_id), order[p]->addr,
           n > 1 ? order[(p + n - 1) % n]->addr : "(none)", records[p]);
  }
  append(out, len, "ring: %d node%s, closed\n", n, n == 1 ? "" : "s");
}

/* `dht ring` through start prints exactly the listing, and nothing on
 * stderr. */
static void assert_ring_listing(ring *r, const node *start) {
  run_result *res = malloc(sizeof(*res));
  char want[4096];

  assert_non_null(res);
  ring_listing(r, start, want, sizeof(want));
  run_cli(r, res, "--node", start->addr, "ring", NULL);
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
 * on exactly its holders; overwrites and deletes through another node
 * replace it there at once, and every node reads back what was written
 * last: new values, old ones, NOT_FOUND for the deleted. */
static void
test_acknowledged_writes_are_on_exactly_their_holders(void **state) {
  ring *r = *state;
  int i;

  ring_start(r, 8);
  ring_fill(r, &r->nodes[0]);
  wait_until(r, keys_on_their_holders, 0, "every put on its holders");
  for (i = 0; i < KEYS; i += 3) {
    if (i % 2 == 0) {
      put_key(r, r->nodes[5].client, i, 1);
    } else {
      del_key(r, r->nodes[5].client, i);
    }
  }
  wait_until(r, keys_on_their_holders, 0, "every overwrite on its holders");
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
  ninth = node_add(r);
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
  node_stop(&r->nodes[2], SIGTERM);
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
    node_stop(d, SIGKILL);
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

/* A client that retries within its deadline, on every running node but
 * reader when reader fails, as `dht --node A,B,...` does. */
static dht_client *retrying_client(ring *r, const node *reader) {
  const char *fallbacks[NODES_MAX];
  size_t n = 0;
  dht_client *c;
  int i;

  assert_int_equal(dht_client_new(&c, reader->addr, NULL), 0);
  for (i = 0; i < r->n_nodes; i++) {
    if (r->nodes[i].pid != 0 && &r->nodes[i] != reader) {
      fallbacks[n++] = r->nodes[i].addr;
    }
  }
  assert_int_equal(dht_client_set_fallbacks(c, fallbacks, n), 0);
  dht_client_set_retry(c, true);
  return c;
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

/* What dht check prints first about a healthy ring of 8. */
#define CHECK_RING_OK                                                          \
  "check from @NODE: 8 nodes\n"                                                \
  "  walk             ok: every node answers, the walk closes\n"               \
  "  id order         ok\n"                                                    \
  "  pred/succ        ok\n"                                                    \
  "  successor lists  ok\n"                                                    \
  "  pred lists       ok\n"

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
  ph[0].value = r->nodes[0].addr;
  run_cases(r, dht_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
}

/* ---- mistakes ------------------------------------------------------------ */

/* Connects a raw TCP socket to d, for bytes no client would send. */
static int raw_connect(const node *d) {
  struct sockaddr_in sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)d->port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

/* True when the daemon closes fd (read sees EOF or a reset) within 5 s. */
static bool closed_by_peer(int fd) {
  struct timeval tv = {5, 0};
  char buf[4096];
  ssize_t n;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  do {
    n = read(fd, buf, sizeof(buf)); /* ERROR replies, then the close */
  } while (n > 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

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
  for (i = 0; i < 8; i++) {
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  }
  assert_true(closed_by_peer(fd));
  close(fd);

  fd = raw_connect(d);
  assert_int_equal(write(fd, huge, sizeof(huge)), (ssize_t)sizeof(huge));
  assert_true(closed_by_peer(fd));
  close(fd);

  assert_int_equal(dht_client_ping(d->client, NULL, CALL_MS), 0);
  assert_reads(r, d->client, CALL_MS);
  wait_until(r, keys_on_their_holders, 0, "keys intact");
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
      /* A node that is not there: at once without retries, else after
       * retrying until the deadline. */
      {{"--no-retry", "--node", "@DEAD", "get", "k", NULL},
       2,
       "",
       "dht: cannot reach @DEAD: Connection refused\n"},
      {{"--node", "@DEAD", "--timeout-ms", "300", "get", "k", NULL},
       2,
       "",
       "dht: cannot reach @DEAD: Connection refused (gave up after *)\n"},
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
  ring *r = *state;
  char dead[32];
  placeholder ph[3] = {{"@NODE", NULL}, {"@DEAD", dead}, {NULL, NULL}};

  ring_start(r, 1);
  ph[0].value = r->nodes[0].addr;
  loopback_addr(r, dead, sizeof(dead));
  run_cases(r, dht_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
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
       "dhtd: unknown flag '--bogus' (see dhtd --help)\n"},
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

/* ---- fixtures ------------------------------------------------------------ */

/* Gives the test an empty ring in a new directory of its own. */
static int ring_new(void **state) {
  ring *r = calloc(1, sizeof(*r));

  if (r == NULL) {
    return -1;
  }
  snprintf(r->dir, sizeof(r->dir), "%s/ring-XXXXXX", base_dir);
  if (mkdtemp(r->dir) == NULL) {
    perror("mkdtemp");
    free(r);
    return -1;
  }
  *state = r;
  return 0;
}

/* Kills what the test left running, by pid, and removes its directory. */
static int ring_del(void **state) {
  ring *r = *state;
  int i;

  for (i = 0; i < r->n_nodes; i++) {
    if (r->nodes[i].pid > 0) {
      kill(r->nodes[i].pid, SIGKILL);
      wait_exit(r->nodes[i].pid, 5000);
    }
    dht_client_del(r->nodes[i].client);
  }
  if (getenv("DHT_KEEP_TEST_DIR") == NULL) {
    char cmd[PATH_LEN + 20];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
    if (system(cmd) != 0) {
      fprintf(stderr, "could not remove %s\n", r->dir);
    }
  } else {
    fprintf(stderr, "logs and data kept in %s\n", r->dir);
  }
  free(r);
  return 0;
}

/* A test with a fresh ring of its own. */
#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_new, ring_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_ring_of_8_converges),
      RING_TEST(test_ring_of_one_is_whole),
      RING_TEST(test_acknowledged_writes_are_on_exactly_their_holders),
      RING_TEST(test_ninth_node_takes_exactly_its_range),
      RING_TEST(test_sigterm_hands_keys_on),
      RING_TEST(test_sigkill_any_node_then_restart),
      RING_TEST(test_sigkill_two_at_once_loses_nothing),
      RING_TEST(test_dht_check_counts_copies),
      RING_TEST(test_bad_bytes_close_only_their_connection),
      RING_TEST(test_cli_errors_are_one_exact_line),
      RING_TEST(test_daemon_refuses_clearly),
  };
  int failed;

  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: test_daemons PATH_TO_DHTD PATH_TO_DHT [PATTERN]\n");
    return 2;
  }
  dhtd_path = argv[1];
  dht_path = argv[2];
  if (argc == 4) {
    cmocka_set_test_filter(argv[3]);
  }
  signal(SIGPIPE, SIG_IGN);
  snprintf(base_dir, sizeof(base_dir), "/tmp/dht-test-XXXXXX");
  if (mkdtemp(base_dir) == NULL) {
    perror("mkdtemp");
    return 2;
  }
  failed = cmocka_run_group_tests(tests, NULL, NULL);
  if (getenv("DHT_KEEP_TEST_DIR") == NULL) {
    rmdir(base_dir);
  }
  return failed;
}
