/*
 * load.c: `dht load`, a bounded, open-loop put/get workload that checks
 * what it reads, for churn experiments (scripts/churn).
 *
 * Open loop: operation i is due at start + i / rate, whatever happened to
 * the operations before it, so a slow ring shows up as failed operations
 * and not as a workload that politely slows down. C worker threads, each
 * with its own blocking dht_client (retries on, every node as a fallback,
 * each starting at a different node), take the next due operation, sleep
 * until it is due and run it with a timeout of what is left of its
 * deadline. An operation that finds every worker busy until its deadline
 * has passed is never sent and counts as failed ("late"). Latency is
 * measured from when the operation was due, so waiting for a worker is
 * part of it.
 *
 * Checking reads: a value is "k<key>:seq<n>:" plus padding, n counting
 * the puts of that key. At most one operation per key is in flight (an
 * operation whose key is busy takes the next free key), so the puts of a
 * key happen one after another and every acknowledged put precedes, in
 * real time, every get that starts after it. Per key we keep the highest
 * seq sent, the highest seq acknowledged and the seqs whose put failed
 * (a failed put may still land later: the protocol cannot cancel it). A
 * get returning a seq below the last acknowledged one is a stale read, and
 * NOT_FOUND for a key with an acknowledged put a lost read; both count as
 * failed operations. When the stale value is that of a failed put the
 * summary says so, since a late-landing request can explain it.
 *
 * After the load, every key with an acknowledged put is read back, in
 * passes until all are confirmed or --verify-s has passed (so that a ring
 * still repairing itself gets time to). A key still NOT_FOUND, older than
 * its last acknowledged put, or unreadable at the end is a lost
 * acknowledged write. The last line of the text output is
 * "lost acknowledged writes: N".
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dht/err.h"

#define NODES_MAX CLI_NODES_MAX /* the first and its fallbacks */
#define CONNS_MAX 256
#define RATE_MAX 100000
#define DURATION_S_MAX 86400
#define KEYS_MAX 1000000ull
#define DEADLINE_MS_MAX 600000
#define VERIFY_S_MAX 3600
#define VALUE_SIZE_MAX 65536
#define PREFIX_LEN_MAX 200
#define KEY_TEXT_MAX (PREFIX_LEN_MAX + 24) /* prefix and a 20-digit index */
#define VALUE_HEAD_MAX 64 /* "k<20 digits>:seq<20 digits>:" */
#define PING_TIMEOUT_MS_MAX 2000 /* the start-up check of each node */
#define TICK_MS 50               /* the main thread's CSV and done check */
#define VERIFY_PAUSE_MS 1000     /* between verification passes */
#define ERR_CODES 32             /* counters per -code; larger go to [0] */
#define NOTE_LEN 768 /* one failure described: key, node's error, ... */

const char cli_load_usage[] =
    "usage: dht load [--rate OPS] [--duration S] [--keys K] [--get-ratio F]\n"
    "                [--deadline-ms MS] [--connections C] [--seed N]\n"
    "                [--csv FILE] [--lost-csv FILE] [--value-size N]\n"
    "                [--prefix P] [--verify-s S] [--no-verify]\n"
    "\n"
    "An open-loop put/get workload that checks every value it reads, then\n"
    "reads back every key it wrote. For churn experiments (scripts/churn).\n"
    "--node may be a comma-separated list: connection i starts at node\n"
    "i mod n and falls back on all the others, retrying (unless\n"
    "--no-retry) until the operation's deadline.\n"
    "\n"
    "  --rate OPS          operations per second, all connections together,\n"
    "                      1..100000 [200]\n"
    "  --duration S        seconds of load, 1..86400 [60]\n"
    "  --keys K            key space, keys PREFIX0 .. PREFIX(K-1) [1000]\n"
    "  --get-ratio F       fraction of operations that are GETs, 0..1 [0.5]\n"
    "  --deadline-ms MS    an operation that has not succeeded this long\n"
    "                      after it was due has failed, 1..600000 [1000]\n"
    "  --connections C     worker threads, one client each, 1..256 [16];\n"
    "                      an operation waits for a free one, and one that\n"
    "                      waits past its deadline is never sent (\"late\")\n"
    "  --seed N            seed of the key and operation sequence [1]\n"
    "  --csv FILE          one row per second of load: t, attempted,\n"
    "                      succeeded, failed, p50_ms, p99_ms, stale_reads,\n"
    "                      lost_reads (written once the second's\n"
    "                      operations have all ended)\n"
    "  --lost-csv FILE     after the read-back, one row per lost key: key,\n"
    "                      acked_seq, acked_t (s), first_bad_read_t (s, the\n"
    "                      first stale or lost read since that put, or\n"
    "                      empty), readback (not_found, older, unreadable,\n"
    "                      garbled)\n"
    "  --value-size N      bytes per value, 48..65536 [100]\n"
    "  --prefix P          key prefix [load-<hex time>-, new every run]\n"
    "  --verify-s S        read back unconfirmed keys in passes for up to S\n"
    "                      seconds after the load, 1..3600 [30]; the first\n"
    "                      pass reads every key however long it takes (at\n"
    "                      most keys x deadline / connections)\n"
    "  --no-verify         skip the read-back\n"
    "\n"
    "A value is \"k<key>:seq<n>:\" and padding. A GET that returns a seq\n"
    "older than the key's last acknowledged PUT is a stale read; NOT_FOUND\n"
    "for a key with an acknowledged PUT is a lost read. Both count as\n"
    "failed. Latency (p50, p99) is of succeeded operations, from when each\n"
    "was due. The read-back counts lost acknowledged writes: keys NOT_FOUND,\n"
    "older than their last acknowledged PUT, or unreadable when --verify-s\n"
    "ends. The last line of output is \"lost acknowledged writes: N\" (with\n"
    "--json, the field lost_acked_writes of the one object instead).\n"
    "--timeout-ms bounds only the start-up ping of each node.\n"
    "Exit status: 0 when no acknowledged write was lost and every read was\n"
    "fresh, 1 when one was lost or a read was stale, lost or garbled, 2 on\n"
    "bad arguments or when no node answers at the start.\n";

/* What we know of one key. */
typedef struct key_state {
  uint64_t sent_seq;   /* highest seq of a PUT sent (0: none) */
  uint64_t acked_seq;  /* highest seq of a PUT acknowledged (0: none) */
  int64_t acked_ns;    /* when it was acknowledged (monotonic) */
  int64_t bad_ns;      /* first stale or lost read since then, or 0 */
  uint64_t *failed;    /* bit s: the PUT of seq s failed (may land late) */
  size_t failed_words; /* 64-bit words in failed */
  bool busy;           /* an operation on it is in flight */
  uint8_t verify;      /* verify_result of the last read-back */
  uint64_t verify_seq; /* the seq it returned, when it returned one */
} key_state;

/* Outcome of a read-back. */
enum verify_result {
  V_PENDING,    /* not read back yet */
  V_OK,         /* the last acknowledged seq, or a later one */
  V_NOT_FOUND,  /* NOT_FOUND */
  V_OLDER,      /* an older seq */
  V_UNREADABLE, /* no answer within the deadline, or an error */
  V_GARBLED,    /* a value this run did not write */
};

/* One second of load, by when operations were due. */
typedef struct sec_row {
  uint64_t ended;     /* operations of this second that have ended */
  uint64_t ok;        /* succeeded */
  uint64_t failed;    /* failed, late, stale or lost included */
  uint64_t stale;     /* stale reads */
  uint64_t lost;      /* lost reads */
  uint32_t *lat_us;   /* latencies of succeeded operations */
  size_t n_lat;       /* entries used in lat_us */
  size_t cap_lat;     /* entries allocated */
} sec_row;

typedef struct load load;

/* One worker thread and its connection. */
typedef struct worker {
  load *l;           /* the run */
  dht_client *c;     /* its client */
  pthread_t thread;  /* valid while running */
  bool started;      /* thread was created */
} worker;

struct load {
  cli_ctx *ctx;              /* global options */
  char **nodes;              /* --node split at commas */
  size_t n_nodes;            /* entries in nodes */
  uint64_t rate;             /* --rate, operations per second */
  uint64_t duration_s;       /* --duration */
  uint64_t keys;             /* --keys */
  double get_ratio;          /* --get-ratio */
  uint64_t deadline_ms;      /* --deadline-ms */
  uint64_t conns_n;          /* --connections */
  uint64_t seed;             /* --seed */
  const char *csv_path;      /* --csv, or NULL */
  const char *lost_path;     /* --lost-csv, or NULL */
  uint64_t value_size;       /* --value-size */
  char prefix[PREFIX_LEN_MAX + 1]; /* --prefix */
  uint64_t verify_s;         /* --verify-s */
  bool verify;               /* not --no-verify */

  worker *workers;           /* conns_n of them */
  FILE *csv;                 /* the open --csv file */
  FILE *lost;                /* the open --lost-csv file */
  int64_t t0_ns;             /* when operation 0 is due */
  uint64_t total_ops;        /* rate * duration_s */

  pthread_mutex_t mu;        /* guards everything below */
  pthread_cond_t key_freed;  /* a key stopped being busy */
  key_state *ks;             /* keys of them */
  sec_row *rows;             /* duration_s of them */
  uint64_t next_op;          /* next operation index to hand out */
  uint64_t ended_ops;        /* operations that have ended */
  uint64_t next_row;         /* next CSV row to write */
  uint64_t ok, failed, late; /* totals */
  uint64_t puts, puts_acked, gets;
  uint64_t stale, stale_failed_put; /* stale reads; of which the value was
                                       that of a failed put */
  uint64_t lost_reads;       /* NOT_FOUND after an acknowledged put */
  uint64_t garbled;          /* values this run did not write */
  uint64_t acked_late;       /* PUTs acknowledged after their deadline */
  uint64_t retries;          /* attempts beyond the first, all calls */
  uint64_t err_counts[ERR_CODES]; /* failed calls by -code ([0]: other) */
  char first_error[NOTE_LEN]; /* what the first failure was */
  cli_hist lat;              /* latencies of succeeded ops, in us */

  /* Read-back. */
  uint64_t *vkeys;           /* key indexes still to confirm */
  size_t n_vkeys;            /* entries in vkeys */
  size_t next_vkey;          /* next entry to hand out */
  int64_t verify_until_ns;   /* passes after the first stop here */
  uint64_t verify_keys;      /* keys with an acknowledged put */
  uint64_t verify_passes;    /* passes made */
  uint64_t verify_recovered; /* confirmed only after a first failed pass */
  double verify_secs;        /* time spent */
  uint64_t v_counts[V_GARBLED + 1]; /* final result counts */
  uint64_t v_older_failed;   /* V_OLDER whose value was a failed put's */
};

static int64_t mono_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_until_ns(int64_t t_ns) {
  struct timespec ts;

  ts.tv_sec = (time_t)(t_ns / 1000000000);
  ts.tv_nsec = (long)(t_ns % 1000000000);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* splitmix64: operation i's random numbers depend only on seed and i, so
 * the sequence is the same whatever order the workers run in. */
static uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/* ---- per-second percentiles --------------------------------------------- */

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

  return (x > y) - (x < y);
}

/* Nearest-rank q-quantile of a sorted array, in us; 0 when empty. */
static uint32_t sorted_quantile(const uint32_t *v, size_t n, double q) {
  uint64_t rank = cli_nearest_rank(n, q);

  return rank > 0 ? v[rank - 1] : 0;
}

/* ---- keys and values ---------------------------------------------------- */

static size_t key_text(const load *l, uint64_t k, char *out) {
  int n = snprintf(out, KEY_TEXT_MAX, "%s%" PRIu64, l->prefix, k);

  return (size_t)n;
}

/* Fills value (value_size bytes) for key k, seq. */
static void value_text(const load *l, uint64_t k, uint64_t seq,
                       uint8_t *value) {
  char head[VALUE_HEAD_MAX];
  int n = snprintf(head, sizeof(head), "k%" PRIu64 ":seq%" PRIu64 ":", k, seq);

  memset(value, '.', l->value_size);
  memcpy(value, head, (size_t)n); /* value_size >= 48 > any head */
}

/* Reads the seq out of a value written for key k. Returns false for a
 * value this run could not have written for k. */
static bool value_seq(uint64_t k, const uint8_t *v, size_t len,
                      uint64_t *seq) {
  char head[VALUE_HEAD_MAX];
  uint64_t s = 0;
  size_t i, n;

  n = (size_t)snprintf(head, sizeof(head), "k%" PRIu64 ":seq", k);
  if (len < n || memcmp(v, head, n) != 0) {
    return false;
  }
  for (i = n; i < len && v[i] >= '0' && v[i] <= '9' && i < n + 19; i++) {
    s = s * 10 + (uint64_t)(v[i] - '0');
  }
  if (i == n || i >= len || v[i] != ':' || s == 0) {
    return false;
  }
  *seq = s;
  return true;
}

static bool failed_bit(const key_state *ks, uint64_t seq) {
  return seq / 64 < ks->failed_words &&
         (ks->failed[seq / 64] >> (seq % 64) & 1u) != 0;
}

/* Marks seq's PUT as failed. Out of memory loses the mark: the only effect
 * is that a late landing would be reported without the excuse. */
static void set_failed_bit(key_state *ks, uint64_t seq) {
  size_t need = (size_t)(seq / 64) + 1, words;
  uint64_t *p;

  if (need > ks->failed_words) {
    words = ks->failed_words > 0 ? ks->failed_words * 2 : 1;
    while (words < need) {
      words *= 2;
    }
    p = realloc(ks->failed, words * sizeof(*p));
    if (p == NULL) {
      return;
    }
    memset(p + ks->failed_words, 0, (words - ks->failed_words) * sizeof(*p));
    ks->failed = p;
    ks->failed_words = words;
  }
  ks->failed[seq / 64] |= 1ull << (seq % 64);
}

/* ---- the load ----------------------------------------------------------- */

/* Under mu. Remembers the first thing that went wrong, for the summary. */
static void note_first(load *l, const char *what) {
  if (l->first_error[0] == '\0') {
    snprintf(l->first_error, sizeof(l->first_error), "%s", what);
  }
}

/* Under mu. A failed call: counted by code. */
static void note_error(load *l, int rv, const char *what) {
  l->err_counts[rv < 0 && -rv < ERR_CODES ? -rv : 0]++;
  note_first(l, what);
}

/* Under mu. Takes the first free key at or after k, waiting when all are
 * busy (only possible with fewer keys than connections). */
static uint64_t claim_key(load *l, uint64_t k) {
  uint64_t i;

  for (;;) {
    for (i = 0; i < l->keys; i++) {
      uint64_t j = (k + i) % l->keys;
      if (!l->ks[j].busy) {
        l->ks[j].busy = true;
        return j;
      }
    }
    pthread_cond_wait(&l->key_freed, &l->mu);
  }
}

/* Under mu. Records the end of one operation due in row r. */
static void op_ended(load *l, uint64_t r, bool ok, int64_t lat_ns) {
  sec_row *row = &l->rows[r];
  uint64_t us = lat_ns > 0 ? (uint64_t)lat_ns / 1000 : 0;

  row->ended++;
  l->ended_ops++;
  if (!ok) {
    row->failed++;
    l->failed++;
    return;
  }
  row->ok++;
  l->ok++;
  cli_hist_add(&l->lat, us);
  if (row->n_lat == row->cap_lat) {
    size_t cap = row->cap_lat > 0 ? row->cap_lat * 2 : 64;
    uint32_t *p = realloc(row->lat_us, cap * sizeof(*p));
    if (p == NULL) {
      return; /* the second's percentiles miss this one */
    }
    row->lat_us = p;
    row->cap_lat = cap;
  }
  row->lat_us[row->n_lat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

/* Runs operation i on worker w. */
static void run_op(worker *w, uint64_t i, uint8_t *value) {
  load *l = w->l;
  int64_t due = l->t0_ns + (int64_t)((double)i * 1e9 / (double)l->rate);
  int64_t deadline = due + (int64_t)l->deadline_ms * 1000000, now, end;
  uint64_t r = i / l->rate, rnd = mix64(l->seed * 0x100000001B3ull ^ i);
  bool is_get = (double)(mix64(rnd) >> 11) * 0x1.0p-53 < l->get_ratio;
  uint64_t k, seq = 0, acked_before = 0, got_seq = 0;
  char key[KEY_TEXT_MAX], what[NOTE_LEN];
  uint8_t *got = NULL;
  size_t key_len, got_len = 0;
  unsigned attempts;
  int rv, timeout_ms;
  bool ok;

  sleep_until_ns(due);
  pthread_mutex_lock(&l->mu);
  k = claim_key(l, rnd % l->keys);
  if (is_get) {
    acked_before = l->ks[k].acked_seq;
    l->gets++;
  } else {
    seq = ++l->ks[k].sent_seq;
    l->puts++;
  }
  pthread_mutex_unlock(&l->mu);

  now = mono_ns();
  if (now >= deadline) {
    /* Every worker was busy until past the deadline: never sent. A PUT
     * never sent cannot land, so it is not marked failed. */
    pthread_mutex_lock(&l->mu);
    l->late++;
    snprintf(what, sizeof(what),
             "operation %" PRIu64 " found no free connection within %" PRIu64
             " ms (raise --connections)",
             i, l->deadline_ms);
    note_first(l, what);
    l->ks[k].busy = false;
    pthread_cond_signal(&l->key_freed);
    op_ended(l, r, false, 0);
    pthread_mutex_unlock(&l->mu);
    return;
  }
  timeout_ms = (int)((deadline - now + 999999) / 1000000);
  key_len = key_text(l, k, key);
  if (is_get) {
    rv = dht_client_get(w->c, key, key_len, &got, &got_len, timeout_ms);
  } else {
    value_text(l, k, seq, value);
    rv = dht_client_put(w->c, key, key_len, value, l->value_size, timeout_ms);
  }
  end = mono_ns();

  pthread_mutex_lock(&l->mu);
  attempts = dht_client_last_attempts(w->c);
  l->retries += attempts > 1 ? attempts - 1 : 0;
  ok = false;
  if (!is_get && rv == 0) {
    /* Acknowledged, even when too late to count as a success. */
    l->puts_acked++;
    if (end > deadline) {
      l->acked_late++;
    }
    if (seq > l->ks[k].acked_seq) {
      l->ks[k].acked_seq = seq;
      l->ks[k].acked_ns = end;
      l->ks[k].bad_ns = 0;
    }
    ok = true;
  } else if (!is_get) {
    set_failed_bit(&l->ks[k], seq);
  } else if (rv == 0 &&
             (!value_seq(k, got, got_len, &got_seq) ||
              got_seq > l->ks[k].sent_seq)) {
    l->garbled++;
    snprintf(what, sizeof(what),
             "GET %s returned a value this run did not write for it", key);
    note_first(l, what);
  } else if (rv == 0 && got_seq < acked_before) {
    l->stale++;
    l->rows[r].stale++;
    if (l->ks[k].bad_ns == 0) {
      l->ks[k].bad_ns = end;
    }
    if (failed_bit(&l->ks[k], got_seq)) {
      l->stale_failed_put++;
    }
    snprintf(what, sizeof(what),
             "stale read: GET %s returned seq %" PRIu64 " after seq %" PRIu64
             " was acknowledged",
             key, got_seq, acked_before);
    note_first(l, what);
  } else if (rv == DHT_ERR_NOT_FOUND && acked_before > 0) {
    l->lost_reads++;
    l->rows[r].lost++;
    if (l->ks[k].bad_ns == 0) {
      l->ks[k].bad_ns = end;
    }
    snprintf(what, sizeof(what),
             "lost read: GET %s answered NOT_FOUND after seq %" PRIu64
             " was acknowledged",
             key, acked_before);
    note_first(l, what);
  } else if (rv == 0 || rv == DHT_ERR_NOT_FOUND) {
    ok = true; /* NOT_FOUND is right for a key never acknowledged */
  }
  if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
    snprintf(what, sizeof(what), "%s %s: %s", is_get ? "GET" : "PUT", key,
             dht_client_last_error(w->c));
    note_error(l, rv, what);
  } else if (ok && end > deadline) {
    /* The call keeps to its timeout; this is the last millisecond. */
    ok = false;
    snprintf(what, sizeof(what), "%s %s: answered %.3f ms after the deadline",
             is_get ? "GET" : "PUT", key, (double)(end - deadline) / 1e6);
    note_error(l, DHT_ERR_TIMEOUT, what);
  }
  l->ks[k].busy = false;
  pthread_cond_signal(&l->key_freed);
  op_ended(l, r, ok, end - due);
  pthread_mutex_unlock(&l->mu);
  free(got);
}

static void *load_worker(void *arg) {
  worker *w = arg;
  load *l = w->l;
  uint8_t *value = malloc(l->value_size);
  uint64_t i;

  for (;;) {
    pthread_mutex_lock(&l->mu);
    i = l->next_op < l->total_ops ? l->next_op++ : UINT64_MAX;
    pthread_mutex_unlock(&l->mu);
    if (i == UINT64_MAX) {
      break;
    }
    if (value == NULL) {
      /* Cannot build a value: the operation fails without being sent. */
      pthread_mutex_lock(&l->mu);
      note_error(l, DHT_ERR_NOMEM, "out of memory");
      op_ended(l, i / l->rate, false, 0);
      pthread_mutex_unlock(&l->mu);
      continue;
    }
    run_op(w, i, value);
  }
  free(value);
  return NULL;
}

/* Under mu. Writes every CSV row, in order, whose operations have all
 * ended. */
static void write_rows(load *l) {
  while (l->next_row < l->duration_s &&
         l->rows[l->next_row].ended == l->rate) {
    sec_row *row = &l->rows[l->next_row];
    uint32_t p50, p99;

    if (row->n_lat > 0) { /* qsort(NULL, 0, ...) is undefined */
      qsort(row->lat_us, row->n_lat, sizeof(*row->lat_us), cmp_u32);
    }
    p50 = sorted_quantile(row->lat_us, row->n_lat, 0.50);
    p99 = sorted_quantile(row->lat_us, row->n_lat, 0.99);
    if (l->csv != NULL) {
      fprintf(l->csv,
              "%" PRIu64 ",%" PRIu64 ",%" PRIu64 ",%" PRIu64
              ",%.3f,%.3f,%" PRIu64 ",%" PRIu64 "\n",
              l->next_row, l->rate, row->ok, row->failed, (double)p50 / 1e3,
              (double)p99 / 1e3, row->stale, row->lost);
      fflush(l->csv);
    }
    free(row->lat_us);
    row->lat_us = NULL;
    row->n_lat = row->cap_lat = 0;
    l->next_row++;
  }
}

/* ---- read-back ---------------------------------------------------------- */

static void *verify_worker(void *arg) {
  worker *w = arg;
  load *l = w->l;
  char key[KEY_TEXT_MAX];
  uint64_t k, acked, sent, seq;
  uint8_t *got;
  /* seq is set before every use; 0 keeps the compiler sure of it. */
  size_t got_len, key_len;
  uint8_t res;
  int rv;

  for (;;) {
    pthread_mutex_lock(&l->mu);
    if (l->next_vkey >= l->n_vkeys ||
        (l->verify_passes > 1 && mono_ns() >= l->verify_until_ns)) {
      pthread_mutex_unlock(&l->mu);
      break;
    }
    k = l->vkeys[l->next_vkey++];
    acked = l->ks[k].acked_seq;
    sent = l->ks[k].sent_seq;
    pthread_mutex_unlock(&l->mu);

    key_len = key_text(l, k, key);
    got = NULL;
    got_len = 0;
    seq = 0;
    rv = dht_client_get(w->c, key, key_len, &got, &got_len,
                        (int)l->deadline_ms);
    if (rv == 0) {
      if (!value_seq(k, got, got_len, &seq) || seq > sent) {
        res = V_GARBLED;
      } else {
        res = seq >= acked ? V_OK : V_OLDER;
      }
    } else {
      res = rv == DHT_ERR_NOT_FOUND ? V_NOT_FOUND : V_UNREADABLE;
    }
    pthread_mutex_lock(&l->mu);
    if (res == V_OK && l->ks[k].verify != V_PENDING) {
      l->verify_recovered++;
    }
    l->ks[k].verify = res;
    l->ks[k].verify_seq = seq;
    pthread_mutex_unlock(&l->mu);
    free(got);
  }
  return NULL;
}

/* Runs the worker function fn on every worker and waits for them. Returns
 * 0, or -1 when a thread could not be started (the others are joined). */
static int run_workers(load *l, void *(*fn)(void *), bool tick) {
  uint64_t c;
  int rv = 0;

  for (c = 0; c < l->conns_n; c++) {
    l->workers[c].started =
        pthread_create(&l->workers[c].thread, NULL, fn, &l->workers[c]) == 0;
    if (!l->workers[c].started) {
      rv = -1;
    }
  }
  if (rv != 0) {
    /* Let the started ones run out of work. */
    pthread_mutex_lock(&l->mu);
    l->next_op = l->total_ops;
    l->next_vkey = l->n_vkeys;
    pthread_mutex_unlock(&l->mu);
  }
  while (tick && rv == 0) {
    struct timespec ts = {0, TICK_MS * 1000000L};
    bool done;
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&l->mu);
    write_rows(l);
    done = l->ended_ops == l->total_ops;
    pthread_mutex_unlock(&l->mu);
    if (done) {
      break;
    }
  }
  for (c = 0; c < l->conns_n; c++) {
    if (l->workers[c].started) {
      pthread_join(l->workers[c].thread, NULL);
      l->workers[c].started = false;
    }
  }
  return rv;
}

/* Reads back every key with an acknowledged put, in passes, until every
 * one is confirmed or verify_s has passed. The first pass reads every key
 * whatever the time; a later one stops when verify_s is over, and what it
 * did not reach keeps the result of the pass before. */
static int verify(load *l) {
  int64_t t0 = mono_ns(), until = t0 + (int64_t)l->verify_s * 1000000000;
  uint64_t k;
  size_t i, n;

  l->vkeys = malloc((size_t)l->keys * sizeof(*l->vkeys));
  if (l->vkeys == NULL) {
    return -1;
  }
  for (k = 0; k < l->keys; k++) {
    if (l->ks[k].acked_seq > 0) {
      l->vkeys[l->n_vkeys++] = k;
    }
  }
  l->verify_keys = l->n_vkeys;
  l->verify_until_ns = until;
  while (l->n_vkeys > 0) {
    l->next_vkey = 0;
    l->verify_passes++;
    if (run_workers(l, verify_worker, false) != 0) {
      return -1;
    }
    n = 0;
    for (i = 0; i < l->n_vkeys; i++) {
      if (l->ks[l->vkeys[i]].verify != V_OK) {
        l->vkeys[n++] = l->vkeys[i];
      }
    }
    l->n_vkeys = n;
    if (n == 0 || mono_ns() + (int64_t)VERIFY_PAUSE_MS * 1000000 >= until) {
      break;
    }
    sleep_until_ns(mono_ns() + (int64_t)VERIFY_PAUSE_MS * 1000000);
  }
  for (k = 0; k < l->keys; k++) {
    if (l->ks[k].acked_seq > 0) {
      l->v_counts[l->ks[k].verify]++;
      if (l->ks[k].verify == V_OLDER &&
          failed_bit(&l->ks[k], l->ks[k].verify_seq)) {
        l->v_older_failed++;
      }
    }
  }
  l->verify_secs = (double)(mono_ns() - t0) / 1e9;
  return 0;
}

/* Writes --lost-csv: the keys the read-back counts as lost. Returns 0 or
 * -1 (errno set). */
static int write_lost(const load *l, FILE *f) {
  static const char *const names[] = {"pending",   "ok",         "not_found",
                                      "older",     "unreadable", "garbled"};
  char key[KEY_TEXT_MAX];
  uint64_t k;

  fputs("key,acked_seq,acked_t,first_bad_read_t,readback\n", f);
  for (k = 0; k < l->keys; k++) {
    const key_state *ks = &l->ks[k];
    if (ks->acked_seq == 0 || ks->verify == V_OK) {
      continue;
    }
    key_text(l, k, key);
    fprintf(f, "%s,%" PRIu64 ",%.3f,", key, ks->acked_seq,
            (double)(ks->acked_ns - l->t0_ns) / 1e9);
    if (ks->bad_ns != 0) {
      fprintf(f, "%.3f", (double)(ks->bad_ns - l->t0_ns) / 1e9);
    }
    fprintf(f, ",%s\n", names[ks->verify]);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

/* ---- report ------------------------------------------------------------- */

static uint64_t lost_acked(const load *l) {
  return l->v_counts[V_NOT_FOUND] + l->v_counts[V_OLDER] +
         l->v_counts[V_UNREADABLE] + l->v_counts[V_GARBLED];
}

static bool run_clean(const load *l) {
  return lost_acked(l) == 0 && l->stale == 0 && l->lost_reads == 0 &&
         l->garbled == 0;
}

static void report(const load *l, double secs) {
  uint64_t p50 = cli_hist_quantile(&l->lat, 0.50),
           p99 = cli_hist_quantile(&l->lat, 0.99);
  double ratio = l->total_ops > 0 ? (double)l->ok / (double)l->total_ops : 0;
  FILE *f = stdout;
  bool first = true;
  int i;

  if (l->ctx->json) {
    fprintf(f, "{\"ok\":%s,\"command\":\"load\",\"nodes\":%zu,",
            run_clean(l) ? "true" : "false", l->n_nodes);
    fprintf(f,
            "\"connections\":%" PRIu64 ",\"rate\":%" PRIu64
            ",\"duration_s\":%" PRIu64 ",\"keys\":%" PRIu64
            ",\"get_ratio\":%g,\"deadline_ms\":%" PRIu64 ",\"seed\":%" PRIu64
            ",\"prefix\":",
            l->conns_n, l->rate, l->duration_s, l->keys, l->get_ratio,
            l->deadline_ms, l->seed);
    cli_json_str(f, l->prefix);
    fprintf(f,
            ",\"elapsed_s\":%.3f,\"attempted\":%" PRIu64
            ",\"succeeded\":%" PRIu64 ",\"failed\":%" PRIu64
            ",\"late\":%" PRIu64 ",\"success_ratio\":%.6f,\"puts\":%" PRIu64
            ",\"puts_acked\":%" PRIu64 ",\"acked_late\":%" PRIu64
            ",\"gets\":%" PRIu64 ",\"stale_reads\":%" PRIu64
            ",\"stale_reads_of_failed_puts\":%" PRIu64
            ",\"lost_reads\":%" PRIu64 ",\"garbled_reads\":%" PRIu64
            ",\"retries\":%" PRIu64
            ",\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
            "\"errors\":{",
            secs, l->total_ops, l->ok, l->failed, l->late, ratio, l->puts,
            l->puts_acked, l->acked_late, l->gets, l->stale,
            l->stale_failed_put, l->lost_reads, l->garbled, l->retries,
            (double)p50 / 1e3, (double)p99 / 1e3, (double)l->lat.max_us / 1e3);
    for (i = 1; i < ERR_CODES; i++) {
      if (l->err_counts[i] > 0) {
        fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", dht_errname(-i),
                l->err_counts[i]);
        first = false;
      }
    }
    if (l->err_counts[0] > 0) {
      fprintf(f, "%s\"OTHER\":%" PRIu64, first ? "" : ",", l->err_counts[0]);
    }
    fputs("},\"first_error\":", f);
    if (l->first_error[0] != '\0') {
      cli_json_str(f, l->first_error);
    } else {
      fputs("null", f);
    }
    if (l->verify) {
      fprintf(f,
              ",\"verify\":{\"keys\":%" PRIu64 ",\"confirmed\":%" PRIu64
              ",\"not_found\":%" PRIu64 ",\"older\":%" PRIu64
              ",\"older_failed_put\":%" PRIu64 ",\"unreadable\":%" PRIu64
              ",\"garbled\":%" PRIu64 ",\"recovered\":%" PRIu64
              ",\"passes\":%" PRIu64 ",\"elapsed_s\":%.3f}",
              l->verify_keys, l->v_counts[V_OK], l->v_counts[V_NOT_FOUND],
              l->v_counts[V_OLDER], l->v_older_failed,
              l->v_counts[V_UNREADABLE], l->v_counts[V_GARBLED],
              l->verify_recovered, l->verify_passes, l->verify_secs);
      fprintf(f, ",\"lost_acked_writes\":%" PRIu64 "}\n", lost_acked(l));
    } else {
      fputs(",\"verify\":null,\"lost_acked_writes\":null}\n", f);
    }
    return;
  }
  fprintf(f,
          "load: %zu node%s, %" PRIu64 " connections, %" PRIu64
          " ops/s for %" PRIu64 " s, %" PRIu64
          " keys, get ratio %.2f, deadline %" PRIu64 " ms, seed %" PRIu64 "\n",
          l->n_nodes, l->n_nodes == 1 ? "" : "s", l->conns_n, l->rate,
          l->duration_s, l->keys, l->get_ratio, l->deadline_ms, l->seed);
  fprintf(f,
          "ops:          %" PRIu64 " attempted, %" PRIu64
          " succeeded, %" PRIu64 " failed (%" PRIu64
          " never sent: no free connection in time) in %.2f s\n",
          l->total_ops, l->ok, l->failed, l->late, secs);
  fprintf(f, "success:      %.3f%%\n", ratio * 100.0);
  fprintf(f,
          "latency ms:   p50 %.3f  p99 %.3f  max %.3f (succeeded ops, from "
          "when due)\n",
          (double)p50 / 1e3, (double)p99 / 1e3, (double)l->lat.max_us / 1e3);
  fprintf(f,
          "puts:         %" PRIu64 " (%" PRIu64 " acknowledged, %" PRIu64
          " of them after the deadline); gets: %" PRIu64 "\n",
          l->puts, l->puts_acked, l->acked_late, l->gets);
  fprintf(f, "retries:      %" PRIu64 " attempts beyond the first\n",
          l->retries);
  fprintf(f, "errors:      ");
  for (i = 1; i < ERR_CODES; i++) {
    if (l->err_counts[i] > 0) {
      fprintf(f, " %s %" PRIu64, dht_errname(-i), l->err_counts[i]);
      first = false;
    }
  }
  if (l->err_counts[0] > 0) {
    fprintf(f, " other %" PRIu64, l->err_counts[0]);
    first = false;
  }
  fprintf(f, "%s\n", first ? " none" : "");
  if (l->first_error[0] != '\0') {
    fprintf(f, "first error:  %s\n", l->first_error);
  }
  fprintf(f,
          "stale reads:  %" PRIu64 " (%" PRIu64
          " returned the value of a PUT that had failed)\n",
          l->stale, l->stale_failed_put);
  fprintf(f, "lost reads:   %" PRIu64 "\n", l->lost_reads);
  if (l->garbled > 0) {
    fprintf(f, "garbled:      %" PRIu64 " reads of values this run did not "
            "write\n", l->garbled);
  }
  if (!l->verify) {
    fprintf(f, "verify:       skipped (--no-verify)\n");
    return;
  }
  fprintf(f,
          "verify:       %" PRIu64 " keys with an acknowledged put: %" PRIu64
          " confirmed (%" PRIu64 " only after a retry), %" PRIu64
          " not found, %" PRIu64 " older (%" PRIu64
          " with a failed put's value), %" PRIu64 " unreadable",
          l->verify_keys, l->v_counts[V_OK], l->verify_recovered,
          l->v_counts[V_NOT_FOUND], l->v_counts[V_OLDER], l->v_older_failed,
          l->v_counts[V_UNREADABLE]);
  if (l->v_counts[V_GARBLED] > 0) {
    fprintf(f, ", %" PRIu64 " garbled", l->v_counts[V_GARBLED]);
  }
  fprintf(f, "; %" PRIu64 " pass%s in %.2f s\n", l->verify_passes,
          l->verify_passes == 1 ? "" : "es", l->verify_secs);
  fprintf(f, "lost acknowledged writes: %" PRIu64 "\n", lost_acked(l));
}

/* ---- options and set-up ------------------------------------------------- */

/* load's numeric options, with their defaults. */
static const cli_num_opt load_num_opts[] = {
    {"--rate", NULL, 1, RATE_MAX, 200, offsetof(load, rate)},
    {"--duration", NULL, 1, DURATION_S_MAX, 60, offsetof(load, duration_s)},
    {"--keys", NULL, 1, KEYS_MAX, 1000, offsetof(load, keys)},
    {"--deadline-ms", NULL, 1, DEADLINE_MS_MAX, 1000,
     offsetof(load, deadline_ms)},
    {"--connections", NULL, 1, CONNS_MAX, 16, offsetof(load, conns_n)},
    {"--seed", NULL, 0, UINT64_MAX, 1, offsetof(load, seed)},
    {"--value-size", NULL, VALUE_HEAD_MAX - 16, VALUE_SIZE_MAX, 100,
     offsetof(load, value_size)},
    {"--verify-s", NULL, 1, VERIFY_S_MAX, 30, offsetof(load, verify_s)},
};

/* load's other options, for cli_scan_opts(). */
static int load_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  load *l = ud;
  const char *v;
  int rv;

  if ((rv = cli_flag_take(ctx, a, "--no-verify", &l->verify, false)) != 0 ||
      (rv = cli_ratio_take(ctx, a, "--get-ratio", &l->get_ratio)) != 0) {
    return rv;
  }
  if (!cli_opt_is(a, "--csv") && !cli_opt_is(a, "--prefix") &&
      !cli_opt_is(a, "--lost-csv")) {
    return 0;
  }
  if ((rv = cli_opt_value(ctx, a, &v)) != 0) {
    return rv;
  }
  if (cli_opt_is(a, "--csv")) {
    l->csv_path = v;
  } else if (cli_opt_is(a, "--lost-csv")) {
    l->lost_path = v;
  } else if (strlen(v) > PREFIX_LEN_MAX) { /* --prefix */
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                  "--prefix: at most %d bytes", PREFIX_LEN_MAX);
  } else {
    snprintf(l->prefix, sizeof(l->prefix), "%s", v);
  }
  return rv != 0 ? rv : 1;
}

/* Appends the comma-separated addresses in list to l->nodes, checking
 * each. Returns 0 or CLI_EXIT_ERROR (printed). */
static int add_nodes(load *l, const char *list) {
  char host[DHT_ADDR_LEN_MAX + 1], shown[300];
  const char *s = list, *comma;
  uint16_t port;
  size_t len;

  for (;;) {
    comma = strchr(s, ',');
    len = comma != NULL ? (size_t)(comma - s) : strlen(s);
    if (l->n_nodes == NODES_MAX) {
      return cli_fail(l->ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                      "--node: at most %d nodes", NODES_MAX);
    }
    l->nodes[l->n_nodes] = malloc(len + 1);
    if (l->nodes[l->n_nodes] == NULL) {
      return cli_fail(l->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    }
    memcpy(l->nodes[l->n_nodes], s, len);
    l->nodes[l->n_nodes][len] = '\0';
    if (dht_addr_parse(l->nodes[l->n_nodes], host, sizeof(host), &port) != 0) {
      return cli_fail(l->ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                      "--node: bad address '%s' (want HOST:PORT[,HOST:PORT"
                      "...])",
                      cli_escape(shown, sizeof(shown), s, len));
    }
    l->n_nodes++;
    if (comma == NULL) {
      return 0;
    }
    s = comma + 1;
  }
}

/* Collects every node of the --node list: ctx->node and its fallbacks
 * (each split again at commas, in case $DHT_NODE was kept whole). Returns
 * 0 or CLI_EXIT_ERROR (printed). */
static int collect_nodes(load *l) {
  size_t i;
  int rv;

  l->nodes = calloc(NODES_MAX, sizeof(*l->nodes));
  if (l->nodes == NULL) {
    return cli_fail(l->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  if ((rv = add_nodes(l, l->ctx->node)) != 0) {
    return rv;
  }
  for (i = 0; i < l->ctx->n_fallbacks; i++) {
    if ((rv = add_nodes(l, l->ctx->fallbacks[i])) != 0) {
      return rv;
    }
  }
  return 0;
}

/* Creates connection c's client: it starts at node c mod n and falls back
 * on the others, in ring-list order after it. Returns 0 or a DHT_ERR_*. */
static int make_client(load *l, uint64_t c) {
  const char *others[NODES_MAX];
  size_t first = (size_t)(c % l->n_nodes), j;
  dht_client **out = &l->workers[c].c;
  int rv;

  rv = dht_client_new(out, l->nodes[first], NULL);
  if (rv != 0) {
    return rv;
  }
  for (j = 1; j < l->n_nodes; j++) {
    others[j - 1] = l->nodes[(first + j) % l->n_nodes];
  }
  rv = dht_client_set_fallbacks(*out, others, l->n_nodes - 1);
  if (rv != 0) {
    return rv;
  }
  dht_client_set_retry(*out, !l->ctx->no_retry);
  return 0;
}

/* Pings each node once; fails (exit 2) when none answers. */
static int ping_nodes(load *l) {
  int timeout_ms = l->ctx->timeout_ms < PING_TIMEOUT_MS_MAX
                       ? l->ctx->timeout_ms
                       : PING_TIMEOUT_MS_MAX;
  char why[512] = "";
  dht_client *c;
  size_t i;
  int rv;

  for (i = 0; i < l->n_nodes; i++) {
    if (dht_client_new(&c, l->nodes[i], NULL) != 0) {
      continue;
    }
    rv = dht_client_ping(c, NULL, timeout_ms);
    if (rv != 0 && why[0] == '\0') {
      snprintf(why, sizeof(why), "%s", dht_client_last_error(c));
    }
    dht_client_del(c);
    if (rv == 0) {
      return 0;
    }
  }
  return cli_fail(l->ctx, CLI_EXIT_ERROR, DHT_ERR_UNAVAILABLE,
                  "load: no node answers (%s)", why);
}

int cli_load(cli_ctx *ctx, int argc, char **argv) {
  struct timespec now_rt;
  int64_t t_end;
  uint64_t c, k;
  load l;
  int rv;

  memset(&l, 0, sizeof(l));
  l.ctx = ctx;
  l.get_ratio = 0.5;
  l.verify = true;
  clock_gettime(CLOCK_REALTIME, &now_rt);
  snprintf(l.prefix, sizeof(l.prefix), "load-%llx-",
           (unsigned long long)now_rt.tv_sec * 1000000000ull +
               (unsigned long long)now_rt.tv_nsec);
  pthread_mutex_init(&l.mu, NULL);
  pthread_cond_init(&l.key_freed, NULL);

  rv = cli_scan_opts(ctx, argc, argv, cli_load_usage, load_num_opts,
                     CLI_COUNT_OF(load_num_opts), load_opt, &l);
  if (rv != 0) {
    rv = rv < 0 ? CLI_EXIT_OK : rv;
    goto out;
  }
  if ((rv = collect_nodes(&l)) != 0) {
    goto out;
  }
  l.total_ops = l.rate * l.duration_s;
  l.ks = calloc(l.keys, sizeof(*l.ks));
  l.rows = calloc(l.duration_s, sizeof(*l.rows));
  l.workers = calloc(l.conns_n, sizeof(*l.workers));
  if (l.ks == NULL || l.rows == NULL || cli_hist_init(&l.lat) != 0 ||
      l.workers == NULL) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (c = 0; c < l.conns_n; c++) {
    l.workers[c].l = &l;
    if ((rv = make_client(&l, c)) != 0) {
      rv = cli_fail(ctx, CLI_EXIT_ERROR, rv, "load: cannot set up connection "
                    "%" PRIu64 ": %s", c, dht_strerror(rv));
      goto out;
    }
  }
  if (l.csv_path != NULL) {
    l.csv = fopen(l.csv_path, "w");
    if (l.csv == NULL) {
      rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "--csv: %s: %s",
                    l.csv_path, strerror(errno));
      goto out;
    }
    fputs("t,attempted,succeeded,failed,p50_ms,p99_ms,stale_reads,"
          "lost_reads\n",
          l.csv);
    fflush(l.csv);
  }
  if (l.lost_path != NULL && (l.lost = fopen(l.lost_path, "w")) == NULL) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "--lost-csv: %s: %s",
                  l.lost_path, strerror(errno));
    goto out;
  }
  if ((rv = ping_nodes(&l)) != 0) {
    goto out;
  }

  /* Operation 0 is due 10 ms from now, once the workers are up. */
  l.t0_ns = mono_ns() + 10000000;
  if (run_workers(&l, load_worker, true) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                  "load: cannot start the worker threads");
    goto out;
  }
  t_end = mono_ns();
  write_rows(&l);
  if (l.verify && verify(&l) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                  "load: out of memory for the read-back");
    goto out;
  }
  if (l.lost != NULL && l.verify && write_lost(&l, l.lost) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "--lost-csv: %s: %s",
                  l.lost_path, strerror(errno));
    goto out;
  }
  report(&l, (double)(t_end - l.t0_ns) / 1e9);
  rv = cli_finish(ctx, run_clean(&l) ? CLI_EXIT_OK : 1);
out:
  if (l.csv != NULL && fclose(l.csv) != 0 && rv == CLI_EXIT_OK) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "--csv: %s: %s",
                  l.csv_path, strerror(errno));
  }
  if (l.lost != NULL && fclose(l.lost) != 0 && rv == CLI_EXIT_OK) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "--lost-csv: %s: %s",
                  l.lost_path, strerror(errno));
  }
  if (l.workers != NULL) {
    for (c = 0; c < l.conns_n; c++) {
      dht_client_del(l.workers[c].c);
    }
  }
  if (l.ks != NULL) {
    for (k = 0; k < l.keys; k++) {
      free(l.ks[k].failed);
    }
  }
  if (l.rows != NULL) {
    for (k = 0; k < l.duration_s; k++) {
      free(l.rows[k].lat_us);
    }
  }
  if (l.nodes != NULL) {
    for (k = 0; k < NODES_MAX; k++) {
      free(l.nodes[k]); /* calloc'd: unused entries are NULL */
    }
  }
  free(l.nodes);
  free(l.workers);
  free(l.ks);
  free(l.rows);
  cli_hist_free(&l.lat);
  free(l.vkeys);
  pthread_cond_destroy(&l.key_freed);
  pthread_mutex_destroy(&l.mu);
  return rv;
}
