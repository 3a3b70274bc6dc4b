/*
 * node_int.h: the inside of a dht_node, shared by node.c (lifecycle, peers,
 * pending requests, outbox, dispatch), node_route.c (routed requests, key
 * hand-off), node_ring.c (join, stabilize, fingers, predecessor checks,
 * leave) and node_repl.c (versions, replicated writes, reads, anti-entropy).
 *
 * Invariants kept by every function here:
 *  - the successor list never holds this node, holds no peer twice, and is
 *    in clockwise order from this node;
 *  - a peer slot's refs counts the routing entries and pending requests that
 *    hold its index; a slot with refs == 0 is free for reuse;
 *  - a pending slot is free exactly when its rid is 0.
 */
#ifndef DHT_NODE_INT_H
#define DHT_NODE_INT_H

#include <stdarg.h>

#include "dht/err.h"
#include "dht/node.h"

#define DHT__NO_PEER (-1)
/* Peers declared dead that the node keeps probing, so that two halves of a
 * ring split by a partition find each other again once it heals. */
#define DHT__LOST_MAX 16
/* How long a lost peer is probed before it is forgotten. */
#define DHT__LOST_TTL_MS (10u * 60u * 1000u)
/* Connections whose undecodable frames are being counted. */
#define DHT__BAD_CONNS 32
/* Request ids: the low bits index the pending slot, the rest is a counter. */
#define DHT__RID_SLOT_BITS 24
#define DHT__PENDING_HARD_MAX (1u << DHT__RID_SLOT_BITS)

/* A node this one knows by address. */
typedef struct dht__peer {
  dht_id id;                       /* ring position, when id_known */
  bool id_known;                   /* false for a bootstrap not yet heard */
  bool rtt_known;                  /* srtt_ms and rttvar_ms are measured */
  uint32_t srtt_ms;                /* smoothed round-trip time */
  uint32_t rttvar_ms;              /* its mean deviation */
  uint32_t refs;                   /* holders of this slot; 0 means free */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* "host:port", NUL-terminated */
} dht__peer;

/* A peer declared dead, probed now and then in case it was only cut off. */
typedef struct dht__lost {
  dht_id id;                       /* its ring position */
  uint64_t lost_at_ms;             /* when it was declared dead */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* where to probe it; "" = free slot */
} dht__lost;

typedef enum dht__pending_kind {
  DHT__PEND_PRED,      /* check_predecessor's GET_NEIGHBORS */
  DHT__PEND_STABILIZE, /* GET_NEIGHBORS to the first successor */
  DHT__PEND_ROUTE,     /* a routed request forwarded to the next hop */
  DHT__PEND_HANDOFF,   /* a batch of keys sent to their new owner */
  DHT__PEND_LEAVE,     /* LEAVE notice to a neighbour */
  DHT__PEND_PROBE,     /* PING to a lost peer */
  DHT__PEND_REPLICATE, /* a new write sent to one replica (ctx: write) */
  DHT__PEND_CONSULT,   /* FETCH to the successor before serving a key */
  DHT__PEND_SYNC,      /* anti-entropy digests to a replica (ctx: sync) */
  DHT__PEND_PUSH,      /* anti-entropy records to a replica (ctx: sync) */
} dht__pending_kind;

/* Who is waiting for the result of a DHT__PEND_ROUTE. */
typedef enum dht__origin {
  DHT__ORIGIN_CONN,   /* a client or another node, on origin_conn */
  DHT__ORIGIN_FINGER, /* fix_fingers, for finger finger_index */
  DHT__ORIGIN_JOIN,   /* this node's own join */
  DHT__ORIGIN_MERGE,  /* re-found lost peer: where would this node fit? */
} dht__origin;

/* A request in flight. */
typedef struct dht__pending {
  uint64_t rid;            /* 0 = free slot */
  uint32_t slot;           /* index in dht_node.pending, the rid's low bits */
  dht__pending_kind kind;  /* what the request is for */
  int32_t peer;            /* the peer asked (holds a ref) */
  uint64_t deadline_ms;    /* when to resend or give up */
  uint64_t sent_ms;        /* when frame was first sent, for RTT samples */
  uint32_t ctx;            /* REPLICATE: write slot; SYNC, PUSH: sync slot */
  uint64_t ctx_gen;        /* REPLICATE: the write's generation */
  uint32_t sends;          /* times frame went to this peer */
  uint32_t hops_tried;     /* ROUTE: next hops tried so far */
  bool accepted;           /* ROUTE: the next hop has taken over */
  dht_buf frame;           /* the frame last sent, for resending */
  dht__origin origin;      /* ROUTE: who wants the answer */
  uint64_t origin_conn;    /* ROUTE, ORIGIN_CONN: connection to answer on */
  uint64_t origin_rid;     /* ROUTE, ORIGIN_CONN: their request id */
  uint32_t finger_index;   /* ROUTE, ORIGIN_FINGER */
  dht_buf req;             /* ROUTE: the request body, as the origin sent it */
  dht_buf keys;            /* HANDOFF, PUSH: the records sent */
} dht__pending;

/* One action waiting for dht_node_poll_action(); byte fields are offsets
 * into the outbox arena, which may move while actions are added. */
typedef struct dht__outbox_entry {
  dht_action_type type;
  dht_event event;
  int error;
  uint64_t conn;
  size_t addr_off;  /* SEND: NUL-terminated address in the arena */
  size_t frame_off; /* SEND, REPLY: the frame in the arena */
  size_t frame_len;
} dht__outbox_entry;

/* A write this node coordinates as the key's owner: stored here, sent to
 * each replica position, answered once every live one has it durably. */
typedef struct dht__write {
  uint64_t gen;                       /* 0 = free slot */
  uint64_t origin_conn;               /* who to answer */
  uint64_t origin_rid;                /* ... with this request id */
  uint32_t hops;                      /* echoed in the answer */
  uint32_t sends;                     /* REPLICATE frames sent, bounded */
  dht_id key_id;                      /* the key's ring position */
  dht_buf key;                        /* the key bytes */
  dht_buf record;                     /* the record as stored */
  dht_id acked[DHT_SUCC_LIST_MAX];    /* replicas that have it */
  uint32_t n_acked;
  dht_id busy[DHT_SUCC_LIST_MAX];     /* replicas asked, not yet answered */
  uint32_t n_busy;
} dht__write;

/* Anti-entropy with one replica: digests of this node's range go out; the
 * replica answers which buckets differ (and its records in them); this node
 * then pushes its own records of those buckets, rate-limited. */
typedef struct dht__sync {
  int32_t peer;                 /* the replica (holds a ref); NO_PEER = free */
  bool waiting;                 /* push paused by the repair rate limit */
  dht_id from, to;              /* the range synced: (from, to] */
  uint32_t n_buckets;           /* digests the range was split into */
  uint64_t mask[DHT_SYNC_BUCKETS_MAX / 64]; /* buckets that differ */
  bool has_cursor;              /* cursor is set */
  dht_id cursor;                /* the push resumes after this key id */
  uint64_t started_ms;          /* when the exchange began */
  uint64_t pushed;              /* records pushed so far */
} dht__sync;

/* Records copied out of a store scan (hand-off, repair, SCAN), to send once
 * the scan is over; node_repl.c lays them out. */
typedef struct dht__batch {
  dht_buf buf;      /* the copied records */
  size_t n;         /* records in buf */
  size_t bytes_max; /* stop before buf passes this many bytes */
  size_t items_max; /* or holds this many records */
  bool full;        /* stopped by a limit: more records remain */
  int err;          /* DHT_ERR_NOMEM if a copy failed */
} dht__batch;

/* Undecodable frames seen in a row on one connection. */
typedef struct dht__bad_conn {
  uint64_t conn;  /* 0 = free slot */
  uint32_t count; /* consecutive bad frames */
} dht__bad_conn;

struct dht_node {
  dht_settings set;              /* tunables, copied at creation */
  dht_id id;                     /* this node's ring position */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* advertised address */
  char short_id[DHT_ID_SHORT_LEN]; /* log tag */
  dht_store *store;              /* borrowed from the host */
  dht_log_fn log;                /* host's log sink, may be NULL */
  void *log_ud;                  /* passed to log */
  dht_log_level log_level;       /* lines above it are not formatted */
  uint64_t rng[2];               /* xorshift128+ state, seeded by the host */
  uint64_t now_ms;               /* time of the call in progress */
  bool in_call;                  /* guards against re-entry */

  dht_node_state state;          /* lifecycle */
  bool maintenance;              /* periodic repair enabled */

  dht__peer *peers;              /* known peers, indexed by int32_t */
  int32_t n_peers;               /* slots in use or used once */
  int32_t cap_peers;             /* slots allocated */

  int32_t pred;                  /* predecessor, or DHT__NO_PEER */
  int32_t preds[DHT_SUCC_LIST_MAX]; /* predecessor list: pred, its pred...;
                                    preds[0] == pred when n_preds > 0 */
  uint32_t n_preds;              /* entries in preds */
  int32_t succs[DHT_SUCC_LIST_MAX]; /* successor list, closest first */
  uint32_t n_succs;              /* entries in succs; 0 = alone */
  int32_t fingers[DHT_ID_BITS];  /* finger i = successor(id + 2^i) */
  uint32_t next_finger;          /* the finger fix_fingers refreshes next */

  dht__lost lost[DHT__LOST_MAX]; /* peers declared dead, still probed */
  uint32_t next_probe;           /* round-robin position in lost */

  uint64_t stabilize_at_ms;      /* next stabilize */
  uint64_t fix_fingers_at_ms;    /* next fix_fingers */
  uint64_t check_pred_at_ms;     /* next check_predecessor and probe */

  dht__pending **pending;        /* requests in flight, by slot; a slot's
                                    struct never moves once allocated */
  uint32_t cap_pending;          /* slots allocated */
  uint32_t n_pending;            /* slots in use */
  uint64_t rid_counter;          /* high bits of the next request id */
  uint64_t pending_min_deadline_ms; /* no pending deadline is earlier */

  char join_addr[DHT_ADDR_LEN_MAX + 1]; /* bootstrap while JOINING */
  uint32_t join_tries;           /* join lookups sent */
  bool rejoining;                /* joined once, found itself cut off */
  uint64_t join_retry_at_ms;     /* next join attempt, or NEVER */

  bool handoff_busy;             /* a HANDOFF batch is in flight */
  uint32_t leave_acks_wanted;    /* LEAVING: LEAVE notices not yet settled */
  bool leave_notified;           /* LEAVING: LEAVE notices sent */

  dht__outbox_entry *outbox;     /* actions not yet polled */
  size_t outbox_len;             /* entries queued */
  size_t outbox_cap;             /* entries allocated */
  size_t outbox_head;            /* next entry to poll */
  dht_buf arena;                 /* frames and addresses of the outbox */

  uint64_t hlc;                  /* hybrid logical clock, see node_repl.c */
  uint64_t wall_base_ms;         /* wall clock at created_ms */
  uint64_t created_ms;           /* now_ms at dht_node_new */
  bool range_fresh;              /* synced with every replica position
                                    since the predecessor last changed */
  dht_id synced[DHT_SUCC_LIST_MAX]; /* replicas fully synced since then */
  uint32_t n_synced;
  uint64_t sync_at_ms;           /* next anti-entropy round */
  dht__write *writes;            /* replicated writes in flight */
  uint32_t cap_writes;           /* slots allocated */
  uint64_t write_gen;            /* last generation handed out */
  dht__sync syncs[DHT_SUCC_LIST_MAX]; /* anti-entropy sessions */
  int64_t repair_tokens;         /* bytes the repair may still send now */
  uint64_t repair_tokens_ms;     /* when repair_tokens was last topped up */

  dht__bad_conn bad_conns[DHT__BAD_CONNS]; /* per-connection garbage */
  dht_node_counters counters;    /* what happened, for STATS */
};

/* node.c */
void dht__log(dht_node *node, dht_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t dht__rand(dht_node *node);
int32_t dht__peer_intern(dht_node *node, const dht_id *id, const char *addr,
                         size_t addr_len);
int32_t dht__peer_intern_ref(dht_node *node, const dht_peer_ref *ref);
void dht__peer_hold(dht_node *node, int32_t idx);
void dht__peer_release(dht_node *node, int32_t idx);
void dht__slot_set(dht_node *node, int32_t *slot, int32_t idx);
void dht__peer_to_ref(const dht_node *node, int32_t idx, dht_peer_ref *ref);
void dht__self_ref(const dht_node *node, dht_peer_ref *ref);
void dht__declare_dead(dht_node *node, int32_t idx, bool probe_later);
dht__pending *dht__pending_new(dht_node *node, dht__pending_kind kind,
                               int32_t peer);
void dht__pending_free(dht_node *node, dht__pending *p);
void dht__pending_rekey(dht_node *node, dht__pending *p);
void dht__pending_retarget(dht_node *node, dht__pending *p, int32_t peer);
int dht__pending_send(dht_node *node, dht__pending *p, dht_msg *msg);
int dht__send(dht_node *node, int32_t peer, dht_msg *msg);
int dht__reply(dht_node *node, uint64_t conn, dht_msg *msg);
void dht__reply_error(dht_node *node, uint64_t conn, uint64_t rid, int code);
void dht__emit_event(dht_node *node, dht_event event, int error);

uint32_t dht__rto(const dht_node *node, int32_t peer);

/* node_route.c */
void dht__route_request(dht_node *node, uint64_t conn, const dht_msg *msg,
                        const uint8_t *body, size_t len);
int dht__route_start(dht_node *node, dht__origin origin, uint32_t finger_index,
                     int32_t first_hop, const dht_msg *msg);
void dht__route_on_reply(dht_node *node, dht__pending *p, const dht_msg *msg);
void dht__route_on_failure(dht_node *node, dht__pending *p, int code);
void dht__on_handoff(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__handoff_pump(dht_node *node);
void dht__handoff_on_done(dht_node *node, dht__pending *p, bool ok);

/* node_ring.c */
int dht__ring_create(dht_node *node);
int dht__ring_join(dht_node *node, const char *bootstrap_addr);
int dht__ring_leave(dht_node *node);
int dht__ring_install(dht_node *node, const dht_routing_peer *pred,
                      const dht_routing_peer *succs, size_t n_succs,
                      const dht_routing_peer *fingers);
void dht__ring_set_maintenance(dht_node *node, bool enabled);
void dht__ring_timers(dht_node *node);
uint64_t dht__ring_next_deadline(const dht_node *node);
void dht__on_notify(dht_node *node, const dht_msg *msg);
void dht__on_leave(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__ring_on_reply(dht_node *node, dht__pending *p, const dht_msg *msg);
void dht__ring_on_route_result(dht_node *node, dht__origin origin,
                               uint32_t finger_index, const dht_msg *msg);
void dht__on_ring_failure(dht_node *node, dht__pending *p);
void dht__leave_step(dht_node *node);
void dht__succ_remove(dht_node *node, int32_t idx);
void dht__set_pred(dht_node *node, int32_t idx);
void dht__preds_truncate_at(dht_node *node, int32_t idx);
void dht__reply_neighbors(dht_node *node, uint64_t conn, uint64_t rid);
void dht__reply_stats(dht_node *node, uint64_t conn, uint64_t rid);

/* node_repl.c */
void dht__repl_init(dht_node *node, uint64_t wall_ms);
void dht__repl_free(dht_node *node);
bool dht__holds_range(const dht_node *node, const dht_id *key_id);
bool dht__may_serve_replica(dht_node *node, const dht_msg *req,
                            const dht_id *key_id);
void dht__serve_data(dht_node *node, uint64_t conn, uint64_t rid,
                     const dht_msg *req, const dht_id *key_id,
                     const uint8_t *body, size_t len, bool as_replica);
int dht__merge_item(dht_node *node, const dht_kv *kv, bool *changed);
void dht__batch_init(dht__batch *b, const dht_node *node);
int dht__batch_collect(void *ud, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t *rec, size_t rec_len);
size_t dht__batch_next(const dht_buf *buf, size_t off, dht_id *key_id,
                       dht_kv *kv);
dht_kv *dht__batch_items(const dht__batch *b);
dht__pending *dht__batch_send(dht_node *node, dht__batch *b,
                              dht__pending_kind kind, int32_t peer,
                              dht_msg_type type);
void dht__on_replicate(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__on_fetch(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__on_sync(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__on_scan(dht_node *node, uint64_t conn, const dht_msg *msg);
void dht__repl_on_reply(dht_node *node, dht__pending *p, const dht_msg *msg);
void dht__repl_on_failure(dht_node *node, dht__pending *p);
void dht__repl_on_pred_change(dht_node *node);
void dht__repl_on_succs_change(dht_node *node);
void dht__repl_timers(dht_node *node);
uint64_t dht__repl_next_deadline(const dht_node *node);

#endif /* DHT_NODE_INT_H */
