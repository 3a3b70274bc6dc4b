/*
 * sim_main.c: the dht-sim command line. One table of options drives the
 * parser, --help, and the replay command a failing run prints, so the three
 * can never disagree.
 */
/* write(2) for the crash handler. */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sim.h"
#include "sim_clock.h"

enum {
  MODE_RUN = 1 << 0,
  MODE_SEEDS = 1 << 1,
  MODE_PATH = 1 << 2,
  MODE_FAILURES = 1 << 3,
  MODE_KEYS = 1 << 4,
  MODE_PDF = 1 << 5,
  MODE_VNODES = 1 << 6,
  MODE_SCENARIOS = 1 << 7,
  MODE_CRASHES = 1 << 8,
  MODE_BURST = 1 << 9,
  MODE_SWEEP = 1 << 10,
  MODE_CHURN = 1 << 11,
};
#define MODES_RUNNING (MODE_RUN | MODE_SEEDS)
#define MODES_CRASHING (MODE_CRASHES | MODE_BURST)
#define MODES_RINGS (MODES_RUNNING | MODES_CRASHING)
#define MODES_DISK_FAULTS (MODES_RUNNING | MODE_CRASHES)
#define MODES_EXPERIMENTS                                                      \
  (MODE_PATH | MODE_FAILURES | MODE_KEYS | MODE_PDF | MODE_VNODES | MODE_CHURN)

typedef struct mode_spec {
  const char *name;
  unsigned bit;
  const char *help;
} mode_spec;

static const mode_spec modes[] = {
    {"run", MODE_RUN,
     "one run: build a ring by joins, faults, heal, require convergence,\n"
     "                 check lookups and keys; prints a report, exit status 1\n"
     "                 on failure. Faults, drawn per seed: crashes (process:\n"
     "                 connections reset; host: silent), restarts, fresh\n"
     "                 joins, lost segments (a stream waits for the\n"
     "                 retransmission), slow frames, cuts (a group or one\n"
     "                 node, both ways or one way, overlapping; bytes held,\n"
     "                 not dropped), clogged paths, process pauses (one node\n"
     "                 or two neighbours), small socket buffers and out\n"
     "                 queues (back-pressure, drops), short idle closes"},
    {"seeds", MODE_SEEDS,
     "runs seeds --seed .. --seed + --count - 1, one line each; a failing\n"
     "                 seed prints its report and the command that replays it"},
    {"crashes", MODE_CRASHES,
     "seeds --seed .. --seed + --count - 1: one change every\n"
     "                 --crash-gap-ms (a crash, a restart on the old or a\n"
     "                 wiped disk, a reboot, a join, a graceful leave, a\n"
     "                 crash during a leave) under puts, deletes and gets,\n"
     "                 disks failing and clocks off as drawn; no\n"
     "                 acknowledged write may be lost, no get may return a\n"
     "                 value older than the last write acknowledged before\n"
     "                 it started (unless fault points made live peers\n"
     "                 look dead meanwhile), and R copies must be back\n"
     "                 before the next change"},
    {"burst", MODE_BURST,
     "seeds --seed .. --seed + --count - 1: k nodes crash at once\n"
     "                 (adjacent or anywhere; any six seeds in a row cover\n"
     "                 k = 2, 3, 4 both ways); exactly the keys that had\n"
     "                 every copy on them are lost, every other key is back\n"
     "                 on its R holders"},
    {"scenarios", MODE_SCENARIOS,
     "scripted regression cases (a successor crashing as a node joins, a\n"
     "                 long partition, two rings that no table links, an\n"
     "                 owner's clock stepping back, a node\n"
     "                 cut off with a dead bootstrap, a full disk, disk\n"
     "                 errors, a wiped restart, a leave, a crash during a\n"
     "                 leave, drifting clocks, a replica's clock beyond the\n"
     "                 tombstone grace, one-way and overlapping cuts, a\n"
     "                 clogged node, a put held by a short cut, paused\n"
     "                 neighbours, idle closes during a pause, a process\n"
     "                 crash's resets, slower paths, a paused relay's late\n"
     "                 put; one per fault point of the core: waits cut\n"
     "                 short, replies held back, record writes failing,\n"
     "                 requests sent twice); each must end in a converged\n"
     "                 ring with its writes; cases marked as known core\n"
     "                 bugs must fail"},
    {"sweep", MODE_SWEEP,
     "fresh seeds for --minutes, --jobs at a time, each in a process of\n"
     "                 its own: seeds, crashes, burst and scenarios in turn,\n"
     "                 at the sizes CI runs them; prints each failure's\n"
     "                 report and replay command, exit status 1 if any"},
    {"path-length", MODE_PATH,
     "CSV: lookup hops on oracle-routed rings of 2^bits-min .. 2^bits-max\n"
     "                 nodes"},
    {"failures", MODE_FAILURES,
     "CSV: failed lookups right after 10..50% of --ring-size nodes fail,\n"
     "                 maintenance frozen; succ lists of 2 and 2*log2(N),\n"
     "                 three routing configurations"},
    {"keys-per-node", MODE_KEYS,
     "CSV: keys per node (mean, 1st, 99th percentile), 10^5..10^6 keys"},
    {"keys-pdf", MODE_PDF, "CSV: distribution of keys per node, 5*10^5 keys"},
    {"virtual-nodes", MODE_VNODES,
     "CSV: keys per real node with 1, 2, 5, 10, 20 virtual ids, 10^6 keys"},
    {"churn-lookups", MODE_CHURN,
     "CSV: failed lookups while nodes join and fail at R = 0.05..0.4\n"
     "                 a second, stabilization every 30 s (the paper's\n"
     "                 time run 60 times faster on the default settings;\n"
     "                 then every maintenance interval times 60), live\n"
     "                 protocol, --ring-size 500 by default"},
};

typedef struct option_spec {
  const char *name; /* "--seed" */
  const char *arg;  /* the argument's name in --help; NULL for a flag */
  size_t offset;    /* of the field in sim_options */
  unsigned width;   /* 32 or 64 bits */
  unsigned modes;   /* MODE_* bits it applies to */
  const char *help; /* one line */
} option_spec;

#define OPT32(name, arg, field, modes, help)                                   \
  { name, arg, offsetof(sim_options, field), 32, modes, help }
#define OPT64(name, arg, field, modes, help)                                   \
  { name, arg, offsetof(sim_options, field), 64, modes, help }

static const option_spec options[] = {
    OPT64("--seed", "N", seed,
          MODES_RINGS | MODE_SCENARIOS | MODES_EXPERIMENTS | MODE_SWEEP,
          "the seed (seeds, crashes, burst, sweep: the first one; sweep:\n"
          "                         by default, or 0, one above a million\n"
          "                         drawn from the clock; keys-*,\n"
          "                         virtual-nodes: seed s names nodes and\n"
          "                         keys from (s - 1) * count on)"),
    OPT64("--count", "N", count, MODE_SEEDS | MODES_CRASHING,
          "number of seeds to run"),
    OPT32(
        "--nodes", "N", nodes, MODES_RINGS,
        "initial ring size; 0: drawn from the seed in [nodes-min, nodes-max]"),
    OPT32("--nodes-min", "N", nodes_min, MODES_RINGS, "smallest drawn ring"),
    OPT32("--nodes-max", "N", nodes_max, MODES_RINGS, "largest drawn ring"),
    OPT32("--succ-list-len", "N", succ_list_len, MODES_RINGS,
          "successors per node; 0: drawn from the seed in 2..6 (at least\n"
          "                         replicas - 1)"),
    OPT32("--replicas", "N", replicas, MODES_RINGS | MODE_SCENARIOS,
          "copies of each key (settings.replicas); 0: drawn from the seed\n"
          "                         in 2..4 (scenarios: the core's default)"),
    OPT32("--rpc-timeout-ms", "MS", rpc_timeout_ms, MODES_RINGS,
          "settings.rpc_timeout_ms; 0: drawn from the seed in 200..1000"),
    OPT32("--sync-interval-ms", "MS", sync_interval_ms, MODES_RINGS,
          "settings.sync_interval_ms (anti-entropy); 0: drawn from the\n"
          "                         seed in 500..2000"),
    OPT32("--tombstone-grace-ms", "MS", tombstone_grace_ms, MODES_RINGS,
          "settings.tombstone_grace_ms; 0: drawn from the seed in\n"
          "                         30 s..1 h"),
    OPT32("--core-replicas", "N", core_replicas, MODES_RINGS | MODE_SCENARIOS,
          "settings.replicas given to the nodes, when it should differ\n"
          "                         from --replicas, which the checks expect\n"
          "                         (shows them catch a core that keeps fewer\n"
          "                         copies); 0: the same"),
    OPT32("--repair-ms", "MS", repair_ms, MODES_RINGS,
          "anti-entropy must restore R copies within this once the ring\n"
          "                         has converged (burst: after the crash)"),
    OPT32("--no-faults", NULL, no_faults, MODES_RUNNING,
          "skip the fault phase"),
    OPT32("--fault-ms", "MS", fault_ms, MODES_RUNNING,
          "fault phase length; 0: drawn from the seed in 20 s ..\n"
          "                         fault-ms-max"),
    OPT32("--fault-ms-max", "MS", fault_ms_max, MODES_RUNNING,
          "longest drawn fault phase"),
    OPT32("--partition-ms-max", "MS", partition_ms_max, MODES_RUNNING,
          "longest cut (lengths are log-uniform from 200 ms)"),
    OPT32("--pause-ms-max", "MS", pause_ms_max, MODES_RUNNING,
          "longest process pause (log-uniform from 100 ms)"),
    OPT32("--non-tcp-loss", "PPM", non_tcp_loss_ppm, MODES_RUNNING,
          "NOT TCP: during the faults, frames vanish from their\n"
          "                         connection, per million"),
    OPT32("--non-tcp-dup", "PPM", non_tcp_dup_ppm, MODES_RUNNING,
          "NOT TCP: during the faults, frames arrive twice, per million"),
    OPT32("--disable-faults", "MASK", disable_faults, MODES_RUNNING,
          "fault kinds left out, to narrow a failure down: 1 crashes,\n"
          "                         2 fresh joins, 4 cuts, 8 clogs, 16 pauses,\n"
          "                         32 lost segments and slow frames"),
    OPT32(
        "--join-gap-ms", "MS", join_gap_ms, MODES_RUNNING,
        "mean gap between joins while building the ring (above 1000\n"
        "                         nodes it shrinks in proportion to the ring)"),
    OPT32("--converge-ms", "MS", converge_ms, MODES_RINGS,
          "convergence must happen within this after build and heal"),
    OPT32("--lookups", "N", lookups, MODES_RUNNING,
          "lookups checked on the healed ring"),
    OPT32("--upkeep-ms", "MS", upkeep_ms, MODE_RUN,
          "once the ring is built, measure the bytes its nodes send at\n"
          "                         rest over this, by message class (0: not)"),
    OPT32("--keys", "N", keys, MODES_RUNNING,
          "fresh keys put and read back on the healed ring"),
    OPT32("--reads", "N", reads, MODES_RUNNING,
          "gets of each fresh key from random nodes"),
    OPT32("--prefault-keys", "N", prefault_keys, MODES_RUNNING,
          "keys put before the faults and checked after"),
    OPT32("--workload-keys", "N", workload_keys, MODES_CRASHING,
          "keys the client puts (crashes: and overwrites) and gets"),
    OPT32("--crashes", "N", crashes, MODE_CRASHES,
          "nodes crashed one after another"),
    OPT32("--crash-gap-ms", "MS", crash_gap_ms, MODE_CRASHES,
          "time between two changes (a crash, a restart or a reboot);\n"
          "                         repair must be over within it"),
    OPT32("--max-clock-skew-ms", "MS", max_clock_skew_ms, MODES_RINGS,
          "the skew bound: a quarter of the seeds keep exact clocks,\n"
          "                         half keep any two hosts' clocks within\n"
          "                         it (offsets, drift, steps at restarts),\n"
          "                         a quarter put some up to 3 times beyond"),
    OPT32("--clock-skew-ms", "MS", clock_skew_ms, MODES_RINGS,
          "every host's wall clock is off by up to this either way,\n"
          "                         stepped at some restarts; 0: drawn"),
    OPT32("--clock-drift-ppm", "N", clock_drift_ppm, MODES_RINGS,
          "host clocks (timers too) run fast or slow by up to N\n"
          "                         millionths; 0: drawn"),
    OPT32("--no-clock-faults", NULL, no_clock_faults, MODES_RINGS,
          "every host's clock is exact"),
    OPT32("--disk-error-ppm", "N", disk_error_ppm, MODES_DISK_FAULTS,
          "while faults are on, N in a million disk reads and writes fail\n"
          "                         (EIO); 0: drawn (none for a third of the\n"
          "                         seeds)"),
    OPT32("--commit-fail-ppm", "N", commit_fail_ppm, MODES_DISK_FAULTS,
          "...and N in a million commits fail (ENOSPC: the group of\n"
          "                         writes is lost, nothing of the call\n"
          "                         leaves); disks also fill up for up to\n"
          "                         3 s at a drawn rate; 0: drawn"),
    OPT32("--no-disk-faults", NULL, no_disk_faults, MODES_DISK_FAULTS,
          "disks never fail (the next three together)"),
    OPT32("--no-eio", NULL, no_eio, MODES_DISK_FAULTS,
          "no EIO on disk reads and writes"),
    OPT32("--no-failed-commits", NULL, no_failed_commits, MODES_DISK_FAULTS,
          "commits fail only on a full disk"),
    OPT32("--no-full-disks", NULL, no_full_disks, MODES_DISK_FAULTS,
          "disks never fill up"),
    OPT32("--buggify", "MASK", buggify, MODES_RINGS,
          "the core's fault points that act while faults are on (burst:\n"
          "                         while the survivors repair), instead of\n"
          "                         as drawn (each on for a quarter of the\n"
          "                         seeds, firing at 0.1..10%):\n"
          "                         1 timeout-short (a request's wait cut to\n"
          "                         an eighth), 2 reply-delayed (a reply held\n"
          "                         up to two rpc timeouts), 4 store-put (a\n"
          "                         record write fails: DHT_ERR_STORE),\n"
          "                         8 send-twice (a request sent twice);\n"
          "                         0: drawn"),
    OPT32("--buggify-ppm", "N", buggify_ppm, MODES_RINGS,
          "the fault points that are on fire N in a million times the\n"
          "                         core asks; 0: drawn per seed"),
    OPT32("--no-buggify", NULL, no_buggify, MODES_RINGS,
          "every fault point of the core off"),
    OPT32("--burst-k", "K", burst_k, MODE_BURST,
          "nodes crashed at once; 0: 2 + seed % 3"),
    OPT32("--burst-layout", "N", burst_layout, MODE_BURST,
          "1: adjacent on the ring, 2: anywhere; 0: adjacent when\n"
          "                         seed / 3 is even"),
    OPT32("--log", "LEVEL", log_level, MODES_RINGS | MODE_SCENARIOS,
          "node logs on stderr: 0 off, 1 error, 2 warn, 3 info, 4 debug"),
    OPT32("--trace", NULL, trace, MODES_RINGS, "print every event on stderr"),
    OPT32("--progress", NULL, progress, MODES_RINGS,
          "print convergence progress on stderr"),
    OPT32("--samples", "N", samples, MODE_PATH | MODE_FAILURES | MODE_CHURN,
          "lookups per data point (churn-lookups: 3600 by default)"),
    OPT32("--rounds", "N", measure_rounds, MODE_CHURN,
          "stabilization rounds a rate's lookups are spread over (after\n"
          "                         20 rounds of churn to warm up)"),
    OPT32("--rates", "N", churn_rates, MODE_CHURN,
          "the first N of the rates R = 0.05, 0.10, .. 0.40 (all 8\n"
          "                         by default)"),
    OPT32("--bits-min", "K", bits_min, MODE_PATH, "smallest ring is 2^K nodes"),
    OPT32("--bits-max", "K", bits_max, MODE_PATH, "largest ring is 2^K nodes"),
    OPT32("--minutes", "N", minutes, MODE_SWEEP,
          "start fresh seeds for this long"),
    OPT32("--jobs", "N", jobs, MODE_SWEEP, "seeds run at once, 1..64"),
    OPT32("--ring-size", "N", ring_size,
          MODE_FAILURES | MODE_KEYS | MODE_PDF | MODE_VNODES | MODE_CHURN,
          "nodes in the ring (churn-lookups: 500 by default)"),
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))
#define N_MODES (sizeof(modes) / sizeof(modes[0]))

static void options_default(sim_options *o) {
  memset(o, 0, sizeof(*o));
  o->seed = 1;
  o->count = 100;
  o->nodes_min = 16;
  o->nodes_max = 128;
  o->partition_ms_max = 30000;
  o->pause_ms_max = 30000;
  o->fault_ms_max = 60000;
  o->join_gap_ms = 50;
  o->converge_ms = 180000;
  o->lookups = 300;
  o->keys = 100;
  o->reads = 3;
  o->prefault_keys = 200;
  o->repair_ms = 30000;
  o->workload_keys = 100;
  o->crashes = 8;
  o->crash_gap_ms = 10000;
  o->max_clock_skew_ms = 10000;
  o->samples = 10000;
  o->bits_min = 4;
  o->bits_max = 14;
  o->ring_size = 1024;
  o->measure_rounds = 120;
  o->churn_rates = SIM_CHURN_RATES;
  o->minutes = 10;
  o->jobs = 2;
}

static uint64_t get_value(const sim_options *o, const option_spec *spec) {
  const char *p = (const char *)o + spec->offset;
  uint32_t v32;
  uint64_t v64;

  if (spec->width == 32) {
    memcpy(&v32, p, sizeof(v32));
    return v32;
  }
  memcpy(&v64, p, sizeof(v64));
  return v64;
}

static void set_value(sim_options *o, const option_spec *spec, uint64_t v) {
  char *p = (char *)o + spec->offset;
  uint32_t v32 = (uint32_t)v;

  if (spec->width == 32) {
    memcpy(p, &v32, sizeof(v32));
  } else {
    memcpy(p, &v, sizeof(v));
  }
}

static void usage(FILE *f) {
  sim_options d;
  size_t i, m;

  options_default(&d);
  fprintf(
      f, "usage: dht-sim MODE [OPTIONS]\n"
         "Deterministic simulator of chord-dht: many nodes in one process, a\n"
         "virtual clock, a simulated network; everything replays from --seed.\n"
         "\nmodes:\n");
  for (m = 0; m < N_MODES; m++) {
    fprintf(f, "  %-14s %s\n", modes[m].name, modes[m].help);
  }
  fprintf(f, "\noptions (default in brackets; modes they apply to):\n");
  for (i = 0; i < N_OPTIONS; i++) {
    char left[48];
    char used[96] = "";
    snprintf(left, sizeof(left), "%s%s%s", options[i].name,
             options[i].arg ? " " : "", options[i].arg ? options[i].arg : "");
    for (m = 0; m < N_MODES; m++) {
      if (options[i].modes & modes[m].bit) {
        if (used[0] != '\0') {
          strncat(used, ",", sizeof(used) - strlen(used) - 1);
        }
        strncat(used, modes[m].name, sizeof(used) - strlen(used) - 1);
      }
    }
    fprintf(f, "  %-22s %s", left, options[i].help);
    if (options[i].arg != NULL) {
      fprintf(f, " [%" PRIu64 "]", get_value(&d, &options[i]));
    }
    fprintf(f, "; %s\n", used);
  }
  fprintf(f,
          "  --help                 this text\n"
          "\nExperiments print CSV on stdout; scripts/experiments plots it.\n");
}

static int parse_number(const char *s, uint64_t max, uint64_t *out) {
  char *end;
  unsigned long long v;

  if (s == NULL || *s < '0' || *s > '9') {
    return -1;
  }
  v = strtoull(s, &end, 10);
  if (*end != '\0' || v > max) {
    return -1;
  }
  *out = v;
  return 0;
}

/* Parses argv[2..]; returns 0, or prints why and returns -1. */
static int parse_options(int argc, char **argv, unsigned mode, sim_options *o) {
  int i;

  for (i = 2; i < argc; i++) {
    const option_spec *spec = NULL;
    uint64_t v = 1;
    size_t k;
    for (k = 0; k < N_OPTIONS; k++) {
      if (strcmp(argv[i], options[k].name) == 0) {
        spec = &options[k];
      }
    }
    if (spec == NULL || !(spec->modes & mode)) {
      fprintf(stderr,
              "dht-sim: unknown option for this mode: %s (see --help)\n",
              argv[i]);
      return -1;
    }
    if (spec->arg != NULL &&
        parse_number(i + 1 < argc ? argv[i + 1] : NULL,
                     spec->width == 32 ? UINT32_MAX : UINT64_MAX, &v) != 0) {
      fprintf(stderr, "dht-sim: %s needs a number\n", spec->name);
      return -1;
    }
    i += spec->arg != NULL;
    set_value(o, spec, v);
  }
  return 0;
}

static int check_options(const sim_options *o) {
  if (o->nodes_min < 4 || o->nodes_min > o->nodes_max ||
      (o->nodes != 0 && o->nodes < 4)) {
    fprintf(stderr, "dht-sim: rings need at least 4 nodes and nodes-min <= "
                    "nodes-max\n");
    return -1;
  }
  if (o->succ_list_len > 32 || o->log_level > 4) {
    fprintf(stderr,
            "dht-sim: --succ-list-len is at most 32, --log at most 4\n");
    return -1;
  }
  if (o->replicas > 33 || o->core_replicas > 33 || o->workload_keys == 0 || o->burst_layout > 2 ||
      (o->burst_k != 0 && o->burst_k + 1 > o->nodes_min) ||
      o->clock_skew_ms > 3600000 || o->max_clock_skew_ms > 3600000) {
    fprintf(stderr, "dht-sim: need --replicas and --core-replicas <= 33, "
                    "--workload-keys >= 1, "
                    "--burst-layout <= 2, --burst-k < nodes-min, "
                    "--clock-skew-ms and --max-clock-skew-ms <= 1 hour\n");
    return -1;
  }
  if (o->clock_drift_ppm > SIM_CLOCK_DRIFT_PPM_MAX ||
      o->disk_error_ppm > 1000000 || o->commit_fail_ppm > 1000000) {
    fprintf(stderr,
            "dht-sim: need --clock-drift-ppm <= %d, --disk-error-ppm and "
            "--commit-fail-ppm <= 1000000\n",
            SIM_CLOCK_DRIFT_PPM_MAX);
    return -1;
  }
  if (o->jobs == 0 || o->jobs > 64 || o->minutes > 10080) {
    fprintf(stderr, "dht-sim: need 1 <= --jobs <= 64, --minutes <= 10080\n");
    return -1;
  }
  if (o->bits_min < 2 || o->bits_min > o->bits_max || o->bits_max > 20 ||
      o->samples == 0 || o->ring_size < 16 || o->measure_rounds == 0 ||
      o->churn_rates == 0 || o->churn_rates > SIM_CHURN_RATES) {
    fprintf(stderr,
            "dht-sim: need 2 <= bits-min <= bits-max <= 20, samples >= 1, "
            "ring-size >= 16, rounds >= 1, 1 <= rates <= %d\n",
            SIM_CHURN_RATES);
    return -1;
  }
  return 0;
}

/* Writes the command that replays o's seed in mode into buf: every option
 * of the mode not at its default, and always the seed (with --count 1 for
 * the modes that run many seeds). */
static void format_replay(char *buf, size_t len, const char *argv0,
                          const mode_spec *mode, const sim_options *o) {
  sim_options d;
  size_t i, used;

  options_default(&d);
  used = (size_t)snprintf(buf, len, "replay: %s %s", argv0, mode->name);
  for (i = 0; i < N_OPTIONS && used < len; i++) {
    uint64_t v = get_value(o, &options[i]);
    bool always = strcmp(options[i].name, "--seed") == 0;
    if (strcmp(options[i].name, "--count") == 0) {
      v = 1;
      always = true;
    }
    if (!(options[i].modes & mode->bit) ||
        (v == get_value(&d, &options[i]) && !always)) {
      continue;
    }
    if (options[i].arg == NULL) {
      used += (size_t)snprintf(buf + used, len - used, " %s", options[i].name);
    } else {
      used += (size_t)snprintf(buf + used, len - used, " %s %" PRIu64,
                               options[i].name, v);
    }
  }
  if (used < len) {
    snprintf(buf + used, len - used, "\n");
  }
}

/* The replay command of the run in progress, for the crash handler: a node
 * that asserts aborts the whole process, and the seed must still be told.
 * The only global in the simulator, because a signal handler gets nothing
 * else. */
static char crash_replay[1024];

static void on_crash(int sig) {
  static const char msg[] = "dht-sim: crashed (a signal) during the run of:\n";

  (void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
  (void)!write(STDERR_FILENO, crash_replay, strlen(crash_replay));
  signal(sig, SIG_DFL);
  raise(sig);
}

static void arm_crash_handler(const char *argv0, const mode_spec *mode,
                              const sim_options *o) {
  format_replay(crash_replay, sizeof(crash_replay), argv0, mode, o);
  signal(SIGABRT, on_crash);
  signal(SIGSEGV, on_crash);
  signal(SIGFPE, on_crash);
  signal(SIGILL, on_crash);
}

typedef void (*run_fn)(const sim_options *o, sim_run_result *result,
                       sim_text *report);

/* Runs o and prints its report (quiet: one line, the report only on
 * failure), and the replay command if it failed. */
static bool run_and_report(const sim_options *o, const char *argv0,
                           const mode_spec *mode, run_fn fn, bool quiet,
                           sim_run_result *result) {
  sim_text report;
  sim_options replay = *o;
  char line[1024];

  arm_crash_handler(argv0, mode, o);
  sim_text_init(&report);
  memset(result, 0, sizeof(*result));
  fn(o, result, &report);
  if (quiet) {
    printf("seed %" PRIu64 ": %s, %" PRIu32 " nodes, %.1f s virtual, digest "
           "%016" PRIx64 "%s%s\n",
           o->seed, result->passed ? "PASS" : "FAIL", result->nodes,
           (double)result->virtual_ms / 1000.0, result->digest,
           result->summary[0] != '\0' ? "; " : "", result->summary);
  }
  if (!quiet || !result->passed) {
    sim_text_write(&report, stdout);
  }
  if (!result->passed) {
    replay.nodes = result->nodes;
    if (result->drawn.replicas != 0) {
      replay.succ_list_len = result->drawn.succ_list_len;
      replay.replicas = result->drawn.replicas;
      replay.rpc_timeout_ms = result->drawn.rpc_timeout_ms;
      replay.sync_interval_ms = result->drawn.sync_interval_ms;
      replay.tombstone_grace_ms = result->drawn.tombstone_grace_ms;
    }
    format_replay(line, sizeof(line), argv0, mode, &replay);
    fputs(line, stdout);
  }
  fflush(stdout);
  sim_text_free(&report);
  return result->passed;
}

static int mode_run(const sim_options *o, const char *argv0,
                    const mode_spec *mode) {
  sim_run_result result;

  return run_and_report(o, argv0, mode, sim_run, false, &result) ? 0 : 1;
}

/* Runs seeds o->seed .. o->seed + o->count - 1, one line each. */
static int mode_seeds(const sim_options *o, const char *argv0,
                      const mode_spec *mode, run_fn fn) {
  uint64_t failed = 0, lost = 0, expect_lost = 0;
  sim_run_result result;
  uint64_t i;

  for (i = 0; i < o->count; i++) {
    sim_options one = *o;
    one.seed = o->seed + i;
    /* One seed (a replay) prints its whole report. */
    failed += !run_and_report(&one, argv0, mode, fn, o->count > 1, &result);
    lost += result.lost;
    expect_lost += result.expect_lost;
  }
  printf("%s %" PRIu64 "..%" PRIu64 ": %" PRIu64 " passed, %" PRIu64
         " failed",
         mode->bit == MODE_RUN ? "seeds" : mode->name, o->seed,
         o->seed + o->count - 1, o->count - failed, failed);
  if (mode->bit == MODE_BURST) {
    printf("; %" PRIu64 " keys lost in all, %" PRIu64
           " had every copy on crashed nodes",
           lost, expect_lost);
  } else if (mode->bit == MODE_RUN) {
    printf("; %" PRIu64 " kept keys lost with nodes that stay down", lost);
  }
  printf("\n");
  return failed == 0 ? 0 : 1;
}

/*
 * Every node is cold in the cache when its event comes, and at 10^5 nodes
 * the heap spans gigabytes, so with 4 KiB pages nearly every access misses
 * the TLB too. glibc backs malloc with transparent huge pages only when
 * told so at start (its glibc.malloc.hugetlb tunable), so dht-sim runs
 * itself again once with it set: the same events and digests, 18% less CPU
 * at 10,000 nodes (docs/EXPERIMENTS.md, "Simulator scale"). Not under a
 * preloaded tool (valgrind's LD_PRELOAD would follow into a process it does
 * not run), nor when GLIBC_TUNABLES already says (hugetlb=0 turns it off).
 */
static void run_on_huge_pages(char **argv) {
  static const char tunable[] = "glibc.malloc.hugetlb";
  const char *tunables = getenv("GLIBC_TUNABLES");
  char value[1024];

  if (getenv("LD_PRELOAD") != NULL ||
      (tunables != NULL && strstr(tunables, tunable) != NULL)) {
    return;
  }
  if (tunables == NULL || tunables[0] == '\0') {
    snprintf(value, sizeof(value), "%s=1", tunable);
  } else if ((size_t)snprintf(value, sizeof(value), "%s:%s=1", tunables,
                              tunable) >= sizeof(value)) {
    return;
  }
  if (setenv("GLIBC_TUNABLES", value, 1) == 0) {
    execv("/proc/self/exe", argv); /* returns only when it failed */
  }
}

int main(int argc, char **argv) {
  sim_options o;
  const mode_spec *spec = NULL;
  unsigned mode = 0;
  size_t m;
  int i;

  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  run_on_huge_pages(argv);
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      usage(stdout);
      return 0;
    }
  }
  for (m = 0; m < N_MODES; m++) {
    if (strcmp(argv[1], modes[m].name) == 0) {
      mode = modes[m].bit;
      spec = &modes[m];
    }
  }
  if (mode == 0) {
    fprintf(stderr, "dht-sim: unknown mode %s (see --help)\n", argv[1]);
    return 2;
  }
  options_default(&o);
  if (mode == MODE_SWEEP) {
    o.seed = 0; /* fresh seeds unless told */
  }
  if (mode == MODE_CHURN) {
    /* The paper's ring, and one lookup per second of the paper's time
     * (120 rounds of 30 s: an hour). */
    o.ring_size = 500;
    o.samples = 3600;
  }
  if (parse_options(argc, argv, mode, &o) != 0 || check_options(&o) != 0) {
    return 2;
  }
  switch (mode) {
  case MODE_RUN:
    return mode_run(&o, argv[0], spec);
  case MODE_SEEDS:
    return mode_seeds(&o, argv[0], &modes[0], sim_run);
  case MODE_CRASHES:
    return mode_seeds(&o, argv[0], spec, sim_crashes_run);
  case MODE_BURST:
    return mode_seeds(&o, argv[0], spec, sim_burst_run);
  case MODE_SCENARIOS:
    return sim_scenarios(&o);
  case MODE_SWEEP:
    if (o.seed == 0) {
      o.seed = 1000000 + (uint64_t)time(NULL) % 1000000000;
    }
    return sim_sweep(&o);
  case MODE_PATH:
    return sim_exp_path_length(&o);
  case MODE_FAILURES:
    return sim_exp_failures(&o);
  case MODE_KEYS:
    return sim_exp_keys_per_node(&o);
  case MODE_PDF:
    return sim_exp_keys_pdf(&o);
  case MODE_CHURN:
    return sim_exp_churn_lookups(&o);
  default:
    return sim_exp_virtual_nodes(&o);
  }
}
