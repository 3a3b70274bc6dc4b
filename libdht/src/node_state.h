/*
 * node_state.h: what a dht_node holds, every layer's part of it, and the
 * invariants that hold between calls. Types only: the functions of each
 * layer are declared in its own header, which includes the one of the layer
 * below, so that a layer sees only the functions it may call.
 *
 * The layers, lowest first (docs/DESIGN.md says why this order;
 * tests/check_layers.sh checks it on the compiled library):
 *   node_check    reads every layer's state to verify the invariants below
 *   node_metrics  counts traffic, requests' results and latency (observes)
 *   node_base     peers, pending requests, outbox, round-trip times, logging
 *   node_table    successor and predecessor lists, fingers, lost peers
 *   node_lost     ranges whose every copy died
 *   node_repl     versions, replicated writes, reads, anti-entropy
 *   node_route    routed requests            node_handoff  keys to new owners
 *   node_ring     join, stabilize, fingers, predecessor checks, leave
 *   node          the public API and the dispatch table
 * A layer calls only layers below it. Events travel up through the hooks
 * node.c registers (dht__hooks) and the completion handler a request kind
 * carries (dht__pending_ops, dht__lookup_done_fn).
 *
 * Invariants between calls (node_check.c verifies each one):
 *  - the successor list never holds this node, holds no peer twice, is in
 *    clockwise order from this node, holds only peers of known id and is no
 *    longer than succ_list_len;
 *  - preds[0] == pred whenever n_preds > 0, and n_preds == 0 when pred is
 *    unknown; the predecessor list holds no peer twice and not this node;
 *  - a peer slot's refs (in peer_scan) counts exactly the routing entries
 *    (successors, predecessor and its list, the list kept when it was last
 *    whole, fingers), pending requests, anti-entropy sessions and the loss
 *    check that hold its index; a slot with refs == 0 is free for reuse; a
 *    listed peer's addr_hash is its address's;
 *  - a pending slot below n_slots_used is either live (rid != 0, the rid
 *    ending in its slot number, slot_rids holding it too) or on the free
 *    stack (slot_rids 0), never both; the
 *    deadline heap holds exactly the live requests, each knowing its place,
 *    earliest (deadline, slot) first; each live request is on its peer's
 *    list of requests, once;
 *  - a replicated write's acked and busy lists are disjoint.
 */
#ifndef DHT_NODE_STATE_H
#define DHT_NODE_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "dht/err.h"
#include "dht/metrics.h"
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
/* "No pending slot", at the ends of a peer's list of requests. */
#define DHT__NO_SLOT UINT32_MAX
/* Inbound connections whose sender is confirmed (or being checked), and of
 * them at most this many checks in flight at once (node.c). */
#define DHT__LINKS_MAX 16
#define DHT__LINK_CHECKS_MAX 8
/* Times a request refused ERROR UNBOUND is sent again (node_base.c). */
#define DHT__LINK_WAITS_MAX 4
/* Bytes of the key behind request ids (first 16) and link tokens (last
 * 16): two SipHash-2-4 keys. */
#define DHT__LINK_KEY_LEN 32

typedef struct dht__pending dht__pending;

/* ---- base: peers, pending requests, outbox --------------------------------- */

/* A reply acknowledging a write, held until the group commit that makes the
 * write durable (settings: group_commit). */
typedef struct dht__held_ack {
  uint64_t conn; /* where it goes */
  uint64_t rid;  /* the request it answers */
  uint32_t hops; /* echoed in the OK */
  int answer;    /* 0: OK; DHT_ERR_NOT_FOUND: a DEL that found no value */
} dht__held_ack;

/* A reply held back by DHT_FAULT_REPLY_DELAYED until due_ms. */
typedef struct dht__delayed_reply {
  uint64_t due_ms; /* when it goes out, at the first expiry from then */
  uint64_t conn;   /* where it goes */
  uint8_t *frame;  /* the encoded frame (owned) */
  size_t len;      /* bytes in frame */
} dht__delayed_reply;

/* Replies held back at once; a reply beyond them goes out at once. */
#define DHT__DELAYED_MAX 64
/* The outbox arena is freed once drained when it grew past this. */
#define DHT__ARENA_KEEP_BYTES (4u * 1024 * 1024)

/* A node this one knows by address. Slots start on cache lines, and the
 * first line holds what the checks read of a listed peer (its id, and the
 * start of its address: all of an address of up to 39 bytes); what only a
 * request or a verdict reads follows the address. What every scan of the
 * whole table reads is in dht__peer_scan, beside it. */
typedef struct dht__peer {
  _Alignas(64) dht_id id;          /* ring position, when id_known */
  bool id_known;                   /* false for a bootstrap not yet heard */
  bool rtt_known;                  /* srtt_ms and rttvar_ms are measured */
  uint8_t rto_backoff;             /* timeouts since the last sample: the
                                      wait doubles for each (RFC 6298 5.5) */
  bool failed_now;                 /* declared dead at failed_at_ms: more
                                      failures then are the same verdict */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* "host:port", NUL-terminated */
  uint32_t srtt_ms;                /* smoothed round-trip time */
  uint32_t rttvar_ms;              /* its mean deviation */
  uint32_t failed_unlogged;        /* verdicts since failed_logged_ms, not
                                      logged */
  uint64_t link_token;             /* the token this node sends it, once
                                      computed (0: not yet) */
  uint64_t failed_at_ms;           /* the node's time of the last verdict */
  uint64_t failed_logged_ms;       /* when a verdict was last logged
                                      (0: never) */
} dht__peer;

/* What the scans of every peer slot read (the lookup by address, the
 * reference and request checks after every call), in an array of its own
 * with the slots' indices: 40 peers are two cache lines, not 40. In a
 * simulated ring of 10^5 nodes, where every node is cold in the cache when
 * its turn comes, the slots' lines were most of what a call waited on. */
typedef struct dht__peer_scan {
  uint32_t refs;         /* holders of the slot; 0 means free */
  uint32_t pending_head; /* first request in flight to it (a pending
                            slot), or DHT__NO_SLOT */
  uint32_t addr_hash;    /* dht__addr_hash of its address */
} dht__peer_scan;

/* FNV-1a of an address: tells the peer slots a lookup by address must
 * compare from the ones it may skip. */
static inline uint32_t dht__addr_hash(const char *addr, size_t len) {
  uint32_t h = 2166136261u;
  size_t i;

  for (i = 0; i < len; i++) {
    h = (h ^ (uint8_t)addr[i]) * 16777619u;
  }
  return h;
}

/* What a kind of request does when its answer comes or it fails; each
 * layer defines the kinds it sends, as static tables. */
typedef struct dht__pending_ops {
  const char *name;     /* for logs and invariant reports */
  bool takes_accepted;  /* an ACCEPTED reply goes to on_reply; otherwise
                           it is dropped, and the request waits on */
  /* A reply matched the request. The handler either frees p or leaves it
   * in flight (after ACCEPTED, or a re-send). */
  void (*on_reply)(dht_node *node, dht__pending *p, const dht_msg *msg);
  /* No reply after the resends, or the peer is known to be unreachable or
   * dead. The handler frees p or sends it elsewhere. */
  void (*on_failure)(dht_node *node, dht__pending *p);
} dht__pending_ops;

/* The result of a lookup this node started on its own behalf (node_route.c
 * calls it with a FIND_SUCC_R or an ERROR; arg is what the starter gave). */
typedef void (*dht__lookup_done_fn)(dht_node *node, uint32_t arg,
                                    const dht_msg *result);

/* A routed request forwarded to the next hop (node_route.c). Its body, as
 * the origin sent it, is in the request's kept buffer. */
typedef struct dht__route_state {
  uint64_t origin_conn;     /* connection to relay the result on, when done
                               is NULL */
  uint64_t origin_rid;      /* ... under the origin's request id */
  dht__lookup_done_fn done; /* this node's own lookup: its completion */
  uint32_t done_arg;        /* passed to done */
  bool pinned;              /* the first hop was the starter's choice: a
                               failure there ends the lookup */
  uint32_t hops_tried;      /* next hops tried so far */
} dht__route_state;

/* REPLICATE of one new write to one replica (node_repl.c). */
typedef struct dht__replicate_state {
  uint32_t write; /* slot in repl.writes */
  uint64_t gen;   /* that write's generation: a stale slot is ignored */
} dht__replicate_state;

/* FETCH to the replica positions before the owner serves a request
 * (node_repl.c). The request's body is in the kept buffer. */
typedef struct dht__consult_state {
  uint64_t origin_conn; /* who to answer */
  uint64_t origin_rid;  /* ... with this request id */
  uint32_t position;    /* the replica position being asked */
  uint32_t tries;       /* FETCHes sent, bounded */
  uint64_t commits_failed; /* repl.commits_failed when it began */
  bool unsure;          /* a replica's record could not be kept here, or
                           the replica could not say what it holds */
} dht__consult_state;

/* CHECK_LINK to the address a sender on an inbound connection claims
 * (node.c). */
typedef struct dht__link_state {
  uint64_t conn;  /* the inbound connection to confirm */
  uint64_t token; /* the token its sender put in its messages */
} dht__link_state;

/* SYNC digests, or a PUSH of records, in one anti-entropy session
 * (node_repl.c). A PUSH keeps the records it sent in the kept buffer. */
typedef struct dht__sync_state {
  uint32_t session; /* slot in repl.syncs */
} dht__sync_state;

/* A request in flight. The common part is the base layer's; u is the
 * kind's own, read only by the layer that owns ops. The fields up to
 * heap_pos, which the checks read of every request, fit the struct's first
 * cache line (node_base.c aligns it). */
struct dht__pending {
  uint64_t rid;                /* 0 = free slot */
  uint32_t slot;               /* index in dht_node.pending, the rid's low
                                  bits */
  const dht__pending_ops *ops; /* the kind: its handlers */
  int32_t peer;                /* the peer asked (holds a ref) */
  uint32_t peer_prev;          /* neighbours on that peer's list of */
  uint32_t peer_next;          /* requests (slots), or DHT__NO_SLOT */
  uint64_t deadline_ms;        /* when to resend or give up */
  uint32_t heap_pos;           /* its index in the deadline heap */
  uint64_t sent_ms;            /* when frame was first sent, for RTT */
  uint32_t sends;              /* times frame went to this peer */
  bool accepted;               /* the peer answered ACCEPTED: it is alive
                                  and has taken the request over, so it is
                                  neither resent nor failed with the peer */
  uint8_t link_waits;          /* ERROR UNBOUND answers so far */
  bool link_resend;            /* the next deadline resends frame as it is
                                  (the peer was confirming our link) */
  dht_buf frame;               /* the frame last sent, for resending */
  dht_buf kept;                /* bytes the kind keeps for its handlers */
  union {
    dht__route_state route;
    dht__replicate_state replicate;
    dht__consult_state consult;
    dht__sync_state sync;
    dht__link_state link;
  } u;
};

/* One action waiting for dht_node_poll_action(); byte fields are offsets
 * into the outbox arena, which may move while actions are added. */
typedef struct dht__outbox_entry {
  dht_action_type type;
  dht_event event;
  int error;
  uint64_t conn;
  size_t addr_off;  /* SEND, DISCONNECT: NUL-terminated address in the
                       arena */
  size_t frame_off; /* SEND, REPLY: the frame in the arena */
  size_t frame_len;
} dht__outbox_entry;

/* The sender of an inbound connection, as node.c knows it: claimed by its
 * messages, then confirmed (or not) by a CHECK_LINK to its address. */
typedef struct dht__link {
  uint64_t conn;                   /* 0 = free slot */
  uint64_t token;                  /* the token its messages carry */
  dht_id id;                       /* the id it claims; once confirmed, the
                                      id heard from the address itself */
  bool confirmed;                  /* the address said it sent token */
  bool notify;                     /* a NOTIFY waits for the answer */
  uint64_t used_ms;                /* last used, for eviction */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* the advertised address it claims */
} dht__link;

/* Undecodable frames seen in a row on one connection (node.c). */
typedef struct dht__bad_conn {
  uint64_t conn;  /* 0 = free slot */
  uint32_t count; /* consecutive bad frames */
} dht__bad_conn;

/* A request received and not yet answered, noted for its result and its
 * latency (node_metrics.c). */
typedef struct dht__arrival {
  uint64_t conn;  /* the connection it came on; 0 = free slot */
  uint64_t rid;   /* its request id */
  uint64_t at_ms; /* when it came */
  int type;       /* its message type */
} dht__arrival;

/* node_metrics.c's state: the counts, and the arrivals in an open-addressing
 * table (linear probing, a power-of-two size, at most half full). */
typedef struct dht__metrics {
  dht_node_metrics m;     /* counted so far (the gauges are not kept) */
  dht__arrival *arrivals; /* the table, or NULL before the first */
  uint32_t cap;           /* its slots */
  uint32_t n;             /* arrivals in it */
} dht__metrics;

/* ---- table: the routing state ------------------------------------------------ */

/* A peer declared dead, probed now and then in case it was only cut off. */
typedef struct dht__lost {
  dht_id id;                       /* its ring position */
  uint64_t lost_at_ms;             /* when it was declared dead */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* where to probe it; "" = free slot */
} dht__lost;

/* Events of the lower layers that upper ones act on; node.c fills these in
 * at creation. */
typedef struct dht__hooks {
  /* node_table.c: the predecessor changed (it may now be unknown). */
  void (*pred_changed)(dht_node *node);
  /* node_table.c: the successor list changed. */
  void (*succs_changed)(dht_node *node);
  /* node_table.c: a successor was removed (failed or left). */
  void (*succ_lost)(dht_node *node);
  /* node_handoff.c: a leaving node has nothing left to hand on. */
  void (*handoff_drained)(dht_node *node);
} dht__hooks;

/* ---- repl: versions, writes, anti-entropy ----------------------------------- */

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
  uint64_t stored_epoch;              /* repl.commit_epoch when this node
                                         stored the record */
  int answer;                         /* what the writer hears once the
                                         write is done (dht__reply_written) */
} dht__write;

/* A range whose every copy died before it was repaired, as recorded by the
 * node that became its owner (node_repl.c). */
typedef struct dht__lost_range {
  dht_id from, to;                    /* the range (from, to] */
  uint64_t at_ms;                     /* wall clock when recorded */
  uint32_t n_holders;                 /* entries below */
  dht_id holder_ids[DHT_SUCC_LIST_MAX]; /* the holders, all found dead */
  char (*holder_addrs)[DHT_ADDR_LEN_MAX + 1]; /* malloc'd, n_holders */
} dht__lost_range;

/* The check, after this node's range grew past every predecessor it knew,
 * that none of the range's former holders is alive: each is pinged, and
 * if none answers the range is recorded lost. */
typedef struct dht__loss_check {
  bool active;                        /* a check is under way */
  dht_id from, to;                    /* the range in doubt, (from, to] */
  uint32_t n_holders;                 /* former holders pinged */
  int32_t holders[DHT_SUCC_LIST_MAX]; /* their peer slots (held) */
  uint32_t waiting;                   /* pings not yet settled */
  bool any_alive;                     /* one of them answered */
} dht__loss_check;

/* Anti-entropy with one replica: digests of this node's range go out; the
 * replica answers which buckets differ (and its records in them); this node
 * then pushes its own records of those buckets, rate-limited. */
typedef struct dht__sync {
  bool probe;                   /* the digest sent is the whole range's
                                   (node_repl.c sync_round) */
  dht_id from, to;              /* the range synced: (from, to] */
  uint32_t n_buckets;           /* digests the range was split into */
  uint64_t mask[DHT_SYNC_BUCKETS_MAX / 64]; /* buckets that differ */
  bool has_cursor;              /* cursor is set */
  dht_id cursor;                /* the push resumes after this key id */
  uint64_t started_ms;          /* when the exchange began */
  uint64_t answered_ms;         /* when the replica named the buckets */
  uint64_t pushed;              /* records pushed so far */
  uint64_t pushed_bytes;        /* ... their key and record bytes */
  uint64_t todo_records;        /* records of the differing buckets when
                                   the replica answered (the backlog is
                                   this less pushed) */
  uint64_t todo_bytes;          /* ... their key and record bytes */
  uint64_t commits_failed;      /* repl.commits_failed when the digests
                                   went: the answer vouches for nothing once
                                   it moved */
} dht__sync;

/* How the last anti-entropy exchange with one replica went, kept after
 * its session ends (STATS_R exchanges, which `dht explain` reads). */
typedef struct dht__exchange_note {
  bool used;           /* the slot holds a note */
  dht_id peer;         /* the replica's id */
  dht_id from, to;     /* the range compared, (from, to] */
  uint64_t started_ms; /* when it began */
  uint64_t ended_ms;   /* when it ended, while outcome is not RUNNING */
  uint64_t buckets;    /* buckets the replica found differing */
  uint64_t pushed;     /* records pushed to it */
  uint8_t outcome;     /* a dht_exchange_outcome */
} dht__exchange_note;

/* A ring interval (from, to]. */
typedef struct dht__range {
  dht_id from, to;
} dht__range;

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

/* node_repl.c's state. */
typedef struct dht__repl {
  uint64_t hlc;                  /* hybrid logical clock, see node_repl.c */
  bool range_fresh;              /* synced with every replica position
                                    since the predecessor last changed */
  dht_id synced[DHT_SUCC_LIST_MAX]; /* replicas fully synced since then */
  uint32_t n_synced;
  dht_id clean[DHT_SUCC_LIST_MAX]; /* replicas whose last exchange of the
                                    whole range found nothing missing on
                                    them, since then (readiness) */
  uint32_t n_clean;
  uint64_t sync_at_ms;           /* next anti-entropy round */
  dht__write *writes;            /* replicated writes in flight */
  uint32_t cap_writes;           /* slots allocated */
  uint64_t write_gen;            /* last generation handed out */
  dht__sync syncs[DHT_SUCC_LIST_MAX]; /* anti-entropy sessions */
  uint32_t syncs_waiting;        /* bit i: session i's push is paused by
                                    the repair rate limit (a mask: the
                                    deadline asked after every call need
                                    not look at all DHT_SUCC_LIST_MAX) */
  dht__exchange_note exchanges[DHT_EXCHANGES_MAX]; /* the last exchange
                                    with each recent replica */
  int32_t sync_peers[DHT_SUCC_LIST_MAX]; /* syncs[i]'s replica (holds a
                                    ref), NO_PEER when free: apart from the
                                    sessions, so that the scans for live
                                    ones read 128 bytes, not 4 KiB */
  int64_t repair_tokens;         /* bytes the repair may still send now */
  uint64_t repair_tokens_ms;     /* when repair_tokens was last topped up */

  uint64_t commit_epoch;         /* group commits done (group_commit) */
  uint64_t commits_failed;       /* ... of which failed, rolling back what
                                    the node had written since the last */
  int store_error;               /* the last commit's error, 0 when fine */
  uint64_t store_retry_at_ms;    /* writes are refused until then */
  char store_errmsg[160];        /* what the store said when it failed */

  int64_t succ_clock_offset_ms;  /* the successor's wall clock minus ours,
                                    as last measured (NEIGHBORS.wall) */
  int64_t pred_clock_offset_ms;  /* ... the predecessor's */
  int64_t clock_offset_ms;       /* how far both are off ours, the same
                                    way (the smaller of the two), else 0 */
  bool wrote;                    /* the store was written since the last
                                    group commit */
  bool repaired;                 /* ... with records from a replica's
                                    SYNC_R, which range_fresh counts on */
  bool writes_unsure;            /* a group commit failed since the last
                                    exchange with every replica: writes
                                    consult them, as when not range_fresh */
  bool missed;                   /* a write sent here to replicate was
                                    refused or rolled back, or the node
                                    started on a store with records: it
                                    may lack an acknowledged write of a
                                    range it replicates */
  dht__range insync[DHT_SUCC_LIST_MAX]; /* since then, ranges whose owner
                                    found them in sync (SYNC, no bucket
                                    differing), newest last */
  uint32_t n_insync;
} dht__repl;

/* node_handoff.c's state: the records this node holds but should not,
 * on their way to where they belong. */
typedef struct dht__handoff {
  bool busy;                 /* a batch is in flight */
  uint64_t todo_records;     /* records left to hand on, counted when the
                                run began, less those taken since */
  uint64_t todo_bytes;       /* ... their key and record bytes */
  uint64_t run_started_ms;   /* when the run began (todo counted) */
  uint64_t done_bytes;       /* bytes taken by receivers in this run */
  uint64_t progress_ms;      /* the run's start or its last batch taken */
  uint64_t stall_logged_ms;  /* when a stall was last logged (0: never in
                                this run) */
  char why[160];             /* why the last batch was not taken; "" when
                                none failed since the last progress */
} dht__handoff;

/* node_lost.c's state. */
#define DHT__HELD_MAX 8
typedef struct dht__loss {
  dht__lost_range *ranges;       /* ranges recorded lost, oldest first */
  uint32_t n_ranges;             /* entries in ranges */
  dht__loss_check check;         /* the check in progress, if any */
  dht__range held[DHT__HELD_MAX]; /* ranges whose owner last found this
                                    node in sync with it, newest last */
  uint32_t n_held;               /* entries in held */
} dht__loss;

/* ---- ring: maintenance, join, leave ------------------------------------------ */

/* node_ring.c's state. */
typedef struct dht__ring {
  uint32_t next_finger;          /* the finger fix_fingers refreshes next */
  uint32_t next_probe;           /* round-robin position in lost */
  uint64_t stabilize_at_ms;      /* next stabilize */
  uint64_t fix_fingers_at_ms;    /* next fix_fingers */
  uint64_t check_pred_at_ms;     /* next check_predecessor and probe */
  uint32_t seed_check_rounds;    /* predecessor checks since the last
                                    lookup of this node's id through a
                                    seed (node_ring.c seed_check) */
  uint32_t next_seed;            /* join_list entry seed_check asks next */
  bool stabilize_busy;           /* a stabilize GET_NEIGHBORS is in flight */
  bool pred_check_busy;          /* a check_predecessor is in flight */
  bool probe_busy;               /* a PING to a lost peer is in flight */
  bool skip_check_busy;          /* a PING to a node found skipped is in
                                    flight (node_ring.c check_skipped) */
  dht_id skip_check_succ;        /* the successor's id at the last pass's
                                    end (check_skipped) */
  dht_id agreed_succ;            /* the successor whose last NEIGHBORS
                                    named this node its predecessor... */
  bool succ_agreed;              /* ...when this is set (readiness) */
  uint64_t unnamed_since_ms;     /* since when the successor names another
                                    node, or none, as its predecessor (0:
                                    it names this one) */
  uint64_t unnamed_logged_ms;    /* when that was last logged */
  dht_id agreed_pred;            /* the predecessor whose last NEIGHBORS
                                    named this node its first successor... */
  bool pred_agreed;              /* ...when this is set (readiness) */
  uint64_t succ_view;            /* the view tag of the successor's last
                                    full NEIGHBORS, sent as seen while... */
  uint64_t succ_view_list;       /* ...the successor list still has this
                                    dht__list_print (0: no tag kept) */
  uint64_t pred_view;            /* the same for the predecessor check... */
  uint64_t pred_view_list;       /* ...and the predecessor list */
  bool preds_short;              /* the predecessor list has fewer than
                                    replicas nodes and does not wrap: it is
                                    asked for again sooner */
  bool finger_lookup_busy;       /* a finger lookup is in flight */
  bool finger_full_lookup;       /* the check of finger next_finger at the
                                    node it names failed: look it up from
                                    here instead */
  bool fingers_moved;            /* a finger changed in this pass */
  bool fingers_settled;          /* the last whole pass changed none: the
                                    fingers are checked at a slower pace */
  uint32_t settled_passes;       /* whole passes in a row that changed no
                                    finger (check_skipped's pace) */
  uint64_t split_seen_ms;        /* when a skipped-node check or a merge
                                    last found a node between this one and
                                    its successor (0: never) */

  char (*join_list)[DHT_ADDR_LEN_MAX + 1]; /* the candidates to join
                                    through, in order (heap; NULL until a
                                    join): a JOINED node that is cut off
                                    joins again through them too, and
                                    every node checks its place in the
                                    ring through them (seed_check) */
  uint32_t n_join_list;          /* entries in join_list */
  char join_addr[DHT_ADDR_LEN_MAX + 1]; /* the candidate of the attempt
                                    in flight, for the log */
  uint32_t join_tries;           /* join lookups sent */
  bool rejoining;                /* joined once, found itself cut off */
  bool heard;                    /* a successor answered a stabilize since
                                    the join: the ring knows of this node
                                    (else its join did not take) */
  bool seed;                     /* its own address was in the join list:
                                    when no candidate is in a ring, it
                                    founds one (node_ring.c join_done) */
  uint64_t join_retry_at_ms;     /* next join attempt, or NEVER */

  uint32_t leave_acks_wanted;    /* LEAVING: LEAVE notices not yet settled */
  bool leave_notified;           /* LEAVING: LEAVE notices sent */
} dht__ring;

/* ---- the node ------------------------------------------------------------------ */

struct dht_node {
  /* base (node_base.c), read by every layer */
  dht_settings set;              /* tunables, copied at creation */
  dht_id id;                     /* this node's ring position */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* advertised address */
  char short_id[DHT_ID_SHORT_LEN]; /* log tag */
  dht_store *store;              /* borrowed from the host */
  dht_log_fn log;                /* host's log sink, may be NULL */
  void *log_ud;                  /* passed to log */
  dht_log_level log_level;       /* lines above it are not formatted */
  dht_fault_fn fault;            /* host's fault points, may be NULL */
  void *fault_ud;                /* passed to fault */
  uint64_t rng[2];               /* xorshift128+ state, seeded by the host */
  uint8_t link_key[DHT__LINK_KEY_LEN]; /* keys this node's link tokens
                                    (node_base.c), derived from the seed */
  uint64_t now_ms;               /* time of the call in progress */
  uint64_t wall_base_ms;         /* wall clock at created_ms */
  uint64_t created_ms;           /* now_ms at dht_node_new */
  bool in_call;                  /* guards against re-entry */
  dht_node_state state;          /* lifecycle, set by node_ring.c */
  bool maintenance;              /* periodic repair enabled */
  dht__hooks hooks;              /* upper layers' event handlers */

  dht__peer *peers;              /* known peers, indexed by int32_t */
  dht__peer_scan *peer_scan;     /* beside peers, the same indices */
  int32_t n_peers;               /* slots in use or used once */
  int32_t cap_peers;             /* slots allocated */

  dht__pending **pending;        /* requests by slot; a live request's
                                    struct never moves, a free slot's may
                                    be NULL (never used, or trimmed) */
  uint32_t *deadline_heap;       /* live requests' slots, a binary min-heap
                                    on (deadline_ms, slot) */
  uint32_t *free_slots;          /* a stack of free slots */
  uint64_t *slot_rids;           /* each slot's live request's rid, 0 when
                                    free: the checks after every call read
                                    this, not the free slots' structs */
  uint32_t cap_pending;          /* entries in the four arrays above */
  uint32_t n_slots_used;         /* slots ever handed out: [0, n) */
  uint32_t n_pending;            /* live requests, also the heap's size */
  uint32_t n_free;               /* entries on the free stack */
  uint64_t rid_counter;          /* requests sent: request ids are a keyed
                                    hash of it (node_base.c) */
  uint32_t n_pending_structs;    /* slots whose struct is allocated */

  dht__outbox_entry *outbox;     /* actions not yet polled */
  size_t outbox_len;             /* entries queued */
  size_t outbox_cap;             /* entries allocated */
  size_t outbox_head;            /* next entry to poll */
  dht_buf arena;                 /* frames and addresses of the outbox */
  bool group_commit;             /* acknowledgements wait for commits */
  dht__held_ack *held;           /* acknowledgements waiting for one */
  size_t n_held, cap_held;       /* entries in use, allocated */
  dht__delayed_reply *delayed;   /* replies held back by a fault point,
                                    in the order sent; allocated at the
                                    first (DHT__DELAYED_MAX entries) */
  uint32_t n_delayed;            /* entries in delayed */

  dht_node_counters counters;    /* what happened, for STATS */

  /* table (node_table.c), the only layer that writes these */
  int32_t pred;                  /* predecessor, or DHT__NO_PEER */
  int32_t preds[DHT_SUCC_LIST_MAX]; /* predecessor list: pred, its pred...;
                                    preds[0] == pred when n_preds > 0 */
  uint32_t n_preds;              /* entries in preds */
  int32_t succs[DHT_SUCC_LIST_MAX]; /* successor list, closest first */
  uint32_t n_succs;              /* entries in succs; 0 = alone */
  bool had_succ;                 /* had a successor once: alone now, it is
                                    cut off or the last node left, not a
                                    ring of one by design */
  int32_t fingers[DHT_ID_BITS];  /* finger i = successor(id + 2^i) */
  dht__lost lost[DHT__LOST_MAX]; /* peers declared dead, still probed */
  uint64_t lost_last_ms;         /* when a peer was last put on lost (0:
                                    never), forgotten or not since */
  int32_t last_preds[DHT_SUCC_LIST_MAX]; /* the predecessor list when it
                                    was last whole (held), for node_lost.c
                                    to tell which nodes held what */
  uint32_t n_last_preds;         /* entries in last_preds */

  dht__loss loss;                /* node_lost.c */
  dht__repl repl;                /* node_repl.c */
  dht__handoff handoff;          /* node_handoff.c */
  dht__ring ring;                /* node_ring.c */
  dht__bad_conn bad_conns[DHT__BAD_CONNS]; /* node.c: per-connection
                                              garbage */
  dht__metrics metrics;          /* node_metrics.c: traffic, results and
                                    latency of what passes */
  dht__link links[DHT__LINKS_MAX]; /* node.c: who sends on which inbound
                                      connection */
};

#endif /* DHT_NODE_STATE_H */
