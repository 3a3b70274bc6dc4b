/*
 * node_repl.h: replication, above node_table.h: versioned records, writes
 * sent to every replica position before they are acknowledged, reads (by
 * the owner, which consults its replicas while it is not in sync, or by a
 * replica), and anti-entropy between an owner and its replicas.
 */
#ifndef DHT_NODE_REPL_H
#define DHT_NODE_REPL_H

#include "node_lost.h"

void dht__repl_init(dht_node *node);
void dht__repl_free(dht_node *node);

/* ---- who holds what ---- */
bool dht__holds_range(const dht_node *node, const dht_id *key_id);
bool dht__may_serve_replica(dht_node *node, const dht_msg *req,
                            const dht_id *key_id);

/* ---- serving data and merging records ---- */
void dht__serve_data(dht_node *node, uint64_t conn, uint64_t rid,
                     const dht_msg *req, const dht_id *key_id,
                     const uint8_t *body, size_t len, bool as_replica);
long dht__merge_and_ack(dht_node *node, uint64_t conn, uint64_t rid,
                        const dht_msg *msg);
void dht__repl_commit_done(dht_node *node, int status);
void dht__repl_note_clock(dht_node *node, uint64_t peer_wall_ms,
                          bool from_succ);

/* ---- record batches (hand-off, repair, SCAN) ---- */
void dht__batch_init(dht__batch *b, const dht_node *node);
int dht__batch_collect(void *ud, const dht_id *key_id, const uint8_t *key,
                       size_t key_len, const uint8_t *rec, size_t rec_len);
size_t dht__batch_next(const dht_buf *buf, size_t off, dht_id *key_id,
                       dht_kv *kv);
/* The bytes of the n records in buf that are keys and records (the rest
 * is the batch's layout): what the backlog counts. */
size_t dht__batch_payload(const dht_buf *buf, size_t n);
dht_kv *dht__batch_items(const dht__batch *b);
dht__pending *dht__batch_send(dht_node *node, dht__batch *b,
                              const dht__pending_ops *ops, int32_t peer,
                              dht_msg_type type);

/* ---- requests from other nodes ---- */
void dht__on_replicate(dht_node *node, const dht__request *in);
void dht__on_fetch(dht_node *node, const dht__request *in);
void dht__on_sync(dht_node *node, const dht__request *in);
void dht__on_scan(dht_node *node, const dht__request *in);

/* ---- events and timers ---- */
void dht__repl_on_pred_change(dht_node *node);
bool dht__repl_replicas_hold_range(const dht_node *node);
void dht__repl_on_succs_change(dht_node *node);
void dht__repl_timers(dht_node *node);
uint64_t dht__repl_next_deadline(const dht_node *node);

#endif /* DHT_NODE_REPL_H */
