/*
 * test_daemons.c: real dhtd processes on loopback, real LMDB files, real
 * signals. One ring is built and then put through what users do to it:
 * store keys, read them from every node, add a node, stop one gracefully,
 * kill one and restart it on its data directory. Then the CLI's and the
 * daemon's answers to mistakes: each one's exit status and its one line on
 * stderr, compared in full.
 *
 *   test_daemons PATH_TO_DHTD PATH_TO_DHT
 *
 * Every wait polls a condition against a deadline; every proc's pid is
 * kept and it is only ever signalled by that pid.
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

#define RING_SIZE 8
#define NODES_MAX 16
#define BIG_RING 16 /* the two-at-once test grows the ring to this */
#define GET_DEADLINE_MS 1000 /* a user's get, retries included */
#define KEYS 1000
#define REPLICAS 3 /* dhtd's default */
#define CALL_MS 5000
#define PATH_LEN 300

typedef struct proc {
  pid_t pid;                /* 0 when not running */
  int port;                 /* loopback port */
  char addr[32];            /* "127.0.0.1:port" */
  char dir[300];            /* data directory */
  char log[300];            /* stderr of the process */
  dht_id id;                /* hash of addr */
  dht_client *client;       /* connection for the test's requests */
} proc;

static const char *dhtd_path;
static const char *dht_path;
static char base_dir[200];
static proc nodes[NODES_MAX];
static int n_nodes;

/* ---- helpers ------------------------------------------------------------------ */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
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

/* Polls cond every 50 ms until it holds or timeout_ms passes. */
static bool wait_for(bool (*cond)(void *), void *arg, int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

  for (;;) {
    if (cond(arg)) {
      return true;
    }
    if (now_ms() > deadline) {
      return false;
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

static int free_port(void) {
  int port;

  close(bind_loopback(&port));
  return port;
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

/* Waits for pid to exit; returns its exit status, or -1 after timeout_ms. */
static int wait_exit(pid_t pid, int timeout_ms) {
  uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
  int status;

  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) {
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

static void node_init(proc *d, int i) {
  memset(d, 0, sizeof(*d));
  d->port = free_port();
  snprintf(d->addr, sizeof(d->addr), "127.0.0.1:%d", d->port);
  snprintf(d->dir, sizeof(d->dir), "%s/node%d", base_dir, i);
  snprintf(d->log, sizeof(d->log), "%s/node%d.log", base_dir, i);
  dht_id_hash(&d->id, d->addr, strlen(d->addr));
  assert_int_equal(dht_client_new(&d->client, d->addr, NULL), 0);
}

/* Starts node d, joining through join (NULL: a new ring), with timers
 * shortened so that the ring settles in a second or two. */
static void node_start(proc *d, const char *join) {
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
    argv[n++] = (char *)join;
  }
  argv[n] = NULL;
  d->pid = spawn(argv, d->log, d->log);
}

static bool node_answers(void *arg) {
  proc *d = arg;
  return dht_client_ping(d->client, NULL, 200) == 0;
}

static void node_signal(proc *d, int sig) {
  assert_true(d->pid > 0);
  assert_int_equal(kill(d->pid, sig), 0);
}

static const char *key_name(int i, char *buf, size_t len) {
  snprintf(buf, len, "key-%04d", i);
  return buf;
}

/* The live node that owns key_id: the first live id at or after it. */
static proc *true_owner(const dht_id *key_id) {
  proc *best = NULL;
  dht_id best_dist, dist;
  int i;

  for (i = 0; i < n_nodes; i++) {
    if (nodes[i].pid == 0) {
      continue;
    }
    dht_id_distance(&dist, key_id, &nodes[i].id);
    if (best == NULL || dht_id_cmp(&dist, &best_dist) < 0) {
      best = &nodes[i];
      best_dist = dist;
    }
  }
  return best;
}

static int live_count(void) {
  int i, n = 0;

  for (i = 0; i < n_nodes; i++) {
    n += nodes[i].pid != 0;
  }
  return n;
}

static proc *by_addr(const char *addr) {
  int i;
  for (i = 0; i < n_nodes; i++) {
    if (strcmp(nodes[i].addr, addr) == 0) {
      return &nodes[i];
    }
  }
  return NULL;
}

/* True when every live node's successor and predecessor are the true ones. */
static bool ring_converged(void *arg) {
  dht_client_neighbors_result nb;
  int i;

  (void)arg;
  for (i = 0; i < n_nodes; i++) {
    proc *d = &nodes[i], *succ, *pred;
    dht_id next;
    if (d->pid == 0) {
      continue;
    }
    if (dht_client_neighbors(d->client, &nb, 1000) != 0 || nb.n_succs == 0 ||
        !nb.has_pred) {
      return false;
    }
    dht_id_add_pow2(&next, &d->id, 0);
    succ = true_owner(&next);
    pred = by_addr(nb.pred.addr);
    if (succ == NULL || strcmp(nb.succs[0].addr, succ->addr) != 0 ||
        pred == NULL) {
      return false;
    }
    dht_id_add_pow2(&next, &pred->id, 0);
    if (true_owner(&next) != d) {
      return false;
    }
  }
  return true;
}

/* True when every live node stores exactly the keys it owns. */
/* Every key is on its owner and the owner's REPLICAS - 1 successors, and
 * nowhere else: each live node holds exactly the keys it should. */
static bool keys_where_they_belong(void *arg) {
  dht_client_stats_result *st = malloc(sizeof(*st));
  uint64_t held;
  int want[NODES_MAX] = {0}, i, r;
  char key[32];
  bool ok = true;

  (void)arg;
  for (i = 0; i < KEYS; i++) {
    dht_id kid;
    proc *holder;
    key_name(i, key, sizeof(key));
    dht_id_hash(&kid, key, strlen(key));
    for (r = 0; r < REPLICAS && r < live_count(); r++) {
      holder = true_owner(&kid);
      want[holder - nodes]++;
      dht_id_add_pow2(&kid, &holder->id, 0); /* next: its successor */
    }
  }
  for (i = 0; i < n_nodes && ok; i++) {
    if (nodes[i].pid == 0) {
      continue;
    }
    ok = dht_client_stats(nodes[i].client, st, 1000) == 0 &&
         dht_client_stats_counter(st, "keys", &held) == 0 &&
         held == (uint64_t)want[i];
    if (!ok && getenv("DHT_TEST_VERBOSE") != NULL) {
      fprintf(stderr, "node %d (%s) holds %llu keys, owns %d\n", i,
              nodes[i].addr, (unsigned long long)held, want[i]);
    }
  }
  free(st);
  return ok;
}

/* Reads every key through node d; counts the failures. */
static int read_all_through(proc *d) {
  char key[32], want[32];
  int i, failures = 0;

  for (i = 0; i < KEYS; i++) {
    uint8_t *value;
    size_t len;
    key_name(i, key, sizeof(key));
    snprintf(want, sizeof(want), "value-%d", i);
    if (dht_client_get(d->client, key, strlen(key), &value, &len, CALL_MS) !=
        0) {
      failures++;
      continue;
    }
    if (len != strlen(want) || memcmp(value, want, len) != 0) {
      failures++;
    }
    free(value);
  }
  return failures;
}

/* ---- the ring's life ------------------------------------------------------------ */

static void test_ring_of_8_converges(void **state) {
  uint64_t start;
  int i;

  (void)state;
  for (i = 0; i < RING_SIZE; i++) {
    node_init(&nodes[i], i);
  }
  n_nodes = RING_SIZE;
  start = now_ms();
  node_start(&nodes[0], NULL);
  assert_true(wait_for(node_answers, &nodes[0], 5000));
  for (i = 1; i < RING_SIZE; i++) {
    node_start(&nodes[i], nodes[0].addr);
  }
  assert_true(wait_for(ring_converged, NULL, 20000));
  print_message("ring of %d converged in %llu ms\n", RING_SIZE,
                (unsigned long long)(now_ms() - start));
}

static void test_keys_put_through_one_node_read_through_all(void **state) {
  char key[32], value[32];
  int i;

  (void)state;
  for (i = 0; i < KEYS; i++) {
    key_name(i, key, sizeof(key));
    snprintf(value, sizeof(value), "value-%d", i);
    assert_int_equal(dht_client_put(nodes[0].client, key, strlen(key), value,
                                    strlen(value), CALL_MS),
                     0);
  }
  for (i = 1; i < RING_SIZE; i++) {
    assert_int_equal(read_all_through(&nodes[i]), 0);
  }
  assert_true(wait_for(keys_where_they_belong, NULL, 5000));
}

static void test_ninth_node_takes_exactly_its_range(void **state) {
  (void)state;
  node_init(&nodes[n_nodes], n_nodes);
  node_start(&nodes[n_nodes], nodes[3].addr);
  n_nodes++;
  assert_true(wait_for(ring_converged, NULL, 20000));
  /* Its successor handed it the keys of its range, and only those. */
  assert_true(wait_for(keys_where_they_belong, NULL, 10000));
  assert_int_equal(read_all_through(&nodes[n_nodes - 1]), 0);
}

static void test_sigterm_hands_keys_on(void **state) {
  proc *d = &nodes[2];

  (void)state;
  node_signal(d, SIGTERM);
  assert_int_equal(wait_exit(d->pid, 15000), 0);
  d->pid = 0;
  assert_true(wait_for(ring_converged, NULL, 20000));
  assert_true(wait_for(keys_where_they_belong, NULL, 10000));
  assert_int_equal(read_all_through(&nodes[0]), 0);
}

/* Each node in turn is killed with SIGKILL: before any repair, every key
 * is still served through the others (by a replica when the dead node owned
 * it); the ring repairs itself; restarted on its data directory, the node
 * comes back and holds exactly its keys again. */
static void test_sigkill_any_node_then_restart(void **state) {
  int i, reader;

  (void)state;
  for (i = 0; i < n_nodes; i++) {
    proc *d = &nodes[i];
    if (d->pid == 0) {
      continue;
    }
    node_signal(d, SIGKILL);
    assert_true(wait_exit(d->pid, 5000) >= 0);
    reader = (i + 1) % n_nodes;
    while (nodes[reader].pid == 0 || reader == i) {
      reader = (reader + 1) % n_nodes;
    }
    d->pid = 0;
    assert_int_equal(read_all_through(&nodes[reader]), 0);
    assert_true(wait_for(ring_converged, NULL, 20000));

    node_start(d, nodes[reader].addr);
    assert_true(wait_for(ring_converged, NULL, 20000));
    assert_true(wait_for(keys_where_they_belong, NULL, 10000));
    assert_int_equal(read_all_through(d), 0);
  }
}

/* ---- mistakes ------------------------------------------------------------------- */

/* What a process that ran to the end left. */
typedef struct run_result {
  int status;      /* exit status, or 128 + signal */
  char out[16384]; /* its stdout */
  char err[8192];  /* its stderr */
} run_result;

/* Runs argv to the end (10 s at most, then it is killed and the test
 * fails), capturing its output in files of the test directory. */
static void run(char *const argv[], run_result *res) {
  char out_path[PATH_LEN], err_path[PATH_LEN];
  pid_t pid;

  snprintf(out_path, sizeof(out_path), "%s/run.out", base_dir);
  snprintf(err_path, sizeof(err_path), "%s/run.err", base_dir);
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
__attribute__((sentinel)) static void run_cli(run_result *res, ...) {
  char *argv[16];
  va_list ap;
  int n = 0;

  argv[n++] = (char *)dht_path;
  va_start(ap, res);
  while ((argv[n++] = va_arg(ap, char *)) != NULL) {
    assert_true(n < 16);
  }
  va_end(ap);
  run(argv, res);
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
static void run_cases(const char *program, const user_case *cases,
                      size_t n_cases, const placeholder *ph) {
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
    run(argv, res);
    drop_log_lines(res->err);
    if (res->status != c->status || !glob_matches(res->out, out) ||
        !glob_matches(res->err, err) || lines(res->err) > 1) {
      fail_msg("`%s`: exit %d, stdout '%s', stderr '%s'; want exit %d, "
               "stdout '%s', stderr '%s'",
               line, res->status, res->out, res->err, c->status, out, err);
    }
  }
  free(res);
}

/* Each mistake a user can make with dht gets its own one-line message on
 * stderr and exit status 2 (1 for a key that is not there), and nothing
 * on stdout but --json's error object. */
static void test_cli_errors_are_one_exact_line(void **state) {
  static const user_case cases[] = {
      /* A missing key. */
      {{"--node", "@NODE", "get", "no-such-key", NULL},
       1,
       "",
       "dht: key not found: no-such-key\n"},
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
  char dead[32];
  placeholder ph[3] = {{"@NODE", nodes[0].addr}, {"@DEAD", dead}, {NULL, NULL}};

  (void)state;
  snprintf(dead, sizeof(dead), "127.0.0.1:%d", free_port());
  run_cases(dht_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
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
  char busy[32], free_addr[32], dead[32];
  placeholder ph[4] = {
      {"@BUSY", busy}, {"@FREE", free_addr}, {"@DEAD", dead}, {NULL, NULL}};
  int port, fd = bind_loopback(&port);

  (void)state;
  /* Something else listens on @BUSY: a socket of the test's own. */
  assert_int_equal(listen(fd, 1), 0);
  snprintf(busy, sizeof(busy), "127.0.0.1:%d", port);
  snprintf(free_addr, sizeof(free_addr), "127.0.0.1:%d", free_port());
  snprintf(dead, sizeof(dead), "127.0.0.1:%d", free_port());
  run_cases(dhtd_path, cases, sizeof(cases) / sizeof(cases[0]), ph);
  close(fd);
}

/* Connects a raw TCP socket to d, for bytes no client would send. */
static int raw_connect(const proc *d) {
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
 * node goes on serving everyone else. */
static void test_bad_bytes_close_only_their_connection(void **state) {
  /* A 3-byte body that is not msgpack (0xc1 is reserved), eight times. */
  static const uint8_t junk[] = {0, 0, 0, 3, 0xc1, 0xc1, 0xc1};
  /* A header that announces 2 GiB. */
  static const uint8_t huge[] = {0x80, 0, 0, 0};
  proc *d = &nodes[0];
  int fd, i;

  (void)state;
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
  assert_int_equal(read_all_through(d), 0);
}

static void test_ring_of_one_is_whole(void **state) {
  char out_path[300], listen[32];
  run_result *res = malloc(sizeof(*res));
  char *argv[] = {(char *)dhtd_path, "--listen", listen, "--memory", NULL};
  proc lone;
  pid_t pid;

  (void)state;
  snprintf(out_path, sizeof(out_path), "%s/lone.out", base_dir);
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", free_port());
  pid = spawn(argv, out_path, out_path);
  memset(&lone, 0, sizeof(lone));
  assert_int_equal(dht_client_new(&lone.client, listen, NULL), 0);
  assert_true(wait_for(node_answers, &lone, 5000));
  dht_client_del(lone.client);
  /* A node alone has no predecessor; the walk must call that whole. */
  assert_non_null(res);
  run_cli(res, "--node", listen, "ring", NULL);
  assert_int_equal(res->status, 0);
  assert_non_null(strstr(res->out, "ring: 1 node, closed"));
  free(res);
  kill(pid, SIGKILL);
  wait_exit(pid, 5000);
}

/* ---- two at once ------------------------------------------------------------- */

static bool check_passes(void *arg) {
  run_result *res = malloc(sizeof(*res));
  proc *via = arg;
  bool ok;

  assert_non_null(res);
  run_cli(res, "--node", via->addr, "check", NULL);
  ok = res->status == 0;
  free(res);
  return ok;
}

static int by_ring_position(const void *a, const void *b) {
  return dht_id_cmp(&(*(proc *const *)a)->id, &(*(proc *const *)b)->id);
}

/* Two nodes die at once, ring neighbours included: every key stays readable
 * within a user's deadline (the client retrying on other nodes), and the
 * ring restores R copies of every key, as dht check confirms. */
static void test_sigkill_two_at_once_loses_nothing(void **state) {
  static const int pairs[][2] = {{0, 1}, {7, 8}, {14, 15}, {3, 10}};
  const char *fallbacks[BIG_RING];
  proc *ring[BIG_RING], *a, *b, *reader;
  run_result *res = malloc(sizeof(*res));
  dht_client *c;
  char key[32], want[32];
  size_t k, n_fallbacks;
  int i, failures;

  (void)state;
  for (i = 0; i < n_nodes; i++) {
    if (nodes[i].pid == 0) {
      node_start(&nodes[i], nodes[0].addr);
    }
  }
  for (i = n_nodes; i < BIG_RING; i++) {
    node_init(&nodes[i], i);
    node_start(&nodes[i], nodes[0].addr);
  }
  n_nodes = BIG_RING;
  assert_true(wait_for(ring_converged, NULL, 30000));
  assert_true(wait_for(keys_where_they_belong, NULL, 20000));
  for (i = 0; i < BIG_RING; i++) {
    ring[i] = &nodes[i];
  }
  qsort(ring, BIG_RING, sizeof(ring[0]), by_ring_position);
  /* dht check really counts copies: told to expect 2 or 4 per key, it
   * finds 3 and says the ring is wrong. */
  assert_true(wait_for(check_passes, ring[0], 15000));
  assert_non_null(res);
  run_cli(res, "--node", ring[0]->addr, "check", "--replicas", "2", NULL);
  assert_int_equal(res->status, 1);
  assert_non_null(strstr(res->out, "misplaced"));
  run_cli(res, "--node", ring[0]->addr, "check", "--replicas", "4", NULL);
  assert_int_equal(res->status, 1);
  assert_non_null(strstr(res->out, "under-replicated"));
  free(res);

  for (k = 0; k < sizeof(pairs) / sizeof(pairs[0]); k++) {
    uint64_t t0, worst = 0;
    a = ring[pairs[k][0]];
    b = ring[pairs[k][1]];
    reader = ring[(pairs[k][1] + 2) % BIG_RING];
    node_signal(a, SIGKILL);
    node_signal(b, SIGKILL);
    t0 = now_ms();
    assert_true(wait_exit(a->pid, 5000) >= 0);
    assert_true(wait_exit(b->pid, 5000) >= 0);
    a->pid = b->pid = 0;

    assert_int_equal(dht_client_new(&c, reader->addr, NULL), 0);
    for (i = 0, n_fallbacks = 0; i < BIG_RING; i++) {
      if (ring[i]->pid != 0 && ring[i] != reader) {
        fallbacks[n_fallbacks++] = ring[i]->addr;
      }
    }
    assert_int_equal(dht_client_set_fallbacks(c, fallbacks, n_fallbacks), 0);
    dht_client_set_retry(c, true);
    for (i = 0, failures = 0; i < KEYS; i++) {
      uint8_t *value;
      size_t len;
      uint64_t t = now_ms();
      key_name(i, key, sizeof(key));
      snprintf(want, sizeof(want), "value-%d", i);
      if (dht_client_get(c, key, strlen(key), &value, &len, GET_DEADLINE_MS) !=
          0) {
        failures++;
        continue;
      }
      failures += len != strlen(want) || memcmp(value, want, len) != 0;
      free(value);
      worst = now_ms() - t > worst ? now_ms() - t : worst;
    }
    dht_client_del(c);
    assert_int_equal(failures, 0);
    assert_true(wait_for(check_passes, reader, 15000));
    print_message("killed %s and %s (%s): every key read, slowest get %llu "
                  "ms; dht check passes %llu ms after the kill\n",
                  a->addr, b->addr,
                  pairs[k][1] - pairs[k][0] == 1 ? "neighbours" : "apart",
                  (unsigned long long)worst,
                  (unsigned long long)(now_ms() - t0));
    node_start(a, reader->addr);
    node_start(b, reader->addr);
    assert_true(wait_for(ring_converged, NULL, 30000));
    assert_true(wait_for(check_passes, reader, 15000));
  }
}

/* ---- setup ---------------------------------------------------------------------- */

static int teardown_all(void **state) {
  int i;

  (void)state;
  for (i = 0; i < n_nodes; i++) {
    if (nodes[i].pid > 0) {
      kill(nodes[i].pid, SIGKILL);
      wait_exit(nodes[i].pid, 5000);
    }
    dht_client_del(nodes[i].client);
  }
  if (getenv("DHT_KEEP_TEST_DIR") == NULL) {
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base_dir);
    if (system(cmd) != 0) {
      fprintf(stderr, "could not remove %s\n", base_dir);
    }
  } else {
    fprintf(stderr, "logs and data kept in %s\n", base_dir);
  }
  return 0;
}

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ring_of_8_converges),
      cmocka_unit_test(test_keys_put_through_one_node_read_through_all),
      cmocka_unit_test(test_ninth_node_takes_exactly_its_range),
      cmocka_unit_test(test_sigterm_hands_keys_on),
      cmocka_unit_test(test_sigkill_any_node_then_restart),
      cmocka_unit_test(test_bad_bytes_close_only_their_connection),
      cmocka_unit_test(test_cli_errors_are_one_exact_line),
      cmocka_unit_test(test_ring_of_one_is_whole),
      cmocka_unit_test(test_daemon_refuses_clearly),
      cmocka_unit_test(test_sigkill_two_at_once_loses_nothing),
  };

  if (argc != 3) {
    fprintf(stderr, "usage: test_daemons PATH_TO_DHTD PATH_TO_DHT\n");
    return 2;
  }
  dhtd_path = argv[1];
  dht_path = argv[2];
  signal(SIGPIPE, SIG_IGN);
  snprintf(base_dir, sizeof(base_dir), "/tmp/dht-test-XXXXXX");
  if (mkdtemp(base_dir) == NULL) {
    perror("mkdtemp");
    return 2;
  }
  return cmocka_run_group_tests(tests, NULL, teardown_all);
}
