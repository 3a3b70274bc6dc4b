/*
 * cli.h: what the parts of the dht command-line client share: the global
 * options, the argument scanner, number parsing, error reporting (one line
 * on stderr, plus a JSON object on stdout with --json) and the JSON and
 * text output helpers (cli_out.c), the latency histogram of bench and load
 * (hist.c) and the ring walk of ring and check (walk.c). The commands live
 * in dht.c, except the benchmark (bench.c), the ring checker and dht wait
 * (check.c), dht explain (explain.c) and the churn workload (load.c).
 */
#ifndef DHT_CLI_H
#define DHT_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dht/client.h"
#include "dht/cluster.h"
#include "dht/id.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_NOT_FOUND 1
#define CLI_EXIT_ERROR 2

#define CLI_KEY_LEN_MAX 1024u             /* the wire's default key_len_max */
#define CLI_VALUE_LEN_MAX (1024u * 1024u) /* ... and value_len_max */
#define CLI_TIMEOUT_MS_DEFAULT 5000
#define CLI_TIMEOUT_MS_MAX 3600000
/* Where scripts/ring starts its first node, and where the installed
 * service listens unless told otherwise. */
#define CLI_NODE_DEFAULT "127.0.0.1:7100"
/* Addresses in a --node list: the first and its fallbacks. */
#define CLI_NODES_MAX (1 + DHT_CLIENT_FALLBACKS_MAX)

/* Entries of an array. */
#define CLI_COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

#if defined(__GNUC__)
#define CLI_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CLI_PRINTF(f, a)
#endif

/* Options every command understands, before or after the command word. */
typedef struct cli_ctx {
  /* The first address of --node, $DHT_NODE or CLI_NODE_DEFAULT. */
  const char *node;
  const char *fallbacks[CLI_NODES_MAX - 1]; /* the list's other addresses */
  bool node_default; /* node is CLI_NODE_DEFAULT: no --node, no $DHT_NODE */
  size_t n_fallbacks;                       /* entries in fallbacks */
  bool no_retry;                            /* --no-retry */
  bool route;  /* --route: key requests go routed through --node, not
                  straight to their owners */
  int timeout_ms;                           /* --timeout-ms */
  bool json;                                /* --json */
  const char *command; /* the command word, for JSON error objects */
  const char *key_file; /* --cluster-key-file, else $DHT_CLUSTER_KEY_FILE,
                           else NULL (an open ring) */
  dht_client_settings settings; /* every client's: the defaults, and the
                                   cluster key once cli_scan_args loaded it */
  char nodes_[CLI_NODES_MAX][DHT_ADDR_LEN_MAX + 1]; /* behind node and
                                                       fallbacks */
} cli_ctx;

/* Walks a command's arguments: options ("--name", "--name=value", "-x"),
 * positional arguments, and "--", after which everything is positional.
 * A lone "-" is positional. */
typedef struct cli_args {
  int argc;        /* arguments left to scan, from argv[i] */
  char **argv;     /* the command's arguments (after the command word) */
  int i;           /* next index */
  bool opts_done;  /* "--" was seen */
  const char *opt; /* current option's name, "--" or "-" included */
  size_t opt_len;  /* bytes of the name (up to '=' if there is one) */
  const char *inline_value; /* text after '=', or NULL */
} cli_args;

/* Kinds of argument cli_args_next returns. */
enum { CLI_ARG_END, CLI_ARG_POS, CLI_ARG_OPT };

void cli_args_init(cli_args *a, int argc, char **argv);
/* Returns CLI_ARG_END, CLI_ARG_POS (*pos set) or CLI_ARG_OPT (a->opt set). */
int cli_args_next(cli_args *a, const char **pos);
/* True when the current option is name. */
bool cli_opt_is(const cli_args *a, const char *name);
/* Takes the current option's value ("--x=v" or the next argument).
 * Returns 0, or prints the error and returns CLI_EXIT_ERROR. */
int cli_opt_value(cli_ctx *ctx, cli_args *a, const char **value);
/* When the current option is name, an option without a value: sets *flag
 * to value. Returns 1 when it was name, 0 when not, or CLI_EXIT_ERROR
 * (printed) for "name=value". */
int cli_flag_take(cli_ctx *ctx, const cli_args *a, const char *name, bool *flag,
                  bool value);
/* When the current option is name, a fraction in 0..1: parses it into
 * *out. Returns 1 when it was name, 0 when not, or CLI_EXIT_ERROR
 * (printed) for a missing or bad value. */
int cli_ratio_take(cli_ctx *ctx, cli_args *a, const char *name, double *out);

/* One numeric option of a command, in the table of them it gives
 * cli_scan_opts: its value goes to a uint64_t field of the command's
 * state. */
typedef struct cli_num_opt {
  const char *name;  /* "--keys"; messages call the option by it */
  const char *alias; /* another spelling ("--connections" for "-c"), or NULL */
  uint64_t min, max; /* the values it accepts */
  uint64_t dflt;     /* its value when it is not given */
  size_t offset;     /* of its field in the state (offsetof) */
} cli_num_opt;

/*
 * Sets ctx->node and ctx->fallbacks from a comma-separated address list
 * (copied). strict (--node) checks every address and reports a bad one
 * (returns CLI_EXIT_ERROR, ctx unchanged); otherwise ($DHT_NODE) nothing is
 * checked here, so that a bad address is reported only by a command that
 * uses it (cli_open_client), and a list that cannot be split (too long,
 * too many entries) is kept whole as ctx->node. Returns 0 or
 * CLI_EXIT_ERROR.
 */
int cli_set_nodes(cli_ctx *ctx, const char *list, bool strict);
/* Creates a client for ctx->node with ctx->fallbacks, retrying when retry
 * is set and --no-retry was not given. Returns 0, or an exit code (printed:
 * a bad $DHT_NODE address, out of memory). */
int cli_open_client(cli_ctx *ctx, bool retry, dht_client **out);
/* Creates a cluster client (dht/cluster.h) seeded with ctx->node and
 * ctx->fallbacks, retrying unless --no-retry was given. Returns 0, or an
 * exit code (printed, as cli_open_client). */
int cli_open_cluster(cli_ctx *ctx, dht_cluster **out);
/* Loads ctx->key_file (if any) into ctx->settings, once; cli_scan_args
 * calls it when a command's options are all read. Returns 0 or
 * CLI_EXIT_ERROR (printed: unreadable, not a key, readable by others). */
int cli_load_key(cli_ctx *ctx);
/* For the commands that read the ring's internals (ring, check): refuses a
 * client key, which the nodes would refuse too. Returns 0 or
 * CLI_EXIT_ERROR (printed). */
int cli_need_member_key(cli_ctx *ctx);
/* Handles --node, --timeout-ms, --no-retry, --cluster-key-file and --json wherever they
 * appear. Returns 1 when the option was one of them (and consumed), 0 when
 * it was not, or CLI_EXIT_ERROR (printed) for a bad value; *rv gets the
 * exit code. */
int cli_global_opt(cli_ctx *ctx, cli_args *a, int *rv);
/* Reports an unknown option of cmd. Returns CLI_EXIT_ERROR. */
int cli_unknown_opt(cli_ctx *ctx, const cli_args *a);

/* The positional arguments a command takes, gathered by cli_scan_args(). */
typedef struct cli_positional {
  const char *v[2]; /* in order */
  int n;            /* how many were given */
} cli_positional;

/* Option handler of one command: returns 1 when it took the option, 0 when
 * it is not one of its own, or an exit code (already printed). */
typedef int (*cli_opt_fn)(cli_ctx *ctx, cli_args *a, void *ud);

/* Scans a command's arguments: --help, the global options, the command's
 * own options (own may be NULL) and at most max_pos (0..2) positional
 * arguments. Returns 0, -1 after printing the help, or an exit code
 * (printed). */
int cli_scan_args(cli_ctx *ctx, int argc, char **argv, const char *help,
                  int max_pos, cli_positional *pos, cli_opt_fn own, void *ud);
/* cli_scan_args for a command without positional arguments whose state
 * holds its numeric options nums[0..n_nums): sets each to its default,
 * then parses them as they come; own (may be NULL) takes the command's
 * other options, with state as its ud. Returns 0, -1 after printing the
 * help, or an exit code (printed). */
int cli_scan_opts(cli_ctx *ctx, int argc, char **argv, const char *help,
                  const cli_num_opt *nums, size_t n_nums, cli_opt_fn own,
                  void *state);

/* Parses a decimal integer in min..max for the option called name (used
 * in the message). Returns 0 or CLI_EXIT_ERROR (printed). */
int cli_parse_u64(cli_ctx *ctx, const char *name, const char *s, uint64_t min,
                  uint64_t max, uint64_t *out);

/*
 * Reports an error: "dht: <message>" as one line on stderr (control bytes
 * are escaped so that it stays one line), and with --json also
 * {"ok":false,"command":...,"error":NAME,"code":N,"message":...} on stdout.
 * code is the DHT_ERR_* behind it (DHT_ERR_INVAL for bad arguments).
 * Returns exit_code.
 */
CLI_PRINTF(4, 5)
int cli_fail(const cli_ctx *ctx, int exit_code, int code, const char *fmt, ...);

/* Maps a failed client call to its exit code and reports it: not-found is
 * exit 1 ("key not found: KEY" when key is not NULL), anything else exit 2
 * with dht_client_last_error(). */
int cli_fail_call(const cli_ctx *ctx, dht_client *c, int rv, const char *key,
                  size_t key_len);
/* cli_fail_call for a cluster client's failed call. */
int cli_fail_cluster(const cli_ctx *ctx, const dht_cluster *cl, int rv,
                     const char *key, size_t key_len);

/* Writes bytes as printable one-line text into out (size out_size, always
 * NUL-terminated, truncated with "..."): printable ASCII as is, backslash
 * and anything else as \\ and \xNN. Returns out. */
char *cli_escape(char *out, size_t out_size, const void *p, size_t len);

/* Flushes stdout; on failure reports "write to stdout: ..." and returns
 * CLI_EXIT_ERROR, else returns rv. */
int cli_finish(const cli_ctx *ctx, int rv);
/* Ends a command that judges the ring (ring, check) once its result is
 * out: cli_finish, then, when failed, one line on stderr, "dht: <what> N
 * problems (listed above)" (with --json: (see "problems")), and fail_code.
 * Returns the exit code. */
int cli_finish_verdict(const cli_ctx *ctx, bool failed, const char *what,
                       size_t n_problems, int fail_code);

/* ---- JSON (cli_out.c) ---------------------------------------------------- */

/* True when p[0..len) is well-formed UTF-8 (no overlongs, surrogates or
 * code points above U+10FFFF). */
bool cli_utf8_valid(const uint8_t *p, size_t len);
/* A JSON string literal, quotes included, of len bytes that are valid
 * UTF-8 (control characters, quote and backslash escaped). */
void cli_json_str_n(FILE *f, const void *p, size_t len);
/* The same for a C string. */
void cli_json_str(FILE *f, const char *s);
/* `"name":` then the bytes: as a string when valid UTF-8, else the key
 * becomes "name_base64" and the value standard base64 (RFC 4648, padded). */
void cli_json_bytes(FILE *f, const char *name, const void *p, size_t len);
/* {"id":"<40 hex>","addr":"..."} */
void cli_json_peer(FILE *f, const dht_client_peer *p);
/* [peer,...] of p[0..n) */
void cli_json_peers(FILE *f, const dht_client_peer *p, size_t n);
/* {"from":"<hex>","to":"<hex>","at_ms":N,"holders":[peer...]} */
void cli_json_lost(FILE *f, const dht_client_lost_range *l);
/* "(1a2b3c4d, 5e6f7a8b] since 2026-12-01T09:00:00Z: every holder died
 * before repair: HOST:PORT, ..." into buf (always NUL-terminated). */
void cli_lost_text(const dht_client_lost_range *l, char *buf, size_t len);

/* ---- repair backlog and versions (cli_out.c) ------------------------------ */

/* "512 B", "12.0 KiB", "3.4 MiB", "1.2 GiB" into buf. Returns buf. */
char *cli_bytes_text(uint64_t bytes, char *buf, size_t len);
/* "350 ms", "1.2 s", "4 min 5 s", "3 h 20 min" into buf. Returns buf. */
char *cli_ms_text(uint64_t ms, char *buf, size_t len);
/* What a node still has to repair and hand on, from its STATS counters
 * (repair_records, repair_bytes, handoff_records, handoff_bytes,
 * backlog_eta_ms). */
typedef struct cli_backlog {
  bool known;                        /* the node reports them */
  uint64_t repair_records, repair_bytes;
  uint64_t handoff_records, handoff_bytes;
  uint64_t eta_ms;                   /* its estimate of the time left */
} cli_backlog;
void cli_backlog_of(const dht_client_stats_result *st, cli_backlog *b);
/* "none", "repair 120 (12.0 KiB), hand-off 30 (3.0 KiB), about 1.2 s
 * left", or "-" when the node does not report it, into buf. */
char *cli_backlog_text(const cli_backlog *b, char *buf, size_t len);
/* "backlog":{"repair_records":N,...,"eta_ms":N}, or "backlog":null. */
void cli_json_backlog(FILE *f, const cli_backlog *b);
/* A record's version as SCAN lists it: its stamp's wall-clock time, its
 * logical counter and the writer's short id,
 * "2026-12-01T09:00:00.123Z+0/1a2b3c4d" ("unversioned"), with " (deleted)"
 * for a tombstone. */
void cli_version_text(const dht_client_scan_item *it, char *buf, size_t len);
/* "running" / "done" / "failed". */
const char *cli_exchange_outcome(dht_exchange_outcome outcome);
/* How an exchange went, for people: "done 1.2 s ago, in 3 ms: in sync",
 * "running for 0.3 s: 3 buckets differ, 12 records pushed so far",
 * "failed 4.0 s ago: the next round tries again". */
void cli_exchange_text(const dht_client_exchange *x, char *buf, size_t len);
/* {"replica":peer,"from":hex,"to":hex,"ago_ms":N,"took_ms":N,"buckets":N,
 * "pushed":N,"outcome":"done"} */
void cli_json_exchange(FILE *f, const dht_client_exchange *x);
/* "dead":[{"peer":peer,"ago_ms":N},...] of dead[0..n) */
void cli_json_dead(FILE *f, const dht_client_dead_peer *dead, size_t n);

/* ---- latency histogram (hist.c) ----------------------------------------- */

/* Each power of two of microseconds above 1023 is split into 2^SUB_BITS
 * buckets: a quantile is exact below 1024 us and at most 0.2% low above.
 * Values from 2^TOP_BIT us (12.7 days) on share the last bucket. */
#define CLI_HIST_SUB_BITS 9
#define CLI_HIST_TOP_BIT 40
#define CLI_HIST_BUCKETS                                                       \
  ((1u << (CLI_HIST_SUB_BITS + 1)) +                                           \
   (CLI_HIST_TOP_BIT - CLI_HIST_SUB_BITS - 1) * (1u << CLI_HIST_SUB_BITS))

/* Latencies in microseconds, in fixed memory. */
typedef struct cli_hist {
  uint64_t *counts; /* CLI_HIST_BUCKETS of them */
  uint64_t total;   /* values added */
  uint64_t max_us;  /* the largest value added, exactly */
} cli_hist;

/* Sets h up empty. Returns 0 or DHT_ERR_NOMEM. */
int cli_hist_init(cli_hist *h);
/* Releases what cli_hist_init took; h is left zeroed. */
void cli_hist_free(cli_hist *h);
/* Empties h. */
void cli_hist_reset(cli_hist *h);
void cli_hist_add(cli_hist *h, uint64_t us);
/* The nearest-rank q-quantile (0 < q <= 1) of what was added, as the
 * smallest value of its bucket; 0 when h is empty. */
uint64_t cli_hist_quantile(const cli_hist *h, double q);
/* The nearest rank of the q-quantile among n values: ceil(q * n) within
 * 1..n, 1-based; 0 when n is 0. */
uint64_t cli_nearest_rank(uint64_t n, double q);

/* ---- ring walk (walk.c) ------------------------------------------------- */

#define CLI_WALK_PROBLEM_LEN 480 /* bytes of one problem line, NUL included */

/* One node the walk reached, as the step callback sees it. Valid only
 * during the call. */
typedef struct cli_walk_step {
  const dht_client_peer *node; /* as it answered, or as it was listed */
  /* What it answered (fingers and counters only when the walk asks
   * STATS), or NULL when it did not answer. */
  const dht_client_stats_result *answer;
  const char *error; /* why it did not answer, else "" */
} cli_walk_step;

/* How to walk the ring and whom to tell. */
typedef struct cli_walk {
  cli_ctx *ctx;       /* --timeout-ms of each request */
  uint64_t max_nodes; /* answering nodes, the start included, the walk
                         accepts; it gives up at the next one */
  bool ask_stats;     /* ask each node STATS, counters included, rather
                         than the lighter GET_NEIGHBORS */
  /* Each node reached, in walk order, the start first. Returns 0, or an
   * exit code (printed) that ends the walk. */
  int (*step)(void *ud, const cli_walk_step *s);
  /* Each problem of the walk, as one line. */
  void (*problem)(void *ud, const char *line);
  void *ud; /* for step and problem */
} cli_walk;

/*
 * Walks the ring from the node whose STATS answer is start (the caller
 * chose it and asked it) by first successors until the walk comes back.
 * After a successor that does not answer the walk goes on with the next
 * entry of the list that named it. Sets *closed when the walk came back
 * to the start. Returns 0, or an exit code (printed: out of memory, or
 * step's).
 */
int cli_walk_ring(const cli_walk *w, const dht_client_stats_result *start,
                  bool *closed);

/* ---- commands ----------------------------------------------------------- */

/* dht bench ...: argv holds the arguments after "bench". */
int cli_bench(cli_ctx *ctx, int argc, char **argv);
extern const char cli_bench_usage[];

/* dht check ...: walks the ring and verifies its invariants (check.c). */
int cli_check(cli_ctx *ctx, int argc, char **argv);
extern const char cli_check_usage[];

/* dht wait ...: waits until the node, or the ring, is ready (check.c). */
int cli_wait(cli_ctx *ctx, int argc, char **argv);
extern const char cli_wait_usage[];

/* dht explain KEY: where a key's copies are and why one is missing
 * (explain.c). */
int cli_explain(cli_ctx *ctx, int argc, char **argv);
extern const char cli_explain_usage[];

/* dht load ...: a bounded put/get workload for churn experiments (load.c). */
int cli_load(cli_ctx *ctx, int argc, char **argv);
extern const char cli_load_usage[];

#endif /* DHT_CLI_H */
