/*
 * dht/err.h: the error codes every libdht function returns.
 *
 * Errors are negative integers (0 is success). One X-macro table below
 * generates both the enum and the strings behind dht_strerror(), so the two
 * can never drift apart. Codes are also carried on the wire, as the same
 * negative values, in ERROR replies, so their numbers never change once
 * published: append new codes at the end.
 */
#ifndef DHT_ERR_H
#define DHT_ERR_H

/* name, value, message */
#define DHT_ERR_MAP(X)                                                         \
  X(NOMEM, -1, "out of memory")                                                \
  X(INVAL, -2, "invalid argument")                                             \
  X(TRUNCATED, -3, "message is truncated")                                     \
  X(TOO_LARGE, -4, "length exceeds its limit")                                 \
  X(MALFORMED, -5, "message is not well-formed msgpack")                       \
  X(BAD_TYPE, -6, "field has the wrong type")                                  \
  X(MISSING_FIELD, -7, "required field is missing")                            \
  X(BAD_VERSION, -8, "unsupported protocol version")                           \
  X(UNKNOWN_TYPE, -9, "unknown message type")                                  \
  X(TOO_MANY, -10, "count exceeds its limit")                                  \
  X(NOT_FOUND, -11, "key not found")                                           \
  X(FULL, -12, "table or queue is full")                                       \
  X(TIMEOUT, -13, "request timed out")                                         \
  X(UNAVAILABLE, -14, "no live node could serve the request")                  \
  X(HOPS, -15, "lookup exceeded the hop limit")                                \
  X(STATE, -16, "operation not allowed in the node's current state")           \
  X(STORE, -17, "storage backend failed")                                      \
  X(UNEXPECTED, -18, "message is not expected here")                           \
  X(DUPLICATE_ID, -19, "another node already has this id")                     \
  X(TRAILING, -20, "trailing bytes after the message")                        \
  X(DISK_FULL, -21, "disk full")                                               \
  X(CLOCK_SKEW, -22, "clock skew beyond the allowed bound")                    \
  X(STALE, -23, "a newer write of this key is stored")                         \
  X(LOST, -24, "key possibly lost: every copy of its range died")              \
  X(FORBIDDEN, -25, "message type not allowed for this connection's role")    \
  X(AUTH, -26, "cluster key handshake or frame authentication failed")      \
  X(UNBOUND, -27, "the sender's link is not confirmed yet: retry soon")       \
  X(NOT_NEIGHBOR, -28, "the sender is not at a ring position that may send this")

typedef enum dht_err {
  DHT_OK = 0,
#define DHT__ERR_ENUM(name, value, msg) DHT_ERR_##name = (value),
  DHT_ERR_MAP(DHT__ERR_ENUM)
#undef DHT__ERR_ENUM
} dht_err;

/* The most negative code; anything below it is not a dht_err. */
#define DHT_ERR_MIN DHT_ERR_NOT_NEIGHBOR

/* Returns a static, human-readable message for code (never NULL). */
const char *dht_strerror(int code);

/* Returns the short upper-case name of code ("NOT_FOUND"), or "UNKNOWN". */
const char *dht_errname(int code);

#endif /* DHT_ERR_H */
