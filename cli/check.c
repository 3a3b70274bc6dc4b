/*
 * check.c: dht check, which walks the ring and verifies what a healthy ring
 * must satisfy, for people, tests and the churn script (which runs it every
 * second, so it has to be quick).
 *
 * Ring: the walk (walk.c, the same as dht ring's) follows first successors
 * (GET_NEIGHBORS) from the start node until it comes back; every node must
 * answer, ids must increase around the ring and wrap exactly once, each
 * node must be its successor's predecessor, and each successor and
 * predecessor list must name the next and previous nodes of the walk.
 *
 * Replicas: every node lists the records it holds (SCAN, paged); a key
 * belongs on the first min(R, N) nodes at or after its id. Keys with a
 * missing copy (under-replicated), a copy on a node outside that set
 * (misplaced) or copies with different versions (divergent) are reported.
 * A key with no copy at all is invisible here, but a range whose every
 * copy died is not: the node that became its owner recorded it (STATS
 * lost), and each such record is a problem until --ack-lost acknowledges
 * it.
 *
 * Sampling keeps the work bounded: only the `sample` keys with the smallest
 * ids are checked. Each node's scan is in id order, so it can stop after
 * `sample` records: a node holding one of those keys past that point would
 * hold more than `sample` keys below the cut, which cannot be.
 *
 * Exit 0 when everything holds, 1 when an invariant fails, 2 when the check
 * could not run (bad arguments, no start node answers, a node without
 * SCAN).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dht/err.h"
#include "dht/node.h"

#define CHECK_EXIT_FAILED 1
#define CHECK_NODES_DEFAULT 4096
#define CHECK_NODES_MAX 65536
#define CHECK_SAMPLE_DEFAULT 200000
#define CHECK_SAMPLE_MAX 100000000
#define CHECK_REPLICAS_DEFAULT 3
#define CHECK_REPLICAS_MAX 64
#define SCAN_PAGE_LEN 1000 /* records asked for per SCAN */
#define PROBLEMS_SHOWN 20  /* in the text output */
#define PROBLEMS_KEPT 1000 /* in memory and in the JSON output */
#define HOLDERS_SHOWN 4    /* nodes named in one replica problem */
#define KEY_SHOWN_LEN 80   /* bytes of an escaped key in a problem */
/* Bytes of one problem line; the walk's (walk.c) must fit. */
#define PROBLEM_LEN CLI_WALK_PROBLEM_LEN

const char cli_check_usage[] =
    "usage: dht check [--max-nodes N] [--replicas N] [--sample N]\n"
    "                 [--ring-only] [--ack-lost]\n"
    "\n"
    "Walks the ring from the node (the first address of --node that\n"
    "answers) by first successors, asking each node for its neighbours,\n"
    "and verifies:\n"
    "  - every node answers, and the walk comes back to its start;\n"
    "  - ids increase around the ring, wrapping exactly once;\n"
    "  - each node is its successor's predecessor;\n"
    "  - each successor list names the next nodes of the walk, and each\n"
    "    predecessor list (when nodes send one) the previous nodes.\n"
    "Then it lists the records every node holds (SCAN) and checks that each\n"
    "key is held by the first min(R, N) nodes at or after its id and by no\n"
    "other node, with the same version everywhere: keys missing a copy are\n"
    "under-replicated, copies elsewhere misplaced, differing versions\n"
    "divergent. A key with no copy left cannot be seen this way, but a\n"
    "range whose every copy died is: the node that became its owner\n"
    "recorded it as lost, and each such record is a problem until an\n"
    "operator acknowledges it with --ack-lost.\n"
    "\n"
    "Prints one summary line per invariant and up to 20 problems (with\n"
    "--json: {\"ok\",\"nodes\",\"ring_ok\",\"keys\",\"under_replicated\",\n"
    "\"misplaced\",\"divergent\",\"problems\",\"elapsed_ms\",...}, with up to\n"
    "1000 problems). Each request has --timeout-ms.\n"
    "Exit 0 when every invariant holds, 1 when one fails, 2 when the check\n"
    "could not run (no start node answers, bad arguments, a node without\n"
    "SCAN).\n"
    "In a closed ring it needs the member key (--cluster-key-file): SCAN\n"
    "and ACK_LOST are the ring's own messages, and a client key is refused.\n"
    "\n"
    "  --max-nodes N   give up after N nodes, 1..65536 [4096]\n"
    "  --replicas N    copies of each key, 1..64 [the start node's\n"
    "                  \"replicas\" counter, else 3]\n"
    "  --sample N      check only the N keys with the smallest ids,\n"
    "                  1..100000000 [200000]\n"
    "  --ring-only     check the ring only, without SCAN\n"
    "  --ack-lost      acknowledge the lost ranges found (they are listed,\n"
    "                  and no longer count as problems, here or later)\n";

/* One node of the walk, as it answered. */
typedef struct check_node {
  dht_client_peer self;            /* its id and address */
  bool has_pred;                   /* pred is set */
  dht_id pred;                     /* its predecessor */
  size_t n_succs;                  /* entries in succs */
  dht_id succs[DHT_SUCC_LIST_MAX]; /* its successor list */
  size_t n_preds;                  /* entries in preds (0: not sent) */
  dht_id preds[DHT_SUCC_LIST_MAX]; /* its predecessor list */
  bool ready;                      /* its "ready" counter said 1 */
  bool scanned;                    /* its records were listed */
  bool cut;                        /* ... up to the sample size only */
  size_t n_records;                /* records listed */
  size_t pos;                      /* its index in id order */
} check_node;

/* One record some node holds; item lives in one of the kept pages. */
typedef struct check_record {
  const dht_client_scan_item *item; /* key, its id, version */
  size_t node;                      /* walk index of the holder */
} check_record;

/* What check counts per kind of problem. */
enum {
  P_WALK,      /* no answer, loops, no way on */
  P_ORDER,     /* ids out of order */
  P_POINTERS,  /* pred of succ is not the node */
  P_SUCCS,     /* successor list */
  P_PREDS,     /* predecessor list */
  P_UNDER,     /* under-replicated keys */
  P_MISPLACED, /* misplaced keys */
  P_DIVERGENT, /* divergent keys */
  P_SCAN,      /* a node that stopped answering during the scans */
  P_LOST,      /* ranges a node recorded as lost */
  P_COUNT
};

typedef struct check {
  cli_ctx *ctx;        /* global options */
  uint64_t max_nodes;  /* --max-nodes */
  uint64_t sample;     /* --sample */
  uint64_t replicas;   /* --replicas, the counter, or the default */
  bool ring_only;      /* --ring-only */
  bool ack_lost;       /* --ack-lost */
  size_t lost_acked;   /* lost ranges acknowledged by this run */
  char start[DHT_ADDR_LEN_MAX + 1]; /* the address the walk started at */
  char note[PROBLEM_LEN];           /* about the start, or "" */

  check_node *nodes;     /* the walk, in ring order from the start */
  size_t n_nodes;        /* nodes walked */
  size_t cap_nodes;      /* entries allocated */
  size_t *by_pos;        /* walk index of the node at each id position */
  dht_client_peer *dead; /* listed nodes that did not answer */
  size_t n_dead;         /* entries in dead */
  size_t cap_dead;       /* entries allocated */
  bool closed;           /* the walk came back to its start */
  bool preds_seen;       /* some node sent a predecessor list */

  char (*problems)[PROBLEM_LEN]; /* the first PROBLEMS_KEPT */
  size_t n_problems;             /* kept */
  size_t cap_problems;           /* entries allocated */
  size_t problems_total;         /* all, kept or not */
  size_t counts[P_COUNT];        /* per kind */

  dht_client_scan_result *pages; /* every SCAN page, kept for the keys */
  size_t n_pages;                /* pages kept */
  size_t cap_pages;              /* entries allocated */
  check_record *recs;            /* every record listed */
  size_t n_recs;                 /* entries in recs */
  size_t cap_recs;               /* entries allocated */

  bool replicas_checked;        /* the replica part ran */
  const char *replicas_skipped; /* why not, when it did not */
  size_t keys;                  /* distinct keys checked */
  bool sampled;                 /* there were more keys than that */
  size_t records;               /* copies of those keys */
  size_t missing_copies;        /* copies that should be there and are not */
  size_t extra_copies;          /* copies where they should not be */
} check;

static int64_t mono_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes room for entry n of an array of elem-byte entries. Returns the
 * array (moved, maybe), or NULL when out of memory (arr is then intact). */
static void *grow(void *arr, size_t *cap, size_t n, size_t elem) {
  size_t ncap;
  void *p;

  if (n < *cap) {
    return arr;
  }
  ncap = *cap > 0 ? 2 * *cap : 64;
  p = realloc(arr, ncap * elem);
  if (p != NULL) {
    *cap = ncap;
  }
  return p;
}

CLI_PRINTF(3, 4)
static void problem(check *k, int kind, const char *fmt, ...) {
  va_list ap;
  void *p;

  k->counts[kind]++;
  k->problems_total++;
  if (k->n_problems >= PROBLEMS_KEPT ||
      (p = grow(k->problems, &k->cap_problems, k->n_problems,
                sizeof(k->problems[0]))) == NULL) {
    return; /* counted all the same */
  }
  k->problems = p;
  va_start(ap, fmt);
  vsnprintf(k->problems[k->n_problems++], PROBLEM_LEN, fmt, ap);
  va_end(ap);
}

/* "1a2b3c4d 127.0.0.1:7001" for a node of the walk or one that did not
 * answer, "1a2b3c4d (not on the walk)" for any other id. */
static const char *name_of(const check *k, const dht_id *id, char *buf,
                           size_t len) {
  char s[DHT_ID_SHORT_LEN];
  size_t i;

  dht_id_short(id, s);
  for (i = 0; i < k->n_nodes; i++) {
    if (dht_id_eq(&k->nodes[i].self.id, id)) {
      snprintf(buf, len, "%s %s", s, k->nodes[i].self.addr);
      return buf;
    }
  }
  for (i = 0; i < k->n_dead; i++) {
    if (dht_id_eq(&k->dead[i].id, id)) {
      snprintf(buf, len, "%s %s (not answering)", s, k->dead[i].addr);
      return buf;
    }
  }
  snprintf(buf, len, "%s (not on the walk)", s);
  return buf;
}

static const char *node_name(const check_node *n, char *buf, size_t len) {
  char s[DHT_ID_SHORT_LEN];

  snprintf(buf, len, "%s %s", dht_id_short(&n->self.id, s), n->self.addr);
  return buf;
}

/* Whether the node that answered a said it is ready; if not, why, into
 * why (when not NULL). */
static bool node_ready(const dht_client_stats_result *a, char *why,
                       size_t why_len) {
  uint64_t ready = 0, state = 0, fresh = 0;
  const char *reason;

  if (dht_client_stats_counter(a, "ready", &ready) != 0) {
    reason = "it does not say whether it is ready (an older dhtd)";
  } else if (ready == 1) {
    return true;
  } else if (dht_client_stats_counter(a, "state", &state) == 0 &&
             state != (uint64_t)DHT_NODE_JOINED) {
    reason = "it has not joined";
  } else if (dht_client_stats_counter(a, "range_fresh", &fresh) == 0 &&
             fresh == 0) {
    reason = "its range is not yet in sync with its replicas";
  } else {
    reason = "its neighbours have not yet confirmed its lists";
  }
  if (why != NULL) {
    snprintf(why, why_len, "%s %s", a->node.addr, reason);
  }
  return false;
}

static void node_fill(check_node *n, const dht_client_stats_result *a) {
  size_t i;

  memset(n, 0, sizeof(*n));
  n->self = a->node;
  n->has_pred = a->has_pred;
  if (a->has_pred) {
    n->pred = a->pred.id;
  }
  n->n_succs = a->n_succs;
  for (i = 0; i < a->n_succs; i++) {
    n->succs[i] = a->succs[i].id;
  }
  n->n_preds = a->n_preds;
  for (i = 0; i < a->n_preds; i++) {
    n->preds[i] = a->preds[i].id;
  }
  n->ready = node_ready(a, NULL, 0);
}

/* ---- the walk ----------------------------------------------------------- */

/*
 * Finds the start: the first address of the --node list whose node answers
 * STATS (which also carries the "replicas" counter). Returns 0 with st
 * filled, or an exit code (printed).
 */
static int walk_start(check *k, dht_client_stats_result *st) {
  char err[PROBLEM_LEN] = "", shown[300];
  const char *addr;
  dht_client *c;
  uint64_t v;
  size_t i;
  int rv = 0;

  for (i = 0; i <= k->ctx->n_fallbacks; i++) {
    addr = i == 0 ? k->ctx->node : k->ctx->fallbacks[i - 1];
    c = NULL;
    rv = dht_client_new(&c, addr, &k->ctx->settings);
    if (rv == DHT_ERR_INVAL) {
      /* Only $DHT_NODE gets here: --node is checked when parsed. */
      return cli_fail(k->ctx, CLI_EXIT_ERROR, rv,
                      "bad node address '%s' (from $DHT_NODE)",
                      cli_escape(shown, sizeof(shown), addr, strlen(addr)));
    }
    if (rv != 0) {
      return cli_fail(k->ctx, CLI_EXIT_ERROR, rv, "%s", dht_strerror(rv));
    }
    rv = dht_client_stats(c, st, k->ctx->timeout_ms);
    if (rv != 0 && err[0] == '\0') {
      snprintf(err, sizeof(err), "%s", dht_client_last_error(c));
    }
    dht_client_del(c);
    if (rv == 0) {
      break;
    }
  }
  if (rv != 0) {
    return cli_fail(
        k->ctx, CLI_EXIT_ERROR, rv, "cannot start the check: %s%s", err,
        k->ctx->n_fallbacks > 0 ? " (and no fallback answered)" : "");
  }
  snprintf(k->start, sizeof(k->start), "%s", addr);
  if (i > 0) {
    snprintf(k->note, sizeof(k->note), "started from %s: %.200s", addr, err);
  }
  if (k->replicas == 0) { /* not given */
    k->replicas = dht_client_stats_counter(st, "replicas", &v) == 0 && v > 0
                      ? v
                      : CHECK_REPLICAS_DEFAULT;
  }
  return 0;
}

/* The lost ranges node recorded: acknowledged with --ack-lost, problems
 * otherwise. */
static void lost_ranges(check *k, const dht_client_peer *node,
                        const dht_client_stats_result *st) {
  char line[PROBLEM_LEN], s[DHT_ID_SHORT_LEN];
  dht_client *c = NULL;
  size_t i;

  for (i = 0; i < st->n_lost; i++) {
    cli_lost_text(&st->lost[i], line, sizeof(line));
    if (k->ack_lost && dht_client_new(&c, node->addr, &k->ctx->settings) == 0 &&
        dht_client_ack_lost(c, &st->lost[i].from, &st->lost[i].to,
                            k->ctx->timeout_ms) == 0) {
      if (!k->ctx->json) {
        printf("acknowledged at %s %s: lost range %s\n",
               dht_id_short(&node->id, s), node->addr, line);
      }
      k->lost_acked++;
    } else {
      problem(k, P_LOST, "lost range %s (recorded by %s %s)", line,
              dht_id_short(&node->id, s), node->addr);
    }
    dht_client_del(c);
    c = NULL;
  }
}

/* cli_walk's step: an answering node joins the walk, another the nodes
 * that did not answer. Returns 0 or CLI_EXIT_ERROR (printed). */
static int walk_step(void *ud, const cli_walk_step *s) {
  check *k = ud;
  void *p;

  if (s->answer == NULL) {
    p = grow(k->dead, &k->cap_dead, k->n_dead, sizeof(k->dead[0]));
    if (p == NULL) {
      return cli_fail(k->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    }
    k->dead = p;
    k->dead[k->n_dead++] = *s->node;
    return 0;
  }
  p = grow(k->nodes, &k->cap_nodes, k->n_nodes, sizeof(k->nodes[0]));
  if (p == NULL) {
    return cli_fail(k->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  k->nodes = p;
  node_fill(&k->nodes[k->n_nodes++], s->answer);
  lost_ranges(k, s->node, s->answer);
  return 0;
}

static void walk_problem(void *ud, const char *line) {
  problem(ud, P_WALK, "%s", line);
}

/* ---- ring invariants ---------------------------------------------------- */

/* A node's id and walk index, to sort the walk into id order. */
typedef struct id_index {
  dht_id id;
  size_t index;
} id_index;

static int cmp_id_index(const void *pa, const void *pb) {
  return dht_id_cmp(&((const id_index *)pa)->id, &((const id_index *)pb)->id);
}

/* Fills by_pos and each node's pos. Returns 0 or DHT_ERR_NOMEM. */
static int order_nodes(check *k) {
  id_index *tmp;
  size_t i, n = k->n_nodes;

  k->by_pos = malloc(n * sizeof(*k->by_pos));
  tmp = malloc(n * sizeof(*tmp));
  if (k->by_pos == NULL || tmp == NULL) {
    free(tmp);
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    tmp[i].id = k->nodes[i].self.id;
    tmp[i].index = i;
  }
  qsort(tmp, n, sizeof(*tmp), cmp_id_index);
  for (i = 0; i < n; i++) {
    k->by_pos[i] = tmp[i].index;
    k->nodes[tmp[i].index].pos = i;
  }
  free(tmp);
  return 0;
}

static void check_ring(check *k) {
  char a[300], b[300], c[300];
  size_t i, j, n = k->n_nodes, top = 0, lim;
  const check_node *me, *next, *want;

  if (n == 1) {
    me = &k->nodes[0];
    if (me->has_pred && !dht_id_eq(&me->pred, &me->self.id)) {
      problem(k, P_POINTERS, "%s is alone in the ring but has predecessor %s",
              node_name(me, a, sizeof(a)), name_of(k, &me->pred, b, sizeof(b)));
    }
    for (j = 0; j < me->n_succs; j++) {
      if (!dht_id_eq(&me->succs[j], &me->self.id)) {
        problem(k, P_SUCCS,
                "%s is alone in the ring but its successor list has %s",
                node_name(me, a, sizeof(a)),
                name_of(k, &me->succs[j], b, sizeof(b)));
        break;
      }
    }
    return;
  }
  /* The one legitimate descent is from the highest id to the lowest. */
  for (i = 1; i < n; i++) {
    if (dht_id_cmp(&k->nodes[i].self.id, &k->nodes[top].self.id) > 0) {
      top = i;
    }
  }
  for (i = 0; i < n; i++) {
    me = &k->nodes[i];
    next = &k->nodes[(i + 1) % n];
    if (i != top && dht_id_cmp(&next->self.id, &me->self.id) <= 0) {
      problem(k, P_ORDER,
              "ids out of order: %s is followed by %s, a lower id, before "
              "the top of the ring",
              node_name(me, a, sizeof(a)), node_name(next, b, sizeof(b)));
    }
    if (!next->has_pred || !dht_id_eq(&next->pred, &me->self.id)) {
      problem(k, P_POINTERS,
              "%s has predecessor %s, but the node before it is %s",
              node_name(next, a, sizeof(a)),
              next->has_pred ? name_of(k, &next->pred, b, sizeof(b)) : "(none)",
              node_name(me, c, sizeof(c)));
    }
    lim = me->n_succs < n - 1 ? me->n_succs : n - 1;
    for (j = 0; j < lim; j++) {
      want = &k->nodes[(i + 1 + j) % n];
      if (!dht_id_eq(&me->succs[j], &want->self.id)) {
        problem(k, P_SUCCS,
                "successor list of %s: entry %zu is %s, but the walk has %s",
                node_name(me, a, sizeof(a)), j + 1,
                name_of(k, &me->succs[j], b, sizeof(b)),
                node_name(want, c, sizeof(c)));
        break; /* one line per list */
      }
    }
    if (me->n_succs == 0) {
      problem(k, P_SUCCS, "%s has an empty successor list",
              node_name(me, a, sizeof(a)));
    }
    lim = me->n_preds < n - 1 ? me->n_preds : n - 1;
    for (j = 0; j < lim; j++) {
      want = &k->nodes[(i + n - 1 - j) % n];
      if (!dht_id_eq(&me->preds[j], &want->self.id)) {
        problem(k, P_PREDS,
                "predecessor list of %s: entry %zu is %s, but the walk has "
                "%s",
                node_name(me, a, sizeof(a)), j + 1,
                name_of(k, &me->preds[j], b, sizeof(b)),
                node_name(want, c, sizeof(c)));
        break;
      }
    }
    if (me->n_preds > 0) {
      k->preds_seen = true;
    }
  }
}

/* ---- replicas ----------------------------------------------------------- */

static int cmp_record(const void *pa, const void *pb) {
  const check_record *a = pa, *b = pb;
  size_t len;
  int c;

  c = dht_id_cmp(&a->item->key_id, &b->item->key_id);
  if (c != 0) {
    return c;
  }
  len =
      a->item->key_len < b->item->key_len ? a->item->key_len : b->item->key_len;
  c = memcmp(a->item->key, b->item->key, len);
  if (c != 0) {
    return c;
  }
  if (a->item->key_len != b->item->key_len) {
    return a->item->key_len < b->item->key_len ? -1 : 1;
  }
  return a->node < b->node ? -1 : a->node > b->node;
}

static bool same_key(const check_record *a, const check_record *b) {
  return a->item->key_len == b->item->key_len &&
         dht_id_eq(&a->item->key_id, &b->item->key_id) &&
         memcmp(a->item->key, b->item->key, a->item->key_len) == 0;
}

static bool same_version(const dht_client_scan_item *a,
                         const dht_client_scan_item *b) {
  return a->has_version == b->has_version && a->tombstone == b->tombstone &&
         (!a->has_version || dht_version_cmp(&a->version, &b->version) == 0);
}

/*
 * Lists the records of node i, in id order from the zero id, up to
 * k->sample of them. Returns 0, 1 when the node stopped answering (a
 * problem, the node is left unscanned), or an exit code (printed: no SCAN,
 * out of memory).
 */
static int scan_node(check *k, size_t i) {
  check_node *n = &k->nodes[i];
  char a[300];
  dht_client_scan_result *page;
  dht_client *c = NULL;
  dht_id from, prev;
  bool first = true, done = false;
  uint64_t left = k->sample;
  size_t j;
  void *p;
  int rv;

  memset(&from, 0, sizeof(from));
  memset(&prev, 0, sizeof(prev));
  rv = dht_client_new(&c, n->self.addr, &k->ctx->settings);
  if (rv != 0) {
    problem(k, P_SCAN, "%s: bad address", node_name(n, a, sizeof(a)));
    return 1;
  }
  while (!done && left > 0) {
    p = grow(k->pages, &k->cap_pages, k->n_pages, sizeof(k->pages[0]));
    if (p == NULL) {
      dht_client_del(c);
      return cli_fail(k->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    }
    k->pages = p;
    page = &k->pages[k->n_pages];
    rv = dht_client_scan(c, &from,
                         left < SCAN_PAGE_LEN ? (uint32_t)left : SCAN_PAGE_LEN,
                         page, k->ctx->timeout_ms);
    if (rv == DHT_ERR_UNKNOWN_TYPE || rv == DHT_ERR_UNEXPECTED) {
      rv = cli_fail(k->ctx, CLI_EXIT_ERROR, rv,
                    "%s cannot list its records (%s); use --ring-only to "
                    "check the ring alone",
                    node_name(n, a, sizeof(a)), dht_client_last_error(c));
      dht_client_del(c);
      return rv;
    }
    if (rv != 0) {
      problem(k, P_SCAN, "%s does not answer SCAN: %s",
              node_name(n, a, sizeof(a)), dht_client_last_error(c));
      dht_client_del(c);
      return 1;
    }
    k->n_pages++;
    for (j = 0; j < page->n_items && left > 0; j++) {
      const dht_client_scan_item *it = &page->items[j];
      /* Ids only grow from the zero id; one that does not has come round
       * the ring again. */
      if (!first && dht_id_cmp(&it->key_id, &prev) <= 0) {
        done = true;
        break;
      }
      p = grow(k->recs, &k->cap_recs, k->n_recs, sizeof(k->recs[0]));
      if (p == NULL) {
        dht_client_del(c);
        return cli_fail(k->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
      }
      k->recs = p;
      k->recs[k->n_recs].item = it;
      k->recs[k->n_recs].node = i;
      k->n_recs++;
      n->n_records++;
      left--;
      first = false;
      prev = it->key_id;
    }
    if (!page->more || page->n_items == 0) {
      done = true;
    }
    from = prev;
  }
  dht_client_del(c);
  n->scanned = true;
  n->cut = !done && left == 0;
  return 0;
}

/* Index in id order of the first node at or after id. */
static size_t owner_pos(const check *k, const dht_id *id) {
  size_t lo = 0, hi = k->n_nodes, mid;

  while (lo < hi) {
    mid = lo + (hi - lo) / 2;
    if (dht_id_cmp(&k->nodes[k->by_pos[mid]].self.id, id) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo == k->n_nodes ? 0 : lo;
}

/* Checks one key: its records are g[0..n), sorted by node. */
static void check_key(check *k, const check_record *g, size_t n, size_t m) {
  char key[KEY_SHOWN_LEN + 8], kid[DHT_ID_SHORT_LEN], list[PROBLEM_LEN];
  char v1[64], v2[64];
  size_t owner = owner_pos(k, &g[0].item->key_id), nn = k->n_nodes;
  size_t i, j, missing = 0, extra = 0, off = 0, shown = 0, have;
  const check_node *node;
  bool held;

  cli_escape(key, sizeof(key), g[0].item->key, g[0].item->key_len);
  dht_id_short(&g[0].item->key_id, kid);
  list[0] = '\0';
  /* Expected holders without a copy (unknown for unscanned nodes; a
   * node whose scan was cut listed every key of the sample, see above). */
  for (j = 0; j < m; j++) {
    node = &k->nodes[k->by_pos[(owner + j) % nn]];
    held = false;
    for (i = 0; i < n && !held; i++) {
      held = g[i].node == k->by_pos[(owner + j) % nn];
    }
    if (!held && node->scanned) {
      missing++;
      if (shown++ < HOLDERS_SHOWN && off < sizeof(list)) {
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                off > 0 ? ", " : "", node->self.addr);
      }
    }
  }
  if (missing > 0) {
    have = m - missing;
    k->missing_copies += missing;
    problem(k, P_UNDER,
            "under-replicated: key '%s' (id %s) has %zu of %zu copies; "
            "missing on %s%s",
            key, kid, have, m, list, shown > HOLDERS_SHOWN ? ", ..." : "");
  }
  /* Holders outside the expected set. */
  off = 0;
  shown = 0;
  list[0] = '\0';
  for (i = 0; i < n; i++) {
    node = &k->nodes[g[i].node];
    if ((node->pos + nn - owner) % nn >= m) {
      extra++;
      if (shown++ < HOLDERS_SHOWN && off < sizeof(list)) {
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s",
                                off > 0 ? ", " : "", node->self.addr);
      }
    }
  }
  if (extra > 0) {
    k->extra_copies += extra;
    problem(k, P_MISPLACED,
            "misplaced: key '%s' (id %s) is held by %s%s, not among its %zu "
            "holders (owner %s and its successors)",
            key, kid, list, shown > HOLDERS_SHOWN ? ", ..." : "", m,
            k->nodes[k->by_pos[owner]].self.addr);
  }
  for (i = 1; i < n; i++) {
    if (!same_version(g[0].item, g[i].item)) {
      cli_version_text(g[0].item, v1, sizeof(v1));
      cli_version_text(g[i].item, v2, sizeof(v2));
      problem(k, P_DIVERGENT,
              "divergent: key '%s' (id %s) is at version %s on %s but %s "
              "on %s",
              key, kid, v1, k->nodes[g[0].node].self.addr, v2,
              k->nodes[g[i].node].self.addr);
      break;
    }
  }
}

/* Scans every node and checks the sample. Returns 0 or an exit code
 * (printed). */
static int check_replicas(check *k) {
  size_t i, j, m;
  int rv;

  for (i = 0; i < k->n_nodes; i++) {
    rv = scan_node(k, i);
    if (rv > 1) {
      return rv;
    }
    if (k->nodes[i].cut) {
      k->sampled = true;
    }
  }
  if (k->n_recs > 1) {
    qsort(k->recs, k->n_recs, sizeof(k->recs[0]), cmp_record);
  }
  m = k->replicas < k->n_nodes ? (size_t)k->replicas : k->n_nodes;
  for (i = 0; i < k->n_recs; i = j) {
    if (k->keys == k->sample) {
      k->sampled = true;
      break;
    }
    for (j = i + 1; j < k->n_recs && same_key(&k->recs[i], &k->recs[j]); j++) {
    }
    k->keys++;
    k->records += j - i;
    check_key(k, &k->recs[i], j - i, m);
  }
  k->replicas_checked = true;
  return 0;
}

/* ---- output ------------------------------------------------------------- */

static bool ring_ok(const check *k) {
  return k->closed && k->counts[P_WALK] == 0 && k->counts[P_ORDER] == 0 &&
         k->counts[P_POINTERS] == 0 && k->counts[P_SUCCS] == 0 &&
         k->counts[P_PREDS] == 0;
}

static void summary_line(const char *what, size_t n_problems,
                         const char *ok_text) {
  if (n_problems == 0) {
    printf("  %-16s ok%s%s\n", what, ok_text[0] != '\0' ? ": " : "", ok_text);
  } else {
    printf("  %-16s FAILED: %zu problem%s\n", what, n_problems,
           n_problems == 1 ? "" : "s");
  }
}

static void print_text(const check *k, int64_t elapsed_ms) {
  size_t i, shown;

  printf("check from %s: %zu node%s\n", k->start, k->n_nodes,
         k->n_nodes == 1 ? "" : "s");
  if (k->note[0] != '\0') {
    printf("  note: %s\n", k->note);
  }
  if (k->closed && k->counts[P_WALK] == 0) {
    summary_line("walk", 0, "every node answers, the walk closes");
  } else {
    printf("  %-16s FAILED: %zu problem%s%s\n", "walk", k->counts[P_WALK],
           k->counts[P_WALK] == 1 ? "" : "s",
           k->closed ? "" : ", the walk did not close");
  }
  if (k->closed) {
    summary_line("id order", k->counts[P_ORDER], "");
    summary_line("pred/succ", k->counts[P_POINTERS], "");
    summary_line("successor lists", k->counts[P_SUCCS], "");
    if (k->preds_seen || k->counts[P_PREDS] > 0) {
      summary_line("pred lists", k->counts[P_PREDS], "");
    } else {
      printf("  %-16s not sent by the nodes\n", "pred lists");
    }
  }
  if (!k->replicas_checked) {
    printf("  %-16s not checked (%s)\n", "replicas", k->replicas_skipped);
  } else {
    printf("  %-16s R=%llu: %zu key%s%s, %zu cop%s", "replicas",
           (unsigned long long)k->replicas, k->keys, k->keys == 1 ? "" : "s",
           k->sampled ? " (sampled)" : "", k->records,
           k->records == 1 ? "y" : "ies");
    if (k->counts[P_UNDER] + k->counts[P_MISPLACED] + k->counts[P_DIVERGENT] +
            k->counts[P_SCAN] ==
        0) {
      printf(", ok\n");
    } else {
      printf("; FAILED: %zu under-replicated, %zu misplaced, %zu divergent",
             k->counts[P_UNDER], k->counts[P_MISPLACED],
             k->counts[P_DIVERGENT]);
      if (k->counts[P_SCAN] > 0) {
        printf(", %zu node%s not scanned", k->counts[P_SCAN],
               k->counts[P_SCAN] == 1 ? "" : "s");
      }
      printf("\n");
    }
  }
  if (k->counts[P_LOST] > 0) {
    printf("  %-16s FAILED: %zu range%s whose every copy died (--ack-lost "
           "acknowledges)\n",
           "losses", k->counts[P_LOST], k->counts[P_LOST] == 1 ? "" : "s");
  } else {
    summary_line("losses", 0, k->lost_acked > 0 ? "acknowledged" : "none");
  }
  if (k->problems_total == 0 && k->closed) {
    printf("check: ok in %lld ms\n", (long long)elapsed_ms);
    return;
  }
  printf("check: FAILED, %zu problem%s in %lld ms\n", k->problems_total,
         k->problems_total == 1 ? "" : "s", (long long)elapsed_ms);
  shown = k->n_problems < PROBLEMS_SHOWN ? k->n_problems : PROBLEMS_SHOWN;
  if (shown < k->problems_total) {
    printf("problems (first %zu of %zu):\n", shown, k->problems_total);
  } else if (shown > 0) {
    printf("problems:\n");
  }
  for (i = 0; i < shown; i++) {
    printf("  - %s\n", k->problems[i]);
  }
}

static void print_json(const check *k, bool ok, int64_t elapsed_ms) {
  size_t i;

  printf("{\"ok\":%s,\"command\":\"check\",\"start\":", ok ? "true" : "false");
  cli_json_str(stdout, k->start);
  printf(",\"nodes\":%zu,\"closed\":%s,\"ring_ok\":%s", k->n_nodes,
         k->closed ? "true" : "false", ring_ok(k) ? "true" : "false");
  printf(",\"not_answering\":%zu,\"replicas\":%llu,\"replicas_checked\":%s",
         k->n_dead, (unsigned long long)k->replicas,
         k->replicas_checked ? "true" : "false");
  printf(",\"keys\":%zu,\"sampled\":%s,\"records\":%zu", k->keys,
         k->sampled ? "true" : "false", k->records);
  printf(",\"under_replicated\":%zu,\"misplaced\":%zu,\"divergent\":%zu",
         k->counts[P_UNDER], k->counts[P_MISPLACED], k->counts[P_DIVERGENT]);
  printf(",\"missing_copies\":%zu,\"extra_copies\":%zu", k->missing_copies,
         k->extra_copies);
  printf(",\"lost_ranges\":%zu,\"lost_acknowledged\":%zu", k->counts[P_LOST],
         k->lost_acked);
  printf(",\"problems_total\":%zu,\"problems\":[", k->problems_total);
  for (i = 0; i < k->n_problems; i++) {
    if (i > 0) {
      fputc(',', stdout);
    }
    cli_json_str(stdout, k->problems[i]);
  }
  printf("],\"note\":");
  if (k->note[0] != '\0') {
    cli_json_str(stdout, k->note);
  } else {
    fputs("null", stdout);
  }
  printf(",\"elapsed_ms\":%lld}\n", (long long)elapsed_ms);
}

/* ---- the command -------------------------------------------------------- */

/* check's numeric options, with their defaults. --replicas defaults to
 * 0: the start node's "replicas" counter, else CHECK_REPLICAS_DEFAULT. */
static const cli_num_opt check_num_opts[] = {
    {"--max-nodes", NULL, 1, CHECK_NODES_MAX, CHECK_NODES_DEFAULT,
     offsetof(check, max_nodes)},
    {"--replicas", NULL, 1, CHECK_REPLICAS_MAX, 0, offsetof(check, replicas)},
    {"--sample", NULL, 1, CHECK_SAMPLE_MAX, CHECK_SAMPLE_DEFAULT,
     offsetof(check, sample)},
};

static int check_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  check *k = ud;
  int rv = cli_flag_take(ctx, a, "--ring-only", &k->ring_only, true);

  return rv != 0 ? rv : cli_flag_take(ctx, a, "--ack-lost", &k->ack_lost, true);
}

static void check_free(check *k) {
  size_t i;

  for (i = 0; i < k->n_pages; i++) {
    dht_client_scan_result_free(&k->pages[i]);
  }
  free(k->pages);
  free(k->recs);
  free(k->nodes);
  free(k->by_pos);
  free(k->dead);
  free(k->problems);
}

int cli_check(cli_ctx *ctx, int argc, char **argv) {
  dht_client_stats_result *st = NULL;
  int64_t t0 = mono_ms(), elapsed_ms;
  cli_walk walk;
  bool ok;
  check k;
  int rv;

  memset(&k, 0, sizeof(k));
  k.ctx = ctx;
  rv = cli_scan_opts(ctx, argc, argv, cli_check_usage, check_num_opts,
                     CLI_COUNT_OF(check_num_opts), check_opt, &k);
  if (rv == 0) {
    rv = cli_need_member_key(ctx); /* SCAN is a member's message */
  }
  if (rv != 0) {
    return rv < 0 ? cli_finish(ctx, CLI_EXIT_OK) : rv;
  }
  st = malloc(sizeof(*st));
  if (st == NULL) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
    goto out;
  }
  /* STATS, not the lighter GET_NEIGHBORS: it lists the lost ranges. */
  walk = (cli_walk){ctx, k.max_nodes, true, walk_step, walk_problem, &k};
  if ((rv = walk_start(&k, st)) != 0 ||
      (rv = cli_walk_ring(&walk, st, &k.closed)) != 0) {
    goto out;
  }
  if (k.closed) {
    if (order_nodes(&k) != 0) {
      rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
      goto out;
    }
    check_ring(&k);
  }
  if (k.ring_only) {
    k.replicas_skipped = "--ring-only";
  } else if (!k.closed) {
    k.replicas_skipped = "the walk did not close";
  } else if ((rv = check_replicas(&k)) != 0) {
    goto out;
  }
  elapsed_ms = mono_ms() - t0;
  ok = k.closed && k.problems_total == 0;
  if (ctx->json) {
    print_json(&k, ok, elapsed_ms);
  } else {
    print_text(&k, elapsed_ms);
  }
  rv = cli_finish_verdict(ctx, !ok, "check failed:", k.problems_total,
                          CHECK_EXIT_FAILED);
out:
  free(st);
  check_free(&k);
  return rv;
}

/* ---- dht wait ----------------------------------------------------------- */

const char cli_wait_usage[] =
    "usage: dht wait [--ready] [--ring [--nodes N]] [--max-nodes N]\n"
    "\n"
    "Waits until the node (the first address of --node) is ready: joined,\n"
    "its successor and predecessor lists agreeing with its neighbours',\n"
    "and its range in sync with its replicas (docs/DESIGN.md, \"Ready\").\n"
    "With --ring, until every node of the ring is ready and the ring\n"
    "passes dht check --ring-only. Asks again every 100 ms; --timeout-ms\n"
    "is the whole wait's limit here [5000]. Exit 0 when ready, 1 when not\n"
    "ready in time (the last reason is said), 2 on any other error.\n"
    "\n"
    "  --ready         wait until ready (what it waits for; the default)\n"
    "  --ring          every node of the ring, not only the one asked\n"
    "  --nodes N       with --ring: and the ring has exactly N nodes (a ring\n"
    "                  still being built is ready at each size it passes)\n"
    "  --max-nodes N   give up on a walk past N nodes, 1..65536 [4096]\n";

#define WAIT_POLL_MS 100
#define WAIT_ASK_MS_MAX 2000 /* the longest one request of a poll waits */

typedef struct wait_opts {
  bool ready;         /* --ready: accepted, the only condition */
  bool ring;          /* --ring */
  uint64_t nodes;     /* --nodes, 0: any number */
  uint64_t max_nodes; /* --max-nodes */
} wait_opts;

static const cli_num_opt wait_num_opts[] = {
    {"--nodes", NULL, 1, CHECK_NODES_MAX, 0, offsetof(wait_opts, nodes)},
    {"--max-nodes", NULL, 1, CHECK_NODES_MAX, CHECK_NODES_DEFAULT,
     offsetof(wait_opts, max_nodes)},
};

static int wait_opt(cli_ctx *ctx, cli_args *a, void *ud) {
  wait_opts *o = ud;
  int rv = cli_flag_take(ctx, a, "--ready", &o->ready, true);

  return rv != 0 ? rv : cli_flag_take(ctx, a, "--ring", &o->ring, true);
}

/* Whether the ring from st on, walked with the request limit of ctx, is
 * ready: it closes, passes the ring checks, has o's number of nodes, and
 * every node says ready. If not, why. Returns 0 (see *ready) or an exit
 * code (printed). */
static int ring_ready(cli_ctx *ctx, const wait_opts *o,
                      dht_client_stats_result *st, bool *ready, char *why,
                      size_t why_len) {
  char name[300];
  cli_walk walk;
  check k;
  size_t i;
  int rv;

  memset(&k, 0, sizeof(k));
  k.ctx = ctx;
  k.max_nodes = o->max_nodes;
  *ready = false;
  walk = (cli_walk){ctx, o->max_nodes, true, walk_step, walk_problem, &k};
  rv = cli_walk_ring(&walk, st, &k.closed);
  if (rv == 0 && k.closed && order_nodes(&k) != 0) {
    rv = cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  if (rv == 0) {
    if (k.closed) {
      check_ring(&k);
    }
    if (!ring_ok(&k)) {
      snprintf(why, why_len, "%s",
               k.n_problems > 0 ? k.problems[0]
                                : "the walk did not come back to its start");
    } else if (o->nodes != 0 && k.n_nodes != o->nodes) {
      snprintf(why, why_len, "the ring has %zu nodes, not %llu", k.n_nodes,
               (unsigned long long)o->nodes);
    } else {
      *ready = true;
      for (i = 0; i < k.n_nodes && *ready; i++) {
        if (!k.nodes[i].ready) {
          snprintf(why, why_len, "%s is not ready yet",
                   node_name(&k.nodes[i], name, sizeof(name)));
          *ready = false;
        }
      }
    }
  }
  check_free(&k);
  return rv;
}

int cli_wait(cli_ctx *ctx, int argc, char **argv) {
  dht_client_stats_result *st = NULL;
  struct timespec pause = {0, WAIT_POLL_MS * 1000000L};
  int64_t t0 = mono_ms(), left;
  char why[PROBLEM_LEN] = "no answer yet";
  dht_client *c = NULL;
  wait_opts o;
  cli_ctx ask;
  bool ready = false;
  int rv;

  memset(&o, 0, sizeof(o));
  rv = cli_scan_opts(ctx, argc, argv, cli_wait_usage, wait_num_opts,
                     CLI_COUNT_OF(wait_num_opts), wait_opt, &o);
  if (rv != 0) {
    return rv < 0 ? cli_finish(ctx, CLI_EXIT_OK) : rv;
  }
  if (o.nodes != 0 && !o.ring) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_INVAL,
                    "--nodes needs --ring (see dht wait --help)");
  }
  st = malloc(sizeof(*st));
  if (st == NULL) {
    return cli_fail(ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  }
  /* One client for every poll: it connects again by itself after a
   * failure, rather than each poll opening a connection of its own. */
  rv = dht_client_new(&c, ctx->node, &ctx->settings);
  if (rv != 0) {
    free(st);
    return cli_fail(ctx, CLI_EXIT_ERROR, rv, "%s", dht_strerror(rv));
  }
  for (;;) {
    left = ctx->timeout_ms - (mono_ms() - t0);
    ask = *ctx;
    ask.timeout_ms = (int)(left < WAIT_ASK_MS_MAX ? (left > 1 ? left : 1)
                                                  : WAIT_ASK_MS_MAX);
    rv = dht_client_stats(c, st, ask.timeout_ms);
    if (rv != 0) {
      snprintf(why, sizeof(why), "%s", dht_client_last_error(c));
    }
    if (rv == 0 && !o.ring) {
      ready = node_ready(st, why, sizeof(why));
    } else if (rv == 0 &&
               (rv = ring_ready(&ask, &o, st, &ready, why, sizeof(why))) !=
                   0) {
      break;
    }
    rv = 0;
    left = ctx->timeout_ms - (mono_ms() - t0);
    /* A last ask with almost no time left would only say it timed out. */
    if (ready || left < 2 * WAIT_POLL_MS) {
      break;
    }
    nanosleep(&pause, NULL);
  }
  if (rv == 0 && !ready) {
    rv = cli_fail(ctx, CHECK_EXIT_FAILED, DHT_ERR_TIMEOUT,
                  "not ready after %lld ms: %s", (long long)(mono_ms() - t0),
                  why);
  } else if (rv == 0) {
    if (ctx->json) {
      printf("{\"ok\":true,\"command\":\"wait\",\"ring\":%s,\"ms\":%lld}\n",
             o.ring ? "true" : "false", (long long)(mono_ms() - t0));
    } else {
      printf("ready%s after %lld ms\n", o.ring ? " (every node)" : "",
             (long long)(mono_ms() - t0));
    }
    rv = cli_finish(ctx, CLI_EXIT_OK);
  }
  dht_client_del(c);
  free(st);
  return rv;
}
