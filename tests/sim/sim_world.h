/*
 * sim_world.h: many dht_node state machines in one process, wired together
 * by a virtual clock, an event queue and the simulated network.
 *
 * The world is the host of every node: it creates and deletes them (a crash
 * deletes the node and keeps its store, which is its disk), carries out their
 * actions (SEND and REPLY become bytes on simulated TCP connections, CLOSE is
 * a failure, JOIN_FAILED schedules a retry), wakes them at their deadlines,
 * pauses them (SIGSTOP) and plays a client that sends lookups, gets and puts
 * and records the replies. After every call into a node it checks the node's
 * structural invariants. It never decides what faults happen or when: that
 * is the job of the run (sim_run.c) and of the experiments.
 *
 * Connections are what dhtd's net.c makes of TCP (sim_net.h): node A's
 * requests to B go on A's outgoing connection to B, opened on first use and
 * reused, and B's replies come back on it. When a connection closes, each
 * end's node gets dht_node_conn_closed(), and the opening end's node, when
 * the connection failed, dht_node_peer_unreachable() for its peer if it never
 * connected (refused, timed out), dht_node_peer_reset() if it had (reset,
 * closed by the peer). A process crash resets its
 * connections at once; a host crash leaves them silent until the host is
 * back and answers with a reset. The simulated client uses connections
 * SIM_CLIENT_CONN | op index, in order, next to its node.
 *
 * A paused process (SIGSTOP) is called for nothing: every event for it
 * (frames read, timers, connects, closes) waits, in order, until it
 * resumes, while its kernel still accepts connections and buffers bytes.
 */
#ifndef SIM_WORLD_H
#define SIM_WORLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dht/node.h"
#include "sim_buggify.h"
#include "sim_clock.h"
#include "sim_disk.h"
#include "sim_net.h"
#include "sim_queue.h"
#include "sim_rng.h"

#define SIM_ADDR_LEN 24 /* "n0000042:7000" and a NUL */
#define SIM_CLIENT_CONN (UINT64_C(1) << 62)
#define SIM_NO_SLOT UINT32_MAX
#define SIM_REJOIN_DELAY_MS 1000    /* wait after a JOIN_FAILED */
#define SIM_CLIENT_TIMEOUT_MS 10000 /* a request unanswered by then failed */
#define SIM_FAILURE_LEN 1024
/* A graceful leave that has not ended by then ends anyway: the process
 * exits, as dhtd does on SIGTERM (its LEAVE_TIMEOUT_MS). */
#define SIM_LEAVE_TIMEOUT_MS 10000

typedef struct sim_node {
  char addr[SIM_ADDR_LEN];  /* "n00042:7000": the slot number is in it */
  size_t addr_len;          /* strlen(addr) */
  dht_id id;                /* hash of addr, as the node computes it */
  dht_node *node;           /* the running process; NULL while down */
  sim_disk *disk;           /* its disk: kept across crashes and restarts */
  dht_store *store;         /* the disk's contents, for the checks */
  sim_clock clock;          /* its host's clocks */
  uint32_t incarnation;     /* bumped at every start of a process */
  uint64_t timer_at_ms;     /* earliest WAKE queued for this incarnation */
  uint64_t routing_hash;    /* of the successors and predecessor last
                               checked: unchanged routing is not rechecked */
  bool refuses;             /* while down: a connect is refused (process
                               died) rather than unanswered (host died) */
  uint64_t expiry_now_ms;   /* time of the last handle_expiry call... */
  uint32_t expiries_at_now; /* ...and how many calls at that same time */
  uint32_t joins_started;   /* join attempts, restarts included */
  bool leaving;             /* the running process was asked to leave */
  bool left;                /* ...and reported LEFT: it exits after the
                               call that reported it */
  bool paused;              /* the process is stopped (SIGSTOP)... */
  uint64_t paused_until_ms; /* ...until then */
  sim_event *deferred;      /* events for it while paused, in order */
  size_t n_deferred;        /* events in deferred */
  size_t cap_deferred;      /* events allocated in deferred */
} sim_node;

typedef enum sim_op_kind {
  SIM_OP_LOOKUP, /* FIND_SUCC for target */
  SIM_OP_GET,    /* GET key, expecting expect_value */
  SIM_OP_PUT,    /* PUT key = value */
  SIM_OP_DEL,    /* DEL key */
} sim_op_kind;

/* One client request and what came back for it. */
typedef struct sim_op {
  sim_op_kind kind;         /* what was asked */
  uint32_t via_slot;        /* the node it was sent to */
  dht_id target;            /* LOOKUP: the id; GET/PUT: the key's id */
  uint8_t *expect_value;    /* GET: the value it should return (owned) */
  size_t expect_len;        /* bytes in expect_value */
  uint64_t sent_ms;         /* when it was sent */
  uint64_t last_arrival_ms; /* latest arrival queued on its connection:
                               a connection delivers in order */
  uint32_t accepts;         /* interim ACCEPTED replies: at most one */
  uint32_t replies;         /* final replies received; more than one is a bug */
  uint64_t replied_ms;      /* when the first reply came */
  dht_msg_type reply_type;  /* type of the first reply */
  int32_t error_code;       /* ERROR: its code */
  dht_id peer_id;           /* FIND_SUCC_R: the owner it named */
  uint32_t peer_slot;       /* ...and its slot; SIM_NO_SLOT when the address
                               names no node or not the one with that id */
  uint32_t hops;            /* FIND_SUCC_R, VALUE, OK: hops reported */
  bool value_ok;            /* VALUE: equal to expect_value */
  uint8_t *value;           /* VALUE: the bytes returned (owned) */
  size_t value_len;         /* bytes in value */
  /* PUT, DEL: the write, kept so that a STALE refusal can be answered */
  uint8_t *write_key;       /* its key (owned) */
  size_t write_key_len;     /* bytes in write_key */
  uint8_t *write_value;     /* PUT: its value (owned) */
  size_t write_value_len;   /* bytes in write_value */
  uint32_t writer;          /* the writer that stamped it */
  dht_version ver;          /* the version it carries now */
  uint32_t restamps;        /* STALE refusals answered by stamping anew */
  uint64_t wipes_at_send;   /* PUT, DEL: disks wiped before it was sent */
} sim_op;

/* Writers the simulated client plays: each stamps writes as the client
 * library does (its own hybrid clock and writer id), and a write goes
 * through one drawn at random. */
#define SIM_WRITERS 4
/* STALE refusals a write answers by stamping anew, as the library does
 * within its call; beyond them the refusal is the result. */
#define SIM_RESTAMPS_MAX 4

typedef struct sim_writer {
  sim_clock clock; /* its host's wall clock */
  uint64_t hlc;    /* the latest stamp it issued or was shown */
  dht_id id;       /* its writer id */
  bool started;    /* clock and id drawn */
} sim_writer;

typedef struct sim_world {
  uint64_t now_ms;         /* the virtual clock */
  sim_queue queue;         /* pending events */
  sim_net net;             /* connections, latency, cuts and clogs */
  sim_rng rng;             /* node seeds, bootstrap choices */
  dht_settings settings;   /* every node's settings */
  uint32_t replicas;       /* copies of each key the checks expect:
                              settings.replicas unless a run wants to see
                              the checks catch a core that keeps fewer */
  sim_clock_faults clocks; /* how the hosts' clocks go wrong */
  sim_rng clock_rng;       /* clock draws */
  sim_clock_faults writer_clocks; /* how the writers' clocks go wrong
                                     (exact unless a mode says so) */
  sim_writer writers[SIM_WRITERS]; /* the client's writers */
  sim_rng writer_rng;      /* which writer writes, their clocks and ids */
  sim_disk_env disks;      /* how the disks fail, and their totals */
  sim_buggify buggify;     /* the core's fault points: every node asks it */
  uint32_t disk_epoch;     /* bumped when every disk is freed: disk-full
                              events planned before are void */
  dht_log_level log_level; /* node log lines up to this level go to stderr */
  bool log_on;             /* node logging enabled at all */
  FILE *trace;             /* every event printed here when not NULL */

  sim_node *nodes;  /* by slot; slots are never reused */
  size_t n_nodes;   /* slots in use */
  size_t cap_nodes; /* slots allocated */

  sim_op *ops;            /* client requests; ops[i] has index ops_base + i */
  size_t n_ops;           /* requests since the last clear */
  size_t cap_ops;         /* requests allocated */
  size_t ops_base;        /* index of ops[0]: ops are never renumbered */
  size_t ops_outstanding; /* requests still waiting for a reply */
  dht_buf scratch;        /* encoding buffer for client requests */

  uint64_t events;               /* events processed */
  uint64_t digest;               /* hash of every event processed, in order:
                                    equal for two runs of one seed */
  uint64_t join_failures;        /* JOIN_FAILED events */
  uint64_t joins;                /* JOINED events */
  uint64_t unreachable;          /* peer_unreachable calls made */
  uint64_t resets_reported;      /* peer_reset calls made */
  uint64_t leaves;               /* graceful leaves that ended in LEFT */
  uint64_t leave_timeouts;       /* ...that did not, within
                                    SIM_LEAVE_TIMEOUT_MS */
  uint64_t disk_fills;           /* disks that filled up */
  uint64_t clock_steps;          /* process starts that found their host's
                                    clock stepped */
  uint64_t restamps;             /* writes stamped anew after STALE */
  bool failed;                   /* an invariant broke: the run must stop */
  uint64_t failed_at_ms;         /* when */
  char failure[SIM_FAILURE_LEN]; /* what broke, for the report */
} sim_world;

/* dhtd's buffers and idle close, which every world starts with. */
extern const sim_net_limits sim_world_dhtd_limits;

/* Seeds every stream from seed; settings are copied. */
void sim_world_init(sim_world *w, uint64_t seed, const dht_settings *settings);
/* Deletes every node, store, event and op. */
void sim_world_free(sim_world *w);

/* Records the first failure (later ones are ignored) and stops the run. */
void sim_world_fail(sim_world *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A new slot with a fresh address and an empty store, not running yet.
 * Returns its slot number. */
uint32_t sim_world_add_node(sim_world *w);
/* Starts a process on slot (which must be down) with its store: the node is
 * IDLE until create_ring, join or install_routing. */
void sim_world_start(sim_world *w, uint32_t slot);
/* Starts slot's process if needed and makes it a ring of one. */
void sim_world_create_ring(sim_world *w, uint32_t slot);
/* Starts slot's process if needed and joins through bootstrap's address. */
void sim_world_join(sim_world *w, uint32_t slot, uint32_t bootstrap);
/* Joins slot through the first of through[0..n) that answers, as an
 * operator's --join list does. */
void sim_world_join_list(sim_world *w, uint32_t slot, const uint32_t *through,
                         size_t n);
/* Kills slot's process; its store stays, less the writes not committed.
 * refuses: peers' connects are refused (a process crash) rather than
 * unanswered (a host crash). */
void sim_world_crash(sim_world *w, uint32_t slot, bool refuses);
/* Asks slot's JOINED process to leave gracefully; it exits once it reports
 * LEFT, or after SIM_LEAVE_TIMEOUT_MS. */
void sim_world_leave(sim_world *w, uint32_t slot);
/* Replaces the disk of slot (which must be down) by an empty one: it comes
 * back under its old address with nothing. */
void sim_world_wipe(sim_world *w, uint32_t slot);
/* slot's disk is full from at_ms for full_ms (kept across crashes: it is
 * the disk that is full, not the process). */
void sim_world_fill_disk(sim_world *w, uint32_t slot, uint64_t at_ms,
                         uint64_t full_ms);
/* Every disk has space again, and the fills planned are called off. */
void sim_world_free_disks(sim_world *w);
/* The monotonic time slot's process reads now. */
uint64_t sim_world_node_now(const sim_world *w, uint32_t slot);
/* Stops slot's process (SIGSTOP) for ms milliseconds, or until
 * sim_world_resume(); a node already paused stays paused until the later
 * end. */
void sim_world_pause(sim_world *w, uint32_t slot, uint64_t ms);
/* Lets slot's paused process run (SIGCONT): it handles everything that
 * waited, in order, at the current time. */
void sim_world_resume(sim_world *w, uint32_t slot);
bool sim_world_is_paused(const sim_world *w, uint32_t slot);
/* Carries out the actions of slot's node, checks its invariants and re-arms
 * its timer: call it after calling into a node directly. */
void sim_world_drain(sim_world *w, uint32_t slot);
/* Freezes or resumes maintenance on every running node. */
void sim_world_set_maintenance(sim_world *w, bool enabled);

bool sim_world_is_up(const sim_world *w, uint32_t slot);
bool sim_world_is_joined(const sim_world *w, uint32_t slot);
/* Running nodes. */
size_t sim_world_count_up(const sim_world *w);
/* A uniformly random JOINED node other than except (SIM_NO_SLOT for none),
 * or SIM_NO_SLOT when there is none. */
uint32_t sim_world_random_joined(sim_world *w, uint32_t except);
/* The slot named by a simulated address, or SIM_NO_SLOT. */
uint32_t sim_world_slot_of(const sim_world *w, const char *addr, size_t len);

/* Processes every event due up to and including t (or until a failure),
 * then sets the clock to t. */
void sim_world_run_until(sim_world *w, uint64_t t);
/* Runs until no op waits for a reply, or until limit_ms. */
void sim_world_run_ops(sim_world *w, uint64_t limit_ms);

/* Client requests, sent through slot's node. Return the op index, which
 * sim_world_op() turns into the op. */
size_t sim_world_lookup(sim_world *w, uint32_t slot, const dht_id *target);
size_t sim_world_get(sim_world *w, uint32_t slot, const char *key,
                     const char *expect_value);
size_t sim_world_put(sim_world *w, uint32_t slot, const char *key,
                     const char *value);
size_t sim_world_del(sim_world *w, uint32_t slot, const char *key);
/* The op with index op_index (which must not have been cleared). */
sim_op *sim_world_op(sim_world *w, size_t op_index);
/* Forgets every op; replies still in flight for them are dropped. */
void sim_world_clear_ops(sim_world *w);

/* Sum of every running node's counters. */
void sim_world_sum_counters(const sim_world *w, dht_node_counters *sum);

#endif /* SIM_WORLD_H */
