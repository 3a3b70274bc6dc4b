/*
 * hist.c: the latency histogram of dht bench and dht load (cli.h), so that
 * the percentiles both print are computed one way, at one resolution.
 *
 * Log-linear buckets in microseconds: every value below 2^(SUB_BITS + 1)
 * has a bucket of its own; above, each power of two [2^e, 2^(e+1)) is
 * split into 2^SUB_BITS equal buckets of width 2^(e - SUB_BITS). A
 * quantile is the smallest value of the bucket its nearest rank falls in,
 * so it is exact below 1024 us, and above that never more than the true
 * value x nor lower than it by x/512 (0.2%) or more: x's bucket starts at
 * lo >= 2^e and x - lo < 2^(e - SUB_BITS) <= x / 2^SUB_BITS. With 9 bits
 * that bound stays well below the run-to-run noise of a p99.9, and memory
 * is fixed at CLI_HIST_BUCKETS counters (128 KiB) whatever the number of
 * values.
 */
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dht/err.h"

#define SUB_BITS CLI_HIST_SUB_BITS
#define EXACT (1u << (SUB_BITS + 1)) /* values below have their own bucket */

static unsigned top_bit(uint64_t v) {
  unsigned n = 0;

  while (v >>= 1) {
    n++;
  }
  return n;
}

static size_t bucket_of(uint64_t us) {
  unsigned e;

  if (us < EXACT) {
    return (size_t)us;
  }
  if (us >= (1ull << CLI_HIST_TOP_BIT)) {
    us = (1ull << CLI_HIST_TOP_BIT) - 1;
  }
  e = top_bit(us); /* SUB_BITS + 1 .. CLI_HIST_TOP_BIT - 1 */
  return EXACT + (size_t)(e - SUB_BITS - 1) * (1u << SUB_BITS) +
         (size_t)((us >> (e - SUB_BITS)) - (1u << SUB_BITS));
}

/* The smallest value that falls in bucket i. */
static uint64_t bucket_low(size_t i) {
  size_t j;
  unsigned e;

  if (i < EXACT) {
    return i;
  }
  j = i - EXACT;
  e = (unsigned)(j >> SUB_BITS) + SUB_BITS + 1;
  return ((uint64_t)(1u << SUB_BITS) + (j & ((1u << SUB_BITS) - 1)))
         << (e - SUB_BITS);
}

int cli_hist_init(cli_hist *h) {
  memset(h, 0, sizeof(*h));
  h->counts = calloc(CLI_HIST_BUCKETS, sizeof(*h->counts));
  return h->counts != NULL ? 0 : DHT_ERR_NOMEM;
}

void cli_hist_free(cli_hist *h) {
  free(h->counts);
  memset(h, 0, sizeof(*h));
}

void cli_hist_reset(cli_hist *h) {
  memset(h->counts, 0, CLI_HIST_BUCKETS * sizeof(*h->counts));
  h->total = 0;
  h->max_us = 0;
}

void cli_hist_add(cli_hist *h, uint64_t us) {
  h->counts[bucket_of(us)]++;
  h->total++;
  if (us > h->max_us) {
    h->max_us = us;
  }
}

uint64_t cli_nearest_rank(uint64_t n, double q) {
  double x = q * (double)n;
  uint64_t rank;

  if (n == 0) {
    return 0;
  }
  if (!(x > 1.0)) {
    return 1;
  }
  if (x >= (double)n) {
    return n;
  }
  rank = (uint64_t)x; /* then rounded up: ceil(x) */
  return (double)rank < x ? rank + 1 : rank;
}

uint64_t cli_hist_quantile(const cli_hist *h, double q) {
  uint64_t rank = cli_nearest_rank(h->total, q), seen = 0;
  size_t i;

  if (rank == 0) {
    return 0;
  }
  /* rank <= total, the sum of the counts: the loop ends inside. */
  for (i = 0; seen + h->counts[i] < rank; i++) {
    seen += h->counts[i];
  }
  return bucket_low(i);
}
