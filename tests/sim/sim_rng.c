/*
 * sim_rng.c: xoshiro256** (Blackman and Vigna, public domain reference
 * algorithm) seeded with splitmix64. See sim_rng.h for why it exists.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "sim_rng.h"

static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void sim_rng_seed(sim_rng *rng, uint64_t seed) {
  uint64_t sm = seed;
  int i;

  for (i = 0; i < 4; i++) {
    rng->s[i] = splitmix64(&sm);
  }
  /* splitmix64 is a bijection of its counter, so four consecutive outputs
   * are never all zero; the assertion documents the requirement. */
  assert((rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]) != 0);
}

void sim_rng_fork(sim_rng *parent, sim_rng *child) {
  sim_rng_seed(child, sim_rng_next(parent));
}

uint64_t sim_rng_next(sim_rng *rng) {
  uint64_t *s = rng->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;

  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t sim_rng_below(sim_rng *rng, uint64_t n) {
  /* Reject the top partial block of 2^64 so every residue is equally
   * likely; at most half the draws are rejected, usually none. */
  uint64_t limit;
  uint64_t x;

  assert(n > 0);
  limit = UINT64_MAX - (UINT64_MAX % n + 1) % n;
  do {
    x = sim_rng_next(rng);
  } while (x > limit);
  return x % n;
}

uint64_t sim_rng_between(sim_rng *rng, uint64_t lo, uint64_t hi) {
  assert(lo <= hi);
  if (hi - lo == UINT64_MAX) {
    return sim_rng_next(rng);
  }
  return lo + sim_rng_below(rng, hi - lo + 1);
}

double sim_rng_unit(sim_rng *rng) {
  return (double)(sim_rng_next(rng) >> 11) * 0x1.0p-53;
}

bool sim_rng_chance(sim_rng *rng, double p) {
  /* Always draw, so that the stream advances the same way whatever p is. */
  double u = sim_rng_unit(rng);
  return u < p;
}

double sim_rng_exponential(sim_rng *rng, double mean) {
  /* 1 - u is in (0, 1], so the logarithm is finite. */
  return -mean * log(1.0 - sim_rng_unit(rng));
}

void sim_rng_id(sim_rng *rng, dht_id *out) {
  uint8_t bytes[24];
  int i;

  for (i = 0; i < 3; i++) {
    uint64_t x = sim_rng_next(rng);
    int j;
    for (j = 0; j < 8; j++) {
      bytes[8 * i + j] = (uint8_t)(x >> (56 - 8 * j));
    }
  }
  memcpy(out->b, bytes, DHT_ID_LEN);
}
