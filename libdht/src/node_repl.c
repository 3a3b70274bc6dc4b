/*
 * node_repl.c: replication. Every key lives on its owner and on the owner's
 * next replicas - 1 successors; this file keeps those copies right.
 *
 * Versions. A stored record is the value behind a small header: a version
 * (a hybrid logical clock stamp and the id of the owner that took the
 * write) and a tombstone flag. Copies reconcile by last writer wins on the
 * version, so records may arrive in any order, twice, or late. A delete
 * writes a tombstone, which anti-entropy carries like a value and which is
 * forgotten tombstone_grace_ms after it was written; a replica that was away
 * longer than that could bring the value back (docs/DESIGN.md).
 *
 * Writes. The owner stamps the write, stores it, sends it to each replica
 * position (its first replicas - 1 successors) and answers OK only once
 * every one of them that is alive has answered, and a replica answers only
 * once the record is durable (dhtd writes replies after its group commit).
 * A replica found dead is replaced by the next successor, so an OK means
 * the record is on every live replica of the moment, and at least on two
 * nodes unless the ring has only ever had one (replica_needed).
 *
 * Reads. The owner answers from its store. While it has not yet exchanged
 * digests with every replica since its range last changed (it just joined,
 * restarted, or took over a dead predecessor's range), it first fetches the
 * key from each of them and keeps the newest record: a stale owner never
 * answers alone, nor trusts one replica that may be as new to the range as
 * it is (two neighbours restarted together). A replica answers a GET sent
 * to it as the last step when it holds the key, which is how a read gets
 * around a dead owner at once.
 *
 * Repair (anti-entropy). Every sync_interval_ms, and soon after the
 * neighbourhood changes, the owner splits its range into sync_buckets
 * buckets, digests each and sends the digests to each replica. The replica
 * answers which buckets differ and its own records in them; the owner keeps
 * the newer of each and pushes its records of those buckets back, in
 * batches, at most repair_bytes_per_s. An in-sync pair exchanges one digest
 * message each way. Keys a node holds outside the ranges it owns or
 * replicates are handed back to where they belong (node_handoff.c).
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "node_repl.h"

/* Stored record: magic, flags, hlc (8 bytes, big-endian), writer id, value. */
#define RECORD_MAGIC 0xd7
#define RECORD_TOMBSTONE 0x01
#define RECORD_HEAD_LEN (2 + 8 + DHT_ID_LEN)
/* Expired tombstones collected per digest pass; the rest go next round. */
#define GC_PER_PASS 1024
/* The first anti-entropy round after a change waits this long, so that a
 * burst of changes (a join moves pred and succs) costs one round. */
#define SYNC_SOON_MS 50
/* SCAN replies carry at most this many records. */
#define SCAN_LIMIT_MAX 4096

/* The kinds of request this layer sends; defined with their handlers. */
_Static_assert(DHT_SUCC_LIST_MAX <= 32,
               "syncs_waiting has a bit for each session");

static const dht__pending_ops replicate_ops, consult_ops, sync_ops, push_ops;

/* ---- versions and records ----------------------------------------------------- */

/* The most a node lets its neighbours' clocks stand in for its own. */
#define CLOCK_TRUST_MAX_MS (24u * 3600 * 1000)

/* The time stamps are judged by: this node's wall clock, or its
 * neighbours' when both of them agree that it is behind (dht__repl_note_
 * clock), so that a node with a slow clock says so and goes on taking the
 * ring's writes rather than refusing them all. A fast neighbour alone
 * cannot move it. */
static uint64_t ring_time_ms(const dht_node *node) {
  int64_t behind = node->repl.clock_offset_ms;

  if (behind <= 0) {
    return dht__wall_ms(node);
  }
  return dht__wall_ms(node) +
         (behind < CLOCK_TRUST_MAX_MS ? (uint64_t)behind : CLOCK_TRUST_MAX_MS);
}

/* The greatest stamp this node accepts now: max_clock_skew_ms ahead of the
 * ring's time. A stamp is (ms << 16 | counter), and wall clocks are far
 * below 2^47 ms, so none of this can overflow. */
static uint64_t stamp_ceiling(const dht_node *node) {
  return (ring_time_ms(node) + node->set.max_clock_skew_ms) << 16 | 0xffffu;
}

/* How far stamp is ahead of the ring's time, in ms (0 if it is not). */
static uint64_t stamp_ahead_ms(const dht_node *node, uint64_t stamp) {
  uint64_t pt = ring_time_ms(node);

  return (stamp >> 16) > pt ? (stamp >> 16) - pt : 0;
}

/* A stamp newer than every stamp this node has issued or accepted. The
 * hybrid clock never runs more than the skew bound ahead of the ring's time
 * (hlc_observe refuses beyond it), so the counter cannot run out. */
static uint64_t hlc_tick(dht_node *node) {
  uint64_t pt = ring_time_ms(node) << 16;

  node->repl.hlc = pt > node->repl.hlc ? pt : node->repl.hlc + 1;
  return node->repl.hlc;
}

/* Takes stamp into the hybrid clock, or refuses it (counted) when it is
 * further ahead of this node's clock than max_clock_skew_ms: one fast
 * clock must not drag every node's stamps forward, nor lock a key with a
 * stamp nobody can beat. Returns 0 or DHT_ERR_CLOCK_SKEW. */
static int hlc_observe(dht_node *node, uint64_t stamp) {
  if (stamp > stamp_ceiling(node)) {
    node->counters.clock_skew_refused++;
    return DHT_ERR_CLOCK_SKEW;
  }
  if (stamp > node->repl.hlc) {
    node->repl.hlc = stamp;
  }
  return 0;
}

/* Takes a copy's stamp into the hybrid clock, as far as the skew bound
 * lets it go. A copy from another node is never refused for its stamp: its
 * owner judged it when the write came in, and a holder that refused it
 * would only be one copy short, not any safer. */
static void hlc_take(dht_node *node, uint64_t stamp) {
  uint64_t ceiling = stamp_ceiling(node);

  if (stamp > ceiling) {
    stamp = ceiling;
  }
  if (stamp > node->repl.hlc) {
    node->repl.hlc = stamp;
  }
}

/* A tombstone may be forgotten once its grace has passed by the stamper's
 * clock as well as this node's: the stamp plus the grace plus the skew
 * bound. A node whose clock runs ahead of its neighbours' by more than the
 * bound collects nothing, since it cannot tell how far ahead it is. */
static bool tombstone_expired(const dht_node *node, uint64_t stamp) {
  if (node->repl.clock_offset_ms < -(int64_t)node->set.max_clock_skew_ms) {
    return false;
  }
  return (stamp >> 16) + node->set.tombstone_grace_ms +
             node->set.max_clock_skew_ms <
         dht__wall_ms(node);
}

/* Values stored before versions existed (no header) read as version 0. */
void dht_record_parse(const uint8_t *rec, size_t rec_len, dht_kv *kv) {
  uint32_t i;

  kv->has_version = true;
  if (rec_len < RECORD_HEAD_LEN || rec[0] != RECORD_MAGIC) {
    memset(&kv->version, 0, sizeof(kv->version));
    kv->tombstone = false;
    kv->value.p = rec;
    kv->value.len = rec_len;
    return;
  }
  kv->tombstone = (rec[1] & RECORD_TOMBSTONE) != 0;
  kv->version.hlc = 0;
  for (i = 0; i < 8; i++) {
    kv->version.hlc = kv->version.hlc << 8 | rec[2 + i];
  }
  memcpy(kv->version.writer.b, rec + 10, DHT_ID_LEN);
  kv->value.p = rec + RECORD_HEAD_LEN;
  kv->value.len = rec_len - RECORD_HEAD_LEN;
}

/* Replaces out's contents with the stored form of kv. */
static int record_build(dht_buf *out, const dht_kv *kv) {
  uint8_t head[RECORD_HEAD_LEN];
  int i;

  head[0] = RECORD_MAGIC;
  head[1] = kv->tombstone ? RECORD_TOMBSTONE : 0;
  for (i = 0; i < 8; i++) {
    head[2 + i] = (uint8_t)(kv->version.hlc >> (56 - 8 * i));
  }
  memcpy(head + 10, kv->version.writer.b, DHT_ID_LEN);
  out->len = 0;
  if (dht_buf_reserve(out, sizeof(head) + kv->value.len) != 0) {
    return DHT_ERR_NOMEM;
  }
  dht_buf_append(out, head, sizeof(head));
  dht_buf_append(out, kv->value.p, kv->value.len);
  return 0;
}

/* Looks key up. Returns 0 with *kv filled (pointing into the store, valid
 * until its next call), DHT_ERR_NOT_FOUND or DHT_ERR_STORE. */
static int record_get(dht_node *node, const dht_id *key_id, const uint8_t *key,
                      size_t key_len, dht_kv *kv) {
  const uint8_t *rec;
  size_t rec_len;
  int rv;

  rv = dht_store_get(node->store, key_id, key, key_len, &rec, &rec_len);
  if (rv != 0) {
    return rv;
  }
  kv->key.p = key;
  kv->key.len = key_len;
  dht_record_parse(rec, rec_len, kv);
  return 0;
}

/* True while the store failed its last commit and writes wait for
 * store_retry_ms before they are tried again. */
static bool store_refusing(const dht_node *node) {
  return node->repl.store_error != 0 &&
         node->now_ms < node->repl.store_retry_at_ms;
}

/* A write the store refused (or a commit that failed): writes are refused
 * for store_retry_ms, with the store's own words. */
static void store_failed(dht_node *node, int code) {
  bool first = node->repl.store_error == 0;

  node->repl.store_error = code;
  node->repl.store_retry_at_ms = node->now_ms + node->set.store_retry_ms;
  snprintf(node->repl.store_errmsg, sizeof(node->repl.store_errmsg), "%s",
           dht_store_errmsg(node->store));
  if (first) {
    dht__log(node, DHT_LOG_ERROR,
             "store: %s: %s; refusing writes, retrying every %u ms",
             dht_strerror(code), node->repl.store_errmsg,
             node->set.store_retry_ms);
  }
}

/* The one line a refused writer reads: "node ADDR: disk full: what the
 * store said". */
static void store_error_text(const dht_node *node, char *buf, size_t len) {
  snprintf(buf, len, "node %s: %s: %s", node->addr,
           node->repl.store_error == DHT_ERR_DISK_FULL ? "disk full"
                                                       : "storage failed",
           node->repl.store_errmsg);
}

/* Writes kv's record under key_id. Returns 0 or the store's error, after
 * which writes are refused for a while. */
static int record_put(dht_node *node, const dht_id *key_id, const dht_kv *kv) {
  dht_buf rec;
  int rv;

  dht_buf_init(&rec);
  rv = record_build(&rec, kv);
  if (rv == 0) {
    rv = dht__fault(node, DHT_FAULT_STORE_PUT)
             ? DHT_ERR_STORE
             : dht_store_put(node->store, key_id, kv->key.p, kv->key.len,
                             rec.data, rec.len);
    node->repl.wrote = true;
    if (rv != 0) {
      node->counters.store_errors++;
      store_failed(node, rv == DHT_ERR_DISK_FULL ? rv : DHT_ERR_STORE);
    }
  }
  dht_buf_free(&rec);
  return rv;
}

/*
 * Stores kv unless this node already has the key at the same or a newer
 * version. A tombstone past its grace period is applied (an older value
 * goes) but not kept. *changed says whether the store changed. Returns 0,
 * DHT_ERR_DISK_FULL or DHT_ERR_STORE (the store refuses writes),
 * DHT_ERR_NOMEM.
 */
static int merge_item(dht_node *node, const dht_kv *kv, bool *changed) {
  dht_kv in = *kv, have;
  dht_id key_id;
  int rv;

  *changed = false;
  if (!in.has_version) {
    memset(&in.version, 0, sizeof(in.version));
    in.tombstone = false;
  }
  hlc_take(node, in.version.hlc);
  dht_id_hash(&key_id, in.key.p, in.key.len);
  rv = record_get(node, &key_id, in.key.p, in.key.len, &have);
  if (rv == 0 && dht_version_cmp(&have.version, &in.version) >= 0) {
    /* Held already: nothing to write, so nothing to refuse while the store
     * refuses writes (a consult can still count this record as kept). */
    return 0;
  }
  if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
    node->counters.store_errors++;
    return rv;
  }
  if (store_refusing(node)) {
    node->counters.writes_refused++;
    return node->repl.store_error;
  }
  if (in.tombstone && tombstone_expired(node, in.version.hlc)) {
    /* Too old to keep, but not too old to delete what it deletes: a
     * replica that kept the older value would bring it back, so a remove
     * that failed fails the merge (the sender must not hear OK). */
    if (rv == 0 && !have.tombstone) {
      rv = dht_store_remove(node->store, &key_id, in.key.p, in.key.len);
      node->repl.wrote = true;
      if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
        node->counters.store_errors++;
        store_failed(node, DHT_ERR_STORE);
        return DHT_ERR_STORE;
      }
      *changed = rv == 0;
    }
    return 0;
  }
  rv = record_put(node, &key_id, &in);
  *changed = rv == 0;
  return rv;
}

/* Merges every item of msg; returns how many changed the store, or a
 * negative error when the store failed (the rest are not tried). */
static long merge_items(dht_node *node, const dht_msg *msg) {
  long n = 0;
  size_t i;
  bool changed;
  int rv;

  for (i = 0; i < msg->n_items; i++) {
    rv = merge_item(node, &msg->items[i], &changed);
    if (rv != 0) {
      return rv;
    }
    n += changed;
  }
  return n;
}

/* ---- who holds what ------------------------------------------------------------- */

/* A write sent here by an owner was refused, or its group commit failed:
 * the owner may have acknowledged it all the same, on its other replicas'
 * word (OK means durable on every live holder that took it), so this
 * node's copies are no longer enough to answer a read alone. */
static void missed_note(dht_node *node) {
  node->repl.missed = true;
  node->repl.n_insync = 0;
  dht__lost_held_forget(node);
}

/* The owner of (from, to] found this node's records of it the same as its
 * own: what this node missed there is back. */
static void insync_note(dht_node *node, const dht_id *from, const dht_id *to) {
  uint32_t i;

  for (i = 0; i < node->repl.n_insync; i++) {
    if (dht_id_eq(&node->repl.insync[i].to, to)) {
      break;
    }
  }
  if (i == DHT_SUCC_LIST_MAX) { /* full: the oldest goes */
    memmove(&node->repl.insync[0], &node->repl.insync[1],
            (DHT_SUCC_LIST_MAX - 1) * sizeof(node->repl.insync[0]));
    i = DHT_SUCC_LIST_MAX - 1;
  } else if (i == node->repl.n_insync) {
    node->repl.n_insync++;
  }
  node->repl.insync[i].from = *from;
  node->repl.insync[i].to = *to;
}

/* True unless this node missed a replicated write since the owner of
 * key_id's range last found it in sync. */
static bool replica_complete(const dht_node *node, const dht_id *key_id) {
  uint32_t i;

  if (!node->repl.missed) {
    return true;
  }
  for (i = 0; i < node->repl.n_insync; i++) {
    if (dht_id_in_oc(key_id, &node->repl.insync[i].from,
                     &node->repl.insync[i].to)) {
      return true;
    }
  }
  return false;
}

/* The farthest predecessor whose range this node replicates, of the
 * replicas - 1 it should; DHT__NO_PEER when it knows none. */
static int32_t farthest_replicated_pred(const dht_node *node) {
  uint32_t n = node->n_preds;

  if (n > node->set.replicas) {
    n = node->set.replicas;
  }
  return n > 0 ? node->preds[n - 1] : DHT__NO_PEER;
}

/* True when key_id lies in the ranges this node owns or replicates,
 * (preds[replicas - 1], self]. Until it knows that many predecessors (a
 * ring of at most replicas nodes, or a list still being learnt), it keeps
 * everything. */
bool dht__holds_range(const dht_node *node, const dht_id *key_id) {
  uint32_t r = node->set.replicas;

  if (node->n_succs == 0 || node->n_preds < r) {
    return true;
  }
  return dht_id_in_oc(key_id, &node->peers[node->preds[r - 1]].id, &node->id);
}

/* Replica positions a write goes to: the first replicas - 1 successors. */
static uint32_t replica_positions(const dht_node *node) {
  uint32_t n = node->set.replicas - 1;

  return n < node->n_succs ? n : node->n_succs;
}

/*
 * A GET sent here as the last step for a key this node does not own: the
 * sender's owner is dead, or its view is behind. Serve it when this node
 * replicates the key's range and holds a record of it, so the read needs
 * no detour through a failed owner; but not while it may lack a write
 * there that was acknowledged without it (it refused or lost it: seed 222
 * of `dht-sim crashes --nodes-max 48 --crashes 6` read put #8 from a
 * replica whose full disk had refused #9, just after #9's owner died), nor
 * while leaving, when it refuses REPLICATE.
 */
bool dht__may_serve_replica(dht_node *node, const dht_msg *req,
                            const dht_id *key_id) {
  int32_t far = farthest_replicated_pred(node);
  dht_kv kv;

  if (req->type != DHT_MSG_GET || !req->final || far == DHT__NO_PEER ||
      node->state != DHT_NODE_JOINED ||
      !dht_id_in_oc(key_id, &node->peers[far].id, &node->id) ||
      !replica_complete(node, key_id)) {
    return false;
  }
  return record_get(node, key_id, req->key.p, req->key.len, &kv) == 0;
}

/* ---- serving GET, PUT and DEL -------------------------------------------------- */

static void serve_get(dht_node *node, uint64_t conn, uint64_t rid,
                      const dht_msg *req, const dht_id *key_id) {
  char text[512];
  dht_msg out;
  dht_kv kv;
  int rv;

  rv = record_get(node, key_id, req->key.p, req->key.len, &kv);
  if (rv == DHT_ERR_NOT_FOUND &&
      dht__lost_explain(node, key_id, text, sizeof(text))) {
    /* No record, but every copy of its range may be gone: say so. A
     * tombstone held here answers as a value would: the newest write this
     * node knows (crashes --seed 797194977: an acknowledged delete read
     * back LOST). */
    dht__reply_refusal(node, conn, rid, DHT_ERR_LOST, text, NULL);
    return;
  }
  if (rv == 0 && kv.tombstone) {
    rv = DHT_ERR_NOT_FOUND;
  }
  if (rv != 0) {
    if (rv == DHT_ERR_NOT_FOUND) {
      node->counters.not_found++;
    } else {
      node->counters.store_errors++;
    }
    dht__reply_error(node, conn, rid, rv);
    return;
  }
  node->counters.gets++;
  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_VALUE;
  out.rid = rid;
  out.hops = req->hops;
  out.value = kv.value;
  dht__reply(node, conn, &out);
}

static dht__write *write_alloc(dht_node *node) {
  dht__write *w;
  uint32_t i;

  for (i = 0; i < node->repl.cap_writes; i++) {
    if (node->repl.writes[i].gen == 0) {
      break;
    }
  }
  if (i == node->repl.cap_writes) {
    uint32_t cap = node->repl.cap_writes ? node->repl.cap_writes * 2 : 16;
    dht__write *ws = realloc(node->repl.writes, (size_t)cap * sizeof(*ws));
    if (ws == NULL) {
      return NULL;
    }
    memset(ws + node->repl.cap_writes, 0,
           (size_t)(cap - node->repl.cap_writes) * sizeof(*ws));
    node->repl.writes = ws;
    node->repl.cap_writes = cap;
  }
  w = &node->repl.writes[i];
  w->gen = ++node->repl.write_gen;
  w->n_acked = 0;
  w->n_busy = 0;
  w->sends = 0;
  w->key.len = 0;
  w->record.len = 0;
  return w;
}

static bool id_listed(const dht_id *list, uint32_t n, const dht_id *id) {
  uint32_t i;

  for (i = 0; i < n; i++) {
    if (dht_id_eq(&list[i], id)) {
      return true;
    }
  }
  return false;
}

/* Whether id is one of the successors at a replica position. */
static bool at_replica_position(const dht_node *node, const dht_id *id) {
  uint32_t n = replica_positions(node), i;

  for (i = 0; i < n; i++) {
    if (dht_id_eq(&node->peers[node->succs[i]].id, id)) {
      return true;
    }
  }
  return false;
}

static void id_unlist(dht_id *list, uint32_t *n, const dht_id *id) {
  uint32_t i;

  for (i = 0; i < *n; i++) {
    if (dht_id_eq(&list[i], id)) {
      list[i] = list[--*n];
      return;
    }
  }
}

/* True when a record this node stored at epoch is not yet known durable:
 * the group commit that makes it so has not reported back. */
static bool stored_since_commit(const dht_node *node, uint64_t epoch) {
  return node->group_commit && epoch == node->repl.commit_epoch;
}

/* A write must reach a replica before it is acknowledged unless the node
 * keeps one copy, or has never had a successor (a ring of one by design).
 * A node left alone after it had successors is cut off or the last one
 * standing, and an OK on its disk alone would promise more than one disk
 * keeps: the write is refused UNAVAILABLE, and the caller retries. */
static bool replica_needed(const dht_node *node) {
  return node->set.replicas > 1 && node->had_succ;
}

static void write_finish(dht_node *node, dht__write *w) {
  if (w->n_acked > 0 ||
      (replica_positions(node) == 0 && !replica_needed(node))) {
    node->counters.writes_acked++;
    if (stored_since_commit(node, w->stored_epoch)) {
      dht__reply_ack(node, w->origin_conn, w->origin_rid, w->hops, w->answer);
    } else {
      dht__reply_written(node, w->origin_conn, w->origin_rid, w->hops,
                         w->answer);
    }
  } else {
    node->counters.writes_failed++;
    dht__reply_error(node, w->origin_conn, w->origin_rid,
                     DHT_ERR_UNAVAILABLE);
  }
  w->gen = 0;
}

/* Sends w to every replica position that neither has it nor is being asked,
 * and answers the writer once nobody is left to ask. A write sends at most
 * twice per position, so replacing dead replicas ends. */
static void write_fill(dht_node *node, dht__write *w) {
  uint32_t n = replica_positions(node), i;
  uint32_t sends_max = 2 * (node->set.replicas - 1);

  for (i = 0; i < n && w->sends < sends_max; i++) {
    int32_t peer = node->succs[i];
    const dht_id *id = &node->peers[peer].id;
    dht__pending *p;
    dht_msg msg;
    dht_kv item;

    if (id_listed(w->acked, w->n_acked, id) ||
        id_listed(w->busy, w->n_busy, id)) {
      continue;
    }
    p = dht__pending_new(node, &replicate_ops, peer);
    if (p == NULL) {
      break;
    }
    p->u.replicate.write = (uint32_t)(w - node->repl.writes);
    p->u.replicate.gen = w->gen;
    memset(&item, 0, sizeof(item));
    item.key.p = w->key.data;
    item.key.len = w->key.len;
    dht_record_parse(w->record.data, w->record.len, &item);
    memset(&msg, 0, sizeof(msg));
    msg.type = DHT_MSG_REPLICATE;
    msg.items = &item;
    msg.n_items = 1;
    if (dht__pending_send(node, p, &msg) != 0) {
      dht__pending_free(node, p);
      break;
    }
    w->sends++;
    w->busy[w->n_busy++] = *id;
  }
  if (w->n_busy == 0) {
    write_finish(node, w);
  }
}

/* Refuses a write stamped beyond the skew bound: the one line its writer
 * reads says by how much. */
static void refuse_skewed(dht_node *node, uint64_t conn, uint64_t rid,
                          uint64_t stamp) {
  char text[DHT_ADDR_LEN_MAX + 128];

  snprintf(text, sizeof(text),
           "node %s: clock skew: the write is stamped %llu ms ahead of this "
           "node's clock (the limit is %u ms)",
           node->addr, (unsigned long long)stamp_ahead_ms(node, stamp),
           node->set.max_clock_skew_ms);
  dht__reply_refusal(node, conn, rid, DHT_ERR_CLOCK_SKEW, text, NULL);
}

/*
 * Checks a write of version ver against the record this node holds (rv: 0
 * and *have, or DHT_ERR_NOT_FOUND) and answers it when it must not be
 * applied: a write older than the one stored (STALE, naming the stored
 * version, so that a live writer can re-stamp newer; a late copy of an old
 * write just dies here). An equal version is the same write retried, and
 * goes on. A DEL is judged like a PUT: one that finds no value still
 * stores its tombstone (serve_write). Returns true when it answered.
 */
static bool write_refused(dht_node *node, uint64_t conn, uint64_t rid, int rv,
                          const dht_kv *have, const dht_version *ver) {
  char text[DHT_ADDR_LEN_MAX + 64];
  int cmp = rv == 0 ? dht_version_cmp(ver, &have->version) : 1;

  if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
    node->counters.store_errors++;
    dht__reply_error(node, conn, rid, rv);
    return true;
  }
  if (cmp < 0) {
    node->counters.stale_writes++;
    snprintf(text, sizeof(text), "node %s: %s", node->addr,
             dht_strerror(DHT_ERR_STALE));
    dht__reply_refusal(node, conn, rid, DHT_ERR_STALE, text, &have->version);
    return true;
  }
  return false;
}

/*
 * Stores and replicates a PUT (or, with tombstone, a DEL) at the version
 * its writer gave it. A write without one (from a client that does not
 * stamp its writes) is stamped here, newer than the record it replaces even
 * when this node's clock is behind the one that stamped that (a clock
 * stepped back, a data directory moved to another host); such a write has
 * no defence against its own late copies (docs/DESIGN.md).
 *
 * A DEL that finds no value here (no record, or an older tombstone) is
 * stored and replicated all the same, and answered NOT_FOUND only when an
 * OK would be: this node may be the owner on one side of a partition,
 * while the value acknowledged before the DEL was issued sits on the other
 * side, and answered without a tombstone the DEL was lost at the heal
 * (`scripts/churn --cut-every`: 1 to 8 keys a minute read back deleted
 * values after the ring was quiet).
 */
static void serve_write(dht_node *node, uint64_t conn, uint64_t rid,
                        const dht_msg *req, const dht_id *key_id,
                        bool tombstone) {
  char text[DHT_ADDR_LEN_MAX + 200];
  dht_version ver = req->ver;
  dht__write *w;
  dht_buf rec;
  dht_kv kv, have;
  bool same;
  int rv, answer;

  if (store_refusing(node)) {
    node->counters.writes_refused++;
    store_error_text(node, text, sizeof(text));
    dht__reply_refusal(node, conn, rid, node->repl.store_error, text, NULL);
    return;
  }
  if (req->has_ver && hlc_observe(node, ver.hlc) != 0) {
    refuse_skewed(node, conn, rid, ver.hlc);
    return;
  }
  if (replica_positions(node) == 0 && replica_needed(node)) {
    node->counters.writes_failed++;
    snprintf(text, sizeof(text), "node %s: no replica reachable", node->addr);
    dht__reply_refusal(node, conn, rid, DHT_ERR_UNAVAILABLE, text, NULL);
    return;
  }
  rv = record_get(node, key_id, req->key.p, req->key.len, &have);
  if (!req->has_ver) {
    ver.hlc = hlc_tick(node);
    ver.writer = node->id;
    if (rv == 0 && ver.hlc <= have.version.hlc &&
        have.version.hlc < UINT64_MAX) {
      /* Newer than the stored record, wherever its stamp came from, but
       * without moving this node's clock past the skew bound. */
      if (have.version.hlc <= stamp_ceiling(node)) {
        (void)hlc_observe(node, have.version.hlc);
      }
      ver.hlc = have.version.hlc + 1;
    }
  }
  if (write_refused(node, conn, rid, rv, &have, &ver)) {
    return;
  }
  same = rv == 0 && dht_version_cmp(&ver, &have.version) == 0;
  /* The same write again (a retry) took effect already: it hears OK. */
  answer = tombstone && !same && (rv != 0 || have.tombstone)
               ? DHT_ERR_NOT_FOUND
               : 0;
  memset(&kv, 0, sizeof(kv));
  kv.key = req->key;
  kv.value = req->value;
  kv.has_version = true;
  kv.tombstone = tombstone;
  kv.version = ver;
  dht_buf_init(&rec);
  rv = record_build(&rec, &kv);
  if (rv == 0 && !same) { /* the same write again: stored already */
    rv = record_put(node, key_id, &kv);
  }
  if (rv != 0) {
    dht_buf_free(&rec);
    if (rv == DHT_ERR_NOMEM) {
      dht__reply_error(node, conn, rid, rv);
    } else {
      store_error_text(node, text, sizeof(text));
      dht__reply_refusal(node, conn, rid, node->repl.store_error, text, NULL);
    }
    return;
  }
  if (tombstone) {
    node->counters.dels++;
    node->counters.not_found += answer != 0;
  } else {
    node->counters.puts++;
  }
  if (replica_positions(node) == 0) {
    dht_buf_free(&rec);
    node->counters.writes_acked++;
    dht__reply_ack(node, conn, rid, req->hops, answer);
    return;
  }
  w = write_alloc(node);
  if (w == NULL || dht_buf_append(&w->key, req->key.p, req->key.len) != 0) {
    if (w != NULL) {
      w->gen = 0;
    }
    dht_buf_free(&rec);
    dht__reply_error(node, conn, rid, DHT_ERR_NOMEM);
    return;
  }
  dht_buf_free(&w->record);
  w->record = rec;
  w->key_id = *key_id;
  w->origin_conn = conn;
  w->origin_rid = rid;
  w->hops = req->hops;
  w->stored_epoch = node->repl.commit_epoch;
  w->answer = answer;
  dht__reply_accepted(node, conn, rid);
  write_fill(node, w);
}

/* Asks each replica position in turn for its record of the key before
 * serving req, whose frame body is kept. Returns 0, or an error when
 * nothing was sent. */
static int consult(dht_node *node, uint64_t conn, uint64_t rid,
                   const dht_msg *req, const uint8_t *body, size_t len) {
  dht__pending *p;
  dht_msg fetch;

  p = dht__pending_new(node, &consult_ops, node->succs[0]);
  if (p == NULL) {
    return DHT_ERR_FULL;
  }
  p->u.consult.origin_conn = conn;
  p->u.consult.origin_rid = rid;
  p->u.consult.commits_failed = node->repl.commits_failed;
  p->u.consult.unsure = false;
  memset(&fetch, 0, sizeof(fetch));
  fetch.type = DHT_MSG_FETCH;
  fetch.key = req->key;
  if (dht_buf_append(&p->kept, body, len) != 0 ||
      dht__pending_send(node, p, &fetch) != 0) {
    dht__pending_free(node, p);
    return DHT_ERR_NOMEM;
  }
  node->counters.consults++;
  dht__reply_accepted(node, conn, rid);
  return 0;
}

/*
 * Serves a GET, PUT or DEL that reached the node responsible for it, and
 * answers (conn, rid). as_replica: a GET served by a replica (see
 * dht__may_serve_replica). body is the request's frame body, kept when the
 * owner must consult its successor first; NULL means it already has.
 */
void dht__serve_data(dht_node *node, uint64_t conn, uint64_t rid,
                     const dht_msg *req, const dht_id *key_id,
                     const uint8_t *body, size_t len, bool as_replica) {
  if (as_replica) {
    node->counters.replica_reads++;
    serve_get(node, conn, rid, req, key_id);
    return;
  }
  /* A write also consults while writes_unsure: a failed commit may have
   * rolled back a write this node served whose copies its replicas kept
   * (it was refused, not acknowledged, so reads may go on without it),
   * and a write stamped below that copy would be acknowledged here and
   * then lose to it (crashes seed 39: put #4 was refused on n00021's
   * failed commit but kept by both replicas; delete #5, stamped below it
   * by a client whose clock was behind, was acknowledged, and #4 came
   * back). A write the store refuses anyway needs nobody's record. */
  if (!node->repl.range_fresh ||
      (node->repl.writes_unsure && req->type != DHT_MSG_GET &&
       !store_refusing(node))) {
    if (body != NULL && node->n_succs > 0 &&
        consult(node, conn, rid, req, body, len) == 0) {
      return;
    }
  }
  switch (req->type) {
  case DHT_MSG_GET:
    serve_get(node, conn, rid, req, key_id);
    break;
  case DHT_MSG_PUT:
    serve_write(node, conn, rid, req, key_id, false);
    break;
  case DHT_MSG_DEL:
    serve_write(node, conn, rid, req, key_id, true);
    break;
  default:
    assert(0 && "dht__serve_data: not a data request");
  }
}

/* A consult cannot vouch for this node's store: answers the request it
 * kept with the store's refusal while writes are refused, else as
 * UNAVAILABLE, which a client retries. */
static void consult_refuse(dht_node *node, uint64_t conn, uint64_t rid) {
  char text[DHT_ADDR_LEN_MAX + 200];

  if (store_refusing(node)) {
    store_error_text(node, text, sizeof(text));
    dht__reply_refusal(node, conn, rid, node->repl.store_error, text, NULL);
  } else {
    dht__reply_error(node, conn, rid, DHT_ERR_UNAVAILABLE);
  }
}

/*
 * A replica answered a consult (msg NULL: it failed, and is already out of
 * the successor list): keep the newer record, ask the next position, and
 * once all have been asked, serve the request kept in p.
 *
 * The request is then served from this store alone, so the replicas'
 * records must be in it. When one could not be (the store refused it, or
 * a group commit failed meanwhile and rolled it back) or a replica could
 * not read its own (an ERROR instead of RECORD), the store may be older
 * than an acknowledged write: the request is refused, not answered from
 * it (seeds 83 and 125 of `dht-sim crashes --nodes-max 48 --crashes 6`:
 * a restarted or new owner answered "not found", or the value a delete had
 * replaced, after its store refused or rolled back the fetched record).
 */
static void consult_done(dht_node *node, dht__pending *p, const dht_msg *msg) {
  dht__consult_state *c = &p->u.consult;
  uint64_t conn = c->origin_conn, rid = c->origin_rid;
  dht_msg req;
  dht_id key_id;
  int rv;

  rv = dht_msg_decode(&req, p->kept.data, p->kept.len, &node->set.limits);
  assert(rv == 0 && "a kept request no longer decodes");
  (void)rv;
  if (msg != NULL) {
    if (msg->type != DHT_MSG_RECORD || merge_items(node, msg) < 0) {
      c->unsure = true;
    }
    c->position++; /* on failure the next peer has moved into it */
  }
  if (c->commits_failed != node->repl.commits_failed) {
    c->unsure = true;
  }
  if (c->unsure) {
    consult_refuse(node, conn, rid);
    dht_msg_free(&req);
    dht__pending_free(node, p);
    return;
  }
  if (c->position < replica_positions(node) &&
      ++c->tries < 2 * node->set.replicas) {
    dht_msg fetch;
    memset(&fetch, 0, sizeof(fetch));
    fetch.type = DHT_MSG_FETCH;
    fetch.key = req.key;
    dht__pending_retarget(node, p, node->succs[c->position]);
    dht__pending_rekey(node, p);
    if (dht__pending_send(node, p, &fetch) == 0) {
      dht_msg_free(&req);
      return;
    }
  }
  /* req borrows p's buffer: serve before p's slot can be reused. */
  dht_id_hash(&key_id, req.key.p, req.key.len);
  dht__serve_data(node, conn, rid, &req, &key_id, NULL, 0, false);
  dht_msg_free(&req);
  dht__pending_free(node, p);
}

/* ---- requests from other nodes ---------------------------------------------------- */

/*
 * Merges msg's items (REPLICATE, HANDOFF) and answers (conn, rid): OK once
 * what it stored is durable, or the store's refusal. Returns how many
 * records changed the store, or a negative error (answered).
 */
long dht__merge_and_ack(dht_node *node, uint64_t conn, uint64_t rid,
                        const dht_msg *msg) {
  char text[DHT_ADDR_LEN_MAX + 200];
  long n = merge_items(node, msg);

  if (n < 0) {
    missed_note(node);
  }
  if (n == DHT_ERR_DISK_FULL || n == DHT_ERR_STORE) {
    store_error_text(node, text, sizeof(text));
    dht__reply_refusal(node, conn, rid, (int)n, text, NULL);
  } else if (n < 0) {
    dht__reply_error(node, conn, rid, (int)n);
  } else {
    dht__reply_ack(node, conn, rid, 0, 0);
  }
  return n;
}

void dht__on_replicate(dht_node *node, const dht__request *in) {
  long n = dht__merge_and_ack(node, in->conn, in->msg->rid, in->msg);

  if (n > 0) {
    node->counters.replicate_keys_in += (uint64_t)n;
  }
}

void dht__on_fetch(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  uint64_t conn = in->conn;
  dht_msg out;
  dht_kv kv;
  dht_id key_id;
  int rv;

  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_RECORD;
  out.rid = msg->rid;
  dht_id_hash(&key_id, msg->key.p, msg->key.len);
  rv = record_get(node, &key_id, msg->key.p, msg->key.len, &kv);
  if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
    /* An empty RECORD would say "none here", and the owner would serve
     * without a record this node may hold. */
    node->counters.store_errors++;
    dht__reply_error(node, conn, msg->rid, rv);
    return;
  }
  if (rv == 0) {
    out.items = &kv;
    out.n_items = 1;
  }
  dht__reply(node, conn, &out);
}

/* ---- record batches ------------------------------------------------------------ */

/* A record copied out of a store scan is laid out in a batch buffer as the
 * key id, the key and record lengths (4 bytes each, native order), then the
 * key and record bytes. */
#define BATCH_REC_HEAD (DHT_ID_LEN + 8)

static int batch_add(dht__batch *b, const dht_id *key_id, const uint8_t *key,
                     size_t key_len, const uint8_t *rec, size_t rec_len) {
  uint32_t lens[2] = {(uint32_t)key_len, (uint32_t)rec_len};
  size_t size = BATCH_REC_HEAD + key_len + rec_len;

  if (b->n > 0 && (b->buf.len + size > b->bytes_max || b->n >= b->items_max)) {
    b->full = true;
    return 1;
  }
  if (dht_buf_reserve(&b->buf, size) != 0) {
    b->err = DHT_ERR_NOMEM;
    return 1;
  }
  dht_buf_append(&b->buf, key_id->b, DHT_ID_LEN);
  dht_buf_append(&b->buf, lens, sizeof(lens));
  dht_buf_append(&b->buf, key, key_len);
  dht_buf_append(&b->buf, rec, rec_len);
  b->n++;
  return 0;
}

void dht__batch_init(dht__batch *b, const dht_node *node) {
  size_t frame_room = node->set.limits.frame_len_max - 1024;

  memset(b, 0, sizeof(*b));
  dht_buf_init(&b->buf);
  b->bytes_max = node->set.handoff_batch_bytes < frame_room
                     ? node->set.handoff_batch_bytes
                     : frame_room;
  b->items_max = node->set.limits.items_max;
}

int dht__batch_collect(void *ud, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t *rec, size_t rec_len) {
  return batch_add((dht__batch *)ud, key_id, key, key_len, rec, rec_len);
}

size_t dht__batch_next(const dht_buf *buf, size_t off, dht_id *key_id,
                       dht_kv *kv) {
  uint32_t lens[2];

  memcpy(key_id->b, buf->data + off, DHT_ID_LEN);
  memcpy(lens, buf->data + off + DHT_ID_LEN, sizeof(lens));
  memset(kv, 0, sizeof(*kv));
  kv->key.p = buf->data + off + BATCH_REC_HEAD;
  kv->key.len = lens[0];
  dht_record_parse(kv->key.p + lens[0], lens[1], kv);
  return off + BATCH_REC_HEAD + lens[0] + lens[1];
}

size_t dht__batch_payload(const dht_buf *buf, size_t n) {
  return buf->len - n * BATCH_REC_HEAD;
}

/* Decodes a batch's records into a malloc'd item array (NULL on failure). */
dht_kv *dht__batch_items(const dht__batch *b) {
  dht_kv *items = malloc((b->n > 0 ? b->n : 1) * sizeof(*items));
  dht_id key_id;
  size_t i, off = 0;

  if (items != NULL) {
    for (i = 0; i < b->n; i++) {
      off = dht__batch_next(&b->buf, off, &key_id, &items[i]);
    }
  }
  return items;
}

/* Sends b's records to peer as one request of type (HANDOFF, REPLICATE),
 * tracked as a pending request of kind ops that keeps the records in its
 * kept buffer for when the answer comes. Returns that request, or NULL when
 * nothing could be sent; either way b's buffer has been taken. */
dht__pending *dht__batch_send(dht_node *node, dht__batch *b,
                              const dht__pending_ops *ops, int32_t peer,
                              dht_msg_type type) {
  dht_kv *items = dht__batch_items(b);
  dht__pending *p = items != NULL ? dht__pending_new(node, ops, peer) : NULL;
  dht_msg msg;

  if (p != NULL) {
    memset(&msg, 0, sizeof(msg));
    msg.type = type;
    msg.items = items;
    msg.n_items = b->n;
    if (dht__pending_send(node, p, &msg) != 0) {
      dht__pending_free(node, p);
      p = NULL;
    }
  }
  free(items);
  if (p == NULL) {
    dht_buf_free(&b->buf);
    return NULL;
  }
  dht_buf_free(&p->kept);
  p->kept = b->buf;
  dht_buf_init(&b->buf);
  return p;
}

/* ---- anti-entropy ------------------------------------------------------------- */

/* What one pass over a range computes: a digest per bucket, and the keys of
 * expired tombstones to forget. */
typedef struct digest_pass {
  dht_node *node;
  const dht_id *from;   /* the range (from, to] */
  double width;         /* its size as a fraction of the ring, in (0, 1] */
  uint32_t n_buckets;
  uint8_t digests[DHT_SYNC_BUCKETS_MAX][DHT_DIGEST_LEN];
  dht__batch expired;   /* tombstones past their grace */
  const uint64_t *mask; /* with batch or counting: the buckets that count */
  dht__batch *batch;    /* where their records go */
  bool counting;        /* count their records instead (batch NULL) */
  uint64_t counted;     /* ... records */
  uint64_t counted_bytes; /* ... and their key and record bytes */
} digest_pass;

static double range_width(const dht_id *from, const dht_id *to) {
  double w = dht_id_distance_frac(from, to);

  return w > 0 ? w : 1.0; /* (a, a] is the whole ring */
}

static uint32_t bucket_of(const digest_pass *d, const dht_id *key_id) {
  double x = dht_id_distance_frac(d->from, key_id) / d->width;
  uint32_t b = (uint32_t)(x * d->n_buckets);

  return b < d->n_buckets ? b : d->n_buckets - 1;
}

static bool mask_has(const uint64_t *mask, uint32_t b) {
  return (mask[b / 64] >> (b % 64)) & 1u;
}

static int digest_visit(void *ud, const dht_id *key_id, const uint8_t *key,
                        size_t key_len, const uint8_t *rec, size_t rec_len) {
  digest_pass *d = ud;
  uint8_t in[DHT_ID_LEN + 8 + DHT_ID_LEN + 1], h[DHT_DIGEST_LEN];
  uint32_t b = bucket_of(d, key_id), i;
  dht_kv kv;

  dht_record_parse(rec, rec_len, &kv);
  if (kv.tombstone && tombstone_expired(d->node, kv.version.hlc)) {
    if (!d->counting && d->expired.n < GC_PER_PASS) {
      batch_add(&d->expired, key_id, key, key_len, rec, 0);
    }
    return 0; /* forgotten: in no digest */
  }
  if (d->batch != NULL) {
    return mask_has(d->mask, b)
               ? batch_add(d->batch, key_id, key, key_len, rec, rec_len)
               : 0;
  }
  if (d->counting) {
    if (mask_has(d->mask, b)) {
      d->counted++;
      d->counted_bytes += key_len + rec_len;
    }
    return 0;
  }
  memcpy(in, key_id->b, DHT_ID_LEN);
  for (i = 0; i < 8; i++) {
    in[DHT_ID_LEN + i] = (uint8_t)(kv.version.hlc >> (56 - 8 * i));
  }
  memcpy(in + DHT_ID_LEN + 8, kv.version.writer.b, DHT_ID_LEN);
  in[sizeof(in) - 1] = kv.tombstone;
  crypto_generichash(h, sizeof(h), in, sizeof(in), NULL, 0);
  for (i = 0; i < DHT_DIGEST_LEN; i++) {
    d->digests[b][i] ^= h[i]; /* XOR: the order of records does not matter */
  }
  return 0;
}

/* Scans (from, to]: digests (batch NULL, not counting), or copies the
 * records of the buckets in mask into batch, or counts them, starting
 * after start. Forgets expired tombstones on the way. Returns 0 or
 * DHT_ERR_STORE. */
static int digest_range(dht_node *node, digest_pass *d, const dht_id *from,
                        const dht_id *to, uint32_t n_buckets,
                        const dht_id *start) {
  dht_id key_id;
  dht_kv kv;
  size_t off = 0;
  int rv;

  memset(d->digests, 0, sizeof(d->digests));
  d->counted = 0;
  d->counted_bytes = 0;
  d->node = node;
  d->from = from;
  d->width = range_width(from, to);
  d->n_buckets = n_buckets;
  dht__batch_init(&d->expired, node);
  rv = dht_store_scan(node->store, start != NULL ? start : from, to,
                      digest_visit, d);
  while (off < d->expired.buf.len) {
    off = dht__batch_next(&d->expired.buf, off, &key_id, &kv);
    if (dht_store_remove(node->store, &key_id, kv.key.p, kv.key.len) == 0) {
      node->counters.tombstones_collected++;
    }
  }
  dht_buf_free(&d->expired.buf);
  if (rv != 0) {
    node->counters.store_errors++;
  }
  return rv;
}

/* A pass for digest_range (malloc'd: its digests are large), of the kind
 * its arguments say; NULL when out of memory. */
static digest_pass *pass_new(const uint64_t *mask, dht__batch *batch,
                             bool counting) {
  digest_pass *d = malloc(sizeof(*d));

  if (d != NULL) {
    d->mask = mask;
    d->batch = batch;
    d->counting = counting;
  }
  return d;
}

static dht__sync *sync_of(dht_node *node, int32_t peer) {
  uint32_t i;

  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    if (node->repl.sync_peers[i] == peer) {
      return &node->repl.syncs[i];
    }
  }
  return NULL;
}

/* The replica peer has given this node every record of its range that this
 * node lacked: once every replica position has, the node is in sync. */
static void fresh_note(dht_node *node, int32_t peer) {
  uint32_t n = replica_positions(node), i;

  if (node->repl.n_synced < DHT_SUCC_LIST_MAX &&
      !id_listed(node->repl.synced, node->repl.n_synced,
                 &node->peers[peer].id)) {
    node->repl.synced[node->repl.n_synced++] = node->peers[peer].id;
  }
  for (i = 0; i < n; i++) {
    if (!id_listed(node->repl.synced, node->repl.n_synced,
                   &node->peers[node->succs[i]].id)) {
      return;
    }
  }
  node->repl.range_fresh = true;
  node->repl.writes_unsure = false;
}

/* An exchange of this node's whole range with the replica peer found it
 * holding every record (no bucket differing: clean) or not; readiness asks
 * it of every replica position (dht__repl_replicas_hold_range). */
static void clean_note(dht_node *node, int32_t peer, bool clean) {
  dht__repl *r = &node->repl;
  const dht_id *id = &node->peers[peer].id;
  uint32_t i;

  for (i = 0; i < r->n_clean && !dht_id_eq(&r->clean[i], id); i++) {
  }
  if (clean && i == r->n_clean && r->n_clean < DHT_SUCC_LIST_MAX) {
    r->clean[r->n_clean++] = *id;
  } else if (!clean && i < r->n_clean) {
    r->clean[i] = r->clean[--r->n_clean];
  }
}

bool dht__repl_replicas_hold_range(const dht_node *node) {
  uint32_t n = replica_positions(node), i;

  for (i = 0; i < n; i++) {
    if (!id_listed(node->repl.clean, node->repl.n_clean,
                   &node->peers[node->succs[i]].id)) {
      return false;
    }
  }
  return node->repl.range_fresh && !node->repl.writes_unsure;
}

/* The replica of session s (repl.sync_peers). */
static int32_t *sync_peer(dht_node *node, const dht__sync *s) {
  return &node->repl.sync_peers[s - node->repl.syncs];
}

/* The note of the last exchange with the replica id: its own, else a free
 * one, else the oldest (create); NULL when there is none and create is
 * false. */
static dht__exchange_note *exchange_note(dht_node *node, const dht_id *id,
                                         bool create) {
  dht__exchange_note *oldest = NULL;
  uint32_t i;

  for (i = 0; i < DHT_EXCHANGES_MAX; i++) {
    dht__exchange_note *x = &node->repl.exchanges[i];
    if (x->used && dht_id_eq(&x->peer, id)) {
      return x;
    }
    if (oldest == NULL || !x->used ||
        (oldest->used && x->started_ms < oldest->started_ms)) {
      oldest = x;
    }
  }
  return create ? oldest : NULL;
}

/* Notes that session s's exchange began, in place of the last one with
 * the same replica (or of the oldest note). */
static void exchange_begin(dht_node *node, const dht__sync *s) {
  dht__exchange_note *x = exchange_note(node, &node->peers[*sync_peer(node, s)].id, true);

  memset(x, 0, sizeof(*x));
  x->used = true;
  x->peer = node->peers[*sync_peer(node, s)].id;
  x->from = s->from;
  x->to = s->to;
  x->started_ms = s->started_ms;
  x->outcome = DHT_EXCHANGE_RUNNING;
}

/* The note of session s's exchange, updated with what it has done. */
static dht__exchange_note *exchange_update(dht_node *node, const dht__sync *s) {
  dht__exchange_note *x = exchange_note(node, &node->peers[*sync_peer(node, s)].id, false);

  if (x != NULL) {
    x->pushed = s->pushed;
  }
  return x;
}

static void sync_end(dht_node *node, dht__sync *s,
                     dht_exchange_outcome outcome) {
  dht__exchange_note *x = exchange_update(node, s);
  int32_t *peer = sync_peer(node, s);

  if (x != NULL) {
    x->ended_ms = node->now_ms;
    x->outcome = (uint8_t)outcome;
  }
  if (s->pushed > 0) {
    node->counters.repair_ms_last = node->now_ms - s->started_ms;
    dht__log(node, DHT_LOG_INFO,
             "repair: %llu records pushed to %s in %llu ms",
             (unsigned long long)s->pushed, node->peers[*peer].addr,
             (unsigned long long)(node->now_ms - s->started_ms));
  }
  dht__peer_release(node, *peer);
  *peer = DHT__NO_PEER;
}

static void tokens_refill(dht_node *node) {
  int64_t rate = node->set.repair_bytes_per_s;
  uint64_t dt = node->now_ms - node->repl.repair_tokens_ms;

  if (dt > 0) {
    int64_t add = dt >= 1000 ? rate : (int64_t)(rate * (int64_t)dt / 1000);
    node->repl.repair_tokens = node->repl.repair_tokens + add > rate
                                   ? rate
                                   : node->repl.repair_tokens + add;
    node->repl.repair_tokens_ms = node->now_ms;
  }
}

/* Sends the next batch of this node's records in the buckets that differ,
 * or ends the exchange when none is left. */
static void push_next(dht_node *node, dht__sync *s) {
  uint32_t slot = (uint32_t)(s - node->repl.syncs);
  digest_pass *d;
  dht__batch batch;
  dht__pending *p;
  int64_t bytes;
  int rv;

  tokens_refill(node);
  if (node->repl.repair_tokens <= 0) {
    node->repl.syncs_waiting |= 1u << slot;
    return;
  }
  node->repl.syncs_waiting &= ~(1u << slot);
  if (s->has_cursor && dht_id_eq(&s->cursor, &s->to)) {
    sync_end(node, s, DHT_EXCHANGE_DONE);
    return;
  }
  d = pass_new(s->mask, &batch, false);
  if (d == NULL) {
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return;
  }
  dht__batch_init(&batch, node);
  rv = digest_range(node, d, &s->from, &s->to, s->n_buckets,
                    s->has_cursor ? &s->cursor : NULL);
  free(d);
  bytes = (int64_t)batch.buf.len;
  p = rv == 0 && batch.err == 0 && batch.n > 0
          ? dht__batch_send(node, &batch, &push_ops, *sync_peer(node, s),
                            DHT_MSG_REPLICATE)
          : NULL;
  if (p == NULL) {
    bool none_left = rv == 0 && batch.err == 0 && batch.n == 0;
    dht_buf_free(&batch.buf);
    sync_end(node, s, none_left ? DHT_EXCHANGE_DONE : DHT_EXCHANGE_FAILED);
    return;
  }
  p->u.sync.session = slot;
  node->repl.repair_tokens -= bytes;
}

/* The replica answered a push (msg NULL: it failed): the next batch goes,
 * or the exchange ends. */
static void push_done(dht_node *node, dht__pending *p, const dht_msg *msg) {
  dht__sync *s = &node->repl.syncs[p->u.sync.session];
  bool ok = msg != NULL && msg->type == DHT_MSG_OK;
  dht_id key_id;
  dht_kv kv;
  size_t off = 0, n = 0, bytes;

  while (off < p->kept.len) {
    off = dht__batch_next(&p->kept, off, &key_id, &kv);
    n++;
  }
  bytes = dht__batch_payload(&p->kept, n);
  dht__pending_free(node, p);
  if (!ok) {
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return;
  }
  s->cursor = key_id;
  s->has_cursor = true;
  s->pushed += n;
  s->pushed_bytes += bytes;
  exchange_update(node, s);
  node->counters.repair_keys_out += n;
  push_next(node, s);
}

/* Counts session s's records in the buckets that differ: the backlog its
 * push works off (dht/metrics.h, repair_records). Left at 0 when the count
 * cannot be made. */
static void backlog_count(dht_node *node, dht__sync *s) {
  digest_pass *d = pass_new(s->mask, NULL, true);

  if (d == NULL) {
    return;
  }
  if (digest_range(node, d, &s->from, &s->to, s->n_buckets, NULL) == 0) {
    s->todo_records = d->counted;
    s->todo_bytes = d->counted_bytes;
  }
  free(d);
}

/* Sends session s's SYNC: the digests d made of its range in
 * s->n_buckets buckets. Returns 0, or an error (the session is over). */
static int sync_send(dht_node *node, dht__sync *s, const digest_pass *d) {
  dht__pending *p = dht__pending_new(node, &sync_ops, *sync_peer(node, s));
  dht_msg msg;

  if (p == NULL) {
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return DHT_ERR_FULL;
  }
  p->u.sync.session = (uint32_t)(s - node->repl.syncs);
  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_SYNC;
  msg.from = s->from;
  msg.to = s->to;
  msg.digests = &d->digests[0][0];
  msg.n_digests = s->n_buckets;
  msg.probe = s->probe;
  if (dht__pending_send(node, p, &msg) != 0) {
    dht__pending_free(node, p);
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return DHT_ERR_NOMEM;
  }
  return 0;
}

/* The replica found the probe's digest differing: the exchange goes on
 * with the range in set.sync_buckets buckets, as if it had begun so. */
static void sync_full(dht_node *node, dht__sync *s) {
  digest_pass *d = pass_new(NULL, NULL, false);

  s->probe = false;
  s->n_buckets = node->set.sync_buckets;
  if (d == NULL || digest_range(node, d, &s->from, &s->to, s->n_buckets,
                                NULL) != 0) {
    free(d);
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return;
  }
  node->counters.sync_full++;
  (void)sync_send(node, s, d);
  free(d);
}

/* The replica answered the digests (msg NULL: it failed): keep its newer
 * records, then push ours of the buckets that differ. */
static void sync_answered(dht_node *node, dht__pending *p,
                          const dht_msg *msg) {
  dht__sync *s = &node->repl.syncs[p->u.sync.session];
  dht__exchange_note *x;
  long n;
  size_t i;

  dht__pending_free(node, p);
  if (msg == NULL || msg->type != DHT_MSG_SYNC_R) {
    sync_end(node, s, DHT_EXCHANGE_FAILED);
    return;
  }
  n = merge_items(node, msg);
  if (n > 0) {
    node->counters.repair_keys_in += (uint64_t)n;
    node->repl.repaired = true;
  }
  if (s->probe && msg->n_buckets > 0) {
    sync_full(node, s);
    return;
  }
  /* Digests taken before a failed commit may have counted records it
   * rolled back, and a record that was on its way to the replica then may
   * have landed there since: such an answer says nothing of the store now. */
  if (!msg->more && n >= 0 && node->pred != DHT__NO_PEER &&
      dht_id_eq(&s->from, &node->peers[node->pred].id) &&
      s->commits_failed == node->repl.commits_failed) {
    fresh_note(node, *sync_peer(node, s));
    clean_note(node, *sync_peer(node, s), msg->n_buckets == 0);
  }
  memset(s->mask, 0, sizeof(s->mask));
  for (i = 0; i < msg->n_buckets; i++) {
    if (msg->buckets[i] < s->n_buckets) {
      s->mask[msg->buckets[i] / 64] |= 1ull << (msg->buckets[i] % 64);
    }
  }
  node->counters.sync_buckets_differ += msg->n_buckets;
  s->answered_ms = node->now_ms;
  x = exchange_update(node, s);
  if (x != NULL) {
    x->buckets = msg->n_buckets;
  }
  if (msg->n_buckets == 0) {
    sync_end(node, s, DHT_EXCHANGE_DONE);
    return;
  }
  backlog_count(node, s);
  push_next(node, s);
}

/*
 * Starts an exchange with every replica that has none going. It opens with
 * a probe: one digest of the whole range, which the replica answers with
 * whether its own differs and no records; only a range that differs is
 * compared bucket by bucket (sync_full). A pair in sync, the usual case,
 * so exchanges about a hundred bytes each way rather than a digest per
 * bucket, at the cost of one more round trip when they differ.
 */
static void sync_round(dht_node *node) {
  uint32_t n = replica_positions(node), i;
  digest_pass *d = NULL;

  if (node->state != DHT_NODE_JOINED) {
    return;
  }
  if (n == 0) {
    /* alone, or no replicas: nobody to be behind */
    node->repl.range_fresh = true;
    node->repl.writes_unsure = false;
    return;
  }
  if (node->pred == DHT__NO_PEER) {
    return;
  }
  for (i = 0; i < n; i++) {
    int32_t peer = node->succs[i];
    dht__sync *s;

    if (sync_of(node, peer) != NULL) {
      continue;
    }
    if (d == NULL) {
      d = pass_new(NULL, NULL, false);
      if (d == NULL) {
        return;
      }
      if (digest_range(node, d, &node->peers[node->pred].id, &node->id, 1,
                       NULL) != 0) {
        break;
      }
    }
    s = sync_of(node, DHT__NO_PEER);
    if (s == NULL) {
      break;
    }
    memset(s, 0, sizeof(*s));
    node->repl.syncs_waiting &= ~(1u << (uint32_t)(s - node->repl.syncs));
    *sync_peer(node, s) = peer;
    dht__peer_hold(node, peer);
    s->from = node->peers[node->pred].id;
    s->to = node->id;
    s->n_buckets = 1;
    s->probe = true;
    s->started_ms = node->now_ms;
    s->commits_failed = node->repl.commits_failed;
    exchange_begin(node, s);
    node->counters.sync_rounds++;
    (void)sync_send(node, s, d);
  }
  free(d);
}

void dht__on_sync(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  uint64_t conn = in->conn;
  uint16_t differ[DHT_SYNC_BUCKETS_MAX];
  uint64_t mask[DHT_SYNC_BUCKETS_MAX / 64] = {0};
  digest_pass *d = pass_new(NULL, NULL, false);
  dht__batch batch;
  dht_kv *items = NULL;
  dht_msg out;
  size_t n = 0;
  uint32_t b;
  int rv = 0;

  if (d == NULL) {
    dht__reply_error(node, conn, msg->rid, DHT_ERR_NOMEM);
    return;
  }
  if (digest_range(node, d, &msg->from, &msg->to, (uint32_t)msg->n_digests,
                   NULL) != 0) {
    free(d);
    dht__reply_error(node, conn, msg->rid, DHT_ERR_STORE);
    return;
  }
  for (b = 0; b < msg->n_digests; b++) {
    if (memcmp(d->digests[b], msg->digests + b * DHT_DIGEST_LEN,
               DHT_DIGEST_LEN) != 0) {
      differ[n++] = (uint16_t)b;
      mask[b / 64] |= 1ull << (b % 64);
    }
  }
  if (n == 0) {
    if (node->repl.missed) {
      insync_note(node, &msg->from, &msg->to);
    }
    dht__lost_held(node, &msg->from, &msg->to);
  }
  dht__batch_init(&batch, node);
  batch.bytes_max /= 2; /* the owner pushes back as much: keep room */
  if (n > 0 && !msg->probe) {
    d->mask = mask;
    d->batch = &batch;
    rv = digest_range(node, d, &msg->from, &msg->to, (uint32_t)msg->n_digests,
                      NULL);
    items = dht__batch_items(&batch);
  }
  free(d);
  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_SYNC_R;
  out.rid = msg->rid;
  out.buckets = differ;
  out.n_buckets = n;
  out.items = items;
  out.n_items = items != NULL ? batch.n : 0;
  /* A scan that failed midway sent only part of the records: "more", so
   * that the owner does not count itself in sync with this node. */
  out.more = batch.full || batch.err != 0 || rv != 0;
  dht__reply(node, conn, &out);
  free(items);
  dht_buf_free(&batch.buf);
}

/* ---- listing what a node holds (dht check) ------------------------------------ */

void dht__on_scan(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  uint64_t conn = in->conn;
  dht__batch batch;
  dht_kv *items;
  dht_msg out;
  size_t i;

  dht__batch_init(&batch, node);
  batch.items_max = msg->limit < SCAN_LIMIT_MAX ? msg->limit : SCAN_LIMIT_MAX;
  if (batch.items_max == 0) {
    batch.items_max = 1;
  }
  if (dht_store_scan(node->store, &msg->from, &msg->from, dht__batch_collect,
                     &batch) != 0 ||
      batch.err != 0 || (items = dht__batch_items(&batch)) == NULL) {
    dht_buf_free(&batch.buf);
    dht__reply_error(node, conn, msg->rid, DHT_ERR_STORE);
    return;
  }
  for (i = 0; i < batch.n; i++) {
    items[i].value.len = 0; /* keys and versions only */
  }
  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_SCAN_R;
  out.rid = msg->rid;
  out.items = items;
  out.n_items = batch.n;
  out.more = batch.full;
  dht__reply(node, conn, &out);
  free(items);
  dht_buf_free(&batch.buf);
}

/* ---- replies, failures, timers ------------------------------------------------- */

static dht__write *write_of(dht_node *node, const dht__pending *p) {
  const dht__replicate_state *r = &p->u.replicate;

  return r->write < node->repl.cap_writes &&
                 node->repl.writes[r->write].gen == r->gen
             ? &node->repl.writes[r->write]
             : NULL;
}

/* A replica answered a write (msg NULL: it failed): the write asks
 * another position, or answers its writer once nobody is left to ask. */
static void replicate_done(dht_node *node, dht__pending *p,
                           const dht_msg *msg) {
  dht__write *w = write_of(node, p);
  dht_id id = node->peers[p->peer].id;

  dht__pending_free(node, p);
  if (w == NULL) {
    return;
  }
  id_unlist(w->busy, &w->n_busy, &id);
  if (msg != NULL && msg->type == DHT_MSG_OK &&
      w->n_acked < DHT_SUCC_LIST_MAX) {
    w->acked[w->n_acked++] = id;
  }
  write_fill(node, w);
}

/* A replication request got no answer: its peer leaves the tables first,
 * so that a write looking for another replica does not pick the dead one
 * again; then done learns of the failure. */
static void failed_then(dht_node *node, dht__pending *p,
                        void (*done)(dht_node *, dht__pending *,
                                     const dht_msg *)) {
  int32_t peer = p->peer;

  dht__peer_hold(node, peer);
  dht__declare_dead(node, peer, true);
  done(node, p, NULL);
  dht__peer_release(node, peer);
}

static void replicate_failed(dht_node *node, dht__pending *p) {
  failed_then(node, p, replicate_done);
}

static void consult_failed(dht_node *node, dht__pending *p) {
  failed_then(node, p, consult_done);
}

static void sync_failed(dht_node *node, dht__pending *p) {
  failed_then(node, p, sync_answered);
}

static void push_failed(dht_node *node, dht__pending *p) {
  failed_then(node, p, push_done);
}

/* Replicas never answer these with ACCEPTED, but one would be ignored. */
static const dht__pending_ops replicate_ops = {
    "replicate", false, replicate_done, replicate_failed};
static const dht__pending_ops consult_ops = {"consult", false, consult_done,
                                             consult_failed};
static const dht__pending_ops sync_ops = {"sync", false, sync_answered,
                                          sync_failed};
static const dht__pending_ops push_ops = {"push", false, push_done,
                                          push_failed};

static void sync_soon(dht_node *node) {
  uint64_t soon = node->now_ms + SYNC_SOON_MS;

  if (node->repl.sync_at_ms > soon) {
    node->repl.sync_at_ms = soon;
  }
}

void dht__repl_on_pred_change(dht_node *node) {
  node->repl.range_fresh = node->n_succs == 0;
  node->repl.n_synced = 0;
  node->repl.n_clean = 0;
  sync_soon(node);
}

/* The successors changed: a replica found clean while it held a replica
 * position is clean no longer once it leaves it (the writes since went to
 * others), so it must be found clean again if it comes back. Kept, the
 * note let a node whose replica died count the next successor clean from
 * an exchange made before others joined between them, and say ready
 * before repairing it (test_daemons, test_ready_means_check_passes). */
void dht__repl_on_succs_change(dht_node *node) {
  dht__repl *r = &node->repl;
  uint32_t i, kept = 0;

  for (i = 0; i < r->n_clean; i++) {
    if (at_replica_position(node, &r->clean[i])) {
      r->clean[kept++] = r->clean[i];
    }
  }
  r->n_clean = kept;
  sync_soon(node);
}

/*
 * A group commit is done: the acknowledgements waiting for it go out, or,
 * when it failed, the writes of its group are answered with the failure
 * (their records are not on disk, whatever the replicas say) and writes
 * are refused for store_retry_ms.
 */
void dht__repl_commit_done(dht_node *node, int status) {
  char text[DHT_ADDR_LEN_MAX + 200];
  uint32_t i;

  if (!node->group_commit) {
    return;
  }
  if (status == 0) {
    if (node->repl.store_error != 0 && node->repl.wrote) {
      dht__log(node, DHT_LOG_WARN, "store: writes commit again");
      node->repl.store_error = 0;
    }
    dht__acks_release(node, 0, NULL);
  } else {
    node->counters.commit_failures++;
    node->repl.commits_failed++; /* consults in flight see it move */
    missed_note(node); /* the held acknowledgements become refusals */
    if (node->repl.repaired) {
      /* The records the group took from replicas are gone again: an owner
       * that counted itself in sync with them may lack some now, so it
       * consults them again until the next exchange has it back in sync. */
      node->repl.range_fresh = node->n_succs == 0;
    }
    /* The writes it served in the group are gone too, but their
     * REPLICATEs went: the replicas may hold a newer record than this
     * node now, so its writes consult them until the next exchange. */
    node->repl.writes_unsure = node->n_succs > 0;
    node->repl.n_synced = 0;
    node->repl.n_clean = 0;
    sync_soon(node);
    store_failed(node, status == DHT_ERR_DISK_FULL ? status : DHT_ERR_STORE);
    store_error_text(node, text, sizeof(text));
    dht__acks_release(node, node->repl.store_error, text);
    for (i = 0; i < node->repl.cap_writes; i++) {
      dht__write *w = &node->repl.writes[i];
      if (w->gen != 0 && w->stored_epoch == node->repl.commit_epoch) {
        node->counters.writes_failed++;
        dht__reply_refusal(node, w->origin_conn, w->origin_rid,
                           node->repl.store_error, text, NULL);
        w->gen = 0;
      }
    }
  }
  node->repl.wrote = false;
  node->repl.repaired = false;
  node->repl.commit_epoch++;
}

/*
 * A neighbour's NEIGHBORS reply said its wall clock read peer_wall_ms.
 * This node's clock counts as off only when both neighbours (the
 * successor asked by stabilize, the predecessor by its check) see it off
 * the same way: one neighbour with a bad clock must not make it doubt
 * its own. Off by more than max_clock_skew_ms, it says so in its log; a
 * clock ahead also stops it collecting tombstones (tombstone_expired).
 */
void dht__repl_note_clock(dht_node *node, uint64_t peer_wall_ms,
                          bool from_succ) {
  int64_t offset = (int64_t)(peer_wall_ms - dht__wall_ms(node));
  int64_t other, both = 0;
  int64_t bound = (int64_t)node->set.max_clock_skew_ms;
  bool was_off = node->repl.clock_offset_ms > bound ||
                 node->repl.clock_offset_ms < -bound;

  if (from_succ) {
    node->repl.succ_clock_offset_ms = offset;
    other = node->repl.pred_clock_offset_ms;
  } else {
    node->repl.pred_clock_offset_ms = offset;
    other = node->repl.succ_clock_offset_ms;
  }
  if ((offset > 0) == (other > 0) && offset != 0 && other != 0) {
    both = (offset > 0 ? offset < other : offset > other) ? offset : other;
  }
  node->repl.clock_offset_ms = both;
  if (!was_off && (both > bound || both < -bound)) {
    dht__log(node, DHT_LOG_WARN,
             "clock: this node's wall clock is %lld ms %s its neighbours' "
             "(more than --max-clock-skew-ms %lld): fix its time source",
             (long long)(both > 0 ? both : -both),
             both > 0 ? "behind" : "ahead of", (long long)bound);
  } else if (was_off && both <= bound && both >= -bound) {
    dht__log(node, DHT_LOG_WARN, "clock: back within %lld ms of the "
             "neighbours'", (long long)bound);
  }
}

void dht__repl_timers(dht_node *node) {
  uint32_t i, waiting;

  if (node->state != DHT_NODE_JOINED || !node->maintenance) {
    return;
  }
  if (node->repl.sync_at_ms <= node->now_ms) {
    node->repl.sync_at_ms = node->now_ms + node->set.sync_interval_ms;
    sync_round(node);
  }
  for (waiting = node->repl.syncs_waiting; waiting != 0;
       waiting &= waiting - 1) {
    i = (uint32_t)__builtin_ctz(waiting);
    if (node->repl.sync_peers[i] != DHT__NO_PEER) {
      push_next(node, &node->repl.syncs[i]);
    }
  }
}

uint64_t dht__repl_next_deadline(const dht_node *node) {
  uint64_t t = node->repl.sync_at_ms;
  uint32_t waiting;

  if (node->state != DHT_NODE_JOINED || !node->maintenance) {
    return DHT_TIME_NEVER;
  }
  for (waiting = node->repl.syncs_waiting; waiting != 0;
       waiting &= waiting - 1) {
    if (node->repl.sync_peers[__builtin_ctz(waiting)] != DHT__NO_PEER) {
      /* tokens come back at repair_bytes_per_s: wake when some have */
      uint64_t wait = (uint64_t)(-node->repl.repair_tokens) * 1000u /
                          node->set.repair_bytes_per_s + 1;
      return node->now_ms + wait < t ? node->now_ms + wait : t;
    }
  }
  return t;
}

/* ---- lifecycle ------------------------------------------------------------------ */

void dht__repl_init(dht_node *node) {
  uint32_t i;

  node->repl.sync_at_ms = node->now_ms; /* a first round as soon as it joins */
  /* Records at start are an old disk's: the writes acknowledged while the
   * node was down went to the next successors instead, so, as after a
   * refused write, it answers no replica read until each owner has found
   * it in sync. An empty store has nothing to answer from. */
  node->repl.missed = dht_store_count(node->store) > 0;
  node->repl.repair_tokens = node->set.repair_bytes_per_s;
  node->repl.repair_tokens_ms = node->now_ms;
  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    node->repl.sync_peers[i] = DHT__NO_PEER;
  }
}

void dht__repl_free(dht_node *node) {
  uint32_t i;

  for (i = 0; i < node->repl.cap_writes; i++) {
    dht_buf_free(&node->repl.writes[i].key);
    dht_buf_free(&node->repl.writes[i].record);
  }
  free(node->repl.writes);
}
