/*
 * dht/node_prefetch.h: a memory hint for hosts that run many nodes.
 *
 * A simulator with thousands of nodes in one process finds each node cold in
 * the cache when its next event comes, and then waits on one cache miss after
 * another while the node and the invariant check walk its peer table and its
 * requests. Knowing which node comes next, it can ask for that memory early.
 */
#ifndef DHT_NODE_PREFETCH_H
#define DHT_NODE_PREFETCH_H

#include "dht/node.h"

/* Asks the CPU to start loading the state that a call into node and
 * dht_node_check_invariants read: the tables, the peer table, the pending
 * requests. A hint only: it changes nothing, and the node is not locked
 * against other calls (it must not be called from inside the node's own
 * callbacks, like any other call). */
void dht_node_prefetch(const dht_node *node);

#endif /* DHT_NODE_PREFETCH_H */
