/* log.c: see log.h. Lines look like "dhtd INFO 1a2b3c4d joined ...". */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

static char log_tag[DHT_ID_SHORT_LEN] = "--------";
static dht_log_level log_level = DHT_LOG_INFO;

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

void dhtd_log(dht_log_level level, const char *fmt, ...) {
  char line[512];
  va_list ap;

  if (level > log_level) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  fprintf(stderr, "dhtd %s %s %s\n", level_names[level], log_tag, line);
}

void dhtd_log_node(void *ud, dht_log_level level, const char *line) {
  (void)ud;
  /* The node starts its lines with its short id and its clock. */
  fprintf(stderr, "dhtd %s %s\n", level_names[level], line);
}
