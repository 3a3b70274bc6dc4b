/*
 * dht/client.h: the blocking client library, for the dht CLI, the benchmark
 * and the integration tests, plus the "HOST:PORT" parser that dhtd shares.
 *
 * A dht_client is one TCP connection to one node, which routes every request
 * it gets (docs/PROTOCOL.md). Two layers:
 *
 *   - Blocking calls (ping, put, get, remove, lookup, neighbors, stats,
 *     call). Each takes timeout_ms and must finish within it, connect, write
 *     and read included: the deadline is fixed when the call starts and every
 *     poll() waits only for what remains of it. They connect on demand, skip
 *     ACCEPTED (the interim reply of a forwarded request) and replies to
 *     other request ids, and return the final reply.
 *   - A pipelined layer for the benchmark (send, queue, recv, flush, fd):
 *     requests go out without waiting, replies come back in any order,
 *     matched by the rid that dht_client_send assigned. Nothing here blocks
 *     except recv, and only up to its timeout, so one poll() loop can drive
 *     many clients.
 *
 * By default nothing is retried: a call that fails returns its error and
 * the caller decides. dht_client_set_retry() turns on retries (and the use
 * of the nodes given to dht_client_set_fallbacks()) for put, get, remove
 * and lookup, still within the call's timeout_ms. A timed-out request is
 * not cancelled (the protocol cannot); its late reply is dropped by the
 * blocking calls because its rid is no longer awaited. The socket is
 * closed on an I/O error, when the peer closes it and when a reply frame
 * is longer than frame_len_max; the next blocking call (or
 * dht_client_connect) opens a new one.
 *
 * With a cluster key in the settings every connection starts with the
 * key handshake (within the call's deadline) and carries sealed frames; a
 * handshake the node refuses, or a frame that fails authentication, is
 * DHT_ERR_AUTH and closes the connection (never retried: another node of
 * the ring would refuse the same key).
 *
 * Every failing call leaves a one-line, human-readable explanation in
 * dht_client_last_error() ("cannot reach 127.0.0.1:7000: Connection
 * refused"). Connection failures are DHT_ERR_UNAVAILABLE, a passed deadline
 * DHT_ERR_TIMEOUT, and an ERROR reply returns its (negative) code as is,
 * which may be one this library does not know.
 *
 * Name resolution uses getaddrinfo(), which cannot be bounded: a slow
 * resolver can overrun timeout_ms. Numeric addresses never touch it.
 *
 * A dht_client is not thread-safe; use one per thread. The library installs
 * no signal handlers: writes use MSG_NOSIGNAL, so a closed peer is an error
 * code, never SIGPIPE.
 */
#ifndef DHT_CLIENT_H
#define DHT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/id.h"
#include "dht/seal.h"
#include "dht/wire.h"

/* The longest counter name a STATS reply may carry (docs/PROTOCOL.md 2.3). */
#define DHT_CLIENT_COUNTER_NAME_MAX 64

/*
 * Splits "HOST:PORT", "[IPv6]:PORT" or "NAME:PORT" into host (without the
 * brackets, NUL-terminated, at most host_len - 1 bytes) and port.
 * Strict: the whole string is at most DHT_ADDR_LEN_MAX bytes; the port is
 * 1..65535 in decimal, without sign, spaces or leading zeros; a bracketed
 * host must be an IPv6 literal (an optional %zone is allowed); an unbracketed
 * host must be an IPv4 literal or a DNS name (letters, digits, '-', '_',
 * dot-separated labels of 1..63 bytes, 253 bytes in all, one trailing dot
 * allowed), so an unbracketed IPv6 address is refused.
 * host and port are written only on success. Any argument may be NULL.
 * Returns 0 or DHT_ERR_INVAL (bad syntax, NULL argument, or host_len too
 * small for the host).
 */
int dht_addr_parse(const char *addr, char *host, size_t host_len,
                   uint16_t *port);

typedef struct dht_client dht_client;

/* What a client may buffer and accept. */
typedef struct dht_client_settings {
  dht_wire_limits limits; /* reply decoding; a reply frame longer than
                             limits.frame_len_max closes the connection, and
                             keys and values sent are checked against
                             key_len_max and value_len_max */
  size_t out_len_max;     /* bytes of requests queued but not yet written
                             before dht_client_send refuses with
                             DHT_ERR_FULL (one request always fits when the
                             queue is empty) */
  dht_ring_key key;       /* a closed ring's key (dht/seal.h), copied: each
                             connection proves it before any request, as a
                             member with the member key, as a client with
                             the client key; kind DHT_KEY_NONE: an open ring
                             (plain frames). A node that refuses the key
                             closes the connection: DHT_ERR_AUTH */
} dht_client_settings;

/* dht_wire_limits_default() (frame 4 MiB, key 1 KiB, value 1 MiB), an
 * output queue of 16 MiB and no cluster key. */
void dht_client_settings_default(dht_client_settings *settings);

/* A node as the client hands it out: its own copy, NUL-terminated. Control
 * bytes in the address (a hostile node could send any bytes) are replaced
 * by '?', so it is safe to print. */
typedef struct dht_client_peer {
  dht_id id;                       /* the node's ring position */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* "host:port" or "[v6]:port" */
} dht_client_peer;

/* The answer to a lookup (FIND_SUCC). */
typedef struct dht_client_lookup_result {
  dht_client_peer owner;              /* the first node at or after target */
  uint32_t hops;                      /* routing steps the lookup took */
  size_t n_path;                      /* entries in path; 0 without trace */
  dht_client_peer path[DHT_PATH_MAX]; /* nodes visited, in order */
} dht_client_lookup_result;

/* The answer to GET_NEIGHBORS: a node's view of its ring neighbourhood. */
typedef struct dht_client_neighbors {
  dht_client_peer node;                     /* the node that answered */
  bool has_pred;                            /* pred is set */
  dht_client_peer pred;                     /* its predecessor */
  size_t n_succs;                           /* entries in succs, may be 0 */
  dht_client_peer succs[DHT_SUCC_LIST_MAX]; /* successor list, nearest first */
  size_t n_preds;                           /* entries in preds; 0 when the
                                               node does not send the list */
  dht_client_peer preds[DHT_SUCC_LIST_MAX]; /* predecessor list, nearest
                                               first */
} dht_client_neighbors_result;

/* One run of equal fingers in a STATS reply. */
typedef struct dht_client_finger {
  uint32_t start_bit;   /* first i of the run: finger i is succ(node + 2^i) */
  dht_client_peer peer; /* where the fingers of the run point */
} dht_client_finger;

/* One named counter of a STATS reply. */
typedef struct dht_client_counter {
  char name[DHT_CLIENT_COUNTER_NAME_MAX + 1]; /* NUL-terminated, sanitised */
  uint64_t value;
} dht_client_counter;

/* Holders named per lost range; a STATS reply may name more (up to R). */
#define DHT_CLIENT_LOST_HOLDERS_MAX 8

/* A range a node recorded as lost: every node that held it died before
 * repair could copy it (STATS_R lost). */
typedef struct dht_client_lost_range {
  dht_id from, to;    /* the range (from, to] */
  uint64_t at_ms;     /* when it was recorded, wall-clock ms */
  size_t n_holders;   /* entries in holders */
  dht_client_peer holders[DHT_CLIENT_LOST_HOLDERS_MAX]; /* the holders */
} dht_client_lost_range;

/* The last anti-entropy exchange of a node's range with one of its
 * replicas (STATS_R exchanges; dht/wire.h, dht_exchange). */
typedef struct dht_client_exchange {
  dht_client_peer replica; /* the replica */
  dht_id from, to;         /* the range compared, (from, to] */
  uint64_t ago_ms;         /* it began this long before the answer */
  uint64_t took_ms;        /* it ran this long (so far, while running) */
  uint64_t buckets;        /* digest buckets found to differ (0: in sync) */
  uint64_t pushed;         /* records pushed to the replica */
  dht_exchange_outcome outcome; /* running, done or failed */
} dht_client_exchange;

/* A peer a node declared dead and still probes (STATS_R dead). */
typedef struct dht_client_dead_peer {
  dht_client_peer peer; /* the peer */
  uint64_t ago_ms;      /* declared dead this long before the answer */
} dht_client_dead_peer;

/* The decoded STATS_R of one node. About 120 KiB: prefer the heap (or a
 * static) to a small stack. */
typedef struct dht_client_stats {
  dht_client_peer node;                     /* the node that answered */
  bool has_pred;                            /* pred is set */
  dht_client_peer pred;                     /* its predecessor */
  size_t n_succs;                           /* entries in succs */
  dht_client_peer succs[DHT_SUCC_LIST_MAX]; /* successor list, nearest first */
  size_t n_preds;                           /* entries in preds; 0 when the
                                               node does not send the list */
  dht_client_peer preds[DHT_SUCC_LIST_MAX]; /* predecessor list, nearest
                                               first */
  size_t n_fingers;                         /* entries in fingers */
  dht_client_finger fingers[DHT_ID_BITS];   /* one per run of equal fingers */
  size_t n_counters;                        /* entries in counters */
  dht_client_counter counters[DHT_COUNTERS_MAX]; /* in the order sent */
  size_t n_lost;                            /* entries in lost */
  dht_client_lost_range lost[DHT_LOST_MAX]; /* ranges it recorded lost */
  size_t n_exchanges;                       /* entries in exchanges */
  dht_client_exchange exchanges[DHT_EXCHANGES_MAX]; /* with its replicas */
  size_t n_dead;                            /* entries in dead */
  dht_client_dead_peer dead[DHT_DEAD_MAX];  /* peers it found dead */
} dht_client_stats_result;

/* One record a node holds, as SCAN lists it (no value). */
typedef struct dht_client_scan_item {
  const uint8_t *key;  /* key_len bytes, owned by the scan result */
  size_t key_len;      /* 1..key_len_max */
  dht_id key_id;       /* dht_id_hash(key): its place on the ring */
  bool has_version;    /* version and tombstone were sent */
  bool tombstone;      /* the key was deleted at version */
  dht_version version; /* when and by whom it was last written */
} dht_client_scan_item;

/* The answer to SCAN: one page of the records a node holds, in ring order
 * of their key ids. Storage the caller owns: release it with
 * dht_client_scan_result_free(). */
typedef struct dht_client_scan_result {
  size_t n_items;              /* entries in items */
  dht_client_scan_item *items; /* malloc'd; NULL when there are none */
  bool more;                   /* the node cut the reply short: go on from
                                  items[n_items - 1].key_id */
  uint8_t *keys_;              /* one allocation holding every key */
} dht_client_scan_result;

/* Frees what a scan result holds and zeroes it. Safe on a zeroed result
 * and on one a failed dht_client_scan() left. NULL is a no-op. */
void dht_client_scan_result_free(dht_client_scan_result *res);

/* ACK_LOST: tells the node that an operator has seen its record of the
 * lost range (from, to], which it then forgets. */
int dht_client_ack_lost(dht_client *c, const dht_id *from, const dht_id *to,
                        int timeout_ms);

/* Finds the counter called name (for example "keys", "pending", "state").
 * Returns 0 and sets *value, or DHT_ERR_NOT_FOUND. */
int dht_client_stats_counter(const dht_client_stats_result *stats,
                             const char *name, uint64_t *value);

/* ---- lifecycle ---------------------------------------------------------- */

/*
 * Creates a client for the node at addr (see dht_addr_parse), with settings
 * copied (NULL: the defaults). Does no I/O: the first blocking call, or
 * dht_client_connect(), connects. On error *out is NULL.
 * Returns 0, DHT_ERR_INVAL (bad address, settings above the wire's hard
 * caps) or DHT_ERR_NOMEM.
 */
int dht_client_new(dht_client **out, const char *addr,
                   const dht_client_settings *settings);

/* Closes the connection and frees the client. dht_client_del(NULL) is a
 * no-op. (Deleting a key is dht_client_remove.) */
void dht_client_del(dht_client *c);

/* The address given to dht_client_new, as given. */
const char *dht_client_addr(const dht_client *c);

/* Why the last failing call on c failed: one line without a trailing
 * newline, never NULL; "" until something fails. The text is overwritten by
 * the next failure only. */
const char *dht_client_last_error(const dht_client *c);

/* When the last call ended with an ERROR reply: the node's own words for
 * it (made printable), e.g. "node 127.0.0.1:7103: disk full: ..."; else
 * "". */
const char *dht_client_last_refusal(const dht_client *c);

/*
 * Connects to the current node (dht_client_current_addr) unless already
 * connected, trying each address the host resolves to in turn, each with a
 * non-blocking connect; the whole attempt ends by the deadline. Does not
 * move on to a fallback.
 * Returns 0, DHT_ERR_UNAVAILABLE (resolution failed, or every address
 * refused or failed), DHT_ERR_TIMEOUT, DHT_ERR_INVAL (timeout_ms < 0) or
 * DHT_ERR_NOMEM.
 */
int dht_client_connect(dht_client *c, int timeout_ms);

/* True while a connection is open (as far as the client knows). */
bool dht_client_connected(const dht_client *c);

/* Closes the connection, dropping queued output and unread input; the
 * client stays usable and reconnects on the next blocking call. */
void dht_client_close(dht_client *c);

/* The most fallback addresses one client takes. */
#define DHT_CLIENT_FALLBACKS_MAX 64

/*
 * Extra nodes to fall back on: when the current node cannot be reached (or
 * is itself the problem, see dht_client_set_retry) a retrying call moves on
 * to the next address in this list, round-robin, starting over from
 * dht_client_new's address after the last one. Calls without retries use
 * the current node only. The addresses are copied (each checked as by
 * dht_addr_parse); n == 0 clears the list. When the client was using a
 * fallback, it closes that connection and goes back to dht_client_new's
 * address. On error the list is left as it was.
 * Returns 0, DHT_ERR_INVAL (a bad address, addrs NULL with n > 0, more
 * than DHT_CLIENT_FALLBACKS_MAX) or DHT_ERR_NOMEM.
 */
int dht_client_set_fallbacks(dht_client *c, const char *const *addrs, size_t n);

/*
 * Turns retries on or off (off by default). With retries on, put, get,
 * remove and lookup retry a transient failure until the call's timeout_ms
 * is used up; the deadline stays the one fixed when the call started.
 * Transient: the node cannot be reached or closed the connection, an
 * attempt timed out, or the node answered UNAVAILABLE, TIMEOUT, STATE,
 * HOPS or FULL. NOT_FOUND, TOO_LARGE, a reply of the wrong type, a reply
 * that does not decode and every other answer are returned at once.
 *
 * Each attempt may use max(remaining / 2, min(remaining, 250 ms)) of what
 * remains, so that a dead or hung node cannot eat the whole deadline while
 * a request that the ring needs a few hundred ms to re-route still gets
 * the time to complete. Before an attempt on a node already tried in this
 * call the client pauses 25 ms, doubling up to 200 ms (never past the
 * deadline); a fallback not tried yet is asked at once.
 *
 * When the node itself is the problem (cannot connect, connection closed,
 * no reply within the attempt's share, STATE, FULL) the next attempt goes
 * to the next fallback address, and the connection is closed. When every
 * address has refused the connection (nothing listens at any of them),
 * the call fails at once rather than at its deadline. When the
 * node answered for the ring (UNAVAILABLE, TIMEOUT, HOPS) the next attempt
 * goes to the same node, which re-routes it. A PUT or DEL retried after an
 * attempt timed out may be applied twice; versions make that harmless.
 * The last error text tells how many attempts were made.
 */
void dht_client_set_retry(dht_client *c, bool on);

/* Attempts made by the last blocking call: 1 when it did not retry, 0
 * when it failed before sending anything (bad arguments). */
unsigned dht_client_last_attempts(const dht_client *c);

/* The address of the node the client uses now: dht_client_new's address
 * unless a retrying call moved on to a fallback. */
const char *dht_client_current_addr(const dht_client *c);

/* ---- blocking calls ----------------------------------------------------- */

/*
 * Every call below: timeout_ms >= 0 bounds the whole call, connecting
 * included. Keys are 1..key_len_max bytes and values 0..value_len_max.
 * Returns 0 or:
 *   DHT_ERR_INVAL        NULL or empty key, negative timeout_ms;
 *   DHT_ERR_TOO_LARGE    a key or value above its limit;
 *   DHT_ERR_UNAVAILABLE  cannot connect, or the connection failed or was
 *                        closed by the node before the reply;
 *   DHT_ERR_TIMEOUT      the deadline passed (the connection is kept;
 *                        the late reply will be discarded);
 *   DHT_ERR_UNEXPECTED   the node answered with the wrong reply type;
 *   DHT_ERR_NOMEM, DHT_ERR_FULL (output queue);
 *   a decode error (DHT_ERR_MALFORMED, DHT_ERR_TOO_LARGE, ...) for a reply
 *                        frame that is too long (connection closed) or
 *                        does not decode;
 *   the node's code when it answered ERROR, e.g. DHT_ERR_NOT_FOUND, which
 *                        may be a negative number err.h does not list.
 */

/* PING. When node is not NULL, stores the node that answered (PONG). */
int dht_client_ping(dht_client *c, dht_client_peer *node, int timeout_ms);

/* PUT key = value. The write gets its version here (docs/PROTOCOL.md: the
 * client's hybrid clock and a writer id this client drew at random), and
 * every retry carries the same one, so a late or repeated attempt is the
 * same write, never a newer one. A node that holds a newer version answers
 * STALE with it; the call then stamps the write newer than that and sends
 * it again, within the same timeout. */
int dht_client_put(dht_client *c, const void *key, size_t key_len,
                   const void *value, size_t value_len, int timeout_ms);

/*
 * GET key. On success *value is a malloc'd copy of the value (never NULL,
 * even for an empty value) that the caller frees with free(), and
 * *value_len its length. On error *value is NULL and *value_len 0.
 * A missing key is DHT_ERR_NOT_FOUND.
 */
int dht_client_get(dht_client *c, const void *key, size_t key_len,
                   uint8_t **value, size_t *value_len, int timeout_ms);

/* DEL key (named remove because dht_client_del frees the client). What a
 * missing key gives is the node's choice: 0 or DHT_ERR_NOT_FOUND. */
int dht_client_remove(dht_client *c, const void *key, size_t key_len,
                      int timeout_ms);

/* FIND_SUCC target: fills *out with the owner of target and the hop count,
 * and with trace, the path the lookup took. For a key, target is
 * dht_id_hash(key). */
int dht_client_lookup(dht_client *c, const dht_id *target, bool trace,
                      dht_client_lookup_result *out, int timeout_ms);

/* GET_NEIGHBORS: the node, its predecessor and its successor list. */
int dht_client_neighbors(dht_client *c, dht_client_neighbors_result *out,
                         int timeout_ms);

/* STATS: the node's routing state and counters. */
int dht_client_stats(dht_client *c, dht_client_stats_result *out,
                     int timeout_ms);

/*
 * SCAN: lists up to limit (>= 1) of the records the node itself holds
 * (owned or replicated, tombstones included), keys and versions without
 * values, in ring order of their key ids starting just after from and
 * wrapping around. When out->more is set the node stopped early: ask again
 * from the last item's key_id. A node does not know where a paged walk
 * began, so the caller stops when the ids come round to its start.
 * *out is overwritten (free a previous result first); on error it is
 * zeroed. A node without SCAN answers DHT_ERR_UNKNOWN_TYPE.
 * Returns 0 or the codes listed above (DHT_ERR_INVAL also for limit 0).
 */
int dht_client_scan(dht_client *c, const dht_id *from, uint32_t limit,
                    dht_client_scan_result *out, int timeout_ms);

/*
 * Sends req (any request type; req->rid is overwritten with a fresh rid)
 * and waits for its final reply, which is stored in *reply whatever its
 * type, ERROR included (only decode and transport failures are errors
 * here). *reply is owned by the client and valid until the next call on c;
 * its byte strings point into the client's buffer.
 * Returns 0 or the codes listed above, except a node's ERROR code.
 */
int dht_client_call(dht_client *c, dht_msg *req, const dht_msg **reply,
                    int timeout_ms);

/*
 * Runs req (a GET, PUT or DEL built by the caller: key, value, ver) as put,
 * get and remove do: with their retries when dht_client_set_retry is on, a
 * STALE answer re-stamping req->ver newer and sending it again. Returns 0
 * with *reply of type expect or, for a request with `direct` set, MOVED
 * (docs/PROTOCOL.md: the node names another to ask); an ERROR reply returns
 * its code, with dht_client_last_refusal() set. *reply is owned by the
 * client, valid until the next call on c. The key (and value) are checked
 * against the limits first. Other codes as listed above.
 */
int dht_client_request(dht_client *c, dht_msg *req, dht_msg_type expect,
                       const dht_msg **reply, int timeout_ms);

/* True when the last call on c ended with an ERROR reply from the node (its
 * code was returned), false when it failed on this side: the node could not
 * be reached, closed the connection or did not answer in time. */
bool dht_client_last_answered(const dht_client *c);

/* A version for a new write, as put and remove stamp theirs: newer than
 * every one this client has issued or been shown, with its writer id. */
dht_version dht_client_stamp(dht_client *c);

/* ---- pipelined layer ---------------------------------------------------- */

/* The connected socket, to poll for POLLIN (and POLLOUT when
 * dht_client_want_write() says so); -1 when not connected. Do not read,
 * write or close it yourself. */
int dht_client_fd(const dht_client *c);

/*
 * Assigns req a fresh rid (also stored in *rid unless rid is NULL), queues
 * its frame and writes what the socket takes without blocking; the rest
 * goes out in dht_client_flush() or while dht_client_recv() waits. Does not
 * connect: call dht_client_connect() first.
 * Returns 0, DHT_ERR_UNAVAILABLE (not connected, or the write failed: the
 * connection is then closed), DHT_ERR_FULL (out_len_max would be passed;
 * nothing queued), DHT_ERR_INVAL (the encoder refused req), DHT_ERR_NOMEM.
 */
int dht_client_send(dht_client *c, dht_msg *req, uint64_t *rid);

/*
 * As dht_client_send, but writes nothing: the frame waits in the queue
 * behind the ones before it. Queue a batch of requests, then write them
 * all with one dht_client_flush() (one send() where the socket takes it).
 * Returns 0, DHT_ERR_UNAVAILABLE (not connected), DHT_ERR_FULL,
 * DHT_ERR_INVAL, DHT_ERR_NOMEM, as dht_client_send.
 */
int dht_client_queue(dht_client *c, dht_msg *req, uint64_t *rid);

/* True when queued request bytes are waiting for the socket to take them. */
bool dht_client_want_write(const dht_client *c);

/* Writes queued bytes without blocking. Returns 0 (also when some remain)
 * or DHT_ERR_UNAVAILABLE (not connected, or the write failed: closed). */
int dht_client_flush(dht_client *c);

/*
 * Returns the next final reply on the connection, whatever its rid, in
 * *reply (owned by the client, valid until the next call on c). ACCEPTED
 * and anything that is not a reply are skipped. Frames are reassembled
 * across reads; a frame header longer than frame_len_max closes the
 * connection before its body is buffered. While waiting it also writes
 * queued requests. timeout_ms == 0 only takes what is already there
 * (buffered, or readable without waiting).
 * Returns 0, DHT_ERR_TIMEOUT (nothing complete in time), DHT_ERR_UNAVAILABLE
 * (not connected, closed by the node, I/O error: closed), DHT_ERR_TOO_LARGE
 * (oversized frame: closed), DHT_ERR_INVAL (timeout_ms < 0), DHT_ERR_NOMEM,
 * or a decode error for a frame that does not decode (the connection stays
 * usable; *reply is NULL).
 */
int dht_client_recv(dht_client *c, const dht_msg **reply, int timeout_ms);

#endif /* DHT_CLIENT_H */
