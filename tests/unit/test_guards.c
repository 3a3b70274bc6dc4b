/*
 * test_guards.c: the programmer-error guards of libdht stay armed in the
 * builds that run. A host that calls into a node from inside the node's own
 * callback must be stopped there and then, with a message that says why, in
 * every build type (assertions are never compiled out); and a node that has
 * done real work reports its invariants intact.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dht/node.h"

static dht_node *reentered;

/* A log sink that breaks the rule: it calls back into the node. */
static void reentering_log(void *ud, dht_log_level level, const char *line) {
  (void)ud;
  (void)level;
  (void)line;
  dht_node_handle_expiry(reentered, 2000);
}

static dht_node *node_new(dht_store *store, dht_log_fn log) {
  dht_node_config cfg;
  dht_node *node = NULL;

  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = "127.0.0.1:7001";
  cfg.store = store;
  cfg.log = log;
  cfg.log_level = DHT_LOG_DEBUG;
  dht_settings_default(&cfg.settings);
  assert_int_equal(dht_node_new(&node, &cfg, 1000), 0);
  return node;
}

/* Runs fn in a child whose stderr goes into buf; returns its wait status. */
static int run_child(void (*fn)(void), char *buf, size_t len) {
  int fds[2], status;
  size_t got = 0;
  ssize_t n;
  pid_t pid;

  assert_int_equal(pipe(fds), 0);
  pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    fn();
    _exit(0);
  }
  close(fds[1]);
  while (got + 1 < len && (n = read(fds[0], buf + got, len - 1 - got)) > 0) {
    got += (size_t)n;
  }
  buf[got] = '\0';
  close(fds[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return status;
}

static void reenter_from_log(void) {
  dht_store *store = dht_store_mem_new();

  reentered = node_new(store, reentering_log);
  dht_node_create_ring(reentered, 1000); /* logs "created a ring" */
}

static void test_reentry_from_a_callback_aborts(void **state) {
  char err[4096];
  int status;

  (void)state;
  status = run_child(reenter_from_log, err, sizeof(err));
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  assert_non_null(strstr(err, "called from inside its own callback"));
}

static void test_invariants_hold_after_work(void **state) {
  dht_store *store = dht_store_mem_new();
  dht_node *node = node_new(store, NULL);
  char why[256] = "";

  (void)state;
  assert_true(dht_node_check_invariants(node, why, sizeof(why)));
  assert_int_equal(dht_node_join(node, "127.0.0.1:7002", 1000), 0);
  dht_node_handle_expiry(node, 1000 + 60000); /* the join times out */
  assert_true(dht_node_check_invariants(node, why, sizeof(why)));
  assert_string_equal(why, "");
  dht_node_del(node);
  dht_store_del(store);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_reentry_from_a_callback_aborts),
      cmocka_unit_test(test_invariants_hold_after_work),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
