/*
 * sim_queue.c: the timing wheel and the binary heap behind sim_queue.h.
 * The events sit still in a pool with a free list; the wheel links them
 * into per-millisecond FIFOs, the heap holds 16-byte entries.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_queue.h"

#define SEQ_BITS (64 - SIM_QUEUE_TIME_BITS)
#define WHEEL_MASK (SIM_QUEUE_WHEEL_MS - 1)

static void *grow(void *p, size_t n, size_t size) {
  void *q = realloc(p, n * size);
  if (q == NULL) {
    fprintf(stderr, "dht-sim: out of memory (event queue)\n");
    abort();
  }
  return q;
}

void sim_queue_init(sim_queue *q) {
  size_t i;

  q->heap = NULL;
  q->len = 0;
  q->cap = 0;
  q->wheel = grow(NULL, SIM_QUEUE_WHEEL_MS, sizeof(*q->wheel));
  for (i = 0; i < SIM_QUEUE_WHEEL_MS; i++) {
    q->wheel[i].head = SIM_QUEUE_NONE;
  }
  q->wheel_start_ms = 0;
  q->wheel_len = 0;
  q->pool = NULL;
  q->seq = NULL;
  q->next = NULL;
  q->free_slots = NULL;
  q->n_free = 0;
  q->pool_cap = 0;
  q->next_seq = 0;
}

void sim_queue_free(sim_queue *q) {
  size_t i;
  uint32_t e;

  for (i = 0; i < q->len; i++) {
    free(q->pool[q->heap[i].pool].frame);
  }
  for (i = 0; i < SIM_QUEUE_WHEEL_MS; i++) {
    for (e = q->wheel[i].head; e != SIM_QUEUE_NONE; e = q->next[e]) {
      free(q->pool[e].frame);
    }
  }
  free(q->heap);
  free(q->wheel);
  free(q->pool);
  free(q->seq);
  free(q->next);
  free(q->free_slots);
  memset(q, 0, sizeof(*q));
}

static uint64_t key_of(const sim_queue *q, uint32_t e) {
  return q->pool[e].at_ms << SEQ_BITS | q->seq[e];
}

static void heap_push(sim_queue *q, uint32_t e) {
  sim_queue_entry entry;
  size_t i;

  if (q->len == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 1024;
    q->heap = grow(q->heap, q->cap, sizeof(*q->heap));
  }
  entry.pool = e;
  entry.key = key_of(q, e);
  i = q->len++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (q->heap[parent].key <= entry.key) {
      break;
    }
    q->heap[i] = q->heap[parent];
    i = parent;
  }
  q->heap[i] = entry;
}

static void heap_pop(sim_queue *q) {
  sim_queue_entry last = q->heap[--q->len];
  size_t i = 0;

  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= q->len) {
      break;
    }
    if (child + 1 < q->len && q->heap[child + 1].key < q->heap[child].key) {
      child++;
    }
    if (last.key <= q->heap[child].key) {
      break;
    }
    q->heap[i] = q->heap[child];
    i = child;
  }
  if (q->len > 0) {
    q->heap[i] = last;
  }
}

void sim_queue_push(sim_queue *q, const sim_event *ev) {
  uint32_t e;
  size_t i;

  if (ev->at_ms > SIM_QUEUE_TIME_MAX_MS || q->next_seq >> SEQ_BITS != 0) {
    fprintf(stderr, "dht-sim: virtual time or event count beyond the queue's "
                    "limits\n");
    abort();
  }
  if (q->n_free == 0) {
    size_t cap = q->pool_cap ? 2 * q->pool_cap : 1024;
    q->pool = grow(q->pool, cap, sizeof(*q->pool));
    q->seq = grow(q->seq, cap, sizeof(*q->seq));
    q->next = grow(q->next, cap, sizeof(*q->next));
    q->free_slots = grow(q->free_slots, cap, sizeof(*q->free_slots));
    /* Hand out low indices first; the order does not affect results. */
    for (i = cap; i > q->pool_cap; i--) {
      q->free_slots[q->n_free++] = (uint32_t)(i - 1);
    }
    q->pool_cap = cap;
  }
  e = q->free_slots[--q->n_free];
  q->pool[e] = *ev;
  q->seq[e] = q->next_seq++;
  if (ev->at_ms >= q->wheel_start_ms &&
      ev->at_ms - q->wheel_start_ms < SIM_QUEUE_WHEEL_MS) {
    sim_queue_bucket *b = &q->wheel[ev->at_ms & WHEEL_MASK];
    q->next[e] = SIM_QUEUE_NONE;
    if (b->head == SIM_QUEUE_NONE) {
      b->head = e;
    } else {
      q->next[b->tail] = e;
    }
    b->tail = e;
    q->wheel_len++;
  } else {
    heap_push(q, e);
  }
}

/* The wheel's earliest event (the head of its first non-empty bucket) and
 * its time, or SIM_QUEUE_NONE. */
static uint32_t wheel_first(const sim_queue *q, uint64_t *at_ms) {
  uint64_t t;

  if (q->wheel_len == 0) {
    return SIM_QUEUE_NONE;
  }
  for (t = q->wheel_start_ms;; t++) {
    uint32_t e = q->wheel[t & WHEEL_MASK].head;
    if (e != SIM_QUEUE_NONE) {
      *at_ms = t;
      return e;
    }
  }
}

/* The earliest event of all and its time, or SIM_QUEUE_NONE; *in_wheel
 * says where. The times decide, and the sequence numbers only between equal
 * times, so that the event itself is read only once it is taken. */
static uint32_t first(const sim_queue *q, bool *in_wheel, uint64_t *at_ms) {
  uint64_t w_ms = 0, h_ms = q->len > 0 ? q->heap[0].key >> SEQ_BITS : 0;
  uint32_t w = wheel_first(q, &w_ms);

  *in_wheel = w != SIM_QUEUE_NONE &&
              (q->len == 0 || w_ms < h_ms ||
               (w_ms == h_ms && key_of(q, w) < q->heap[0].key));
  if (*in_wheel) {
    *at_ms = w_ms;
    return w;
  }
  *at_ms = h_ms;
  return q->len > 0 ? q->heap[0].pool : SIM_QUEUE_NONE;
}

uint64_t sim_queue_peek_time(const sim_queue *q) {
  bool in_wheel;
  uint64_t at_ms;

  return first(q, &in_wheel, &at_ms) != SIM_QUEUE_NONE ? at_ms : UINT64_MAX;
}

const sim_event *sim_queue_peek(const sim_queue *q) {
  bool in_wheel;
  uint64_t at_ms;
  uint32_t e = first(q, &in_wheel, &at_ms);

  return e != SIM_QUEUE_NONE ? &q->pool[e] : NULL;
}

int sim_queue_pop(sim_queue *q, sim_event *out) {
  bool in_wheel;
  uint64_t at_ms;
  uint32_t e = first(q, &in_wheel, &at_ms);

  if (e == SIM_QUEUE_NONE) {
    return -1;
  }
  *out = q->pool[e];
  if (in_wheel) {
    sim_queue_bucket *b = &q->wheel[out->at_ms & WHEEL_MASK];
    b->head = q->next[e];
    q->wheel_len--;
  } else {
    heap_pop(q);
  }
  /* Nothing queued is due before this event, so the wheel may start here:
   * every event in it is due no earlier, and no later than before. */
  if (out->at_ms > q->wheel_start_ms) {
    q->wheel_start_ms = out->at_ms;
  }
  q->free_slots[q->n_free++] = e;
  return 0;
}
