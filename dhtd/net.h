/*
 * net.h: the libuv adapter that puts one dht_node on the network.
 *
 * It owns the listener, the connections (accepted ones and the ones it opens
 * to peers, reused and closed after idling), frame reassembly, the one timer
 * armed from the node's next deadline, and output queues with back-pressure.
 * Replies and sends are queued per connection during a loop iteration and
 * written once per iteration, after the store has committed the writes they
 * acknowledge (group commit). With a cluster key, each connection starts
 * with the key handshake and carries sealed frames (dht/seal.h); the node
 * is told each connection's role with every frame.
 */
#ifndef DHTD_NET_H
#define DHTD_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "dht/node.h"
#include "dht/seal.h"
#include "dht/store.h"

typedef struct dhtd_net dhtd_net;

/* Settings of the adapter (the node has its own dht_settings). */
typedef struct dhtd_net_config {
  const char *listen_addr;    /* "HOST:PORT" to bind */
  dht_node *node;             /* borrowed: the node this adapter serves */
  dht_store *store;           /* borrowed: committed once per loop turn */
  int (*store_commit)(dht_store *st); /* NULL for the memory store */
  uint32_t frame_len_max;     /* frame body limit, as the node's limits */
  size_t out_queue_max;       /* bytes queued to one connection before it is
                                 dropped */
  size_t out_queue_pause;     /* bytes queued to one connection before we
                                 stop reading from it */
  uint32_t idle_close_ms;     /* close outgoing connections idle this long */
  /* Limits and fairness (docs/SECURITY.md, Limits); 0 turns one off where
   * its comment says so. Each hit is counted by the node (limit_* in STATS)
   * and logged once per remote address while it is remembered. */
  uint32_t client_conns_max;  /* accepted connections not (yet) known to be
                                 peer links */
  uint32_t peer_conns_max;    /* peer links: opened by this node, and,
                                 separately, accepted ones that proved to be
                                 (a member handshake, or in an open ring a
                                 ring-internal message) */
  uint32_t conns_per_addr_max; /* accepted connections from one IPv4 address
                                  or IPv6 /64, clients and peers together */
  uint32_t client_idle_ms;    /* close an accepted connection that sent and
                                 was sent nothing this long (0: never) */
  uint32_t frame_timeout_ms;  /* an accepted connection must finish a frame
                                 this long after its first bytes came */
  uint64_t mem_max;           /* partial input frames plus output queues of
                                 all connections: over 3/4 of it clients are
                                 not read; over it the largest is dropped */
  uint32_t inflight_max;      /* requests of one client connection without
                                 their final reply before it is not read */
  uint32_t rate_per_s;        /* requests per second from one remote address
                                 on client connections (0: no limit) ... */
  uint32_t rate_burst;        /* ... and how many may come at once */
  void (*on_event)(void *ud, dht_event event, int error); /* node events */
  void (*on_commit_failed)(void *ud, int error); /* a store commit failed;
                                                    may be NULL */
  void *ud;                   /* passed to on_event */
  const dht_ring_key *key;    /* borrowed: the cluster key of a closed ring
                                 (every connection proves it, every frame is
                                 sealed: dht/seal.h); NULL for an open ring */
  uint32_t handshake_timeout_ms; /* with key: a connection that has not
                                    finished its handshake by then is closed */
} dhtd_net_config;

/* Binds and listens. On failure returns a negative libuv code and writes a
 * one-line reason into err. */
int dhtd_net_start(dhtd_net **out, uv_loop_t *loop, const dhtd_net_config *cfg,
                   char *err, size_t err_len);

/* Runs whatever the node wants done now (drain its actions, arm the timer);
 * call after any direct call into the node (join, leave, create_ring). */
void dhtd_net_kick(dhtd_net *net);

/* Closes every handle; the loop then ends once the close callbacks ran. */
void dhtd_net_stop(dhtd_net *net);

/* Frees the adapter after the loop has finished closing its handles. */
void dhtd_net_del(dhtd_net *net);

#endif /* DHTD_NET_H */
