/*
 * node_table.c: the routing tables of a dht_node (node_table.h): the
 * successor list, the predecessor and its list, the fingers, and the peers
 * declared dead that are still probed. Every change to them passes through
 * here, so that the invariants of node_state.h are kept in one file, and a
 * peer declared dead leaves every table at once.
 */
#include <assert.h>
#include <string.h>

#include <sodium.h>

#include "node_table.h"

/* A peer that keeps failing is logged at most this often (all counted). */
#define FAILED_LOG_INTERVAL_MS 10000

/* ---- peers declared dead ---------------------------------------------------- */

int dht__lost_find(const dht_node *node, const char *addr) {
  int i;

  for (i = 0; i < DHT__LOST_MAX; i++) {
    if (node->lost[i].addr[0] != '\0' &&
        strcmp(node->lost[i].addr, addr) == 0) {
      return i;
    }
  }
  return -1;
}

void dht__lost_forget(dht_node *node, const char *addr) {
  int i = dht__lost_find(node, addr);

  if (i >= 0) {
    node->lost[i].addr[0] = '\0';
  }
}

static void lost_add(dht_node *node, const dht__peer *p) {
  dht__lost *slot = NULL;
  uint32_t i;

  for (i = 0; i < DHT__LOST_MAX; i++) {
    if (strcmp(node->lost[i].addr, p->addr) == 0) {
      slot = &node->lost[i];
      break;
    }
  }
  for (i = 0; slot == NULL && i < DHT__LOST_MAX; i++) {
    if (node->lost[i].addr[0] == '\0') {
      slot = &node->lost[i];
    }
  }
  if (slot == NULL) { /* full: replace the one lost longest ago */
    slot = &node->lost[0];
    for (i = 1; i < DHT__LOST_MAX; i++) {
      if (node->lost[i].lost_at_ms < slot->lost_at_ms) {
        slot = &node->lost[i];
      }
    }
  }
  slot->id = p->id;
  slot->lost_at_ms = node->now_ms;
  memcpy(slot->addr, p->addr, sizeof(slot->addr));
  node->lost_last_ms = node->now_ms > 0 ? node->now_ms : 1;
}

/* ---- the successor list ----------------------------------------------------- */

/* True when peer x lies strictly closer clockwise to this node than y. */
static bool closer(const dht_node *node, int32_t x, int32_t y) {
  const dht_id *a = &node->peers[x].id, *b = &node->peers[y].id;

  return !dht_id_eq(a, b) && dht_id_in_oo(a, &node->id, b);
}

/* Sorts peers clockwise from this node. Stable: two peers at one id (an
 * id conflict between addresses) keep their order. The list is short
 * (at most 2 * DHT_SUCC_LIST_MAX + 1), so insertion sort it is. */
static void sort_clockwise(const dht_node *node, int32_t *v, size_t n) {
  size_t i, j;

  for (i = 1; i < n; i++) {
    int32_t x = v[i];
    for (j = i; j > 0 && closer(node, x, v[j - 1]); j--) {
      v[j] = v[j - 1];
    }
    v[j] = x;
  }
}

/*
 * Makes the successor list the closest succ_list_len of the candidates, in
 * clockwise order, without this node, duplicates, peers of unknown id or
 * peers recently declared dead.
 */
void dht__succs_set(dht_node *node, int32_t *cands, size_t n) {
  int32_t kept[2 * DHT_SUCC_LIST_MAX + 1];
  int32_t old_first = node->n_succs > 0 ? node->succs[0] : DHT__NO_PEER;
  size_t i, n_kept = 0;
  bool changed;
  uint32_t j;

  assert(n <= 2 * DHT_SUCC_LIST_MAX + 1 && "too many successor candidates");
  for (i = 0; i < n; i++) {
    const dht__peer *p = &node->peers[cands[i]];
    bool dup = false;
    size_t k;
    if (!p->id_known || dht_id_eq(&p->id, &node->id) ||
        strcmp(p->addr, node->addr) == 0 ||
        dht__lost_find(node, p->addr) >= 0) {
      continue;
    }
    for (k = 0; k < n_kept; k++) {
      dup = dup || kept[k] == cands[i];
    }
    if (!dup) {
      kept[n_kept++] = cands[i];
    }
  }
  sort_clockwise(node, kept, n_kept);
  if (n_kept > node->set.succ_list_len) {
    n_kept = node->set.succ_list_len;
  }
  for (i = 0; i < n_kept; i++) {
    dht__peer_hold(node, kept[i]);
  }
  for (j = 0; j < node->n_succs; j++) {
    dht__peer_release(node, node->succs[j]);
  }
  changed = n_kept != node->n_succs ||
            memcmp(node->succs, kept, n_kept * sizeof(kept[0])) != 0;
  memcpy(node->succs, kept, n_kept * sizeof(kept[0]));
  node->n_succs = (uint32_t)n_kept;
  node->had_succ = node->had_succ || n_kept > 0;
  DHT__DEBUG_CHECK(node, tables);
  if (changed) {
    node->hooks.succs_changed(node);
  }
  if ((n_kept > 0 ? kept[0] : DHT__NO_PEER) != old_first) {
    node->counters.succ_changes++;
    dht__log(node, DHT_LOG_DEBUG, "successor is now %s",
             n_kept > 0 ? node->peers[kept[0]].addr : "(none: alone)");
  }
}

/* Puts idx into the successor list, where it belongs. */
void dht__succ_adopt(dht_node *node, int32_t idx) {
  int32_t cands[DHT_SUCC_LIST_MAX + 1];

  cands[0] = idx;
  memcpy(cands + 1, node->succs, node->n_succs * sizeof(cands[0]));
  dht__succs_set(node, cands, node->n_succs + 1);
}

/* Drops idx from the successor list. If none is left, the closest finger
 * takes over, so that a node whose successors all failed stays in the ring. */
static void succ_remove(dht_node *node, int32_t idx) {
  int32_t cands[DHT_SUCC_LIST_MAX];
  int32_t best = DHT__NO_PEER;
  size_t n = 0;
  uint32_t i;

  for (i = 0; i < node->n_succs; i++) {
    if (node->succs[i] != idx) {
      cands[n++] = node->succs[i];
    }
  }
  if (n == node->n_succs) {
    return;
  }
  if (n == 0) {
    for (i = 0; i < DHT_ID_BITS; i++) {
      int32_t f = node->fingers[i];
      if (f != DHT__NO_PEER && f != idx &&
          (best == DHT__NO_PEER ||
           dht_id_in_oo(&node->peers[f].id, &node->id,
                        &node->peers[best].id))) {
        best = f;
      }
    }
    if (best != DHT__NO_PEER) {
      cands[n++] = best;
    }
  }
  dht__succs_set(node, cands, n);
  node->hooks.succ_lost(node);
}

/* ---- the predecessor and its list ------------------------------------------- */

/* Drops idx and every predecessor beyond it from the predecessor list. */
static void preds_truncate_at(dht_node *node, int32_t idx) {
  uint32_t i;

  for (i = 0; i < node->n_preds && node->preds[i] != idx; i++) {
  }
  while (node->n_preds > i) {
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
}

/* Forgets the predecessor list kept when the predecessor died. */
void dht__last_preds_clear(dht_node *node) {
  while (node->n_last_preds > 0) {
    dht__peer_release(node, node->last_preds[--node->n_last_preds]);
  }
}

/* The number of nodes at the front of the kept list that lie between
 * after and this node: the ones that died since it was kept, when after is
 * the predecessor now. */
uint32_t dht__last_preds_gone(const dht_node *node, const dht_id *after) {
  uint32_t n = 0;

  while (n < node->n_last_preds &&
         dht_id_in_oo(&node->peers[node->last_preds[n]].id, after,
                      &node->id)) {
    n++;
  }
  return n;
}

/*
 * The predecessor list is whole: it is kept, so that once deaths have cut
 * it short, node_lost.c can still tell whether the next predecessor lies
 * beyond R nodes that held what this one now owns. The nodes of the list
 * kept before that died since (they lie between the predecessor and this
 * node) stay in front of it: the range of the predecessor now had them as
 * holders, and this node is not one until the predecessor has synced it
 * here (node_lost.c, dht__lost_held). Replaced outright, the list would
 * hide them, and the predecessor's death before that sync would look like
 * any predecessor's (dht-sim scenarios: adjacent-die-in-turn).
 */
static void last_preds_keep(dht_node *node) {
  int32_t kept[DHT_SUCC_LIST_MAX];
  uint32_t i, n = 0, gone = dht__last_preds_gone(
                        node, &node->peers[node->preds[0]].id);

  for (i = 0; i < gone; i++) {
    kept[n++] = node->last_preds[i]; /* their references move over */
  }
  for (i = gone; i < node->n_last_preds; i++) {
    dht__peer_release(node, node->last_preds[i]);
  }
  for (i = 0; i < node->n_preds && n < DHT_SUCC_LIST_MAX; i++) {
    dht__peer_hold(node, node->preds[i]);
    kept[n++] = node->preds[i];
  }
  memcpy(node->last_preds, kept, n * sizeof(kept[0]));
  node->n_last_preds = n;
}

/* Makes idx the predecessor; the list beyond it is learnt again from it
 * (dht__preds_learn). */
static void pred_restart(dht_node *node, int32_t idx) {
  dht__slot_set(node, &node->pred, idx);
  while (node->n_preds > 0) {
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
  if (idx != DHT__NO_PEER) {
    dht__peer_hold(node, idx);
    node->preds[node->n_preds++] = idx;
  }
}

void dht__set_pred(dht_node *node, int32_t idx) {
  if (node->pred == idx) {
    return;
  }
  pred_restart(node, idx);
  DHT__DEBUG_CHECK(node, tables);
  node->counters.pred_changes++;
  dht__log(node, DHT_LOG_DEBUG, "predecessor is now %s",
           idx != DHT__NO_PEER ? node->peers[idx].addr : "(unknown)");
  node->hooks.pred_changed(node);
}

/* The predecessor described itself: our predecessor list is it, then its
 * own list, up to where the ring wraps back to us, and only as long as
 * replication needs (a deeper entry would only take longer to settle). */
void dht__preds_learn(dht_node *node, const dht_msg *msg) {
  size_t i;
  uint32_t k;

  while (node->n_preds > 1) { /* keep preds[0]: it is the predecessor */
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
  if (node->n_preds == 0 && node->pred != DHT__NO_PEER) {
    /* A predecessor installed by an oracle comes without its list: the
     * list starts at it all the same. */
    dht__peer_hold(node, node->pred);
    node->preds[node->n_preds++] = node->pred;
  }
  for (i = 0; i < msg->n_preds && node->n_preds < node->set.replicas; i++) {
    int32_t idx;
    bool dup = false;
    if (dht__ref_is_self(node, &msg->preds[i])) {
      break; /* a ring this short wraps: the list is complete */
    }
    idx = dht__peer_intern_ref(node, &msg->preds[i]);
    for (k = 0; k < node->n_preds; k++) {
      dup = dup || node->preds[k] == idx;
    }
    if (idx == DHT__NO_PEER || dup) {
      break;
    }
    dht__peer_hold(node, idx);
    node->preds[node->n_preds++] = idx;
  }
  if (node->n_preds >= node->set.replicas) {
    last_preds_keep(node);
  }
  DHT__DEBUG_CHECK(node, tables);
}

uint64_t dht__list_print(const dht_node *node, const int32_t *list,
                         size_t n) {
  uint64_t h = 14695981039346656037ull ^ n; /* FNV-1a, 64 bits */
  size_t i, j;

  for (i = 0; i < n; i++) {
    const uint8_t *b = node->peers[list[i]].id.b;
    for (j = 0; j < DHT_ID_LEN; j++) {
      h = (h ^ b[j]) * 1099511628211ull;
    }
  }
  return h;
}

void dht__finger_set(dht_node *node, uint32_t i, int32_t idx) {
  assert(i < DHT_ID_BITS && "finger index out of range");
  dht__slot_set(node, &node->fingers[i], idx);
}

/* True when peer idx is in the successor list, the fingers or the
 * predecessor list. */
static bool in_tables(const dht_node *node, int32_t idx) {
  uint32_t i;

  for (i = 0; i < node->n_succs; i++) {
    if (node->succs[i] == idx) {
      return true;
    }
  }
  for (i = 0; i < node->n_preds; i++) {
    if (node->preds[i] == idx) {
      return true;
    }
  }
  for (i = 0; i < DHT_ID_BITS; i++) {
    if (node->fingers[i] == idx) {
      return true;
    }
  }
  return node->pred == idx;
}

/*
 * dht__peer_intern for a ref the peer itself gave, over a link this node
 * confirmed (its own NOTIFY or LEAVE). With trust_ids an address may come
 * back under another id (restarted with another --id): its old position
 * first leaves every table, as a peer that left does, so that no list
 * holds it at an id it no longer has (fuzz_node found lists out of
 * clockwise order after an in-place change). Without trust_ids the id must
 * be hash(addr) as always.
 */
int32_t dht__peer_intern_own(dht_node *node, const dht_peer_ref *ref) {
  const char *addr = (const char *)ref->addr.p;
  int32_t idx = dht__peer_find(node, addr, ref->addr.len);

  if (idx != DHT__NO_PEER && node->set.trust_ids &&
      node->peers[idx].id_known && !dht_id_eq(&node->peers[idx].id, &ref->id)) {
    if (!dht__id_ok(node, &ref->id, addr, ref->addr.len)) {
      return DHT__NO_PEER;
    }
    dht__declare_dead(node, idx, false);
    node->peers[idx].id = ref->id;
    return idx;
  }
  return dht__peer_intern(node, &ref->id, addr, ref->addr.len);
}

/*
 * Removes peer idx from the routing state: successor list, fingers and
 * predecessor. With probe_later the node keeps pinging it for a while (it may
 * only have been cut off by a partition); a peer that left gracefully is not
 * probed. Requests still in flight to it fail now instead of at their
 * deadlines.
 */
void dht__declare_dead(dht_node *node, int32_t idx, bool probe_later) {
  dht__peer *p = &node->peers[idx];
  uint32_t i;

  /* Each request that fails declares its peer dead again, and a flood of
   * requests to one peer expires in one pass: once the peer is out of the
   * tables, more failures at the same instant are the same verdict. The
   * first one already failed every request in flight to it, so repeating
   * the purge (a scan of them) and the DISCONNECT would cost O(requests)
   * per request. */
  if (p->failed_now && p->failed_at_ms == node->now_ms &&
      !in_tables(node, idx)) {
    if (probe_later && p->id_known && dht__lost_find(node, p->addr) < 0) {
      lost_add(node, p);
    }
    return;
  }
  dht__peer_hold(node, idx); /* keep the slot alive through the purge */
  p->failed_now = true;
  p->failed_at_ms = node->now_ms;
  /* Only the first time, while the peer is still in the tables or not yet
   * known lost, is news worth a count; a peer that comes back and fails
   * again and again is logged once per FAILED_LOG_INTERVAL_MS. */
  if (in_tables(node, idx) || dht__lost_find(node, p->addr) < 0) {
    node->counters.peers_failed++;
    if (p->failed_logged_ms == 0 ||
        node->now_ms - p->failed_logged_ms >= FAILED_LOG_INTERVAL_MS) {
      dht__log(node, DHT_LOG_INFO, "peer %s failed (%u more failures unlogged)",
               p->addr, p->failed_unlogged);
      p->failed_logged_ms = node->now_ms > 0 ? node->now_ms : 1;
      p->failed_unlogged = 0;
    } else {
      p->failed_unlogged++;
    }
  }
  if (probe_later && p->id_known) {
    lost_add(node, p);
  }
  /* Over TCP a resend waits behind whatever the kernel still holds for
   * the peer (a dead host's connection backs off for minutes): the next
   * request goes on a fresh connection. */
  dht__emit_disconnect(node, p->addr);
  succ_remove(node, idx);
  for (i = 0; i < DHT_ID_BITS; i++) {
    if (node->fingers[i] == idx) {
      dht__slot_set(node, &node->fingers[i], DHT__NO_PEER);
    }
  }
  if (node->pred == idx) {
    dht__set_pred(node, DHT__NO_PEER);
  }
  preds_truncate_at(node, idx);
  dht__pending_fail_peer(node, idx);
  dht__peer_release(node, idx);
}

/* Installs an oracle's routing state (dht_node_install_routing). */
int dht__table_install(dht_node *node, const dht_routing_peer *pred,
                      const dht_routing_peer *succs, size_t n_succs,
                      const dht_routing_peer *fingers) {
  int32_t cands[DHT_SUCC_LIST_MAX];
  size_t i;

  if (n_succs > node->set.succ_list_len || n_succs > DHT_SUCC_LIST_MAX) {
    return DHT_ERR_INVAL;
  }
  for (i = 0; i < n_succs; i++) {
    cands[i] = dht__peer_intern(node, &succs[i].id, succs[i].addr,
                                strlen(succs[i].addr));
    if (cands[i] == DHT__NO_PEER) {
      return DHT_ERR_NOMEM;
    }
    dht__peer_hold(node, cands[i]);
  }
  dht__succs_set(node, cands, n_succs);
  for (i = 0; i < n_succs; i++) {
    dht__peer_release(node, cands[i]);
  }
  for (i = 0; fingers != NULL && i < DHT_ID_BITS; i++) {
    int32_t idx = DHT__NO_PEER;
    if (strcmp(fingers[i].addr, node->addr) != 0) {
      idx = dht__peer_intern(node, &fingers[i].id, fingers[i].addr,
                             strlen(fingers[i].addr));
      if (idx == DHT__NO_PEER) {
        return DHT_ERR_NOMEM;
      }
    }
    dht__finger_set(node, (uint32_t)i, idx);
  }
  if (pred != NULL) {
    int32_t idx = dht__peer_intern(node, &pred->id, pred->addr,
                                   strlen(pred->addr));
    if (idx == DHT__NO_PEER) {
      return DHT_ERR_NOMEM;
    }
    pred_restart(node, idx);
  }
  return 0;
}

/* ---- describing this node ---------------------------------------------------- */

/* Starts a reply of type that describes this node: itself, its
 * predecessor, its successor and predecessor lists (written into succs and
 * preds). */
void dht__describe_self(const dht_node *node, dht_msg *msg, dht_msg_type type,
                        uint64_t rid, dht_peer_ref succs[DHT_SUCC_LIST_MAX],
                        dht_peer_ref preds[DHT_SUCC_LIST_MAX]) {
  uint32_t i;

  memset(msg, 0, sizeof(*msg));
  msg->type = type;
  msg->rid = rid;
  msg->has_peer = true;
  dht__self_ref(node, &msg->peer);
  if (node->pred != DHT__NO_PEER) {
    msg->has_pred = true;
    dht__peer_to_ref(node, node->pred, &msg->pred);
  }
  for (i = 0; i < node->n_succs; i++) {
    dht__peer_to_ref(node, node->succs[i], &succs[i]);
  }
  msg->succs = succs;
  msg->n_succs = node->n_succs;
  for (i = 0; i < node->n_preds; i++) {
    dht__peer_to_ref(node, node->preds[i], &preds[i]);
  }
  msg->preds = preds;
  msg->n_preds = node->n_preds;
}

static void view_hash_peers(crypto_generichash_state *st,
                            const dht_peer_ref *peers, size_t n) {
  uint8_t len[2];
  size_t i;

  len[0] = (uint8_t)n;
  crypto_generichash_update(st, len, 1);
  for (i = 0; i < n; i++) {
    len[0] = (uint8_t)(peers[i].addr.len >> 8);
    len[1] = (uint8_t)peers[i].addr.len;
    crypto_generichash_update(st, peers[i].id.b, DHT_ID_LEN);
    crypto_generichash_update(st, len, 2);
    crypto_generichash_update(st, peers[i].addr.p, peers[i].addr.len);
  }
}

/* The tag of the view a NEIGHBORS reply describes: the responder, its
 * pred, succs and preds, each by id and address. Never 0, which means "no
 * tag". */
static uint64_t view_tag(const dht_msg *msg) {
  crypto_generichash_state st;
  uint8_t h[8];
  uint64_t tag = 0;
  size_t i;

  crypto_generichash_init(&st, NULL, 0, sizeof(h));
  view_hash_peers(&st, &msg->peer, 1);
  view_hash_peers(&st, &msg->pred, msg->has_pred ? 1 : 0);
  view_hash_peers(&st, msg->succs, msg->n_succs);
  view_hash_peers(&st, msg->preds, msg->n_preds);
  crypto_generichash_final(&st, h, sizeof(h));
  for (i = 0; i < sizeof(h); i++) {
    tag = tag << 8 | h[i];
  }
  return tag != 0 ? tag : 1;
}

/* An asker that names the tag of the view it holds (seen) gets the tag
 * alone while the view is the same: most rounds of stabilize and of the
 * predecessor check on a ring at rest. */
void dht__on_get_neighbors(dht_node *node, const dht__request *req) {
  dht_peer_ref succs[DHT_SUCC_LIST_MAX], preds[DHT_SUCC_LIST_MAX];
  dht_msg msg;

  dht__describe_self(node, &msg, DHT_MSG_NEIGHBORS, req->msg->rid, succs,
                     preds);
  msg.wall_ms = dht__wall_ms(node); /* lets the asker compare clocks */
  msg.view = view_tag(&msg);
  msg.same = req->msg->seen == msg.view;
  dht__reply(node, req->conn, &msg);
}
