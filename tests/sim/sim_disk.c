/*
 * sim_disk.c: the simulated disk (see sim_disk.h).
 *
 * The contents are one memory store that every write goes to at once, so
 * the node reads its own pending writes as it would from LMDB's open
 * transaction. Each write of the pending group first saves what it
 * replaces in an undo log; a commit forgets the log, and a rollback (a
 * failed commit, a crash) replays it backwards, which leaves the contents
 * exactly as the last commit left them. Groups are one call into a node:
 * a few records, a hand-off batch at most.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/node.h"
#include "sim_disk.h"

/* What one write of the pending group replaced. */
typedef struct undo_entry {
  dht_id key_id;    /* the key written */
  uint8_t *key;     /* its bytes (owned) */
  size_t key_len;   /* bytes in key */
  bool existed;     /* the key had a record before the write... */
  uint8_t *old;     /* ...these bytes (owned; NULL when it had none) */
  size_t old_len;   /* bytes in old */
} undo_entry;

struct sim_disk {
  dht_store base;       /* must stay first: dht_store pointers are cast back */
  sim_disk_env *env;    /* fault rates, draws and totals (borrowed) */
  dht_store *contents;  /* every write, committed or pending */
  undo_entry *undo;     /* the pending group, oldest first */
  size_t n_undo;        /* writes pending */
  size_t cap_undo;      /* entries allocated in undo */
  bool full;            /* no space: commits with writes pending fail */
  const char *errmsg;   /* why the last failing call failed, "" if none */
};

static const dht_store_ops disk_ops;

static sim_disk *disk_of(dht_store *st) { return (sim_disk *)st; }

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);

  if (p == NULL) {
    fprintf(stderr, "dht-sim: out of memory (disk)\n");
    abort();
  }
  return p;
}

static uint8_t *dup_bytes(const uint8_t *p, size_t len) {
  uint8_t *q = xmalloc(len);

  if (len > 0) {
    memcpy(q, p, len);
  }
  return q;
}

/* True when an injected fault with probability p happens now. */
static bool fault(sim_disk *d, double p) {
  return p > 0 && sim_rng_chance(&d->env->rng, p);
}

/* An injected EIO: counted in *count, said by errmsg. */
static int io_error(sim_disk *d, uint64_t *count) {
  (*count)++;
  d->errmsg = "injected I/O error";
  return DHT_ERR_STORE;
}

/* Saves what a write of key is about to replace. */
static void save_undo(sim_disk *d, const dht_id *key_id, const uint8_t *key,
                      size_t key_len) {
  const uint8_t *old;
  size_t old_len;
  undo_entry *u;

  if (d->n_undo == d->cap_undo) {
    d->cap_undo = d->cap_undo ? 2 * d->cap_undo : 16;
    d->undo = realloc(d->undo, d->cap_undo * sizeof(*d->undo));
    if (d->undo == NULL) {
      fprintf(stderr, "dht-sim: out of memory (disk)\n");
      abort();
    }
  }
  u = &d->undo[d->n_undo++];
  u->key_id = *key_id;
  u->key = dup_bytes(key, key_len);
  u->key_len = key_len;
  u->existed =
      dht_store_get(d->contents, key_id, key, key_len, &old, &old_len) == 0;
  u->old = u->existed ? dup_bytes(old, old_len) : NULL;
  u->old_len = u->existed ? old_len : 0;
}

/* Notes the first write that replaces a record by an older version of its
 * key (see sim_disk.h); u is the write's undo entry, which holds what it
 * replaces. */
static void check_not_older(sim_disk *d, const undo_entry *u,
                            const uint8_t *value, size_t value_len) {
  dht_kv was, now;

  if (!u->existed || d->env->regression[0] != '\0') {
    return;
  }
  memset(&was, 0, sizeof(was));
  memset(&now, 0, sizeof(now));
  dht_record_parse(u->old, u->old_len, &was);
  dht_record_parse(value, value_len, &now);
  if (dht_version_cmp(&now.version, &was.version) < 0) {
    snprintf(d->env->regression, sizeof(d->env->regression),
             "key %.*s: its %s of stamp %" PRIu64
             " was replaced by an older %s of stamp %" PRIu64,
             (int)(u->key_len < 64 ? u->key_len : 64), (const char *)u->key,
             was.tombstone ? "tombstone" : "value", was.version.hlc,
             now.tombstone ? "tombstone" : "value", now.version.hlc);
  }
}

static void free_undo(sim_disk *d) {
  size_t i;

  for (i = 0; i < d->n_undo; i++) {
    free(d->undo[i].key);
    free(d->undo[i].old);
  }
  d->n_undo = 0;
}

/* Puts the contents back as the last commit left them. */
static void roll_back(sim_disk *d) {
  size_t i = d->n_undo;

  d->env->writes_lost += d->n_undo;
  while (i-- > 0) {
    const undo_entry *u = &d->undo[i];
    if (u->existed) {
      if (dht_store_put(d->contents, &u->key_id, u->key, u->key_len, u->old,
                        u->old_len) != 0) {
        fprintf(stderr, "dht-sim: out of memory (disk rollback)\n");
        abort();
      }
    } else {
      (void)dht_store_remove(d->contents, &u->key_id, u->key, u->key_len);
    }
  }
  free_undo(d);
}

static int disk_get(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len, const uint8_t **value, size_t *value_len) {
  sim_disk *d = disk_of(st);

  if (fault(d, d->env->faults.read_error)) {
    return io_error(d, &d->env->read_errors);
  }
  return dht_store_get(d->contents, key_id, key, key_len, value, value_len);
}

static int disk_put(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len, const uint8_t *value, size_t value_len) {
  sim_disk *d = disk_of(st);
  int rv;

  if (fault(d, d->env->faults.write_error)) {
    return io_error(d, &d->env->write_errors);
  }
  save_undo(d, key_id, key, key_len);
  check_not_older(d, &d->undo[d->n_undo - 1], value, value_len);
  rv = dht_store_put(d->contents, key_id, key, key_len, value, value_len);
  if (rv != 0) {
    fprintf(stderr, "dht-sim: out of memory (disk)\n");
    abort();
  }
  return 0;
}

static int disk_del(dht_store *st, const dht_id *key_id, const uint8_t *key,
                    size_t key_len) {
  sim_disk *d = disk_of(st);
  const uint8_t *old;
  size_t old_len;

  if (fault(d, d->env->faults.write_error)) {
    return io_error(d, &d->env->write_errors);
  }
  /* A delete of a missing key writes nothing, as in LMDB. */
  if (dht_store_get(d->contents, key_id, key, key_len, &old, &old_len) != 0) {
    return DHT_ERR_NOT_FOUND;
  }
  save_undo(d, key_id, key, key_len);
  return dht_store_remove(d->contents, key_id, key, key_len);
}

static int disk_scan(dht_store *st, const dht_id *from, const dht_id *to,
                     dht_store_scan_cb cb, void *ud) {
  sim_disk *d = disk_of(st);

  if (fault(d, d->env->faults.read_error)) {
    return io_error(d, &d->env->read_errors);
  }
  return dht_store_scan(d->contents, from, to, cb, ud);
}

static size_t disk_count(dht_store *st) {
  return dht_store_count(disk_of(st)->contents);
}

static void disk_del_store(dht_store *st) { sim_disk_del(disk_of(st)); }

static const char *disk_errmsg(dht_store *st) { return disk_of(st)->errmsg; }

static const dht_store_ops disk_ops = {
    .get = disk_get,
    .put = disk_put,
    .del = disk_del,
    .scan = disk_scan,
    .count = disk_count,
    .del_store = disk_del_store,
    .errmsg = disk_errmsg,
};

static dht_store *new_contents(void) {
  dht_store *st = dht_store_mem_new();

  if (st == NULL) {
    fprintf(stderr, "dht-sim: out of memory (disk)\n");
    abort();
  }
  return st;
}

sim_disk *sim_disk_new(sim_disk_env *env) {
  sim_disk *d = xmalloc(sizeof(*d));

  memset(d, 0, sizeof(*d));
  d->base.ops = &disk_ops;
  d->env = env;
  d->contents = new_contents();
  d->errmsg = "";
  return d;
}

void sim_disk_del(sim_disk *d) {
  if (d == NULL) {
    return;
  }
  free_undo(d);
  free(d->undo);
  dht_store_del(d->contents);
  free(d);
}

dht_store *sim_disk_store(sim_disk *d) { return &d->base; }

dht_store *sim_disk_contents(sim_disk *d) { return d->contents; }

int sim_disk_commit(sim_disk *d) {
  if (d->n_undo == 0) {
    return 0;
  }
  if (d->full || fault(d, d->env->faults.commit_error)) {
    d->env->commits_failed++;
    roll_back(d);
    d->errmsg = d->full ? "no space left on device" : "injected commit failure";
    return DHT_ERR_DISK_FULL;
  }
  d->env->commits++;
  free_undo(d);
  return 0;
}

void sim_disk_prefetch(const sim_disk *d) { __builtin_prefetch(&d->n_undo); }

void sim_disk_crash(sim_disk *d) { roll_back(d); }

void sim_disk_wipe(sim_disk *d) {
  d->env->wipes++;
  free_undo(d);
  dht_store_del(d->contents);
  d->contents = new_contents();
}

void sim_disk_set_full(sim_disk *d, bool full) { d->full = full; }
