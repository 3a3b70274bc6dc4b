/*
 * sim_scenarios.c: scripted regression cases. Each one sets up an exact
 * situation that once broke the ring (or that the random runs reach only
 * rarely) and requires the ring to converge afterwards. Unlike a seed of
 * the random runs, a script keeps testing the same situation when the
 * simulator's own random choices change.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

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

  build_ring(w, 32);
  if (w->failed) {
    return;
  }
  for (i = 0; i < w->n_nodes; i++) {
    sim_net_set_side(&w->net, (uint32_t)i, (uint8_t)(i % 2));
  }
  sim_net_partition(&w->net);
  sim_world_run_until(w, w->now_ms + 60000);
  sim_net_heal_partition(&w->net);
  sim_ring_converge(w, CONVERGE_MS, false, "partition");
}

typedef struct scenario {
  const char *name;
  void (*play)(sim_world *w);
} scenario;

static const scenario scenarios[] = {
    {"successor-crash-at-join", successor_crash_at_join},
    {"long-partition", long_partition},
};

int sim_scenarios(const sim_options *o) {
  size_t i, failed = 0;
  size_t count = sizeof(scenarios) / sizeof(scenarios[0]);

  for (i = 0; i < count; i++) {
    dht_settings settings;
    sim_world w;

    dht_settings_default(&settings);
    sim_world_init(&w, o->seed, &settings);
    w.log_on = o->log_level > 0;
    w.log_level = (dht_log_level)(o->log_level > 0 ? o->log_level - 1 : 0);
    scenarios[i].play(&w);
    if (w.failed) {
      failed++;
      printf("scenario %s: FAIL at %.3f s: %s\n", scenarios[i].name,
             (double)w.failed_at_ms / 1000.0, w.failure);
    } else {
      printf("scenario %s: PASS (%.1f s virtual, digest %016" PRIx64 ")\n",
             scenarios[i].name, (double)w.now_ms / 1000.0, w.digest);
    }
    sim_world_free(&w);
  }
  printf("scenarios: %zu passed, %zu failed (seed %" PRIu64 ")\n",
         count - failed, failed, o->seed);
  return failed == 0 ? 0 : 1;
}
