/*
 * dht/cluster.h: a client that knows the ring, for the dht CLI and its
 * benchmark.
 *
 * A dht_cluster keeps a map of the nodes it has heard of (their ids and
 * addresses) and one dht_client per node it talks to. A GET, PUT or DEL
 * goes straight to the key's owner by the map (the first node at or after
 * the key's id), marked `direct`: that node serves it, or answers MOVED,
 * naming the owner or a node closer to it (docs/PROTOCOL.md), which the map
 * learns and the request goes to next. So on a ring the map knows, a request
 * costs one round trip to one node, where a routed request costs a round
 * trip per hop; a stale map costs a redirect per node it lacks.
 *
 * The map learns nodes from STATS replies (dht_cluster_learn: a node, its
 * neighbours and its fingers) and from MOVED answers, and forgets a node
 * that cannot be reached or answers that it is not in the ring. It holds at
 * most DHT_CLUSTER_NODES_MAX nodes; beyond that it learns no more, and
 * requests still reach their owners through redirects.
 *
 * The seed (the address given to dht_cluster_new, with its fallbacks) is
 * where an empty map starts, and the routed path that every request falls
 * back on: after DHT_CLUSTER_MOVED_MAX redirects, when the owner by the map
 * is busy or repairing (UNAVAILABLE, TIMEOUT, HOPS, FULL, STALE), or when
 * the map runs out of nodes that answer. Retries (dht_cluster_set_retry)
 * are those of dht_client_set_retry, on that path.
 *
 * Writes are stamped once, by the seed's client (dht_client_stamp), and
 * every attempt of a call carries the same version, whichever node it goes
 * to.
 *
 * Not thread-safe; one per thread.
 */
#ifndef DHT_CLUSTER_H
#define DHT_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include "dht/client.h"

/* The most nodes a map holds. */
#define DHT_CLUSTER_NODES_MAX 4096
/* MOVED answers followed for one request before it is sent routed. */
#define DHT_CLUSTER_MOVED_MAX 8

typedef struct dht_cluster dht_cluster;

/*
 * Creates a cluster client whose seed is the node at addr (see
 * dht_addr_parse), with settings copied (NULL: the defaults); every
 * connection it opens uses them. Does no I/O. On error *out is NULL.
 * Returns 0, DHT_ERR_INVAL or DHT_ERR_NOMEM.
 */
int dht_cluster_new(dht_cluster **out, const char *addr,
                    const dht_client_settings *settings);

/* Closes every connection and frees the cluster; NULL is a no-op. */
void dht_cluster_del(dht_cluster *cl);

/* The seed's client: its fallbacks (dht_client_set_fallbacks) are the
 * seed's, and requests for it (stats, lookup, ...) go there. */
dht_client *dht_cluster_seed(dht_cluster *cl);

/* Retries on the seed's path, as dht_client_set_retry (off by default). */
void dht_cluster_set_retry(dht_cluster *cl, bool on);

/* Why the last failing call failed (one line, never NULL), and the node's
 * own words when it ended with an ERROR reply (else ""), as
 * dht_client_last_error / dht_client_last_refusal say them. */
const char *dht_cluster_last_error(const dht_cluster *cl);
const char *dht_cluster_last_refusal(const dht_cluster *cl);

/* Redirects the last blocking call followed (MOVED answers). */
unsigned dht_cluster_last_redirects(const dht_cluster *cl);

/* Requests the last blocking call sent, to every node it asked: redirects
 * and retries included (0 when it sent none). */
unsigned dht_cluster_last_attempts(const dht_cluster *cl);

/* Nodes in the map. */
size_t dht_cluster_size(const dht_cluster *cl);

/*
 * Asks the seed for STATS and adds the node, its predecessor and successor
 * lists and its fingers to the map: on a small ring, the whole ring.
 * Returns 0 or the seed's error, as dht_client_stats.
 */
int dht_cluster_learn(dht_cluster *cl, int timeout_ms);

/* ---- blocking calls: as dht_client_put / get / remove ------------------ */

int dht_cluster_put(dht_cluster *cl, const void *key, size_t key_len,
                    const void *value, size_t value_len, int timeout_ms);
int dht_cluster_get(dht_cluster *cl, const void *key, size_t key_len,
                    uint8_t **value, size_t *value_len, int timeout_ms);
int dht_cluster_remove(dht_cluster *cl, const void *key, size_t key_len,
                       int timeout_ms);

/* ---- for a caller's own poll loop (dht bench) --------------------------- */

/*
 * The client of the node that owns key_id by the map (created on first
 * use, not connected: dht_client_connect it), with *final set; the seed's
 * client, *final false, when the map is empty. Send it the request with
 * `direct` and `final` as given.
 */
dht_client *dht_cluster_pick(dht_cluster *cl, const dht_id *key_id,
                             bool *final);

/*
 * Learns the node a MOVED reply names and returns its client (not
 * necessarily connected), with *final the reply's final; NULL when the
 * reply names no valid node or the map is full and lacks it (send the
 * request routed to the seed instead).
 */
dht_client *dht_cluster_moved(dht_cluster *cl, const dht_msg *moved,
                              bool *final);

/* Drops the node whose client c is from the map (it could not be reached);
 * c is freed. The seed's client is only closed. */
void dht_cluster_forget(dht_cluster *cl, dht_client *c);

#endif /* DHT_CLUSTER_H */
