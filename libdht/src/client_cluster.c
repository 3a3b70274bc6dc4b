/*
 * client_cluster.c: dht/cluster.h, a client that sends each request
 * straight to its key's owner.
 *
 * The map is an array of the nodes heard of, sorted by id; a key's owner by
 * the map is the first node at or after the key's id, wrapping round. Each
 * node's dht_client is created when first used, with retries off: a node of
 * the map gets one attempt, and when it is the problem (unreachable, hung,
 * not in the ring) it leaves the map and the next node by the map, usually
 * the key's first replica and the owner after repair, is asked. Everything
 * else goes to the seed's client, which routes and retries as it always has.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dht/cluster.h"
#include "dht/err.h"

/* dht_cluster_last_error() text, truncated beyond this. */
#define ERR_TEXT_MAX 512
/* Map nodes found gone within one call before it goes to the seed. */
#define GONE_PER_CALL_MAX 3
/* The shortest share of what remains that one node's attempt gets (unless
 * less remains), as the client's own retries cut their attempts. */
#define ATTEMPT_MS_MIN 250

typedef struct cluster_node {
  dht_id id;
  char addr[DHT_ADDR_LEN_MAX + 1];
  dht_client *c; /* NULL until first used */
} cluster_node;

struct dht_cluster {
  dht_client_settings settings; /* for every client */
  dht_client *seed;             /* dht_cluster_new's address */
  cluster_node *nodes;          /* the map, by id */
  size_t n_nodes, cap;
  bool retry;         /* dht_cluster_set_retry */
  unsigned redirects; /* MOVED answers the last call followed */
  unsigned attempts;  /* requests the last call sent */
  char err[ERR_TEXT_MAX];
  char refusal[ERR_TEXT_MAX];
};

static int64_t now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Keeps c's account of its failure as the cluster's, and returns rv. */
static int fail_as(dht_cluster *cl, const dht_client *c, int rv) {
  snprintf(cl->err, sizeof(cl->err), "%s", dht_client_last_error(c));
  snprintf(cl->refusal, sizeof(cl->refusal), "%s", dht_client_last_refusal(c));
  return rv;
}

/* ---- the map ------------------------------------------------------------ */

/* The first node whose id is at or after id (n_nodes when none is). */
static size_t lower_bound(const dht_cluster *cl, const dht_id *id) {
  size_t lo = 0, hi = cl->n_nodes;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (dht_id_cmp(&cl->nodes[mid].id, id) < 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

static cluster_node *find(dht_cluster *cl, const dht_id *id) {
  size_t i = lower_bound(cl, id);

  return i < cl->n_nodes && dht_id_cmp(&cl->nodes[i].id, id) == 0
             ? &cl->nodes[i]
             : NULL;
}

/* The key's owner by the map, or NULL when the map is empty. */
static cluster_node *owner_of(dht_cluster *cl, const dht_id *key_id) {
  size_t i = lower_bound(cl, key_id);

  if (cl->n_nodes == 0) {
    return NULL;
  }
  return &cl->nodes[i < cl->n_nodes ? i : 0];
}

/* Adds the node id at addr. A known id keeps the address it has (its
 * client may have requests in flight) until it is forgotten. Returns the
 * node (pointers into the map last until the next change), or NULL when
 * addr is not a valid address or the map is full. */
static cluster_node *learn(dht_cluster *cl, const dht_id *id,
                           const char *addr) {
  char host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port;
  cluster_node *n;
  size_t i;

  if (dht_addr_parse(addr, host, sizeof(host), &port) != 0) {
    return NULL;
  }
  i = lower_bound(cl, id);
  if (i < cl->n_nodes && dht_id_cmp(&cl->nodes[i].id, id) == 0) {
    return &cl->nodes[i];
  }
  if (cl->n_nodes == DHT_CLUSTER_NODES_MAX) {
    return NULL;
  }
  if (cl->n_nodes == cl->cap) {
    size_t cap = cl->cap == 0 ? 16 : 2 * cl->cap;
    cluster_node *nodes = realloc(cl->nodes, cap * sizeof(*nodes));
    if (nodes == NULL) {
      return NULL;
    }
    cl->nodes = nodes;
    cl->cap = cap;
  }
  memmove(&cl->nodes[i + 1], &cl->nodes[i],
          (cl->n_nodes - i) * sizeof(*cl->nodes));
  cl->n_nodes++;
  n = &cl->nodes[i];
  n->id = *id;
  snprintf(n->addr, sizeof(n->addr), "%s", addr);
  n->c = NULL;
  return n;
}

/* learn() for a peer as the wire carries it: an address of addr.len bytes,
 * which must hold no NUL. */
static cluster_node *learn_ref(dht_cluster *cl, const dht_peer_ref *ref) {
  char addr[DHT_ADDR_LEN_MAX + 1];

  if (ref->addr.len == 0 || ref->addr.len > DHT_ADDR_LEN_MAX ||
      memchr(ref->addr.p, '\0', ref->addr.len) != NULL) {
    return NULL;
  }
  memcpy(addr, ref->addr.p, ref->addr.len);
  addr[ref->addr.len] = '\0';
  return learn(cl, &ref->id, addr);
}

static void drop(dht_cluster *cl, cluster_node *n) {
  size_t i = (size_t)(n - cl->nodes);

  dht_client_del(n->c);
  memmove(&cl->nodes[i], &cl->nodes[i + 1],
          (cl->n_nodes - i - 1) * sizeof(*cl->nodes));
  cl->n_nodes--;
}

static dht_client *client_of(dht_cluster *cl, cluster_node *n) {
  if (n->c == NULL && dht_client_new(&n->c, n->addr, &cl->settings) != 0) {
    n->c = NULL;
  }
  return n->c;
}

/* ---- lifecycle ---------------------------------------------------------- */

int dht_cluster_new(dht_cluster **out, const char *addr,
                    const dht_client_settings *settings) {
  dht_cluster *cl;
  int rv;

  if (out == NULL) {
    return DHT_ERR_INVAL;
  }
  *out = NULL;
  cl = calloc(1, sizeof(*cl));
  if (cl == NULL) {
    return DHT_ERR_NOMEM;
  }
  if (settings != NULL) {
    cl->settings = *settings;
  } else {
    dht_client_settings_default(&cl->settings);
  }
  rv = dht_client_new(&cl->seed, addr, &cl->settings);
  if (rv != 0) {
    free(cl);
    return rv;
  }
  *out = cl;
  return 0;
}

void dht_cluster_del(dht_cluster *cl) {
  size_t i;

  if (cl == NULL) {
    return;
  }
  for (i = 0; i < cl->n_nodes; i++) {
    dht_client_del(cl->nodes[i].c);
  }
  free(cl->nodes);
  dht_client_del(cl->seed);
  free(cl);
}

dht_client *dht_cluster_seed(dht_cluster *cl) { return cl->seed; }

void dht_cluster_set_retry(dht_cluster *cl, bool on) {
  cl->retry = on;
  dht_client_set_retry(cl->seed, on);
}

const char *dht_cluster_last_error(const dht_cluster *cl) { return cl->err; }

const char *dht_cluster_last_refusal(const dht_cluster *cl) {
  return cl->refusal;
}

unsigned dht_cluster_last_redirects(const dht_cluster *cl) {
  return cl->redirects;
}

unsigned dht_cluster_last_attempts(const dht_cluster *cl) {
  return cl->attempts;
}

size_t dht_cluster_size(const dht_cluster *cl) { return cl->n_nodes; }

static void learn_peer(dht_cluster *cl, const dht_client_peer *p) {
  (void)learn(cl, &p->id, p->addr);
}

int dht_cluster_learn(dht_cluster *cl, int timeout_ms) {
  dht_client_stats_result *st = malloc(sizeof(*st));
  size_t i;
  int rv;

  if (st == NULL) {
    snprintf(cl->err, sizeof(cl->err), "out of memory");
    return DHT_ERR_NOMEM;
  }
  rv = dht_client_stats(cl->seed, st, timeout_ms);
  if (rv != 0) {
    free(st);
    return fail_as(cl, cl->seed, rv);
  }
  learn_peer(cl, &st->node);
  if (st->has_pred) {
    learn_peer(cl, &st->pred);
  }
  for (i = 0; i < st->n_succs; i++) {
    learn_peer(cl, &st->succs[i]);
  }
  for (i = 0; i < st->n_preds; i++) {
    learn_peer(cl, &st->preds[i]);
  }
  for (i = 0; i < st->n_fingers; i++) {
    learn_peer(cl, &st->fingers[i].peer);
  }
  free(st);
  return 0;
}

/* ---- blocking calls ----------------------------------------------------- */

/* What one node's attempt may use of left ms: as the client's retries cut
 * theirs, so that a hung node cannot eat the whole call. */
static int attempt_ms(int left) {
  if (left / 2 > ATTEMPT_MS_MIN) {
    return left / 2;
  }
  return left > ATTEMPT_MS_MIN ? ATTEMPT_MS_MIN : left;
}

/* True when a node of the map failed an attempt because it is gone for
 * this request: it could not be reached or did not answer in time, or it
 * says it is not in the ring. */
static bool node_gone(const dht_client *c, int rv) {
  if (!dht_client_last_answered(c)) {
    return rv == DHT_ERR_UNAVAILABLE || rv == DHT_ERR_TIMEOUT;
  }
  return rv == DHT_ERR_STATE;
}

/* True when an answer from a node of the map is for the ring to settle
 * (the owner is busy or repairing, or the write's stamp lost): the seed's
 * path, which waits, re-routes and re-stamps, takes the request over. */
static bool for_the_ring(const dht_client *c, int rv) {
  return dht_client_last_answered(c) &&
         (rv == DHT_ERR_UNAVAILABLE || rv == DHT_ERR_TIMEOUT ||
          rv == DHT_ERR_HOPS || rv == DHT_ERR_FULL || rv == DHT_ERR_STALE);
}

/*
 * Runs the key request req until it is answered: at the owner by the map
 * (direct), at the nodes MOVED answers name, and, when the map cannot
 * serve it, at the seed (direct while the map is empty, so that the answer
 * teaches it; routed after too many redirects or a node's answer for the
 * ring). Returns 0 with *reply of type expect, or an error as the client's
 * calls do.
 */
static int cluster_call(dht_cluster *cl, dht_msg *req, dht_msg_type expect,
                        const dht_msg **reply, int timeout_ms) {
  int64_t deadline = now_ms() + timeout_ms;
  bool routed = false, pinned = false, moved_final = false;
  unsigned gone = 0;
  dht_id key_id, next_id;
  const dht_msg *r;
  cluster_node *n;
  dht_client *c;
  int64_t left;
  int rv;

  cl->redirects = 0;
  cl->attempts = 0;
  cl->err[0] = cl->refusal[0] = '\0';
  dht_id_hash(&key_id, req->key.p, req->key.len);
  for (;;) {
    n = NULL;
    if (!routed) {
      n = pinned ? find(cl, &next_id) : owner_of(cl, &key_id);
    }
    c = n != NULL ? client_of(cl, n) : NULL;
    left = deadline - now_ms();
    if (left < 0) {
      left = 0;
    }
    if (c == NULL) {
      /* The seed: its retries and fallbacks, for what time is left. */
      req->direct = !routed && cl->n_nodes == 0;
      req->final = false;
      rv = dht_client_request(cl->seed, req, expect, &r, (int)left);
      c = cl->seed;
    } else {
      req->direct = true;
      req->final = pinned ? moved_final : true;
      rv = dht_client_request(c, req, expect, &r,
                              cl->retry ? attempt_ms((int)left) : (int)left);
    }
    cl->attempts += dht_client_last_attempts(c);
    if (rv == 0 && r->type != DHT_MSG_MOVED) {
      *reply = r;
      return 0;
    }
    if (rv == 0) {
      cl->redirects++;
      moved_final = r->final;
      next_id = r->peer.id;
      pinned = learn_ref(cl, &r->peer) != NULL;
      routed = !pinned || cl->redirects > DHT_CLUSTER_MOVED_MAX;
      continue;
    }
    if (c == cl->seed || !cl->retry || deadline - now_ms() <= 0) {
      return fail_as(cl, c, rv);
    }
    if (node_gone(c, rv)) {
      drop(cl, n);
      pinned = false;
      routed = ++gone >= GONE_PER_CALL_MAX;
    } else if (for_the_ring(c, rv)) {
      routed = true;
    } else {
      return fail_as(cl, c, rv); /* a definite answer */
    }
  }
}

int dht_cluster_put(dht_cluster *cl, const void *key, size_t key_len,
                    const void *value, size_t value_len, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;

  if (value == NULL && value_len > 0) {
    snprintf(cl->err, sizeof(cl->err), "no value");
    return DHT_ERR_INVAL;
  }
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_PUT;
  req.key.p = key;
  req.key.len = key == NULL ? 0 : key_len;
  req.value.p = value;
  req.value.len = value_len;
  /* Fixed here, carried to every node asked: they are all this one write. */
  req.has_ver = true;
  req.ver = dht_client_stamp(cl->seed);
  return cluster_call(cl, &req, DHT_MSG_OK, &r, timeout_ms);
}

int dht_cluster_get(dht_cluster *cl, const void *key, size_t key_len,
                    uint8_t **value, size_t *value_len, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  uint8_t *copy;
  int rv;

  if (value == NULL || value_len == NULL) {
    snprintf(cl->err, sizeof(cl->err), "invalid argument");
    return DHT_ERR_INVAL;
  }
  *value = NULL;
  *value_len = 0;
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_GET;
  req.key.p = key;
  req.key.len = key == NULL ? 0 : key_len;
  rv = cluster_call(cl, &req, DHT_MSG_VALUE, &r, timeout_ms);
  if (rv != 0) {
    return rv;
  }
  copy = malloc(r->value.len > 0 ? r->value.len : 1);
  if (copy == NULL) {
    snprintf(cl->err, sizeof(cl->err), "out of memory for a value of %zu bytes",
             r->value.len);
    return DHT_ERR_NOMEM;
  }
  if (r->value.len > 0) {
    memcpy(copy, r->value.p, r->value.len);
  }
  *value = copy;
  *value_len = r->value.len;
  return 0;
}

int dht_cluster_remove(dht_cluster *cl, const void *key, size_t key_len,
                       int timeout_ms) {
  const dht_msg *r;
  dht_msg req;

  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_DEL;
  req.key.p = key;
  req.key.len = key == NULL ? 0 : key_len;
  req.has_ver = true;
  req.ver = dht_client_stamp(cl->seed);
  return cluster_call(cl, &req, DHT_MSG_OK, &r, timeout_ms);
}

/* ---- for a caller's own poll loop --------------------------------------- */

dht_client *dht_cluster_pick(dht_cluster *cl, const dht_id *key_id,
                             bool *final) {
  cluster_node *n = owner_of(cl, key_id);
  dht_client *c = n != NULL ? client_of(cl, n) : NULL;

  *final = c != NULL;
  return c != NULL ? c : cl->seed;
}

dht_client *dht_cluster_moved(dht_cluster *cl, const dht_msg *moved,
                              bool *final) {
  cluster_node *n = NULL;

  if (moved->type == DHT_MSG_MOVED && moved->has_peer) {
    n = learn_ref(cl, &moved->peer);
  }
  *final = moved->final;
  return n != NULL ? client_of(cl, n) : NULL;
}

void dht_cluster_forget(dht_cluster *cl, dht_client *c) {
  size_t i;

  if (c == cl->seed) {
    dht_client_close(c);
    return;
  }
  for (i = 0; i < cl->n_nodes; i++) {
    if (cl->nodes[i].c == c) {
      drop(cl, &cl->nodes[i]);
      return;
    }
  }
}
