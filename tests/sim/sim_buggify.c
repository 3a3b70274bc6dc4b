/*
 * sim_buggify.c: the per-seed plan of the core's fault points and the
 * answers drawn from it (see sim_buggify.h).
 */
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "sim_buggify.h"

/* "BUGGIFY": the plan's stream is the seed's, mixed with this, and no
 * other stream's. */
#define BUGGIFY_SALT UINT64_C(0x4255474749465900)
#define PROB_MIN 0.001
#define PROB_MAX 0.1
#define PPM 1e6

static const char *const names[DHT_FAULT_POINTS] = {
    [DHT_FAULT_TIMEOUT_SHORT] = "timeout-short",
    [DHT_FAULT_REPLY_DELAYED] = "reply-delayed",
    [DHT_FAULT_STORE_PUT] = "store-put",
    [DHT_FAULT_SEND_TWICE] = "send-twice",
};

const char *sim_buggify_name(dht_fault_point point) {
  return (unsigned)point < DHT_FAULT_POINTS ? names[point] : "?";
}

void sim_buggify_draw(sim_buggify *b, uint64_t seed, uint32_t mask,
                      uint32_t ppm, bool off) {
  unsigned i;

  memset(b, 0, sizeof(*b));
  sim_rng_seed(&b->rng, seed ^ BUGGIFY_SALT);
  for (i = 0; i < DHT_FAULT_POINTS; i++) {
    bool on = sim_rng_below(&b->rng, 4) == 0;
    double prob = PROB_MIN * pow(PROB_MAX / PROB_MIN, sim_rng_unit(&b->rng));
    if (mask != 0) {
      on = (mask >> i) & 1u;
    }
    if (ppm != 0) {
      prob = ppm / PPM;
    }
    b->prob[i] = on && !off ? prob : 0;
  }
}

bool sim_buggify_any(const sim_buggify *b) {
  unsigned i;

  for (i = 0; i < DHT_FAULT_POINTS; i++) {
    if (b->prob[i] > 0) {
      return true;
    }
  }
  return false;
}

bool sim_buggify_views_split(const sim_buggify *b) {
  return b->active && (b->prob[DHT_FAULT_TIMEOUT_SHORT] > 0 ||
                       b->prob[DHT_FAULT_REPLY_DELAYED] > 0);
}

bool sim_buggify_ask(void *ud, dht_fault_point point) {
  sim_buggify *b = ud;

  if (!b->active || b->prob[point] <= 0) {
    return false; /* nothing drawn: a run with the points off is unchanged */
  }
  b->asked[point]++;
  if (!sim_rng_chance(&b->rng, b->prob[point])) {
    return false;
  }
  b->fired[point]++;
  return true;
}

void sim_buggify_report(const sim_buggify *b, sim_text *report) {
  unsigned i;
  bool any = false;

  sim_text_printf(report, "buggify:");
  for (i = 0; i < DHT_FAULT_POINTS; i++) {
    if (b->prob[i] > 0) {
      sim_text_printf(report, "%s %s %.2f%%", any ? "," : "", names[i],
                      100 * b->prob[i]);
      any = true;
    }
  }
  sim_text_printf(report, "%s\n", any ? "" : " off");
}

void sim_buggify_report_totals(const sim_buggify *b, sim_text *report) {
  unsigned i;
  bool any = false;

  for (i = 0; i < DHT_FAULT_POINTS; i++) {
    if (b->prob[i] > 0) {
      sim_text_printf(report, "%s %s fired %" PRIu64 " of %" PRIu64,
                      any ? "," : "buggify:", names[i], b->fired[i],
                      b->asked[i]);
      any = true;
    }
  }
  if (any) {
    sim_text_printf(report, "\n");
  }
}
