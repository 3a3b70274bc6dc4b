/*
 * sim_ring.c: ring truth, convergence checks and oracle routing (see
 * sim_ring.h). Everything here is computed from ids the simulator already
 * knows, in id order, so the results never depend on slot or pointer order.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dht/err.h"
#include "sim_ring.h"

/* Convergence is checked this often. A check of 10^4 nodes compares 1.6
 * million fingers, but stops at the first difference until the very end,
 * and costs far less than simulating the second it could save. */
#define CHECK_MS 1000

static int member_cmp(const void *a, const void *b) {
  const sim_ring_member *x = a;
  const sim_ring_member *y = b;
  int c = dht_id_cmp(&x->id, &y->id);

  if (c != 0) {
    return c;
  }
  return (x->slot > y->slot) - (x->slot < y->slot);
}

void sim_ring_build(sim_ring *ring, const sim_world *w, bool joined_only) {
  size_t i;

  ring->n = 0;
  ring->members =
      malloc((w->n_nodes ? w->n_nodes : 1) * sizeof(*ring->members));
  if (ring->members == NULL) {
    fprintf(stderr, "dht-sim: out of memory (ring)\n");
    abort();
  }
  for (i = 0; i < w->n_nodes; i++) {
    uint32_t slot = (uint32_t)i;
    if (joined_only ? sim_world_is_joined(w, slot) : sim_world_is_up(w, slot)) {
      ring->members[ring->n].id = w->nodes[i].id;
      ring->members[ring->n].slot = slot;
      ring->n++;
    }
  }
  qsort(ring->members, ring->n, sizeof(*ring->members), member_cmp);
}

void sim_ring_free(sim_ring *ring) {
  free(ring->members);
  ring->members = NULL;
  ring->n = 0;
}

/* Counts one record unless it is a tombstone. */
static int count_live(void *ud, const dht_id *key_id, const uint8_t *key,
                      size_t key_len, const uint8_t *rec, size_t rec_len) {
  dht_kv kv;

  (void)key_id;
  (void)key;
  (void)key_len;
  dht_record_parse(rec, rec_len, &kv);
  *(size_t *)ud += !kv.tombstone;
  return 0;
}

size_t sim_store_count_live(dht_store *st, const dht_id *from,
                            const dht_id *to) {
  size_t n = 0;

  (void)dht_store_scan(st, from, to, count_live, &n);
  return n;
}

size_t sim_ring_holders(const sim_ring *ring, const dht_id *key_id,
                        uint32_t replicas, uint32_t *slots) {
  size_t first, i, n;

  if (ring->n == 0) {
    return 0;
  }
  n = replicas < ring->n ? replicas : ring->n;
  first = sim_ring_successor(ring, key_id);
  for (i = 0; i < n; i++) {
    slots[i] = ring->members[(first + i) % ring->n].slot;
  }
  return n;
}

size_t sim_ring_successor(const sim_ring *ring, const dht_id *k) {
  size_t lo = 0;
  size_t hi = ring->n;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (dht_id_cmp(&ring->members[mid].id, k) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo == ring->n ? 0 : lo;
}

/* Describes a peer for a report: its address, or "nothing". */
static const char *peer_name(bool present, const char *addr, const dht_id *id,
                             char *buf, size_t len) {
  char s[DHT_ID_SHORT_LEN];

  if (!present) {
    return "nothing";
  }
  snprintf(buf, len, "%s (%s)", addr ? addr : "?", dht_id_short(id, s));
  return buf;
}

/* How a member compares with the truth. */
typedef enum member_state {
  MEMBER_RIGHT,       /* everything */
  MEMBER_LISTS_WRONG, /* a successor, the predecessor or a key's place */
  MEMBER_FINGER_WRONG /* only a finger */
} member_state;

/* Checks one member; on a difference writes why. */
static member_state member_converged(const sim_ring *ring, const sim_world *w,
                                     size_t index, char *why,
                                     size_t why_len) {
  const sim_ring_member *m = &ring->members[index];
  const sim_node *n = &w->nodes[m->slot];
  dht_id ids[DHT_SUCC_LIST_MAX], got_id;
  const char *addrs[DHT_SUCC_LIST_MAX], *got_addr = NULL;
  char got[64], want[64];
  size_t count, expect_count, i;
  bool alone = ring->n == 1;
  bool has;

  expect_count = ring->n - 1;
  if (expect_count > w->settings.succ_list_len) {
    expect_count = w->settings.succ_list_len;
  }
  count = dht_node_succs(n->node, ids, addrs, DHT_SUCC_LIST_MAX);
  if (alone) {
    /* A ring of one: its successor is itself (or it keeps none). */
    if (count > 1 || (count == 1 && !dht_id_eq(&ids[0], &m->id))) {
      snprintf(why, why_len, "%s is alone but lists %zu successors", n->addr,
               count);
      return MEMBER_LISTS_WRONG;
    }
  } else {
    if (count != expect_count) {
      snprintf(why, why_len, "%s has %zu successors, should have %zu", n->addr,
               count, expect_count);
      return MEMBER_LISTS_WRONG;
    }
    for (i = 0; i < count; i++) {
      const sim_ring_member *t = &ring->members[(index + 1 + i) % ring->n];
      if (!dht_id_eq(&ids[i], &t->id)) {
        snprintf(why, why_len, "%s: successor %zu is %s, should be %s", n->addr,
                 i, peer_name(true, addrs[i], &ids[i], got, sizeof(got)),
                 peer_name(true, w->nodes[t->slot].addr, &t->id, want,
                           sizeof(want)));
        return MEMBER_LISTS_WRONG;
      }
    }
  }

  has = dht_node_pred(n->node, &got_id, &got_addr);
  {
    const sim_ring_member *t = &ring->members[(index + ring->n - 1) % ring->n];
    if (!alone ? !has || !dht_id_eq(&got_id, &t->id)
               : has && !dht_id_eq(&got_id, &m->id)) {
      snprintf(
          why, why_len, "%s: predecessor is %s, should be %s", n->addr,
          peer_name(has, got_addr, &got_id, got, sizeof(got)),
          peer_name(true, w->nodes[t->slot].addr, &t->id, want, sizeof(want)));
      return MEMBER_LISTS_WRONG;
    }
  }

  /* Keys follow ownership: a node hands whatever lies outside the ranges
   * it owns or replicates, (its replicas-th predecessor, self], back
   * towards their owners, so at rest it holds no live record there. */
  if (ring->n > w->replicas) {
    const dht_id *from =
        &ring->members[(index + ring->n - w->replicas) % ring->n].id;
    size_t stray = sim_store_count_live(n->store, &m->id, from);
    if (stray > 0) {
      snprintf(why, why_len,
               "%s holds %zu keys outside the ranges it owns or replicates",
               n->addr, stray);
      return MEMBER_LISTS_WRONG;
    }
  }

  for (i = 0; i < DHT_ID_BITS; i++) {
    dht_id start;
    const sim_ring_member *t;
    dht_id_add_pow2(&start, &m->id, (unsigned)i);
    t = &ring->members[sim_ring_successor(ring, &start)];
    has = dht_node_finger(n->node, (unsigned)i, &got_id, &got_addr);
    /* A finger that should point to the node itself may be left unset. */
    if (!has ? t->slot != m->slot : !dht_id_eq(&got_id, &t->id)) {
      snprintf(
          why, why_len, "%s: finger %zu is %s, should be %s", n->addr, i,
          peer_name(has, got_addr, &got_id, got, sizeof(got)),
          peer_name(true, w->nodes[t->slot].addr, &t->id, want, sizeof(want)));
      return MEMBER_FINGER_WRONG;
    }
  }
  return MEMBER_RIGHT;
}

/* Appends one reason to why, while there is room and few enough reasons. */
static void add_reason(char *why, size_t why_len, size_t differ,
                       const char *reason) {
  size_t used = strlen(why);

  if (differ > SIM_RING_REASONS_MAX || used + 4 >= why_len) {
    return;
  }
  snprintf(why + used, why_len - used, "%s%s", differ > 1 ? "; " : "", reason);
}

size_t sim_ring_check_converged(const sim_ring *ring, const sim_world *w,
                                bool stop_at_first, char *why, size_t why_len,
                                size_t *fingers_only) {
  size_t differ = 0, only = 0;
  size_t i;
  char reason[256];

  why[0] = '\0';
  if (fingers_only != NULL) {
    *fingers_only = 0;
  }
  /* Running but not (yet) joined: not converged, and not in ring. */
  for (i = 0; i < w->n_nodes; i++) {
    uint32_t slot = (uint32_t)i;
    if (sim_world_is_up(w, slot) && !sim_world_is_joined(w, slot)) {
      snprintf(reason, sizeof(reason), "%s is running but not joined",
               w->nodes[i].addr);
      add_reason(why, why_len, ++differ, reason);
      if (stop_at_first) {
        return differ;
      }
    }
  }
  for (i = 0; i < ring->n; i++) {
    member_state state = member_converged(ring, w, i, reason, sizeof(reason));
    if (state != MEMBER_RIGHT) {
      only += state == MEMBER_FINGER_WRONG;
      add_reason(why, why_len, ++differ, reason);
      if (stop_at_first) {
        break;
      }
    }
  }
  if (fingers_only != NULL) {
    *fingers_only = only;
  }
  return differ;
}

void sim_ring_install_oracle(const sim_ring *ring, sim_world *w,
                             uint32_t succ_list_len, bool install_pred) {
  dht_routing_peer pred, succs[DHT_SUCC_LIST_MAX], fingers[DHT_ID_BITS];
  size_t i, j, n_succs;

  if (ring->n < 2) {
    sim_world_fail(w, "oracle routing needs at least two nodes");
    return;
  }
  n_succs = ring->n - 1 < succ_list_len ? ring->n - 1 : succ_list_len;
  for (i = 0; i < ring->n && !w->failed; i++) {
    const sim_ring_member *m = &ring->members[i];
    const sim_ring_member *p = &ring->members[(i + ring->n - 1) % ring->n];
    int rv;

    pred.id = p->id;
    pred.addr = w->nodes[p->slot].addr;
    for (j = 0; j < n_succs; j++) {
      const sim_ring_member *s = &ring->members[(i + 1 + j) % ring->n];
      succs[j].id = s->id;
      succs[j].addr = w->nodes[s->slot].addr;
    }
    for (j = 0; j < DHT_ID_BITS; j++) {
      dht_id start;
      const sim_ring_member *f;
      dht_id_add_pow2(&start, &m->id, (unsigned)j);
      f = &ring->members[sim_ring_successor(ring, &start)];
      fingers[j].id = f->id;
      fingers[j].addr = w->nodes[f->slot].addr;
    }
    rv = dht_node_install_routing(w->nodes[m->slot].node,
                                  install_pred ? &pred : NULL, succs, n_succs,
                                  fingers, sim_world_node_now(w, m->slot));
    if (rv != 0) {
      sim_world_fail(w, "dht_node_install_routing(%s): %s",
                     w->nodes[m->slot].addr, dht_strerror(rv));
      return;
    }
    sim_world_drain(w, m->slot);
  }
}

bool sim_ring_converge(sim_world *w, uint64_t limit_ms, bool progress,
                       const char *after) {
  uint64_t start = w->now_ms;
  char why[SIM_FAILURE_LEN];

  for (;;) {
    sim_ring ring;
    size_t differ, fingers_only;

    sim_ring_build(&ring, w, true);
    /* Counting every difference costs a full check; only progress needs it. */
    differ = sim_ring_check_converged(&ring, w, !progress, why, sizeof(why),
                                      &fingers_only);
    if (progress) {
      /* CPU so far, for how long a ring of a given size takes to build
       * (docs/EXPERIMENTS.md, "Simulator scale"); never in the report,
       * which must not depend on the machine. */
      fprintf(stderr,
              "%s: %.1f s: %zu running, %zu joined, %zu differ (%zu in "
              "fingers alone; %.1f s of CPU so far): %.300s\n",
              after, (double)w->now_ms / 1000.0, sim_world_count_up(w), ring.n,
              differ, fingers_only, (double)clock() / CLOCKS_PER_SEC, why);
    }
    if (differ == 0) {
      sim_ring_free(&ring);
      return true;
    }
    if (w->now_ms - start >= limit_ms) {
      differ =
          sim_ring_check_converged(&ring, w, false, why, sizeof(why), NULL);
      sim_world_fail(w,
                     "not converged %.1f s after the %s phase: %zu of %zu "
                     "running nodes differ from the truth: %s",
                     (double)(w->now_ms - start) / 1000.0, after, differ,
                     sim_world_count_up(w), why);
      sim_ring_free(&ring);
      return false;
    }
    sim_ring_free(&ring);
    sim_world_run_until(w, w->now_ms + CHECK_MS);
    if (w->failed) {
      return false;
    }
  }
}
