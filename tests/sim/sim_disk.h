/*
 * sim_disk.h: a node's simulated disk, which can fail.
 *
 * It is a dht_store for the node, made like the daemon's LMDB store: writes
 * join a group that dht-sim commits where dhtd commits (after each call
 * into the node, before any of the node's output leaves), reads see the
 * writes not yet committed, and a crash loses them. Beneath it is a memory
 * store, its contents, which the simulator's checks read directly: they see
 * neither the injected faults nor anything the node cannot see.
 *
 * Faults, at rates the world sets (drawn from the seed), each draw from the
 * world's disk stream:
 *   - EIO: a get or scan fails, or a put or remove fails, with
 *     DHT_ERR_STORE, changing nothing;
 *   - ENOSPC: a commit with writes pending fails with DHT_ERR_DISK_FULL, and
 *     the group is rolled back (LMDB discards the group's transaction); a
 *     disk set full fails every such commit until space returns.
 * A commit with nothing pending always succeeds, as in LMDB.
 *
 * It also checks, at every write, that no record is replaced by an older
 * version of its key: whatever merges copies must keep the newer one, so a
 * write that loses to the record it would replace is a bug wherever it
 * comes from. The first such write is described in env->regression for the
 * world to report (the write still happens, so the run shows its effects).
 */
#ifndef SIM_DISK_H
#define SIM_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/store.h"
#include "sim_rng.h"

/* Probabilities of the injected faults; all zero means a perfect disk. */
typedef struct sim_disk_faults {
  double read_error;   /* a get or scan fails (EIO) */
  double write_error;  /* a put or remove fails (EIO) */
  double commit_error; /* a commit with writes pending fails (ENOSPC) */
} sim_disk_faults;

/* What every disk of a world shares: the fault rates, the generator the
 * faults are drawn from, and the totals for the report. */
typedef struct sim_disk_env {
  sim_disk_faults faults;  /* the rates in force */
  sim_rng rng;             /* fault draws */
  uint64_t commits;        /* commits with writes pending that succeeded */
  uint64_t commits_failed; /* ...that failed: their groups were lost */
  uint64_t writes_lost;    /* writes rolled back by failed commits and
                              crashes */
  uint64_t read_errors;    /* injected EIO on get and scan */
  uint64_t write_errors;   /* injected EIO on put and remove */
  uint64_t wipes;          /* disks wiped (sim_disk_wipe) */
  char regression[256];    /* the first write that replaced a record by an
                              older version, "" while there is none */
} sim_disk_env;

typedef struct sim_disk sim_disk;

/* An empty disk whose faults come from env (borrowed: it must outlive the
 * disk). Aborts when out of memory: the simulator cannot go on. */
sim_disk *sim_disk_new(sim_disk_env *env);
/* Frees the disk and its contents; NULL is a no-op. */
void sim_disk_del(sim_disk *d);
/* Asks for the memory sim_disk_commit reads, ahead of the call. */
void sim_disk_prefetch(const sim_disk *d);

/* The store to give the node (dht_node_config.store). */
dht_store *sim_disk_store(sim_disk *d);
/* Its contents, every write included, for the checks; valid until the
 * next sim_disk_wipe(). */
dht_store *sim_disk_contents(sim_disk *d);

/* Commits the pending group: 0, or DHT_ERR_DISK_FULL when the group was
 * rolled back (injected, or the disk is full). */
int sim_disk_commit(sim_disk *d);
/* The process died: the pending group is lost. */
void sim_disk_crash(sim_disk *d);
/* Replaces the contents by an empty store (the host came back with a new
 * or reformatted disk). */
void sim_disk_wipe(sim_disk *d);
/* While full, every commit with writes pending fails. */
void sim_disk_set_full(sim_disk *d, bool full);

#endif /* SIM_DISK_H */
