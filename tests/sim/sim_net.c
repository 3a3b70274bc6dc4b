/*
 * sim_net.c: connections, their byte streams, path faults and latency draws
 * (see sim_net.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_net.h"

static void *xrealloc(void *p, size_t n, size_t size) {
  void *q = (n != 0 && size > SIZE_MAX / n) ? NULL : realloc(p, n * size);

  if (q == NULL && n * size != 0) {
    fprintf(stderr, "dht-sim: out of memory (network)\n");
    abort();
  }
  return q;
}

void sim_net_init(sim_net *net, sim_rng *parent) {
  memset(net, 0, sizeof(*net));
  sim_rng_fork(parent, &net->rng);
  net->path_salt = sim_rng_next(&net->rng);
}

void sim_net_free(sim_net *net) {
  uint32_t i;

  for (i = 0; i < SIM_NET_PATH_FAULTS_MAX; i++) {
    free(net->paths[i].side);
  }
  for (i = 0; i < net->n_conns; i++) {
    sim_net_stream_clear(&net->conns[i].stream[0]);
    sim_net_stream_clear(&net->conns[i].stream[1]);
    free(net->conns[i].stream[0].items);
    free(net->conns[i].stream[1].items);
  }
  free(net->conns);
  free(net->free_conns);
  free(net->map_keys);
  free(net->map_conns);
  free(net->first[0]);
  free(net->first[1]);
  memset(net, 0, sizeof(*net));
}

uint64_t sim_net_client_latency_ms(sim_net *net) {
  return sim_rng_between(&net->rng, 1, SIM_NET_CLIENT_LATENCY_MAX_MS);
}

/* ---- path faults -------------------------------------------------------- */

int sim_net_path_fault_start(sim_net *net, sim_path_kind kind, uint8_t paths,
                             uint32_t extra_ms) {
  int h;

  for (h = 0; h < SIM_NET_PATH_FAULTS_MAX; h++) {
    sim_path_fault *f = &net->paths[h];
    if (!f->active) {
      f->active = true;
      f->kind = kind;
      f->paths = paths;
      f->extra_ms = extra_ms;
      if (f->side != NULL) {
        memset(f->side, 0, f->side_len);
      }
      return h;
    }
  }
  return -1;
}

void sim_net_path_side(sim_net *net, int h, uint32_t slot, uint8_t side) {
  sim_path_fault *f = &net->paths[h];

  if (slot >= f->side_len) {
    size_t len = f->side_len ? f->side_len : 64;
    while (len <= slot) {
      len *= 2;
    }
    f->side = xrealloc(f->side, len, 1);
    memset(f->side + f->side_len, 0, len - f->side_len);
    f->side_len = len;
  }
  f->side[slot] = side;
}

void sim_net_path_fault_end(sim_net *net, int h) {
  net->paths[h].active = false;
}

void sim_net_path_faults_end(sim_net *net) {
  int h;

  for (h = 0; h < SIM_NET_PATH_FAULTS_MAX; h++) {
    sim_net_path_fault_end(net, h);
  }
}

static bool covers(const sim_path_fault *f, uint32_t from, uint32_t to) {
  uint8_t a = from < f->side_len ? f->side[from] : 0;
  uint8_t b = to < f->side_len ? f->side[to] : 0;

  return f->active && a != b &&
         (f->paths & (a == 0 ? SIM_PATH_0_TO_1 : SIM_PATH_1_TO_0)) != 0;
}

bool sim_net_path_cut(const sim_net *net, uint32_t from, uint32_t to) {
  int h;

  for (h = 0; h < SIM_NET_PATH_FAULTS_MAX; h++) {
    if (net->paths[h].kind == SIM_PATH_CUT && covers(&net->paths[h], from, to)) {
      return true;
    }
  }
  return false;
}

/* Latency clogs add to a frame from -> to sent now. */
static uint32_t clog_ms(const sim_net *net, uint32_t from, uint32_t to) {
  uint32_t ms = 0;
  int h;

  for (h = 0; h < SIM_NET_PATH_FAULTS_MAX; h++) {
    if (net->paths[h].kind == SIM_PATH_CLOG && covers(&net->paths[h], from, to)) {
      ms += net->paths[h].extra_ms;
    }
  }
  return ms;
}

/* ---- the outgoing map: (from, to) -> connection --------------------------- */

static uint64_t map_key(uint32_t from, uint32_t to) {
  return ((uint64_t)from << 32 | to) + 1; /* never 0, the empty mark */
}

static size_t map_home(const sim_net *net, uint64_t key) {
  uint64_t h = key * 0x9e3779b97f4a7c15u;
  return (size_t)(h ^ (h >> 29)) & (net->map_cap - 1);
}

static void map_put(sim_net *net, uint64_t key, uint32_t conn);

static void map_grow(sim_net *net) {
  uint64_t *keys = net->map_keys;
  uint32_t *conns = net->map_conns;
  size_t cap = net->map_cap, i;

  net->map_cap = cap ? 2 * cap : 1024;
  net->map_keys = xrealloc(NULL, net->map_cap, sizeof(*net->map_keys));
  net->map_conns = xrealloc(NULL, net->map_cap, sizeof(*net->map_conns));
  memset(net->map_keys, 0, net->map_cap * sizeof(*net->map_keys));
  net->map_len = 0;
  for (i = 0; i < cap; i++) {
    if (keys[i] != 0) {
      map_put(net, keys[i], conns[i]);
    }
  }
  free(keys);
  free(conns);
}

static void map_put(sim_net *net, uint64_t key, uint32_t conn) {
  size_t i;

  if (2 * (net->map_len + 1) > net->map_cap) {
    map_grow(net);
  }
  for (i = map_home(net, key); net->map_keys[i] != 0;
       i = (i + 1) & (net->map_cap - 1)) {
  }
  net->map_keys[i] = key;
  net->map_conns[i] = conn;
  net->map_len++;
}

static size_t map_find(const sim_net *net, uint64_t key) {
  size_t i;

  if (net->map_cap == 0) {
    return SIZE_MAX;
  }
  for (i = map_home(net, key); net->map_keys[i] != 0;
       i = (i + 1) & (net->map_cap - 1)) {
    if (net->map_keys[i] == key) {
      return i;
    }
  }
  return SIZE_MAX;
}

/* Linear probing without tombstones: the entries after the hole that would
 * no longer be found move back into it. */
static void map_remove(sim_net *net, uint64_t key) {
  size_t mask = net->map_cap - 1, hole = map_find(net, key), i;

  if (hole == SIZE_MAX) {
    return;
  }
  net->map_keys[hole] = 0;
  net->map_len--;
  for (i = (hole + 1) & mask; net->map_keys[i] != 0; i = (i + 1) & mask) {
    size_t home = map_home(net, net->map_keys[i]);
    /* The entry may fill the hole when its home is not in (hole, i]. */
    if (((i - home) & mask) >= ((i - hole) & mask)) {
      net->map_keys[hole] = net->map_keys[i];
      net->map_conns[hole] = net->map_conns[i];
      net->map_keys[i] = 0;
      hole = i;
    }
  }
}

/* ---- connections ------------------------------------------------------------ */

static uint32_t conn_index(const sim_conn *c) {
  return (uint32_t)(c->id & UINT32_MAX) - 1;
}

sim_conn *sim_net_conn(sim_net *net, uint64_t id) {
  uint32_t i = (uint32_t)(id & UINT32_MAX) - 1;

  if (id == 0 || i >= net->n_conns || net->conns[i].id != id) {
    return NULL;
  }
  return &net->conns[i];
}

sim_conn *sim_net_conn_find(sim_net *net, uint32_t from, uint32_t to) {
  size_t i = map_find(net, map_key(from, to));

  return i == SIZE_MAX ? NULL : &net->conns[net->map_conns[i]];
}

static void ensure_slot(sim_net *net, uint32_t slot) {
  size_t len = net->first_len ? net->first_len : 64, i;
  unsigned e;

  if (slot < net->first_len) {
    return;
  }
  while (len <= slot) {
    len *= 2;
  }
  for (e = 0; e < 2; e++) {
    net->first[e] = xrealloc(net->first[e], len, sizeof(uint32_t));
    for (i = net->first_len; i < len; i++) {
      net->first[e][i] = SIM_NET_NO_CONN;
    }
  }
  net->first_len = len;
}

static void link_end(sim_net *net, sim_conn *c, unsigned e) {
  uint32_t slot = c->slot[e], idx = conn_index(c);

  ensure_slot(net, slot);
  c->prev[e] = SIM_NET_NO_CONN;
  c->next[e] = net->first[e][slot];
  if (c->next[e] != SIM_NET_NO_CONN) {
    net->conns[c->next[e]].prev[e] = idx;
  }
  net->first[e][slot] = idx;
}

static void unlink_end(sim_net *net, sim_conn *c, unsigned e) {
  if (c->prev[e] != SIM_NET_NO_CONN) {
    net->conns[c->prev[e]].next[e] = c->next[e];
  } else {
    net->first[e][c->slot[e]] = c->next[e];
  }
  if (c->next[e] != SIM_NET_NO_CONN) {
    net->conns[c->next[e]].prev[e] = c->prev[e];
  }
  c->next[e] = c->prev[e] = SIM_NET_NO_CONN;
}

/* The base latency of the path between two nodes, the same both ways and
 * for every connection between them: a property of where they are. */
static uint32_t path_latency_ms(const sim_net *net, uint32_t a, uint32_t b) {
  uint64_t lo = a < b ? a : b, hi = a < b ? b : a;
  uint64_t h = (net->path_salt ^ (lo << 32 | hi)) * 0x9e3779b97f4a7c15u;

  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9u;
  h ^= h >> 29;
  return SIM_NET_LATENCY_MIN_MS +
         (uint32_t)(h % (SIM_NET_LATENCY_MAX_MS - SIM_NET_LATENCY_MIN_MS + 1));
}

sim_conn *sim_net_conn_open(sim_net *net, uint32_t from, uint32_t incarnation,
                            uint32_t to, uint64_t now_ms) {
  sim_stream keep[2];
  uint32_t idx;
  sim_conn *c;

  if (net->n_free > 0) {
    idx = net->free_conns[--net->n_free];
  } else {
    if (net->n_conns == net->cap_conns) {
      net->cap_conns = net->cap_conns ? 2 * net->cap_conns : 256;
      net->conns = xrealloc(net->conns, net->cap_conns, sizeof(*net->conns));
      net->free_conns =
          xrealloc(net->free_conns, net->cap_conns, sizeof(*net->free_conns));
      memset(net->conns + net->n_conns, 0,
             (net->cap_conns - net->n_conns) * sizeof(*net->conns));
    }
    idx = net->n_conns++;
  }
  c = &net->conns[idx];
  /* A freed connection keeps its item arrays for the next one. */
  keep[0] = c->stream[0];
  keep[1] = c->stream[1];
  memset(c, 0, sizeof(*c));
  c->stream[0].items = keep[0].items;
  c->stream[0].cap = keep[0].cap;
  c->stream[1].items = keep[1].items;
  c->stream[1].cap = keep[1].cap;
  /* Numbers are never reused, so a late event cannot reach the wrong
   * connection; bit 62 stays clear for the client's connections. */
  c->id = (uint64_t)(++net->generation & 0x3fffffffu) << 32 | (idx + 1);
  c->slot[0] = from;
  c->slot[1] = to;
  c->incarnation[0] = incarnation;
  c->open[0] = true;
  c->state = SIM_CONN_CONNECTING;
  c->latency_ms = path_latency_ms(net, from, to);
  c->last_active_ms = now_ms;
  c->next[1] = c->prev[1] = SIM_NET_NO_CONN;
  link_end(net, c, 0);
  map_put(net, map_key(from, to), idx);
  net->count.connects++;
  return c;
}

sim_conn *sim_net_conn_first(sim_net *net, uint32_t slot, unsigned e) {
  if (slot >= net->first_len || net->first[e][slot] == SIM_NET_NO_CONN) {
    return NULL;
  }
  return &net->conns[net->first[e][slot]];
}

sim_conn *sim_net_conn_next(sim_net *net, const sim_conn *c, unsigned e) {
  return c->next[e] == SIM_NET_NO_CONN ? NULL : &net->conns[c->next[e]];
}

/* The arrival of a frame end e writes now: latency, jitter, clogs, lost
 * segments and the tail, never before the item ahead of it. */
static uint64_t arrival(sim_net *net, sim_conn *c, unsigned e,
                        uint64_t now_ms) {
  sim_stream *s = &c->stream[e];
  uint64_t at = now_ms + c->latency_ms +
                sim_rng_below(&net->rng, SIM_NET_JITTER_MAX_MS + 1);
  uint32_t extra = clog_ms(net, c->slot[e], c->slot[1 - e]);
  uint64_t rto = SIM_NET_RTO_MIN_MS;

  if (extra > 0) {
    at += extra;
    net->count.clogged++;
  }
  /* A lost segment waits one retransmission timeout, which doubles each
   * time the retransmission is lost too. */
  if (sim_rng_chance(&net->rng, net->faults.loss)) {
    net->count.retransmits++;
    do {
      at += rto;
      rto = 2 * rto < SIM_NET_RTO_MAX_MS ? 2 * rto : SIM_NET_RTO_MAX_MS;
    } while (sim_rng_chance(&net->rng, net->faults.loss));
  }
  if (sim_rng_chance(&net->rng, net->faults.slow)) {
    double tail = sim_rng_exponential(&net->rng, SIM_NET_TAIL_MEAN_MS);
    at += tail < SIM_NET_TAIL_CAP_MS ? (uint64_t)tail : SIM_NET_TAIL_CAP_MS;
  }
  if (at < s->last_at_ms) {
    at = s->last_at_ms;
  }
  s->last_at_ms = at;
  return at;
}

void sim_net_conn_accept(sim_net *net, sim_conn *c, uint32_t incarnation,
                         uint64_t now_ms) {
  sim_stream *s = &c->stream[0];
  uint32_t i;

  c->state = SIM_CONN_OPEN;
  c->incarnation[1] = incarnation;
  c->open[1] = true;
  c->last_active_ms = now_ms;
  link_end(net, c, 1);
  for (i = 0; i < s->n; i++) {
    sim_item *it = &s->items[(s->head + i) % s->cap];
    it->at_ms = arrival(net, c, 0, now_ms);
  }
}

void sim_net_conn_release(sim_net *net, sim_conn *c, unsigned e) {
  if (!c->open[e]) {
    return;
  }
  c->open[e] = false;
  c->reading_paused[e] = false;
  unlink_end(net, c, e);
  if (e == 0) {
    map_remove(net, map_key(c->slot[0], c->slot[1]));
  }
  sim_net_stream_clear(&c->stream[1 - e]);
  if (!c->open[1 - e]) {
    sim_net_stream_clear(&c->stream[e]);
    net->free_conns[net->n_free++] = conn_index(c);
    c->id = 0;
  }
}

uint64_t sim_net_queued(const sim_net *net, const sim_conn *c, unsigned e) {
  uint64_t bytes = c->stream[e].bytes;

  if (c->state != SIM_CONN_OPEN) {
    return bytes;
  }
  return bytes > net->limits.window_bytes ? bytes - net->limits.window_bytes
                                          : 0;
}

/* ---- streams ---------------------------------------------------------------- */

static sim_item *append(sim_stream *s) {
  if (s->n == s->cap) {
    uint32_t cap = s->cap ? 2 * s->cap : 4, i;
    sim_item *items = xrealloc(NULL, cap, sizeof(*items));
    for (i = 0; i < s->n; i++) {
      items[i] = s->items[(s->head + i) % s->cap];
    }
    free(s->items);
    s->items = items;
    s->head = 0;
    s->cap = cap;
  }
  return &s->items[(s->head + s->n++) % s->cap];
}

static void append_frame(sim_net *net, sim_conn *c, unsigned e,
                         const uint8_t *frame, size_t len, uint64_t now_ms) {
  sim_stream *s = &c->stream[e];
  sim_item *it = append(s);

  it->kind = SIM_ITEM_FRAME;
  it->frame = xrealloc(NULL, len, 1);
  memcpy(it->frame, frame, len);
  it->len = (uint32_t)len;
  it->at_ms =
      c->state == SIM_CONN_OPEN ? arrival(net, c, e, now_ms) : SIM_NET_UNSENT;
  s->bytes += len;
}

void sim_net_write(sim_net *net, sim_conn *c, unsigned e, const uint8_t *frame,
                   size_t len, uint64_t now_ms) {
  net->count.frames++;
  net->count.bytes += len;
  if (sim_rng_chance(&net->rng, net->faults.drop)) {
    net->count.dropped++;
    return;
  }
  append_frame(net, c, e, frame, len, now_ms);
  if (sim_rng_chance(&net->rng, net->faults.duplicate)) {
    net->count.duplicated++;
    append_frame(net, c, e, frame, len, now_ms);
  }
}

void sim_net_write_end(sim_net *net, sim_conn *c, unsigned e,
                       sim_item_kind kind, uint64_t now_ms) {
  sim_stream *s = &c->stream[e];
  sim_item *it;

  if (kind == SIM_ITEM_RST) {
    sim_net_stream_clear(s);
  } else {
    /* What the kernel holds goes out; the output queue behind it dies
     * with the socket. */
    uint64_t in_kernel = 0;
    uint32_t keep = 0;
    while (keep < s->n && in_kernel < net->limits.window_bytes) {
      in_kernel += s->items[(s->head + keep) % s->cap].len;
      keep++;
    }
    while (s->n > keep) {
      sim_item *last = &s->items[(s->head + s->n - 1) % s->cap];
      s->bytes -= last->len;
      free(last->frame);
      s->n--;
    }
  }
  it = append(s);
  it->kind = kind;
  it->frame = NULL;
  it->len = 0;
  it->at_ms = now_ms + c->latency_ms;
  if (it->at_ms < s->last_at_ms) {
    it->at_ms = s->last_at_ms;
  }
  s->last_at_ms = it->at_ms;
  s->ended = true;
}

void sim_net_stream_clear(sim_stream *s) {
  while (s->n > 0) {
    free(s->items[s->head].frame);
    sim_net_stream_pop(s);
  }
  s->bytes = 0;
}

sim_item *sim_net_stream_head(sim_stream *s) {
  return s->n == 0 ? NULL : &s->items[s->head];
}

void sim_net_stream_pop(sim_stream *s) {
  s->bytes -= s->items[s->head].len;
  s->head = (s->head + 1) % s->cap;
  s->n--;
}

uint64_t sim_net_retransmit_at(sim_net *net, sim_stream *s, bool cut,
                               uint64_t now_ms) {
  uint64_t rto = SIM_NET_RTO_MIN_MS;
  uint64_t at;
  uint32_t i;

  for (i = 1; i < s->retries && rto < SIM_NET_RTO_MAX_MS; i++) {
    rto *= 2;
  }
  at = now_ms + (rto < SIM_NET_RTO_MAX_MS ? rto : SIM_NET_RTO_MAX_MS);
  net->count.held++;
  if (cut && at > net->cut_retransmit_last_ms) {
    net->cut_retransmit_last_ms = at;
  }
  return at;
}
