/*
 * cli_out.c: the dht client's shared plumbing (cli.h): argument scanning,
 * number parsing, one-line error reports, and JSON output with byte strings
 * that are either UTF-8 strings or base64.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dht/err.h"

/* ---- argument scanning -------------------------------------------------- */

void cli_args_init(cli_args *a, int argc, char **argv) {
  memset(a, 0, sizeof(*a));
  a->argc = argc;
  a->argv = argv;
}

int cli_args_next(cli_args *a, const char **pos) {
  const char *s, *eq;

  a->opt = NULL;
  a->opt_len = 0;
  a->inline_value = NULL;
  for (;;) {
    if (a->i >= a->argc) {
      return CLI_ARG_END;
    }
    s = a->argv[a->i++];
    if (!a->opts_done && strcmp(s, "--") == 0) {
      a->opts_done = true;
      continue;
    }
    if (a->opts_done || s[0] != '-' || s[1] == '\0') {
      *pos = s;
      return CLI_ARG_POS;
    }
    a->opt = s;
    eq = s[1] == '-' ? strchr(s, '=') : NULL;
    a->opt_len = eq != NULL ? (size_t)(eq - s) : strlen(s);
    a->inline_value = eq != NULL ? eq + 1 : NULL;
    return CLI_ARG_OPT;
  }
}

bool cli_opt_is(const cli_args *a, const char *name) {
  return a->opt != NULL && strlen(name) == a->opt_len &&
         memcmp(a->opt, name, a->opt_len) == 0;
}

/* Reports "option NAME <what>" about the current option. Returns
 * CLI_EXIT_ERROR. */
static int opt_error(cli_ctx *ctx, const cli_args *a, const char *what) {
  char name[64];

  cli_escape(name, sizeof(name), a->opt, a->opt_len);
  return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "option %s %s", name,
                  what);
}

int cli_opt_value(cli_ctx *ctx, cli_args *a, const char **value) {
  if (a->inline_value != NULL) {
    *value = a->inline_value;
    return 0;
  }
  if (a->i >= a->argc) {
    return opt_error(ctx, a, "needs a value");
  }
  *value = a->argv[a->i++];
  return 0;
}

int cli_flag_take(cli_ctx *ctx, const cli_args *a, const char *name, bool *flag,
                  bool value) {
  if (!cli_opt_is(a, name)) {
    return 0;
  }
  if (a->inline_value != NULL) {
    return opt_error(ctx, a, "takes no value");
  }
  *flag = value;
  return 1;
}

/* Sets the field of each of opts[0..n) in state to its default. */
static void num_opts_default(const cli_num_opt *opts, size_t n, void *state) {
  size_t i;

  for (i = 0; i < n; i++) {
    *(uint64_t *)((char *)state + opts[i].offset) = opts[i].dflt;
  }
}

/* When the current option is one of opts[0..n), parses its value into its
 * field of state. Returns 1 when it was one of them, 0 when not, or
 * CLI_EXIT_ERROR (printed) for a missing or bad value. */
static int num_opts_take(cli_ctx *ctx, cli_args *a, const cli_num_opt *opts,
                         size_t n, void *state) {
  const cli_num_opt *o;
  const char *v;
  size_t i;
  int rv;

  for (i = 0; i < n; i++) {
    o = &opts[i];
    if (!cli_opt_is(a, o->name) &&
        (o->alias == NULL || !cli_opt_is(a, o->alias))) {
      continue;
    }
    if ((rv = cli_opt_value(ctx, a, &v)) != 0 ||
        (rv = cli_parse_u64(ctx, o->name, v, o->min, o->max,
                            (uint64_t *)((char *)state + o->offset))) != 0) {
      return rv;
    }
    return 1;
  }
  return 0;
}

int cli_unknown_opt(cli_ctx *ctx, const cli_args *a) {
  char name[64];

  cli_escape(name, sizeof(name), a->opt, strlen(a->opt));
  if (ctx->command != NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "unknown option '%s' for %s (see dht %s --help)", name,
                    ctx->command, ctx->command);
  }
  return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                  "unknown option '%s' (see dht --help)", name);
}

int cli_set_nodes(cli_ctx *ctx, const char *list, bool strict) {
  char one[DHT_ADDR_LEN_MAX + 1], host[DHT_ADDR_LEN_MAX + 1], shown[300];
  const char *p, *comma;
  size_t n = 0, len;
  uint16_t port;

  /* Check everything first, then copy: a bad list leaves ctx as it was. */
  for (p = list;; p = comma + 1) {
    comma = strchr(p, ',');
    len = comma != NULL ? (size_t)(comma - p) : strlen(p);
    if (++n > CLI_NODES_MAX || len > DHT_ADDR_LEN_MAX) {
      if (!strict) {
        /* Kept whole: the command that uses it reports it. */
        ctx->node = list;
        ctx->n_fallbacks = 0;
        return 0;
      }
      if (n > CLI_NODES_MAX) {
        return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                        "--node: more than %d addresses", CLI_NODES_MAX);
      }
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                      "--node: address '%s' is longer than %d bytes",
                      cli_escape(shown, sizeof(shown), p, len),
                      DHT_ADDR_LEN_MAX);
    }
    memcpy(one, p, len);
    one[len] = '\0';
    if (strict && dht_addr_parse(one, host, sizeof(host), &port) != 0) {
      return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                      "--node: bad address '%s' (want HOST:PORT, "
                      "[IPV6]:PORT or NAME:PORT, port 1..65535; several "
                      "are separated by commas)",
                      cli_escape(shown, sizeof(shown), p, len));
    }
    if (comma == NULL) {
      break;
    }
  }
  for (n = 0, p = list;; p = comma + 1, n++) {
    comma = strchr(p, ',');
    len = comma != NULL ? (size_t)(comma - p) : strlen(p);
    memcpy(ctx->nodes_[n], p, len);
    ctx->nodes_[n][len] = '\0';
    if (n > 0) {
      ctx->fallbacks[n - 1] = ctx->nodes_[n];
    }
    if (comma == NULL) {
      break;
    }
  }
  ctx->node = ctx->nodes_[0];
  ctx->n_fallbacks = n;
  return 0;
}

/* Reports what dht_client_new / dht_cluster_new refused (rv != 0). */
static int fail_new(cli_ctx *ctx, int rv) {
  char shown[300];

  if (rv == DHT_ERR_INVAL) {
    /* Only $DHT_NODE can get here: --node is checked when parsed. */
    return cli_fail(
        ctx, CLI_EXIT_ERROR, rv,
        "bad node address '%s' (from $DHT_NODE; want HOST:PORT, "
        "[IPV6]:PORT or NAME:PORT, several separated by commas)",
        cli_escape(shown, sizeof(shown), ctx->node, strlen(ctx->node)));
  }
  return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s", dht_strerror(rv));
}

/* Gives c ctx's fallbacks and retry setting. Returns 0 or an exit code. */
static int set_up_client(cli_ctx *ctx, bool retry, dht_client *c) {
  int rv = dht_client_set_fallbacks(c, ctx->fallbacks, ctx->n_fallbacks);

  if (rv != 0) {
    return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s%s", dht_client_last_error(c),
                    rv == DHT_ERR_INVAL ? " (from $DHT_NODE)" : "");
  }
  dht_client_set_retry(c, retry && !ctx->no_retry);
  return 0;
}

int cli_open_client(cli_ctx *ctx, bool retry, dht_client **out) {
  int rv;

  *out = NULL;
  rv = dht_client_new(out, ctx->node, &ctx->settings);
  if (rv != 0) {
    return fail_new(ctx, rv);
  }
  rv = set_up_client(ctx, retry, *out);
  if (rv != 0) {
    dht_client_del(*out);
    *out = NULL;
  }
  return rv;
}

int cli_open_cluster(cli_ctx *ctx, dht_cluster **out) {
  int rv;

  *out = NULL;
  rv = dht_cluster_new(out, ctx->node, &ctx->settings);
  if (rv != 0) {
    return fail_new(ctx, rv);
  }
  rv = set_up_client(ctx, true, dht_cluster_seed(*out));
  if (rv != 0) {
    dht_cluster_del(*out);
    *out = NULL;
    return rv;
  }
  dht_cluster_set_retry(*out, !ctx->no_retry);
  return 0;
}

int cli_global_opt(cli_ctx *ctx, cli_args *a, int *rv) {
  const char *v;
  uint64_t n;
  int taken;

  *rv = 0;
  if ((taken = cli_flag_take(ctx, a, "--json", &ctx->json, true)) != 0 ||
      (taken = cli_flag_take(ctx, a, "--no-retry", &ctx->no_retry, true)) !=
          0 ||
      (taken = cli_flag_take(ctx, a, "--route", &ctx->route, true)) != 0) {
    *rv = taken == 1 ? 0 : taken;
    return 1;
  }
  if (cli_opt_is(a, "--node")) {
    if ((*rv = cli_opt_value(ctx, a, &v)) != 0) {
      return 1;
    }
    *rv = cli_set_nodes(ctx, v, true);
    ctx->node_default = false;
    return 1;
  }
  if (cli_opt_is(a, "--cluster-key-file")) {
    if ((*rv = cli_opt_value(ctx, a, &v)) != 0) {
      return 1;
    }
    ctx->key_file = v;
    return 1;
  }
  if (cli_opt_is(a, "--timeout-ms")) {
    if ((*rv = cli_opt_value(ctx, a, &v)) != 0) {
      return 1;
    }
    *rv = cli_parse_u64(ctx, "--timeout-ms", v, 1, CLI_TIMEOUT_MS_MAX, &n);
    if (*rv == 0) {
      ctx->timeout_ms = (int)n;
    }
    return 1;
  }
  return 0;
}

int cli_parse_u64(cli_ctx *ctx, const char *name, const char *s, uint64_t min,
                  uint64_t max, uint64_t *out) {
  char shown[80];
  uint64_t v = 0;
  size_t i;

  for (i = 0; s[i] != '\0'; i++) {
    if (s[i] < '0' || s[i] > '9' || v > (UINT64_MAX - 9) / 10) {
      break;
    }
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (i == 0 || s[i] != '\0' || v < min || v > max) {
    cli_escape(shown, sizeof(shown), s, strlen(s));
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "%s: expected an integer in %llu..%llu, got '%s'", name,
                    (unsigned long long)min, (unsigned long long)max, shown);
  }
  *out = v;
  return 0;
}

int cli_ratio_take(cli_ctx *ctx, cli_args *a, const char *name, double *out) {
  char shown[80];
  const char *v;
  char *end;
  double d;
  int rv;

  if (!cli_opt_is(a, name)) {
    return 0;
  }
  if ((rv = cli_opt_value(ctx, a, &v)) != 0) {
    return rv;
  }
  d = strtod(v, &end);
  if (end == v || *end != '\0' || !(d >= 0.0) || !(d <= 1.0)) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "%s: expected a number in 0..1, got '%s'", name,
                    cli_escape(shown, sizeof(shown), v, strlen(v)));
  }
  *out = d;
  return 1;
}

/* ---- errors ------------------------------------------------------------- */

char *cli_escape(char *out, size_t out_size, const void *p, size_t len) {
  static const char hex[] = "0123456789abcdef";
  const uint8_t *b = p;
  size_t o = 0, i;

  for (i = 0; i < len; i++) {
    /* Room for the longest escape, "..." and the NUL. */
    if (o + 4 + 3 + 1 > out_size) {
      if (out_size >= 4) {
        o = o < out_size - 4 ? o : out_size - 4;
        memcpy(out + o, "...", 3);
        o += 3;
      }
      break;
    }
    if (b[i] == '\\') {
      out[o++] = '\\';
      out[o++] = '\\';
    } else if (b[i] >= 0x20 && b[i] < 0x7f) {
      out[o++] = (char)b[i];
    } else {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[b[i] >> 4];
      out[o++] = hex[b[i] & 15];
    }
  }
  if (out_size > 0) {
    out[o < out_size ? o : out_size - 1] = '\0';
  }
  return out;
}

int cli_fail(const cli_ctx *ctx, int exit_code, int code, const char *fmt,
             ...) {
  char msg[1024], line[1024];
  va_list ap;
  size_t i;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  /* The parts are escaped already (escaping again would double their
   * backslashes); this only guarantees a single line. */
  for (i = 0; msg[i] != '\0' && i + 1 < sizeof(line); i++) {
    line[i] = ((unsigned char)msg[i] < 0x20 || msg[i] == 0x7f) ? '?' : msg[i];
  }
  line[i] = '\0';
  fflush(stdout);
  fprintf(stderr, "dht: %s\n", line);
  if (ctx != NULL && ctx->json) {
    fputs("{\"ok\":false,\"command\":", stdout);
    if (ctx->command != NULL) {
      cli_json_str(stdout, ctx->command);
    } else {
      fputs("null", stdout);
    }
    fputs(",\"error\":", stdout);
    cli_json_str(stdout, dht_errname(code));
    fprintf(stdout, ",\"code\":%d,\"message\":", code);
    cli_json_str(stdout, line);
    fputs("}\n", stdout);
    fflush(stdout);
  }
  return exit_code;
}

/* cli_fail_call on what a call left: its error text and the node's words. */
static int fail_texts(const cli_ctx *ctx, const char *err, const char *refusal,
                      int rv, const char *key, size_t key_len) {
  char shown[200];

  if (rv == DHT_ERR_NOT_FOUND && key != NULL) {
    cli_escape(shown, sizeof(shown), key, key_len);
    return cli_fail(ctx, CLI_EXIT_NOT_FOUND, rv, "key not found: %s", shown);
  }
  if (rv == DHT_ERR_LOST && key != NULL) {
    cli_escape(shown, sizeof(shown), key, key_len);
    return cli_fail(ctx, CLI_EXIT_NOT_FOUND, rv, "key possibly lost: %s (%s)",
                    shown, refusal);
  }
  if ((rv == DHT_ERR_DISK_FULL || rv == DHT_ERR_STORE ||
       rv == DHT_ERR_CLOCK_SKEW || rv == DHT_ERR_STALE) &&
      strncmp(refusal, "node ", 5) == 0) {
    /* The node said which node refused, and why, in its own words. */
    return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s", refusal);
  }
  if (rv == DHT_ERR_FORBIDDEN) {
    return cli_fail(ctx, CLI_EXIT_ERROR, rv,
                    "%s (%s takes the ring's member key, not a client key)",
                    err, ctx->command);
  }
  if (ctx->node_default &&
      strncmp(err, "cannot reach ", 13) == 0) {
    /* Most likely the user forgot to say where the ring is. */
    return cli_fail(ctx, CLI_EXIT_ERROR, rv,
                    "%s (the default node: give --node HOST:PORT or set "
                    "$DHT_NODE)",
                    err);
  }
  return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s", err);
}

int cli_fail_call(const cli_ctx *ctx, dht_client *c, int rv, const char *key,
                  size_t key_len) {
  return fail_texts(ctx, dht_client_last_error(c), dht_client_last_refusal(c),
                    rv, key, key_len);
}

int cli_fail_cluster(const cli_ctx *ctx, const dht_cluster *cl, int rv,
                     const char *key, size_t key_len) {
  return fail_texts(ctx, dht_cluster_last_error(cl),
                    dht_cluster_last_refusal(cl), rv, key, key_len);
}

int cli_finish(const cli_ctx *ctx, int rv) {
  if (fflush(stdout) != 0 || ferror(stdout)) {
    /* --json would write to the same broken stdout: stderr only. */
    fprintf(stderr, "dht: write to stdout: %s\n", strerror(errno));
    (void)ctx;
    return CLI_EXIT_ERROR;
  }
  return rv;
}

int cli_finish_verdict(const cli_ctx *ctx, bool failed, const char *what,
                       size_t n_problems, int fail_code) {
  int rv = cli_finish(ctx, CLI_EXIT_OK);

  if (rv != CLI_EXIT_OK || !failed) {
    return rv;
  }
  /* Not cli_fail: with --json the result object is out already. */
  fprintf(stderr, "dht: %s %zu problem%s%s\n", what, n_problems,
          n_problems == 1 ? "" : "s",
          ctx->json ? " (see \"problems\")" : " (listed above)");
  return fail_code;
}

/* ---- JSON --------------------------------------------------------------- */

bool cli_utf8_valid(const uint8_t *p, size_t len) {
  size_t i = 0, n, k;
  uint32_t cp;

  while (i < len) {
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    if (p[i] >= 0xc2 && p[i] <= 0xdf) {
      n = 1;
      cp = p[i] & 0x1fu;
    } else if (p[i] >= 0xe0 && p[i] <= 0xef) {
      n = 2;
      cp = p[i] & 0x0fu;
    } else if (p[i] >= 0xf0 && p[i] <= 0xf4) {
      n = 3;
      cp = p[i] & 0x07u;
    } else {
      return false;
    }
    if (len - i <= n) {
      return false;
    }
    for (k = 1; k <= n; k++) {
      if ((p[i + k] & 0xc0) != 0x80) {
        return false;
      }
      cp = cp << 6 | (p[i + k] & 0x3fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

void cli_json_str_n(FILE *f, const void *p, size_t len) {
  /* The bytes JSON escapes by name, and the names: '"' is \", ... */
  static const char named[] = "\"\\\n\r\t", names[] = "\"\\nrt";
  const uint8_t *b = p;
  const char *e;
  size_t i;

  fputc('"', f);
  for (i = 0; i < len; i++) {
    e = b[i] != '\0' ? strchr(named, b[i]) : NULL;
    if (e != NULL) {
      fputc('\\', f);
      fputc(names[e - named], f);
    } else if (b[i] < 0x20 || b[i] == 0x7f) {
      fprintf(f, "\\u%04x", (unsigned)b[i]);
    } else {
      fputc(b[i], f);
    }
  }
  fputc('"', f);
}

void cli_json_str(FILE *f, const char *s) { cli_json_str_n(f, s, strlen(s)); }

static void base64(FILE *f, const uint8_t *p, size_t len) {
  static const char tbl[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint32_t v;
  size_t i;

  fputc('"', f);
  for (i = 0; i + 2 < len; i += 3) {
    v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
    fputc(tbl[v >> 18], f);
    fputc(tbl[(v >> 12) & 63], f);
    fputc(tbl[(v >> 6) & 63], f);
    fputc(tbl[v & 63], f);
  }
  if (len - i == 1) {
    v = (uint32_t)p[i] << 16;
    fputc(tbl[v >> 18], f);
    fputc(tbl[(v >> 12) & 63], f);
    fputs("==", f);
  } else if (len - i == 2) {
    v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
    fputc(tbl[v >> 18], f);
    fputc(tbl[(v >> 12) & 63], f);
    fputc(tbl[(v >> 6) & 63], f);
    fputc('=', f);
  }
  fputc('"', f);
}

void cli_json_bytes(FILE *f, const char *name, const void *p, size_t len) {
  if (len == 0 || cli_utf8_valid(p, len)) {
    fprintf(f, "\"%s\":", name);
    cli_json_str_n(f, p, len);
  } else {
    fprintf(f, "\"%s_base64\":", name);
    base64(f, p, len);
  }
}

void cli_json_peer(FILE *f, const dht_client_peer *p) {
  char hex[DHT_ID_HEX_LEN];

  fprintf(f, "{\"id\":\"%s\",\"addr\":", dht_id_hex(&p->id, hex));
  cli_json_str(f, p->addr);
  fputc('}', f);
}

void cli_json_peers(FILE *f, const dht_client_peer *p, size_t n) {
  size_t i;

  fputc('[', f);
  for (i = 0; i < n; i++) {
    if (i > 0) {
      fputc(',', f);
    }
    cli_json_peer(f, &p[i]);
  }
  fputc(']', f);
}

void cli_json_lost(FILE *f, const dht_client_lost_range *l) {
  char hex[DHT_ID_HEX_LEN];

  fprintf(f, "{\"from\":\"%s\"", dht_id_hex(&l->from, hex));
  fprintf(f, ",\"to\":\"%s\",\"at_ms\":%llu,\"holders\":",
          dht_id_hex(&l->to, hex), (unsigned long long)l->at_ms);
  cli_json_peers(f, l->holders, l->n_holders);
  fputc('}', f);
}

void cli_lost_text(const dht_client_lost_range *l, char *buf, size_t len) {
  char from[DHT_ID_SHORT_LEN], to[DHT_ID_SHORT_LEN], when[32] = "?";
  time_t secs = (time_t)(l->at_ms / 1000);
  struct tm tm;
  size_t used, i;

  if (gmtime_r(&secs, &tm) != NULL) {
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  }
  used = (size_t)snprintf(buf, len,
                          "(%s, %s] since %s: every holder died before "
                          "repair:",
                          dht_id_short(&l->from, from),
                          dht_id_short(&l->to, to), when);
  for (i = 0; i < l->n_holders && used < len; i++) {
    used += (size_t)snprintf(buf + used, len - used, "%s %s", i ? "," : "",
                             l->holders[i].addr);
  }
}

char *cli_bytes_text(uint64_t bytes, char *buf, size_t len) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = (double)bytes;
  size_t u = 0;

  if (bytes < 1024) {
    snprintf(buf, len, "%llu B", (unsigned long long)bytes);
    return buf;
  }
  v /= 1024;
  while (v >= 1024 && u + 1 < CLI_COUNT_OF(units)) {
    v /= 1024;
    u++;
  }
  snprintf(buf, len, "%.1f %s", v, units[u]);
  return buf;
}

char *cli_ms_text(uint64_t ms, char *buf, size_t len) {
  uint64_t s = ms / 1000;

  if (ms < 1000) {
    snprintf(buf, len, "%llu ms", (unsigned long long)ms);
  } else if (ms < 60000) {
    snprintf(buf, len, "%.1f s", (double)ms / 1000);
  } else if (s < 3600) {
    snprintf(buf, len, "%llu min %llu s", (unsigned long long)(s / 60),
             (unsigned long long)(s % 60));
  } else {
    snprintf(buf, len, "%llu h %llu min", (unsigned long long)(s / 3600),
             (unsigned long long)(s / 60 % 60));
  }
  return buf;
}

void cli_backlog_of(const dht_client_stats_result *st, cli_backlog *b) {
  memset(b, 0, sizeof(*b));
  b->known =
      dht_client_stats_counter(st, "repair_records", &b->repair_records) == 0 &&
      dht_client_stats_counter(st, "repair_bytes", &b->repair_bytes) == 0 &&
      dht_client_stats_counter(st, "handoff_records", &b->handoff_records) ==
          0 &&
      dht_client_stats_counter(st, "handoff_bytes", &b->handoff_bytes) == 0 &&
      dht_client_stats_counter(st, "backlog_eta_ms", &b->eta_ms) == 0;
}

char *cli_backlog_text(const cli_backlog *b, char *buf, size_t len) {
  char bytes[32], eta[32];
  size_t used = 0;

  if (!b->known) {
    snprintf(buf, len, "-");
    return buf;
  }
  buf[0] = '\0';
  if (b->repair_records > 0) {
    used += (size_t)snprintf(buf + used, len - used, "repair %llu (%s)",
                             (unsigned long long)b->repair_records,
                             cli_bytes_text(b->repair_bytes, bytes,
                                            sizeof(bytes)));
  }
  if (b->handoff_records > 0 && used < len) {
    used += (size_t)snprintf(buf + used, len - used, "%shand-off %llu (%s)",
                             used > 0 ? ", " : "",
                             (unsigned long long)b->handoff_records,
                             cli_bytes_text(b->handoff_bytes, bytes,
                                            sizeof(bytes)));
  }
  if (used == 0) {
    snprintf(buf, len, "none");
  } else if (used < len) {
    snprintf(buf + used, len - used, ", about %s left",
             cli_ms_text(b->eta_ms, eta, sizeof(eta)));
  }
  return buf;
}

void cli_json_backlog(FILE *f, const cli_backlog *b) {
  if (!b->known) {
    fputs("\"backlog\":null", f);
    return;
  }
  fprintf(f,
          "\"backlog\":{\"repair_records\":%llu,\"repair_bytes\":%llu,"
          "\"handoff_records\":%llu,\"handoff_bytes\":%llu,"
          "\"eta_ms\":%llu}",
          (unsigned long long)b->repair_records,
          (unsigned long long)b->repair_bytes,
          (unsigned long long)b->handoff_records,
          (unsigned long long)b->handoff_bytes,
          (unsigned long long)b->eta_ms);
}

void cli_version_text(const dht_client_scan_item *it, char *buf, size_t len) {
  uint64_t ms = it->version.hlc >> 16;
  char s[DHT_ID_SHORT_LEN], when[32] = "?";
  time_t secs = (time_t)(ms / 1000);
  struct tm tm;

  if (!it->has_version) {
    snprintf(buf, len, "unversioned");
    return;
  }
  if (gmtime_r(&secs, &tm) != NULL) {
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
  }
  snprintf(buf, len, "%s.%03uZ+%u/%s%s", when, (unsigned)(ms % 1000),
           (unsigned)(it->version.hlc & 0xffff),
           dht_id_short(&it->version.writer, s),
           it->tombstone ? " (deleted)" : "");
}

const char *cli_exchange_outcome(dht_exchange_outcome outcome) {
  switch (outcome) {
  case DHT_EXCHANGE_RUNNING:
    return "running";
  case DHT_EXCHANGE_DONE:
    return "done";
  case DHT_EXCHANGE_FAILED:
    return "failed";
  }
  return "?";
}

void cli_exchange_text(const dht_client_exchange *x, char *buf, size_t len) {
  char ago[32], took[32];

  cli_ms_text(x->ago_ms, ago, sizeof(ago));
  cli_ms_text(x->took_ms, took, sizeof(took));
  switch (x->outcome) {
  case DHT_EXCHANGE_RUNNING:
    snprintf(buf, len, "running for %s: %llu buckets differ, %llu records "
             "pushed so far", took, (unsigned long long)x->buckets,
             (unsigned long long)x->pushed);
    break;
  case DHT_EXCHANGE_DONE:
    if (x->buckets == 0) {
      snprintf(buf, len, "done %s ago, in %s: in sync", ago, took);
    } else {
      snprintf(buf, len, "done %s ago, in %s: %llu buckets differed, %llu "
               "records pushed", ago, took, (unsigned long long)x->buckets,
               (unsigned long long)x->pushed);
    }
    break;
  default:
    snprintf(buf, len, "failed %s ago (%llu records pushed): the next round "
             "tries again", ago, (unsigned long long)x->pushed);
    break;
  }
}

void cli_json_exchange(FILE *f, const dht_client_exchange *x) {
  char hex[DHT_ID_HEX_LEN];

  fputs("{\"replica\":", f);
  cli_json_peer(f, &x->replica);
  fprintf(f, ",\"from\":\"%s\"", dht_id_hex(&x->from, hex));
  fprintf(f, ",\"to\":\"%s\",\"ago_ms\":%llu,\"took_ms\":%llu,"
          "\"buckets\":%llu,\"pushed\":%llu,\"outcome\":\"%s\"}",
          dht_id_hex(&x->to, hex), (unsigned long long)x->ago_ms,
          (unsigned long long)x->took_ms, (unsigned long long)x->buckets,
          (unsigned long long)x->pushed, cli_exchange_outcome(x->outcome));
}

void cli_json_dead(FILE *f, const dht_client_dead_peer *dead, size_t n) {
  size_t i;

  fputs("\"dead\":[", f);
  for (i = 0; i < n; i++) {
    fprintf(f, "%s{\"peer\":", i > 0 ? "," : "");
    cli_json_peer(f, &dead[i].peer);
    fprintf(f, ",\"ago_ms\":%llu}", (unsigned long long)dead[i].ago_ms);
  }
  fputc(']', f);
}

int cli_scan_args(cli_ctx *ctx, int argc, char **argv, const char *help,
                  int max_pos, cli_positional *pos, cli_opt_fn own, void *ud) {
  const char *p;
  cli_args a;
  int kind, rv;

  memset(pos, 0, sizeof(*pos));
  cli_args_init(&a, argc, argv);
  while ((kind = cli_args_next(&a, &p)) != CLI_ARG_END) {
    if (kind == CLI_ARG_POS) {
      if (max_pos == 0) {
        return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                        "%s takes no arguments (see dht %s --help)",
                        ctx->command, ctx->command);
      }
      if (pos->n >= max_pos) {
        return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                        "too many arguments for %s (see dht %s --help)",
                        ctx->command, ctx->command);
      }
      pos->v[pos->n++] = p;
      continue;
    }
    if (cli_opt_is(&a, "-h") || cli_opt_is(&a, "--help")) {
      fputs(help, stdout);
      return -1;
    }
    if (cli_global_opt(ctx, &a, &rv)) {
      if (rv != 0) {
        return rv;
      }
      continue;
    }
    if (own != NULL) {
      rv = own(ctx, &a, ud);
      if (rv == 1) {
        continue;
      }
      if (rv != 0) {
        return rv;
      }
    }
    return cli_unknown_opt(ctx, &a);
  }
  return cli_load_key(ctx);
}

int cli_load_key(cli_ctx *ctx) {
  char err[512];

  if (ctx->key_file == NULL || ctx->settings.key.kind != DHT_KEY_NONE) {
    return 0;
  }
  if (dht_ring_key_load(&ctx->settings.key, ctx->key_file, err, sizeof(err)) !=
      0) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL, "%s", err);
  }
  return 0;
}

int cli_need_member_key(cli_ctx *ctx) {
  if (ctx->settings.key.kind != DHT_KEY_CLIENT) {
    return 0;
  }
  return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_FORBIDDEN,
                  "%s needs the ring's member key: %s holds a client key, "
                  "which may only put, get, del, lookup, ping and ask stats",
                  ctx->command, ctx->key_file);
}

/* What cli_scan_opts hands cli_scan_args for the command's options. */
typedef struct scan_opts {
  const cli_num_opt *nums; /* the numeric options */
  size_t n_nums;           /* entries in nums */
  cli_opt_fn own;          /* the others, or NULL */
  void *state;             /* where they go */
} scan_opts;

static int scan_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  const scan_opts *o = ud;
  int rv = num_opts_take(ctx, a, o->nums, o->n_nums, o->state);

  return rv != 0 || o->own == NULL ? rv : o->own(ctx, a, o->state);
}

int cli_scan_opts(cli_ctx *ctx, int argc, char **argv, const char *help,
                  const cli_num_opt *nums, size_t n_nums, cli_opt_fn own,
                  void *state) {
  scan_opts o;
  cli_positional pos;

  o.nums = nums;
  o.n_nums = n_nums;
  o.own = own;
  o.state = state;
  num_opts_default(nums, n_nums, state);
  return cli_scan_args(ctx, argc, argv, help, 0, &pos, scan_opt, &o);
}
