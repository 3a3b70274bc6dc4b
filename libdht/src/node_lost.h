/*
 * node_lost.h: ranges whose every copy died, above node_table.h. A node
 * whose range grows past every predecessor it knew (R of them died at
 * once, before repair could copy their keys) pings the range's former
 * holders; if none answers, it records the range as lost, so that `dht
 * check` reports it and a GET of a key in it says "possibly lost" rather
 * than a plain not-found, until an operator acknowledges it (ACK_LOST).
 */
#ifndef DHT_NODE_LOST_H
#define DHT_NODE_LOST_H

#include "node_table.h"

void dht__lost_free(dht_node *node);
void dht__lost_on_pred_change(dht_node *node);
bool dht__lost_explain(const dht_node *node, const dht_id *key_id, char *buf,
                       size_t len);
void dht__lost_describe(const dht__lost_range *l, char *buf, size_t len);
void dht__on_ack_lost(dht_node *node, const dht__request *in);

#endif /* DHT_NODE_LOST_H */
