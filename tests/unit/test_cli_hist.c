/*
 * test_cli_hist.c: unit tests for the dht CLI's latency histogram
 * (cli/hist.c), which dht bench and dht load print their percentiles from:
 * nearest-rank quantiles of known inputs, exact values below 1024 us, the
 * 0.2% error bound above, the cap, and reset.
 *
 * The module's source is compiled into this test, so that the test needs
 * nothing of the CLI but the file it checks.
 */
/* cmocka.h needs these four first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include "../../cli/hist.c"

static void test_empty_is_zero(void **state) {
  cli_hist h;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  assert_int_equal(cli_hist_quantile(&h, 0.5), 0);
  assert_int_equal(cli_hist_quantile(&h, 1.0), 0);
  assert_int_equal(h.max_us, 0);
  cli_hist_free(&h);
}

static void test_nearest_rank(void **state) {
  (void)state;
  assert_int_equal(cli_nearest_rank(0, 0.5), 0);
  assert_int_equal(cli_nearest_rank(1, 0.5), 1);
  assert_int_equal(cli_nearest_rank(1, 0.999), 1);
  assert_int_equal(cli_nearest_rank(10, 0.5), 5);
  assert_int_equal(cli_nearest_rank(11, 0.5), 6);
  assert_int_equal(cli_nearest_rank(100, 0.99), 99);
  assert_int_equal(cli_nearest_rank(1000, 0.999), 999);
  assert_int_equal(cli_nearest_rank(1001, 0.999), 1000);
  assert_int_equal(cli_nearest_rank(10, 1.0), 10);
  assert_int_equal(cli_nearest_rank(10, 0.0), 1);
}

/* 1..1000 us, each once: every value has its own bucket, so the quantiles
 * are the nearest-rank ones of the values themselves. */
static void test_exact_below_1024(void **state) {
  cli_hist h;
  uint64_t v;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  for (v = 1000; v >= 1; v--) {
    cli_hist_add(&h, v);
  }
  assert_int_equal(h.total, 1000);
  assert_int_equal(h.max_us, 1000);
  assert_int_equal(cli_hist_quantile(&h, 0.5), 500);
  assert_int_equal(cli_hist_quantile(&h, 0.99), 990);
  assert_int_equal(cli_hist_quantile(&h, 0.999), 999);
  assert_int_equal(cli_hist_quantile(&h, 1.0), 1000);
  assert_int_equal(cli_hist_quantile(&h, 0.001), 1);
  cli_hist_add(&h, 0);
  assert_int_equal(cli_hist_quantile(&h, 0.0001), 0);
  cli_hist_add(&h, 1023);
  assert_int_equal(cli_hist_quantile(&h, 1.0), 1023);
  cli_hist_free(&h);
}

/* Any value from 1024 us up comes back no higher than itself and less
 * than 1/512 of itself lower; at the start of a bucket, exactly. Values
 * go in rising, so the maximum (q = 1) is always the one just added. */
static void test_error_bound(void **state) {
  cli_hist h;
  uint64_t v, got, step;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  for (v = 1024, step = 1; v < (1ull << CLI_HIST_TOP_BIT); v += step) {
    cli_hist_add(&h, v);
    got = cli_hist_quantile(&h, 1.0);
    assert_true(got <= v);
    assert_true((v - got) * 512 < v);
    assert_int_equal(h.max_us, v);
    /* Every value where buckets are narrow, then about 1000 a power of
     * two, in odd steps so that bucket ends and middles are hit too. */
    step = v < 8192 ? 1 : (v >> 10) | 1;
  }
  cli_hist_reset(&h);
  cli_hist_add(&h, 1536); /* 1024 + 256 * 2: a bucket's first value */
  assert_int_equal(cli_hist_quantile(&h, 1.0), 1536);
  cli_hist_reset(&h);
  cli_hist_add(&h, 1537); /* the same bucket, [1536, 1538) */
  assert_int_equal(cli_hist_quantile(&h, 1.0), 1536);
  cli_hist_free(&h);
}

/* Percentiles of a mix: 900 fast requests, 90 slow, 10 very slow. */
static void test_quantiles_of_a_mix(void **state) {
  cli_hist h;
  int i;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  for (i = 0; i < 900; i++) {
    cli_hist_add(&h, 200);
  }
  for (i = 0; i < 90; i++) {
    cli_hist_add(&h, 5000); /* 4096 + 113 * 8: starts its 8 us bucket */
  }
  for (i = 0; i < 10; i++) {
    cli_hist_add(&h, 1000000);
  }
  assert_int_equal(cli_hist_quantile(&h, 0.5), 200);
  assert_int_equal(cli_hist_quantile(&h, 0.9), 200);
  assert_int_equal(cli_hist_quantile(&h, 0.901), 5000);
  assert_int_equal(cli_hist_quantile(&h, 0.99), 5000);
  /* 10^6 lies in [2^19, 2^20), buckets 1024 us wide: 999424 .. 1000447. */
  assert_int_equal(cli_hist_quantile(&h, 0.999), 999424);
  assert_int_equal(h.max_us, 1000000);
  cli_hist_free(&h);
}

/* Values past the top share the last bucket; max_us keeps the real one. */
static void test_cap(void **state) {
  const uint64_t top = 1ull << CLI_HIST_TOP_BIT;
  cli_hist h;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  cli_hist_add(&h, UINT64_MAX);
  cli_hist_add(&h, top);
  assert_int_equal(h.max_us, UINT64_MAX);
  assert_true(cli_hist_quantile(&h, 1.0) < top);
  assert_true((top - cli_hist_quantile(&h, 1.0)) * 512 <= top);
  cli_hist_free(&h);
}

static void test_reset_forgets(void **state) {
  cli_hist h;

  (void)state;
  assert_int_equal(cli_hist_init(&h), 0);
  cli_hist_add(&h, 7);
  cli_hist_add(&h, 70000);
  cli_hist_reset(&h);
  assert_int_equal(h.total, 0);
  assert_int_equal(h.max_us, 0);
  assert_int_equal(cli_hist_quantile(&h, 1.0), 0);
  cli_hist_add(&h, 3);
  assert_int_equal(cli_hist_quantile(&h, 1.0), 3);
  cli_hist_free(&h);
  assert_null(h.counts);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_empty_is_zero),
      cmocka_unit_test(test_nearest_rank),
      cmocka_unit_test(test_exact_below_1024),
      cmocka_unit_test(test_error_bound),
      cmocka_unit_test(test_quantiles_of_a_mix),
      cmocka_unit_test(test_cap),
      cmocka_unit_test(test_reset_forgets),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
