/*
 * dht.c: the dht command-line client. Parses the global options and the
 * command, and implements put, get, del, lookup, ring, stats and ping on top
 * of the blocking client library (dht/client.h); the other commands are in
 * their own files (cli.h lists them) and the shared plumbing (arguments,
 * errors, JSON, the backlog and version texts) in cli_out.c.
 *
 * Conventions every command follows: exit 0 on success, 1 when get or del
 * finds no key, 2 on any other error; each error is one line on stderr
 * starting "dht: "; with --json, stdout carries exactly one JSON object
 * (the result, or the error).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "cli.h"
#include "dht/err.h"

#ifndef DHT_VERSION
#define DHT_VERSION "0.0.0"
#endif

/* How many nodes `ring` visits before it gives up [default]. */
#define RING_NODES_DEFAULT 4096
#define RING_NODES_MAX 65536

static const char usage[] =
    "Usage: dht [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "A client for a chord-dht ring. put, get, del, bench and load send each\n"
    "request straight to the node that owns the key: --node is where the\n"
    "client starts, and each node it asks serves the request or names the\n"
    "node to ask (MOVED). With --route the node given routes each request\n"
    "around the ring instead.\n"
    "\n"
    "Commands:\n"
    "  put KEY [VALUE]   store VALUE under KEY (or --file PATH, or stdin)\n"
    "  get KEY           write KEY's value to stdout, raw bytes\n"
    "  del KEY           delete KEY\n"
    "  lookup KEY        which node owns KEY (--trace: the route taken)\n"
    "  ring              walk the ring by successors and list every node\n"
    "  stats             one node's routing state and counters\n"
    "  ping              check that the node answers\n"
    "  bench             load generator: throughput and latency\n"
    "  check             walk the ring and verify it and its replicas\n"
    "  explain KEY       where KEY's copies are, and why one is missing\n"
    "  wait              wait until the node (--ring: every node) is ready\n"
    "  load              bounded put/get workload, one CSV row a second\n"
    "  keygen FILE       write a new cluster key (see dht keygen --help)\n"
    "  help [COMMAND]    this text, or a command's (also: dht COMMAND --help)\n"
    "\n"
    "Options, before or after the command:\n"
    "  --node HOST:PORT  node to talk to: IPv4, [IPv6] or a host name; the\n"
    "                    default is $DHT_NODE, else 127.0.0.1:7100, where\n"
    "                    scripts/ring starts its first node and the\n"
    "                    installed service listens. A comma-separated\n"
    "                    list adds fallbacks: put, get, del and lookup move\n"
    "                    on to the next address when a node fails, check\n"
    "                    starts from the first that answers; the other\n"
    "                    commands use the first address only\n"
    "  --timeout-ms N    time limit of each request, connecting and retries\n"
    "                    included, 1..3600000 [5000]\n"
    "  --no-retry        put, get, del and lookup make one attempt; by\n"
    "                    default they retry transient failures (a node\n"
    "                    unreachable or busy, the ring repairing itself)\n"
    "                    within --timeout-ms, but not a connection refused\n"
    "                    by every address: nothing listens there, and that\n"
    "                    is an error at once\n"
    "  --cluster-key-file FILE  the key of a closed ring (default\n"
    "                    $DHT_CLUSTER_KEY_FILE; none: an open ring). Each\n"
    "                    connection proves it, and frames are encrypted. A\n"
    "                    member key may do everything; a client key (dht\n"
    "                    keygen --client) only put, get, del, lookup, ping,\n"
    "                    stats, bench and load: ring, check and explain\n"
    "                    need the member key. A node that does not take the\n"
    "                    key closes the connection (error AUTH)\n"
    "  --route           put, get, del, bench and load: send each request to\n"
    "                    --node, which routes it to the key's owner hop by\n"
    "                    hop, rather than straight to the owner (for\n"
    "                    experiments)\n"
    "  --json            print one JSON object on stdout instead of text\n"
    "  -h, --help        this text\n"
    "  --version         print the version\n"
    "Use -- to end options, e.g. dht get -- -key-with-dash.\n"
    "\n"
    "Keys are 1..1024 bytes, values 0..1048576 bytes (1 MiB).\n"
    "Exit status: 0 success, 1 key not found (get, del), 2 any other error\n"
    "(bad argument, node unreachable, timeout, error from the node). Errors\n"
    "are one line on stderr starting \"dht: \"; with --json, stdout also gets\n"
    "{\"ok\":false,\"error\":NAME,\"code\":N,\"message\":...}.\n"
    "In JSON, a key or value that is valid UTF-8 is a string (\"key\",\n"
    "\"value\"); any other is base64 under \"key_base64\" / "
    "\"value_base64\".\n";

static const char put_usage[] =
    "usage: dht put KEY [VALUE]\n"
    "       dht put KEY --file PATH\n"
    "       dht put KEY < FILE\n"
    "\n"
    "Stores the value under KEY, replacing any older value. The value is\n"
    "VALUE, else the contents of PATH, else all of stdin (binary-safe); at\n"
    "most 1048576 bytes. Prints nothing on success (with --json:\n"
    "{\"ok\":true,\"command\":\"put\",\"key\":...,\"value_len\":N}).\n"
    "\n"
    "  --file PATH   read the value from PATH\n";

static const char get_usage[] =
    "usage: dht get KEY\n"
    "\n"
    "Writes the value stored under KEY to stdout, byte for byte, with no\n"
    "newline added. Exit 1 when there is no such key. With --json:\n"
    "{\"ok\":true,\"command\":\"get\",\"key\":...,\"value\":...,"
    "\"value_len\":N}\n"
    "(\"value_base64\" instead of \"value\" when it is not valid UTF-8).\n";

static const char del_usage[] =
    "usage: dht del KEY\n"
    "\n"
    "Deletes KEY. Prints nothing on success. Exit 1 when the node reports\n"
    "that there was no such key.\n";

static const char lookup_usage[] =
    "usage: dht lookup KEY [--trace]\n"
    "\n"
    "Asks the ring which node owns KEY (the first node at or after\n"
    "BLAKE2b-160(KEY) on the ring) and prints its short id, address and full\n"
    "id, the key's id and the number of routing hops.\n"
    "\n"
    "  --trace   also print the path: each node the lookup went through\n";

static const char ring_usage[] =
    "usage: dht ring [--max-nodes N]\n"
    "\n"
    "Walks the ring from the node by asking each node in turn for its STATS\n"
    "and moving to its first successor, until the walk comes back to the\n"
    "start. Prints each node in ring order: short id, address, predecessor's\n"
    "address, key count, and the records (and bytes) it still has to push\n"
    "to its replicas (repair) or to hand on to their new owners, with its\n"
    "estimate of the time left (\"none\" when it has nothing left to move).\n"
    "\n"
    "Problems are listed after the nodes: a node that does not answer (the\n"
    "walk goes on from the next entry of the previous node's successor\n"
    "list), a predecessor that is not the node before it, an id that differs\n"
    "from the one its predecessor lists, a walk that loops without coming\n"
    "back to the start or passes --max-nodes. Exit 0 when the ring is whole,\n"
    "2 when there is any problem. In a closed ring it needs the member key\n"
    "(--cluster-key-file); a client key is refused.\n"
    "\n"
    "  --max-nodes N   stop after N nodes, 1..65536 [4096]\n";

static const char stats_usage[] =
    "usage: dht stats\n"
    "\n"
    "Prints one node's routing state and counters: its id and address, its\n"
    "predecessor, its successor list, its distinct fingers (with the range\n"
    "of finger indexes i, finger i = successor(id + 2^i), each one covers),\n"
    "every counter it reports, its backlog (records and bytes still to\n"
    "repair or hand off, and the time that should take), the last\n"
    "anti-entropy exchange with each replica, the peers it found dead and\n"
    "the ranges it recorded lost.\n";

static const char keygen_usage[] =
    "usage: dht keygen FILE\n"
    "       dht keygen --client MEMBER_KEY_FILE FILE\n"
    "\n"
    "Writes a new cluster key to FILE (mode 0600; an existing FILE is never\n"
    "overwritten). Start every node of a ring with --cluster-key-file FILE:\n"
    "only holders of the key can join it, read or write.\n"
    "\n"
    "With --client, writes instead the client key derived from the member\n"
    "key in MEMBER_KEY_FILE: it lets a client put, get, del, lookup, ping and\n"
    "ask stats, but not send the ring's internal messages, and the member\n"
    "key cannot be computed from it. Keep both files secret.\n"
    "\n"
    "  --client MEMBER_KEY_FILE   derive the client key of that ring\n";

static const char ping_usage[] =
    "usage: dht ping\n"
    "\n"
    "Sends PING and prints the node's id and address and the round-trip\n"
    "time. Exit 2 when it does not answer within --timeout-ms.\n";

typedef int (*cmd_fn)(cli_ctx *ctx, int argc, char **argv);

typedef struct command {
  const char *name;  /* the command word */
  cmd_fn fn;         /* runs it; argv holds what follows the word */
  const char *usage; /* its --help text */
} command;

/* ---- shared helpers ----------------------------------------------------- */

/* Checks a key given on the command line: 1..1024 bytes. */
static int check_key(cli_ctx *ctx, const char *key) {
  size_t len = strlen(key);

  if (len == 0 || len > CLI_KEY_LEN_MAX) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "key must be 1..%u bytes, got %zu", CLI_KEY_LEN_MAX, len);
  }
  return 0;
}

static int need_key(cli_ctx *ctx, const cli_positional *pos) {
  if (pos->n < 1) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "%s: missing KEY (see dht %s --help)", ctx->command,
                    ctx->command);
  }
  return check_key(ctx, pos->v[0]);
}

/* The key commands retry (unless --no-retry); the others ask one node a
 * question about itself. */
static int open_client(cli_ctx *ctx, dht_client **c) {
  static const char *const retrying[] = {"put", "get", "del", "lookup"};
  bool retry = false;
  size_t i;

  for (i = 0; i < sizeof(retrying) / sizeof(retrying[0]); i++) {
    retry = retry || strcmp(ctx->command, retrying[i]) == 0;
  }
  return cli_open_client(ctx, retry, c);
}

/* What a command that asks one node does once its client is open: key is
 * the checked KEY (NULL for commands without one), ud the command's own
 * option state. Returns an exit code (failures printed). */
typedef int (*node_call_fn)(cli_ctx *ctx, dht_client *c, const char *key,
                            void *ud);

/* Runs a command that asks the node: scans its arguments (own, which may be
 * NULL, takes its options; with_key: one KEY, which is checked), opens a
 * client, lets call do the work, and closes the client. Returns the exit
 * code. */
static int run_on_node(cli_ctx *ctx, int argc, char **argv, const char *help,
                       bool with_key, cli_opt_fn own, void *ud,
                       node_call_fn call) {
  cli_positional pos;
  dht_client *c;
  int rv;

  rv = cli_scan_args(ctx, argc, argv, help, with_key ? 1 : 0, &pos, own, ud);
  if (rv == 0 && with_key) {
    rv = need_key(ctx, &pos);
  }
  if (rv == 0) {
    rv = open_client(ctx, &c);
  }
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  rv = call(ctx, c, with_key ? pos.v[0] : NULL, ud);
  dht_client_del(c);
  return cli_finish(ctx, rv);
}

/* The start of a key command's JSON result, up to its key:
 * {"ok":true,"command":"get","key":"k" */
static void json_key_result(const cli_ctx *ctx, const char *key) {
  printf("{\"ok\":true,\"command\":\"%s\",", ctx->command);
  cli_json_bytes(stdout, "key", key, strlen(key));
}

static void print_peer_line(const char *label, const dht_client_peer *p) {
  char s[DHT_ID_SHORT_LEN];

  printf("%-9s %s  %s\n", label, dht_id_short(&p->id, s), p->addr);
}

/* Reads all of f into a malloc'd buffer, refusing more than the value
 * limit. Returns 0 or an exit code (printed). */
static int read_value(cli_ctx *ctx, FILE *f, const char *what, uint8_t **out,
                      size_t *out_len) {
  size_t cap = CLI_VALUE_LEN_MAX + 1, len = 0, n;
  uint8_t *buf = malloc(cap);

  if (buf == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  while (len < cap && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
  }
  if (ferror(f)) {
    free(buf);
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "read %s: %s", what,
                    strerror(errno));
  }
  if (len > CLI_VALUE_LEN_MAX) {
    free(buf);
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_TOO_LARGE,
                    "value from %s is larger than 1 MiB (%u bytes)", what,
                    CLI_VALUE_LEN_MAX);
  }
  *out = buf;
  *out_len = len;
  return 0;
}

/* ---- put / get / del ---------------------------------------------------- */

/* What a key command talks through: a cluster client, which sends each
 * request straight to the key's owner, or with --route one client, whose
 * node routes it. */
typedef struct key_client {
  dht_cluster *cl; /* without --route */
  dht_client *c;   /* with --route */
} key_client;

static int open_key_client(cli_ctx *ctx, key_client *k) {
  k->cl = NULL;
  k->c = NULL;
  return ctx->route ? open_client(ctx, &k->c) : cli_open_cluster(ctx, &k->cl);
}

static void close_key_client(key_client *k) {
  dht_cluster_del(k->cl);
  dht_client_del(k->c);
}

static int key_fail(cli_ctx *ctx, const key_client *k, int rv,
                    const char *key) {
  size_t len = key != NULL ? strlen(key) : 0;

  return k->cl != NULL ? cli_fail_cluster(ctx, k->cl, rv, key, len)
                       : cli_fail_call(ctx, k->c, rv, key, len);
}

/* A key command's work once its client is open (key checked). */
typedef int (*key_call_fn)(cli_ctx *ctx, key_client *k, const char *key);

/* Runs get or del: scans the arguments, checks KEY, opens the key client,
 * lets call do the work. Returns the exit code. */
static int run_key_command(cli_ctx *ctx, int argc, char **argv,
                           const char *help, key_call_fn call) {
  cli_positional pos;
  key_client k;
  int rv;

  rv = cli_scan_args(ctx, argc, argv, help, 1, &pos, NULL, NULL);
  if (rv == 0) {
    rv = need_key(ctx, &pos);
  }
  if (rv == 0) {
    rv = open_key_client(ctx, &k);
  }
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  rv = call(ctx, &k, pos.v[0]);
  close_key_client(&k);
  return cli_finish(ctx, rv);
}

static int put_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  const char **file = ud;
  int rv;

  if (!cli_opt_is(a, "--file")) {
    return 0;
  }
  rv = cli_opt_value(ctx, a, file);
  return rv != 0 ? rv : 1;
}

static int cmd_put(cli_ctx *ctx, int argc, char **argv) {
  const char *file = NULL, *key;
  char shown[300];
  uint8_t *value = NULL;
  size_t value_len = 0;
  cli_positional pos;
  key_client k;
  FILE *f;
  int rv;

  rv = cli_scan_args(ctx, argc, argv, put_usage, 2, &pos, put_opt, &file);
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  if ((rv = need_key(ctx, &pos)) != 0) {
    return rv;
  }
  key = pos.v[0];
  if (pos.n == 2 && file != NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "put: give VALUE or --file, not both");
  }
  if (pos.n == 2) {
    value_len = strlen(pos.v[1]);
    if (value_len > CLI_VALUE_LEN_MAX) {
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_TOO_LARGE,
                      "value is larger than 1 MiB (%u bytes)",
                      CLI_VALUE_LEN_MAX);
    }
    value = malloc(value_len > 0 ? value_len : 1);
    if (value == NULL) {
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    }
    memcpy(value, pos.v[1], value_len);
  } else if (file != NULL) {
    cli_escape(shown, sizeof(shown), file, strlen(file));
    f = fopen(file, "rb");
    if (f == NULL) {
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "cannot open %s: %s",
                      shown, strerror(errno));
    }
    rv = read_value(ctx, f, shown, &value, &value_len);
    fclose(f);
    if (rv != 0) {
      return rv;
    }
  } else if ((rv = read_value(ctx, stdin, "stdin", &value, &value_len)) != 0) {
    return rv;
  }
  if ((rv = open_key_client(ctx, &k)) != 0) {
    free(value);
    return rv;
  }
  rv = k.cl != NULL ? dht_cluster_put(k.cl, key, strlen(key), value, value_len,
                                      ctx->timeout_ms)
                    : dht_client_put(k.c, key, strlen(key), value, value_len,
                                     ctx->timeout_ms);
  if (rv != 0) {
    rv = key_fail(ctx, &k, rv, NULL);
  } else if (ctx->json) {
    json_key_result(ctx, key);
    printf(",\"value_len\":%zu}\n", value_len);
  }
  close_key_client(&k);
  free(value);
  return cli_finish(ctx, rv);
}

static int get_call(cli_ctx *ctx, key_client *k, const char *key) {
  uint8_t *value;
  size_t value_len;
  int rv;

  rv = k->cl != NULL ? dht_cluster_get(k->cl, key, strlen(key), &value,
                                       &value_len, ctx->timeout_ms)
                     : dht_client_get(k->c, key, strlen(key), &value,
                                      &value_len, ctx->timeout_ms);
  if (rv != 0) {
    rv = key_fail(ctx, k, rv, key);
  } else if (ctx->json) {
    json_key_result(ctx, key);
    fputc(',', stdout);
    cli_json_bytes(stdout, "value", value, value_len);
    printf(",\"value_len\":%zu}\n", value_len);
  } else if (value_len > 0) {
    fwrite(value, 1, value_len, stdout);
  }
  free(value);
  return rv;
}

static int cmd_get(cli_ctx *ctx, int argc, char **argv) {
  return run_key_command(ctx, argc, argv, get_usage, get_call);
}

static int del_call(cli_ctx *ctx, key_client *k, const char *key) {
  int rv;

  rv = k->cl != NULL
           ? dht_cluster_remove(k->cl, key, strlen(key), ctx->timeout_ms)
           : dht_client_remove(k->c, key, strlen(key), ctx->timeout_ms);
  if (rv != 0) {
    rv = key_fail(ctx, k, rv, key);
  } else if (ctx->json) {
    json_key_result(ctx, key);
    fputs("}\n", stdout);
  }
  return rv;
}

static int cmd_del(cli_ctx *ctx, int argc, char **argv) {
  return run_key_command(ctx, argc, argv, del_usage, del_call);
}

/* ---- lookup ------------------------------------------------------------- */

static int lookup_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  return cli_flag_take(ctx, a, "--trace", ud, true);
}

static int lookup_call(cli_ctx *ctx, dht_client *c, const char *key, void *ud) {
  char hex[DHT_ID_HEX_LEN], s[DHT_ID_SHORT_LEN];
  dht_client_lookup_result *res;
  bool trace = *(const bool *)ud;
  dht_id target;
  size_t i;
  int rv;

  res = malloc(sizeof(*res));
  if (res == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  dht_id_hash(&target, key, strlen(key));
  rv = dht_client_lookup(c, &target, trace, res, ctx->timeout_ms);
  if (rv != 0) {
    rv = cli_fail_call(ctx, c, rv, NULL, 0);
  } else if (ctx->json) {
    json_key_result(ctx, key);
    printf(",\"key_id\":\"%s\",\"owner\":", dht_id_hex(&target, hex));
    cli_json_peer(stdout, &res->owner);
    printf(",\"hops\":%u", (unsigned)res->hops);
    if (trace) {
      fputs(",\"path\":", stdout);
      cli_json_peers(stdout, res->path, res->n_path);
    }
    fputs("}\n", stdout);
  } else {
    print_peer_line("owner", &res->owner);
    printf("%-9s %s\n", "owner id", dht_id_hex(&res->owner.id, hex));
    printf("%-9s %s\n", "key id", dht_id_hex(&target, hex));
    printf("%-9s %u\n", "hops", (unsigned)res->hops);
    if (trace) {
      if (res->n_path == 0) {
        printf("path      (empty: no node recorded the route)\n");
      } else {
        printf("path\n");
      }
      for (i = 0; i < res->n_path; i++) {
        printf("  %2zu  %s  %s\n", i + 1, dht_id_short(&res->path[i].id, s),
               res->path[i].addr);
      }
    }
  }
  free(res);
  return rv;
}

static int cmd_lookup(cli_ctx *ctx, int argc, char **argv) {
  bool trace = false;

  return run_on_node(ctx, argc, argv, lookup_usage, true, lookup_opt, &trace,
                     lookup_call);
}

/* ---- ping --------------------------------------------------------------- */

static int ping_call(cli_ctx *ctx, dht_client *c, const char *key, void *ud) {
  char s[DHT_ID_SHORT_LEN], hex[DHT_ID_HEX_LEN];
  struct timespec t0, t1;
  dht_client_peer node;
  double ms;
  int rv;

  (void)key;
  (void)ud;
  /* Connect first, so that the time shown is one round trip. */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  rv = dht_client_connect(c, ctx->timeout_ms);
  if (rv == 0) {
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
         (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rv = dht_client_ping(
        c, &node,
        ctx->timeout_ms - (int)ms > 0 ? ctx->timeout_ms - (int)ms : 0);
  }
  if (rv != 0) {
    rv = cli_fail_call(ctx, c, rv, NULL, 0);
  } else {
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 +
         (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (ctx->json) {
      fputs("{\"ok\":true,\"command\":\"ping\",\"node\":", stdout);
      cli_json_peer(stdout, &node);
      printf(",\"rtt_us\":%.0f}\n", ms * 1e3);
    } else {
      printf("pong from %s %s (id %s) in %.3f ms\n", dht_id_short(&node.id, s),
             node.addr, dht_id_hex(&node.id, hex), ms);
    }
  }
  return rv;
}

static int cmd_ping(cli_ctx *ctx, int argc, char **argv) {
  return run_on_node(ctx, argc, argv, ping_usage, false, NULL, NULL, ping_call);
}

/* ---- stats -------------------------------------------------------------- */

static void print_stats_text(const dht_client_stats_result *st) {
  char s[DHT_ID_SHORT_LEN], hex[DHT_ID_HEX_LEN], line[CLI_WALK_PROBLEM_LEN];
  cli_backlog b;
  uint32_t last;
  size_t i, w = 0;

  print_peer_line("node", &st->node);
  printf("%-9s %s\n", "id", dht_id_hex(&st->node.id, hex));
  if (st->has_pred) {
    print_peer_line("pred", &st->pred);
  } else {
    printf("%-9s (none)\n", "pred");
  }
  printf("successors (%zu)\n", st->n_succs);
  for (i = 0; i < st->n_succs; i++) {
    printf("  %2zu  %s  %s\n", i + 1, dht_id_short(&st->succs[i].id, s),
           st->succs[i].addr);
  }
  printf("fingers (%zu distinct)\n", st->n_fingers);
  for (i = 0; i < st->n_fingers; i++) {
    last = i + 1 < st->n_fingers ? st->fingers[i + 1].start_bit - 1
                                 : DHT_ID_BITS - 1;
    if (last < st->fingers[i].start_bit) {
      last = st->fingers[i].start_bit; /* out of order: show the start */
    }
    printf("  %3u-%-3u  %s  %s\n", (unsigned)st->fingers[i].start_bit,
           (unsigned)last, dht_id_short(&st->fingers[i].peer.id, s),
           st->fingers[i].peer.addr);
  }
  for (i = 0; i < st->n_counters; i++) {
    if (strlen(st->counters[i].name) > w) {
      w = strlen(st->counters[i].name);
    }
  }
  printf("counters\n");
  for (i = 0; i < st->n_counters; i++) {
    printf("  %-*s  %llu\n", (int)w, st->counters[i].name,
           (unsigned long long)st->counters[i].value);
  }
  cli_backlog_of(st, &b);
  printf("%-9s %s\n", "backlog", cli_backlog_text(&b, line, sizeof(line)));
  printf("exchanges (%zu: the last anti-entropy exchange with each "
         "replica)\n",
         st->n_exchanges);
  for (i = 0; i < st->n_exchanges; i++) {
    cli_exchange_text(&st->exchanges[i], line, sizeof(line));
    printf("  %s  %s  %s\n", dht_id_short(&st->exchanges[i].replica.id, s),
           st->exchanges[i].replica.addr, line);
  }
  if (st->n_dead > 0) {
    printf("dead peers (%zu, still probed)\n", st->n_dead);
    for (i = 0; i < st->n_dead; i++) {
      printf("  %s  %s  declared dead %s ago\n",
             dht_id_short(&st->dead[i].peer.id, s), st->dead[i].peer.addr,
             cli_ms_text(st->dead[i].ago_ms, line, sizeof(line)));
    }
  }
  if (st->n_lost > 0) {
    printf("lost ranges (%zu: acknowledge with dht check --ack-lost)\n",
           st->n_lost);
    for (i = 0; i < st->n_lost; i++) {
      cli_lost_text(&st->lost[i], line, sizeof(line));
      printf("  %s\n", line);
    }
  }
}

static void print_stats_json(const dht_client_stats_result *st) {
  cli_backlog b;
  size_t i;

  fputs("{\"ok\":true,\"command\":\"stats\",\"node\":", stdout);
  cli_json_peer(stdout, &st->node);
  fputs(",\"pred\":", stdout);
  if (st->has_pred) {
    cli_json_peer(stdout, &st->pred);
  } else {
    fputs("null", stdout);
  }
  fputs(",\"succs\":", stdout);
  cli_json_peers(stdout, st->succs, st->n_succs);
  fputs(",\"fingers\":[", stdout);
  for (i = 0; i < st->n_fingers; i++) {
    printf("%s{\"start_bit\":%u,\"peer\":", i > 0 ? "," : "",
           (unsigned)st->fingers[i].start_bit);
    cli_json_peer(stdout, &st->fingers[i].peer);
    fputc('}', stdout);
  }
  fputs("],\"counters\":{", stdout);
  for (i = 0; i < st->n_counters; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_str(stdout, st->counters[i].name);
    printf(":%llu", (unsigned long long)st->counters[i].value);
  }
  fputs("},\"lost\":[", stdout);
  for (i = 0; i < st->n_lost; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_lost(stdout, &st->lost[i]);
  }
  fputs("],\"exchanges\":[", stdout);
  for (i = 0; i < st->n_exchanges; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_exchange(stdout, &st->exchanges[i]);
  }
  fputs("],", stdout);
  cli_json_dead(stdout, st->dead, st->n_dead);
  fputc(',', stdout);
  cli_backlog_of(st, &b);
  cli_json_backlog(stdout, &b);
  fputs("}\n", stdout);
}

static int stats_call(cli_ctx *ctx, dht_client *c, const char *key, void *ud) {
  dht_client_stats_result *st;
  int rv;

  (void)key;
  (void)ud;
  st = malloc(sizeof(*st));
  if (st == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  rv = dht_client_stats(c, st, ctx->timeout_ms);
  if (rv != 0) {
    rv = cli_fail_call(ctx, c, rv, NULL, 0);
  } else if (ctx->json) {
    print_stats_json(st);
  } else {
    print_stats_text(st);
  }
  free(st);
  return rv;
}

static int cmd_stats(cli_ctx *ctx, int argc, char **argv) {
  return run_on_node(ctx, argc, argv, stats_usage, false, NULL, NULL,
                     stats_call);
}

/* ---- ring --------------------------------------------------------------- */

/* One node of the walk, in ring order. */
typedef struct ring_row {
  dht_client_peer node; /* as it answered, or as its predecessor listed it */
  bool reachable;       /* it answered STATS */
  bool has_pred;        /* pred is set */
  dht_client_peer pred; /* its predecessor */
  bool has_keys;        /* it reported a "keys" counter */
  uint64_t keys;        /* ... with this value */
  cli_backlog backlog;  /* what it still has to repair and hand on */
  char error[300];      /* why it did not answer */
} ring_row;

typedef struct ring_walk {
  cli_ctx *ctx;
  ring_row *rows;                         /* the nodes, in walk order */
  size_t n_rows;                          /* entries used */
  size_t cap_rows;                        /* entries allocated */
  char (*problems)[CLI_WALK_PROBLEM_LEN]; /* one line each */
  size_t n_problems;                      /* lines used */
  size_t cap_problems;                    /* lines allocated */
  size_t n_reachable;                     /* rows that answered */
  dht_id last_reachable; /* id of the last node that answered */
} ring_walk;

CLI_PRINTF(2, 3)
static void ring_problem(ring_walk *w, const char *fmt, ...) {
  char(*grown)[CLI_WALK_PROBLEM_LEN];
  va_list ap;
  size_t cap;

  if (w->n_problems == w->cap_problems) {
    cap = w->cap_problems ? 2 * w->cap_problems : 16;
    grown = realloc(w->problems, cap * sizeof(*grown));
    if (grown == NULL) {
      return; /* the count below still says something went wrong */
    }
    w->problems = grown;
    w->cap_problems = cap;
  }
  va_start(ap, fmt);
  vsnprintf(w->problems[w->n_problems++], sizeof(w->problems[0]), fmt, ap);
  va_end(ap);
}

static ring_row *ring_add(ring_walk *w) {
  ring_row *grown;
  size_t cap;

  if (w->n_rows == w->cap_rows) {
    cap = w->cap_rows ? 2 * w->cap_rows : 64;
    grown = realloc(w->rows, cap * sizeof(*grown));
    if (grown == NULL) {
      return NULL;
    }
    w->rows = grown;
    w->cap_rows = cap;
  }
  memset(&w->rows[w->n_rows], 0, sizeof(w->rows[0]));
  return &w->rows[w->n_rows++];
}

/* Whether a node's predecessor fits the walk: it must be the node before
 * it, or, when that one did not answer (it may be gone, and the ring may
 * have closed over it already), the last node that did. */
static bool pred_ok(const ring_walk *w, bool has_pred, const dht_id *pred,
                    const ring_row *before) {
  if (!has_pred) {
    return false;
  }
  return dht_id_eq(pred, &before->node.id) ||
         (!before->reachable && dht_id_eq(pred, &w->last_reachable));
}

static void ring_print_row(const ring_walk *w, const ring_row *r) {
  char s[DHT_ID_SHORT_LEN], keys[24], backlog[128];

  if (w->ctx->json) {
    return;
  }
  if (!r->reachable) {
    printf("%-8s  %-21s  (no answer: %s)\n", dht_id_short(&r->node.id, s),
           r->node.addr, r->error);
    return;
  }
  if (r->has_keys) {
    snprintf(keys, sizeof(keys), "%llu", (unsigned long long)r->keys);
  } else {
    snprintf(keys, sizeof(keys), "-");
  }
  printf("%-8s  %-21s  %-21s  %-8s  %s\n", dht_id_short(&r->node.id, s),
         r->node.addr, r->has_pred ? r->pred.addr : "(none)", keys,
         cli_backlog_text(&r->backlog, backlog, sizeof(backlog)));
}

static void ring_print_json(const ring_walk *w, bool closed) {
  size_t i;

  printf("{\"ok\":%s,\"command\":\"ring\",\"start\":",
         closed && w->n_problems == 0 ? "true" : "false");
  cli_json_str(stdout, w->ctx->node);
  printf(",\"closed\":%s,\"size\":%zu,\"nodes\":[", closed ? "true" : "false",
         w->n_reachable);
  for (i = 0; i < w->n_rows; i++) {
    const ring_row *r = &w->rows[i];
    char hex[DHT_ID_HEX_LEN];
    printf("%s{\"id\":\"%s\",\"addr\":", i > 0 ? "," : "",
           dht_id_hex(&r->node.id, hex));
    cli_json_str(stdout, r->node.addr);
    printf(",\"reachable\":%s", r->reachable ? "true" : "false");
    if (r->reachable) {
      fputs(",\"pred\":", stdout);
      if (r->has_pred) {
        cli_json_peer(stdout, &r->pred);
      } else {
        fputs("null", stdout);
      }
      if (r->has_keys) {
        printf(",\"keys\":%llu", (unsigned long long)r->keys);
      } else {
        fputs(",\"keys\":null", stdout);
      }
      fputc(',', stdout);
      cli_json_backlog(stdout, &r->backlog);
    } else {
      fputs(",\"error\":", stdout);
      cli_json_str(stdout, r->error);
    }
    fputc('}', stdout);
  }
  fputs("],\"problems\":[", stdout);
  for (i = 0; i < w->n_problems; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_str(stdout, w->problems[i]);
  }
  fputs("]}\n", stdout);
}

/* ring's one option; its state is the uint64_t it sets. */
static const cli_num_opt ring_num_opts[] = {
    {"--max-nodes", NULL, 1, RING_NODES_MAX, RING_NODES_DEFAULT, 0},
};

/* cli_walk's step: one row, printed as it comes, and the check of its
 * predecessor against the row before. Returns 0 or CLI_EXIT_ERROR
 * (printed). */
static int ring_step(void *ud, const cli_walk_step *s) {
  const dht_client_stats_result *st = s->answer;
  char s1[DHT_ID_SHORT_LEN], s2[DHT_ID_SHORT_LEN];
  ring_walk *w = ud;
  ring_row *row, *prev;

  if ((row = ring_add(w)) == NULL) {
    return cli_fail(w->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  row->node = *s->node;
  if (st == NULL) {
    snprintf(row->error, sizeof(row->error), "%s", s->error);
    ring_print_row(w, row);
    return 0;
  }
  prev = w->n_rows >= 2 ? &w->rows[w->n_rows - 2] : NULL;
  w->n_reachable++;
  row->reachable = true;
  row->has_pred = st->has_pred;
  row->pred = st->pred;
  row->has_keys = dht_client_stats_counter(st, "keys", &row->keys) == 0;
  cli_backlog_of(st, &row->backlog);
  ring_print_row(w, row);
  if (prev != NULL && !pred_ok(w, st->has_pred, &st->pred.id, prev)) {
    ring_problem(w,
                 "%s %s has predecessor %s, but the node before it "
                 "is %s %s",
                 dht_id_short(&st->node.id, s1), st->node.addr,
                 st->has_pred ? st->pred.addr : "(none)",
                 dht_id_short(&prev->node.id, s2), prev->node.addr);
  }
  w->last_reachable = st->node.id;
  return 0;
}

static void ring_walk_problem(void *ud, const char *line) {
  ring_problem(ud, "%s", line);
}

/* The walk itself is cli_walk_ring's (walk.c, shared with check), asking
 * every node STATS for its key count. */
static int cmd_ring(cli_ctx *ctx, int argc, char **argv) {
  char s1[DHT_ID_SHORT_LEN], s2[DHT_ID_SHORT_LEN];
  dht_client_stats_result *st = NULL;
  uint64_t max_nodes;
  bool closed = false;
  const ring_row *prev;
  cli_walk walk;
  ring_walk w;
  dht_client *c;
  int rv;

  rv = cli_scan_opts(ctx, argc, argv, ring_usage, ring_num_opts,
                     CLI_COUNT_OF(ring_num_opts), NULL, &max_nodes);
  if (rv == 0) {
    rv = cli_need_member_key(ctx);
  }
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  memset(&w, 0, sizeof(w));
  w.ctx = ctx;
  /* Checks the address (open_client reports a bad $DHT_NODE). */
  if ((rv = open_client(ctx, &c)) != 0) {
    return rv;
  }
  dht_client_del(c);
  st = malloc(sizeof(*st));
  if (st == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  if (!ctx->json) {
    printf("%-8s  %-21s  %-21s  %-8s  %s\n", "ID", "ADDRESS", "PREDECESSOR",
           "KEYS", "TO REPAIR / HAND OFF");
  }
  /* The start is the first address alone, without its fallbacks. */
  c = NULL;
  rv = dht_client_new(&c, ctx->node, &ctx->settings);
  if (rv == 0) {
    rv = dht_client_stats(c, st, ctx->timeout_ms);
  }
  if (rv != 0) {
    /* The start itself: nothing to walk. */
    rv = c != NULL
             ? cli_fail_call(ctx, c, rv, NULL, 0)
             : cli_fail(ctx, CLI_EXIT_ERROR, rv, "bad address %s", ctx->node);
    dht_client_del(c);
    goto out;
  }
  dht_client_del(c);
  walk = (cli_walk){ctx, max_nodes, true, ring_step, ring_walk_problem, &w};
  if ((rv = cli_walk_ring(&walk, st, &closed)) != 0) {
    goto out;
  }
  if (closed) {
    prev = &w.rows[w.n_rows - 1];
    /* A node alone has no predecessor: a ring of one is whole. */
    if (!(w.n_rows == 1 && !w.rows[0].has_pred) &&
        !pred_ok(&w, w.rows[0].has_pred, &w.rows[0].pred.id, prev)) {
      ring_problem(&w,
                   "start %s %s has predecessor %s, but the last node is "
                   "%s %s",
                   dht_id_short(&w.rows[0].node.id, s1), w.rows[0].node.addr,
                   w.rows[0].has_pred ? w.rows[0].pred.addr : "(none)",
                   dht_id_short(&prev->node.id, s2), prev->node.addr);
    }
  }
  if (ctx->json) {
    ring_print_json(&w, closed);
  } else {
    printf("ring: %zu node%s", w.n_reachable, w.n_reachable == 1 ? "" : "s");
    if (w.n_rows > w.n_reachable) {
      printf(" (+%zu not answering)", w.n_rows - w.n_reachable);
    }
    printf(", %s\n", closed ? "closed" : "NOT closed");
    if (w.n_problems > 0) {
      size_t i;
      printf("problems:\n");
      for (i = 0; i < w.n_problems; i++) {
        printf("  - %s\n", w.problems[i]);
      }
    }
  }
  rv = cli_finish_verdict(ctx, w.n_problems > 0 || !closed, "ring has",
                          w.n_problems, CLI_EXIT_ERROR);
out:
  free(st);
  free(w.rows);
  free(w.problems);
  return rv;
}

/* ---- keygen ------------------------------------------------------------- */

static int keygen_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  const char **member_file = ud;

  if (!cli_opt_is(a, "--client")) {
    return 0;
  }
  return cli_opt_value(ctx, a, member_file) == 0 ? 1 : CLI_EXIT_ERROR;
}

static int cmd_keygen(cli_ctx *ctx, int argc, char **argv) {
  const char *member_file = NULL;
  uint8_t raw[DHT_KEY_LEN];
  cli_positional pos;
  dht_ring_key key;
  char err[512];
  int rv;

  ctx->key_file = NULL; /* keygen uses no key of $DHT_CLUSTER_KEY_FILE's */
  rv = cli_scan_args(ctx, argc, argv, keygen_usage, 1, &pos, keygen_opt,
                     &member_file);
  if (rv != 0) {
    return rv < 0 ? CLI_EXIT_OK : rv;
  }
  if (pos.n != 1) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "keygen: missing FILE (see dht keygen --help)");
  }
  if (member_file != NULL) {
    if (dht_ring_key_load(&key, member_file, err, sizeof(err)) != 0) {
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "%s", err);
    }
    if (key.kind != DHT_KEY_MEMBER) {
      dht_ring_key_wipe(&key);
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                      "%s holds a client key; --client needs the member key",
                      member_file);
    }
  } else {
    crypto_kdf_keygen(raw);
    dht_ring_key_from_member(&key, raw);
    sodium_memzero(raw, sizeof(raw));
  }
  rv = dht_ring_key_save(&key, member_file != NULL, pos.v[0], err,
                         sizeof(err));
  dht_ring_key_wipe(&key);
  if (rv != 0) {
    return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s", err);
  }
  if (ctx->json) {
    printf("{\"ok\":true,\"command\":\"keygen\",\"kind\":\"%s\"}\n",
           member_file != NULL ? "client" : "member");
  } else {
    printf("wrote a %s key to %s\n", member_file != NULL ? "client" : "member",
           pos.v[0]);
  }
  return cli_finish(ctx, CLI_EXIT_OK);
}

/* ---- main --------------------------------------------------------------- */

static int cmd_bench(cli_ctx *ctx, int argc, char **argv) {
  return cli_bench(ctx, argc, argv);
}

static int cmd_help(cli_ctx *ctx, int argc, char **argv);

static const command commands[] = {
    {"put", cmd_put, put_usage},    {"get", cmd_get, get_usage},
    {"del", cmd_del, del_usage},    {"lookup", cmd_lookup, lookup_usage},
    {"ring", cmd_ring, ring_usage}, {"stats", cmd_stats, stats_usage},
    {"ping", cmd_ping, ping_usage}, {"bench", cmd_bench, cli_bench_usage},
    {"check", cli_check, cli_check_usage}, {"load", cli_load, cli_load_usage},
    {"wait", cli_wait, cli_wait_usage},
    {"explain", cli_explain, cli_explain_usage},
    {"keygen", cmd_keygen, keygen_usage}, {"help", cmd_help, usage},
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const command *find_command(const char *name) {
  size_t i;

  for (i = 0; i < N_COMMANDS; i++) {
    if (strcmp(commands[i].name, name) == 0) {
      return &commands[i];
    }
  }
  return NULL;
}

static int cmd_help(cli_ctx *ctx, int argc, char **argv) {
  const command *cmd;
  char shown[80];

  if (argc == 0) {
    fputs(usage, stdout);
    return cli_finish(ctx, CLI_EXIT_OK);
  }
  cmd = find_command(argv[0]);
  if (argc > 1 || cmd == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "help: unknown command '%s' (see dht --help)",
                    cli_escape(shown, sizeof(shown), argv[0], strlen(argv[0])));
  }
  fputs(cmd->usage, stdout);
  return cli_finish(ctx, CLI_EXIT_OK);
}

int main(int argc, char **argv) {
  const char *env = getenv("DHT_NODE"), *word = NULL;
  const char *key_env = getenv("DHT_CLUSTER_KEY_FILE");
  const command *cmd;
  char shown[80];
  cli_ctx ctx;
  cli_args a;
  int kind, rv;

  memset(&ctx, 0, sizeof(ctx));
  ctx.node_default = env == NULL || env[0] == '\0';
  (void)cli_set_nodes(&ctx, ctx.node_default ? CLI_NODE_DEFAULT : env, false);
  ctx.timeout_ms = CLI_TIMEOUT_MS_DEFAULT;
  dht_client_settings_default(&ctx.settings);
  ctx.key_file = key_env != NULL && key_env[0] != '\0' ? key_env : NULL;
  if (sodium_init() < 0) {
    return cli_fail(&ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                    "libsodium failed to initialise");
  }

  cli_args_init(&a, argc - 1, argv + 1);
  while ((kind = cli_args_next(&a, &word)) == CLI_ARG_OPT) {
    if (cli_opt_is(&a, "-h") || cli_opt_is(&a, "--help")) {
      fputs(usage, stdout);
      return cli_finish(&ctx, CLI_EXIT_OK);
    }
    if (cli_opt_is(&a, "--version")) {
      printf("dht (chord-dht) %s\n", DHT_VERSION);
      return cli_finish(&ctx, CLI_EXIT_OK);
    }
    if (cli_global_opt(&ctx, &a, &rv)) {
      if (rv != 0) {
        return rv;
      }
      continue;
    }
    return cli_unknown_opt(&ctx, &a);
  }
  if (kind == CLI_ARG_END) {
    return cli_fail(&ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "no command given (see dht --help)");
  }
  cmd = find_command(word);
  if (cmd == NULL) {
    return cli_fail(&ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "unknown command '%s' (see dht --help)",
                    cli_escape(shown, sizeof(shown), word, strlen(word)));
  }
  ctx.command = cmd->name;
  return cmd->fn(&ctx, a.argc - a.i, a.argv + a.i);
}
