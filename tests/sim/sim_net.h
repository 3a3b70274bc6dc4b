/*
 * sim_net.h: the simulated network between nodes, as TCP shows it to dhtd.
 *
 * Node A's requests to node B travel on A's own outgoing connection to B,
 * and B's replies come back on it; B's requests to A use B's outgoing
 * connection to A, as in dhtd. A connection carries two byte streams, one
 * per direction, each strictly FIFO: every frame gets a latency (the
 * path's base latency plus a jitter), but never arrives before the
 * frame written ahead of it. What TCP hides is shown as delay, never as a
 * gap: a lost segment is retransmitted (the stream waits a retransmission
 * timeout), a path that is cut holds the bytes (retransmitted with
 * exponential backoff, so they arrive at the first retransmission after the
 * cut heals), a clogged path adds latency for a while.
 *
 * Each direction has a kernel window (the sender's and the receiver's socket
 * buffers): bytes beyond it wait in the sender's output queue, which dhtd
 * bounds: past out_queue_pause the accepting end stops reading the
 * connection (requests wait until its replies drain), past out_queue_max
 * either end drops the connection. Closing sends a FIN after what the
 * kernel already holds; a reset discards everything in both directions.
 *
 * This module holds the data (connections, their streams, path faults) and
 * draws the latencies; it knows nodes only by slot and calls none of them.
 * sim_world plays dhtd's net.c on top of it. Its generator is its own
 * stream, forked from the run's seed.
 */
#ifndef SIM_NET_H
#define SIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_rng.h"

/* The one-way base latency of the path between two nodes is in [_MIN_MS,
 * _MAX_MS], drawn once per pair; each frame adds a jitter in
 * [0, SIM_NET_JITTER_MAX_MS]. */
#define SIM_NET_LATENCY_MIN_MS 1
#define SIM_NET_LATENCY_MAX_MS 60
#define SIM_NET_JITTER_MAX_MS 20
/* A "slow" frame adds an exponential tail (queues in a router), capped. */
#define SIM_NET_TAIL_MEAN_MS 250
#define SIM_NET_TAIL_CAP_MS 3000
/* Client <-> node latency: a client next to its node, never faulty. */
#define SIM_NET_CLIENT_LATENCY_MAX_MS 10
/* Linux's retransmission timeouts: data from 200 ms, doubling up to 120 s,
 * given up after 15 retransmissions (tcp_retries2); a SYN from 1 s,
 * doubling, given up after 6 retransmissions (tcp_syn_retries: 127 s). */
#define SIM_NET_RTO_MIN_MS 200
#define SIM_NET_RTO_MAX_MS 120000
#define SIM_NET_DATA_RETRIES 15
#define SIM_NET_SYN_RTO_MS 1000
#define SIM_NET_SYN_RETRIES 6
/* dhtd reads a connection into a 64 KiB buffer: at most this much is
 * handed to the node in one read. */
#define SIM_NET_READ_BYTES (64 * 1024)
/* Path faults (cuts and clogs) in force at one time. */
#define SIM_NET_PATH_FAULTS_MAX 16
/* An item not yet written to the network (its connection is connecting). */
#define SIM_NET_UNSENT UINT64_MAX
/* "No connection" in the lists and the map. */
#define SIM_NET_NO_CONN UINT32_MAX

/* Per-frame probabilities; all zero once the faults heal. loss and slow
 * delay a stream, as TCP does; drop and duplicate break TCP's promise and
 * are only ever set by an explicit option. */
typedef struct sim_net_faults {
  double loss;      /* a segment of the frame is lost: the stream waits for
                       its retransmission (and the next, if that is lost
                       too) */
  double slow;      /* the frame's latency gets the long tail */
  double drop;      /* not TCP: the frame vanishes from its stream */
  double duplicate; /* not TCP: the frame arrives twice */
} sim_net_faults;

/* The host's buffers and timers, as dhtd's settings. */
typedef struct sim_net_limits {
  uint32_t window_bytes;    /* kernel buffers of one direction (sender's
                               send buffer and receiver's receive buffer) */
  uint32_t out_queue_pause; /* queued output past which the sender stops
                               reading the connection (dhtd:
                               out_queue_max / 4); reads again below half */
  uint32_t out_queue_max;   /* queued output past which the sender drops
                               the connection (dhtd: --out-queue-max) */
  uint32_t idle_close_ms;   /* outgoing connections idle this long close
                               (dhtd: 60 s, swept every half of it) */
} sim_net_limits;

/* What a path fault does to the paths it covers. */
typedef enum sim_path_kind {
  SIM_PATH_CUT,  /* bytes are held (retransmitted) until it ends */
  SIM_PATH_CLOG, /* frames sent meanwhile take extra_ms longer */
} sim_path_kind;

/* Which paths between a fault's two sides it covers. */
enum {
  SIM_PATH_0_TO_1 = 1, /* from side 0 to side 1 */
  SIM_PATH_1_TO_0 = 2, /* from side 1 to side 0 */
  SIM_PATH_BOTH = 3,
};

/* A cut or clog between two sides of the nodes; every slot is on side 0
 * unless placed on side 1 (so nodes that join later are on side 0). */
typedef struct sim_path_fault {
  bool active;        /* in force */
  sim_path_kind kind; /* what it does */
  uint8_t paths;      /* SIM_PATH_* bits: the directions it covers */
  uint32_t extra_ms;  /* CLOG: added latency */
  uint8_t *side;      /* side of each slot (0 or 1) */
  size_t side_len;    /* slots side covers */
} sim_path_fault;

/* One element of a stream. */
typedef enum sim_item_kind {
  SIM_ITEM_FRAME, /* a frame, header included */
  SIM_ITEM_FIN,   /* the sender closed: nothing follows */
  SIM_ITEM_RST,   /* the connection was reset */
} sim_item_kind;

typedef struct sim_item {
  uint64_t at_ms;     /* earliest arrival; SIM_NET_UNSENT before the
                         connection is open */
  uint8_t *frame;     /* FRAME: the bytes (owned) */
  uint32_t len;       /* FRAME: bytes in frame */
  sim_item_kind kind; /* what it is */
} sim_item;

/* One direction of a connection: a FIFO of items. */
typedef struct sim_stream {
  sim_item *items;     /* ring buffer of cap items */
  uint32_t head;       /* index of the oldest item */
  uint32_t n;          /* items queued */
  uint32_t cap;        /* items allocated */
  uint64_t bytes;      /* frame bytes written, not yet read */
  uint64_t last_at_ms; /* arrival of the newest item: no later item comes
                          before it */
  uint32_t retries;    /* retransmissions of the head so far */
  bool armed;          /* an arrival event is queued (or deferred by a
                          paused receiver) for the head */
  bool ended;          /* a FIN or RST is queued: nothing more is written */
  bool blocked;        /* the receiver stopped reading (back-pressure) */
  bool retransmitting; /* armed for a retransmission across a cut */
} sim_stream;

typedef enum sim_conn_state {
  SIM_CONN_CONNECTING, /* SYN sent, no answer yet */
  SIM_CONN_OPEN,       /* established */
} sim_conn_state;

/* One TCP connection. End 0 opened it (its outgoing connection), end 1
 * accepted it. Both nodes know it by the same number. */
typedef struct sim_conn {
  uint64_t id;              /* generation << 32 | index + 1; 0: unused */
  uint32_t slot[2];         /* the node at each end */
  uint32_t incarnation[2];  /* ...and its process; [1] once accepted */
  bool open[2];             /* the end's process holds it open */
  bool reading_paused[2];   /* the end stopped reading: its output backed up */
  sim_conn_state state;     /* connecting or open */
  uint32_t syn_tries;       /* SYN retransmissions so far */
  uint32_t latency_ms;      /* its path's one-way base latency */
  uint64_t last_active_ms;  /* end 0: last frame read or written; while
                               connecting, when the first SYN went */
  uint32_t next[2];         /* the next connection of slot[e] at end e */
  uint32_t prev[2];         /* ...and the previous one */
  sim_stream stream[2];     /* [e]: what end e sends */
} sim_conn;

/* What the network did, for the report. */
typedef struct sim_net_counters {
  uint64_t frames;          /* frames written by nodes */
  uint64_t bytes;           /* ...their bytes */
  uint64_t retransmits;     /* frames delayed by a lost segment */
  uint64_t held;            /* retransmissions of a stream held by a cut or
                               a dead host */
  uint64_t clogged;         /* frames slowed by a clogged path */
  uint64_t connects;        /* connections opened */
  uint64_t refused;         /* connects refused (no process listening) */
  uint64_t connect_timeouts;/* connects never answered */
  uint64_t resets;          /* connections reset (crash, stale process) */
  uint64_t idle_closes;     /* outgoing connections closed for idling */
  uint64_t overflows;       /* connections dropped past out_queue_max */
  uint64_t read_pauses;     /* times a node stopped reading a connection */
  uint64_t data_timeouts;   /* connections given up after
                               SIM_NET_DATA_RETRIES retransmissions */
  uint64_t dropped;         /* not TCP: frames dropped */
  uint64_t duplicated;      /* not TCP: frames duplicated */
} sim_net_counters;

typedef struct sim_net {
  sim_rng rng;            /* latency and fault draws */
  uint64_t path_salt;     /* makes each run's path latencies its own */
  sim_net_faults faults;  /* the current per-frame probabilities */
  sim_net_limits limits;  /* buffers and timers */
  sim_path_fault paths[SIM_NET_PATH_FAULTS_MAX]; /* cuts and clogs */
  uint64_t cut_retransmit_last_ms; /* latest retransmission scheduled
                                      across a cut: the network is quiet
                                      after it once the cuts are healed */
  sim_conn *conns;        /* by index */
  uint32_t n_conns;       /* indices handed out */
  uint32_t cap_conns;     /* indices allocated */
  uint32_t *free_conns;   /* indices free for reuse */
  uint32_t n_free;        /* entries in free_conns */
  uint32_t generation;    /* high half of the next id */
  uint64_t *map_keys;     /* open addressing: from << 32 | to + 1, 0 empty */
  uint32_t *map_conns;    /* ...the open outgoing connection from -> to */
  size_t map_cap;         /* slots in the map (a power of two) */
  size_t map_len;         /* entries in the map */
  uint32_t *first[2];     /* by slot: its first connection at end e */
  size_t first_len;       /* slots first[] covers */
  sim_net_counters count; /* what happened */
} sim_net;

void sim_net_init(sim_net *net, sim_rng *parent);
/* Frees every connection, item and path fault. */
void sim_net_free(sim_net *net);

/* Latency between the simulated client and a node. */
uint64_t sim_net_client_latency_ms(sim_net *net);

/* ---- path faults ---- */

/* Starts a path fault covering paths (SIM_PATH_* bits) between the sides
 * placed with sim_net_path_side(); returns its handle, or -1 when
 * SIM_NET_PATH_FAULTS_MAX are in force. */
int sim_net_path_fault_start(sim_net *net, sim_path_kind kind, uint8_t paths,
                             uint32_t extra_ms);
/* Puts slot on side (0 or 1) of fault h. */
void sim_net_path_side(sim_net *net, int h, uint32_t slot, uint8_t side);
/* Ends fault h. Bytes it held go at their next retransmission. */
void sim_net_path_fault_end(sim_net *net, int h);
/* Ends every path fault. */
void sim_net_path_faults_end(sim_net *net);
/* Whether a cut holds bytes from slot from to slot to. */
bool sim_net_path_cut(const sim_net *net, uint32_t from, uint32_t to);

/* ---- connections ---- */

/* The connection with this number, or NULL when it is closed on both ends
 * (or never existed). */
sim_conn *sim_net_conn(sim_net *net, uint64_t id);
/* from's open outgoing connection to to, or NULL. */
sim_conn *sim_net_conn_find(sim_net *net, uint32_t from, uint32_t to);
/* Opens a connection from (process incarnation) to to, CONNECTING, with
 * the path's base latency. The pointer is valid until the next connection
 * is opened. */
sim_conn *sim_net_conn_open(sim_net *net, uint32_t from, uint32_t incarnation,
                            uint32_t to, uint64_t now_ms);
/* The SYN was answered: the connection is OPEN, accepted by to's process
 * incarnation; the frames queued meanwhile are written now. */
void sim_net_conn_accept(sim_net *net, sim_conn *c, uint32_t incarnation,
                         uint64_t now_ms);
/* End e's process lets go of c (a close, a reset, a crash): it leaves the
 * slot's list (and the outgoing map) and reads nothing more, so what was
 * in flight to it is discarded. Frees c when the other end is gone too. */
void sim_net_conn_release(sim_net *net, sim_conn *c, unsigned e);
/* The first connection of slot at end e, or NULL; then c->next[e]. */
sim_conn *sim_net_conn_first(sim_net *net, uint32_t slot, unsigned e);
sim_conn *sim_net_conn_next(sim_net *net, const sim_conn *c, unsigned e);

/* Bytes end e has written to c that are still in its output queue (beyond
 * the kernel window, or everything while connecting). */
uint64_t sim_net_queued(const sim_net *net, const sim_conn *c, unsigned e);

/* ---- streams ---- */

/* Appends a frame that end e writes to c (copied), with its arrival drawn
 * (latency, jitter, clogs, loss, the tail; never before the item ahead);
 * the non-TCP faults may drop it or append it twice. */
void sim_net_write(sim_net *net, sim_conn *c, unsigned e, const uint8_t *frame,
                   size_t len, uint64_t now_ms);
/* Appends the end of e's stream (FIN or RST). A FIN follows what the
 * kernel window holds: what was still in e's output queue is discarded.
 * A RST discards everything queued and goes at once. */
void sim_net_write_end(sim_net *net, sim_conn *c, unsigned e,
                       sim_item_kind kind, uint64_t now_ms);
/* Discards everything queued in e's stream. */
void sim_net_stream_clear(sim_stream *s);
/* The oldest item of e's stream, or NULL. */
sim_item *sim_net_stream_head(sim_stream *s);
/* Removes the oldest item (the caller has taken its frame). */
void sim_net_stream_pop(sim_stream *s);
/* When the next retransmission of a held stream goes (its retries already
 * counted); remembers it when the hold is a cut. */
uint64_t sim_net_retransmit_at(sim_net *net, sim_stream *s, bool cut,
                               uint64_t now_ms);

#endif /* SIM_NET_H */
