/*
 * sim_swarm.c: the per-seed settings and clock and disk fault rates (see
 * sim_swarm.h).
 *
 * The ranges stay where a correct core must pass every check: successor
 * lists of 2..6, 2..4 copies (one copy could not survive a crash), rpc
 * timeouts of 200..1000 ms against a network of 1..80 ms (and a slow tail),
 * anti-entropy every 0.5..2 s so that repair stays within the crashes
 * mode's gap, and tombstones kept 30 s..1 h (log-uniform, so short graces
 * that expire during a run are common). Clocks are exact for a quarter of
 * the seeds, within the skew bound for half (offsets up to 2/5 of it each
 * way, so any two differ by 4/5 of it, and drift of at most 200 ppm: under
 * 0.1 s in a long run), beyond it for the rest (a share of the offsets up
 * to 3 times the bound, drift up to 2%). Disks fail for two thirds of the
 * seeds.
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "sim_swarm.h"

#define TOMBSTONE_GRACE_MS_MIN 30000.0
#define TOMBSTONE_GRACE_MS_MAX 3600000.0
#define DRIFT_WITHIN_PPM 200
#define DRIFT_BEYOND_PPM 20000
/* Parts per million, the unit of the rate options. */
#define PPM 1e6

void sim_swarm_draw(sim_swarm *sw, sim_rng *g, const sim_options *o) {
  uint32_t succ_list_len, replicas, rpc_timeout_ms, sync_interval_ms;
  uint32_t tombstone_grace_ms, clock_draw, disks_draw;
  double grace_u, beyond_share, beyond_mult, step_prob;
  uint32_t drift_within, drift_beyond;
  sim_disk_faults disks;
  double fills;
  dht_settings *s = &sw->settings;

  memset(sw, 0, sizeof(*sw));
  succ_list_len = (uint32_t)sim_rng_between(g, 2, 6);
  replicas = (uint32_t)sim_rng_between(g, 2, 4);
  rpc_timeout_ms = (uint32_t)sim_rng_between(g, 200, 1000);
  sync_interval_ms = (uint32_t)sim_rng_between(g, 500, 2000);
  grace_u = sim_rng_unit(g);
  tombstone_grace_ms = (uint32_t)(TOMBSTONE_GRACE_MS_MIN *
                                  pow(TOMBSTONE_GRACE_MS_MAX /
                                          TOMBSTONE_GRACE_MS_MIN,
                                      grace_u));
  clock_draw = (uint32_t)sim_rng_below(g, 4);
  beyond_share = 0.1 + 0.4 * sim_rng_unit(g);
  beyond_mult = 1.0 + 2.0 * sim_rng_unit(g);
  drift_within = (uint32_t)sim_rng_below(g, DRIFT_WITHIN_PPM + 1);
  drift_beyond = (uint32_t)sim_rng_below(g, DRIFT_BEYOND_PPM + 1);
  step_prob = 0.5 * sim_rng_unit(g);
  disks_draw = (uint32_t)sim_rng_below(g, 3);
  disks.read_error = 0.002 * sim_rng_unit(g);
  disks.write_error = 0.002 * sim_rng_unit(g);
  disks.commit_error = 0.01 * sim_rng_unit(g);
  fills = 0.1 * sim_rng_unit(g);
  sim_rng_fork(g, &sw->rng);
  /* From a stream of its own, so that g, and every draw after, is what it
   * was before the fault points existed. */
  sim_buggify_draw(&sw->buggify, o->seed, o->buggify, o->buggify_ppm,
                   o->no_buggify != 0);

  if (o->succ_list_len != 0) {
    succ_list_len = o->succ_list_len;
  }
  if (o->replicas != 0) {
    replicas = o->replicas;
  }
  if (o->rpc_timeout_ms != 0) {
    rpc_timeout_ms = o->rpc_timeout_ms;
  }
  if (o->sync_interval_ms != 0) {
    sync_interval_ms = o->sync_interval_ms;
  }
  if (o->tombstone_grace_ms != 0) {
    tombstone_grace_ms = o->tombstone_grace_ms;
  }

  sw->replicas = replicas;
  dht_settings_default(s);
  s->replicas = o->core_replicas != 0 ? o->core_replicas : replicas;
  /* A node replicates on its successors: it must keep that many. */
  s->succ_list_len = succ_list_len;
  if (s->succ_list_len + 1 < s->replicas) {
    s->succ_list_len = s->replicas - 1;
  }
  if (s->succ_list_len + 1 < replicas) {
    s->succ_list_len = replicas - 1;
  }
  s->rpc_timeout_ms = rpc_timeout_ms;
  if (s->rto_min_ms > rpc_timeout_ms) {
    s->rto_min_ms = rpc_timeout_ms;
  }
  if (s->route_timeout_ms < rpc_timeout_ms) {
    s->route_timeout_ms = rpc_timeout_ms;
  }
  s->sync_interval_ms = sync_interval_ms;
  s->tombstone_grace_ms = tombstone_grace_ms;
  s->max_clock_skew_ms = o->max_clock_skew_ms;

  sw->clock_kind = clock_draw == 0   ? SIM_CLOCKS_EXACT
                   : clock_draw == 3 ? SIM_CLOCKS_BEYOND
                                     : SIM_CLOCKS_WITHIN;
  if (sw->clock_kind != SIM_CLOCKS_EXACT) {
    sw->clocks.within_ms = o->max_clock_skew_ms * 2 / 5;
    sw->clocks.drift_ppm = drift_within;
    sw->clocks.step_prob = step_prob;
  }
  if (sw->clock_kind == SIM_CLOCKS_BEYOND) {
    sw->clocks.beyond_share = beyond_share;
    sw->clocks.beyond_ms = (uint32_t)(beyond_mult * o->max_clock_skew_ms);
    sw->clocks.drift_ppm = drift_beyond;
  }
  if (o->clock_skew_ms != 0 || o->clock_drift_ppm != 0) {
    sw->clock_kind = SIM_CLOCKS_GIVEN;
    sw->clocks.within_ms = o->clock_skew_ms;
    sw->clocks.beyond_share = 0;
    sw->clocks.beyond_ms = 0;
    sw->clocks.drift_ppm = o->clock_drift_ppm;
  }
  if (o->no_clock_faults) {
    sw->clock_kind = SIM_CLOCKS_EXACT;
    memset(&sw->clocks, 0, sizeof(sw->clocks));
  }

  if (disks_draw != 0) {
    sw->disks = disks;
    sw->disk_fills_per_s = fills;
    sw->disk_full_ms_max = 3000;
  }
  if (o->disk_error_ppm != 0) {
    sw->disks.read_error = o->disk_error_ppm / PPM;
    sw->disks.write_error = o->disk_error_ppm / PPM;
  }
  if (o->commit_fail_ppm != 0) {
    sw->disks.commit_error = o->commit_fail_ppm / PPM;
  }
  if (o->no_disk_faults || o->no_eio) {
    sw->disks.read_error = 0;
    sw->disks.write_error = 0;
  }
  if (o->no_disk_faults || o->no_failed_commits) {
    sw->disks.commit_error = 0;
  }
  if (o->no_disk_faults || o->no_full_disks) {
    sw->disk_fills_per_s = 0;
  }
}

void sim_swarm_report(const sim_swarm *sw, const sim_options *o,
                      sim_text *report) {
  const dht_settings *s = &sw->settings;
  const sim_clock_faults *c = &sw->clocks;

  sim_text_printf(report,
                  "settings: succ_list_len %" PRIu32 ", replicas %" PRIu32
                  ", rpc_timeout_ms %" PRIu32 ", sync_interval_ms %" PRIu32
                  ", tombstone_grace_ms %" PRIu32 "\n",
                  s->succ_list_len, sw->replicas, s->rpc_timeout_ms,
                  s->sync_interval_ms, s->tombstone_grace_ms);
  if (s->replicas != sw->replicas) {
    sim_text_printf(report,
                    "core-replicas: the nodes keep %" PRIu32
                    " copies of each key, the checks expect %" PRIu32 "\n",
                    s->replicas, sw->replicas);
  }
  switch (sw->clock_kind) {
  case SIM_CLOCKS_EXACT:
    sim_text_printf(report, "clocks: exact\n");
    break;
  case SIM_CLOCKS_WITHIN:
  case SIM_CLOCKS_GIVEN:
    sim_text_printf(report,
                    "clocks: %s the %.1f s skew bound: off by up to %.1f s, "
                    "drift up to %" PRIu32 " ppm; %.0f%% of restarts step "
                    "the clock\n",
                    sw->clock_kind == SIM_CLOCKS_GIVEN ? "as given, with"
                                                       : "within",
                    o->max_clock_skew_ms / 1000.0, c->within_ms / 1000.0,
                    c->drift_ppm, 100 * c->step_prob);
    break;
  case SIM_CLOCKS_BEYOND:
    sim_text_printf(report,
                    "clocks: beyond the %.1f s skew bound: off by up to "
                    "%.1f s, %.0f%% of them by up to %.1f s, drift up to "
                    "%" PRIu32 " ppm; %.0f%% of restarts step the clock\n",
                    o->max_clock_skew_ms / 1000.0, c->within_ms / 1000.0,
                    100 * c->beyond_share, c->beyond_ms / 1000.0,
                    c->drift_ppm, 100 * c->step_prob);
    break;
  }
  if (sw->disks.read_error == 0 && sw->disks.write_error == 0 &&
      sw->disks.commit_error == 0 && sw->disk_fills_per_s == 0) {
    sim_text_printf(report, "disks: no faults\n");
  } else {
    sim_text_printf(report,
                    "disks: EIO on %.3f%% of reads and %.3f%% of writes, "
                    "%.3f%% of commits fail, %.1f disks fill up a minute "
                    "(for up to %.1f s)\n",
                    100 * sw->disks.read_error, 100 * sw->disks.write_error,
                    100 * sw->disks.commit_error, 60 * sw->disk_fills_per_s,
                    sw->disk_full_ms_max / 1000.0);
  }
  sim_buggify_report(&sw->buggify, report);
}

void sim_swarm_drawn(const sim_swarm *sw, sim_drawn_settings *out) {
  out->succ_list_len = sw->settings.succ_list_len;
  out->replicas = sw->replicas;
  out->rpc_timeout_ms = sw->settings.rpc_timeout_ms;
  out->sync_interval_ms = sw->settings.sync_interval_ms;
  out->tombstone_grace_ms = sw->settings.tombstone_grace_ms;
}

void sim_swarm_apply(const sim_swarm *sw, sim_world *w) {
  w->settings = sw->settings;
  w->replicas = sw->replicas;
  w->clocks = sw->clocks;
  w->buggify = sw->buggify;
}

void sim_swarm_start_disk_faults(sim_swarm *sw, sim_world *w,
                                 uint64_t fault_ms) {
  double at_ms = (double)w->now_ms;
  double end_ms = (double)(w->now_ms + fault_ms);

  w->disks.faults = sw->disks;
  if (sw->disk_fills_per_s <= 0 || w->n_nodes == 0) {
    return;
  }
  for (;;) {
    uint32_t slot;
    uint64_t full_ms;
    at_ms += sim_rng_exponential(&sw->rng, 1000.0 / sw->disk_fills_per_s);
    if (at_ms >= end_ms) {
      break;
    }
    slot = (uint32_t)sim_rng_below(&sw->rng, w->n_nodes);
    full_ms = sim_rng_between(&sw->rng, 100, sw->disk_full_ms_max);
    sim_world_fill_disk(w, slot, (uint64_t)at_ms, full_ms);
  }
}

void sim_swarm_heal_disks(sim_world *w) {
  memset(&w->disks.faults, 0, sizeof(w->disks.faults));
  sim_world_free_disks(w);
}

void sim_swarm_start_buggify(sim_world *w) { w->buggify.active = true; }

void sim_swarm_stop_buggify(sim_world *w) { w->buggify.active = false; }

void sim_swarm_report_totals(const sim_world *w, sim_text *report) {
  const sim_disk_env *d = &w->disks;

  sim_text_printf(report,
                  "disks: %" PRIu64 " commits, %" PRIu64 " failed (%" PRIu64
                  " writes lost), %" PRIu64
                  " disks full, EIO on %" PRIu64 " reads and %" PRIu64
                  " writes; %" PRIu64 " clock steps, %" PRIu64
                  " writes stamped anew after STALE; %" PRIu64
                  " leaves (%" PRIu64 " timed out)\n",
                  d->commits, d->commits_failed, d->writes_lost,
                  w->disk_fills, d->read_errors, d->write_errors,
                  w->clock_steps, w->restamps, w->leaves, w->leave_timeouts);
  sim_buggify_report_totals(&w->buggify, report);
}

bool sim_swarm_skew_refusal_possible(const sim_swarm *sw, const sim_world *w,
                                     uint64_t stamp_ms, uint64_t sent_ms,
                                     uint32_t bound_ms) {
  size_t i;

  if (sw->clock_kind != SIM_CLOCKS_BEYOND &&
      sw->clock_kind != SIM_CLOCKS_GIVEN) {
    return false;
  }
  for (i = 0; i < w->n_nodes; i++) {
    uint64_t wall_ms = sim_clock_wall(&w->nodes[i].clock, sent_ms);
    if (w->nodes[i].node != NULL && wall_ms + bound_ms < stamp_ms) {
      return true;
    }
  }
  return false;
}
