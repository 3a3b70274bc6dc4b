/*
 * node_metrics.h: the node's own measurements (dht/metrics.h), counted as
 * frames pass. The layers above call in where a frame arrives, a request
 * is taken, a reply or a request goes out; nothing here changes what the
 * node does, and nothing here calls any other layer.
 */
#ifndef DHT_NODE_METRICS_H
#define DHT_NODE_METRICS_H

#include "node_check.h"

/* Frees the table of arrivals. */
void dht__metrics_free(dht_node *node);
/* A frame of body_len bytes arrived: msg decoded (NULL: it did not), and
 * for a reply, request_type is the type of the request in flight it
 * answers (-1: none). */
void dht__metrics_recv(dht_node *node, const dht_msg *msg, int request_type,
                       size_t body_len);
/* A request that expects an answer was taken from conn: its arrival is
 * noted until dht__metrics_reply sees its final answer. */
void dht__metrics_request(dht_node *node, uint64_t conn, const dht_msg *msg);
/* msg was queued as a frame of frame_len bytes on conn (0: it could not
 * be: the asker will hear nothing). */
void dht__metrics_reply(dht_node *node, uint64_t conn, const dht_msg *msg,
                        size_t frame_len);
/* An encoded request (or NOTIFY) frame was queued to a peer. */
void dht__metrics_send(dht_node *node, const uint8_t *frame,
                       size_t frame_len);

#endif /* DHT_NODE_METRICS_H */
