/*
 * bench.c: `dht bench`, a load generator for a ring.
 *
 * One thread, one poll() loop over C connections, each keeping up to P
 * requests in flight through the client library's pipelined layer
 * (dht_client_queue / dht_client_flush / dht_client_recv): the requests
 * that refill a connection's window go out in one write per node. A
 * connection is a cluster client (dht/cluster.h): a socket per node it
 * sends to, each request to its key's owner by its map, a MOVED answer
 * sending it on to the node named; with --route, one socket to the node
 * given, which routes every request. Each request is a
 * PUT or a GET of a key drawn uniformly from a fixed key space, from a
 * seeded generator, so two runs with the same options send the same
 * sequence.
 *
 * A GET of a key that was never put is answered NOT_FOUND: that counts as a
 * completed operation ("not found"), not as an error, and is timed like any
 * other. --prefill puts every key first (pipelined, not measured), so that
 * all GETs find their key. Latencies go into the shared log-linear
 * histogram (hist.c: exact below 1024 us, 0.2% above), so memory does not
 * grow with the number of requests.
 */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dht/err.h"

#define CONNS_MAX 1024
#define PIPELINE_MAX 1024
#define KEYS_MAX 100000000ull
#define DURATION_S_DEFAULT 10
#define DURATION_S_MAX 86400
#define REQUESTS_MAX 1000000000000ull
#define KEY_TEXT_MAX 32      /* "bench-" and up to 20 digits */
#define POLL_WAIT_MS_MAX 100 /* wake up at least this often */

const char cli_bench_usage[] =
    "usage: dht bench [-c N] [-P N] [--put-ratio F] [--keys N]\n"
    "                 [--value-size N] [--duration S | --requests N]\n"
    "                 [--prefill] [--seed N]\n"
    "\n"
    "Sends PUTs and GETs to the ring as fast as it answers, over N\n"
    "connections with up to P requests in flight on each (one thread, one\n"
    "poll loop), then prints throughput and latency. Each connection learns\n"
    "the ring from the node's STATS and sends each request straight to its\n"
    "key's owner, with a socket per node it talks to, following MOVED\n"
    "answers (counted as redirects); with --route every request goes to the\n"
    "node, which routes it.\n"
    "\n"
    "  -c, --connections N  connections, 1..1024 [4]\n"
    "  -P, --pipeline N     requests in flight per connection, 1..1024 [1]\n"
    "  --put-ratio F        fraction of requests that are PUTs, 0..1 [0.5]\n"
    "  --keys N             key space: keys bench-0 .. bench-(N-1),\n"
    "                       1..100000000 [10000]\n"
    "  --value-size N       bytes per value, 0..1048576 [100]\n"
    "  --duration S         run for S seconds, 1..86400 [10]\n"
    "  --requests N         or stop after N requests, 1..1000000000000\n"
    "  --prefill            first PUT every key of the key space (not\n"
    "                       measured), so that every GET finds its key\n"
    "  --seed N             seed of the key and operation sequence [1]\n"
    "\n"
    "Without --prefill, a GET of a key not yet put is answered NOT_FOUND:\n"
    "it is counted under \"not found\" and timed, not counted as an error.\n"
    "A request without a reply within --timeout-ms counts as an error\n"
    "(timeout). Latency percentiles cover completed requests (including not\n"
    "found), in microseconds. Exit status: 0 when the run completed and at\n"
    "least one request succeeded; 2 on bad arguments, when the node cannot\n"
    "be reached, the prefill has an error, every connection was lost, or\n"
    "nothing succeeded.\n";

/* One request in flight. */
typedef struct slot {
  dht_client *on; /* the client it was sent on */
  uint64_t rid;   /* as assigned by dht_client_queue */
  int64_t t0_ns;  /* when it was first queued */
  uint64_t key;   /* its key's index */
  bool busy;      /* waiting for its reply */
  bool is_put;    /* PUT, else GET */
  bool routed;    /* sent to the seed without direct */
  bool final;     /* ... or direct, believed to be at its owner */
  unsigned moved; /* MOVED answers it has followed */
} slot;

/* One connection of the run: with --route one client, else a cluster
 * client, with a connection to each node it sends to. */
typedef struct bconn {
  dht_cluster *cl; /* its clients */
  slot *slots;     /* P of them */
  unsigned busy;   /* slots in use */
  bool dead;       /* its seed was lost; its requests were counted */
} bconn;

/* A client of the poll set and the connection it belongs to. */
typedef struct polled {
  bconn *bc;
  dht_client *c;
} polled;

typedef struct bench {
  cli_ctx *ctx;              /* global options: node, timeout, json, route */
  uint64_t conns_n;          /* -c */
  uint64_t pipeline;         /* -P: requests in flight per connection */
  uint64_t keys;             /* --keys: size of the key space */
  uint64_t value_size;       /* --value-size, bytes */
  uint64_t duration_s;       /* --duration */
  uint64_t requests;         /* --requests (when by_requests) */
  uint64_t seed;             /* --seed */
  double put_ratio;          /* --put-ratio */
  bool prefill;              /* --prefill */
  bool by_requests;          /* stop after `requests`, not after duration_s */
  uint8_t *value;            /* value_size bytes sent with every PUT */
  bconn *conns;              /* conns_n connections */
  uint64_t rng;              /* xorshift64* state */
  uint64_t next_prefill_key; /* prefill: next key index to put */
  struct pollfd *pfds;       /* the poll set, n_polled of cap_polled */
  polled *polled;            /* ... and whose each entry is */
  size_t n_polled, cap_polled;

  /* Counters of the phase running (reset after the prefill). */
  uint64_t issued;       /* requests queued */
  uint64_t ok;           /* completed: OK, VALUE or GET's NOT_FOUND */
  uint64_t puts, gets;   /* completed or failed with a reply, by kind */
  uint64_t not_found;    /* GETs answered NOT_FOUND (included in ok) */
  uint64_t errors;       /* failed: error replies, timeouts, lost conns */
  uint64_t timeouts;     /* of which no reply within the timeout */
  uint64_t stale;        /* replies to requests already timed out */
  uint64_t redirects;    /* MOVED answers followed */
  uint64_t hops;         /* routing steps of the successful replies */
  uint64_t losses;       /* clients lost (client_lost), ever */
  char first_error[512]; /* what the first error was */
  cli_hist lat;          /* latencies of completed requests, in us */
} bench;

static int64_t mono_ns(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static uint64_t rng_next(bench *b) {
  b->rng ^= b->rng >> 12;
  b->rng ^= b->rng << 25;
  b->rng ^= b->rng >> 27;
  return b->rng * 0x2545F4914F6CDD1Dull;
}

/* ---- the run ------------------------------------------------------------ */

static void note_error(bench *b, const char *what) {
  b->errors++;
  if (b->first_error[0] == '\0') {
    snprintf(b->first_error, sizeof(b->first_error), "%s", what);
  }
}

/* The connection to c was lost (or could not be made): every request in
 * flight on it is lost with it, and a node of the map is forgotten. The
 * bench connection dies with its seed. */
static void client_lost(bench *b, bconn *bc, dht_client *c) {
  unsigned i;

  b->losses++;
  note_error(b, dht_client_last_error(c));
  for (i = 0; i < b->pipeline; i++) {
    if (bc->slots[i].busy && bc->slots[i].on == c) {
      bc->slots[i].busy = false;
      bc->busy--;
      b->errors++;
    }
  }
  if (c == dht_cluster_seed(bc->cl)) {
    bc->dead = true;
  }
  dht_cluster_forget(bc->cl, c);
}

static int key_text(char *out, uint64_t k) {
  return snprintf(out, KEY_TEXT_MAX, "bench-%llu", (unsigned long long)k);
}

/* Queues slot s's request on s->on (connecting it first), without writing
 * it: run() writes each client's batch with one flush. Returns 0, 1 when
 * the output queue is full (try later), or -1 when the client was lost. */
static int send_slot(bench *b, slot *s) {
  char key[KEY_TEXT_MAX];
  dht_msg req;
  int rv;

  if (!dht_client_connected(s->on) &&
      dht_client_connect(s->on, b->ctx->timeout_ms) != 0) {
    return -1;
  }
  memset(&req, 0, sizeof(req));
  req.type = s->is_put ? DHT_MSG_PUT : DHT_MSG_GET;
  req.key.p = (const uint8_t *)key;
  req.key.len = (size_t)key_text(key, s->key);
  if (s->is_put) {
    req.value.p = b->value;
    req.value.len = b->value_size;
  }
  req.direct = !s->routed;
  req.final = s->final;
  rv = dht_client_queue(s->on, &req, &s->rid);
  if (rv == DHT_ERR_FULL) {
    return 1;
  }
  return rv == 0 ? 0 : -1;
}

/* Points s at the node that owns its key by bc's map, or with --route at
 * the seed. */
static void aim(bench *b, bconn *bc, slot *s) {
  char key[KEY_TEXT_MAX];
  dht_id key_id;

  s->moved = 0;
  s->routed = b->ctx->route;
  s->final = false;
  if (s->routed) {
    s->on = dht_cluster_seed(bc->cl);
    return;
  }
  dht_id_hash(&key_id, key, (size_t)key_text(key, s->key));
  s->on = dht_cluster_pick(bc->cl, &key_id, &s->final);
}

/* Issues one new request on bc. Returns 0, 1 when the output queue is full
 * (try later), or -1 when a client was lost. */
static int issue(bench *b, bconn *bc, bool measuring) {
  unsigned i;
  slot *s;
  int rv;

  for (i = 0; i < b->pipeline && bc->slots[i].busy; i++) {
  }
  s = &bc->slots[i];
  if (measuring) {
    s->key = rng_next(b) % b->keys;
    s->is_put = (double)(rng_next(b) >> 11) * 0x1.0p-53 < b->put_ratio;
  } else {
    s->key = b->next_prefill_key;
    s->is_put = true;
  }
  aim(b, bc, s);
  rv = send_slot(b, s);
  if (rv != 0) {
    if (rv < 0) {
      client_lost(b, bc, s->on);
    }
    return rv;
  }
  if (!measuring) {
    b->next_prefill_key++;
  }
  s->busy = true;
  s->t0_ns = mono_ns();
  bc->busy++;
  b->issued++;
  return 0;
}

/* s was answered MOVED by r: sends it on to the node named, or routed to
 * the seed once it has followed DHT_CLUSTER_MOVED_MAX of them (or the node
 * named cannot be used). Its time keeps running from the first send. */
static void follow(bench *b, bconn *bc, slot *s, const dht_msg *r) {
  dht_client *next = NULL;
  int rv;

  b->redirects++;
  if (++s->moved <= DHT_CLUSTER_MOVED_MAX) {
    next = dht_cluster_moved(bc->cl, r, &s->final);
  }
  if (next == NULL) {
    next = dht_cluster_seed(bc->cl);
    s->routed = true;
    s->final = false;
  }
  s->on = next;
  rv = send_slot(b, s);
  if (rv != 0) {
    s->busy = false;
    bc->busy--;
    if (rv < 0) {
      client_lost(b, bc, next);
    } else {
      note_error(b, "bench: output queue full on a redirect");
    }
  }
}

static void complete(bench *b, bconn *bc, dht_client *c, const dht_msg *r,
                     int64_t now) {
  char what[512];
  slot *s = NULL;
  unsigned i;
  bool good;

  for (i = 0; i < b->pipeline; i++) {
    if (bc->slots[i].busy && bc->slots[i].on == c &&
        bc->slots[i].rid == r->rid) {
      s = &bc->slots[i];
      break;
    }
  }
  if (s == NULL) {
    b->stale++; /* the reply to a request that already timed out */
    return;
  }
  if (r->type == DHT_MSG_MOVED) {
    follow(b, bc, s, r);
    return;
  }
  s->busy = false;
  bc->busy--;
  if (s->is_put) {
    b->puts++;
    good = r->type == DHT_MSG_OK;
  } else {
    b->gets++;
    good = r->type == DHT_MSG_VALUE;
    if (r->type == DHT_MSG_ERROR && r->error_code == DHT_ERR_NOT_FOUND) {
      b->not_found++;
      good = true;
    }
  }
  if (good) {
    b->ok++;
    b->hops += r->hops;
    cli_hist_add(&b->lat, (uint64_t)(now - s->t0_ns) / 1000);
    return;
  }
  if (r->type == DHT_MSG_ERROR) {
    snprintf(what, sizeof(what), "%s answered ERROR %s to %s",
             dht_client_addr(c), dht_errname(r->error_code),
             s->is_put ? "PUT" : "GET");
  } else {
    snprintf(what, sizeof(what), "%s answered %s to %s", dht_client_addr(c),
             dht_msg_type_name(r->type), s->is_put ? "PUT" : "GET");
  }
  note_error(b, what);
}

/* Takes every reply that is ready on c, one of bc's clients. */
static void drain(bench *b, bconn *bc, dht_client *c) {
  uint64_t losses = b->losses;
  const dht_msg *r;
  int rv;

  for (;;) {
    rv = dht_client_recv(c, &r, 0);
    if (rv == DHT_ERR_TIMEOUT) {
      return;
    }
    if (rv == 0) {
      complete(b, bc, c, r, mono_ns());
      if (b->losses != losses) {
        return; /* a redirect lost a client, which may have been c */
      }
      continue;
    }
    if (!dht_client_connected(c)) {
      client_lost(b, bc, c);
      return;
    }
    /* A frame that did not decode: its request will time out. */
    note_error(b, dht_client_last_error(c));
  }
}

/* Drops requests older than the timeout, counting them as errors. Returns
 * the earliest time one of the others will expire, or INT64_MAX. */
static int64_t expire(bench *b, int64_t now) {
  int64_t timeout_ns = (int64_t)b->ctx->timeout_ms * 1000000, next = INT64_MAX;
  char what[512];
  uint64_t c;
  unsigned i;

  for (c = 0; c < b->conns_n; c++) {
    for (i = 0; i < b->pipeline; i++) {
      slot *s = &b->conns[c].slots[i];
      if (!s->busy) {
        continue;
      }
      if (now - s->t0_ns >= timeout_ns) {
        s->busy = false;
        b->conns[c].busy--;
        b->timeouts++;
        snprintf(what, sizeof(what), "no reply from %s within %d ms",
                 dht_client_addr(s->on), b->ctx->timeout_ms);
        note_error(b, what);
      } else if (s->t0_ns + timeout_ns < next) {
        next = s->t0_ns + timeout_ns;
      }
    }
  }
  return next;
}

/* Adds c, of bc, to the poll set unless it is there already for bc (its
 * entries are the last ones, from first on). Returns 0 or -1 (no
 * memory). */
static int poll_add(bench *b, bconn *bc, dht_client *c, size_t first) {
  size_t i;

  for (i = first; i < b->n_polled; i++) {
    if (b->polled[i].c == c) {
      return 0;
    }
  }
  if (b->n_polled == b->cap_polled) {
    size_t cap = b->cap_polled == 0 ? 64 : 2 * b->cap_polled;
    struct pollfd *pfds = realloc(b->pfds, cap * sizeof(*pfds));
    polled *pd;
    if (pfds == NULL) {
      return -1;
    }
    b->pfds = pfds;
    pd = realloc(b->polled, cap * sizeof(*pd));
    if (pd == NULL) {
      return -1;
    }
    b->polled = pd;
    b->cap_polled = cap;
  }
  b->pfds[b->n_polled].fd = dht_client_fd(c);
  b->pfds[b->n_polled].events = POLLIN;
  b->pfds[b->n_polled].revents = 0;
  b->polled[b->n_polled].bc = bc;
  b->polled[b->n_polled].c = c;
  b->n_polled++;
  return 0;
}

/* Gathers the poll set: the clients with requests in flight, only those
 * (a bench connection may hold a socket to every node, but with one
 * request in flight it waits on one), and writes each one's queued batch
 * with one flush: a send() per request cost the client more CPU than the
 * node spent answering (docs/PERFORMANCE.md). Returns 0 or -1 (out of
 * memory). */
static int flush_and_gather(bench *b) {
  uint64_t c, losses;
  size_t first, i;
  unsigned k;

  do {
    losses = b->losses;
    b->n_polled = 0;
    for (c = 0; c < b->conns_n; c++) {
      bconn *bc = &b->conns[c];
      first = b->n_polled;
      for (k = 0; k < b->pipeline && !bc->dead; k++) {
        if (bc->slots[k].busy &&
            poll_add(b, bc, bc->slots[k].on, first) != 0) {
          return -1;
        }
      }
    }
    for (i = 0; i < b->n_polled && b->losses == losses; i++) {
      dht_client *cl = b->polled[i].c;
      if (dht_client_want_write(cl) && dht_client_flush(cl) != 0) {
        client_lost(b, b->polled[i].bc, cl); /* its slots are no longer busy */
      } else if (dht_client_want_write(cl)) {
        b->pfds[i].events |= POLLOUT;
      }
    }
  } while (b->losses != losses); /* a lost client is freed: gather again */
  return 0;
}

/* Runs one phase: the prefill (measuring false: one PUT per key) or the
 * measurement. Returns 0, or -1 when every connection was lost. */
static int run(bench *b, bool measuring, int64_t end_ns) {
  uint64_t c, in_flight, live, target, losses;
  int64_t now, next, wait_ns;
  bool more;
  size_t i;
  int rv;

  target = measuring ? b->requests : b->keys;
  for (;;) {
    now = mono_ns();
    more = measuring && !b->by_requests ? now < end_ns : b->issued < target;
    in_flight = live = 0;
    for (c = 0; c < b->conns_n; c++) {
      bconn *bc = &b->conns[c];
      while (!bc->dead && more && bc->busy < b->pipeline) {
        if (issue(b, bc, measuring) != 0) {
          break;
        }
        more = measuring && !b->by_requests ? true : b->issued < target;
      }
    }
    if (flush_and_gather(b) != 0) {
      note_error(b, "out of memory");
      return -1;
    }
    for (c = 0; c < b->conns_n; c++) {
      if (!b->conns[c].dead) {
        live++;
        in_flight += b->conns[c].busy;
      }
    }
    if (live == 0 || (!more && in_flight == 0)) {
      break;
    }
    next = expire(b, now);
    wait_ns = (int64_t)POLL_WAIT_MS_MAX * 1000000;
    if (next != INT64_MAX && next - now < wait_ns) {
      wait_ns = next - now;
    }
    if (measuring && !b->by_requests && more && end_ns - now < wait_ns) {
      wait_ns = end_ns - now;
    }
    rv = poll(b->pfds, (nfds_t)b->n_polled,
              wait_ns > 0 ? (int)((wait_ns + 999999) / 1000000) : 0);
    if (rv < 0) {
      continue; /* EINTR */
    }
    losses = b->losses;
    /* A lost client is freed: the rest of the set waits for the next round
     * (poll is level-triggered, nothing is missed). */
    for (i = 0; i < b->n_polled && b->losses == losses; i++) {
      short ev = b->pfds[i].revents;
      bconn *bc = b->polled[i].bc;
      dht_client *cl = b->polled[i].c;
      if (ev == 0 || bc->dead) {
        continue;
      }
      if ((ev & POLLOUT) && dht_client_flush(cl) != 0) {
        client_lost(b, bc, cl);
        continue;
      }
      if (ev & (POLLIN | POLLHUP | POLLERR | POLLNVAL)) {
        drain(b, bc, cl);
      }
    }
    expire(b, mono_ns());
  }
  for (c = 0; c < b->conns_n; c++) {
    if (!b->conns[c].dead) {
      return 0;
    }
  }
  return -1;
}

static void reset_counters(bench *b) {
  b->issued = b->ok = b->puts = b->gets = 0;
  b->not_found = b->errors = b->timeouts = b->stale = b->redirects = 0;
  b->hops = 0;
  b->first_error[0] = '\0';
  cli_hist_reset(&b->lat);
}

static void report(const bench *b, double secs, double prefill_secs) {
  uint64_t p50 = cli_hist_quantile(&b->lat, 0.50),
           p99 = cli_hist_quantile(&b->lat, 0.99),
           p999 = cli_hist_quantile(&b->lat, 0.999);
  double rate = secs > 0 ? (double)b->ok / secs : 0.0;
  FILE *f = stdout;

  if (b->ctx->json) {
    fputs("{\"ok\":true,\"command\":\"bench\",\"node\":", f);
    cli_json_str(f, b->ctx->node);
    fprintf(f,
            ",\"connections\":%llu,\"pipeline\":%llu,\"put_ratio\":%g,"
            "\"keys\":%llu,\"value_size\":%llu,\"prefill\":%s,\"seed\":%llu,",
            (unsigned long long)b->conns_n, (unsigned long long)b->pipeline,
            b->put_ratio, (unsigned long long)b->keys,
            (unsigned long long)b->value_size, b->prefill ? "true" : "false",
            (unsigned long long)b->seed);
    if (b->prefill) {
      fprintf(f, "\"prefill_s\":%.3f,", prefill_secs);
    }
    fprintf(f,
            "\"duration_s\":%.3f,\"ops\":%llu,\"puts\":%llu,\"gets\":%llu,"
            "\"ops_per_s\":%.1f,\"latency_us\":{\"p50\":%llu,\"p99\":%llu,"
            "\"p999\":%llu,\"max\":%llu},\"not_found\":%llu,\"errors\":%llu,"
            "\"timeouts\":%llu,\"redirects\":%llu,\"routed\":%s,"
            "\"hops_mean\":%.3f,\"first_error\":",
            secs, (unsigned long long)b->ok, (unsigned long long)b->puts,
            (unsigned long long)b->gets, rate, (unsigned long long)p50,
            (unsigned long long)p99, (unsigned long long)p999,
            (unsigned long long)b->lat.max_us, (unsigned long long)b->not_found,
            (unsigned long long)b->errors, (unsigned long long)b->timeouts,
            (unsigned long long)b->redirects,
            b->ctx->route ? "true" : "false",
            b->ok > 0 ? (double)b->hops / (double)b->ok : 0.0);
    if (b->first_error[0] != '\0') {
      cli_json_str(f, b->first_error);
    } else {
      fputs("null", f);
    }
    fputs("}\n", f);
    return;
  }
  fprintf(f,
          "bench: %s (%s), %llu connections x %llu in flight, put ratio "
          "%.2f, %llu keys, %llu-byte values\n",
          b->ctx->node,
          b->ctx->route ? "routed by it" : "straight to each key's owner",
          (unsigned long long)b->conns_n,
          (unsigned long long)b->pipeline, b->put_ratio,
          (unsigned long long)b->keys, (unsigned long long)b->value_size);
  if (b->prefill) {
    fprintf(f, "prefill:     %llu keys in %.2f s\n",
            (unsigned long long)b->keys, prefill_secs);
  }
  fprintf(f, "ops:         %llu in %.2f s (%llu puts, %llu gets)\n",
          (unsigned long long)b->ok, secs, (unsigned long long)b->puts,
          (unsigned long long)b->gets);
  fprintf(f, "throughput:  %.0f ops/s\n", rate);
  fprintf(f, "latency us:  p50 %llu  p99 %llu  p99.9 %llu  max %llu\n",
          (unsigned long long)p50, (unsigned long long)p99,
          (unsigned long long)p999, (unsigned long long)b->lat.max_us);
  fprintf(f, "not found:   %llu%s\n", (unsigned long long)b->not_found,
          b->not_found > 0 && !b->prefill ? " (GETs of keys not yet put; see "
                                            "--prefill)"
                                          : "");
  fprintf(f, "errors:      %llu (%llu timeouts)\n",
          (unsigned long long)b->errors, (unsigned long long)b->timeouts);
  if (!b->ctx->route) {
    fprintf(f, "redirects:   %llu (MOVED answers followed)\n",
            (unsigned long long)b->redirects);
  } else {
    fprintf(f, "hops:        %.2f per request (mean routing steps)\n",
            b->ok > 0 ? (double)b->hops / (double)b->ok : 0.0);
  }
  if (b->first_error[0] != '\0') {
    fprintf(f, "first error: %s\n", b->first_error);
  }
}

/* bench's numeric options, with their defaults. --duration and
 * --requests default to 0, "not given": they exclude each other. */
static const cli_num_opt bench_num_opts[] = {
    {"-c", "--connections", 1, CONNS_MAX, 4, offsetof(bench, conns_n)},
    {"-P", "--pipeline", 1, PIPELINE_MAX, 1, offsetof(bench, pipeline)},
    {"--keys", NULL, 1, KEYS_MAX, 10000, offsetof(bench, keys)},
    {"--value-size", NULL, 0, CLI_VALUE_LEN_MAX, 100,
     offsetof(bench, value_size)},
    {"--duration", NULL, 1, DURATION_S_MAX, 0, offsetof(bench, duration_s)},
    {"--requests", NULL, 1, REQUESTS_MAX, 0, offsetof(bench, requests)},
    {"--seed", NULL, 0, UINT64_MAX, 1, offsetof(bench, seed)},
};

/* bench's other options, for cli_scan_opts(). */
static int bench_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  bench *b = ud;
  int rv = cli_flag_take(ctx, a, "--prefill", &b->prefill, true);

  return rv != 0 ? rv : cli_ratio_take(ctx, a, "--put-ratio", &b->put_ratio);
}

int cli_bench(cli_ctx *ctx, int argc, char **argv) {
  int64_t t0, t1, prefill_ns = 0;
  bench b;
  uint64_t c;
  int rv;

  memset(&b, 0, sizeof(b));
  b.ctx = ctx;
  b.put_ratio = 0.5;
  rv = cli_scan_opts(ctx, argc, argv, cli_bench_usage, bench_num_opts,
                     CLI_COUNT_OF(bench_num_opts), bench_opt, &b);
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  if (b.duration_s > 0 && b.requests > 0) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "give --duration or --requests, not both");
  }
  b.by_requests = b.requests > 0;
  if (b.duration_s == 0) {
    b.duration_s = DURATION_S_DEFAULT;
  }
  /* xorshift must not start at 0. */
  b.rng = b.seed ^ 0x9E3779B97F4A7C15ull;
  if (b.rng == 0) {
    b.rng = 1;
  }
  b.value = malloc(b.value_size > 0 ? b.value_size : 1);
  b.conns = calloc(b.conns_n, sizeof(*b.conns));
  if (b.value == NULL || cli_hist_init(&b.lat) != 0 || b.conns == NULL) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (c = 0; c < b.value_size; c++) {
    b.value[c] = (uint8_t)('a' + c % 26);
  }
  for (c = 0; c < b.conns_n; c++) {
    dht_client *seed;
    b.conns[c].slots = calloc(b.pipeline, sizeof(slot));
    if (b.conns[c].slots == NULL ||
        dht_cluster_new(&b.conns[c].cl, ctx->node, &ctx->settings) != 0) {
      rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                    "cannot set up connection %llu", (unsigned long long)c);
      goto out;
    }
    seed = dht_cluster_seed(b.conns[c].cl);
    rv = dht_client_connect(seed, ctx->timeout_ms);
    if (rv != 0) {
      rv = cli_fail_call(ctx, seed, rv, NULL, 0);
      goto out;
    }
    /* The ring as the node sees it; a node that will not say (a client
     * key may not ask STATS of an old node) leaves the map to MOVED. */
    if (!ctx->route) {
      (void)dht_cluster_learn(b.conns[c].cl, ctx->timeout_ms);
      /* Requests go to the owners, the seed's node among them through a
       * connection of its own: this one would only count against the
       * node's connections per address (it reopens for a routed one). */
      dht_client_close(seed);
    }
  }

  if (b.prefill) {
    t0 = mono_ns();
    if (run(&b, false, 0) != 0 || b.errors > 0) {
      rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_UNAVAILABLE,
                    "bench: prefill failed (%llu errors): %s",
                    (unsigned long long)b.errors, b.first_error);
      goto out;
    }
    prefill_ns = mono_ns() - t0;
    reset_counters(&b);
  }

  t0 = mono_ns();
  if (run(&b, true, t0 + (int64_t)b.duration_s * 1000000000) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_UNAVAILABLE,
                  "bench: every connection was lost: %s", b.first_error);
    goto out;
  }
  t1 = mono_ns();
  if (b.ok == 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR,
                  b.timeouts > 0 ? DHT_ERR_TIMEOUT : DHT_ERR_UNAVAILABLE,
                  "bench: no request succeeded (%llu errors): %s",
                  (unsigned long long)b.errors, b.first_error);
    goto out;
  }
  report(&b, (double)(t1 - t0) / 1e9, (double)prefill_ns / 1e9);
  rv = CLI_EXIT_OK;
out:
  if (b.conns != NULL) {
    for (c = 0; c < b.conns_n; c++) {
      dht_cluster_del(b.conns[c].cl);
      free(b.conns[c].slots);
    }
  }
  free(b.conns);
  free(b.pfds);
  free(b.polled);
  cli_hist_free(&b.lat);
  free(b.value);
  return rv;
}
