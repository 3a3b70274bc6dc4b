/* log.c: see log.h. Lines look like "dhtd INFO 1a2b3c4d joined ...". */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* Bytes of held lines kept (log.h); a join's few attempts fit many times. */
#define HOLD_LEN_MAX 16384

static char log_tag[DHT_ID_SHORT_LEN] = "--------";
static dht_log_level log_level = DHT_LOG_INFO;
static bool holding;                  /* dhtd_log_hold() is in force */
static char held[HOLD_LEN_MAX];       /* the held lines, each with its \n */
static size_t held_len;               /* bytes used in held */
static unsigned held_dropped;         /* lines that did not fit */

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

void dhtd_log_init(const char *tag, dht_log_level level) {
  snprintf(log_tag, sizeof(log_tag), "%s", tag);
  log_level = level;
}

int dhtd_log_level_parse(const char *s, dht_log_level *out) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  int i;

  for (i = 0; i < 4; i++) {
    if (strcmp(s, names[i]) == 0) {
      *out = (dht_log_level)i;
      return 0;
    }
  }
  return -1;
}

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

void dhtd_log(dht_log_level level, const char *fmt, ...) {
  char text[512], line[600];
  va_list ap;

  if (level > log_level) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  snprintf(line, sizeof(line), "dhtd %s %s %s\n", level_names[level], log_tag,
           text);
  emit(line);
}

void dhtd_log_node(void *ud, dht_log_level level, const char *text) {
  char line[600];

  (void)ud;
  /* The node starts its lines with its short id and its clock. */
  snprintf(line, sizeof(line), "dhtd %s %s\n", level_names[level], text);
  emit(line);
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
