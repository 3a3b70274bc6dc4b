/*
 * node_check.h: the invariants of node_state.h, checked. The simulator
 * checks all of them after every call (dht_node_check_invariants, public);
 * debug builds (DHT_DEBUG_CHECKS) assert them too: the tables and the
 * pending table where they change, everything at the end of every call
 * into the node. The checks read every layer's state and call no node
 * function, so they sit below every layer.
 */
#ifndef DHT_NODE_CHECK_H
#define DHT_NODE_CHECK_H

#include <stddef.h>

#include "node_state.h"

/* Each returns true when its invariants hold, else false with the first
 * broken one described in why (why_len bytes, NUL-terminated). */

/* The successor and predecessor lists: hold mid-call too. */
bool dht__check_tables(const dht_node *node, char *why, size_t why_len);
/* The pending table: holds mid-call too. */
bool dht__check_pending(const dht_node *node, char *why, size_t why_len);
/* Everything, peer reference counts included: holds between calls. */
bool dht__check_all(const dht_node *node, char *why, size_t why_len);

/* Aborts with the description unless check holds. */
void dht__check_abort(const dht_node *node,
                      bool (*check)(const dht_node *, char *, size_t));

#if defined(DHT_DEBUG_CHECKS) && DHT_DEBUG_CHECKS
#define DHT__DEBUG_CHECK(node, what) dht__check_abort((node), dht__check_##what)
#else
#define DHT__DEBUG_CHECK(node, what) ((void)0)
#endif

#endif /* DHT_NODE_CHECK_H */
