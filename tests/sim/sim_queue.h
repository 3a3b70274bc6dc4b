/*
 * sim_queue.h: the simulator's agenda.
 *
 * Events are ordered by (virtual time, sequence number): the sequence number
 * is given at insertion, so events due at the same millisecond run in the
 * order they were scheduled and the run never depends on the queue's layout
 * or pointer values. Each event owns its frame bytes (a copy: the node's own
 * buffers die on its next call).
 *
 * Nearly every event is due within seconds, so those sit in a timing wheel:
 * one FIFO per millisecond of the next SIM_QUEUE_WHEEL_MS, whose order is
 * the sequence order since each push takes the next number. The rest (and
 * anything before the wheel's start) go to a binary min-heap of 16-byte
 * entries (time and sequence packed into one key, and the index of the
 * event in a pool). A pop takes the smaller key of the wheel's first event
 * and the heap's top: the same order as one heap, without its cache misses
 * (a heap of 10^6 events costs a miss per level at each pop).
 */
#ifndef SIM_QUEUE_H
#define SIM_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The packed key gives the time SIM_QUEUE_TIME_BITS bits (about 4.6 hours
 * of virtual time) and the sequence number the rest (10^12 events). */
#define SIM_QUEUE_TIME_BITS 24
#define SIM_QUEUE_TIME_MAX_MS ((UINT64_C(1) << SIM_QUEUE_TIME_BITS) - 1)
/* Milliseconds the wheel covers from its start (a power of two). */
#define SIM_QUEUE_WHEEL_MS 16384u

typedef enum sim_event_kind {
  SIM_EV_DELIVER,       /* a client request arrives at node slot on
                           connection conn */
  SIM_EV_STREAM,        /* the oldest item of stream `end` of connection
                           conn is due at the other end, node slot */
  SIM_EV_CONNECT,       /* node slot's connect (conn) gets its SYN answered,
                           refused, or retransmits it */
  SIM_EV_CLOSED,        /* node slot's process learns that conn is closed */
  SIM_EV_SWEEP,         /* node slot closes its idle outgoing connections */
  SIM_EV_CLIENT_REPLY,  /* a REPLY's frame arrives at the simulated client */
  SIM_EV_WAKE,          /* node slot's timers may be due */
  SIM_EV_REJOIN,        /* node slot retries a join that failed */
  SIM_EV_RESUME,        /* node slot's paused process runs again */
  SIM_EV_LEAVE_TIMEOUT, /* node slot's graceful leave must be over */
  SIM_EV_DISK_FULL,     /* slot's disk fills up (incarnation: the world's
                           disk epoch, not the process's) */
  SIM_EV_DISK_FREED,    /* ...and has space again */
} sim_event_kind;

typedef struct sim_event {
  uint64_t at_ms;       /* virtual time it happens */
  sim_event_kind kind;  /* what happens */
  uint32_t slot;        /* the node it happens to (not CLIENT_REPLY) */
  uint32_t incarnation; /* ...in this life: stale when the node restarted */
  uint32_t peer_slot;   /* DELIVER: SIM_NO_SLOT (the client); STREAM: the
                           sender; CLOSED: the other end; CLIENT_REPLY: the
                           node that replied */
  uint64_t conn;        /* DELIVER, STREAM, CONNECT, CLOSED, CLIENT_REPLY:
                           connection number */
  uint8_t end;          /* STREAM: the sending end; CLOSED: slot's end */
  bool failed;          /* CLOSED: by an error (dhtd then reports an
                           outgoing connection's peer unreachable, or
                           reset when it was established) */
  bool established;     /* CLOSED: it had been established */
  uint8_t *frame;       /* DELIVER, CLIENT_REPLY: owned frame with header */
  size_t frame_len;     /* bytes in frame */
} sim_event;

/* One heap entry: (at_ms << sequence bits | seq) and where the event is. */
typedef struct sim_queue_entry {
  uint64_t key;  /* orders the heap */
  uint32_t pool; /* index of the event in sim_queue.pool */
} sim_queue_entry;

/* One millisecond of the wheel: a FIFO of pool indices. */
typedef struct sim_queue_bucket {
  uint32_t head; /* first event, or SIM_QUEUE_NONE */
  uint32_t tail; /* last event */
} sim_queue_bucket;

#define SIM_QUEUE_NONE UINT32_MAX

typedef struct sim_queue {
  sim_queue_entry *heap;     /* heap[0] is the earliest event of the heap */
  size_t len;                /* events in the heap */
  size_t cap;                /* heap entries allocated */
  sim_queue_bucket *wheel;   /* SIM_QUEUE_WHEEL_MS buckets: the one of time
                                t is wheel[t % SIM_QUEUE_WHEEL_MS] */
  uint64_t wheel_start_ms;   /* every event in the wheel is due in
                                [wheel_start_ms, + SIM_QUEUE_WHEEL_MS) */
  size_t wheel_len;          /* events in the wheel */
  sim_event *pool;           /* the events themselves */
  uint64_t *seq;             /* each pool entry's sequence number */
  uint32_t *next;            /* each pool entry's successor in its bucket */
  uint32_t *free_slots;      /* pool indices not in use */
  size_t n_free;             /* entries in free_slots */
  size_t pool_cap;           /* events allocated in pool (and the arrays
                                beside it) */
  uint64_t next_seq;         /* sequence number of the next push */
} sim_queue;

void sim_queue_init(sim_queue *q);
/* Frees every queued event's frame and the queue itself (which is then
 * empty, and needs sim_queue_init before another push). */
void sim_queue_free(sim_queue *q);
/* Queues a copy of *ev (ownership of ev->frame moves into the queue).
 * Aborts when out of memory or past SIM_QUEUE_TIME_MAX_MS: the simulator
 * cannot go on. */
void sim_queue_push(sim_queue *q, const sim_event *ev);
/* The earliest event's time; UINT64_MAX when the queue is empty. */
uint64_t sim_queue_peek_time(const sim_queue *q);
/* The earliest event, or NULL: valid until the next push or pop. */
const sim_event *sim_queue_peek(const sim_queue *q);
/* Removes the earliest event into *out (ownership of its frame moves to the
 * caller). Returns 0, or -1 when the queue is empty. */
int sim_queue_pop(sim_queue *q, sim_event *out);

#endif /* SIM_QUEUE_H */
