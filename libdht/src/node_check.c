/*
 * node_check.c: verifies the invariants stated in node_state.h. Each check
 * walks the state it covers once (peers, pending slots, fingers), so the
 * simulator can afford them after every call. dht_node_prefetch, at the
 * end, asks for the same memory ahead of the call (dht/node_prefetch.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/node_prefetch.h"
#include "node_check.h"

__attribute__((format(printf, 3, 4))) static bool
broken(char *why, size_t why_len, const char *fmt, ...) {
  va_list ap;

  if (why_len > 0) {
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
  }
  return false;
}

static bool peer_valid(const dht_node *node, int32_t idx) {
  return idx >= 0 && idx < node->n_peers && node->peer_scan[idx].refs > 0;
}

static bool is_self(const dht_node *node, int32_t idx) {
  const dht__peer *p = &node->peers[idx];

  return strcmp(p->addr, node->addr) == 0 ||
         (p->id_known && dht_id_eq(&p->id, &node->id));
}

static bool listed(const int32_t *list, uint32_t n, int32_t idx) {
  uint32_t i;

  for (i = 0; i < n; i++) {
    if (list[i] == idx) {
      return true;
    }
  }
  return false;
}

bool dht__check_tables(const dht_node *node, char *why, size_t why_len) {
  dht_id prev, dist;
  uint32_t i;

  if (node->n_succs > node->set.succ_list_len) {
    return broken(why, why_len, "%u successors, above succ_list_len %u",
                  node->n_succs, node->set.succ_list_len);
  }
  for (i = 0; i < node->n_succs; i++) {
    int32_t s = node->succs[i];
    if (!peer_valid(node, s) || !node->peers[s].id_known) {
      return broken(why, why_len, "successor %u is slot %d: free or of "
                    "unknown id", i, (int)s);
    }
    if (is_self(node, s) || listed(node->succs, i, s)) {
      return broken(why, why_len, "successor %u (%s) is this node or "
                    "listed twice", i, node->peers[s].addr);
    }
    /* Clockwise: distances never shrink. Two peers at one id (a conflict
     * between addresses) are the one case of equal distances. */
    dht_id_distance(&dist, &node->id, &node->peers[s].id);
    if (i > 0 && dht_id_cmp(&dist, &prev) < 0) {
      return broken(why, why_len, "successor %u (%s) is not clockwise after "
                    "successor %u", i, node->peers[s].addr, i - 1);
    }
    prev = dist;
  }
  if (node->pred != DHT__NO_PEER && !peer_valid(node, node->pred)) {
    return broken(why, why_len, "predecessor is slot %d, which is free",
                  (int)node->pred);
  }
  if (node->n_preds > DHT_SUCC_LIST_MAX ||
      (node->n_preds > 0 && node->preds[0] != node->pred) ||
      (node->pred == DHT__NO_PEER && node->n_preds != 0)) {
    return broken(why, why_len, "predecessor list (%u entries) does not "
                  "start at the predecessor", node->n_preds);
  }
  for (i = 0; i < node->n_preds; i++) {
    int32_t p = node->preds[i];
    if (!peer_valid(node, p) || is_self(node, p) ||
        listed(node->preds, i, p)) {
      return broken(why, why_len, "predecessor %u is slot %d: free, this "
                    "node or listed twice", i, (int)p);
    }
  }
  return true;
}

static bool live_at(const dht_node *node, uint32_t slot) {
  return slot < node->n_slots_used && node->slot_rids[slot] != 0 &&
         node->pending[slot] != NULL;
}

/* The deadline heap: every position holds a live request that knows it is
 * there, due no earlier than its parent. */
static bool check_heap(const dht_node *node, char *why, size_t why_len) {
  uint32_t pos;

  for (pos = 0; pos < node->n_pending; pos++) {
    uint32_t slot = node->deadline_heap[pos];
    const dht__pending *p, *parent;
    if (!live_at(node, slot) || node->pending[slot]->heap_pos != pos) {
      return broken(why, why_len, "deadline heap position %u holds slot %u, "
                    "which is free or placed elsewhere", pos, slot);
    }
    if (pos == 0) {
      continue;
    }
    p = node->pending[slot];
    parent = node->pending[node->deadline_heap[(pos - 1) / 2]];
    if (p->deadline_ms < parent->deadline_ms ||
        (p->deadline_ms == parent->deadline_ms && slot < parent->slot)) {
      return broken(why, why_len, "deadline heap position %u is due before "
                    "its parent", pos);
    }
  }
  return true;
}

/* Each peer's list of requests: live requests to that peer, linked both
 * ways; together the lists hold every live request once. */
static bool check_peer_lists(const dht_node *node, char *why,
                             size_t why_len) {
  uint32_t listed_total = 0;
  int32_t k;

  for (k = 0; k < node->n_peers; k++) {
    uint32_t slot = node->peer_scan[k].pending_head, prev = DHT__NO_SLOT;
    while (slot != DHT__NO_SLOT) {
      const dht__pending *p;
      if (!live_at(node, slot) || listed_total++ > node->n_pending) {
        return broken(why, why_len, "peer %s lists slot %u, which is free, "
                      "or its list loops", node->peers[k].addr, slot);
      }
      p = node->pending[slot];
      if (p->peer != k || p->peer_prev != prev) {
        return broken(why, why_len, "request in slot %u is on the list of "
                      "peer %s but not linked as its own", slot,
                      node->peers[k].addr);
      }
      prev = slot;
      slot = p->peer_next;
    }
  }
  if (listed_total != node->n_pending) {
    return broken(why, why_len, "peers list %u requests, %u are live",
                  listed_total, node->n_pending);
  }
  return true;
}

bool dht__check_pending(const dht_node *node, char *why, size_t why_len) {
  uint32_t i, live = 0, structs = 0;

  for (i = 0; i < node->n_slots_used; i++) {
    const dht__pending *p = node->pending[i];
    structs += p != NULL;
    if (!live_at(node, i)) {
      continue;
    }
    live++;
    if (p->slot != i || p->rid != node->slot_rids[i] ||
        (p->rid & (DHT__PENDING_HARD_MAX - 1)) != i) {
      return broken(why, why_len, "pending slot %u holds rid %llx of slot "
                    "%u", i, (unsigned long long)p->rid, p->slot);
    }
    if (p->ops == NULL || !peer_valid(node, p->peer)) {
      return broken(why, why_len, "pending slot %u has no kind or a free "
                    "peer", i);
    }
  }
  if (live != node->n_pending || live + node->n_free != node->n_slots_used ||
      structs != node->n_pending_structs) {
    return broken(why, why_len, "%u live and %u free slots of %u used (%u "
                  "structs); the counts say %u live, %u free, %u structs",
                  live, node->n_slots_used - live, node->n_slots_used,
                  structs, node->n_pending, node->n_free,
                  node->n_pending_structs);
  }
  for (i = 0; i < node->n_free; i++) {
    if (node->free_slots[i] >= node->n_slots_used ||
        live_at(node, node->free_slots[i])) {
      return broken(why, why_len, "free stack entry %u is slot %u, which is "
                    "live or was never used", i, node->free_slots[i]);
    }
  }
  return check_heap(node, why, why_len) &&
         check_peer_lists(node, why, why_len);
}

static bool addr_hash_right(const dht_node *node, int32_t idx, char *why,
                            size_t why_len) {
  const char *addr = node->peers[idx].addr;

  if (node->peer_scan[idx].addr_hash != dht__addr_hash(addr, strlen(addr))) {
    return broken(why, why_len, "peer %s (slot %d) has the address hash of "
                  "another address", addr, (int)idx);
  }
  return true;
}

/* Every holder of a peer slot, counted: must equal each slot's refs. */
static bool check_refs(const dht_node *node, char *why, size_t why_len) {
  uint32_t on_stack[256];
  uint32_t *held = on_stack;
  bool ok = true;
  int32_t k;
  uint32_t i;

  if ((size_t)node->n_peers > sizeof(on_stack) / sizeof(on_stack[0])) {
    held = calloc((size_t)node->n_peers, sizeof(*held));
    if (held == NULL) {
      return true; /* cannot count without memory: nothing is known broken */
    }
  } else {
    memset(on_stack, 0, (size_t)node->n_peers * sizeof(on_stack[0]));
  }
#define HELD(idx)                                                              \
  do {                                                                         \
    if ((idx) >= 0 && (idx) < node->n_peers) {                                 \
      held[(idx)]++;                                                           \
    }                                                                          \
  } while (0)
  for (i = 0; i < node->n_succs; i++) {
    HELD(node->succs[i]);
  }
  for (i = 0; i < node->n_preds; i++) {
    HELD(node->preds[i]);
  }
  HELD(node->pred);
  for (i = 0; i < node->n_last_preds; i++) {
    HELD(node->last_preds[i]);
  }
  if (node->loss.check.active) {
    for (i = 0; i < node->loss.check.n_holders; i++) {
      HELD(node->loss.check.holders[i]);
    }
  }
  for (i = 0; i < DHT_ID_BITS; i++) {
    HELD(node->fingers[i]);
  }
  for (i = 0; i < node->n_pending; i++) {
    HELD(node->pending[node->deadline_heap[i]]->peer);
  }
  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    HELD(node->repl.sync_peers[i]);
  }
#undef HELD
  for (k = 0; k < node->n_peers && ok; k++) {
    if (held[k] != node->peer_scan[k].refs) {
      ok = broken(why, why_len, "peer %s (slot %d) has refs %u but %u "
                  "holders", node->peers[k].addr, (int)k,
                  node->peer_scan[k].refs, held[k]);
    }
  }
  /* The hashes of the slots a routing entry names (the others' lines are
   * not read after every call: that is what the hashes are beside them
   * for). */
  for (i = 0; i < node->n_succs && ok; i++) {
    ok = addr_hash_right(node, node->succs[i], why, why_len);
  }
  for (i = 0; i < node->n_preds && ok; i++) {
    ok = addr_hash_right(node, node->preds[i], why, why_len);
  }
  if (held != on_stack) {
    free(held);
  }
  return ok;
}

static bool check_writes(const dht_node *node, char *why, size_t why_len) {
  uint32_t i, a, b;

  for (i = 0; i < node->repl.cap_writes; i++) {
    const dht__write *w = &node->repl.writes[i];
    if (w->gen == 0) {
      continue;
    }
    for (a = 0; a < w->n_acked; a++) {
      for (b = 0; b < w->n_busy; b++) {
        if (dht_id_eq(&w->acked[a], &w->busy[b])) {
          return broken(why, why_len, "write %u lists a replica as both "
                        "acknowledged and asked", i);
        }
      }
    }
  }
  return true;
}

bool dht__check_all(const dht_node *node, char *why, size_t why_len) {
  return dht__check_tables(node, why, why_len) &&
         dht__check_pending(node, why, why_len) &&
         check_refs(node, why, why_len) && check_writes(node, why, why_len);
}

void dht__check_abort(const dht_node *node,
                      bool (*check)(const dht_node *, char *, size_t)) {
  char line[320];
  int n;

  n = snprintf(line, sizeof(line), "%s invariant broken: ", node->short_id);
  if (n < 0 || (size_t)n >= sizeof(line) ||
      check(node, line + n, sizeof(line) - (size_t)n)) {
    return;
  }
  /* A broken invariant is a bug in this library: stop at the scene, after
   * saying what broke through the host's log, whatever its level. */
  if (node->log != NULL) {
    node->log(node->log_ud, DHT_LOG_ERROR, line);
  }
  abort();
}

bool dht_node_check_invariants(const dht_node *node, char *why,
                               size_t why_len) {
  return dht__check_all(node, why, why_len);
}

/* Prefetches len bytes from p, a cache line at a time. */
static void prefetch_range(const void *p, size_t len) {
  const char *c = p, *end = c + len;

  for (; c < end; c += 64) {
    __builtin_prefetch(c);
  }
}

void dht_node_prefetch(const dht_node *node) {
  uint32_t i;

  /* What the checks read, in the order they read it; the loads of the
   * node's own fields (peers, pending) are the only ones waited on. */
  prefetch_range(node->succs, sizeof(node->succs));
  prefetch_range(node->fingers, sizeof(node->fingers));
  prefetch_range(node->last_preds, sizeof(node->last_preds));
  prefetch_range(node->repl.sync_peers, sizeof(node->repl.sync_peers));
  prefetch_range(node->peer_scan, (size_t)node->n_peers *
                                      sizeof(*node->peer_scan));
  /* the id and the address's first bytes of the listed peers: the first
   * line of their slots */
  for (i = 0; i < node->n_succs; i++) {
    __builtin_prefetch(&node->peers[node->succs[i]]);
  }
  for (i = 0; i < node->n_preds; i++) {
    __builtin_prefetch(&node->peers[node->preds[i]]);
  }
  prefetch_range(node->deadline_heap,
                 node->n_pending * sizeof(*node->deadline_heap));
  prefetch_range(node->free_slots, node->n_free * sizeof(*node->free_slots));
  prefetch_range(node->slot_rids, node->n_slots_used *
                                      sizeof(*node->slot_rids));
  for (i = 0; i < node->n_slots_used; i++) {
    if (node->slot_rids[i] != 0) {
      __builtin_prefetch(node->pending[i]);
    }
  }
}
