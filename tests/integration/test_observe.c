/*
 * test_observe.c: what an operator watches a node by, on real daemons:
 * dhtd --metrics, scraped over real TCP after the real dht CLI has put and
 * got keys.
 *
 * What it holds the endpoint to:
 *   - the exposition passes `promtool check metrics` (Debian's prometheus
 *     package; without promtool that one check is skipped, said on
 *     stderr), lists every node counter, and its counts moved as the CLI's
 *     requests say they must: PUTs and GETs by result at least as many as
 *     were made, each histogram's _count its requests' total and its +Inf
 *     bucket;
 *   - its limits hold and cost the ring nothing: with 17 idle connections
 *     open, the 17th is closed and `dht get` is served; an idle one is
 *     closed at --metrics-timeout-ms; a 10 KiB request line, bad HTTP,
 *     another path and another method are refused, and the node goes on
 *     serving both its ring and its scrapes;
 *   - dhtd --log-format json: every line of a short real run (a join,
 *     puts and gets, graceful leaves, at --log-level debug) and of a
 *     start-up error is one JSON object with time, level, node and msg,
 *     its strings escaped, as python3 parses it (skipped, said on stderr,
 *     without python3).
 *
 *   test_observe PATH_TO_DHTD PATH_TO_DHT [PATTERN]
 *
 * Every wait polls against a deadline; only the pids started here are
 * signalled; ports are ones the kernel just handed out.
 */
#define _DEFAULT_SOURCE

#include "dht/node.h"

#define NODES_MAX 4
#define PORTS_MAX 16
#define WHY_LEN 400
#define WAIT_POLL_MS 50
#define RUN_MS 10000      /* one dht command */
#define PUTS 20           /* dht put commands run */
#define GETS 10           /* dht get commands run, of keys put */
#define METRICS_CONNS 16  /* dhtd's default --metrics-max-conns */
#define TIMEOUT_MS 3000   /* --metrics-timeout-ms of the tests' nodes */
#define SCRAPE_MAX 262144 /* bytes of one answer read at most */

#define RING_OWN_FIELDS                                                        \
  int metrics_port;           /* the first node's --metrics port */           \
  char scrape[SCRAPE_MAX];    /* the last answer read, NUL-terminated */      \
  char scrape_path[PATH_LEN]; /* ... its body, saved for promtool */

#include "ring_util.h"

/* ---- the ring ------------------------------------------------------------ */

/* Starts the first node with --metrics on a port of its own, and n - 1
 * more joining it, and waits until every first successor is right. */
static void ring_start_metered(ring *r, int n) {
  char metrics_addr[40], timeout[16];
  char *extra[] = {"--metrics", metrics_addr, "--metrics-timeout-ms", timeout,
                   NULL};

  r->metrics_port = free_port(r);
  snprintf(metrics_addr, sizeof(metrics_addr), "127.0.0.1:%d",
           r->metrics_port);
  snprintf(timeout, sizeof(timeout), "%d", TIMEOUT_MS);
  ring_start_first_with(r, n, extra);
}

/* Runs `dht [--route] --node NODE ARGS...` (up to a NULL) to the end; its
 * status. Routed, d answers every request itself; else each goes straight
 * to its key's owner, which may not be d. */
static int dht_run_as(ring *r, const node *d, bool routed, const char *a1,
                      const char *a2, const char *a3, run_result *res) {
  char *argv[8];
  int n = 0;

  argv[n++] = (char *)dht_path;
  if (routed) {
    argv[n++] = "--route";
  }
  argv[n++] = "--node";
  argv[n++] = (char *)d->addr;
  argv[n++] = (char *)a1;
  argv[n++] = (char *)a2;
  argv[n++] = (char *)a3;
  argv[n] = NULL;
  if (!run_within(r, argv, RUN_MS, res)) {
    fail_msg("dht %s %s did not finish in %d ms", a1, a2, RUN_MS);
  }
  return res->status;
}

/* dht_run_as routed by d. */
static int dht_run(ring *r, const node *d, const char *a1, const char *a2,
                   const char *a3, run_result *res) {
  return dht_run_as(r, d, true, a1, a2, a3, res);
}

/* ---- HTTP ---------------------------------------------------------------- */

/* Reads one answer from fd into r->scrape, until the node closes or its
 * Content-Length is in (5 s at most). Returns its status code, 0 when
 * none came. */
static int http_read(ring *r, int fd) {
  struct timeval tv = {5, 0};
  size_t got = 0, want = SIZE_MAX;
  int status = 0;
  ssize_t n;

  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  while (got < want && got + 1 < sizeof(r->scrape)) {
    const char *end, *cl;
    n = read(fd, r->scrape + got, sizeof(r->scrape) - 1 - got);
    if (n <= 0) {
      break;
    }
    got += (size_t)n;
    r->scrape[got] = '\0';
    end = strstr(r->scrape, "\r\n\r\n");
    cl = strstr(r->scrape, "Content-Length: ");
    if (end != NULL && cl != NULL && cl < end) {
      want = (size_t)(end + 4 - r->scrape) + strtoul(cl + 16, NULL, 10);
    }
  }
  r->scrape[got] = '\0';
  sscanf(r->scrape, "HTTP/1.1 %d", &status);
  return status;
}

/* Sends req (len bytes) on a new connection to the metrics port and reads
 * the answer into r->scrape (http_read). */
static int http_ask(ring *r, const char *req, size_t len) {
  int fd = connect_loopback(r->metrics_port), status;

  assert_int_equal(write(fd, req, len), (ssize_t)len);
  status = http_read(r, fd);
  close(fd);
  return status;
}

/* http_ask of a NUL-terminated request. */
static int http_ask_str(ring *r, const char *req) {
  return http_ask(r, req, strlen(req));
}

static int http_get(ring *r, const char *path) {
  char req[256];
  int n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n",
                   path);

  return http_ask(r, req, (size_t)n);
}

/* The body of the last answer. */
static const char *body_of(const ring *r) {
  const char *end = strstr(r->scrape, "\r\n\r\n");

  assert_non_null(end);
  return end + 4;
}

/* The value of the sample whose name and labels are exactly series (e.g.
 * `dht_keys` or `dht_requests_total{type="PUT",result="ok"}`); the test
 * fails when the last scrape has none. */
static double sample(const ring *r, const char *series) {
  const char *p = body_of(r);
  size_t len = strlen(series);

  while ((p = strstr(p, series)) != NULL) {
    if ((p == body_of(r) || p[-1] == '\n') && p[len] == ' ') {
      return strtod(p + len + 1, NULL);
    }
    p += len;
  }
  fail_msg("no sample %s in the scrape", series);
  return 0;
}

/* A scrape of /metrics into r->scrape, which must succeed. */
static void scrape(ring *r) {
  assert_int_equal(http_get(r, "/metrics"), 200);
}

/* promtool check metrics on the last scrape's body, or a note that it
 * cannot be run. */
static void promtool_check(ring *r) {
  char *which[] = {"sh", "-c", "command -v promtool", NULL};
  char cmd[PATH_LEN + 40];
  char *check[] = {"sh", "-c", cmd, NULL};
  run_result *res = malloc(sizeof(*res));
  FILE *f;

  assert_non_null(res);
  if (!run_within(r, which, RUN_MS, res) || res->status != 0) {
    fprintf(stderr, "promtool not found (Debian package prometheus): the "
                    "exposition is not linted\n");
    free(res);
    return;
  }
  snprintf(r->scrape_path, sizeof(r->scrape_path), "%s/scrape.txt", r->dir);
  f = fopen(r->scrape_path, "w");
  assert_non_null(f);
  fputs(body_of(r), f);
  fclose(f);
  snprintf(cmd, sizeof(cmd), "promtool check metrics < '%s'", r->scrape_path);
  assert_true(run_within(r, check, RUN_MS, res));
  if (res->status != 0) {
    fail_msg("promtool check metrics: exit %d: %s%s", res->status, res->out,
             res->err);
  }
  free(res);
}

/* ---- tests --------------------------------------------------------------- */

#define MOVED_GETS "dht_requests_total{type=\"GET\",result=\"moved\"}"

/* Puts and gets through the CLI (routed by the first node) move exactly
 * the counters they must, and the exposition is well-formed and complete.
 * Gets sent straight to their owners are answered MOVED by the first node
 * exactly for the keys it does not own. */
static void test_scrape_counts_what_the_cli_did(void **state) {
  static const char *const ops[] = {"GET", "PUT", "DEL", "FIND_SUCC"};
  ring *r = *state;
  run_result *res = malloc(sizeof(*res));
  char key[32], value[32], series[160];
  node *order[NODES_MAX];
  size_t i, moved = 0;
  double count;

  assert_non_null(res);
  ring_start_metered(r, 2);
  for (i = 0; i < PUTS; i++) {
    snprintf(key, sizeof(key), "m-key-%zu", i);
    snprintf(value, sizeof(value), "m-value-%zu", i);
    assert_int_equal(dht_run(r, &r->nodes[0], "put", key, value, res), 0);
  }
  for (i = 0; i < GETS; i++) {
    snprintf(key, sizeof(key), "m-key-%zu", i);
    assert_int_equal(dht_run(r, &r->nodes[0], "get", key, NULL, res), 0);
  }
  assert_int_equal(dht_run(r, &r->nodes[0], "get", "m-missing", NULL, res), 1);

  scrape(r);
  assert_non_null(strstr(r->scrape, "Content-Type: text/plain; version=0.0.4"));
  promtool_check(r);
  /* The first node took every request from the CLI, and answered each
   * itself or relayed its owner's answer. */
  assert_true(sample(r, "dht_requests_total{type=\"PUT\",result=\"ok\"}") >=
              PUTS);
  assert_true(sample(r, "dht_requests_total{type=\"GET\",result=\"ok\"}") >=
              GETS);
  assert_true(
      sample(r, "dht_requests_total{type=\"GET\",result=\"not_found\"}") >= 1);
  assert_true(sample(r, "dht_messages_received_total{type=\"PUT\"}") >= PUTS);
  for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
    double answered = 0;
    static const char *const results[] = {"ok", "not_found", "error"};
    size_t k;
    for (k = 0; k < 3; k++) {
      snprintf(series, sizeof(series),
               "dht_requests_total{type=\"%s\",result=\"%s\"}", ops[i],
               results[k]);
      answered += sample(r, series);
    }
    snprintf(series, sizeof(series),
             "dht_request_duration_seconds_count{op=\"%s\"}", ops[i]);
    count = sample(r, series);
    assert_true(count == answered);
    snprintf(series, sizeof(series),
             "dht_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"}",
             ops[i]);
    assert_true(sample(r, series) == count);
  }
  assert_true(sample(r, "dht_request_duration_seconds_count{op=\"PUT\"}") >=
              PUTS);
  assert_true(sample(r, "dht_bytes_received_total{class=\"client\"}") > 0);
  assert_true(sample(r, "dht_bytes_sent_total{class=\"ring\"}") > 0);
  assert_true(sample(r, "dht_node_joined") == 1);
  assert_true(sample(r, "dht_node_state{state=\"joined\"}") == 1);
  assert_true(sample(r, "dht_successors") >= 1);
  assert_true(sample(r, "dht_predecessor_known") == 1);
  assert_true(sample(r, "dht_keys") >= 1);
  assert_true(sample(r, "dht_store_data_bytes") > 0);
  /* In a ring of two every key is on both nodes: each PUT was stored here
   * as its owner or came as its replica (the keys may all be the other
   * node's: the ids come from random ports). */
  assert_true(sample(r, "dht_puts_total") +
                  sample(r, "dht_replicate_keys_in_total") >=
              PUTS);
  /* Every node counter is there, under its own name. */
#define HAS_COUNTER(name)                                                      \
  if (strstr(#name, "_ms") == NULL) {                                          \
    snprintf(series, sizeof(series), "\n# HELP dht_%s", #name);               \
    if (strstr(r->scrape, series) == NULL) {                                   \
      fail_msg("no counter %s in the scrape", #name);                          \
    }                                                                          \
  }
  DHT_NODE_COUNTER_MAP(HAS_COUNTER)
#undef HAS_COUNTER
  /* Straight to the owner, starting at the first node, each time from a
   * fresh CLI: it serves its own keys and answers MOVED for the others. */
  assert_true(sample(r, MOVED_GETS) == 0);
  assert_int_equal(ring_order(r, order), 2);
  for (i = 0; i < GETS; i++) {
    snprintf(key, sizeof(key), "m-key-%zu", i);
    assert_int_equal(
        dht_run_as(r, &r->nodes[0], false, "get", key, NULL, res), 0);
    moved += order[owner_pos(order, 2, key)] != &r->nodes[0];
  }
  scrape(r);
  assert_true(sample(r, MOVED_GETS) == (double)moved);
  free(res);
  /* HEAD: the same headers, no body. */
  assert_int_equal(http_ask_str(r, "HEAD /metrics HTTP/1.1\r\n\r\n"), 200);
  assert_string_equal(body_of(r), "");
}

/* True when fd has been neither answered nor closed: nothing to read. */
static bool still_open(int fd) {
  char c;
  ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);

  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* The condition of a metrics connection the test holds idle. */
static int idle_fd;
static bool idle_closed(ring *r, char *why, size_t why_len) {
  (void)r;
  snprintf(why, why_len, "an idle metrics connection is still open");
  return !still_open(idle_fd);
}

/* The endpoint's limits: connections, time, request size, bad requests;
 * none of them stops the ring serving, or the next scrape. */
static void test_limits_hold_and_the_ring_serves_on(void **state) {
  ring *r = *state;
  run_result *res = malloc(sizeof(*res));
  char *big = malloc(10 * 1024 + 64);
  int fds[METRICS_CONNS + 1], i;
  size_t n;

  assert_non_null(res);
  assert_non_null(big);
  ring_start_metered(r, 1);
  assert_int_equal(dht_run(r, &r->nodes[0], "put", "lim-key", "v", res), 0);

  /* 17 idle connections: the first 16 are taken, the 17th closed. */
  for (i = 0; i <= METRICS_CONNS; i++) {
    fds[i] = connect_loopback(r->metrics_port);
  }
  assert_true(closed_by_peer(fds[METRICS_CONNS]));
  close(fds[METRICS_CONNS]);
  assert_int_equal(dht_run(r, &r->nodes[0], "get", "lim-key", NULL, res), 0);
  assert_string_equal(res->out, "v");
  for (i = 0; i < METRICS_CONNS; i++) {
    assert_true(still_open(fds[i]));
  }
  /* ... and are closed once idle for --metrics-timeout-ms. */
  idle_fd = fds[0];
  wait_until(r, idle_closed, TIMEOUT_MS * 3, "idle connection closed");
  for (i = 0; i < METRICS_CONNS; i++) {
    close(fds[i]);
  }

  /* A 10 KiB request line. */
  n = (size_t)snprintf(big, 16, "GET /");
  memset(big + n, 'a', 10 * 1024);
  n += 10 * 1024;
  n += (size_t)snprintf(big + n, 32, " HTTP/1.1\r\n\r\n");
  assert_int_equal(http_ask(r, big, n), 414);
  /* Bad HTTP, another path, another method. */
  assert_int_equal(http_ask_str(r, "HELLO THERE\r\n\r\n"), 400);
  assert_int_equal(http_ask_str(r, "GET /metrics HTTP/1.1\r\n"
                                   "Content-Length: 3\r\n\r\nabc"),
                   400);
  assert_int_equal(http_get(r, "/"), 404);
  assert_int_equal(http_ask_str(r, "POST /metrics HTTP/1.1\r\n\r\n"), 405);
  assert_non_null(strstr(r->scrape, "Allow: GET, HEAD\r\n"));

  /* Keep-alive: a request sent behind another, and finished later. */
  fds[0] = connect_loopback(r->metrics_port);
  for (i = 0; i < 2; i++) {
    static const char *const parts[] = {"GET / HTTP/1.1\r\n\r\nGET /metr",
                                        "ics HTTP/1.1\r\n\r\n"};
    n = strlen(parts[i]);
    assert_int_equal(write(fds[0], parts[i], n), (ssize_t)n);
    assert_int_equal(http_read(r, fds[0]), i == 0 ? 404 : 200);
  }
  close(fds[0]);

  /* The node serves its ring and its scrapes as before, and counted it. */
  assert_int_equal(dht_run(r, &r->nodes[0], "get", "lim-key", NULL, res), 0);
  scrape(r);
  assert_true(sample(r, "dht_metrics_connections_refused_total") >= 1);
  assert_true(sample(r, "dht_metrics_timeouts_total") >= 1);
  assert_true(sample(r, "dht_metrics_http_responses_total{code=\"414\"}") ==
              1);
  assert_true(sample(r, "dht_metrics_http_responses_total{code=\"400\"}") ==
              2);
  free(big);
  free(res);
}

/* Runs python3 -c prog on the files args (up to a NULL); false, said on
 * stderr, when there is no python3. The test fails on a non-zero exit. */
static bool python_check(ring *r, const char *prog, const char *const args[]) {
  char *which[] = {"sh", "-c", "command -v python3", NULL};
  char *argv[8];
  run_result *res = malloc(sizeof(*res));
  int n = 0;

  assert_non_null(res);
  if (!run_within(r, which, RUN_MS, res) || res->status != 0) {
    fprintf(stderr, "python3 not found: the JSON log is not parsed\n");
    free(res);
    return false;
  }
  argv[n++] = "python3";
  argv[n++] = "-c";
  argv[n++] = (char *)prog;
  for (; *args != NULL; args++) {
    assert_true(n < 7);
    argv[n++] = (char *)*args;
  }
  argv[n] = NULL;
  assert_true(run_within(r, argv, RUN_MS, res));
  if (res->status != 0) {
    fail_msg("python3 says: %s%s", res->out, res->err);
  }
  free(res);
  return true;
}

/* Every line of each file is one JSON object with the keys every line has,
 * in their forms; the node, once named, with its id and address. */
static const char check_json_lines[] =
    "import json, re, sys\n"
    "t = re.compile(r'^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$')\n"
    "for path in sys.argv[1:]:\n"
    "    lines = open(path, 'rb').read().decode('utf-8').split('\\n')\n"
    "    assert lines[-1] == '', path + ': no newline at the end'\n"
    "    assert len(lines) > 3, path + ': %d lines' % len(lines)\n"
    "    for n, line in enumerate(lines[:-1], 1):\n"
    "        where = '%s:%d: ' % (path, n)\n"
    "        o = json.loads(line)\n"
    "        assert isinstance(o, dict), where + 'not an object'\n"
    "        for k in ('time', 'level', 'node', 'msg'):\n"
    "            assert k in o, where + 'no ' + k\n"
    "        assert t.match(o['time']), where + o['time']\n"
    "        assert o['level'] in ('error', 'warn', 'info', 'debug'), where\n"
    "        assert isinstance(o['msg'], str), where\n"
    "        assert re.match('^[0-9a-f]{40}$', o['node']['id']), where\n"
    "        assert o['node']['addr'].startswith('127.0.0.1:'), where\n";

/* The one line of a start-up error names the bad bytes escaped: a control
 * character as \u0001, a byte that is not UTF-8 as U+FFFD. */
static const char check_startup_error[] =
    "import json, sys\n"
    "lines = open(sys.argv[1], 'rb').read().decode('utf-8').split('\\n')\n"
    "assert len(lines) == 2 and lines[1] == '', lines\n"
    "o = json.loads(lines[0])\n"
    "assert o['level'] == 'error', o\n"
    "assert 'bad\\x01\\ufffd\"\\\\:1' in o['msg'], o['msg']\n";

/* A short real run in JSON, and a start-up error, parse line by line. */
static void test_json_log_is_one_object_per_line(void **state) {
  char *json[] = {"--log-format", "json", NULL};
  char bad_join[] = "bad\x01\xff\"\\:1";
  char err_path[PATH_LEN], free_addr[40];
  char *argv[] = {(char *)dhtd_path, "--listen",     free_addr, "--memory",
                  "--log-format",    "json",         "--join",  bad_join,
                  NULL};
  const char *logs[3] = {NULL, NULL, NULL};
  ring *r = *state;
  run_result *res = malloc(sizeof(*res));
  FILE *f;

  assert_non_null(res);
  ring_start_first_with(r, 1, json);
  node_start_args(node_add(r, NULL), &r->nodes[0], NULL, NULL, json);
  wait_until(r, ring_succs_settled, SETTLE_MS, "ring of 2 settled");
  assert_int_equal(dht_run(r, &r->nodes[0], "put", "log-key", "v", res), 0);
  assert_int_equal(dht_run(r, &r->nodes[1], "get", "log-key", NULL, res), 0);
  node_stop(&r->nodes[1], SIGTERM, 15000);
  node_stop(&r->nodes[0], SIGTERM, 15000);
  logs[0] = r->nodes[0].log;
  logs[1] = r->nodes[1].log;
  if (python_check(r, check_json_lines, logs)) {
    snprintf(free_addr, sizeof(free_addr), "127.0.0.1:%d", free_port(r));
    assert_true(run_within(r, argv, RUN_MS, res));
    assert_int_equal(res->status, 2);
    assert_string_equal(res->out, "");
    snprintf(err_path, sizeof(err_path), "%s/startup.err", r->dir);
    f = fopen(err_path, "w");
    assert_non_null(f);
    fputs(res->err, f);
    fclose(f);
    logs[0] = err_path;
    logs[1] = NULL;
    python_check(r, check_startup_error, logs);
  }
  free(res);
}

/* A test with a fresh ring of its own (ring_util.h's plain fixtures). */
#define RING_TEST(test)                                                        \
  cmocka_unit_test_setup_teardown(test, ring_fixture_new, ring_fixture_del)

int main(int argc, char **argv) {
  const struct CMUnitTest tests[] = {
      RING_TEST(test_scrape_counts_what_the_cli_did),
      RING_TEST(test_limits_hold_and_the_ring_serves_on),
      RING_TEST(test_json_log_is_one_object_per_line),
  };

  return ring_tests_main(argc, argv, "test_observe", "/tmp/dht-test-XXXXXX",
                         tests, sizeof(tests) / sizeof(tests[0]));
}
