/*
 * sim_swarm.h: what each seed draws besides its ring and its network
 * faults (swarm testing): the settings every node runs with, how the
 * hosts' clocks go wrong and how the disks fail. Every mode that builds a
 * ring draws it, prints it in its report, and puts the settings in the
 * replay command of a failing seed.
 *
 * As everywhere in dht-sim, every value is always drawn, in a fixed order,
 * and an option given explicitly then overrides it: giving a drawn value
 * explicitly replays exactly the run that drew it.
 */
#ifndef SIM_SWARM_H
#define SIM_SWARM_H

#include <stdbool.h>
#include <stdint.h>

#include "dht/node.h"
#include "sim.h"
#include "sim_clock.h"
#include "sim_disk.h"
#include "sim_rng.h"
#include "sim_text.h"
#include "sim_world.h"

typedef enum sim_clock_kind {
  SIM_CLOCKS_EXACT,  /* every host's clock is right */
  SIM_CLOCKS_WITHIN, /* any two differ by less than the skew bound */
  SIM_CLOCKS_BEYOND, /* some go beyond it */
  SIM_CLOCKS_GIVEN,  /* as --clock-skew-ms and --clock-drift-ppm say */
} sim_clock_kind;

typedef struct sim_swarm {
  dht_settings settings;   /* every node's (replicas: the copies they keep) */
  uint32_t replicas;       /* copies of each key the checks expect */
  sim_clock_kind clock_kind; /* how clocks were drawn */
  sim_clock_faults clocks; /* how the hosts' clocks go wrong */
  sim_disk_faults disks;   /* how disks fail while the faults are on */
  double disk_fills_per_s; /* disks filling up (all nodes together) */
  uint32_t disk_full_ms_max; /* longest a disk stays full */
  sim_rng rng;             /* when and where disks fill up */
  sim_buggify buggify;     /* the core's fault points (sim_buggify.h) */
} sim_swarm;

/* Draws sw from g, then applies o's overrides. */
void sim_swarm_draw(sim_swarm *sw, sim_rng *g, const sim_options *o);
/* The lines of the report that say what was drawn. */
void sim_swarm_report(const sim_swarm *sw, const sim_options *o,
                      sim_text *report);
/* The drawn settings, for a replay command that says them. */
void sim_swarm_drawn(const sim_swarm *sw, sim_drawn_settings *out);

/* Gives w the settings, the checks' replicas and the clock faults: call it
 * before the first node is added. */
void sim_swarm_apply(const sim_swarm *sw, sim_world *w);
/* Turns the disk faults on for the next fault_ms, the disks filling up at
 * times and on nodes drawn from sw's own stream. */
void sim_swarm_start_disk_faults(sim_swarm *sw, sim_world *w,
                                 uint64_t fault_ms);
/* Turns them off: every disk works and has space again. */
void sim_swarm_heal_disks(sim_world *w);
/* The core's fault points act (start) or stop acting, as sw's plan says
 * (sim_swarm_apply gave the world the plan, not acting). */
void sim_swarm_start_buggify(sim_world *w);
void sim_swarm_stop_buggify(sim_world *w);
/* Whether a write stamped stamp_ms may have been refused with CLOCK_SKEW
 * by a node that judged it at sent_ms or later: a node refuses a stamp
 * further ahead of its time (or its neighbours', when both say it is
 * behind) than the skew bound, which a writer whose clock is within the
 * bound meets only where sw puts clocks beyond it, from a running node
 * whose clock was behind the stamp by more than bound_ms when the write
 * was sent (a clock's lag behind a fixed stamp only shrinks: crashes
 * --seed 797197061 was refused by a node 10.0 s behind then and 9.8 s
 * behind when the refusal was judged). */
bool sim_swarm_skew_refusal_possible(const sim_swarm *sw, const sim_world *w,
                                     uint64_t stamp_ms, uint64_t sent_ms,
                                     uint32_t bound_ms);
/* One line of what the disks, clocks and leaves did, for the report. */
void sim_swarm_report_totals(const sim_world *w, sim_text *report);

#endif /* SIM_SWARM_H */
