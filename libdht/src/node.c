/*
 * node.c: a dht_node's lifecycle, its peer table, its pending requests, its
 * outbox of actions, and the dispatch of incoming frames. The protocol itself
 * lives in node_route.c (routed requests, data, hand-off) and node_ring.c
 * (join, stabilize, fingers, leave).
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

void dht_settings_default(dht_settings *s) {
  memset(s, 0, sizeof(*s));
  s->succ_list_len = 4;
  s->replicas = 3;
  s->stabilize_interval_ms = 500;
  s->fix_fingers_interval_ms = 250;
  s->check_pred_interval_ms = 1000;
  s->rpc_timeout_ms = 500;
  s->rto_min_ms = 100;
  s->rpc_retries = 1;
  s->route_timeout_ms = 4000;
  s->route_attempts = 3;
  s->max_hops = 32;
  s->pending_max = 65536;
  s->handoff_batch_bytes = 256 * 1024;
  s->join_attempts = 3;
  s->bad_frames_max = 8;
  s->sync_interval_ms = 1000;
  s->sync_buckets = 64;
  s->repair_bytes_per_s = 8u * 1024 * 1024;
  s->tombstone_grace_ms = 60u * 60 * 1000;
  dht_wire_limits_default(&s->limits);
}

int dht_settings_check(const dht_settings *s) {
  const dht_wire_limits *l = &s->limits;

  if (s->succ_list_len < 1 || s->succ_list_len > DHT_SUCC_LIST_MAX ||
      s->stabilize_interval_ms < 1 || s->fix_fingers_interval_ms < 1 ||
      s->check_pred_interval_ms < 1 || s->rpc_timeout_ms < 1 ||
      s->rpc_retries > 16 || s->route_timeout_ms < s->rpc_timeout_ms ||
      s->route_attempts < 1 || s->route_attempts > 16 || s->max_hops < 1 ||
      s->max_hops > DHT_HOPS_MAX || s->pending_max < 16 ||
      s->pending_max > DHT__PENDING_HARD_MAX || s->handoff_batch_bytes < 1 ||
      s->join_attempts < 1 || s->bad_frames_max < 1) {
    return DHT_ERR_INVAL;
  }
  if (s->replicas < 1 || s->replicas > s->succ_list_len + 1 ||
      s->replicas > DHT_SUCC_LIST_MAX || s->rto_min_ms < 1 ||
      s->rto_min_ms > s->rpc_timeout_ms || s->sync_interval_ms < 1 ||
      s->sync_buckets < 1 || s->sync_buckets > DHT_SYNC_BUCKETS_MAX ||
      s->repair_bytes_per_s < 1024 || s->tombstone_grace_ms < 1) {
    return DHT_ERR_INVAL;
  }
  if (l->addr_len_max < 1 || l->addr_len_max > DHT_ADDR_LEN_MAX ||
      l->key_len_max < 1 || l->frame_len_max < 64 || l->items_max < 1 ||
      /* a HANDOFF batch of one maximal record must fit in a frame */
      (uint64_t)l->key_len_max + l->value_len_max + 256 > l->frame_len_max) {
    return DHT_ERR_INVAL;
  }
  return 0;
}

/* ---- logging and randomness ---------------------------------------------- */

void dht__log(dht_node *node, dht_log_level level, const char *fmt, ...) {
  char line[512];
  int n;
  va_list ap;

  if (node->log == NULL || level > node->log_level) {
    return;
  }
  n = snprintf(line, sizeof(line), "%s t=%llu ", node->short_id,
               (unsigned long long)node->now_ms);
  if (n < 0 || (size_t)n >= sizeof(line)) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  va_end(ap);
  node->log(node->log_ud, level, line);
}

/* xorshift128+: small, fast, and good enough for request ids and jitter. */
uint64_t dht__rand(dht_node *node) {
  uint64_t s1 = node->rng[0];
  const uint64_t s0 = node->rng[1];

  node->rng[0] = s0;
  s1 ^= s1 << 23;
  node->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return node->rng[1] + s0;
}

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* ---- peers ---------------------------------------------------------------- */

static int32_t peer_find(const dht_node *node, const char *addr,
                         size_t addr_len) {
  int32_t i;

  for (i = 0; i < node->n_peers; i++) {
    const dht__peer *p = &node->peers[i];
    if (p->refs > 0 && strlen(p->addr) == addr_len &&
        memcmp(p->addr, addr, addr_len) == 0) {
      return i;
    }
  }
  return DHT__NO_PEER;
}

/*
 * Finds or adds the peer at addr and returns its index with refs unchanged
 * (a new slot starts with refs == 0 and is reclaimed unless the caller holds
 * it before the next intern). id may be NULL when unknown. Returns
 * DHT__NO_PEER when the table cannot grow or addr is unusable.
 */
int32_t dht__peer_intern(dht_node *node, const dht_id *id, const char *addr,
                         size_t addr_len) {
  int32_t idx, i;
  dht__peer *p;

  if (addr_len == 0 || addr_len > DHT_ADDR_LEN_MAX) {
    return DHT__NO_PEER;
  }
  idx = peer_find(node, addr, addr_len);
  if (idx != DHT__NO_PEER) {
    p = &node->peers[idx];
    if (id != NULL && (!p->id_known || !dht_id_eq(&p->id, id))) {
      /* The address now answers with another id (restarted with a new
       * identity): trust the latest word. */
      p->id = *id;
      p->id_known = true;
    }
    return idx;
  }
  for (i = 0; i < node->n_peers; i++) {
    if (node->peers[i].refs == 0) {
      break;
    }
  }
  if (i == node->n_peers) {
    if (node->n_peers == node->cap_peers) {
      int32_t cap = node->cap_peers ? node->cap_peers * 2 : 16;
      dht__peer *peers = realloc(node->peers, (size_t)cap * sizeof(*peers));
      if (peers == NULL) {
        return DHT__NO_PEER;
      }
      node->peers = peers;
      node->cap_peers = cap;
    }
    node->n_peers++;
  }
  p = &node->peers[i];
  memset(p, 0, sizeof(*p));
  memcpy(p->addr, addr, addr_len);
  p->addr[addr_len] = '\0';
  if (id != NULL) {
    p->id = *id;
    p->id_known = true;
  }
  return i;
}

int32_t dht__peer_intern_ref(dht_node *node, const dht_peer_ref *ref) {
  return dht__peer_intern(node, &ref->id, (const char *)ref->addr.p,
                          ref->addr.len);
}

void dht__peer_hold(dht_node *node, int32_t idx) {
  assert(idx >= 0 && idx < node->n_peers);
  node->peers[idx].refs++;
}

void dht__peer_release(dht_node *node, int32_t idx) {
  assert(idx >= 0 && idx < node->n_peers && node->peers[idx].refs > 0);
  node->peers[idx].refs--;
}

/* Points a routing entry at idx (or DHT__NO_PEER), moving the reference. */
void dht__slot_set(dht_node *node, int32_t *slot, int32_t idx) {
  if (*slot == idx) {
    return;
  }
  if (idx != DHT__NO_PEER) {
    dht__peer_hold(node, idx);
  }
  if (*slot != DHT__NO_PEER) {
    dht__peer_release(node, *slot);
  }
  *slot = idx;
}

void dht__peer_to_ref(const dht_node *node, int32_t idx, dht_peer_ref *ref) {
  const dht__peer *p = &node->peers[idx];

  ref->id = p->id;
  ref->addr.p = (const uint8_t *)p->addr;
  ref->addr.len = strlen(p->addr);
}

void dht__self_ref(const dht_node *node, dht_peer_ref *ref) {
  ref->id = node->id;
  ref->addr.p = (const uint8_t *)node->addr;
  ref->addr.len = strlen(node->addr);
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

  dht__peer_hold(node, idx); /* keep the slot alive through the purge */
  node->counters.peers_failed++;
  dht__log(node, DHT_LOG_INFO, "peer %s failed", p->addr);
  if (probe_later && p->id_known) {
    lost_add(node, p);
  }
  dht__succ_remove(node, idx);
  for (i = 0; i < DHT_ID_BITS; i++) {
    if (node->fingers[i] == idx) {
      dht__slot_set(node, &node->fingers[i], DHT__NO_PEER);
    }
  }
  if (node->pred == idx) {
    dht__set_pred(node, DHT__NO_PEER);
  }
  dht__preds_truncate_at(node, idx);
  for (i = 0; i < node->cap_pending; i++) {
    dht__pending *q = node->pending[i];
    if (q != NULL && q->rid != 0 && q->peer == idx && !q->accepted) {
      q->deadline_ms = node->now_ms; /* fail at the next expiry pass */
      q->sends = node->set.rpc_retries + 1;
      node->pending_min_deadline_ms = node->now_ms;
    }
  }
  dht__peer_release(node, idx);
}

/* ---- round-trip times ------------------------------------------------------- */

/* How long to wait for peer's reply: its smoothed round-trip time plus four
 * deviations (RFC 6298), within [rto_min_ms, rpc_timeout_ms]; the longest
 * until the peer has been measured. */
uint32_t dht__rto(const dht_node *node, int32_t peer) {
  const dht__peer *p = &node->peers[peer];
  uint32_t rto;

  if (!p->rtt_known) {
    return node->set.rpc_timeout_ms;
  }
  rto = p->srtt_ms + 4 * p->rttvar_ms;
  if (rto < node->set.rto_min_ms) {
    return node->set.rto_min_ms;
  }
  return rto < node->set.rpc_timeout_ms ? rto : node->set.rpc_timeout_ms;
}

static void rtt_sample(dht_node *node, int32_t peer, uint64_t rtt_ms) {
  dht__peer *p = &node->peers[peer];
  uint32_t r = rtt_ms > UINT32_MAX / 8 ? UINT32_MAX / 8 : (uint32_t)rtt_ms;

  if (!p->rtt_known) {
    p->srtt_ms = r;
    p->rttvar_ms = r / 2;
    p->rtt_known = true;
    return;
  }
  p->rttvar_ms = (3 * p->rttvar_ms + (p->srtt_ms > r ? p->srtt_ms - r
                                                     : r - p->srtt_ms)) / 4;
  p->srtt_ms = (7 * p->srtt_ms + r) / 8;
}

/* ---- pending requests ------------------------------------------------------- */

/*
 * Takes a free pending slot for a request of kind to peer (which it holds).
 * Slots are allocated one by one and never move, so a dht__pending pointer
 * stays valid while other requests come and go. Returns NULL when
 * settings.pending_max requests are in flight or memory runs out.
 */
dht__pending *dht__pending_new(dht_node *node, dht__pending_kind kind,
                               int32_t peer) {
  dht__pending *p = NULL;
  uint32_t i;

  for (i = 0; i < node->cap_pending; i++) {
    if (node->pending[i] == NULL || node->pending[i]->rid == 0) {
      break;
    }
  }
  if (i == node->cap_pending) {
    uint32_t cap = node->cap_pending ? node->cap_pending * 2 : 64;
    dht__pending **slots;
    if (node->cap_pending >= node->set.pending_max) {
      node->counters.pending_full++;
      return NULL;
    }
    if (cap > node->set.pending_max) {
      cap = node->set.pending_max;
    }
    slots = realloc(node->pending, (size_t)cap * sizeof(*slots));
    if (slots == NULL) {
      return NULL;
    }
    memset(slots + node->cap_pending, 0,
           (size_t)(cap - node->cap_pending) * sizeof(*slots));
    node->pending = slots;
    node->cap_pending = cap;
  }
  if (node->pending[i] == NULL) {
    node->pending[i] = calloc(1, sizeof(dht__pending));
    if (node->pending[i] == NULL) {
      return NULL;
    }
  }
  p = node->pending[i];
  p->slot = i;
  p->kind = kind;
  p->peer = peer;
  p->sends = 0;
  p->hops_tried = 0;
  p->accepted = false;
  p->origin = DHT__ORIGIN_CONN;
  p->origin_conn = 0;
  p->origin_rid = 0;
  p->finger_index = 0;
  p->ctx = 0;
  p->ctx_gen = 0;
  p->deadline_ms = DHT_TIME_NEVER;
  p->frame.len = 0;
  p->req.len = 0;
  p->keys.len = 0;
  dht__peer_hold(node, peer);
  dht__pending_rekey(node, p);
  node->n_pending++;
  return p;
}

/* Gives p a fresh request id, so that a late reply to an earlier attempt
 * cannot be mistaken for the answer to the next one. */
void dht__pending_rekey(dht_node *node, dht__pending *p) {
  node->rid_counter++;
  p->rid = node->rid_counter << DHT__RID_SLOT_BITS | p->slot;
}

static dht__pending *pending_find(dht_node *node, uint64_t rid) {
  uint64_t slot = rid & (DHT__PENDING_HARD_MAX - 1);
  dht__pending *p;

  if (rid == 0 || slot >= node->cap_pending) {
    return NULL;
  }
  p = node->pending[slot];
  return p != NULL && p->rid == rid ? p : NULL;
}

/* Frees p's slot for reuse (its buffers are kept to save reallocations). */
void dht__pending_free(dht_node *node, dht__pending *p) {
  assert(p->rid != 0);
  dht__peer_release(node, p->peer);
  p->rid = 0;
  node->n_pending--;
}

/* Moves p to another peer (a new next hop), keeping the reference count. */
void dht__pending_retarget(dht_node *node, dht__pending *p, int32_t peer) {
  dht__peer_hold(node, peer);
  dht__peer_release(node, p->peer);
  p->peer = peer;
}

static void pending_arm(dht_node *node, dht__pending *p, uint64_t wait_ms) {
  p->deadline_ms = node->now_ms + wait_ms;
  if (p->deadline_ms < node->pending_min_deadline_ms) {
    node->pending_min_deadline_ms = p->deadline_ms;
  }
}

/* ---- the outbox ------------------------------------------------------------- */

/* Forgets the actions already polled, once all of them have been. */
static void outbox_compact(dht_node *node) {
  if (node->outbox_head == node->outbox_len) {
    node->outbox_head = 0;
    node->outbox_len = 0;
    node->arena.len = 0;
  }
}

static dht__outbox_entry *outbox_push(dht_node *node, dht_action_type type) {
  dht__outbox_entry *e;

  if (node->outbox_len == node->outbox_cap) {
    size_t cap = node->outbox_cap ? node->outbox_cap * 2 : 64;
    dht__outbox_entry *entries =
        realloc(node->outbox, cap * sizeof(*entries));
    if (entries == NULL) {
      return NULL;
    }
    node->outbox = entries;
    node->outbox_cap = cap;
  }
  e = &node->outbox[node->outbox_len++];
  memset(e, 0, sizeof(*e));
  e->type = type;
  return e;
}

/* Queues SEND of an already encoded frame to peer. */
static int outbox_send_frame(dht_node *node, int32_t peer, const dht_buf *frame) {
  const char *addr = node->peers[peer].addr;
  size_t addr_len = strlen(addr) + 1;
  size_t addr_off = node->arena.len;
  dht__outbox_entry *e;

  if (dht_buf_reserve(&node->arena, addr_len + frame->len) != 0) {
    return DHT_ERR_NOMEM;
  }
  e = outbox_push(node, DHT_ACTION_SEND);
  if (e == NULL) {
    return DHT_ERR_NOMEM;
  }
  dht_buf_append(&node->arena, addr, addr_len);
  e->addr_off = addr_off;
  e->frame_off = node->arena.len;
  e->frame_len = frame->len;
  dht_buf_append(&node->arena, frame->data, frame->len);
  node->counters.frames_out++;
  return 0;
}

/* Encodes msg with p's rid, remembers the frame for resends, sends it to p's
 * peer and arms the reply deadline. Returns 0, DHT_ERR_NOMEM or
 * DHT_ERR_INVAL (msg breaks a hard cap: a bug). */
int dht__pending_send(dht_node *node, dht__pending *p, dht_msg *msg) {
  int rv;

  msg->rid = p->rid;
  p->frame.len = 0;
  rv = dht_msg_encode(msg, &p->frame);
  if (rv != 0) {
    return rv;
  }
  p->sends = 1;
  p->accepted = false;
  p->sent_ms = node->now_ms;
  pending_arm(node, p, dht__rto(node, p->peer));
  return outbox_send_frame(node, p->peer, &p->frame);
}

/* Sends a message that expects no reply (NOTIFY). */
int dht__send(dht_node *node, int32_t peer, dht_msg *msg) {
  dht_buf frame;
  int rv;

  dht_buf_init(&frame);
  /* A fresh counter value: no pending request holds this rid, so a reply
   * (NOTIFY has none) could never be mistaken for another's. */
  msg->rid = ++node->rid_counter << DHT__RID_SLOT_BITS;
  rv = dht_msg_encode(msg, &frame);
  if (rv == 0) {
    rv = outbox_send_frame(node, peer, &frame);
  }
  dht_buf_free(&frame);
  return rv;
}

int dht__reply(dht_node *node, uint64_t conn, dht_msg *msg) {
  size_t off = node->arena.len;
  dht__outbox_entry *e;
  int rv;

  rv = dht_msg_encode(msg, &node->arena);
  if (rv != 0) {
    return rv;
  }
  e = outbox_push(node, DHT_ACTION_REPLY);
  if (e == NULL) {
    node->arena.len = off;
    return DHT_ERR_NOMEM;
  }
  e->conn = conn;
  e->frame_off = off;
  e->frame_len = node->arena.len - off;
  node->counters.frames_out++;
  return 0;
}

void dht__reply_error(dht_node *node, uint64_t conn, uint64_t rid, int code) {
  dht_msg msg;
  const char *text = dht_strerror(code);

  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_ERROR;
  msg.rid = rid;
  msg.error_code = code;
  msg.error_msg.p = (const uint8_t *)text;
  msg.error_msg.len = strlen(text);
  node->counters.errors_sent++;
  dht__reply(node, conn, &msg);
}

void dht__emit_event(dht_node *node, dht_event event, int error) {
  dht__outbox_entry *e = outbox_push(node, DHT_ACTION_EVENT);

  if (e != NULL) {
    e->event = event;
    e->error = error;
  }
}

static void emit_close(dht_node *node, uint64_t conn) {
  dht__outbox_entry *e = outbox_push(node, DHT_ACTION_CLOSE);

  if (e != NULL) {
    e->conn = conn;
    node->counters.closes++;
  }
}

bool dht_node_poll_action(dht_node *node, dht_action *out) {
  const dht__outbox_entry *e;

  if (node->outbox_head == node->outbox_len) {
    return false;
  }
  e = &node->outbox[node->outbox_head++];
  memset(out, 0, sizeof(*out));
  out->type = e->type;
  out->conn = e->conn;
  out->event = e->event;
  out->error = e->error;
  if (e->type == DHT_ACTION_SEND) {
    out->addr = (const char *)node->arena.data + e->addr_off;
  }
  if (e->type == DHT_ACTION_SEND || e->type == DHT_ACTION_REPLY) {
    out->frame = node->arena.data + e->frame_off;
    out->frame_len = e->frame_len;
  }
  return true;
}

/* ---- lifecycle -------------------------------------------------------------- */

static void enter(dht_node *node, uint64_t now_ms) {
  assert(!node->in_call && "dht_node called from inside its own callback");
  node->in_call = true;
  /* The clock is monotonic, but a host that passes an older time must not
   * make deadlines move backwards. */
  if (now_ms > node->now_ms) {
    node->now_ms = now_ms;
  }
  outbox_compact(node);
}

static void leave_call(dht_node *node) { node->in_call = false; }

int dht_node_new(dht_node **pnode, const dht_node_config *cfg,
                 uint64_t now_ms) {
  dht_node *node;
  size_t addr_len;
  uint64_t seed = cfg->seed;
  uint32_t i;

  if (cfg->addr == NULL || cfg->store == NULL ||
      dht_settings_check(&cfg->settings) != 0) {
    return DHT_ERR_INVAL;
  }
  addr_len = strlen(cfg->addr);
  if (addr_len == 0 || addr_len > cfg->settings.limits.addr_len_max) {
    return DHT_ERR_INVAL;
  }
  node = calloc(1, sizeof(*node));
  if (node == NULL) {
    return DHT_ERR_NOMEM;
  }
  node->set = cfg->settings;
  memcpy(node->addr, cfg->addr, addr_len + 1);
  if (cfg->id != NULL) {
    node->id = *cfg->id;
  } else {
    dht_id_hash(&node->id, cfg->addr, addr_len);
  }
  dht_id_short(&node->id, node->short_id);
  node->store = cfg->store;
  node->log = cfg->log;
  node->log_ud = cfg->log_ud;
  node->log_level = cfg->log_level;
  node->rng[0] = splitmix64(&seed);
  node->rng[1] = splitmix64(&seed);
  node->now_ms = now_ms;
  node->state = DHT_NODE_IDLE;
  node->maintenance = true;
  node->pred = DHT__NO_PEER;
  for (i = 0; i < DHT_ID_BITS; i++) {
    node->fingers[i] = DHT__NO_PEER;
  }
  /* Request ids start at a random point so that a restarted node does not
   * reuse the ids its previous life had in flight. */
  node->rid_counter = dht__rand(node) >> (DHT__RID_SLOT_BITS + 1);
  node->pending_min_deadline_ms = DHT_TIME_NEVER;
  node->stabilize_at_ms = DHT_TIME_NEVER;
  node->fix_fingers_at_ms = DHT_TIME_NEVER;
  node->check_pred_at_ms = DHT_TIME_NEVER;
  node->join_retry_at_ms = DHT_TIME_NEVER;
  dht__repl_init(node, cfg->wall_ms);
  dht_buf_init(&node->arena);
  *pnode = node;
  return 0;
}

void dht_node_del(dht_node *node) {
  uint32_t i;

  if (node == NULL) {
    return;
  }
  for (i = 0; i < node->cap_pending; i++) {
    dht__pending *p = node->pending[i];
    if (p != NULL) {
      dht_buf_free(&p->frame);
      dht_buf_free(&p->req);
      dht_buf_free(&p->keys);
      free(p);
    }
  }
  free(node->pending);
  dht__repl_free(node);
  free(node->peers);
  free(node->outbox);
  dht_buf_free(&node->arena);
  free(node);
}

/* ---- incoming frames -------------------------------------------------------- */

static dht__bad_conn *bad_conn_slot(dht_node *node, uint64_t conn, bool add) {
  dht__bad_conn *free_slot = NULL;
  size_t i;

  for (i = 0; i < DHT__BAD_CONNS; i++) {
    dht__bad_conn *b = &node->bad_conns[i];
    if (b->conn == conn) {
      return b;
    }
    if (b->conn == 0 && free_slot == NULL) {
      free_slot = b;
    }
  }
  if (!add) {
    return NULL;
  }
  if (free_slot == NULL) {
    /* Too many noisy connections to track: forget one at random. */
    free_slot = &node->bad_conns[dht__rand(node) % DHT__BAD_CONNS];
  }
  free_slot->conn = conn;
  free_slot->count = 0;
  return free_slot;
}

static void on_bad_frame(dht_node *node, uint64_t conn, const dht_msg *msg,
                         int code) {
  dht__bad_conn *b = bad_conn_slot(node, conn, true);

  node->counters.bad_frames++;
  b->count++;
  if (b->count == 1) {
    dht__log(node, DHT_LOG_WARN, "bad frame on conn %llu: %s",
             (unsigned long long)conn, dht_strerror(code));
  }
  /* Never answer a reply or a NOTIFY: its rid is not ours to answer, and
   * errors answering errors could loop. */
  if (dht_msg_can_reply(msg) && !dht_msg_type_is_reply((int)msg->type) &&
      msg->type != DHT_MSG_NOTIFY) {
    dht__reply_error(node, conn, msg->rid, code);
  }
  if (b->count >= node->set.bad_frames_max) {
    dht__log(node, DHT_LOG_WARN, "closing conn %llu after %u bad frames",
             (unsigned long long)conn, b->count);
    emit_close(node, conn);
    b->conn = 0;
  }
}

static bool is_serving(const dht_node *node) {
  return node->state == DHT_NODE_JOINED || node->state == DHT_NODE_LEAVING;
}

static void on_request(dht_node *node, uint64_t conn, const dht_msg *msg,
                       const uint8_t *body, size_t len) {
  dht_msg out;

  node->counters.requests_in++;
  if (msg->type == DHT_MSG_STATS) {
    dht__reply_stats(node, conn, msg->rid);
    return;
  }
  if (msg->type == DHT_MSG_HANDOFF && node->state != DHT_NODE_LEAVING &&
      node->state != DHT_NODE_LEFT) {
    /* Taken even while joining: that is how a new node gets its range.
     * A node on its way out refuses, so the sender keeps the keys. */
    dht__on_handoff(node, conn, msg);
    return;
  }
  if (!is_serving(node)) {
    /* A node that is not (or no longer) in a ring must not be mistaken for
     * a live member: say so, and the asker routes around it. */
    if (msg->type != DHT_MSG_NOTIFY) {
      dht__reply_error(node, conn, msg->rid, DHT_ERR_STATE);
    }
    return;
  }
  switch (msg->type) {
  case DHT_MSG_PING:
    memset(&out, 0, sizeof(out));
    out.type = DHT_MSG_PONG;
    out.rid = msg->rid;
    out.has_peer = true;
    dht__self_ref(node, &out.peer);
    dht__reply(node, conn, &out);
    break;
  case DHT_MSG_FIND_SUCC:
  case DHT_MSG_GET:
  case DHT_MSG_PUT:
  case DHT_MSG_DEL:
    dht__route_request(node, conn, msg, body, len);
    break;
  case DHT_MSG_GET_NEIGHBORS:
    dht__reply_neighbors(node, conn, msg->rid);
    break;
  case DHT_MSG_NOTIFY:
    dht__on_notify(node, msg);
    break;
  case DHT_MSG_LEAVE:
    dht__on_leave(node, conn, msg);
    break;
  case DHT_MSG_HANDOFF: /* refused while leaving, see above */
    dht__reply_error(node, conn, msg->rid, DHT_ERR_STATE);
    break;
  case DHT_MSG_REPLICATE:
    dht__on_replicate(node, conn, msg);
    break;
  case DHT_MSG_SYNC:
    dht__on_sync(node, conn, msg);
    break;
  case DHT_MSG_FETCH:
    dht__on_fetch(node, conn, msg);
    break;
  case DHT_MSG_SCAN:
    dht__on_scan(node, conn, msg);
    break;
  default:
    assert(0 && "on_request called with a reply type");
  }
}

static void on_reply(dht_node *node, const dht_msg *msg) {
  dht__pending *p = pending_find(node, msg->rid);

  if (p == NULL) {
    /* Late (after a timeout and retry), duplicated, or bogus. */
    node->counters.replies_unmatched++;
    return;
  }
  if (p->sends == 1 && !p->accepted) {
    rtt_sample(node, p->peer, node->now_ms - p->sent_ms);
  }
  switch (p->kind) {
  case DHT__PEND_ROUTE:
    dht__route_on_reply(node, p, msg);
    break;
  case DHT__PEND_HANDOFF:
    if (msg->type != DHT_MSG_ACCEPTED) {
      dht__handoff_on_done(node, p, msg->type == DHT_MSG_OK);
    }
    break;
  case DHT__PEND_REPLICATE:
  case DHT__PEND_CONSULT:
  case DHT__PEND_SYNC:
  case DHT__PEND_PUSH:
    dht__repl_on_reply(node, p, msg);
    break;
  default:
    dht__ring_on_reply(node, p, msg);
    break;
  }
}

int dht_node_recv(dht_node *node, uint64_t conn, const uint8_t *body,
                  size_t len, uint64_t now_ms) {
  dht_msg msg;
  dht__bad_conn *b;
  int rv;

  assert(conn != 0);
  enter(node, now_ms);
  node->counters.frames_in++;
  rv = dht_msg_decode(&msg, body, len, &node->set.limits);
  if (rv != 0) {
    on_bad_frame(node, conn, &msg, rv);
  } else {
    b = bad_conn_slot(node, conn, false);
    if (b != NULL) {
      b->conn = 0; /* a good frame ends a run of bad ones */
    }
    if (dht_msg_type_is_reply((int)msg.type)) {
      on_reply(node, &msg);
    } else {
      on_request(node, conn, &msg, body, len);
    }
  }
  dht_msg_free(&msg);
  leave_call(node);
  return rv;
}

void dht_node_conn_closed(dht_node *node, uint64_t conn) {
  dht__bad_conn *b = bad_conn_slot(node, conn, false);

  if (b != NULL) {
    b->conn = 0;
  }
}

void dht_node_peer_unreachable(dht_node *node, const char *addr,
                               uint64_t now_ms) {
  int32_t idx;
  uint32_t i;

  enter(node, now_ms);
  idx = peer_find(node, addr, strlen(addr));
  if (idx != DHT__NO_PEER) {
    for (i = 0; i < node->cap_pending; i++) {
      dht__pending *p = node->pending[i];
      if (p != NULL && p->rid != 0 && p->peer == idx && !p->accepted) {
        /* No point resending: fail at this expiry pass. */
        p->sends = node->set.rpc_retries + 1;
        pending_arm(node, p, 0);
      }
    }
  }
  leave_call(node);
  dht_node_handle_expiry(node, now_ms);
}

/* ---- timers ----------------------------------------------------------------- */

static void pending_timeout(dht_node *node, dht__pending *p) {
  node->counters.rpc_timeouts++;
  switch (p->kind) {
  case DHT__PEND_ROUTE:
    if (p->accepted) {
      /* The next hop is alive; something further along is not. */
      dht__route_on_failure(node, p, DHT_ERR_TIMEOUT);
    } else {
      dht__declare_dead(node, p->peer, true);
      dht__route_on_failure(node, p, DHT_ERR_UNAVAILABLE);
    }
    break;
  case DHT__PEND_HANDOFF:
    dht__declare_dead(node, p->peer, true);
    dht__handoff_on_done(node, p, false);
    break;
  case DHT__PEND_REPLICATE:
  case DHT__PEND_CONSULT:
  case DHT__PEND_SYNC:
  case DHT__PEND_PUSH:
    dht__repl_on_failure(node, p);
    break;
  default:
    dht__on_ring_failure(node, p);
    break;
  }
}

static void pending_expire(dht_node *node) {
  uint64_t min = DHT_TIME_NEVER;
  uint32_t i, round;
  bool any = true;

  if (node->now_ms < node->pending_min_deadline_ms) {
    return;
  }
  /* A handler may make other requests due at once (a peer declared dead
   * fails everything sent to it), so go round until nothing is due; the
   * bound only guards against a bug turning this into a spin. */
  for (round = 0; any && round < 8; round++) {
    any = false;
    for (i = 0; i < node->cap_pending; i++) {
      dht__pending *p = node->pending[i];
      if (p == NULL || p->rid == 0 || p->deadline_ms > node->now_ms) {
        continue;
      }
      any = true;
      if (!p->accepted && p->sends <= node->set.rpc_retries) {
        /* back off: the peer may only be slow */
        p->deadline_ms =
            node->now_ms + ((uint64_t)dht__rto(node, p->peer) << p->sends);
        p->sends++;
        outbox_send_frame(node, p->peer, &p->frame);
      } else {
        pending_timeout(node, p);
      }
    }
  }
  for (i = 0; i < node->cap_pending; i++) {
    const dht__pending *p = node->pending[i];
    if (p != NULL && p->rid != 0 && p->deadline_ms < min) {
      min = p->deadline_ms;
    }
  }
  node->pending_min_deadline_ms = min;
}

void dht_node_handle_expiry(dht_node *node, uint64_t now_ms) {
  enter(node, now_ms);
  pending_expire(node);
  dht__ring_timers(node);
  dht__repl_timers(node);
  leave_call(node);
}

uint64_t dht_node_next_deadline(const dht_node *node) {
  uint64_t t = dht__ring_next_deadline(node);
  uint64_t repl = dht__repl_next_deadline(node);

  if (repl < t) {
    t = repl;
  }
  return t < node->pending_min_deadline_ms ? t : node->pending_min_deadline_ms;
}

/* ---- accessors -------------------------------------------------------------- */

dht_node_state dht_node_get_state(const dht_node *node) { return node->state; }

const dht_id *dht_node_id(const dht_node *node) { return &node->id; }

const char *dht_node_addr(const dht_node *node) { return node->addr; }

bool dht_node_pred(const dht_node *node, dht_id *id, const char **addr) {
  if (node->pred == DHT__NO_PEER) {
    return false;
  }
  if (id != NULL) {
    *id = node->peers[node->pred].id;
  }
  if (addr != NULL) {
    *addr = node->peers[node->pred].addr;
  }
  return true;
}

size_t dht_node_preds(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max) {
  size_t i;

  for (i = 0; i < node->n_preds && i < max; i++) {
    if (ids != NULL) {
      ids[i] = node->peers[node->preds[i]].id;
    }
    if (addrs != NULL) {
      addrs[i] = node->peers[node->preds[i]].addr;
    }
  }
  return node->n_preds;
}

size_t dht_node_succs(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max) {
  size_t i;

  for (i = 0; i < node->n_succs && i < max; i++) {
    if (ids != NULL) {
      ids[i] = node->peers[node->succs[i]].id;
    }
    if (addrs != NULL) {
      addrs[i] = node->peers[node->succs[i]].addr;
    }
  }
  return node->n_succs;
}

bool dht_node_finger(const dht_node *node, unsigned i, dht_id *id,
                     const char **addr) {
  int32_t idx;

  if (i >= DHT_ID_BITS || node->fingers[i] == DHT__NO_PEER) {
    return false;
  }
  idx = node->fingers[i];
  if (id != NULL) {
    *id = node->peers[idx].id;
  }
  if (addr != NULL) {
    *addr = node->peers[idx].addr;
  }
  return true;
}

const dht_node_counters *dht_node_get_counters(const dht_node *node) {
  return &node->counters;
}

size_t dht_node_pending_count(const dht_node *node) { return node->n_pending; }

/* Entry points whose work lives in node_ring.c, wrapped here so that every
 * call into the node passes through enter()/leave_call(). */

int dht_node_create_ring(dht_node *node, uint64_t now_ms) {
  int rv;

  enter(node, now_ms);
  rv = dht__ring_create(node);
  leave_call(node);
  return rv;
}

int dht_node_join(dht_node *node, const char *bootstrap_addr,
                  uint64_t now_ms) {
  int rv;

  enter(node, now_ms);
  rv = dht__ring_join(node, bootstrap_addr);
  leave_call(node);
  return rv;
}

int dht_node_leave(dht_node *node, uint64_t now_ms) {
  int rv;

  enter(node, now_ms);
  rv = dht__ring_leave(node);
  leave_call(node);
  return rv;
}

int dht_node_install_routing(dht_node *node, const dht_routing_peer *pred,
                             const dht_routing_peer *succs, size_t n_succs,
                             const dht_routing_peer *fingers,
                             uint64_t now_ms) {
  int rv;

  enter(node, now_ms);
  rv = dht__ring_install(node, pred, succs, n_succs, fingers);
  leave_call(node);
  return rv;
}

void dht_node_set_maintenance(dht_node *node, bool enabled, uint64_t now_ms) {
  enter(node, now_ms);
  dht__ring_set_maintenance(node, enabled);
  leave_call(node);
}
