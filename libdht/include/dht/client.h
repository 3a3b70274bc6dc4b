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
 *   - A pipelined layer for the benchmark (send, recv, flush, fd): requests
 *     go out without waiting, replies come back in any order, matched by the
 *     rid that dht_client_send assigned. Nothing here blocks except recv, and
 *     only up to its timeout, so one poll() loop can drive many clients.
 *
 * Nothing is retried: a call that fails returns its error and the caller
 * decides. A timed-out request is not cancelled (the protocol cannot); its
 * late reply is dropped by the blocking calls because its rid is no longer
 * awaited. The socket is closed on an I/O error, when the peer closes it and
 * when a reply frame is longer than frame_len_max; the next blocking call
 * (or dht_client_connect) opens a new one.
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
} dht_client_settings;

/* dht_wire_limits_default() (frame 4 MiB, key 1 KiB, value 1 MiB) and an
 * output queue of 16 MiB. */
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

/* The decoded STATS_R of one node. About 80 KiB: prefer the heap (or a
 * static) to a small stack. */
typedef struct dht_client_stats {
  dht_client_peer node;                     /* the node that answered */
  bool has_pred;                            /* pred is set */
  dht_client_peer pred;                     /* its predecessor */
  size_t n_succs;                           /* entries in succs */
  dht_client_peer succs[DHT_SUCC_LIST_MAX]; /* successor list, nearest first */
  size_t n_fingers;                         /* entries in fingers */
  dht_client_finger fingers[DHT_ID_BITS];   /* one per run of equal fingers */
  size_t n_counters;                        /* entries in counters */
  dht_client_counter counters[DHT_COUNTERS_MAX]; /* in the order sent */
} dht_client_stats_result;

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

/*
 * Connects unless already connected, trying each address the host resolves
 * to in turn, each with a non-blocking connect; the whole attempt ends by
 * the deadline.
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

/*
 * Extra nodes to fall back on: when the current node cannot be reached (or
 * keeps failing) a retrying call moves on to the next address in this list,
 * round-robin, starting over from dht_client_new's address. The addresses
 * are copied; n == 0 clears the list.
 * Returns 0, DHT_ERR_INVAL (a bad address, more than 64) or DHT_ERR_NOMEM.
 */
int dht_client_set_fallbacks(dht_client *c, const char *const *addrs,
                             size_t n);

/*
 * Turns retries on or off (off by default). With retries on, put, get,
 * remove and lookup retry a transient failure (the node cannot be reached
 * or closed the connection, an attempt timed out, or the node answered
 * UNAVAILABLE, TIMEOUT, STATE, HOPS or FULL) with a short backoff, moving
 * to the next fallback node when the node itself is the problem, until the
 * call's timeout_ms is used up. Each attempt gets a share of what remains,
 * so that a dead node cannot eat the whole deadline. NOT_FOUND, TOO_LARGE
 * and other definite answers are returned at once.
 */
void dht_client_set_retry(dht_client *c, bool on);

/* Attempts made by the last blocking call (1 when it did not retry). */
unsigned dht_client_last_attempts(const dht_client *c);

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

/* PUT key = value. */
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
 * Sends req (any request type; req->rid is overwritten with a fresh rid)
 * and waits for its final reply, which is stored in *reply whatever its
 * type, ERROR included (only decode and transport failures are errors
 * here). *reply is owned by the client and valid until the next call on c;
 * its byte strings point into the client's buffer.
 * Returns 0 or the codes listed above, except a node's ERROR code.
 */
int dht_client_call(dht_client *c, dht_msg *req, const dht_msg **reply,
                    int timeout_ms);

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
