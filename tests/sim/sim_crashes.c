/*
 * sim_crashes.c: durability of replicated keys when nodes crash (no leave:
 * a SIGKILL'd process or a dead host, its disk kept). Two modes:
 *
 *   crashes  nodes crash one at a time, each change (a crash, the restart
 *            of a crashed node on its old disk or on a wiped one, a
 *            reboot too quick for the peers to notice, a fresh join, a
 *            graceful leave, a crash in the middle of one) spaced further
 *            apart than repair takes, while a client keeps putting,
 *            deleting and getting a set of keys, and disks fail and
 *            clocks are off as the seed draws (sim_swarm.h). After every
 *            change anti-entropy must restore R copies before the next
 *            one; no acknowledged write may ever be lost, and no get that
 *            started after a write was acknowledged may return an older
 *            value (a stale read; after a delete, any value older than
 *            it).
 *   burst    k nodes crash at the same instant, next to each other on the
 *            ring or anywhere. From the stores at that instant the
 *            simulator knows which keys had every copy on a crashed node;
 *            once the ring has healed and repair is over, exactly those are
 *            lost (they read as not found), and every other key is back on
 *            all its R holders and reads back. With k < R nothing may be
 *            lost.
 *
 * Values carry their key's write sequence number, "key#seq-tail", the
 * tail a hash of (run, key, seq), so any value read from a store or a
 * reply says which put wrote it and whether it is one the client ever
 * sent; deletes take sequence numbers too. Writes of one key are
 * sequential: the next is sent once the previous one has been answered. A
 * write that is never answered may still take effect at any time later,
 * so its key gets no more writes: then "older than the last acknowledged
 * write" always means a write whose effect was over before that one began.
 * A delete refused with an error may have taken effect too (the owner
 * writes its tombstone before it replicates), so after one the key's
 * copies are no longer checked, only its reads.
 *
 * A node down for longer than half the tombstone grace comes back on a
 * wiped disk: its old records could outlive the tombstones that delete
 * them, which the core collects after the grace, as an operator is told
 * never to bring such a disk back.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "sim.h"
#include "sim_keys.h"
#include "sim_ring.h"
#include "sim_swarm.h"
#include "sim_world.h"

#define KEY_LEN_MAX 32
#define VALUE_LEN_MAX 64
/* The client sends one request per tick while the workload runs. */
#define TICK_MS 50
/* Repair is measured to this precision. */
#define REPAIR_POLL_MS 100
/* Mean gap between joins while building a ring. */
#define BUILD_GAP_MS 50
/* Time allowed after the last client request before judging. */
#define OPS_GRACE_MS (SIM_CLIENT_TIMEOUT_MS + 1000)
/* Sequential crashes keep at least replicas + this many nodes joined. */
#define SPARE_NODES_MIN 2
#define NO_OP SIZE_MAX

/* A key of the workload. */
typedef struct wkey {
  char key[KEY_LEN_MAX];
  uint32_t next_seq;  /* the next write's sequence number (the first is 1) */
  uint32_t floor;     /* highest sequence number acknowledged; 0: none */
  bool floor_del;     /* ...and that write was a delete */
  uint64_t floor_ms;  /* when the client got that acknowledgement */
  uint32_t change_floor; /* floor as the last change began: what the
                            repair check of its gap wants back */
  bool change_floor_del; /* ...and that write was a delete */
  uint32_t last_del;  /* sequence number of the last delete sent; 0: none */
  size_t write_op;    /* op index of the write in flight, or NO_OP */
  bool retired;       /* a write went unanswered: no more writes */
  bool skew_refused;  /* a write of it was refused with CLOCK_SKEW, as
                         only an owner whose clock is beyond the bound may
                         refuse one (sim_swarm_skew_refusal_possible) */
  bool unsure;        /* a delete newer than floor may have taken effect:
                         its copies are not checked any more */
} wkey;

typedef enum client_kind { CLIENT_GET, CLIENT_PUT, CLIENT_DEL } client_kind;

/* A client request whose outcome is still to be judged. */
typedef struct client_op {
  size_t op;          /* its sim_world op index */
  uint32_t key;       /* index into keys */
  client_kind kind;   /* what it asked */
  uint32_t seq;       /* a write: its sequence number; a get: the key's
                         floor when it was sent, the oldest write it may
                         return */
  bool floor_del;     /* a get: that floor was a delete */
  uint32_t last_del;  /* the key's last delete sent before this request */
  bool views_split;   /* a get sent while fault points made live peers
                         look dead: not promised to be fresh */
} client_op;

typedef struct crash_run {
  const sim_options *o;
  sim_world w;
  sim_rng rng;         /* every choice of this file */
  sim_text *report;
  const char *phase;   /* for the failure report */
  uint32_t nodes;      /* initial ring size */
  sim_swarm draws;     /* settings, clock and disk faults (sim_swarm.h) */
  uint32_t replicas;   /* copies the checks expect (draws.replicas) */
  uint64_t *down_since_ms; /* by slot: when it went down */
  size_t down_cap;     /* slots down_since_ms covers */
  uint64_t salt;       /* mixed into every value's tail */
  wkey *keys;          /* the workload's keys */
  size_t n_keys;
  client_op *ops;      /* requests not yet judged */
  size_t n_ops, cap_ops;
  /* what happened */
  uint64_t crashes, restarts, reboots;
  uint64_t wipes, joins, leaves, leave_crashes;
  uint64_t crashes_skipped; /* the ring was too small to lose a node */
  uint64_t puts, puts_acked, puts_refused, puts_unanswered;
  uint64_t skew_refused; /* writes refused with CLOCK_SKEW */
  uint64_t dels, dels_acked;
  uint64_t dels_gone;            /* answered not found: deleted already */
  uint64_t dels_other_tombstone; /* answered not found: another delete
                                    (refused, or older) has a tombstone */
  double del_share;              /* of the writes, deletes */
  uint64_t gets, gets_value, gets_not_found, gets_unavailable;
  uint64_t gets_behind; /* older than promised, while views were split */
  uint64_t repair_ms_max, repair_ms_sum, repairs;
} crash_run;

static double secs(uint64_t ms) { return (double)ms / 1000.0; }

static void *xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size);

  if (p == NULL) {
    fprintf(stderr, "dht-sim: out of memory (crashes)\n");
    abort();
  }
  return p;
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdu;
}

/* ---- values ---------------------------------------------------------------- */

static void make_value(const crash_run *r, uint32_t key, uint32_t seq,
                       char *out, size_t len) {
  snprintf(out, len, "%s#%" PRIu32 "-%016" PRIx64, r->keys[key].key, seq,
           mix(mix(r->salt, key), seq));
}

/* The sequence number of a value of key, or 0 when the value is not one the
 * client ever put for it (a corrupted or invented value). */
static uint32_t value_seq(const crash_run *r, uint32_t key,
                          const uint8_t *value, size_t len) {
  const wkey *k = &r->keys[key];
  size_t key_len = strlen(k->key), i;
  char want[VALUE_LEN_MAX];
  uint64_t seq = 0;

  if (len <= key_len + 1 || len >= VALUE_LEN_MAX ||
      memcmp(value, k->key, key_len) != 0 || value[key_len] != '#') {
    return 0;
  }
  for (i = key_len + 1; i < len && value[i] >= '0' && value[i] <= '9'; i++) {
    seq = seq * 10 + (uint64_t)(value[i] - '0');
    if (seq >= k->next_seq) {
      return 0;
    }
  }
  if (seq == 0) {
    return 0;
  }
  make_value(r, key, (uint32_t)seq, want, sizeof(want));
  return strlen(want) == len && memcmp(want, value, len) == 0 ? (uint32_t)seq
                                                              : 0;
}

/* What a record of one key must be to count as a copy. */
typedef struct value_want {
  const crash_run *r;
  uint32_t key;     /* index into keys */
  uint32_t min_seq; /* oldest acceptable put */
} value_want;

static bool value_ok(const void *ud, const uint8_t *value, size_t len) {
  const value_want *v = ud;
  uint32_t seq = value_seq(v->r, v->key, value, len);

  return seq != 0 && seq >= v->min_seq;
}

/* ---- building, client requests ----------------------------------------------- */

static void build_ring(crash_run *r) {
  sim_world *w = &r->w;
  uint32_t i;

  r->phase = "build";
  sim_world_create_ring(w, sim_world_add_node(w));
  for (i = 1; i < r->nodes && !w->failed; i++) {
    sim_world_run_until(w, w->now_ms + sim_rng_between(&r->rng, 0,
                                                        2 * BUILD_GAP_MS));
    sim_world_join(w, sim_world_add_node(w),
                   sim_world_random_joined(w, SIM_NO_SLOT));
  }
  if (!w->failed) {
    sim_ring_converge(w, r->o->converge_ms, r->o->progress, "build");
  }
}

static void init_keys(crash_run *r, const char *prefix) {
  size_t i;

  r->n_keys = r->o->workload_keys;
  r->keys = xcalloc(r->n_keys, sizeof(*r->keys));
  for (i = 0; i < r->n_keys; i++) {
    snprintf(r->keys[i].key, KEY_LEN_MAX, "%s%zu", prefix, i);
    r->keys[i].next_seq = 1;
    r->keys[i].write_op = NO_OP;
  }
}

static client_op *track(crash_run *r, size_t op, uint32_t key,
                         client_kind kind) {
  client_op *c;

  if (r->n_ops == r->cap_ops) {
    r->cap_ops = r->cap_ops ? 2 * r->cap_ops : 256;
    r->ops = realloc(r->ops, r->cap_ops * sizeof(*r->ops));
    if (r->ops == NULL) {
      fprintf(stderr, "dht-sim: out of memory (crashes)\n");
      abort();
    }
  }
  c = &r->ops[r->n_ops++];
  memset(c, 0, sizeof(*c));
  c->op = op;
  c->key = key;
  c->kind = kind;
  c->last_del = r->keys[key].last_del;
  c->views_split = sim_buggify_views_split(&r->w.buggify);
  return c;
}

/* Sends the next write of key, a put or a delete, through a random joined
 * node. */
static void write_next(crash_run *r, uint32_t key, bool del) {
  wkey *k = &r->keys[key];
  char value[VALUE_LEN_MAX];
  uint32_t via = sim_world_random_joined(&r->w, SIM_NO_SLOT);
  uint32_t seq = k->next_seq++;

  if (del) {
    k->write_op = sim_world_del(&r->w, via, k->key);
    track(r, k->write_op, key, CLIENT_DEL)->seq = seq;
    k->last_del = seq;
    r->dels++;
    return;
  }
  make_value(r, key, seq, value, sizeof(value));
  k->write_op = sim_world_put(&r->w, via, k->key, value);
  track(r, k->write_op, key, CLIENT_PUT)->seq = seq;
  r->puts++;
}

static void get_key(crash_run *r, uint32_t key) {
  wkey *k = &r->keys[key];
  uint32_t via = sim_world_random_joined(&r->w, SIM_NO_SLOT);
  client_op *c = track(r, sim_world_get(&r->w, via, k->key, ""), key,
                       CLIENT_GET);

  c->seq = k->floor;
  c->floor_del = k->floor_del;
  r->gets++;
}

/* A delete or a get found nothing while the key's last acknowledged write
 * is a put, and no delete was sent since (c->last_del: before the
 * request; k->last_del: before it was judged, so possibly while it ran). */
static bool lost_by_not_found(const wkey *k, const client_op *c,
                              uint32_t floor, bool floor_del) {
  uint32_t last_del = c->kind == CLIENT_DEL ? c->last_del : k->last_del;

  return floor > 0 && !floor_del && last_del < floor;
}

/* True when some disk, running or not, has a tombstone of key at another
 * version than ver. */
static bool has_other_tombstone(crash_run *r, uint32_t key,
                                const dht_version *ver) {
  size_t i;

  for (i = 0; i < r->w.n_nodes; i++) {
    sim_record rec;
    if (sim_store_read(r->w.nodes[i].store, r->keys[key].key, &rec) &&
        rec.tombstone && dht_version_cmp(&rec.version, ver) != 0) {
      return true;
    }
  }
  return false;
}

/* Judges a write's answer. */
static void judge_write(crash_run *r, const client_op *c, const sim_op *op,
                        bool answered) {
  sim_world *w = &r->w;
  wkey *k = &r->keys[c->key];
  bool del = c->kind == CLIENT_DEL;

  k->write_op = NO_OP;
  if (!answered) {
    k->retired = true;
    k->unsure |= del;
    r->puts_unanswered += !del;
  } else if (op->reply_type == DHT_MSG_OK) {
    r->puts_acked += !del;
    r->dels_acked += del;
    if (c->seq > k->floor) {
      k->floor = c->seq;
      k->floor_del = del;
      k->floor_ms = op->replied_ms;
    }
  } else if (del && op->error_code == DHT_ERR_NOT_FOUND &&
             (k->floor == 0 || k->floor_del)) {
    /* Nothing acknowledged to delete: the last acknowledged write is a
     * delete, or there is none. The key stays deleted (this one's
     * tombstone is stored too), and any later put must beat it at its
     * owner: its copies are still checked. */
    r->dels_gone++;
  } else if (del && op->error_code == DHT_ERR_NOT_FOUND) {
    /* The owner found no value, although a put was acknowledged. Its own
     * tombstone proves nothing (a DEL that finds no value stores it all
     * the same, and a resent copy of it is the same write, answered OK):
     * only another delete's can excuse it, that of a delete sent since and
     * refused, which may have taken effect, or an older one, which the
     * acknowledged put replaced (a stray one would only make this check
     * miss a loss). */
    if (has_other_tombstone(r, c->key, &op->ver)) {
      k->unsure = true;
      r->dels_other_tombstone++;
    } else if (lost_by_not_found(k, c, k->floor, k->floor_del)) {
      sim_world_fail(w,
                     "lost write: delete #%" PRIu32 " of %s via %s sent at "
                     "%.3f s found nothing, but put #%" PRIu32
                     " had been acknowledged (at %.3f s)",
                     c->seq, k->key, w->nodes[op->via_slot].addr,
                     secs(op->sent_ms), k->floor, secs(k->floor_ms));
    }
  } else {
    r->puts_refused += !del;
    k->unsure |= del;
    if (op->error_code == DHT_ERR_CLOCK_SKEW) {
      if (!sim_swarm_skew_refusal_possible(&r->draws, w, op->ver.hlc >> 16,
                                           op->sent_ms,
                                           r->o->max_clock_skew_ms)) {
        sim_world_fail(w,
                       "%s #%" PRIu32 " of %s via %s was refused for clock "
                       "skew, but no running node's clock was behind its "
                       "stamp by more than the %" PRIu32 " ms bound when it "
                       "was sent",
                       del ? "delete" : "put", c->seq, k->key,
                       w->nodes[op->via_slot].addr, r->o->max_clock_skew_ms);
      }
      k->skew_refused = true;
      r->skew_refused++;
    }
  }
}

/* Judges one answered (or given up) request; see the file comment. */
static void judge(crash_run *r, const client_op *c, const sim_op *op) {
  sim_world *w = &r->w;
  wkey *k = &r->keys[c->key];
  bool answered = op->replies > 0 &&
                  op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS;

  if (c->kind != CLIENT_GET) {
    judge_write(r, c, op, answered);
    return;
  }
  if (answered && op->reply_type == DHT_MSG_VALUE) {
    uint32_t seq = value_seq(r, c->key, op->value, op->value_len);
    r->gets_value++;
    if (seq == 0) {
      sim_world_fail(w,
                     "get of %s via %s returned \"%.*s\", a value never put "
                     "for it",
                     k->key, w->nodes[op->via_slot].addr, (int)op->value_len,
                     (const char *)op->value);
    } else if (seq < c->seq && c->views_split) {
      r->gets_behind++;
    } else if (seq < c->seq) {
      sim_world_fail(w,
                     "stale read: get of %s via %s sent at %.3f s returned "
                     "put #%" PRIu32 ", but %s #%" PRIu32
                     " had been acknowledged (at %.3f s or before)",
                     k->key, w->nodes[op->via_slot].addr, secs(op->sent_ms),
                     seq, c->floor_del ? "delete" : "put", c->seq,
                     secs(k->floor_ms));
    }
  } else if (answered && op->reply_type == DHT_MSG_ERROR &&
             op->error_code == DHT_ERR_NOT_FOUND) {
    r->gets_not_found++;
    if (lost_by_not_found(k, c, c->seq, c->floor_del) && c->views_split) {
      r->gets_behind++;
    } else if (lost_by_not_found(k, c, c->seq, c->floor_del)) {
      sim_world_fail(w,
                     "lost write: get of %s via %s sent at %.3f s found "
                     "nothing, but put #%" PRIu32
                     " had been acknowledged (at %.3f s or before)",
                     k->key, w->nodes[op->via_slot].addr, secs(op->sent_ms),
                     c->seq, secs(k->floor_ms));
    }
  } else {
    r->gets_unavailable++; /* an error or no answer: not a safety matter */
  }
}

/* Judges every request that has been answered or given up on (its
 * connection closed, or no answer in time). */
static void judge_done(crash_run *r) {
  size_t i = 0;

  while (i < r->n_ops && !r->w.failed) {
    client_op c = r->ops[i];
    const sim_op *op = sim_world_op(&r->w, c.op);
    if (op->replies == 0 &&
        r->w.now_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS) {
      i++;
      continue;
    }
    judge(r, &c, op);
    /* The order of judging changes no verdict: a get carries the floor of
     * its sending time, and a key's floor only grows. */
    r->ops[i] = r->ops[--r->n_ops];
  }
}

/* One request: a get, or a write of a key that has none in flight. */
static void client_tick(crash_run *r) {
  uint32_t key = (uint32_t)sim_rng_below(&r->rng, r->n_keys);
  wkey *k = &r->keys[key];
  bool write = sim_rng_chance(&r->rng, 0.4);
  bool del = sim_rng_chance(&r->rng, r->del_share);

  if (write && k->write_op == NO_OP && !k->retired) {
    write_next(r, key, del);
  } else {
    get_key(r, key);
  }
}

/* Runs the world until every request is judged (or limit_ms). */
static void drain_ops(crash_run *r, uint64_t limit_ms) {
  while (!r->w.failed && r->n_ops > 0 && r->w.now_ms < limit_ms) {
    sim_world_run_until(&r->w, r->w.now_ms + TICK_MS);
    judge_done(r);
  }
}

/* ---- placement --------------------------------------------------------------- */

/* The last acknowledged write a placement check wants back on a key's
 * holders, or newer. */
typedef struct wanted {
  uint32_t seq; /* its sequence number; 0: none */
  bool del;     /* it was a delete */
} wanted;

/*
 * What is wanted of key: its last acknowledged write, or, when at_change,
 * the last one acknowledged before the latest change. The gap after a
 * change must repair that change, not the writes acknowledged during the
 * gap: a holder whose commit fails (a full disk, up to 3 s) refuses those,
 * the owner acknowledges on the others' word, and the copy comes with the
 * first digest exchange once the disk works again (up to sync_interval_ms
 * later), so a write acknowledged near the end of a gap may still be a copy
 * short when the next change comes. Such a write is judged in the next gap,
 * where it is older than the change, and at the end.
 */
static wanted wanted_of(const wkey *k, bool at_change) {
  wanted want = {k->floor, k->floor_del};

  if (at_change) {
    want.seq = k->change_floor;
    want.del = k->change_floor_del;
  }
  return want;
}

/* Notes every key's last acknowledged write as a change begins. */
static void note_change_floors(crash_run *r) {
  size_t i;

  for (i = 0; i < r->n_keys; i++) {
    r->keys[i].change_floor = r->keys[i].floor;
    r->keys[i].change_floor_del = r->keys[i].floor_del;
  }
}

/* The first running node that still has a live record of a deleted key
 * older than delete #del_seq, or SIM_NO_SLOT. */
static uint32_t outlived_delete(crash_run *r, uint32_t key, uint32_t del_seq) {
  const wkey *k = &r->keys[key];
  size_t i;

  for (i = 0; i < r->w.n_nodes; i++) {
    sim_record rec;
    uint32_t seq;
    if (!sim_world_is_up(&r->w, (uint32_t)i) ||
        !sim_store_read(r->w.nodes[i].store, k->key, &rec) || rec.tombstone) {
      continue;
    }
    seq = value_seq(r, key, rec.value, rec.value_len);
    if (seq != 0 && seq < del_seq) {
      return (uint32_t)i;
    }
  }
  return SIM_NO_SLOT;
}

/* How the acknowledged keys stand, judged by wanted_of(at_change): those
 * not yet on all their holders, and the first of them. Fails the world
 * when an acknowledged put has no copy left on any running node (lost). */
static size_t unplaced_keys(crash_run *r, bool at_change, size_t *first,
                            sim_placement *pl) {
  sim_world *w = &r->w;
  sim_ring ring;
  size_t i, n = 0;

  sim_ring_build(&ring, w, true);
  for (i = 0; i < r->n_keys && !w->failed; i++) {
    wanted floor = wanted_of(&r->keys[i], at_change);
    value_want want = {r, (uint32_t)i, floor.seq};
    sim_placement p;
    /* A delete in flight may have removed every live copy already. */
    if (floor.seq == 0 || r->keys[i].unsure ||
        r->keys[i].last_del > floor.seq) {
      continue;
    }
    if (floor.del) {
      /* Placed once no running node has a value the delete replaced. */
      memset(&p, 0, sizeof(p));
      p.missing_slot = outlived_delete(r, (uint32_t)i, floor.seq);
      if (p.missing_slot != SIM_NO_SLOT && n++ == 0) {
        *first = i;
        *pl = p;
      }
      continue;
    }
    if (sim_key_placed(w, &ring, r->keys[i].key, value_ok, &want, &p)) {
      continue;
    }
    sim_key_copies(w, r->keys[i].key, value_ok, &want, &p);
    if (p.running_copies == 0) {
      sim_world_fail(w,
                     "lost write: acknowledged put #%" PRIu32
                     " of %s (or a newer one) is on no running node (%zu "
                     "stopped disks have it)",
                     floor.seq, r->keys[i].key, p.stopped_copies);
      break;
    }
    if (n++ == 0) {
      *first = i;
      *pl = p;
    }
  }
  sim_ring_free(&ring);
  return n;
}

/* Fails with the key that is not back on all its holders. */
static void fail_unplaced(crash_run *r, bool at_change, size_t n, size_t key,
                          const sim_placement *p, const char *when) {
  sim_world *w = &r->w;
  wanted floor = wanted_of(&r->keys[key], at_change);

  if (floor.del) {
    sim_world_fail(w,
                   "%zu keys are not repaired %s, e.g. %s: delete #%" PRIu32
                   " was acknowledged, but %s still has an older value",
                   n, when, r->keys[key].key, floor.seq,
                   w->nodes[p->missing_slot].addr);
    return;
  }
  sim_world_fail(w,
                 "%zu keys are not on all their %" PRIu32
                 " holders %s, e.g. %s (put #%" PRIu32
                 " acknowledged): holder %s lacks it, %zu of %zu have it",
                 n, r->replicas, when, r->keys[key].key, floor.seq,
                 p->missing_slot == SIM_NO_SLOT
                     ? "?"
                     : w->nodes[p->missing_slot].addr,
                 p->held, p->holders);
}

/* Waits (at most repair_ms) for every acknowledged key to be on all its
 * holders. Returns how long it took. */
static uint64_t await_repair(crash_run *r, const char *after) {
  sim_world *w = &r->w;
  uint64_t start = w->now_ms;
  sim_placement p;
  size_t first = 0, n;
  char when[96];

  while (!w->failed) {
    n = unplaced_keys(r, false, &first, &p);
    if (n == 0 || w->failed) {
      break;
    }
    if (w->now_ms - start >= r->o->repair_ms) {
      snprintf(when, sizeof(when), "%.1f s after %s", secs(w->now_ms - start),
               after);
      fail_unplaced(r, false, n, first, &p, when);
      break;
    }
    sim_world_run_until(w, w->now_ms + REPAIR_POLL_MS);
  }
  return w->now_ms - start;
}

/* The ring must hold no key outside the ranges nodes own or replicate. */
static void check_at_rest(crash_run *r) {
  char why[SIM_FAILURE_LEN];
  sim_ring ring;

  sim_ring_build(&ring, &r->w, true);
  if (!r->w.failed &&
      sim_ring_check_converged(&ring, &r->w, false, why, sizeof(why),
                               NULL) != 0) {
    sim_world_fail(&r->w, "at rest, after repair: %s", why);
  }
  sim_ring_free(&ring);
}

/* Reads every key once through a random node of the healed ring: each must
 * be answered, and an acknowledged key with its last acknowledged put or a
 * newer one (judge() fails on anything older). */
static void read_all(crash_run *r) {
  uint64_t unavailable = r->gets_unavailable;
  size_t i;

  for (i = 0; i < r->n_keys; i++) {
    get_key(r, (uint32_t)i);
  }
  drain_ops(r, r->w.now_ms + OPS_GRACE_MS);
  if (!r->w.failed && r->gets_unavailable > unavailable) {
    sim_world_fail(&r->w,
                   "%" PRIu64 " of %zu gets on the healed ring got an error "
                   "or no answer",
                   r->gets_unavailable - unavailable, r->n_keys);
  }
}

/* Puts every key once on the freshly built ring; each must be
 * acknowledged. */
static void populate(crash_run *r) {
  sim_world *w = &r->w;
  size_t i;

  r->phase = "populate";
  for (i = 0; i < r->n_keys; i++) {
    write_next(r, (uint32_t)i, false);
  }
  drain_ops(r, w->now_ms + OPS_GRACE_MS);
  for (i = 0; i < r->n_keys && !w->failed; i++) {
    /* A refusal for clock skew is what the design promises where clocks
     * go beyond the bound (judge_write() checked that one could); the
     * key then starts out unwritten. */
    if (r->keys[i].floor != 1 && !r->keys[i].skew_refused) {
      sim_world_fail(w, "put of %s on a converged ring was not acknowledged",
                     r->keys[i].key);
    }
  }
  if (!w->failed) {
    await_repair(r, "the puts");
  }
}

static void setup(crash_run *r, const sim_options *o, sim_text *report,
                  const char *prefix) {
  sim_rng master, draws;

  memset(r, 0, sizeof(*r));
  r->o = o;
  r->report = report;
  sim_rng_seed(&master, o->seed);
  sim_rng_fork(&master, &draws);
  sim_rng_fork(&master, &r->rng);
  r->nodes = (uint32_t)sim_rng_between(&draws, o->nodes_min, o->nodes_max);
  sim_swarm_draw(&r->draws, &draws, o);
  if (o->nodes != 0) {
    r->nodes = o->nodes;
  }
  r->replicas = r->draws.replicas;
  r->salt = sim_rng_next(&draws);
  sim_world_init(&r->w, sim_rng_next(&master), &r->draws.settings);
  sim_swarm_apply(&r->draws, &r->w);
  /* The writers' clocks are off like most hosts' (within the bound). With
   * no partition an owner always knows a key's newest write, so a writer
   * that is behind is told STALE and stamps anew; across a partition two
   * writers' order follows their clocks, which is not promised, so the
   * other modes keep the writers' clocks exact. */
  r->w.writer_clocks.within_ms = r->draws.clocks.within_ms;
  r->w.log_on = o->log_level > 0;
  r->w.log_level = (dht_log_level)(o->log_level > 0 ? o->log_level - 1 : 0);
  r->w.trace = o->trace ? stderr : NULL;
  init_keys(r, prefix);
}

static void finish(crash_run *r, sim_run_result *result) {
  sim_world *w = &r->w;

  sim_swarm_report_totals(w, r->report);
  sim_text_printf(r->report,
                  "events %" PRIu64 ", virtual time %.1f s, digest %016" PRIx64
                  "\n",
                  w->events, secs(w->now_ms), w->digest);
  if (w->failed) {
    sim_text_printf(r->report, "FAIL at %.3f s (%s phase): %s\n",
                    secs(w->failed_at_ms), r->phase, w->failure);
  } else {
    sim_text_printf(r->report, "PASS\n");
  }
  result->passed = !w->failed;
  result->nodes = r->nodes;
  sim_swarm_drawn(&r->draws, &result->drawn);
  result->virtual_ms = w->now_ms;
  result->digest = w->digest;
  sim_world_free(w);
  free(r->keys);
  free(r->ops);
  free(r->down_since_ms);
}

/* ---- crashes: one at a time ------------------------------------------------ */

static size_t count_joined(const sim_world *w) {
  size_t i, n = 0;

  for (i = 0; i < w->n_nodes; i++) {
    n += sim_world_is_joined(w, (uint32_t)i);
  }
  return n;
}

/* A random stopped node, or SIM_NO_SLOT. */
static uint32_t random_down(crash_run *r) {
  size_t i, n = 0, pick;

  for (i = 0; i < r->w.n_nodes; i++) {
    n += !sim_world_is_up(&r->w, (uint32_t)i);
  }
  if (n == 0) {
    return SIM_NO_SLOT;
  }
  pick = sim_rng_below(&r->rng, n);
  for (i = 0; i < r->w.n_nodes; i++) {
    if (!sim_world_is_up(&r->w, (uint32_t)i) && pick-- == 0) {
      return (uint32_t)i;
    }
  }
  return SIM_NO_SLOT;
}

/* The mix of changes a seed draws. */
typedef struct change_mix {
  double restart;     /* a crashed node restarts (rather than another goes) */
  double reboot;      /* a node reboots */
  double wipe;        /* a restart finds its disk wiped */
  double join;        /* a fresh node joins */
  double leave;       /* a node leaves gracefully rather than crashing... */
  double leave_crash; /* ...and crashes in the middle of its leave */
} change_mix;

static void mark_down(crash_run *r, uint32_t slot) {
  if (slot >= r->down_cap) {
    r->down_cap = 2 * (size_t)slot + 64;
    r->down_since_ms =
        realloc(r->down_since_ms, r->down_cap * sizeof(*r->down_since_ms));
    if (r->down_since_ms == NULL) {
      fprintf(stderr, "dht-sim: out of memory (crashes)\n");
      abort();
    }
  }
  r->down_since_ms[slot] = r->w.now_ms;
}

/* One membership change: a crash, the restart of a crashed node on its
 * disk (which may hold old versions) or on a wiped one, a reboot (a crash
 * and a restart on the same disk within a second, too fast for the peers
 * to notice), a fresh join, or a graceful leave (which may end in a crash
 * instead). A restart may find its host's clock stepped (sim_world). */
static void change(crash_run *r, const change_mix *mix) {
  sim_world *w = &r->w;
  uint32_t down = random_down(r);
  bool restart = sim_rng_chance(&r->rng, mix->restart);
  bool reboot = sim_rng_chance(&r->rng, mix->reboot);
  bool refuses = sim_rng_chance(&r->rng, 0.5);
  uint64_t downtime_ms = sim_rng_between(&r->rng, 50, 1000);
  bool wipe = sim_rng_chance(&r->rng, mix->wipe);
  bool join = sim_rng_chance(&r->rng, mix->join);
  bool leave = sim_rng_chance(&r->rng, mix->leave);
  bool leave_crash = sim_rng_chance(&r->rng, mix->leave_crash);
  uint64_t leave_crash_ms = sim_rng_between(&r->rng, 0, 300);
  uint32_t slot;

  if (reboot) {
    slot = sim_world_random_joined(w, SIM_NO_SLOT);
    sim_world_crash(w, slot, refuses);
    sim_world_run_until(w, w->now_ms + downtime_ms);
    if (!w->failed) {
      sim_world_join(w, slot, sim_world_random_joined(w, slot));
    }
    r->reboots++;
    sim_text_printf(r->report, "%8.3f s: %s reboots (down %" PRIu64 " ms)\n",
                    secs(w->now_ms), w->nodes[slot].addr, downtime_ms);
    return;
  }
  if (join) {
    slot = sim_world_add_node(w);
    sim_world_join(w, slot, sim_world_random_joined(w, slot));
    r->joins++;
    sim_text_printf(r->report, "%8.3f s: %s joins\n", secs(w->now_ms),
                    w->nodes[slot].addr);
    return;
  }
  if (down != SIM_NO_SLOT &&
      (restart || count_joined(w) <= r->replicas + SPARE_NODES_MIN)) {
    /* Its records could outlive the tombstones deleting them. */
    wipe |= w->now_ms - r->down_since_ms[down] >
            r->draws.settings.tombstone_grace_ms / 2;
    if (wipe) {
      sim_world_wipe(w, down);
      r->wipes++;
    }
    sim_world_join(w, down, sim_world_random_joined(w, down));
    r->restarts++;
    sim_text_printf(r->report, "%8.3f s: %s restarts on %s disk\n",
                    secs(w->now_ms), w->nodes[down].addr,
                    wipe ? "a wiped" : "its");
    return;
  }
  if (count_joined(w) <= r->replicas + SPARE_NODES_MIN) {
    r->crashes_skipped++;
    return;
  }
  slot = sim_world_random_joined(w, SIM_NO_SLOT);
  mark_down(r, slot);
  if (!leave) {
    sim_world_crash(w, slot, refuses);
    r->crashes++;
    sim_text_printf(r->report, "%8.3f s: %s crashes (%s)\n", secs(w->now_ms),
                    w->nodes[slot].addr,
                    refuses ? "process: connects refused" : "host: silence");
    return;
  }
  sim_text_printf(r->report, "%8.3f s: %s leaves\n", secs(w->now_ms),
                  w->nodes[slot].addr);
  sim_world_leave(w, slot);
  r->leaves++;
  if (leave_crash) {
    sim_world_run_until(w, w->now_ms + leave_crash_ms);
    if (sim_world_is_up(w, slot)) {
      sim_world_crash(w, slot, refuses);
      r->leave_crashes++;
      sim_text_printf(r->report, "%8.3f s: %s crashes %" PRIu64
                      " ms into its leave (%s)\n",
                      secs(w->now_ms), w->nodes[slot].addr, leave_crash_ms,
                      refuses ? "process" : "host");
    }
  }
}

/*
 * Runs the workload for one gap after a change, measuring the time until
 * every key acknowledged before the change is on all its holders again
 * (wanted_of: its last write acknowledged before the change, or newer);
 * repair must be over before the gap ends (the premise of the mode:
 * changes further apart than repair).
 */
static void workload_gap(crash_run *r, const char *after) {
  sim_world *w = &r->w;
  uint64_t start = w->now_ms, end = start + r->o->crash_gap_ms;
  uint64_t next_poll = start;
  bool repaired = false;
  sim_placement p;
  size_t first = 0, n = 0;

  while (!w->failed && w->now_ms < end) {
    client_tick(r);
    sim_world_run_until(w, w->now_ms + TICK_MS);
    judge_done(r);
    if (!repaired && !w->failed && w->now_ms >= next_poll) {
      next_poll = w->now_ms + REPAIR_POLL_MS;
      n = unplaced_keys(r, true, &first, &p);
      if (n == 0) {
        uint64_t took = w->now_ms - start;
        repaired = true;
        r->repairs++;
        r->repair_ms_sum += took;
        r->repair_ms_max = took > r->repair_ms_max ? took : r->repair_ms_max;
      }
    }
  }
  if (!w->failed && !repaired) {
    char when[96];
    n = unplaced_keys(r, true, &first, &p);
    if (n > 0 && !w->failed) {
      snprintf(when, sizeof(when), "%.1f s after %s (the gap between changes)",
               secs(w->now_ms - start), after);
      fail_unplaced(r, true, n, first, &p, when);
    }
  }
}

void sim_crashes_run(const sim_options *o, sim_run_result *result,
                     sim_text *report) {
  crash_run r;
  sim_world *w;
  change_mix mix;
  uint64_t start, repair_ms, healed_ms;

  setup(&r, o, report, "c");
  w = &r.w;
  mix.restart = 0.5 * sim_rng_unit(&r.rng);
  mix.reboot = 0.3 * sim_rng_unit(&r.rng);
  mix.wipe = 0.5 * sim_rng_unit(&r.rng);
  mix.join = 0.2 * sim_rng_unit(&r.rng);
  mix.leave = 0.5 * sim_rng_unit(&r.rng);
  mix.leave_crash = 0.5 * sim_rng_unit(&r.rng);
  r.del_share = 0.3 * sim_rng_unit(&r.rng);
  sim_text_printf(report,
                  "dht-sim crashes: seed %" PRIu64 ", %" PRIu32
                  " nodes; %zu keys, %.0f%% of writes deletes; %" PRIu32
                  " crashes or leaves, changes %.1f s apart (restarts "
                  "%.0f%%, %.0f%% of them wiped; reboots %.0f%%; joins "
                  "%.0f%%; leaves %.0f%%, %.0f%% of them crashing)\n",
                  o->seed, r.nodes, r.n_keys, 100 * r.del_share, o->crashes,
                  secs(o->crash_gap_ms), 100 * mix.restart, 100 * mix.wipe,
                  100 * mix.reboot, 100 * mix.join, 100 * mix.leave,
                  100 * mix.leave_crash);
  sim_swarm_report(&r.draws, o, report);
  build_ring(&r);
  if (!w->failed) {
    populate(&r);
  }
  if (!w->failed) {
    r.phase = "crashes";
    /* Planned for longer than the phase can last; healing calls off the
     * rest. */
    sim_swarm_start_disk_faults(&r.draws, w,
                                4 * (uint64_t)o->crashes * o->crash_gap_ms);
    sim_swarm_start_buggify(w);
  }
  start = w->now_ms;
  while (!w->failed && r.crashes + r.leaves + r.crashes_skipped < o->crashes) {
    note_change_floors(&r);
    change(&r, &mix);
    workload_gap(&r, "the change");
  }
  sim_swarm_heal_disks(w);
  sim_swarm_stop_buggify(w);
  healed_ms = w->now_ms;
  if (!w->failed) {
    r.phase = "drain";
    drain_ops(&r, w->now_ms + OPS_GRACE_MS);
  }
  if (!w->failed) {
    /* A node whose commit failed just before the disks healed refuses
     * writes for store_retry_ms of its own clock (drift up to 10%) before
     * it tries its disk again, and meanwhile refuses a GET whose consult
     * brought a record it cannot store (DISK_FULL): the ring is not at
     * rest until then. Crashes seed 797177325: a disk filled 42 ms
     * before the heal, and a read of the healed ring came 350 ms later. */
    uint64_t retry_ms = (uint64_t)r.draws.settings.store_retry_ms *
                            1000000 / (1000000 - SIM_CLOCK_DRIFT_PPM_MAX) +
                        1;
    r.phase = "heal";
    if (w->now_ms < healed_ms + retry_ms) {
      sim_world_run_until(w, healed_ms + retry_ms);
    }
    sim_ring_converge(w, o->converge_ms, o->progress, "crashes");
  }
  repair_ms = 0;
  if (!w->failed) {
    repair_ms = await_repair(&r, "the ring converged");
  }
  if (!w->failed) {
    r.phase = "check";
    check_at_rest(&r);
  }
  if (!w->failed) {
    read_all(&r);
  }
  sim_text_printf(report,
                  "workload: %" PRIu64 " puts (%" PRIu64 " acknowledged, %" PRIu64
                  " refused (%" PRIu64 " writes for clock skew), %" PRIu64
                  " unanswered), %" PRIu64
                  " deletes (%" PRIu64 " acknowledged, %" PRIu64
                  " not found as deleted already, %" PRIu64
                  " not found beside another delete's tombstone), %" PRIu64
                  " gets (%" PRIu64 " values, %" PRIu64 " not found, %" PRIu64
                  " unavailable; %" PRIu64
                  " behind while fault points split views)\n",
                  r.puts, r.puts_acked, r.puts_refused, r.skew_refused,
                  r.puts_unanswered, r.dels, r.dels_acked, r.dels_gone,
                  r.dels_other_tombstone, r.gets, r.gets_value,
                  r.gets_not_found, r.gets_unavailable, r.gets_behind);
  sim_text_printf(report,
                  "repair after a change: mean %.2f s, max %.2f s (%" PRIu64
                  " changes over %.1f s); after the last: %.2f s\n",
                  r.repairs ? secs(r.repair_ms_sum) / (double)r.repairs : 0.0,
                  secs(r.repair_ms_max), r.repairs, secs(w->now_ms - start),
                  secs(repair_ms));
  snprintf(result->summary, sizeof(result->summary),
           "%" PRIu64 " crashes, %" PRIu64 " leaves (%" PRIu64
           " crashed), %" PRIu64 " joins, %" PRIu64 " restarts (%" PRIu64
           " wiped), %" PRIu64 " reboots, %" PRIu64 " puts and %" PRIu64
           " deletes acked, %" PRIu64 " gets, repair max %.1f s",
           r.crashes, r.leaves, r.leave_crashes, r.joins, r.restarts,
           r.wipes, r.reboots, r.puts_acked, r.dels_acked, r.gets,
           secs(r.repair_ms_max));
  result->lost = 0;
  result->expect_lost = 0;
  finish(&r, result);
}

/* ---- burst: k at once ------------------------------------------------------- */

void sim_burst_run(const sim_options *o, sim_run_result *result,
                   sim_text *report) {
  crash_run r;
  sim_world *w;
  uint32_t k, layout, i;
  uint32_t *victims;
  bool *doomed, *crashed_slot;
  sim_ring ring;
  size_t expect = 0, lost = 0, n_found = 0, j, first_op;
  uint64_t repair_ms = 0;

  setup(&r, o, report, "b");
  w = &r.w;
  /* Consecutive seeds go through every k in 2..4, adjacent then anywhere,
   * so that any six of them cover every case. */
  k = 2 + (uint32_t)(o->seed % 3);
  layout = 1 + (uint32_t)(o->seed / 3 % 2);
  if (o->burst_k != 0) {
    k = o->burst_k;
  }
  if (o->burst_layout != 0) {
    layout = o->burst_layout;
  }
  sim_text_printf(report,
                  "dht-sim burst: seed %" PRIu64 ", %" PRIu32
                  " nodes; %zu keys; %" PRIu32 " nodes crash at once, %s\n",
                  o->seed, r.nodes, r.n_keys, k,
                  layout == 1 ? "adjacent" : "anywhere");
  sim_swarm_report(&r.draws, o, report);
  victims = xcalloc(k, sizeof(*victims));
  doomed = xcalloc(r.n_keys, sizeof(*doomed));
  crashed_slot = NULL;
  build_ring(&r);
  if (!w->failed) {
    populate(&r);
  }
  if (!w->failed && k + 1 > r.nodes) {
    sim_world_fail(w, "cannot crash %" PRIu32 " of %" PRIu32 " nodes", k,
                   r.nodes);
  }
  if (!w->failed) {
    /* Choose the victims on the ring as it is. */
    r.phase = "burst";
    sim_ring_build(&ring, w, true);
    crashed_slot = xcalloc(w->n_nodes, sizeof(*crashed_slot));
    if (layout == 1) {
      size_t at = sim_rng_below(&r.rng, ring.n);
      for (i = 0; i < k; i++) {
        victims[i] = ring.members[(at + i) % ring.n].slot;
      }
    } else {
      for (i = 0; i < k; i++) {
        uint32_t s;
        do {
          s = ring.members[sim_rng_below(&r.rng, ring.n)].slot;
        } while (crashed_slot[s]);
        victims[i] = s;
        crashed_slot[s] = true;
      }
    }
    sim_ring_free(&ring);
    for (i = 0; i < k; i++) {
      crashed_slot[victims[i]] = true;
    }
    /* From the stores at this instant: which keys have no copy of their
     * acknowledged value on a node that survives. */
    for (j = 0; j < r.n_keys; j++) {
      value_want want = {&r, (uint32_t)j, r.keys[j].floor};
      /* A key whose only put was refused has nothing to lose. */
      bool survives = r.keys[j].skew_refused;
      size_t s;
      for (s = 0; s < w->n_nodes && !survives; s++) {
        sim_record rec;
        survives = !crashed_slot[s] && sim_world_is_up(w, (uint32_t)s) &&
                   sim_store_read(w->nodes[s].store, r.keys[j].key, &rec) &&
                   !rec.tombstone && value_ok(&want, rec.value, rec.value_len);
      }
      doomed[j] = !survives;
      expect += doomed[j];
    }
    if (k < r.replicas && expect > 0) {
      sim_world_fail(w,
                     "%zu keys had every copy on %" PRIu32
                     " nodes, fewer than their %" PRIu32
                     " holders: they were not on R nodes before the crash",
                     expect, k, r.replicas);
    }
    for (i = 0; i < k && !w->failed; i++) {
      bool refuses = sim_rng_chance(&r.rng, 0.5);
      sim_text_printf(report, "%8.3f s: %s crashes (%s)\n", secs(w->now_ms),
                      w->nodes[victims[i]].addr,
                      refuses ? "process: connects refused" : "host: silence");
      sim_world_crash(w, victims[i], refuses);
    }
  }
  if (!w->failed) {
    /* The doomed keys are gone; every other one must come back, counted
     * from the crash (placement is judged against the true ring, which
     * the nodes' routing may still be catching up with). */
    r.phase = "repair";
    for (j = 0; j < r.n_keys; j++) {
      if (doomed[j]) {
        r.keys[j].floor = 0;
      }
    }
    /* The survivors repair under the core's fault points, if the seed
     * turns any on; the checks at rest come after they stop. */
    sim_swarm_start_buggify(w);
    repair_ms = await_repair(&r, "the crash");
    sim_swarm_stop_buggify(w);
  }
  if (!w->failed) {
    r.phase = "heal";
    sim_ring_converge(w, o->converge_ms, o->progress, "burst");
  }
  if (!w->failed) {
    await_repair(&r, "the ring converged");
  }
  if (!w->failed) {
    r.phase = "check";
    check_at_rest(&r);
  }
  if (!w->failed) {
    /* Every doomed key reads as possibly lost (the node that became the
     * owner of its range found every holder dead), every other one as its
     * value. */
    first_op = w->ops_base + w->n_ops;
    for (j = 0; j < r.n_keys; j++) {
      sim_world_get(w, sim_world_random_joined(w, SIM_NO_SLOT), r.keys[j].key,
                    "");
    }
    sim_world_run_ops(w, w->now_ms + OPS_GRACE_MS);
    for (j = 0; j < r.n_keys && !w->failed; j++) {
      const sim_op *op = sim_world_op(w, first_op + j);
      bool value = op->replies > 0 && op->reply_type == DHT_MSG_VALUE &&
                   value_seq(&r, (uint32_t)j, op->value, op->value_len) == 1;
      bool said_lost = op->replies > 0 && op->reply_type == DHT_MSG_ERROR &&
                       op->error_code == DHT_ERR_LOST;
      if (r.keys[j].skew_refused) {
        continue; /* its only put was refused: nothing to find */
      }
      lost += said_lost;
      n_found += value;
      if (doomed[j] ? !said_lost : !value) {
        sim_world_fail(w,
                       "get of %s via %s: %s, but the key %s (%s)", r.keys[j].key,
                       w->nodes[op->via_slot].addr,
                       op->replies == 0 ? "no answer"
                       : value          ? "its value"
                       : said_lost      ? "possibly lost"
                       : op->reply_type == DHT_MSG_VALUE
                           ? "a wrong value"
                           : dht_errname(op->error_code),
                       doomed[j] ? "had every copy on a crashed node"
                                 : "had a copy on a surviving node",
                       doomed[j] ? "must read as possibly lost"
                                 : "must be found");
      }
    }
    sim_world_clear_ops(w);
  }
  if (!w->failed) {
    sim_text_printf(report,
                    "check: %zu keys had every copy on the crashed nodes, %zu "
                    "read as lost, %zu found; the others were back on all "
                    "their holders %.2f s after the crash; %" PRIu64
                    " puts refused for clock skew (not checked)\n",
                    expect, lost, n_found, secs(repair_ms), r.skew_refused);
  }
  snprintf(result->summary, sizeof(result->summary),
           "k=%" PRIu32 " %s, %zu keys, %zu expected lost, %zu lost", k,
           layout == 1 ? "adjacent" : "anywhere", r.n_keys, expect, lost);
  result->lost = lost;
  result->expect_lost = expect;
  free(victims);
  free(doomed);
  free(crashed_slot);
  finish(&r, result);
}
