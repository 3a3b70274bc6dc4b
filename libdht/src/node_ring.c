/*
 * node_ring.c: keeping the ring whole. Join through a bootstrap node;
 * stabilize (ask the successor for its predecessor and successor list, then
 * notify it); fix_fingers (refresh one finger lookup at a time);
 * check_predecessor (ping it); probe peers declared dead in case a partition
 * only hid them; and a graceful leave.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

/* Spreads periodic work over [0.75, 1.25] of its interval so that nodes
 * started together do not stay in lock-step. */
static uint64_t jittered(dht_node *node, uint32_t interval_ms) {
  uint64_t spread = interval_ms / 2 + 1;
  return node->now_ms + interval_ms - interval_ms / 4 +
         dht__rand(node) % spread;
}

static void schedule_maintenance(dht_node *node) {
  node->stabilize_at_ms = node->now_ms;
  node->fix_fingers_at_ms = jittered(node, node->set.fix_fingers_interval_ms);
  node->check_pred_at_ms = jittered(node, node->set.check_pred_interval_ms);
}

static void stabilize_soon(dht_node *node) {
  node->stabilize_at_ms = node->now_ms;
}

static bool peer_is_self(const dht_node *node, const dht_peer_ref *ref) {
  return ref->addr.len == strlen(node->addr) &&
         memcmp(ref->addr.p, node->addr, ref->addr.len) == 0;
}

static int lost_find(const dht_node *node, const char *addr) {
  int i;

  for (i = 0; i < DHT__LOST_MAX; i++) {
    if (node->lost[i].addr[0] != '\0' && strcmp(node->lost[i].addr, addr) == 0) {
      return i;
    }
  }
  return -1;
}

static void lost_forget(dht_node *node, const char *addr) {
  int i = lost_find(node, addr);

  if (i >= 0) {
    node->lost[i].addr[0] = '\0';
  }
}

/* ---- the successor list ----------------------------------------------------- */

static const dht_node *sort_node; /* qsort has no user pointer */

static int by_clockwise_distance(const void *a, const void *b) {
  const dht_id *self = &sort_node->id;
  const dht_id *x = &sort_node->peers[*(const int32_t *)a].id;
  const dht_id *y = &sort_node->peers[*(const int32_t *)b].id;

  if (dht_id_eq(x, y)) {
    return 0;
  }
  return dht_id_in_oo(x, self, y) ? -1 : 1;
}

/*
 * Makes the successor list the closest succ_list_len of the candidates, in
 * clockwise order, without this node, duplicates, peers of unknown id or
 * peers recently declared dead.
 */
static void succs_set(dht_node *node, int32_t *cands, size_t n) {
  int32_t kept[2 * DHT_SUCC_LIST_MAX + 1];
  int32_t old_first = node->n_succs > 0 ? node->succs[0] : DHT__NO_PEER;
  size_t i, n_kept = 0;
  bool replicas_before;
  uint32_t j;

  assert(n <= 2 * DHT_SUCC_LIST_MAX + 1);
  for (i = 0; i < n; i++) {
    const dht__peer *p = &node->peers[cands[i]];
    bool dup = false;
    size_t k;
    if (!p->id_known || dht_id_eq(&p->id, &node->id) ||
        strcmp(p->addr, node->addr) == 0 || lost_find(node, p->addr) >= 0) {
      continue;
    }
    for (k = 0; k < n_kept; k++) {
      dup = dup || kept[k] == cands[i];
    }
    if (!dup) {
      kept[n_kept++] = cands[i];
    }
  }
  /* qsort is not stable, but no two kept entries compare equal: equal ids
   * at different addresses are the one conflict, and both stay. */
  sort_node = node;
  qsort(kept, n_kept, sizeof(kept[0]), by_clockwise_distance);
  if (n_kept > node->set.succ_list_len) {
    n_kept = node->set.succ_list_len;
  }
  for (i = 0; i < n_kept; i++) {
    dht__peer_hold(node, kept[i]);
  }
  for (j = 0; j < node->n_succs; j++) {
    dht__peer_release(node, node->succs[j]);
  }
  replicas_before = n_kept != node->n_succs ||
                    memcmp(node->succs, kept, n_kept * sizeof(kept[0])) != 0;
  memcpy(node->succs, kept, n_kept * sizeof(kept[0]));
  node->n_succs = (uint32_t)n_kept;
  if (replicas_before) {
    dht__repl_on_succs_change(node);
  }
  if ((n_kept > 0 ? kept[0] : DHT__NO_PEER) != old_first) {
    node->counters.succ_changes++;
    dht__log(node, DHT_LOG_DEBUG, "successor is now %s",
             n_kept > 0 ? node->peers[kept[0]].addr : "(none: alone)");
  }
}

static void succ_adopt(dht_node *node, int32_t idx) {
  int32_t cands[DHT_SUCC_LIST_MAX + 1];

  cands[0] = idx;
  memcpy(cands + 1, node->succs, node->n_succs * sizeof(cands[0]));
  succs_set(node, cands, node->n_succs + 1);
}

/* Drops idx from the successor list. If none is left, the closest finger
 * takes over, so that a node whose successors all failed stays in the ring. */
void dht__succ_remove(dht_node *node, int32_t idx) {
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
  succs_set(node, cands, n);
  stabilize_soon(node);
}

/* Drops idx and every predecessor beyond it from the predecessor list. */
void dht__preds_truncate_at(dht_node *node, int32_t idx) {
  uint32_t i;

  for (i = 0; i < node->n_preds && node->preds[i] != idx; i++) {
  }
  while (node->n_preds > i) {
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
}

void dht__set_pred(dht_node *node, int32_t idx) {
  if (node->pred == idx) {
    return;
  }
  dht__slot_set(node, &node->pred, idx);
  /* The list beyond the new predecessor is learnt again from it. */
  while (node->n_preds > 0) {
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
  if (idx != DHT__NO_PEER) {
    dht__peer_hold(node, idx);
    node->preds[node->n_preds++] = idx;
    node->check_pred_at_ms = node->now_ms;
  }
  dht__repl_on_pred_change(node);
  node->counters.pred_changes++;
  dht__log(node, DHT_LOG_DEBUG, "predecessor is now %s",
           idx != DHT__NO_PEER ? node->peers[idx].addr : "(unknown)");
  if (idx != DHT__NO_PEER) {
    dht__handoff_pump(node); /* keys in its new range go to it */
  }
}

/* ---- join, create, leave ---------------------------------------------------- */

static void fill_find_succ(dht_msg *msg, const dht_id *target, bool trace) {
  memset(msg, 0, sizeof(*msg));
  msg->type = DHT_MSG_FIND_SUCC;
  msg->target = *target;
  msg->trace = trace;
}

/* The address to join through on attempt k (from 0): the bootstrap first;
 * a node re-joining after it was cut off also tries the peers it lost. */
static const char *join_target(const dht_node *node, uint32_t k) {
  uint32_t i, seen = 0;

  if (k == 0 || !node->rejoining) {
    return node->join_addr;
  }
  for (i = 0; i < DHT__LOST_MAX; i++) {
    if (node->lost[i].addr[0] != '\0' && ++seen == k) {
      return node->lost[i].addr;
    }
  }
  return node->join_addr;
}

/* Join tries a round may make: join_attempts through the bootstrap; a node
 * re-joining also tries every peer it lost once, since any of them (not
 * only the first few, which may be dead for good) may be back in a ring. */
static uint32_t join_tries_max(const dht_node *node) {
  uint32_t i, n = 1;

  if (!node->rejoining) {
    return node->set.join_attempts;
  }
  for (i = 0; i < DHT__LOST_MAX; i++) {
    n += node->lost[i].addr[0] != '\0';
  }
  return n > node->set.join_attempts ? n : node->set.join_attempts;
}

static void join_attempt(dht_node *node) {
  const char *addr = join_target(node, node->join_tries);
  dht_msg msg;
  dht_id target;
  int32_t boot;
  int rv;

  node->join_tries++;
  node->join_retry_at_ms = DHT_TIME_NEVER;
  boot = dht__peer_intern(node, NULL, addr, strlen(addr));
  /* Ask for the successor of id + 1 rather than of id: if this node is
   * restarting and the ring still lists its address, the answer is then its
   * old successor instead of itself. The trace tells the bootstrap's id. */
  dht_id_add_pow2(&target, &node->id, 0);
  fill_find_succ(&msg, &target, true);
  rv = boot == DHT__NO_PEER
           ? DHT_ERR_NOMEM
           : dht__route_start(node, DHT__ORIGIN_JOIN, 0, boot, &msg);
  if (rv != 0) {
    node->state = node->rejoining ? DHT_NODE_JOINED : DHT_NODE_IDLE;
    if (!node->rejoining) {
      dht__emit_event(node, DHT_EVENT_JOIN_FAILED, rv);
    }
    node->rejoining = false;
  }
}

/* A node that joined a ring and then lost every successor and its
 * predecessor is a ring of one that nobody knows: it joins again, through
 * its bootstrap or a peer it lost, keeping its keys. */
static void rejoin(dht_node *node) {
  dht__log(node, DHT_LOG_WARN, "cut off from the ring: joining again");
  node->state = DHT_NODE_JOINING;
  node->rejoining = true;
  node->join_tries = 0;
  join_attempt(node);
}

static void join_done(dht_node *node, const dht_msg *result) {
  const dht_peer_ref *succ = NULL;
  int32_t idx;

  if (result->type == DHT_MSG_FIND_SUCC_R && result->has_peer) {
    succ = &result->peer;
    if (peer_is_self(node, succ)) {
      /* The ring maps our successor to our own address (a restart in a
       * tiny ring): start from the bootstrap and let stabilize correct. */
      succ = result->n_path > 0 && !peer_is_self(node, &result->path[0])
                 ? &result->path[0]
                 : NULL;
    } else if (dht_id_eq(&succ->id, &node->id)) {
      dht__log(node, DHT_LOG_ERROR, "node %.*s already has our id",
               (int)succ->addr.len, (const char *)succ->addr.p);
      node->state = DHT_NODE_IDLE;
      dht__emit_event(node, DHT_EVENT_JOIN_FAILED, DHT_ERR_DUPLICATE_ID);
      return;
    }
  }
  if (succ == NULL) {
    int code = result->type == DHT_MSG_ERROR ? result->error_code
                                             : DHT_ERR_UNAVAILABLE;
    if (node->join_tries < join_tries_max(node)) {
      dht__log(node, DHT_LOG_WARN, "join through %s failed (%s), retrying",
               node->join_addr, dht_strerror(code));
      node->join_retry_at_ms = node->now_ms + 2u * node->set.rpc_timeout_ms;
    } else if (node->rejoining) {
      /* Stay a ring of one and try again at the next stabilize round. */
      dht__log(node, DHT_LOG_WARN, "re-join failed: %s", dht_strerror(code));
      node->state = DHT_NODE_JOINED;
      node->rejoining = false;
    } else {
      dht__log(node, DHT_LOG_ERROR, "join through %s failed: %s",
               node->join_addr, dht_strerror(code));
      node->state = DHT_NODE_IDLE;
      dht__emit_event(node, DHT_EVENT_JOIN_FAILED, code);
    }
    return;
  }
  idx = dht__peer_intern_ref(node, succ);
  if (idx == DHT__NO_PEER) {
    node->state = DHT_NODE_IDLE;
    dht__emit_event(node, DHT_EVENT_JOIN_FAILED, DHT_ERR_NOMEM);
    return;
  }
  /* The owner answered the lookup itself, so it is alive even if we had
   * given it up for dead. */
  lost_forget(node, node->peers[idx].addr);
  node->state = DHT_NODE_JOINED;
  succ_adopt(node, idx);
  schedule_maintenance(node);
  dht__log(node, DHT_LOG_INFO, "joined: successor %s", node->peers[idx].addr);
  if (!node->rejoining) {
    dht__emit_event(node, DHT_EVENT_JOINED, 0);
  }
  node->rejoining = false;
}

int dht__ring_create(dht_node *node) {
  if (node->state != DHT_NODE_IDLE) {
    return DHT_ERR_STATE;
  }
  node->state = DHT_NODE_JOINED;
  schedule_maintenance(node);
  dht__log(node, DHT_LOG_INFO, "created a ring at %s", node->addr);
  return 0;
}

int dht__ring_join(dht_node *node, const char *bootstrap_addr) {
  size_t len = strlen(bootstrap_addr);

  if (node->state != DHT_NODE_IDLE) {
    return DHT_ERR_STATE;
  }
  if (len == 0 || len > node->set.limits.addr_len_max ||
      strcmp(bootstrap_addr, node->addr) == 0) {
    return DHT_ERR_INVAL;
  }
  memcpy(node->join_addr, bootstrap_addr, len + 1);
  node->state = DHT_NODE_JOINING;
  node->join_tries = 0;
  join_attempt(node);
  return 0;
}

int dht__ring_leave(dht_node *node) {
  if (node->state != DHT_NODE_JOINED) {
    return DHT_ERR_STATE;
  }
  node->state = DHT_NODE_LEAVING;
  dht__log(node, DHT_LOG_INFO, "leaving: handing %zu keys on",
           dht_store_count(node->store));
  dht__handoff_pump(node); /* ends in dht__leave_step() */
  return 0;
}

static int send_leave(dht_node *node, int32_t to, bool with_pred,
                      bool with_succs) {
  dht_peer_ref succs[DHT_SUCC_LIST_MAX];
  dht__pending *p;
  dht_msg msg;
  uint32_t i;

  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_LEAVE;
  msg.has_peer = true;
  dht__self_ref(node, &msg.peer);
  if (with_pred && node->pred != DHT__NO_PEER) {
    msg.has_pred = true;
    dht__peer_to_ref(node, node->pred, &msg.pred);
  }
  if (with_succs) {
    for (i = 0; i < node->n_succs; i++) {
      dht__peer_to_ref(node, node->succs[i], &succs[i]);
    }
    msg.succs = succs;
    msg.n_succs = node->n_succs;
  }
  p = dht__pending_new(node, DHT__PEND_LEAVE, to);
  if (p == NULL) {
    return 0;
  }
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
    return 0;
  }
  return 1;
}

/* Called when every key has been handed on (or there is nobody to take
 * them): tell the neighbours, and once they have answered, we are gone. */
void dht__leave_step(dht_node *node) {
  if (node->state != DHT_NODE_LEAVING) {
    return;
  }
  if (!node->leave_notified) {
    node->leave_notified = true;
    if (node->n_succs > 0) {
      node->leave_acks_wanted +=
          (uint32_t)send_leave(node, node->succs[0], true, false);
    }
    if (node->pred != DHT__NO_PEER &&
        (node->n_succs == 0 || node->pred != node->succs[0])) {
      node->leave_acks_wanted +=
          (uint32_t)send_leave(node, node->pred, false, true);
    }
  }
  if (node->leave_acks_wanted == 0) {
    node->state = DHT_NODE_LEFT;
    dht__log(node, DHT_LOG_INFO, "left the ring");
    dht__emit_event(node, DHT_EVENT_LEFT, 0);
  }
}

void dht__on_leave(dht_node *node, uint64_t conn, const dht_msg *msg) {
  int32_t cands[2 * DHT_SUCC_LIST_MAX];
  int32_t gone = dht__peer_intern_ref(node, &msg->peer);
  size_t n = 0, i;
  dht_msg ok;

  if (gone != DHT__NO_PEER) {
    dht__peer_hold(node, gone);
    if (node->pred == gone) {
      int32_t pred = DHT__NO_PEER;
      if (msg->has_pred && !peer_is_self(node, &msg->pred)) {
        pred = dht__peer_intern_ref(node, &msg->pred);
      }
      dht__set_pred(node, pred);
    }
    for (i = 0; i < msg->n_succs; i++) {
      int32_t idx = dht__peer_intern_ref(node, &msg->succs[i]);
      if (idx != DHT__NO_PEER) {
        dht__peer_hold(node, idx); /* until succs_set holds it */
        cands[n++] = idx;
      }
    }
    for (i = 0; i < node->n_succs && n < 2 * DHT_SUCC_LIST_MAX; i++) {
      if (node->succs[i] != gone) {
        dht__peer_hold(node, node->succs[i]);
        cands[n++] = node->succs[i];
      }
    }
    if (n > 0 || node->n_succs > 0) {
      succs_set(node, cands, n);
    }
    for (i = 0; i < n; i++) {
      dht__peer_release(node, cands[i]);
    }
    /* It left on purpose: no need to probe it later. */
    dht__declare_dead(node, gone, false);
    dht__peer_release(node, gone);
  }
  memset(&ok, 0, sizeof(ok));
  ok.type = DHT_MSG_OK;
  ok.rid = msg->rid;
  dht__reply(node, conn, &ok);
}

/* ---- periodic maintenance --------------------------------------------------- */

static bool pending_of_kind(const dht_node *node, dht__pending_kind kind) {
  uint32_t i;

  for (i = 0; i < node->cap_pending; i++) {
    const dht__pending *p = node->pending[i];
    if (p != NULL && p->rid != 0 && p->kind == kind) {
      return true;
    }
  }
  return false;
}

static bool finger_lookup_busy(const dht_node *node) {
  uint32_t i;

  for (i = 0; i < node->cap_pending; i++) {
    const dht__pending *p = node->pending[i];
    if (p != NULL && p->rid != 0 && p->kind == DHT__PEND_ROUTE &&
        p->origin == DHT__ORIGIN_FINGER) {
      return true;
    }
  }
  return false;
}

static void stabilize(dht_node *node) {
  dht__pending *p;
  dht_msg msg;

  node->counters.stabilize_rounds++;
  if (node->n_succs == 0) {
    if (node->pred == DHT__NO_PEER) {
      if (node->join_addr[0] != '\0' && node->state == DHT_NODE_JOINED) {
        rejoin(node);
      }
      return; /* alone, and nobody has found us */
    }
    /* Alone but notified: the notifier is the rest of the ring. */
    succ_adopt(node, node->pred);
    if (node->n_succs == 0) {
      return;
    }
  }
  dht__handoff_pump(node);
  if (pending_of_kind(node, DHT__PEND_STABILIZE)) {
    return;
  }
  p = dht__pending_new(node, DHT__PEND_STABILIZE, node->succs[0]);
  if (p == NULL) {
    return;
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_GET_NEIGHBORS;
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
  }
}

static void on_neighbors(dht_node *node, int32_t asked, const dht_msg *msg) {
  int32_t cands[DHT_SUCC_LIST_MAX + 2];
  size_t n = 0, i;
  dht_msg notify;

  if (node->n_succs == 0 || node->succs[0] != asked || !msg->has_peer) {
    return; /* the successor changed while we asked: ask again next round */
  }
  lost_forget(node, node->peers[asked].addr); /* it just answered */
  /* Its predecessor sits between us: that is our successor now. */
  if (msg->has_pred && !peer_is_self(node, &msg->pred) &&
      dht_id_in_oo(&msg->pred.id, &node->id, &node->peers[asked].id)) {
    int32_t x = dht__peer_intern_ref(node, &msg->pred);
    if (x != DHT__NO_PEER && lost_find(node, node->peers[x].addr) < 0) {
      dht__peer_hold(node, x);
      cands[n++] = x;
    }
  }
  dht__peer_hold(node, asked);
  cands[n++] = asked;
  for (i = 0; i < msg->n_succs && n < DHT_SUCC_LIST_MAX + 2; i++) {
    int32_t idx;
    if (peer_is_self(node, &msg->succs[i])) {
      break; /* the ring is shorter than the list: it wrapped to us */
    }
    idx = dht__peer_intern_ref(node, &msg->succs[i]);
    if (idx != DHT__NO_PEER) {
      dht__peer_hold(node, idx);
      cands[n++] = idx;
    }
  }
  succs_set(node, cands, n);
  for (i = 0; i < n; i++) {
    dht__peer_release(node, cands[i]);
  }
  if (node->n_succs == 0) {
    return;
  }
  if (node->succs[0] != asked) {
    stabilize_soon(node); /* learn the new successor's list */
  }
  memset(&notify, 0, sizeof(notify));
  notify.type = DHT_MSG_NOTIFY;
  notify.has_peer = true;
  dht__self_ref(node, &notify.peer);
  dht__send(node, node->succs[0], &notify);
}

void dht__on_notify(dht_node *node, const dht_msg *msg) {
  int32_t n;

  if (!msg->has_peer || peer_is_self(node, &msg->peer)) {
    return;
  }
  n = dht__peer_intern_ref(node, &msg->peer);
  if (n == DHT__NO_PEER) {
    return;
  }
  lost_forget(node, node->peers[n].addr); /* it is plainly alive */
  dht__peer_hold(node, n);
  if (node->pred == DHT__NO_PEER ||
      dht_id_in_oo(&node->peers[n].id, &node->peers[node->pred].id,
                   &node->id)) {
    dht__set_pred(node, n);
  }
  if (node->n_succs == 0) {
    succ_adopt(node, n); /* a ring of two */
  }
  dht__peer_release(node, n);
}

static void fix_fingers(dht_node *node) {
  const dht_id *succ_id;
  dht_msg msg;
  dht_id start;
  uint32_t tries;

  if (node->n_succs == 0 || finger_lookup_busy(node)) {
    return;
  }
  succ_id = &node->peers[node->succs[0]].id;
  /* Fingers that fall before the successor need no lookup; skip past them
   * to the next one that does. */
  for (tries = 0; tries < DHT_ID_BITS; tries++) {
    uint32_t i = node->next_finger;
    dht_id_add_pow2(&start, &node->id, i);
    if (!dht_id_in_oc(&start, &node->id, succ_id)) {
      fill_find_succ(&msg, &start, false);
      dht__route_start(node, DHT__ORIGIN_FINGER, i, DHT__NO_PEER, &msg);
      return;
    }
    dht__slot_set(node, &node->fingers[i], node->succs[0]);
    node->next_finger = (i + 1) % DHT_ID_BITS;
  }
}

/* A finger lookup answered: finger i and the ones after it that the same
 * node also covers point to it. */
static void finger_done(dht_node *node, uint32_t i, const dht_msg *result) {
  int32_t idx = DHT__NO_PEER;
  dht_id start;
  uint32_t j = i;

  if (result->type != DHT_MSG_FIND_SUCC_R || !result->has_peer) {
    node->next_finger = (i + 1) % DHT_ID_BITS;
    return;
  }
  node->counters.fingers_fixed++;
  if (!peer_is_self(node, &result->peer)) {
    idx = dht__peer_intern_ref(node, &result->peer);
  }
  if (idx == DHT__NO_PEER) {
    dht__slot_set(node, &node->fingers[i], DHT__NO_PEER);
    node->next_finger = (i + 1) % DHT_ID_BITS;
    return;
  }
  do {
    dht__slot_set(node, &node->fingers[j], idx);
    j++;
    if (j < DHT_ID_BITS) {
      dht_id_add_pow2(&start, &node->id, j);
    }
  } while (j < DHT_ID_BITS &&
           dht_id_in_oc(&start, &node->id, &node->peers[idx].id));
  node->next_finger = j % DHT_ID_BITS;
}

static void check_predecessor(dht_node *node) {
  dht__pending *p;
  dht_msg msg;

  if (node->pred == DHT__NO_PEER || pending_of_kind(node, DHT__PEND_PRED)) {
    return;
  }
  p = dht__pending_new(node, DHT__PEND_PRED, node->pred);
  if (p == NULL) {
    return;
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_GET_NEIGHBORS; /* alive, and who precedes it */
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
  }
}

/* The predecessor described itself: our predecessor list is it, then its
 * own list, up to where the ring wraps back to us, and only as long as
 * replication needs (a deeper entry would only take longer to settle). */
static void preds_learn(dht_node *node, const dht_msg *msg) {
  size_t i;
  uint32_t k;

  while (node->n_preds > 1) { /* keep preds[0]: it is the predecessor */
    dht__peer_release(node, node->preds[--node->n_preds]);
  }
  for (i = 0; i < msg->n_preds && node->n_preds < node->set.replicas; i++) {
    int32_t idx;
    bool dup = false;
    if (peer_is_self(node, &msg->preds[i])) {
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
}

/* Pings the next peer on the lost list; forgets the ones lost too long ago. */
static void probe_lost(dht_node *node) {
  dht__pending *p;
  dht__lost *l = NULL;
  dht_msg msg;
  int32_t idx;
  uint32_t k;

  if (pending_of_kind(node, DHT__PEND_PROBE)) {
    return;
  }
  for (k = 0; k < DHT__LOST_MAX && l == NULL; k++) {
    dht__lost *c = &node->lost[(node->next_probe + k) % DHT__LOST_MAX];
    if (c->addr[0] != '\0' && node->now_ms - c->lost_at_ms > DHT__LOST_TTL_MS) {
      c->addr[0] = '\0';
    }
    if (c->addr[0] != '\0') {
      l = c;
      node->next_probe = (node->next_probe + k + 1) % DHT__LOST_MAX;
    }
  }
  if (l == NULL) {
    return;
  }
  idx = dht__peer_intern(node, &l->id, l->addr, strlen(l->addr));
  p = idx != DHT__NO_PEER ? dht__pending_new(node, DHT__PEND_PROBE, idx) : NULL;
  if (p == NULL) {
    return;
  }
  p->sends = node->set.rpc_retries + 1; /* one try is enough for a probe */
  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_PING;
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
  } else {
    p->sends = node->set.rpc_retries + 1;
  }
}

/* A lost peer answered: ask it where this node belongs in its view of the
 * ring. If that is closer than our successor, the two rings were apart. */
static void merge_with(dht_node *node, int32_t peer) {
  dht_msg msg;

  lost_forget(node, node->peers[peer].addr);
  fill_find_succ(&msg, &node->id, false);
  dht__route_start(node, DHT__ORIGIN_MERGE, 0, peer, &msg);
}

static void merge_done(dht_node *node, const dht_msg *result) {
  int32_t idx;

  if (result->type != DHT_MSG_FIND_SUCC_R || !result->has_peer ||
      peer_is_self(node, &result->peer)) {
    return;
  }
  if (node->n_succs > 0 &&
      !dht_id_in_oo(&result->peer.id, &node->id,
                    &node->peers[node->succs[0]].id)) {
    return;
  }
  idx = dht__peer_intern_ref(node, &result->peer);
  if (idx != DHT__NO_PEER) {
    dht__log(node, DHT_LOG_INFO, "merging: %s is closer than our successor",
             node->peers[idx].addr);
    succ_adopt(node, idx);
    stabilize_soon(node);
  }
}

void dht__ring_on_route_result(dht_node *node, dht__origin origin,
                               uint32_t finger_index, const dht_msg *msg) {
  switch (origin) {
  case DHT__ORIGIN_JOIN:
    if (node->state == DHT_NODE_JOINING) {
      join_done(node, msg);
    }
    break;
  case DHT__ORIGIN_FINGER:
    finger_done(node, finger_index, msg);
    break;
  case DHT__ORIGIN_MERGE:
    merge_done(node, msg);
    break;
  case DHT__ORIGIN_CONN:
    assert(0 && "client results are relayed by node_route.c");
    break;
  }
}

void dht__ring_on_reply(dht_node *node, dht__pending *p, const dht_msg *msg) {
  int32_t peer = p->peer;

  switch (p->kind) {
  case DHT__PEND_PRED:
    if (msg->type != DHT_MSG_NEIGHBORS) {
      dht__on_ring_failure(node, p);
      return;
    }
    dht__pending_free(node, p);
    if (peer == node->pred) {
      preds_learn(node, msg);
    }
    return;
  case DHT__PEND_STABILIZE:
    if (msg->type != DHT_MSG_NEIGHBORS) {
      dht__on_ring_failure(node, p);
      return;
    }
    dht__peer_hold(node, peer);
    dht__pending_free(node, p);
    on_neighbors(node, peer, msg);
    dht__peer_release(node, peer);
    return;
  case DHT__PEND_PROBE:
    if (msg->type == DHT_MSG_PONG && node->state == DHT_NODE_JOINED) {
      dht__peer_hold(node, peer);
      dht__pending_free(node, p);
      merge_with(node, peer);
      dht__peer_release(node, peer);
      return;
    }
    break;
  case DHT__PEND_LEAVE:
    dht__pending_free(node, p);
    node->leave_acks_wanted--;
    dht__leave_step(node);
    return;
  default:
    assert(0 && "dht__ring_on_reply: not a ring request");
  }
  dht__pending_free(node, p);
}

void dht__on_ring_failure(dht_node *node, dht__pending *p) {
  int32_t peer = p->peer;
  dht__pending_kind kind = p->kind;

  dht__peer_hold(node, peer);
  dht__pending_free(node, p);
  switch (kind) {
  case DHT__PEND_PRED:
  case DHT__PEND_STABILIZE:
    dht__declare_dead(node, peer, true);
    break;
  case DHT__PEND_LEAVE:
    node->leave_acks_wanted--;
    dht__leave_step(node);
    break;
  default:
    break; /* a probe that failed: the peer stays lost */
  }
  dht__peer_release(node, peer);
}

void dht__ring_timers(dht_node *node) {
  uint64_t now = node->now_ms;

  if (node->state == DHT_NODE_JOINING && node->join_retry_at_ms <= now) {
    join_attempt(node);
  }
  if ((node->state != DHT_NODE_JOINED && node->state != DHT_NODE_LEAVING) ||
      !node->maintenance) {
    return;
  }
  if (node->stabilize_at_ms <= now) {
    node->stabilize_at_ms = jittered(node, node->set.stabilize_interval_ms);
    stabilize(node);
  }
  if (node->fix_fingers_at_ms <= now) {
    node->fix_fingers_at_ms = jittered(node, node->set.fix_fingers_interval_ms);
    fix_fingers(node);
  }
  if (node->check_pred_at_ms <= now) {
    node->check_pred_at_ms = jittered(node, node->set.check_pred_interval_ms);
    check_predecessor(node);
    probe_lost(node);
  }
}

uint64_t dht__ring_next_deadline(const dht_node *node) {
  uint64_t t;

  if (node->state == DHT_NODE_JOINING) {
    return node->join_retry_at_ms;
  }
  if ((node->state != DHT_NODE_JOINED && node->state != DHT_NODE_LEAVING) ||
      !node->maintenance) {
    return DHT_TIME_NEVER;
  }
  t = node->stabilize_at_ms;
  if (node->fix_fingers_at_ms < t) {
    t = node->fix_fingers_at_ms;
  }
  if (node->check_pred_at_ms < t) {
    t = node->check_pred_at_ms;
  }
  return t;
}

/* ---- replies that describe this node ---------------------------------------- */

/* Starts a reply of type that describes this node: itself, its
 * predecessor, its successor and predecessor lists (written into succs and
 * preds). */
static void describe_self(const dht_node *node, dht_msg *msg,
                          dht_msg_type type, uint64_t rid,
                          dht_peer_ref succs[DHT_SUCC_LIST_MAX],
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

void dht__reply_neighbors(dht_node *node, uint64_t conn, uint64_t rid) {
  dht_peer_ref succs[DHT_SUCC_LIST_MAX], preds[DHT_SUCC_LIST_MAX];
  dht_msg msg;

  describe_self(node, &msg, DHT_MSG_NEIGHBORS, rid, succs, preds);
  dht__reply(node, conn, &msg);
}

static const char *const counter_names[] = {
#define DHT__COUNTER_NAME(name) #name,
    DHT_NODE_COUNTER_MAP(DHT__COUNTER_NAME)
#undef DHT__COUNTER_NAME
};

#define N_COUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

void dht__reply_stats(dht_node *node, uint64_t conn, uint64_t rid) {
  dht_peer_ref succs[DHT_SUCC_LIST_MAX], preds[DHT_SUCC_LIST_MAX];
  dht_finger_ref fingers[DHT_ID_BITS];
  dht_counter counters[N_COUNTERS + 5];
  const uint64_t *values = (const uint64_t *)&node->counters;
  dht_msg msg;
  uint32_t i;
  size_t n;

  describe_self(node, &msg, DHT_MSG_STATS_R, rid, succs, preds);
  for (i = 0, n = 0; i < DHT_ID_BITS; i++) {
    if (node->fingers[i] != DHT__NO_PEER &&
        (i == 0 || node->fingers[i] != node->fingers[i - 1])) {
      fingers[n].start_bit = i;
      dht__peer_to_ref(node, node->fingers[i], &fingers[n].peer);
      n++;
    }
  }
  msg.fingers = fingers;
  msg.n_fingers = n;
  for (i = 0; i < N_COUNTERS; i++) {
    counters[i].name.p = (const uint8_t *)counter_names[i];
    counters[i].name.len = strlen(counter_names[i]);
    counters[i].value = values[i];
  }
  counters[i].name.p = (const uint8_t *)"keys";
  counters[i].name.len = 4;
  counters[i++].value = dht_store_count(node->store);
  counters[i].name.p = (const uint8_t *)"pending";
  counters[i].name.len = 7;
  counters[i++].value = node->n_pending;
  counters[i].name.p = (const uint8_t *)"state";
  counters[i].name.len = 5;
  counters[i++].value = (uint64_t)node->state;
  counters[i].name.p = (const uint8_t *)"replicas";
  counters[i].name.len = 8;
  counters[i++].value = node->set.replicas;
  counters[i].name.p = (const uint8_t *)"range_fresh";
  counters[i].name.len = 11;
  counters[i++].value = node->range_fresh;
  msg.counters = counters;
  msg.n_counters = i;
  dht__reply(node, conn, &msg);
}

/* ---- simulator and experiment hooks ----------------------------------------- */

int dht__ring_install(dht_node *node, const dht_routing_peer *pred,
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
  succs_set(node, cands, n_succs);
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
    dht__slot_set(node, &node->fingers[i], idx);
  }
  if (pred != NULL) {
    int32_t idx = dht__peer_intern(node, &pred->id, pred->addr,
                                   strlen(pred->addr));
    if (idx == DHT__NO_PEER) {
      return DHT_ERR_NOMEM;
    }
    dht__slot_set(node, &node->pred, idx);
  }
  node->state = DHT_NODE_JOINED;
  schedule_maintenance(node);
  return 0;
}

void dht__ring_set_maintenance(dht_node *node, bool enabled) {
  node->maintenance = enabled;
  if (enabled) {
    schedule_maintenance(node);
  }
}
