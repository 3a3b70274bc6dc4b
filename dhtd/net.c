/*
 * net.c: the libuv adapter (see net.h).
 *
 * Every connection, accepted or opened to a peer, is a dhtd_conn with a
 * number the node knows it by. Bytes read are reassembled into frames; the
 * 4-byte length is checked against frame_len_max before any of the body is
 * buffered. Frames the node wants written are appended to the connection's
 * output buffer and written once per loop iteration by the check handle,
 * right after the store has committed and the node has heard how the
 * commit went (dht_node_commit_done: the node holds back the replies that
 * acknowledge writes until then, so an OK is never sent for a write that is
 * not durable, and writes that arrive together commit together).
 *
 * Back-pressure: an accepted connection whose queued output (replies)
 * passes out_queue_pause is no longer read from (no more requests) until it
 * drains; any connection that passes out_queue_max is dropped. A connection
 * this node opened is always read: its input is the replies to its own
 * requests, and a node that stopped reading them while its peer stopped
 * reading its requests would deadlock the pair until the drop. Memory per
 * connection is thus bounded by those settings and one frame of input.
 *
 * A closed ring (cfg.key): every connection gets a dht_seal. Bytes read go
 * through it and only the frames it opens reach the node, with the role the
 * handshake proved; frames the node sends are sealed on their way into the
 * output buffer (held by the seal while an outgoing handshake is young). A
 * handshake or frame that fails closes the connection at once, without a
 * word to the peer; the node counts it (auth_failures) and the log says so
 * at most once per AUTH_LOG_INTERVAL_MS. A timer closes the connections
 * whose handshake outlives handshake_timeout_ms.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dht/client.h"
#include "dht/err.h"
#include "log.h"
#include "net.h"

/* Handshake failures are logged at most this often (the rest counted). */
#define AUTH_LOG_INTERVAL_MS 10000

typedef struct dhtd_conn dhtd_conn;

struct dhtd_conn {
  uv_tcp_t tcp;           /* first: the handle's address is the conn's */
  dhtd_net *net;          /* owner */
  uint64_t id;            /* the node's connection number */
  bool outgoing;          /* opened by us to addr */
  bool connected;         /* can write */
  bool closing;           /* uv_close called */
  bool reading_paused;    /* output backed up: not reading */
  bool failed;            /* closed by an error: tell the node */
  bool resolving;         /* a getaddrinfo request holds this conn */
  bool tcp_closed;        /* the close callback ran */
  char addr[DHT_ADDR_LEN_MAX + 1]; /* outgoing: the peer's address */
  dht_buf in;             /* bytes read, not yet a whole frame */
  size_t in_off;          /* start of unprocessed bytes in in */
  dht_buf out;            /* frames queued, not yet handed to uv_write */
  size_t out_inflight;    /* bytes handed to uv_write, not yet written */
  bool dirty;             /* on the flush list */
  dhtd_conn *next_dirty;  /* flush list link */
  dhtd_conn *next_out;    /* outgoing list link */
  uint64_t last_active_ms; /* last byte in or out */
  uv_connect_t connect_req; /* outgoing: the connect */
  uv_getaddrinfo_t gai_req; /* outgoing: name resolution */
  dht_seal *seal;         /* closed ring: this end of the key handshake and
                             of the sealed frames; NULL in an open ring */
};

typedef struct write_req {
  uv_write_t req;  /* libuv's request */
  dhtd_conn *conn; /* the connection written to */
  dht_buf buf;     /* the bytes, owned until the callback */
} write_req;

struct dhtd_net {
  dhtd_net_config cfg;      /* copied settings */
  uv_loop_t *loop;          /* borrowed */
  uv_tcp_t listener;        /* accepts peers and clients */
  uv_timer_t timer;         /* the node's next deadline */
  uv_timer_t sweep;         /* closes idle outgoing connections */
  uv_check_t flush;         /* commit, then write, once per iteration */
  uv_idle_t wake;           /* keeps poll from blocking while output waits */
  dhtd_conn **conns;        /* by slot; the slot is the id's low 32 bits */
  uint32_t cap_conns;       /* slots allocated */
  uint32_t n_conns;         /* connections open or closing */
  uint32_t generation;      /* high bits of the next id */
  dhtd_conn *dirty_head;    /* connections with output to write */
  dhtd_conn *out_head;      /* outgoing connections, by address */
  struct sockaddr_storage source; /* the listen address, port 0: where
                                     outgoing connections come from
                                     (AF_UNSPEC: a wildcard, the kernel
                                     picks) */
  bool stopping;            /* dhtd_net_stop called */
  uv_timer_t hs_timer;      /* closed ring: ends handshakes past deadline */
  uint64_t auth_logged_ms;  /* when a handshake failure was last logged */
  uint64_t auth_unlogged;   /* failures since then, not logged one by one */
  char read_buf[64 * 1024]; /* libuv reads land here first */
};

static void run_actions(dhtd_net *net);
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *timer);
static void on_wake(uv_idle_t *idle);

static uint64_t now_ms(const dhtd_net *net) { return uv_now(net->loop); }

/* ---- connection table --------------------------------------------------------- */

static dhtd_conn *conn_by_id(const dhtd_net *net, uint64_t id) {
  uint32_t slot = (uint32_t)id;
  dhtd_conn *c;

  if (slot >= net->cap_conns) {
    return NULL;
  }
  c = net->conns[slot];
  return c != NULL && c->id == id ? c : NULL;
}

static dhtd_conn *conn_new(dhtd_net *net) {
  dhtd_conn *c;
  uint32_t slot;

  if (net->n_conns >= net->cfg.conns_max) {
    return NULL;
  }
  for (slot = 0; slot < net->cap_conns && net->conns[slot] != NULL; slot++) {
  }
  if (slot == net->cap_conns) {
    uint32_t cap = net->cap_conns ? net->cap_conns * 2 : 64;
    dhtd_conn **conns = realloc(net->conns, cap * sizeof(*conns));
    if (conns == NULL) {
      return NULL;
    }
    memset(conns + net->cap_conns, 0, (cap - net->cap_conns) * sizeof(*conns));
    net->conns = conns;
    net->cap_conns = cap;
  }
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  if (uv_tcp_init(net->loop, &c->tcp) != 0) {
    free(c);
    return NULL;
  }
  c->tcp.data = c;
  c->net = net;
  /* Ids are never 0 (the node's rule) and a slot's next owner gets a new id,
   * so a late reply cannot reach the wrong connection. */
  c->id = (uint64_t)(++net->generation) << 32 | slot;
  c->last_active_ms = now_ms(net);
  dht_buf_init(&c->in);
  dht_buf_init(&c->out);
  net->conns[slot] = c;
  net->n_conns++;
  return c;
}

static void conn_free(dhtd_conn *c) {
  dhtd_net *net = c->net;

  net->conns[(uint32_t)c->id] = NULL;
  net->n_conns--;
  dht_buf_free(&c->in);
  dht_buf_free(&c->out);
  dht_seal_del(c->seal);
  free(c);
}

/* Closed ring: gives c its end of the handshake; an initiator's HELLO goes
 * first into its output. Returns 0, or -1 (c must be closed). */
static int conn_seal(dhtd_conn *c, bool initiator) {
  dhtd_net *net = c->net;
  uint8_t nonce[DHT_SEAL_NONCE_LEN];
  dht_seal_settings set;

  if (net->cfg.key == NULL) {
    return 0;
  }
  dht_seal_settings_default(&set);
  set.handshake_timeout_ms = net->cfg.handshake_timeout_ms;
  set.frame_len_max = net->cfg.frame_len_max;
  randombytes_buf(nonce, sizeof(nonce));
  if (dht_seal_new(&c->seal, net->cfg.key, initiator, DHT_ROLE_MEMBER, nonce,
                   &set, now_ms(net)) != 0) {
    return -1;
  }
  return initiator && dht_seal_start(c->seal, &c->out) != 0 ? -1 : 0;
}

/* The peer of c, for the log: its address, or what the socket says. */
static void conn_peer_name(dhtd_conn *c, char *buf, size_t len) {
  struct sockaddr_storage ss;
  int ss_len = sizeof(ss);
  char host[64] = "?";

  if (c->outgoing) {
    snprintf(buf, len, "%s", c->addr);
    return;
  }
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &ss_len) == 0) {
    if (ss.ss_family == AF_INET) {
      uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
      snprintf(buf, len, "%s:%u", host,
               ntohs(((struct sockaddr_in *)&ss)->sin_port));
      return;
    }
    uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
    snprintf(buf, len, "[%s]:%u", host,
             ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    return;
  }
  snprintf(buf, len, "?");
}

/* A handshake or sealed frame on c failed (code): counted by the node,
 * logged rate-limited. The caller closes c; the peer is told nothing. */
static void conn_auth_failed(dhtd_conn *c, int code) {
  dhtd_net *net = c->net;
  uint64_t now = now_ms(net);
  char peer[DHT_ADDR_LEN_MAX + 1];
  const char *why;

  dht_node_count_auth_failure(net->cfg.node);
  if (net->auth_logged_ms != 0 &&
      now - net->auth_logged_ms < AUTH_LOG_INTERVAL_MS) {
    net->auth_unlogged++;
    return;
  }
  switch (code) {
  case DHT_ERR_AUTH:
    why = dht_seal_established(c->seal) ? "a frame failed authentication"
                                        : "wrong cluster key";
    break;
  case DHT_ERR_MALFORMED:
    why = "not a cluster-key handshake (no key, or an open-ring peer)";
    break;
  case DHT_ERR_TIMEOUT:
    why = "handshake not finished in time";
    break;
  case DHT_ERR_TOO_LARGE:
    why = "a sealed frame over the length limit";
    break;
  default:
    why = dht_strerror(code);
    break;
  }
  conn_peer_name(c, peer, sizeof(peer));
  dhtd_log(DHT_LOG_WARN,
           "closing conn %llu %s %s: %s (%llu more such closes unlogged)",
           (unsigned long long)c->id, c->outgoing ? "to" : "from", peer, why,
           (unsigned long long)net->auth_unlogged);
  net->auth_logged_ms = now;
  net->auth_unlogged = 0;
}

static void on_conn_closed(uv_handle_t *handle) {
  dhtd_conn *c = handle->data;
  dhtd_net *net = c->net;

  c->tcp_closed = true;
  if (!net->stopping) {
    dht_node_conn_closed(net->cfg.node, c->id);
    if (c->outgoing && c->failed) {
      dht_node_peer_unreachable(net->cfg.node, c->addr, now_ms(net));
      run_actions(net);
    }
  }
  if (!c->resolving) {
    conn_free(c); /* else the getaddrinfo callback frees it */
  }
}

static void conn_close(dhtd_conn *c, bool failed) {
  dhtd_net *net = c->net;
  dhtd_conn **pp;

  if (c->closing) {
    return;
  }
  c->closing = true;
  c->failed = failed;
  if (c->outgoing) {
    for (pp = &net->out_head; *pp != NULL; pp = &(*pp)->next_out) {
      if (*pp == c) {
        *pp = c->next_out;
        break;
      }
    }
  }
  if (c->resolving) {
    uv_cancel((uv_req_t *)&c->gai_req);
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- writing ------------------------------------------------------------------ */

static void on_write(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  dhtd_conn *c = w->conn;

  c->out_inflight -= w->buf.len;
  dht_buf_free(&w->buf);
  free(w);
  if (status != 0) {
    if (status != UV_ECANCELED) {
      dhtd_log(DHT_LOG_DEBUG, "write to conn %llu: %s",
               (unsigned long long)c->id, uv_strerror(status));
    }
    conn_close(c, true);
    return;
  }
  c->last_active_ms = now_ms(c->net);
  if (c->reading_paused && !c->closing &&
      c->out_inflight + c->out.len < c->net->cfg.out_queue_pause / 2) {
    c->reading_paused = false;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
}

/* Hands the connection's queued output to libuv. */
static void conn_write(dhtd_conn *c) {
  write_req *w;
  uv_buf_t buf;

  if (c->closing || !c->connected || c->out.len == 0) {
    return;
  }
  w = malloc(sizeof(*w));
  if (w == NULL) {
    conn_close(c, true);
    return;
  }
  w->conn = c;
  w->buf = c->out; /* the write owns these bytes now */
  dht_buf_init(&c->out);
  buf = uv_buf_init((char *)w->buf.data, (unsigned)w->buf.len);
  c->out_inflight += w->buf.len;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
    c->out_inflight -= w->buf.len;
    dht_buf_free(&w->buf);
    free(w);
    conn_close(c, true);
  }
}

/* Puts c on the flush list: its output is written this loop iteration. */
static void conn_mark_dirty(dhtd_conn *c) {
  dhtd_net *net = c->net;

  if (!c->dirty) {
    c->dirty = true;
    c->next_dirty = net->dirty_head;
    net->dirty_head = c;
    uv_idle_start(&net->wake, on_wake);
  }
}

static void conn_queue(dhtd_conn *c, const uint8_t *frame, size_t len) {
  dhtd_net *net = c->net;
  size_t queued;

  if (c->closing) {
    return;
  }
  queued = c->out.len + c->out_inflight +
           (c->seal != NULL ? dht_seal_held_len(c->seal) : 0);
  if (queued + len > net->cfg.out_queue_max) {
    dhtd_log(DHT_LOG_WARN,
             "dropping conn %llu%s%s: %zu bytes of output not read",
             (unsigned long long)c->id, c->outgoing ? " to " : "",
             c->outgoing ? c->addr : "", queued);
    conn_close(c, true);
    return;
  }
  if ((c->seal != NULL ? dht_seal_send(c->seal, frame, len, &c->out)
                       : dht_buf_append(&c->out, frame, len)) != 0) {
    conn_close(c, true);
    return;
  }
  conn_mark_dirty(c);
}

/* Once per loop iteration: make the store durable, tell the node how that
 * went (it then releases the acknowledgements it held back, or turns them
 * into refusals), then write everything the node produced. */
static void on_flush(uv_check_t *check) {
  dhtd_net *net = check->data;
  dhtd_conn *c, *next;
  int rv;

  uv_idle_stop(&net->wake);
  /* Commit even when nothing is to be written: the deletes that follow an
   * acknowledged hand-off produce no output, and left in the open
   * transaction a crash would bring the handed-off keys back. Committing
   * with nothing pending costs nothing. */
  if (net->cfg.store_commit != NULL) {
    rv = net->cfg.store_commit(net->cfg.store);
    if (rv != 0) {
      dhtd_log(DHT_LOG_ERROR, "store commit failed: %s: %s",
               dht_strerror(rv), dht_store_errmsg(net->cfg.store));
    }
    dht_node_commit_done(net->cfg.node, rv, now_ms(net));
    run_actions(net);
    if (rv != 0 && net->cfg.on_commit_failed != NULL) {
      net->cfg.on_commit_failed(net->cfg.ud, rv);
    }
  }
  for (c = net->dirty_head; c != NULL; c = next) {
    next = c->next_dirty;
    c->dirty = false;
    conn_write(c);
    if (!c->closing && !c->outgoing && !c->reading_paused &&
        c->out_inflight + c->out.len > net->cfg.out_queue_pause) {
      c->reading_paused = true;
      uv_read_stop((uv_stream_t *)&c->tcp);
    }
  }
  net->dirty_head = NULL;
}

/* Started while output waits, so that the loop polls without blocking and
 * reaches on_flush in this iteration. */
static void on_wake(uv_idle_t *idle) { (void)idle; }

/* ---- reading ------------------------------------------------------------------ */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  dhtd_conn *c = handle->data;

  (void)suggested;
  /* Single-threaded: one buffer serves every read, copied out at once. */
  *buf = uv_buf_init(c->net->read_buf, sizeof(c->net->read_buf));
}

/* Feeds every whole frame in data to the node; returns the bytes consumed,
 * or -1 when the stream is broken (the connection is being closed). */
static long feed_frames(dhtd_conn *c, const uint8_t *data, size_t len) {
  dhtd_net *net = c->net;
  size_t off = 0, body_len;
  int rv;

  while (!c->closing) {
    rv = dht_frame_peek(data + off, len - off, net->cfg.frame_len_max,
                        &body_len);
    if (rv == DHT_ERR_TRUNCATED) {
      break;
    }
    if (rv != 0) {
      dhtd_log(DHT_LOG_WARN, "conn %llu: frame of more than %u bytes: closing",
               (unsigned long long)c->id, net->cfg.frame_len_max);
      conn_close(c, true);
      return -1;
    }
    if (len - off < DHT_FRAME_HEADER_LEN + body_len) {
      break;
    }
    dht_node_recv(net->cfg.node, c->id, data + off + DHT_FRAME_HEADER_LEN,
                  body_len, now_ms(net));
    off += DHT_FRAME_HEADER_LEN + body_len;
    run_actions(net);
  }
  return (long)off;
}

/* Closed ring: feeds the bytes read to c's seal, and every frame it opens
 * to the node with the connection's role. A failure closes c. */
static void feed_sealed(dhtd_conn *c, const uint8_t *data, size_t len) {
  dhtd_net *net = c->net;
  size_t out_before = c->out.len, flen;
  const uint8_t *frame;
  int rv;

  rv = dht_seal_recv(c->seal, data, len, &c->out, now_ms(net));
  if (c->out.len > out_before) {
    conn_mark_dirty(c); /* the handshake's answer */
  }
  while (rv == 0 && !c->closing) {
    rv = dht_seal_read(c->seal, &frame, &flen);
    if (rv != 1) {
      break;
    }
    dht_node_recv_as(net->cfg.node, c->id, dht_seal_role(c->seal),
                     frame + DHT_FRAME_HEADER_LEN,
                     flen - DHT_FRAME_HEADER_LEN, now_ms(net));
    run_actions(net);
    rv = 0;
  }
  if (rv < 0 && !c->closing) {
    conn_auth_failed(c, rv);
    conn_close(c, true);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  dhtd_conn *c = stream->data;
  long used;

  if (nread == 0) {
    return;
  }
  if (nread < 0) {
    if (nread != UV_EOF) {
      dhtd_log(DHT_LOG_DEBUG, "read from conn %llu: %s",
               (unsigned long long)c->id, uv_strerror((int)nread));
    }
    /* A peer that hangs up with requests in flight will not answer them. */
    conn_close(c, c->outgoing || nread != UV_EOF);
    return;
  }
  c->last_active_ms = now_ms(c->net);
  if (c->seal != NULL) {
    feed_sealed(c, (const uint8_t *)buf->base, (size_t)nread);
    return;
  }
  if (c->in.len == c->in_off) {
    /* Nothing buffered: parse straight from the read buffer and keep only
     * the tail of a partial frame. */
    used = feed_frames(c, (const uint8_t *)buf->base, (size_t)nread);
    if (used >= 0 && (size_t)used < (size_t)nread) {
      c->in.len = 0;
      c->in_off = 0;
      if (dht_buf_append(&c->in, buf->base + used, (size_t)nread - (size_t)used) != 0) {
        conn_close(c, true);
      }
    }
    return;
  }
  if (dht_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
    conn_close(c, true);
    return;
  }
  used = feed_frames(c, c->in.data + c->in_off, c->in.len - c->in_off);
  if (used < 0) {
    return;
  }
  c->in_off += (size_t)used;
  if (c->in_off == c->in.len) {
    c->in.len = 0;
    c->in_off = 0;
  } else if (c->in_off > c->in.len / 2) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
}

/* ---- outgoing connections ---------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status) {
  dhtd_conn *c = req->data;

  if (status != 0) {
    if (status != UV_ECANCELED) {
      dhtd_log(DHT_LOG_DEBUG, "connect to %s: %s", c->addr, uv_strerror(status));
    }
    conn_close(c, true);
    return;
  }
  c->connected = true;
  c->last_active_ms = now_ms(c->net);
  uv_tcp_nodelay(&c->tcp, 1); /* small request frames must not wait */
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  conn_write(c);
}

static bool is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
    return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
  }
  return sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr);
}

/*
 * A node listening on a specific address connects from it too, so that
 * peers see it under one address both ways, and a firewall rule between
 * two nodes' addresses (an operator's, or scripts/churn --cut-every's)
 * holds for the connections each opens. Not for a destination of another
 * family, nor from a loopback address to a host beyond the machine, which
 * the kernel would not route.
 */
static int bind_source(dhtd_conn *c, const struct sockaddr *dest) {
  const struct sockaddr *src = (const struct sockaddr *)&c->net->source;

  if (src->sa_family != dest->sa_family ||
      (is_loopback(src) && !is_loopback(dest))) {
    return 0;
  }
  return uv_tcp_bind(&c->tcp, src, 0);
}

static void start_connect(dhtd_conn *c, const struct sockaddr *sa) {
  int rv;

  c->connect_req.data = c;
  rv = bind_source(c, sa);
  if (rv == 0) {
    rv = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
  }
  if (rv != 0) {
    dhtd_log(DHT_LOG_DEBUG, "connect to %s: %s", c->addr, uv_strerror(rv));
    conn_close(c, true);
  }
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  dhtd_conn *c = req->data;

  c->resolving = false;
  if (c->tcp_closed) {
    uv_freeaddrinfo(res);
    conn_free(c);
    return;
  }
  if (status != 0 || res == NULL) {
    dhtd_log(DHT_LOG_WARN, "cannot resolve %s: %s", c->addr,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    conn_close(c, true);
    return;
  }
  if (!c->closing) {
    start_connect(c, res->ai_addr);
  }
  uv_freeaddrinfo(res);
}

/* The open connection this node made to addr, or NULL. */
static dhtd_conn *conn_opened_to(dhtd_net *net, const char *addr) {
  dhtd_conn *c;

  for (c = net->out_head; c != NULL; c = c->next_out) {
    if (strcmp(c->addr, addr) == 0) {
      return c;
    }
  }
  return NULL;
}

/* Finds the open connection to addr, or opens one. NULL when the address is
 * unusable or the connection limit is reached (the node is told the peer is
 * unreachable, so its requests fail fast). */
static dhtd_conn *conn_to(dhtd_net *net, const char *addr) {
  char host[DHT_ADDR_LEN_MAX + 1], port_str[8];
  struct sockaddr_storage ss;
  struct addrinfo hints;
  uint16_t port;
  dhtd_conn *c = conn_opened_to(net, addr);

  if (c != NULL) {
    return c;
  }
  if (dht_addr_parse(addr, host, sizeof(host), &port) != 0 ||
      (c = conn_new(net)) == NULL) {
    return NULL;
  }
  c->outgoing = true;
  snprintf(c->addr, sizeof(c->addr), "%s", addr);
  c->next_out = net->out_head;
  net->out_head = c;
  if (conn_seal(c, true) != 0) {
    conn_close(c, true);
    return NULL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) == 0) {
    start_connect(c, (const struct sockaddr *)&ss);
    return c;
  }
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  snprintf(port_str, sizeof(port_str), "%u", port);
  c->gai_req.data = c;
  c->resolving = true;
  if (uv_getaddrinfo(net->loop, &c->gai_req, on_resolved, host, port_str,
                     &hints) != 0) {
    c->resolving = false;
    conn_close(c, true);
    return NULL;
  }
  return c;
}

/* ---- the node's actions --------------------------------------------------------- */

static void arm_timer(dhtd_net *net) {
  uint64_t deadline = dht_node_next_deadline(net->cfg.node);
  uint64_t now = now_ms(net);

  if (net->stopping) {
    return;
  }
  if (deadline == DHT_TIME_NEVER) {
    uv_timer_stop(&net->timer);
    return;
  }
  uv_timer_start(&net->timer, on_timer, deadline > now ? deadline - now : 0,
                 0);
}

static void run_actions(dhtd_net *net) {
  char unreachable[4][DHT_ADDR_LEN_MAX + 1];
  size_t n_unreachable = 0, i;
  dht_action a;
  dhtd_conn *c;

  while (dht_node_poll_action(net->cfg.node, &a)) {
    switch (a.type) {
    case DHT_ACTION_SEND:
      c = conn_to(net, a.addr);
      if (c == NULL) {
        dhtd_log(DHT_LOG_DEBUG, "cannot open a connection to %s", a.addr);
        /* Told to the node once its actions are drained. */
        if (n_unreachable < 4) {
          snprintf(unreachable[n_unreachable++], DHT_ADDR_LEN_MAX + 1, "%s",
                   a.addr);
        }
        continue;
      }
      conn_queue(c, a.frame, a.frame_len);
      break;
    case DHT_ACTION_REPLY:
      c = conn_by_id(net, a.conn);
      if (c != NULL) {
        conn_queue(c, a.frame, a.frame_len);
      }
      break;
    case DHT_ACTION_CLOSE:
      c = conn_by_id(net, a.conn);
      if (c != NULL) {
        conn_close(c, false);
      }
      break;
    case DHT_ACTION_DISCONNECT:
      c = conn_opened_to(net, a.addr);
      if (c != NULL) {
        conn_close(c, false);
      }
      break;
    case DHT_ACTION_EVENT:
      if (net->cfg.on_event != NULL) {
        net->cfg.on_event(net->cfg.ud, a.event, a.error);
      }
      break;
    }
  }
  for (i = 0; i < n_unreachable; i++) {
    dht_node_peer_unreachable(net->cfg.node, unreachable[i], now_ms(net));
  }
  if (n_unreachable > 0) {
    run_actions(net);
    return;
  }
  arm_timer(net);
}

void dhtd_net_kick(dhtd_net *net) { run_actions(net); }

static void on_timer(uv_timer_t *timer) {
  dhtd_net *net = timer->data;

  dht_node_handle_expiry(net->cfg.node, now_ms(net));
  run_actions(net);
}

static void on_sweep(uv_timer_t *timer) {
  dhtd_net *net = timer->data;
  uint64_t now = now_ms(net);
  dhtd_conn *c, *next;

  for (c = net->out_head; c != NULL; c = next) {
    next = c->next_out;
    if (c->connected && c->out.len == 0 && c->out_inflight == 0 &&
        now - c->last_active_ms >= net->cfg.idle_close_ms) {
      conn_close(c, false);
    }
  }
}

/* Closed ring: ends the handshakes that outlived their deadline. */
static void on_hs_timer(uv_timer_t *timer) {
  dhtd_net *net = timer->data;
  uint64_t now = now_ms(net);
  uint32_t i;

  for (i = 0; i < net->cap_conns; i++) {
    dhtd_conn *c = net->conns[i];
    if (c != NULL && !c->closing && c->seal != NULL &&
        now >= dht_seal_deadline(c->seal)) {
      conn_auth_failed(c, DHT_ERR_TIMEOUT);
      conn_close(c, true);
    }
  }
}

/* ---- accepting ------------------------------------------------------------------ */

static void on_connection(uv_stream_t *server, int status) {
  dhtd_net *net = server->data;
  dhtd_conn *c;
  uv_tcp_t *overflow;

  if (status != 0) {
    dhtd_log(DHT_LOG_WARN, "accept: %s", uv_strerror(status));
    return;
  }
  c = conn_new(net);
  if (c == NULL) {
    /* Accept and close at once, so that the backlog does not fill. */
    overflow = malloc(sizeof(*overflow));
    if (overflow != NULL && uv_tcp_init(net->loop, overflow) == 0) {
      if (uv_accept(server, (uv_stream_t *)overflow) == 0) {
        dhtd_log(DHT_LOG_WARN, "refusing a connection: %u open already",
                 net->n_conns);
      }
      uv_close((uv_handle_t *)overflow, (uv_close_cb)free);
    } else {
      free(overflow);
    }
    return;
  }
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c, false);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  /* Accepted connections are never closed for idling (a client may sit
   * quietly), so let the kernel find the ones whose other end vanished. */
  uv_tcp_keepalive(&c->tcp, 1, 60);
  if (conn_seal(c, false) != 0) {
    conn_close(c, false);
    return;
  }
  c->connected = true;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* The listen address, port 0, is where outgoing connections come from,
 * unless it is a wildcard (the kernel then picks by route). */
static void init_source(dhtd_net *net, const struct sockaddr_storage *listen) {
  bool wildcard;

  net->source = *listen;
  if (listen->ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&net->source;
    in->sin_port = 0;
    wildcard = in->sin_addr.s_addr == htonl(INADDR_ANY);
  } else {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&net->source;
    in6->sin6_port = 0;
    wildcard = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
  }
  if (wildcard) {
    net->source.ss_family = AF_UNSPEC;
  }
}

int dhtd_net_start(dhtd_net **out, uv_loop_t *loop, const dhtd_net_config *cfg,
                   char *err, size_t err_len) {
  char host[DHT_ADDR_LEN_MAX + 1];
  struct sockaddr_storage ss;
  dhtd_net *net;
  uint16_t port;
  int rv;

  if (dht_addr_parse(cfg->listen_addr, host, sizeof(host), &port) != 0) {
    snprintf(err, err_len, "bad listen address '%s' (want HOST:PORT)",
             cfg->listen_addr);
    return UV_EINVAL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
    snprintf(err, err_len, "listen address '%s' must be a numeric IP address",
             cfg->listen_addr);
    return UV_EINVAL;
  }
  net = calloc(1, sizeof(*net));
  if (net == NULL) {
    snprintf(err, err_len, "out of memory");
    return UV_ENOMEM;
  }
  net->cfg = *cfg;
  net->loop = loop;
  init_source(net, &ss);
  uv_tcp_init(loop, &net->listener);
  net->listener.data = net;
  rv = uv_tcp_bind(&net->listener, (const struct sockaddr *)&ss, 0);
  if (rv == 0) {
    rv = uv_listen((uv_stream_t *)&net->listener, 511, on_connection);
  }
  if (rv != 0) {
    snprintf(err, err_len, "cannot listen on %s: %s", cfg->listen_addr,
             uv_strerror(rv));
    uv_close((uv_handle_t *)&net->listener, NULL);
    /* The caller runs the loop once more to finish the close, then frees. */
    *out = net;
    return rv;
  }
  uv_timer_init(loop, &net->timer);
  net->timer.data = net;
  uv_timer_init(loop, &net->sweep);
  net->sweep.data = net;
  uv_timer_start(&net->sweep, on_sweep, cfg->idle_close_ms / 2 + 1,
                 cfg->idle_close_ms / 2 + 1);
  uv_timer_init(loop, &net->hs_timer);
  net->hs_timer.data = net;
  if (cfg->key != NULL) {
    uint64_t every = cfg->handshake_timeout_ms / 4 + 1;
    uv_timer_start(&net->hs_timer, on_hs_timer, every, every);
  }
  uv_check_init(loop, &net->flush);
  net->flush.data = net;
  uv_check_start(&net->flush, on_flush);
  uv_idle_init(loop, &net->wake);
  *out = net;
  return 0;
}

void dhtd_net_stop(dhtd_net *net) {
  uint32_t i;

  if (net->stopping) {
    return;
  }
  /* Write what is queued (the LEAVE answers, the last replies) first. */
  on_flush(&net->flush);
  net->stopping = true;
  for (i = 0; i < net->cap_conns; i++) {
    if (net->conns[i] != NULL) {
      conn_close(net->conns[i], false);
    }
  }
  uv_close((uv_handle_t *)&net->listener, NULL);
  uv_close((uv_handle_t *)&net->timer, NULL);
  uv_close((uv_handle_t *)&net->sweep, NULL);
  uv_close((uv_handle_t *)&net->hs_timer, NULL);
  uv_close((uv_handle_t *)&net->flush, NULL);
  uv_close((uv_handle_t *)&net->wake, NULL);
}

void dhtd_net_del(dhtd_net *net) {
  if (net != NULL) {
    free(net->conns);
    free(net);
  }
}
