/*
 * node_route.c: recursive routing of FIND_SUCC, GET, PUT and DEL to the node
 * that serves them (node_repl.c serves the data operations), and the
 * hand-off of keys to where they belong.
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
 * "final" marks the last step: the sender believes the receiver owns the key.
 * A receiver that disagrees (its predecessor is closer) passes it backwards.
 * "hops" counts routing steps as the Chord paper counts path length: every
 * forward except the final delivery from the key's predecessor to its owner.
 * Backward steps do count, so that max_hops bounds every request.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

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

  for (i = DHT_ID_BITS - 1; i >= 0; i--) {
    CONSIDER(node->fingers[i]);
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
  int32_t next;   /* otherwise: forward to this peer */
  bool final;     /* ... telling it that it owns the key */
  bool count_hop; /* ... and count the forward in hops */
} route_decision;

static route_decision decide(const dht_node *node, const dht_id *key_id,
                             bool final) {
  route_decision d = {false, DHT__NO_PEER, false, true};
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
  if (final) {
    /* The sender thinks the key is ours, but it lies before our
     * predecessor: step back, or take it if we know no better. */
    if (node->pred == DHT__NO_PEER) {
      d.serve = true;
    } else {
      d.next = node->pred;
      d.final = true;
    }
    return d;
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
  dht__origin origin = p->origin;
  uint32_t finger_index = p->finger_index;
  dht_msg out;

  if (origin == DHT__ORIGIN_CONN) {
    out = *result;
    out.rid = p->origin_rid;
    dht__reply(node, p->origin_conn, &out);
    dht__pending_free(node, p);
    return;
  }
  dht__pending_free(node, p);
  dht__ring_on_route_result(node, origin, finger_index, result);
}

static void finish_error(dht_node *node, dht__pending *p, int code) {
  dht_msg err;
  const char *text = dht_strerror(code);

  memset(&err, 0, sizeof(err));
  err.type = DHT_MSG_ERROR;
  err.error_code = code;
  err.error_msg.p = (const uint8_t *)text;
  err.error_msg.len = strlen(text);
  if (p->origin == DHT__ORIGIN_CONN) {
    node->counters.errors_sent++;
  }
  finish(node, p, &err);
}

/* Routes p's stored request from here: serves it or forwards it. */
static void route_pending(dht_node *node, dht__pending *p, int32_t first_hop) {
  dht_msg req, result;
  dht_peer_ref path[DHT_PATH_MAX];
  route_decision d = {false, first_hop, false, true};
  dht_id key_id;
  int rv;

  rv = dht_msg_decode(&req, p->req.data, p->req.len, &node->set.limits);
  assert(rv == 0 && "a stored routed request no longer decodes");
  key_id_of(&req, &key_id);
  if (first_hop == DHT__NO_PEER) {
    if (node->n_succs == 0 && node->state != DHT_NODE_JOINED) {
      /* not in a ring: nobody to ask */
      dht_msg_free(&req);
      finish_error(node, p, DHT_ERR_UNAVAILABLE);
      return;
    }
    d = decide(node, &key_id, req.final);
  }
  if (req.type != DHT_MSG_FIND_SUCC && p->origin == DHT__ORIGIN_CONN &&
      (d.serve || dht__may_serve_replica(node, &req, &key_id))) {
    /* Answered by node_repl.c, which may keep the request a while longer
     * (it waits for replicas): it gets its own copy, p is done. */
    dht__serve_data(node, p->origin_conn, p->origin_rid, &req, &key_id,
                    p->req.data, p->req.len, !d.serve);
    dht__pending_free(node, p);
  } else if (d.serve) {
    serve_lookup(node, &req, &result, path);
    finish(node, p, &result);
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

void dht__route_request(dht_node *node, uint64_t conn, const dht_msg *msg,
                        const uint8_t *body, size_t len) {
  dht_msg result, accepted;
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
  d = decide(node, &key_id, msg->final);
  if (node->state == DHT_NODE_LEAVING) {
    d = while_leaving(node, msg, &key_id, d);
  }
  if (msg->type != DHT_MSG_FIND_SUCC &&
      (d.serve || dht__may_serve_replica(node, msg, &key_id))) {
    dht__serve_data(node, conn, msg->rid, msg, &key_id, body, len, !d.serve);
    return;
  }
  if (d.serve) {
    serve_lookup(node, msg, &result, path);
    dht__reply(node, conn, &result);
    return;
  }
  p = dht__pending_new(node, DHT__PEND_ROUTE, d.next);
  if (p == NULL) {
    dht__reply_error(node, conn, msg->rid, DHT_ERR_FULL);
    return;
  }
  p->origin = DHT__ORIGIN_CONN;
  p->origin_conn = conn;
  p->origin_rid = msg->rid;
  rv = dht_buf_append(&p->req, body, len);
  if (rv == 0) {
    rv = forward(node, p, msg, d);
  }
  if (rv != 0) {
    dht__pending_free(node, p);
    dht__reply_error(node, conn, msg->rid, rv);
    return;
  }
  memset(&accepted, 0, sizeof(accepted));
  accepted.type = DHT_MSG_ACCEPTED;
  accepted.rid = msg->rid;
  dht__reply(node, conn, &accepted);
}

/*
 * Starts a lookup on this node's own behalf (a finger, its join, a merge
 * probe). With first_hop set the request goes there first, whatever the
 * routing table says. The result reaches dht__ring_on_route_result(), at
 * once when this node can answer itself. Returns 0 or DHT_ERR_FULL /
 * DHT_ERR_NOMEM (nothing was started).
 */
int dht__route_start(dht_node *node, dht__origin origin, uint32_t finger_index,
                     int32_t first_hop, const dht_msg *msg) {
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
    dht__ring_on_route_result(node, origin, finger_index, &self);
    return 0;
  }
  p = dht__pending_new(node, DHT__PEND_ROUTE, holder);
  if (p == NULL) {
    return DHT_ERR_FULL;
  }
  p->origin = origin;
  p->finger_index = finger_index;
  dht_buf_init(&frame);
  rv = dht_msg_encode(msg, &frame);
  if (rv == 0) {
    rv = dht_buf_append(&p->req, frame.data + DHT_FRAME_HEADER_LEN,
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
  dht_msg accepted;

  if (p->origin == DHT__ORIGIN_CONN) {
    memset(&accepted, 0, sizeof(accepted));
    accepted.type = DHT_MSG_ACCEPTED;
    accepted.rid = p->origin_rid;
    dht__reply(node, p->origin_conn, &accepted);
  }
}

void dht__route_on_reply(dht_node *node, dht__pending *p, const dht_msg *msg) {
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
    p->deadline_ms = node->now_ms + node->set.route_timeout_ms;
    if (p->deadline_ms < node->pending_min_deadline_ms) {
      node->pending_min_deadline_ms = p->deadline_ms;
    }
    return;
  }
  if (msg->type == DHT_MSG_ERROR && msg->error_code == DHT_ERR_STATE &&
      !p->accepted) {
    /* The next hop is up but not in the ring (joining, or left): it must
     * leave our tables, and the request goes another way. */
    dht__declare_dead(node, p->peer, false);
    dht__route_on_failure(node, p, DHT_ERR_UNAVAILABLE);
    return;
  }
  finish(node, p, msg);
}

/*
 * The request p forwarded failed with code: DHT_ERR_UNAVAILABLE when the next
 * hop is dead (it has already been removed from the tables), so another way
 * is tried; DHT_ERR_TIMEOUT when the hop accepted but no result came back.
 */
void dht__route_on_failure(dht_node *node, dht__pending *p, int code) {
  bool forced_hop = p->origin == DHT__ORIGIN_JOIN ||
                    p->origin == DHT__ORIGIN_MERGE;

  if (code == DHT_ERR_UNAVAILABLE && !forced_hop &&
      p->hops_tried + 1 < node->set.route_attempts) {
    p->hops_tried++;
    node->counters.forward_retries++;
    keepalive_upstream(node, p);
    route_pending(node, p, DHT__NO_PEER);
    return;
  }
  finish_error(node, p, code);
}

/* ---- hand-off ---------------------------------------------------------------- */

/*
 * Sends the next batch of records this node holds but should not: while in
 * the ring, the keys outside the ranges it owns or replicates go to the
 * farthest predecessor whose range it replicates (which passes on what is
 * not its own either); while leaving, every key goes to its successor. One
 * batch is in flight at a time; the next goes when the receiver has
 * answered OK, and the sent records are deleted here only then.
 */
void dht__handoff_pump(dht_node *node) {
  dht__batch batch;
  dht__pending *p;
  dht_id from, to;
  int32_t target;
  int rv;

  if (node->handoff_busy) {
    return;
  }
  if (node->state == DHT_NODE_LEAVING && node->n_succs == 0) {
    dht__leave_step(node); /* nobody to take the keys: they stay on disk */
    return;
  }
  if (node->state == DHT_NODE_LEAVING) {
    target = node->succs[0];
    from = node->id;
    to = node->id; /* the whole ring */
  } else if (node->state == DHT_NODE_JOINED && node->n_succs > 0 &&
             node->n_preds >= node->set.replicas) {
    target = node->preds[node->set.replicas - 1];
    from = node->id;
    to = node->peers[target].id; /* not in (to, self] */
  } else {
    return;
  }
  dht__batch_init(&batch, node);
  rv = dht_store_scan(node->store, &from, &to, dht__batch_collect, &batch);
  if (rv != 0 || batch.err != 0 || batch.n == 0) {
    if (rv != 0) {
      node->counters.store_errors++;
    }
    dht_buf_free(&batch.buf);
    if (batch.n == 0 && rv == 0 && node->state == DHT_NODE_LEAVING) {
      dht__leave_step(node);
    }
    return;
  }
  /* The records are deleted here once the receiver has them. */
  p = dht__batch_send(node, &batch, DHT__PEND_HANDOFF, target,
                      DHT_MSG_HANDOFF);
  if (p == NULL) {
    return; /* retried at the next stabilize round */
  }
  node->handoff_busy = true;
  dht__log(node, DHT_LOG_DEBUG, "handing %zu keys to %s", batch.n,
           node->peers[target].addr);
}

void dht__handoff_on_done(dht_node *node, dht__pending *p, bool ok) {
  size_t off = 0, n = 0;
  dht_id key_id;
  dht_kv kv, now;
  const uint8_t *rec;
  size_t rec_len;

  if (ok) {
    while (off < p->keys.len) {
      off = dht__batch_next(&p->keys, off, &key_id, &kv);
      /* A key that is ours again meanwhile (the neighbourhood changed back)
       * stays, and so does one rewritten since it was sent. */
      if ((node->state == DHT_NODE_LEAVING ||
           !dht__holds_range(node, &key_id)) &&
          dht_store_get(node->store, &key_id, kv.key.p, kv.key.len, &rec,
                        &rec_len) == 0) {
        dht_record_parse(rec, rec_len, &now);
        if (dht_version_cmp(&now.version, &kv.version) == 0) {
          dht_store_remove(node->store, &key_id, kv.key.p, kv.key.len);
        }
      }
      n++;
    }
    node->counters.handoff_keys_out += n;
  }
  p->keys.len = 0;
  dht__pending_free(node, p);
  node->handoff_busy = false;
  if (ok || node->state == DHT_NODE_LEAVING) {
    dht__handoff_pump(node);
  }
}

void dht__on_handoff(dht_node *node, uint64_t conn, const dht_msg *msg) {
  dht_msg ok;
  size_t i;
  bool changed;
  int rv = 0;

  for (i = 0; i < msg->n_items && rv == 0; i++) {
    rv = dht__merge_item(node, &msg->items[i], &changed);
  }
  if (rv != 0) {
    dht__reply_error(node, conn, msg->rid, DHT_ERR_STORE);
    return;
  }
  node->counters.handoff_keys_in += msg->n_items;
  memset(&ok, 0, sizeof(ok));
  ok.type = DHT_MSG_OK;
  ok.rid = msg->rid;
  dht__reply(node, conn, &ok);
  /* Keys that are not ours move on backwards (see dht__handoff_pump). */
  dht__handoff_pump(node);
}
