/*
 * sim_ring.h: the truth about the ring, computed from outside the nodes.
 *
 * The simulator knows every live node, so it can say what each node's
 * routing state should be: the owner of key k is successor(k), the first
 * live JOINED node at or clockwise after k; a node's successor list is the
 * next live nodes, its predecessor the previous one, and finger i is
 * successor(node + 2^i). This module builds that sorted view on demand,
 * compares every node against it (convergence: routing, and no live key
 * outside the ranges a node owns or replicates), and installs it directly into nodes (the oracle routing the
 * path-length experiments use).
 */
#ifndef SIM_RING_H
#define SIM_RING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_world.h"

typedef struct sim_ring_member {
  dht_id id;     /* the node's ring position */
  uint32_t slot; /* its slot in the world */
} sim_ring_member;

typedef struct sim_ring {
  sim_ring_member *members; /* sorted by id (ties by slot) */
  size_t n;                 /* members */
} sim_ring;

/* The running nodes in id order: only JOINED ones when joined_only. */
void sim_ring_build(sim_ring *ring, const sim_world *w, bool joined_only);
void sim_ring_free(sim_ring *ring);

/* Index of successor(k): the first member at or clockwise after k. The
 * ring must not be empty. */
size_t sim_ring_successor(const sim_ring *ring, const dht_id *k);

/* The nodes that should hold key_id: its owner and the next replicas - 1
 * members (all of them in a smaller ring), owner first. Writes their slots
 * into slots (room for replicas) and returns how many. */
size_t sim_ring_holders(const sim_ring *ring, const dht_id *key_id,
                        uint32_t replicas, uint32_t *slots);

/* Live (not tombstone) records of st whose key id is in (from, to]. */
size_t sim_store_count_live(dht_store *st, const dht_id *from,
                            const dht_id *to);

/*
 * Compares every running node's successor list, predecessor and fingers with
 * the truth of ring (built with joined_only). A running node that is not
 * JOINED counts as not converged. Returns the number of nodes that differ
 * (stopping at the first one when stop_at_first) and describes the first
 * SIM_RING_REASONS_MAX differences in why; *fingers_only (when not NULL)
 * says how many of them differ in a finger and nothing else.
 */
#define SIM_RING_REASONS_MAX 6
size_t sim_ring_check_converged(const sim_ring *ring, const sim_world *w,
                                bool stop_at_first, char *why, size_t why_len,
                                size_t *fingers_only);

/* Runs the world until sim_ring_check_converged() finds no difference,
 * checking every virtual second. When limit_ms
 * pass first, fails the world with the differences, naming the phase it
 * came after. progress prints every check on stderr. Returns true when
 * converged. */
bool sim_ring_converge(sim_world *w, uint64_t limit_ms, bool progress,
                       const char *after);

/* Installs the true routing, with succ_list_len successors, into every
 * member of ring (at least two members). Without install_pred the nodes get
 * no predecessor: an installed one comes without the predecessor list
 * behind it, which the core then extends from the wrong end once
 * maintenance runs (the first reply describing the predecessor breaks the
 * invariant "the predecessor list starts at the predecessor"). A ring that
 * runs maintenance lets each node learn both from the first notify. */
void sim_ring_install_oracle(const sim_ring *ring, sim_world *w,
                             uint32_t succ_list_len, bool install_pred);

#endif /* SIM_RING_H */
