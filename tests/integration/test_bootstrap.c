/*
 * test_bootstrap.c: how real dhtd processes find their ring: a --join list
 * tried in turn, a host name with several addresses, and the peers a node
 * remembers in its data directory (DIR/peers) and re-joins through after a
 * restart.
 *
 * What it holds the daemons to:
 *   - a --join list that starts with a port nobody listens on and a name
 *     that does not resolve joins through the next entry, and quickly: well
 *     within one --timeout-ms, where waiting out a candidate would take
 *     that long and the retry backoff twice as long;
 *   - a name whose first address refuses joins through its next address
 *     (`localhost` when it has two addresses, else a name of the test's own
 *     through nss_wrapper, preloaded into dhtd; skipped, said on stderr,
 *     when neither can be had);
 *   - in a ring of three, C, joined through A, stops (SIGTERM), A dies
 *     (SIGKILL), and C restarted on its data directory with --join A
 *     re-joins through the peers it remembers, and `dht` finds every key
 *     through it;
 *   - a peers file full of garbage is skipped in one log line, and the
 *     node starts a new ring as it would without one.
 *
 *   test_bootstrap PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 *
 * Every wait polls against a deadline; only the pids started here are
 * signalled; ports are ones the kernel just handed out.
 */
#define _DEFAULT_SOURCE

#include <netdb.h>
#include <sys/stat.h>

#include "dht/node.h"

#define NODES_MAX 4
#define PORTS_MAX 16
#define WHY_LEN 400
#define WAIT_POLL_MS 20
#define RUN_MS 10000       /* one dht command */
#define JOIN_MS 10000      /* for a started node to be in a ring */
#define STOP_MS 15000      /* for a signalled node to exit */
#define KEYS 20            /* keys the restart test puts */
#define TIMED_RPC_MS 1000  /* --timeout-ms of a node whose join is timed */
#define LOG_MAX 65536      /* bytes of a node's log read at most */

#ifndef DHT_NSS_WRAPPER
#define DHT_NSS_WRAPPER "" /* not found when the build was configured */
#endif

#define RING_OWN_FIELDS /* none */

#include "ring_util.h"

/* ---- nodes --------------------------------------------------------------- */

/* Starts d on its data directory with the words of extra (up to a NULL)
 * and env_set (spawn's) and nothing to join but what extra says. */
static void node_start_with(node *d, char *const extra[],
                            char *const env_set[]) {
  node_start_args(d, NULL, NULL, env_set, extra);
}

/* The size of d's log now: where the lines of its next run begin. */
static long log_size(const node *d) {
  FILE *f = fopen(d->log, "r");
  long n = 0;

  if (f != NULL && fseek(f, 0, SEEK_END) == 0) {
    n = ftell(f);
  }
  if (f != NULL) {
    fclose(f);
  }
  return n;
}

/* d's log from byte from on, NUL-terminated, LOG_MAX bytes at most. */
static void log_since(const node *d, long from, char *buf, size_t len) {
  FILE *f = fopen(d->log, "r");
  size_t n = 0;

  if (f != NULL && fseek(f, from, SEEK_SET) == 0) {
    n = fread(buf, 1, len - 1, f);
  }
  if (f != NULL) {
    fclose(f);
  }
  buf[n] = '\0';
}

/* The node clock ("t=...") of the first line of log that contains text;
 * fails the test when there is none. */
static uint64_t line_time(const char *log, const char *text) {
  const char *hit = strstr(log, text), *line, *t;

  if (hit == NULL) {
    fail_msg("no log line says '%s'", text);
  }
  for (line = hit; line > log && line[-1] != '\n'; line--) {
  }
  t = strstr(line, " t=");
  if (t == NULL || t > hit) {
    fail_msg("the line that says '%s' has no time", text);
  }
  return strtoull(t + 3, NULL, 10);
}

/* How many times text occurs in log. */
static int occurrences(const char *log, const char *text) {
  int n = 0;

  for (; (log = strstr(log, text)) != NULL; log += strlen(text)) {
    n++;
  }
  return n;
}

/* Waits until d says (STATS) that it is in a ring; fails the test, with
 * its log, when it exits or has not joined within JOIN_MS. Returns the ms
 * it took. */
static uint64_t wait_joined(node *d) {
  uint64_t start = now_ms(), state = 0;
  dht_client_stats_result *st = malloc(sizeof(*st));
  char log[LOG_MAX];
  int status;

  assert_non_null(st);
  while (state != DHT_NODE_JOINED) {
    if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
      d->pid = 0;
      log_since(d, 0, log, sizeof(log));
      fail_msg("%s exited before it joined; its log:\n%s", d->addr, log);
    }
    if (now_ms() - start > JOIN_MS) {
      log_since(d, 0, log, sizeof(log));
      fail_msg("%s has not joined after %d ms; its log:\n%s", d->addr,
               JOIN_MS, log);
    }
    if (dht_client_stats(d->client, st, 200) != 0 ||
        dht_client_stats_counter(st, "state", &state) != 0) {
      state = 0;
    }
    if (state != DHT_NODE_JOINED) {
      pause_ms(WAIT_POLL_MS);
    }
  }
  free(st);
  return now_ms() - start;
}

/* Writes len bytes of data to d's data directory's peers file, making the
 * directory. */
static void write_peers_file(const node *d, const void *data, size_t len) {
  char path[PATH_LEN + 8];
  FILE *f;

  assert_int_equal(mkdir(d->dir, 0700), 0);
  snprintf(path, sizeof(path), "%s/peers", d->dir);
  f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* ---- a --join list ------------------------------------------------------- */

/* --join DEAD,nowhere.invalid:PORT,A: the dead port refuses and the name
 * does not resolve; the join goes through A, and what the dead candidate
 * cost is a refused connect, not a timeout or a backoff. */
static void test_join_list_skips_dead_and_unresolvable(void **state) {
  ring *r = *state;
  char list[160], timeout[16], log[LOG_MAX], dead_failed[80], via_a[80];
  char *extra[] = {"--join", list, "--timeout-ms", timeout, NULL};
  node *a, *b;
  uint64_t took_ms, join_ms;
  int dead;

  ring_start_first_with(r, 1, NULL);
  a = &r->nodes[0];
  dead = free_port(r);
  b = node_add(r, NULL);
  snprintf(list, sizeof(list), "127.0.0.1:%d,nowhere.invalid:%d,%s", dead,
           a->port, a->addr);
  snprintf(timeout, sizeof(timeout), "%d", TIMED_RPC_MS);
  node_start_with(b, extra, NULL);
  took_ms = wait_joined(b);
  log_since(b, 0, log, sizeof(log));
  assert_non_null(strstr(log, "--join nowhere.invalid:"));
  assert_non_null(strstr(log, "cannot resolve it"));
  snprintf(dead_failed, sizeof(dead_failed), "join through 127.0.0.1:%d failed",
           dead);
  snprintf(via_a, sizeof(via_a), "joined through %s:", a->addr);
  join_ms = line_time(log, via_a) - line_time(log, dead_failed);
  print_message("joined through the third entry %llu ms after the first "
                "failed (%llu ms from the start of the process); one "
                "--timeout-ms is %d ms\n",
                (unsigned long long)join_ms, (unsigned long long)took_ms,
                TIMED_RPC_MS);
  assert_int_equal(occurrences(log, "retrying"), 0);
  assert_true(join_ms < TIMED_RPC_MS);
}

/* ---- a name with several addresses --------------------------------------- */

/* How a host name resolves, as dhtd writes its addresses. */
typedef struct name_case {
  char name[32];       /* the name */
  char dead[32];       /* its first address, where nobody listens */
  char live[32];       /* its last, where the node joined listens */
  char hosts[PATH_LEN]; /* with nss_wrapper: the hosts file; "" without */
} name_case;

/* The address of ai as dhtd writes it, without the port. */
static void ai_host(const struct addrinfo *ai, char *out, size_t len) {
  char ip[INET6_ADDRSTRLEN];
  const void *raw =
      ai->ai_family == AF_INET
          ? (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr
          : (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)
                ->sin6_addr;

  inet_ntop(ai->ai_family, raw, ip, sizeof(ip));
  snprintf(out, len, ai->ai_family == AF_INET ? "%s" : "[%s]", ip);
}

/* `localhost` when it resolves to two addresses or more here. */
static bool localhost_case(name_case *nc) {
  struct addrinfo hints, *res = NULL, *ai;
  int n = 0;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo("localhost", "1", &hints, &res) != 0) {
    return false;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next, n++) {
    ai_host(ai, n == 0 ? nc->dead : nc->live, sizeof(nc->live));
  }
  freeaddrinfo(res);
  snprintf(nc->name, sizeof(nc->name), "localhost");
  nc->hosts[0] = '\0';
  return n >= 2;
}

/* A name of the test's own, through nss_wrapper's hosts file: first
 * 127.0.0.2, where nobody listens, then 127.0.0.1. */
static bool nss_wrapper_case(const ring *r, name_case *nc) {
  FILE *f;

  if (DHT_NSS_WRAPPER[0] == '\0' || access(DHT_NSS_WRAPPER, R_OK) != 0) {
    return false;
  }
  snprintf(nc->name, sizeof(nc->name), "bootstrap.test");
  snprintf(nc->dead, sizeof(nc->dead), "127.0.0.2");
  snprintf(nc->live, sizeof(nc->live), "127.0.0.1");
  snprintf(nc->hosts, sizeof(nc->hosts), "%s/hosts", r->dir);
  f = fopen(nc->hosts, "w");
  assert_non_null(f);
  fprintf(f, "%s %s\n%s %s\n", nc->dead, nc->name, nc->live, nc->name);
  assert_int_equal(fclose(f), 0);
  return true;
}

/* --join NAME:PORT, NAME's first address refusing: the node joins through
 * its next. */
static void test_join_name_with_several_addresses(void **state) {
  ring *r = *state;
  static char preload[PATH_LEN + 16], hosts_env[PATH_LEN + 24];
  char *env[] = {preload, hosts_env, NULL};
  char join[96], live[40], refused[128], log[LOG_MAX];
  char *extra[] = {"--join", join, NULL};
  name_case nc;
  node *a, *b;
  int port;

  if (!localhost_case(&nc) && !nss_wrapper_case(r, &nc)) {
    print_message("skipped: localhost has one address here, and there is no "
                  "nss_wrapper to make a name with two (apt-get install "
                  "libnss-wrapper, then configure again)\n");
    skip();
  }
  port = free_port(r);
  snprintf(live, sizeof(live), "%s:%d", nc.live, port);
  a = node_add(r, live);
  node_start_with(a, NULL, NULL);
  if (!node_answers_by(a, now_ms() + 5000)) {
    fail_msg("%s does not answer after 5 s: %s", a->addr,
             dht_client_last_error(a->client));
  }
  b = node_add(r, NULL);
  snprintf(join, sizeof(join), "%s:%d", nc.name, port);
  snprintf(preload, sizeof(preload), "LD_PRELOAD=%s", DHT_NSS_WRAPPER);
  snprintf(hosts_env, sizeof(hosts_env), "NSS_WRAPPER_HOSTS=%s", nc.hosts);
  node_start_with(b, extra, nc.hosts[0] != '\0' ? env : NULL);
  wait_joined(b);
  log_since(b, 0, log, sizeof(log));
  snprintf(refused, sizeof(refused), "connect to %s:%d: connection refused",
           nc.dead, port);
  assert_non_null(strstr(log, refused));
  assert_non_null(strstr(log, "joined through"));
  print_message("%s resolved to %s and %s (%s): joined through the second\n",
                nc.name, nc.dead, nc.live,
                nc.hosts[0] != '\0' ? "nss_wrapper" : "the system's resolver");
}

/* ---- seeds ----------------------------------------------------------------- */

/* Runs dht --node d's address with args into *res, which must end with
 * exit 0 (a wait within its --timeout-ms, given first in args). */
static void dht_ok(ring *r, const node *d, const char *const *args,
                   run_result *res) {
  if (!dht_on(r, d, 3 * JOIN_MS, args, res) || res->status != 0) {
    fail_msg("dht --node %s %s: exit %d\n%s%s", d->addr, args[0],
             res->status, res->out, res->err);
  }
}

/*
 * Three nodes, each with --join naming all three (itself included: each is
 * a seed), started at once, as a service on every machine of a new ring
 * would be: none finds a ring to join, each founds one, and they become
 * one ring. Then every node is killed and all three start again at once on
 * their data directories, as after a power cut: the ring comes back whole,
 * every key on it. Without seeds founding, every node gave up.
 */
static void test_seeds_start_and_restart_a_whole_ring(void **state) {
  static const char *const wait[] = {"wait", "--ring", "--nodes", "3", NULL};
  static const char *const check[] = {"check", NULL};
  run_result *res = malloc(sizeof(*res));
  ring *r = *state;
  char list[3 * 41], key[16], value[32];
  char *extra[] = {"--join", list, NULL};
  int i, k, round;

  assert_non_null(res);
  for (i = 0; i < 3; i++) {
    node_add(r, NULL);
  }
  snprintf(list, sizeof(list), "%s,%s,%s", r->nodes[0].addr, r->nodes[1].addr,
           r->nodes[2].addr);
  for (round = 0; round < 2; round++) {
    for (i = 0; i < 3; i++) {
      node_start_with(&r->nodes[i], extra, NULL);
    }
    for (i = 0; i < 3; i++) {
      wait_joined(&r->nodes[i]);
    }
    dht_ok(r, &r->nodes[round], wait, res);
    dht_ok(r, &r->nodes[2], check, res);
    for (k = 0; k < KEYS; k++) {
      dht_client *c = r->nodes[k % 3].client;
      uint8_t *got = NULL;
      size_t got_len = 0;
      snprintf(key, sizeof(key), "key-%d", k);
      snprintf(value, sizeof(value), "value-%d", k);
      if (round == 0) {
        assert_int_equal(dht_client_put(c, key, strlen(key), value,
                                        strlen(value), CALL_MS),
                         0);
      } else {
        assert_int_equal(dht_client_get(c, key, strlen(key), &got, &got_len,
                                        CALL_MS),
                         0);
        assert_true(got_len == strlen(value) &&
                    memcmp(got, value, got_len) == 0);
        free(got);
      }
    }
    for (i = 0; round == 0 && i < 3; i++) {
      node_stop(&r->nodes[i], SIGKILL, STOP_MS);
    }
  }
  free(res);
}

/* ---- remembered peers ---------------------------------------------------- */

/* A ring of three, C joined through A. C stops, A dies; C, restarted on
 * its data directory with --join A, re-joins through the peers it
 * remembers, and dht reads every key through it. */
static void test_restart_rejoins_through_remembered_peers(void **state) {
  ring *r = *state;
  char key[16], value[32], peers[LOG_MAX], path[PATH_LEN + 8], log[LOG_MAX];
  char a_failed[80], via_b[80];
  struct stat st;
  node *a, *b, *c;
  uint64_t took_ms;
  run_result *res = malloc(sizeof(*res));
  long from;
  int i;

  assert_non_null(res);
  ring_start_first_with(r, 3, NULL);
  a = &r->nodes[0];
  b = &r->nodes[1];
  c = &r->nodes[2];
  for (i = 0; i < KEYS; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    snprintf(value, sizeof(value), "value-%d", i);
    if (dht_client_put(a->client, key, strlen(key), value, strlen(value),
                       CALL_MS) != 0) {
      fail_msg("put %s: %s", key, dht_client_last_error(a->client));
    }
  }
  node_stop(c, SIGTERM, STOP_MS);
  snprintf(path, sizeof(path), "%s/peers", c->dir);
  read_file(path, peers, sizeof(peers));
  if (strstr(peers, a->addr) == NULL || strstr(peers, b->addr) == NULL) {
    fail_msg("%s does not list both %s and %s:\n%s", path, a->addr, b->addr,
             peers);
  }
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600); /* as the store's files */
  node_stop(a, SIGKILL, STOP_MS);

  from = log_size(c);
  node_start_under(c, a, NULL, NULL); /* --join A, which is dead */
  took_ms = wait_joined(c);
  log_since(c, from, log, sizeof(log));
  snprintf(a_failed, sizeof(a_failed), "join through %s failed", a->addr);
  snprintf(via_b, sizeof(via_b), "joined through %s:", b->addr);
  assert_non_null(strstr(log, a_failed));
  assert_non_null(strstr(log, via_b));
  print_message("restarted with --join %s (dead): joined through %s, a "
                "remembered peer, %llu ms after its start\n",
                a->addr, b->addr, (unsigned long long)took_ms);
  wait_until(r, ring_succs_settled, SETTLE_MS, "ring of B and C settled");
  for (i = 0; i < KEYS; i++) {
    char want[40];
    char *argv[] = {(char *)dht_path, "--node", c->addr, "get", key, NULL};
    snprintf(key, sizeof(key), "key-%d", i);
    snprintf(want, sizeof(want), "value-%d", i);
    if (!run_within(r, argv, RUN_MS, res)) {
      fail_msg("dht get %s did not finish in %d ms", key, RUN_MS);
    }
    if (res->status != 0 || strcmp(res->out, want) != 0) {
      fail_msg("dht --node %s get %s: exit %d, '%s', stderr '%s'", c->addr,
               key, res->status, res->out, res->err);
    }
  }
  free(res);
}

/* A peers file of garbage: binary bytes, a NUL, a line far too long, no
 * port, a bad port, an open bracket, the node's own address (which is no
 * way into a ring), and more bytes than are read. The node says so in one
 * line and starts a ring of its own, as without the file. */
static void test_garbage_peers_file_still_starts(void **state) {
  static const char lines[] = "\x01\x02\xff\xfe garbage\n"
                              "127.0.0.1:1\0x\n"
                              "no-port\n"
                              "127.0.0.1:99999\n"
                              "[::1:7100\n";
  size_t len = sizeof(lines) - 1 + 300 + 100 * 1024, o;
  char *data = malloc(len), log[LOG_MAX];
  ring *r = *state;
  node *d = node_add(r, NULL);

  assert_non_null(data);
  memcpy(data, lines, sizeof(lines) - 1);
  o = sizeof(lines) - 1;
  o += (size_t)snprintf(data + o, len - o, "%s\n", d->addr);
  memset(data + o, 'x', 300); /* a line longer than an address may be */
  o += 300;
  data[o] = '\n';
  for (o++; o < len; o++) {
    data[o] = (char)(o * 131 % 251); /* bytes, some of them newlines */
  }
  write_peers_file(d, data, len);
  free(data);
  node_start_with(d, NULL, NULL);
  wait_joined(d);
  log_since(d, 0, log, sizeof(log));
  assert_int_equal(occurrences(log, "lines skipped"), 1);
  assert_int_equal(occurrences(log, "started a new ring"), 1);
  if (dht_client_put(d->client, "k", 1, "v", 1, CALL_MS) != 0) {
    fail_msg("put through %s: %s", d->addr, dht_client_last_error(d->client));
  }
}

#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_fixture_new, ring_fixture_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_join_list_skips_dead_and_unresolvable),
      RING_TEST(test_join_name_with_several_addresses),
      RING_TEST(test_restart_rejoins_through_remembered_peers),
      RING_TEST(test_seeds_start_and_restart_a_whole_ring),
      RING_TEST(test_garbage_peers_file_still_starts),
  };

  return ring_tests_main(argc, argv, "test_bootstrap", "/tmp/dht-test-XXXXXX",
                         tests, sizeof(tests) / sizeof(tests[0]));
}
