/*
 * test_client.c: unit tests for the blocking client library (dht/client.h)
 * over real loopback sockets, without a daemon.
 *
 * A tiny scripted server runs in a thread: it listens on 127.0.0.1 port 0,
 * accepts one connection (or a few, one after another) and plays a scenario:
 * answer ACCEPTED and then the final reply, answer nothing, close, answer
 * out of order one byte at a time, send a header claiming a 2 GiB frame, and
 * so on. Scenarios wait for the client's bytes or its close, never for time,
 * so nothing here sleeps to synchronise. The server thread does not call
 * cmocka (which is not thread-safe): it records what went wrong in
 * srv.fail, and the test checks that after joining it.
 *
 * Timing tests assert only a generous upper bound (5x the timeout), except
 * the retry tests, whose point is that the whole call stays within its
 * deadline (they allow 500 ms of slack). Retry tests that need the client
 * to come back after it closed use srv_start_multi: the server accepts
 * connections until the test opens the gate.
 */
#define _POSIX_C_SOURCE 200809L

/* cmocka.h needs these four first, in this order. */
/* clang-format off */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dht/client.h"
#include "dht/err.h"
#include "dht/wire.h"

#define MIB (1024u * 1024u)
#define TIMEOUT_MS 5000 /* for calls that are expected to succeed */
#define SHORT_MS 200    /* for calls that are expected to time out */
#define STORE_KEYS 8    /* keys the scripted server can hold */

/* ---- the scripted server ------------------------------------------------ */

typedef struct srv srv;
typedef void (*srv_fn)(srv *s, int fd);

struct srv {
  int lfd;          /* listening socket */
  uint16_t port;    /* its port */
  char addr[32];    /* "127.0.0.1:PORT" */
  srv_fn fn;        /* the scenario, run once per accepted connection */
  int n_conns;      /* connections to accept, one after another */
  bool multi;       /* accept until the gate opens, n_conns is ignored */
  int arg;          /* a number for the scenario, set before it starts */
  int conn_index;   /* which one fn is serving (0-based) */
  int gate[2];      /* a pipe the test writes to when a scenario may go on */
  pthread_t thread; /* runs srv_main */
  char fail[256];   /* first thing that went wrong in the thread, or "" */
  int requests;     /* requests the scenario received */
  /* A tiny store for the key-value scenario. */
  struct {
    bool used;
    uint8_t *key, *value;
    size_t key_len, value_len;
  } kv[STORE_KEYS];
};

static void srv_failf(srv *s, const char *what) {
  if (s->fail[0] == '\0') {
    snprintf(s->fail, sizeof(s->fail), "%s", what);
  }
}

/* Reads exactly len bytes. Returns 0, or -1 on EOF or error. */
static int read_full(int fd, void *buf, size_t len) {
  uint8_t *p = buf;
  ssize_t n;

  while (len > 0) {
    n = read(fd, p, len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int write_full(int fd, const void *buf, size_t len) {
  const uint8_t *p = buf;
  ssize_t n;

  while (len > 0) {
    n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Reads and decodes one request. *body holds the bytes msg borrows; free
 * it after dht_msg_free(msg). Returns 0, or -1 on EOF or a bad frame. */
static int srv_recv(srv *s, int fd, dht_msg *msg, uint8_t **body) {
  dht_wire_limits lim;
  uint8_t hdr[DHT_FRAME_HEADER_LEN];
  size_t len;

  *body = NULL;
  memset(msg, 0, sizeof(*msg));
  dht_wire_limits_default(&lim);
  if (read_full(fd, hdr, sizeof(hdr)) != 0) {
    return -1;
  }
  if (dht_frame_peek(hdr, sizeof(hdr), lim.frame_len_max, &len) != 0) {
    srv_failf(s, "client sent an oversized frame");
    return -1;
  }
  *body = malloc(len > 0 ? len : 1);
  if (*body == NULL || read_full(fd, *body, len) != 0) {
    srv_failf(s, "short frame from the client");
    return -1;
  }
  if (dht_msg_decode(msg, *body, len, &lim) != 0) {
    srv_failf(s, "client sent a frame that does not decode");
    return -1;
  }
  s->requests++;
  return 0;
}

static void srv_done(dht_msg *msg, uint8_t *body) {
  dht_msg_free(msg);
  free(body);
}

/* Encodes msg into buf (appending). */
static void frame_append(srv *s, dht_buf *buf, const dht_msg *msg) {
  if (dht_msg_encode(msg, buf) != 0) {
    srv_failf(s, "server could not encode a reply");
  }
}

static void srv_send(srv *s, int fd, const dht_msg *msg) {
  dht_buf buf;

  dht_buf_init(&buf);
  frame_append(s, &buf, msg);
  if (write_full(fd, buf.data, buf.len) != 0) {
    srv_failf(s, "server write failed");
  }
  dht_buf_free(&buf);
}

static void srv_send_type(srv *s, int fd, dht_msg_type type, uint64_t rid) {
  dht_msg m;

  memset(&m, 0, sizeof(m));
  m.type = type;
  m.rid = rid;
  srv_send(s, fd, &m);
}

static void srv_send_error(srv *s, int fd, uint64_t rid, int code,
                           const char *text) {
  dht_msg m;

  memset(&m, 0, sizeof(m));
  m.type = DHT_MSG_ERROR;
  m.rid = rid;
  m.error_code = code;
  m.error_msg.p = (const uint8_t *)text;
  m.error_msg.len = strlen(text);
  srv_send(s, fd, &m);
}

/* Blocks until the client closes its end (or the test opens the gate). */
static void srv_wait_eof(int fd) {
  uint8_t b[4096];

  while (read(fd, b, sizeof(b)) > 0) {
  }
}

static void srv_wait_gate(srv *s) {
  char b;

  while (read(s->gate[0], &b, 1) < 0 && errno == EINTR) {
  }
}

/* Accepts connections one after another until the gate opens. */
static void srv_main_multi(srv *s) {
  struct pollfd pfd[2];
  int fd;

  for (s->conn_index = 0;; s->conn_index++) {
    pfd[0].fd = s->lfd;
    pfd[0].events = POLLIN;
    pfd[1].fd = s->gate[0];
    pfd[1].events = POLLIN;
    pfd[0].revents = pfd[1].revents = 0;
    if (poll(pfd, 2, -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      srv_failf(s, "poll failed");
      return;
    }
    if (pfd[1].revents != 0) {
      return;
    }
    fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
      srv_failf(s, "accept failed");
      return;
    }
    s->fn(s, fd);
    close(fd);
  }
}

static void *srv_main(void *arg) {
  srv *s = arg;
  int fd;

  if (s->multi) {
    srv_main_multi(s);
    return NULL;
  }
  for (s->conn_index = 0; s->conn_index < s->n_conns; s->conn_index++) {
    fd = accept(s->lfd, NULL, NULL);
    if (fd < 0) {
      srv_failf(s, "accept failed");
      break;
    }
    s->fn(s, fd);
    close(fd);
  }
  return NULL;
}

static void srv_start_full(srv *s, srv_fn fn, int n_conns, bool multi,
                           int arg) {
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);

  memset(s, 0, sizeof(*s));
  s->fn = fn;
  s->n_conns = n_conns;
  s->multi = multi;
  s->arg = arg;
  s->lfd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(s->lfd >= 0);
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = 0;
  assert_int_equal(bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(listen(s->lfd, 8), 0);
  assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sin, &len), 0);
  s->port = ntohs(sin.sin_port);
  snprintf(s->addr, sizeof(s->addr), "127.0.0.1:%u", (unsigned)s->port);
  assert_int_equal(pipe(s->gate), 0);
  assert_int_equal(pthread_create(&s->thread, NULL, srv_main, s), 0);
}

static void srv_start_n(srv *s, srv_fn fn, int n_conns) {
  srv_start_full(s, fn, n_conns, false, 0);
}

static void srv_start(srv *s, srv_fn fn) { srv_start_n(s, fn, 1); }

/* Any number of connections, until srv_stop_multi. */
static void srv_start_multi(srv *s, srv_fn fn, int arg) {
  srv_start_full(s, fn, 0, true, arg);
}

static void srv_open_gate(srv *s) {
  assert_int_equal(write(s->gate[1], "x", 1), 1);
}

/* Ends a multi server (after its clients closed) and joins it. */
static void srv_stop_multi(srv *s);

/* Joins the thread and checks that it saw nothing wrong. */
static void srv_join(srv *s) {
  size_t i;

  assert_int_equal(pthread_join(s->thread, NULL), 0);
  close(s->lfd);
  close(s->gate[0]);
  close(s->gate[1]);
  for (i = 0; i < STORE_KEYS; i++) {
    free(s->kv[i].key);
    free(s->kv[i].value);
  }
  if (s->fail[0] != '\0') {
    fail_msg("server: %s", s->fail);
  }
}

static void srv_stop_multi(srv *s) {
  srv_open_gate(s);
  srv_join(s);
}

static dht_id id_n(unsigned n) {
  dht_id id;
  unsigned i;

  for (i = 0; i < DHT_ID_LEN; i++) {
    id.b[i] = (uint8_t)(n * 31u + i * 7u + 1u);
  }
  return id;
}

static dht_peer_ref peer_n(unsigned n, const char *addr) {
  dht_peer_ref p;

  p.id = id_n(n);
  p.addr.p = (const uint8_t *)addr;
  p.addr.len = strlen(addr);
  return p;
}

static int64_t mono_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dht_client *client_for(const char *addr) {
  dht_client *c = NULL;

  assert_int_equal(dht_client_new(&c, addr, NULL), 0);
  assert_non_null(c);
  return c;
}

/* ---- scenarios ---------------------------------------------------------- */

/* PING -> PONG, then anything else until EOF also gets a PONG. */
static void s_pong(srv *s, int fd) {
  dht_peer_ref me = peer_n(1, "127.0.0.1:1");
  uint8_t *body;
  dht_msg req, m;

  while (srv_recv(s, fd, &req, &body) == 0) {
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_PONG;
    m.rid = req.rid;
    m.peer = me;
    srv_send(s, fd, &m);
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

static int kv_find(srv *s, const dht_msg *req) {
  int i;

  for (i = 0; i < STORE_KEYS; i++) {
    if (s->kv[i].used && s->kv[i].key_len == req->key.len &&
        memcmp(s->kv[i].key, req->key.p, req->key.len) == 0) {
      return i;
    }
  }
  return -1;
}

static void kv_put(srv *s, const dht_msg *req) {
  int i = kv_find(s, req);

  if (i < 0) {
    for (i = 0; i < STORE_KEYS && s->kv[i].used; i++) {
    }
    if (i == STORE_KEYS) {
      srv_failf(s, "test store is full");
      return;
    }
    s->kv[i].used = true;
    s->kv[i].key = malloc(req->key.len);
    memcpy(s->kv[i].key, req->key.p, req->key.len);
    s->kv[i].key_len = req->key.len;
  }
  free(s->kv[i].value);
  s->kv[i].value = malloc(req->value.len > 0 ? req->value.len : 1);
  if (req->value.len > 0) {
    memcpy(s->kv[i].value, req->value.p, req->value.len);
  }
  s->kv[i].value_len = req->value.len;
}

/* A key-value node that forwards everything: ACCEPTED, then the answer. */
static void s_kv(srv *s, int fd) {
  uint8_t *body;
  dht_msg req, m;
  int i;

  while (srv_recv(s, fd, &req, &body) == 0) {
    srv_send_type(s, fd, DHT_MSG_ACCEPTED, req.rid);
    memset(&m, 0, sizeof(m));
    m.rid = req.rid;
    m.hops = 2;
    i = kv_find(s, &req);
    switch (req.type) {
    case DHT_MSG_PUT:
      kv_put(s, &req);
      m.type = DHT_MSG_OK;
      srv_send(s, fd, &m);
      break;
    case DHT_MSG_GET:
      if (i < 0) {
        srv_send_error(s, fd, req.rid, DHT_ERR_NOT_FOUND, "key not found");
        break;
      }
      m.type = DHT_MSG_VALUE;
      m.value.p = s->kv[i].value;
      m.value.len = s->kv[i].value_len;
      srv_send(s, fd, &m);
      break;
    case DHT_MSG_DEL:
      if (i < 0) {
        srv_send_error(s, fd, req.rid, DHT_ERR_NOT_FOUND, "key not found");
        break;
      }
      free(s->kv[i].key);
      free(s->kv[i].value);
      memset(&s->kv[i], 0, sizeof(s->kv[i]));
      m.type = DHT_MSG_OK;
      srv_send(s, fd, &m);
      break;
    default:
      srv_send_error(s, fd, req.rid, DHT_ERR_UNEXPECTED, "not here");
      break;
    }
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* Reads one request and never answers; returns when the client closes. */
static void s_silent(srv *s, int fd) {
  uint8_t *body;
  dht_msg req;

  if (srv_recv(s, fd, &req, &body) != 0) {
    srv_failf(s, "no request arrived");
  }
  srv_done(&req, body);
  srv_wait_eof(fd);
}

/* Reads one request, then hangs up. */
static void s_hangup(srv *s, int fd) {
  uint8_t *body;
  dht_msg req;

  if (srv_recv(s, fd, &req, &body) != 0) {
    srv_failf(s, "no request arrived");
  }
  srv_done(&req, body);
}

/* Answers the first request with a header that claims a 2 GiB body. */
static void s_huge(srv *s, int fd) {
  static const uint8_t hdr[] = {0x80, 0x00, 0x00, 0x00, 0x81, 0xa1, 0x76};
  uint8_t *body;
  dht_msg req;

  if (srv_recv(s, fd, &req, &body) != 0) {
    srv_failf(s, "no request arrived");
  }
  srv_done(&req, body);
  if (write_full(fd, hdr, sizeof(hdr)) != 0) {
    srv_failf(s, "write failed");
  }
  srv_wait_eof(fd);
}

/* Reads three requests, then answers them last first, each after an
 * ACCEPTED, one byte per write so that the client must reassemble. */
static void s_reorder(srv *s, int fd) {
  uint8_t *bodies[3];
  dht_msg reqs[3], m;
  dht_peer_ref me = peer_n(3, "127.0.0.1:3");
  dht_buf out;
  size_t i;
  int k;

  dht_buf_init(&out);
  for (k = 0; k < 3; k++) {
    if (srv_recv(s, fd, &reqs[k], &bodies[k]) != 0) {
      srv_failf(s, "fewer than 3 requests");
      srv_done(&reqs[k], bodies[k]);
      while (--k >= 0) {
        srv_done(&reqs[k], bodies[k]);
      }
      dht_buf_free(&out);
      return;
    }
  }
  for (k = 2; k >= 0; k--) {
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_ACCEPTED;
    m.rid = reqs[k].rid;
    frame_append(s, &out, &m);
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_FIND_SUCC_R;
    m.rid = reqs[k].rid;
    m.peer = me;
    m.hops = (uint32_t)k;
    frame_append(s, &out, &m);
  }
  for (i = 0; i < out.len; i++) {
    if (write_full(fd, out.data + i, 1) != 0) {
      srv_failf(s, "write failed");
      break;
    }
  }
  for (k = 0; k < 3; k++) {
    srv_done(&reqs[k], bodies[k]);
  }
  dht_buf_free(&out);
  srv_wait_eof(fd);
}

/* Answers STATS, GET_NEIGHBORS and FIND_SUCC (with ACCEPTED first) from a
 * fixed, made-up routing state, until EOF. */
static void s_info(srv *s, int fd) {
  dht_peer_ref me = peer_n(10, "127.0.0.1:7000");
  dht_peer_ref succs[2], preds[3], path[3];
  dht_finger_ref fingers[3];
  dht_counter counters[3];
  static const char *names[3] = {"keys", "pending", "state"};
  uint8_t *body;
  dht_msg req, m;
  unsigned i;

  succs[0] = peer_n(11, "127.0.0.1:7001");
  succs[1] = peer_n(12, "[::1]:7002");
  preds[0] = peer_n(9, "127.0.0.1:6999");
  preds[1] = peer_n(8, "127.0.0.1:6998");
  preds[2] = peer_n(7, "127.0.0.1:6997");
  for (i = 0; i < 3; i++) {
    path[i] = peer_n(20 + i, "10.0.0.1:4000");
    fingers[i].start_bit = i * 50;
    fingers[i].peer = peer_n(30 + i, "10.0.0.2:4000");
    counters[i].name.p = (const uint8_t *)names[i];
    counters[i].name.len = strlen(names[i]);
    counters[i].value = 42 + i;
  }
  while (srv_recv(s, fd, &req, &body) == 0) {
    memset(&m, 0, sizeof(m));
    m.rid = req.rid;
    m.peer = me;
    m.has_pred = true;
    m.pred = peer_n(9, "127.0.0.1:6999");
    m.succs = succs;
    m.n_succs = 2;
    m.preds = preds;
    m.n_preds = 3;
    switch (req.type) {
    case DHT_MSG_STATS:
      m.type = DHT_MSG_STATS_R;
      m.fingers = fingers;
      m.n_fingers = 3;
      m.counters = counters;
      m.n_counters = 3;
      srv_send(s, fd, &m);
      break;
    case DHT_MSG_GET_NEIGHBORS:
      m.type = DHT_MSG_NEIGHBORS;
      m.has_pred = false;
      m.n_preds = 2;
      srv_send(s, fd, &m);
      break;
    case DHT_MSG_FIND_SUCC:
      srv_send_type(s, fd, DHT_MSG_ACCEPTED, req.rid);
      memset(&m, 0, sizeof(m));
      m.type = DHT_MSG_FIND_SUCC_R;
      m.rid = req.rid;
      m.peer = peer_n(11, "127.0.0.1:7001");
      m.hops = 3;
      if (req.trace) {
        m.path = path;
        m.n_path = 3;
      }
      if (!dht_id_eq(&req.target, &me.id)) {
        srv_failf(s, "FIND_SUCC target is not the one sent");
      }
      srv_send(s, fd, &m);
      break;
    default:
      srv_send_error(s, fd, req.rid, DHT_ERR_UNEXPECTED, "not here");
      break;
    }
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* For each request: a stale reply (another rid), a PING from the server
 * (a request, which clients skip), a garbled frame, an ACCEPTED, and only
 * then the right reply (VALUE "fresh"). */
static void s_noise(srv *s, int fd) {
  static const uint8_t garbled[] = {0x00, 0x00, 0x00, 0x01, 0xc1};
  uint8_t *body;
  dht_msg req, m;

  while (srv_recv(s, fd, &req, &body) == 0) {
    memset(&m, 0, sizeof(m));
    m.type = DHT_MSG_VALUE;
    m.rid = req.rid + 1000;
    m.value.p = (const uint8_t *)"stale";
    m.value.len = 5;
    srv_send(s, fd, &m);
    srv_send_type(s, fd, DHT_MSG_PING, req.rid);
    if (req.type == DHT_MSG_PING) {
      /* Pipelined test: the garbled frame must surface as an error. */
      if (write_full(fd, garbled, sizeof(garbled)) != 0) {
        srv_failf(s, "write failed");
      }
    }
    srv_send_type(s, fd, DHT_MSG_ACCEPTED, req.rid);
    memset(&m, 0, sizeof(m));
    m.rid = req.rid;
    if (req.type == DHT_MSG_PUT) {
      m.type = DHT_MSG_VALUE; /* wrong type for a PUT */
    } else if (req.type == DHT_MSG_PING) {
      m.type = DHT_MSG_PONG;
      m.peer = peer_n(1, "127.0.0.1:1");
    } else {
      m.type = DHT_MSG_VALUE;
    }
    m.value.p = (const uint8_t *)"fresh";
    m.value.len = 5;
    srv_send(s, fd, &m);
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* First connection: hang up at once, after the test has seen the
 * connection open. Second: answer pings. */
static void s_close_then_pong(srv *s, int fd) {
  if (s->conn_index == 0) {
    return;
  }
  s_pong(s, fd);
}

/* Never reads until the test opens the gate, so the client's socket
 * buffers fill up. */
static void s_stuck(srv *s, int fd) {
  srv_wait_gate(s);
  srv_wait_eof(fd);
}

/* Reads requests and never answers, until EOF (no request is fine: a
 * retrying client may connect just as its deadline passes). */
static void s_mute(srv *s, int fd) {
  uint8_t *body;
  dht_msg req;

  while (srv_recv(s, fd, &req, &body) == 0) {
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* Answers the first s->arg requests (over all connections) with ERROR
 * UNAVAILABLE, the next ones as s_kv does. */
static void s_flaky(srv *s, int fd) {
  uint8_t *body;
  dht_msg req, m;

  while (srv_recv(s, fd, &req, &body) == 0) {
    if (s->requests <= s->arg) {
      srv_send_error(s, fd, req.rid, DHT_ERR_UNAVAILABLE, "owner is gone");
    } else if (req.type == DHT_MSG_GET) {
      memset(&m, 0, sizeof(m));
      m.type = DHT_MSG_VALUE;
      m.rid = req.rid;
      m.value.p = (const uint8_t *)"v";
      m.value.len = 1;
      srv_send(s, fd, &m);
    } else {
      srv_send_type(s, fd, DHT_MSG_OK, req.rid);
    }
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* Answers every request with ERROR s->arg. */
static void s_error(srv *s, int fd) {
  uint8_t *body;
  dht_msg req;

  while (srv_recv(s, fd, &req, &body) == 0) {
    srv_send_error(s, fd, req.rid, s->arg, "no");
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* SCAN: from == id_n(5) and limit == 3 get three records and more; any
 * other SCAN gets ERROR UNKNOWN_TYPE, as from a node that predates it. */
static void s_scan(srv *s, int fd) {
  static const char *keys[3] = {"alpha", "b", "tomb"};
  dht_id want = id_n(5);
  dht_kv items[3];
  uint8_t *body;
  dht_msg req, m;
  unsigned i;

  memset(items, 0, sizeof(items));
  for (i = 0; i < 3; i++) {
    items[i].key.p = (const uint8_t *)keys[i];
    items[i].key.len = strlen(keys[i]);
    items[i].has_version = i > 0;
    items[i].version.hlc = 1000u + i;
    items[i].version.writer = id_n(40 + i);
    items[i].tombstone = i == 2;
  }
  while (srv_recv(s, fd, &req, &body) == 0) {
    if (req.type == DHT_MSG_SCAN && dht_id_eq(&req.from, &want) &&
        req.limit == 3) {
      memset(&m, 0, sizeof(m));
      m.type = DHT_MSG_SCAN_R;
      m.rid = req.rid;
      m.items = items;
      m.n_items = 3;
      m.more = true;
      srv_send(s, fd, &m);
    } else {
      srv_send_error(s, fd, req.rid, DHT_ERR_UNKNOWN_TYPE, "what is that");
    }
    srv_done(&req, body);
  }
  srv_done(&req, body);
}

/* ---- tests: address parsing --------------------------------------------- */

static void parse_ok(const char *addr, const char *want_host,
                     uint16_t want_port) {
  char host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port = 0;

  if (dht_addr_parse(addr, host, sizeof(host), &port) != 0) {
    fail_msg("'%s' should parse", addr);
  }
  assert_string_equal(host, want_host);
  assert_int_equal(port, want_port);
}

static void parse_bad(const char *addr) {
  char host[DHT_ADDR_LEN_MAX + 1] = "untouched";
  uint16_t port = 77;

  if (dht_addr_parse(addr, host, sizeof(host), &port) != DHT_ERR_INVAL) {
    fail_msg("'%s' should be refused", addr);
  }
  assert_string_equal(host, "untouched");
  assert_int_equal(port, 77);
}

static void test_addr_parse_good(void **state) {
  (void)state;
  parse_ok("127.0.0.1:7000", "127.0.0.1", 7000);
  parse_ok("0.0.0.0:1", "0.0.0.0", 1);
  parse_ok("10.1.2.3:65535", "10.1.2.3", 65535);
  parse_ok("[::1]:7000", "::1", 7000);
  parse_ok("[::]:80", "::", 80);
  parse_ok("[2001:db8::1:2]:443", "2001:db8::1:2", 443);
  parse_ok("[::ffff:10.0.0.1]:9", "::ffff:10.0.0.1", 9);
  parse_ok("[fe80::1%eth0]:7000", "fe80::1%eth0", 7000);
  parse_ok("localhost:7000", "localhost", 7000);
  parse_ok("node-1.example.com:8080", "node-1.example.com", 8080);
  parse_ok("example.com.:8080", "example.com.", 8080);
  parse_ok("dht_node:1", "dht_node", 1);
  parse_ok("a:1", "a", 1);
}

static void test_addr_parse_bad(void **state) {
  static const char *bad[] = {
      "",
      ":",
      ":7000",
      "127.0.0.1",
      "127.0.0.1:",
      "127.0.0.1:0",
      "127.0.0.1:00",
      "127.0.0.1:07000",
      "127.0.0.1:65536",
      "127.0.0.1:99999",
      "127.0.0.1:123456",
      "127.0.0.1:-1",
      "127.0.0.1:+80",
      "127.0.0.1: 80",
      "127.0.0.1:80 ",
      " 127.0.0.1:80",
      "127.0.0.1:80x",
      "127.0.0.1:0x50",
      "127.0.0.1:80:80",
      "256.0.0.1:80",
      "1.2.3:80",
      "1.2.3.4.5:80",
      "::1:7000",
      "[::1]",
      "[::1]:",
      "[::1]7000",
      "[::1]:0",
      "[::1:7000",
      "[]:7000",
      "[1.2.3.4]:7000",
      "[localhost]:7000",
      "[::1%]:7000",
      "[::1%eth 0]:7000",
      "[::1]]:7000",
      "[[::1]]:7000",
      "host name:80",
      "host/x:80",
      "host..com:80",
      ".host:80",
      "host.com..:80",
      "ho\tst:80",
      "h\xc3\xa9llo:80",
  };
  char label[80], name[300];
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    parse_bad(bad[i]);
  }
  /* Labels of 64 bytes and names of 254 bytes are too long... */
  memset(label, 'a', 64);
  snprintf(label + 64, sizeof(label) - 64, ":80");
  parse_bad(label);
  memset(name, 'a', sizeof(name));
  for (i = 63; i < 254; i += 64) {
    name[i] = '.';
  }
  snprintf(name + 254, sizeof(name) - 254, ":1");
  parse_bad(name);
  /* ...and 63 and 253 are fine (253 + ":1" is the longest address). */
  snprintf(label + 63, sizeof(label) - 63, ":80");
  memset(label, 'a', 63);
  {
    char host[DHT_ADDR_LEN_MAX + 1];
    uint16_t port;
    assert_int_equal(dht_addr_parse(label, host, sizeof(host), &port), 0);
    snprintf(name + 253, sizeof(name) - 253, ":1");
    assert_int_equal(strlen(name), DHT_ADDR_LEN_MAX);
    assert_int_equal(dht_addr_parse(name, host, sizeof(host), &port), 0);
    assert_int_equal(strlen(host), 253);
  }
}

static void test_addr_parse_limits(void **state) {
  char host[DHT_ADDR_LEN_MAX + 1], small[4], big[1024];
  uint16_t port;

  (void)state;
  assert_int_equal(dht_addr_parse(NULL, host, sizeof(host), &port),
                   DHT_ERR_INVAL);
  assert_int_equal(dht_addr_parse("a:1", NULL, sizeof(host), &port),
                   DHT_ERR_INVAL);
  assert_int_equal(dht_addr_parse("a:1", host, sizeof(host), NULL),
                   DHT_ERR_INVAL);
  assert_int_equal(dht_addr_parse("a:1", host, 0, &port), DHT_ERR_INVAL);
  /* The host must fit, with its NUL. */
  assert_int_equal(dht_addr_parse("abc:1", small, sizeof(small), &port), 0);
  assert_string_equal(small, "abc");
  assert_int_equal(dht_addr_parse("abcd:1", small, sizeof(small), &port),
                   DHT_ERR_INVAL);
  assert_int_equal(dht_addr_parse("[::1]:1", small, sizeof(small), &port), 0);
  /* An overlong string is refused without being read to its end. */
  memset(big, 'a', sizeof(big));
  big[sizeof(big) - 1] = '\0';
  assert_int_equal(dht_addr_parse(big, host, sizeof(host), &port),
                   DHT_ERR_INVAL);
}

/* Every single-byte mutation of a few good addresses: no crash, and any
 * success leaves a port in range and a host that fits. */
static void test_addr_parse_mutations(void **state) {
  static const char *seeds[] = {"127.0.0.1:7000", "[::1]:7000",
                                "host.example:65535"};
  char buf[64], host[DHT_ADDR_LEN_MAX + 1];
  uint16_t port;
  size_t s, i;
  unsigned b;

  (void)state;
  for (s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++) {
    for (i = 0; i < strlen(seeds[s]); i++) {
      for (b = 1; b < 256; b++) {
        snprintf(buf, sizeof(buf), "%s", seeds[s]);
        buf[i] = (char)b;
        if (dht_addr_parse(buf, host, sizeof(host), &port) == 0) {
          assert_true(port >= 1);
          assert_true(strlen(host) < strlen(buf));
        }
      }
    }
  }
}

/* ---- tests: connecting -------------------------------------------------- */

static void test_new_bad_address(void **state) {
  dht_client *c = (dht_client *)1;

  (void)state;
  assert_int_equal(dht_client_new(&c, "nope", NULL), DHT_ERR_INVAL);
  assert_null(c);
  assert_int_equal(dht_client_new(&c, NULL, NULL), DHT_ERR_INVAL);
  dht_client_del(NULL);
}

/* "127.0.0.1:PORT" for a port that was just free (bound, noted, closed),
 * where a connect is refused. */
static void refused_addr(char *addr, size_t addr_len) {
  struct sockaddr_in sin;
  socklen_t len = sizeof(sin);
  int fd;

  fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  memset(&sin, 0, sizeof(sin));
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  close(fd);
  snprintf(addr, addr_len, "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
}

static void test_connect_refused(void **state) {
  char addr[32], want[96];
  dht_client *c;

  (void)state;
  refused_addr(addr, sizeof(addr));

  c = client_for(addr);
  assert_string_equal(dht_client_last_error(c), "");
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), DHT_ERR_UNAVAILABLE);
  snprintf(want, sizeof(want), "cannot reach %s: Connection refused", addr);
  assert_string_equal(dht_client_last_error(c), want);
  assert_false(dht_client_connected(c));
  assert_int_equal(dht_client_fd(c), -1);
  assert_int_equal(dht_client_connect(c, TIMEOUT_MS), DHT_ERR_UNAVAILABLE);
  dht_client_del(c);
}

/* A host name: "localhost" may resolve to ::1 first, where nothing
 * listens, and the client must go on to 127.0.0.1. */
static void test_connect_by_name(void **state) {
  char addr[32];
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_pong);
  snprintf(addr, sizeof(addr), "localhost:%u", (unsigned)s.port);
  c = client_for(addr);
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), 0);
  dht_client_del(c);
  srv_join(&s);
}

static void test_bad_arguments(void **state) {
  static uint8_t big[MIB + 1];
  char key[1026];
  uint8_t *v = (uint8_t *)1;
  size_t vlen = 9;
  dht_client *c;

  (void)state;
  memset(key, 'k', sizeof(key));
  /* Nothing listens there, but arguments are checked before connecting. */
  c = client_for("127.0.0.1:1");
  assert_int_equal(dht_client_put(c, "", 0, "v", 1, TIMEOUT_MS), DHT_ERR_INVAL);
  assert_int_equal(dht_client_put(c, NULL, 3, "v", 1, TIMEOUT_MS),
                   DHT_ERR_INVAL);
  assert_int_equal(dht_client_put(c, key, 1025, "v", 1, TIMEOUT_MS),
                   DHT_ERR_TOO_LARGE);
  assert_non_null(strstr(dht_client_last_error(c), "1025"));
  assert_int_equal(dht_client_put(c, "k", 1, big, MIB + 1, TIMEOUT_MS),
                   DHT_ERR_TOO_LARGE);
  assert_int_equal(dht_client_get(c, key, 1025, &v, &vlen, TIMEOUT_MS),
                   DHT_ERR_TOO_LARGE);
  assert_null(v);
  assert_int_equal(vlen, 0);
  assert_int_equal(dht_client_remove(c, "", 0, TIMEOUT_MS), DHT_ERR_INVAL);
  assert_int_equal(dht_client_ping(c, NULL, -1), DHT_ERR_INVAL);
  assert_int_equal(dht_client_connect(c, -1), DHT_ERR_INVAL);
  assert_false(dht_client_connected(c));
  dht_client_del(c);
}

/* ---- tests: calls ------------------------------------------------------- */

static void test_ping(void **state) {
  dht_client_peer node;
  dht_client *c;
  dht_id want = id_n(1);
  srv s;

  (void)state;
  srv_start(&s, s_pong);
  c = client_for(s.addr);
  assert_string_equal(dht_client_addr(c), s.addr);
  assert_int_equal(dht_client_ping(c, &node, TIMEOUT_MS), 0);
  assert_true(dht_id_eq(&node.id, &want));
  assert_string_equal(node.addr, "127.0.0.1:1");
  assert_true(dht_client_connected(c));
  /* The connection is reused. */
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), 0);
  dht_client_del(c);
  srv_join(&s);
  assert_int_equal(s.requests, 2);
}

static void test_put_get_del(void **state) {
  static const uint8_t bin[] = {0, 1, 2, 0xff, 0, '\n', 0x80};
  uint8_t *v;
  uint8_t *big;
  size_t vlen, i;
  dht_client *c;
  srv s;

  (void)state;
  big = malloc(MIB);
  assert_non_null(big);
  for (i = 0; i < MIB; i++) {
    big[i] = (uint8_t)(i * 7);
  }
  srv_start(&s, s_kv);
  c = client_for(s.addr);
  assert_int_equal(dht_client_put(c, "k", 1, bin, sizeof(bin), TIMEOUT_MS), 0);
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS), 0);
  assert_int_equal(vlen, sizeof(bin));
  assert_memory_equal(v, bin, sizeof(bin));
  free(v);
  /* An empty value is a non-NULL buffer of length 0. */
  assert_int_equal(dht_client_put(c, "e", 1, NULL, 0, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_get(c, "e", 1, &v, &vlen, TIMEOUT_MS), 0);
  assert_non_null(v);
  assert_int_equal(vlen, 0);
  free(v);
  /* The largest value there is. */
  assert_int_equal(dht_client_put(c, "big", 3, big, MIB, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_get(c, "big", 3, &v, &vlen, TIMEOUT_MS), 0);
  assert_int_equal(vlen, MIB);
  assert_memory_equal(v, big, MIB);
  free(v);
  /* Missing keys. */
  v = (uint8_t *)1;
  assert_int_equal(dht_client_get(c, "nope", 4, &v, &vlen, TIMEOUT_MS),
                   DHT_ERR_NOT_FOUND);
  assert_null(v);
  assert_non_null(strstr(dht_client_last_error(c), "NOT_FOUND"));
  assert_non_null(strstr(dht_client_last_error(c), "key not found"));
  assert_int_equal(dht_client_remove(c, "k", 1, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS),
                   DHT_ERR_NOT_FOUND);
  assert_int_equal(dht_client_remove(c, "k", 1, TIMEOUT_MS), DHT_ERR_NOT_FOUND);
  /* A failed call leaves the connection usable. */
  assert_int_equal(dht_client_get(c, "e", 1, &v, &vlen, TIMEOUT_MS), 0);
  free(v);
  dht_client_del(c);
  srv_join(&s);
  free(big);
}

static void test_timeout(void **state) {
  int64_t t0, elapsed;
  uint8_t *v;
  size_t vlen;
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_silent);
  c = client_for(s.addr);
  t0 = mono_ms();
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, SHORT_MS),
                   DHT_ERR_TIMEOUT);
  elapsed = mono_ms() - t0;
  assert_true(elapsed < 5 * SHORT_MS);
  assert_non_null(strstr(dht_client_last_error(c), "no reply"));
  /* The connection is kept after a timeout. */
  assert_true(dht_client_connected(c));
  /* A zero timeout does not wait at all. */
  t0 = mono_ms();
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, 0), DHT_ERR_TIMEOUT);
  assert_true(mono_ms() - t0 < 5 * SHORT_MS);
  dht_client_del(c); /* the server sees EOF and returns */
  srv_join(&s);
}

static void test_peer_hangs_up(void **state) {
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_hangup);
  c = client_for(s.addr);
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), DHT_ERR_UNAVAILABLE);
  assert_non_null(strstr(dht_client_last_error(c), "closed the connection"));
  assert_false(dht_client_connected(c));
  dht_client_del(c);
  srv_join(&s);
}

static void test_oversized_frame(void **state) {
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_huge);
  c = client_for(s.addr);
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), DHT_ERR_TOO_LARGE);
  assert_non_null(strstr(dht_client_last_error(c), "2147483648"));
  assert_false(dht_client_connected(c));
  dht_client_del(c);
  srv_join(&s);
}

static void test_reconnect_after_close(void **state) {
  const dht_msg *r;
  dht_client *c;
  srv s;

  (void)state;
  srv_start_n(&s, s_close_then_pong, 2);
  c = client_for(s.addr);
  assert_int_equal(dht_client_connect(c, TIMEOUT_MS), 0);
  assert_true(dht_client_connected(c));
  /* The node hangs up while the client is idle. */
  assert_int_equal(dht_client_recv(c, &r, TIMEOUT_MS), DHT_ERR_UNAVAILABLE);
  assert_null(r);
  assert_false(dht_client_connected(c));
  /* The next blocking call opens a new connection. */
  assert_int_equal(dht_client_ping(c, NULL, TIMEOUT_MS), 0);
  dht_client_del(c);
  srv_join(&s);
}

static void test_stats_neighbors_lookup(void **state) {
  dht_client_stats_result *st;
  dht_client_neighbors_result nb;
  dht_client_lookup_result lk;
  dht_id want, target = id_n(10);
  dht_client *c;
  uint64_t v;
  srv s;

  (void)state;
  st = malloc(sizeof(*st));
  assert_non_null(st);
  srv_start(&s, s_info);
  c = client_for(s.addr);

  assert_int_equal(dht_client_stats(c, st, TIMEOUT_MS), 0);
  want = id_n(10);
  assert_true(dht_id_eq(&st->node.id, &want));
  assert_string_equal(st->node.addr, "127.0.0.1:7000");
  assert_true(st->has_pred);
  assert_string_equal(st->pred.addr, "127.0.0.1:6999");
  assert_int_equal(st->n_succs, 2);
  assert_string_equal(st->succs[0].addr, "127.0.0.1:7001");
  assert_string_equal(st->succs[1].addr, "[::1]:7002");
  assert_int_equal(st->n_fingers, 3);
  assert_int_equal(st->fingers[2].start_bit, 100);
  assert_string_equal(st->fingers[2].peer.addr, "10.0.0.2:4000");
  assert_int_equal(st->n_counters, 3);
  assert_int_equal(dht_client_stats_counter(st, "keys", &v), 0);
  assert_int_equal(v, 42);
  assert_int_equal(dht_client_stats_counter(st, "state", &v), 0);
  assert_int_equal(v, 44);
  assert_int_equal(dht_client_stats_counter(st, "nope", &v), DHT_ERR_NOT_FOUND);
  assert_int_equal(st->n_preds, 3);
  assert_string_equal(st->preds[0].addr, "127.0.0.1:6999");
  want = id_n(7);
  assert_true(dht_id_eq(&st->preds[2].id, &want));
  assert_int_equal(dht_client_last_attempts(c), 1);

  assert_int_equal(dht_client_neighbors(c, &nb, TIMEOUT_MS), 0);
  assert_false(nb.has_pred);
  assert_int_equal(nb.n_succs, 2);
  assert_string_equal(nb.succs[1].addr, "[::1]:7002");
  assert_int_equal(nb.n_preds, 2);
  assert_string_equal(nb.preds[1].addr, "127.0.0.1:6998");

  assert_int_equal(dht_client_lookup(c, &target, false, &lk, TIMEOUT_MS), 0);
  want = id_n(11);
  assert_true(dht_id_eq(&lk.owner.id, &want));
  assert_string_equal(lk.owner.addr, "127.0.0.1:7001");
  assert_int_equal(lk.hops, 3);
  assert_int_equal(lk.n_path, 0);
  assert_int_equal(dht_client_lookup(c, &target, true, &lk, TIMEOUT_MS), 0);
  assert_int_equal(lk.n_path, 3);
  want = id_n(22);
  assert_true(dht_id_eq(&lk.path[2].id, &want));

  dht_client_del(c);
  srv_join(&s);
  free(st);
}

static void test_skips_noise(void **state) {
  uint8_t *v;
  size_t vlen;
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_noise);
  c = client_for(s.addr);
  /* The stale VALUE (other rid), the server's PING and the ACCEPTED are
   * all skipped; the right VALUE is returned. */
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS), 0);
  assert_int_equal(vlen, 5);
  assert_memory_equal(v, "fresh", 5);
  free(v);
  /* A PUT answered with VALUE. */
  assert_int_equal(dht_client_put(c, "k", 1, "v", 1, TIMEOUT_MS),
                   DHT_ERR_UNEXPECTED);
  assert_non_null(strstr(dht_client_last_error(c), "VALUE"));
  dht_client_del(c);
  srv_join(&s);
}

/* ---- tests: the pipelined layer ----------------------------------------- */

/* Three FIND_SUCCs through dht_client_send, or, when queued, through
 * dht_client_queue and one flush; the replies come back out of order. */
static void pipelined_out_of_order(bool queued) {
  int (*send_fn)(dht_client *, dht_msg *, uint64_t *) =
      queued ? dht_client_queue : dht_client_send;
  const dht_msg *r;
  dht_msg req;
  uint64_t rids[3];
  dht_client *c;
  int k;
  srv s;

  srv_start(&s, s_reorder);
  c = client_for(s.addr);
  /* Sending needs a connection first. */
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_FIND_SUCC;
  assert_int_equal(send_fn(c, &req, &rids[0]), DHT_ERR_UNAVAILABLE);
  assert_int_equal(dht_client_connect(c, TIMEOUT_MS), 0);
  assert_true(dht_client_fd(c) >= 0);
  for (k = 0; k < 3; k++) {
    req.target = id_n((unsigned)k);
    assert_int_equal(send_fn(c, &req, &rids[k]), 0);
    assert_int_equal(req.rid, rids[k]);
    /* Queued frames wait for the flush, all of them. */
    assert_true(!queued || dht_client_want_write(c));
  }
  assert_true(rids[0] != rids[1] && rids[1] != rids[2]);
  while (dht_client_want_write(c)) {
    assert_int_equal(dht_client_flush(c), 0);
  }
  /* Replies come back last first, ACCEPTED skipped, one byte per write. */
  for (k = 2; k >= 0; k--) {
    assert_int_equal(dht_client_recv(c, &r, TIMEOUT_MS), 0);
    assert_non_null(r);
    assert_int_equal(r->type, DHT_MSG_FIND_SUCC_R);
    assert_int_equal(r->rid, rids[k]);
    assert_int_equal(r->hops, (uint32_t)k);
    assert_int_equal(r->peer.addr.len, strlen("127.0.0.1:3"));
    assert_memory_equal(r->peer.addr.p, "127.0.0.1:3", r->peer.addr.len);
  }
  /* Nothing more: a zero timeout returns at once. */
  assert_int_equal(dht_client_recv(c, &r, 0), DHT_ERR_TIMEOUT);
  assert_int_equal(dht_client_recv(c, &r, -1), DHT_ERR_INVAL);
  dht_client_del(c);
  srv_join(&s);
}

static void test_pipelined_out_of_order(void **state) {
  (void)state;
  pipelined_out_of_order(false);
}

static void test_pipelined_queue_then_flush(void **state) {
  (void)state;
  pipelined_out_of_order(true);
}

static void test_pipelined_garbled_frame(void **state) {
  const dht_msg *r;
  dht_msg req;
  uint64_t rid;
  dht_client *c;
  int rv;
  srv s;

  (void)state;
  srv_start(&s, s_noise);
  c = client_for(s.addr);
  assert_int_equal(dht_client_connect(c, TIMEOUT_MS), 0);
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_PING;
  assert_int_equal(dht_client_send(c, &req, &rid), 0);
  /* First the stale VALUE (recv returns any rid), then the garbled frame
   * as an error that keeps the connection, then the PONG. */
  assert_int_equal(dht_client_recv(c, &r, TIMEOUT_MS), 0);
  assert_int_equal(r->type, DHT_MSG_VALUE);
  assert_int_equal(r->rid, rid + 1000);
  rv = dht_client_recv(c, &r, TIMEOUT_MS);
  assert_int_equal(rv, DHT_ERR_MALFORMED);
  assert_null(r);
  assert_true(dht_client_connected(c));
  assert_int_equal(dht_client_recv(c, &r, TIMEOUT_MS), 0);
  assert_int_equal(r->type, DHT_MSG_PONG);
  assert_int_equal(r->rid, rid);
  dht_client_del(c);
  srv_join(&s);
}

static void test_output_queue_full(void **state) {
  dht_client_settings set;
  dht_msg req;
  uint8_t *big;
  dht_client *c;
  int i, rv = 0;
  srv s;

  (void)state;
  big = calloc(1, MIB);
  assert_non_null(big);
  dht_client_settings_default(&set);
  set.out_len_max = 1;
  srv_start(&s, s_stuck);
  assert_int_equal(dht_client_new(&c, s.addr, &set), 0);
  assert_int_equal(dht_client_connect(c, TIMEOUT_MS), 0);
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_PUT;
  req.key.p = (const uint8_t *)"k";
  req.key.len = 1;
  req.value.p = big;
  req.value.len = MIB;
  /* The server does not read: socket buffers fill, then the queue. */
  for (i = 0; i < 256 && rv == 0; i++) {
    rv = dht_client_send(c, &req, NULL);
  }
  assert_int_equal(rv, DHT_ERR_FULL);
  assert_true(dht_client_want_write(c));
  assert_true(dht_client_connected(c));
  srv_open_gate(&s);
  dht_client_del(c);
  srv_join(&s);
  free(big);
}

/* ---- tests: retries and fallbacks --------------------------------------- */

static void test_fallback_when_refused(void **state) {
  char dead[32];
  const char *fb[1];
  uint8_t *v;
  size_t vlen;
  dht_client *c;
  srv s;

  (void)state;
  refused_addr(dead, sizeof(dead));
  srv_start(&s, s_kv);
  c = client_for(dead);
  fb[0] = s.addr;
  assert_int_equal(dht_client_set_fallbacks(c, fb, 1), 0);
  assert_string_equal(dht_client_current_addr(c), dead);
  /* Without retries the fallback is not used. */
  assert_int_equal(dht_client_put(c, "k", 1, "v", 1, TIMEOUT_MS),
                   DHT_ERR_UNAVAILABLE);
  assert_int_equal(dht_client_last_attempts(c), 1);
  assert_non_null(strstr(dht_client_last_error(c), "Connection refused"));
  /* With them, the put goes to the fallback... */
  dht_client_set_retry(c, true);
  assert_int_equal(dht_client_put(c, "k", 1, "v", 1, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_last_attempts(c), 2);
  assert_string_equal(dht_client_current_addr(c), s.addr);
  assert_string_equal(dht_client_addr(c), dead);
  /* ...and the client stays there. */
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_last_attempts(c), 1);
  assert_int_equal(vlen, 1);
  free(v);
  /* A new list takes the client back to its first address. */
  assert_int_equal(dht_client_set_fallbacks(c, NULL, 0), 0);
  assert_string_equal(dht_client_current_addr(c), dead);
  assert_false(dht_client_connected(c));
  dht_client_del(c);
  srv_join(&s);
  assert_int_equal(s.requests, 2);
}

static void test_retry_transient_errors(void **state) {
  uint8_t *v;
  size_t vlen;
  dht_client *c;
  srv s;

  (void)state;
  /* Off: the first UNAVAILABLE comes back as is. */
  srv_start_full(&s, s_flaky, 1, false, 1);
  c = client_for(s.addr);
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS),
                   DHT_ERR_UNAVAILABLE);
  assert_int_equal(dht_client_last_attempts(c), 1);
  assert_null(v);
  assert_non_null(strstr(dht_client_last_error(c), "UNAVAILABLE"));
  dht_client_del(c);
  srv_join(&s);
  assert_int_equal(s.requests, 1);

  /* On: two UNAVAILABLE, then the VALUE, all on the same connection. */
  srv_start_full(&s, s_flaky, 1, false, 2);
  c = client_for(s.addr);
  dht_client_set_retry(c, true);
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_last_attempts(c), 3);
  assert_int_equal(vlen, 1);
  assert_memory_equal(v, "v", 1);
  free(v);
  dht_client_del(c);
  srv_join(&s);
  assert_int_equal(s.requests, 3);
}

static void test_retry_definite_answers(void **state) {
  static const int codes[] = {DHT_ERR_NOT_FOUND, DHT_ERR_TOO_LARGE,
                              DHT_ERR_STORE, -77};
  uint8_t *v;
  size_t vlen, i;
  dht_client *c;
  srv s;

  (void)state;
  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    srv_start_full(&s, s_error, 1, false, codes[i]);
    c = client_for(s.addr);
    dht_client_set_retry(c, true);
    assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, TIMEOUT_MS),
                     codes[i]);
    assert_int_equal(dht_client_last_attempts(c), 1);
    dht_client_del(c);
    srv_join(&s);
    assert_int_equal(s.requests, 1);
  }
  /* A wrong reply type is not retried either. */
  srv_start(&s, s_noise);
  c = client_for(s.addr);
  dht_client_set_retry(c, true);
  assert_int_equal(dht_client_put(c, "k", 1, "v", 1, TIMEOUT_MS),
                   DHT_ERR_UNEXPECTED);
  assert_int_equal(dht_client_last_attempts(c), 1);
  dht_client_del(c);
  srv_join(&s);
  /* Bad arguments make no attempt at all. */
  c = client_for("127.0.0.1:1");
  dht_client_set_retry(c, true);
  assert_int_equal(dht_client_put(c, "", 0, "v", 1, TIMEOUT_MS), DHT_ERR_INVAL);
  assert_int_equal(dht_client_last_attempts(c), 0);
  dht_client_del(c);
}

/* A node that accepts and never answers: the call keeps retrying (a new
 * connection each time) and still ends by its deadline. */
static void test_retry_respects_deadline(void **state) {
  const int timeout_ms = 1000;
  int64_t t0, elapsed;
  uint8_t *v;
  size_t vlen;
  dht_client *c;
  srv s;

  (void)state;
  srv_start_multi(&s, s_mute, 0);
  c = client_for(s.addr);
  dht_client_set_retry(c, true);
  t0 = mono_ms();
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, timeout_ms),
                   DHT_ERR_TIMEOUT);
  elapsed = mono_ms() - t0;
  assert_true(elapsed >= timeout_ms - 10);
  assert_true(elapsed < timeout_ms + 500);
  assert_true(dht_client_last_attempts(c) >= 2);
  assert_non_null(strstr(dht_client_last_error(c), "attempts"));
  /* A zero timeout still makes exactly one attempt. */
  assert_int_equal(dht_client_get(c, "k", 1, &v, &vlen, 0), DHT_ERR_TIMEOUT);
  assert_int_equal(dht_client_last_attempts(c), 1);
  dht_client_del(c);
  srv_stop_multi(&s);
  assert_true(s.conn_index >= 2);
}

/* A hung entry node gets only its share of the deadline; the fallback
 * answers in the time that is left. */
static void test_retry_hung_node_moves_on(void **state) {
  const int timeout_ms = 2000;
  const char *fb[1];
  int64_t t0, elapsed;
  dht_client *c;
  srv hung, good;

  (void)state;
  srv_start_multi(&hung, s_mute, 0);
  srv_start(&good, s_kv);
  c = client_for(hung.addr);
  fb[0] = good.addr;
  assert_int_equal(dht_client_set_fallbacks(c, fb, 1), 0);
  dht_client_set_retry(c, true);
  t0 = mono_ms();
  assert_int_equal(dht_client_put(c, "k", 1, "v", 1, timeout_ms), 0);
  elapsed = mono_ms() - t0;
  assert_int_equal(dht_client_last_attempts(c), 2);
  assert_true(elapsed >= timeout_ms / 2 - 10);
  assert_true(elapsed < timeout_ms);
  assert_string_equal(dht_client_current_addr(c), good.addr);
  dht_client_del(c);
  srv_join(&good);
  srv_stop_multi(&hung);
  assert_int_equal(good.requests, 1);
}

/* STATE means the node itself cannot serve (joining, leaving): the next
 * attempt goes to the fallback at once. */
static void test_retry_state_moves_on(void **state) {
  const char *fb[1];
  dht_client_lookup_result lk;
  dht_id target = id_n(10);
  dht_client *c;
  srv leaving, good;

  (void)state;
  srv_start_full(&leaving, s_error, 1, false, DHT_ERR_STATE);
  srv_start(&good, s_info);
  c = client_for(leaving.addr);
  fb[0] = good.addr;
  assert_int_equal(dht_client_set_fallbacks(c, fb, 1), 0);
  dht_client_set_retry(c, true);
  assert_int_equal(dht_client_lookup(c, &target, false, &lk, TIMEOUT_MS), 0);
  assert_int_equal(dht_client_last_attempts(c), 2);
  assert_string_equal(lk.owner.addr, "127.0.0.1:7001");
  dht_client_del(c);
  srv_join(&leaving);
  srv_join(&good);
  assert_int_equal(leaving.requests, 1);
}

static void test_fallbacks_bad(void **state) {
  const char *addrs[DHT_CLIENT_FALLBACKS_MAX + 1];
  const char *bad[2] = {"127.0.0.1:2", "nope"};
  dht_client *c;
  size_t i;

  (void)state;
  for (i = 0; i < DHT_CLIENT_FALLBACKS_MAX + 1; i++) {
    addrs[i] = "127.0.0.1:2";
  }
  c = client_for("127.0.0.1:1");
  assert_int_equal(dht_client_set_fallbacks(c, addrs, DHT_CLIENT_FALLBACKS_MAX),
                   0);
  assert_int_equal(
      dht_client_set_fallbacks(c, addrs, DHT_CLIENT_FALLBACKS_MAX + 1),
      DHT_ERR_INVAL);
  assert_int_equal(dht_client_set_fallbacks(c, NULL, 1), DHT_ERR_INVAL);
  assert_int_equal(dht_client_set_fallbacks(c, bad, 2), DHT_ERR_INVAL);
  assert_non_null(strstr(dht_client_last_error(c), "nope"));
  assert_int_equal(dht_client_set_fallbacks(c, NULL, 0), 0);
  dht_client_del(c);
}

/* ---- tests: scan -------------------------------------------------------- */

static void test_scan(void **state) {
  dht_client_scan_result res;
  dht_id from = id_n(5), other = id_n(6), want;
  dht_client *c;
  srv s;

  (void)state;
  srv_start(&s, s_scan);
  c = client_for(s.addr);
  assert_int_equal(dht_client_scan(c, &from, 3, &res, TIMEOUT_MS), 0);
  assert_int_equal(res.n_items, 3);
  assert_true(res.more);
  assert_int_equal(res.items[0].key_len, 5);
  assert_memory_equal(res.items[0].key, "alpha", 5);
  dht_id_hash(&want, "alpha", 5);
  assert_true(dht_id_eq(&res.items[0].key_id, &want));
  assert_false(res.items[0].has_version);
  assert_int_equal(res.items[1].key_len, 1);
  assert_memory_equal(res.items[1].key, "b", 1);
  assert_true(res.items[1].has_version);
  assert_int_equal(res.items[1].version.hlc, 1001);
  want = id_n(41);
  assert_true(dht_id_eq(&res.items[1].version.writer, &want));
  assert_false(res.items[1].tombstone);
  assert_true(res.items[2].tombstone);
  assert_memory_equal(res.items[2].key, "tomb", 4);
  dht_client_scan_result_free(&res);
  assert_null(res.items);
  assert_int_equal(res.n_items, 0);
  dht_client_scan_result_free(&res);
  dht_client_scan_result_free(NULL);
  /* A node without SCAN. */
  assert_int_equal(dht_client_scan(c, &other, 3, &res, TIMEOUT_MS),
                   DHT_ERR_UNKNOWN_TYPE);
  assert_int_equal(res.n_items, 0);
  assert_null(res.items);
  assert_int_equal(dht_client_scan(c, &from, 0, &res, TIMEOUT_MS),
                   DHT_ERR_INVAL);
  dht_client_del(c);
  srv_join(&s);
  assert_int_equal(s.requests, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addr_parse_good),
      cmocka_unit_test(test_addr_parse_bad),
      cmocka_unit_test(test_addr_parse_limits),
      cmocka_unit_test(test_addr_parse_mutations),
      cmocka_unit_test(test_new_bad_address),
      cmocka_unit_test(test_connect_refused),
      cmocka_unit_test(test_connect_by_name),
      cmocka_unit_test(test_bad_arguments),
      cmocka_unit_test(test_ping),
      cmocka_unit_test(test_put_get_del),
      cmocka_unit_test(test_timeout),
      cmocka_unit_test(test_peer_hangs_up),
      cmocka_unit_test(test_oversized_frame),
      cmocka_unit_test(test_reconnect_after_close),
      cmocka_unit_test(test_stats_neighbors_lookup),
      cmocka_unit_test(test_skips_noise),
      cmocka_unit_test(test_pipelined_out_of_order),
      cmocka_unit_test(test_pipelined_queue_then_flush),
      cmocka_unit_test(test_pipelined_garbled_frame),
      cmocka_unit_test(test_output_queue_full),
      cmocka_unit_test(test_fallback_when_refused),
      cmocka_unit_test(test_retry_transient_errors),
      cmocka_unit_test(test_retry_definite_answers),
      cmocka_unit_test(test_retry_respects_deadline),
      cmocka_unit_test(test_retry_hung_node_moves_on),
      cmocka_unit_test(test_retry_state_moves_on),
      cmocka_unit_test(test_fallbacks_bad),
      cmocka_unit_test(test_scan),
  };

  return cmocka_run_group_tests(tests, NULL, NULL);
}
