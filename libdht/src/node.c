/*
 * node.c: the top of a dht_node: the public API of dht/node.h, the hooks
 * that carry events of the lower layers up, and the dispatch of incoming
 * frames. One table below says, for every request type, which handler
 * serves it and in which node states; everything under it (node_ring.c,
 * node_route.c, node_handoff.c, node_repl.c, node_table.c, node_base.c) is
 * described in node_state.h.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "node_ring.h"

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
  s->outbox_bytes_max = 32u * 1024 * 1024;
  s->handoff_batch_bytes = 256 * 1024;
  s->join_attempts = 3;
  s->bad_frames_max = 8;
  s->sync_interval_ms = 1000;
  s->sync_buckets = 64;
  s->repair_bytes_per_s = 8u * 1024 * 1024;
  s->tombstone_grace_ms = 60u * 60 * 1000;
  s->max_clock_skew_ms = 10000;
  s->store_retry_ms = 1000;
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
      s->pending_max > DHT__PENDING_HARD_MAX ||
      s->outbox_bytes_max < l->frame_len_max || s->handoff_batch_bytes < 1 ||
      s->join_attempts < 1 || s->bad_frames_max < 1) {
    return DHT_ERR_INVAL;
  }
  if (s->replicas < 1 || s->replicas > s->succ_list_len + 1 ||
      s->replicas > DHT_SUCC_LIST_MAX || s->rto_min_ms < 1 ||
      s->rto_min_ms > s->rpc_timeout_ms || s->sync_interval_ms < 1 ||
      s->sync_buckets < 1 || s->sync_buckets > DHT_SYNC_BUCKETS_MAX ||
      s->repair_bytes_per_s < 1024 || s->tombstone_grace_ms < 1 ||
      s->max_clock_skew_ms < 1 || s->max_clock_skew_ms > 24u * 3600 * 1000 ||
      s->store_retry_ms < 1) {
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

/* ---- every call into the node passes through here --------------------------- */

static void enter(dht_node *node, uint64_t now_ms) {
  assert(!node->in_call && "dht_node called from inside its own callback");
  node->in_call = true;
  /* The clock is monotonic, but a host that passes an older time must not
   * make deadlines move backwards. */
  if (now_ms > node->now_ms) {
    node->now_ms = now_ms;
  }
  dht__outbox_compact(node);
}

static void leave_call(dht_node *node) {
  DHT__DEBUG_CHECK(node, all);
  node->in_call = false;
}

/* ---- hooks: events of the lower layers, carried up ------------------------- */

static void on_pred_changed(dht_node *node) {
  dht__ring_on_pred_changed(node);
  dht__lost_on_pred_change(node);
  dht__repl_on_pred_change(node);
  if (node->pred != DHT__NO_PEER) {
    dht__handoff_pump(node); /* keys in its new range go to it */
  }
}

static const dht__hooks hooks = {
    on_pred_changed,           /* pred_changed */
    dht__repl_on_succs_change, /* succs_changed */
    dht__ring_on_succ_lost,    /* succ_lost */
    dht__leave_step,           /* handoff_drained */
};

/* ---- lifecycle -------------------------------------------------------------- */

int dht_node_new(dht_node **pnode, const dht_node_config *cfg,
                 uint64_t now_ms) {
  dht_node *node;
  uint32_t i;
  int rv;

  if (cfg->addr == NULL || cfg->store == NULL ||
      dht_settings_check(&cfg->settings) != 0) {
    return DHT_ERR_INVAL;
  }
  node = calloc(1, sizeof(*node));
  if (node == NULL) {
    return DHT_ERR_NOMEM;
  }
  rv = dht__base_init(node, cfg, now_ms);
  if (rv != 0) {
    free(node);
    return rv;
  }
  node->state = DHT_NODE_IDLE;
  node->maintenance = true;
  node->hooks = hooks;
  node->pred = DHT__NO_PEER;
  for (i = 0; i < DHT_ID_BITS; i++) {
    node->fingers[i] = DHT__NO_PEER;
  }
  node->ring.stabilize_at_ms = DHT_TIME_NEVER;
  node->ring.fix_fingers_at_ms = DHT_TIME_NEVER;
  node->ring.check_pred_at_ms = DHT_TIME_NEVER;
  node->ring.join_retry_at_ms = DHT_TIME_NEVER;
  dht__repl_init(node);
  *pnode = node;
  return 0;
}

void dht_node_del(dht_node *node) {
  if (node == NULL) {
    return;
  }
  dht__ring_free(node);
  dht__repl_free(node);
  dht__lost_free(node);
  dht__base_free(node);
  dht__metrics_free(node);
  free(node);
}

/* ---- requests: one table decides who serves what ------------------------------ */

/* Node states as bits, for request_kind.served_in. */
#define IN_STATE(s) (1u << (s))
#define SERVING (IN_STATE(DHT_NODE_JOINED) | IN_STATE(DHT_NODE_LEAVING))
#define ANY_STATE                                                              \
  (IN_STATE(DHT_NODE_IDLE) | IN_STATE(DHT_NODE_JOINING) | SERVING |            \
   IN_STATE(DHT_NODE_LEFT))

/* Connection roles as bits, for request_kind.roles. */
#define FROM(r) (1u << (r))
#define MEMBERS FROM(DHT_ROLE_MEMBER)
#define ANYONE (FROM(DHT_ROLE_MEMBER) | FROM(DHT_ROLE_CLIENT))

typedef void request_fn(dht_node *node, const dht__request *in);

/* Who may send a message, as the ring sees it (docs/PROTOCOL.md 4.4). */
typedef enum sender_rule {
  ANYWHERE,   /* anyone the role allows */
  ITSELF,     /* the node its peer field names, confirmed on this
                 connection (NOTIFY, LEAVE) */
  PREDECESSOR, /* a confirmed src that is one of this node's predecessors,
                  or lies between the farthest it knows and itself
                  (REPLICATE, SYNC, FETCH: an owner to its replicas) */
  CONFIRMED,  /* any confirmed src (HANDOFF: after a partition heals, a
                 node may hold records far from its range and hand them
                 to whoever its stale view names; refusing strands them,
                 dht-sim seeds --seed 53) */
} sender_rule;

typedef struct request_kind {
  request_fn *handler; /* NULL for reply types */
  unsigned served_in;  /* states (IN_STATE bits) it is served in; in any
                          other it is refused with DHT_ERR_STATE */
  bool one_way;        /* the sender expects no answer, not even a refusal */
  unsigned roles;      /* roles (FROM bits) that may send it; from any
                          other it is refused with DHT_ERR_FORBIDDEN */
  sender_rule from;    /* the ring positions it is taken from; others are
                          refused with DHT_ERR_UNBOUND (not confirmed yet)
                          or DHT_ERR_NOT_NEIGHBOR */
} request_kind;

static void on_ping(dht_node *node, const dht__request *in) {
  dht_msg out;

  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_PONG;
  out.rid = in->msg->rid;
  out.has_peer = true;
  dht__self_ref(node, &out.peer);
  dht__reply(node, in->conn, &out);
}

static const char *const counter_names[] = {
#define DHT__COUNTER_NAME(name) #name,
    DHT_NODE_COUNTER_MAP(DHT__COUNTER_NAME)
#undef DHT__COUNTER_NAME
};

#define N_COUNTERS (sizeof(counter_names) / sizeof(counter_names[0]))

/* STATS names of the bytes counted per message class (dht/metrics.h). */
static const char *const bytes_in_names[] = {
#define DHT__BYTES_IN_NAME(name, label) "bytes_in_" label,
    DHT_MSG_CLASS_MAP(DHT__BYTES_IN_NAME)
#undef DHT__BYTES_IN_NAME
};
static const char *const bytes_out_names[] = {
#define DHT__BYTES_OUT_NAME(name, label) "bytes_out_" label,
    DHT_MSG_CLASS_MAP(DHT__BYTES_OUT_NAME)
#undef DHT__BYTES_OUT_NAME
};

static void counter_set(dht_counter *c, const char *name, uint64_t value) {
  c->name.p = (const uint8_t *)name;
  c->name.len = strlen(name);
  c->value = value;
}

/* Lists the lost ranges in msg (STATS_R), their holders in holders. */
static void stats_lost(const dht_node *node, dht_msg *msg,
                       dht_lost_range lost[DHT_LOST_MAX],
                       dht_peer_ref holders[DHT_LOST_MAX][DHT_SUCC_LIST_MAX]) {
  uint32_t i, k;

  for (i = 0; i < node->loss.n_ranges; i++) {
    const dht__lost_range *l = &node->loss.ranges[i];
    lost[i].from = l->from;
    lost[i].to = l->to;
    lost[i].at_ms = l->at_ms;
    for (k = 0; k < l->n_holders; k++) {
      holders[i][k].id = l->holder_ids[k];
      holders[i][k].addr.p = (const uint8_t *)l->holder_addrs[k];
      holders[i][k].addr.len = strlen(l->holder_addrs[k]);
    }
    lost[i].holders = holders[i];
    lost[i].n_holders = l->n_holders;
  }
  msg->lost = lost;
  msg->n_lost = node->loss.n_ranges;
}

/* The successor whose id is id, or DHT__NO_PEER. */
static int32_t succ_with_id(const dht_node *node, const dht_id *id) {
  uint32_t i;

  for (i = 0; i < node->n_succs; i++) {
    if (dht_id_eq(&node->peers[node->succs[i]].id, id)) {
      return node->succs[i];
    }
  }
  return DHT__NO_PEER;
}

/* Lists in msg (STATS_R) the last exchange with each replica that is still
 * a successor, in the order of the notes. */
static void stats_exchanges(const dht_node *node, dht_msg *msg,
                            dht_exchange out[DHT_EXCHANGES_MAX]) {
  uint32_t i;
  size_t n = 0;

  for (i = 0; i < DHT_EXCHANGES_MAX; i++) {
    const dht__exchange_note *x = &node->repl.exchanges[i];
    int32_t peer = x->used ? succ_with_id(node, &x->peer) : DHT__NO_PEER;
    uint64_t end;
    if (peer == DHT__NO_PEER) {
      continue;
    }
    end = x->outcome == DHT_EXCHANGE_RUNNING ? node->now_ms : x->ended_ms;
    dht__peer_to_ref(node, peer, &out[n].peer);
    out[n].from = x->from;
    out[n].to = x->to;
    out[n].ago_ms = node->now_ms - x->started_ms;
    out[n].took_ms = end - x->started_ms;
    out[n].buckets = x->buckets;
    out[n].pushed = x->pushed;
    out[n].outcome = x->outcome;
    n++;
  }
  msg->exchanges = out;
  msg->n_exchanges = n;
}

/* Lists in msg (STATS_R) the peers this node declared dead and probes. */
static void stats_dead(const dht_node *node, dht_msg *msg,
                       dht_dead_peer out[DHT__LOST_MAX]) {
  uint32_t i;
  size_t n = 0;

  for (i = 0; i < DHT__LOST_MAX; i++) {
    const dht__lost *l = &node->lost[i];
    if (l->addr[0] == '\0') {
      continue;
    }
    out[n].peer.id = l->id;
    out[n].peer.addr.p = (const uint8_t *)l->addr;
    out[n].peer.addr.len = strlen(l->addr);
    out[n].ago_ms = node->now_ms - l->lost_at_ms;
    n++;
  }
  msg->dead = out;
  msg->n_dead = n;
}

static void on_stats(dht_node *node, const dht__request *in) {
  dht_peer_ref lost_holders[DHT_LOST_MAX][DHT_SUCC_LIST_MAX];
  dht_peer_ref succs[DHT_SUCC_LIST_MAX], preds[DHT_SUCC_LIST_MAX];
  dht_finger_ref fingers[DHT_ID_BITS];
  dht_lost_range lost[DHT_LOST_MAX];
  dht_exchange exchanges[DHT_EXCHANGES_MAX];
  dht_dead_peer dead[DHT__LOST_MAX];
  dht_counter counters[N_COUNTERS + 13 + 2 * DHT_MSG_CLASSES];
  const uint64_t *values = (const uint64_t *)&node->counters;
  dht_node_metrics m;
  dht_msg msg;
  uint32_t i;
  size_t n;
  int c;

  dht__describe_self(node, &msg, DHT_MSG_STATS_R, in->msg->rid, succs, preds);
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
    counter_set(&counters[i], counter_names[i], values[i]);
  }
  dht_node_get_metrics(node, &m);
  counter_set(&counters[i++], "keys", m.keys);
  counter_set(&counters[i++], "pending", node->n_pending);
  counter_set(&counters[i++], "state", (uint64_t)node->state);
  counter_set(&counters[i++], "replicas", node->set.replicas);
  counter_set(&counters[i++], "range_fresh", node->repl.range_fresh);
  counter_set(&counters[i++], "ready", dht__ring_ready(node));
  counter_set(&counters[i++], "clock_behind_ms",
              node->repl.clock_offset_ms > 0
                  ? (uint64_t)node->repl.clock_offset_ms
                  : 0);
  counter_set(&counters[i++], "clock_ahead_ms",
              node->repl.clock_offset_ms < 0
                  ? (uint64_t)-node->repl.clock_offset_ms
                  : 0);
  counter_set(&counters[i++], "repair_records", m.repair_records);
  counter_set(&counters[i++], "repair_bytes", m.repair_bytes);
  counter_set(&counters[i++], "handoff_records", m.handoff_records);
  counter_set(&counters[i++], "handoff_bytes", m.handoff_bytes);
  counter_set(&counters[i++], "backlog_eta_ms", m.backlog_eta_ms);
  for (c = 0; c < DHT_MSG_CLASSES; c++) {
    counter_set(&counters[i++], bytes_in_names[c],
                node->metrics.m.bytes_in[c]);
    counter_set(&counters[i++], bytes_out_names[c],
                node->metrics.m.bytes_out[c]);
  }
  msg.counters = counters;
  stats_lost(node, &msg, lost, lost_holders);
  stats_exchanges(node, &msg, exchanges);
  stats_dead(node, &msg, dead);
  msg.n_counters = i;
  dht__reply(node, in->conn, &msg);
}

/* What a client may do is what `dht put/get/del/lookup/ping/stats` needs;
 * everything that changes or reveals the ring's internal state (routing,
 * hand-off, replication, anti-entropy, the record listing, the operator's
 * ACK_LOST) takes the member key. */
static void on_check_link(dht_node *node, const dht__request *in);

static const request_kind requests[DHT_MSG_TYPE_LAST + 1] = {
    [DHT_MSG_PING] = {on_ping, SERVING, false, ANYONE, ANYWHERE},
    [DHT_MSG_FIND_SUCC] = {dht__route_request, SERVING, false, ANYONE,
                           ANYWHERE},
    [DHT_MSG_GET] = {dht__route_request, SERVING, false, ANYONE, ANYWHERE},
    [DHT_MSG_PUT] = {dht__route_request, SERVING, false, ANYONE, ANYWHERE},
    [DHT_MSG_DEL] = {dht__route_request, SERVING, false, ANYONE, ANYWHERE},
    [DHT_MSG_GET_NEIGHBORS] = {dht__on_get_neighbors, SERVING, false, MEMBERS,
                               ANYWHERE},
    [DHT_MSG_NOTIFY] = {dht__on_notify, SERVING, true, MEMBERS, ITSELF},
    [DHT_MSG_LEAVE] = {dht__on_leave, SERVING, false, MEMBERS, ITSELF},
    [DHT_MSG_STATS] = {on_stats, ANY_STATE, false, ANYONE, ANYWHERE},
    /* Taken even before joining: that is how a new node gets its range. A
     * node on its way out refuses, so the sender keeps the keys. */
    [DHT_MSG_HANDOFF] = {dht__on_handoff,
                         IN_STATE(DHT_NODE_IDLE) | IN_STATE(DHT_NODE_JOINING) |
                             IN_STATE(DHT_NODE_JOINED),
                         false, MEMBERS, CONFIRMED},
    /* A leaving node takes no new copies: they would leave with it. */
    [DHT_MSG_REPLICATE] = {dht__on_replicate, IN_STATE(DHT_NODE_JOINED),
                           false, MEMBERS, PREDECESSOR},
    [DHT_MSG_SYNC] = {dht__on_sync, SERVING, false, MEMBERS, PREDECESSOR},
    [DHT_MSG_FETCH] = {dht__on_fetch, SERVING, false, MEMBERS, PREDECESSOR},
    /* The operator's: `dht check` lists and acknowledges with them. */
    [DHT_MSG_SCAN] = {dht__on_scan, SERVING, false, MEMBERS, ANYWHERE},
    [DHT_MSG_ACK_LOST] = {dht__on_ack_lost, ANY_STATE, false, MEMBERS,
                          ANYWHERE},
    /* Answered in every state: a leaving node must still confirm the
     * LEAVE it sends. */
    [DHT_MSG_CHECK_LINK] = {on_check_link, ANY_STATE, false, MEMBERS,
                            ANYWHERE},
};

/* ---- who sent it: links and ring positions -------------------------------------- */

/*
 * An inbound connection's frames name their sender (a NOTIFY's or LEAVE's
 * peer, the src of the others) and carry the token that sender uses for
 * this node. Neither proves anything: anyone can write them. So before the
 * node takes such a message it asks the named address, over its own
 * connection there, whether it sent that token (CHECK_LINK): a process that
 * is not at that address never hears the question, and the node at the
 * address answers no to a token it did not make. The answer binds the
 * connection to the address and the id it gave (dht__link); until then the
 * message is refused ERROR UNBOUND, which the sender's base layer answers
 * by sending it again a round trip later. A NOTIFY, which gets no answer,
 * is kept in the link and applied when the address confirms.
 */

/* A message refused for its sender, counted; logged at 1, 2, 4, 8, ...
 * times (rate-limited). A sender not confirmed yet is the normal first
 * message of every inbound link (info); the others may be an attack (warn). */
static void count_refused(dht_node *node, uint64_t *counter, uint64_t conn,
                          const dht_msg *msg, const char *why) {
  uint64_t n = ++*counter;

  if ((n & (n - 1)) == 0) {
    dht__log(node,
             counter == &node->counters.unbound_refused ? DHT_LOG_INFO
                                                        : DHT_LOG_WARN,
             "refused %s from conn %llu: %s (%llu so far)",
             dht_msg_type_name((int)msg->type), (unsigned long long)conn,
             why, (unsigned long long)n);
  }
}

static dht__link *link_find(dht_node *node, uint64_t conn) {
  size_t i;

  for (i = 0; i < DHT__LINKS_MAX; i++) {
    if (node->links[i].conn == conn) {
      return &node->links[i];
    }
  }
  return NULL;
}

/* A slot for a new link: a free one, else the least recently used
 * confirmed one (it confirms again when it next sends); NULL when every
 * slot is being checked. */
static dht__link *link_slot(dht_node *node) {
  dht__link *victim = NULL;
  size_t i;

  for (i = 0; i < DHT__LINKS_MAX; i++) {
    dht__link *l = &node->links[i];
    if (l->conn == 0) {
      return l;
    }
    if (l->confirmed && (victim == NULL || l->used_ms < victim->used_ms)) {
      victim = l;
    }
  }
  return victim;
}

static size_t link_checks_out(const dht_node *node) {
  size_t i, n = 0;

  for (i = 0; i < DHT__LINKS_MAX; i++) {
    n += node->links[i].conn != 0 && !node->links[i].confirmed;
  }
  return n;
}

static const dht__pending_ops link_ops;

/* Starts the check of the sender that msg names on conn (src). Returns
 * false when none could be started. */
static bool link_check_start(dht_node *node, uint64_t conn,
                             const dht_peer_ref *src, uint64_t token,
                             bool notify) {
  dht__link *l;
  dht__pending *p;
  dht_msg ask;
  int32_t peer;

  /* A flood of claims must not become a flood of questions. */
  if (link_checks_out(node) >= DHT__LINK_CHECKS_MAX ||
      (l = link_slot(node)) == NULL) {
    return false;
  }
  /* The address as it is, whatever id it claims: the answer tells. */
  peer = dht__peer_intern(node, NULL, (const char *)src->addr.p,
                          src->addr.len);
  if (peer == DHT__NO_PEER) {
    return false;
  }
  p = dht__pending_new(node, &link_ops, peer);
  if (p == NULL) {
    return false;
  }
  p->u.link.conn = conn;
  p->u.link.token = token;
  memset(&ask, 0, sizeof(ask));
  ask.type = DHT_MSG_CHECK_LINK;
  ask.has_peer = true;
  dht__self_ref(node, &ask.peer);
  ask.link = token;
  if (dht__pending_send(node, p, &ask) != 0) {
    dht__pending_free(node, p);
    return false;
  }
  memset(l, 0, sizeof(*l));
  l->conn = conn;
  l->token = token;
  l->id = src->id;
  l->notify = notify;
  l->used_ms = node->now_ms;
  memcpy(l->addr, src->addr.p, src->addr.len);
  l->addr[src->addr.len] = '\0';
  node->counters.link_checks++;
  return true;
}

static bool link_names(const dht__link *l, const dht_peer_ref *src,
                       uint64_t token) {
  return l->token == token && strlen(l->addr) == src->addr.len &&
         memcmp(l->addr, src->addr.p, src->addr.len) == 0 &&
         dht_id_eq(&l->id, &src->id);
}

/* The answer to a CHECK_LINK: a PONG from the address asked, naming the
 * id the sender claimed, confirms the link; anything else drops it. */
static void link_settled(dht_node *node, dht__pending *p, const dht_msg *msg) {
  dht__link *l = link_find(node, p->u.link.conn);
  const dht__peer *asked = &node->peers[p->peer];
  dht_peer_ref peer;
  bool ok;

  if (l == NULL || l->confirmed || l->token != p->u.link.token ||
      strcmp(l->addr, asked->addr) != 0) {
    dht__pending_free(node, p); /* closed or replaced meanwhile */
    return;
  }
  ok = msg != NULL && msg->type == DHT_MSG_PONG && msg->has_peer &&
       msg->peer.addr.len == strlen(asked->addr) &&
       memcmp(msg->peer.addr.p, asked->addr, msg->peer.addr.len) == 0 &&
       dht_id_eq(&msg->peer.id, &l->id) &&
       dht__id_ok(node, &l->id, l->addr, strlen(l->addr));
  dht__pending_free(node, p);
  if (!ok) {
    uint64_t n = ++node->counters.links_refused;
    if ((n & (n - 1)) == 0) {
      dht__log(node, DHT_LOG_WARN,
               "conn %llu claims to come from %s, which does not confirm it "
               "(%llu so far)",
               (unsigned long long)l->conn, l->addr, (unsigned long long)n);
    }
    memset(l, 0, sizeof(*l));
    return;
  }
  l->confirmed = true;
  l->used_ms = node->now_ms;
  if (l->notify) {
    l->notify = false;
    peer.id = l->id;
    peer.addr.p = (const uint8_t *)l->addr;
    peer.addr.len = strlen(l->addr);
    dht__ring_notified(node, &peer);
  }
}

static void link_on_reply(dht_node *node, dht__pending *p,
                          const dht_msg *msg) {
  link_settled(node, p, msg);
}

/* No answer: the connection the question went on may be stuck behind a
 * cut, its bytes retransmitted ever more rarely; the next check opens a
 * new one (as a failed probe does, node_ring.c). */
static void link_on_failure(dht_node *node, dht__pending *p) {
  dht__emit_disconnect(node, node->peers[p->peer].addr);
  link_settled(node, p, NULL);
}

static const dht__pending_ops link_ops = {"check_link", false, link_on_reply,
                                          link_on_failure};

/* CHECK_LINK: "did you send me this token?" Yes when it is the token this
 * node makes for the asker's address: PONG, naming this node. */
static void on_check_link(dht_node *node, const dht__request *in) {
  const dht_msg *msg = in->msg;
  dht_msg out;

  if (msg->link != dht__link_token(node, (const char *)msg->peer.addr.p,
                                   msg->peer.addr.len)) {
    /* Not UNBOUND, which asks the asker to try again later. */
    dht__reply_error(node, in->conn, msg->rid, DHT_ERR_UNEXPECTED);
    return;
  }
  memset(&out, 0, sizeof(out));
  out.type = DHT_MSG_PONG;
  out.rid = msg->rid;
  out.has_peer = true;
  dht__self_ref(node, &out.peer);
  dht__reply(node, in->conn, &out);
}

/* Whether peer slot idx is in list. */
static bool listed(const int32_t *list, uint32_t n, int32_t idx) {
  uint32_t i;

  for (i = 0; i < n; i++) {
    if (list[i] == idx) {
      return true;
    }
  }
  return false;
}

/* How far before this node, as a fraction of the ring, a predecessor may
 * lie: the span of the n it knows, scaled to cover R of them twice over. A
 * replica that took a dead holder's place may lie beyond the ones listed
 * (the list may be shorter than R), and a view that lags the ring lists
 * nodes that have died. */
static double side_span(const dht_node *node, double known, uint32_t n) {
  uint32_t r = node->set.replicas > n ? node->set.replicas : n;
  double span = known * 2.0 * (double)r / (double)(n > 0 ? n : 1);

  return span < 1.0 ? span : 1.0;
}

/* Whether src may send what only predecessors send: listed as one, or as
 * close as the predecessors this node knows, by side_span. A node that
 * knows no predecessor cannot rule anyone out. */
static bool position_ok(const dht_node *node, const dht_peer_ref *src) {
  int32_t idx = dht__peer_find(node, (const char *)src->addr.p,
                               src->addr.len);
  int32_t far;
  uint32_t n;

  if (idx != DHT__NO_PEER &&
      (listed(node->preds, node->n_preds, idx) ||
       listed(node->last_preds, node->n_last_preds, idx) ||
       idx == node->pred)) {
    return true;
  }
  far = node->n_preds > 0 ? node->preds[node->n_preds - 1] : node->pred;
  n = node->n_preds > 0 ? node->n_preds : 1;
  return far == DHT__NO_PEER ||
         dht_id_distance_frac(&src->id, &node->id) <=
             side_span(node,
                       dht_id_distance_frac(&node->peers[far].id, &node->id),
                       n);
}

/* Whether in may be taken from the sender it names under rule; if not, it
 * has been refused (answered, unless one way) and counted. */
static bool sender_ok(dht_node *node, const dht__request *in,
                      const request_kind *k) {
  const dht_msg *msg = in->msg;
  const dht_peer_ref *src = k->from == ITSELF ? &msg->peer : &msg->src;
  dht__link *l;

  if (node->set.trust_links) {
    return true;
  }
  if ((k->from != ITSELF && !msg->has_src) || msg->link == 0 ||
      dht__ref_is_self(node, src)) {
    count_refused(node, &node->counters.position_refused, in->conn, msg,
                  "no sender, or one whose id is not its address's");
    if (!k->one_way) {
      dht__reply_error(node, in->conn, msg->rid, DHT_ERR_NOT_NEIGHBOR);
    }
    return false;
  }
  l = link_find(node, in->conn);
  if ((l == NULL || !l->confirmed || !link_names(l, src, msg->link)) &&
      !dht__id_ok(node, &src->id, (const char *)src->addr.p, src->addr.len)) {
    /* (A confirmed link's id was checked when it was confirmed.) */
    count_refused(node, &node->counters.position_refused, in->conn, msg,
                  "a sender whose id is not its address's");
    if (!k->one_way) {
      dht__reply_error(node, in->conn, msg->rid, DHT_ERR_NOT_NEIGHBOR);
    }
    return false;
  }
  if (l == NULL || !l->confirmed || !link_names(l, src, msg->link)) {
    if (l != NULL && !l->confirmed && link_names(l, src, msg->link)) {
      l->notify = l->notify || msg->type == DHT_MSG_NOTIFY; /* still asking */
    } else {
      if (l != NULL) {
        memset(l, 0, sizeof(*l)); /* the connection names another sender */
      }
      link_check_start(node, in->conn, src, msg->link,
                       msg->type == DHT_MSG_NOTIFY);
    }
    count_refused(node, &node->counters.unbound_refused, in->conn, msg,
                  "sender not confirmed yet");
    if (!k->one_way) {
      dht__reply_error(node, in->conn, msg->rid, DHT_ERR_UNBOUND);
    }
    return false;
  }
  l->used_ms = node->now_ms;
  if (k->from == PREDECESSOR && !position_ok(node, src)) {
    count_refused(node, &node->counters.position_refused, in->conn, msg,
                  "sender is not at a ring position that sends it");
    dht__ring_check_neighbours_soon(node);
    dht__reply_error(node, in->conn, msg->rid, DHT_ERR_NOT_NEIGHBOR);
    return false;
  }
  return true;
}

static void on_request(dht_node *node, const dht__request *in,
                       dht_role role) {
  const request_kind *k = &requests[in->msg->type];

  assert(k->handler != NULL && "a decoded request type has no handler");
  node->counters.requests_in++;
  if (!k->one_way) {
    dht__metrics_request(node, in->conn, in->msg);
  }
  /* Roles first: a client must not even learn the node's state. */
  if (!(k->roles & FROM(role))) {
    uint64_t n = ++node->counters.role_refused;
    if ((n & (n - 1)) == 0) { /* logged at 1, 2, 4, 8, ...: rate-limited */
      dht__log(node, DHT_LOG_WARN,
               "refused %s from client conn %llu (%llu refused so far)",
               dht_msg_type_name((int)in->msg->type),
               (unsigned long long)in->conn, (unsigned long long)n);
    }
    if (!k->one_way) {
      dht__reply_error(node, in->conn, in->msg->rid, DHT_ERR_FORBIDDEN);
    }
    return;
  }
  if (!(k->served_in & IN_STATE(node->state))) {
    /* A node that is not (or no longer) in a ring must not be mistaken for
     * a live member: say so, and the asker routes around it. */
    if (!k->one_way) {
      dht__reply_error(node, in->conn, in->msg->rid, DHT_ERR_STATE);
    }
    return;
  }
  if (k->from != ANYWHERE && !sender_ok(node, in, k)) {
    return;
  }
  k->handler(node, in);
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
    dht__emit_close(node, conn);
    b->conn = 0;
  }
}

int dht_node_recv(dht_node *node, uint64_t conn, const uint8_t *body,
                  size_t len, uint64_t now_ms) {
  return dht_node_recv_as(node, conn, DHT_ROLE_MEMBER, body, len, now_ms);
}

int dht_node_recv_as(dht_node *node, uint64_t conn, dht_role role,
                     const uint8_t *body, size_t len, uint64_t now_ms) {
  dht__request in;
  dht_msg msg;
  dht__bad_conn *b;
  int rv;

  assert(conn != 0 && "connection 0 is reserved");
  enter(node, now_ms);
  node->counters.frames_in++;
  rv = dht_msg_decode(&msg, body, len, &node->set.limits);
  if (rv != 0) {
    dht__metrics_recv(node, NULL, -1, len);
    on_bad_frame(node, conn, &msg, rv);
  } else {
    dht__metrics_recv(node, &msg,
                      dht_msg_type_is_reply((int)msg.type)
                          ? dht__pending_msg_type(node, msg.rid)
                          : -1,
                      len);
    b = bad_conn_slot(node, conn, false);
    if (b != NULL) {
      b->conn = 0; /* a good frame ends a run of bad ones */
    }
    if (dht_msg_type_is_reply((int)msg.type) && role != DHT_ROLE_MEMBER) {
      /* The node asks clients nothing: a reply from one could only be an
       * attempt to answer a request the node made to a member. */
      node->counters.role_refused++;
    } else if (dht_msg_type_is_reply((int)msg.type)) {
      dht__pending_on_reply(node, &msg);
    } else {
      in.conn = conn;
      in.msg = &msg;
      in.body = body;
      in.len = len;
      on_request(node, &in, role);
    }
  }
  dht_msg_free(&msg);
  leave_call(node);
  return rv;
}

void dht_node_count_auth_failure(dht_node *node) {
  node->counters.auth_failures++;
}

void dht_node_conn_closed(dht_node *node, uint64_t conn) {
  dht__bad_conn *b = bad_conn_slot(node, conn, false);
  dht__link *l = link_find(node, conn);

  if (l != NULL) {
    memset(l, 0, sizeof(*l)); /* a new connection must confirm again */
  }
  if (b != NULL) {
    b->conn = 0;
  }
  dht__delayed_drop_conn(node, conn);
}

/* Applies what the host learned of its connection to addr to the requests
 * in flight there, then runs what is due. */
static void peer_conn_news(dht_node *node, const char *addr, uint64_t now_ms,
                           void (*apply)(dht_node *node, int32_t peer)) {
  int32_t idx;

  enter(node, now_ms);
  idx = dht__peer_find(node, addr, strlen(addr));
  if (idx != DHT__NO_PEER) {
    apply(node, idx);
  }
  leave_call(node);
  dht_node_handle_expiry(node, now_ms);
}

void dht_node_peer_unreachable(dht_node *node, const char *addr,
                               uint64_t now_ms) {
  /* No point resending: fail at this expiry pass. */
  peer_conn_news(node, addr, now_ms, dht__pending_fail_peer);
}

void dht_node_peer_reset(dht_node *node, const char *addr, uint64_t now_ms) {
  peer_conn_news(node, addr, now_ms, dht__pending_resend_peer);
}

/* ---- timers ----------------------------------------------------------------- */

void dht_node_commit_done(dht_node *node, int status, uint64_t now_ms) {
  enter(node, now_ms);
  dht__repl_commit_done(node, status);
  leave_call(node);
}

void dht_node_handle_expiry(dht_node *node, uint64_t now_ms) {
  enter(node, now_ms);
  dht__delayed_release(node);
  dht__pending_expire(node);
  dht__ring_timers(node);
  dht__repl_timers(node);
  leave_call(node);
}

uint64_t dht_node_next_deadline(const dht_node *node) {
  uint64_t t = dht__ring_next_deadline(node);
  uint64_t repl = dht__repl_next_deadline(node);
  uint64_t pending = dht__pending_next_deadline(node);
  uint64_t delayed = dht__delayed_next_deadline(node);

  if (repl < t) {
    t = repl;
  }
  if (delayed < t) {
    t = delayed;
  }
  return pending < t ? pending : t;
}

bool dht_node_poll_action(dht_node *node, dht_action *out) {
  return dht__outbox_poll(node, out);
}

/* ---- accessors -------------------------------------------------------------- */

dht_node_state dht_node_get_state(const dht_node *node) { return node->state; }

bool dht_node_ready(const dht_node *node) { return dht__ring_ready(node); }

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

/* Copies up to max entries of a list of peer slots into ids and addrs. */
static size_t peers_out(const dht_node *node, const int32_t *list, size_t n,
                        dht_id *ids, const char **addrs, size_t max) {
  size_t i;

  for (i = 0; i < n && i < max; i++) {
    if (ids != NULL) {
      ids[i] = node->peers[list[i]].id;
    }
    if (addrs != NULL) {
      addrs[i] = node->peers[list[i]].addr;
    }
  }
  return n;
}

size_t dht_node_preds(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max) {
  return peers_out(node, node->preds, node->n_preds, ids, addrs, max);
}

size_t dht_node_succs(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max) {
  return peers_out(node, node->succs, node->n_succs, ids, addrs, max);
}

bool dht_node_finger(const dht_node *node, unsigned i, dht_id *id,
                     const char **addr) {
  if (i >= DHT_ID_BITS || node->fingers[i] == DHT__NO_PEER) {
    return false;
  }
  if (id != NULL) {
    *id = node->peers[node->fingers[i]].id;
  }
  if (addr != NULL) {
    *addr = node->peers[node->fingers[i]].addr;
  }
  return true;
}

const dht_node_counters *dht_node_get_counters(const dht_node *node) {
  return &node->counters;
}

size_t dht_node_pending_count(const dht_node *node) { return node->n_pending; }

/* ---- commands ------------------------------------------------------------------ */

/* Ends a call that returns rv. */
static int leave_with(dht_node *node, int rv) {
  leave_call(node);
  return rv;
}

int dht_node_create_ring(dht_node *node, uint64_t now_ms) {
  enter(node, now_ms);
  return leave_with(node, dht__ring_create(node));
}

int dht_node_join(dht_node *node, const char *bootstrap_addr,
                  uint64_t now_ms) {
  return dht_node_join_list(node, &bootstrap_addr, 1, now_ms);
}

int dht_node_join_list(dht_node *node, const char *const *addrs, size_t n,
                       uint64_t now_ms) {
  enter(node, now_ms);
  return leave_with(node, dht__ring_join(node, addrs, n));
}

int dht_node_leave(dht_node *node, uint64_t now_ms) {
  enter(node, now_ms);
  return leave_with(node, dht__ring_leave(node));
}

int dht_node_install_routing(dht_node *node, const dht_routing_peer *pred,
                             const dht_routing_peer *succs, size_t n_succs,
                             const dht_routing_peer *fingers,
                             uint64_t now_ms) {
  enter(node, now_ms);
  return leave_with(node,
                    dht__ring_install(node, pred, succs, n_succs, fingers));
}

void dht_node_set_maintenance(dht_node *node, bool enabled, uint64_t now_ms) {
  enter(node, now_ms);
  dht__ring_set_maintenance(node, enabled);
  leave_call(node);
}
