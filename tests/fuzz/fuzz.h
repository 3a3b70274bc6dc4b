/*
 * fuzz.h: what every fuzz target in tests/fuzz shares: the libFuzzer entry
 * point (declared here so the strict warnings of the normal build accept
 * it), and a reader that turns the fuzzer's bytes into choices.
 *
 * A target is one fuzz_<name>.c that defines LLVMFuzzerTestOneInput. With
 * -DDHT_FUZZ=ON (clang) it links libFuzzer; in every build it also links
 * replay_main.c, a small main that feeds it the files of its seed corpus
 * and of its kept crashing inputs, so that a ctest replays them without
 * libFuzzer. A target must therefore stay deterministic (no clock, no
 * randomness of its own), free everything it allocates, and report a broken
 * property with fuzz_fail() (which aborts) rather than with an assert that
 * a build might compile out.
 */
#ifndef DHT_FUZZ_H
#define DHT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints what broke and aborts, which libFuzzer and ctest both see. */
#define fuzz_fail(...)                                                         \
  do {                                                                         \
    fprintf(stderr, "fuzz: %s:%d: ", __FILE__, __LINE__);                      \
    fprintf(stderr, __VA_ARGS__);                                              \
    fputc('\n', stderr);                                                       \
    abort();                                                                   \
  } while (0)

/* The fuzzer's bytes, consumed front to back. Once they run out every read
 * returns zeros, so a short input is a valid input with default choices. */
typedef struct fuzz_in {
  const uint8_t *p; /* next byte */
  size_t left;      /* bytes not yet consumed */
} fuzz_in;

static inline uint8_t fuzz_u8(fuzz_in *in) {
  uint8_t b = 0;

  if (in->left > 0) {
    b = *in->p++;
    in->left--;
  }
  return b;
}

static inline uint16_t fuzz_u16(fuzz_in *in) {
  uint16_t hi = fuzz_u8(in);

  return (uint16_t)(hi << 8 | fuzz_u8(in));
}

static inline uint64_t fuzz_u64(fuzz_in *in) {
  uint64_t v = 0;
  int i;

  for (i = 0; i < 8; i++) {
    v = v << 8 | fuzz_u8(in);
  }
  return v;
}

/* Up to n bytes, borrowed from the input; *got says how many there were. */
static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t n, size_t *got) {
  const uint8_t *p = in->p;

  if (n > in->left) {
    n = in->left;
  }
  in->p += n;
  in->left -= n;
  *got = n;
  return p;
}

#endif /* DHT_FUZZ_H */
