/*
 * node_handoff.c: keys on the move (node_handoff.h). A node that holds
 * records outside the ranges it owns or replicates (its neighbourhood
 * changed: a node joined before it, or it took over a range and then
 * gave it back) sends them to where they belong; a node leaving gracefully
 * sends all of its records to its successor. The records leave this node's
 * store only once the receiver has answered OK, and only if they were not
 * rewritten meanwhile.
 */
#include <string.h>

#include "node_handoff.h"

static const dht__pending_ops handoff_ops;

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
    /* nobody to take the keys: they stay on disk */
    node->hooks.handoff_drained(node);
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
    /* Nothing left, or nothing more that can be read: a leaving node goes
     * on to tell its neighbours. */
    if ((batch.n == 0 || rv != 0) && node->state == DHT_NODE_LEAVING) {
      node->hooks.handoff_drained(node);
    }
    return;
  }
  /* The records are deleted here once the receiver has them. */
  p = dht__batch_send(node, &batch, &handoff_ops, target, DHT_MSG_HANDOFF);
  if (p == NULL) {
    return; /* retried at the next stabilize round */
  }
  node->handoff_busy = true;
  dht__log(node, DHT_LOG_DEBUG, "handing %zu keys to %s", batch.n,
           node->peers[target].addr);
}

static void handoff_done(dht_node *node, dht__pending *p, bool ok) {
  size_t off = 0, n = 0;
  dht_id key_id;
  dht_kv kv, now;
  const uint8_t *rec;
  size_t rec_len;

  if (ok) {
    while (off < p->kept.len) {
      off = dht__batch_next(&p->kept, off, &key_id, &kv);
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
  dht__pending_free(node, p);
  node->handoff_busy = false;
  if (ok || node->state == DHT_NODE_LEAVING) {
    dht__handoff_pump(node);
  }
}

void dht__on_handoff(dht_node *node, const dht__request *in) {
  if (dht__merge_and_ack(node, in->conn, in->msg->rid, in->msg) < 0) {
    return; /* refused: the sender keeps the keys */
  }
  node->counters.handoff_keys_in += in->msg->n_items;
  /* Keys that are not ours move on backwards (see dht__handoff_pump). */
  dht__handoff_pump(node);
}

static void handoff_on_reply(dht_node *node, dht__pending *p,
                             const dht_msg *msg) {
  handoff_done(node, p, msg->type == DHT_MSG_OK);
}

static void handoff_on_failure(dht_node *node, dht__pending *p) {
  dht__declare_dead(node, p->peer, true);
  handoff_done(node, p, false);
}

/* The receiver never answers a HANDOFF with ACCEPTED; one would be
 * ignored. */
static const dht__pending_ops handoff_ops = {"handoff", false, handoff_on_reply,
                                             handoff_on_failure};
