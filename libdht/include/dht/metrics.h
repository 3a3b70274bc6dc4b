/*
 * dht/metrics.h: what a node measures of its own traffic beyond its
 * counters (dht_node_counters), for a host that exports it (dhtd
 * --metrics): messages by type, requests by result, ERROR replies by code,
 * bytes by message class, how long the requests it answers take, and
 * gauges of its routing tables and repair backlog.
 *
 * Everything is counted by the node as frames pass through it, with the
 * times its host passes in: it only observes, and changes nothing the node
 * does. A request's latency runs from the call that handed it to the node
 * to the call in which the node queued its final answer (not ACCEPTED),
 * so its resolution is the host's clock (dhtd: libuv's loop time, in ms).
 */
#ifndef DHT_METRICS_H
#define DHT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "dht/err.h"
#include "dht/node.h"
#include "dht/wire.h"

/* Classes of messages, for the bytes counted per class; a reply counts in
 * the class of the request it answers. */
#define DHT_MSG_CLASS_MAP(X)                                                   \
  X(RING, "ring")               /* PING, GET_NEIGHBORS, NOTIFY, LEAVE */       \
  X(ROUTING, "routing")         /* FIND_SUCC */                                \
  X(REPLICATION, "replication") /* HANDOFF, REPLICATE, SYNC, FETCH */          \
  X(CLIENT, "client")           /* GET, PUT, DEL, STATS, SCAN, ACK_LOST */     \
  X(OTHER, "other")             /* frames that do not decode, replies that
                                   match no request, types of no class */

typedef enum dht_msg_class {
#define DHT__CLASS_ENUM(name, label) DHT_MSG_CLASS_##name,
  DHT_MSG_CLASS_MAP(DHT__CLASS_ENUM)
#undef DHT__CLASS_ENUM
  DHT_MSG_CLASSES /* how many */
} dht_msg_class;

/* "ring" for DHT_MSG_CLASS_RING; "other" for anything out of range. */
const char *dht_msg_class_name(int cls);

/* The requests whose latency is measured, as the client sees it. */
#define DHT_LATENCY_OP_MAP(X) X(GET) X(PUT) X(DEL) X(FIND_SUCC)

typedef enum dht_latency_op {
#define DHT__OP_ENUM(name) DHT_OP_##name,
  DHT_LATENCY_OP_MAP(DHT__OP_ENUM)
#undef DHT__OP_ENUM
  DHT_LATENCY_OPS /* how many */
} dht_latency_op;

/* Latency buckets: bucket i < DHT_LATENCY_BUCKETS - 1 holds the requests
 * that took at most 2^i ms and more than 2^(i-1) (bucket 0: at most 1 ms);
 * the last holds the longer ones. */
#define DHT_LATENCY_BUCKETS 17

/* How a request the node answered ended (its final reply). */
#define DHT_RESULT_MAP(X)                                                      \
  X(OK, "ok")               /* any answer but ERROR and MOVED */               \
  X(NOT_FOUND, "not_found") /* ERROR NOT_FOUND */                              \
  X(ERROR, "error")         /* any other ERROR */                              \
  X(MOVED, "moved")         /* MOVED: a direct request for another node */

typedef enum dht_result {
#define DHT__RESULT_ENUM(name, label) DHT_RESULT_##name,
  DHT_RESULT_MAP(DHT__RESULT_ENUM)
#undef DHT__RESULT_ENUM
  DHT_RESULTS /* how many */
} dht_result;

/* Entries of dht_node_metrics.errors_out: index -code for the codes of
 * dht/err.h, index 0 for any code outside it. */
#define DHT_ERR_CODES (1 - DHT_ERR_MIN)

typedef struct dht_node_metrics {
  /* Counted as frames pass, since the node was created. */
  uint64_t msgs_in[DHT_MSG_TYPE_LAST + 1];  /* frames decoded, by type */
  uint64_t msgs_out[DHT_MSG_TYPE_LAST + 1]; /* frames queued, by type */
  uint64_t errors_out[DHT_ERR_CODES];       /* ERROR replies, by code */
  uint64_t bytes_in[DHT_MSG_CLASSES];       /* frame bytes (length header
                                               included, before any seal)
                                               received, by class */
  uint64_t bytes_out[DHT_MSG_CLASSES];      /* ... and queued, by class */
  uint64_t results[DHT_MSG_TYPE_LAST + 1][DHT_RESULTS]; /* requests
                                               received and answered, by
                                               type and final answer */
  uint64_t latency[DHT_LATENCY_OPS][DHT_LATENCY_BUCKETS]; /* their latency,
                                               by op (not cumulative) */
  uint64_t latency_sum_ms[DHT_LATENCY_OPS]; /* ... summed */
  uint64_t untracked;                       /* requests left out of results
                                               and latency: no room to note
                                               their arrival, or no answer
                                               long after it */

  /* Gauges, as dht_node_get_metrics finds them. */
  dht_node_state state;      /* the node's state */
  uint32_t succs;            /* successors known */
  uint32_t preds;            /* predecessors known (the list) */
  bool has_pred;             /* the predecessor is known */
  uint32_t fingers_distinct; /* runs of equal fingers, as STATS lists */
  uint64_t keys;             /* records in the store, tombstones included */
  uint32_t pending;          /* requests this node has in flight */
  uint32_t in_progress;      /* requests received, not yet answered */
  uint32_t sync_sessions;    /* anti-entropy exchanges under way */
  uint32_t sync_buckets;     /* digest buckets found to differ in those
                                exchanges: their records are being
                                pushed to the replica */
  bool handoff_busy;         /* a hand-off batch is in flight */
  uint64_t repair_records;   /* records of the differing buckets still to
                                push to replicas, in the exchanges under
                                way (counted when each replica answered) */
  uint64_t repair_bytes;     /* ... their key and record bytes */
  uint64_t handoff_records;  /* records still to hand on to where they
                                belong (counted when the hand-off began) */
  uint64_t handoff_bytes;    /* ... their key and record bytes */
  uint64_t backlog_eta_ms;   /* the time both should still take: repair at
                                its rate limit (repair_bytes_per_s, after
                                any debt a batch sent on credit left) or at
                                the pace seen so far when slower, hand-off
                                at the pace seen so far (the repair rate
                                until a batch is taken); 0 with nothing
                                left */
  uint32_t writes_in_flight; /* replicated writes waiting for replicas */
  uint32_t acks_held;        /* answers waiting for a group commit */
  uint32_t ranges_lost;      /* ranges recorded lost, not acknowledged */
  bool range_fresh;          /* synced with every replica since the
                                predecessor last changed */
} dht_node_metrics;

/* Copies the node's metrics into out and fills in its gauges. Reads the
 * store's record count (its count op) and walks the node's small tables;
 * scans nothing. */
void dht_node_get_metrics(const dht_node *node, dht_node_metrics *out);

#endif /* DHT_METRICS_H */
