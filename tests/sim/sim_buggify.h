/*
 * sim_buggify.h: the simulator's answers at the core's fault points
 * (dht_fault_point in dht/node.h, FoundationDB's BUGGIFY).
 *
 * Each seed draws a plan (swarm testing): every point is on for a quarter
 * of the seeds and, when on, fires with a probability drawn per seed
 * (log-uniform, 0.1% .. 10% of the times the core asks). The plan and the
 * firings come from a stream of their own, seeded from the run's seed, so
 * that a seed whose points are all off draws nothing from it and runs
 * exactly as it did before the points existed. The points act only while
 * the run says (its fault phase); while they do not, nothing is drawn.
 */
#ifndef SIM_BUGGIFY_H
#define SIM_BUGGIFY_H

#include <stdbool.h>
#include <stdint.h>

#include "dht/node.h"
#include "sim_rng.h"
#include "sim_text.h"

typedef struct sim_buggify {
  double prob[DHT_FAULT_POINTS];     /* chance a point fires; 0: off */
  bool active;                       /* the points act now */
  sim_rng rng;                       /* the firings */
  uint64_t asked[DHT_FAULT_POINTS];  /* times the core asked while active */
  uint64_t fired[DHT_FAULT_POINTS];  /* ...and the point fired */
} sim_buggify;

/* The point's name in reports and --help ("timeout-short", ...). */
const char *sim_buggify_name(dht_fault_point point);
/* Draws the plan from seed: mask, when not 0, says which points are on
 * instead (bit 1 << point), ppm, when not 0, their rate; off turns every
 * point off. The plan is drawn the same way whatever the overrides. */
void sim_buggify_draw(sim_buggify *b, uint64_t seed, uint32_t mask,
                      uint32_t ppm, bool off);
/* Whether any point is on. */
bool sim_buggify_any(const sim_buggify *b);
/* Whether points are acting now that make live peers look dead (short
 * waits, late replies): nodes then disagree on who holds what, as across
 * a partition, and DESIGN.md promises fresh reads only once the ring is
 * quiet again. */
bool sim_buggify_views_split(const sim_buggify *b);
/* The dht_fault_fn the world gives every node; ud is the sim_buggify. */
bool sim_buggify_ask(void *ud, dht_fault_point point);
/* "buggify: ..." lines: the plan, and how often each point fired. */
void sim_buggify_report(const sim_buggify *b, sim_text *report);
void sim_buggify_report_totals(const sim_buggify *b, sim_text *report);

#endif /* SIM_BUGGIFY_H */
