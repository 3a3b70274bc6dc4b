/*
 * node_lost.h: ranges whose every copy died, above node_table.h. A node
 * whose range grows past R predecessors it knew (they died, at once or in
 * turn, before repair could copy their keys here) pings the range's former
 * holders; if none answers, it records the range as lost, so that `dht
 * check` reports it and a GET of a key in it says "possibly lost" rather
 * than a plain not-found, until an operator acknowledges it (ACK_LOST).
 */
#ifndef DHT_NODE_LOST_H
#define DHT_NODE_LOST_H

#include "node_table.h"

void dht__lost_free(dht_node *node);
void dht__lost_on_pred_change(dht_node *node);
void dht__lost_held(dht_node *node, const dht_id *from, const dht_id *to);
/* A missed write: no range is known held any more. */
void dht__lost_held_forget(dht_node *node);
/* A whole predecessor list: the ranges known held that this node no
 * longer replicates are forgotten. */
void dht__lost_held_trim(dht_node *node);
bool dht__lost_explain(const dht_node *node, const dht_id *key_id, char *buf,
                       size_t len);
void dht__lost_describe(const dht__lost_range *l, char *buf, size_t len);
void dht__on_ack_lost(dht_node *node, const dht__request *in);

#endif /* DHT_NODE_LOST_H */
