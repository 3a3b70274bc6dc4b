/*
 * node_base.h: the bottom layer of a dht_node. It knows peers by address,
 * requests in flight (whatever their kind: each carries its handlers), the
 * outbox of actions for the host, round-trip times, logging and the node's
 * random generator. It knows no message's meaning beyond request ids and
 * ACCEPTED, and calls nothing above it except through a request's ops.
 */
#ifndef DHT_NODE_BASE_H
#define DHT_NODE_BASE_H

#include "node_metrics.h"

/* A request as it arrived on a connection. */
typedef struct dht__request {
  uint64_t conn;       /* the connection it came on, to answer on */
  const dht_msg *msg;  /* decoded */
  const uint8_t *body; /* the frame body it was decoded from, for handlers
                          that forward or keep it */
  size_t len;          /* bytes in body */
} dht__request;

/* Copies settings, addresses and the generator's seed into a zeroed node.
 * Returns 0 or DHT_ERR_INVAL (an addr that is empty or too long). */
int dht__base_init(dht_node *node, const dht_node_config *cfg,
                   uint64_t now_ms);
void dht__base_free(dht_node *node);

void dht__log(dht_node *node, dht_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t dht__rand(dht_node *node);
/* Whether the host makes the fault happen here (dht/node.h). */
static inline bool dht__fault(dht_node *node, dht_fault_point point) {
  return node->fault != NULL && node->fault(node->fault_ud, point);
}
uint64_t dht__wall_ms(const dht_node *node);

/* ---- peers ---- */
int32_t dht__peer_find(const dht_node *node, const char *addr,
                       size_t addr_len);
int32_t dht__peer_intern(dht_node *node, const dht_id *id, const char *addr,
                         size_t addr_len);
int32_t dht__peer_intern_ref(dht_node *node, const dht_peer_ref *ref);
bool dht__id_ok(dht_node *node, const dht_id *id, const char *addr,
                size_t addr_len);
uint64_t dht__rid_next(dht_node *node);
uint64_t dht__link_token(const dht_node *node, const char *addr,
                         size_t addr_len);
void dht__peer_hold(dht_node *node, int32_t idx);
void dht__peer_release(dht_node *node, int32_t idx);
void dht__slot_set(dht_node *node, int32_t *slot, int32_t idx);
void dht__peer_to_ref(const dht_node *node, int32_t idx, dht_peer_ref *ref);
void dht__self_ref(const dht_node *node, dht_peer_ref *ref);
bool dht__ref_is_self(const dht_node *node, const dht_peer_ref *ref);
uint32_t dht__rto(const dht_node *node, int32_t peer);

/* ---- pending requests ---- */
dht__pending *dht__pending_new(dht_node *node, const dht__pending_ops *ops,
                               int32_t peer);
void dht__pending_free(dht_node *node, dht__pending *p);
void dht__pending_rekey(dht_node *node, dht__pending *p);
void dht__pending_retarget(dht_node *node, dht__pending *p, int32_t peer);
int dht__pending_send(dht_node *node, dht__pending *p, dht_msg *msg);
void dht__pending_no_resend(dht__pending *p, const dht_node *node);
void dht__pending_rearm(dht_node *node, dht__pending *p, uint64_t wait_ms);
void dht__pending_fail_peer(dht_node *node, int32_t peer);
void dht__pending_resend_peer(dht_node *node, int32_t peer);
uint64_t dht__pending_next_deadline(const dht_node *node);
void dht__pending_on_reply(dht_node *node, const dht_msg *msg);
int dht__pending_msg_type(dht_node *node, uint64_t rid);
void dht__pending_expire(dht_node *node);

/* ---- the outbox ---- */
void dht__outbox_compact(dht_node *node);
bool dht__outbox_poll(dht_node *node, dht_action *out);
void dht__send(dht_node *node, int32_t peer, dht_msg *msg);
void dht__reply(dht_node *node, uint64_t conn, dht_msg *msg);
void dht__reply_ok(dht_node *node, uint64_t conn, uint64_t rid,
                   uint32_t hops);
void dht__reply_error(dht_node *node, uint64_t conn, uint64_t rid, int code);
void dht__reply_refusal(dht_node *node, uint64_t conn, uint64_t rid, int code,
                        const char *text, const dht_version *ver);
void dht__reply_written(dht_node *node, uint64_t conn, uint64_t rid,
                        uint32_t hops, int answer);
void dht__reply_ack(dht_node *node, uint64_t conn, uint64_t rid,
                    uint32_t hops, int answer);
void dht__acks_release(dht_node *node, int status, const char *text);
void dht__reply_accepted(dht_node *node, uint64_t conn, uint64_t rid);
/* Replies held back by DHT_FAULT_REPLY_DELAYED: when the first is due
 * (DHT_TIME_NEVER if none), sending those that are, forgetting a closed
 * connection's. */
uint64_t dht__delayed_next_deadline(const dht_node *node);
void dht__delayed_release(dht_node *node);
void dht__delayed_drop_conn(dht_node *node, uint64_t conn);
void dht__emit_event(dht_node *node, dht_event event, int error);
void dht__emit_close(dht_node *node, uint64_t conn);
void dht__emit_disconnect(dht_node *node, const char *addr);

#endif /* DHT_NODE_BASE_H */
