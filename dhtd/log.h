/*
 * log.h: the daemon's log, one line per event on stderr, each tagged with
 * the node's short id. The node's own lines arrive through dhtd_log_node().
 * One daemon runs per process, so the tag and the level are process-wide.
 */
#ifndef DHTD_LOG_H
#define DHTD_LOG_H

#include "dht/node.h"

/* Sets the tag (the node's short id) and the most verbose level printed. */
void dhtd_log_init(const char *tag, dht_log_level level);
/* Parses "error", "warn", "info" or "debug". Returns 0 or -1. */
int dhtd_log_level_parse(const char *s, dht_log_level *out);
void dhtd_log(dht_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
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
