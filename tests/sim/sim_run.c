/*
 * sim_run.c: one simulated run, the way TigerBeetle's VOPR and FoundationDB's
 * simulator test: safety checked at every step, then faults healed and
 * liveness required within a bound.
 *
 *   build    the first node creates the ring, the others join through random
 *            joined nodes a few milliseconds apart; the ring must converge;
 *            then keys are put (the "pre-fault keys") and must land on
 *            their R holders (the owner and the next R - 1 nodes)
 *   faults   crashes (store kept), restarts, fresh joins, lost segments
 *            (a stream waits for the retransmission), slow frames, cuts
 *            (symmetric or one-way, between two groups or around one node),
 *            clogged paths and process pauses, at rates drawn from the seed
 *            (swarm testing), for a bounded virtual time, while a client
 *            puts, overwrites and gets keys
 *   heal     faults stop: cuts and clogs end, paused nodes resume, crashed
 *            nodes are restarted or stay down as the seed decides; then the
 *            run waits until the network is quiet (the bytes held by cuts
 *            have gone at their retransmission, every client request of the
 *            faults is answered or past its deadline), and only from there
 *            must the ring converge, with no node keeping a key outside the
 *            ranges it owns or replicates
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
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/metrics.h"
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
#define VALUE_LEN_MAX 64
/* The shortest fault phase drawn (unless fault_ms_max is shorter). */
#define FAULT_MS_MIN 20000
/* Most cuts, clogs and pauses drawn for one run. */
#define CUTS_MAX 4
#define CLOGS_MAX 3
#define PAUSES_MAX 3
/* The shortest cut and pause drawn; lengths are log-uniform up to the
 * options' maximum, so short and long ones are both common. */
#define CUT_MS_MIN 200
#define PAUSE_MS_MIN 100
/* A clog adds latency in this range for a time in the next one. */
#define CLOG_EXTRA_MS_MIN 100
#define CLOG_EXTRA_MS_MAX 2000
#define CLOG_MS_MIN 1000
#define CLOG_MS_MAX 10000
/* The share of fault-phase puts that overwrite a key put before. */
#define OVERWRITE_SHARE 0.5
/* "No put in flight". */
#define NO_OP SIZE_MAX

/* Bits of --disable-faults: the kinds of fault a run leaves out, for
 * narrowing a failure down (the swarm's rates are drawn as always; the
 * schedule drawn after them changes with what is left out). */
enum {
  FAULTS_CRASHES = 1,  /* crashes and their restarts */
  FAULTS_JOINS = 2,    /* fresh joins */
  FAULTS_CUTS = 4,     /* cuts */
  FAULTS_CLOGS = 8,    /* clogged paths */
  FAULTS_PAUSES = 16,  /* process pauses */
  FAULTS_SEGMENTS = 32 /* lost segments and slow frames */
};

/* A cut or a clog the run plans: between a group of nodes and the rest,
 * or around one node, in one direction or both. */
typedef struct path_plan {
  uint64_t start_ms;   /* when it begins */
  uint64_t end_ms;     /* when it ends (at heal at the latest) */
  bool one_node;       /* around one node, else a group */
  double frac;         /* group: share of the nodes on side 1 */
  uint8_t paths;       /* SIM_PATH_* directions it covers */
  uint32_t extra_ms;   /* clog: added latency */
  int handle;          /* while in force: its sim_net handle, else -1 */
} path_plan;

/* A pause the run plans: one node, or two neighbours. */
typedef struct pause_plan {
  uint64_t start_ms;   /* when the process stops */
  uint64_t length_ms;  /* for how long */
  bool neighbours;     /* its successor stops with it */
  bool done;           /* started */
} pause_plan;

/* Fault rates, drawn from the seed: each run explores a different mix. */
typedef struct swarm {
  uint32_t nodes;           /* initial ring size */
  uint32_t succ_list_len;   /* successors every node keeps */
  uint32_t replicas;        /* copies of each key (settings.replicas) */
  uint64_t fault_ms;        /* length of the fault phase */
  sim_net_faults net;       /* lost segments, slow frames (and the non-TCP
                               drop and duplicate, from the options only) */
  sim_net_limits limits;    /* socket buffers, out queues, idle close */
  double crash_fraction;    /* of the initial ring, crashed over the phase */
  double refuse_prob;       /* a crash refuses connects (process) rather
                               than ignoring them (host) */
  double restart_prob;      /* a crashed node restarts during the phase */
  double join_fraction;     /* of the initial ring, fresh nodes joining */
  uint32_t cuts;            /* cuts during the phase */
  uint32_t clogs;           /* clogged paths during the phase */
  uint32_t pauses;          /* process pauses during the phase */
  double heal_restart_prob; /* a node still down at heal is restarted */
} swarm;

/* A key put by the run and the value it must have: value, or alt when the
 * put after the acknowledged one went unanswered (it may have been applied,
 * any time later). */
typedef struct key_record {
  char key[KEY_LEN_MAX];
  char value[VALUE_LEN_MAX];
  char alt[VALUE_LEN_MAX]; /* "" when there is no such put */
} key_record;

/* A key the client writes during the faults. Its puts are sequential: the
 * next is sent only once the last was acknowledged, and a put that is not
 * (an error, no answer) is its last, since it may take effect any time. */
typedef struct fault_key {
  char key[KEY_LEN_MAX];
  uint32_t seq;       /* puts sent */
  uint32_t acked_seq; /* the last acknowledged, 0: none */
  size_t op;          /* the put in flight, or NO_OP */
  bool retired;       /* a put was not acknowledged: no more */
} fault_key;

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
  path_plan cuts[CUTS_MAX];
  path_plan clogs[CLOGS_MAX];
  pause_plan pauses[PAUSES_MAX];
  uint64_t salt;         /* makes fault-phase values unguessable */
  key_record *kept;      /* keys the ring acknowledged, which must
                            survive: the pre-fault keys first */
  size_t n_kept;         /* records in kept */
  size_t cap_kept;       /* records allocated in kept */
  size_t n_prefault;     /* kept[0..n_prefault) were put before faults */
  fault_key *fault_keys; /* keys put during the faults */
  size_t n_fault_keys;   /* records in fault_keys */
  size_t cap_fault_keys; /* records allocated in fault_keys */
  uint64_t skew_refused; /* puts of keys to keep refused for clock skew */
  uint64_t crashes, restarts, fresh_joins, cuts_done, clogs_done,
      pauses_done, fault_ops, overwrites;
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

/* Log-uniform in [lo, hi]: as many short ones as long ones. */
static uint64_t log_uniform(sim_rng *g, uint64_t lo, uint64_t hi) {
  double u = sim_rng_unit(g);

  if (hi <= lo) {
    return hi;
  }
  return (uint64_t)((double)lo * pow((double)hi / (double)lo, u));
}

/* A cut or clog's shape, drawn in a fixed order. */
static void draw_path_plan(sim_rng *g, path_plan *p, bool clog) {
  static const uint8_t directions[] = {SIM_PATH_BOTH, SIM_PATH_0_TO_1,
                                       SIM_PATH_1_TO_0};

  p->one_node = sim_rng_chance(g, 0.5);
  p->frac = 0.1 + 0.4 * sim_rng_unit(g);
  p->paths = directions[sim_rng_below(g, 3)];
  p->extra_ms =
      clog ? (uint32_t)sim_rng_between(g, CLOG_EXTRA_MS_MIN, CLOG_EXTRA_MS_MAX)
           : 0;
  p->handle = -1;
}

static void draw_swarm(run *r, sim_rng *g) {
  const sim_options *o = r->o;
  swarm *sw = &r->sw;
  bool loss_on;
  double loss;

  /* Every value is drawn, in this fixed order, whatever the options say:
   * an option given explicitly then replays the run that drew it. */
  sw->nodes = (uint32_t)sim_rng_between(g, o->nodes_min, o->nodes_max);
  sw->fault_ms = sim_rng_between(
      g, o->fault_ms_max < FAULT_MS_MIN ? o->fault_ms_max : FAULT_MS_MIN,
      o->fault_ms_max);
  /* Up to 2% of frames wait for a retransmission: already harsh for TCP,
   * where each one holds its whole stream for 200 ms or more. */
  loss_on = sim_rng_chance(g, 0.5);
  loss = 0.02 * sim_rng_unit(g);
  sw->net.loss = loss_on ? loss : 0.0;
  sw->net.slow = 0.05 * sim_rng_unit(g);
  sw->crash_fraction = 0.3 * sim_rng_unit(g);
  sw->refuse_prob = sim_rng_unit(g);
  sw->restart_prob = sim_rng_unit(g);
  sw->join_fraction = 0.3 * sim_rng_unit(g);
  sw->cuts = (uint32_t)sim_rng_between(g, 0, CUTS_MAX);
  sw->clogs = (uint32_t)sim_rng_between(g, 0, CLOGS_MAX);
  sw->pauses = (uint32_t)sim_rng_between(g, 0, PAUSES_MAX);
  sw->heal_restart_prob = sim_rng_unit(g);
  /* Buffers from tiny to dhtd's (so that back-pressure and the out-queue
   * drop happen), and idle close from a few seconds to dhtd's minute. The
   * smallest out queue still takes a hand-off batch. */
  sw->limits.window_bytes = (uint32_t)log_uniform(g, 16 * 1024, 256 * 1024);
  sw->limits.out_queue_max =
      (uint32_t)log_uniform(g, 1024 * 1024, 16 * 1024 * 1024);
  sw->limits.out_queue_pause = sw->limits.out_queue_max / 4;
  sw->limits.idle_close_ms = (uint32_t)log_uniform(g, 2000, 60000);

  if (o->nodes != 0) {
    sw->nodes = o->nodes;
  }
  if (o->fault_ms != 0) {
    sw->fault_ms = o->fault_ms;
  }
  sim_swarm_draw(&r->draws, g, o);
  sw->succ_list_len = r->draws.settings.succ_list_len;
  sw->replicas = r->draws.replicas;
  sw->net.drop = o->non_tcp_loss_ppm / 1e6;
  sw->net.duplicate = o->non_tcp_dup_ppm / 1e6;
  if (o->disable_faults & FAULTS_CRASHES) {
    sw->crash_fraction = 0.0;
  }
  if (o->disable_faults & FAULTS_JOINS) {
    sw->join_fraction = 0.0;
  }
  if (o->disable_faults & FAULTS_CUTS) {
    sw->cuts = 0;
  }
  if (o->disable_faults & FAULTS_CLOGS) {
    sw->clogs = 0;
  }
  if (o->disable_faults & FAULTS_PAUSES) {
    sw->pauses = 0;
  }
  if (o->disable_faults & FAULTS_SEGMENTS) {
    sw->net.loss = sw->net.slow = 0.0;
  }
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

/* A node that was never in the ring joins through three joined nodes drawn
 * at random, as an operator lists seeds: with one, a node that a cut held
 * with its bootstrap alone knew nobody else, and once the bootstrap died
 * for good it could never join (dht-sim run --seed 47 --nodes 64 ...). */
#define FRESH_JOIN_SEEDS 3

static void fresh_join(run *r) {
  uint32_t through[FRESH_JOIN_SEEDS], slot;
  size_t i;

  for (i = 0; i < FRESH_JOIN_SEEDS; i++) {
    through[i] = sim_world_random_joined(&r->w, SIM_NO_SLOT);
    if (through[i] == SIM_NO_SLOT) {
      sim_world_fail(&r->w, "no joined node to join through");
      return;
    }
  }
  slot = sim_world_add_node(&r->w);
  sim_world_join_list(&r->w, slot, through, FRESH_JOIN_SEEDS);
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
 * answers only once every live replica has the record. A put refused for
 * clock skew where the design allows it (an owner whose clock is beyond
 * the bound: sim_swarm_skew_refusal_possible) is counted, and its key
 * dropped from keys. Returns how many keys are left, in keys[0..). */
static size_t put_keys(run *r, key_record *keys, size_t n) {
  sim_world *w = &r->w;
  size_t first = w->ops_base + w->n_ops;
  sim_placement pl;
  sim_ring ring;
  size_t i, left = 0;

  for (i = 0; i < n && !w->failed; i++) {
    sim_world_put(w, sim_world_random_joined(w, SIM_NO_SLOT), keys[i].key,
                  keys[i].value);
  }
  sim_world_run_ops(w, w->now_ms + OPS_GRACE_MS);
  sim_ring_build(&ring, w, true);
  for (i = 0; i < n && !w->failed; i++) {
    const sim_op *op = sim_world_op(w, first + i);
    char got[96], what[128];
    if (answered_in_time(op) && op->reply_type == DHT_MSG_ERROR &&
        op->error_code == DHT_ERR_CLOCK_SKEW &&
        sim_swarm_skew_refusal_possible(&r->draws, w, op->ver.hlc >> 16,
                                        op->sent_ms,
                                        r->o->max_clock_skew_ms)) {
      r->skew_refused++;
      continue;
    }
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
    keys[left++] = keys[i];
  }
  sim_ring_free(&ring);
  sim_world_clear_ops(w);
  return left;
}

static void make_key(run *r, key_record *k, const char *prefix, size_t i) {
  snprintf(k->key, sizeof(k->key), "%s%zu", prefix, i);
  snprintf(k->value, sizeof(k->value), "%s%zu-%016" PRIx64, prefix, i,
           sim_rng_next(&r->rng));
}

static bool converge(run *r) {
  return sim_ring_converge(&r->w, r->o->converge_ms, r->o->progress, r->phase);
}

/* Frame bytes every running node has sent so far, by message class. */
static void bytes_sent(const sim_world *w, uint64_t out[DHT_MSG_CLASSES]) {
  dht_node_metrics m;
  size_t i, c;

  memset(out, 0, DHT_MSG_CLASSES * sizeof(out[0]));
  for (i = 0; i < w->n_nodes; i++) {
    if (w->nodes[i].node != NULL) {
      dht_node_get_metrics(w->nodes[i].node, &m);
      for (c = 0; c < DHT_MSG_CLASSES; c++) {
        out[c] += m.bytes_out[c];
      }
    }
  }
}

/* What the converged ring costs at rest (--upkeep-ms): the bytes its nodes
 * send in that time, per node and second, by message class. Every byte
 * sent is received, so that is also what a node receives on average. */
static void measure_upkeep(run *r) {
  sim_world *w = &r->w;
  uint64_t before[DHT_MSG_CLASSES], after[DHT_MSG_CLASSES], total = 0;
  double per = (double)count_joined(w) * secs(r->o->upkeep_ms);
  size_t c;

  bytes_sent(w, before);
  sim_world_run_until(w, w->now_ms + r->o->upkeep_ms);
  bytes_sent(w, after);
  sim_text_printf(r->report, "upkeep: over %.1f s at rest, per node:",
                  secs(r->o->upkeep_ms));
  for (c = 0; c < DHT_MSG_CLASSES; c++) {
    total += after[c] - before[c];
    sim_text_printf(r->report, " %s %.0f B/s,", dht_msg_class_name((int)c),
                    (double)(after[c] - before[c]) / per);
  }
  sim_text_printf(r->report, " in all %.0f B/s sent (as many received)\n",
                  (double)total / per);
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
  if (r->o->upkeep_ms > 0) {
    measure_upkeep(r);
  }

  for (i = 0; i < r->o->prefault_keys; i++) {
    key_record k;
    make_key(r, &k, "p", i);
    keep_key(r, &k);
  }
  r->n_kept = put_keys(r, r->kept, r->n_kept);
  r->n_prefault = r->n_kept;
  if (!w->failed) {
    sim_text_printf(r->report,
                    "build: %zu pre-fault keys stored on their %" PRIu32
                    " holders (%" PRIu64 " refused for clock skew)\n",
                    r->n_prefault, r->sw.replicas, r->skew_refused);
  }
}

/* ---- the fault schedule ------------------------------------------------------ */

/* Plans the cuts, clogs and pauses of a fault phase starting at start:
 * each begins anywhere in the phase and lasts a drawn time (it ends at heal
 * at the latest); they may overlap. */
static void plan_faults(run *r, uint64_t start) {
  uint64_t phase = r->sw.fault_ms;
  uint32_t k;

  for (k = 0; k < r->sw.cuts; k++) {
    path_plan *p = &r->cuts[k];
    draw_path_plan(&r->rng, p, false);
    p->start_ms = start + sim_rng_below(&r->rng, phase);
    p->end_ms = p->start_ms +
                log_uniform(&r->rng, CUT_MS_MIN, r->o->partition_ms_max);
  }
  for (k = 0; k < r->sw.clogs; k++) {
    path_plan *p = &r->clogs[k];
    draw_path_plan(&r->rng, p, true);
    p->start_ms = start + sim_rng_below(&r->rng, phase);
    p->end_ms =
        p->start_ms + sim_rng_between(&r->rng, CLOG_MS_MIN, CLOG_MS_MAX);
  }
  for (k = 0; k < r->sw.pauses; k++) {
    pause_plan *p = &r->pauses[k];
    p->start_ms = start + sim_rng_below(&r->rng, phase);
    p->length_ms = log_uniform(&r->rng, PAUSE_MS_MIN, r->o->pause_ms_max);
    p->neighbours = sim_rng_chance(&r->rng, 0.5);
    p->done = false;
  }
}

/* Starts or ends a planned cut or clog as the clock says. */
static void update_path_plan(run *r, path_plan *p, sim_path_kind kind) {
  sim_world *w = &r->w;
  size_t i;

  if (p->handle >= 0 && w->now_ms >= p->end_ms) {
    sim_net_path_fault_end(&w->net, p->handle);
    p->handle = -1;
    return;
  }
  if (p->handle >= 0 || w->now_ms < p->start_ms || w->now_ms >= p->end_ms) {
    return;
  }
  p->handle = sim_net_path_fault_start(&w->net, kind, p->paths, p->extra_ms);
  if (p->handle < 0) {
    return;
  }
  if (p->one_node) {
    uint32_t x = sim_world_random_joined(w, SIM_NO_SLOT);
    if (x != SIM_NO_SLOT) {
      sim_net_path_side(&w->net, p->handle, x, 1);
    }
  } else {
    for (i = 0; i < w->n_nodes; i++) {
      sim_net_path_side(&w->net, p->handle, (uint32_t)i,
                        sim_rng_chance(&r->rng, p->frac) ? 1 : 0);
    }
  }
  if (kind == SIM_PATH_CUT) {
    r->cuts_done++;
  } else {
    r->clogs_done++;
  }
  /* It ends at its time, never before the next tick. */
  p->end_ms = p->end_ms > w->now_ms ? p->end_ms : w->now_ms + TICK_MS;
}

/* Stops a random joined node (and its successor, for a pair of
 * neighbours) when a planned pause is due. */
static void update_pause(run *r, pause_plan *p) {
  sim_world *w = &r->w;
  uint32_t x;

  if (p->done || w->now_ms < p->start_ms) {
    return;
  }
  p->done = true;
  x = sim_world_random_joined(w, SIM_NO_SLOT);
  if (x == SIM_NO_SLOT) {
    return;
  }
  sim_world_pause(w, x, p->length_ms);
  r->pauses_done++;
  if (p->neighbours) {
    sim_ring ring;
    sim_ring_build(&ring, w, true);
    if (ring.n > 2) {
      size_t at = sim_ring_successor(&ring, &w->nodes[x].id);
      sim_world_pause(w, ring.members[(at + 1) % ring.n].slot, p->length_ms);
    }
    sim_ring_free(&ring);
  }
}

/* How many events of a given rate per phase happen in one tick: the whole
 * part, plus one more with the fractional part's probability. */
static uint32_t events_this_tick(run *r, double per_phase) {
  double rate = per_phase * TICK_MS / (double)r->sw.fault_ms;
  uint32_t whole = (uint32_t)rate;

  return whole + (sim_rng_chance(&r->rng, rate - whole) ? 1u : 0u);
}

/* ---- the client during the faults -------------------------------------------- */

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdu;
}

/* Put seq of fault key k: "f<k>#<seq>-<hash>", unique to that put. */
static void fault_value(const run *r, size_t k, uint32_t seq, char *out,
                        size_t len) {
  snprintf(out, len, "%s#%" PRIu32 "-%016" PRIx64, r->fault_keys[k].key, seq,
           mix(mix(r->salt, k), seq));
}

static void put_fault_key(run *r, uint32_t slot, size_t k) {
  fault_key *f = &r->fault_keys[k];
  char value[VALUE_LEN_MAX];

  fault_value(r, k, ++f->seq, value, sizeof(value));
  f->op = sim_world_put(&r->w, slot, f->key, value);
}

/* Settles the puts that are answered or past the client's deadline: an
 * acknowledgment lets the key be written again, anything else retires
 * it. */
static void settle_fault_puts(run *r) {
  sim_world *w = &r->w;
  size_t k;

  for (k = 0; k < r->n_fault_keys; k++) {
    fault_key *f = &r->fault_keys[k];
    const sim_op *op;
    if (f->op == NO_OP) {
      continue;
    }
    op = sim_world_op(w, f->op);
    if (op->replies == 0 && w->now_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS) {
      continue;
    }
    if (op->replies > 0 && op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS &&
        op->reply_type == DHT_MSG_OK) {
      f->acked_seq = f->seq;
    } else {
      f->retired = true;
    }
    f->op = NO_OP;
  }
}

/* Client traffic during the faults, one request per tick: lookups, puts of
 * new keys, overwrites of keys whose last put was acknowledged, and gets.
 * Nothing is promised about answers under faults (sim_world still checks
 * that they are well-formed), but the last acknowledged put of a key must
 * never be lost nor overwritten by an older one: those join the kept keys
 * once the network is quiet. */
static void fault_traffic(run *r) {
  sim_world *w = &r->w;
  uint32_t slot = sim_world_random_joined(w, SIM_NO_SLOT);
  dht_id target;
  size_t k;

  settle_fault_puts(r);
  if (slot == SIM_NO_SLOT) {
    return;
  }
  switch (sim_rng_below(&r->rng, 3)) {
  case 0:
    sim_rng_id(&r->rng, &target);
    sim_world_lookup(w, slot, &target);
    break;
  case 1:
    k = r->n_fault_keys > 0 ? sim_rng_below(&r->rng, r->n_fault_keys) : 0;
    if (sim_rng_chance(&r->rng, OVERWRITE_SHARE) && k < r->n_fault_keys &&
        r->fault_keys[k].op == NO_OP && !r->fault_keys[k].retired &&
        r->fault_keys[k].acked_seq == r->fault_keys[k].seq) {
      r->overwrites++;
    } else {
      fault_key *f;
      r->fault_keys = grow_for_one(r->fault_keys, r->n_fault_keys,
                                   &r->cap_fault_keys, sizeof(*r->fault_keys));
      k = r->n_fault_keys++;
      f = &r->fault_keys[k];
      memset(f, 0, sizeof(*f));
      snprintf(f->key, sizeof(f->key), "f%zu", k);
      f->op = NO_OP;
    }
    put_fault_key(r, slot, k);
    break;
  default:
    if (r->n_fault_keys > 0) {
      const fault_key *f =
          &r->fault_keys[sim_rng_below(&r->rng, r->n_fault_keys)];
      sim_world_get(w, slot, f->key, "");
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
  for (i = 0; i < r->sw.cuts; i++) {
    update_path_plan(r, &r->cuts[i], SIM_PATH_CUT);
  }
  for (i = 0; i < r->sw.clogs; i++) {
    update_path_plan(r, &r->clogs[i], SIM_PATH_CLOG);
  }
  for (i = 0; i < r->sw.pauses; i++) {
    update_pause(r, &r->pauses[i]);
  }
  fault_traffic(r);
}

static void phase_faults(run *r) {
  sim_world *w = &r->w;
  uint64_t start = w->now_ms;
  uint64_t end = start + r->sw.fault_ms;

  r->phase = "faults";
  w->net.faults = r->sw.net;
  w->net.limits = r->sw.limits;
  sim_swarm_start_disk_faults(&r->draws, w, r->sw.fault_ms);
  sim_swarm_start_buggify(w);
  plan_faults(r, start);
  while (!w->failed && w->now_ms < end) {
    fault_tick(r);
    sim_world_run_until(w, w->now_ms + TICK_MS);
  }
  if (!w->failed) {
    sim_text_printf(r->report,
                    "faults: %.1f s: %" PRIu64 " crashes, %" PRIu64
                    " restarts, %" PRIu64 " fresh joins, %" PRIu64
                    " cuts, %" PRIu64 " clogs, %" PRIu64
                    " pauses, %" PRIu64 " client requests (%zu keys put, %" PRIu64
                    " overwrites)\n",
                    secs(r->sw.fault_ms), r->crashes, r->restarts,
                    r->fresh_joins, r->cuts_done, r->clogs_done,
                    r->pauses_done, r->fault_ops, r->n_fault_keys,
                    r->overwrites);
  }
}

/* The last acknowledged put of each fault key is kept, and the put after
 * it, unanswered, is as good (it may have been applied). */
static void keep_fault_keys(run *r) {
  size_t k;

  for (k = 0; k < r->n_fault_keys; k++) {
    const fault_key *f = &r->fault_keys[k];
    key_record rec;
    if (f->acked_seq == 0) {
      continue;
    }
    memset(&rec, 0, sizeof(rec));
    snprintf(rec.key, sizeof(rec.key), "%s", f->key);
    fault_value(r, k, f->acked_seq, rec.value, sizeof(rec.value));
    if (f->seq > f->acked_seq) {
      fault_value(r, k, f->seq, rec.alt, sizeof(rec.alt));
    }
    keep_key(r, &rec);
  }
}

/*
 * Liveness is judged from the moment the faults can no longer act: bytes a
 * cut held go at the first retransmission after it heals (up to about the
 * cut's length later), and a client request of the faults may still be
 * answered until its deadline. Until both are over, a node may rightly
 * still act on the past.
 */
static void await_quiet(run *r) {
  sim_world *w = &r->w;
  uint64_t ops_deadline = w->now_ms + SIM_CLIENT_TIMEOUT_MS;

  sim_world_run_ops(w, ops_deadline);
  if (w->now_ms <= w->net.cut_retransmit_last_ms) {
    sim_world_run_until(w, w->net.cut_retransmit_last_ms);
  }
  settle_fault_puts(r);
}

static void phase_heal(run *r) {
  sim_world *w = &r->w;
  uint64_t start, healed;
  size_t i, restarted = 0, down = 0;

  r->phase = "heal";
  memset(&w->net.faults, 0, sizeof(w->net.faults));
  sim_swarm_heal_disks(w);
  sim_swarm_stop_buggify(w);
  sim_net_path_faults_end(&w->net);
  for (i = 0; i < w->n_nodes; i++) {
    sim_world_resume(w, (uint32_t)i);
  }
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
  healed = w->now_ms;
  await_quiet(r);
  keep_fault_keys(r);
  sim_world_clear_ops(w);
  start = w->now_ms;
  if (w->failed || !converge(r)) {
    return;
  }
  sim_text_printf(r->report,
                  "heal: %zu nodes restarted, %zu stay down, %zu running; "
                  "quiet after %.1f s, then converged after %.1f s (at %.1f "
                  "s)\n",
                  restarted, down, sim_world_count_up(w), secs(start - healed),
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

/* What the stores hold of key instead: up to three distinct values (or
 * deletes), each with the number of stores, running or stopped, that hold
 * it. */
static void describe_copies(const sim_world *w, const char *key, char *buf,
                            size_t len) {
  char seen[3][VALUE_LEN_MAX];
  size_t count[3] = {0, 0, 0}, n_seen = 0, i, j, used = 0;

  for (i = 0; i < w->n_nodes; i++) {
    sim_record rec;
    char value[VALUE_LEN_MAX];
    if (!sim_store_read(w->nodes[i].store, key, &rec)) {
      continue;
    }
    snprintf(value, sizeof(value), "%.*s",
             rec.tombstone ? 9 : (int)rec.value_len,
             rec.tombstone ? "(deleted)" : (const char *)rec.value);
    for (j = 0; j < n_seen && strcmp(seen[j], value) != 0; j++) {
    }
    if (j == n_seen && n_seen < 3) {
      snprintf(seen[n_seen++], VALUE_LEN_MAX, "%s", value);
    }
    if (j < n_seen) {
      count[j]++;
    }
  }
  buf[0] = '\0';
  for (j = 0; j < n_seen && used < len; j++) {
    used += (size_t)snprintf(buf + used, len - used, "%s%s on %zu stores",
                             j ? ", " : "", seen[j], count[j]);
  }
  if (n_seen == 0) {
    snprintf(buf, len, "no store has it");
  }
}

/* A record of a kept key: its value, or the put after it (ud: the
 * key_record). */
static bool kept_value_ok(const void *ud, const uint8_t *value,
                          size_t value_len) {
  const key_record *k = ud;

  return sim_value_equals(k->value, value, value_len) ||
         (k->alt[0] != '\0' && sim_value_equals(k->alt, value, value_len));
}

/* Gets every key in keys from `reads` random nodes; each must return the
 * key's value (or its alternative). */
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
    const key_record *k = &keys[i / reads];
    char got[96];
    if (!answered_in_time(op) || op->reply_type != DHT_MSG_VALUE ||
        !(op->value_ok || kept_value_ok(k, op->value, op->value_len))) {
      describe_reply(w, op, got, sizeof(got));
      sim_world_fail(w, "get of %s via %s: %s", k->key,
                     w->nodes[op->via_slot].addr, got);
    }
  }
  sim_world_clear_ops(w);
}

static void check_fresh_keys(run *r) {
  key_record *keys = calloc(r->o->keys ? r->o->keys : 1, sizeof(*keys));
  uint64_t refused = r->skew_refused;
  size_t i, n;

  if (keys == NULL) {
    fprintf(stderr, "dht-sim: out of memory (keys)\n");
    abort();
  }
  for (i = 0; i < r->o->keys; i++) {
    make_key(r, &keys[i], "k", i);
  }
  n = put_keys(r, keys, r->o->keys);
  if (!r->w.failed) {
    read_keys(r, keys, n, r->o->reads);
  }
  if (!r->w.failed) {
    sim_text_printf(r->report,
                    "check: %zu fresh keys stored on their %" PRIu32
                    " holders and read back %" PRIu32 " times each (%" PRIu64
                    " refused for clock skew)\n",
                    n, r->sw.replicas, r->o->reads, r->skew_refused - refused);
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
      if (sim_key_placed(w, &ring, k->key, kept_value_ok, k, &pl)) {
        settled[i] = true;
        found[n_found++] = *k;
        continue;
      }
      sim_key_copies(w, k->key, kept_value_ok, k, &pl);
      if (pl.running_copies == 0 && pl.stopped_copies > 0) {
        settled[i] = true;
        lost++;
      } else if (pl.running_copies == 0) {
        char copies[256];
        describe_copies(w, k->key, copies, sizeof(copies));
        sim_world_fail(w,
                       "%s key %s = %s%s%s is on no running node nor on the "
                       "disk of a stopped one: destroyed (%s)",
                       i < r->n_prefault ? "pre-fault" : "acknowledged",
                       k->key, k->value, k->alt[0] ? " or " : "", k->alt,
                       copies);
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
      sim_key_placed(w, &ring, k->key, kept_value_ok, k, &pl);
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
      sim_ring_check_converged(&ring, w, false, why, sizeof(why),
                               NULL) != 0) {
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
                  "swarm: %.1f s of faults; lost segments %.3f, slow %.3f",
                  secs(sw->fault_ms), sw->net.loss, sw->net.slow);
  if (sw->net.drop > 0 || sw->net.duplicate > 0) {
    sim_text_printf(r->report, ", NOT TCP: dropped %.6f, duplicated %.6f",
                    sw->net.drop, sw->net.duplicate);
  }
  sim_text_printf(r->report,
                  "; crashes %.0f%% of the ring (refused %.0f%%, restarted "
                  "%.0f%%); fresh joins %.0f%%; %" PRIu32 " cuts, %" PRIu32
                  " clogs, %" PRIu32
                  " pauses; %.0f%% of the crashed restarted at heal\n",
                  100 * sw->crash_fraction, 100 * sw->refuse_prob,
                  100 * sw->restart_prob, 100 * sw->join_fraction, sw->cuts,
                  sw->clogs, sw->pauses, 100 * sw->heal_restart_prob);
  sim_text_printf(r->report,
                  "swarm: socket buffers %" PRIu32 " KiB a way, out queue "
                  "paused at %" PRIu32 " KiB, dropped past %" PRIu32
                  " KiB; idle close after %.1f s\n",
                  sw->limits.window_bytes / 1024,
                  sw->limits.out_queue_pause / 1024,
                  sw->limits.out_queue_max / 1024,
                  secs(sw->limits.idle_close_ms));
}

static void report_totals(run *r) {
  sim_world *w = &r->w;
  const sim_net_counters *n = &w->net.count;
  dht_node_counters c;

  sim_world_sum_counters(w, &c);
  sim_text_printf(r->report,
                  "network: %" PRIu64 " frames on %" PRIu64
                  " connections; %" PRIu64 " waited for a lost segment, %" PRIu64
                  " clogged, %" PRIu64 " retransmissions held by cuts or dead "
                  "hosts; %" PRIu64 " refused, %" PRIu64
                  " connect timeouts, %" PRIu64 " resets, %" PRIu64
                  " idle closes, %" PRIu64 " out-queue drops, %" PRIu64
                  " read pauses, %" PRIu64 " data timeouts; %" PRIu64
                  " unreachable and %" PRIu64 " reset reports\n",
                  n->frames, n->connects, n->retransmits, n->clogged, n->held,
                  n->refused, n->connect_timeouts, n->resets, n->idle_closes,
                  n->overflows, n->read_pauses, n->data_timeouts,
                  w->unreachable, w->resets_reported);
  if (n->dropped > 0 || n->duplicated > 0) {
    sim_text_printf(r->report,
                    "network, NOT TCP: %" PRIu64 " frames dropped, %" PRIu64
                    " duplicated\n",
                    n->dropped, n->duplicated);
  }
  sim_text_printf(r->report,
                  "running nodes: forwards %" PRIu64 ", rpc timeouts %" PRIu64
                  ", peers declared dead %" PRIu64
                  ", unmatched replies %" PRIu64 ", hop limit %" PRIu64
                  ", last steps refused %" PRIu64 ", keys handed off %" PRIu64
                  "\n",
                  c.forwards, c.rpc_timeouts, c.peers_failed,
                  c.replies_unmatched, c.hop_limit, c.route_refused,
                  c.handoff_keys_out);
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
  r.report = report;
  sim_rng_seed(&master, o->seed);
  sim_rng_fork(&master, &swarm_rng);
  sim_rng_fork(&master, &r.rng);
  draw_swarm(&r, &swarm_rng);
  r.salt = sim_rng_next(&swarm_rng);

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
  free(r.fault_keys);
}
