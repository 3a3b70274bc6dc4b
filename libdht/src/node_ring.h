/*
 * node_ring.h: keeping the ring whole, above node_route.h and
 * node_handoff.h: creating and joining a ring, stabilize, fix_fingers,
 * check_predecessor, probing lost peers, and a graceful leave.
 */
#ifndef DHT_NODE_RING_H
#define DHT_NODE_RING_H

#include "node_handoff.h"
#include "node_route.h"

int dht__ring_create(dht_node *node);
int dht__ring_join(dht_node *node, const char *const *addrs, size_t n);
void dht__ring_free(dht_node *node);
int dht__ring_leave(dht_node *node);
int dht__ring_install(dht_node *node, const dht_routing_peer *pred,
                      const dht_routing_peer *succs, size_t n_succs,
                      const dht_routing_peer *fingers);
void dht__ring_set_maintenance(dht_node *node, bool enabled);
void dht__ring_timers(dht_node *node);
uint64_t dht__ring_next_deadline(const dht_node *node);

bool dht__ring_ready(const dht_node *node);

/* ---- requests from other nodes ---- */
void dht__on_notify(dht_node *node, const dht__request *in);
void dht__ring_notified(dht_node *node, const dht_peer_ref *peer);
void dht__ring_check_neighbours_soon(dht_node *node);
void dht__on_leave(dht_node *node, const dht__request *in);

/* ---- events from the layers below (wired as hooks by node.c) ---- */
void dht__ring_on_pred_changed(dht_node *node);
void dht__ring_on_succ_lost(dht_node *node);
void dht__leave_step(dht_node *node);

#endif /* DHT_NODE_RING_H */
