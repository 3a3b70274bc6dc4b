/*
 * sim_run.c: one simulated run, the way TigerBeetle's VOPR and FoundationDB's
 * simulator test: safety checked at every step, then faults healed and
 * liveness required within a bound.
 *
 *   build    the first node creates the ring, the others join through random
 *            joined nodes a few milliseconds apart; the ring must converge;
 *            then keys are put (the "pre-fault keys") and must land on
 *            their R holders (the owner and the next R - 1 nodes)
 *   faults   crashes (store kept), restarts, fresh joins, message loss,
 *            duplication, slow messages and partitions, at rates drawn from
 *            the seed (swarm testing), for a bounded virtual time
 *   heal     faults stop, partitions end, crashed nodes are restarted or stay
 *            down as the seed decides; the ring must converge again, and no
 *            node may keep a key outside the ranges it owns or replicates
 *   check    lookups must name the true owner; fresh puts must land on
 *            their R holders and be read back from other nodes; anti-entropy
 *            must bring every pre-fault key and every put acknowledged during
 *            the faults back to exactly its R holders, unless all its copies
 *            are on disks of nodes that stay down (lost, counted: all its
 *            holders crashed before repair); and each must read back
 *
 * The structural invariants of every node are checked by sim_world after
 * every call into it, in every phase.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "sim.h"
#include "sim_keys.h"
#include "sim_ring.h"
#include "sim_swarm.h"
#include "sim_world.h"

/* The fault phase decides what happens once per tick. */
#define TICK_MS 100
/* Rings are built with the mean join gap given up to this many nodes, and
 * proportionally faster beyond. */
#define JOIN_GAP_FULL_RING 1000
/* Crashes never take the ring below this many joined nodes. */
#define LIVE_NODES_MIN 3
/* On a converged, idle ring a node has only maintenance requests in flight;
 * more than this means pending requests leak. */
#define PENDING_AT_REST_MAX 64
/* Anti-entropy is checked this often while it repairs the kept keys. */
#define REPAIR_POLL_MS 250
/* Time allowed after the last client request before judging. */
#define OPS_GRACE_MS (SIM_CLIENT_TIMEOUT_MS + 1000)
#define KEY_LEN_MAX 32
#define VALUE_LEN_MAX 48
/* The shortest fault phase drawn (unless fault_ms_max is shorter). */
#define FAULT_MS_MIN 20000
/* The partitions of a run never overlap: each has its own window. */
#define PARTITIONS_MAX 2

/* Fault rates, drawn from the seed: each run explores a different mix. */
typedef struct swarm {
  uint32_t nodes;           /* initial ring size */
  uint32_t succ_list_len;   /* successors every node keeps */
  uint32_t replicas;        /* copies of each key (settings.replicas) */
  uint64_t fault_ms;        /* length of the fault phase */
  sim_net_faults net;       /* loss, duplication, slow messages */
  double crash_fraction;    /* of the initial ring, crashed over the phase */
  double refuse_prob;       /* a crash refuses connects (process) rather
                               than ignoring them (host) */
  double restart_prob;      /* a crashed node restarts during the phase */
  double join_fraction;     /* of the initial ring, fresh nodes joining */
  uint32_t partitions;      /* partitions during the phase, 0..2 */
  double heal_restart_prob; /* a node still down at heal is restarted */
} swarm;

/* A key put by the run and the value it must have. */
typedef struct key_record {
  char key[KEY_LEN_MAX];
  char value[VALUE_LEN_MAX];
} key_record;

/* A put sent during the faults, kept once it is acknowledged. */
typedef struct fault_put {
  key_record k; /* what was put */
  size_t op;    /* its client op */
} fault_put;

typedef struct run {
  const sim_options *o;
  swarm sw;
  sim_swarm draws; /* settings, clock and disk faults (sim_swarm.h) */
  sim_world w;
  sim_rng rng; /* fault schedule and client choices */
  sim_text *report;
  const char *phase;       /* for the failure report */
  uint64_t *restart_at_ms; /* by slot: when a crashed node restarts */
  size_t restart_cap;      /* slots restart_at_ms covers */
  uint64_t partition_start_ms[PARTITIONS_MAX];
  uint64_t partition_end_ms[PARTITIONS_MAX];
  double partition_frac[PARTITIONS_MAX]; /* share of nodes on side 1 */
  int partition_active;  /* index of the partition in force, or -1 */
  key_record *kept;      /* keys the ring acknowledged, which must
                            survive: the pre-fault keys first */
  size_t n_kept;         /* records in kept */
  size_t cap_kept;       /* records allocated in kept */
  size_t n_prefault;     /* kept[0..n_prefault) were put before faults */
  fault_put *fault_puts; /* puts sent during the faults */
  size_t n_fault_puts;   /* records in fault_puts */
  size_t cap_fault_puts; /* records allocated in fault_puts */
  uint64_t crashes, restarts, fresh_joins, partitions_done, fault_ops;
  size_t lost; /* kept keys whose copies are all on nodes that stay down */
} run;

/* Makes room for one more element in a growable array. */
static void *grow_for_one(void *p, size_t len, size_t *cap, size_t size) {
  if (len == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    p = realloc(p, *cap * size);
    if (p == NULL) {
      fprintf(stderr, "dht-sim: out of memory (keys)\n");
      abort();
    }
  }
  return p;
}

static void keep_key(run *r, const key_record *k) {
  r->kept = grow_for_one(r->kept, r->n_kept, &r->cap_kept, sizeof(*r->kept));
  r->kept[r->n_kept++] = *k;
}

static double secs(uint64_t ms) { return (double)ms / 1000.0; }

static void draw_swarm(run *r, sim_rng *g) {
  const sim_options *o = r->o;
  swarm *sw = &r->sw;
  bool loss_on, dup_on;
  double loss, duplicate;

  /* Every value is drawn, in this fixed order, whatever the options say:
   * an option given explicitly then replays the run that drew it. */
  sw->nodes = (uint32_t)sim_rng_between(g, o->nodes_min, o->nodes_max);
  sw->fault_ms = sim_rng_between(
      g, o->fault_ms_max < FAULT_MS_MIN ? o->fault_ms_max : FAULT_MS_MIN,
      o->fault_ms_max);
  loss_on = sim_rng_chance(g, 0.5);
  loss = 0.05 * sim_rng_unit(g);
  sw->net.loss = loss_on ? loss : 0.0;
  dup_on = sim_rng_chance(g, 0.5);
  duplicate = 0.05 * sim_rng_unit(g);
  sw->net.duplicate = dup_on ? duplicate : 0.0;
  sw->net.slow = 0.05 * sim_rng_unit(g);
  sw->crash_fraction = 0.3 * sim_rng_unit(g);
  sw->refuse_prob = sim_rng_unit(g);
  sw->restart_prob = sim_rng_unit(g);
  sw->join_fraction = 0.3 * sim_rng_unit(g);
  sw->partitions = (uint32_t)sim_rng_between(g, 0, PARTITIONS_MAX);
  sw->heal_restart_prob = sim_rng_unit(g);

  if (o->nodes != 0) {
    sw->nodes = o->nodes;
  }
  if (o->fault_ms != 0) {
    sw->fault_ms = o->fault_ms;
  }
  sim_swarm_draw(&r->draws, g, o);
  sw->succ_list_len = r->draws.settings.succ_list_len;
  sw->replicas = r->draws.replicas;
}

static void set_restart(run *r, uint32_t slot, uint64_t at_ms) {
  if (slot >= r->restart_cap) {
    size_t cap = r->restart_cap ? r->restart_cap : 64;
    size_t i;
    while (cap <= slot) {
      cap *= 2;
    }
    r->restart_at_ms = realloc(r->restart_at_ms, cap * sizeof(uint64_t));
    if (r->restart_at_ms == NULL) {
      fprintf(stderr, "dht-sim: out of memory (restarts)\n");
      abort();
    }
    for (i = r->restart_cap; i < cap; i++) {
      r->restart_at_ms[i] = UINT64_MAX;
    }
    r->restart_cap = cap;
  }
  r->restart_at_ms[slot] = at_ms;
}

static size_t count_joined(const sim_world *w) {
  size_t i, joined = 0;

  for (i = 0; i < w->n_nodes; i++) {
    joined += sim_world_is_joined(w, (uint32_t)i);
  }
  return joined;
}

/* Restarts slot's process on its store and joins through a random node. */
static void restart(run *r, uint32_t slot) {
  uint32_t bootstrap = sim_world_random_joined(&r->w, slot);

  if (bootstrap == SIM_NO_SLOT) {
    sim_world_fail(&r->w, "no joined node left to restart %s through",
                   r->w.nodes[slot].addr);
    return;
  }
  sim_world_join(&r->w, slot, bootstrap);
  r->restarts++;
}

static void fresh_join(run *r) {
  uint32_t bootstrap = sim_world_random_joined(&r->w, SIM_NO_SLOT);
  uint32_t slot;

  if (bootstrap == SIM_NO_SLOT) {
    sim_world_fail(&r->w, "no joined node to join through");
    return;
  }
  slot = sim_world_add_node(&r->w);
  sim_world_join(&r->w, slot, bootstrap);
}

/* ---- checks shared by the phases ------------------------------------------
 */

static bool answered_in_time(const sim_op *op) {
  return op->replies > 0 &&
         op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS;
}

/* One line about what came back for op, for failure reports. */
static void describe_reply(const sim_world *w, const sim_op *op, char *buf,
                           size_t len) {
  char id[DHT_ID_SHORT_LEN];

  if (op->replies == 0) {
    snprintf(buf, len, "no reply within %d s", SIM_CLIENT_TIMEOUT_MS / 1000);
  } else if (!answered_in_time(op)) {
    snprintf(buf, len, "reply after %.3f s",
             secs(op->replied_ms - op->sent_ms));
  } else if (op->reply_type == DHT_MSG_ERROR) {
    snprintf(buf, len, "ERROR %s", dht_errname(op->error_code));
  } else if (op->reply_type == DHT_MSG_FIND_SUCC_R) {
    snprintf(buf, len, "owner %s (%s)",
             op->peer_slot == SIM_NO_SLOT ? "?" : w->nodes[op->peer_slot].addr,
             dht_id_short(&op->peer_id, id));
  } else if (op->reply_type == DHT_MSG_VALUE) {
    snprintf(buf, len, "VALUE %s", op->value_ok ? "(right)" : "(WRONG)");
  } else {
    snprintf(buf, len, "%s", dht_msg_type_name((int)op->reply_type));
  }
}

/* Describes a key's placement failure: which holder lacks it. */
static void fail_placement(sim_world *w, const char *what, const char *key,
                           const sim_placement *p) {
  sim_world_fail(w,
                 "%s %s: holder %s does not hold it (%zu of its %zu holders "
                 "do)",
                 what, key,
                 p->missing_slot == SIM_NO_SLOT
                     ? "?"
                     : w->nodes[p->missing_slot].addr,
                 p->held, p->holders);
}

/* Puts keys[0..n) through random nodes; every put must be acknowledged and,
 * the ring being converged, be on all its R holders by then: the owner
 * answers only once every live replica has the record. */
static void put_keys(run *r, const key_record *keys, size_t n) {
  sim_world *w = &r->w;
  size_t first = w->ops_base + w->n_ops;
  sim_placement pl;
  sim_ring ring;
  size_t i;

  for (i = 0; i < n && !w->failed; i++) {
    sim_world_put(w, sim_world_random_joined(w, SIM_NO_SLOT), keys[i].key,
                  keys[i].value);
  }
  sim_world_run_ops(w, w->now_ms + OPS_GRACE_MS);
  sim_ring_build(&ring, w, true);
  for (i = 0; i < n && !w->failed; i++) {
    const sim_op *op = sim_world_op(w, first + i);
    char got[96], what[128];
    if (!answered_in_time(op) || op->reply_type != DHT_MSG_OK) {
      describe_reply(w, op, got, sizeof(got));
      sim_world_fail(w, "put of %s via %s on a converged ring: %s", keys[i].key,
                     w->nodes[op->via_slot].addr, got);
    } else if (!sim_key_placed(w, &ring, keys[i].key, sim_value_equals,
                               keys[i].value, &pl)) {
      snprintf(what, sizeof(what), "put via %s was acknowledged, but key",
               w->nodes[op->via_slot].addr);
      fail_placement(w, what, keys[i].key, &pl);
    }
  }
  sim_ring_free(&ring);
  sim_world_clear_ops(w);
}

static void make_key(run *r, key_record *k, const char *prefix, size_t i) {
  snprintf(k->key, sizeof(k->key), "%s%zu", prefix, i);
  snprintf(k->value, sizeof(k->value), "%s%zu-%016" PRIx64, prefix, i,
           sim_rng_next(&r->rng));
}

static bool converge(run *r) {
  return sim_ring_converge(&r->w, r->o->converge_ms, r->o->progress, r->phase);
}

/* ---- phases -----------------------------------------------------------------
 */

static void phase_build(run *r) {
  sim_world *w = &r->w;
  uint64_t start;
  uint32_t i;

  r->phase = "build";
  sim_world_create_ring(w, sim_world_add_node(w));
  for (i = 1; i < r->sw.nodes && !w->failed; i++) {
    uint32_t bootstrap;
    /* What upsets a ring is joins per existing node, so above
     * JOIN_GAP_FULL_RING nodes the gap shrinks in proportion: the ring then
     * grows by a constant fraction per second. */
    uint64_t ring = i > JOIN_GAP_FULL_RING ? i : JOIN_GAP_FULL_RING;
    uint64_t mean_gap_us =
        (uint64_t)r->o->join_gap_ms * 1000 * JOIN_GAP_FULL_RING / ring;
    sim_world_run_until(
        w, w->now_ms + sim_rng_between(&r->rng, 0, 2 * mean_gap_us) / 1000);
    bootstrap = sim_world_random_joined(w, SIM_NO_SLOT);
    sim_world_join(w, sim_world_add_node(w), bootstrap);
  }
  start = w->now_ms;
  if (w->failed || !converge(r)) {
    return;
  }
  sim_text_printf(r->report,
                  "build: %" PRIu32 " joins started by %.1f s, ring converged "
                  "at %.1f s (%" PRIu64 " join retries)\n",
                  r->sw.nodes, secs(start), secs(w->now_ms), w->join_failures);

  for (i = 0; i < r->o->prefault_keys; i++) {
    key_record k;
    make_key(r, &k, "p", i);
    keep_key(r, &k);
  }
  r->n_prefault = r->n_kept;
  put_keys(r, r->kept, r->n_prefault);
  if (!w->failed) {
    sim_text_printf(r->report,
                    "build: %zu pre-fault keys stored on their %" PRIu32
                    " holders\n",
                    r->n_prefault, r->sw.replicas);
  }
}

static void plan_partitions(run *r, uint64_t start) {
  uint64_t window;
  uint32_t k;

  if (r->sw.partitions == 0) {
    return;
  }
  window = r->sw.fault_ms / r->sw.partitions;
  for (k = 0; k < r->sw.partitions; k++) {
    uint64_t longest = window / 2 < r->o->partition_ms_max
                           ? window / 2
                           : r->o->partition_ms_max;
    r->partition_start_ms[k] =
        start + k * window + sim_rng_below(&r->rng, window / 2);
    r->partition_end_ms[k] =
        r->partition_start_ms[k] +
        sim_rng_between(&r->rng, longest < 500 ? longest : 500, longest);
    r->partition_frac[k] = 0.1 + 0.4 * sim_rng_unit(&r->rng);
  }
}

static void update_partition(run *r) {
  sim_world *w = &r->w;
  uint32_t k;
  size_t i;

  if (r->partition_active >= 0) {
    if (w->now_ms >= r->partition_end_ms[r->partition_active]) {
      sim_net_heal_partition(&w->net);
      r->partition_active = -1;
    }
    return;
  }
  for (k = 0; k < r->sw.partitions; k++) {
    if (w->now_ms >= r->partition_start_ms[k] &&
        w->now_ms < r->partition_end_ms[k]) {
      for (i = 0; i < w->n_nodes; i++) {
        sim_net_set_side(&w->net, (uint32_t)i,
                         sim_rng_chance(&r->rng, r->partition_frac[k]) ? 1 : 0);
      }
      sim_net_partition(&w->net);
      r->partition_active = (int)k;
      r->partitions_done++;
      return;
    }
  }
}

/* How many events of a given rate per phase happen in one tick: the whole
 * part, plus one more with the fractional part's probability. */
static uint32_t events_this_tick(run *r, double per_phase) {
  double rate = per_phase * TICK_MS / (double)r->sw.fault_ms;
  uint32_t whole = (uint32_t)rate;

  return whole + (sim_rng_chance(&r->rng, rate - whole) ? 1u : 0u);
}

/* Client traffic during the faults, one request per tick. Nothing is
 * promised about answers under faults (sim_world still checks that they are
 * well-formed), but a put that was acknowledged must never be destroyed:
 * those join the kept keys at heal time. */
static void fault_traffic(run *r) {
  sim_world *w = &r->w;
  uint32_t slot = sim_world_random_joined(w, SIM_NO_SLOT);
  dht_id target;

  if (slot == SIM_NO_SLOT) {
    return;
  }
  switch (sim_rng_below(&r->rng, 3)) {
  case 0:
    sim_rng_id(&r->rng, &target);
    sim_world_lookup(w, slot, &target);
    break;
  case 1: {
    fault_put *f;
    r->fault_puts = grow_for_one(r->fault_puts, r->n_fault_puts,
                                 &r->cap_fault_puts, sizeof(*r->fault_puts));
    f = &r->fault_puts[r->n_fault_puts];
    make_key(r, &f->k, "f", r->n_fault_puts);
    f->op = sim_world_put(w, slot, f->k.key, f->k.value);
    r->n_fault_puts++;
    break;
  }
  default:
    if (r->n_fault_puts > 0) {
      const key_record *k =
          &r->fault_puts[sim_rng_below(&r->rng, r->n_fault_puts)].k;
      sim_world_get(w, slot, k->key, k->value);
    }
    break;
  }
  r->fault_ops++;
}

static void fault_tick(run *r) {
  sim_world *w = &r->w;
  uint32_t n, i;

  n = events_this_tick(r, r->sw.crash_fraction * r->sw.nodes);
  for (i = 0; i < n; i++) {
    uint32_t victim;
    if (count_joined(w) <= LIVE_NODES_MIN) {
      break;
    }
    victim = sim_world_random_joined(w, SIM_NO_SLOT);
    sim_world_crash(w, victim, sim_rng_chance(&r->rng, r->sw.refuse_prob));
    r->crashes++;
    set_restart(r, victim,
                sim_rng_chance(&r->rng, r->sw.restart_prob)
                    ? w->now_ms + sim_rng_between(&r->rng, 1000, 15000)
                    : UINT64_MAX);
  }
  for (i = 0; i < r->restart_cap && i < w->n_nodes && !w->failed; i++) {
    if (r->restart_at_ms[i] <= w->now_ms) {
      r->restart_at_ms[i] = UINT64_MAX;
      restart(r, i);
    }
  }
  n = events_this_tick(r, r->sw.join_fraction * r->sw.nodes);
  for (i = 0; i < n && !w->failed; i++) {
    fresh_join(r);
    r->fresh_joins++;
  }
  update_partition(r);
  fault_traffic(r);
}

static void phase_faults(run *r) {
  sim_world *w = &r->w;
  uint64_t start = w->now_ms;
  uint64_t end = start + r->sw.fault_ms;

  r->phase = "faults";
  w->net.faults = r->sw.net;
  sim_swarm_start_disk_faults(&r->draws, w, r->sw.fault_ms);
  plan_partitions(r, start);
  while (!w->failed && w->now_ms < end) {
    fault_tick(r);
    sim_world_run_until(w, w->now_ms + TICK_MS);
  }
  if (!w->failed) {
    sim_text_printf(r->report,
                    "faults: %.1f s: %" PRIu64 " crashes, %" PRIu64
                    " restarts, %" PRIu64 " fresh joins, %" PRIu64
                    " partitions, %" PRIu64 " client requests\n",
                    secs(r->sw.fault_ms), r->crashes, r->restarts,
                    r->fresh_joins, r->partitions_done, r->fault_ops);
  }
}

static void phase_heal(run *r) {
  sim_world *w = &r->w;
  uint64_t start;
  size_t i, restarted = 0, down = 0;

  r->phase = "heal";
  memset(&w->net.faults, 0, sizeof(w->net.faults));
  sim_swarm_heal_disks(w);
  sim_net_heal_partition(&w->net);
  for (i = 0; i < r->n_fault_puts; i++) {
    if (sim_world_op(w, r->fault_puts[i].op)->reply_type == DHT_MSG_OK) {
      keep_key(r, &r->fault_puts[i].k);
    }
  }
  sim_world_clear_ops(w);
  for (i = 0; i < w->n_nodes && !w->failed; i++) {
    if (i < r->restart_cap) {
      r->restart_at_ms[i] = UINT64_MAX;
    }
    if (!sim_world_is_up(w, (uint32_t)i)) {
      if (sim_rng_chance(&r->rng, r->sw.heal_restart_prob)) {
        restart(r, (uint32_t)i);
        restarted++;
      } else {
        down++;
      }
    }
  }
  start = w->now_ms;
  if (w->failed || !converge(r)) {
    return;
  }
  sim_text_printf(r->report,
                  "heal: %zu nodes restarted, %zu stay down, %zu running; "
                  "converged after %.1f s (at %.1f s)\n",
                  restarted, down, sim_world_count_up(w),
                  secs(w->now_ms - start), secs(w->now_ms));
}

static void check_lookups(run *r) {
  sim_world *w = &r->w;
  size_t first = w->ops_base + w->n_ops;
  uint64_t hops_sum = 0;
  uint32_t hops_max = 0;
  sim_ring ring;
  size_t i;

  for (i = 0; i < r->o->lookups; i++) {
    dht_id target;
    sim_rng_id(&r->rng, &target);
    sim_world_lookup(w, sim_world_random_joined(w, SIM_NO_SLOT), &target);
  }
  sim_world_run_ops(w, w->now_ms + OPS_GRACE_MS);
  sim_ring_build(&ring, w, true);
  for (i = 0; i < r->o->lookups && !w->failed; i++) {
    const sim_op *op = sim_world_op(w, first + i);
    const sim_ring_member *owner =
        &ring.members[sim_ring_successor(&ring, &op->target)];
    char got[96], target[DHT_ID_SHORT_LEN];
    if (!answered_in_time(op) || op->reply_type != DHT_MSG_FIND_SUCC_R ||
        op->peer_slot != owner->slot) {
      describe_reply(w, op, got, sizeof(got));
      sim_world_fail(w, "lookup of %s via %s: %s, should be %s",
                     dht_id_short(&op->target, target),
                     w->nodes[op->via_slot].addr, got,
                     w->nodes[owner->slot].addr);
    }
    hops_sum += op->hops;
    hops_max = op->hops > hops_max ? op->hops : hops_max;
  }
  sim_ring_free(&ring);
  sim_world_clear_ops(w);
  if (!w->failed) {
    sim_text_printf(r->report,
                    "check: %" PRIu32 " lookups found the true owner (hops: "
                    "mean %.2f, max %" PRIu32 ")\n",
                    r->o->lookups,
                    r->o->lookups ? (double)hops_sum / r->o->lookups : 0.0,
                    hops_max);
  }
}

/* Gets every key in keys from `reads` random nodes; each must return the
 * key's value. */
static void read_keys(run *r, const key_record *keys, size_t n,
                      uint32_t reads) {
  sim_world *w = &r->w;
  size_t first = w->ops_base + w->n_ops;
  size_t i, j;

  for (i = 0; i < n; i++) {
    for (j = 0; j < reads; j++) {
      sim_world_get(w, sim_world_random_joined(w, SIM_NO_SLOT), keys[i].key,
                    keys[i].value);
    }
  }
  sim_world_run_ops(w, w->now_ms + OPS_GRACE_MS);
  for (i = 0; i < n * reads && !w->failed; i++) {
    const sim_op *op = sim_world_op(w, first + i);
    char got[96];
    if (!answered_in_time(op) || op->reply_type != DHT_MSG_VALUE ||
        !op->value_ok) {
      describe_reply(w, op, got, sizeof(got));
      sim_world_fail(w, "get of %s via %s: %s", keys[i / reads].key,
                     w->nodes[op->via_slot].addr, got);
    }
  }
  sim_world_clear_ops(w);
}

static void check_fresh_keys(run *r) {
  key_record *keys = calloc(r->o->keys ? r->o->keys : 1, sizeof(*keys));
  size_t i;

  if (keys == NULL) {
    fprintf(stderr, "dht-sim: out of memory (keys)\n");
    abort();
  }
  for (i = 0; i < r->o->keys; i++) {
    make_key(r, &keys[i], "k", i);
  }
  put_keys(r, keys, r->o->keys);
  if (!r->w.failed) {
    read_keys(r, keys, r->o->keys, r->o->reads);
  }
  if (!r->w.failed) {
    sim_text_printf(r->report,
                    "check: %" PRIu32 " fresh keys stored on their %" PRIu32
                    " holders and read back %" PRIu32 " times each\n",
                    r->o->keys, r->sw.replicas, r->o->reads);
  }
  free(keys);
}

/*
 * A kept key (put before the faults, or acknowledged during them) must come
 * back to all its R holders once anti-entropy has run, unless no running
 * node has a copy: then all its copies are on disks of nodes that stay down
 * (all its holders crashed before repair could copy it elsewhere), and it
 * counts as lost. A key on no disk at all, running or stopped, was
 * destroyed: a bug, since a node deletes a record only after handing it to
 * another. Convergence already required that no node keeps a key outside
 * the ranges it owns or replicates, so "all R holders" is "exactly them".
 * Every key found must then read back through the ring.
 */
static void check_kept_keys(run *r) {
  sim_world *w = &r->w;
  key_record *found = calloc(r->n_kept ? r->n_kept : 1, sizeof(*found));
  bool *settled = calloc(r->n_kept ? r->n_kept : 1, sizeof(*settled));
  size_t n_found = 0, lost = 0, waiting = r->n_kept;
  uint64_t start = w->now_ms;
  sim_placement pl;
  size_t i, first_waiting = 0;

  if (found == NULL || settled == NULL) {
    fprintf(stderr, "dht-sim: out of memory (keys)\n");
    abort();
  }
  while (!w->failed) {
    sim_ring ring;
    sim_ring_build(&ring, w, true);
    waiting = 0;
    for (i = 0; i < r->n_kept && !w->failed; i++) {
      const key_record *k = &r->kept[i];
      if (settled[i]) {
        continue;
      }
      if (sim_key_placed(w, &ring, k->key, sim_value_equals, k->value, &pl)) {
        settled[i] = true;
        found[n_found++] = *k;
        continue;
      }
      sim_key_copies(w, k->key, sim_value_equals, k->value, &pl);
      if (pl.running_copies == 0 && pl.stopped_copies > 0) {
        settled[i] = true;
        lost++;
      } else if (pl.running_copies == 0) {
        sim_world_fail(w,
                       "%s key %s is on no running node nor on the disk of "
                       "a stopped one: destroyed",
                       i < r->n_prefault ? "pre-fault" : "acknowledged",
                       k->key);
      } else if (waiting++ == 0) {
        first_waiting = i;
      }
    }
    sim_ring_free(&ring);
    if (waiting == 0 || w->failed) {
      break;
    }
    if (w->now_ms - start >= r->o->repair_ms) {
      const key_record *k = &r->kept[first_waiting];
      char what[160];
      sim_ring_build(&ring, w, true);
      sim_key_placed(w, &ring, k->key, sim_value_equals, k->value, &pl);
      sim_ring_free(&ring);
      snprintf(what, sizeof(what),
               "%zu keys are still not on all their holders %.1f s after "
               "the ring converged, e.g. %s key",
               waiting, secs(w->now_ms - start),
               first_waiting < r->n_prefault ? "pre-fault" : "acknowledged");
      fail_placement(w, what, k->key, &pl);
      break;
    }
    sim_world_run_until(w, w->now_ms + REPAIR_POLL_MS);
  }
  if (!w->failed) {
    sim_text_printf(r->report,
                    "check: anti-entropy put every kept key with a running "
                    "copy back on its %" PRIu32 " holders in %.2f s\n",
                    r->sw.replicas, secs(w->now_ms - start));
    read_keys(r, found, n_found, 1);
  }
  r->lost = lost;
  if (!w->failed) {
    sim_text_printf(r->report,
                    "check: %zu pre-fault and %zu acknowledged fault-phase "
                    "keys: %zu found, %zu lost with nodes that stay down\n",
                    r->n_prefault, r->n_kept - r->n_prefault, n_found, lost);
  }
  free(found);
  free(settled);
}

static void check_at_rest(run *r) {
  sim_world *w = &r->w;
  char why[SIM_FAILURE_LEN];
  sim_ring ring;
  size_t i;

  sim_world_run_until(w, w->now_ms + 2000);
  /* Still converged, and repair put no key where it does not belong. */
  sim_ring_build(&ring, w, true);
  if (!w->failed &&
      sim_ring_check_converged(&ring, w, false, why, sizeof(why)) != 0) {
    sim_world_fail(w, "at rest, after the checks: %s", why);
  }
  sim_ring_free(&ring);
  for (i = 0; i < w->n_nodes && !w->failed; i++) {
    if (sim_world_is_up(w, (uint32_t)i) &&
        dht_node_pending_count(w->nodes[i].node) > PENDING_AT_REST_MAX) {
      sim_world_fail(w,
                     "%s has %zu requests pending on an idle, converged "
                     "ring (leak?)",
                     w->nodes[i].addr,
                     dht_node_pending_count(w->nodes[i].node));
    }
  }
}

static void report_swarm(run *r) {
  const swarm *sw = &r->sw;

  sim_text_printf(r->report,
                  "dht-sim run: seed %" PRIu64 ", %" PRIu32
                  " nodes, succ_list_len %" PRIu32 ", replicas %" PRIu32 "\n",
                  r->o->seed, sw->nodes, sw->succ_list_len, sw->replicas);
  sim_swarm_report(&r->draws, r->o, r->report);
  if (r->o->no_faults) {
    sim_text_printf(r->report, "swarm: no faults\n");
    return;
  }
  sim_text_printf(r->report,
                  "swarm: %.1f s of faults; loss %.3f, duplicate %.3f, slow "
                  "%.3f; crashes %.0f%% of the ring (refused %.0f%%, restarted "
                  "%.0f%%); fresh joins %.0f%%; %" PRIu32
                  " partitions; %.0f%% of the crashed restarted at heal\n",
                  secs(sw->fault_ms), sw->net.loss, sw->net.duplicate,
                  sw->net.slow, 100 * sw->crash_fraction, 100 * sw->refuse_prob,
                  100 * sw->restart_prob, 100 * sw->join_fraction,
                  sw->partitions, 100 * sw->heal_restart_prob);
}

static void report_totals(run *r) {
  sim_world *w = &r->w;
  dht_node_counters c;

  sim_world_sum_counters(w, &c);
  sim_text_printf(r->report,
                  "network: %" PRIu64 " messages, %" PRIu64 " lost, %" PRIu64
                  " cut by partitions, %" PRIu64 " duplicated; %" PRIu64
                  " unreachable reports\n",
                  w->net.sent, w->net.lost, w->net.cut, w->net.duplicated,
                  w->unreachable);
  sim_text_printf(r->report,
                  "running nodes: forwards %" PRIu64 ", rpc timeouts %" PRIu64
                  ", peers declared dead %" PRIu64
                  ", unmatched replies %" PRIu64 ", hop limit %" PRIu64
                  ", keys handed off %" PRIu64 "\n",
                  c.forwards, c.rpc_timeouts, c.peers_failed,
                  c.replies_unmatched, c.hop_limit, c.handoff_keys_out);
  sim_text_printf(r->report,
                  "replication: writes acked %" PRIu64 ", failed %" PRIu64
                  "; replica reads %" PRIu64 ", consults %" PRIu64
                  "; sync rounds %" PRIu64 ", records repaired in %" PRIu64
                  ", out %" PRIu64 "\n",
                  c.writes_acked, c.writes_failed, c.replica_reads, c.consults,
                  c.sync_rounds, c.repair_keys_in, c.repair_keys_out);
  sim_swarm_report_totals(w, r->report);
  sim_text_printf(r->report,
                  "events %" PRIu64 ", virtual time %.1f s, digest %016" PRIx64
                  "\n",
                  w->events, secs(w->now_ms), w->digest);
}

void sim_run(const sim_options *o, sim_run_result *result, sim_text *report) {
  run r;
  sim_rng master, swarm_rng;

  memset(&r, 0, sizeof(r));
  r.o = o;
  r.partition_active = -1;
  r.report = report;
  sim_rng_seed(&master, o->seed);
  sim_rng_fork(&master, &swarm_rng);
  sim_rng_fork(&master, &r.rng);
  draw_swarm(&r, &swarm_rng);

  sim_world_init(&r.w, sim_rng_next(&master), &r.draws.settings);
  sim_swarm_apply(&r.draws, &r.w);
  r.w.log_on = o->log_level > 0;
  r.w.log_level = (dht_log_level)(o->log_level > 0 ? o->log_level - 1 : 0);
  r.w.trace = o->trace ? stderr : NULL;
  report_swarm(&r);

  phase_build(&r);
  if (!r.w.failed && !o->no_faults) {
    phase_faults(&r);
  }
  if (!r.w.failed) {
    phase_heal(&r);
  }
  if (!r.w.failed) {
    r.phase = "check";
    check_kept_keys(&r);
  }
  if (!r.w.failed) {
    check_lookups(&r);
  }
  if (!r.w.failed) {
    check_fresh_keys(&r);
  }
  if (!r.w.failed) {
    check_at_rest(&r);
  }
  report_totals(&r);
  if (r.w.failed) {
    sim_text_printf(report, "FAIL at %.3f s (%s phase): %s\n",
                    secs(r.w.failed_at_ms), r.phase, r.w.failure);
  } else {
    sim_text_printf(report, "PASS\n");
  }
  result->passed = !r.w.failed;
  result->nodes = r.sw.nodes;
  sim_swarm_drawn(&r.draws, &result->drawn);
  result->virtual_ms = r.w.now_ms;
  result->digest = r.w.digest;
  result->lost = r.lost;
  if (r.n_kept > 0) {
    snprintf(result->summary, sizeof(result->summary),
             "%zu kept keys, %zu lost with nodes that stay down", r.n_kept,
             r.lost);
  }
  sim_world_free(&r.w);
  free(r.restart_at_ms);
  free(r.kept);
  free(r.fault_puts);
}
