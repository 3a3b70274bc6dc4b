/*
 * sim_rng.h: the simulator's only source of randomness.
 *
 * xoshiro256** seeded through splitmix64, as its authors recommend. Every
 * random choice the simulator makes comes from one of these generators, all
 * derived from the run's seed, so a seed replays a run exactly. Separate
 * streams (network, faults, clients, ...) are forked from the seed so that
 * drawing one more number in one place does not shift every other choice.
 */
#ifndef SIM_RNG_H
#define SIM_RNG_H

#include <stdbool.h>
#include <stdint.h>

#include "dht/id.h"

typedef struct sim_rng {
  uint64_t s[4]; /* xoshiro256** state; never all zero */
} sim_rng;

/* Seeds from one 64-bit number (any value, zero included). */
void sim_rng_seed(sim_rng *rng, uint64_t seed);
/* Seeds child from parent's next output: an independent stream. */
void sim_rng_fork(sim_rng *parent, sim_rng *child);
/* 64 uniformly random bits. */
uint64_t sim_rng_next(sim_rng *rng);
/* Uniform in [0, n); n must be > 0. Unbiased (rejection sampling). */
uint64_t sim_rng_below(sim_rng *rng, uint64_t n);
/* Uniform in [lo, hi], lo <= hi. */
uint64_t sim_rng_between(sim_rng *rng, uint64_t lo, uint64_t hi);
/* Uniform in [0, 1), 53 bits of precision. */
double sim_rng_unit(sim_rng *rng);
/* True with probability p (p <= 0: never, p >= 1: always). */
bool sim_rng_chance(sim_rng *rng, double p);
/* Exponentially distributed with the given mean. */
double sim_rng_exponential(sim_rng *rng, double mean);
/* A uniformly random 160-bit id. */
void sim_rng_id(sim_rng *rng, dht_id *out);

#endif /* SIM_RNG_H */
