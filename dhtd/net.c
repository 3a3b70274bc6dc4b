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
 *
 * Limits (docs/SECURITY.md, Limits). Connections are of three classes,
 * each with its own budget: links this node opens (peer_conns_max),
 * accepted connections known to be peer links (peer_conns_max again), and
 * accepted clients (client_conns_max). An accepted connection is a client
 * until its handshake proves the member key (closed ring) or it sends a
 * message only ring members send (open ring). One that arrives while the
 * clients' budget is full is taken on probation into the peer links'
 * budget: it must prove itself a peer (in an open ring: its first message
 * other than PING must be ring-internal, and some message must come
 * within handshake_timeout_ms) or it is closed. So clients can never take
 * the slots the ring needs; an open-ring attacker can claim peer slots
 * too, but no more than conns_per_addr_max per address. Per remote address
 * (IPv4, or the /64 of IPv6) a table holds how many accepted connections
 * it has, a token bucket for the requests of its client connections, and
 * which limits it has hit already (each is logged once per address while
 * the entry lives). A timer closes accepted connections that idle past
 * client_idle_ms or leave a frame unfinished past frame_timeout_ms. Every
 * connection's buffered input and queued output count against mem_max:
 * above three quarters of it clients that hold more than 1/1024 of it are
 * not read, above it the connection using the most is dropped. A client connection with
 * inflight_max requests unanswered is not read until half are answered.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
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

/* Which budget a connection counts against. */
typedef enum conn_class {
  CLS_OUT,       /* opened by this node: a peer link */
  CLS_CLIENT,    /* accepted, not known to be a peer */
  CLS_PEER,      /* accepted, proved to be a peer link */
  CLS_PROBATION, /* accepted while clients' budget was full: holds a peer
                    slot until it proves itself a peer, or is closed */
} conn_class;

/* An input buffer larger than this is freed once it has been consumed. */
#define IN_BUF_KEEP_BYTES (256 * 1024)
/* An output buffer larger than this is freed once it has been written. */
#define OUT_KEEP_MAX (64 * 1024)
/* Bytes one connection may hand the node in one loop iteration: libuv
 * would read a readable socket up to 32 times (2 MiB) before looking at
 * any other, so that one pipelining connection could hold every other
 * back for that long. One read's worth, then the others' turn. */
#define READ_BUDGET_BYTES (64 * 1024)

/* Buckets of the address table, and its largest size. */
#define ADDR_BUCKETS 1024
#define ADDR_ENTRIES_MAX 65536
/* An address with no connection is forgotten this long after its last. */
#define ADDR_FORGET_MS 60000

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
  size_t out_inflight_cap; /* ... and the room their buffers take */
  bool dirty;             /* on the flush list */
  dhtd_conn *next_dirty;  /* flush list link */
  dhtd_conn *next_out;    /* outgoing list link */
  uint64_t last_active_ms; /* last byte in or out */
  uv_connect_t connect_req; /* outgoing: the connect */
  uv_getaddrinfo_t gai_req; /* outgoing: name resolution */
  dht_seal *seal;         /* closed ring: this end of the key handshake and
                             of the sealed frames; NULL in an open ring */
  conn_class cls;         /* which budget it counts against */
  bool accounted;         /* counted in its class and address */
  bool reading;           /* uv_read_start is in force */
  bool paused_inflight;   /* inflight_max unanswered: not read */
  bool resume_pending;    /* answers came: read its buffered input again */
  bool paused_budget;     /* read its READ_BUDGET_BYTES this iteration */
  uint64_t turn;          /* the iteration turn_bytes counts in */
  size_t turn_bytes;      /* bytes read from it in that iteration */
  struct addr_entry *ae;  /* accepted: its remote address's entry */
  uint64_t accepted_ms;   /* accepted: when */
  uint64_t frames_seen;   /* frames read from it */
  uint64_t frame_started_ms; /* accepted: when the partial input that is
                                buffered began (0: none) */
  uint32_t inflight;      /* client: requests without their final reply */
  size_t mem_counted;     /* its share of net->mem_used */
};

/* One remote address (IPv4, or an IPv6 /64) that has connected. */
typedef struct addr_entry {
  struct addr_entry *next; /* hash chain */
  uint8_t key[9];         /* family byte, then 4 or 8 address bytes */
  uint32_t conns;         /* accepted connections open from it */
  double tokens;          /* request tokens left */
  uint64_t refill_ms;     /* when tokens was last topped up */
  uint64_t last_ms;       /* last connection or request */
  uint32_t logged;        /* bit (1 << dht_host_limit): already logged */
  char name[64];          /* for the log */
} addr_entry;

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
  uv_check_t flush;         /* requests, commit, answers: once per
                               iteration (on_flush) */
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
  uv_timer_t hs_timer;      /* ends handshakes, frames and idling past
                               their deadlines */
  uint64_t auth_logged_ms;  /* when a handshake failure was last logged */
  uint64_t auth_unlogged;   /* failures since then, not logged one by one */
  uint32_t n_out;           /* CLS_OUT connections open */
  uint32_t n_clients;       /* CLS_CLIENT connections open */
  uint32_t n_peers_in;      /* CLS_PEER and CLS_PROBATION connections open */
  addr_entry *addrs[ADDR_BUCKETS]; /* the address table */
  uint32_t n_addrs;         /* entries in it */
  uint64_t mem_used;        /* buffered input and queued output, all conns */
  bool mem_paused;          /* over 3/4 of mem_max: clients are not read */
  bool resume_any;          /* some conn has resume_pending */
  bool budget_any;          /* some conn has paused_budget */
  uint64_t turn;            /* loop iterations, counted in on_flush */
  bool out_logged;          /* the outgoing budget's fill was logged */
  bool mem_logged;          /* the memory pause was logged */
  dht_wire_limits limits;   /* for decoding the frames the host looks into */
  char read_buf[64 * 1024]; /* libuv reads land here first */
};

static void run_actions(dhtd_net *net);
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void on_timer(uv_timer_t *timer);
static void on_wake(uv_idle_t *idle);
static void conn_drain(dhtd_conn *c);

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

  net->mem_used -= c->mem_counted;
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
  dhtd_log_peer(DHT_LOG_WARN, peer,
           "closing conn %llu %s %s: %s (%llu more such closes unlogged)",
           (unsigned long long)c->id, c->outgoing ? "to" : "from", peer, why,
           (unsigned long long)net->auth_unlogged);
  net->auth_logged_ms = now;
  net->auth_unlogged = 0;
}

/* ---- remote addresses and limits ------------------------------------------------ */

/* The table key of c's remote address (IPv4, or the /64 of IPv6) and its
 * name for the log. False when the socket does not say. */
static bool addr_key_of(dhtd_conn *c, uint8_t key[9], char *name,
                        size_t name_len) {
  struct sockaddr_storage ss;
  int ss_len = sizeof(ss);
  char host[64] = "?";

  memset(key, 0, 9);
  if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &ss_len) != 0) {
    return false;
  }
  if (ss.ss_family == AF_INET) {
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    key[0] = 4;
    memcpy(key + 1, &in->sin_addr, 4);
    uv_ip4_name(in, host, sizeof(host));
    snprintf(name, name_len, "%s", host);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    /* One host of IPv6 easily holds a whole /64: count them together. */
    key[0] = 6;
    memcpy(key + 1, &in6->sin6_addr, 8);
    uv_ip6_name(in6, host, sizeof(host));
    snprintf(name, name_len, "%s (/64)", host);
    return true;
  }
  return false;
}

static uint32_t addr_hash(const uint8_t key[9]) {
  uint32_t h = 2166136261u;
  int i;

  for (i = 0; i < 9; i++) {
    h = (h ^ key[i]) * 16777619u;
  }
  return h % ADDR_BUCKETS;
}

/* The entry of key, made if new; NULL when the table is full. */
static addr_entry *addr_get(dhtd_net *net, const uint8_t key[9],
                            const char *name) {
  uint32_t h = addr_hash(key);
  addr_entry *e;

  for (e = net->addrs[h]; e != NULL; e = e->next) {
    if (memcmp(e->key, key, sizeof(e->key)) == 0) {
      return e;
    }
  }
  if (net->n_addrs >= ADDR_ENTRIES_MAX || (e = calloc(1, sizeof(*e))) == NULL) {
    return NULL;
  }
  memcpy(e->key, key, sizeof(e->key));
  snprintf(e->name, sizeof(e->name), "%s", name);
  e->tokens = net->cfg.rate_burst;
  e->refill_ms = e->last_ms = now_ms(net);
  e->next = net->addrs[h];
  net->addrs[h] = e;
  net->n_addrs++;
  return e;
}

/* Forgets the addresses without connections that have been quiet long
 * enough (with them, which limits they were logged for). */
static void addr_sweep(dhtd_net *net, bool all) {
  uint64_t now = now_ms(net);
  uint32_t h;

  for (h = 0; h < ADDR_BUCKETS; h++) {
    addr_entry **pp = &net->addrs[h];
    while (*pp != NULL) {
      addr_entry *e = *pp;
      if (all || (e->conns == 0 && now - e->last_ms >= ADDR_FORGET_MS)) {
        *pp = e->next;
        free(e);
        net->n_addrs--;
      } else {
        pp = &e->next;
      }
    }
  }
}

/* Takes one request token from e's bucket; false when it is empty. */
static bool addr_take_token(dhtd_net *net, addr_entry *e) {
  uint64_t now = now_ms(net);

  if (net->cfg.rate_per_s == 0) {
    return true;
  }
  e->tokens += (double)(now - e->refill_ms) * net->cfg.rate_per_s / 1000.0;
  if (e->tokens > net->cfg.rate_burst) {
    e->tokens = net->cfg.rate_burst;
  }
  e->refill_ms = now;
  e->last_ms = now;
  if (e->tokens < 1.0) {
    return false;
  }
  e->tokens -= 1.0;
  return true;
}

static const char *const limit_counter[] = {
    [DHT_LIMIT_CONNS] = "limit_conns",
    [DHT_LIMIT_PER_ADDR] = "limit_per_addr",
    [DHT_LIMIT_IDLE] = "limit_idle",
    [DHT_LIMIT_FRAME_TIME] = "limit_frame_time",
    [DHT_LIMIT_MEMORY] = "limit_memory",
    [DHT_LIMIT_INFLIGHT] = "limit_inflight",
    [DHT_LIMIT_RATE] = "limit_rate",
    [DHT_LIMIT_READ_BUDGET] = "limit_read_budget",
};

/* A limit was hit by (a connection from) e: counted by the node; logged
 * the first time for e (NULL: a link of our own, logged every time, which
 * the callers make rare). */
static void limit_hit(dhtd_net *net, addr_entry *e, dht_host_limit which,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void limit_hit(dhtd_net *net, addr_entry *e, dht_host_limit which,
                      const char *fmt, ...) {
  char what[200];
  va_list ap;

  dht_node_count_limit(net->cfg.node, which);
  if (e != NULL && (e->logged & (1u << which)) != 0) {
    return;
  }
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  dhtd_log_peer(DHT_LOG_WARN, e != NULL ? e->name : NULL,
                "%s%s%s (further hits %s are only counted: %s)",
                e != NULL ? e->name : "", e != NULL ? ": " : "", what,
                e != NULL ? "from this address" : "like it",
                limit_counter[which]);
  if (e != NULL) {
    e->logged |= 1u << which;
  }
}

/* Bytes c holds in buffers: input not yet a whole frame (or not yet
 * processed: what the buffer holds, as allocated), output queued or being
 * written. */
static size_t conn_mem(const dhtd_conn *c) {
  size_t n = c->in.cap + c->out.cap + c->out_inflight_cap;

  if (c->seal != NULL) {
    n += dht_seal_in_len(c->seal) + dht_seal_held_len(c->seal);
  }
  return n;
}

static void conn_close(dhtd_conn *c, bool failed);
static void conn_reading_update(dhtd_conn *c);

/* Drops connections, the largest users first (clients before peer links),
 * until the buffers fit mem_max; pauses or resumes reading from clients
 * around three quarters of it. */
static void mem_enforce(dhtd_net *net) {
  bool paused;
  uint32_t i, rounds;

  for (rounds = 0; net->mem_used > net->cfg.mem_max && rounds < 64;
       rounds++) {
    dhtd_conn *worst = NULL, *worst_client = NULL;
    for (i = 0; i < net->cap_conns; i++) {
      dhtd_conn *c = net->conns[i];
      if (c == NULL || c->closing || c->mem_counted == 0) {
        continue;
      }
      if (worst == NULL || c->mem_counted > worst->mem_counted) {
        worst = c;
      }
      if ((c->cls == CLS_CLIENT || c->cls == CLS_PROBATION) &&
          (worst_client == NULL ||
           c->mem_counted > worst_client->mem_counted)) {
        worst_client = c;
      }
    }
    /* A client that holds a fair share goes before any peer link. */
    if (worst_client != NULL &&
        worst_client->mem_counted >= net->cfg.mem_max / 256) {
      worst = worst_client;
    }
    if (worst == NULL) {
      break;
    }
    limit_hit(net, worst->ae, DHT_LIMIT_MEMORY,
              "dropping conn %llu%s%s: it holds %zu bytes of the %llu-byte "
              "buffer budget (--max-buffer-bytes), %llu in use",
              (unsigned long long)worst->id, worst->outgoing ? " to " : "",
              worst->outgoing ? worst->addr : "", worst->mem_counted,
              (unsigned long long)net->cfg.mem_max,
              (unsigned long long)net->mem_used);
    conn_close(worst, true);
  }
  paused = net->mem_paused ? net->mem_used > net->cfg.mem_max / 2
                           : net->mem_used > net->cfg.mem_max / 4 * 3;
  if (paused != net->mem_paused) {
    net->mem_paused = paused;
    if (paused && net->mem_logged) {
      dht_node_count_limit(net->cfg.node, DHT_LIMIT_MEMORY);
    } else if (paused) {
      net->mem_logged = true; /* again after the next sweep at most */
      limit_hit(net, NULL, DHT_LIMIT_MEMORY,
                "buffers hold %llu bytes, over 3/4 of --max-buffer-bytes: "
                "not reading clients until they drain",
                (unsigned long long)net->mem_used);
    }
    for (i = 0; i < net->cap_conns; i++) {
      if (net->conns[i] != NULL) {
        conn_reading_update(net->conns[i]);
      }
    }
  }
}

/* Brings c's share of mem_used up to date, then enforces the budget. */
static void conn_mem_update(dhtd_conn *c) {
  dhtd_net *net = c->net;
  size_t now;

  if (c->closing) {
    return;
  }
  now = conn_mem(c);
  net->mem_used = net->mem_used - c->mem_counted + now;
  c->mem_counted = now;
  if (net->mem_used > net->cfg.mem_max / 2 || net->mem_paused) {
    mem_enforce(net);
    if (!c->closing) {
      conn_reading_update(c);
    }
  }
}

/* Reads from c when nothing holds it back: its output backed up, its
 * unanswered requests, or (a client holding more than a small share) the
 * memory budget: clients that hold little are read on, so that the
 * well-behaved are served while the budget is tight. */
static void conn_reading_update(dhtd_conn *c) {
  dhtd_net *net = c->net;
  bool want = !c->closing && c->connected && !c->tcp_closed &&
              !c->reading_paused && !c->paused_inflight && !c->paused_budget &&
              !(net->mem_paused && !c->outgoing && c->cls != CLS_PEER &&
                c->mem_counted >= net->cfg.mem_max / 1024);

  if (want == c->reading || net->stopping) {
    return;
  }
  c->reading = want;
  if (want) {
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  } else {
    uv_read_stop((uv_stream_t *)&c->tcp);
  }
}

/* Takes c out of its budget and its address's count. */
static void conn_unaccount(dhtd_conn *c) {
  dhtd_net *net = c->net;

  if (!c->accounted) {
    return;
  }
  c->accounted = false;
  switch (c->cls) {
  case CLS_OUT:
    net->n_out--;
    break;
  case CLS_CLIENT:
    net->n_clients--;
    break;
  case CLS_PEER:
  case CLS_PROBATION:
    net->n_peers_in--;
    break;
  }
  if (c->ae != NULL) {
    c->ae->conns--;
    c->ae->last_ms = now_ms(net);
  }
}

static void on_conn_closed(uv_handle_t *handle) {
  dhtd_conn *c = handle->data;
  dhtd_net *net = c->net;

  c->tcp_closed = true;
  if (!net->stopping) {
    dht_node_conn_closed(net->cfg.node, c->id);
    if (c->outgoing && c->failed) {
      /* A connection that was up may have met a restarted peer's reset:
       * the node sends again, and only a connect that fails is final. */
      if (c->connected) {
        dht_node_peer_reset(net->cfg.node, c->addr, now_ms(net));
      } else {
        dht_node_peer_unreachable(net->cfg.node, c->addr, now_ms(net));
      }
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
  conn_unaccount(c);
  net->mem_used -= c->mem_counted;
  c->mem_counted = 0;
  if (c->outgoing) {
    for (pp = &net->out_head; *pp != NULL; pp = &(*pp)->next_out) {
      if (*pp == c) {
        *pp = c->next_out;
        break;
      }
    }
  }
  if (c->dirty) {
    /* Off the flush list, which may outlive this loop iteration (output
     * queued after on_flush, by the requests it ran): c is freed once
     * libuv has closed it, before the next on_flush walks the list. Its
     * own next_dirty stays, for a walk that holds c as its next. */
    for (pp = &net->dirty_head; *pp != NULL; pp = &(*pp)->next_dirty) {
      if (*pp == c) {
        *pp = c->next_dirty;
        break;
      }
    }
    c->dirty = false;
  }
  if (c->resolving) {
    uv_cancel((uv_req_t *)&c->gai_req);
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- writing ------------------------------------------------------------------ */

/* Output of c went out: its memory shrinks, and reading resumes once what
 * is left is under half the pause mark. */
static void conn_wrote(dhtd_conn *c) {
  c->last_active_ms = now_ms(c->net);
  conn_mem_update(c);
  if (c->reading_paused && !c->closing &&
      c->out_inflight + c->out.len < c->net->cfg.out_queue_pause / 2) {
    c->reading_paused = false;
    conn_reading_update(c);
    /* Requests it sent meanwhile wait in its input: on_flush runs them. */
    c->resume_pending = true;
    c->net->resume_any = true;
    uv_idle_start(&c->net->wake, on_wake);
  }
}

static void on_write(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  dhtd_conn *c = w->conn;

  c->out_inflight -= w->buf.len;
  c->out_inflight_cap -= w->buf.cap;
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
  conn_wrote(c);
}

/*
 * Writes the connection's queued output: at once with uv_try_write when no
 * earlier write is still in libuv's hands (most often the whole batch goes,
 * and the buffer stays for the next one), and what the socket does not take
 * through uv_write. Not for the saving of a malloc alone: a uv_write that
 * completes at once still re-arms the socket's poll registration when it
 * finishes (libuv stops its POLLOUT interest, unchanged, which queues an
 * epoll_ctl), one syscall per reply (docs/PERFORMANCE.md).
 */
static void conn_write(dhtd_conn *c) {
  write_req *w;
  uv_buf_t buf;
  int n;

  if (c->closing || !c->connected || c->out.len == 0) {
    return;
  }
  if (c->out_inflight == 0) {
    buf = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
    n = uv_try_write((uv_stream_t *)&c->tcp, &buf, 1);
    if (n < 0 && n != UV_EAGAIN) {
      dhtd_log(DHT_LOG_DEBUG, "write to conn %llu: %s",
               (unsigned long long)c->id, uv_strerror(n));
      conn_close(c, true);
      return;
    }
    if (n > 0) {
      c->out.len -= (size_t)n; /* rare: a part written, the rest moved up */
      memmove(c->out.data, c->out.data + n, c->out.len);
      conn_wrote(c);
    }
    if (c->out.len == 0 && c->out.cap > OUT_KEEP_MAX) {
      dht_buf_free(&c->out); /* a burst's buffer is not kept for good */
      dht_buf_init(&c->out);
      conn_mem_update(c);
    }
    if (c->out.len == 0 || c->closing) {
      return;
    }
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
  c->out_inflight_cap += w->buf.cap;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &buf, 1, on_write) != 0) {
    c->out_inflight -= w->buf.len;
    c->out_inflight_cap -= w->buf.cap;
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
  conn_mem_update(c);
}

/* Writes what waits on the links this node opened, and leaves the rest on
 * the flush list. Those links carry only this node's requests (a peer's
 * answers come back on them, and a peer's requests arrive on links the
 * peer opened), so nothing written there answers anyone. */
static void write_requests(dhtd_net *net) {
  dhtd_conn **link = &net->dirty_head, *c;

  while ((c = *link) != NULL) {
    if (c->outgoing) {
      *link = c->next_dirty;
      c->dirty = false;
      conn_write(c);
    } else {
      link = &c->next_dirty;
    }
  }
}

/* Once per loop iteration: send this node's requests to its peers, make
 * the store durable, tell the node how that went (it then releases the
 * acknowledgements it held back, or turns them into refusals), then write
 * everything else the node produced. The requests go before the commit so
 * that a write's REPLICATE reaches its replicas while this node's fsync
 * runs: the owner's commit and the replicas' overlap. No request vouches
 * for durability; every answer that does (OK to a write, a REPLICATE, a
 * HANDOFF) is held by the node until dht_node_commit_done, and every
 * other answer, a read's included, still goes out after the commit. */
static void on_flush(uv_check_t *check) {
  dhtd_net *net = check->data;
  dhtd_conn *c, *next;
  int rv;

  uv_idle_stop(&net->wake);
  write_requests(net);
  /* Commit even when nothing is to be written: the deletes that follow an
   * acknowledged hand-off produce no output, and left in the open
   * transaction a crash would bring the handed-off keys back. Committing
   * with nothing pending costs nothing. */
  if (net->cfg.store_commit != NULL) {
    rv = net->cfg.store_commit(net->cfg.store);
    /* A commit may take a while (fsync): the node must see the time after
     * it, for its deadlines and the latency of the writes it answers. */
    uv_update_time(net->loop);
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
      conn_reading_update(c);
    }
  }
  net->dirty_head = NULL;
  net->turn++;
  if (net->budget_any && !net->stopping) {
    uint32_t i;
    net->budget_any = false;
    for (i = 0; i < net->cap_conns; i++) {
      c = net->conns[i];
      if (c != NULL && c->paused_budget) {
        c->paused_budget = false;
        conn_reading_update(c); /* read again from the next poll on */
      }
    }
  }
  if (net->resume_any && !net->stopping) {
    uint32_t i;
    net->resume_any = false;
    for (i = 0; i < net->cap_conns; i++) {
      c = net->conns[i];
      if (c != NULL && c->resume_pending && !c->closing) {
        c->resume_pending = false;
        c->paused_inflight = false;
        conn_drain(c);
        conn_reading_update(c);
      }
    }
  }
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

/* The message type of a frame body, read cheaply where the sender wrote
 * "v" and "t" first (as libdht's encoder does), else by decoding it;
 * -1 when it has none. */
static int frame_type(dhtd_net *net, const uint8_t *b, size_t len) {
  dht_msg msg;
  int t = dht_msg_peek_type(b, len);

  if (t >= 0) {
    return t;
  }
  memset(&msg, 0, sizeof(msg));
  dht_msg_decode(&msg, b, len, &net->limits);
  if (dht_msg_can_reply(&msg)) {
    t = (int)msg.type;
  }
  dht_msg_free(&msg);
  return t;
}

/* What a client may send (docs/SECURITY.md, Roles). */
static bool type_is_client(int t) {
  return t == DHT_MSG_PING || t == DHT_MSG_FIND_SUCC || t == DHT_MSG_GET ||
         t == DHT_MSG_PUT || t == DHT_MSG_DEL || t == DHT_MSG_STATS;
}

/* A request expects a reply: not a reply, not NOTIFY. Unknown types count
 * as requests (the node answers them with an ERROR when it can). */
static bool type_is_request(int t) {
  return !dht_msg_type_is_reply(t) && t != DHT_MSG_NOTIFY;
}

/* Answers a request refused by the rate limit with ERROR FULL, when it is
 * one that can be answered. */
static void refuse_rate(dhtd_conn *c, const uint8_t *body, size_t len) {
  dht_msg msg, err;
  dht_buf out;
  static const char why[] = "request rate of this address over its limit "
                            "(--rate-per-addr): slow down";

  memset(&msg, 0, sizeof(msg));
  dht_msg_decode(&msg, body, len, &c->net->limits);
  if (dht_msg_can_reply(&msg) && type_is_request((int)msg.type)) {
    memset(&err, 0, sizeof(err));
    err.version = DHT_PROTOCOL_VERSION;
    err.type = DHT_MSG_ERROR;
    err.rid = msg.rid;
    err.error_code = DHT_ERR_FULL;
    err.error_msg.p = (const uint8_t *)why;
    err.error_msg.len = sizeof(why) - 1;
    dht_buf_init(&out);
    if (dht_msg_encode(&err, &out) == 0) {
      conn_queue(c, out.data, out.len);
    }
    dht_buf_free(&out);
  }
  dht_msg_free(&msg);
}

/* c (accepted) proved to be a peer link: it moves to the peers' budget if
 * there is room (else it stays a client: only a budget, never a refusal). */
static void conn_promote(dhtd_conn *c) {
  dhtd_net *net = c->net;

  if (c->cls == CLS_PROBATION) {
    c->cls = CLS_PEER;
  } else if (c->cls == CLS_CLIENT && net->n_peers_in < net->cfg.peer_conns_max) {
    net->n_clients--;
    net->n_peers_in++;
    c->cls = CLS_PEER;
    c->inflight = 0;
    if (c->paused_inflight) {
      c->paused_inflight = false;
      c->resume_pending = true;
      net->resume_any = true;
    }
  }
}

/* A connection on probation turned out a client while clients' budget is
 * full: closed, counted, logged once for its address. */
static void conn_refuse_probation(dhtd_conn *c, const char *why) {
  dhtd_net *net = c->net;

  limit_hit(net, c->ae, DHT_LIMIT_CONNS,
            "closing conn %llu: %s, and %u client connections are open "
            "(--max-client-conns)",
            (unsigned long long)c->id, why, net->n_clients);
  conn_close(c, false);
}

/* One whole frame body from c: classifies c by it, applies the limits of
 * client connections, and passes it to the node. */
static void deliver(dhtd_conn *c, dht_role role, const uint8_t *body,
                    size_t len) {
  dhtd_net *net = c->net;
  int t = -2;

  c->frames_seen++;
  if (!c->outgoing && (c->cls == CLS_CLIENT || c->cls == CLS_PROBATION)) {
    t = frame_type(net, body, len);
    if (c->seal == NULL && t >= 0 && !type_is_client(t)) {
      conn_promote(c); /* open ring: only ring members send this */
    } else if (c->cls == CLS_PROBATION && t != DHT_MSG_PING) {
      conn_refuse_probation(c, "a client (not a peer link) came while "
                               "clients' budget was full");
      return;
    }
  }
  if (c->cls == CLS_CLIENT && type_is_request(t)) {
    if (c->ae != NULL && !addr_take_token(net, c->ae)) {
      limit_hit(net, c->ae, DHT_LIMIT_RATE,
                "refusing requests: over %u per second (--rate-per-addr, "
                "burst %u)",
                net->cfg.rate_per_s, net->cfg.rate_burst);
      refuse_rate(c, body, len);
      return;
    }
    c->inflight++;
  }
  if (c->seal != NULL) {
    dht_node_recv_as(net->cfg.node, c->id, role, body, len, now_ms(net));
  } else {
    dht_node_recv(net->cfg.node, c->id, body, len, now_ms(net));
  }
  run_actions(net);
}

/* Feeds c's buffered input to the node, frame by frame, while no limit
 * holds it back; then restarts the frame deadline if a part of one is
 * left. A broken stream closes c. */
static void conn_drain(dhtd_conn *c) {
  dhtd_net *net = c->net;
  bool progressed = false, held = false;
  size_t body_len, left;
  const uint8_t *frame;
  int rv;

  while (!c->closing) {
    if (!c->outgoing &&
        c->out.len + c->out_inflight > net->cfg.out_queue_pause) {
      /* Replies back up: take no more requests until they drain. */
      if (!c->reading_paused) {
        c->reading_paused = true;
        conn_reading_update(c);
      }
      held = true;
      break;
    }
    if (c->cls == CLS_CLIENT && net->cfg.inflight_max > 0 &&
        c->inflight >= net->cfg.inflight_max) {
      if (!c->paused_inflight) {
        c->paused_inflight = true;
        limit_hit(net, c->ae, DHT_LIMIT_INFLIGHT,
                  "not reading conn %llu: %u requests unanswered "
                  "(--max-inflight)",
                  (unsigned long long)c->id, c->inflight);
        conn_reading_update(c);
      }
      held = true;
      break;
    }
    if (c->seal != NULL) {
      rv = dht_seal_read(c->seal, &frame, &body_len);
      if (rv == 0) {
        break;
      }
      if (rv < 0) {
        conn_auth_failed(c, rv);
        conn_close(c, true);
        return;
      }
      progressed = true;
      deliver(c, dht_seal_role(c->seal), frame + DHT_FRAME_HEADER_LEN,
              body_len - DHT_FRAME_HEADER_LEN);
      continue;
    }
    left = c->in.len - c->in_off;
    rv = dht_frame_peek(c->in.data + c->in_off, left, net->cfg.frame_len_max,
                        &body_len);
    if (rv == DHT_ERR_TRUNCATED || (rv == 0 && left < DHT_FRAME_HEADER_LEN + body_len)) {
      break;
    }
    if (rv != 0) {
      dhtd_log(DHT_LOG_WARN, "conn %llu: frame of more than %u bytes: closing",
               (unsigned long long)c->id, net->cfg.frame_len_max);
      conn_close(c, true);
      return;
    }
    progressed = true;
    frame = c->in.data + c->in_off + DHT_FRAME_HEADER_LEN;
    c->in_off += DHT_FRAME_HEADER_LEN + body_len;
    /* Nothing appends to c->in before this returns (reads come only from
     * the loop), and a close frees it only in the close callback. */
    deliver(c, DHT_ROLE_MEMBER, frame, body_len);
  }
  if (c->closing) {
    return;
  }
  if (c->in_off == c->in.len) {
    c->in.len = 0;
    c->in_off = 0;
    if (c->in.cap > IN_BUF_KEEP_BYTES) {
      dht_buf_free(&c->in); /* a large frame's room is not kept idle */
    }
  } else if (c->in_off > c->in.len / 2) {
    memmove(c->in.data, c->in.data + c->in_off, c->in.len - c->in_off);
    c->in.len -= c->in_off;
    c->in_off = 0;
  }
  left = c->seal != NULL ? dht_seal_in_len(c->seal) : c->in.len - c->in_off;
  if (left == 0 || held) {
    c->frame_started_ms = 0; /* nothing partial, or held back by us */
  } else if (c->frame_started_ms == 0 || progressed) {
    c->frame_started_ms = now_ms(net);
  }
  conn_mem_update(c);
}

/* Counts n bytes read from c in this loop iteration; once they reach its
 * budget, c is not read again before the next (on_flush resumes it). What
 * was read is processed all the same. */
static void read_budget_take(dhtd_conn *c, size_t n) {
  dhtd_net *net = c->net;

  if (c->turn != net->turn) {
    c->turn = net->turn;
    c->turn_bytes = 0;
  }
  c->turn_bytes += n;
  if (c->turn_bytes >= READ_BUDGET_BYTES && !c->paused_budget) {
    c->paused_budget = true;
    net->budget_any = true;
    dht_node_count_limit(net->cfg.node, DHT_LIMIT_READ_BUDGET);
    conn_reading_update(c);
  }
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  dhtd_conn *c = stream->data;
  dhtd_net *net = c->net;
  size_t out_before;
  int rv;

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
  c->last_active_ms = now_ms(net);
  if (c->ae != NULL) {
    c->ae->last_ms = c->last_active_ms;
  }
  read_budget_take(c, (size_t)nread);
  if (c->seal != NULL) {
    bool was_established = dht_seal_established(c->seal);
    out_before = c->out.len;
    rv = dht_seal_recv(c->seal, (const uint8_t *)buf->base, (size_t)nread,
                       &c->out, now_ms(net));
    if (c->out.len > out_before) {
      conn_mark_dirty(c); /* the handshake's answer */
    }
    if (rv < 0) {
      conn_auth_failed(c, rv);
      conn_close(c, true);
      return;
    }
    if (!was_established && dht_seal_established(c->seal) && !c->outgoing) {
      if (dht_seal_role(c->seal) == DHT_ROLE_MEMBER) {
        conn_promote(c);
      } else if (c->cls == CLS_PROBATION) {
        conn_refuse_probation(c, "a client key came while clients' budget "
                                 "was full");
        return;
      }
    }
  } else if (dht_buf_append(&c->in, buf->base, (size_t)nread) != 0) {
    conn_close(c, true);
    return;
  }
  conn_drain(c);
}

/* ---- outgoing connections ---------------------------------------------------- */

static void on_connect(uv_connect_t *req, int status) {
  dhtd_conn *c = req->data;

  if (status != 0) {
    if (status != UV_ECANCELED) {
      dhtd_log_peer(DHT_LOG_DEBUG, c->addr, "connect to %s: %s", c->addr,
                    uv_strerror(status));
    }
    conn_close(c, true);
    return;
  }
  c->connected = true;
  c->last_active_ms = now_ms(c->net);
  uv_tcp_nodelay(&c->tcp, 1); /* small request frames must not wait */
  conn_reading_update(c);
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
    dhtd_log_peer(DHT_LOG_DEBUG, c->addr, "connect to %s: %s", c->addr,
                  uv_strerror(rv));
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
    dhtd_log_peer(DHT_LOG_WARN, c->addr, "cannot resolve %s: %s", c->addr,
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
  if (dht_addr_parse(addr, host, sizeof(host), &port) != 0) {
    return NULL;
  }
  if (net->n_out >= net->cfg.peer_conns_max) {
    dht_node_count_limit(net->cfg.node, DHT_LIMIT_CONNS);
    if (!net->out_logged) {
      dhtd_log(DHT_LOG_WARN, "not opening a link to %s: %u links open "
               "(--max-peer-conns; later ones only counted: limit_conns)",
               addr, net->n_out);
      net->out_logged = true;
    }
    return NULL;
  }
  if ((c = conn_new(net)) == NULL) {
    return NULL;
  }
  c->outgoing = true;
  c->cls = CLS_OUT;
  c->accounted = true;
  net->n_out++;
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
        if (c->cls == CLS_CLIENT && c->inflight > 0 &&
            frame_type(net, a.frame + DHT_FRAME_HEADER_LEN,
                       a.frame_len - DHT_FRAME_HEADER_LEN) !=
                DHT_MSG_ACCEPTED) {
          c->inflight--;
          if (c->paused_inflight && !c->resume_pending &&
              c->inflight <= net->cfg.inflight_max / 2) {
            c->resume_pending = true; /* in on_flush: not from in here */
            net->resume_any = true;
          }
        }
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
  addr_sweep(net, false);
  net->mem_logged = false;
  if (net->n_out < net->cfg.peer_conns_max) {
    net->out_logged = false;
  }
}

/* Ends what outlived its deadline: handshakes (closed ring), frames begun
 * and not finished, accepted connections idle too long, and those on
 * probation that never said what they are. */
static void on_hs_timer(uv_timer_t *timer) {
  dhtd_net *net = timer->data;
  uint64_t now = now_ms(net);
  uint32_t i;

  for (i = 0; i < net->cap_conns; i++) {
    dhtd_conn *c = net->conns[i];
    if (c == NULL || c->closing) {
      continue;
    }
    if (c->seal != NULL && now >= dht_seal_deadline(c->seal)) {
      conn_auth_failed(c, DHT_ERR_TIMEOUT);
      conn_close(c, true);
      continue;
    }
    if (c->outgoing) {
      continue;
    }
    if (c->frame_started_ms != 0 &&
        now - c->frame_started_ms >= net->cfg.frame_timeout_ms) {
      limit_hit(net, c->ae, DHT_LIMIT_FRAME_TIME,
                "closing conn %llu: a frame begun %llu ms ago is not "
                "finished (--frame-timeout-ms %u)",
                (unsigned long long)c->id,
                (unsigned long long)(now - c->frame_started_ms),
                net->cfg.frame_timeout_ms);
      conn_close(c, true);
      continue;
    }
    if (net->cfg.client_idle_ms > 0 && c->out.len == 0 &&
        c->out_inflight == 0 && c->inflight == 0 &&
        now - c->last_active_ms >= net->cfg.client_idle_ms) {
      limit_hit(net, c->ae, DHT_LIMIT_IDLE,
                "closing conn %llu: idle for %llu ms (--idle-timeout-ms)",
                (unsigned long long)c->id,
                (unsigned long long)(now - c->last_active_ms));
      conn_close(c, false);
      continue;
    }
    if (c->cls == CLS_PROBATION && c->frames_seen == 0 && c->seal == NULL &&
        now - c->accepted_ms >= net->cfg.handshake_timeout_ms) {
      conn_refuse_probation(c, "it sent nothing in --handshake-timeout-ms "
                               "while clients' budget was full");
    }
  }
}

/* ---- accepting ------------------------------------------------------------------ */

bool dhtd_refuse_one(uv_loop_t *loop, uv_stream_t *server) {
  uv_tcp_t *overflow = malloc(sizeof(*overflow));
  bool accepted = false;

  if (overflow != NULL && uv_tcp_init(loop, overflow) == 0) {
    accepted = uv_accept(server, (uv_stream_t *)overflow) == 0;
    uv_close((uv_handle_t *)overflow, (uv_close_cb)free);
  } else {
    free(overflow);
  }
  return accepted;
}

/* A connection the node cannot take (no memory for it) is refused off the
 * backlog, and counted. */
static void refuse_backlog(dhtd_net *net, uv_stream_t *server) {
  if (dhtd_refuse_one(net->loop, server)) {
    dht_node_count_limit(net->cfg.node, DHT_LIMIT_CONNS);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  dhtd_net *net = server->data;
  char name[64] = "?";
  uint8_t key[9];
  addr_entry *e;
  dhtd_conn *c;

  if (status != 0) {
    dhtd_log(DHT_LOG_WARN, "accept: %s", uv_strerror(status));
    return;
  }
  c = conn_new(net);
  if (c == NULL) {
    refuse_backlog(net, server);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c, false);
    return;
  }
  c->accepted_ms = now_ms(net);
  e = addr_key_of(c, key, name, sizeof(name)) ? addr_get(net, key, name)
                                               : NULL;
  if (e == NULL) {
    limit_hit(net, NULL, DHT_LIMIT_PER_ADDR,
              "refusing a connection from %s: the address table is full "
              "(%u addresses)", name, net->n_addrs);
    conn_close(c, false);
    return;
  }
  e->last_ms = c->accepted_ms;
  if (e->conns >= net->cfg.conns_per_addr_max) {
    limit_hit(net, e, DHT_LIMIT_PER_ADDR,
              "refusing connections: %u open from this address "
              "(--max-conns-per-addr)", e->conns);
    conn_close(c, false);
    return;
  }
  if (net->n_clients < net->cfg.client_conns_max) {
    c->cls = CLS_CLIENT;
    net->n_clients++;
  } else if (net->n_peers_in < net->cfg.peer_conns_max) {
    c->cls = CLS_PROBATION; /* may only be a peer link */
    net->n_peers_in++;
  } else {
    limit_hit(net, e, DHT_LIMIT_CONNS,
              "refusing connections: %u clients and %u peer links open "
              "(--max-client-conns, --max-peer-conns)",
              net->n_clients, net->n_peers_in);
    conn_close(c, false);
    return;
  }
  c->accounted = true;
  c->ae = e;
  e->conns++;
  uv_tcp_nodelay(&c->tcp, 1);
  /* Idle accepted connections are closed after --idle-timeout-ms, but
   * let the kernel find sooner the ones whose other end vanished. */
  uv_tcp_keepalive(&c->tcp, 1, 60);
  if (conn_seal(c, false) != 0) {
    conn_close(c, false);
    return;
  }
  c->connected = true;
  conn_reading_update(c);
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

int dhtd_listen_addr(const char *addr, struct sockaddr_storage *ss,
                     char *err, size_t err_len) {
  char host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port;

  if (dht_addr_parse(addr, host, sizeof(host), &port) != 0) {
    snprintf(err, err_len, "bad listen address '%s' (want HOST:PORT)", addr);
    return UV_EINVAL;
  }
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) != 0) {
    snprintf(err, err_len, "listen address '%s' must be a numeric IP address",
             addr);
    return UV_EINVAL;
  }
  return 0;
}

int dhtd_net_start(dhtd_net **out, uv_loop_t *loop, const dhtd_net_config *cfg,
                   char *err, size_t err_len) {
  struct sockaddr_storage ss;
  dhtd_net *net;
  int rv;

  rv = dhtd_listen_addr(cfg->listen_addr, &ss, err, err_len);
  if (rv != 0) {
    return rv;
  }
  net = calloc(1, sizeof(*net));
  if (net == NULL) {
    snprintf(err, err_len, "out of memory");
    return UV_ENOMEM;
  }
  net->cfg = *cfg;
  net->loop = loop;
  dht_wire_limits_default(&net->limits);
  net->limits.frame_len_max = cfg->frame_len_max;
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
  {
    uint64_t every = cfg->frame_timeout_ms;
    if (cfg->client_idle_ms > 0 && cfg->client_idle_ms < every) {
      every = cfg->client_idle_ms;
    }
    if (cfg->handshake_timeout_ms < every) {
      every = cfg->handshake_timeout_ms;
    }
    every = every / 4 + 1;
    if (every > 1000) {
      every = 1000;
    }
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
    addr_sweep(net, true);
    free(net->conns);
    free(net);
  }
}
