/*
 * sim.h: the options of dht-sim and the entry points of its modes.
 *
 * One flat options struct serves every mode; sim_main.c owns the table that
 * parses it, documents it in --help and prints the non-default ones in a
 * replay command. A field of zero means "drawn from the seed" where its
 * comment says so: drawn values are always drawn (then overridden), so that
 * giving one explicitly replays exactly the run that drew it.
 */
#ifndef SIM_H
#define SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "sim_text.h"

typedef struct sim_options {
  /* run and seeds */
  uint64_t seed;             /* the run's seed (seeds: the first one) */
  uint64_t count;            /* seeds: how many consecutive seeds */
  uint32_t nodes;            /* ring size; 0: drawn in [nodes_min, nodes_max] */
  uint32_t nodes_min;        /* smallest drawn ring */
  uint32_t nodes_max;        /* largest drawn ring */
  uint32_t succ_list_len;    /* successors kept; 0: drawn in 2..6 */
  uint32_t rpc_timeout_ms;   /* settings.rpc_timeout_ms; 0: drawn */
  uint32_t sync_interval_ms; /* settings.sync_interval_ms; 0: drawn */
  uint32_t tombstone_grace_ms; /* settings.tombstone_grace_ms; 0: drawn */
  uint32_t max_clock_skew_ms; /* the skew bound clocks are drawn within
                                 (or beyond) */
  uint32_t clock_skew_ms;    /* host clocks off by up to this; 0: drawn */
  uint32_t clock_drift_ppm;  /* ...drifting by up to this; 0: drawn */
  uint32_t no_clock_faults;  /* 1: every clock exact */
  uint32_t disk_error_ppm;   /* EIO rate of reads and writes; 0: drawn */
  uint32_t commit_fail_ppm;  /* rate of failing commits; 0: drawn */
  uint32_t no_disk_faults;   /* 1: disks never fail */
  uint32_t no_eio;           /* 1: no EIO on reads and writes */
  uint32_t no_failed_commits; /* 1: commits fail only on a full disk */
  uint32_t no_full_disks;    /* 1: disks never fill up */
  uint32_t buggify;          /* the core's fault points on, bit 1 << point
                                (dht_fault_point); 0: drawn */
  uint32_t buggify_ppm;      /* their rate when they fire; 0: drawn */
  uint32_t no_buggify;       /* 1: every fault point off */
  uint32_t no_faults;        /* 1: skip the fault phase */
  uint32_t fault_ms;         /* fault phase length; 0: drawn in 20 s ..
                                fault_ms_max */
  uint32_t fault_ms_max;     /* longest drawn fault phase */
  uint32_t partition_ms_max; /* longest cut */
  uint32_t pause_ms_max;     /* longest process pause */
  uint32_t non_tcp_loss_ppm; /* not TCP: frames dropped, per million */
  uint32_t non_tcp_dup_ppm;  /* not TCP: frames duplicated, per million */
  uint32_t disable_faults;   /* bits of fault kinds left out (sim_run.c) */
  uint32_t join_gap_ms;      /* mean gap between joins while building */
  uint32_t converge_ms;      /* bound on convergence after build and heal */
  uint32_t lookups;          /* lookups checked on the healed ring */
  uint32_t upkeep_ms;        /* run: bytes sent at rest measured over this
                                once the ring is built (0: not measured) */
  uint32_t keys;             /* fresh keys put on the healed ring */
  uint32_t reads;            /* gets of each fresh key, from random nodes */
  uint32_t prefault_keys;    /* keys put before the faults, checked after */
  uint32_t replicas;         /* copies of each key; 0: drawn in 2..4 */
  uint32_t core_replicas;    /* settings.replicas the nodes get, when it
                                should differ from what the checks expect
                                (replicas); 0: the same */
  uint32_t repair_ms;        /* bound on anti-entropy restoring R copies
                                once the ring has converged */
  /* crashes and burst */
  uint32_t workload_keys;    /* keys the client puts and gets */
  uint32_t crashes;          /* crashes: nodes crashed one after another */
  uint32_t crash_gap_ms;     /* crashes: time between two membership
                                changes (a crash or a restart) */
  uint32_t burst_k;          /* burst: nodes crashed at once; 0: 2 + seed % 3 */
  uint32_t burst_layout;     /* burst: 1 adjacent, 2 anywhere; 0: adjacent
                                when seed / 3 is even */
  uint32_t log_level; /* node logs to stderr: 0 off, 1 error .. 4 debug */
  uint32_t trace;     /* 1: print every event to stderr */
  uint32_t progress;  /* 1: print convergence progress to stderr */
  /* experiments */
  uint32_t samples;   /* lookups per data point */
  uint32_t bits_min;  /* path-length: smallest ring is 2^bits_min */
  uint32_t bits_max;  /* path-length: largest ring is 2^bits_max */
  uint32_t ring_size; /* failures, keys-*, churn-lookups: nodes in the ring */
  uint32_t measure_rounds; /* churn-lookups: stabilization rounds a rate's
                              lookups are spread over */
  uint32_t churn_rates; /* churn-lookups: the first this many of the
                           paper's rates, 1..SIM_CHURN_RATES */
  /* sweep */
  uint32_t minutes;   /* how long to start fresh seeds for */
  uint32_t jobs;      /* seeds run at once */
} sim_options;

/* The node settings a run drew (sim_swarm.c), which its replay command
 * says. */
typedef struct sim_drawn_settings {
  uint32_t succ_list_len;      /* settings.succ_list_len */
  uint32_t replicas;           /* copies the checks expect */
  uint32_t rpc_timeout_ms;     /* settings.rpc_timeout_ms */
  uint32_t sync_interval_ms;   /* settings.sync_interval_ms */
  uint32_t tombstone_grace_ms; /* settings.tombstone_grace_ms */
} sim_drawn_settings;

/* What one run found, for the seeds mode's summary and replay line. */
typedef struct sim_run_result {
  bool passed;         /* every check held */
  uint32_t nodes;      /* the ring size actually used (maybe drawn) */
  sim_drawn_settings drawn; /* the settings it used (maybe drawn) */
  uint64_t virtual_ms; /* virtual time the run took */
  uint64_t digest;     /* hash of every event: equal across replays */
  char summary[256];   /* crashes, burst: one line of what the run did */
  uint64_t lost;       /* acknowledged keys lost (burst: with all copies
                          on crashed nodes) */
  uint64_t expect_lost; /* burst: keys whose every copy was on a crashed
                           node at the crash */
} sim_run_result;

/* One run of the phases build, faults, heal, check. Writes the report into
 * report (not the replay command: the caller knows the command line). */
void sim_run(const sim_options *o, sim_run_result *result, sim_text *report);

/* One run of sequential crashes under a workload (sim_crashes.c). */
void sim_crashes_run(const sim_options *o, sim_run_result *result,
                     sim_text *report);
/* One run of k simultaneous crashes (sim_crashes.c). */
void sim_burst_run(const sim_options *o, sim_run_result *result,
                   sim_text *report);

/* The scripted regression cases; prints one line each. Returns an exit
 * code. */
int sim_scenarios(const sim_options *o);

/* Fresh seeds from o->seed on, in every mode in turn, o->jobs at a time,
 * started for o->minutes (sim_sweep.c); prints each failure's output and
 * replay command. Returns an exit code. */
int sim_sweep(const sim_options *o);

/* Experiments: CSV on stdout, progress on stderr. Return an exit code. */
int sim_exp_path_length(const sim_options *o);
int sim_exp_failures(const sim_options *o);
int sim_exp_keys_per_node(const sim_options *o);
int sim_exp_keys_pdf(const sim_options *o);
int sim_exp_virtual_nodes(const sim_options *o);
/* churn-lookups: the paper's rates R = 0.05, 0.10, .. 0.40. */
#define SIM_CHURN_RATES 8
int sim_exp_churn_lookups(const sim_options *o);

#endif /* SIM_H */
