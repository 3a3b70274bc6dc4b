/*
 * sim_scenarios.c: scripted regression cases. Each one sets up an exact
 * situation that once broke the ring or lost a write (or that the random
 * runs reach only rarely) and requires the ring to converge, or the write
 * to read back, afterwards. Unlike a seed of
 * the random runs, a script keeps testing the same situation when the
 * simulator's own random choices change.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "dht/err.h"

#include "sim.h"
#include "sim_ring.h"
#include "sim_world.h"

#define BUILD_GAP_MS 50
#define CONVERGE_MS 120000

/* A ring of n nodes built by joins BUILD_GAP_MS apart, converged. */
static void build_ring(sim_world *w, uint32_t n) {
  uint32_t i;

  sim_world_create_ring(w, sim_world_add_node(w));
  for (i = 1; i < n && !w->failed; i++) {
    sim_world_run_until(w, w->now_ms + BUILD_GAP_MS);
    sim_world_join(w, sim_world_add_node(w),
                   sim_world_random_joined(w, SIM_NO_SLOT));
  }
  if (!w->failed) {
    sim_ring_converge(w, CONVERGE_MS, false, "build");
  }
}

/* A node joins, and its successor crashes the moment the join completes,
 * before the newcomer has learned any other node. It must not end up as a
 * ring of one that nobody knows. */
static void successor_crash_at_join(sim_world *w) {
  sim_ring ring;
  uint32_t newcomer, successor, bootstrap;
  uint64_t give_up;

  build_ring(w, 16);
  if (w->failed) {
    return;
  }
  newcomer = sim_world_add_node(w);
  sim_ring_build(&ring, w, true);
  successor =
      ring.members[sim_ring_successor(&ring, &w->nodes[newcomer].id)].slot;
  sim_ring_free(&ring);
  do {
    bootstrap = sim_world_random_joined(w, successor);
  } while (bootstrap == newcomer);
  sim_world_join(w, newcomer, bootstrap);
  give_up = w->now_ms + 10000;
  while (!w->failed && !sim_world_is_joined(w, newcomer) &&
         w->now_ms < give_up) {
    sim_world_run_until(w, w->now_ms + 1);
  }
  if (!sim_world_is_joined(w, newcomer)) {
    sim_world_fail(w, "%s did not join within 10 s", w->nodes[newcomer].addr);
    return;
  }
  sim_world_crash(w, successor, true);
  sim_ring_converge(w, CONVERGE_MS, false, "successor crash");
}

/* Half the ring is cut off from the other half for longer than failure
 * detection takes, so each half closes into a ring of its own; once the
 * partition heals the two must merge again. */
static void long_partition(sim_world *w) {
  size_t i;
  int cut;

  build_ring(w, 32);
  if (w->failed) {
    return;
  }
  cut = sim_net_path_fault_start(&w->net, SIM_PATH_CUT, SIM_PATH_BOTH, 0);
  for (i = 0; i < w->n_nodes; i++) {
    sim_net_path_side(&w->net, cut, (uint32_t)i, (uint8_t)(i % 2));
  }
  sim_world_run_until(w, w->now_ms + 60000);
  sim_net_path_fault_end(&w->net, cut);
  sim_ring_converge(w, CONVERGE_MS, false, "partition");
}

/*
 * Regression (found by `dht-sim run --seed 95 --nodes 21 --nodes-max 88
 * --fault-ms-max 30000`; fixed in node_ring.c, where a re-joining node now
 * tries every peer on its lost list each round). A node whose bootstrap
 * has died for good loses, one after another, its successor and its
 * predecessor (both die for good too), then is cut off from everybody by a
 * partition, long enough to declare every peer dead. Alone, it re-joins in
 * rounds of join_attempts (3) tries: its bootstrap, then the first and the
 * second peer of its lost list - the three dead nodes, every round, while
 * the live peers it lost in the partition, further down the list, were
 * never tried. It is JOINING almost all the time, so it neither probed them
 * nor let the ring merge it back, and it stayed out of the ring for ever.
 */
static void cut_off_with_dead_bootstrap(sim_world *w) {
  uint32_t x, bootstrap, succ, pred;
  sim_ring ring;
  size_t at;
  int cut;

  build_ring(w, 12);
  if (w->failed) {
    return;
  }
  /* x's neighbours-to-be are known before it joins (its id is the hash of
   * its address); its bootstrap is any other node. */
  x = sim_world_add_node(w);
  sim_ring_build(&ring, w, true);
  at = sim_ring_successor(&ring, &w->nodes[x].id);
  succ = ring.members[at].slot;
  pred = ring.members[(at + ring.n - 1) % ring.n].slot;
  sim_ring_free(&ring);
  do {
    bootstrap = sim_world_random_joined(w, SIM_NO_SLOT);
  } while (bootstrap == succ || bootstrap == pred);
  sim_world_join(w, x, bootstrap);
  sim_ring_converge(w, CONVERGE_MS, false, "join");
  if (w->failed) {
    return;
  }
  /* Its bootstrap dies, then its successor and its predecessor: the dead
   * neighbours fill the head of its lost list. */
  sim_world_crash(w, bootstrap, true);
  sim_world_crash(w, succ, true);
  sim_world_crash(w, pred, true);
  sim_ring_converge(w, CONVERGE_MS, false, "crashes");
  if (w->failed) {
    return;
  }
  /* Cut off from everybody for 30 s, then the partition heals. */
  cut = sim_net_path_fault_start(&w->net, SIM_PATH_CUT, SIM_PATH_BOTH, 0);
  sim_net_path_side(&w->net, cut, x, 1);
  sim_world_run_until(w, w->now_ms + 30000);
  sim_net_path_fault_end(&w->net, cut);
  sim_ring_converge(w, CONVERGE_MS, false, "partition");
}

/* ---- helpers for the scenarios that look at keys ---------------------------- */

/* The slot of key's owner on the ring as it is. */
static uint32_t owner_of(sim_world *w, const char *key) {
  sim_ring ring;
  dht_id key_id;
  uint32_t slot;

  dht_id_hash(&key_id, key, strlen(key));
  sim_ring_build(&ring, w, true);
  slot = ring.members[sim_ring_successor(&ring, &key_id)].slot;
  sim_ring_free(&ring);
  return slot;
}

/* Puts key = value through a random joined node; fails the world unless
 * it is acknowledged. */
static void put_acked(sim_world *w, const char *key, const char *value) {
  size_t op = sim_world_put(w, sim_world_random_joined(w, SIM_NO_SLOT), key,
                            value);

  sim_world_run_ops(w, w->now_ms + SIM_CLIENT_TIMEOUT_MS);
  if (!w->failed && (sim_world_op(w, op)->replies == 0 ||
                     sim_world_op(w, op)->reply_type != DHT_MSG_OK)) {
    sim_world_fail(w, "put of %s = %s was not acknowledged", key, value);
  }
  sim_world_clear_ops(w);
}

/* Gets key through a random joined node; fails the world unless it
 * returns value. */
static void get_expect(sim_world *w, const char *key, const char *value,
                       const char *why) {
  size_t op = sim_world_get(w, sim_world_random_joined(w, SIM_NO_SLOT), key,
                            value);
  const sim_op *o;

  sim_world_run_ops(w, w->now_ms + SIM_CLIENT_TIMEOUT_MS);
  o = sim_world_op(w, op);
  if (!w->failed && (o->replies == 0 || o->reply_type != DHT_MSG_VALUE ||
                     !o->value_ok)) {
    sim_world_fail(w, "get of %s returned %s%.*s%s, not %s (%s)", key,
                   o->replies == 0                    ? "nothing"
                   : o->reply_type != DHT_MSG_VALUE ? "an error"
                                                      : "\"",
                   o->reply_type == DHT_MSG_VALUE ? (int)o->value_len : 0,
                   o->reply_type == DHT_MSG_VALUE ? (const char *)o->value : "",
                   o->reply_type == DHT_MSG_VALUE ? "\"" : "", value, why);
  }
  sim_world_clear_ops(w);
}

/* Restarts slot on its disk, through a random joined node, and lets the
 * ring converge and anti-entropy run a few rounds. */
static void restart_settle(sim_world *w, uint32_t slot) {
  sim_world_join(w, slot, sim_world_random_joined(w, slot));
  if (!w->failed) {
    sim_ring_converge(w, CONVERGE_MS, false, "restart");
  }
  sim_world_run_until(w, w->now_ms + 5000);
}

/*
 * Regression (found by this scenario, fixed in serve_write(), which now
 * observes the version it replaces). A key's owner restarts with its
 * wall clock 60 s behind the clock it had when it last wrote the key (the
 * clock was stepped back at boot, or the disk moved to another machine).
 * Nothing it hears after the restart carries the key's version (its
 * replicas have the same record, so anti-entropy exchanges no records, and
 * nobody hands it the key), so its hybrid clock starts from the slow wall
 * clock. Stamped from that clock alone, its next write of the key got an
 * older version than the record on its own disk; the replicas kept the old
 * record but answered OK, and anti-entropy then brought the old value back:
 * an acknowledged write was gone.
 */
static void owner_clock_steps_back(sim_world *w) {
  const char *key = "clock-key";
  uint32_t owner;

  /* Three nodes and three replicas: every node holds every key, so no key
   * is ever handed to the owner (merging a record would show it the
   * version). */
  build_ring(w, 3);
  if (w->failed) {
    return;
  }
  /* The owner runs 60 s ahead and writes the key. */
  owner = owner_of(w, key);
  sim_world_crash(w, owner, true);
  sim_world_run_until(w, w->now_ms + 5000);
  w->nodes[owner].wall_offset_ms = 60000;
  restart_settle(w, owner);
  if (!w->failed && owner_of(w, key) != owner) {
    sim_world_fail(w, "%s did not get its range back", w->nodes[owner].addr);
  }
  if (!w->failed) {
    put_acked(w, key, "v1");
  }
  /* Its host reboots at once (too fast for the peers to declare it dead,
   * so no other node takes or hands back any key) with a correct clock. */
  if (!w->failed) {
    sim_world_crash(w, owner, false);
    sim_world_run_until(w, w->now_ms + 100);
    w->nodes[owner].wall_offset_ms = 0;
    restart_settle(w, owner);
  }
  if (!w->failed) {
    put_acked(w, key, "v2");
    sim_world_run_until(w, w->now_ms + 5000); /* anti-entropy rounds */
  }
  if (!w->failed) {
    get_expect(w, key, "v2",
               "v2 was acknowledged after v1: the owner, its clock now 60 s "
               "behind the one that stamped v1, stamped v2 older");
  }
}

typedef struct scenario {
  const char *name;
  void (*play)(sim_world *w);
  /* NULL, or a known bug of the core that makes the scenario fail: it is
   * then expected to fail, and passing fails the suite until the mark is
   * removed (the bug is fixed: the scenario now guards against it). */
  const char *known_bug;
} scenario;

static const scenario scenarios[] = {
    {"successor-crash-at-join", successor_crash_at_join, NULL},
    {"long-partition", long_partition, NULL},
    {"owner-clock-steps-back", owner_clock_steps_back, NULL},
    {"cut-off-with-dead-bootstrap", cut_off_with_dead_bootstrap, NULL},
};

int sim_scenarios(const sim_options *o) {
  size_t i, failed = 0, known = 0;
  size_t count = sizeof(scenarios) / sizeof(scenarios[0]);

  for (i = 0; i < count; i++) {
    const scenario *sc = &scenarios[i];
    dht_settings settings;
    sim_world w;

    dht_settings_default(&settings);
    if (o->replicas != 0) {
      settings.replicas = o->replicas;
    }
    if (o->core_replicas != 0) {
      settings.replicas = o->core_replicas;
    }
    sim_world_init(&w, o->seed, &settings);
    w.replicas = o->replicas != 0 ? o->replicas : settings.replicas;
    w.log_on = o->log_level > 0;
    w.log_level = (dht_log_level)(o->log_level > 0 ? o->log_level - 1 : 0);
    sc->play(&w);
    if (w.failed && sc->known_bug != NULL) {
      known++;
      printf("scenario %s: KNOWN BUG, fails as expected at %.3f s: %s\n"
             "  (the bug: %s)\n",
             sc->name, (double)w.failed_at_ms / 1000.0, w.failure,
             sc->known_bug);
    } else if (w.failed) {
      failed++;
      printf("scenario %s: FAIL at %.3f s: %s\n", sc->name,
             (double)w.failed_at_ms / 1000.0, w.failure);
    } else if (sc->known_bug != NULL) {
      failed++;
      printf("scenario %s: PASSES, but is marked as a known bug: if the "
             "bug is fixed, remove its known_bug mark in sim_scenarios.c "
             "(%.1f s virtual, digest %016" PRIx64 ")\n",
             sc->name, (double)w.now_ms / 1000.0, w.digest);
    } else {
      printf("scenario %s: PASS (%.1f s virtual, digest %016" PRIx64 ")\n",
             sc->name, (double)w.now_ms / 1000.0, w.digest);
    }
    sim_world_free(&w);
  }
  printf("scenarios: %zu passed, %zu failed, %zu known core bugs failing as "
         "expected (seed %" PRIu64 ")\n",
         count - failed - known, failed, known, o->seed);
  return failed == 0 ? 0 : 1;
}
