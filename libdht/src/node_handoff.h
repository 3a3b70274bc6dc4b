/*
 * node_handoff.h: moving keys to the node they belong to, above
 * node_repl.h: a joined node hands on the keys outside the ranges it owns
 * or replicates, a leaving node hands every key to its successor, and
 * HANDOFF batches from other nodes are merged here. A leaving node that has
 * nothing left to hand on says so through hooks.handoff_drained.
 */
#ifndef DHT_NODE_HANDOFF_H
#define DHT_NODE_HANDOFF_H

#include "node_repl.h"

void dht__handoff_pump(dht_node *node);
void dht__on_handoff(dht_node *node, const dht__request *in);

#endif /* DHT_NODE_HANDOFF_H */
