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
  sim_ring_install_oracle(&ring, w, succ_list_len);
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
 * virtual id v > 0 of a node hashes "n00042:7000#v". Sorted. */
static id_owner *make_node_ids(uint32_t nodes, uint32_t vnodes) {
  id_owner *ids = xcalloc((size_t)nodes * vnodes, sizeof(*ids));
  uint32_t i, v;

  for (i = 0; i < nodes; i++) {
    for (v = 0; v < vnodes; v++) {
      char name[48];
      id_owner *e = &ids[(size_t)i * vnodes + v];
      if (v == 0) {
        snprintf(name, sizeof(name), "n%05" PRIu32 ":7000", i);
      } else {
        snprintf(name, sizeof(name), "n%05" PRIu32 ":7000#%" PRIu32, i, v);
      }
      dht_id_hash(&e->id, name, strlen(name));
      e->real = i;
    }
  }
  qsort(ids, (size_t)nodes * vnodes, sizeof(*ids), id_owner_cmp);
  return ids;
}

/* Key ids: the hash of "key-<i>", as a key's id is the hash of its bytes. */
static dht_id *make_key_ids(uint32_t keys) {
  dht_id *ids = xcalloc(keys, sizeof(*ids));
  uint32_t i;

  for (i = 0; i < keys; i++) {
    char name[32];
    snprintf(name, sizeof(name), "key-%" PRIu32, i);
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
  id_owner *ids = make_node_ids(nodes, 1);
  dht_id *keys = make_key_ids(KEYS_MAX);
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
  id_owner *ids = make_node_ids(nodes, 1);
  dht_id *keys = make_key_ids(KEYS_PDF);
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
  dht_id *keys = make_key_ids(KEYS_MAX);
  uint32_t *counts = xcalloc(nodes, sizeof(uint32_t));
  size_t v;

  printf("virtual_ids_per_node,nodes,keys,mean,p1,p99,max\n");
  for (v = 0; v < sizeof(vnode_counts) / sizeof(vnode_counts[0]); v++) {
    id_owner *ids = make_node_ids(nodes, vnode_counts[v]);
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
