/*
 * sim_clock.h: the clocks of one simulated host.
 *
 * A host's wall clock is off from the true (virtual) time by an offset
 * that grows with its drift and jumps when it is stepped (set back or
 * forward at a reboot). Its process sees two clocks, as dhtd does: the
 * monotonic time every call into the node takes, which starts at the true
 * time when the process starts and then runs at the host's rate (drift
 * included: a fast crystal makes the timers fire early too), and the wall
 * clock it is given once at start (dht_node_config.wall_ms), from which the
 * node counts on with its monotonic time. With no offset and no drift both
 * read the true time, and a run is what it was without this module.
 */
#ifndef SIM_CLOCK_H
#define SIM_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "sim_rng.h"

/* The wall clock reads this at virtual time 0: 2024-01-01, so versions look
 * like real ones. */
#define SIM_WALL_EPOCH_MS UINT64_C(1704067200000)
/* Drift is in millionths; this bounds it (a clock at a tenth of its
 * rate is not a clock any more). */
#define SIM_CLOCK_DRIFT_PPM_MAX 100000

typedef struct sim_clock {
  int64_t offset_ms;   /* wall clock minus true time, at anchor_ms */
  int32_t drift_ppm;   /* rate error in millionths: + runs fast */
  uint64_t anchor_ms;  /* true time at which offset_ms held */
  uint64_t started_ms; /* true time the running process started: its
                          monotonic clock read that then */
} sim_clock;

/* How a world's host clocks go wrong; all zero: every clock is exact.
 * Offsets are drawn uniformly in [-within_ms, +within_ms], or, for a share
 * beyond_share of the draws, in [-beyond_ms, +beyond_ms]. */
typedef struct sim_clock_faults {
  uint32_t within_ms;  /* offsets of most hosts, either way */
  double beyond_share; /* share of the offsets drawn from the wider range */
  uint32_t beyond_ms;  /* ...that range, either way */
  uint32_t drift_ppm;  /* drift drawn in [-drift_ppm, +drift_ppm], at most
                          SIM_CLOCK_DRIFT_PPM_MAX */
  double step_prob;    /* a process start (not the first) finds its host's
                          clock stepped to a new offset drawn as above */
} sim_clock_faults;

/* A new host's clock at now_ms: an offset and a drift drawn from g as f
 * says; no draw at all when f is all zero. */
void sim_clock_draw(sim_clock *c, const sim_clock_faults *f, sim_rng *g,
                    uint64_t now_ms);
/* A process starts at now_ms on a host whose clock has been set before:
 * with f->step_prob, the clock is stepped to a new drawn offset first.
 * Returns true when it was stepped. */
bool sim_clock_restart(sim_clock *c, const sim_clock_faults *f, sim_rng *g,
                       uint64_t now_ms);

/* A host clock off by offset_ms now (true time now_ms), drifting. */
void sim_clock_init(sim_clock *c, uint64_t now_ms, int64_t offset_ms,
                    int32_t drift_ppm);
/* How far the wall clock is off at true time now_ms. */
int64_t sim_clock_offset(const sim_clock *c, uint64_t now_ms);
/* Steps the wall clock by step_ms (negative: back) at now_ms. */
void sim_clock_step(sim_clock *c, uint64_t now_ms, int64_t step_ms);
/* A process starts at now_ms. */
void sim_clock_start(sim_clock *c, uint64_t now_ms);
/* The wall clock at now_ms, in ms since the Unix epoch. */
uint64_t sim_clock_wall(const sim_clock *c, uint64_t now_ms);
/* The running process's monotonic time at true time now_ms. */
uint64_t sim_clock_mono(const sim_clock *c, uint64_t now_ms);
/* The earliest true time at which its monotonic time reaches mono_ms
 * (never before the process started). */
uint64_t sim_clock_due(const sim_clock *c, uint64_t mono_ms);

#endif /* SIM_CLOCK_H */
