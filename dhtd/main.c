/*
 * main.c: dhtd, one Chord node as a process. Parses the flags, opens the
 * store, starts the libuv adapter (net.c) around a dht_node, creates or
 * joins a ring, and on SIGTERM/SIGINT leaves gracefully (hands its keys to
 * its successor, tells its neighbours) before exiting 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <uv.h>

#include "dht/client.h"
#include "dht/err.h"
#include "dht/node.h"
#include "dht/seal.h"
#include "dht/store_lmdb.h"
#include "bootstrap.h"
#include "log.h"
#include "metrics.h"
#include "net.h"

/* How long a graceful leave may take before the process exits anyway. */
#define LEAVE_TIMEOUT_MS 10000
/* How often DIR/peers is brought up to date (when the peers changed). */
#define PEERS_SAVE_MS 5000

static const char usage[] =
    "Usage: dhtd --listen HOST:PORT (--data-dir DIR | --memory) [options]\n"
    "\n"
    "Runs one node of a Chord ring. Without --join, and without peers\n"
    "remembered in --data-dir, it starts a new ring.\n"
    "SIGTERM or SIGINT leaves gracefully: the node hands its keys to its\n"
    "successor and tells its neighbours, then exits 0 (a second signal exits\n"
    "at once).\n"
    "\n"
    "  --listen HOST:PORT     address to listen on (numeric IPv4 or [IPv6]);\n"
    "                         a specific one is also where connections to\n"
    "                         peers come from\n"
    "  --advertise HOST:PORT  address other nodes use to reach this one, which\n"
    "                         also sets its ring id; behind NAT or in a\n"
    "                         container, the host's address and the port\n"
    "                         published for --listen [the --listen address]\n"
    "  --join HOST:PORT[,HOST:PORT...]\n"
    "                         join the ring these nodes belong to, asking them\n"
    "                         in turn (a host name: each of its addresses,\n"
    "                         resolved at start; one that does not resolve is\n"
    "                         skipped). A list that names this node itself\n"
    "                         makes it a seed: when none of the others is in a\n"
    "                         ring (the whole ring starting at once), it founds\n"
    "                         one instead of giving up\n"
    "  --data-dir DIR         keep keys in an LMDB environment in DIR, and the\n"
    "                         node's last peers in DIR/peers: on a restart it\n"
    "                         re-joins its ring through them (after the --join\n"
    "                         nodes, or alone without --join); remove the file\n"
    "                         to start a new ring\n"
    "  --memory               keep keys in memory only (lost on exit)\n"
    "  --sync MODE            always: fsync every group commit (survives power\n"
    "                         loss); interval: fsync every --sync-interval-ms;\n"
    "                         none: leave flushing to the OS (survives a crash\n"
    "                         of dhtd, not of the machine) [always]\n"
    "  --sync-interval-ms N   with --sync interval [1000]\n"
    "  --id HEX               40 hex digits: ring id instead of hash(advertise);\n"
    "                         needs --trust-ids\n"
    "  --trust-ids            take the ids peers claim, not only hash(address):\n"
    "                         for rings with --id; every node needs it, and\n"
    "                         anyone may then pick its ring position\n"
    "                         (docs/SECURITY.md)\n"
    "  --successors N         successor list length, 1..32 [4]\n"
    "  --replicas N           copies of each key, the owner's included, on\n"
    "                         the owner and its successors; at most\n"
    "                         --successors + 1 [3]\n"
    "  --anti-entropy-ms N    compare digests with each replica this often\n"
    "                         [1000]\n"
    "  --repair-rate BYTES    repair traffic per second, at least 1024\n"
    "                         [8388608]\n"
    "  --tombstone-grace-ms N how long a delete is remembered; a node down for\n"
    "                         longer must rejoin with an empty --data-dir\n"
    "                         [3600000]\n"
    "  --max-clock-skew-ms N  how far apart the wall clocks of the ring and\n"
    "                         its clients may be: a write stamped further\n"
    "                         ahead of this node's clock is refused [10000]\n"
    "  --stabilize-ms N       stabilize interval [500]\n"
    "  --fix-fingers-ms N     refresh the next finger every N ms while they\n"
    "                         change, every 4 N once a whole pass changed\n"
    "                         none [250]\n"
    "  --ping-ms N            predecessor check interval [1000]\n"
    "  --timeout-ms N         longest wait for one peer reply before resending;\n"
    "                         the wait adapts to measured round trips [500]\n"
    "  --rto-min-ms N         shortest wait for one peer reply [100]\n"
    "\n"
  "Limits (docs/SECURITY.md, Limits): each hit is counted in dht stats\n"
  "(limit_*) and logged once per remote address.\n"
  "  --max-client-conns N   accepted connections not known to be peer links;\n"
  "                         past it new ones must prove they are [1024]\n"
  "  --max-peer-conns N     links this node opens to peers, and separately\n"
  "                         accepted ones that proved to be peer links (a\n"
  "                         member key; in an open ring, a ring-internal\n"
  "                         message) [256]\n"
  "  --max-conns-per-addr N accepted connections from one IPv4 address or\n"
  "                         IPv6 /64, clients and peers together [64]\n"
  "  --idle-timeout-ms N    close an accepted connection idle this long;\n"
  "                         0: never [60000]\n"
  "  --frame-timeout-ms N   close an accepted connection that has not\n"
  "                         finished a frame this long after it began [10000]\n"
  "  --max-buffer-bytes N   partial frames and output queues of all\n"
  "                         connections: past 3/4 clients are not read, past\n"
  "                         it the connection holding most is dropped\n"
  "                         [134217728]\n"
  "  --max-inflight N       requests of one client connection without their\n"
  "                         reply before it is not read (until half are\n"
  "                         answered) [256]\n"
  "  --rate-per-addr N      requests per second on client connections from\n"
  "                         one address, beyond it refused with ERROR FULL;\n"
  "                         0: no limit [20000]\n"
  "  --rate-burst N         requests one address may send at once [40000]\n"
    "  --out-queue-max BYTES  output queued to one connection before it is\n"
    "                         dropped; at least twice the largest frame\n"
    "                         (8388616) [16777216]\n"
    "  --cluster-key-file FILE  run a closed ring: every connection must prove\n"
    "                         it holds this ring's key (dht keygen FILE makes\n"
    "                         one; mode 0600), and every frame is encrypted\n"
    "                         and authenticated. Peers without it, or with\n"
    "                         another ring's, are closed; holders of the\n"
    "                         client key (dht keygen --client) may only put,\n"
    "                         get, del, lookup, ping and ask stats. Every node\n"
    "                         of a ring needs the same member key [open ring:\n"
    "                         anyone who reaches the port is trusted]\n"
    "  --handshake-timeout-ms N  with a key: close a connection that has not\n"
    "                         proved it by then [5000]\n"
    "  --metrics HOST:PORT    serve the node's metrics to Prometheus at\n"
    "                         http://HOST:PORT/metrics (a numeric address;\n"
    "                         docs/SECURITY.md, Limits) [off]\n"
    "  --metrics-max-conns N  connections to --metrics at once; past it new\n"
    "                         ones are closed as they come [16]\n"
    "  --metrics-timeout-ms N\n"
    "                         close a --metrics connection that has not sent\n"
    "                         a whole request (at most 8 KiB) or taken its\n"
    "                         answer this long after it came or was last\n"
    "                         answered [10000]\n"
    "  --log-level LEVEL      error, warn, info or debug [info]\n"
    "  --log-format FORMAT    text: one line per event, tagged with the\n"
    "                         node's short id; json: one JSON object per\n"
    "                         line (time, level, node, msg and the line's\n"
    "                         fields), start-up errors too [text]\n"
    "  --help                 this text\n"
    "  --version              print the version\n";

typedef struct options {
  const char *listen;
  const char *advertise;
  const char *join;
  const char *data_dir;
  bool memory;
  const char *id_hex;
  dht_sync_mode sync;
  uint32_t sync_interval_ms;
  uint32_t max_client_conns;     /* --max-client-conns */
  uint32_t max_peer_conns;       /* --max-peer-conns */
  uint32_t max_conns_per_addr;   /* --max-conns-per-addr */
  uint32_t idle_timeout_ms;      /* --idle-timeout-ms */
  uint32_t frame_timeout_ms;     /* --frame-timeout-ms */
  uint64_t max_buffer_bytes;     /* --max-buffer-bytes */
  uint32_t max_inflight;         /* --max-inflight */
  uint32_t rate_per_addr;        /* --rate-per-addr */
  uint32_t rate_burst;           /* --rate-burst */
  uint64_t out_queue_max;
  dht_log_level log_level;
  const char *key_file;          /* --cluster-key-file, or NULL */
  uint32_t handshake_timeout_ms; /* --handshake-timeout-ms */
  const char *metrics;           /* --metrics HOST:PORT, or NULL */
  uint32_t metrics_max_conns;    /* --metrics-max-conns */
  uint32_t metrics_timeout_ms;   /* --metrics-timeout-ms */
  dht_settings settings;
} options;

typedef struct daemon_state {
  uv_loop_t *loop;
  dht_node *node;
  dht_store *store;
  bool lmdb;
  dhtd_net *net;
  dhtd_metrics *metrics; /* --metrics, or NULL */
  uv_signal_t sigterm, sigint;
  uv_timer_t leave_timer;
  uv_timer_t sync_timer;
  uv_timer_t peers_timer;  /* brings DIR/peers up to date */
  bool peers_kept;         /* --data-dir: DIR/peers is kept */
  dhtd_peers_file peers;   /* DIR/peers */
  dhtd_join_list joins;    /* the join candidates, in order */
  char join_what[DHT_ADDR_LEN_MAX + 600]; /* what they are, for the log */
  int exit_code;
  int exit_code_after_leave; /* 0, or 1 when the store failed for good */
  bool stopping;
} daemon_state;

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  char text[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  dhtd_log_startup_error(text);
  return 2;
}

static int parse_u64(const char *flag, const char *s, uint64_t min,
                     uint64_t max, uint64_t *out) {
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull(s, &end, 10);
  if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0 || v < min ||
      v > max) {
    return fail("%s wants a number in %llu..%llu, not '%s'", flag,
                (unsigned long long)min, (unsigned long long)max, s);
  }
  *out = v;
  return 0;
}

static int parse_u32(const char *flag, const char *s, uint32_t min,
                     uint32_t max, uint32_t *out) {
  uint64_t v;
  int rv = parse_u64(flag, s, min, max, &v);

  if (rv == 0) {
    *out = (uint32_t)v;
  }
  return rv;
}

static int unknown_option(const char *flag) {
  return fail("unknown option '%s' (see dhtd --help)", flag);
}

/* Whether --help lists flag ("\n  --flag "). Every flag the parser takes is
 * there, so this tells an unknown flag from a known one whose value is
 * missing before looking for the value. */
static bool in_usage(const char *flag) {
  const char *p = usage;
  size_t len = strlen(flag);

  while ((p = strstr(p, "\n  ")) != NULL) {
    p += 3;
    if (strncmp(p, flag, len) == 0 && p[len] == ' ') {
      return true;
    }
  }
  return false;
}

/* Returns 0 to run, 1 when --help/--version was served, 2 on a bad flag. */
static int parse_args(int argc, char **argv, options *o) {
  int i;

  memset(o, 0, sizeof(*o));
  /* First, so that even a bad flag before it is said in its format. */
  for (i = 1; i + 1 < argc; i++) {
    if (strcmp(argv[i], "--log-format") == 0) {
      dhtd_log_format_set(argv[i + 1]);
    }
  }
  o->sync = DHT_SYNC_ALWAYS;
  o->sync_interval_ms = 1000;
  o->max_client_conns = 1024;
  o->max_peer_conns = 256;
  o->max_conns_per_addr = 64;
  o->idle_timeout_ms = 60000;
  o->frame_timeout_ms = 10000;
  o->max_buffer_bytes = 128u * 1024 * 1024;
  o->max_inflight = 256;
  o->rate_per_addr = 20000;
  o->rate_burst = 40000;
  o->out_queue_max = 16u * 1024 * 1024;
  o->log_level = DHT_LOG_INFO;
  o->handshake_timeout_ms = 5000;
  o->metrics_max_conns = 16;
  o->metrics_timeout_ms = 10000;
  dht_settings_default(&o->settings);

  for (i = 1; i < argc; i++) {
    const char *flag = argv[i];
    const char *val = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes_value = true;
    int rv = 0;

    if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
      fputs(usage, stdout);
      return 1;
    }
    if (strcmp(flag, "--version") == 0) {
      printf("dhtd %s (protocol %d)\n", DHT_VERSION, DHT_PROTOCOL_VERSION);
      return 1;
    }
    if (strcmp(flag, "--memory") == 0) {
      o->memory = true;
      continue;
    }
    if (strcmp(flag, "--trust-ids") == 0) {
      o->settings.trust_ids = true;
      continue;
    }
    if (flag[0] != '-') {
      return fail("unexpected argument '%s' (see dhtd --help)", flag);
    }
    if (!in_usage(flag)) {
      return unknown_option(flag);
    }
    if (val == NULL) {
      return fail("%s needs a value (see dhtd --help)", flag);
    }
    if (strcmp(flag, "--listen") == 0) {
      o->listen = val;
    } else if (strcmp(flag, "--advertise") == 0) {
      o->advertise = val;
    } else if (strcmp(flag, "--join") == 0) {
      o->join = val;
    } else if (strcmp(flag, "--data-dir") == 0) {
      o->data_dir = val;
    } else if (strcmp(flag, "--id") == 0) {
      o->id_hex = val;
    } else if (strcmp(flag, "--sync") == 0) {
      if (dht_sync_mode_parse(&o->sync, val) != 0) {
        rv = fail("--sync wants always, interval or none, not '%s'", val);
      }
    } else if (strcmp(flag, "--sync-interval-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000, &o->sync_interval_ms);
    } else if (strcmp(flag, "--successors") == 0) {
      rv = parse_u32(flag, val, 1, DHT_SUCC_LIST_MAX,
                     &o->settings.succ_list_len);
    } else if (strcmp(flag, "--replicas") == 0) {
      rv = parse_u32(flag, val, 1, DHT_SUCC_LIST_MAX, &o->settings.replicas);
    } else if (strcmp(flag, "--anti-entropy-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000, &o->settings.sync_interval_ms);
    } else if (strcmp(flag, "--repair-rate") == 0) {
      rv = parse_u32(flag, val, 1024, UINT32_MAX,
                     &o->settings.repair_bytes_per_s);
    } else if (strcmp(flag, "--max-clock-skew-ms") == 0) {
      rv = parse_u32(flag, val, 1, 24u * 3600 * 1000,
                     &o->settings.max_clock_skew_ms);
    } else if (strcmp(flag, "--tombstone-grace-ms") == 0) {
      rv = parse_u32(flag, val, 1, UINT32_MAX,
                     &o->settings.tombstone_grace_ms);
    } else if (strcmp(flag, "--rto-min-ms") == 0) {
      rv = parse_u32(flag, val, 1, 600000, &o->settings.rto_min_ms);
    } else if (strcmp(flag, "--stabilize-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000,
                     &o->settings.stabilize_interval_ms);
    } else if (strcmp(flag, "--fix-fingers-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000,
                     &o->settings.fix_fingers_interval_ms);
    } else if (strcmp(flag, "--ping-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000,
                     &o->settings.check_pred_interval_ms);
    } else if (strcmp(flag, "--timeout-ms") == 0) {
      rv = parse_u32(flag, val, 1, 600000, &o->settings.rpc_timeout_ms);
    } else if (strcmp(flag, "--max-client-conns") == 0) {
      rv = parse_u32(flag, val, 1, 1000000, &o->max_client_conns);
    } else if (strcmp(flag, "--max-peer-conns") == 0) {
      rv = parse_u32(flag, val, 4, 1000000, &o->max_peer_conns);
    } else if (strcmp(flag, "--max-conns-per-addr") == 0) {
      rv = parse_u32(flag, val, 1, 1000000, &o->max_conns_per_addr);
    } else if (strcmp(flag, "--idle-timeout-ms") == 0) {
      rv = parse_u32(flag, val, 0, 86400000, &o->idle_timeout_ms);
    } else if (strcmp(flag, "--frame-timeout-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000, &o->frame_timeout_ms);
    } else if (strcmp(flag, "--max-buffer-bytes") == 0) {
      rv = parse_u64(flag, val, 1024u * 1024, (uint64_t)1 << 40,
                     &o->max_buffer_bytes);
    } else if (strcmp(flag, "--max-inflight") == 0) {
      rv = parse_u32(flag, val, 1, 1000000, &o->max_inflight);
    } else if (strcmp(flag, "--rate-per-addr") == 0) {
      rv = parse_u32(flag, val, 0, 100000000, &o->rate_per_addr);
    } else if (strcmp(flag, "--rate-burst") == 0) {
      rv = parse_u32(flag, val, 1, 100000000, &o->rate_burst);
    } else if (strcmp(flag, "--out-queue-max") == 0) {
      /* Twice the largest frame: a smaller queue would drop every
       * connection that carries a full hand-off batch or a large value. */
      rv = parse_u64(flag, val,
                     2 * ((uint64_t)o->settings.limits.frame_len_max +
                          DHT_FRAME_HEADER_LEN),
                     (uint64_t)1 << 34, &o->out_queue_max);
    } else if (strcmp(flag, "--cluster-key-file") == 0) {
      o->key_file = val;
    } else if (strcmp(flag, "--handshake-timeout-ms") == 0) {
      rv = parse_u32(flag, val, 1, 600000, &o->handshake_timeout_ms);
    } else if (strcmp(flag, "--metrics") == 0) {
      o->metrics = val;
    } else if (strcmp(flag, "--metrics-max-conns") == 0) {
      rv = parse_u32(flag, val, 1, 1024, &o->metrics_max_conns);
    } else if (strcmp(flag, "--metrics-timeout-ms") == 0) {
      rv = parse_u32(flag, val, 1, 3600000, &o->metrics_timeout_ms);
    } else if (strcmp(flag, "--log-format") == 0) {
      if (dhtd_log_format_set(val) != 0) {
        rv = fail("--log-format wants text or json, not '%s'", val);
      }
    } else if (strcmp(flag, "--log-level") == 0) {
      if (dhtd_log_level_parse(val, &o->log_level) != 0) {
        rv = fail("--log-level wants error, warn, info or debug, not '%s'",
                  val);
      }
    } else {
      takes_value = false;
      rv = unknown_option(flag);
    }
    if (rv != 0) {
      return 2;
    }
    if (takes_value) {
      i++;
    }
  }
  if (o->listen == NULL) {
    return fail("--listen HOST:PORT is required (see dhtd --help)");
  }
  if ((o->data_dir == NULL) == !o->memory) {
    return fail("choose one of --data-dir DIR or --memory");
  }
  if (o->settings.replicas > o->settings.succ_list_len + 1) {
    return fail("--replicas %u needs --successors %u or more: replicas live "
                "on the successors",
                o->settings.replicas, o->settings.replicas - 1);
  }
  if (o->settings.rto_min_ms > o->settings.rpc_timeout_ms) {
    o->settings.rto_min_ms = o->settings.rpc_timeout_ms;
  }
  /* A peer must be able to route a key back to us by the route timeout: a
   * chain of forwards needs several resends' worth of time. */
  o->settings.route_timeout_ms = 8 * o->settings.rpc_timeout_ms;
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void stop(daemon_state *d, int exit_code) {
  if (d->stopping) {
    return;
  }
  d->stopping = true;
  d->exit_code = exit_code;
  dhtd_log_release(true); /* a signal or a store failure while joining */
  dhtd_net_stop(d->net);
  dhtd_metrics_stop(d->metrics);
  uv_close((uv_handle_t *)&d->sigterm, NULL);
  uv_close((uv_handle_t *)&d->sigint, NULL);
  uv_close((uv_handle_t *)&d->leave_timer, NULL);
  uv_close((uv_handle_t *)&d->sync_timer, NULL);
  uv_close((uv_handle_t *)&d->peers_timer, NULL);
}

static void on_node_event(void *ud, dht_event event, int error) {
  daemon_state *d = ud;

  switch (event) {
  case DHT_EVENT_JOINED:
    dhtd_log_release(true);
    dhtd_log(DHT_LOG_INFO, "joined the ring");
    break;
  case DHT_EVENT_JOIN_FAILED:
    dhtd_log_release(false); /* the line below says it all */
    fail("cannot join the ring through %s: %s", d->join_what,
         dht_strerror(error));
    stop(d, 1);
    break;
  case DHT_EVENT_LEFT:
    dhtd_log(DHT_LOG_INFO, "left the ring; exiting");
    stop(d, d->exit_code_after_leave);
    break;
  }
}

static void on_leave_timeout(uv_timer_t *t) {
  daemon_state *d = t->data;

  dhtd_log(DHT_LOG_WARN, "leave did not finish in %d ms; exiting anyway",
           LEAVE_TIMEOUT_MS);
  stop(d, d->exit_code_after_leave);
}

/* A commit failed. A full disk is the node's to handle (it refuses writes
 * until space is back); a store that cannot be trusted any more (an I/O
 * error, corruption) must not linger in the ring: the node leaves, handing
 * on what it can still read, and the process exits with an error. */
static void on_commit_failed(void *ud, int error) {
  daemon_state *d = ud;

  (void)error;
  if (!d->lmdb || !dht_store_lmdb_failed(d->store) || d->stopping ||
      uv_is_active((uv_handle_t *)&d->leave_timer)) {
    return;
  }
  dhtd_log(DHT_LOG_ERROR, "the store cannot go on (%s): leaving the ring",
           dht_store_errmsg(d->store));
  d->exit_code_after_leave = 1;
  if (dht_node_get_state(d->node) != DHT_NODE_JOINED) {
    stop(d, 1);
    return;
  }
  dht_node_leave(d->node, uv_now(d->loop));
  uv_timer_start(&d->leave_timer, on_leave_timeout, LEAVE_TIMEOUT_MS, 0);
}

static void on_signal(uv_signal_t *sig, int signum) {
  daemon_state *d = sig->data;

  if (d->stopping) {
    return;
  }
  if (dht_node_get_state(d->node) != DHT_NODE_JOINED ||
      uv_is_active((uv_handle_t *)&d->leave_timer)) {
    /* Not in a ring yet, or a second signal: go now. */
    dhtd_log(DHT_LOG_INFO, "signal %d: exiting", signum);
    stop(d, 0);
    return;
  }
  dhtd_log(DHT_LOG_INFO, "signal %d: leaving the ring", signum);
  if (d->peers_kept) {
    dhtd_peers_save(&d->peers, d->node); /* the ring as it is left */
  }
  dht_node_leave(d->node, uv_now(d->loop));
  uv_timer_start(&d->leave_timer, on_leave_timeout, LEAVE_TIMEOUT_MS, 0);
  dhtd_net_kick(d->net);
}

static void on_sync_timer(uv_timer_t *t) {
  daemon_state *d = t->data;
  int rv = dht_store_lmdb_sync(d->store);

  if (rv != 0) {
    dhtd_log(DHT_LOG_ERROR, "store sync failed: %s", dht_strerror(rv));
  }
}

static void on_peers_timer(uv_timer_t *t) {
  daemon_state *d = t->data;

  dhtd_peers_save(&d->peers, d->node);
}

/* Joins through the --join candidates and the peers remembered in DIR/peers,
 * in that order, or with neither starts a new ring. Returns 0, or 1 with
 * the reason said. */
static int start_ring(const options *o, daemon_state *d) {
  char err[DHT_ADDR_LEN_MAX + 256];
  size_t resolved = 0, remembered = 0;
  int rv;

  if (o->join != NULL) {
    resolved = dhtd_join_resolve(&d->joins, o->join, err, sizeof(err));
  }
  if (d->peers_kept) {
    remembered = dhtd_peers_load(&d->joins, o->data_dir, o->advertise);
  }
  if (o->join != NULL && resolved == 0 && remembered == 0) {
    dhtd_log_release(false);
    fail("cannot resolve any --join address: %s", err);
    return 1;
  }
  if (d->joins.n == 0) {
    dhtd_log_release(true);
    rv = dht_node_create_ring(d->node, uv_now(d->loop));
    dhtd_log(DHT_LOG_INFO, "started a new ring");
  } else {
    if (remembered == 0) {
      snprintf(d->join_what, sizeof(d->join_what), "%s", o->join);
    } else if (o->join != NULL) {
      snprintf(d->join_what, sizeof(d->join_what),
               "%s or the %zu peer%s remembered in %s/peers", o->join,
               remembered, remembered == 1 ? "" : "s", o->data_dir);
    } else {
      snprintf(d->join_what, sizeof(d->join_what),
               "the %zu peer%s remembered in %s/peers (remove that file to "
               "start a new ring)",
               remembered, remembered == 1 ? "" : "s", o->data_dir);
    }
    rv = dht_node_join_list(d->node, d->joins.ptrs, d->joins.n,
                            uv_now(d->loop));
  }
  if (rv != 0) {
    dhtd_log_release(false);
    fail("cannot start: %s", dht_strerror(rv));
    return 1;
  }
  return 0;
}

static int open_store(const options *o, daemon_state *d) {
  dht_store_lmdb_options lo;
  char err[256];
  int rv;

  if (o->memory) {
    d->store = dht_store_mem_new();
    return d->store != NULL ? 0 : fail("out of memory");
  }
  memset(&lo, 0, sizeof(lo));
  lo.sync = o->sync;
  lo.err = err;
  lo.err_len = sizeof(err);
  err[0] = '\0';
  rv = dht_store_lmdb_open(&d->store, o->data_dir, &lo);
  if (rv != 0) {
    return fail("cannot open data dir %s: %s", o->data_dir,
                err[0] != '\0' ? err : dht_strerror(rv));
  }
  d->lmdb = true;
  return 0;
}

/* A start that failed once the node was made: says why, lets the loop
 * finish closing what was opened, and frees it all. Returns 1. */
static int start_failed(daemon_state *d, const char *why) {
  fail("%s", why);
  dhtd_metrics_stop(d->metrics);
  uv_run(d->loop, UV_RUN_DEFAULT);
  dhtd_net_del(d->net);
  dhtd_metrics_del(d->metrics);
  dht_node_del(d->node);
  dht_store_del(d->store);
  return 1;
}

/* --metrics: serves the node's metrics on their own address. */
static int metrics_start(const options *o, daemon_state *d, char *err,
                         size_t err_len) {
  dhtd_metrics_config mc;

  memset(&mc, 0, sizeof(mc));
  mc.listen_addr = o->metrics;
  mc.conns_max = o->metrics_max_conns;
  mc.timeout_ms = o->metrics_timeout_ms;
  mc.node = d->node;
  mc.store = d->store;
  mc.lmdb = d->lmdb;
  return dhtd_metrics_start(&d->metrics, d->loop, &mc, err, err_len);
}

int main(int argc, char **argv) {
  dht_node_config cfg;
  dht_ring_key key;
  uv_timeval64_t wall;
  dhtd_net_config nc;
  daemon_state d;
  options o;
  dht_id id;
  char err[256], short_id[DHT_ID_SHORT_LEN], id_hex[DHT_ID_HEX_LEN];
  char host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port;
  int rv;

  rv = parse_args(argc, argv, &o);
  if (rv != 0) {
    return rv == 1 ? 0 : 2;
  }
  if (o.advertise == NULL) {
    o.advertise = o.listen;
  }
  dhtd_log_set_node(NULL, o.advertise);
  if (dht_addr_parse(o.advertise, host, sizeof(host), &port) != 0) {
    return fail("bad address '%s' (want HOST:PORT, [IPv6]:PORT)", o.advertise);
  }
  if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0) {
    return fail("listening on %s: give --advertise HOST:PORT, the address "
                "other nodes reach this one at", o.listen);
  }
  if (o.join != NULL && dhtd_join_check(o.join, err, sizeof(err)) != 0) {
    return fail("%s", err);
  }
  if (o.id_hex != NULL &&
      dht_id_from_hex(&id, o.id_hex, strlen(o.id_hex)) != 0) {
    return fail("--id wants 40 hex digits, not '%s'", o.id_hex);
  }
  if (o.id_hex != NULL && !o.settings.trust_ids) {
    return fail("--id needs --trust-ids (on every node of the ring): other "
                "nodes take only ids that are the hash of the address");
  }
  if (sodium_init() < 0) {
    return fail("libsodium failed to initialise");
  }
  signal(SIGPIPE, SIG_IGN); /* a peer that hangs up is an error code, not a
                               reason to die */

  memset(&key, 0, sizeof(key));
  if (o.key_file != NULL) {
    if (dht_ring_key_load(&key, o.key_file, err, sizeof(err)) != 0) {
      return fail("%s", err);
    }
    if (key.kind != DHT_KEY_MEMBER) {
      dht_ring_key_wipe(&key);
      return fail("%s holds a client key: a node needs the ring's member "
                  "key (the file dht keygen FILE wrote)",
                  o.key_file);
    }
  }

  memset(&d, 0, sizeof(d));
  d.loop = uv_default_loop();
  if (open_store(&o, &d) != 0) {
    return 1;
  }
  if (d.lmdb) {
    /* LMDB bounds key length; the wire limit must not promise more. */
    size_t max = dht_store_lmdb_key_len_max(d.store);
    if (max < o.settings.limits.key_len_max) {
      o.settings.limits.key_len_max = (uint32_t)max;
    }
  }

  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = o.advertise;
  cfg.id = o.id_hex != NULL ? &id : NULL;
  cfg.store = d.store;
  cfg.settings = o.settings;
  randombytes_buf(&cfg.seed, sizeof(cfg.seed));
  randombytes_buf(cfg.link_key, sizeof(cfg.link_key));
  if (uv_gettimeofday(&wall) == 0) {
    cfg.wall_ms = (uint64_t)wall.tv_sec * 1000 + (uint64_t)wall.tv_usec / 1000;
  }
  cfg.log = dhtd_log_node;
  cfg.log_level = o.log_level;
  cfg.group_commit = d.lmdb; /* net.c commits once per loop turn */
  rv = dht_node_new(&d.node, &cfg, uv_now(d.loop));
  if (rv != 0) {
    dht_store_del(d.store);
    fail("cannot create the node: %s", dht_strerror(rv));
    return 1;
  }
  dhtd_log_init(dht_id_short(dht_node_id(d.node), short_id), o.log_level);
  dhtd_log_set_node(dht_id_hex(dht_node_id(d.node), id_hex), o.advertise);

  memset(&nc, 0, sizeof(nc));
  nc.listen_addr = o.listen;
  nc.node = d.node;
  nc.store = d.store;
  nc.store_commit = d.lmdb ? dht_store_lmdb_commit : NULL;
  nc.frame_len_max = o.settings.limits.frame_len_max;
  nc.out_queue_max = o.out_queue_max;
  nc.out_queue_pause = o.out_queue_max / 4;
  nc.idle_close_ms = 60000;
  nc.client_conns_max = o.max_client_conns;
  nc.peer_conns_max = o.max_peer_conns;
  nc.conns_per_addr_max = o.max_conns_per_addr;
  nc.client_idle_ms = o.idle_timeout_ms;
  nc.frame_timeout_ms = o.frame_timeout_ms;
  nc.mem_max = o.max_buffer_bytes;
  nc.inflight_max = o.max_inflight;
  nc.rate_per_s = o.rate_per_addr;
  nc.rate_burst = o.rate_burst;
  nc.on_event = on_node_event;
  nc.on_commit_failed = on_commit_failed;
  nc.ud = &d;
  nc.key = key.kind != DHT_KEY_NONE ? &key : NULL;
  nc.handshake_timeout_ms = o.handshake_timeout_ms;
  if (o.metrics != NULL &&
      metrics_start(&o, &d, err, sizeof(err)) != 0) {
    return start_failed(&d, err);
  }
  rv = dhtd_net_start(&d.net, d.loop, &nc, err, sizeof(err));
  if (rv != 0) {
    return start_failed(&d, err);
  }

  uv_signal_init(d.loop, &d.sigterm);
  uv_signal_init(d.loop, &d.sigint);
  d.sigterm.data = d.sigint.data = &d;
  uv_signal_start(&d.sigterm, on_signal, SIGTERM);
  uv_signal_start(&d.sigint, on_signal, SIGINT);
  uv_timer_init(d.loop, &d.leave_timer);
  d.leave_timer.data = &d;
  uv_timer_init(d.loop, &d.sync_timer);
  d.sync_timer.data = &d;
  if (d.lmdb && o.sync == DHT_SYNC_INTERVAL) {
    uv_timer_start(&d.sync_timer, on_sync_timer, o.sync_interval_ms,
                   o.sync_interval_ms);
  }
  uv_timer_init(d.loop, &d.peers_timer);
  d.peers_timer.data = &d;
  d.peers_kept = d.lmdb;
  if (d.peers_kept) {
    dhtd_peers_init(&d.peers, o.data_dir);
    uv_timer_start(&d.peers_timer, on_peers_timer, PEERS_SAVE_MS,
                   PEERS_SAVE_MS);
  }

  /* Until the join is done (or a new ring is started); --log-level debug
   * shows every step as it happens. */
  if (o.log_level < DHT_LOG_DEBUG) {
    dhtd_log_hold();
  }
  dhtd_log(DHT_LOG_INFO, "listening on %s as %s, keys in %s (%zu stored), %s",
           o.listen, o.advertise, d.lmdb ? o.data_dir : "memory",
           dht_store_count(d.store),
           nc.key != NULL ? "closed ring (cluster key)"
                          : "open ring (no cluster key)");
  if (start_ring(&o, &d) != 0) {
    stop(&d, 1);
  }
  dhtd_net_kick(d.net);

  uv_run(d.loop, UV_RUN_DEFAULT);

  dhtd_net_del(d.net);
  dhtd_metrics_del(d.metrics);
  dht_node_del(d.node);
  dht_store_del(d.store); /* commits what is pending */
  uv_loop_close(d.loop);
  dht_ring_key_wipe(&key);
  return d.exit_code;
}
