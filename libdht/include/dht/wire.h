/*
 * dht/wire.h: the wire codec. Frames are a 4-byte big-endian body length
 * followed by one msgpack map (the body); docs/PROTOCOL.md is the reference.
 *
 * Decoding never trusts the peer: the frame length is checked before a body
 * byte is buffered, every msgpack container's declared count is checked
 * against the bytes that remain before anything is allocated, and every field
 * is checked for type and length against dht_wire_limits. Decoded byte
 * strings (keys, values, addresses) point into the caller's body buffer, so
 * that buffer must outlive the dht_msg.
 */
#ifndef DHT_WIRE_H
#define DHT_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/id.h"

#define DHT_PROTOCOL_VERSION 1
#define DHT_FRAME_HEADER_LEN 4

/* Hard caps that bound the arrays a dht_msg can carry; the configurable
 * limits in dht_wire_limits must stay at or below them. */
#define DHT_ADDR_LEN_MAX 255  /* "host:port" or "[v6]:port", as DNS allows */
#define DHT_SUCC_LIST_MAX 32  /* successor list entries */
#define DHT_PATH_MAX 64       /* nodes recorded by a traced lookup */
#define DHT_HOPS_MAX 64       /* forwards before a lookup is abandoned */
#define DHT_COUNTERS_MAX 256  /* counters in a STATS reply */
#define DHT_NESTING_MAX 8     /* msgpack containers inside containers */
#define DHT_DIGEST_LEN 16     /* bytes in one anti-entropy bucket digest */
#define DHT_SYNC_BUCKETS_MAX 256 /* buckets a SYNC may split its range into */
#define DHT_LOST_MAX 16       /* lost ranges in a STATS reply */
#define DHT_EXCHANGES_MAX 8   /* anti-entropy exchanges in a STATS reply */
#define DHT_DEAD_MAX 16       /* dead peers in a STATS reply */

/* Message types. The numbers are the wire values and never change. */
#define DHT_MSG_TYPE_MAP(X)                                                    \
  X(ERROR, 0)         /* reply: code, msg */                                   \
  X(PING, 1)          /* request: - */                                         \
  X(PONG, 2)          /* reply: peer (the responder) */                        \
  X(FIND_SUCC, 3)     /* request: target, hops, trace, path */                 \
  X(FIND_SUCC_R, 4)   /* reply: peer (the owner), hops, path */                \
  X(GET_NEIGHBORS, 5) /* request: seen */                                      \
  X(NEIGHBORS, 6)     /* reply: peer (responder), pred, succs, view, same */   \
  X(NOTIFY, 7)        /* one-way: peer (who thinks it is your predecessor) */  \
  X(GET, 8)           /* request: key, hops, final, direct */                  \
  X(PUT, 9)           /* request: key, value, hops, final, direct */           \
  X(DEL, 10)          /* request: key, hops, final, direct */                  \
  X(VALUE, 11)        /* reply to GET: value, hops */                          \
  X(OK, 12)           /* reply to PUT, DEL, HANDOFF, LEAVE: hops */            \
  X(HANDOFF, 13)      /* request: items (keys the receiver now owns) */        \
  X(LEAVE, 14)        /* request: peer (leaving), pred, succs */               \
  X(STATS, 15)        /* request: - */                                         \
  X(STATS_R, 16)      /* reply: peer, pred, succs, preds, fingers, counters */ \
  X(ACCEPTED, 17)     /* interim reply to a request: taken over, wait */      \
  X(REPLICATE, 18)    /* request: items (versioned records to merge) */       \
  X(SYNC, 19)         /* request: from, to, digests (per bucket), probe */   \
  X(SYNC_R, 20)       /* reply: buckets that differ, items in them, more */   \
  X(FETCH, 21)        /* request: key (one record, wherever it is held) */    \
  X(RECORD, 22)       /* reply to FETCH: items (none or the record) */        \
  X(SCAN, 23)         /* request: from, limit (list the records held) */      \
  X(SCAN_R, 24)       /* reply: items (keys and versions, no values), more */ \
  X(ACK_LOST, 25)     /* request: from, to (forget the lost ranges in it) */ \
  X(CHECK_LINK, 26)   /* request: peer (the asker), link: "did you send  */ \
                      /* me this token?" answered PONG or ERROR UNBOUND */ \
  X(MOVED, 27)        /* reply to a direct GET/PUT/DEL: peer (ask it), final */

typedef enum dht_msg_type {
#define DHT__MSG_ENUM(name, value) DHT_MSG_##name = (value),
  DHT_MSG_TYPE_MAP(DHT__MSG_ENUM)
#undef DHT__MSG_ENUM
} dht_msg_type;

#define DHT_MSG_TYPE_LAST DHT_MSG_MOVED

/* What the handshake of a connection proved its peer to be (docs/SECURITY.md).
 * In an open ring (no cluster key) every connection is a member. */
typedef enum dht_role {
  DHT_ROLE_MEMBER = 0, /* a node of the ring (or an operator with its key):
                          may send every message type */
  DHT_ROLE_CLIENT = 1, /* holds only the client key: PING, FIND_SUCC, GET,
                          PUT, DEL and STATS */
} dht_role;

/* "FIND_SUCC" for DHT_MSG_FIND_SUCC; "UNKNOWN" for values outside the map. */
const char *dht_msg_type_name(int type);

/* The message type of a frame body read without decoding it, where the
 * map begins with "v" and then "t", as libdht's encoder writes them; -1
 * when it does not (decode it to know). */
int dht_msg_peek_type(const uint8_t *body, size_t len);

/* True for the types that answer a request (ERROR, PONG, ..., SCAN_R) and
 * for the interim ACCEPTED; false for requests, NOTIFY and unknown types. */
bool dht_msg_type_is_reply(int type);

/* A byte string borrowed from somewhere else (a frame, the caller). */
typedef struct dht_bytes {
  const uint8_t *p; /* first byte; may be NULL when len == 0 */
  size_t len;       /* number of bytes */
} dht_bytes;

/* A node as it travels on the wire: its id and the address to reach it. */
typedef struct dht_peer_ref {
  dht_id id;      /* the node's ring position */
  dht_bytes addr; /* "host:port", 1..addr_len_max bytes, not NUL-terminated */
} dht_peer_ref;

/* One finger of a STATS reply: where its run of equal entries starts. */
typedef struct dht_finger_ref {
  uint32_t start_bit; /* finger i targets self + 2^i; this run starts at i */
  dht_peer_ref peer;  /* the node that finger points to */
} dht_finger_ref;

/* The version of a stored value: a hybrid logical clock stamp (physical
 * milliseconds << 16 | logical counter) and the id of the node that
 * coordinated the write. Versions order writes: last writer wins. */
typedef struct dht_version {
  uint64_t hlc;  /* the stamp; 0 for data written before versions */
  dht_id writer; /* breaks ties between equal stamps */
} dht_version;

/* <0, 0 or >0 as a is older than, equal to or newer than b. */
int dht_version_cmp(const dht_version *a, const dht_version *b);

/* One record moved by HANDOFF, REPLICATE, SYNC_R, RECORD or SCAN_R. */
typedef struct dht_kv {
  dht_bytes key;       /* 1..key_len_max bytes */
  dht_bytes value;     /* 0..value_len_max bytes (empty in SCAN_R) */
  bool has_version;    /* version and tombstone were on the wire */
  bool tombstone;      /* the key was deleted at version */
  dht_version version; /* when and by whom it was written */
} dht_kv;

/* A range of the ring whose every copy died before it could be repaired,
 * as the node that became its owner recorded it (STATS_R). */
typedef struct dht_lost_range {
  dht_id from, to;       /* the range (from, to] */
  uint64_t at_ms;        /* when it was recorded, wall-clock ms */
  dht_peer_ref *holders; /* the nodes that held it, all found dead */
  size_t n_holders;      /* at most DHT_SUCC_LIST_MAX */
} dht_lost_range;

/* How an anti-entropy exchange went: what the owner's last exchange with
 * one replica found (STATS_R). */
typedef enum dht_exchange_outcome {
  DHT_EXCHANGE_RUNNING = 0, /* digests sent, or records being pushed */
  DHT_EXCHANGE_DONE = 1,    /* every differing bucket pushed (or none) */
  DHT_EXCHANGE_FAILED = 2,  /* the replica did not answer, refused, or a
                               push failed: the next round tries again */
} dht_exchange_outcome;
#define DHT_EXCHANGE_OUTCOME_LAST DHT_EXCHANGE_FAILED

/* The last anti-entropy exchange of the responder's range with one replica
 * (STATS_R exchanges). */
typedef struct dht_exchange {
  dht_peer_ref peer; /* the replica */
  dht_id from, to;   /* the range compared, (from, to] */
  uint64_t ago_ms;   /* it began this long before the reply */
  uint64_t took_ms;  /* it ran this long (so far, while running) */
  uint64_t buckets;  /* digest buckets found to differ (0: in sync) */
  uint64_t pushed;   /* records pushed to the replica */
  uint64_t outcome;  /* a dht_exchange_outcome */
} dht_exchange;

/* A peer the responder declared dead and still probes (STATS_R dead). */
typedef struct dht_dead_peer {
  dht_peer_ref peer; /* the peer */
  uint64_t ago_ms;   /* declared dead this long before the reply */
} dht_dead_peer;

/* One named counter of a STATS reply. */
typedef struct dht_counter {
  dht_bytes name; /* 1..64 bytes of ASCII */
  uint64_t value;
} dht_counter;

/*
 * One decoded (or to-be-encoded) message. Which fields mean something depends
 * on type (see DHT_MSG_TYPE_MAP); the others are zero. Arrays filled in by the
 * decoder live until dht_msg_free(); arrays given to the encoder are borrowed.
 */
typedef struct dht_msg {
  uint32_t version;  /* DHT_PROTOCOL_VERSION */
  dht_msg_type type; /* what this message is */
  uint64_t rid;      /* request id; a reply echoes its request's */

  dht_id target;   /* FIND_SUCC: the id whose successor is wanted */
  dht_id from;     /* SYNC, SCAN: the range starts just after from */
  dht_id to;       /* SYNC: ... and ends at to, inclusive */
  uint32_t limit;  /* SCAN: at most this many items in the reply */
  bool more;       /* SYNC_R, SCAN_R: the reply was cut short */
  uint32_t hops;   /* forwards so far (requests) or in all (replies) */
  bool trace;      /* FIND_SUCC: record the path */
  bool final;      /* GET/PUT/DEL: the sender believes the receiver owns key;
                      MOVED: the responder believes peer owns it */
  bool direct;     /* GET/PUT/DEL: serve it here or answer MOVED naming
                      the node to ask; never routed on */
  dht_bytes key;   /* GET/PUT/DEL */
  dht_bytes value; /* PUT, VALUE */
  bool has_ver;    /* ver is set (absent on the wire otherwise) */
  dht_version ver; /* PUT, DEL: the write's version, fixed where it was
                      issued; ERROR STALE: the newer version it lost to */
  uint64_t wall_ms; /* NEIGHBORS: the responder's wall clock, ms since the
                       Unix epoch (0: not sent) */
  uint64_t seen;    /* GET_NEIGHBORS: the view tag of the asker's last full
                       NEIGHBORS from this responder (0: not sent) */
  uint64_t view;    /* NEIGHBORS: a tag of the responder's pred, succs and
                       preds; never 0 when sent (0: not sent) */
  bool same;        /* NEIGHBORS: view equals the request's seen, so pred,
                       succs and preds are left out */
  bool probe;       /* SYNC: one digest of the whole range; the answer says
                       whether it differs and carries no items */

  uint64_t link;     /* NOTIFY, LEAVE, HANDOFF, REPLICATE, SYNC, FETCH: the
                        sender's link token for the receiver; CHECK_LINK:
                        the token to confirm (0: not sent) */
  bool has_src;      /* src is set */
  dht_peer_ref src;  /* HANDOFF, REPLICATE, SYNC, FETCH: the sender itself,
                        as it advertises itself (absent: not sent) */

  bool has_peer;     /* peer is set */
  dht_peer_ref peer; /* PONG, FIND_SUCC_R, NEIGHBORS, NOTIFY, LEAVE, STATS_R,
                        MOVED */
  bool has_pred;     /* pred is set (absent or nil on the wire otherwise) */
  dht_peer_ref pred; /* NEIGHBORS, LEAVE, STATS_R */

  dht_peer_ref *succs;     /* NEIGHBORS, LEAVE, STATS_R: successor list */
  size_t n_succs;          /* at most DHT_SUCC_LIST_MAX */
  dht_peer_ref *preds;     /* NEIGHBORS, STATS_R: predecessor list */
  size_t n_preds;          /* at most DHT_SUCC_LIST_MAX */
  dht_peer_ref *path;      /* FIND_SUCC, FIND_SUCC_R: nodes visited */
  size_t n_path;           /* at most DHT_PATH_MAX */
  dht_finger_ref *fingers; /* STATS_R: distinct fingers */
  size_t n_fingers;        /* at most DHT_ID_BITS */
  dht_kv *items;           /* HANDOFF, REPLICATE, SYNC_R, RECORD, SCAN_R */
  size_t n_items;          /* at most limits->items_max */
  const uint8_t *digests;  /* SYNC: n_digests * DHT_DIGEST_LEN bytes */
  size_t n_digests;        /* 1..DHT_SYNC_BUCKETS_MAX */
  uint16_t *buckets;       /* SYNC_R: indexes (< n_digests) that differ */
  size_t n_buckets;        /* at most DHT_SYNC_BUCKETS_MAX */
  dht_counter *counters;   /* STATS_R */
  size_t n_counters;       /* at most DHT_COUNTERS_MAX */
  dht_lost_range *lost;    /* STATS_R: ranges recorded as lost */
  size_t n_lost;           /* at most DHT_LOST_MAX */
  dht_exchange *exchanges; /* STATS_R: last anti-entropy exchanges */
  size_t n_exchanges;      /* at most DHT_EXCHANGES_MAX */
  dht_dead_peer *dead;     /* STATS_R: peers declared dead */
  size_t n_dead;           /* at most DHT_DEAD_MAX */

  int32_t error_code;  /* ERROR: a DHT_ERR_* value (negative) */
  dht_bytes error_msg; /* ERROR: one line for humans, may be empty */

  bool replyable_; /* decoder got a valid version, type and rid */
  void *zone_;     /* the decoder's allocations; NULL when built by hand */
} dht_msg;

/* Limits the decoder enforces. Every one is a setting with a default. */
typedef struct dht_wire_limits {
  uint32_t frame_len_max;   /* body bytes in one frame */
  uint32_t key_len_max;     /* bytes in a key */
  uint32_t value_len_max;   /* bytes in a value */
  uint32_t addr_len_max;    /* bytes in an address, <= DHT_ADDR_LEN_MAX */
  uint32_t items_max;       /* key-value pairs in one HANDOFF */
  uint32_t error_msg_len_max; /* bytes in an ERROR's msg */
} dht_wire_limits;

/* frame 4 MiB, key 1 KiB, value 1 MiB, addr 255, items 65536, error msg 256 */
void dht_wire_limits_default(dht_wire_limits *lim);

/* A growable byte buffer owned by its user. */
typedef struct dht_buf {
  uint8_t *data; /* NULL until the first append */
  size_t len;    /* bytes in use */
  size_t cap;    /* bytes allocated */
} dht_buf;

void dht_buf_init(dht_buf *buf);
void dht_buf_free(dht_buf *buf);
/* Makes room for at least extra more bytes. Returns 0 or DHT_ERR_NOMEM. */
int dht_buf_reserve(dht_buf *buf, size_t extra);
/* Appends len bytes. Returns 0 or DHT_ERR_NOMEM. */
int dht_buf_append(dht_buf *buf, const void *data, size_t len);

/*
 * Inspects the start of a byte stream. When at least the 4-byte header is
 * there, stores the body length in *body_len and returns 0; the whole frame
 * is then DHT_FRAME_HEADER_LEN + *body_len bytes.
 * Returns DHT_ERR_TRUNCATED when fewer than 4 bytes are available, and
 * DHT_ERR_TOO_LARGE when the declared length exceeds frame_len_max (the
 * stream cannot be resynchronised: close it).
 */
int dht_frame_peek(const uint8_t *buf, size_t len, uint32_t frame_len_max,
                   size_t *body_len);

/*
 * Appends one complete frame (header and body) for msg to out.
 * msg->version is ignored: DHT_PROTOCOL_VERSION is written. Only the fields
 * msg->type uses are written; peer whenever the type has one (has_peer is
 * not consulted) but in a NEIGHBORS marked same, pred only when has_pred.
 * Returns 0, DHT_ERR_NOMEM, or DHT_ERR_INVAL when msg breaks a hard cap
 * that every decoder enforces (an array above its DHT_*_MAX, an address
 * empty or above DHT_ADDR_LEN_MAX, an empty key, hops above DHT_HOPS_MAX,
 * a finger start_bit >= DHT_ID_BITS, a counter name outside 1..64 bytes, an
 * error_code >= 0, an unknown type). On error out is left as it was.
 */
int dht_msg_encode(const dht_msg *msg, dht_buf *out);

/*
 * Decodes one frame body (without its 4-byte header) into msg.
 * Returns 0 or one of DHT_ERR_TRUNCATED, DHT_ERR_MALFORMED, DHT_ERR_TRAILING,
 * DHT_ERR_TOO_LARGE, DHT_ERR_TOO_MANY, DHT_ERR_BAD_TYPE,
 * DHT_ERR_MISSING_FIELD, DHT_ERR_BAD_VERSION, DHT_ERR_UNKNOWN_TYPE,
 * DHT_ERR_NOMEM.
 * Even on error, msg->rid, msg->type and msg->version are filled in when the
 * body got far enough to hold them, and dht_msg_can_reply() says so, so the
 * caller can answer with an ERROR. Always call dht_msg_free() afterwards.
 */
int dht_msg_decode(dht_msg *msg, const uint8_t *body, size_t len,
                   const dht_wire_limits *lim);

/* True when the last dht_msg_decode() got as far as a valid rid and a type
 * (known, or a uint that is unknown), so an ERROR carrying msg->rid can be
 * sent. It does not tell requests from replies: never answer a known reply
 * type, ACCEPTED or NOTIFY, as docs/PROTOCOL.md section 6 requires. */
bool dht_msg_can_reply(const dht_msg *msg);

/* Releases what the decoder allocated and zeroes msg. Safe on a zeroed msg. */
void dht_msg_free(dht_msg *msg);

#endif /* DHT_WIRE_H */
