/*
 * node_check.c: verifies the invariants stated in node_state.h. Each check
 * walks the state it covers once (peers, pending slots, fingers), so the
 * simulator can afford them after every call.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  return idx >= 0 && idx < node->n_peers && node->peers[idx].refs > 0;
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

bool dht__check_pending(const dht_node *node, char *why, size_t why_len) {
  uint32_t i, live = 0;

  for (i = 0; i < node->cap_pending; i++) {
    const dht__pending *p = node->pending[i];
    if (p == NULL || p->rid == 0) {
      continue;
    }
    live++;
    if (p->slot != i || (p->rid & (DHT__PENDING_HARD_MAX - 1)) != i) {
      return broken(why, why_len, "pending slot %u holds rid %llx of slot "
                    "%u", i, (unsigned long long)p->rid, p->slot);
    }
    if (p->ops == NULL || !peer_valid(node, p->peer)) {
      return broken(why, why_len, "pending slot %u has no kind or a free "
                    "peer", i);
    }
    if (p->deadline_ms < node->pending_min_deadline_ms) {
      return broken(why, why_len, "pending %s in slot %u is due at %llu, "
                    "before the earliest deadline known, %llu", p->ops->name,
                    i, (unsigned long long)p->deadline_ms,
                    (unsigned long long)node->pending_min_deadline_ms);
    }
  }
  if (live != node->n_pending) {
    return broken(why, why_len, "%u pending slots are live, n_pending says "
                  "%u", live, node->n_pending);
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
    memset(on_stack, 0, sizeof(on_stack));
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
  for (i = 0; i < DHT_ID_BITS; i++) {
    HELD(node->fingers[i]);
  }
  for (i = 0; i < node->cap_pending; i++) {
    if (node->pending[i] != NULL && node->pending[i]->rid != 0) {
      HELD(node->pending[i]->peer);
    }
  }
  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    HELD(node->repl.syncs[i].peer);
  }
#undef HELD
  for (k = 0; k < node->n_peers && ok; k++) {
    if (held[k] != node->peers[k].refs) {
      ok = broken(why, why_len, "peer %s (slot %d) has refs %u but %u "
                  "holders", node->peers[k].addr, (int)k,
                  node->peers[k].refs, held[k]);
    }
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
