/*
 * node_table.h: the routing state of a dht_node (its successor and
 * predecessor lists, fingers and the peers it lost), above node_base.h. This
 * layer is the only one that writes those tables; the layers above read
 * them and change them through these functions, and learn of changes
 * through the hooks in dht__hooks.
 */
#ifndef DHT_NODE_TABLE_H
#define DHT_NODE_TABLE_H

#include "node_base.h"

/* ---- peers declared dead ---- */
int dht__lost_find(const dht_node *node, const char *addr);
void dht__lost_forget(dht_node *node, const char *addr);

/* ---- successors, predecessors, fingers ---- */
void dht__succs_set(dht_node *node, int32_t *cands, size_t n);
void dht__succ_adopt(dht_node *node, int32_t idx);
void dht__set_pred(dht_node *node, int32_t idx);
void dht__last_preds_clear(dht_node *node);
uint32_t dht__last_preds_gone(const dht_node *node, const dht_id *after);
void dht__preds_learn(dht_node *node, const dht_msg *msg);
void dht__finger_set(dht_node *node, uint32_t i, int32_t idx);
/* A fingerprint of the peers of list[0..n), by id, in order: equal
 * fingerprints mean (but for a 64-bit collision) the same list. */
uint64_t dht__list_print(const dht_node *node, const int32_t *list, size_t n);
void dht__declare_dead(dht_node *node, int32_t idx, bool probe_later);
int32_t dht__peer_intern_own(dht_node *node, const dht_peer_ref *ref);
int dht__table_install(dht_node *node, const dht_routing_peer *pred,
                       const dht_routing_peer *succs, size_t n_succs,
                       const dht_routing_peer *fingers);

/* ---- describing this node ---- */
void dht__describe_self(const dht_node *node, dht_msg *msg, dht_msg_type type,
                        uint64_t rid, dht_peer_ref succs[DHT_SUCC_LIST_MAX],
                        dht_peer_ref preds[DHT_SUCC_LIST_MAX]);
void dht__on_get_neighbors(dht_node *node, const dht__request *req);

#endif /* DHT_NODE_TABLE_H */
