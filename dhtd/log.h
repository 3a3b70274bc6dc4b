/*
 * log.h: the daemon's log, one line per event on stderr: text, each line
 * tagged with the node's short id, or (--log-format json) one JSON object
 * per line with its time (RFC 3339, UTC, ms), level, node (id and
 * address, once known), msg and the fields the line has (peer, node_ms).
 * The node's own lines arrive through dhtd_log_node(). One daemon runs per
 * process, so the tag, the level and the format are process-wide.
 */
#ifndef DHTD_LOG_H
#define DHTD_LOG_H

#include "dht/node.h"

/* Sets the tag (the node's short id) and the most verbose level printed. */
void dhtd_log_init(const char *tag, dht_log_level level);
/* Parses "error", "warn", "info" or "debug". Returns 0 or -1. */
int dhtd_log_level_parse(const char *s, dht_log_level *out);
/* Takes "text" (the default) or "json". Returns 0 or -1 (unchanged). */
int dhtd_log_format_set(const char *s);
/* What the JSON lines say the node is: its id in hex and its address,
 * each NULL while unknown. */
void dhtd_log_set_node(const char *id_hex, const char *addr);
void dhtd_log(dht_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* dhtd_log of a line about the peer at peer ("host:port", or a remote
 * address): a field of its own in JSON. */
void dhtd_log_peer(dht_log_level level, const char *peer, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));
/* Why dhtd cannot start (or go on starting): one line, "dhtd: text" or
 * a JSON object, straight to stderr, held lines or not. */
void dhtd_log_startup_error(const char *text);
/* A dht_log_fn for the node: its lines already carry the tag. */
void dhtd_log_node(void *ud, dht_log_level level, const char *line);
/* Holds the lines that would be printed instead of printing them, until
 * dhtd_log_release(): a node whose join fails says so in one line, as
 * dhtd promises for every failure to start, not with the log of each
 * attempt before it. About 16 KiB of lines are held; those past it are
 * counted. */
void dhtd_log_hold(void);
/* Ends the hold (if any): prints the held lines in order, or drops them. */
void dhtd_log_release(bool print);

#endif /* DHTD_LOG_H */
