/*
 * node_ring.c: keeping the ring whole (node_ring.h). Join through the
 * first of a list of candidates that answers; stabilize (ask the successor
 * for its predecessor and successor list, then notify it); fix_fingers
 * (refresh one finger lookup at a time); check_predecessor (ping it);
 * probe peers declared dead in case a partition only hid them; and a
 * graceful leave. The tables themselves are node_table.c's: this file
 * decides what goes into them.
 */
#include <stdlib.h>
#include <string.h>

#include "node_ring.h"

/* The kinds of request this layer sends; defined with their handlers. */
static const dht__pending_ops stabilize_ops, pred_check_ops, probe_ops,
    skip_ops, leave_ops;

/* How much slower fingers are refreshed once a whole pass changed none
 * (fix_fingers). */
#define FINGER_SETTLED_SLOWDOWN 4u

/* check_predecessor rounds (of a second by default) from one lookup of the
 * node's own id through a seed to the next while a split is possible, and
 * how many times that otherwise (seed_check). */
#define SEED_CHECK_ROUNDS 30u
#define SEED_CHECK_SETTLED_SLOWDOWN 8u

/* Spreads periodic work over [0.75, 1.25] of its interval so that nodes
 * started together do not stay in lock-step. */
static uint64_t jittered(dht_node *node, uint32_t interval_ms) {
  uint64_t spread = interval_ms / 2 + 1;
  return node->now_ms + interval_ms - interval_ms / 4 +
         dht__rand(node) % spread;
}

static void schedule_maintenance(dht_node *node) {
  node->ring.stabilize_at_ms = node->now_ms;
  node->ring.fix_fingers_at_ms =
      jittered(node, node->set.fix_fingers_interval_ms);
  node->ring.check_pred_at_ms =
      jittered(node, node->set.check_pred_interval_ms);
  /* Spread, so that nodes joined together do not check together. */
  node->ring.seed_check_rounds =
      (uint32_t)(dht__rand(node) % SEED_CHECK_ROUNDS);
}

static void stabilize_soon(dht_node *node) {
  node->ring.stabilize_at_ms = node->now_ms;
}

/* A successor failed or left: refill the list from the next one now. */
void dht__ring_on_succ_lost(dht_node *node) { stabilize_soon(node); }

/* A sender was refused for a position this node's tables may only be too
 * old to know: refresh both lists now rather than at their next round. */
void dht__ring_check_neighbours_soon(dht_node *node) {
  if (node->ring.check_pred_at_ms > node->now_ms + 50) {
    node->ring.check_pred_at_ms = node->now_ms + 50;
  }
  if (node->ring.stabilize_at_ms > node->now_ms + 50) {
    node->ring.stabilize_at_ms = node->now_ms + 50;
  }
}

/* A new predecessor is checked at once (and tells its own list). */
void dht__ring_on_pred_changed(dht_node *node) {
  if (node->pred != DHT__NO_PEER) {
    node->ring.check_pred_at_ms = node->now_ms;
  }
}

/* ---- join, create, leave ---------------------------------------------------- */

static void fill_find_succ(dht_msg *msg, const dht_id *target, bool trace) {
  memset(msg, 0, sizeof(*msg));
  msg->type = DHT_MSG_FIND_SUCC;
  msg->target = *target;
  msg->trace = trace;
}

/* The address to join through on attempt k (from 0): the join list in
 * order, round after round; a node re-joining after it was cut off tries,
 * after one pass over the list, the peers it lost. */
static const char *join_target(const dht_node *node, uint32_t k) {
  uint32_t n = node->ring.n_join_list, i, seen = 0;

  if (k < n || !node->ring.rejoining) {
    return node->ring.join_list[k % n];
  }
  for (i = 0; i < DHT__LOST_MAX; i++) {
    if (node->lost[i].addr[0] != '\0' && ++seen == k - n + 1) {
      return node->lost[i].addr;
    }
  }
  return node->ring.join_list[k % n];
}

/* Join tries a join may make: join_attempts rounds over the list; a node
 * re-joining also tries every peer it lost once, since any of them (not
 * only the first few, which may be dead for good) may be back in a ring. */
static uint64_t join_tries_max(const dht_node *node) {
  uint64_t rounds = (uint64_t)node->set.join_attempts * node->ring.n_join_list;
  uint32_t i, n = node->ring.n_join_list;

  if (!node->ring.rejoining) {
    return rounds;
  }
  for (i = 0; i < DHT__LOST_MAX; i++) {
    n += node->lost[i].addr[0] != '\0';
  }
  return n > rounds ? n : rounds;
}

/* Whether attempt k, after attempt k - 1 failed, goes out at once: it is
 * the next candidate of the same pass over the list. The first of each
 * round, and each lost peer a re-joining node tries, waits 2 *
 * rpc_timeout_ms, as every retry through a single bootstrap does: a node
 * that is starting up has time to listen, and a ring that is in flux,
 * time to settle. */
static bool join_goes_straight_on(const dht_node *node, uint32_t k) {
  uint32_t n = node->ring.n_join_list;

  return k % n != 0 && (k < n || !node->ring.rejoining);
}

static void join_lookup_done(dht_node *node, uint32_t arg,
                             const dht_msg *result);

static void join_attempt(dht_node *node) {
  const char *addr = join_target(node, node->ring.join_tries);
  size_t len = strlen(addr);
  dht_msg msg;
  dht_id target;
  int32_t boot;
  int rv;

  memcpy(node->ring.join_addr, addr, len + 1);
  node->state = DHT_NODE_JOINING;
  node->ring.join_tries++;
  node->ring.join_retry_at_ms = DHT_TIME_NEVER;
  boot = dht__peer_intern(node, NULL, addr, len);
  /* Ask for the successor of id + 1 rather than of id: if this node is
   * restarting and the ring still lists its address, the answer is then its
   * old successor instead of itself. The trace tells the bootstrap's id. */
  dht_id_add_pow2(&target, &node->id, 0);
  fill_find_succ(&msg, &target, true);
  rv = boot == DHT__NO_PEER
           ? DHT_ERR_NOMEM
           : dht__route_start(node, boot, &msg, join_lookup_done, 0);
  if (rv != 0) {
    node->state = node->ring.rejoining ? DHT_NODE_JOINED : DHT_NODE_IDLE;
    if (!node->ring.rejoining) {
      dht__emit_event(node, DHT_EVENT_JOIN_FAILED, rv);
    }
    node->ring.rejoining = false;
  }
}

/* A node that joined a ring and then lost every successor and its
 * predecessor is a ring of one that nobody knows: it joins again, through
 * its join list or a peer it lost, keeping its keys. It is JOINING only
 * while a join lookup is in flight: between attempts it is the ring of one
 * it was, so that a peer looking for it (one restarting, or as cut off as
 * it is) can join it or notify it. Refusing them all with ERROR STATE while
 * it waited to retry left two such nodes refusing each other for good.
 * A seed that founded a ring and has heard from nobody yet does the same:
 * it looks for a ring the other seeds may have founded meanwhile. */
static void rejoin(dht_node *node) {
  if (node->counters.succ_changes == 0) {
    dht__log(node, DHT_LOG_INFO,
             "a ring of one so far: looking for the others through the "
             "join list");
  } else {
    dht__log(node, DHT_LOG_WARN, "cut off from the ring: joining again");
  }
  node->ring.rejoining = true;
  node->ring.join_tries = 0;
  join_attempt(node);
}

/* A node whose only successor died before any other node knew of it (no
 * stabilize answered, nobody notified it) has not joined: it knows nobody
 * alive, and nobody knows it, so a ring of one looking for the rest would
 * wait for good. It joins again as a new node does, and fails as one does
 * when its candidates stay dead (dht-sim run --seed 4 --nodes 33 ...: its
 * bootstrap crashed 84 ms after answering, for good). */
static void join_again(dht_node *node) {
  dht__log(node, DHT_LOG_WARN,
           "lost the successor before the ring knew of this node: the join "
           "did not take; joining again");
  node->state = DHT_NODE_JOINING;
  node->ring.join_tries = 0;
  join_attempt(node);
}

static void join_done(dht_node *node, const dht_msg *result) {
  const dht_peer_ref *succ = NULL;
  int32_t idx;

  if (result->type == DHT_MSG_FIND_SUCC_R && result->has_peer) {
    succ = &result->peer;
    if (dht__ref_is_self(node, succ)) {
      /* The ring maps our successor to our own address (a restart in a
       * tiny ring): start from the bootstrap and let stabilize correct. */
      succ = result->n_path > 0 && !dht__ref_is_self(node, &result->path[0])
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
    if (node->ring.join_tries < join_tries_max(node)) {
      bool now = join_goes_straight_on(node, node->ring.join_tries);
      /* A ring of one looking for the rest says so once a cycle (rejoin):
       * its misses are expected, not each worth a warning. */
      dht__log(node, node->ring.rejoining ? DHT_LOG_INFO : DHT_LOG_WARN,
               "join through %s failed (%s), %s", node->ring.join_addr,
               dht_strerror(code),
               now ? "trying the next candidate" : "retrying");
      node->ring.join_retry_at_ms =
          node->now_ms + (now ? 0 : 2u * node->set.rpc_timeout_ms);
      if (node->ring.rejoining) {
        node->state = DHT_NODE_JOINED; /* until the next attempt (rejoin) */
      }
    } else if (node->ring.rejoining) {
      /* Stay a ring of one and try again at the next stabilize round. */
      dht__log(node, DHT_LOG_INFO, "re-join failed: %s", dht_strerror(code));
      node->state = DHT_NODE_JOINED;
      node->ring.rejoining = false;
    } else if (node->ring.seed) {
      /* No candidate is in a ring: every seed is starting, as after a
       * stop of the whole ring. A seed founds one rather than wait for
       * the others, who do the same; each ring of one keeps looking
       * through its join list (stabilize, rejoin), and any two that find
       * each other become one ring, their keys handed to their owners. */
      dht__log(node, DHT_LOG_WARN,
               "no candidate is in a ring (the last: %s, %s): this node is "
               "on its own join list, a seed, so it founds one",
               node->ring.join_addr, dht_strerror(code));
      node->state = DHT_NODE_JOINED;
      schedule_maintenance(node);
      dht__emit_event(node, DHT_EVENT_JOINED, 0);
    } else {
      dht__log(node, DHT_LOG_ERROR, "join through %s failed: %s",
               node->ring.join_addr, dht_strerror(code));
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
  dht__lost_forget(node, node->peers[idx].addr);
  node->state = DHT_NODE_JOINED;
  dht__succ_adopt(node, idx);
  schedule_maintenance(node);
  dht__log(node, DHT_LOG_INFO, "joined through %s: successor %s",
           node->ring.join_addr, node->peers[idx].addr);
  if (!node->ring.rejoining) {
    dht__emit_event(node, DHT_EVENT_JOINED, 0);
  }
  node->ring.rejoining = false;
}

/* The join lookup's result: ignored unless the node is still joining (it
 * may have been told to leave, or have failed, meanwhile). */
static void join_lookup_done(dht_node *node, uint32_t arg,
                             const dht_msg *result) {
  (void)arg;
  if (node->state == DHT_NODE_JOINING) {
    join_done(node, result);
  }
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

int dht__ring_join(dht_node *node, const char *const *addrs, size_t n) {
  char(*list)[DHT_ADDR_LEN_MAX + 1];
  size_t i, kept = 0;

  if (node->state != DHT_NODE_IDLE) {
    return DHT_ERR_STATE;
  }
  if (n == 0 || n > DHT_JOIN_LIST_MAX) {
    return DHT_ERR_INVAL;
  }
  for (i = 0; i < n; i++) {
    size_t len = strlen(addrs[i]);
    if (len == 0 || len > node->set.limits.addr_len_max) {
      return DHT_ERR_INVAL;
    }
    kept += strcmp(addrs[i], node->addr) != 0;
  }
  if (kept == 0) {
    /* A seed with no other: the ring is this node's to found. */
    node->state = DHT_NODE_JOINED;
    schedule_maintenance(node);
    dht__log(node, DHT_LOG_INFO, "founded a ring: the only seed is this node");
    dht__emit_event(node, DHT_EVENT_JOINED, 0);
    return 0;
  }
  node->ring.seed = kept < n;
  list = malloc(kept * sizeof(*list));
  if (list == NULL) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0, kept = 0; i < n; i++) {
    if (strcmp(addrs[i], node->addr) != 0) {
      memcpy(list[kept++], addrs[i], strlen(addrs[i]) + 1);
    }
  }
  free(node->ring.join_list);
  node->ring.join_list = list;
  node->ring.n_join_list = (uint32_t)kept;
  node->state = DHT_NODE_JOINING;
  node->ring.join_tries = 0;
  join_attempt(node);
  return 0;
}

void dht__ring_free(dht_node *node) { free(node->ring.join_list); }

int dht__ring_leave(dht_node *node) {
  if (node->state != DHT_NODE_JOINED) {
    return DHT_ERR_STATE;
  }
  node->state = DHT_NODE_LEAVING;
  node->ring.rejoining = false; /* a re-join waiting for its next attempt */
  node->ring.join_retry_at_ms = DHT_TIME_NEVER;
  dht__log(node, DHT_LOG_INFO, "leaving: handing %zu keys on",
           dht_store_count(node->store));
  dht__handoff_pump(node); /* ends in hooks.handoff_drained */
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
  p = dht__pending_new(node, &leave_ops, to);
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
  if (!node->ring.leave_notified) {
    node->ring.leave_notified = true;
    if (node->n_succs > 0) {
      node->ring.leave_acks_wanted +=
          (uint32_t)send_leave(node, node->succs[0], true, false);
    }
    if (node->pred != DHT__NO_PEER &&
        (node->n_succs == 0 || node->pred != node->succs[0])) {
      node->ring.leave_acks_wanted +=
          (uint32_t)send_leave(node, node->pred, false, true);
    }
  }
  if (node->ring.leave_acks_wanted == 0) {
    node->state = DHT_NODE_LEFT;
    dht__log(node, DHT_LOG_INFO, "left the ring");
    dht__emit_event(node, DHT_EVENT_LEFT, 0);
  }
}

void dht__on_leave(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  int32_t cands[2 * DHT_SUCC_LIST_MAX];
  int32_t gone = dht__peer_intern_own(node, &msg->peer);
  size_t n = 0, i;

  if (gone != DHT__NO_PEER) {
    dht__peer_hold(node, gone);
    if (node->pred == gone) {
      int32_t pred = DHT__NO_PEER;
      if (msg->has_pred && !dht__ref_is_self(node, &msg->pred)) {
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
      dht__succs_set(node, cands, n);
    }
    for (i = 0; i < n; i++) {
      dht__peer_release(node, cands[i]);
    }
    /* It left on purpose: no need to probe it later. */
    dht__declare_dead(node, gone, false);
    dht__peer_release(node, gone);
  }
  dht__reply_ok(node, in->conn, msg->rid, 0);
}

/* ---- periodic maintenance --------------------------------------------------- */

/* Sends peer a request of type with no fields but seen (a GET_NEIGHBORS's;
 * 0: none), as a request of kind ops. Returns it, or NULL when it could
 * not go. */
static dht__pending *ask(dht_node *node, const dht__pending_ops *ops,
                         int32_t peer, dht_msg_type type, uint64_t seen) {
  dht__pending *p = dht__pending_new(node, ops, peer);
  dht_msg msg;

  if (p == NULL) {
    return NULL;
  }
  memset(&msg, 0, sizeof(msg));
  msg.type = type;
  msg.seen = seen;
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
    return NULL;
  }
  return p;
}

/*
 * The view tag a GET_NEIGHBORS names, so that a neighbour whose view is the
 * one this node last took in full answers with the tag alone: 0 unless a
 * tag was kept (view) and this node's list is still the one it derived
 * from that view (list, a dht__list_print). Taking that view again would
 * then change nothing: a view is kept only when it named no lost peer and
 * every peer in it found a slot, so that the list derived from it depends
 * on the view and the list alone.
 */
static uint64_t view_seen(const dht_node *node, uint64_t view, uint64_t list,
                          const int32_t *now, size_t n) {
  return view != 0 && dht__list_print(node, now, n) == list ? view : 0;
}

static void stabilize(dht_node *node) {

  node->counters.stabilize_rounds++;
  if (node->n_succs == 0) {
    if (node->pred == DHT__NO_PEER) {
      if (node->ring.n_join_list > 0 && node->state == DHT_NODE_JOINED &&
          !node->ring.rejoining) {
        if (node->counters.succ_changes > 0 && !node->ring.heard &&
            node->counters.pred_changes == 0) {
          join_again(node);
        } else {
          rejoin(node);
        }
      }
      return; /* alone, and nobody has found us */
    }
    /* Alone but notified: the notifier is the rest of the ring. */
    dht__succ_adopt(node, node->pred);
    if (node->n_succs == 0) {
      return;
    }
  }
  dht__handoff_pump(node);
  if (!node->ring.stabilize_busy) {
    uint64_t seen = view_seen(node, node->ring.succ_view,
                              node->ring.succ_view_list, node->succs,
                              node->n_succs);
    node->ring.stabilize_busy =
        ask(node, &stabilize_ops, node->succs[0], DHT_MSG_GET_NEIGHBORS,
            seen) != NULL;
  }
}

static void probe_lost(dht_node *node);

/* How long a successor may name another predecessor than this node, one
 * not between them, before the log says so; and how often it says so. */
#define UNNAMED_WARN_MS 10000u
#define UNNAMED_LOG_MS 60000u

/* A successor that keeps naming a predecessor before this node (or none)
 * has not taken this node's NOTIFYs: most often it cannot connect back to
 * the address this node advertises (behind NAT without --advertise), so
 * it cannot confirm them. Nothing else would tell the operator: the node
 * itself looks joined. */
static void unnamed_watch(dht_node *node, int32_t succ, const dht_msg *msg) {
  dht__ring *r = &node->ring;
  bool between = msg->has_pred && !dht__ref_is_self(node, &msg->pred) &&
                 dht_id_in_oo(&msg->pred.id, &node->id,
                              &node->peers[succ].id);

  if (r->succ_agreed || between) {
    r->unnamed_since_ms = 0;
    return;
  }
  if (r->unnamed_since_ms == 0) {
    r->unnamed_since_ms = node->now_ms;
  }
  if (node->now_ms - r->unnamed_since_ms >= UNNAMED_WARN_MS &&
      (r->unnamed_logged_ms == 0 ||
       node->now_ms - r->unnamed_logged_ms >= UNNAMED_LOG_MS)) {
    r->unnamed_logged_ms = node->now_ms;
    dht__log(node, DHT_LOG_WARN,
             "successor %s has not taken this node as its predecessor for "
             "%llu s (it names %.*s): can it connect to %s, the address "
             "this node advertises (--advertise)? Its links_refused counter "
             "says whether it tried and failed",
             node->peers[succ].addr,
             (unsigned long long)((node->now_ms - r->unnamed_since_ms) / 1000),
             msg->has_pred ? (int)msg->pred.addr.len : 4,
             msg->has_pred ? (const char *)msg->pred.addr.p : "none",
             node->addr);
  }
}

/* Tells peer idx that this node may be its predecessor. */
static void send_notify(dht_node *node, int32_t idx) {
  dht_msg notify;

  memset(&notify, 0, sizeof(notify));
  notify.type = DHT_MSG_NOTIFY;
  notify.has_peer = true;
  dht__self_ref(node, &notify.peer);
  dht__send(node, idx, &notify);
}

static void on_neighbors(dht_node *node, int32_t asked, const dht_msg *msg) {
  int32_t cands[DHT_SUCC_LIST_MAX + 2];
  size_t n = 0, i;
  int named_lost = -1; /* the nearest lost peer the successor names */
  bool all_interned = true;

  if (node->n_succs == 0 || node->succs[0] != asked) {
    return; /* the successor changed while we asked: ask again next round */
  }
  if (msg->same) {
    /* The view this node took last, which named it the predecessor (only
     * such views are kept): nothing to mend, nobody to notify. A tag this
     * node no longer holds is the answer to an older round: the next
     * round asks in full. */
    if (msg->view == node->ring.succ_view) {
      node->ring.heard = true;
      dht__lost_forget(node, node->peers[asked].addr);
    }
    return;
  }
  node->ring.succ_view = 0;
  if (!msg->has_peer) {
    return;
  }
  node->ring.heard = true;
  node->ring.agreed_succ = node->peers[asked].id;
  node->ring.succ_agreed =
      msg->has_pred && dht__ref_is_self(node, &msg->pred);
  unnamed_watch(node, asked, msg);
  dht__lost_forget(node, node->peers[asked].addr); /* it just answered */
  /* Its predecessor sits between us: that is our successor now. */
  if (msg->has_pred && !dht__ref_is_self(node, &msg->pred) &&
      dht_id_in_oo(&msg->pred.id, &node->id, &node->peers[asked].id)) {
    int32_t x = dht__peer_intern_ref(node, &msg->pred);
    int lost = x != DHT__NO_PEER ? dht__lost_find(node, node->peers[x].addr)
                                 : -1;
    if (x != DHT__NO_PEER && lost < 0) {
      dht__peer_hold(node, x);
      cands[n++] = x;
    } else if (lost >= 0) {
      named_lost = lost; /* it has notified our successor */
    }
    all_interned = all_interned && x != DHT__NO_PEER;
  }
  dht__peer_hold(node, asked);
  cands[n++] = asked;
  for (i = 0; i < msg->n_succs && n < DHT_SUCC_LIST_MAX + 2; i++) {
    int32_t idx;
    if (dht__ref_is_self(node, &msg->succs[i])) {
      break; /* the ring is shorter than the list: it wrapped to us */
    }
    idx = dht__peer_intern_ref(node, &msg->succs[i]);
    if (idx != DHT__NO_PEER) {
      if (named_lost < 0) {
        named_lost = dht__lost_find(node, node->peers[idx].addr);
      }
      dht__peer_hold(node, idx);
      cands[n++] = idx;
    }
    all_interned = all_interned && idx != DHT__NO_PEER;
  }
  if (named_lost >= 0) {
    /* A peer we gave up on is alive in our successor's view, as its
     * predecessor or in its list: it may have restarted, or only our
     * connection to it failed (a host that restarted resets the one we
     * kept to its old process). It stays out of the tables until it
     * answers us, but it is probed next, not in its turn on the lost
     * list, which takes a check interval per entry, and longer for
     * entries that are dead for good: in its turn, a deep entry of the
     * list would stay wrong for many rounds on a ring at rest. */
    node->ring.next_probe = (uint32_t)named_lost;
    probe_lost(node);
  }
  dht__succs_set(node, cands, n);
  for (i = 0; i < n; i++) {
    dht__peer_release(node, cands[i]);
  }
  if (node->n_succs == 0) {
    return;
  }
  if (node->succs[0] != asked) {
    stabilize_soon(node); /* learn the new successor's list */
  } else if (node->ring.succ_agreed) {
    if (named_lost < 0 && all_interned && msg->view != 0) {
      node->ring.succ_view = msg->view;
      node->ring.succ_view_list =
          dht__list_print(node, node->succs, node->n_succs);
    }
    return; /* it names this node already: a NOTIFY would change nothing */
  }
  send_notify(node, node->succs[0]);
}

void dht__on_notify(dht_node *node, const dht__request *in) {
  dht__ring_notified(node, &in->msg->peer);
}

/* peer, confirmed at its address (node.c) unless the ring trusts every
 * link, thinks it is our predecessor. */
void dht__ring_notified(dht_node *node, const dht_peer_ref *peer) {
  int32_t n;

  if (dht__ref_is_self(node, peer)) {
    return;
  }
  n = dht__peer_intern_own(node, peer);
  if (n == DHT__NO_PEER) {
    return;
  }
  dht__lost_forget(node, node->peers[n].addr); /* it is plainly alive */
  dht__peer_hold(node, n);
  if (node->pred == DHT__NO_PEER ||
      dht_id_in_oo(&node->peers[n].id, &node->peers[node->pred].id,
                   &node->id)) {
    dht__set_pred(node, n);
  }
  if (node->n_succs == 0) {
    dht__succ_adopt(node, n); /* a ring of two */
  }
  dht__peer_release(node, n);
}

static void finger_lookup_done(dht_node *node, uint32_t i,
                               const dht_msg *result);
static void skipped_done(dht_node *node, uint32_t arg, const dht_msg *result);

/*
 * Stabilize repairs pointers one neighbour at a time, so it cannot leave a
 * state where every node's successor confirms its view but some live nodes
 * are skipped: a node whose successor pointer jumps over a stretch of the
 * ring, nobody pointing to it, its own successor taking it as predecessor
 * (1,500 nodes joining 20 ms apart left 34 such nodes for good: dht-sim run
 * --seed 2 --nodes 1500 --no-faults --join-gap-ms 20). Once per pass over
 * the fingers, the node therefore asks the ring at large, starting from a
 * finger drawn at random, which node follows its id: an answer between it
 * and its successor is adopted once it answers a ping (skipped_done). On a
 * ring at rest the answer is the node itself. Only a successor that has
 * not changed since the last pass is questioned: under heavy churn
 * stabilize is busy mending anyway, and answers from a ring in flux made
 * lookups fail more often (churn-lookups at R = 0.40: 21 % instead of 14 %).
 */
static void check_skipped(dht_node *node) {
  int32_t cands[DHT_ID_BITS];
  size_t n = 0;
  uint32_t i;

  if (node->state != DHT_NODE_JOINED || node->n_succs == 0) {
    return;
  }
  if (!dht_id_eq(&node->peers[node->succs[0]].id,
                 &node->ring.skip_check_succ)) {
    node->ring.skip_check_succ = node->peers[node->succs[0]].id;
    return;
  }
  for (i = DHT_ID_BITS; i-- > 0;) {
    int32_t f = node->fingers[i];
    if (f != DHT__NO_PEER && f != node->succs[0] &&
        (n == 0 || cands[n - 1] != f)) {
      cands[n++] = f;
    }
  }
  if (n > 0) {
    dht_msg msg;
    fill_find_succ(&msg, &node->id, false);
    dht__route_start(node, cands[dht__rand(node) % n], &msg, skipped_done, 0);
  }
}

/* Whether t (0: never) lies less than DHT__LOST_TTL_MS back. */
static bool recent(const dht_node *node, uint64_t t) {
  return t != 0 && node->now_ms - t < DHT__LOST_TTL_MS;
}

/*
 * Whether this node may be in one of two rings that have not found each
 * other: within the time a lost peer is probed for (DHT__LOST_TTL_MS), it
 * declared a peer dead that a cut may only have hidden (one it probes:
 * node_table.c lost_add), or it found a node between itself and its
 * successor (a skipped node, or a merge: where one was, more may be).
 * Two chains that a cut split apart, each whole in itself and interleaved
 * with the other after the heal, are found by check_skipped's lookups
 * that start at a finger still naming a node of the other chain (a finger
 * is checked at the node it names, which confirms it from its own chain,
 * so such fingers outlive the heal) or by a merge with a lost peer: made
 * every fourth settled pass, the check left the chains of dht-sim run
 * --seed 315 apart for over 180 s (before 6e45670 changed what that seed
 * draws). Every node of such a chain lost peers of the other one when the
 * cut began.
 */
static bool split_possible(const dht_node *node) {
  return recent(node, node->lost_last_ms) ||
         recent(node, node->ring.split_seen_ms);
}

/* A node between this one and its successor was found: keeps the
 * skipped-node check once a pass for a while (split_possible). */
static void split_seen(dht_node *node) {
  node->ring.split_seen_ms = node->now_ms > 0 ? node->now_ms : 1;
}

/*
 * Sets the finger fix_fingers refreshes next. A pass that ends sets the
 * pace of the next one (fingers_settled) and checks for skipped nodes:
 * after every pass while fingers move or while a split is possible
 * (split_possible), otherwise after every FINGER_SETTLED_SLOWDOWN-th
 * settled pass. On a ring of 16 at rest the check was 230 of the 1,110
 * bytes a node sent a second (docs/PERFORMANCE.md, Upkeep); nodes that
 * join at once move fingers, so they still check once a pass (dht-sim run
 * --seed 2 --nodes 1500 --no-faults --join-gap-ms 20).
 */
static void finger_next(dht_node *node, uint32_t next) {
  dht__ring *r = &node->ring;

  if (next <= r->next_finger) {
    r->fingers_settled = !r->fingers_moved;
    r->fingers_moved = false;
    r->settled_passes = r->fingers_settled ? r->settled_passes + 1 : 0;
    if (r->settled_passes % FINGER_SETTLED_SLOWDOWN == 0 ||
        split_possible(node)) {
      check_skipped(node);
    }
  }
  r->next_finger = next;
  r->finger_full_lookup = false;
}

/* Sets finger i to idx, noting a change for the pace of the passes. */
static void finger_update(dht_node *node, uint32_t i, int32_t idx) {
  if (node->fingers[i] != idx) {
    node->ring.fingers_moved = true;
    node->ring.fingers_settled = false;
  }
  dht__finger_set(node, i, idx);
}

/* finger_lookup_done's argument: the finger, and whether the lookup was a
 * check at the node the finger named. */
#define FINGER_CHECK 0x80000000u

/*
 * Refreshes the next finger that lies past the successor. A finger that
 * names a node is checked at that node: a FIND_SUCC of the finger's start,
 * marked final, which it answers itself while it still owns the start (one
 * round trip, where a lookup from here takes a forward, an ACCEPTED and a
 * relay at each of about log2(N) / 2 hops), and otherwise passes back
 * along its predecessor list to the node that joined before it. A check
 * that fails (the node is dead, or refuses a start far before it) is
 * followed by a lookup from here. While fingers keep changing, one is
 * refreshed every fix_fingers_interval_ms; after a whole pass that changed
 * none, every FINGER_SETTLED_SLOWDOWN times that, until one changes.
 */
static void fix_fingers(dht_node *node) {
  const dht_id *succ_id;
  dht_msg msg;
  dht_id start;
  uint32_t tries;

  if (node->n_succs == 0 || node->ring.finger_lookup_busy) {
    return;
  }
  succ_id = &node->peers[node->succs[0]].id;
  /* Fingers that fall before the successor need no lookup; skip past them
   * to the next one that does. */
  for (tries = 0; tries < DHT_ID_BITS; tries++) {
    uint32_t i = node->ring.next_finger;
    dht_id_add_pow2(&start, &node->id, i);
    if (!dht_id_in_oc(&start, &node->id, succ_id)) {
      int32_t at = node->ring.finger_full_lookup ? DHT__NO_PEER
                                                 : node->fingers[i];
      fill_find_succ(&msg, &start, false);
      msg.final = at != DHT__NO_PEER;
      /* Busy until finger_lookup_done, which may run before this returns. */
      node->ring.finger_lookup_busy = true;
      if (dht__route_start(node, at, &msg, finger_lookup_done,
                           at != DHT__NO_PEER ? i | FINGER_CHECK : i) != 0) {
        node->ring.finger_lookup_busy = false;
      }
      return;
    }
    finger_update(node, i, node->succs[0]);
    finger_next(node, (i + 1) % DHT_ID_BITS);
  }
}

/* A finger lookup answered: finger i and the ones after it that the same
 * node also covers point to it. */
static void finger_lookup_done(dht_node *node, uint32_t arg,
                               const dht_msg *result) {
  uint32_t i = arg & ~FINGER_CHECK, j = i;
  int32_t idx = DHT__NO_PEER;
  dht_id start;

  node->ring.finger_lookup_busy = false;
  if (result->type != DHT_MSG_FIND_SUCC_R || !result->has_peer) {
    if ((arg & FINGER_CHECK) && i == node->ring.next_finger) {
      node->ring.finger_full_lookup = true; /* the same finger, from here */
      return;
    }
    finger_next(node, (i + 1) % DHT_ID_BITS);
    return;
  }
  node->counters.fingers_fixed++;
  if (!dht__ref_is_self(node, &result->peer)) {
    idx = dht__peer_intern_ref(node, &result->peer);
  }
  if (idx == DHT__NO_PEER) {
    finger_update(node, i, DHT__NO_PEER);
    finger_next(node, (i + 1) % DHT_ID_BITS);
    return;
  }
  do {
    finger_update(node, j, idx);
    j++;
    if (j < DHT_ID_BITS) {
      dht_id_add_pow2(&start, &node->id, j);
    }
  } while (j < DHT_ID_BITS &&
           dht_id_in_oc(&start, &node->id, &node->peers[idx].id));
  finger_next(node, j % DHT_ID_BITS);
}

static void check_predecessor(dht_node *node) {
  if (node->pred != DHT__NO_PEER && !node->ring.pred_check_busy) {
    /* alive, and who precedes it */
    uint64_t seen = view_seen(node, node->ring.pred_view,
                              node->ring.pred_view_list, node->preds,
                              node->n_preds);
    node->ring.pred_check_busy =
        ask(node, &pred_check_ops, node->pred, DHT_MSG_GET_NEIGHBORS, seen) !=
        NULL;
  }
}

/* Pings the next peer on the lost list; forgets the ones lost too long ago. */
static void probe_lost(dht_node *node) {
  dht__pending *p;
  dht__lost *l = NULL;
  int32_t idx;
  uint32_t k;

  if (node->ring.probe_busy) {
    return;
  }
  for (k = 0; k < DHT__LOST_MAX && l == NULL; k++) {
    dht__lost *c = &node->lost[(node->ring.next_probe + k) % DHT__LOST_MAX];
    if (c->addr[0] != '\0' && node->now_ms - c->lost_at_ms > DHT__LOST_TTL_MS) {
      c->addr[0] = '\0';
    }
    if (c->addr[0] != '\0') {
      l = c;
      node->ring.next_probe = (node->ring.next_probe + k + 1) % DHT__LOST_MAX;
    }
  }
  if (l == NULL) {
    return;
  }
  idx = dht__peer_intern(node, &l->id, l->addr, strlen(l->addr));
  p = idx != DHT__NO_PEER ? ask(node, &probe_ops, idx, DHT_MSG_PING, 0) : NULL;
  /* Resent like any request: the first send may have to wait for a new
   * connection's handshake, one more round trip than the wait allows. */
  node->ring.probe_busy = p != NULL;
}

/* A lost peer answered: ask it where this node belongs in its view of the
 * ring (outside_view_done). */
static void outside_view_done(dht_node *node, uint32_t arg,
                              const dht_msg *result);

static void merge_with(dht_node *node, int32_t peer) {
  dht_msg msg;

  dht__lost_forget(node, node->peers[peer].addr);
  fill_find_succ(&msg, &node->id, false);
  dht__route_start(node, peer, &msg, outside_view_done, 0);
}

/*
 * Two rings can also be apart with no lost peer to link them: nodes that
 * restart as a cut heals know no peer from before it, and join through
 * whichever ring their candidate is in; a merge with a lost peer that finds
 * nothing yet (the peer's ring in flux) forgets that peer. dht-sim run
 * --seed 797202200 --nodes 42 --succ-list-len 2 --replicas 2 (and the
 * fault settings of its sweep) was left so for good: one ring the stretch
 * 7cbefe4c..dfbc78ce, the other the rest, each whole in itself, neither
 * naming a node of the other in any table. What still links them is the
 * join lists: the seeds an operator gives every node (in the simulator,
 * the node each one joined through), through which nodes of both joined.
 * So a joined node looks up its own id through the next entry of its list,
 * round after round: every SEED_CHECK_ROUNDS predecessor checks while a
 * split is possible (split_possible: such rings come of cuts, and their
 * nodes lost peers of the other side), SEED_CHECK_SETTLED_SLOWDOWN times
 * more rarely otherwise. On one ring the answer is the node itself. Made
 * every 30 checks regardless, the lookups were 35 of the 979 bytes a node
 * of an idle ring of 16 sent a second (docs/PERFORMANCE.md, Upkeep).
 */
static void seed_check(dht_node *node) {
  dht__ring *r = &node->ring;
  const char *addr;
  int32_t seed;
  dht_msg msg;

  r->seed_check_rounds++;
  if (r->seed_check_rounds < SEED_CHECK_ROUNDS ||
      (r->seed_check_rounds < SEED_CHECK_ROUNDS * SEED_CHECK_SETTLED_SLOWDOWN &&
       !split_possible(node))) {
    return;
  }
  r->seed_check_rounds = 0;
  if (node->state != DHT_NODE_JOINED || r->rejoining || r->n_join_list == 0 ||
      node->n_succs == 0) {
    return;
  }
  addr = r->join_list[r->next_seed++ % r->n_join_list];
  seed = dht__peer_intern(node, NULL, addr, strlen(addr));
  if (seed != DHT__NO_PEER) {
    fill_find_succ(&msg, &node->id, false);
    dht__route_start(node, seed, &msg, outside_view_done, 0);
  }
}

/* Whether a lookup of this node's own id found another node. */
static bool found_other(const dht_node *node, const dht_msg *result) {
  return result->type == DHT_MSG_FIND_SUCC_R && result->has_peer &&
         !dht__ref_is_self(node, &result->peer);
}

/* The peer a lookup of this node's own id found, interned, when it lies
 * between this node and its successor; DHT__NO_PEER otherwise. */
static int32_t closer_successor(dht_node *node, const dht_msg *result) {
  if (!found_other(node, result)) {
    return DHT__NO_PEER;
  }
  if (node->n_succs > 0 &&
      !dht_id_in_oo(&result->peer.id, &node->id,
                    &node->peers[node->succs[0]].id)) {
    return DHT__NO_PEER;
  }
  return dht__peer_intern_ref(node, &result->peer);
}

/*
 * A lookup of this node's own id that began outside its tables (at a lost
 * peer that answered, or at a seed) answered with the node that owns the
 * id in that view of the ring. One between this node and its successor is
 * adopted: the two rings were apart. Any other node but this one takes the
 * id for its own, so its predecessor pointer skips this node, which
 * notifies it: it takes this node as its predecessor, and its old one then
 * finds this node between itself and its successor at its next stabilize,
 * which draws the two rings into one a node at a time.
 */
static void outside_view_done(dht_node *node, uint32_t arg,
                              const dht_msg *result) {
  int32_t idx = closer_successor(node, result);

  (void)arg;
  if (idx != DHT__NO_PEER) {
    dht__log(node, DHT_LOG_INFO, "merging: %s is closer than our successor",
             node->peers[idx].addr);
    split_seen(node);
    dht__succ_adopt(node, idx);
    stabilize_soon(node);
    return;
  }
  if (node->state != DHT_NODE_JOINED || !found_other(node, result) ||
      dht_id_eq(&result->peer.id, &node->id)) {
    return;
  }
  idx = dht__peer_intern_ref(node, &result->peer);
  if (idx != DHT__NO_PEER) {
    dht__log(node, DHT_LOG_INFO,
             "merging: %s takes this node's id for its own; notified it",
             node->peers[idx].addr);
    split_seen(node);
    send_notify(node, idx);
  }
}

/* ---- the kinds of request this layer sends ------------------------------------ */

/*
 * A GET_NEIGHBORS to a neighbour (stabilize's to the successor, the
 * predecessor check's) ended, with msg or (NULL) without an answer: clears
 * the kind's busy flag and frees p. No answer, or not the answer a ring
 * member gives, means the neighbour is dead or out of the ring. Returns the
 * peer asked, held for the caller to release, when it answered NEIGHBORS;
 * otherwise DHT__NO_PEER.
 */
static int32_t neighbors_answered(dht_node *node, dht__pending *p,
                                  const dht_msg *msg, bool *busy) {
  int32_t peer = p->peer;

  *busy = false;
  dht__peer_hold(node, peer);
  dht__pending_free(node, p);
  if (msg != NULL && msg->type == DHT_MSG_NEIGHBORS) {
    return peer;
  }
  dht__declare_dead(node, peer, true);
  dht__peer_release(node, peer);
  return DHT__NO_PEER;
}

static void stabilize_done(dht_node *node, dht__pending *p,
                           const dht_msg *msg) {
  int32_t peer = neighbors_answered(node, p, msg, &node->ring.stabilize_busy);

  if (peer != DHT__NO_PEER) {
    if (msg->wall_ms != 0) {
      dht__repl_note_clock(node, msg->wall_ms, true);
    }
    on_neighbors(node, peer, msg);
    dht__peer_release(node, peer);
  }
}

static void stabilize_failed(dht_node *node, dht__pending *p) {
  stabilize_done(node, p, NULL);
}

/* Whether refs[0..n) names this node: a list that wraps round a ring
 * shorter than it. */
static bool names_self(const dht_node *node, const dht_peer_ref *refs,
                       size_t n) {
  size_t i;

  for (i = 0; i < n; i++) {
    if (dht__ref_is_self(node, &refs[i])) {
      return true;
    }
  }
  return false;
}

static void pred_check_done(dht_node *node, dht__pending *p,
                            const dht_msg *msg) {
  int32_t peer = neighbors_answered(node, p, msg, &node->ring.pred_check_busy);

  if (peer != DHT__NO_PEER) {
    if (msg->wall_ms != 0) {
      dht__repl_note_clock(node, msg->wall_ms, false);
    }
    if (peer == node->pred && !msg->same) {
      dht__preds_learn(node, msg);
      node->ring.agreed_pred = node->peers[peer].id;
      node->ring.pred_agreed =
          msg->n_succs > 0 && dht__ref_is_self(node, &msg->succs[0]);
      /* Kept, as stabilize keeps its successor's (view_seen), when it
       * names this node. (A list that preds_learn cut short because the
       * peer table was full stays short until the view changes.) */
      node->ring.pred_view = node->ring.pred_agreed ? msg->view : 0;
      node->ring.pred_view_list =
          dht__list_print(node, node->preds, node->n_preds);
      node->ring.preds_short = node->n_preds < node->set.replicas &&
                               !names_self(node, msg->preds, msg->n_preds);
      dht__lost_held_trim(node);
    }
    if (peer == node->pred && node->ring.preds_short) {
      /* The list grows one node a round behind a join: asked at the usual
       * pace, the nodes after a new one knew fewer than replicas
       * predecessors for seconds, and a burst of deaths then could not
       * be told from a shift (node_lost.c needs a whole list). */
      uint64_t soon = node->now_ms + node->set.check_pred_interval_ms / 4;
      if (node->ring.check_pred_at_ms > soon) {
        node->ring.check_pred_at_ms = soon;
      }
    }
    dht__peer_release(node, peer);
  }
}

static void pred_check_failed(dht_node *node, dht__pending *p) {
  pred_check_done(node, p, NULL);
}

static void probe_on_reply(dht_node *node, dht__pending *p,
                           const dht_msg *msg) {
  int32_t peer = p->peer;

  node->ring.probe_busy = false;
  if (msg->type == DHT_MSG_PONG && node->state == DHT_NODE_JOINED) {
    dht__peer_hold(node, peer);
    dht__pending_free(node, p);
    merge_with(node, peer);
    dht__peer_release(node, peer);
    return;
  }
  dht__pending_free(node, p);
}

/* A probe that failed: the peer stays lost, and its connection goes. A
 * connect to a dead host retransmits its SYN ever more rarely (1, 3, 7 ..
 * 63 s after the first) and everything sent to the address waits behind
 * it: kept, it would hide the peer's return for up to a minute. The next
 * probe opens a new connection, whose SYN a live host answers at once. */
static void probe_on_failure(dht_node *node, dht__pending *p) {
  node->ring.probe_busy = false;
  dht__emit_disconnect(node, node->peers[p->peer].addr);
  dht__pending_free(node, p);
}

/* check_skipped's lookup answered. The view that named a closer node may
 * hold one that has died since (under churn, often): it is adopted only
 * once it answers a ping of its own (skip_on_reply). */
static void skipped_done(dht_node *node, uint32_t arg, const dht_msg *result) {
  int32_t idx = closer_successor(node, result);

  (void)arg;
  if (idx != DHT__NO_PEER && !node->ring.skip_check_busy) {
    node->ring.skip_check_busy =
        ask(node, &skip_ops, idx, DHT_MSG_PING, 0) != NULL;
  }
}

static void skip_on_reply(dht_node *node, dht__pending *p,
                          const dht_msg *msg) {
  int32_t peer = p->peer;

  node->ring.skip_check_busy = false;
  dht__peer_hold(node, peer); /* p held the only reference, maybe */
  dht__pending_free(node, p);
  if (msg->type == DHT_MSG_PONG && node->state == DHT_NODE_JOINED &&
      node->n_succs > 0 &&
      dht_id_in_oo(&node->peers[peer].id, &node->id,
                   &node->peers[node->succs[0]].id)) {
    dht__log(node, DHT_LOG_INFO, "%s was skipped: it is our successor now",
             node->peers[peer].addr);
    split_seen(node);
    dht__succ_adopt(node, peer);
    stabilize_soon(node);
  }
  dht__peer_release(node, peer);
}

/* No answer: it stays out; the next pass looks again. */
static void skip_on_failure(dht_node *node, dht__pending *p) {
  node->ring.skip_check_busy = false;
  dht__pending_free(node, p);
}

/* A LEAVE notice is settled by any answer, or by none. */
static void leave_settled(dht_node *node, dht__pending *p) {
  dht__pending_free(node, p);
  node->ring.leave_acks_wanted--;
  dht__leave_step(node);
}

static void leave_on_reply(dht_node *node, dht__pending *p,
                           const dht_msg *msg) {
  (void)msg;
  leave_settled(node, p);
}

/* Any answer but the expected one, ACCEPTED included, counts against the
 * neighbour or the probe; any answer settles a LEAVE. */
static const dht__pending_ops stabilize_ops = {"stabilize", true,
                                               stabilize_done, stabilize_failed};
static const dht__pending_ops pred_check_ops = {
    "check_pred", true, pred_check_done, pred_check_failed};
static const dht__pending_ops skip_ops = {"skip_check", true, skip_on_reply,
                                          skip_on_failure};
static const dht__pending_ops probe_ops = {"probe", true, probe_on_reply,
                                           probe_on_failure};
static const dht__pending_ops leave_ops = {"leave", true, leave_on_reply,
                                           leave_settled};

/* ---- timers -------------------------------------------------------------------- */

/* Whether the node waits for a join attempt: joining, or re-joining
 * between attempts. */
static bool join_pending(const dht_node *node) {
  return node->state == DHT_NODE_JOINING ||
         (node->state == DHT_NODE_JOINED && node->ring.rejoining);
}

/* The next join attempt is due. A re-joining node that was found while it
 * waited (joined by a peer, or notified) is in a ring again: it stops. */
static void join_retry(dht_node *node) {
  if (node->state == DHT_NODE_JOINED &&
      (node->n_succs > 0 || node->pred != DHT__NO_PEER)) {
    dht__log(node, DHT_LOG_INFO, "in a ring again: found while re-joining");
    node->ring.rejoining = false;
    node->ring.join_retry_at_ms = DHT_TIME_NEVER;
    return;
  }
  join_attempt(node);
}

void dht__ring_timers(dht_node *node) {
  uint64_t now = node->now_ms;

  if (join_pending(node) && node->ring.join_retry_at_ms <= now) {
    join_retry(node);
  }
  if ((node->state != DHT_NODE_JOINED && node->state != DHT_NODE_LEAVING) ||
      !node->maintenance) {
    return;
  }
  if (node->ring.stabilize_at_ms <= now) {
    node->ring.stabilize_at_ms =
        jittered(node, node->set.stabilize_interval_ms);
    stabilize(node);
  }
  if (node->ring.fix_fingers_at_ms <= now) {
    node->ring.fix_fingers_at_ms = jittered(
        node, node->set.fix_fingers_interval_ms *
                  (node->ring.fingers_settled ? FINGER_SETTLED_SLOWDOWN : 1));
    fix_fingers(node);
  }
  if (node->ring.check_pred_at_ms <= now) {
    node->ring.check_pred_at_ms =
        jittered(node, node->set.check_pred_interval_ms);
    check_predecessor(node);
    probe_lost(node);
    seed_check(node);
  }
}

uint64_t dht__ring_next_deadline(const dht_node *node) {
  uint64_t t = join_pending(node) ? node->ring.join_retry_at_ms
                                  : DHT_TIME_NEVER;

  if ((node->state != DHT_NODE_JOINED && node->state != DHT_NODE_LEAVING) ||
      !node->maintenance) {
    return t;
  }
  if (node->ring.stabilize_at_ms < t) {
    t = node->ring.stabilize_at_ms;
  }
  if (node->ring.fix_fingers_at_ms < t) {
    t = node->ring.fix_fingers_at_ms;
  }
  if (node->ring.check_pred_at_ms < t) {
    t = node->ring.check_pred_at_ms;
  }
  return t;
}

/* ---- simulator and experiment hooks ----------------------------------------- */

int dht__ring_install(dht_node *node, const dht_routing_peer *pred,
                      const dht_routing_peer *succs, size_t n_succs,
                      const dht_routing_peer *fingers) {
  int rv = dht__table_install(node, pred, succs, n_succs, fingers);

  if (rv != 0) {
    return rv;
  }
  node->state = DHT_NODE_JOINED;
  schedule_maintenance(node);
  return 0;
}

/*
 * Ready (docs/DESIGN.md, "Ready"): joined; the successor's last answer
 * named this node its predecessor and the predecessor's named it its first
 * successor (both lists were rebuilt from those answers, so they agree
 * with the neighbours'); the range synced with every replica since the
 * predecessor last changed, each current replica position found holding
 * all of it at its last exchange, no write doubting that (a failed
 * commit), and no hand-off batch in flight. A ring of one is ready once
 * joined.
 */
bool dht__ring_ready(const dht_node *node) {
  const dht__ring *r = &node->ring;

  if (node->state != DHT_NODE_JOINED || r->rejoining) {
    return false; /* a node cut off is a ring of one between its tries */
  }
  if (node->n_succs > 0 &&
      (!r->succ_agreed ||
       !dht_id_eq(&r->agreed_succ, &node->peers[node->succs[0]].id))) {
    return false;
  }
  if (node->pred != DHT__NO_PEER &&
      (!r->pred_agreed ||
       !dht_id_eq(&r->agreed_pred, &node->peers[node->pred].id))) {
    return false;
  }
  if ((node->n_succs > 0) != (node->pred != DHT__NO_PEER)) {
    return false; /* one side known only: still joining the ring */
  }
  return dht__repl_replicas_hold_range(node) && !node->handoff.busy &&
         node->handoff.todo_records == 0;
}

void dht__ring_set_maintenance(dht_node *node, bool enabled) {
  node->maintenance = enabled;
  if (enabled) {
    schedule_maintenance(node);
  }
}
