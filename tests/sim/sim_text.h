/*
 * sim_text.h: a growable string that reports are written into, so that the
 * seeds mode can print a run's whole report only when it failed.
 */
#ifndef SIM_TEXT_H
#define SIM_TEXT_H

#include <stddef.h>
#include <stdio.h>

typedef struct sim_text {
  char *s;    /* NUL-terminated once anything was appended, else NULL */
  size_t len; /* characters before the NUL */
  size_t cap; /* bytes allocated */
} sim_text;

void sim_text_init(sim_text *t);
void sim_text_free(sim_text *t);
/* Appends printf-formatted text. Aborts when out of memory. */
void sim_text_printf(sim_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Writes the text (nothing when empty) to f. */
void sim_text_write(const sim_text *t, FILE *f);

#endif /* SIM_TEXT_H */
