/*
 * node_base.c: the bottom layer of a dht_node (node_base.h): the peer
 * table, requests in flight with their deadlines and resends, the outbox of
 * actions, round-trip times, logging and the random generator.
 *
 * A request's kind is a table of handlers (dht__pending_ops) that the layer
 * sending it defines; this file calls them when the answer comes or the
 * request fails, and never looks at what a kind keeps.
 */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "node_base.h"

/* A request's buffers above this size are freed when it ends, so that a
 * burst of big hand-off batches does not pin its memory for good. */
#define PENDING_BUF_KEEP_BYTES 4096
/* Request structs kept beyond twice the requests in flight: a burst's are
 * freed as it drains, down to this many spares. */
#define PENDING_STRUCTS_SPARE 64
/* A cache line. */
#define PENDING_ALIGN 64

/* ---- lifecycle, logging and randomness ------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int dht__base_init(dht_node *node, const dht_node_config *cfg,
                   uint64_t now_ms) {
  size_t addr_len = strlen(cfg->addr);
  uint64_t seed = cfg->seed;

  if (addr_len == 0 || addr_len > cfg->settings.limits.addr_len_max) {
    return DHT_ERR_INVAL;
  }
  node->set = cfg->settings;
  memcpy(node->addr, cfg->addr, addr_len + 1);
  if (cfg->id != NULL) {
    node->id = *cfg->id;
  } else {
    dht_id_hash(&node->id, cfg->addr, addr_len);
  }
  dht_id_short(&node->id, node->short_id);
  node->store = cfg->store;
  node->log = cfg->log;
  node->log_ud = cfg->log_ud;
  node->log_level = cfg->log_level;
  node->group_commit = cfg->group_commit;
  node->fault = cfg->fault;
  node->fault_ud = cfg->fault_ud;
  node->rng[0] = splitmix64(&seed);
  node->rng[1] = splitmix64(&seed);
  {
    /* The host's secret (dhtd draws it from libsodium), or, for the
     * simulator and tests, one made from the seed so that runs replay. */
    static const uint8_t none[DHT__LINK_KEY_LEN];
    uint64_t k = cfg->seed ^ 0x6c696e6b2d6b6579ull, w;
    size_t i;
    if (memcmp(cfg->link_key, none, sizeof(none)) != 0) {
      memcpy(node->link_key, cfg->link_key, sizeof(node->link_key));
    } else {
      for (i = 0; i < DHT__LINK_KEY_LEN; i += 8) {
        w = splitmix64(&k);
        memcpy(node->link_key + i, &w, 8);
      }
    }
  }
  node->now_ms = now_ms;
  node->wall_base_ms = cfg->wall_ms;
  node->created_ms = now_ms;
  dht_buf_init(&node->arena);
  return 0;
}

void dht__base_free(dht_node *node) {
  uint32_t i;

  for (i = 0; i < node->n_slots_used; i++) {
    dht__pending *p = node->pending[i];
    if (p != NULL) {
      dht_buf_free(&p->frame);
      dht_buf_free(&p->kept);
      free(p);
    }
  }
  free(node->pending);
  free(node->deadline_heap);
  free(node->free_slots);
  free(node->slot_rids);
  free(node->peers);
  free(node->peer_scan);
  free(node->outbox);
  free(node->held);
  for (i = 0; i < node->n_delayed; i++) {
    free(node->delayed[i].frame);
  }
  free(node->delayed);
  dht_buf_free(&node->arena);
}

void dht__log(dht_node *node, dht_log_level level, const char *fmt, ...) {
  char line[512];
  int n;
  va_list ap;

  if (node->log == NULL || level > node->log_level) {
    return;
  }
  n = snprintf(line, sizeof(line), "%s t=%llu ", node->short_id,
               (unsigned long long)node->now_ms);
  if (n < 0 || (size_t)n >= sizeof(line)) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
  va_end(ap);
  node->log(node->log_ud, level, line);
}

/* The wall clock (ms since the Unix epoch) at the call in progress: the
 * host's wall clock at creation, moved on by the monotonic time since. */
uint64_t dht__wall_ms(const dht_node *node) {
  return node->wall_base_ms + (node->now_ms - node->created_ms);
}

/* xorshift128+: small, fast, and good enough for request ids and jitter. */
uint64_t dht__rand(dht_node *node) {
  uint64_t s1 = node->rng[0];
  const uint64_t s0 = node->rng[1];

  node->rng[0] = s0;
  s1 ^= s1 << 23;
  node->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return node->rng[1] + s0;
}

/* ---- peers ---------------------------------------------------------------- */

int32_t dht__peer_find(const dht_node *node, const char *addr,
                       size_t addr_len) {
  uint32_t hash = dht__addr_hash(addr, addr_len);
  int32_t i;

  for (i = 0; i < node->n_peers; i++) {
    const dht__peer_scan *s = &node->peer_scan[i];
    if (s->refs > 0 && s->addr_hash == hash &&
        strlen(node->peers[i].addr) == addr_len &&
        memcmp(node->peers[i].addr, addr, addr_len) == 0) {
      return i;
    }
  }
  return DHT__NO_PEER;
}

/* Doubles the peer table (both arrays). */
static int peers_grow(dht_node *node) {
  int32_t cap = node->cap_peers ? node->cap_peers * 2 : 16;
  /* Slots start on cache lines (dht__peer's alignment), which realloc does
   * not promise. */
  dht__peer *peers =
      aligned_alloc(_Alignof(dht__peer), (size_t)cap * sizeof(*peers));
  dht__peer_scan *scan =
      realloc(node->peer_scan, (size_t)cap * sizeof(*scan));

  if (scan != NULL) {
    node->peer_scan = scan;
  }
  if (peers == NULL || scan == NULL) {
    free(peers);
    return DHT_ERR_NOMEM;
  }
  if (node->n_peers > 0) {
    memcpy(peers, node->peers, (size_t)node->n_peers * sizeof(*peers));
  }
  free(node->peers);
  node->peers = peers;
  node->cap_peers = cap;
  return 0;
}

/*
 * Finds or adds the peer at addr and returns its index with refs unchanged
 * (a new slot starts with refs == 0 and is reclaimed unless the caller holds
 * it before the next intern). id may be NULL when unknown. Returns
 * DHT__NO_PEER when the table cannot grow or addr is unusable.
 */
int32_t dht__peer_intern(dht_node *node, const dht_id *id, const char *addr,
                         size_t addr_len) {
  int32_t idx, i;
  dht__peer *p;

  if (addr_len == 0 || addr_len > DHT_ADDR_LEN_MAX) {
    return DHT__NO_PEER;
  }
  idx = dht__peer_find(node, addr, addr_len);
  if (idx != DHT__NO_PEER) {
    p = &node->peers[idx];
    if (id != NULL && p->id_known && !dht_id_eq(&p->id, id)) {
      /* Somebody names a known address with another id. Only the peer
       * itself may say it has a new one (dht__peer_intern_own). */
      node->counters.ids_refused++;
      return DHT__NO_PEER;
    }
    if (id != NULL && !p->id_known) {
      if (!dht__id_ok(node, id, addr, addr_len)) {
        return DHT__NO_PEER;
      }
      p->id = *id;
      p->id_known = true;
    }
    return idx;
  }
  if (id != NULL && !dht__id_ok(node, id, addr, addr_len)) {
    return DHT__NO_PEER;
  }
  for (i = 0; i < node->n_peers; i++) {
    if (node->peer_scan[i].refs == 0) {
      break;
    }
  }
  if (i == node->n_peers) {
    if (node->n_peers == node->cap_peers && peers_grow(node) != 0) {
      return DHT__NO_PEER;
    }
    node->n_peers++;
  }
  p = &node->peers[i];
  memset(p, 0, sizeof(*p));
  node->peer_scan[i].refs = 0;
  node->peer_scan[i].pending_head = DHT__NO_SLOT;
  node->peer_scan[i].addr_hash = dht__addr_hash(addr, addr_len);
  memcpy(p->addr, addr, addr_len);
  p->addr[addr_len] = '\0';
  if (id != NULL) {
    p->id = *id;
    p->id_known = true;
  }
  return i;
}

int32_t dht__peer_intern_ref(dht_node *node, const dht_peer_ref *ref) {
  return dht__peer_intern(node, &ref->id, (const char *)ref->addr.p,
                          ref->addr.len);
}

/* Whether id may be the id of the node at addr (counted when not): never
 * this node's own id at another address, since two nodes cannot share an
 * id (the node would list itself); and without trust_ids it must be
 * hash(addr), what every node without --id takes. */
bool dht__id_ok(dht_node *node, const dht_id *id, const char *addr,
                size_t addr_len) {
  dht_id want;
  bool ok;

  if (dht_id_eq(id, &node->id)) {
    ok = addr_len == strlen(node->addr) &&
         memcmp(addr, node->addr, addr_len) == 0;
  } else if (node->set.trust_ids) {
    ok = true;
  } else {
    dht_id_hash(&want, addr, addr_len);
    ok = dht_id_eq(&want, id);
  }
  if (!ok) {
    node->counters.ids_refused++;
  }
  return ok;
}

/* The high bits of a new request id, never 0: SipHash-2-4 of a counter
 * under the first half of the link key.
 * A plain counter, or the node's generator (whose state its outputs give
 * away), would let anyone who saw some of our request ids answer the next
 * ones with forged replies: a reply is matched by its rid alone, whatever
 * connection brings it. */
uint64_t dht__rid_next(dht_node *node) {
  uint8_t in[12] = {'r', 'i', 'd', '1'}, out[crypto_shorthash_BYTES];
  uint64_t hi;

  do {
    node->rid_counter++;
    memcpy(in + 4, &node->rid_counter, 8);
    crypto_shorthash(out, in, sizeof(in), node->link_key);
    memcpy(&hi, out, sizeof(hi));
    hi >>= DHT__RID_SLOT_BITS;
  } while (hi == 0);
  return hi << DHT__RID_SLOT_BITS;
}

/* The token this node puts in the messages it sends to addr: a keyed hash
 * (SipHash-2-4, libsodium's crypto_shorthash, a PRF) of the address under
 * the second half of the link key, so that only addr (and whoever reads the
 * path) learns it, and a peer cannot tell the token sent to another. Never
 * 0. */
uint64_t dht__link_token(const dht_node *node, const char *addr,
                         size_t addr_len) {
  uint8_t out[crypto_shorthash_BYTES];
  uint64_t t;

  crypto_shorthash(out, (const uint8_t *)addr, addr_len,
                   node->link_key + crypto_shorthash_KEYBYTES);
  memcpy(&t, out, sizeof(t));
  return t != 0 ? t : 1;
}

void dht__peer_hold(dht_node *node, int32_t idx) {
  assert(idx >= 0 && idx < node->n_peers && "holding a peer that is not");
  node->peer_scan[idx].refs++;
}

void dht__peer_release(dht_node *node, int32_t idx) {
  assert(idx >= 0 && idx < node->n_peers && node->peer_scan[idx].refs > 0 &&
         "releasing a peer nobody holds");
  node->peer_scan[idx].refs--;
}

/* Points a routing entry at idx (or DHT__NO_PEER), moving the reference. */
void dht__slot_set(dht_node *node, int32_t *slot, int32_t idx) {
  if (*slot == idx) {
    return;
  }
  if (idx != DHT__NO_PEER) {
    dht__peer_hold(node, idx);
  }
  if (*slot != DHT__NO_PEER) {
    dht__peer_release(node, *slot);
  }
  *slot = idx;
}

void dht__peer_to_ref(const dht_node *node, int32_t idx, dht_peer_ref *ref) {
  const dht__peer *p = &node->peers[idx];

  ref->id = p->id;
  ref->addr.p = (const uint8_t *)p->addr;
  ref->addr.len = strlen(p->addr);
}

void dht__self_ref(const dht_node *node, dht_peer_ref *ref) {
  ref->id = node->id;
  ref->addr.p = (const uint8_t *)node->addr;
  ref->addr.len = strlen(node->addr);
}

/* True when ref names this node's own address. */
bool dht__ref_is_self(const dht_node *node, const dht_peer_ref *ref) {
  return ref->addr.len == strlen(node->addr) &&
         memcmp(ref->addr.p, node->addr, ref->addr.len) == 0;
}

/* ---- round-trip times ------------------------------------------------------- */

/* Timeouts in a row that still double a peer's wait; beyond, it stays at
 * rpc_timeout_ms anyway. */
#define RTO_BACKOFF_MAX 8

/* How long to wait for peer's reply: its smoothed round-trip time plus four
 * deviations (RFC 6298), doubled for each timeout since the last sample,
 * within [rto_min_ms, rpc_timeout_ms]; the longest until the peer has been
 * measured. Without the doubling, a peer whose round trip grew past its
 * wait would time out on every first send, and since only the replies to
 * first sends are samples, its wait would never grow. */
uint32_t dht__rto(const dht_node *node, int32_t peer) {
  const dht__peer *p = &node->peers[peer];
  uint64_t rto;

  if (!p->rtt_known) {
    return node->set.rpc_timeout_ms;
  }
  rto = ((uint64_t)p->srtt_ms + 4 * (uint64_t)p->rttvar_ms) << p->rto_backoff;
  if (rto < node->set.rto_min_ms) {
    return node->set.rto_min_ms;
  }
  return rto < node->set.rpc_timeout_ms ? (uint32_t)rto
                                        : node->set.rpc_timeout_ms;
}

static void rtt_sample(dht_node *node, int32_t peer, uint64_t rtt_ms) {
  dht__peer *p = &node->peers[peer];
  uint32_t r = rtt_ms > UINT32_MAX / 8 ? UINT32_MAX / 8 : (uint32_t)rtt_ms;

  p->rto_backoff = 0;
  if (!p->rtt_known) {
    p->srtt_ms = r;
    p->rttvar_ms = r / 2;
    p->rtt_known = true;
    return;
  }
  p->rttvar_ms = (3 * p->rttvar_ms + (p->srtt_ms > r ? p->srtt_ms - r
                                                     : r - p->srtt_ms)) / 4;
  p->srtt_ms = (7 * p->srtt_ms + r) / 8;
}

/* ---- pending requests ------------------------------------------------------- */

/* True when request a is due before b: earlier deadline, then lower slot. */
static bool due_before(const dht_node *node, uint32_t a, uint32_t b) {
  const dht__pending *x = node->pending[a], *y = node->pending[b];

  return x->deadline_ms < y->deadline_ms ||
         (x->deadline_ms == y->deadline_ms && a < b);
}

static void heap_place(dht_node *node, uint32_t pos, uint32_t slot) {
  node->deadline_heap[pos] = slot;
  node->pending[slot]->heap_pos = pos;
}

/* Restores the heap order around pos after its request's deadline moved. */
static void heap_fix(dht_node *node, uint32_t pos) {
  uint32_t *h = node->deadline_heap;
  uint32_t slot = h[pos];

  while (pos > 0 && due_before(node, slot, h[(pos - 1) / 2])) {
    heap_place(node, pos, h[(pos - 1) / 2]);
    pos = (pos - 1) / 2;
  }
  for (;;) {
    uint32_t child = 2 * pos + 1;
    if (child >= node->n_pending) {
      break;
    }
    if (child + 1 < node->n_pending && due_before(node, h[child + 1], h[child])) {
      child++;
    }
    if (!due_before(node, h[child], slot)) {
      break;
    }
    heap_place(node, pos, h[child]);
    pos = child;
  }
  heap_place(node, pos, slot);
}

/* Grows the slot arrays (doubling, up to pending_max). Returns 0,
 * DHT_ERR_FULL or DHT_ERR_NOMEM. */
static int pending_grow(dht_node *node) {
  uint32_t cap = node->cap_pending ? node->cap_pending * 2 : 64;
  dht__pending **slots;
  uint32_t *heap, *free_slots;
  uint64_t *rids;

  if (node->cap_pending >= node->set.pending_max) {
    return DHT_ERR_FULL;
  }
  if (cap > node->set.pending_max) {
    cap = node->set.pending_max;
  }
  slots = realloc(node->pending, (size_t)cap * sizeof(*slots));
  if (slots == NULL) {
    return DHT_ERR_NOMEM;
  }
  memset(slots + node->cap_pending, 0,
         (size_t)(cap - node->cap_pending) * sizeof(*slots));
  node->pending = slots;
  heap = realloc(node->deadline_heap, (size_t)cap * sizeof(*heap));
  if (heap == NULL) {
    return DHT_ERR_NOMEM;
  }
  node->deadline_heap = heap;
  free_slots = realloc(node->free_slots, (size_t)cap * sizeof(*free_slots));
  if (free_slots == NULL) {
    return DHT_ERR_NOMEM;
  }
  node->free_slots = free_slots;
  rids = realloc(node->slot_rids, (size_t)cap * sizeof(*rids));
  if (rids == NULL) {
    return DHT_ERR_NOMEM;
  }
  memset(rids + node->cap_pending, 0,
         (size_t)(cap - node->cap_pending) * sizeof(*rids));
  node->slot_rids = rids;
  node->cap_pending = cap;
  return 0;
}

/* Takes a free slot: the one freed last, else a new one. */
static int slot_take(dht_node *node, uint32_t *slot) {
  int rv;

  if (node->n_free > 0) {
    *slot = node->free_slots[--node->n_free];
    return 0;
  }
  if (node->n_slots_used == node->cap_pending &&
      (rv = pending_grow(node)) != 0) {
    return rv;
  }
  *slot = node->n_slots_used++;
  return 0;
}

static void peer_list_link(dht_node *node, dht__pending *p) {
  dht__peer_scan *peer = &node->peer_scan[p->peer];

  p->peer_prev = DHT__NO_SLOT;
  p->peer_next = peer->pending_head;
  if (peer->pending_head != DHT__NO_SLOT) {
    node->pending[peer->pending_head]->peer_prev = p->slot;
  }
  peer->pending_head = p->slot;
}

static void peer_list_unlink(dht_node *node, dht__pending *p) {
  if (p->peer_prev != DHT__NO_SLOT) {
    node->pending[p->peer_prev]->peer_next = p->peer_next;
  } else {
    node->peer_scan[p->peer].pending_head = p->peer_next;
  }
  if (p->peer_next != DHT__NO_SLOT) {
    node->pending[p->peer_next]->peer_prev = p->peer_prev;
  }
}

/* A zeroed request struct on a cache line of its own: the fields every
 * check of the pending table reads (rid to heap_pos) then cost one miss, not
 * two. NULL when out of memory. */
static dht__pending *pending_struct_new(void) {
  size_t size = (sizeof(dht__pending) + PENDING_ALIGN - 1) /
                PENDING_ALIGN * PENDING_ALIGN;
  dht__pending *p = aligned_alloc(PENDING_ALIGN, size);

  if (p != NULL) {
    memset(p, 0, sizeof(*p));
  }
  return p;
}

/*
 * Takes a free pending slot for a request of kind ops to peer (which it
 * holds), in O(1) plus a heap insertion. A live request's struct never
 * moves, so a dht__pending pointer stays valid while other requests come
 * and go. Returns NULL when settings.pending_max requests are in flight or
 * memory runs out.
 */
dht__pending *dht__pending_new(dht_node *node, const dht__pending_ops *ops,
                               int32_t peer) {
  dht__pending *p;
  uint32_t slot;
  int rv;

  rv = slot_take(node, &slot);
  if (rv != 0) {
    node->counters.pending_full += rv == DHT_ERR_FULL;
    return NULL;
  }
  if (node->pending[slot] == NULL) {
    node->pending[slot] = pending_struct_new();
    if (node->pending[slot] == NULL) {
      node->free_slots[node->n_free++] = slot;
      return NULL;
    }
    node->n_pending_structs++;
  }
  p = node->pending[slot];
  p->slot = slot;
  p->ops = ops;
  p->peer = peer;
  p->sends = 0;
  p->accepted = false;
  p->link_waits = 0;
  p->link_resend = false;
  p->deadline_ms = DHT_TIME_NEVER;
  p->frame.len = 0;
  p->kept.len = 0;
  memset(&p->u, 0, sizeof(p->u));
  dht__peer_hold(node, peer);
  peer_list_link(node, p);
  dht__pending_rekey(node, p);
  heap_place(node, node->n_pending++, slot);
  heap_fix(node, p->heap_pos);
  DHT__DEBUG_CHECK(node, pending);
  return p;
}

/* Gives p a fresh request id, so that a late reply to an earlier attempt
 * cannot be mistaken for the answer to the next one. */
void dht__pending_rekey(dht_node *node, dht__pending *p) {
  p->rid = dht__rid_next(node) | p->slot;
  node->slot_rids[p->slot] = p->rid;
}

static dht__pending *pending_find(dht_node *node, uint64_t rid) {
  uint64_t slot = rid & (DHT__PENDING_HARD_MAX - 1);

  /* slot_rids holds a live slot's rid, and only a live one's */
  return rid != 0 && slot < node->n_slots_used && node->slot_rids[slot] == rid
             ? node->pending[slot]
             : NULL;
}

static void buf_shrink(dht_buf *b) {
  if (b->cap > PENDING_BUF_KEEP_BYTES) {
    dht_buf_free(b);
  }
  b->len = 0;
}

/* Frees p's slot for reuse. Small buffers stay for the next request, and
 * the struct too, unless a burst left many more structs than requests. */
void dht__pending_free(dht_node *node, dht__pending *p) {
  uint32_t last, slot = p->slot;

  assert(p->rid != 0 && "freeing a request twice");
  peer_list_unlink(node, p);
  dht__peer_release(node, p->peer);
  p->rid = 0;
  node->slot_rids[slot] = 0;
  last = node->deadline_heap[--node->n_pending];
  if (last != slot) {
    heap_place(node, p->heap_pos, last);
    heap_fix(node, p->heap_pos);
  }
  node->free_slots[node->n_free++] = slot;
  if (node->n_pending_structs > 2 * node->n_pending + PENDING_STRUCTS_SPARE) {
    dht_buf_free(&p->frame);
    dht_buf_free(&p->kept);
    free(p);
    node->pending[slot] = NULL;
    node->n_pending_structs--;
  } else {
    buf_shrink(&p->frame);
    buf_shrink(&p->kept);
  }
  DHT__DEBUG_CHECK(node, pending);
}

/* Moves p to another peer (a new next hop), keeping the reference count. */
void dht__pending_retarget(dht_node *node, dht__pending *p, int32_t peer) {
  dht__peer_hold(node, peer);
  peer_list_unlink(node, p);
  dht__peer_release(node, p->peer);
  p->peer = peer;
  peer_list_link(node, p);
}

/* Sets p's deadline wait_ms from now. */
void dht__pending_rearm(dht_node *node, dht__pending *p, uint64_t wait_ms) {
  p->deadline_ms = node->now_ms + wait_ms;
  heap_fix(node, p->heap_pos);
}

/* p fails at its first deadline instead of being resent. */
void dht__pending_no_resend(dht__pending *p, const dht_node *node) {
  p->sends = node->set.rpc_retries + 1;
}

/*
 * Every request in flight to peer fails at the next expiry pass, without
 * resends: the peer is known to be gone, or at least its connection is.
 * That holds for a request it took over (ACCEPTED) too: its result would
 * come back on the connection the request went out on, which is closed
 * (dht__declare_dead disconnects) or never came up, so it can never
 * arrive. The acceptance is void, and the request fails as one that the
 * peer never took (a routed one goes another way) instead of waiting
 * route_timeout_ms for nothing and failing as TIMEOUT. Found with dht-sim
 * burst --seed 797177574: a held reply made n00037 declare the live
 * n00020 dead, and a GET n00020 had accepted came back TIMEOUT 4 s later.
 */
void dht__pending_fail_peer(dht_node *node, int32_t peer) {
  uint32_t slot;

  for (slot = node->peer_scan[peer].pending_head; slot != DHT__NO_SLOT;
       slot = node->pending[slot]->peer_next) {
    dht__pending *p = node->pending[slot];
    p->accepted = false;
    dht__pending_no_resend(p, node);
    dht__pending_rearm(node, p, 0);
  }
}

static void pending_resend(dht_node *node, dht__pending *p);

/* dht_node_peer_reset: the connection that carried what is in flight to
 * peer broke. */
void dht__pending_resend_peer(dht_node *node, int32_t peer) {
  uint32_t slot;

  for (slot = node->peer_scan[peer].pending_head; slot != DHT__NO_SLOT;
       slot = node->pending[slot]->peer_next) {
    dht__pending *p = node->pending[slot];
    /* One it accepted too: the peer answers on the connection a request
     * came in on, and that one broke, so its result cannot come. */
    p->accepted = false;
    if (p->sends <= node->set.rpc_retries) {
      pending_resend(node, p);
    } else {
      dht__pending_rearm(node, p, 0); /* fails at this expiry pass */
    }
  }
}

/* When the earliest request is due; DHT_TIME_NEVER when none is live. */
uint64_t dht__pending_next_deadline(const dht_node *node) {
  return node->n_pending > 0
             ? node->pending[node->deadline_heap[0]]->deadline_ms
             : DHT_TIME_NEVER;
}

/* Hands a reply to the request it answers. */
void dht__pending_on_reply(dht_node *node, const dht_msg *msg) {
  dht__pending *p = pending_find(node, msg->rid);

  if (p == NULL) {
    /* Late (after a timeout and retry), duplicated, or bogus. */
    node->counters.replies_unmatched++;
    return;
  }
  if (p->sends == 1 && !p->accepted) {
    rtt_sample(node, p->peer, node->now_ms - p->sent_ms);
  }
  if (msg->type == DHT_MSG_ERROR && msg->error_code == DHT_ERR_UNBOUND &&
      p->link_waits < DHT__LINK_WAITS_MAX) {
    /* The peer is asking us, over its own connection, whether we sent
     * this: send it again once that has had a round trip's time. */
    p->link_waits++;
    p->link_resend = true;
    dht__pending_rearm(node, p, dht__rto(node, p->peer));
    return;
  }
  if (msg->type != DHT_MSG_ACCEPTED || p->ops->takes_accepted) {
    p->ops->on_reply(node, p, msg);
  }
}

static void outbox_send_frame(dht_node *node, int32_t peer,
                              const dht_buf *frame);

/* The type of the request in flight under rid (the frame it last sent),
 * or -1 when none is. */
int dht__pending_msg_type(dht_node *node, uint64_t rid) {
  dht__pending *p = pending_find(node, rid);

  if (p == NULL || p->frame.len <= DHT_FRAME_HEADER_LEN) {
    return -1;
  }
  return dht_msg_peek_type(p->frame.data + DHT_FRAME_HEADER_LEN,
                           p->frame.len - DHT_FRAME_HEADER_LEN);
}

/* How long a request waits for its reply: wait_ms, or an eighth of it where
 * the fault point says, as if the network had turned slow. */
static uint64_t request_wait(dht_node *node, uint64_t wait_ms) {
  if (dht__fault(node, DHT_FAULT_TIMEOUT_SHORT)) {
    return wait_ms / 8 > 0 ? wait_ms / 8 : 1;
  }
  return wait_ms;
}

/* Resends or fails every request that is due, earliest first. A failure
 * handler may make other requests due at once (a peer declared dead fails
 * everything sent to it); they are taken in the same pass. */
void dht__pending_expire(dht_node *node) {
  while (node->n_pending > 0) {
    uint32_t slot = node->deadline_heap[0];
    dht__pending *p = node->pending[slot];
    uint64_t rid = p->rid;
    if (p->deadline_ms > node->now_ms) {
      break;
    }
    if (p->link_resend) {
      p->link_resend = false;
      p->sent_ms = node->now_ms;
      dht__pending_rearm(node, p,
                         request_wait(node, dht__rto(node, p->peer)));
      outbox_send_frame(node, p->peer, &p->frame);
      continue;
    }
    if (!p->accepted && p->sends <= node->set.rpc_retries) {
      /* back off: the peer may only be slow */
      pending_resend(node, p);
      if (node->peers[p->peer].rto_backoff < RTO_BACKOFF_MAX) {
        node->peers[p->peer].rto_backoff++;
      }
      continue;
    }
    node->counters.rpc_timeouts++;
    p->ops->on_failure(node, p);
    /* The handler freed p (its struct may be gone), or sent it again or
     * elsewhere (a fresh rid, a later deadline): anything else would make
     * this loop spin. */
    assert((node->pending[slot] != p || p->rid != rid ||
            p->deadline_ms > node->now_ms) &&
           "a failed request was left due");
  }
}

/* Sends p's frame once more, waiting longer for each try. */
static void pending_resend(dht_node *node, dht__pending *p) {
  dht__pending_rearm(node, p,
                     request_wait(node, (uint64_t)dht__rto(node, p->peer)
                                            << p->sends));
  p->sends++;
  outbox_send_frame(node, p->peer, &p->frame);
}

/* ---- the outbox ------------------------------------------------------------- */

/* Forgets the actions already polled, once all of them have been. */
void dht__outbox_compact(dht_node *node) {
  if (node->outbox_head == node->outbox_len) {
    node->outbox_head = 0;
    node->outbox_len = 0;
    node->arena.len = 0;
    if (node->arena.cap > DHT__ARENA_KEEP_BYTES) {
      dht_buf_free(&node->arena); /* a burst's room is not kept idle */
    }
  }
}

bool dht__outbox_poll(dht_node *node, dht_action *out) {
  const dht__outbox_entry *e;

  if (node->outbox_head == node->outbox_len) {
    return false;
  }
  e = &node->outbox[node->outbox_head++];
  memset(out, 0, sizeof(*out));
  out->type = e->type;
  out->conn = e->conn;
  out->event = e->event;
  out->error = e->error;
  if (e->type == DHT_ACTION_SEND || e->type == DHT_ACTION_DISCONNECT) {
    out->addr = (const char *)node->arena.data + e->addr_off;
  }
  if (e->type == DHT_ACTION_SEND || e->type == DHT_ACTION_REPLY) {
    out->frame = node->arena.data + e->frame_off;
    out->frame_len = e->frame_len;
  }
  return true;
}

static dht__outbox_entry *outbox_push(dht_node *node, dht_action_type type) {
  dht__outbox_entry *e;

  if (node->outbox_len == node->outbox_cap) {
    size_t cap = node->outbox_cap ? node->outbox_cap * 2 : 64;
    dht__outbox_entry *entries =
        realloc(node->outbox, cap * sizeof(*entries));
    if (entries == NULL) {
      return NULL;
    }
    node->outbox = entries;
    node->outbox_cap = cap;
  }
  e = &node->outbox[node->outbox_len++];
  memset(e, 0, sizeof(*e));
  e->type = type;
  return e;
}

/* A frame that could not be queued: the asker times out and the request
 * fails there, so losing it is not fatal, but it must not go unnoticed. */
static void send_failed(dht_node *node, const char *addr, int code) {
  node->counters.send_failures++;
  dht__log(node, DHT_LOG_WARN, "frame to %s dropped: %s", addr,
           dht_strerror(code));
}

/* Queues SEND of an already encoded frame to peer. */
static void outbox_send_frame(dht_node *node, int32_t peer,
                              const dht_buf *frame) {
  const char *addr = node->peers[peer].addr;
  size_t addr_len = strlen(addr) + 1;
  size_t addr_off = node->arena.len;
  dht__outbox_entry *e;

  if (dht_buf_reserve(&node->arena, addr_len + frame->len) != 0 ||
      (e = outbox_push(node, DHT_ACTION_SEND)) == NULL) {
    send_failed(node, addr, DHT_ERR_NOMEM);
    return;
  }
  dht_buf_append(&node->arena, addr, addr_len);
  e->addr_off = addr_off;
  e->frame_off = node->arena.len;
  e->frame_len = frame->len;
  dht_buf_append(&node->arena, frame->data, frame->len);
  node->counters.frames_out++;
  dht__metrics_send(node, frame->data, frame->len);
}

/* Encodes msg with p's rid, remembers the frame for resends, sends it to p's
 * peer and arms the reply deadline. Returns 0, DHT_ERR_NOMEM or
 * DHT_ERR_INVAL (msg breaks a hard cap: a bug); on an error nothing was
 * sent and the caller still owns p. */
/* Messages whose receiver takes them only from a confirmed sender carry
 * the sender's link token for it, and (when the type has no peer field
 * naming the sender) the sender itself as src. */
static void link_stamp(dht_node *node, int32_t peer, dht_msg *msg) {
  dht__peer *p = &node->peers[peer];

  switch (msg->type) {
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
  case DHT_MSG_SYNC:
  case DHT_MSG_FETCH:
    msg->has_src = true;
    dht__self_ref(node, &msg->src);
    /* fall through */
  case DHT_MSG_NOTIFY:
  case DHT_MSG_LEAVE:
    if (p->link_token == 0) { /* computed once per peer slot */
      p->link_token = dht__link_token(node, p->addr, strlen(p->addr));
    }
    msg->link = p->link_token;
    break;
  default:
    break;
  }
}

int dht__pending_send(dht_node *node, dht__pending *p, dht_msg *msg) {
  int rv;

  msg->rid = p->rid;
  link_stamp(node, p->peer, msg);
  p->link_resend = false;
  p->frame.len = 0;
  rv = dht_msg_encode(msg, &p->frame);
  if (rv != 0) {
    send_failed(node, node->peers[p->peer].addr, rv);
    return rv;
  }
  p->sends = 1;
  p->accepted = false;
  p->sent_ms = node->now_ms;
  dht__pending_rearm(node, p, request_wait(node, dht__rto(node, p->peer)));
  outbox_send_frame(node, p->peer, &p->frame);
  if (dht__fault(node, DHT_FAULT_SEND_TWICE)) {
    outbox_send_frame(node, p->peer, &p->frame);
  }
  return 0;
}

/* Sends a message that expects no reply (NOTIFY). */
void dht__send(dht_node *node, int32_t peer, dht_msg *msg) {
  dht_buf frame;
  int rv;

  dht_buf_init(&frame);
  /* Slot bits 0: no reply (NOTIFY has none) is expected under it. */
  msg->rid = dht__rid_next(node);
  link_stamp(node, peer, msg);
  rv = dht_msg_encode(msg, &frame);
  if (rv == 0) {
    outbox_send_frame(node, peer, &frame);
  } else {
    send_failed(node, node->peers[peer].addr, rv);
  }
  dht_buf_free(&frame);
}

/* Holds an encoded reply back for 1 .. 2 * rpc_timeout_ms. Returns false
 * when it cannot (no room, no memory): the reply then goes out at once. */
static bool delay_reply(dht_node *node, uint64_t conn, const uint8_t *frame,
                        size_t len) {
  dht__delayed_reply *d;

  if (node->delayed == NULL) {
    node->delayed = malloc(DHT__DELAYED_MAX * sizeof(*node->delayed));
  }
  if (node->delayed == NULL || node->n_delayed == DHT__DELAYED_MAX) {
    return false;
  }
  d = &node->delayed[node->n_delayed];
  d->frame = malloc(len);
  if (d->frame == NULL) {
    return false;
  }
  memcpy(d->frame, frame, len);
  d->len = len;
  d->conn = conn;
  d->due_ms = node->now_ms + 1 +
              dht__rand(node) % (2 * (uint64_t)node->set.rpc_timeout_ms);
  node->n_delayed++;
  return true;
}

uint64_t dht__delayed_next_deadline(const dht_node *node) {
  uint64_t t = DHT_TIME_NEVER;
  uint32_t i;

  for (i = 0; i < node->n_delayed; i++) {
    if (node->delayed[i].due_ms < t) {
      t = node->delayed[i].due_ms;
    }
  }
  return t;
}

/* release: sends the held replies that are due; else forgets conn's. The
 * others stay, in order. */
static void delayed_filter(dht_node *node, uint64_t conn, bool release) {
  uint32_t i, kept = 0;

  for (i = 0; i < node->n_delayed; i++) {
    dht__delayed_reply *d = &node->delayed[i];
    bool go = release ? d->due_ms <= node->now_ms : d->conn == conn;
    if (!go) {
      node->delayed[kept++] = *d;
      continue;
    }
    if (release) {
      size_t off = node->arena.len;
      dht__outbox_entry *e;
      if (dht_buf_reserve(&node->arena, d->len) == 0 &&
          (e = outbox_push(node, DHT_ACTION_REPLY)) != NULL) {
        dht_buf_append(&node->arena, d->frame, d->len);
        e->conn = d->conn;
        e->frame_off = off;
        e->frame_len = d->len;
        node->counters.frames_out++;
      } else {
        node->counters.reply_failures++;
      }
    }
    free(d->frame);
  }
  node->n_delayed = kept;
}

void dht__delayed_release(dht_node *node) { delayed_filter(node, 0, true); }

void dht__delayed_drop_conn(dht_node *node, uint64_t conn) {
  delayed_filter(node, conn, false);
}

/* Queues msg as the reply on conn. A reply that cannot be queued is counted
 * and logged here; the asker then times out. */
void dht__reply(dht_node *node, uint64_t conn, dht_msg *msg) {
  size_t off = node->arena.len;
  dht__outbox_entry *e;
  int rv;

  rv = dht_msg_encode(msg, &node->arena);
  if (rv == 0 && msg->type != DHT_MSG_ERROR &&
      node->arena.len > node->set.outbox_bytes_max) {
    /* One call queued too much (a verdict that sends a flood of routed
     * GETs of a large value to the local replica, all at once): the asker
     * hears that the node is busy rather than the node holding GiBs. The
     * arena grew by this one frame at most. */
    node->arena.len = off;
    node->counters.outbox_full++;
    dht__reply_refusal(node, conn, msg->rid, DHT_ERR_FULL,
                       "node busy: too many replies at once, try again",
                       NULL);
    return;
  }
  if (rv == 0 && msg->type != DHT_MSG_ACCEPTED &&
      dht__fault(node, DHT_FAULT_REPLY_DELAYED) &&
      delay_reply(node, conn, node->arena.data + off,
                  node->arena.len - off)) {
    dht__metrics_reply(node, conn, msg, node->arena.len - off);
    node->arena.len = off;
    return;
  }
  if (rv == 0 && (e = outbox_push(node, DHT_ACTION_REPLY)) != NULL) {
    e->conn = conn;
    e->frame_off = off;
    e->frame_len = node->arena.len - off;
    node->counters.frames_out++;
    dht__metrics_reply(node, conn, msg, e->frame_len);
    return;
  }
  node->arena.len = off;
  node->counters.reply_failures++;
  dht__metrics_reply(node, conn, msg, 0);
  dht__log(node, DHT_LOG_WARN, "reply on conn %llu dropped: %s",
           (unsigned long long)conn,
           dht_strerror(rv != 0 ? rv : DHT_ERR_NOMEM));
}

void dht__reply_error(dht_node *node, uint64_t conn, uint64_t rid, int code) {
  dht__reply_refusal(node, conn, rid, code, dht_strerror(code), NULL);
}

/* An ERROR reply with its own text (cut at the wire's limit) and, for a
 * write that lost to a newer one, that version (ver may be NULL). */
void dht__reply_refusal(dht_node *node, uint64_t conn, uint64_t rid, int code,
                        const char *text, const dht_version *ver) {
  size_t len = strlen(text);
  dht_msg msg;

  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_ERROR;
  msg.rid = rid;
  msg.error_code = code;
  msg.error_msg.p = (const uint8_t *)text;
  msg.error_msg.len = len < node->set.limits.error_msg_len_max
                          ? len
                          : node->set.limits.error_msg_len_max;
  if (ver != NULL) {
    msg.has_ver = true;
    msg.ver = *ver;
  }
  node->counters.errors_sent++;
  dht__reply(node, conn, &msg);
}

/* OK to request rid on conn (with hops, for a routed request). */
void dht__reply_ok(dht_node *node, uint64_t conn, uint64_t rid,
                   uint32_t hops) {
  dht_msg ok;

  memset(&ok, 0, sizeof(ok));
  ok.type = DHT_MSG_OK;
  ok.rid = rid;
  ok.hops = hops;
  dht__reply(node, conn, &ok);
}

/* The answer to a write that took effect: OK, or ERROR answer when it is
 * not 0 (DHT_ERR_NOT_FOUND: a DEL that found no value, whose tombstone is
 * stored all the same). */
void dht__reply_written(dht_node *node, uint64_t conn, uint64_t rid,
                        uint32_t hops, int answer) {
  if (answer == 0) {
    dht__reply_ok(node, conn, rid, hops);
  } else {
    dht__reply_error(node, conn, rid, answer);
  }
}

/* Answers a write whose data this node stored since the last group commit
 * (dht__reply_written): at once without group commits, else when the
 * commit is done. */
void dht__reply_ack(dht_node *node, uint64_t conn, uint64_t rid,
                    uint32_t hops, int answer) {
  dht__held_ack *a;

  if (!node->group_commit) {
    dht__reply_written(node, conn, rid, hops, answer);
    return;
  }
  if (node->n_held == node->cap_held) {
    size_t cap = node->cap_held ? 2 * node->cap_held : 16;
    dht__held_ack *held = realloc(node->held, cap * sizeof(*held));
    if (held == NULL) {
      /* Cannot wait for the commit: the asker times out instead. */
      node->counters.reply_failures++;
      return;
    }
    node->held = held;
    node->cap_held = cap;
  }
  a = &node->held[node->n_held++];
  a->conn = conn;
  a->rid = rid;
  a->hops = hops;
  a->answer = answer;
}

/* A group commit ended with status: the acknowledgements waiting for it go
 * out as they were held, or as ERROR status with text when it failed. */
void dht__acks_release(dht_node *node, int status, const char *text) {
  size_t i;

  for (i = 0; i < node->n_held; i++) {
    const dht__held_ack *a = &node->held[i];
    if (status == 0) {
      dht__reply_written(node, a->conn, a->rid, a->hops, a->answer);
    } else {
      dht__reply_refusal(node, a->conn, a->rid, status, text, NULL);
    }
  }
  node->n_held = 0;
}

/* Tells the asker on conn that its request rid is being worked on. */
void dht__reply_accepted(dht_node *node, uint64_t conn, uint64_t rid) {
  dht_msg accepted;

  memset(&accepted, 0, sizeof(accepted));
  accepted.type = DHT_MSG_ACCEPTED;
  accepted.rid = rid;
  dht__reply(node, conn, &accepted);
}

void dht__emit_event(dht_node *node, dht_event event, int error) {
  dht__outbox_entry *e = outbox_push(node, DHT_ACTION_EVENT);

  if (e != NULL) {
    e->event = event;
    e->error = error;
  }
}

void dht__emit_disconnect(dht_node *node, const char *addr) {
  size_t addr_len = strlen(addr) + 1;
  size_t addr_off = node->arena.len;
  dht__outbox_entry *e;

  if (dht_buf_reserve(&node->arena, addr_len) != 0 ||
      (e = outbox_push(node, DHT_ACTION_DISCONNECT)) == NULL) {
    return; /* the host keeps the connection: slower to recover, no worse */
  }
  dht_buf_append(&node->arena, addr, addr_len);
  e->addr_off = addr_off;
}

void dht__emit_close(dht_node *node, uint64_t conn) {
  dht__outbox_entry *e = outbox_push(node, DHT_ACTION_CLOSE);

  if (e != NULL) {
    e->conn = conn;
    node->counters.closes++;
  }
}

/* ---- host limits ------------------------------------------------------------ */

void dht_node_count_limit(dht_node *node, dht_host_limit which) {
  switch (which) {
  case DHT_LIMIT_CONNS:
    node->counters.limit_conns++;
    break;
  case DHT_LIMIT_PER_ADDR:
    node->counters.limit_per_addr++;
    break;
  case DHT_LIMIT_IDLE:
    node->counters.limit_idle++;
    break;
  case DHT_LIMIT_FRAME_TIME:
    node->counters.limit_frame_time++;
    break;
  case DHT_LIMIT_MEMORY:
    node->counters.limit_memory++;
    break;
  case DHT_LIMIT_INFLIGHT:
    node->counters.limit_inflight++;
    break;
  case DHT_LIMIT_RATE:
    node->counters.limit_rate++;
    break;
  case DHT_LIMIT_READ_BUDGET:
    node->counters.limit_read_budget++;
    break;
  }
}
