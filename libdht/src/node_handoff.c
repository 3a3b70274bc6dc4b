/*
 * node_handoff.c: keys on the move (node_handoff.h). A node that holds
 * records outside the ranges it owns or replicates (its neighbourhood
 * changed: a node joined before it, or it took over a range and then
 * gave it back) sends them to where they belong; a node leaving gracefully
 * sends all of its records to its successor. The records leave this node's
 * store only once the receiver has answered OK, and only if they were not
 * rewritten meanwhile.
 *
 * A run of hand-off begins when the pump finds records to move: it counts
 * them (and their bytes) once, so that STATS and the metrics can show what
 * is left, and works the count down as receivers take batches. A run that
 * takes no batch for HANDOFF_STALL_MS says why in the log, and again every
 * HANDOFF_STALL_LOG_MS while it stays stuck.
 */
#include <stdio.h>
#include <string.h>

#include "node_handoff.h"

#define HANDOFF_STALL_MS 10000u
#define HANDOFF_STALL_LOG_MS 30000u

static const dht__pending_ops handoff_ops;

/* Counts the records of (from, to] and their key and record bytes. */
typedef struct handoff_count {
  uint64_t records, bytes;
} handoff_count;

static int count_visit(void *ud, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t *rec, size_t rec_len) {
  handoff_count *c = ud;

  (void)key_id;
  (void)key;
  (void)rec;
  c->records++;
  c->bytes += key_len + rec_len;
  return 0;
}

/* A run begins: counts what it has to move, (from, to]. */
static void run_begin(dht_node *node, const dht_id *from, const dht_id *to) {
  dht__handoff *h = &node->handoff;
  handoff_count c = {0, 0};

  if (dht_store_scan(node->store, from, to, count_visit, &c) != 0) {
    node->counters.store_errors++;
  }
  h->todo_records = c.records;
  h->todo_bytes = c.bytes;
  h->run_started_ms = node->now_ms;
  h->progress_ms = node->now_ms;
  h->done_bytes = 0;
  h->stall_logged_ms = 0;
  h->why[0] = '\0';
}

static void run_end(dht_node *node) {
  node->handoff.todo_records = 0;
  node->handoff.todo_bytes = 0;
}

/* Logs, now and then, a run that has moved nothing for a while, and why. */
static void stall_watch(dht_node *node) {
  dht__handoff *h = &node->handoff;
  uint64_t idle = node->now_ms - h->progress_ms;

  if (h->todo_records == 0 || idle < HANDOFF_STALL_MS ||
      (h->stall_logged_ms != 0 &&
       node->now_ms - h->stall_logged_ms < HANDOFF_STALL_LOG_MS)) {
    return;
  }
  h->stall_logged_ms = node->now_ms;
  dht__log(node, DHT_LOG_WARN,
           "hand-off stalled: %llu records (%llu bytes) still to hand on, "
           "none taken for %llu s: %s",
           (unsigned long long)h->todo_records,
           (unsigned long long)h->todo_bytes,
           (unsigned long long)(idle / 1000),
           h->why[0] != '\0' ? h->why
           : h->busy          ? "a batch is waiting for its receiver's answer"
                              : "no node to take them");
}

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

  stall_watch(node);
  if (node->handoff.busy) {
    return;
  }
  if (node->state == DHT_NODE_LEAVING && node->n_succs == 0) {
    /* nobody to take the keys: they stay on disk */
    run_end(node);
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
    run_end(node); /* not in the ring, or it holds every range it has */
    return;
  }
  dht__batch_init(&batch, node);
  rv = dht_store_scan(node->store, &from, &to, dht__batch_collect, &batch);
  if (rv != 0 || batch.err != 0 || batch.n == 0) {
    if (rv != 0) {
      node->counters.store_errors++;
      snprintf(node->handoff.why, sizeof(node->handoff.why),
               "the store could not be read (%s)", dht_strerror(rv));
    } else if (batch.err != 0) {
      snprintf(node->handoff.why, sizeof(node->handoff.why),
               "out of memory for a batch");
    } else {
      run_end(node); /* nothing left */
    }
    dht_buf_free(&batch.buf);
    /* Nothing left, or nothing more that can be read: a leaving node goes
     * on to tell its neighbours. */
    if ((batch.n == 0 || rv != 0) && node->state == DHT_NODE_LEAVING) {
      node->hooks.handoff_drained(node);
    }
    return;
  }
  if (node->handoff.todo_records == 0) {
    run_begin(node, &from, &to);
  }
  /* The records are deleted here once the receiver has them. */
  p = dht__batch_send(node, &batch, &handoff_ops, target, DHT_MSG_HANDOFF);
  if (p == NULL) {
    snprintf(node->handoff.why, sizeof(node->handoff.why),
             "a batch for %.64s could not be queued",
             node->peers[target].addr);
    return; /* retried at the next stabilize round */
  }
  node->handoff.busy = true;
  dht__log(node, DHT_LOG_DEBUG, "handing %zu keys to %s", batch.n,
           node->peers[target].addr);
}

static void handoff_done(dht_node *node, dht__pending *p, bool ok) {
  int32_t target = p->peer;
  dht__handoff *h = &node->handoff;
  size_t off = 0, n = 0, bytes;
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
    bytes = dht__batch_payload(&p->kept, n);
    h->todo_records -= n < h->todo_records ? n : h->todo_records;
    h->todo_bytes -= bytes < h->todo_bytes ? bytes : h->todo_bytes;
    h->done_bytes += bytes;
    h->progress_ms = node->now_ms;
    h->stall_logged_ms = 0;
    h->why[0] = '\0';
  }
  dht__pending_free(node, p);
  h->busy = false;
  /* The next batch goes at once after a success, and while leaving when
   * the receiver is out of the successor list (dead, or leaving too): the
   * next successor, or none, which ends the leave. A receiver that still
   * refuses is asked again at the next stabilize round, not in a loop. */
  if (ok || (node->state == DHT_NODE_LEAVING &&
             (node->n_succs == 0 || node->succs[0] != target))) {
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
  if (msg->type == DHT_MSG_ERROR) {
    const dht_bytes *text = &msg->error_msg;
    snprintf(node->handoff.why, sizeof(node->handoff.why),
             "%.64s refused the last batch: %s (%.*s)",
             node->peers[p->peer].addr, dht_errname(msg->error_code),
             (int)(text->len < 48 ? text->len : 48),
             text->len > 0 ? (const char *)text->p : "");
    /* A successor out of the ring (leaving too, as when a whole ring
     * stops) will take nothing from a leaving node: it is dropped as one
     * that left, and the next successor is asked. */
    if (node->state == DHT_NODE_LEAVING &&
        msg->error_code == DHT_ERR_STATE) {
      dht__declare_dead(node, p->peer, false);
    }
  }
  handoff_done(node, p, msg->type == DHT_MSG_OK);
}

static void handoff_on_failure(dht_node *node, dht__pending *p) {
  snprintf(node->handoff.why, sizeof(node->handoff.why),
           "%.64s did not take the last batch: no answer, declared dead",
           node->peers[p->peer].addr);
  dht__declare_dead(node, p->peer, true);
  handoff_done(node, p, false);
}

/* The receiver never answers a HANDOFF with ACCEPTED; one would be
 * ignored. */
static const dht__pending_ops handoff_ops = {"handoff", false, handoff_on_reply,
                                             handoff_on_failure};
