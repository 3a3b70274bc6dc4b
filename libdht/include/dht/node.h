/*
 * dht/node.h: one Chord node as a sans-IO state machine.
 *
 * The node never touches a socket, a clock or a random source. Its host (the
 * daemon, or the simulator) feeds it frames, timer expiries and commands, each
 * call taking the current monotonic time in milliseconds, and then drains the
 * actions the node wants carried out: send this frame to that address, reply
 * on that connection, close that connection, report an event. The host asks
 * dht_node_next_deadline() when to call dht_node_handle_expiry() next.
 *
 * Connections: the host gives every connection an opaque non-zero number.
 * A frame that arrives on connection c is passed with c; the node's reply to
 * it is a REPLY action on c. Frames the node sends on its own (requests to
 * other nodes) are SEND actions addressed by "host:port"; the host opens or
 * reuses a connection to that address, and the replies that come back on it
 * are passed to dht_node_recv() like any other frame (the node matches them
 * by request id).
 *
 * Pointers in actions and in the accessors below stay valid until the next
 * call into the node other than dht_node_poll_action(). Calling into a node
 * from inside its own log callback is a programmer error.
 */
#ifndef DHT_NODE_H
#define DHT_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/id.h"
#include "dht/store.h"
#include "dht/wire.h"

/* "No deadline": the node does not need to be woken. */
#define DHT_TIME_NEVER UINT64_MAX

typedef enum dht_log_level {
  DHT_LOG_ERROR = 0,
  DHT_LOG_WARN = 1,
  DHT_LOG_INFO = 2,
  DHT_LOG_DEBUG = 3,
} dht_log_level;

/* Receives one formatted log line (no trailing newline), already tagged with
 * the node's short id and the time. Only called for levels <= log_level. */
typedef void (*dht_log_fn)(void *ud, dht_log_level level, const char *line);

/*
 * Fault points (FoundationDB's BUGGIFY): places where the core asks its host
 * whether to misbehave in a way a real deployment can also produce, so that
 * a simulator can reach rare paths often. Each is something the node must
 * survive without losing an acknowledged write. A host that sets no fault
 * callback (dhtd) gets none: the core tests one pointer per point.
 */
typedef enum dht_fault_point {
  DHT_FAULT_TIMEOUT_SHORT, /* a request's wait (first send or resend) is cut
                              to an eighth of its RTO: a slow reply looks
                              lost, and a live peer may be declared dead */
  DHT_FAULT_REPLY_DELAYED, /* a reply (any but ACCEPTED, which must precede
                              its request's result) is held for up to twice
                              rpc_timeout_ms and sent at a later timer
                              expiry: it reaches the asker late, after its
                              timeout and resend, or out of order */
  DHT_FAULT_STORE_PUT,     /* a record write fails as if the store refused
                              it (DHT_ERR_STORE, nothing written): the
                              write, replica copy, repair or hand-off that
                              wanted it must not be acknowledged */
  DHT_FAULT_SEND_TWICE,    /* a request's first send goes out twice under
                              one request id: the receiver executes it
                              twice and the second answer is unmatched */
  DHT_FAULT_POINTS         /* how many there are */
} dht_fault_point;

/* Asked at each fault point: true makes the fault happen there. The core
 * asks only where the fault would apply, so a host may count the answers. */
typedef bool (*dht_fault_fn)(void *ud, dht_fault_point point);

/* Tunables. dht_settings_default() fills in the defaults given here. */
typedef struct dht_settings {
  uint32_t succ_list_len;           /* successors kept, 1..DHT_SUCC_LIST_MAX: 4 */
  uint32_t replicas;                /* copies of each key, owner included,
                                       1..succ_list_len + 1: 3 */
  uint32_t stabilize_interval_ms;   /* ask the successor for its view: 500 */
  uint32_t fix_fingers_interval_ms; /* refresh the next finger: 250 (4
                                       times that once a pass changed none) */
  uint32_t check_pred_interval_ms;  /* ping the predecessor: 1000 */
  uint32_t rpc_timeout_ms;          /* longest wait for one reply: 500 */
  uint32_t rto_min_ms;              /* shortest wait: the wait adapts to each
                                       peer's measured round trips within
                                       [rto_min_ms, rpc_timeout_ms]: 100 */
  uint32_t rpc_retries;             /* resends before a peer is dead: 1 */
  uint32_t route_timeout_ms;        /* wait for a forwarded result: 4000 */
  uint32_t route_attempts;          /* next hops tried per forward: 3 */
  uint32_t max_hops;                /* forwards per lookup, <= DHT_HOPS_MAX: 32 */
  uint32_t pending_max;             /* requests in flight: 65536 */
  uint32_t outbox_bytes_max;        /* replies one call may queue before
                                       the rest are refused with ERROR
                                       FULL (a verdict that fails a flood
                                       of routed GETs over to a local
                                       replica must not queue GiBs): 32 MiB */
  uint32_t handoff_batch_bytes;     /* bytes of keys per HANDOFF: 256 KiB */
  uint32_t join_attempts;           /* rounds of FIND_SUCC over the join
                                       candidates: 3 */
  uint32_t bad_frames_max;          /* undecodable frames before CLOSE: 8 */
  uint32_t sync_interval_ms;        /* anti-entropy with each replica: 1000 */
  uint32_t sync_buckets;            /* digests per anti-entropy round,
                                       1..DHT_SYNC_BUCKETS_MAX: 64 */
  uint32_t repair_bytes_per_s;      /* repair traffic cap: 8 MiB/s */
  uint32_t tombstone_grace_ms;      /* deletes remembered for: 1 hour */
  uint32_t max_clock_skew_ms;       /* how far a version's stamp may be ahead
                                       of this node's wall clock before it is
                                       refused (DHT_ERR_CLOCK_SKEW): 10 s */
  uint32_t store_retry_ms;          /* after a failed commit, writes are
                                       refused this long, then tried: 1 s */
  bool trust_ids;                   /* take any id a peer claims: ids need
                                       not be the hash of the address (a
                                       ring configured with explicit ids;
                                       docs/SECURITY.md says what it costs).
                                       false: a peer whose id is not
                                       hash(addr) is refused everywhere */
  bool trust_links;                 /* take NOTIFY, LEAVE, HANDOFF,
                                       REPLICATE, SYNC and FETCH from any
                                       connection, unchecked: for unit
                                       tests of other rules only, never set
                                       by dhtd. false: the sender must be
                                       confirmed at its advertised address
                                       and at a ring position that may send
                                       the message (docs/PROTOCOL.md 4.4) */
  dht_wire_limits limits;           /* decoder limits */
} dht_settings;

void dht_settings_default(dht_settings *s);
/* Returns 0, or DHT_ERR_INVAL when a setting is out of its range. */
int dht_settings_check(const dht_settings *s);

/* What a node needs to exist. Everything is copied except store, which is
 * borrowed and must outlive the node. */
typedef struct dht_node_config {
  const char *addr;      /* advertised "host:port", NUL-terminated */
  const dht_id *id;      /* ring position; NULL means hash(addr) */
  dht_store *store;      /* where this node's keys live */
  dht_settings settings; /* tunables */
  uint64_t seed;         /* seeds the node's generator (jitter, choices) */
  uint8_t link_key[32];  /* secret behind the node's request ids and link
                            tokens (docs/SECURITY.md): 32 random bytes from
                            the host; all zero: made from seed, which is
                            fine for simulators and tests only */
  uint64_t wall_ms;      /* wall-clock time (ms since the Unix epoch) at the
                            now_ms given to dht_node_new: versions stamp
                            writes with it (0: count from the node's start) */
  bool group_commit;     /* the host commits the store in groups and calls
                            dht_node_commit_done() after each commit; the
                            replies that acknowledge a write wait for it */
  dht_log_fn log;        /* may be NULL */
  void *log_ud;          /* passed to log */
  dht_log_level log_level; /* lines above this level are not formatted */
  dht_fault_fn fault;    /* fault injection for simulators; NULL: none */
  void *fault_ud;        /* passed to fault */
} dht_node_config;

typedef enum dht_node_state {
  DHT_NODE_IDLE,    /* created; call dht_node_create_ring() or _join() */
  DHT_NODE_JOINING, /* looking up its successor through a join candidate */
  DHT_NODE_JOINED,  /* part of a ring */
  DHT_NODE_LEAVING, /* handing its keys to its successor */
  DHT_NODE_LEFT,    /* done; the host may delete it */
} dht_node_state;

typedef enum dht_action_type {
  DHT_ACTION_SEND,  /* open or reuse a connection to addr, write frame */
  DHT_ACTION_REPLY, /* write frame on connection conn */
  DHT_ACTION_CLOSE, /* close connection conn: its peer misbehaves */
  DHT_ACTION_EVENT, /* tell the host something happened */
  DHT_ACTION_DISCONNECT, /* close the connection opened to addr, if any:
                            the node gave up on that peer (its requests
                            timed out), and the next SEND to it must not
                            wait behind bytes the kernel still holds */
} dht_action_type;

typedef enum dht_event {
  DHT_EVENT_JOINED,      /* the node found its successor */
  DHT_EVENT_JOIN_FAILED, /* no join candidate answered; error says why (the
                            last one's failure) */
  DHT_EVENT_LEFT,        /* keys handed on, neighbours told: exit now */
} dht_event;

typedef struct dht_action {
  dht_action_type type;
  const char *addr;     /* SEND: destination; DISCONNECT: the peer;
                           NUL-terminated */
  uint64_t conn;        /* REPLY, CLOSE: the host's connection number */
  const uint8_t *frame; /* SEND, REPLY: one frame, header included */
  size_t frame_len;     /* bytes in frame */
  dht_event event;      /* EVENT */
  int error;            /* EVENT JOIN_FAILED: a DHT_ERR_* code */
} dht_action;

/* Counters, one X-macro so STATS replies can name them. */
#define DHT_NODE_COUNTER_MAP(X)                                                \
  X(frames_in)            /* frames passed to dht_node_recv */                 \
  X(frames_out)           /* SEND and REPLY actions */                         \
  X(bad_frames)           /* frames that failed to decode */                   \
  X(errors_sent)          /* ERROR replies */                                  \
  X(closes)               /* CLOSE actions for misbehaving connections */      \
  X(requests_in)          /* requests received */                              \
  X(lookups_answered)     /* FIND_SUCC answered here */                        \
  X(forwards)             /* requests forwarded to another node */             \
  X(redirects)            /* direct requests answered MOVED */                 \
  X(forward_retries)      /* forwards that had to try another next hop */      \
  X(rpc_timeouts)         /* requests that got no reply in time */             \
  X(peers_failed)         /* peers declared dead */                            \
  X(replies_unmatched)    /* replies that matched no pending request */        \
  X(pending_full)         /* requests refused: pending table full */           \
  X(outbox_full)          /* replies refused: outbox_bytes_max queued */       \
  X(hop_limit)            /* lookups abandoned at max_hops */                  \
  X(route_refused)        /* last steps refused: key before our preds list */ \
  X(gets)                 /* GETs served from the local store */               \
  X(puts)                 /* PUTs stored locally */                            \
  X(dels)                 /* DELs applied locally */                           \
  X(not_found)            /* GETs and DELs of a missing key */                 \
  X(store_errors)         /* failed store calls */                             \
  X(handoff_keys_out)     /* keys handed to another node */                    \
  X(handoff_keys_in)      /* keys received by HANDOFF */                       \
  X(stabilize_rounds)     /* stabilize rounds started */                       \
  X(succ_changes)         /* times the first successor changed */              \
  X(pred_changes)         /* times the predecessor changed */                  \
  X(fingers_fixed)        /* finger lookups completed */                      \
  X(writes_acked)         /* writes acknowledged after replication */         \
  X(writes_failed)        /* writes no replica could take */                  \
  X(replicate_keys_in)    /* records merged from REPLICATE */                 \
  X(replica_reads)        /* GETs served by a replica, not the owner */       \
  X(consults)             /* requests checked against the successor first */  \
  X(sync_rounds)          /* anti-entropy exchanges started */                \
  X(sync_full)            /* ... whose probe differed: compared by bucket */  \
  X(sync_buckets_differ)  /* digest buckets found out of sync */              \
  X(repair_keys_in)       /* records repaired here by anti-entropy */         \
  X(repair_keys_out)      /* records pushed to a replica by anti-entropy */   \
  X(repair_ms_last)       /* how long the last repair push took */            \
  X(tombstones_collected) /* deletes forgotten after their grace period */ \
  X(send_failures)        /* frames to peers that could not be queued */     \
  X(reply_failures)       /* replies that could not be queued */             \
  X(stale_writes)         /* writes refused: a newer version is stored */    \
  X(clock_skew_refused)   /* stamps refused: too far ahead of this clock */  \
  X(commit_failures)      /* group commits that failed */                    \
  X(writes_refused)       /* writes refused while the store is failing */    \
  X(ranges_lost)          /* ranges recorded as lost (every copy died) */ \
  X(role_refused)         /* messages refused: not for this connection's
                             role (a client key sent a member's message) */ \
  X(auth_failures)        /* connections closed by the host because their
                             cluster-key handshake or a sealed frame failed */ \
  X(limit_conns)          /* host: connections refused, their budget (client
                             or peer) full (docs/SECURITY.md, Limits) */   \
  X(limit_per_addr)       /* host: connections refused, too many from one
                             remote address */                              \
  X(limit_idle)           /* host: accepted connections closed for idling */ \
  X(limit_frame_time)     /* host: connections closed, a frame not finished
                             in time after its length (slowloris) */        \
  X(limit_memory)         /* host: connections dropped, the largest user of
                             the memory budget for buffers */               \
  X(limit_inflight)       /* host: times a client connection was not read,
                             too many of its requests unanswered */         \
  X(limit_rate)           /* host: requests refused (ERROR FULL), over the
                             request rate of their remote address */ \
  X(limit_read_budget)    /* host: times a connection was not read for the
                             rest of a loop iteration, its share of one
                             iteration's reading used */ \
  X(ids_refused)          /* peers named with an id that is not the hash of
                             their address, or that rewrites a known id */ \
  X(link_checks)          /* CHECK_LINKs sent to confirm a sender */ \
  X(links_refused)        /* senders that did not confirm their link */ \
  X(unbound_refused)      /* messages refused until their link is confirmed */ \
  X(position_refused)     /* messages refused: the sender is not at a ring
                             position that may send them */

typedef struct dht_node_counters {
#define DHT__COUNTER_FIELD(name) uint64_t name;
  DHT_NODE_COUNTER_MAP(DHT__COUNTER_FIELD)
#undef DHT__COUNTER_FIELD
} dht_node_counters;

typedef struct dht_node dht_node;

/*
 * Creates a node in state IDLE. Returns 0, DHT_ERR_INVAL (bad settings, an
 * empty or too long addr, no store) or DHT_ERR_NOMEM.
 */
int dht_node_new(dht_node **pnode, const dht_node_config *cfg, uint64_t now_ms);
/* Frees the node at once, whatever its state. NULL is a no-op. */
void dht_node_del(dht_node *node);

/* Starts a new ring of one. Returns 0 or DHT_ERR_STATE (not IDLE). */
int dht_node_create_ring(dht_node *node, uint64_t now_ms);
/* The most candidates dht_node_join_list takes. */
#define DHT_JOIN_LIST_MAX 64

/*
 * Joins the ring that any of addrs[0..n) ("host:port", copied) belongs to,
 * asking them in order for this node's successor until one answers. A
 * candidate that fails (the host reports it unreachable, it answers an
 * ERROR such as STATE from a node that is not in a ring, or it stays
 * silent through its resends) gives way to the next at once; after the
 * last, the node waits 2 * rpc_timeout_ms and goes round again, for
 * settings.join_attempts rounds in all. Entries equal to the node's own
 * address are skipped, and make the node a seed: a seed that finds no
 * candidate in a ring founds one (JOINED) instead of failing, as every
 * seed does when a whole ring starts at once. A JOINED node that later
 * loses every successor and its predecessor, or a seed that founded a
 * ring and has heard from nobody, joins again through the same list (then
 * through the peers it lost), staying a ring of one between attempts. The
 * outcome arrives as a JOINED or JOIN_FAILED event (JOINED at once for a
 * list of only the node's own address: a seed with no other).
 * Returns 0, DHT_ERR_STATE (not IDLE), DHT_ERR_INVAL (n is 0 or above
 * DHT_JOIN_LIST_MAX, or an entry is empty or longer than the address
 * limit) or DHT_ERR_NOMEM.
 */
int dht_node_join_list(dht_node *node, const char *const *addrs, size_t n,
                       uint64_t now_ms);
/* dht_node_join_list with the one candidate bootstrap_addr. */
int dht_node_join(dht_node *node, const char *bootstrap_addr, uint64_t now_ms);
/* Leaves gracefully: hands every key to the successor, tells the neighbours,
 * then emits LEFT. A node that is alone emits LEFT at once. Returns 0 or
 * DHT_ERR_STATE (not JOINED). */
int dht_node_leave(dht_node *node, uint64_t now_ms);

/*
 * Takes one frame body (without its 4-byte header) that arrived on conn.
 * Bad frames are counted, answered with an ERROR when they carry a request
 * id, and after settings.bad_frames_max of them in a row on one connection
 * the node asks for a CLOSE. Returns 0, or the decode error for a frame that
 * was rejected (informational: the node has already reacted).
 */
int dht_node_recv(dht_node *node, uint64_t conn, const uint8_t *body,
                  size_t len, uint64_t now_ms);
/*
 * dht_node_recv for a connection whose handshake proved role (dht/seal.h).
 * A client-role connection may send only PING, FIND_SUCC, GET, PUT, DEL and
 * STATS: any other request is answered ERROR FORBIDDEN (NOTIFY, one-way,
 * and replies, which a node never asked a client for, are dropped), and
 * each is counted in role_refused. dht_node_recv is this with
 * DHT_ROLE_MEMBER: an open ring, where every connection may send anything.
 */
int dht_node_recv_as(dht_node *node, uint64_t conn, dht_role role,
                     const uint8_t *body, size_t len, uint64_t now_ms);
/* The host closed a connection whose handshake or sealed frames failed:
 * counted in auth_failures, so that STATS shows it. */
void dht_node_count_auth_failure(dht_node *node);
/* Limits the host enforces on connections (dhtd: docs/SECURITY.md,
 * Limits); each has a counter of the same name in STATS. */
typedef enum dht_host_limit {
  DHT_LIMIT_CONNS,      /* limit_conns */
  DHT_LIMIT_PER_ADDR,   /* limit_per_addr */
  DHT_LIMIT_IDLE,       /* limit_idle */
  DHT_LIMIT_FRAME_TIME, /* limit_frame_time */
  DHT_LIMIT_MEMORY,     /* limit_memory */
  DHT_LIMIT_INFLIGHT,   /* limit_inflight */
  DHT_LIMIT_RATE,       /* limit_rate */
  DHT_LIMIT_READ_BUDGET, /* limit_read_budget */
} dht_host_limit;
/* The host hit one of its limits: counted, so that STATS shows it. */
void dht_node_count_limit(dht_node *node, dht_host_limit which);
/* The host could not connect to addr (refused, timed out, no such host):
 * fail every request in flight to it now rather than at its deadline. */
void dht_node_peer_unreachable(dht_node *node, const char *addr,
                               uint64_t now_ms);
/*
 * The host's established connection to addr broke (reset, or closed by the
 * peer): what was in flight on it is lost, but the peer may well be alive
 * (it restarted, and an old connection meets its new kernel's reset; or it
 * closed the connection as idle). Every request the peer has not taken
 * over is sent again now, as a retry, on the connection the host opens
 * next; a request whose retries are spent fails now. A peer whose port now
 * refuses is then reported unreachable by that connect.
 */
void dht_node_peer_reset(dht_node *node, const char *addr, uint64_t now_ms);
/* The host closed conn: forget its per-connection state. */
void dht_node_conn_closed(dht_node *node, uint64_t conn);
/* Runs the timers that are due. */
void dht_node_handle_expiry(dht_node *node, uint64_t now_ms);
/*
 * With settings group_commit: the host has committed the store's pending
 * writes, with status 0 or the commit's error (DHT_ERR_DISK_FULL,
 * DHT_ERR_STORE, ...; the store's errmsg says more). The replies that
 * acknowledge a write of that group go out now: as they are on success, as
 * ERROR replies naming the failure otherwise. After a failure the node
 * refuses writes for settings.store_retry_ms, then takes them again; reads
 * and ring maintenance go on throughout. Call it after every commit, also
 * when there was nothing to commit.
 */
void dht_node_commit_done(dht_node *node, int status, uint64_t now_ms);
/* When the node next wants dht_node_handle_expiry(); DHT_TIME_NEVER if never. */
uint64_t dht_node_next_deadline(const dht_node *node);
/* Takes the next action. Returns false when there is none. */
bool dht_node_poll_action(dht_node *node, dht_action *out);

/* Accessors, for the host, the simulator's invariant checks and STATS. */
dht_node_state dht_node_get_state(const dht_node *node);
/* Whether the node is ready: joined, its successor and predecessor lists
 * agreeing with its neighbours', and its range in sync with its replicas
 * (docs/DESIGN.md, "Ready"). STATS says so as the counter "ready". */
bool dht_node_ready(const dht_node *node);
const dht_id *dht_node_id(const dht_node *node);
const char *dht_node_addr(const dht_node *node);
/* The predecessor, if known. addr points into the node. */
bool dht_node_pred(const dht_node *node, dht_id *id, const char **addr);
/* Number of predecessors known (nearest first); writes up to max. */
size_t dht_node_preds(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max);
/* Number of successors known; writes up to max of them. */
size_t dht_node_succs(const dht_node *node, dht_id *ids, const char **addrs,
                      size_t max);
/* Finger i (0 <= i < 160), if set. */
bool dht_node_finger(const dht_node *node, unsigned i, dht_id *id,
                     const char **addr);
const dht_node_counters *dht_node_get_counters(const dht_node *node);

/* Reads a record as a node stores it (value bytes behind a version header)
 * into kv's value, version and tombstone; kv->key is left alone. For hosts
 * and tests that look into a node's store. */
void dht_record_parse(const uint8_t *rec, size_t rec_len, dht_kv *kv);
/* Requests in flight. */
size_t dht_node_pending_count(const dht_node *node);

/* Checks the node's internal invariants (listed in libdht/src/node_state.h:
 * routing lists, peer reference counts, the pending table). For simulators
 * and tests, which call it after every call into the node; it walks the
 * node's tables once. Returns true when all hold, else false with the
 * first broken one described in why (why_len bytes, NUL-terminated). */
bool dht_node_check_invariants(const dht_node *node, char *why,
                               size_t why_len);

/*
 * For simulators and experiments only: installs routing state computed by an
 * oracle (the true predecessor, successors and fingers), as the Chord paper's
 * simulator does to measure a converged ring without simulating its
 * convergence. fingers has DHT_ID_BITS entries. The node becomes JOINED.
 * Returns 0, DHT_ERR_INVAL or DHT_ERR_NOMEM.
 */
typedef struct dht_routing_peer {
  dht_id id;        /* the peer's id */
  const char *addr; /* its address, NUL-terminated */
} dht_routing_peer;
int dht_node_install_routing(dht_node *node, const dht_routing_peer *pred,
                             const dht_routing_peer *succs, size_t n_succs,
                             const dht_routing_peer *fingers, uint64_t now_ms);

/* Freezes (true) or resumes (false) the periodic maintenance (stabilize,
 * fix_fingers, check_predecessor), for experiments that measure a ring
 * before it has repaired itself. */
void dht_node_set_maintenance(dht_node *node, bool enabled, uint64_t now_ms);

#endif /* DHT_NODE_H */
