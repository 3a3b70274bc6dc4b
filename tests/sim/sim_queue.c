/*
 * sim_queue.c: the binary heap behind sim_queue.h. Sift-up and sift-down on
 * 16-byte entries; the events sit still in a pool with a free list.
 */
#include <stdio.h>
#include <stdlib.h>

#include "sim_queue.h"

#define SEQ_BITS (64 - SIM_QUEUE_TIME_BITS)

static void *grow(void *p, size_t n, size_t size) {
  void *q = realloc(p, n * size);
  if (q == NULL) {
    fprintf(stderr, "dht-sim: out of memory (event queue)\n");
    abort();
  }
  return q;
}

void sim_queue_init(sim_queue *q) {
  q->heap = NULL;
  q->len = 0;
  q->cap = 0;
  q->pool = NULL;
  q->free_slots = NULL;
  q->n_free = 0;
  q->pool_cap = 0;
  q->next_seq = 0;
}

void sim_queue_free(sim_queue *q) {
  size_t i;

  for (i = 0; i < q->len; i++) {
    free(q->pool[q->heap[i].pool].frame);
  }
  free(q->heap);
  free(q->pool);
  free(q->free_slots);
  sim_queue_init(q);
}

void sim_queue_push(sim_queue *q, const sim_event *ev) {
  sim_queue_entry entry;
  size_t i;

  if (ev->at_ms > SIM_QUEUE_TIME_MAX_MS || q->next_seq >> SEQ_BITS != 0) {
    fprintf(stderr, "dht-sim: virtual time or event count beyond the queue's "
                    "limits\n");
    abort();
  }
  if (q->n_free == 0) {
    size_t cap = q->pool_cap ? 2 * q->pool_cap : 1024;
    q->pool = grow(q->pool, cap, sizeof(*q->pool));
    q->free_slots = grow(q->free_slots, cap, sizeof(*q->free_slots));
    /* Hand out low indices first; the order does not affect results. */
    for (i = cap; i > q->pool_cap; i--) {
      q->free_slots[q->n_free++] = (uint32_t)(i - 1);
    }
    q->pool_cap = cap;
  }
  if (q->len == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 1024;
    q->heap = grow(q->heap, q->cap, sizeof(*q->heap));
  }
  entry.pool = q->free_slots[--q->n_free];
  entry.key = ev->at_ms << SEQ_BITS | q->next_seq++;
  q->pool[entry.pool] = *ev;
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

uint64_t sim_queue_peek_time(const sim_queue *q) {
  return q->len > 0 ? q->heap[0].key >> SEQ_BITS : UINT64_MAX;
}

const sim_event *sim_queue_peek(const sim_queue *q) {
  return q->len > 0 ? &q->pool[q->heap[0].pool] : NULL;
}

int sim_queue_pop(sim_queue *q, sim_event *out) {
  sim_queue_entry last;
  size_t i = 0;

  if (q->len == 0) {
    return -1;
  }
  *out = q->pool[q->heap[0].pool];
  q->free_slots[q->n_free++] = q->heap[0].pool;
  last = q->heap[--q->len];
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
  return 0;
}
