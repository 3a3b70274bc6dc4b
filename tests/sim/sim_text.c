/*
 * sim_text.c: the growable report string (see sim_text.h).
 */
#include <stdarg.h>
#include <stdlib.h>

#include "sim_text.h"

void sim_text_init(sim_text *t) {
  t->s = NULL;
  t->len = 0;
  t->cap = 0;
}

void sim_text_free(sim_text *t) {
  free(t->s);
  sim_text_init(t);
}

void sim_text_printf(sim_text *t, const char *fmt, ...) {
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    return;
  }
  if (t->len + (size_t)n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 256;
    char *s;
    while (cap < t->len + (size_t)n + 1) {
      cap *= 2;
    }
    s = realloc(t->s, cap);
    if (s == NULL) {
      fprintf(stderr, "dht-sim: out of memory (report)\n");
      abort();
    }
    t->s = s;
    t->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void sim_text_write(const sim_text *t, FILE *f) {
  if (t->len > 0) {
    fwrite(t->s, 1, t->len, f);
  }
}
