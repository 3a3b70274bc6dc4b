/*
 * walk.c: the walk around the ring by successor pointers that dht ring and
 * dht check both make (cli.h), so that they agree on what the ring is: the
 * same nodes in the same order, the same idea of a loop, of a node that
 * does not answer and of a walk that closes.
 *
 * From the start, the walk asks the first entry of the last answering
 * node's successor list; when that one does not answer, the next entry,
 * so that one dead node does not hide the rest of the ring. It stops when
 * an entry is the start (closed), a node seen answering before (a loop),
 * the list has nothing left to try, or one node more than max_nodes
 * answers. Each node reached and each problem goes to the caller's
 * callbacks as it happens, which keep what they need and judge the ring
 * by their own rules.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dht/err.h"

#define NAME_LEN (DHT_ID_SHORT_LEN + DHT_ADDR_LEN_MAX + 2) /* "id addr" */

/* A node the walk has met. */
typedef struct met {
  dht_client_peer peer; /* as it answered, or as it was listed */
  bool answered;        /* else it did not answer when asked */
} met;

/* One walk in progress. */
typedef struct walker {
  const cli_walk *w;               /* settings and callbacks */
  met *met;                        /* every node met, in walk order */
  size_t n_met;                    /* entries in met */
  size_t cap_met;                  /* entries allocated */
  size_t n_answered;               /* of which answered */
  dht_client_peer from;            /* the last node that answered */
  dht_client_stats_result *st;     /* the answer being read */
  dht_client_neighbors_result *nb; /* ... when asked GET_NEIGHBORS */
} walker;

CLI_PRINTF(2, 3)
static void walk_problem(walker *k, const char *fmt, ...) {
  char line[CLI_WALK_PROBLEM_LEN];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  k->w->problem(k->w->ud, line);
}

/* "1a2b3c4d 127.0.0.1:7001" */
static const char *name_of(const dht_client_peer *p, char *buf) {
  char s[DHT_ID_SHORT_LEN];

  snprintf(buf, NAME_LEN, "%s %s", dht_id_short(&p->id, s), p->addr);
  return buf;
}

/* The node met with id that answered (answered) or did not, or NULL. */
static const met *find(const walker *k, const dht_id *id, bool answered) {
  size_t i;

  for (i = 0; i < k->n_met; i++) {
    if (k->met[i].answered == answered && dht_id_eq(&k->met[i].peer.id, id)) {
      return &k->met[i];
    }
  }
  return NULL;
}

/* Records a node met and hands it to the caller: answer is what it said,
 * or NULL when it did not answer (error says why). Returns 0 or an exit
 * code (printed). */
static int meet(walker *k, const dht_client_peer *peer,
                const dht_client_stats_result *answer, const char *error) {
  cli_walk_step s;
  size_t cap;
  met *p;

  if (k->n_met == k->cap_met) {
    cap = k->cap_met > 0 ? 2 * k->cap_met : 64;
    p = realloc(k->met, cap * sizeof(*p));
    if (p == NULL) {
      return cli_fail(k->w->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM,
                      "out of memory");
    }
    k->met = p;
    k->cap_met = cap;
  }
  k->met[k->n_met].peer = *peer;
  k->met[k->n_met].answered = answer != NULL;
  k->n_met++;
  if (answer != NULL) {
    k->n_answered++;
    k->from = *peer;
  }
  s.node = peer;
  s.answer = answer;
  s.error = error;
  return k->w->step(k->w->ud, &s);
}

/* Asks addr where it stands, into k->st. Returns 0, or the client's error
 * with its text in err. */
static int ask(walker *k, const char *addr, char *err, size_t err_len) {
  dht_client_stats_result *st = k->st;
  dht_client_neighbors_result *nb = k->nb;
  dht_client *c = NULL;
  int rv;

  rv = dht_client_new(&c, addr, &k->w->ctx->settings);
  if (rv != 0) {
    snprintf(err, err_len, "bad address %s", addr);
    return rv;
  }
  rv = k->w->ask_stats ? dht_client_stats(c, st, k->w->ctx->timeout_ms)
                       : dht_client_neighbors(c, nb, k->w->ctx->timeout_ms);
  if (rv != 0) {
    snprintf(err, err_len, "%s", dht_client_last_error(c));
  }
  dht_client_del(c);
  if (rv == 0 && !k->w->ask_stats) {
    /* The same fields, so that callers read one kind of answer. */
    st->node = nb->node;
    st->has_pred = nb->has_pred;
    st->pred = nb->pred;
    st->n_succs = nb->n_succs;
    memcpy(st->succs, nb->succs, nb->n_succs * sizeof(st->succs[0]));
    st->n_preds = nb->n_preds;
    memcpy(st->preds, nb->preds, nb->n_preds * sizeof(st->preds[0]));
    st->n_fingers = 0;
    st->n_counters = 0;
  }
  return rv;
}

/* The walk after the start. Returns 0 or an exit code (printed). */
static int walk(walker *k, const dht_client_stats_result *start, bool *closed) {
  dht_client_peer cands[DHT_SUCC_LIST_MAX];
  char err[CLI_WALK_PROBLEM_LEN], a[NAME_LEN], b[NAME_LEN];
  char s1[DHT_ID_SHORT_LEN], s2[DHT_ID_SHORT_LEN];
  const dht_id *start_id = &start->node.id;
  size_t n_cands, cand;
  const met *m;
  int rv;

  n_cands = start->n_succs;
  memcpy(cands, start->succs, n_cands * sizeof(cands[0]));
  for (;;) {
    if (n_cands == 0 && k->n_answered == 1) {
      *closed = true; /* a node alone, with an empty successor list */
      return 0;
    }
    for (cand = 0; cand < n_cands; cand++) {
      if (dht_id_eq(&cands[cand].id, start_id)) {
        *closed = true;
        return 0;
      }
      if ((m = find(k, &cands[cand].id, true)) != NULL) {
        walk_problem(k,
                     "walk loops: %s lists %s as successor %zu, visited "
                     "before, without coming back to the start",
                     name_of(&k->from, a), name_of(&m->peer, b), cand + 1);
        return 0;
      }
      if (find(k, &cands[cand].id, false) != NULL) {
        continue; /* reported already */
      }
      if (ask(k, cands[cand].addr, err, sizeof(err)) == 0) {
        break;
      }
      walk_problem(k, "%s %s (successor %zu of %s) does not answer: %s",
                   dht_id_short(&cands[cand].id, s1), cands[cand].addr,
                   cand + 1, name_of(&k->from, a), err);
      if ((rv = meet(k, &cands[cand], NULL, err)) != 0) {
        return rv;
      }
    }
    if (cand == n_cands) {
      walk_problem(k, "%s has no %ssuccessor left to try: the walk stops",
                   name_of(&k->from, a), n_cands > 0 ? "answering " : "");
      return 0;
    }
    if (!dht_id_eq(&k->st->node.id, &cands[cand].id)) {
      walk_problem(k, "%s answers with id %s, but %s lists it as %s",
                   cands[cand].addr, dht_id_short(&k->st->node.id, s1),
                   name_of(&k->from, a), dht_id_short(&cands[cand].id, s2));
      if ((m = find(k, &k->st->node.id, true)) != NULL) {
        walk_problem(k,
                     "walk loops: %s was visited before, without coming "
                     "back to the start",
                     name_of(&m->peer, a));
        return 0;
      }
    }
    if (k->n_answered >= k->w->max_nodes) {
      walk_problem(k,
                   "stopped after %zu nodes without coming back to the "
                   "start (--max-nodes)",
                   k->n_answered);
      return 0;
    }
    if ((rv = meet(k, &k->st->node, k->st, "")) != 0) {
      return rv;
    }
    n_cands = k->st->n_succs;
    memcpy(cands, k->st->succs, n_cands * sizeof(cands[0]));
  }
}

int cli_walk_ring(const cli_walk *w, const dht_client_stats_result *start,
                  bool *closed) {
  walker k;
  int rv;

  *closed = false;
  memset(&k, 0, sizeof(k));
  k.w = w;
  k.st = malloc(sizeof(*k.st));
  k.nb = w->ask_stats ? NULL : malloc(sizeof(*k.nb));
  if (k.st == NULL || (!w->ask_stats && k.nb == NULL)) {
    rv = cli_fail(w->ctx, CLI_EXIT_ERROR, DHT_ERR_NOMEM, "out of memory");
  } else if ((rv = meet(&k, &start->node, start, "")) == 0) {
    rv = walk(&k, start, closed);
  }
  free(k.st);
  free(k.nb);
  free(k.met);
  return rv;
}
