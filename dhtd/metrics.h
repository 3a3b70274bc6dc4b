/*
 * metrics.h: dhtd --metrics, an HTTP endpoint that serves the node's
 * counters and measurements in Prometheus' text exposition format (0.0.4)
 * at /metrics, on the node's own libuv loop.
 *
 * It is bounded apart from the ring's connections: its own connection
 * limit, one timeout for a request to arrive whole (and for its answer to
 * be taken), and a request head (request line and headers) of at most
 * DHTD_METRICS_REQUEST_MAX bytes, never more buffered. Each scrape builds
 * its answer from a snapshot of the node's counters and gauges
 * (dht/metrics.h) and LMDB's own size bookkeeping: nothing is scanned.
 */
#ifndef DHTD_METRICS_H
#define DHTD_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "dht/node.h"
#include "dht/store.h"

/* The longest request head taken (bytes); past it the answer is 414 (the
 * request line) or 431 (the headers), and the connection is closed. */
#define DHTD_METRICS_REQUEST_MAX 8192

typedef struct dhtd_metrics dhtd_metrics;

typedef struct dhtd_metrics_config {
  const char *listen_addr; /* "HOST:PORT", numeric, to bind (borrowed) */
  uint32_t conns_max;      /* connections open at once; past it new ones
                              are closed as they come */
  uint32_t timeout_ms;     /* a connection that has not sent a whole
                              request (or taken its answer) this long after
                              it came or was last answered is closed */
  dht_node *node;          /* borrowed: whose metrics are served */
  dht_store *store;        /* borrowed: the node's store */
  bool lmdb;               /* store is LMDB: its size is served too */
} dhtd_metrics_config;

/* Binds and listens. On failure returns a negative libuv code and writes a
 * one-line reason into err; *out is then still to be stopped and freed
 * (its listener is closing). */
int dhtd_metrics_start(dhtd_metrics **out, uv_loop_t *loop,
                       const dhtd_metrics_config *cfg, char *err,
                       size_t err_len);

/* Closes the listener and every connection (NULL is a no-op). */
void dhtd_metrics_stop(dhtd_metrics *m);

/* Frees it once the loop has run the close callbacks (NULL is a no-op). */
void dhtd_metrics_del(dhtd_metrics *m);

#endif /* DHTD_METRICS_H */
