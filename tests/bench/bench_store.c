/*
 * bench_store.c: bench-store, a measurement of one store backend on its own
 * (scripts/bench --memory runs it, next to Redis and dhtd).
 *
 * Loads N keys "bench-0" .. "bench-(N-1)" (the names `dht bench` uses), in
 * that order, each with a value of V bytes, into a fresh memory store or a
 * fresh LMDB data directory, and prints the insert rate of every tenth of
 * the load (a store whose inserts slow down as it grows shows it there),
 * then the process's memory after the load. Key ids are the keys' hashes,
 * as in the node, so the store sees them in random ring order. The node
 * would add a 30-byte version header to each value; this program stores the
 * value bytes as they are, so its figures compare with Redis's for the same
 * keys and values.
 *
 *   bench-store memory|lmdb [--dir DIR] [--keys N] [--value-size V]
 *               [--commit-every N] [--sync always|interval|none]
 *
 * Defaults: --keys 1000000 --value-size 100; LMDB only: --dir is required,
 * must not exist yet, and is left behind; --commit-every 1000 --sync none
 * (the commit policy is not what is measured: the daemon commits once per
 * event-loop iteration, with the sync mode it is given).
 *
 * Output, one record per line, fields separated by spaces:
 *   decile I KEYS SECONDS KEYS_PER_S   for I = 1..10
 *   memory RSS_KIB ANON_KIB FILE_KIB BASE_RSS_KIB DISK_KIB
 * RSS, ANON and FILE are VmRSS, RssAnon and RssFile of /proc/self/status
 * after the load; BASE is VmRSS before it; DISK is what data.mdb occupies
 * (0 for the memory store).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "dht/err.h"
#include "dht/id.h"
#include "dht/store.h"
#include "dht/store_lmdb.h"

#define KEYS_MAX 100000000ull
#define VALUE_SIZE_MAX (1u << 20)
#define DECILES 10

static double now_s(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The value in KiB of the line "name: N kB" of /proc/self/status, 0 if
 * absent. */
static unsigned long status_kib(const char *name) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  size_t len = strlen(name);
  unsigned long v = 0;

  if (f == NULL) {
    return 0;
  }
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, name, len) == 0 && line[len] == ':') {
      v = strtoul(line + len + 1, NULL, 10);
      break;
    }
  }
  fclose(f);
  return v;
}

static int usage(void) {
  fprintf(stderr,
          "usage: bench-store memory|lmdb [--dir DIR] [--keys N] "
          "[--value-size V]\n"
          "                   [--commit-every N] "
          "[--sync always|interval|none]\n");
  return 2;
}

/* Parses a decimal number in [lo, hi]; false if s is not one. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out) {
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
    return false;
  }
  *out = v;
  return true;
}

int main(int argc, char **argv) {
  uint64_t keys = 1000000, value_size = 100, commit_every = 1000;
  dht_store_lmdb_options opt;
  const char *dir = NULL;
  char err[256];
  bool lmdb;
  dht_store *st = NULL;
  uint8_t *value;
  unsigned long base_kib;
  double t0;
  uint64_t i;
  int d, a, rc;

  memset(&opt, 0, sizeof(opt));
  opt.sync = DHT_SYNC_NONE;
  opt.err = err;
  opt.err_len = sizeof(err);
  if (argc < 2 ||
      (strcmp(argv[1], "memory") != 0 && strcmp(argv[1], "lmdb") != 0)) {
    return usage();
  }
  lmdb = strcmp(argv[1], "lmdb") == 0;
  for (a = 2; a < argc; a += 2) {
    const char *v = a + 1 < argc ? argv[a + 1] : NULL;
    bool ok = v != NULL;
    if (ok && strcmp(argv[a], "--dir") == 0) {
      dir = v;
    } else if (ok && strcmp(argv[a], "--keys") == 0) {
      ok = parse_u64(v, DECILES, KEYS_MAX, &keys);
    } else if (ok && strcmp(argv[a], "--value-size") == 0) {
      ok = parse_u64(v, 0, VALUE_SIZE_MAX, &value_size);
    } else if (ok && strcmp(argv[a], "--commit-every") == 0) {
      ok = parse_u64(v, 1, KEYS_MAX, &commit_every);
    } else if (ok && strcmp(argv[a], "--sync") == 0) {
      ok = dht_sync_mode_parse(&opt.sync, v) == 0;
    } else {
      ok = false;
    }
    if (!ok) {
      return usage();
    }
  }
  if (lmdb && dir == NULL) {
    return usage();
  }

  value = malloc(value_size > 0 ? value_size : 1);
  if (value == NULL) {
    fprintf(stderr, "bench-store: out of memory\n");
    return 1;
  }
  for (i = 0; i < value_size; i++) {
    value[i] = (uint8_t)('a' + i % 26);
  }
  base_kib = status_kib("VmRSS");
  if (lmdb) {
    struct stat sb;
    if (stat(dir, &sb) == 0) {
      fprintf(stderr, "bench-store: %s exists; give a new directory\n", dir);
      return 1;
    }
    rc = dht_store_lmdb_open(&st, dir, &opt);
    if (rc != 0) {
      fprintf(stderr, "bench-store: %s: %s\n", dir, err);
      return 1;
    }
  } else {
    st = dht_store_mem_new();
    if (st == NULL) {
      fprintf(stderr, "bench-store: out of memory\n");
      return 1;
    }
  }

  i = 0;
  for (d = 1; d <= DECILES; d++) {
    uint64_t end = keys * (uint64_t)d / DECILES;
    uint64_t first = i;
    double secs;
    t0 = now_s();
    for (; i < end; i++) {
      char key[32];
      int n = snprintf(key, sizeof(key), "bench-%llu", (unsigned long long)i);
      dht_id id;
      dht_id_hash(&id, key, (size_t)n);
      rc = dht_store_put(st, &id, (const uint8_t *)key, (size_t)n,
                         value_size > 0 ? value : NULL, value_size);
      if (rc == 0 && lmdb && (i + 1) % commit_every == 0) {
        rc = dht_store_lmdb_commit(st);
      }
      if (rc != 0) {
        fprintf(stderr, "bench-store: key %llu: %s: %s\n",
                (unsigned long long)i, dht_strerror(rc),
                dht_store_errmsg(st));
        return 1;
      }
    }
    if (lmdb && (rc = dht_store_lmdb_commit(st)) != 0) {
      fprintf(stderr, "bench-store: commit: %s: %s\n", dht_strerror(rc),
              dht_store_errmsg(st));
      return 1;
    }
    secs = now_s() - t0;
    printf("decile %d %llu %.3f %.0f\n", d, (unsigned long long)end, secs,
           (double)(end - first) / secs);
    fflush(stdout);
  }

  {
    unsigned long disk_kib = 0;
    if (lmdb) {
      char path[4096];
      struct stat sb;
      snprintf(path, sizeof(path), "%s/data.mdb", dir);
      if (stat(path, &sb) == 0) {
        disk_kib = (unsigned long)sb.st_blocks / 2;
      }
    }
    printf("memory %lu %lu %lu %lu %lu\n", status_kib("VmRSS"),
           status_kib("RssAnon"), status_kib("RssFile"), base_kib, disk_kib);
  }
  dht_store_del(st);
  free(value);
  return 0;
}
