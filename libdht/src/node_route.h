/*
 * node_route.h: routed requests, above node_repl.h. A FIND_SUCC, GET, PUT
 * or DEL is served here or forwarded hop by hop towards the key's owner;
 * this node's own lookups (join, fingers, merges) travel the same way and
 * end in a completion handler.
 */
#ifndef DHT_NODE_ROUTE_H
#define DHT_NODE_ROUTE_H

#include "node_repl.h"

void dht__route_request(dht_node *node, const dht__request *in);
int dht__route_start(dht_node *node, int32_t first_hop, const dht_msg *msg,
                     dht__lookup_done_fn done, uint32_t done_arg);

#endif /* DHT_NODE_ROUTE_H */
