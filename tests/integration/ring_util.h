/*
 * ring_util.h: what test_daemons.c and test_faults.c both need to run
 * real dhtd processes and look at them: processes with their output in
 * files, waits against deadlines, loopback ports, a test's ring of nodes
 * and their start, the ring order and its neighbour lists, the SCAN of
 * what each node holds, and each test's directory.
 *
 * Static functions in a header rather than a .c linked into both tests:
 * they work on the including test's own ring, whose limits and fields are
 * the test's, so they are compiled with them. Before including it, a test
 * defines _DEFAULT_SOURCE (or _GNU_SOURCE) and
 *   NODES_MAX        how many nodes one of its tests may add;
 *   PORTS_MAX        how many loopback ports one of its tests may take;
 *   WHY_LEN          how long the reason a condition gives may be;
 *   WAIT_POLL_MS     how often wait_until tries its condition again;
 *   RING_OWN_FIELDS  the fields of its ring beyond the nodes (what the
 *                    test has been told, what it has set up);
 *   NODE_OWN_FIELDS  (if it needs any) the fields of its nodes beyond
 *                    the ones here; node_add starts them zeroed.
 *
 * A closed ring: with DHT_TEST_CLUSTER_KEY=1 in the environment,
 * ring_tests_begin writes a cluster key, every dhtd started here gets
 * --cluster-key-file, every client made here uses the key, and the dht
 * processes the tests run find it in $DHT_CLUSTER_KEY_FILE. A test may set
 * ring_key_path and ring_client_settings itself (ring_key_use) instead.
 */
#ifndef RING_UTIL_H
#define RING_UTIL_H

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
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "dht/client.h"
#include "dht/id.h"
#include "dht/seal.h"

#if !defined(NODES_MAX) || !defined(PORTS_MAX) || !defined(WHY_LEN) ||         \
    !defined(WAIT_POLL_MS) || !defined(RING_OWN_FIELDS)
#error "ring_util.h: define its settings first (see the top of the file)"
#endif
#ifndef NODE_OWN_FIELDS
#define NODE_OWN_FIELDS /* none */
#endif

#define REPLICAS 3         /* dhtd's default */
#define CALL_MS 5000       /* one request of the test's own */
#define SETTLE_MS 30000    /* for a ring to settle after a change */
#define SCAN_PAGE_LEN 4096 /* a node's own cap on one SCAN reply */
#define DIR_LEN 240        /* a test's directory */
#define PATH_LEN 300       /* a file in it */

/* One dhtd. */
typedef struct node {
  pid_t pid;          /* 0 when not running */
  int port;           /* its loopback port; 0 when node_add was given addr */
  char addr[40];      /* "HOST:PORT" it listens on */
  char dir[PATH_LEN]; /* data directory */
  char log[PATH_LEN]; /* its stdout and stderr */
  dht_id id;          /* hash of addr */
  dht_client *client; /* connection for the test's own requests */
  NODE_OWN_FIELDS
} node;

/* One test's ring and everything the test keeps of its own. */
typedef struct ring {
  char dir[DIR_LEN];     /* the test's own directory */
  node nodes[NODES_MAX]; /* in the order they were added */
  int n_nodes;           /* entries of nodes in use, running or not */
  int ports[PORTS_MAX];  /* every port handed out, never handed out twice */
  int n_ports;           /* entries of ports in use */
  RING_OWN_FIELDS
} ring;

/* A condition on a ring: true when it holds; when not, why says why. */
typedef bool (*ring_cond)(ring *r, char *why, size_t why_len);

/* The problems a check found: how many, and the first one in words. */
typedef struct problems {
  char first[WHY_LEN];
  int n;
} problems;

static const char *dhtd_path; /* the programs under test, from argv */
static const char *dht_path;
static char base_dir[200]; /* holds one directory per test */
/* The cluster key file every dhtd started here gets ("": an open ring),
 * and the settings of every client made here (with that key). */
static char ring_key_path[PATH_LEN];
static dht_client_settings ring_client_settings;

/* ---- processes and time -------------------------------------------------- */

static inline uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t now_ms(void) { return mono_ns() / 1000000u; }

static inline void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

__attribute__((format(printf, 2, 3))) static inline void
problem(problems *p, const char *fmt, ...) {
  va_list ap;

  if (p->n++ == 0) {
    va_start(ap, fmt);
    vsnprintf(p->first, sizeof(p->first), fmt, ap);
    va_end(ap);
  }
}

/* Sums the problems up in why: the first, then "(and N more)" with
 * count_the_rest or only "(and more)" without (each test keeps its own
 * wording); true when there were none. */
static inline bool no_problems(const problems *p, bool count_the_rest,
                               char *why, size_t why_len) {
  if (p->n > 1 && count_the_rest) {
    snprintf(why, why_len, "%s (and %d more)", p->first, p->n - 1);
  } else if (p->n > 0) {
    snprintf(why, why_len, "%s%s", p->first, p->n > 1 ? " (and more)" : "");
  }
  return p->n == 0;
}

/* Tries cond every WAIT_POLL_MS until it holds, or fails the test with its
 * last reason once timeout_ms has passed. A timeout of 0 checks once: for
 * what must hold already. Returns the ms it took. */
static inline uint64_t wait_until(ring *r, ring_cond cond, int timeout_ms,
                                  const char *what) {
  uint64_t start = now_ms(), deadline = start + (uint64_t)timeout_ms;
  char why[WHY_LEN] = "";

  while (!cond(r, why, sizeof(why))) {
    if (now_ms() >= deadline) {
      fail_msg("%s: not so after %llu ms: %s", what,
               (unsigned long long)(now_ms() - start), why);
    }
    pause_ms(WAIT_POLL_MS);
  }
  return now_ms() - start;
}

/* 127.0.0.1:port (0: any port). */
static inline struct sockaddr_in loopback_sa(int port) {
  struct sockaddr_in sa;

  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

/* A TCP socket bound to a loopback port the kernel picked; *port gets it. */
static inline int bind_loopback(int *port) {
  struct sockaddr_in sa = loopback_sa(0);
  socklen_t len = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  *port = ntohs(sa.sin_port);
  return fd;
}

/* A TCP connection of the test's own to 127.0.0.1:port. */
static inline int connect_loopback(int port) {
  struct sockaddr_in sa = loopback_sa(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  assert_true(fd >= 0);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  return fd;
}

/* True when the other end closes fd (read sees EOF or a reset) within 5 s;
 * whatever it sends before is read and dropped. */
static inline bool closed_by_peer(int fd) {
  struct timeval tv = {5, 0};
  char buf[4096];
  ssize_t n;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  do {
    n = read(fd, buf, sizeof(buf));
  } while (n > 0);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* Test nodes listen on ports below the kernel's ephemeral range (32768 and
 * up by default): a port from that range, free when probed, could be taken
 * as the source port of another test's outgoing connection before the node
 * binds it, and that node would never start. */
#define TEST_PORT_LOW 20000
#define TEST_PORT_SPAN 12000

/* True when 127.0.0.1:port can be bound now (no SO_REUSEADDR: a port with
 * connections in TIME_WAIT counts as taken). */
static inline bool loopback_port_free(int port) {
  struct sockaddr_in sa = loopback_sa(port);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  bool is_free;

  assert_true(fd >= 0);
  is_free = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
  close(fd);
  return is_free;
}

/* A loopback port below the ephemeral range that was free a moment ago and
 * that this test has not been handed before. Each test program walks the
 * span from a start of its own (by pid) and goes on where its last test
 * stopped, so neither programs running side by side nor a test and the
 * one before it probe the same ports. */
static inline int free_port(ring *r) {
  static unsigned cursor;
  int i, tries, port = 0;
  bool taken = true;

  assert_true(r->n_ports < PORTS_MAX);
  if (cursor == 0) {
    cursor = 1 + ((unsigned)getpid() * 2654435761u) % TEST_PORT_SPAN;
  }
  for (tries = 0; taken && tries < TEST_PORT_SPAN; tries++) {
    port = TEST_PORT_LOW + (int)(cursor++ % TEST_PORT_SPAN);
    for (i = 0, taken = false; i < r->n_ports; i++) {
      taken = taken || r->ports[i] == port;
    }
    taken = taken || !loopback_port_free(port);
  }
  assert_false(taken);
  r->ports[r->n_ports++] = port;
  return port;
}

/* Runs argv (looked up in PATH when it has no '/', as `ip` is) with stdout
 * appended to out_path and stderr to err_path (which may be the same
 * file), and with env_set[0..] ("NAME=VALUE", up to a NULL; may be NULL)
 * added to the environment. Returns the pid: the program's own, as
 * nothing is run in between. */
static inline pid_t spawn(char *const argv[], char *const env_set[],
                          const char *out_path, const char *err_path) {
  pid_t pid = fork();

  assert_true(pid >= 0);
  if (pid == 0) {
    int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int err = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int i;
    if (out >= 0 && err >= 0) {
      dup2(out, 1);
      dup2(err, 2);
      close(out);
      close(err);
    }
    for (i = 0; env_set != NULL && env_set[i] != NULL; i++) {
      putenv(env_set[i]);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  return pid;
}

/* Waits for pid to exit; returns its exit status (128 + the signal that
 * killed it), or -1 when it is still running after timeout_ms. */
static inline int wait_exit(pid_t pid, int timeout_ms) {
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

static inline void read_file(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  size_t n = 0;

  if (f != NULL) {
    n = fread(buf, 1, len - 1, f);
    fclose(f);
  }
  buf[n] = '\0';
}

/* What a process that ran to the end left. */
typedef struct run_result {
  int status;      /* exit status, or 128 + signal */
  char out[16384]; /* its stdout */
  char err[8192];  /* its stderr */
} run_result;

/* Runs argv to the end, its stdout and stderr captured in files of r's
 * directory; false, and the process killed, when it has not ended within
 * timeout_ms. */
static inline bool run_within(const ring *r, char *const argv[], int timeout_ms,
                              run_result *res) {
  char out_path[PATH_LEN], err_path[PATH_LEN];
  pid_t pid;

  snprintf(out_path, sizeof(out_path), "%s/run.out", r->dir);
  snprintf(err_path, sizeof(err_path), "%s/run.err", r->dir);
  unlink(out_path);
  unlink(err_path);
  pid = spawn(argv, NULL, out_path, err_path);
  res->status = wait_exit(pid, timeout_ms);
  if (res->status < 0) {
    kill(pid, SIGKILL);
    wait_exit(pid, 5000);
    return false;
  }
  read_file(out_path, res->out, sizeof(res->out));
  read_file(err_path, res->err, sizeof(res->err));
  return true;
}

/* True when text matches pattern, in which '*' stands for any text (what
 * varies from run to run: a time, an attempt count, a list of problems). */
static inline bool glob_matches(const char *text, const char *pattern) {
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

/* ---- nodes --------------------------------------------------------------- */

/* Adds a node at addr (NULL: a fresh loopback port), not yet started. */
static inline node *node_add(ring *r, const char *addr) {
  char ring_dir[sizeof(r->dir)];
  node *d;

  assert_true(r->n_nodes < NODES_MAX);
  d = &r->nodes[r->n_nodes];
  memset(d, 0, sizeof(*d));
  /* A copy: gcc cannot tell that d's paths and the ring's do not overlap. */
  memcpy(ring_dir, r->dir, sizeof(ring_dir));
  if (addr != NULL) {
    snprintf(d->addr, sizeof(d->addr), "%s", addr);
  } else {
    d->port = free_port(r);
    snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%d", d->port);
  }
  snprintf(d->dir, sizeof(d->dir), "%s/node%d", ring_dir, r->n_nodes);
  snprintf(d->log, sizeof(d->log), "%s/node%d.log", ring_dir, r->n_nodes);
  dht_id_hash(&d->id, d->addr, strlen(d->addr));
  assert_int_equal(dht_client_new(&d->client, d->addr, &ring_client_settings),
                   0);
  r->n_nodes++;
  return d;
}

/* Starts node d on its data directory, joining through join (NULL: a new
 * ring), with timers shortened so that a ring settles in a second or two.
 * The words of run_under (up to a NULL; NULL for none), such as `ip netns
 * exec NS`, come before dhtd's own command line, and those of extra (the
 * same) after it; env_set is spawn's. */
static inline void node_start_args(node *d, const node *join,
                                   char *const run_under[],
                                   char *const env_set[],
                                   char *const extra[]) {
  char *argv[48];
  int n = 0, k;

  for (; run_under != NULL && run_under[n] != NULL; n++) {
    assert_true(n < 12);
    argv[n] = run_under[n];
  }
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
  if (ring_key_path[0] != '\0') {
    argv[n++] = "--cluster-key-file";
    argv[n++] = ring_key_path;
  }
  if (join != NULL) {
    argv[n++] = "--join";
    argv[n++] = (char *)join->addr;
  }
  for (k = 0; extra != NULL && extra[k] != NULL; k++) {
    assert_true(n < 46);
    argv[n++] = extra[k];
  }
  argv[n] = NULL;
  assert_int_equal(d->pid, 0);
  d->pid = spawn(argv, env_set, d->log, d->log);
}

/* node_start_args with no words after dhtd's own. */
static inline void node_start_under(node *d, const node *join,
                                    char *const run_under[],
                                    char *const env_set[]) {
  node_start_args(d, join, run_under, env_set, NULL);
}

/* True once d answers a PING; false when it has not by deadline_ms (on
 * now_ms()'s clock), the reason in its client's last error. */
static inline bool node_answers_by(const node *d, uint64_t deadline_ms) {
  while (dht_client_ping(d->client, NULL, 200) != 0) {
    if (now_ms() >= deadline_ms) {
      return false;
    }
    pause_ms(50);
  }
  return true;
}

static inline bool ring_succs_settled(ring *r, char *why, size_t why_len);

/* Adds n nodes and starts them, the first as a new ring with the words of
 * first_extra (up to a NULL; NULL for none) after its command line and
 * the others joining through it, and waits until every node's first
 * successor is its true one. */
static inline void ring_start_first_with(ring *r, int n,
                                         char *const first_extra[]) {
  node *first = node_add(r, NULL);
  int i;

  node_start_args(first, NULL, NULL, NULL, first_extra);
  if (!node_answers_by(first, now_ms() + 5000)) {
    fail_msg("%s does not answer after 5 s: %s", first->addr,
             dht_client_last_error(first->client));
  }
  for (i = 1; i < n; i++) {
    node_start_under(node_add(r, NULL), first, NULL, NULL);
  }
  wait_until(r, ring_succs_settled, SETTLE_MS, "ring settled");
}

/* Waits for d to exit with status want (128 + the signal for a kill). */
static inline void node_wait_exit(node *d, int want, int timeout_ms) {
  int status = wait_exit(d->pid, timeout_ms);

  if (status >= 0) {
    d->pid = 0; /* reaped: the pid may be anyone's now */
  }
  assert_int_equal(status, want);
}

/* Signals d and waits, timeout_ms at most, for the exit status that signal
 * must give: 0 for a graceful SIGTERM (the node leaves, handing its keys
 * on), 128 + SIGKILL for SIGKILL. */
static inline void node_stop(node *d, int sig, int timeout_ms) {
  assert_true(d->pid > 0);
  assert_int_equal(kill(d->pid, sig), 0);
  node_wait_exit(d, sig == SIGKILL ? 128 + SIGKILL : 0, timeout_ms);
}

/* A client that starts at first and, when first fails, retries on each of
 * nodes[0..n) but first (as `dht --node A,B,...` does). */
static inline dht_client *client_falling_back(const node *first,
                                              node *const nodes[], int n) {
  const char *fallbacks[NODES_MAX];
  size_t n_fallbacks = 0;
  dht_client *c;
  int i;

  assert_int_equal(dht_client_new(&c, first->addr, &ring_client_settings), 0);
  for (i = 0; i < n; i++) {
    if (nodes[i] != first) {
      fallbacks[n_fallbacks++] = nodes[i]->addr;
    }
  }
  assert_int_equal(dht_client_set_fallbacks(c, fallbacks, n_fallbacks), 0);
  dht_client_set_retry(c, true);
  return c;
}

/* client_falling_back on every running node. */
static inline dht_client *retrying_client(ring *r, const node *first) {
  node *running[NODES_MAX];
  int i, n = 0;

  for (i = 0; i < r->n_nodes; i++) {
    if (r->nodes[i].pid != 0) {
      running[n++] = &r->nodes[i];
    }
  }
  return client_falling_back(first, running, n);
}

/* ---- the ring ------------------------------------------------------------ */

/* The running nodes in ring order (by id); returns how many. */
static inline int ring_order(ring *r, node *order[NODES_MAX]) {
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
static inline int neighbour_depth(int n) {
  return n - 1 < REPLICAS - 1 ? n - 1 : REPLICAS - 1;
}

/* Whether order[p], in a ring of n nodes in ring order, lists its
 * neighbours right in nb, which holds at least depth of each; when not,
 * why says why. */
typedef bool (*neighbour_lists_check)(node *const order[], int n, int p,
                                      int depth,
                                      const dht_client_neighbors_result *nb,
                                      char *why, size_t why_len);

/* True when every running node answers with the true predecessor, lists at
 * least neighbour_depth() successors and predecessors, and lists_right
 * finds them right. */
static inline bool ring_lists_right(ring *r, neighbour_lists_check lists_right,
                                    char *why, size_t why_len) {
  dht_client_neighbors_result nb;
  node *order[NODES_MAX];
  int n = ring_order(r, order), depth = neighbour_depth(n), p;

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
    if (!lists_right(order, n, p, depth, &nb, why, why_len)) {
      return false;
    }
  }
  return true;
}

/* ring_lists_right's lightest check: order[p]'s first successor is its
 * true one (for tests that need a ring, not its replication depth). */
static inline bool first_successor_right(node *const order[], int n, int p,
                                         int depth,
                                         const dht_client_neighbors_result *nb,
                                         char *why, size_t why_len) {
  const node *succ = order[(p + 1) % n];

  (void)depth;
  if (n > 1 && strcmp(nb->succs[0].addr, succ->addr) != 0) {
    snprintf(why, why_len, "%s has successor %s, not %s", order[p]->addr,
             nb->succs[0].addr, succ->addr);
    return false;
  }
  return true;
}

static inline bool ring_succs_settled(ring *r, char *why, size_t why_len) {
  return ring_lists_right(r, first_successor_right, why, why_len);
}

/* Position in order[0..n) (n > 0) of the owner of key: the first node at
 * or after its id. */
static inline int owner_pos(node *const order[], int n, const char *key) {
  dht_id kid;
  int p = 0;

  dht_id_hash(&kid, key, strlen(key));
  while (p < n && dht_id_cmp(&order[p]->id, &kid) < 0) {
    p++;
  }
  return p % n;
}

/* Which positions of order[0..n) hold key: holders[p] is set for its
 * owner and the next R - 1. */
static inline void key_holders(node *const order[], int n, const char *key,
                               bool holders[NODES_MAX]) {
  int owner = n > 0 ? owner_pos(order, n, key) : 0, k;

  memset(holders, 0, NODES_MAX * sizeof(holders[0]));
  for (k = 0; k < n && k < REPLICAS; k++) {
    holders[(owner + k) % n] = true;
  }
}

/* What the SCANs of a check have met of one key. */
typedef struct key_copies {
  bool held[NODES_MAX];     /* per ring position: it listed the key */
  const char *first_holder; /* the address of the first that did */
  bool tombstone;           /* ... and what it holds */
  dht_version version;
} key_copies;

/* Which entry of the copies a record that node d listed counts in: its
 * index, or -1 for a record the check leaves out, having called it a
 * problem in pr if it is one. */
typedef int (*record_index_fn)(const ring *r, const node *d,
                               const dht_client_scan_item *it, problems *pr);

/* Lists node d's records (SCAN, paged round the ring from the zero id) into
 * copies[index_of(record)], with d at ring position p. Every holder of a
 * key must hold the same version of it; with version_required, a record
 * without a version is a problem too (else it is compared as it came). */
static inline void scan_node(const ring *r, const node *d, int p,
                             record_index_fn index_of, bool version_required,
                             key_copies *copies, problems *pr) {
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
      key_copies *kc;
      int i;
      /* Ids only grow from the zero id; one that does not has come round. */
      if (!first && dht_id_cmp(&it->key_id, &prev) <= 0) {
        done = true;
        break;
      }
      first = false;
      prev = it->key_id;
      i = index_of(r, d, it, pr);
      if (i < 0) {
        continue;
      }
      kc = &copies[i];
      kc->held[p] = true;
      if (version_required && !it->has_version) {
        problem(pr, "%s holds %.*s without a version", d->addr,
                (int)it->key_len, (const char *)it->key);
      } else if (kc->first_holder == NULL) {
        kc->first_holder = d->addr;
        kc->tombstone = it->tombstone;
        kc->version = it->version;
      } else if (kc->tombstone != it->tombstone ||
                 dht_version_cmp(&kc->version, &it->version) != 0) {
        problem(pr, "%.*s: %s and %s hold different versions", (int)it->key_len,
                (const char *)it->key, kc->first_holder, d->addr);
      }
    }
    done = done || !page.more || page.n_items == 0;
    from = prev;
    dht_client_scan_result_free(&page);
  }
}

/* ---- fixtures and main --------------------------------------------------- */

/* Every record of every running node, as text ("addr key hlc tomb;"),
 * into out: what a test compares before and after an attack. Each node's
 * records are read page by page, at most 100 pages. */
static inline void ring_records_text(ring *r, char *out, size_t len) {
  dht_client_scan_result page;
  size_t used = 0, j;
  dht_id from;
  int i, pages;

  out[0] = '\0';
  for (i = 0; i < r->n_nodes; i++) {
    node *d = &r->nodes[i];
    if (d->pid == 0) {
      continue;
    }
    memset(&from, 0, sizeof(from));
    for (pages = 0; pages < 100; pages++) {
      bool more;
      assert_int_equal(dht_client_scan(d->client, &from, SCAN_PAGE_LEN,
                                       &page, CALL_MS),
                       0);
      for (j = 0; j < page.n_items; j++) {
        const dht_client_scan_item *it = &page.items[j];
        /* Ids only grow from the zero id; one that does not came round. */
        if ((pages > 0 || j > 0) && dht_id_cmp(&it->key_id, &from) <= 0) {
          page.more = false;
          break;
        }
        used += (size_t)snprintf(out + used, len - used, "%s %.*s %llu %d;",
                                 d->addr, (int)it->key_len,
                                 (const char *)it->key,
                                 (unsigned long long)it->version.hlc,
                                 it->tombstone);
        assert_true(used < len);
        from = it->key_id;
      }
      more = page.more && page.n_items > 0;
      dht_client_scan_result_free(&page);
      if (!more) {
        break;
      }
    }
  }
}

/* Runs dht --node d's address --timeout-ms timeout_ms with args (NULL-
 * terminated, at most 8) into *res, within 2 * timeout_ms + RUN_MS; false,
 * and the process killed, when it has not ended by then. */
static inline bool dht_on(const ring *r, const node *d, int timeout_ms,
                          const char *const *args, run_result *res) {
  char timeout[16], *argv[16] = {(char *)dht_path, "--node", (char *)d->addr,
                                 "--timeout-ms", timeout};
  int i;

  snprintf(timeout, sizeof(timeout), "%d", timeout_ms);
  for (i = 0; args[i] != NULL && i < 8; i++) {
    argv[5 + i] = (char *)args[i];
  }
  argv[5 + i] = NULL;
  return run_within(r, argv, 2 * timeout_ms + RUN_MS, res);
}

/* An empty ring in a new directory of its own under base_dir, or NULL
 * (said on stderr) when it cannot be made. */
static inline ring *ring_make(void) {
  ring *r = calloc(1, sizeof(*r));

  if (r == NULL) {
    return NULL;
  }
  snprintf(r->dir, sizeof(r->dir), "%s/ring-XXXXXX", base_dir);
  if (mkdtemp(r->dir) == NULL) {
    perror("mkdtemp");
    free(r);
    return NULL;
  }
  return r;
}

/* Kills every node the test left running, by pid, and closes the test's
 * clients. */
static inline void ring_kill_nodes(ring *r) {
  int i;

  for (i = 0; i < r->n_nodes; i++) {
    if (r->nodes[i].pid > 0) {
      kill(r->nodes[i].pid, SIGKILL);
      wait_exit(r->nodes[i].pid, 5000);
    }
    dht_client_del(r->nodes[i].client);
  }
}

/* Removes the test's directory, or with DHT_KEEP_TEST_DIR set says where
 * its logs and data are kept. */
static inline void ring_dir_remove(const ring *r) {
  if (getenv("DHT_KEEP_TEST_DIR") == NULL) {
    char cmd[PATH_LEN + 20];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", r->dir);
    if (system(cmd) != 0) {
      fprintf(stderr, "could not remove %s\n", r->dir);
    }
  } else {
    fprintf(stderr, "logs and data kept in %s\n", r->dir);
  }
}

/* Takes `program PATH_TO_DHTD PATH_TO_DHT [PATTERN]` from the command
 * line; false, the usage shown, when that is not what it is. */
static inline bool ring_tests_args(int argc, char **argv, const char *program) {
  if (argc != 3 && argc != 4) {
    fprintf(stderr, "usage: %s PATH_TO_DHTD PATH_TO_DHT [PATTERN]\n", program);
    return false;
  }
  dhtd_path = argv[1];
  dht_path = argv[2];
  if (argc == 4) {
    cmocka_set_test_filter(argv[3]);
  }
  return true;
}

/* Readies the process for its tests: a write to a connection a node has
 * closed fails rather than ending the process, and base_dir is made from
 * template ("...XXXXXX"). False, said on stderr, when it cannot be. */
/* Makes dhtd and the clients made here use the key file at path (as
 * written by dht_ring_key_save): a member key for the nodes, and for the
 * clients whichever key the file holds (NULL: back to an open ring). */
static inline void ring_key_use(const char *path, const dht_ring_key *key) {
  dht_client_settings_default(&ring_client_settings);
  ring_key_path[0] = '\0';
  if (path != NULL) {
    snprintf(ring_key_path, sizeof(ring_key_path), "%s", path);
    ring_client_settings.key = *key;
  }
}

/* Writes a new member key into base_dir/name; false (said) on failure. */
static inline bool ring_key_new(const char *name, dht_ring_key *key,
                                char *path, size_t path_len) {
  uint8_t raw[DHT_KEY_LEN];
  char err[256];

  randombytes_buf(raw, sizeof(raw));
  dht_ring_key_from_member(key, raw);
  snprintf(path, path_len, "%s/%s", base_dir, name);
  if (dht_ring_key_save(key, false, path, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s\n", err);
    return false;
  }
  return true;
}

static inline bool ring_tests_begin(const char *template) {
  const char *keyed = getenv("DHT_TEST_CLUSTER_KEY");

  signal(SIGPIPE, SIG_IGN);
  snprintf(base_dir, sizeof(base_dir), "%s", template);
  if (mkdtemp(base_dir) == NULL) {
    perror("mkdtemp");
    return false;
  }
  dht_client_settings_default(&ring_client_settings);
  if (keyed != NULL && keyed[0] != '\0' && strcmp(keyed, "0") != 0) {
    char path[PATH_LEN];
    dht_ring_key key;
    if (sodium_init() < 0 ||
        !ring_key_new("cluster.key", &key, path, sizeof(path))) {
      return false;
    }
    ring_key_use(path, &key);
    setenv("DHT_CLUSTER_KEY_FILE", path, 1); /* for the dht processes */
    fprintf(stderr, "closed ring: every node and client uses %s\n", path);
  }
  return true;
}

/* Removes base_dir, empty by now, unless DHT_KEEP_TEST_DIR keeps it. */
static inline void ring_tests_end(void) {
  if (getenv("DHT_KEEP_TEST_DIR") == NULL) {
    if (ring_key_path[0] != '\0' &&
        strncmp(ring_key_path, base_dir, strlen(base_dir)) == 0) {
      unlink(ring_key_path);
    }
    rmdir(base_dir);
  }
}

/* The plain fixtures: each test gets an empty ring of its own (state), and
 * whatever it started is killed by pid and its directory removed after,
 * whether it passed or not. */
static inline int ring_fixture_new(void **state) {
  *state = ring_make();
  return *state != NULL ? 0 : -1;
}

static inline int ring_fixture_del(void **state) {
  ring *r = *state;

  ring_kill_nodes(r);
  ring_dir_remove(r);
  free(r);
  return 0;
}

/* The main of a program of n tests: takes its arguments, runs them in a
 * directory of their own made from template, and returns how many failed
 * (2 when it could not start). */
static inline int ring_tests_main(int argc, char **argv, const char *program,
                                  const char *template,
                                  const struct CMUnitTest *tests, size_t n) {
  int failed;

  if (!ring_tests_args(argc, argv, program) || !ring_tests_begin(template)) {
    return 2;
  }
  failed = _cmocka_run_group_tests(program, tests, n, NULL, NULL);
  ring_tests_end();
  return failed;
}

#endif /* RING_UTIL_H */
