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
 * the writes (PUTs and DELs) of that key. At most one operation per key
 * is in flight (an operation whose key is busy takes the next free key),
 * so the writes of a key happen one after another: each is issued after
 * the one before it ended. Per key we keep the highest seq sent, the
 * highest seq acknowledged, which seqs were DELs and which writes failed
 * (a failed write may still land later: the protocol cannot cancel it).
 *
 * Every read is judged by the guarantee (docs/DESIGN.md): a write
 * acknowledged before another acknowledged write of the key was issued
 * must not win. With one write per key at a time that means a read may
 * give the last acknowledged write, any write sent after it, or any write
 * that was never acknowledged; NOT_FOUND stands for a DEL, or for the key
 * before its first write (acknowledged before everything). Anything else
 * is "lost" (NOT_FOUND where only a value may be read), "resurrected" (a
 * value where only a delete may be read) or "older" (another value that
 * may not win). During the load such a read is a stale read (lost: a lost
 * read) and counts as a failed operation: the guarantee holds only once
 * the ring is quiet, and this is what a user would see meanwhile.
 *
 * The final pass: after the load, wait until the ring is quiet (every
 * node answers, is joined and has nothing pending, and every successor it
 * lists answers and names it as predecessor, on two polls in a row), up
 * to --quiet-s; then read every key written once and judge each read.
 * The last three lines of the text output are "lost acknowledged writes:
 * N", "older: N" and "resurrected: N".
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
#include "dht/node.h"

#define NODES_MAX CLI_NODES_MAX /* the first and its fallbacks */
#define CONNS_MAX 256
#define RATE_MAX 100000
#define DURATION_S_MAX 86400
#define KEYS_MAX 1000000ull
#define DEADLINE_MS_MAX 600000
#define QUIET_S_MAX 3600
#define VALUE_SIZE_MAX 65536
#define PREFIX_LEN_MAX 200
#define KEY_TEXT_MAX (PREFIX_LEN_MAX + 24) /* prefix and a 20-digit index */
#define VALUE_HEAD_MAX 64 /* "k<20 digits>:seq<20 digits>:" */
#define PING_TIMEOUT_MS_MAX 2000 /* the start-up check of each node */
#define TICK_MS 50               /* the main thread's CSV and done check */
#define QUIET_POLL_MS 200        /* between polls of the ring for quiet */
#define QUIET_CALL_MS 1000       /* one STATS of that poll */
#define ERR_CODES 32             /* counters per -code; larger go to [0] */
#define NOTE_LEN 768 /* one failure described: key, node's error, ... */

const char cli_load_usage[] =
    "usage: dht load [--rate OPS] [--duration S] [--keys K] [--get-ratio F]\n"
    "                [--del-ratio F] [--deadline-ms MS] [--connections C]\n"
    "                [--seed N] [--csv FILE] [--lost-csv FILE]\n"
    "                [--value-size N] [--prefix P] [--quiet-s S]\n"
    "                [--no-verify]\n"
    "\n"
    "An open-loop put/get/del workload that checks every value it reads,\n"
    "then waits for the ring to be quiet and reads every key it wrote once\n"
    "more. For churn experiments (scripts/churn). --node may be a\n"
    "comma-separated list: connection i starts at node i mod n and falls\n"
    "back on all the others, retrying (unless --no-retry) until the\n"
    "operation's deadline. Each connection sends every operation straight\n"
    "to its key's owner, learning the ring from MOVED answers (retries\n"
    "count redirects too); with --route the node routes it.\n"
    "\n"
    "  --rate OPS          operations per second, all connections together,\n"
    "                      1..100000 [200]\n"
    "  --duration S        seconds of load, 1..86400 [60]\n"
    "  --keys K            key space, keys PREFIX0 .. PREFIX(K-1) [1000]\n"
    "  --get-ratio F       fraction of operations that are GETs, 0..1 [0.5]\n"
    "  --del-ratio F       fraction that are DELs, 0..1 [0]; together with\n"
    "                      --get-ratio at most 1, the rest are PUTs\n"
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
    "  --lost-csv FILE     after the final pass, one row per key it found\n"
    "                      wrong: key, acked_seq, acked_t (s),\n"
    "                      first_bad_read_t (s, the first wrong read during\n"
    "                      the load since that write, or empty), readback\n"
    "                      (lost, older, resurrected, unreadable, garbled)\n"
    "  --value-size N      bytes per value, 48..65536 [100]\n"
    "  --prefix P          key prefix [load-<hex time>-, new every run]\n"
    "  --quiet-s S         wait up to S seconds after the load for the ring\n"
    "                      to be quiet, 1..3600 [30]: every node of --node\n"
    "                      answers STATS (or does not answer at all), is\n"
    "                      joined, has nothing pending, and its first\n"
    "                      successor answers and names it as predecessor,\n"
    "                      the same on two polls in a row; the final pass\n"
    "                      runs then, or when S is over (and says so)\n"
    "  --no-verify         skip the wait and the final pass\n"
    "\n"
    "A value is \"k<key>:seq<n>:\" and padding, n counting the writes (PUTs\n"
    "and DELs) of the key; one operation per key is in flight at a time.\n"
    "Every read is judged by the rule that a write acknowledged before\n"
    "another acknowledged write of the key was issued must not win: a read\n"
    "may give the key's last acknowledged write, a later one, or one never\n"
    "acknowledged. NOT_FOUND where a value must be read is lost; a value\n"
    "where only a DEL may be read is resurrected; any other value that may\n"
    "not win is older. During the load these are stale reads (lost ones:\n"
    "lost reads) and count as failed. Latency (p50, p99) is of succeeded\n"
    "operations, from when each was due. The final pass reads each written\n"
    "key once (with --deadline-ms) and counts lost, older, resurrected,\n"
    "unreadable and garbled keys. The last three lines of output are\n"
    "\"lost acknowledged writes: N\", \"older: N\" and \"resurrected: N\"\n"
    "(with --json, the fields lost_acked_writes, older and resurrected of\n"
    "the one object instead).\n"
    "--timeout-ms bounds only the start-up ping of each node.\n"
    "Exit status: 0 when the final pass found every key right and every\n"
    "read during the load was allowed, 1 otherwise, 2 on bad arguments or\n"
    "when no node answers at the start.\n";

/* A set of seqs of one key, as a bit string that grows on demand. */
typedef struct seq_bits {
  uint64_t *words; /* bit s of the string: seq s is in the set */
  size_t n_words;  /* 64-bit words in words */
} seq_bits;

/* What we know of one key. */
typedef struct key_state {
  uint64_t sent_seq;   /* highest seq of a write sent (0: none) */
  uint64_t acked_seq;  /* highest seq of a write acknowledged (0: none) */
  int64_t acked_ns;    /* when it was acknowledged (monotonic) */
  int64_t bad_ns;      /* first wrong read since then, or 0 */
  seq_bits failed;     /* writes that failed (they may land late) */
  seq_bits dels;       /* writes that were DELs */
  bool busy;           /* an operation on it is in flight */
  uint8_t final;       /* the final pass's verdict */
} key_state;

/* How a read stands against the rule (see the top of the file). */
enum verdict {
  J_PENDING,     /* not read yet (final pass) */
  J_OK,          /* the last acknowledged write, or a later one */
  J_UNACKED,     /* an earlier write never acknowledged: allowed */
  J_LOST,        /* NOT_FOUND where a value must be read */
  J_OLDER,       /* a value that may not win */
  J_RESURRECTED, /* a value where only a DEL may be read */
  J_UNREADABLE,  /* no answer within the deadline, or an error */
  J_GARBLED,     /* a value this run did not write */
  J_COUNT
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
  dht_cluster *cl;   /* its client, straight to each key's owner ... */
  dht_client *c;     /* ... or with --route, routed by its node */
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
  double del_ratio;          /* --del-ratio */
  uint64_t deadline_ms;      /* --deadline-ms */
  uint64_t conns_n;          /* --connections */
  uint64_t seed;             /* --seed */
  const char *csv_path;      /* --csv, or NULL */
  const char *lost_path;     /* --lost-csv, or NULL */
  uint64_t value_size;       /* --value-size */
  char prefix[PREFIX_LEN_MAX + 1]; /* --prefix */
  uint64_t quiet_s;          /* --quiet-s */
  bool verify;               /* not --no-verify: the final pass */

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
  uint64_t puts, dels, writes_acked, gets;
  uint64_t stale;            /* reads older or resurrected */
  uint64_t unacked_reads;    /* reads of a write never acknowledged */
  uint64_t lost_reads;       /* NOT_FOUND where a value must be read */
  uint64_t garbled;          /* values this run did not write */
  uint64_t acked_late;       /* writes acknowledged after their deadline */
  uint64_t retries;          /* attempts beyond the first, all calls */
  uint64_t err_counts[ERR_CODES]; /* failed calls by -code ([0]: other) */
  char first_error[NOTE_LEN]; /* what the first failure was */
  cli_hist lat;              /* latencies of succeeded ops, in us */

  /* The final pass. */
  bool quiet;                /* the ring was quiet before it */
  double quiet_secs;         /* waited for quiet */
  char quiet_why[NOTE_LEN];  /* why it was not, when it was not */
  uint64_t next_fkey;        /* next key to read */
  uint64_t final_keys;       /* keys read: every key written */
  double final_secs;         /* time the reads took */
  uint64_t final_counts[J_COUNT]; /* keys per verdict */
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

static bool seq_in(const seq_bits *b, uint64_t seq) {
  return seq / 64 < b->n_words && (b->words[seq / 64] >> (seq % 64) & 1u) != 0;
}

/* Adds seq to b. Returns false when out of memory (b is left as it was). */
static bool seq_add(seq_bits *b, uint64_t seq) {
  size_t need = (size_t)(seq / 64) + 1, words;
  uint64_t *p;

  if (need > b->n_words) {
    words = b->n_words > 0 ? b->n_words * 2 : 1;
    while (words < need) {
      words *= 2;
    }
    p = realloc(b->words, words * sizeof(*p));
    if (p == NULL) {
      return false;
    }
    memset(p + b->n_words, 0, (words - b->n_words) * sizeof(*p));
    b->words = p;
    b->n_words = words;
  }
  b->words[seq / 64] |= 1ull << (seq % 64);
  return true;
}

/* True when NOT_FOUND is an allowed read of ks: nothing acknowledged yet
 * (the key's absence before its first write), or a DEL that may win: the
 * last acknowledged write, one sent after it, or an earlier one that was
 * never acknowledged. */
static bool may_read_absent(const key_state *ks) {
  uint64_t s;

  if (ks->acked_seq == 0) {
    return true;
  }
  for (s = 1; s <= ks->sent_seq; s++) {
    if (seq_in(&ks->dels, s) &&
        (s >= ks->acked_seq || seq_in(&ks->failed, s))) {
      return true;
    }
  }
  return false;
}

/* Judges a read of ks, found with seq or NOT_FOUND, by the rule at the top
 * of the file. Writes of a key never overlap, so every write below
 * acked_seq was acknowledged before acked_seq was issued unless it failed,
 * and every write above it was issued after it was acknowledged. Returns
 * an enum verdict. */
static int judge(const key_state *ks, bool found, uint64_t seq) {
  if (!found) {
    return may_read_absent(ks) ? J_OK : J_LOST;
  }
  if (seq == 0 || seq > ks->sent_seq || seq_in(&ks->dels, seq)) {
    return J_GARBLED;
  }
  if (seq >= ks->acked_seq) {
    return J_OK;
  }
  if (seq_in(&ks->failed, seq)) {
    return J_UNACKED;
  }
  return may_read_absent(ks) ? J_RESURRECTED : J_OLDER;
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

/* Under mu. Notes a read during the load that the rule forbids (verdict
 * J_LOST, J_OLDER, J_RESURRECTED or J_GARBLED) of key k, due in row r. */
static void note_bad_read(load *l, uint64_t k, uint64_t r, int verdict,
                          uint64_t got_seq, int64_t end, const char *key) {
  static const char *const kinds[J_COUNT] = {
      [J_LOST] = "lost read", [J_OLDER] = "stale read (older)",
      [J_RESURRECTED] = "stale read (resurrected)",
      [J_GARBLED] = "garbled read"};
  char what[NOTE_LEN];

  if (verdict == J_GARBLED) {
    l->garbled++;
    snprintf(what, sizeof(what),
             "GET %s returned a value this run did not write for it", key);
    note_first(l, what);
    return;
  }
  if (verdict == J_LOST) {
    l->lost_reads++;
    l->rows[r].lost++;
  } else {
    l->stale++;
    l->rows[r].stale++;
  }
  if (l->ks[k].bad_ns == 0) {
    l->ks[k].bad_ns = end;
  }
  if (verdict == J_LOST) {
    snprintf(what, sizeof(what),
             "%s: GET %s answered NOT_FOUND after seq %" PRIu64
             " was acknowledged",
             kinds[verdict], key, l->ks[k].acked_seq);
  } else {
    snprintf(what, sizeof(what),
             "%s: GET %s returned seq %" PRIu64 " after seq %" PRIu64
             " was acknowledged",
             kinds[verdict], key, got_seq, l->ks[k].acked_seq);
  }
  note_first(l, what);
}


/* The worker's calls, through whichever client it has. */
static int w_get(worker *w, const char *key, size_t key_len, uint8_t **got,
                 size_t *got_len, int timeout_ms) {
  return w->cl != NULL ? dht_cluster_get(w->cl, key, key_len, got, got_len,
                                         timeout_ms)
                       : dht_client_get(w->c, key, key_len, got, got_len,
                                        timeout_ms);
}

static int w_remove(worker *w, const char *key, size_t key_len,
                    int timeout_ms) {
  return w->cl != NULL ? dht_cluster_remove(w->cl, key, key_len, timeout_ms)
                       : dht_client_remove(w->c, key, key_len, timeout_ms);
}

static int w_put(worker *w, const char *key, size_t key_len, const uint8_t *value,
                 size_t value_len, int timeout_ms) {
  return w->cl != NULL ? dht_cluster_put(w->cl, key, key_len, value, value_len,
                                         timeout_ms)
                       : dht_client_put(w->c, key, key_len, value, value_len,
                                        timeout_ms);
}

static unsigned w_attempts(const worker *w) {
  return w->cl != NULL ? dht_cluster_last_attempts(w->cl)
                       : dht_client_last_attempts(w->c);
}

static const char *w_error(const worker *w) {
  return w->cl != NULL ? dht_cluster_last_error(w->cl)
                       : dht_client_last_error(w->c);
}

/* Runs operation i on worker w. */
static void run_op(worker *w, uint64_t i, uint8_t *value) {
  load *l = w->l;
  int64_t due = l->t0_ns + (int64_t)((double)i * 1e9 / (double)l->rate);
  int64_t deadline = due + (int64_t)l->deadline_ms * 1000000, now, end;
  uint64_t r = i / l->rate, rnd = mix64(l->seed * 0x100000001B3ull ^ i);
  double u = (double)(mix64(rnd) >> 11) * 0x1.0p-53;
  bool is_get = u < l->get_ratio, is_del = !is_get && u < l->get_ratio +
                                                          l->del_ratio;
  const char *op = is_get ? "GET" : is_del ? "DEL" : "PUT";
  uint64_t k, seq = 0, got_seq = 0;
  char key[KEY_TEXT_MAX], what[NOTE_LEN];
  uint8_t *got = NULL;
  size_t key_len, got_len = 0;
  unsigned attempts;
  int rv, timeout_ms, verdict;
  bool ok;

  sleep_until_ns(due);
  pthread_mutex_lock(&l->mu);
  k = claim_key(l, rnd % l->keys);
  now = mono_ns();
  /* A write gets its seq only when it is sent, so that one never sent
   * cannot pass for a write that may land; a DEL must be on record as one
   * before it may land. */
  if (now < deadline && !is_get &&
      (!is_del || seq_add(&l->ks[k].dels, l->ks[k].sent_seq + 1))) {
    seq = ++l->ks[k].sent_seq;
  }
  if (now >= deadline || (!is_get && seq == 0)) {
    /* Every worker was busy until past the deadline (or, for a DEL, no
     * memory to record it): never sent. */
    if (now >= deadline) {
      l->late++;
      snprintf(what, sizeof(what),
               "operation %" PRIu64 " found no free connection within %" PRIu64
               " ms (raise --connections)",
               i, l->deadline_ms);
      note_first(l, what);
    } else {
      note_error(l, DHT_ERR_NOMEM, "out of memory");
    }
    l->ks[k].busy = false;
    pthread_cond_signal(&l->key_freed);
    op_ended(l, r, false, 0);
    pthread_mutex_unlock(&l->mu);
    return;
  }
  l->gets += is_get;
  l->dels += is_del;
  l->puts += !is_get && !is_del;
  pthread_mutex_unlock(&l->mu);

  timeout_ms = (int)((deadline - now + 999999) / 1000000);
  key_len = key_text(l, k, key);
  if (is_get) {
    rv = w_get(w, key, key_len, &got, &got_len, timeout_ms);
  } else if (is_del) {
    rv = w_remove(w, key, key_len, timeout_ms);
  } else {
    value_text(l, k, seq, value);
    rv = w_put(w, key, key_len, value, l->value_size, timeout_ms);
  }
  end = mono_ns();

  pthread_mutex_lock(&l->mu);
  attempts = w_attempts(w);
  l->retries += attempts > 1 ? attempts - 1 : 0;
  ok = false;
  if (!is_get && (rv == 0 || (is_del && rv == DHT_ERR_NOT_FOUND))) {
    /* Acknowledged, even when too late to count as a success; a DEL of a
     * key the ring does not have leaves it absent, as a DEL should. */
    rv = 0;
    l->writes_acked++;
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
    /* Out of memory loses the mark: a late landing would then be
     * reported as older, without the excuse. */
    seq_add(&l->ks[k].failed, seq);
  } else if (rv == 0 || rv == DHT_ERR_NOT_FOUND) {
    verdict = rv == 0 && !value_seq(k, got, got_len, &got_seq)
                  ? J_GARBLED
                  : judge(&l->ks[k], rv == 0, got_seq);
    if (verdict == J_OK || verdict == J_UNACKED) {
      l->unacked_reads += verdict == J_UNACKED;
      ok = true;
    } else {
      note_bad_read(l, k, r, verdict, got_seq, end, key);
    }
  }
  if (rv != 0 && rv != DHT_ERR_NOT_FOUND) {
    snprintf(what, sizeof(what), "%s %s: %s", op, key,
             w_error(w));
    note_error(l, rv, what);
  } else if (ok && end > deadline) {
    /* The call keeps to its timeout; this is the last millisecond. */
    ok = false;
    snprintf(what, sizeof(what), "%s %s: answered %.3f ms after the deadline",
             op, key, (double)(end - deadline) / 1e6);
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

/* ---- the final pass ----------------------------------------------------- */

/* What one node of --node said in one poll for quiet. */
typedef struct node_view {
  bool up;                                 /* it answered STATS */
  dht_client_peer pred;                    /* its predecessor, if has_pred */
  bool has_pred;
  size_t n_succs;                          /* entries in succs */
  dht_client_peer succs[DHT_SUCC_LIST_MAX]; /* its successor list */
} node_view;

/* The index in l->nodes of addr, or -1. */
static long node_index(const load *l, const char *addr) {
  size_t i;

  for (i = 0; i < l->n_nodes; i++) {
    if (strcmp(l->nodes[i], addr) == 0) {
      return (long)i;
    }
  }
  return -1;
}

/* Asks addr for STATS with a client of its own, for a node not on --node.
 * Returns 0 or a DHT_ERR_*. */
static int stats_of(const load *l, const char *addr,
                    dht_client_stats_result *st) {
  dht_client *c;
  int rv = dht_client_new(&c, addr, &l->ctx->settings);

  if (rv == 0) {
    rv = dht_client_stats(c, st, QUIET_CALL_MS);
    dht_client_del(c);
  }
  return rv;
}

/* One poll of every node of --node (clients[i] asks node i). Fills views
 * and returns true when the ring looks quiet: some node answers; every
 * node that answers is joined with nothing pending; none lists a node of
 * --node that does not answer as a successor; and each one's first
 * successor answers and names it as predecessor. Else why says why. */
static bool quiet_poll(load *l, dht_client **clients, node_view *views,
                       dht_client_stats_result *st, char *why,
                       size_t why_len) {
  size_t i, j, n_up = 0;
  uint64_t state, pending;

  for (i = 0; i < l->n_nodes; i++) {
    node_view *v = &views[i];
    memset(v, 0, sizeof(*v));
    if (dht_client_stats(clients[i], st, QUIET_CALL_MS) != 0) {
      continue;
    }
    v->up = true;
    n_up++;
    if (dht_client_stats_counter(st, "state", &state) == 0 &&
        state != DHT_NODE_JOINED) {
      snprintf(why, why_len, "%s is not joined (state %" PRIu64 ")",
               l->nodes[i], state);
      return false;
    }
    if (dht_client_stats_counter(st, "pending", &pending) == 0 &&
        pending > 0) {
      snprintf(why, why_len, "%s has %" PRIu64 " requests pending",
               l->nodes[i], pending);
      return false;
    }
    v->has_pred = st->has_pred;
    v->pred = st->pred;
    v->n_succs = st->n_succs;
    memcpy(v->succs, st->succs, st->n_succs * sizeof(st->succs[0]));
  }
  if (n_up == 0) {
    snprintf(why, why_len, "no node answers");
    return false;
  }
  for (i = 0; i < l->n_nodes; i++) {
    const node_view *v = &views[i];
    const char *succ, *succ_pred;
    long s;
    if (!v->up || v->n_succs == 0 ||
        strcmp(v->succs[0].addr, l->nodes[i]) == 0) {
      continue; /* down, or alone in its ring */
    }
    for (j = 0; j < v->n_succs; j++) {
      s = node_index(l, v->succs[j].addr);
      if (s >= 0 && !views[s].up) {
        snprintf(why, why_len, "%s lists %s, which does not answer",
                 l->nodes[i], v->succs[j].addr);
        return false;
      }
    }
    succ = v->succs[0].addr;
    s = node_index(l, succ);
    if (s >= 0) {
      succ_pred = views[s].has_pred ? views[s].pred.addr : "";
    } else if (stats_of(l, succ, st) == 0) {
      succ_pred = st->has_pred ? st->pred.addr : "";
    } else {
      snprintf(why, why_len, "%s's successor %s does not answer",
               l->nodes[i], succ);
      return false;
    }
    if (strcmp(succ_pred, l->nodes[i]) != 0) {
      snprintf(why, why_len, "%s's successor %s has predecessor %s",
               l->nodes[i], succ, succ_pred[0] != '\0' ? succ_pred : "(none)");
      return false;
    }
  }
  return true;
}

/* True when two polls saw the same nodes up with the same neighbours. */
static bool views_equal(const node_view *a, const node_view *b, size_t n) {
  size_t i, j;

  for (i = 0; i < n; i++) {
    if (a[i].up != b[i].up || a[i].has_pred != b[i].has_pred ||
        a[i].n_succs != b[i].n_succs ||
        (a[i].has_pred && strcmp(a[i].pred.addr, b[i].pred.addr) != 0)) {
      return false;
    }
    for (j = 0; j < a[i].n_succs; j++) {
      if (strcmp(a[i].succs[j].addr, b[i].succs[j].addr) != 0) {
        return false;
      }
    }
  }
  return true;
}

/* Waits until two polls in a row find the ring quiet and unchanged, or
 * quiet_s has passed; records which, and how long it took. Returns 0 or
 * -1 (out of memory). */
static int wait_quiet(load *l) {
  int64_t t0 = mono_ns(), until = t0 + (int64_t)l->quiet_s * 1000000000;
  dht_client_stats_result *st = malloc(sizeof(*st));
  node_view *views = calloc(2 * l->n_nodes, sizeof(*views));
  dht_client **clients = calloc(l->n_nodes, sizeof(*clients));
  bool was_quiet = false;
  int rv = st != NULL && views != NULL && clients != NULL ? 0 : -1;
  size_t i, cur = 0;

  for (i = 0; rv == 0 && i < l->n_nodes; i++) {
    rv = dht_client_new(&clients[i], l->nodes[i], &l->ctx->settings) == 0 ? 0 : -1;
  }
  while (rv == 0) {
    node_view *now = views + cur * l->n_nodes,
              *before = views + (1 - cur) * l->n_nodes;
    bool quiet = quiet_poll(l, clients, now, st, l->quiet_why,
                            sizeof(l->quiet_why));
    if (quiet && was_quiet && views_equal(now, before, l->n_nodes)) {
      l->quiet = true;
      l->quiet_why[0] = '\0';
      break;
    }
    if (quiet) {
      snprintf(l->quiet_why, sizeof(l->quiet_why),
               "the ring changed between two polls");
    }
    was_quiet = quiet;
    cur = 1 - cur;
    if (mono_ns() + (int64_t)QUIET_POLL_MS * 1000000 >= until) {
      break;
    }
    sleep_until_ns(mono_ns() + (int64_t)QUIET_POLL_MS * 1000000);
  }
  l->quiet_secs = (double)(mono_ns() - t0) / 1e9;
  if (clients != NULL) {
    for (i = 0; i < l->n_nodes; i++) {
      dht_client_del(clients[i]);
    }
  }
  free(clients);
  free(views);
  free(st);
  return rv;
}

/* Reads keys of the final pass, one at a time, until none is left. */
static void *final_worker(void *arg) {
  worker *w = arg;
  load *l = w->l;
  char key[KEY_TEXT_MAX];
  uint64_t k, seq;
  uint8_t *got;
  size_t got_len, key_len;
  int rv, verdict;

  for (;;) {
    pthread_mutex_lock(&l->mu);
    while (l->next_fkey < l->keys && l->ks[l->next_fkey].sent_seq == 0) {
      l->next_fkey++; /* never written: nothing to judge */
    }
    k = l->next_fkey < l->keys ? l->next_fkey++ : UINT64_MAX;
    pthread_mutex_unlock(&l->mu);
    if (k == UINT64_MAX) {
      break;
    }
    key_len = key_text(l, k, key);
    got = NULL;
    got_len = 0;
    seq = 0;
    rv = w_get(w, key, key_len, &got, &got_len, (int)l->deadline_ms);
    pthread_mutex_lock(&l->mu);
    if (rv == 0 && !value_seq(k, got, got_len, &seq)) {
      verdict = J_GARBLED;
    } else if (rv == 0 || rv == DHT_ERR_NOT_FOUND) {
      verdict = judge(&l->ks[k], rv == 0, seq);
    } else {
      verdict = J_UNREADABLE;
    }
    l->ks[k].final = (uint8_t)verdict;
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
    l->next_fkey = l->keys;
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

/* The final pass: waits for quiet, then reads every key written once.
 * Returns 0 or -1 (out of memory, or no thread could be started). */
static int final_pass(load *l) {
  int64_t t0;
  uint64_t k;

  if (wait_quiet(l) != 0) {
    return -1;
  }
  t0 = mono_ns();
  l->next_fkey = 0;
  if (run_workers(l, final_worker, false) != 0) {
    return -1;
  }
  for (k = 0; k < l->keys; k++) {
    if (l->ks[k].sent_seq > 0) {
      l->final_keys++;
      l->final_counts[l->ks[k].final]++;
    }
  }
  l->final_secs = (double)(mono_ns() - t0) / 1e9;
  return 0;
}

/* The final pass's verdicts as --lost-csv and the text name them. */
static const char *const verdict_names[J_COUNT] = {
    "pending",     "ok",         "unacked", "lost", "older",
    "resurrected", "unreadable", "garbled"};

/* True when the final pass found key state ks wrong. */
static bool final_wrong(const key_state *ks) {
  return ks->sent_seq > 0 && ks->final != J_OK && ks->final != J_UNACKED;
}

/* Writes --lost-csv: the keys the final pass found wrong. Returns 0 or -1
 * (errno set). */
static int write_lost(const load *l, FILE *f) {
  char key[KEY_TEXT_MAX];
  uint64_t k;

  fputs("key,acked_seq,acked_t,first_bad_read_t,readback\n", f);
  for (k = 0; k < l->keys; k++) {
    const key_state *ks = &l->ks[k];
    if (!final_wrong(ks)) {
      continue;
    }
    key_text(l, k, key);
    fprintf(f, "%s,%" PRIu64 ",", key, ks->acked_seq);
    if (ks->acked_seq > 0) {
      fprintf(f, "%.3f", (double)(ks->acked_ns - l->t0_ns) / 1e9);
    }
    fputc(',', f);
    if (ks->bad_ns != 0) {
      fprintf(f, "%.3f", (double)(ks->bad_ns - l->t0_ns) / 1e9);
    }
    fprintf(f, ",%s\n", verdict_names[ks->final]);
  }
  return fflush(f) == 0 && !ferror(f) ? 0 : -1;
}

/* ---- report ------------------------------------------------------------- */

/* Keys the final pass found wrong, of every kind. */
static uint64_t final_bad(const load *l) {
  return l->final_counts[J_LOST] + l->final_counts[J_OLDER] +
         l->final_counts[J_RESURRECTED] + l->final_counts[J_UNREADABLE] +
         l->final_counts[J_GARBLED];
}

static bool run_clean(const load *l) {
  return final_bad(l) == 0 && l->stale == 0 && l->lost_reads == 0 &&
         l->garbled == 0;
}

/* The one JSON object of --json; p50 and p99 in us, ratio of successes. */
static void report_json(const load *l, double secs, uint64_t p50,
                        uint64_t p99, double ratio) {
  FILE *f = stdout;
  bool first = true;
  int i;

  fprintf(f, "{\"ok\":%s,\"command\":\"load\",\"nodes\":%zu,",
          run_clean(l) ? "true" : "false", l->n_nodes);
  fprintf(f,
          "\"connections\":%" PRIu64 ",\"rate\":%" PRIu64
          ",\"duration_s\":%" PRIu64 ",\"keys\":%" PRIu64
          ",\"get_ratio\":%g,\"del_ratio\":%g,\"deadline_ms\":%" PRIu64
          ",\"seed\":%" PRIu64 ",\"prefix\":",
          l->conns_n, l->rate, l->duration_s, l->keys, l->get_ratio,
          l->del_ratio, l->deadline_ms, l->seed);
  cli_json_str(f, l->prefix);
  fprintf(f,
          ",\"elapsed_s\":%.3f,\"attempted\":%" PRIu64 ",\"succeeded\":%" PRIu64
          ",\"failed\":%" PRIu64 ",\"late\":%" PRIu64
          ",\"success_ratio\":%.6f,\"puts\":%" PRIu64 ",\"dels\":%" PRIu64
          ",\"writes_acked\":%" PRIu64 ",\"acked_late\":%" PRIu64
          ",\"gets\":%" PRIu64 ",\"stale_reads\":%" PRIu64
          ",\"unacked_reads\":%" PRIu64 ",\"lost_reads\":%" PRIu64
          ",\"garbled_reads\":%" PRIu64 ",\"retries\":%" PRIu64
          ",\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
          "\"errors\":{",
          secs, l->total_ops, l->ok, l->failed, l->late, ratio, l->puts,
          l->dels, l->writes_acked, l->acked_late, l->gets, l->stale,
          l->unacked_reads, l->lost_reads, l->garbled, l->retries,
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
  if (!l->verify) {
    fputs(",\"final_pass\":null,\"lost_acked_writes\":null,\"older\":null,"
          "\"resurrected\":null}\n",
          f);
    return;
  }
  fprintf(f, ",\"final_pass\":{\"quiet\":%s,\"quiet_wait_s\":%.3f,"
             "\"not_quiet_because\":",
          l->quiet ? "true" : "false", l->quiet_secs);
  if (l->quiet) {
    fputs("null", f);
  } else {
    cli_json_str(f, l->quiet_why);
  }
  fprintf(f,
          ",\"keys\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"unacked\":%" PRIu64
          ",\"lost\":%" PRIu64 ",\"older\":%" PRIu64 ",\"resurrected\":%" PRIu64
          ",\"unreadable\":%" PRIu64 ",\"garbled\":%" PRIu64
          ",\"elapsed_s\":%.3f}",
          l->final_keys, l->final_counts[J_OK], l->final_counts[J_UNACKED],
          l->final_counts[J_LOST], l->final_counts[J_OLDER],
          l->final_counts[J_RESURRECTED], l->final_counts[J_UNREADABLE],
          l->final_counts[J_GARBLED], l->final_secs);
  fprintf(f,
          ",\"lost_acked_writes\":%" PRIu64 ",\"older\":%" PRIu64
          ",\"resurrected\":%" PRIu64 "}\n",
          l->final_counts[J_LOST], l->final_counts[J_OLDER],
          l->final_counts[J_RESURRECTED]);
}

static void report(const load *l, double secs) {
  uint64_t p50 = cli_hist_quantile(&l->lat, 0.50),
           p99 = cli_hist_quantile(&l->lat, 0.99);
  double ratio = l->total_ops > 0 ? (double)l->ok / (double)l->total_ops : 0;
  FILE *f = stdout;
  bool first = true;
  int i;

  if (l->ctx->json) {
    report_json(l, secs, p50, p99, ratio);
    return;
  }
  fprintf(f,
          "load: %zu node%s, %" PRIu64 " connections, %" PRIu64
          " ops/s for %" PRIu64 " s, %" PRIu64
          " keys, get ratio %.2f, del ratio %.2f, deadline %" PRIu64
          " ms, seed %" PRIu64 "\n",
          l->n_nodes, l->n_nodes == 1 ? "" : "s", l->conns_n, l->rate,
          l->duration_s, l->keys, l->get_ratio, l->del_ratio, l->deadline_ms,
          l->seed);
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
          "writes:       %" PRIu64 " puts and %" PRIu64 " dels (%" PRIu64
          " acknowledged, %" PRIu64 " of them after the deadline); gets: %" PRIu64
          "\n",
          l->puts, l->dels, l->writes_acked, l->acked_late, l->gets);
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
          "stale reads:  %" PRIu64 " (older or resurrected; besides, %" PRIu64
          " reads of a write never acknowledged, which may land)\n",
          l->stale, l->unacked_reads);
  fprintf(f, "lost reads:   %" PRIu64 "\n", l->lost_reads);
  if (l->garbled > 0) {
    fprintf(f, "garbled:      %" PRIu64 " reads of values this run did not "
            "write\n", l->garbled);
  }
  if (!l->verify) {
    fprintf(f, "final pass:   skipped (--no-verify)\n");
    return;
  }
  if (l->quiet) {
    fprintf(f, "quiet:        after %.2f s\n", l->quiet_secs);
  } else {
    fprintf(f, "quiet:        not after %.2f s (%s); read anyway\n",
            l->quiet_secs, l->quiet_why);
  }
  fprintf(f,
          "final pass:   %" PRIu64 " keys written: %" PRIu64
          " right (%" PRIu64 " with a write never acknowledged), %" PRIu64
          " lost, %" PRIu64 " older, %" PRIu64 " resurrected, %" PRIu64
          " unreadable",
          l->final_keys, l->final_counts[J_OK] + l->final_counts[J_UNACKED],
          l->final_counts[J_UNACKED], l->final_counts[J_LOST],
          l->final_counts[J_OLDER], l->final_counts[J_RESURRECTED],
          l->final_counts[J_UNREADABLE]);
  if (l->final_counts[J_GARBLED] > 0) {
    fprintf(f, ", %" PRIu64 " garbled", l->final_counts[J_GARBLED]);
  }
  fprintf(f, " in %.2f s\n", l->final_secs);
  fprintf(f, "lost acknowledged writes: %" PRIu64 "\n",
          l->final_counts[J_LOST]);
  fprintf(f, "older: %" PRIu64 "\n", l->final_counts[J_OLDER]);
  fprintf(f, "resurrected: %" PRIu64 "\n", l->final_counts[J_RESURRECTED]);
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
    {"--quiet-s", NULL, 1, QUIET_S_MAX, 30, offsetof(load, quiet_s)},
};

/* load's other options, for cli_scan_opts(). */
static int load_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  load *l = ud;
  const char *v;
  int rv;

  if ((rv = cli_flag_take(ctx, a, "--no-verify", &l->verify, false)) != 0 ||
      (rv = cli_ratio_take(ctx, a, "--get-ratio", &l->get_ratio)) != 0 ||
      (rv = cli_ratio_take(ctx, a, "--del-ratio", &l->del_ratio)) != 0) {
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

/* Creates connection c's client: a cluster client whose seed is node c
 * mod n (with --route a client of that node), falling back on the others,
 * in ring-list order after it. Returns 0 or a DHT_ERR_*. */
static int make_client(load *l, uint64_t c) {
  const char *others[NODES_MAX];
  size_t first = (size_t)(c % l->n_nodes), j;
  worker *w = &l->workers[c];
  dht_client *seed;
  int rv;

  if (l->ctx->route) {
    rv = dht_client_new(&w->c, l->nodes[first], &l->ctx->settings);
    seed = w->c;
  } else {
    rv = dht_cluster_new(&w->cl, l->nodes[first], &l->ctx->settings);
    seed = rv == 0 ? dht_cluster_seed(w->cl) : NULL;
  }
  if (rv != 0) {
    return rv;
  }
  for (j = 1; j < l->n_nodes; j++) {
    others[j - 1] = l->nodes[(first + j) % l->n_nodes];
  }
  rv = dht_client_set_fallbacks(seed, others, l->n_nodes - 1);
  if (rv != 0) {
    return rv;
  }
  dht_client_set_retry(seed, !l->ctx->no_retry);
  if (w->cl != NULL) {
    dht_cluster_set_retry(w->cl, !l->ctx->no_retry);
  }
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
    if (dht_client_new(&c, l->nodes[i], &l->ctx->settings) != 0) {
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
  if (l.get_ratio + l.del_ratio > 1.0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                  "--get-ratio %g and --del-ratio %g add up to more than 1",
                  l.get_ratio, l.del_ratio);
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
  if (l.verify && final_pass(&l) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                  "load: out of memory for the final pass");
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
      dht_cluster_del(l.workers[c].cl);
    }
  }
  if (l.ks != NULL) {
    for (k = 0; k < l.keys; k++) {
      free(l.ks[k].failed.words);
      free(l.ks[k].dels.words);
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
  pthread_cond_destroy(&l.key_freed);
  pthread_mutex_destroy(&l.mu);
  return rv;
}
