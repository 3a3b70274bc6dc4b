/*
 * sim_net.c: latency, loss, duplication and partitions (see sim_net.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_net.h"

void sim_net_init(sim_net *net, sim_rng *parent) {
  memset(net, 0, sizeof(*net));
  sim_rng_fork(parent, &net->rng);
}

void sim_net_free(sim_net *net) {
  free(net->side);
  net->side = NULL;
  net->side_len = 0;
}

uint64_t sim_net_latency_ms(sim_net *net) {
  uint64_t ms = sim_rng_between(&net->rng, SIM_NET_LATENCY_MIN_MS,
                                SIM_NET_LATENCY_MAX_MS);
  if (sim_rng_chance(&net->rng, net->faults.slow)) {
    double tail = sim_rng_exponential(&net->rng, SIM_NET_TAIL_MEAN_MS);
    ms += tail < SIM_NET_TAIL_CAP_MS ? (uint64_t)tail : SIM_NET_TAIL_CAP_MS;
  }
  return ms;
}

uint64_t sim_net_client_latency_ms(sim_net *net) {
  return sim_rng_between(&net->rng, 1, SIM_NET_CLIENT_LATENCY_MAX_MS);
}

static uint8_t side_of(const sim_net *net, uint32_t slot) {
  return slot < net->side_len ? net->side[slot] : 0;
}

unsigned sim_net_copies(sim_net *net, uint32_t from, uint32_t to) {
  net->sent++;
  if (net->partitioned && side_of(net, from) != side_of(net, to)) {
    net->cut++;
    return 0;
  }
  if (sim_rng_chance(&net->rng, net->faults.loss)) {
    net->lost++;
    return 0;
  }
  if (sim_rng_chance(&net->rng, net->faults.duplicate)) {
    net->duplicated++;
    return 2;
  }
  return 1;
}

void sim_net_set_side(sim_net *net, uint32_t slot, uint8_t side) {
  if (slot >= net->side_len) {
    size_t len = net->side_len ? net->side_len : 64;
    uint8_t *grown;
    while (len <= slot) {
      len *= 2;
    }
    grown = realloc(net->side, len);
    if (grown == NULL) {
      fprintf(stderr, "dht-sim: out of memory (partition sides)\n");
      abort();
    }
    memset(grown + net->side_len, 0, len - net->side_len);
    net->side = grown;
    net->side_len = len;
  }
  net->side[slot] = side;
}

void sim_net_partition(sim_net *net) { net->partitioned = true; }

void sim_net_heal_partition(sim_net *net) {
  net->partitioned = false;
  if (net->side != NULL) {
    memset(net->side, 0, net->side_len);
  }
}
