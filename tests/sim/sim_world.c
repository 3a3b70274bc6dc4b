/*
 * sim_world.c: the host of every simulated node (see sim_world.h): process
 * lifecycle, the event loop, carrying out actions, the simulated client, and
 * the structural invariants checked after every call into a node.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/node_prefetch.h"
#include "sim_world.h"

/* A node whose deadline is still due after this many handle_expiry calls at
 * one instant would spin forever: a livelock in the node. */
#define SIM_EXPIRIES_AT_ONE_INSTANT_MAX 1000
/* The port every simulated node listens on; only the host part differs. */
#define SIM_PORT_SUFFIX ":7000"

static void drop_deferred(sim_world *w, sim_node *n, bool requeue);

static void *xrealloc(void *p, size_t n, size_t size) {
  void *q;

  if (size != 0 && n > SIZE_MAX / size) {
    q = NULL;
  } else {
    q = realloc(p, n * size);
  }
  if (q == NULL && n * size != 0) {
    fprintf(stderr, "dht-sim: out of memory\n");
    abort();
  }
  return q;
}

static uint8_t *copy_bytes(const uint8_t *p, size_t len) {
  uint8_t *q = xrealloc(NULL, len ? len : 1, 1);
  if (len > 0) {
    memcpy(q, p, len);
  }
  return q;
}

void sim_world_init(sim_world *w, uint64_t seed, const dht_settings *settings) {
  sim_rng master;

  memset(w, 0, sizeof(*w));
  sim_rng_seed(&master, seed);
  sim_rng_fork(&master, &w->rng);
  sim_net_init(&w->net, &master);
  sim_rng_fork(&master, &w->clock_rng);
  sim_rng_fork(&master, &w->disks.rng);
  sim_rng_fork(&master, &w->writer_rng);
  sim_queue_init(&w->queue);
  dht_buf_init(&w->scratch);
  w->settings = *settings;
  w->replicas = settings->replicas;
  w->log_level = DHT_LOG_WARN;
  w->net.limits = sim_world_dhtd_limits;
}

void sim_world_free(sim_world *w) {
  size_t i;

  for (i = 0; i < w->n_nodes; i++) {
    dht_node_del(w->nodes[i].node);
    sim_disk_del(w->nodes[i].disk);
    drop_deferred(w, &w->nodes[i], false);
    free(w->nodes[i].deferred);
  }
  free(w->nodes);
  sim_world_clear_ops(w);
  free(w->ops);
  dht_buf_free(&w->scratch);
  sim_queue_free(&w->queue);
  sim_net_free(&w->net);
  memset(w, 0, sizeof(*w));
}

void sim_world_fail(sim_world *w, const char *fmt, ...) {
  va_list ap;

  if (w->failed) {
    return;
  }
  w->failed = true;
  w->failed_at_ms = w->now_ms;
  va_start(ap, fmt);
  vsnprintf(w->failure, sizeof(w->failure), fmt, ap);
  va_end(ap);
}

/* ---- addresses and connection numbers ---------------------------------- */

uint32_t sim_world_slot_of(const sim_world *w, const char *addr, size_t len) {
  size_t suffix_len = strlen(SIM_PORT_SUFFIX);
  uint64_t slot = 0;
  size_t i;

  if (len < 2 + suffix_len || addr[0] != 'n' ||
      memcmp(addr + len - suffix_len, SIM_PORT_SUFFIX, suffix_len) != 0) {
    return SIM_NO_SLOT;
  }
  for (i = 1; i < len - suffix_len; i++) {
    if (addr[i] < '0' || addr[i] > '9' || slot > UINT32_MAX) {
      return SIM_NO_SLOT;
    }
    slot = slot * 10 + (uint64_t)(addr[i] - '0');
  }
  /* The exact spelling must match too: "n042:7000" is not "n00042:7000". */
  if (slot >= w->n_nodes || w->nodes[slot].addr_len != len ||
      memcmp(w->nodes[slot].addr, addr, len) != 0) {
    return SIM_NO_SLOT;
  }
  return (uint32_t)slot;
}

/* ---- scheduling ---------------------------------------------------------- */

static void push(sim_world *w, sim_event_kind kind, uint64_t at_ms,
                 uint32_t slot, uint32_t incarnation, uint32_t peer_slot,
                 uint64_t conn, const uint8_t *frame, size_t frame_len) {
  sim_event ev;

  memset(&ev, 0, sizeof(ev));
  ev.kind = kind;
  ev.at_ms = at_ms;
  ev.slot = slot;
  ev.incarnation = incarnation;
  ev.peer_slot = peer_slot;
  ev.conn = conn;
  ev.frame = frame != NULL ? copy_bytes(frame, frame_len) : NULL;
  ev.frame_len = frame != NULL ? frame_len : 0;
  sim_queue_push(&w->queue, &ev);
}

/* An event about connection c at end e's node. */
static void push_conn(sim_world *w, sim_event_kind kind, uint64_t at_ms,
                      const sim_conn *c, unsigned e, bool failed) {
  sim_event ev;

  memset(&ev, 0, sizeof(ev));
  ev.kind = kind;
  ev.at_ms = at_ms;
  ev.slot = c->slot[e];
  ev.incarnation = c->incarnation[e];
  ev.peer_slot = c->slot[1 - e];
  ev.conn = c->id;
  ev.end = (uint8_t)e;
  ev.failed = failed;
  ev.established = c->state == SIM_CONN_OPEN;
  sim_queue_push(&w->queue, &ev);
}

static void schedule_wake(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  uint64_t deadline = dht_node_next_deadline(n->node);

  if (deadline == DHT_TIME_NEVER) {
    return;
  }
  deadline = sim_clock_due(&n->clock, deadline);
  if (deadline < w->now_ms) {
    deadline = w->now_ms;
  }
  /* One wake-up queued at the earliest deadline is enough: when it fires
   * early (the deadline moved later) it re-arms for the new one. */
  if (deadline < n->timer_at_ms) {
    push(w, SIM_EV_WAKE, deadline, slot, n->incarnation, SIM_NO_SLOT, 0, NULL,
         0);
    n->timer_at_ms = deadline;
  }
}

/* ---- structural invariants ----------------------------------------------- */

/* Checks that (id, addr) names a simulated node: catches corrupted or
 * invented peers in the node's tables. */
static bool peer_is_real(const sim_world *w, const dht_id *id,
                         const char *addr) {
  uint32_t slot;

  if (addr == NULL) {
    return false;
  }
  slot = sim_world_slot_of(w, addr, strlen(addr));
  return slot != SIM_NO_SLOT && dht_id_eq(&w->nodes[slot].id, id);
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15u + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdu;
}

/* Mixes a peer (its id and address bytes) into h. */
static uint64_t mix_peer(uint64_t h, const dht_id *id, const char *addr) {
  const char *c;

  h = mix(h, dht_id_top64(id));
  for (c = addr; c != NULL && *c != '\0'; c++) {
    h = (h ^ (uint8_t)*c) * 0x100000001b3u; /* FNV-1a step */
  }
  return h;
}

/* After every call into a node: its successor list is clockwise from it,
 * free of duplicates and of itself (unless it is the only entry), no longer
 * than succ_list_len; its successors and predecessor are real nodes; its
 * pending requests stay within pending_max; it replaced no record on its
 * disk by an older version. */
static void check_structure(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  dht_id ids[DHT_SUCC_LIST_MAX];
  const char *addrs[DHT_SUCC_LIST_MAX];
  dht_id prev_dist, pred_id;
  const char *pred_addr = NULL;
  char a[DHT_ID_SHORT_LEN], why[256];
  size_t count, i;
  bool has_pred;
  uint64_t hash;

  if (!dht_node_check_invariants(n->node, why, sizeof(why))) {
    sim_world_fail(w, "%s: invariant broken: %s", n->addr, why);
    return;
  }
  if (w->disks.regression[0] != '\0') {
    sim_world_fail(w, "%s went back in time on its disk: %s", n->addr,
                   w->disks.regression);
    return;
  }
  if (dht_node_pending_count(n->node) > w->settings.pending_max) {
    sim_world_fail(w, "%s has %zu requests pending, above pending_max %" PRIu32,
                   n->addr, dht_node_pending_count(n->node),
                   w->settings.pending_max);
    return;
  }
  count = dht_node_succs(n->node, ids, addrs, DHT_SUCC_LIST_MAX);
  has_pred = dht_node_pred(n->node, &pred_id, &pred_addr);
  /* Most calls change no routing: skip the checks below when the ids and
   * addresses are the ones already checked. */
  hash = has_pred ? mix_peer(count, &pred_id, pred_addr) : mix(count, 0);
  for (i = 0; i < count && i < DHT_SUCC_LIST_MAX; i++) {
    hash = mix_peer(hash, &ids[i], addrs[i]);
  }
  if (hash == n->routing_hash) {
    return;
  }
  n->routing_hash = hash;

  if (count > w->settings.succ_list_len) {
    sim_world_fail(w, "%s has %zu successors, more than succ_list_len %" PRIu32,
                   n->addr, count, w->settings.succ_list_len);
    return;
  }
  for (i = 0; i < count; i++) {
    dht_id dist;
    if (!peer_is_real(w, &ids[i], addrs[i])) {
      sim_world_fail(w, "%s: successor %zu (%s, %s) is no simulated node",
                     n->addr, i, addrs[i] ? addrs[i] : "(null)",
                     dht_id_short(&ids[i], a));
      return;
    }
    if (dht_id_eq(&ids[i], &n->id)) {
      if (count != 1) {
        sim_world_fail(w, "%s lists itself as successor %zu of %zu", n->addr, i,
                       count);
        return;
      }
      continue;
    }
    /* Strictly growing clockwise distance: ordered and free of duplicates. */
    dht_id_distance(&dist, &n->id, &ids[i]);
    if (i > 0 && dht_id_cmp(&dist, &prev_dist) <= 0) {
      sim_world_fail(w,
                     "%s: successor %zu (%s) is not clockwise after "
                     "successor %zu (%s): duplicate or out of order",
                     n->addr, i, addrs[i], i - 1, addrs[i - 1]);
      return;
    }
    prev_dist = dist;
  }
  if (has_pred && !peer_is_real(w, &pred_id, pred_addr)) {
    sim_world_fail(w, "%s: predecessor (%s, %s) is no simulated node", n->addr,
                   pred_addr ? pred_addr : "(null)", dht_id_short(&pred_id, a));
  }
}

/* ---- carrying out actions ------------------------------------------------ */

/* Checks that a frame's header announces exactly the bytes that follow. */
static bool frame_is_whole(sim_world *w, uint32_t slot, const dht_action *a) {
  size_t body_len = 0;
  int rv = dht_frame_peek(a->frame, a->frame_len,
                          w->settings.limits.frame_len_max, &body_len);

  if (rv != 0 || body_len + DHT_FRAME_HEADER_LEN != a->frame_len) {
    sim_world_fail(w,
                   "%s emitted a %zu-byte frame whose header is bad or "
                   "announces %zu body bytes (%s)",
                   w->nodes[slot].addr, a->frame_len, body_len,
                   dht_strerror(rv));
    return false;
  }
  return true;
}

/* ---- connections: dhtd's net.c over the simulated network ------------------ */

/* dhtd's defaults (dhtd/main.c): 16 MiB of output per connection, reading
 * paused past a quarter of it, idle outgoing connections closed after 60 s;
 * and Linux's usual socket buffers, about 128 KiB each way. */
const sim_net_limits sim_world_dhtd_limits = {
    .window_bytes = 256 * 1024,
    .out_queue_pause = 4 * 1024 * 1024,
    .out_queue_max = 16 * 1024 * 1024,
    .idle_close_ms = 60000,
};

/* Queues, for at_ms, the arrival of the oldest item of c's stream e at the
 * other end. */
static void push_arrival(sim_world *w, sim_conn *c, unsigned e,
                         uint64_t at_ms) {
  sim_event ev;

  c->stream[e].armed = true;
  memset(&ev, 0, sizeof(ev));
  ev.kind = SIM_EV_STREAM;
  ev.at_ms = at_ms;
  ev.slot = c->slot[1 - e];
  ev.incarnation = c->incarnation[1 - e];
  ev.peer_slot = c->slot[e];
  ev.conn = c->id;
  ev.end = (uint8_t)e;
  sim_queue_push(&w->queue, &ev);
}

/* Queues the arrival of the oldest item of c's stream e at the other end,
 * unless one is queued already or the stream waits (empty, connecting,
 * receiver not reading). */
static void arm(sim_world *w, sim_conn *c, unsigned e) {
  sim_stream *s = &c->stream[e];
  sim_item *it = sim_net_stream_head(s);

  if (s->armed || (s->blocked && !s->ended) || it == NULL ||
      it->at_ms == SIM_NET_UNSENT) {
    return;
  }
  push_arrival(w, c, e, it->at_ms > w->now_ms ? it->at_ms : w->now_ms);
}

/* End e's process is done with c: its node hears of it (conn_closed, and
 * peer_unreachable when its outgoing connection failed) once it runs
 * again, as dhtd does from the close callback. */
static void end_closed(sim_world *w, sim_conn *c, unsigned e, bool failed) {
  push_conn(w, SIM_EV_CLOSED, w->now_ms, c, e, failed);
  sim_net_conn_release(&w->net, c, e);
}

/* End e's process closes c (uv_close: close(2)): the peer gets a FIN after
 * what the kernel holds. */
static void app_close(sim_world *w, sim_conn *c, unsigned e, bool failed) {
  if (c->state == SIM_CONN_OPEN && c->open[1 - e]) {
    sim_net_write_end(&w->net, c, e, SIM_ITEM_FIN, w->now_ms);
    arm(w, c, e);
  }
  end_closed(w, c, e, failed);
}

/* Bytes reached end r of c, where no process holds the connection any more
 * (it closed it, or the host runs another process since): the kernel
 * answers with a reset, unless the end already sent its FIN or RST. */
static void reset_from(sim_world *w, sim_conn *c, unsigned r) {
  sim_net_stream_clear(&c->stream[1 - r]);
  if (!c->stream[r].ended && c->open[1 - r]) {
    w->net.count.resets++;
    sim_net_write_end(&w->net, c, r, SIM_ITEM_RST, w->now_ms);
    arm(w, c, r);
  }
}

/* End e's node writes a frame on c, as dhtd's conn_queue(): past
 * out_queue_max the connection is dropped; past out_queue_pause the
 * accepting end (1) stops reading it. The opener never stops reading its
 * replies: if both ends did, neither queue could drain. */
static void node_write(sim_world *w, sim_conn *c, unsigned e,
                       const dht_action *a) {
  sim_net *net = &w->net;

  if (sim_net_queued(net, c, e) + a->frame_len > net->limits.out_queue_max) {
    net->count.overflows++;
    app_close(w, c, e, true);
    return;
  }
  sim_net_write(net, c, e, a->frame, a->frame_len, w->now_ms);
  /* While connecting, last_active_ms is when the first SYN went, and the
   * SYN's retransmissions are timed from it whatever is queued meanwhile
   * (dhtd's conn_queue() does not touch it before on_connect either). */
  if (e == 0 && c->state == SIM_CONN_OPEN) {
    c->last_active_ms = w->now_ms;
  }
  if (e == 1 && !c->reading_paused[e] &&
      sim_net_queued(net, c, e) > net->limits.out_queue_pause) {
    c->reading_paused[e] = true;
    net->count.read_pauses++;
  }
  arm(w, c, e);
}

static void carry_out_send(sim_world *w, uint32_t from, const dht_action *a) {
  uint32_t to = sim_world_slot_of(w, a->addr, strlen(a->addr));
  sim_conn *c;

  if (to == SIM_NO_SLOT) {
    sim_world_fail(w, "%s sent to \"%s\", which is no simulated node",
                   w->nodes[from].addr, a->addr);
    return;
  }
  c = sim_net_conn_find(&w->net, from, to);
  if (c == NULL) {
    c = sim_net_conn_open(&w->net, from, w->nodes[from].incarnation, to,
                          w->now_ms);
    /* The SYN's round trip; the frames wait in the output queue. */
    push_conn(w, SIM_EV_CONNECT, w->now_ms + 2 * (uint64_t)c->latency_ms, c,
              0, false);
  }
  node_write(w, c, 0, a);
}

/* As dhtd does: the node gave up on the peer, so its outgoing connection to
 * it is closed, and the next send opens a new one. */
static void carry_out_disconnect(sim_world *w, uint32_t from,
                                 const dht_action *a) {
  uint32_t to = sim_world_slot_of(w, a->addr, strlen(a->addr));
  sim_conn *c = to != SIM_NO_SLOT ? sim_net_conn_find(&w->net, from, to) : NULL;

  if (c != NULL) {
    app_close(w, c, 0, false);
  }
}

/* A client's connection keeps its order, as the client relies on ACCEPTED
 * coming before the result. */
static void carry_out_client_reply(sim_world *w, uint32_t from,
                                   const dht_action *a) {
  size_t index = (size_t)(a->conn & ~SIM_CLIENT_CONN);
  uint64_t at = w->now_ms + sim_net_client_latency_ms(&w->net);

  if (index >= w->ops_base && index < w->ops_base + w->n_ops) {
    sim_op *op = sim_world_op(w, index);
    if (at < op->last_arrival_ms) {
      at = op->last_arrival_ms;
    }
    op->last_arrival_ms = at;
  }
  push(w, SIM_EV_CLIENT_REPLY, at, SIM_NO_SLOT, 0, from, a->conn, a->frame,
       a->frame_len);
}

static void carry_out_reply(sim_world *w, uint32_t from, const dht_action *a) {
  const sim_node *n = &w->nodes[from];
  sim_conn *c;
  unsigned e;

  if (a->conn & SIM_CLIENT_CONN) {
    carry_out_client_reply(w, from, a);
    return;
  }
  c = sim_net_conn(&w->net, a->conn);
  for (e = 2; c != NULL && e-- > 0;) {
    if (c->slot[e] == from && c->open[e] && c->incarnation[e] == n->incarnation) {
      node_write(w, c, e, a);
      return;
    }
  }
  /* dhtd drops a reply to a connection it has closed; a number it never
   * handed out is a bug. */
  if ((uint32_t)(a->conn & UINT32_MAX) > w->net.n_conns ||
      (a->conn >> 32) > w->net.generation || (a->conn & UINT32_MAX) == 0) {
    sim_world_fail(w,
                   "%s replied on connection %" PRIu64
                   ", which the simulator never opened",
                   n->addr, a->conn);
  }
}

/* A stream that cannot reach its receiver (a cut, a dead host) is
 * retransmitted with backoff; the sender gives up after
 * SIM_NET_DATA_RETRIES. */
static void hold(sim_world *w, sim_conn *c, unsigned d, bool cut) {
  sim_stream *s = &c->stream[d];

  if (++s->retries > SIM_NET_DATA_RETRIES) {
    w->net.count.data_timeouts++;
    sim_net_stream_clear(s);
    end_closed(w, c, d, true);
    return;
  }
  push_arrival(w, c, d, sim_net_retransmit_at(&w->net, s, cut, w->now_ms));
}

static void deliver_frame(sim_world *w, uint32_t slot, uint64_t conn,
                          uint32_t from, const uint8_t *frame, size_t len);
static void defer(sim_world *w, sim_event *ev);

/* Reads what has arrived of stream d of connection ev->conn at the other
 * end r: frames go to r's node one by one, up to one read buffer; a FIN or
 * RST closes r's end. */
static void on_stream(sim_world *w, sim_event *ev) {
  sim_net *net = &w->net;
  sim_conn *c = sim_net_conn(net, ev->conn);
  unsigned d = ev->end, r = 1 - d;
  uint64_t id = ev->conn;
  size_t read = 0;

  if (c == NULL) {
    return;
  }
  c->stream[d].armed = false;
  for (;;) {
    sim_stream *s = &c->stream[d];
    sim_item *it = sim_net_stream_head(s);
    sim_node *rn = &w->nodes[c->slot[r]];
    sim_item_kind kind;
    uint8_t *frame;
    uint32_t len;

    if (it == NULL) {
      return;
    }
    if (it->at_ms > w->now_ms || read >= SIM_NET_READ_BYTES) {
      arm(w, c, d);
      return;
    }
    if (sim_net_path_cut(net, c->slot[d], c->slot[r]) ||
        (rn->node == NULL && !rn->refuses)) {
      hold(w, c, d, rn->node != NULL || rn->refuses);
      return;
    }
    s->retries = 0;
    if (!c->open[r] || rn->node == NULL ||
        rn->incarnation != c->incarnation[r]) {
      reset_from(w, c, r);
      return;
    }
    if (rn->paused) {
      s->armed = true;
      defer(w, ev);
      return;
    }
    if (c->reading_paused[r] && !s->ended) {
      s->blocked = true;
      return;
    }
    if (c->reading_paused[r]) {
      /* The peer closed while r had output queued and read nothing: r's
       * next write fails (the peer's kernel resets it), and the unread
       * bytes die with the connection. */
      sim_net_stream_clear(s);
      end_closed(w, c, r, true);
      return;
    }
    kind = it->kind;
    frame = it->frame;
    len = it->len;
    sim_net_stream_pop(s);
    /* d's output drained below half the pause mark: it reads again. */
    if (c->reading_paused[d] &&
        sim_net_queued(net, c, d) < net->limits.out_queue_pause / 2) {
      c->reading_paused[d] = false;
      if (c->stream[r].blocked) {
        c->stream[r].blocked = false;
        arm(w, c, r);
      }
    }
    if (kind != SIM_ITEM_FRAME) {
      /* dhtd: an outgoing connection closed by its peer failed. */
      end_closed(w, c, r, r == 0 || kind == SIM_ITEM_RST);
      return;
    }
    if (r == 0) {
      c->last_active_ms = w->now_ms;
    }
    read += len;
    deliver_frame(w, c->slot[r], id, c->slot[d], frame, len);
    free(frame);
    /* The node may have opened connections (moving this one) or closed
     * this one. */
    c = sim_net_conn(net, id);
    if (c == NULL || w->failed) {
      return;
    }
  }
}

/* The SYN of connection ev->conn has had its round trip: established
 * (a paused process's kernel still accepts), refused (the host has no
 * process on the port), or unanswered (a dead host, a cut either way:
 * retransmitted, given up after 127 s). */
static void on_connect(sim_world *w, const sim_event *ev) {
  sim_conn *c = sim_net_conn(&w->net, ev->conn);
  const sim_node *t;
  uint64_t next;

  if (c == NULL || c->state != SIM_CONN_CONNECTING || !c->open[0]) {
    return;
  }
  if (c->syn_tries > SIM_NET_SYN_RETRIES) {
    /* The wait after the last retransmission is over. */
    w->net.count.connect_timeouts++;
    end_closed(w, c, 0, true);
    return;
  }
  t = &w->nodes[c->slot[1]];
  if (sim_net_path_cut(&w->net, c->slot[0], c->slot[1]) ||
      sim_net_path_cut(&w->net, c->slot[1], c->slot[0]) ||
      (t->node == NULL && !t->refuses)) {
    /* Retransmission k goes 2^k - 1 SYN RTOs after the first SYN (whose
     * time last_active_ms holds while connecting); the one after the
     * last retransmission is the give-up. */
    c->syn_tries++;
    next = c->last_active_ms +
           (((uint64_t)1 << c->syn_tries) - 1) * SIM_NET_SYN_RTO_MS;
    push_conn(w, SIM_EV_CONNECT, next > w->now_ms ? next : w->now_ms, c, 0,
              false);
    return;
  }
  if (t->node == NULL) {
    w->net.count.refused++;
    end_closed(w, c, 0, true);
    return;
  }
  sim_net_conn_accept(&w->net, c, t->incarnation, w->now_ms);
  arm(w, c, 0);
}

/* dhtd's on_sweep: closes outgoing connections with nothing queued and no
 * byte read or written for idle_close_ms. */
static void on_sweep(sim_world *w, uint32_t slot) {
  uint32_t every = w->net.limits.idle_close_ms / 2 + 1;
  sim_conn *c = sim_net_conn_first(&w->net, slot, 0), *next;

  for (; c != NULL; c = next) {
    next = sim_net_conn_next(&w->net, c, 0);
    if (c->state == SIM_CONN_OPEN && sim_net_queued(&w->net, c, 0) == 0 &&
        w->now_ms - c->last_active_ms >= w->net.limits.idle_close_ms) {
      w->net.count.idle_closes++;
      app_close(w, c, 0, false);
    }
  }
  push(w, SIM_EV_SWEEP, w->now_ms + every, slot, w->nodes[slot].incarnation,
       SIM_NO_SLOT, 0, NULL, 0);
}

/* A process dies: with the host up (refuses), its kernel resets every
 * connection at once; with the host, they go silent, and the peer's bytes
 * are retransmitted until the host is back and resets them. */
static void drop_connections(sim_world *w, uint32_t slot, bool refuses) {
  unsigned e;

  for (e = 0; e < 2; e++) {
    sim_conn *c = sim_net_conn_first(&w->net, slot, e), *next;
    for (; c != NULL; c = next) {
      next = sim_net_conn_next(&w->net, c, e);
      if (c->state == SIM_CONN_OPEN && refuses && c->open[1 - e]) {
        w->net.count.resets++;
        sim_net_write_end(&w->net, c, e, SIM_ITEM_RST, w->now_ms);
        arm(w, c, e);
      } else {
        sim_net_stream_clear(&c->stream[e]);
      }
      sim_net_conn_release(&w->net, c, e);
    }
  }
}

/* A graceful leave ran out of time: dhtd exits anyway. */
static void leave_timeout(sim_world *w, uint32_t slot) {
  if (w->nodes[slot].leaving) {
    w->leave_timeouts++;
    sim_world_crash(w, slot, true);
  }
}

static void carry_out_event(sim_world *w, uint32_t slot, const dht_action *a) {
  sim_node *n = &w->nodes[slot];

  switch (a->event) {
  case DHT_EVENT_JOINED:
    w->joins++;
    break;
  case DHT_EVENT_JOIN_FAILED:
    /* Like a supervisor restarting a daemon whose join failed. */
    w->join_failures++;
    push(w, SIM_EV_REJOIN, w->now_ms + SIM_REJOIN_DELAY_MS, slot,
         n->incarnation, SIM_NO_SLOT, 0, NULL, 0);
    break;
  case DHT_EVENT_LEFT:
    if (!n->leaving) {
      sim_world_fail(w, "%s reported LEFT, but nothing asked it to leave",
                     n->addr);
    }
    n->left = true;
    break;
  }
}

void sim_world_drain(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  dht_action a;

  /* The commit point, where dhtd's on_flush commits: after the call into
   * the node, before any of its output leaves. The node then hears how the
   * commit went, and only then releases the replies that acknowledge the
   * group's writes (as refusals if it failed). */
  dht_node_commit_done(n->node, sim_disk_commit(n->disk),
                       sim_world_node_now(w, slot));
  while (dht_node_poll_action(n->node, &a)) {
    switch (a.type) {
    case DHT_ACTION_SEND:
      if (frame_is_whole(w, slot, &a)) {
        carry_out_send(w, slot, &a);
      }
      break;
    case DHT_ACTION_REPLY:
      if (frame_is_whole(w, slot, &a)) {
        carry_out_reply(w, slot, &a);
      }
      break;
    case DHT_ACTION_CLOSE:
      sim_world_fail(w,
                     "%s asked to close connection %" PRIu64
                     ": it thinks a peer misbehaves, but every peer here "
                     "runs the same code",
                     w->nodes[slot].addr, a.conn);
      break;
    case DHT_ACTION_DISCONNECT:
      carry_out_disconnect(w, slot, &a);
      break;
    case DHT_ACTION_EVENT:
      carry_out_event(w, slot, &a);
      break;
    }
  }
  check_structure(w, slot);
  if (n->left) {
    /* Like dhtd on LEFT: the process exits. */
    w->leaves++;
    sim_world_crash(w, slot, true);
    return;
  }
  schedule_wake(w, slot);
}

/* The first idle sweep of slot's new process, as dhtd starts its timer. */
static void schedule_sweep(sim_world *w, uint32_t slot) {
  if (w->net.limits.idle_close_ms > 0) {
    push(w, SIM_EV_SWEEP,
         w->now_ms + w->net.limits.idle_close_ms / 2 + 1, slot,
         w->nodes[slot].incarnation, SIM_NO_SLOT, 0, NULL, 0);
  }
}

/* ---- paused processes ----------------------------------------------------- */

/* Keeps an event for a paused process until it resumes (taking its
 * frame). */
static void defer(sim_world *w, sim_event *ev) {
  sim_node *n = &w->nodes[ev->slot];

  if (n->n_deferred == n->cap_deferred) {
    n->cap_deferred = n->cap_deferred ? 2 * n->cap_deferred : 16;
    n->deferred = xrealloc(n->deferred, n->cap_deferred, sizeof(*n->deferred));
  }
  n->deferred[n->n_deferred++] = *ev;
  ev->frame = NULL;
}

/* The paused process is gone: what waited for it dies with it, except the
 * arrivals of streams, which now meet a dead process (requeue, true) or,
 * when the world ends, nothing (false). */
static void drop_deferred(sim_world *w, sim_node *n, bool requeue) {
  size_t i;

  for (i = 0; i < n->n_deferred; i++) {
    sim_event *ev = &n->deferred[i];
    if (requeue && ev->kind == SIM_EV_STREAM) {
      ev->at_ms = w->now_ms;
      sim_queue_push(&w->queue, ev);
    } else {
      free(ev->frame);
    }
  }
  n->n_deferred = 0;
  n->paused = false;
}

void sim_world_pause(sim_world *w, uint32_t slot, uint64_t ms) {
  sim_node *n = &w->nodes[slot];
  uint64_t until = w->now_ms + ms;

  if (n->node == NULL) {
    return;
  }
  if (!n->paused || until > n->paused_until_ms) {
    n->paused_until_ms = until;
    push(w, SIM_EV_RESUME, until, slot, n->incarnation, SIM_NO_SLOT, 0, NULL,
         0);
  }
  n->paused = true;
}

void sim_world_resume(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  size_t i;

  if (!n->paused) {
    return;
  }
  n->paused = false;
  /* Everything that waited happens now, in its order; the timers, long
   * due, come after the bytes already read (dhtd was stopped in its
   * poll). */
  for (i = 0; i < n->n_deferred; i++) {
    sim_event *ev = &n->deferred[i];
    if (ev->kind == SIM_EV_WAKE) {
      continue;
    }
    ev->at_ms = w->now_ms;
    sim_queue_push(&w->queue, ev);
  }
  n->n_deferred = 0;
  n->timer_at_ms = DHT_TIME_NEVER;
  schedule_wake(w, slot);
}

bool sim_world_is_paused(const sim_world *w, uint32_t slot) {
  return slot < w->n_nodes && w->nodes[slot].paused;
}

/* ---- node lifecycle ------------------------------------------------------ */

static void log_line(void *ud, dht_log_level level, const char *line) {
  (void)ud;
  (void)level;
  fprintf(stderr, "%s\n", line);
}

uint32_t sim_world_add_node(sim_world *w) {
  sim_node *n;
  uint32_t slot = (uint32_t)w->n_nodes;

  if (w->n_nodes == w->cap_nodes) {
    w->cap_nodes = w->cap_nodes ? 2 * w->cap_nodes : 64;
    w->nodes = xrealloc(w->nodes, w->cap_nodes, sizeof(*w->nodes));
  }
  n = &w->nodes[w->n_nodes++];
  memset(n, 0, sizeof(*n));
  snprintf(n->addr, sizeof(n->addr), "n%05" PRIu32 SIM_PORT_SUFFIX, slot);
  n->addr_len = strlen(n->addr);
  dht_id_hash(&n->id, n->addr, n->addr_len);
  n->disk = sim_disk_new(&w->disks);
  n->store = sim_disk_contents(n->disk);
  sim_clock_draw(&n->clock, &w->clocks, &w->clock_rng, w->now_ms);
  n->timer_at_ms = DHT_TIME_NEVER;
  return slot;
}

void sim_world_start(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  dht_node_config cfg;
  int rv;

  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = n->addr;
  cfg.id = NULL;
  cfg.store = sim_disk_store(n->disk);
  cfg.settings = w->settings;
  cfg.group_commit = true; /* as dhtd runs it */
  cfg.seed = sim_rng_next(&w->rng);
  if (n->incarnation == 0) {
    sim_clock_start(&n->clock, w->now_ms);
  } else {
    w->clock_steps += sim_clock_restart(&n->clock, &w->clocks, &w->clock_rng,
                                        w->now_ms);
  }
  /* Like dhtd, which gives the host's wall clock: versions are stamped
   * with it, so every process must see time go on across restarts. */
  cfg.wall_ms = sim_clock_wall(&n->clock, w->now_ms);
  cfg.log = w->log_on ? log_line : NULL;
  cfg.log_ud = w;
  cfg.log_level = w->log_level;
  cfg.fault = sim_buggify_ask;
  cfg.fault_ud = &w->buggify;
  rv = dht_node_new(&n->node, &cfg, w->now_ms);
  if (rv != 0) {
    n->node = NULL;
    sim_world_fail(w, "dht_node_new(%s) failed: %s", n->addr, dht_strerror(rv));
    return;
  }
  n->incarnation++;
  n->timer_at_ms = DHT_TIME_NEVER;
  n->expiries_at_now = 0;
  schedule_sweep(w, slot);
  if (!dht_id_eq(dht_node_id(n->node), &n->id)) {
    sim_world_fail(w, "%s: the node's id is not the hash of its address",
                   n->addr);
    return;
  }
  sim_world_drain(w, slot);
}

void sim_world_create_ring(sim_world *w, uint32_t slot) {
  int rv;

  if (w->nodes[slot].node == NULL) {
    sim_world_start(w, slot);
  }
  if (w->failed) {
    return;
  }
  rv = dht_node_create_ring(w->nodes[slot].node, sim_world_node_now(w, slot));
  if (rv != 0) {
    sim_world_fail(w, "dht_node_create_ring(%s): %s", w->nodes[slot].addr,
                   dht_strerror(rv));
    return;
  }
  sim_world_drain(w, slot);
}

void sim_world_join(sim_world *w, uint32_t slot, uint32_t bootstrap) {
  sim_world_join_list(w, slot, &bootstrap, 1);
}

void sim_world_join_list(sim_world *w, uint32_t slot, const uint32_t *through,
                         size_t n) {
  const char *addrs[DHT_JOIN_LIST_MAX];
  size_t i;
  int rv;

  if (w->nodes[slot].node == NULL) {
    sim_world_start(w, slot);
  }
  if (w->failed) {
    return;
  }
  for (i = 0; i < n && i < DHT_JOIN_LIST_MAX; i++) {
    addrs[i] = w->nodes[through[i]].addr;
  }
  w->nodes[slot].joins_started++;
  rv = dht_node_join_list(w->nodes[slot].node, addrs, i,
                          sim_world_node_now(w, slot));
  if (rv != 0) {
    sim_world_fail(w, "dht_node_join_list(%s via %s and %zu more): %s",
                   w->nodes[slot].addr, addrs[0], i - 1, dht_strerror(rv));
    return;
  }
  sim_world_drain(w, slot);
}

void sim_world_crash(sim_world *w, uint32_t slot, bool refuses) {
  sim_node *n = &w->nodes[slot];

  dht_node_del(n->node);
  n->node = NULL;
  n->refuses = refuses;
  n->timer_at_ms = DHT_TIME_NEVER;
  drop_connections(w, slot, refuses);
  drop_deferred(w, n, true);
  n->leaving = false;
  n->left = false;
  sim_disk_crash(n->disk);
}

void sim_world_leave(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];
  int rv;

  rv = dht_node_leave(n->node, sim_world_node_now(w, slot));
  if (rv != 0) {
    sim_world_fail(w, "dht_node_leave(%s): %s", n->addr, dht_strerror(rv));
    return;
  }
  n->leaving = true;
  push(w, SIM_EV_LEAVE_TIMEOUT, w->now_ms + SIM_LEAVE_TIMEOUT_MS, slot,
       n->incarnation, SIM_NO_SLOT, 0, NULL, 0);
  sim_world_drain(w, slot);
}

void sim_world_wipe(sim_world *w, uint32_t slot) {
  sim_node *n = &w->nodes[slot];

  sim_disk_wipe(n->disk);
  n->store = sim_disk_contents(n->disk);
}

void sim_world_fill_disk(sim_world *w, uint32_t slot, uint64_t at_ms,
                         uint64_t full_ms) {
  push(w, SIM_EV_DISK_FULL, at_ms, slot, w->disk_epoch, SIM_NO_SLOT, 0, NULL,
       0);
  push(w, SIM_EV_DISK_FREED, at_ms + full_ms, slot, w->disk_epoch,
       SIM_NO_SLOT, 0, NULL, 0);
}

void sim_world_free_disks(sim_world *w) {
  size_t i;

  w->disk_epoch++;
  for (i = 0; i < w->n_nodes; i++) {
    sim_disk_set_full(w->nodes[i].disk, false);
  }
}

/* A disk-full event, unless the fills were called off since it was
 * planned. */
static void disk_space(sim_world *w, const sim_event *ev) {
  if (ev->incarnation != w->disk_epoch) {
    return;
  }
  if (ev->kind == SIM_EV_DISK_FULL) {
    w->disk_fills++;
  }
  sim_disk_set_full(w->nodes[ev->slot].disk, ev->kind == SIM_EV_DISK_FULL);
}

uint64_t sim_world_node_now(const sim_world *w, uint32_t slot) {
  return sim_clock_mono(&w->nodes[slot].clock, w->now_ms);
}

void sim_world_set_maintenance(sim_world *w, bool enabled) {
  size_t i;

  for (i = 0; i < w->n_nodes && !w->failed; i++) {
    if (w->nodes[i].node != NULL) {
      dht_node_set_maintenance(w->nodes[i].node, enabled,
                               sim_world_node_now(w, (uint32_t)i));
      sim_world_drain(w, (uint32_t)i);
    }
  }
}

bool sim_world_is_up(const sim_world *w, uint32_t slot) {
  return slot < w->n_nodes && w->nodes[slot].node != NULL;
}

bool sim_world_is_joined(const sim_world *w, uint32_t slot) {
  return sim_world_is_up(w, slot) &&
         dht_node_get_state(w->nodes[slot].node) == DHT_NODE_JOINED;
}

size_t sim_world_count_up(const sim_world *w) {
  size_t i, up = 0;

  for (i = 0; i < w->n_nodes; i++) {
    up += w->nodes[i].node != NULL;
  }
  return up;
}

uint32_t sim_world_random_joined(sim_world *w, uint32_t except) {
  size_t i, eligible = 0, pick;
  int probe;

  if (w->n_nodes == 0) {
    return SIM_NO_SLOT;
  }
  /* Probing is O(1) when most nodes are joined; the count below is the
   * fallback for sparse rings. Both are uniform over the eligible nodes. */
  for (probe = 0; probe < 32; probe++) {
    uint32_t slot = (uint32_t)sim_rng_below(&w->rng, w->n_nodes);
    if (slot != except && sim_world_is_joined(w, slot)) {
      return slot;
    }
  }
  for (i = 0; i < w->n_nodes; i++) {
    eligible += i != except && sim_world_is_joined(w, (uint32_t)i);
  }
  if (eligible == 0) {
    return SIM_NO_SLOT;
  }
  pick = sim_rng_below(&w->rng, eligible);
  for (i = 0; i < w->n_nodes; i++) {
    if (i != except && sim_world_is_joined(w, (uint32_t)i) && pick-- == 0) {
      return (uint32_t)i;
    }
  }
  return SIM_NO_SLOT;
}

/* ---- the simulated client ----------------------------------------------- */

sim_op *sim_world_op(sim_world *w, size_t op_index) {
  return &w->ops[op_index - w->ops_base];
}

void sim_world_clear_ops(sim_world *w) {
  size_t i;

  for (i = 0; i < w->n_ops; i++) {
    free(w->ops[i].expect_value);
    free(w->ops[i].value);
    free(w->ops[i].write_key);
    free(w->ops[i].write_value);
  }
  w->ops_base += w->n_ops;
  w->n_ops = 0;
  w->ops_outstanding = 0;
}

/* Sends msg as request index to slot, over the client's connection. */
static void op_deliver(sim_world *w, size_t index, uint32_t slot,
                       dht_msg *msg) {
  int rv;

  msg->version = DHT_PROTOCOL_VERSION;
  msg->rid = (uint64_t)index + 1;
  w->scratch.len = 0;
  rv = dht_msg_encode(msg, &w->scratch);
  if (rv != 0) {
    sim_world_fail(w, "dht_msg_encode(%s) failed: %s",
                   dht_msg_type_name(msg->type), dht_strerror(rv));
    return;
  }
  push(w, SIM_EV_DELIVER, w->now_ms + sim_net_client_latency_ms(&w->net), slot,
       w->nodes[slot].incarnation, SIM_NO_SLOT, SIM_CLIENT_CONN | index,
       w->scratch.data, w->scratch.len);
}

/* A new request of kind to slot, outstanding from now. Returns its index
 * (pointers to ops do not survive the next one). */
static size_t op_new(sim_world *w, sim_op_kind kind, uint32_t slot) {
  size_t index = w->ops_base + w->n_ops;
  sim_op *op;

  if (w->n_ops == w->cap_ops) {
    w->cap_ops = w->cap_ops ? 2 * w->cap_ops : 256;
    w->ops = xrealloc(w->ops, w->cap_ops, sizeof(*w->ops));
  }
  op = &w->ops[w->n_ops++];
  memset(op, 0, sizeof(*op));
  op->kind = kind;
  op->via_slot = slot;
  op->sent_ms = w->now_ms;
  op->peer_slot = SIM_NO_SLOT;
  w->ops_outstanding++;
  return index;
}

static size_t op_send(sim_world *w, sim_op_kind kind, uint32_t slot,
                      dht_msg *msg) {
  size_t index = op_new(w, kind, slot);

  op_deliver(w, index, slot, msg);
  return index;
}

size_t sim_world_lookup(sim_world *w, uint32_t slot, const dht_id *target) {
  dht_msg msg;
  size_t index;

  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_FIND_SUCC;
  msg.target = *target;
  index = op_send(w, SIM_OP_LOOKUP, slot, &msg);
  sim_world_op(w, index)->target = *target;
  return index;
}

size_t sim_world_get(sim_world *w, uint32_t slot, const char *key,
                     const char *expect_value) {
  dht_msg msg;
  size_t index;
  sim_op *op;

  memset(&msg, 0, sizeof(msg));
  msg.type = DHT_MSG_GET;
  msg.key.p = (const uint8_t *)key;
  msg.key.len = strlen(key);
  index = op_send(w, SIM_OP_GET, slot, &msg);
  op = sim_world_op(w, index);
  dht_id_hash(&op->target, key, strlen(key));
  op->expect_len = strlen(expect_value);
  op->expect_value = copy_bytes((const uint8_t *)expect_value, op->expect_len);
  return index;
}

/* A version from writer, as the client library stamps one: its wall clock
 * in the hybrid format, newer than every stamp it issued or was shown. */
static dht_version writer_stamp(sim_world *w, uint32_t writer) {
  sim_writer *wr = &w->writers[writer];
  uint64_t pt;
  dht_version v;

  if (!wr->started) {
    sim_clock_draw(&wr->clock, &w->writer_clocks, &w->writer_rng, w->now_ms);
    sim_rng_id(&w->writer_rng, &wr->id);
    wr->started = true;
  }
  pt = sim_clock_wall(&wr->clock, w->now_ms) << 16;
  wr->hlc = pt > wr->hlc ? pt : wr->hlc + 1;
  v.hlc = wr->hlc;
  v.writer = wr->id;
  return v;
}

/* Sends op's write (again) with the version it carries now. */
static void write_deliver(sim_world *w, size_t index) {
  sim_op *op = sim_world_op(w, index);
  dht_msg msg;

  memset(&msg, 0, sizeof(msg));
  msg.type = op->kind == SIM_OP_PUT ? DHT_MSG_PUT : DHT_MSG_DEL;
  msg.key.p = op->write_key;
  msg.key.len = op->write_key_len;
  if (op->kind == SIM_OP_PUT) {
    msg.value.p = op->write_value;
    msg.value.len = op->write_value_len;
  }
  msg.has_ver = true;
  msg.ver = op->ver;
  op_deliver(w, index, op->via_slot, &msg);
}

/* A PUT of key = value, or a DEL of key when value is NULL, stamped by a
 * writer drawn at random. */
static size_t write_send(sim_world *w, uint32_t slot, const char *key,
                         const char *value) {
  size_t index = op_new(w, value != NULL ? SIM_OP_PUT : SIM_OP_DEL, slot);
  sim_op *op = sim_world_op(w, index);

  dht_id_hash(&op->target, key, strlen(key));
  op->write_key_len = strlen(key);
  op->write_key = copy_bytes((const uint8_t *)key, op->write_key_len);
  if (value != NULL) {
    op->write_value_len = strlen(value);
    op->write_value = copy_bytes((const uint8_t *)value, op->write_value_len);
  }
  op->writer = (uint32_t)sim_rng_below(&w->writer_rng, SIM_WRITERS);
  op->ver = writer_stamp(w, op->writer);
  op->wipes_at_send = w->disks.wipes;
  write_deliver(w, index);
  return index;
}

size_t sim_world_put(sim_world *w, uint32_t slot, const char *key,
                     const char *value) {
  return write_send(w, slot, key, value);
}

size_t sim_world_del(sim_world *w, uint32_t slot, const char *key) {
  return write_send(w, slot, key, NULL);
}

static bool reply_fits(sim_op_kind kind, dht_msg_type type) {
  if (type == DHT_MSG_ERROR) {
    return true;
  }
  switch (kind) {
  case SIM_OP_LOOKUP:
    return type == DHT_MSG_FIND_SUCC_R;
  case SIM_OP_GET:
    return type == DHT_MSG_VALUE;
  case SIM_OP_PUT:
  case SIM_OP_DEL:
    return type == DHT_MSG_OK;
  }
  return false;
}

/* Whether a disk, of a running node or a stopped one, holds the write's key
 * at its version or a newer one. */
static bool disk_holds(const sim_world *w, const sim_op *op) {
  size_t i;

  for (i = 0; i < w->n_nodes; i++) {
    const uint8_t *rec;
    size_t rec_len;
    dht_kv kv;
    if (dht_store_get(w->nodes[i].store, &op->target, op->write_key,
                      op->write_key_len, &rec, &rec_len) != 0) {
      continue;
    }
    memset(&kv, 0, sizeof(kv));
    dht_record_parse(rec, rec_len, &kv);
    if (dht_version_cmp(&kv.version, &op->ver) >= 0) {
      return true;
    }
  }
  return false;
}

/*
 * An acknowledgement in time (OK, or NOT_FOUND to a DEL) means the write is
 * durable (DESIGN.md, "Replication"): when it reaches the client, some
 * disk, of a running node or a stopped one, holds it or a newer write of
 * the key. (It was on two when the owner answered, but a holder outside
 * the key's range may hand its copy to one that has it already before the
 * answer arrives.) A disk wiped since the write was sent may rightly have
 * taken the copy with it.
 */
static void check_acked_write(sim_world *w, size_t index, const sim_op *op) {
  bool acked =
      op->reply_type == DHT_MSG_OK ||
      (op->kind == SIM_OP_DEL && op->reply_type == DHT_MSG_ERROR &&
       op->error_code == DHT_ERR_NOT_FOUND);

  if (acked && op->replied_ms - op->sent_ms <= SIM_CLIENT_TIMEOUT_MS &&
      op->wipes_at_send == w->disks.wipes && !disk_holds(w, op)) {
    sim_world_fail(w,
                   "client request %zu via %s: %s of key %.*s (stamp %" PRIu64
                   ") acknowledged, but no disk holds it or anything newer",
                   index, w->nodes[op->via_slot].addr,
                   op->kind == SIM_OP_PUT ? "PUT" : "DEL",
                   (int)op->write_key_len, (const char *)op->write_key,
                   op->ver.hlc);
  }
}

static void record_client_reply(sim_world *w, const sim_event *ev) {
  size_t index = (size_t)(ev->conn & ~SIM_CLIENT_CONN);
  const uint8_t *body = ev->frame + DHT_FRAME_HEADER_LEN;
  size_t body_len = ev->frame_len - DHT_FRAME_HEADER_LEN;
  sim_op *op;
  dht_msg msg;
  int rv;

  if (index < w->ops_base) {
    return; /* an op cleared since: nobody waits for it any more */
  }
  op = sim_world_op(w, index);
  memset(&msg, 0, sizeof(msg));
  rv = dht_msg_decode(&msg, body, body_len, &w->settings.limits);
  if (rv != 0 || msg.rid != (uint64_t)index + 1 ||
      (msg.type != DHT_MSG_ACCEPTED && !reply_fits(op->kind, msg.type))) {
    sim_world_fail(w,
                   "client request %zu via %s: bad reply from %s (decode: "
                   "%s, rid %" PRIu64 ", type %s)",
                   index, w->nodes[op->via_slot].addr,
                   w->nodes[ev->peer_slot].addr, dht_strerror(rv), msg.rid,
                   dht_msg_type_name((int)msg.type));
    dht_msg_free(&msg);
    return;
  }
  if (msg.type == DHT_MSG_ACCEPTED) {
    /* Interim: the node forwarded the request, or (again) a node further
     * along is routing around a failure; the result follows. */
    op->accepts++;
    if (op->replies > 0) {
      sim_world_fail(w, "client request %zu via %s: ACCEPTED after the result",
                     index, w->nodes[op->via_slot].addr);
    }
    dht_msg_free(&msg);
    return;
  }
  if (msg.type == DHT_MSG_ERROR && msg.error_code == DHT_ERR_STALE &&
      msg.has_ver && (op->kind == SIM_OP_PUT || op->kind == SIM_OP_DEL) &&
      op->replies == 0 && op->restamps < SIM_RESTAMPS_MAX) {
    /* A newer write of the key is stored, and this one was issued after
     * it was: the writer stamps it above that version and sends it again,
     * as the client library does. */
    sim_writer *wr = &w->writers[op->writer];
    if (msg.ver.hlc > wr->hlc) {
      wr->hlc = msg.ver.hlc;
    }
    op->ver = writer_stamp(w, op->writer);
    op->restamps++;
    w->restamps++;
    dht_msg_free(&msg);
    write_deliver(w, index);
    return;
  }
  if (++op->replies > 1) {
    sim_world_fail(w,
                   "client request %zu (sent via %s) got %" PRIu32 " results",
                   index, w->nodes[op->via_slot].addr, op->replies);
    dht_msg_free(&msg);
    return;
  }
  w->ops_outstanding--;
  op->replied_ms = w->now_ms;
  op->reply_type = msg.type;
  op->hops = msg.hops;
  switch (msg.type) {
  case DHT_MSG_ERROR:
    op->error_code = msg.error_code;
    break;
  case DHT_MSG_FIND_SUCC_R:
    if (msg.has_peer) {
      uint32_t slot = sim_world_slot_of(w, (const char *)msg.peer.addr.p,
                                        msg.peer.addr.len);
      op->peer_id = msg.peer.id;
      if (slot != SIM_NO_SLOT && dht_id_eq(&w->nodes[slot].id, &msg.peer.id)) {
        op->peer_slot = slot;
      }
    }
    break;
  case DHT_MSG_VALUE:
    op->value_ok = msg.value.len == op->expect_len &&
                   (op->expect_len == 0 ||
                    memcmp(msg.value.p, op->expect_value, op->expect_len) == 0);
    op->value = copy_bytes(msg.value.p, msg.value.len);
    op->value_len = msg.value.len;
    break;
  default:
    break;
  }
  if (op->kind == SIM_OP_PUT || op->kind == SIM_OP_DEL) {
    check_acked_write(w, index, op);
  }
  dht_msg_free(&msg);
}

/* ---- the event loop ------------------------------------------------------ */

static void deliver_frame(sim_world *w, uint32_t slot, uint64_t conn,
                          uint32_t from, const uint8_t *frame, size_t len) {
  sim_node *n = &w->nodes[slot];
  int rv;

  rv = dht_node_recv(n->node, conn, frame + DHT_FRAME_HEADER_LEN,
                     len - DHT_FRAME_HEADER_LEN, sim_world_node_now(w, slot));
  if (rv != 0) {
    sim_world_fail(w, "%s rejected a %zu-byte frame from %s: %s", n->addr,
                   len, from == SIM_NO_SLOT ? "the client" : w->nodes[from].addr,
                   dht_strerror(rv));
  }
  sim_world_drain(w, slot);
}

/* dhtd's on_conn_closed: the node forgets the connection, and learns that
 * its peer is unreachable when its own connection failed to connect, or
 * that what it sent may be lost when its established one broke. */
static void conn_closed(sim_world *w, const sim_event *ev) {
  sim_node *n = &w->nodes[ev->slot];
  const char *peer = w->nodes[ev->peer_slot].addr;
  uint64_t now = sim_world_node_now(w, ev->slot);

  dht_node_conn_closed(n->node, ev->conn);
  if (ev->end == 0 && ev->failed && ev->established) {
    w->resets_reported++;
    dht_node_peer_reset(n->node, peer, now);
  } else if (ev->end == 0 && ev->failed) {
    w->unreachable++;
    dht_node_peer_unreachable(n->node, peer, now);
  }
  sim_world_drain(w, ev->slot);
}

static void wake(sim_world *w, const sim_event *ev) {
  sim_node *n = &w->nodes[ev->slot];

  if (ev->at_ms == n->timer_at_ms) {
    n->timer_at_ms = DHT_TIME_NEVER;
  }
  if (dht_node_next_deadline(n->node) > sim_world_node_now(w, ev->slot)) {
    schedule_wake(w, ev->slot); /* woke early: the deadline moved later */
    return;
  }
  if (n->expiry_now_ms != w->now_ms) {
    n->expiry_now_ms = w->now_ms;
    n->expiries_at_now = 0;
  }
  if (++n->expiries_at_now > SIM_EXPIRIES_AT_ONE_INSTANT_MAX) {
    sim_world_fail(w,
                   "%s: its deadline stays due after %d handle_expiry calls "
                   "at one instant (livelock)",
                   n->addr, SIM_EXPIRIES_AT_ONE_INSTANT_MAX);
    return;
  }
  dht_node_handle_expiry(n->node, sim_world_node_now(w, ev->slot));
  sim_world_drain(w, ev->slot);
}

static void rejoin(sim_world *w, uint32_t slot) {
  uint32_t bootstrap;

  sim_world_crash(w, slot, true);
  bootstrap = sim_world_random_joined(w, slot);
  if (bootstrap == SIM_NO_SLOT) {
    sim_world_fail(w, "%s must rejoin, but no node is joined",
                   w->nodes[slot].addr);
    return;
  }
  sim_world_join(w, slot, bootstrap);
}

static void process(sim_world *w, sim_event *ev) {
  bool alive = ev->kind != SIM_EV_CLIENT_REPLY &&
               w->nodes[ev->slot].node != NULL &&
               w->nodes[ev->slot].incarnation == ev->incarnation;

  w->events++;
  w->digest = mix(w->digest, ev->at_ms);
  w->digest = mix(w->digest, (uint64_t)ev->kind << 32 | ev->slot);
  w->digest = mix(w->digest, ev->conn ^ ev->frame_len ^ (uint64_t)ev->end << 63);
  if (w->trace != NULL) {
    fprintf(w->trace,
            "%" PRIu64 " ev=%d slot=%" PRIu32 " inc=%" PRIu32 " peer=%" PRId64
            " conn=%" PRIx64 " end=%u len=%zu%s\n",
            ev->at_ms, (int)ev->kind, ev->slot, ev->incarnation,
            ev->peer_slot == SIM_NO_SLOT ? (int64_t)-1 : (int64_t)ev->peer_slot,
            ev->conn, (unsigned)ev->end, ev->frame_len,
            alive ? "" : " (no such process)");
  }
  /* The stream's receiver is judged by the stream itself (a dead or
   * replaced process resets it); everything else is for a process, which
   * must be the one alive, and waits while it is paused. */
  if (ev->kind == SIM_EV_STREAM) {
    on_stream(w, ev);
    return;
  }
  if (ev->kind == SIM_EV_CLIENT_REPLY) {
    record_client_reply(w, ev);
    return;
  }
  if (ev->kind == SIM_EV_DISK_FULL || ev->kind == SIM_EV_DISK_FREED) {
    disk_space(w, ev); /* the disk's, whatever its process does */
    return;
  }
  if (!alive) {
    return;
  }
  if (w->nodes[ev->slot].paused && ev->kind != SIM_EV_RESUME) {
    defer(w, ev);
    return;
  }
  switch (ev->kind) {
  case SIM_EV_DELIVER:
    deliver_frame(w, ev->slot, ev->conn, ev->peer_slot, ev->frame,
                  ev->frame_len);
    break;
  case SIM_EV_CONNECT:
    on_connect(w, ev);
    break;
  case SIM_EV_CLOSED:
    conn_closed(w, ev);
    break;
  case SIM_EV_SWEEP:
    on_sweep(w, ev->slot);
    break;
  case SIM_EV_WAKE:
    wake(w, ev);
    break;
  case SIM_EV_REJOIN:
    rejoin(w, ev->slot);
    break;
  case SIM_EV_RESUME:
    if (w->now_ms >= w->nodes[ev->slot].paused_until_ms) {
      sim_world_resume(w, ev->slot);
    }
    break;
  case SIM_EV_LEAVE_TIMEOUT:
    leave_timeout(w, ev->slot);
    break;
  case SIM_EV_STREAM:
  case SIM_EV_CLIENT_REPLY:
  case SIM_EV_DISK_FULL:
  case SIM_EV_DISK_FREED:
    break;
  }
}

/* Starts loading what the next event will touch while this one runs: with
 * thousands of nodes each is cold in the cache when its turn comes, and the
 * call and the invariant checks would otherwise wait on one miss after
 * another. A hint only; a wrong guess (an event pushed before it) costs a
 * few loads. */
static void prefetch_next(const sim_world *w) {
  const sim_event *next = sim_queue_peek(&w->queue);
  const sim_node *n;

  if (next == NULL || next->slot >= w->n_nodes) {
    return;
  }
  n = &w->nodes[next->slot];
  if (next->frame != NULL) {
    __builtin_prefetch(next->frame);
  }
  if (next->kind == SIM_EV_STREAM) {
    /* sim_net_conn's index; a stale id only misguesses the line */
    uint32_t i = (uint32_t)(next->conn & UINT32_MAX) - 1;
    if (next->conn != 0 && i < w->net.n_conns) {
      const sim_conn *c = &w->net.conns[i];
      const sim_stream *st = &c->stream[next->end];
      __builtin_prefetch(c);
      __builtin_prefetch(st);
      if (st->n > 0) {
        __builtin_prefetch(&st->items[st->head]);
      }
    }
  }
  if (n->node != NULL) {
    dht_node_prefetch(n->node);
    sim_disk_prefetch(n->disk); /* every call ends with its commit */
  }
}

void sim_world_run_until(sim_world *w, uint64_t t) {
  sim_event ev;

  while (!w->failed && sim_queue_peek_time(&w->queue) <= t) {
    sim_queue_pop(&w->queue, &ev);
    w->now_ms = ev.at_ms;
    prefetch_next(w);
    process(w, &ev); /* may take the frame (a paused receiver) */
    free(ev.frame);
  }
  if (!w->failed && t > w->now_ms) {
    w->now_ms = t;
  }
}

void sim_world_run_ops(sim_world *w, uint64_t limit_ms) {
  /* Steps of a few milliseconds: far below any timeout, and the check
   * between steps is O(1). */
  while (!w->failed && w->ops_outstanding > 0 && w->now_ms < limit_ms) {
    uint64_t step = w->now_ms + 20;
    sim_world_run_until(w, step < limit_ms ? step : limit_ms);
  }
}

void sim_world_sum_counters(const sim_world *w, dht_node_counters *sum) {
  size_t i;

  memset(sum, 0, sizeof(*sum));
  for (i = 0; i < w->n_nodes; i++) {
    const dht_node_counters *c;
    if (w->nodes[i].node == NULL) {
      continue;
    }
    c = dht_node_get_counters(w->nodes[i].node);
#define SIM__ADD_COUNTER(name) sum->name += c->name;
    DHT_NODE_COUNTER_MAP(SIM__ADD_COUNTER)
#undef SIM__ADD_COUNTER
  }
}
