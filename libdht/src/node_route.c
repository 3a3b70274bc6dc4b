/*
 * node_route.c: recursive routing of FIND_SUCC, GET, PUT and DEL to the node
 * that serves them (node_repl.c serves the data operations), for clients,
 * other nodes, and this node's own lookups (node_ring.c's join, fingers and
 * merges, which pass a completion handler).
 *
 * A routed request travels hop by hop. Each node either serves it (it owns
 * the key) or forwards it and waits: the next hop first answers ACCEPTED
 * ("I have taken it over"), which tells the forwarder that the hop is alive,
 * then the result, which the forwarder relays to whoever asked it. A hop that
 * does not answer within rpc_timeout_ms (after rpc_retries resends) is
 * declared dead and the request is re-routed around it, up to
 * route_attempts next hops per node. So failure detection is per hop and
 * fast, while a long chain only needs route_timeout_ms end to end.
 *
 * A request marked "direct" (a client that knows the ring) is never routed:
 * a node that does not serve it answers MOVED, naming the node to ask.
 *
 * "final" marks the last step: the sender believes the receiver owns the key.
 * A receiver that disagrees (its predecessor is closer) passes it straight to
 * the predecessor that owns it by its predecessor list, or refuses it when
 * the key lies before that whole list (see step_back).
 * "hops" counts routing steps as the Chord paper counts path length: every
 * forward except the final delivery from the key's predecessor to its owner.
 * Backward steps do count, so that max_hops bounds every request.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "node_route.h"

static const dht__pending_ops route_ops;

static bool owns(const dht_node *node, const dht_id *key_id) {
  if (node->n_succs == 0) {
    return true; /* alone: a ring of one owns every key */
  }
  if (node->pred == DHT__NO_PEER) {
    return false;
  }
  return dht_id_in_oc(key_id, &node->peers[node->pred].id, &node->id);
}

/* The known node that most closely precedes target (fingers and successor
 * list), or DHT__NO_PEER when none lies strictly between this node and it. */
static int32_t closest_preceding(const dht_node *node, const dht_id *target) {
  int32_t best = DHT__NO_PEER;
  int i;

#define CONSIDER(idx)                                                          \
  do {                                                                         \
    int32_t c_ = (idx);                                                        \
    if (c_ != DHT__NO_PEER && c_ != best &&                                    \
        dht_id_in_oo(&node->peers[c_].id, &node->id, target) &&                \
        (best == DHT__NO_PEER ||                                               \
         dht_id_in_oo(&node->peers[c_].id, &node->peers[best].id, target))) {  \
      best = c_;                                                               \
    }                                                                          \
  } while (0)

  /* Most low fingers repeat the one above them (all point at the
   * successor): a repeat decides as its twin did, best being unchanged
   * since, so it is skipped. */
  for (i = DHT_ID_BITS - 1; i >= 0; i--) {
    if (i == DHT_ID_BITS - 1 || node->fingers[i] != node->fingers[i + 1]) {
      CONSIDER(node->fingers[i]);
    }
  }
  for (i = 0; i < (int)node->n_succs; i++) {
    CONSIDER(node->succs[i]);
  }
#undef CONSIDER
  return best;
}

/* What to do with a request for key_id. */
typedef struct route_decision {
  bool serve;     /* answer here */
  bool refuse;    /* answer UNAVAILABLE: this node cannot place the key */
  int32_t next;   /* otherwise: forward to this peer */
  bool final;     /* ... telling it that it owns the key */
  bool count_hop; /* ... and count the forward in hops */
} route_decision;

/* True when key_id lies further before peer last than last lies before
 * this node: by the spacing of our predecessor list, more nodes lie between
 * the key and last than the list holds. */
static bool far_before(const dht_node *node, const dht_id *key_id,
                       int32_t last) {
  dht_id key_to_last, last_to_self;

  dht_id_distance(&key_to_last, key_id, &node->peers[last].id);
  dht_id_distance(&last_to_self, &node->peers[last].id, &node->id);
  return dht_id_cmp(&key_to_last, &last_to_self) > 0;
}

/*
 * The sender of a last step thinks the key is ours, but it lies before our
 * predecessor: the sender's successor pointer skips nodes, which lie between
 * the key and us. Our predecessor list names the nearest of them, so the
 * request goes straight to the one that owns the key by that list (it checks
 * again against its own predecessor). Each such step goes backwards and
 * lands no further back than the key, and counts as a hop.
 *
 * A pointer that nodes joining since the sender's last stabilize made stale
 * skips a few nodes. One that skips far more than the whole list is broken:
 * a node that lost its successors in a fault takes its closest finger, which
 * can be most of the ring away. Walking back from there takes a hop per node
 * in between, each holding the request for route_timeout_ms and passing
 * keepalives up, and ends at max_hops on a ring larger than that; routing it
 * onwards instead leads back to the node with the broken pointer, which
 * sends it here again. So a full list (replicas entries, at least two)
 * refuses a key further before its last entry than that entry is before us:
 * the asker retries once stabilize has mended the pointer. A shorter list
 * (its predecessor's list has not come yet, or replicas 1) cannot tell, and
 * the request steps back to its end.
 *
 * Found with dht-sim run --seed 7 --nodes 48: during clogs 9718b4d5 was left
 * with its own predecessor, three nodes back, as its only successor. Lookups
 * of keys just after it walked back from there round the whole ring, and
 * the resent copies of six of them reached max_hops 22516 times.
 *
 * With no predecessor (it has just died, and none has notified this node
 * yet) the node takes the last step itself for a key it holds a copy of,
 * one after the replicas-th node of its last whole predecessor list: it
 * owns the dead one's range now. A key before that node was never here:
 * a GET, PUT or DEL of it is refused. Served, a DEL of one found nothing and
 * stored a tombstone while the key's owner, alive, held an acknowledged value
 * (a sweep's dht-sim crashes --seed 797230157 --nodes 23 --succ-list-len
 * 6 --replicas 2, in a build whose draws the final code changed: a node
 * whose successor pointer skipped two live nodes sent the last step;
 * test_node: test_last_step_without_predecessor_stays_in_held_range). A
 * FIND_SUCC is still answered: it names an owner, which this node may well
 * be when more than one predecessor died, and refused, 172 of the lookups
 * of churn-lookups at R = 0.40 failed instead of 129. A node that never
 * had a whole list (it has just joined, or the ring has replicas nodes or
 * fewer) takes any.
 */
/* What the predecessor list says of a key before the predecessor, walked
 * back from the predecessor while the list is in order (step_back,
 * redirect_target). */
typedef struct preds_walk {
  int32_t at; /* the entry the walk stopped at */
  bool owns;  /* ... which owns the key by the list */
  bool whole; /* the walk reached the list's end, all in order */
} preds_walk;

static preds_walk walk_preds(const dht_node *node, const dht_id *key_id) {
  /* preds[0] is pred; a predecessor installed by an oracle has no list. */
  preds_walk w = {node->pred, false, true};
  uint32_t j;

  for (j = 0; j + 1 < node->n_preds; j++) {
    const dht_id *here = &node->peers[node->preds[j]].id;
    const dht_id *before = &node->peers[node->preds[j + 1]].id;
    if (!dht_id_in_oo(before, &node->id, here)) {
      w.whole = false; /* out of order beyond here */
      return w;
    }
    if (dht_id_in_oc(key_id, before, here)) {
      w.owns = true;
      return w;
    }
    w.at = node->preds[j + 1];
  }
  return w;
}

static route_decision step_back(const dht_node *node, const dht_id *key_id,
                                bool lookup) {
  route_decision d = {false, false, DHT__NO_PEER, true, true};
  preds_walk w;

  if (node->pred == DHT__NO_PEER) {
    if (!lookup && node->n_last_preds >= node->set.replicas &&
        !dht_id_in_oc(key_id,
                      &node->peers[node->last_preds[node->set.replicas - 1]].id,
                      &node->id)) {
      d.refuse = true; /* held by none of the nodes this one follows */
    } else {
      d.serve = true; /* no predecessor to know better: take it */
    }
    return d;
  }
  w = walk_preds(node, key_id);
  d.next = w.at;
  if (!w.owns && w.whole && node->n_preds >= node->set.replicas &&
      node->n_preds >= 2 && far_before(node, key_id, d.next)) {
    d.next = DHT__NO_PEER;
    d.refuse = true;
  }
  return d;
}

static route_decision decide(const dht_node *node, const dht_id *key_id,
                             const dht_msg *req) {
  route_decision d = {false, false, DHT__NO_PEER, false, true};
  int32_t succ;

  if (owns(node, key_id)) {
    d.serve = true;
    return d;
  }
  succ = node->succs[0];
  if (dht_id_in_oc(key_id, &node->id, &node->peers[succ].id)) {
    d.next = succ;
    d.final = true;
    d.count_hop = false; /* the paper's lookup ends here, at the predecessor */
    return d;
  }
  if (req->final) {
    return step_back(node, key_id, req->type == DHT_MSG_FIND_SUCC);
  }
  d.next = closest_preceding(node, key_id);
  if (d.next == DHT__NO_PEER) {
    /* Unreachable when the successor list is ordered: succ itself would be
     * closer. Keep going rather than drop the request. */
    d.next = succ;
    d.final = true;
    d.count_hop = false;
  }
  return d;
}

/*
 * The node a direct request for key_id should go to when this node does not
 * serve it (docs/PROTOCOL.md, MOVED): its owner when this node can name it
 * (the successor, or a node of the predecessor list), else the known node
 * closest before the key, which knows that part of the ring better. *owner
 * says which of the two it is.
 */
static int32_t redirect_target(const dht_node *node, const dht_id *key_id,
                               bool *owner) {
  int32_t succ = node->succs[0], next;
  preds_walk w;

  *owner = true;
  if (dht_id_in_oc(key_id, &node->id, &node->peers[succ].id)) {
    return succ;
  }
  if (node->pred != DHT__NO_PEER) {
    w = walk_preds(node, key_id);
    if (w.owns) {
      return w.at;
    }
  }
  *owner = false;
  next = closest_preceding(node, key_id);
  return next != DHT__NO_PEER ? next : succ;
}

/* Answers a direct request for key_id that is not served here: MOVED,
 * naming where to ask. A leaving node names its successor, which is taking
 * its keys over. */
static void redirect(dht_node *node, uint64_t conn, uint64_t rid,
                     const dht_id *key_id) {
  dht_msg out;
  int32_t to;
  bool owner = true;

  if (node->state == DHT_NODE_LEAVING && owns(node, key_id)) {
    to = node->succs[0];
  } else {
    to = redirect_target(node, key_id, &owner);
  }
  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_MOVED;
  out.rid = rid;
  out.has_peer = true;
  dht__peer_to_ref(node, to, &out.peer);
  out.final = owner;
  node->counters.redirects++;
  dht__reply(node, conn, &out);
}

static void key_id_of(const dht_msg *msg, dht_id *key_id) {
  if (msg->type == DHT_MSG_FIND_SUCC) {
    *key_id = msg->target;
  } else {
    dht_id_hash(key_id, msg->key.p, msg->key.len);
  }
}

/* Builds the answer to a FIND_SUCC that ends here: this node owns target. */
static void serve_lookup(dht_node *node, const dht_msg *req, dht_msg *out,
                         dht_peer_ref *path_buf) {
  memset(out, 0, sizeof(*out));
  out->rid = req->rid;
  out->hops = req->hops;
  node->counters.lookups_answered++;
  out->type = DHT_MSG_FIND_SUCC_R;
  out->has_peer = true;
  dht__self_ref(node, &out->peer);
  if (req->trace) {
    if (req->n_path > 0) {
      memcpy(path_buf, req->path, req->n_path * sizeof(*path_buf));
    }
    out->path = path_buf;
    out->n_path = req->n_path;
    if (out->n_path < DHT_PATH_MAX) {
      dht__self_ref(node, &path_buf[out->n_path++]);
    }
  }
}

/* Sends the routed request req on to d.next as p's request. */
static int forward(dht_node *node, dht__pending *p, const dht_msg *req,
                   route_decision d) {
  dht_peer_ref path[DHT_PATH_MAX];
  dht_msg out = *req;

  out.hops = req->hops + (d.count_hop ? 1u : 0u);
  out.final = d.final;
  if (req->trace) {
    if (req->n_path > 0) {
      memcpy(path, req->path, req->n_path * sizeof(*path));
    }
    out.path = path;
    out.n_path = req->n_path;
    if (out.n_path < DHT_PATH_MAX) {
      dht__self_ref(node, &path[out.n_path++]);
    }
  }
  node->counters.forwards++;
  return dht__pending_send(node, p, &out);
}

/* Delivers a result to whoever started p, then frees p. */
static void finish(dht_node *node, dht__pending *p, const dht_msg *result) {
  dht__route_state r = p->u.route;
  dht_msg out;

  if (r.done == NULL) {
    out = *result;
    out.rid = r.origin_rid;
    dht__reply(node, r.origin_conn, &out);
    dht__pending_free(node, p);
    return;
  }
  dht__pending_free(node, p);
  r.done(node, r.done_arg, result);
}

static void finish_error(dht_node *node, dht__pending *p, int code) {
  dht_msg err;
  const char *text = dht_strerror(code);

  memset(&err, 0, sizeof(err));
  err.type = DHT_MSG_ERROR;
  err.error_code = code;
  err.error_msg.p = (const uint8_t *)text;
  err.error_msg.len = strlen(text);
  if (p->u.route.done == NULL) {
    node->counters.errors_sent++;
  }
  finish(node, p, &err);
}

/* Routes p's stored request from here: serves it or forwards it. */
static void route_pending(dht_node *node, dht__pending *p, int32_t first_hop) {
  dht_msg req, result;
  dht_peer_ref path[DHT_PATH_MAX];
  route_decision d = {false, false, first_hop, false, true};
  dht_id key_id;
  int rv;

  rv = dht_msg_decode(&req, p->kept.data, p->kept.len, &node->set.limits);
  assert(rv == 0 && "a stored routed request no longer decodes");
  key_id_of(&req, &key_id);
  if (first_hop == DHT__NO_PEER) {
    if (node->n_succs == 0 && node->state != DHT_NODE_JOINED) {
      /* not in a ring: nobody to ask */
      dht_msg_free(&req);
      finish_error(node, p, DHT_ERR_UNAVAILABLE);
      return;
    }
    d = decide(node, &key_id, &req);
  } else {
    d.final = req.final; /* a check at the node thought to own the key */
  }
  if (req.type != DHT_MSG_FIND_SUCC && p->u.route.done == NULL &&
      (d.serve || dht__may_serve_replica(node, &req, &key_id))) {
    /* Answered by node_repl.c, which may keep the request a while longer
     * (it waits for replicas): it gets its own copy, p is done. */
    dht__serve_data(node, p->u.route.origin_conn, p->u.route.origin_rid, &req,
                    &key_id, p->kept.data, p->kept.len, !d.serve);
    dht__pending_free(node, p);
  } else if (d.serve) {
    serve_lookup(node, &req, &result, path);
    finish(node, p, &result);
  } else if (d.refuse) {
    node->counters.route_refused++;
    finish_error(node, p, DHT_ERR_UNAVAILABLE);
  } else {
    dht__pending_retarget(node, p, d.next);
    dht__pending_rekey(node, p);
    rv = forward(node, p, &req, d);
    if (rv != 0) {
      finish_error(node, p, rv);
    }
  }
  dht_msg_free(&req);
}

/*
 * A leaving node is handing its keys to its successor: writes it would have
 * served go straight there, and the local copy of any written key is dropped
 * first, so that a later hand-off batch cannot carry the older value over
 * the new one (whose stamp comes from another node's clock, which may lag
 * this one's). Reads are served while the key is still here.
 */
static route_decision while_leaving(dht_node *node, const dht_msg *msg,
                                    const dht_id *key_id, route_decision d) {
  const uint8_t *value;
  size_t value_len;

  if (node->n_succs == 0 || msg->type == DHT_MSG_FIND_SUCC) {
    return d;
  }
  if (msg->type != DHT_MSG_GET) {
    dht_store_remove(node->store, key_id, msg->key.p, msg->key.len);
  } else if (d.serve && dht_store_get(node->store, key_id, msg->key.p,
                                      msg->key.len, &value, &value_len) == 0) {
    return d;
  }
  if (d.serve) {
    d.serve = false;
    d.next = node->succs[0];
    d.final = true;
    d.count_hop = false;
  }
  return d;
}

void dht__route_request(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  uint64_t conn = in->conn;
  dht_msg result;
  dht_peer_ref path[DHT_PATH_MAX];
  route_decision d;
  dht__pending *p;
  dht_id key_id;
  int rv;

  if (msg->hops >= node->set.max_hops) {
    node->counters.hop_limit++;
    dht__reply_error(node, conn, msg->rid, DHT_ERR_HOPS);
    return;
  }
  key_id_of(msg, &key_id);
  d = decide(node, &key_id, msg);
  if (node->state == DHT_NODE_LEAVING) {
    d = while_leaving(node, msg, &key_id, d);
  }
  if (msg->type != DHT_MSG_FIND_SUCC &&
      (d.serve || dht__may_serve_replica(node, msg, &key_id))) {
    dht__serve_data(node, conn, msg->rid, msg, &key_id, in->body, in->len,
                    !d.serve);
    return;
  }
  if (msg->direct && msg->type != DHT_MSG_FIND_SUCC) {
    redirect(node, conn, msg->rid, &key_id);
    return;
  }
  if (d.serve) {
    serve_lookup(node, msg, &result, path);
    dht__reply(node, conn, &result);
    return;
  }
  if (d.refuse) {
    node->counters.route_refused++;
    dht__reply_error(node, conn, msg->rid, DHT_ERR_UNAVAILABLE);
    return;
  }
  p = dht__pending_new(node, &route_ops, d.next);
  if (p == NULL) {
    dht__reply_error(node, conn, msg->rid, DHT_ERR_FULL);
    return;
  }
  p->u.route.origin_conn = conn;
  p->u.route.origin_rid = msg->rid;
  rv = dht_buf_append(&p->kept, in->body, in->len);
  if (rv == 0) {
    rv = forward(node, p, msg, d);
  }
  if (rv != 0) {
    dht__pending_free(node, p);
    dht__reply_error(node, conn, msg->rid, rv);
    return;
  }
  dht__reply_accepted(node, conn, msg->rid);
}

/*
 * Starts a lookup on this node's own behalf (a finger, its join, a merge
 * probe). With first_hop set the request goes there first, whatever the
 * routing table says, as a last step when msg is marked final, and a
 * failure there ends it. The result reaches
 * done(node, done_arg, result), at once when this node can answer itself.
 * Returns 0 or DHT_ERR_FULL / DHT_ERR_NOMEM (nothing was started, done is
 * not called).
 */
int dht__route_start(dht_node *node, int32_t first_hop, const dht_msg *msg,
                     dht__lookup_done_fn done, uint32_t done_arg) {
  dht_buf frame;
  dht__pending *p;
  int32_t holder = first_hop;
  int rv;

  if (holder == DHT__NO_PEER) {
    holder = node->n_succs > 0 ? node->succs[0] : DHT__NO_PEER;
  }
  if (holder == DHT__NO_PEER) {
    /* Alone: every lookup ends here. Answer through the same path. */
    dht_msg self;
    memset(&self, 0, sizeof(self));
    self.type = DHT_MSG_FIND_SUCC_R;
    self.has_peer = true;
    dht__self_ref(node, &self.peer);
    done(node, done_arg, &self);
    return 0;
  }
  p = dht__pending_new(node, &route_ops, holder);
  if (p == NULL) {
    return DHT_ERR_FULL;
  }
  p->u.route.done = done;
  p->u.route.done_arg = done_arg;
  p->u.route.pinned = first_hop != DHT__NO_PEER;
  dht_buf_init(&frame);
  rv = dht_msg_encode(msg, &frame);
  if (rv == 0) {
    rv = dht_buf_append(&p->kept, frame.data + DHT_FRAME_HEADER_LEN,
                        frame.len - DHT_FRAME_HEADER_LEN);
  }
  dht_buf_free(&frame);
  if (rv != 0) {
    dht__pending_free(node, p);
    return rv;
  }
  route_pending(node, p, first_hop);
  return 0;
}

/* Tells whoever sent p's request that it is still being worked on. */
static void keepalive_upstream(dht_node *node, const dht__pending *p) {
  if (p->u.route.done == NULL) {
    dht__reply_accepted(node, p->u.route.origin_conn, p->u.route.origin_rid);
  }
}

static void route_on_failure(dht_node *node, dht__pending *p, int code);

static void route_on_reply(dht_node *node, dht__pending *p,
                           const dht_msg *msg) {
  if (msg->type == DHT_MSG_ACCEPTED) {
    /* The first ACCEPTED says the next hop took the request over; later
     * ones say a node further along is routing around a failure and still
     * working on it. Each restarts the wait, and the later ones travel on
     * upstream, so that no hop gives up on a path that is making progress
     * (every node re-routes a bounded number of times, so this ends). */
    if (p->accepted) {
      keepalive_upstream(node, p);
    }
    p->accepted = true;
    dht__pending_rearm(node, p, node->set.route_timeout_ms);
    return;
  }
  if (msg->type == DHT_MSG_ERROR && msg->error_code == DHT_ERR_STATE &&
      !p->accepted) {
    /* The next hop is up but not in the ring (joining, or left): it must
     * leave our tables, and the request goes another way. */
    dht__declare_dead(node, p->peer, false);
    route_on_failure(node, p, DHT_ERR_UNAVAILABLE);
    return;
  }
  finish(node, p, msg);
}

/*
 * The request p forwarded failed with code: DHT_ERR_UNAVAILABLE when the next
 * hop is dead (it has already been removed from the tables), so another way
 * is tried; DHT_ERR_TIMEOUT when the hop accepted but no result came back.
 */
static void route_on_failure(dht_node *node, dht__pending *p, int code) {
  dht__route_state *r = &p->u.route;

  if (code == DHT_ERR_UNAVAILABLE && !r->pinned &&
      r->hops_tried + 1 < node->set.route_attempts) {
    r->hops_tried++;
    node->counters.forward_retries++;
    keepalive_upstream(node, p);
    route_pending(node, p, DHT__NO_PEER);
    return;
  }
  finish_error(node, p, code);
}

/* No answer from the next hop in time. */
static void route_on_timeout(dht_node *node, dht__pending *p) {
  if (p->accepted) {
    /* The next hop is alive; something further along is not. */
    route_on_failure(node, p, DHT_ERR_TIMEOUT);
  } else {
    dht__declare_dead(node, p->peer, true);
    route_on_failure(node, p, DHT_ERR_UNAVAILABLE);
  }
}

/* ACCEPTED says the next hop took the request over, or still works on it. */
static const dht__pending_ops route_ops = {"route", true, route_on_reply,
                                           route_on_timeout};
