/*
 * log.c: see log.h. Text lines look like "dhtd INFO 1a2b3c4d joined ...";
 * JSON lines like
 *   {"time":"2024-05-01T12:00:00.123Z","level":"info",
 *    "node":{"id":"1a2b...","addr":"127.0.0.1:7100"},"msg":"joined ..."}
 * with "peer" where the line is about one, and "node_ms" (the node's own
 * clock) on the node's lines. Strings are escaped as JSON wants, and bytes
 * that are not UTF-8 become U+FFFD.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

/* Bytes of held lines kept (log.h); a join's few attempts fit many times. */
#define HOLD_LEN_MAX 16384
/* A JSON line: its text (at most 600 bytes, each at most 6 escaped), a
 * peer, the node and the keys. */
#define JSON_LINE_MAX 8192

static char log_tag[DHT_ID_SHORT_LEN] = "--------";
static dht_log_level log_level = DHT_LOG_INFO;
static bool log_json;                 /* --log-format json */
static char node_id[DHT_ID_HEX_LEN];  /* the node's id in hex, "" unknown */
static char node_addr[DHT_ADDR_LEN_MAX + 1]; /* its address, "" unknown */
static bool holding;                  /* dhtd_log_hold() is in force */
static char held[HOLD_LEN_MAX];       /* the held lines, each with its \n */
static size_t held_len;               /* bytes used in held */
static unsigned held_dropped;         /* lines that did not fit */

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
static const char *const level_words[] = {"error", "warn", "info", "debug"};

void dhtd_log_init(const char *tag, dht_log_level level) {
  snprintf(log_tag, sizeof(log_tag), "%s", tag);
  log_level = level;
}

int dhtd_log_level_parse(const char *s, dht_log_level *out) {
  int i;

  for (i = 0; i < 4; i++) {
    if (strcmp(s, level_words[i]) == 0) {
      *out = (dht_log_level)i;
      return 0;
    }
  }
  return -1;
}

int dhtd_log_format_set(const char *s) {
  if (strcmp(s, "text") != 0 && strcmp(s, "json") != 0) {
    return -1;
  }
  log_json = strcmp(s, "json") == 0;
  return 0;
}

void dhtd_log_set_node(const char *id_hex, const char *addr) {
  snprintf(node_id, sizeof(node_id), "%s", id_hex != NULL ? id_hex : "");
  snprintf(node_addr, sizeof(node_addr), "%s", addr != NULL ? addr : "");
}

/* ---- JSON ------------------------------------------------------------------ */

typedef struct jline {
  char b[JSON_LINE_MAX];
  size_t len;
} jline;

static void j_raw(jline *j, const char *s, size_t n) {
  if (n > sizeof(j->b) - 1 - j->len) {
    n = sizeof(j->b) - 1 - j->len; /* cannot happen within the bounds */
  }
  memcpy(j->b + j->len, s, n);
  j->len += n;
  j->b[j->len] = '\0';
}

static void j_cat(jline *j, const char *s) { j_raw(j, s, strlen(s)); }

/* The length of the UTF-8 sequence at s (which has n bytes), or 0 when it
 * is not one: overlong forms, surrogates and code points past U+10FFFF are
 * not. */
static size_t utf8_len(const unsigned char *s, size_t n) {
  size_t len, i;
  unsigned cp;

  if (s[0] < 0x80) {
    return 1;
  } else if ((s[0] & 0xe0) == 0xc0) {
    len = 2;
    cp = s[0] & 0x1fu;
  } else if ((s[0] & 0xf0) == 0xe0) {
    len = 3;
    cp = s[0] & 0x0fu;
  } else if ((s[0] & 0xf8) == 0xf0) {
    len = 4;
    cp = s[0] & 0x07u;
  } else {
    return 0;
  }
  if (len > n) {
    return 0;
  }
  for (i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) {
      return 0;
    }
    cp = cp << 6 | (s[i] & 0x3fu);
  }
  if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) ||
      (len == 4 && cp < 0x10000) || cp > 0x10ffff ||
      (cp >= 0xd800 && cp <= 0xdfff)) {
    return 0;
  }
  return len;
}

/* s as a JSON string, quotes included. */
static void j_str(jline *j, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), len;
  char esc[8];

  j_cat(j, "\"");
  while (n > 0) {
    if (*p == '"' || *p == '\\') {
      esc[0] = '\\';
      esc[1] = (char)*p;
      j_raw(j, esc, 2);
      len = 1;
    } else if (*p < 0x20 || *p == 0x7f) {
      snprintf(esc, sizeof(esc), "\\u%04x", *p);
      j_cat(j, esc);
      len = 1;
    } else if ((len = utf8_len(p, n)) == 0) {
      j_cat(j, "\\ufffd");
      len = 1;
    } else {
      j_raw(j, (const char *)p, len);
    }
    p += len;
    n -= len;
  }
  j_cat(j, "\"");
}

/* "2024-05-01T12:00:00.123Z": now, in UTC, to the millisecond. */
static void j_time(jline *j) {
  struct timespec ts;
  struct tm tm;
  char t[40];
  size_t n;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(t + n, sizeof(t) - n, ".%03ldZ", ts.tv_nsec / 1000000);
  j_str(j, t);
}

/* One JSON line: msg, with peer (NULL: none) and node_ms (NULL: none,
 * else its digits) as fields. */
static void json_line(jline *j, dht_log_level level, const char *peer,
                      const char *node_ms, const char *msg) {
  j->len = 0;
  j_cat(j, "{\"time\":");
  j_time(j);
  j_cat(j, ",\"level\":");
  j_str(j, level_words[level]);
  j_cat(j, ",\"node\":");
  if (node_id[0] == '\0' && node_addr[0] == '\0') {
    j_cat(j, "null");
  } else {
    j_cat(j, "{");
    if (node_id[0] != '\0') {
      j_cat(j, "\"id\":");
      j_str(j, node_id);
      j_cat(j, node_addr[0] != '\0' ? "," : "");
    }
    if (node_addr[0] != '\0') {
      j_cat(j, "\"addr\":");
      j_str(j, node_addr);
    }
    j_cat(j, "}");
  }
  j_cat(j, ",\"msg\":");
  j_str(j, msg);
  if (peer != NULL) {
    j_cat(j, ",\"peer\":");
    j_str(j, peer);
  }
  if (node_ms != NULL) {
    j_cat(j, ",\"node_ms\":");
    j_cat(j, node_ms);
  }
  j_cat(j, "}\n");
}

/* ---- lines ------------------------------------------------------------------- */

/* Prints one line (with its \n), or holds it. */
static void emit(const char *line) {
  size_t len = strlen(line);

  if (!holding) {
    fputs(line, stderr);
  } else if (held_len + len <= sizeof(held)) {
    memcpy(held + held_len, line, len);
    held_len += len;
  } else {
    held_dropped++;
  }
}

/* A line of dhtd's own, about peer (NULL: none). */
static void log_text(dht_log_level level, const char *peer, const char *text) {
  static jline j;
  char line[600];

  if (log_json) {
    json_line(&j, level, peer, NULL, text);
    emit(j.b);
    return;
  }
  snprintf(line, sizeof(line), "dhtd %s %s %s\n", level_names[level], log_tag,
           text);
  emit(line);
}

/* dhtd_log and dhtd_log_peer: formats and writes the line, if its level
 * is printed. */
static void log_v(dht_log_level level, const char *peer, const char *fmt,
                  va_list ap) __attribute__((format(printf, 3, 0)));
static void log_v(dht_log_level level, const char *peer, const char *fmt,
                  va_list ap) {
  char text[512];

  if (level <= log_level) {
    vsnprintf(text, sizeof(text), fmt, ap);
    log_text(level, peer, text);
  }
}

void dhtd_log(dht_log_level level, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  log_v(level, NULL, fmt, ap);
  va_end(ap);
}

void dhtd_log_peer(dht_log_level level, const char *peer, const char *fmt,
                   ...) {
  va_list ap;

  va_start(ap, fmt);
  log_v(level, peer, fmt, ap);
  va_end(ap);
}

void dhtd_log_node(void *ud, dht_log_level level, const char *text) {
  static jline j;
  char line[600], node_ms[24];
  const char *rest = text, *t;
  size_t n;

  (void)ud;
  if (!log_json) {
    /* The node starts its lines with its short id and its clock. */
    snprintf(line, sizeof(line), "dhtd %s %s\n", level_names[level], text);
    emit(line);
    return;
  }
  /* "SHORTID t=MS text": the id is the node field's, the clock a field. */
  node_ms[0] = '\0';
  t = strstr(text, " t=");
  if (t != NULL && (size_t)(t - text) == DHT_ID_SHORT_LEN - 1) {
    n = strspn(t + 3, "0123456789");
    if (n > 0 && n < sizeof(node_ms) && t[3 + n] == ' ') {
      memcpy(node_ms, t + 3, n);
      node_ms[n] = '\0';
      rest = t + 3 + n + 1;
    }
  }
  json_line(&j, level, NULL, node_ms[0] != '\0' ? node_ms : NULL, rest);
  emit(j.b);
}

void dhtd_log_startup_error(const char *text) {
  static jline j;

  if (log_json) {
    json_line(&j, DHT_LOG_ERROR, NULL, NULL, text);
    fputs(j.b, stderr);
  } else {
    fprintf(stderr, "dhtd: %s\n", text);
  }
}

void dhtd_log_hold(void) { holding = true; }

void dhtd_log_release(bool print) {
  if (!holding) {
    return;
  }
  holding = false;
  if (print) {
    fwrite(held, 1, held_len, stderr);
    if (held_dropped > 0) {
      dhtd_log(DHT_LOG_WARN, "(%u log lines of the start-up were dropped)",
               held_dropped);
    }
  }
  held_len = 0;
  held_dropped = 0;
}
