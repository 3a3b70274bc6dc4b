/*
 * sim_experiments.c: the Chord paper's measurements (Stoica et al., "Chord: A
 * Scalable Peer-to-peer Lookup Protocol for Internet Applications", IEEE/ACM
 * ToN 2003, section V), as simulator modes that print CSV on stdout.
 *
 *   path-length     hops per lookup on converged rings of 2^k nodes
 *                   (oracle routing installed, as the paper's simulator does)
 *   failures        lookups right after a fraction p of the nodes fail at
 *                   once, maintenance frozen, for two successor list sizes
 *   keys-per-node   keys per node for 10^5..10^6 keys (ids only, no nodes)
 *   keys-pdf        the distribution of keys per node for 5 * 10^5 keys
 *   virtual-nodes   keys per real node with r virtual ids per real node
 *
 * scripts/experiments runs them and plots the CSV; docs/EXPERIMENTS.md
 * describes the setup and how it differs from the paper's.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "sim.h"
#include "sim_ring.h"
#include "sim_world.h"

/* Lookups in flight at once in the path-length experiment: enough to keep
 * every node busy, few enough to bound the event queue. */
#define PATH_BATCH 2000
/* The routing configurations of the failures experiment: the defaults; as
 * many next hops per forward as dht_settings_check allows (the paper's
 * lookups keep trying the next best finger); and that with every hop
 * waiting as long as the client does, so that only the client's deadline
 * cuts a lookup short, not a nested per-hop route timeout. */
typedef struct route_config {
  uint32_t route_attempts;   /* 0: the default */
  uint32_t route_timeout_ms; /* 0: the default */
} route_config;
static const route_config route_configs[] = {
    {0, 0},
    {16, 0},
    {16, SIM_CLIENT_TIMEOUT_MS},
};
/* The failure fractions of the paper's simultaneous-failure figure. */
static const double fail_fractions[] = {0.1, 0.2, 0.3, 0.4, 0.5};
/* The paper's Fig. 8 sweep: 10^5 .. 10^6 keys. */
#define KEYS_STEP 100000u
#define KEYS_MAX 1000000u
#define KEYS_PDF 500000u
/* Fig. 9: virtual ids per real node, 10^6 keys. */
static const uint32_t vnode_counts[] = {1, 2, 5, 10, 20};

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);
  if (p == NULL) {
    fprintf(stderr, "dht-sim: out of memory\n");
    abort();
  }
  return p;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a;
  uint32_t y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted[0..n): the smallest value with at least
 * pct percent of the values at or below it. */
static uint32_t percentile(const uint32_t *sorted, size_t n, double pct) {
  size_t rank = (size_t)ceil(pct / 100.0 * (double)n);
  return sorted[rank > 0 ? rank - 1 : 0];
}

static double mean_u32(const uint32_t *v, size_t n) {
  uint64_t sum = 0;
  size_t i;

  for (i = 0; i < n; i++) {
    sum += v[i];
  }
  return n ? (double)sum / (double)n : 0.0;
}

/* A world of n nodes with the true routing installed and maintenance
 * frozen: a converged ring that stays exactly as built. */
static void build_oracle_world(sim_world *w, uint64_t seed, uint32_t n,
                               uint32_t succ_list_len,
                               const route_config *route) {
  dht_settings settings;
  sim_ring ring;
  uint32_t i;

  dht_settings_default(&settings);
  settings.succ_list_len = succ_list_len;
  if (route != NULL && route->route_attempts != 0) {
    settings.route_attempts = route->route_attempts;
  }
  if (route != NULL && route->route_timeout_ms != 0) {
    settings.route_timeout_ms = route->route_timeout_ms;
  }
  sim_world_init(w, seed, &settings);
  for (i = 0; i < n && !w->failed; i++) {
    sim_world_start(w, sim_world_add_node(w));
  }
  sim_ring_build(&ring, w, false);
  sim_ring_install_oracle(&ring, w, succ_list_len, true);
  sim_ring_free(&ring);
  sim_world_set_maintenance(w, false);
}

/* ---- path length ------------------------------------------------------------
 */

int sim_exp_path_length(const sim_options *o) {
  uint32_t bits;
  int status = 0;

  printf("nodes,log2_nodes,lookups,mean_hops,p1_hops,p99_hops,max_hops,"
         "half_log2_nodes,wrong_owner\n");
  for (bits = o->bits_min; bits <= o->bits_max && status == 0; bits++) {
    uint32_t n = UINT32_C(1) << bits;
    uint32_t *hops = xcalloc(o->samples, sizeof(uint32_t));
    size_t done = 0, wrong = 0;
    sim_world w;
    sim_ring ring;

    fprintf(stderr, "path-length: %" PRIu32 " nodes...\n", n);
    build_oracle_world(&w, o->seed + bits, n, 2, NULL);
    sim_ring_build(&ring, &w, true);
    while (done < o->samples && !w.failed) {
      size_t batch =
          o->samples - done < PATH_BATCH ? o->samples - done : PATH_BATCH;
      size_t first = w.ops_base + w.n_ops;
      size_t i;
      for (i = 0; i < batch; i++) {
        dht_id target;
        sim_rng_id(&w.rng, &target);
        sim_world_lookup(&w, sim_world_random_joined(&w, SIM_NO_SLOT), &target);
      }
      sim_world_run_ops(&w, w.now_ms + SIM_CLIENT_TIMEOUT_MS + 1000);
      for (i = 0; i < batch; i++) {
        const sim_op *op = sim_world_op(&w, first + i);
        uint32_t owner =
            ring.members[sim_ring_successor(&ring, &op->target)].slot;
        if (op->reply_type != DHT_MSG_FIND_SUCC_R || op->replies == 0 ||
            op->peer_slot != owner) {
          wrong++;
        }
        hops[done + i] = op->hops;
      }
      done += batch;
      sim_world_clear_ops(&w);
    }
    if (w.failed) {
      fprintf(stderr, "path-length: %" PRIu32 " nodes: %s\n", n, w.failure);
      status = 1;
    } else {
      qsort(hops, done, sizeof(uint32_t), cmp_u32);
      printf("%" PRIu32 ",%" PRIu32 ",%zu,%.4f,%" PRIu32 ",%" PRIu32 ",%" PRIu32
             ",%.1f,%zu\n",
             n, bits, done, mean_u32(hops, done), percentile(hops, done, 1),
             percentile(hops, done, 99), hops[done - 1], bits / 2.0, wrong);
      fflush(stdout);
      if (wrong > 0) {
        fprintf(stderr, "path-length: %zu lookups did not name the owner\n",
                wrong);
        status = 1;
      }
    }
    sim_ring_free(&ring);
    sim_world_free(&w);
    free(hops);
  }
  return status;
}

/* ---- simultaneous failures ----------------------------------------------- */

/* One data point: n nodes with succ_list_len successors, a fraction p fails
 * silently (hosts gone: requests to them time out), maintenance stays frozen,
 * then o->samples lookups start at once from random live nodes. */
static int failure_point(const sim_options *o, uint32_t n,
                         uint32_t succ_list_len, const route_config *route,
                         double p) {
  sim_world w;
  sim_ring before, after;
  size_t first, i, killed = 0, to_kill = (size_t)(p * n + 0.5);
  size_t failed = 0, no_reply = 0, errors = 0, hop_limit = 0, timeouts = 0;
  size_t wrong = 0;
  size_t orig_gone = 0;
  uint64_t hops_ok = 0;
  int status = 0;

  /* The same seed for every configuration of one p: the same nodes fail
   * and the same lookups run, so the configurations compare directly. */
  build_oracle_world(&w, o->seed * 1000 + (uint64_t)(p * 100), n, succ_list_len,
                     route);
  sim_ring_build(&before, &w, true);
  while (killed < to_kill && !w.failed) {
    uint32_t victim = sim_world_random_joined(&w, SIM_NO_SLOT);
    sim_world_crash(&w, victim, false);
    killed++;
  }
  sim_ring_build(&after, &w, true);
  first = w.ops_base + w.n_ops;
  for (i = 0; i < o->samples; i++) {
    dht_id target;
    sim_rng_id(&w.rng, &target);
    sim_world_lookup(&w, sim_world_random_joined(&w, SIM_NO_SLOT), &target);
  }
  sim_world_run_ops(&w, w.now_ms + SIM_CLIENT_TIMEOUT_MS + 1000);
  for (i = 0; i < o->samples; i++) {
    const sim_op *op = sim_world_op(&w, first + i);
    uint32_t owner =
        after.members[sim_ring_successor(&after, &op->target)].slot;
    uint32_t original =
        before.members[sim_ring_successor(&before, &op->target)].slot;
    bool in_time = op->replies > 0 &&
                   op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS;

    orig_gone += !sim_world_is_up(&w, original);
    if (!in_time) {
      no_reply++;
    } else if (op->reply_type != DHT_MSG_FIND_SUCC_R) {
      errors++;
      hop_limit += op->error_code == DHT_ERR_HOPS;
      timeouts += op->error_code == DHT_ERR_TIMEOUT;
    } else if (op->peer_slot != owner) {
      wrong++;
    } else {
      hops_ok += op->hops;
      continue;
    }
    failed++;
  }
  if (w.failed) {
    fprintf(stderr, "failures: %s\n", w.failure);
    status = 1;
  } else {
    printf("%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%" PRIu32 ",%.2f,%" PRIu32
           ",%zu,%.5f,%zu,%zu,%zu,%zu,%zu,%.5f,%.3f\n",
           n, succ_list_len, w.settings.route_attempts,
           w.settings.route_timeout_ms, p, o->samples, failed,
           (double)failed / o->samples, no_reply, errors, timeouts, hop_limit,
           wrong, (double)orig_gone / o->samples,
           failed < o->samples ? (double)hops_ok / (o->samples - failed) : 0.0);
    fflush(stdout);
  }
  sim_ring_free(&before);
  sim_ring_free(&after);
  sim_world_free(&w);
  return status;
}

int sim_exp_failures(const sim_options *o) {
  uint32_t n = o->ring_size;
  uint32_t long_list = (uint32_t)ceil(2.0 * log2((double)n));
  uint32_t lists[2];
  size_t l, c, k;
  int status = 0;

  lists[0] = 2;
  lists[1] = long_list < DHT_SUCC_LIST_MAX ? long_list : DHT_SUCC_LIST_MAX;
  printf("nodes,succ_list_len,route_attempts,route_timeout_ms,"
         "failed_node_fraction,lookups,failed_lookups,failed_lookup_fraction,"
         "no_reply,error_replies,timeout_errors,hop_limit_errors,wrong_owner,"
         "original_owner_dead_fraction,mean_hops_ok\n");
  for (c = 0;
       c < sizeof(route_configs) / sizeof(route_configs[0]) && status == 0;
       c++) {
    for (l = 0; l < 2 && status == 0; l++) {
      for (k = 0; k < sizeof(fail_fractions) / sizeof(fail_fractions[0]) &&
                  status == 0;
           k++) {
        fprintf(stderr,
                "failures: %" PRIu32 " nodes, %" PRIu32
                " successors, routing configuration %zu, p = %.1f...\n",
                n, lists[l], c, fail_fractions[k]);
        status =
            failure_point(o, n, lists[l], &route_configs[c], fail_fractions[k]);
      }
    }
  }
  return status;
}

/* ---- keys per node (ids and ring arithmetic only) -------------------------
 */

typedef struct id_owner {
  dht_id id;     /* a (virtual) node id */
  uint32_t real; /* the real node it belongs to */
} id_owner;

static int id_owner_cmp(const void *a, const void *b) {
  const id_owner *x = a;
  const id_owner *y = b;
  int c = dht_id_cmp(&x->id, &y->id);

  return c != 0 ? c : (x->real > y->real) - (x->real < y->real);
}

/* Node ids as the simulator's nodes have them: the hash of "n00042:7000";
 * virtual id v > 0 of a node hashes "n00042:7000#v". Seed s numbers the
 * nodes from (s - 1) * nodes on, so that every seed hashes names of its own
 * (modulo 2^64) and seed 1 has n00000 .. Sorted. */
static id_owner *make_node_ids(uint64_t seed, uint32_t nodes, uint32_t vnodes) {
  id_owner *ids = xcalloc((size_t)nodes * vnodes, sizeof(*ids));
  uint64_t first = (seed - 1) * nodes;
  uint32_t i, v;

  for (i = 0; i < nodes; i++) {
    for (v = 0; v < vnodes; v++) {
      char name[64];
      id_owner *e = &ids[(size_t)i * vnodes + v];
      if (v == 0) {
        snprintf(name, sizeof(name), "n%05" PRIu64 ":7000", first + i);
      } else {
        snprintf(name, sizeof(name), "n%05" PRIu64 ":7000#%" PRIu32, first + i,
                 v);
      }
      dht_id_hash(&e->id, name, strlen(name));
      e->real = i;
    }
  }
  qsort(ids, (size_t)nodes * vnodes, sizeof(*ids), id_owner_cmp);
  return ids;
}

/* Key ids: the hash of "key-<i>", as a key's id is the hash of its bytes.
 * Seed s numbers the keys from (s - 1) * KEYS_MAX on (seed 1: key-0 ..). */
static dht_id *make_key_ids(uint64_t seed, uint32_t keys) {
  dht_id *ids = xcalloc(keys, sizeof(*ids));
  uint64_t first = (seed - 1) * KEYS_MAX;
  uint32_t i;

  for (i = 0; i < keys; i++) {
    char name[40];
    snprintf(name, sizeof(name), "key-%" PRIu64, first + i);
    dht_id_hash(&ids[i], name, strlen(name));
  }
  return ids;
}

/* counts[real] = keys whose successor among ids belongs to real. */
static void count_keys(const id_owner *ids, size_t n_ids, const dht_id *keys,
                       uint32_t n_keys, uint32_t *counts, uint32_t nodes) {
  uint32_t k;

  memset(counts, 0, nodes * sizeof(uint32_t));
  for (k = 0; k < n_keys; k++) {
    size_t lo = 0, hi = n_ids;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (dht_id_cmp(&ids[mid].id, &keys[k]) < 0) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    counts[ids[lo == n_ids ? 0 : lo].real]++;
  }
}

int sim_exp_keys_per_node(const sim_options *o) {
  uint32_t nodes = o->ring_size;
  id_owner *ids = make_node_ids(o->seed, nodes, 1);
  dht_id *keys = make_key_ids(o->seed, KEYS_MAX);
  uint32_t *counts = xcalloc(nodes, sizeof(uint32_t));
  uint32_t k;

  printf("keys,nodes,mean,p1,p99,max\n");
  for (k = KEYS_STEP; k <= KEYS_MAX; k += KEYS_STEP) {
    count_keys(ids, nodes, keys, k, counts, nodes);
    qsort(counts, nodes, sizeof(uint32_t), cmp_u32);
    printf("%" PRIu32 ",%" PRIu32 ",%.1f,%" PRIu32 ",%" PRIu32 ",%" PRIu32 "\n",
           k, nodes, mean_u32(counts, nodes), percentile(counts, nodes, 1),
           percentile(counts, nodes, 99), counts[nodes - 1]);
  }
  free(counts);
  free(keys);
  free(ids);
  return 0;
}

int sim_exp_keys_pdf(const sim_options *o) {
  uint32_t nodes = o->ring_size;
  id_owner *ids = make_node_ids(o->seed, nodes, 1);
  dht_id *keys = make_key_ids(o->seed, KEYS_PDF);
  uint32_t *counts = xcalloc(nodes, sizeof(uint32_t));
  uint32_t i = 0;

  count_keys(ids, nodes, keys, KEYS_PDF, counts, nodes);
  qsort(counts, nodes, sizeof(uint32_t), cmp_u32);
  printf("keys_per_node,nodes_with_that_many,fraction_of_nodes\n");
  while (i < nodes) {
    uint32_t j = i;
    while (j < nodes && counts[j] == counts[i]) {
      j++;
    }
    printf("%" PRIu32 ",%" PRIu32 ",%.6f\n", counts[i], j - i,
           (double)(j - i) / nodes);
    i = j;
  }
  free(counts);
  free(keys);
  free(ids);
  return 0;
}

int sim_exp_virtual_nodes(const sim_options *o) {
  uint32_t nodes = o->ring_size;
  dht_id *keys = make_key_ids(o->seed, KEYS_MAX);
  uint32_t *counts = xcalloc(nodes, sizeof(uint32_t));
  size_t v;

  printf("virtual_ids_per_node,nodes,keys,mean,p1,p99,max\n");
  for (v = 0; v < sizeof(vnode_counts) / sizeof(vnode_counts[0]); v++) {
    id_owner *ids = make_node_ids(o->seed, nodes, vnode_counts[v]);
    count_keys(ids, (size_t)nodes * vnode_counts[v], keys, KEYS_MAX, counts,
               nodes);
    qsort(counts, nodes, sizeof(uint32_t), cmp_u32);
    printf("%" PRIu32 ",%" PRIu32 ",%u,%.1f,%" PRIu32 ",%" PRIu32 ",%" PRIu32
           "\n",
           vnode_counts[v], nodes, KEYS_MAX, mean_u32(counts, nodes),
           percentile(counts, nodes, 1), percentile(counts, nodes, 99),
           counts[nodes - 1]);
    free(ids);
  }
  free(counts);
  free(keys);
  return 0;
}

/* ---- lookups under churn ------------------------------------------------- */

/* The paper's churn rates R: nodes joining per second, and as many failing,
 * while every node stabilizes every 30 s on average. */
static const double churn_rates[] = {0.05, 0.10, 0.15, 0.20,
                                     0.25, 0.30, 0.35, 0.40};
_Static_assert(sizeof(churn_rates) / sizeof(churn_rates[0]) == SIM_CHURN_RATES,
               "--rates is checked against SIM_CHURN_RATES");
/* The paper's mean stabilization interval: the unit its rates are in. */
#define PAPER_STABILIZE_MS 30000u
/* Two ways to put the paper's time on ours. "ours": the default settings
 * (stabilize every 500 ms), the paper's time run 60 times faster, so that
 * as many nodes change per stabilization round as in the paper; lookups,
 * timeouts and the network are not sped up. "paper": every maintenance
 * interval 60 times the default (stabilize every 30 s, as the paper), and
 * the paper's rates as they are. */
typedef struct churn_series {
  const char *name;     /* the CSV's settings column */
  uint32_t maint_scale; /* maintenance intervals times this */
} churn_series;
static const churn_series churn_series_list[] = {
    {"ours", 1},
    {"paper", 60},
};
/* Churn runs this many stabilization rounds before lookups are counted, so
 * that the routing tables have reached their steady staleness (several
 * finger cycles too). */
#define CHURN_WARMUP_ROUNDS 20u
/* Replies are judged against the truth at most this long after they
 * arrive; churn events happen at their exact times. */
#define CHURN_STEP_MS 10u

/* A lookup of the churn experiment, in flight until judged. */
typedef struct churn_lookup {
  size_t op;              /* the world's op index */
  uint32_t owner_at_send; /* successor(target) when it was sent */
} churn_lookup;

/* What one churn rate gave. */
typedef struct churn_result {
  size_t sent;        /* lookups sent */
  size_t lookups;     /* lookups judged: sent, less entry_dead */
  size_t failed;      /* ...that did not name the owner in time */
  size_t no_reply;    /* no result within the client's deadline */
  size_t errors;      /* an ERROR result */
  size_t timeouts;    /* ...of which DHT_ERR_TIMEOUT */
  size_t wrong;       /* a result naming another node than the owner */
  size_t entry_dead;  /* not judged: the node asked failed before it
                         answered (a client would ask another) */
  uint64_t hops_ok;   /* hops of the lookups that succeeded */
  uint64_t ms_ok;     /* their latency */
  uint64_t joins;     /* nodes that started to join during the run */
  uint64_t failures;  /* nodes that failed during the run */
  uint64_t nodes_sum; /* joined nodes, summed at every lookup sent */
} churn_result;

/* The joined nodes, to find a key's owner: rebuilt when the membership may
 * have changed (a join completed, a node failed), and every second for the
 * rare re-join that changes a node's state without an event. */
typedef struct churn_truth {
  sim_ring ring;         /* joined nodes, sorted */
  uint64_t joins_seen;   /* w->joins when built */
  uint64_t crashes_seen; /* crashes made when built */
  uint64_t built_ms;     /* when */
} churn_truth;

static void churn_truth_update(churn_truth *t, const sim_world *w,
                               uint64_t crashes) {
  if (t->ring.members != NULL && t->joins_seen == w->joins &&
      t->crashes_seen == crashes && w->now_ms < t->built_ms + 1000) {
    return;
  }
  sim_ring_free(&t->ring);
  sim_ring_build(&t->ring, w, true);
  t->joins_seen = w->joins;
  t->crashes_seen = crashes;
  t->built_ms = w->now_ms;
}

static uint32_t churn_owner(const churn_truth *t, const dht_id *target) {
  return t->ring.n > 0
             ? t->ring.members[sim_ring_successor(&t->ring, target)].slot
             : SIM_NO_SLOT;
}

/* Judges lookup l, answered, past its deadline, or orphaned by its entry
 * node's failure: it succeeded when its result came in time and named the
 * owner as of its arrival, or as of when it was sent (an owner that changed
 * while the lookup was under way is not held against it). */
static void churn_judge(sim_world *w, const churn_truth *t,
                        const churn_lookup *l, churn_result *r) {
  const sim_op *op = sim_world_op(w, l->op);
  bool in_time =
      op->replies > 0 && op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS;

  if (op->replies == 0 && !sim_world_is_up(w, op->via_slot)) {
    r->entry_dead++;
    return;
  }
  r->lookups++;
  if (!in_time) {
    r->no_reply++;
  } else if (op->reply_type != DHT_MSG_FIND_SUCC_R) {
    r->errors++;
    r->timeouts += op->error_code == DHT_ERR_TIMEOUT;
  } else if (op->peer_slot == SIM_NO_SLOT ||
             (op->peer_slot != churn_owner(t, &op->target) &&
              op->peer_slot != l->owner_at_send)) {
    r->wrong++;
  } else {
    r->hops_ok += op->hops;
    r->ms_ok += op->replied_ms - op->sent_ms;
    return;
  }
  r->failed++;
}

/* The default settings with every maintenance interval times scale. */
static void churn_settings(dht_settings *s, uint32_t scale) {
  dht_settings_default(s);
  s->stabilize_interval_ms *= scale;
  s->fix_fingers_interval_ms *= scale;
  s->check_pred_interval_ms *= scale;
  s->sync_interval_ms *= scale;
}

/* One rate's run in progress. */
typedef struct churn_run {
  const sim_options *o;
  const dht_settings *settings;
  sim_world w;
  sim_rng rng; /* churn and lookup times, lookup targets */
  churn_truth truth;
  churn_lookup *flight; /* lookups not judged yet */
  size_t n_flight;
  uint64_t crashes;
  double gap_ms;        /* mean time between joins, and between failures */
  double lookup_gap_ms; /* mean time between lookups */
  double next_join, next_fail, next_lookup;
  churn_result *r;
} churn_run;

/* Judges every lookup in flight that has its answer, has outlived the
 * client's deadline or has lost its entry node; keeps the others. */
static void churn_judge_done(churn_run *c) {
  size_t i, kept = 0;

  for (i = 0; i < c->n_flight; i++) {
    const sim_op *op = sim_world_op(&c->w, c->flight[i].op);
    if (op->replies > 0 || !sim_world_is_up(&c->w, op->via_slot) ||
        c->w.now_ms > op->sent_ms + SIM_CLIENT_TIMEOUT_MS) {
      churn_judge(&c->w, &c->truth, &c->flight[i], c->r);
    } else {
      c->flight[kept++] = c->flight[i];
    }
  }
  c->n_flight = kept;
}

/* A fresh node joins through a random joined node, if one is due. */
static void churn_join_due(churn_run *c) {
  uint32_t boot;

  if (c->next_join > (double)c->w.now_ms) {
    return;
  }
  boot = sim_world_random_joined(&c->w, SIM_NO_SLOT);
  if (boot != SIM_NO_SLOT) {
    sim_world_join(&c->w, sim_world_add_node(&c->w), boot);
    c->r->joins++;
  }
  c->next_join += sim_rng_exponential(&c->rng, c->gap_ms);
}

/* A random joined node fails, if one is due; never the last few, so that
 * a successor list can still span the ring. */
static void churn_fail_due(churn_run *c) {
  uint32_t victim;

  if (c->next_fail > (double)c->w.now_ms) {
    return;
  }
  victim = sim_world_random_joined(&c->w, SIM_NO_SLOT);
  if (victim != SIM_NO_SLOT && c->truth.ring.n > c->settings->succ_list_len) {
    sim_world_crash(&c->w, victim, false);
    c->crashes++;
    c->r->failures++;
  }
  c->next_fail += sim_rng_exponential(&c->rng, c->gap_ms);
}

/* A random joined node looks up a random id, if a lookup is due. A ring
 * with no joined node left cannot be measured: joins take long enough
 * that a ring small against the rate loses every node while the new ones
 * are still joining. */
static void churn_lookup_due(churn_run *c) {
  uint32_t via;
  dht_id target;

  if (c->r->sent >= c->o->samples || c->next_lookup > (double)c->w.now_ms) {
    return;
  }
  via = sim_world_random_joined(&c->w, SIM_NO_SLOT);
  if (via == SIM_NO_SLOT) {
    sim_world_fail(&c->w,
                   "no node is joined any more at %.2f joins and failures a "
                   "second: a larger --ring-size is needed",
                   1000.0 / c->gap_ms);
    return;
  }
  churn_truth_update(&c->truth, &c->w, c->crashes);
  sim_rng_id(&c->rng, &target);
  c->flight[c->n_flight].op = sim_world_lookup(&c->w, via, &target);
  c->flight[c->n_flight].owner_at_send = churn_owner(&c->truth, &target);
  c->n_flight++;
  c->r->sent++;
  c->r->nodes_sum += c->truth.ring.n;
  c->next_lookup += sim_rng_exponential(&c->rng, c->lookup_gap_ms);
}

/* Runs the world to the next event of the churn, or CHURN_STEP_MS on. */
static void churn_advance(churn_run *c) {
  double next = (double)(c->w.now_ms + CHURN_STEP_MS);

  next = c->next_join < next ? c->next_join : next;
  next = c->next_fail < next ? c->next_fail : next;
  if (c->r->sent < c->o->samples && c->next_lookup < next) {
    next = c->next_lookup;
  }
  /* ceil: the event is due once the clock is there */
  sim_world_run_until(&c->w, (uint64_t)ceil(next));
  churn_truth_update(&c->truth, &c->w, c->crashes);
}

/*
 * One rate: a converged ring of o->ring_size nodes with maintenance on.
 * Nodes join (fresh addresses, through a random joined node) and fail
 * (hosts gone silently: found by timeouts) as two Poisson processes of
 * rate_per_s each; o->samples lookups go out as a third, from random
 * joined nodes for random ids, spread over o->measure_rounds
 * stabilization rounds after CHURN_WARMUP_ROUNDS of churn. Churn goes on
 * until the last lookup is judged.
 */
static int churn_point(const sim_options *o, uint64_t seed,
                       const dht_settings *settings, double rate_per_s,
                       churn_result *r) {
  churn_run c;
  sim_ring start; /* the converged ring the churn starts from */
  uint32_t i;
  double t_begin =
      (double)CHURN_WARMUP_ROUNDS * settings->stabilize_interval_ms;
  int status = 0;

  memset(&c, 0, sizeof(c));
  memset(r, 0, sizeof(*r));
  c.o = o;
  c.settings = settings;
  c.r = r;
  c.flight = xcalloc(o->samples, sizeof(*c.flight));
  c.gap_ms = 1000.0 / rate_per_s;
  c.lookup_gap_ms =
      (double)o->measure_rounds * settings->stabilize_interval_ms / o->samples;
  sim_world_init(&c.w, seed, settings);
  sim_rng_seed(&c.rng, seed ^ UINT64_C(0x636875726e)); /* "churn" */
  for (i = 0; i < o->ring_size && !c.w.failed; i++) {
    sim_world_start(&c.w, sim_world_add_node(&c.w));
  }
  sim_ring_build(&start, &c.w, false);
  sim_ring_install_oracle(&start, &c.w, settings->succ_list_len, false);
  sim_ring_free(&start);
  c.next_join = sim_rng_exponential(&c.rng, c.gap_ms);
  c.next_fail = sim_rng_exponential(&c.rng, c.gap_ms);
  c.next_lookup = t_begin + sim_rng_exponential(&c.rng, c.lookup_gap_ms);
  while (!c.w.failed && (r->sent < o->samples || c.n_flight > 0)) {
    churn_advance(&c);
    churn_judge_done(&c);
    churn_join_due(&c);
    churn_fail_due(&c);
    churn_lookup_due(&c);
  }
  if (c.w.failed) {
    fprintf(stderr, "churn-lookups: %s\n", c.w.failure);
    status = 1;
  }
  sim_ring_free(&c.truth.ring);
  sim_world_free(&c.w);
  free(c.flight);
  return status;
}

int sim_exp_churn_lookups(const sim_options *o) {
  size_t k, s;
  int status = 0;

  printf("settings,stabilize_interval_ms,rate_per_paper_s,rate_per_s,"
         "changes_per_stabilize,nodes_start,mean_nodes,joins,failures,"
         "lookups,failed_lookups,failed_lookup_fraction,no_reply,"
         "error_replies,timeout_errors,wrong_owner,entry_failed,"
         "mean_hops_ok,mean_ms_ok\n");
  for (s = 0; s < sizeof(churn_series_list) / sizeof(churn_series_list[0]) &&
              status == 0;
       s++) {
    const churn_series *series = &churn_series_list[s];
    dht_settings settings;
    churn_settings(&settings, series->maint_scale);
    for (k = 0; k < o->churn_rates && status == 0; k++) {
      /* The paper's R per its stabilization round, put on ours. */
      double rate =
          churn_rates[k] * PAPER_STABILIZE_MS / settings.stabilize_interval_ms;
      size_t ok;
      churn_result r;
      fprintf(stderr,
              "churn-lookups: %s settings, R = %.2f (%.2f joins and failures "
              "per virtual second)...\n",
              series->name, churn_rates[k], rate);
      status =
          churn_point(o, o->seed * 1000 + s * 100 + k, &settings, rate, &r);
      if (status != 0) {
        break;
      }
      ok = r.lookups - r.failed;
      printf("%s,%" PRIu32 ",%.2f,%.2f,%.2f,%" PRIu32 ",%.1f,%" PRIu64
             ",%" PRIu64 ",%zu,%zu,%.5f,%zu,%zu,%zu,%zu,%zu,%.3f,%.1f\n",
             series->name, settings.stabilize_interval_ms, churn_rates[k], rate,
             rate * settings.stabilize_interval_ms / 1000.0, o->ring_size,
             r.sent ? (double)r.nodes_sum / (double)r.sent : 0.0, r.joins,
             r.failures, r.lookups, r.failed,
             r.lookups ? (double)r.failed / (double)r.lookups : 0.0, r.no_reply,
             r.errors, r.timeouts, r.wrong, r.entry_dead,
             ok ? (double)r.hops_ok / (double)ok : 0.0,
             ok ? (double)r.ms_ok / (double)ok : 0.0);
      fflush(stdout);
    }
  }
  return status;
}
