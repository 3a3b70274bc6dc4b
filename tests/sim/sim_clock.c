/*
 * sim_clock.c: a host's drifting, steppable clocks (see sim_clock.h).
 *
 * The process's monotonic time is started_ms + elapsed * (10^6 + drift) /
 * 10^6, rounded down, elapsed being the true time since it started; it is
 * non-decreasing because the rate is positive. sim_clock_due() inverts it
 * with a ceiling, so that waking a node at the returned time finds its
 * deadline due.
 */
#include <assert.h>

#include "sim_clock.h"

#define PPM 1000000

/* Elapsed times beyond this (about 35 years) are not simulated: it keeps
 * elapsed * PPM far from overflow. */
#define ELAPSED_MAX_MS (UINT64_C(1) << 40)

void sim_clock_init(sim_clock *c, uint64_t now_ms, int64_t offset_ms,
                    int32_t drift_ppm) {
  assert(drift_ppm >= -SIM_CLOCK_DRIFT_PPM_MAX &&
         drift_ppm <= SIM_CLOCK_DRIFT_PPM_MAX);
  c->offset_ms = offset_ms;
  c->drift_ppm = drift_ppm;
  c->anchor_ms = now_ms;
  c->started_ms = now_ms;
}

int64_t sim_clock_offset(const sim_clock *c, uint64_t now_ms) {
  int64_t elapsed = (int64_t)(now_ms - c->anchor_ms);

  return c->offset_ms + elapsed * c->drift_ppm / PPM;
}

void sim_clock_step(sim_clock *c, uint64_t now_ms, int64_t step_ms) {
  c->offset_ms = sim_clock_offset(c, now_ms) + step_ms;
  c->anchor_ms = now_ms;
}

void sim_clock_start(sim_clock *c, uint64_t now_ms) { c->started_ms = now_ms; }

static bool faults_on(const sim_clock_faults *f) {
  return f->within_ms > 0 || f->beyond_ms > 0 || f->drift_ppm > 0;
}

/* A signed draw in [-bound, +bound]. */
static int64_t draw_signed(sim_rng *g, uint64_t bound) {
  return (int64_t)sim_rng_below(g, 2 * bound + 1) - (int64_t)bound;
}

static int64_t draw_offset(const sim_clock_faults *f, sim_rng *g) {
  bool beyond = sim_rng_chance(g, f->beyond_share);

  return draw_signed(g, beyond ? f->beyond_ms : f->within_ms);
}

void sim_clock_draw(sim_clock *c, const sim_clock_faults *f, sim_rng *g,
                    uint64_t now_ms) {
  int64_t offset = 0;
  int32_t drift = 0;

  if (faults_on(f)) {
    offset = draw_offset(f, g);
    drift = (int32_t)draw_signed(g, f->drift_ppm);
  }
  sim_clock_init(c, now_ms, offset, drift);
}

bool sim_clock_restart(sim_clock *c, const sim_clock_faults *f, sim_rng *g,
                       uint64_t now_ms) {
  bool step = faults_on(f) && sim_rng_chance(g, f->step_prob);

  if (step) {
    sim_clock_step(c, now_ms, draw_offset(f, g) - sim_clock_offset(c, now_ms));
  }
  sim_clock_start(c, now_ms);
  return step;
}

uint64_t sim_clock_wall(const sim_clock *c, uint64_t now_ms) {
  return (uint64_t)((int64_t)(SIM_WALL_EPOCH_MS + now_ms) +
                    sim_clock_offset(c, now_ms));
}

uint64_t sim_clock_mono(const sim_clock *c, uint64_t now_ms) {
  uint64_t elapsed = now_ms - c->started_ms;

  assert(now_ms >= c->started_ms && elapsed < ELAPSED_MAX_MS);
  return c->started_ms + elapsed * (uint64_t)(PPM + c->drift_ppm) / PPM;
}

uint64_t sim_clock_due(const sim_clock *c, uint64_t mono_ms) {
  uint64_t rate = (uint64_t)(PPM + c->drift_ppm), ahead;

  if (mono_ms <= c->started_ms) {
    return c->started_ms;
  }
  ahead = mono_ms - c->started_ms;
  if (ahead >= ELAPSED_MAX_MS) {
    return UINT64_MAX;
  }
  return c->started_ms + (ahead * PPM + rate - 1) / rate;
}
