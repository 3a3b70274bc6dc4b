/*
 * node_metrics.c: the node's own measurements (dht/metrics.h, node_metrics.h).
 *
 * Messages and bytes are counted where frames pass. A request's result and
 * latency need its arrival until its final answer: each request that
 * expects one is noted by (connection, request id) in an open-addressing
 * table, and the reply queued under the same pair settles it. Every request
 * the node takes is answered in the end (a forward that fails is answered
 * with its ERROR), so the table holds what is in progress; an arrival that
 * somehow never hears back is dropped as stale when the table next needs
 * room, and counted in untracked, as are requests that find no room.
 */
#include <stdlib.h>
#include <string.h>

#include "node_metrics.h"

/* Arrivals noted at once at most; the table's slots are twice as many. */
#define ARRIVALS_MAX 65536u
/* An arrival unanswered this many route timeouts is taken for lost. */
#define ARRIVAL_STALE_ROUTE_TIMEOUTS 64u
/* A table this small stays allocated when it empties. */
#define ARRIVALS_KEEP_SLOTS 256u

static const char *const class_names[] = {
#define DHT__CLASS_NAME(name, label) label,
    DHT_MSG_CLASS_MAP(DHT__CLASS_NAME)
#undef DHT__CLASS_NAME
};

const char *dht_msg_class_name(int cls) {
  return cls >= 0 && cls < DHT_MSG_CLASSES ? class_names[cls]
                                           : class_names[DHT_MSG_CLASS_OTHER];
}

/* The class of a message of type. A reply is classed by its own type only
 * when the request it answers is unknown; OK, ERROR and ACCEPTED answer
 * requests of every class, so they say nothing by themselves. */
static dht_msg_class class_of(int type) {
  switch (type) {
  case DHT_MSG_PING:
  case DHT_MSG_PONG:
  case DHT_MSG_GET_NEIGHBORS:
  case DHT_MSG_NEIGHBORS:
  case DHT_MSG_NOTIFY:
  case DHT_MSG_LEAVE:
  case DHT_MSG_CHECK_LINK:
    return DHT_MSG_CLASS_RING;
  case DHT_MSG_FIND_SUCC:
  case DHT_MSG_FIND_SUCC_R:
    return DHT_MSG_CLASS_ROUTING;
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
  case DHT_MSG_SYNC:
  case DHT_MSG_SYNC_R:
  case DHT_MSG_FETCH:
  case DHT_MSG_RECORD:
    return DHT_MSG_CLASS_REPLICATION;
  case DHT_MSG_GET:
  case DHT_MSG_PUT:
  case DHT_MSG_DEL:
  case DHT_MSG_VALUE:
  case DHT_MSG_STATS:
  case DHT_MSG_STATS_R:
  case DHT_MSG_SCAN:
  case DHT_MSG_SCAN_R:
  case DHT_MSG_ACK_LOST:
  case DHT_MSG_MOVED:
    return DHT_MSG_CLASS_CLIENT;
  default:
    return DHT_MSG_CLASS_OTHER;
  }
}

/* The latency op of a request type, or -1 for one not measured. */
static int op_of(int type) {
  switch (type) {
#define DHT__OP_CASE(name)                                                     \
  case DHT_MSG_##name:                                                         \
    return DHT_OP_##name;
    DHT_LATENCY_OP_MAP(DHT__OP_CASE)
#undef DHT__OP_CASE
  default:
    return -1;
  }
}

static bool type_known(int type) {
  return type >= 0 && type <= DHT_MSG_TYPE_LAST;
}

/* ---- arrivals ------------------------------------------------------------ */

static uint32_t home_slot(uint32_t cap, uint64_t conn, uint64_t rid) {
  uint64_t h = (conn * 0x9e3779b97f4a7c15ull) ^ rid;

  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return (uint32_t)h & (cap - 1);
}

static dht__arrival *arrival_find(dht__metrics *mt, uint64_t conn,
                                  uint64_t rid) {
  uint32_t i;

  if (mt->n == 0) {
    return NULL;
  }
  for (i = home_slot(mt->cap, conn, rid); mt->arrivals[i].conn != 0;
       i = (i + 1) & (mt->cap - 1)) {
    if (mt->arrivals[i].conn == conn && mt->arrivals[i].rid == rid) {
      return &mt->arrivals[i];
    }
  }
  return NULL;
}

/* Puts a into a table of cap slots that has room and does not hold it. */
static void arrival_place(dht__arrival *table, uint32_t cap,
                          const dht__arrival *a) {
  uint32_t i;

  for (i = home_slot(cap, a->conn, a->rid); table[i].conn != 0;
       i = (i + 1) & (cap - 1)) {
  }
  table[i] = *a;
}

/* Empties slot i. The entries after it in its run move back where their
 * home slot allows, so that each stays reachable from its home (backward
 * shift deletion: no tombstones). */
static void arrival_remove(dht__metrics *mt, uint32_t i) {
  uint32_t mask = mt->cap - 1, j = i;

  for (;;) {
    const dht__arrival *b;
    j = (j + 1) & mask;
    b = &mt->arrivals[j];
    if (b->conn == 0) {
      break;
    }
    if (((j - home_slot(mt->cap, b->conn, b->rid)) & mask) >=
        ((j - i) & mask)) {
      mt->arrivals[i] = *b;
      i = j;
    }
  }
  mt->arrivals[i].conn = 0;
  mt->n--;
  if (mt->n == 0 && mt->cap > ARRIVALS_KEEP_SLOTS) {
    free(mt->arrivals); /* a burst's room is not kept idle */
    mt->arrivals = NULL;
    mt->cap = 0;
  }
}

/* Rebuilds the table with room for one more, at most a quarter full, and
 * without the stale arrivals (counted untracked). False when there is no
 * room (ARRIVALS_MAX, or no memory): the table is as it was. */
static bool arrivals_make_room(dht_node *node) {
  dht__metrics *mt = &node->metrics;
  uint64_t stale_ms =
      (uint64_t)ARRIVAL_STALE_ROUTE_TIMEOUTS * node->set.route_timeout_ms;
  uint32_t live = 0, cap = 16, i;
  dht__arrival *table;

  for (i = 0; i < mt->cap; i++) {
    live += mt->arrivals[i].conn != 0 &&
            node->now_ms - mt->arrivals[i].at_ms < stale_ms;
  }
  if (live >= ARRIVALS_MAX) {
    return false;
  }
  while ((uint64_t)(live + 1) * 4 > cap) {
    cap *= 2;
  }
  table = calloc(cap, sizeof(*table));
  if (table == NULL) {
    return false;
  }
  for (i = 0; i < mt->cap; i++) {
    const dht__arrival *a = &mt->arrivals[i];
    if (a->conn == 0) {
      continue;
    }
    if (node->now_ms - a->at_ms < stale_ms) {
      arrival_place(table, cap, a);
    } else {
      mt->m.untracked++;
    }
  }
  free(mt->arrivals);
  mt->arrivals = table;
  mt->cap = cap;
  mt->n = live;
  return true;
}

void dht__metrics_free(dht_node *node) { free(node->metrics.arrivals); }

void dht__metrics_request(dht_node *node, uint64_t conn, const dht_msg *msg) {
  dht__metrics *mt = &node->metrics;
  dht__arrival *a = arrival_find(mt, conn, msg->rid);
  dht__arrival fresh;

  fresh.conn = conn;
  fresh.rid = msg->rid;
  fresh.at_ms = node->now_ms;
  fresh.type = (int)msg->type;
  if (a != NULL) {
    *a = fresh; /* the asker reused a request id still in progress */
    return;
  }
  if ((uint64_t)(mt->n + 1) * 2 > mt->cap && !arrivals_make_room(node)) {
    mt->m.untracked++;
    return;
  }
  arrival_place(mt->arrivals, mt->cap, &fresh);
  mt->n++;
}

/* ---- traffic ------------------------------------------------------------- */

void dht__metrics_recv(dht_node *node, const dht_msg *msg, int request_type,
                       size_t body_len) {
  dht_node_metrics *m = &node->metrics.m;
  size_t bytes = body_len + DHT_FRAME_HEADER_LEN;

  if (msg == NULL || !type_known((int)msg->type)) {
    m->bytes_in[DHT_MSG_CLASS_OTHER] += bytes;
    return;
  }
  m->msgs_in[msg->type]++;
  m->bytes_in[class_of(request_type >= 0 ? request_type : (int)msg->type)] +=
      bytes;
}

void dht__metrics_send(dht_node *node, const uint8_t *frame,
                       size_t frame_len) {
  dht_node_metrics *m = &node->metrics.m;
  int type = -1;

  if (frame_len > DHT_FRAME_HEADER_LEN) {
    type = dht_msg_peek_type(frame + DHT_FRAME_HEADER_LEN,
                             frame_len - DHT_FRAME_HEADER_LEN);
  }
  if (type_known(type)) {
    m->msgs_out[type]++;
  }
  m->bytes_out[class_of(type)] += frame_len;
}

static dht_result result_of(const dht_msg *msg) {
  if (msg->type == DHT_MSG_MOVED) {
    return DHT_RESULT_MOVED;
  }
  if (msg->type != DHT_MSG_ERROR) {
    return DHT_RESULT_OK;
  }
  return msg->error_code == DHT_ERR_NOT_FOUND ? DHT_RESULT_NOT_FOUND
                                              : DHT_RESULT_ERROR;
}

static void latency_add(dht_node_metrics *m, int op, uint64_t ms) {
  unsigned b = 0;

  while (b < DHT_LATENCY_BUCKETS - 1 && (1ull << b) < ms) {
    b++;
  }
  m->latency[op][b]++;
  m->latency_sum_ms[op] += ms;
}

void dht__metrics_reply(dht_node *node, uint64_t conn, const dht_msg *msg,
                        size_t frame_len) {
  dht__metrics *mt = &node->metrics;
  dht_node_metrics *m = &mt->m;
  dht__arrival *a = arrival_find(mt, conn, msg->rid);
  int op;

  if (!type_known((int)msg->type)) {
    return;
  }
  if (frame_len > 0) {
    m->msgs_out[msg->type]++;
    m->bytes_out[class_of(a != NULL ? a->type : (int)msg->type)] += frame_len;
    if (msg->type == DHT_MSG_ERROR) {
      m->errors_out[msg->error_code < 0 && msg->error_code >= DHT_ERR_MIN
                        ? -msg->error_code
                        : 0]++;
    }
  }
  if (a == NULL || msg->type == DHT_MSG_ACCEPTED) {
    return; /* not noted, or not the final answer yet */
  }
  if (frame_len > 0 && type_known(a->type)) {
    m->results[a->type][result_of(msg)]++;
    op = op_of(a->type);
    if (op >= 0) {
      latency_add(m, op, node->now_ms - a->at_ms);
    }
  }
  arrival_remove(mt, (uint32_t)(a - mt->arrivals));
}

/* ---- the snapshot --------------------------------------------------------- */

static uint32_t popcount64(uint64_t x) {
  uint32_t n = 0;

  for (; x != 0; x &= x - 1) {
    n++;
  }
  return n;
}

static uint64_t left(uint64_t total, uint64_t done) {
  return total > done ? total - done : 0;
}

/* Milliseconds to move bytes at bytes_per_s (at least 1 byte/s). */
static uint64_t ms_at(uint64_t bytes, uint64_t bytes_per_s) {
  return bytes * 1000 / (bytes_per_s > 0 ? bytes_per_s : 1);
}

/* Bytes a second done_bytes took since start_ms, or 0 when unmeasured. */
static uint64_t pace(const dht_node *node, uint64_t done_bytes,
                     uint64_t start_ms) {
  uint64_t dt = node->now_ms - start_ms;

  return done_bytes > 0 && dt > 0 ? done_bytes * 1000 / dt : 0;
}

/* The records still to repair and hand on, and how long they should take
 * (dht/metrics.h says how each is estimated). */
static void backlog(const dht_node *node, dht_node_metrics *out) {
  const dht__handoff *h = &node->handoff;
  uint64_t cap = node->set.repair_bytes_per_s, repair_ms = 0, rate, debt;
  uint32_t i;

  out->repair_records = 0;
  out->repair_bytes = 0;
  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    const dht__sync *s = &node->repl.syncs[i];
    uint64_t bytes;
    if (node->repl.sync_peers[i] == DHT__NO_PEER) {
      continue;
    }
    bytes = left(s->todo_bytes, s->pushed_bytes);
    out->repair_records += left(s->todo_records, s->pushed);
    out->repair_bytes += bytes;
    rate = pace(node, s->pushed_bytes, s->answered_ms);
    if (rate > 0 && rate < cap && ms_at(bytes, rate) > repair_ms) {
      repair_ms = ms_at(bytes, rate); /* this replica is the slow one */
    }
  }
  /* One rate limit for all, which a batch sent on credit may have left in
   * debt: the debt is paid first. */
  debt = node->repl.repair_tokens < 0 ? (uint64_t)-node->repl.repair_tokens
                                      : 0;
  if (out->repair_bytes > 0 &&
      ms_at(out->repair_bytes + debt, cap) > repair_ms) {
    repair_ms = ms_at(out->repair_bytes + debt, cap);
  }
  out->handoff_records = h->todo_records;
  out->handoff_bytes = h->todo_bytes;
  rate = pace(node, h->done_bytes, h->run_started_ms);
  out->backlog_eta_ms =
      repair_ms + ms_at(h->todo_bytes, rate > 0 ? rate : cap);
}

void dht_node_get_metrics(const dht_node *node, dht_node_metrics *out) {
  uint32_t i, w;

  *out = node->metrics.m;
  out->state = node->state;
  out->succs = node->n_succs;
  out->preds = node->n_preds;
  out->has_pred = node->pred != DHT__NO_PEER;
  out->fingers_distinct = 0;
  for (i = 0; i < DHT_ID_BITS; i++) {
    out->fingers_distinct += node->fingers[i] != DHT__NO_PEER &&
                             (i == 0 || node->fingers[i] != node->fingers[i - 1]);
  }
  out->keys = dht_store_count(node->store);
  out->pending = node->n_pending;
  out->in_progress = node->metrics.n;
  out->sync_sessions = 0;
  out->sync_buckets = 0;
  for (i = 0; i < DHT_SUCC_LIST_MAX; i++) {
    const dht__sync *s = &node->repl.syncs[i];
    if (node->repl.sync_peers[i] == DHT__NO_PEER) {
      continue;
    }
    out->sync_sessions++;
    for (w = 0; w < DHT_SYNC_BUCKETS_MAX / 64; w++) {
      out->sync_buckets += popcount64(s->mask[w]);
    }
  }
  out->handoff_busy = node->handoff.busy;
  backlog(node, out);
  out->writes_in_flight = 0;
  for (i = 0; i < node->repl.cap_writes; i++) {
    out->writes_in_flight += node->repl.writes[i].gen != 0;
  }
  out->acks_held = (uint32_t)node->n_held;
  out->ranges_lost = node->loss.n_ranges;
  out->range_fresh = node->repl.range_fresh;
}
