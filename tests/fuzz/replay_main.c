/*
 * replay_main.c: runs a fuzz target without libFuzzer, on every file named
 * on the command line or found (non-recursively, in name order) in a
 * directory named there. The normal build links it with each target so
 * that a ctest replays the seed corpus and every crashing input kept in
 * tests/fuzz/regress/<target>/: a fixed finding stays fixed under gcc and
 * every build type, not only in the clang fuzz build.
 */
#define _POSIX_C_SOURCE 200809L /* strdup, opendir */

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Reads the whole file at path into *data (malloc'ed) and *len; 0 or -1. */
static int read_file(const char *path, uint8_t **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  uint8_t *buf = NULL;
  size_t n = 0, cap = 0, got;

  if (f == NULL) {
    return -1;
  }
  for (;;) {
    if (n == cap) {
      uint8_t *bigger;
      cap = cap == 0 ? 4096 : cap * 2;
      bigger = realloc(buf, cap);
      if (bigger == NULL) {
        free(buf);
        fclose(f);
        return -1;
      }
      buf = bigger;
    }
    got = fread(buf + n, 1, cap - n, f);
    n += got;
    if (got == 0) {
      break;
    }
  }
  if (ferror(f)) {
    free(buf);
    fclose(f);
    return -1;
  }
  fclose(f);
  *data = buf;
  *len = n;
  return 0;
}

static int run_file(const char *path) {
  uint8_t *data;
  size_t len;

  if (read_file(path, &data, &len) != 0) {
    fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
    return -1;
  }
  /* Printed first, so that a crash names the input that caused it. */
  fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
  LLVMFuzzerTestOneInput(data, len);
  free(data);
  return 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs every regular file in dir, in name order; counts them in *n. */
static int run_dir(const char *dir, size_t *n) {
  DIR *d = opendir(dir);
  struct dirent *e;
  char **names = NULL, path[4096];
  size_t n_names = 0, i;
  int rv = 0;

  if (d == NULL) {
    fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
    return -1;
  }
  while ((e = readdir(d)) != NULL) {
    char **more;
    if (e->d_name[0] == '.') {
      continue; /* ., .., and .gitkeep-style placeholders */
    }
    more = realloc(names, (n_names + 1) * sizeof(*names));
    if (more == NULL || (more[n_names] = strdup(e->d_name)) == NULL) {
      free(more != NULL ? more : names);
      closedir(d);
      return -1;
    }
    names = more;
    n_names++;
  }
  closedir(d);
  if (n_names > 0) {
    qsort(names, n_names, sizeof(*names), by_name);
  }
  for (i = 0; i < n_names; i++) {
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    if (rv == 0 && run_file(path) != 0) {
      rv = -1;
    }
    (*n)++;
    free(names[i]);
  }
  free(names);
  return rv;
}

int main(int argc, char **argv) {
  struct stat st;
  size_t n = 0;
  int i;

  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
    return 2;
  }
  for (i = 1; i < argc; i++) {
    if (stat(argv[i], &st) != 0) {
      fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
      return 1;
    }
    if (S_ISDIR(st.st_mode) ? run_dir(argv[i], &n) != 0
                            : (n++, run_file(argv[i]) != 0)) {
      return 1;
    }
  }
  printf("replay: %zu inputs ran cleanly\n", n);
  return 0;
}
