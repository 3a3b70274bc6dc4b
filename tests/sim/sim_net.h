/*
 * sim_net.h: the simulated network between nodes.
 *
 * It decides, for every node-to-node message, whether it arrives (loss,
 * partitions), how many times (duplication) and after how long (latency; two
 * messages with different latencies overtake each other, which is how
 * reordering happens). It knows nothing about frames or nodes beyond their
 * slot numbers. Its generator is its own stream, forked from the run's seed.
 */
#ifndef SIM_NET_H
#define SIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim_rng.h"

/* Normal latency is uniform in [SIM_NET_LATENCY_MIN_MS, _MAX_MS]; a slow
 * message adds an exponential tail, capped. */
#define SIM_NET_LATENCY_MIN_MS 1
#define SIM_NET_LATENCY_MAX_MS 80
#define SIM_NET_TAIL_MEAN_MS 250
#define SIM_NET_TAIL_CAP_MS 3000
/* Client <-> node latency: a client next to its node, never faulty. */
#define SIM_NET_CLIENT_LATENCY_MAX_MS 10

/* Probabilities applied to each node-to-node message; all zero when healed. */
typedef struct sim_net_faults {
  double loss;      /* the message is dropped */
  double duplicate; /* the message arrives twice */
  double slow;      /* its latency comes from the long tail */
} sim_net_faults;

typedef struct sim_net {
  sim_rng rng;           /* latency and fault draws */
  sim_net_faults faults; /* the current fault probabilities */
  bool partitioned;      /* messages across sides are dropped */
  uint8_t *side;         /* partition side (0 or 1) of each node slot */
  size_t side_len;       /* slots that side covers */
  uint64_t sent;         /* node-to-node messages handed to the network */
  uint64_t lost;         /* ...dropped by loss */
  uint64_t cut;          /* ...dropped by a partition */
  uint64_t duplicated;   /* ...delivered twice */
} sim_net;

void sim_net_init(sim_net *net, sim_rng *parent);
void sim_net_free(sim_net *net);

/* Latency of one node-to-node message copy. */
uint64_t sim_net_latency_ms(sim_net *net);
/* Latency between the simulated client and a node. */
uint64_t sim_net_client_latency_ms(sim_net *net);
/* How many copies of a message from slot from to slot to arrive: 0, 1, 2.
 * Counts the outcome. */
unsigned sim_net_copies(sim_net *net, uint32_t from, uint32_t to);

/* Puts slot on side (0 or 1) of the next partition; slots never placed are
 * on side 0. */
void sim_net_set_side(sim_net *net, uint32_t slot, uint8_t side);
/* Starts cutting traffic between the sides set so far. */
void sim_net_partition(sim_net *net);
/* Ends the partition and resets every slot to side 0. */
void sim_net_heal_partition(sim_net *net);

#endif /* SIM_NET_H */
