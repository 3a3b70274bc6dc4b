/*
 * metrics.c: dhtd --metrics (see metrics.h).
 *
 * HTTP is parsed by http_parser (Debian's libhttp-parser-dev), one request
 * at a time per connection: the bytes of the request in progress are held
 * in the connection's own DHTD_METRICS_REQUEST_MAX buffer, and reading
 * stops while its answer is written, so a connection never holds more than
 * that buffer and one answer. Only GET and HEAD of /metrics are served;
 * a request with a body, a bad request, another method or another path is
 * answered (400, 405, 404) without reading further, and all but 404 close
 * the connection. Keep-alive is honoured, so a scraper may reuse its
 * connection.
 *
 * Names: every node counter is dht_<name>_total (a counter whose name ends
 * in _last is a gauge, dht_<name>), with its comment in dht/node.h as HELP
 * (counter_help.h, generated from it at build time); message types, error
 * codes, classes and ops are labels taken from their X-macro tables, so
 * new ones appear without a list to keep here.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "dht/err.h"
#include "dht/metrics.h"
#include "dht/store_lmdb.h"
#include "metrics.h"
#include "net.h"

/* The answers it gives. */
#define STATUS_MAP(X)                                                          \
  X(200, "OK")                                                                 \
  X(400, "Bad Request")                                                        \
  X(404, "Not Found")                                                          \
  X(405, "Method Not Allowed")                                                 \
  X(414, "URI Too Long")                                                       \
  X(431, "Request Header Fields Too Large")                                    \
  X(500, "Internal Server Error")

static const struct status {
  int code;
  const char *reason;
} statuses[] = {
#define STATUS_ENTRY(code, reason) {code, reason},
    STATUS_MAP(STATUS_ENTRY)
#undef STATUS_ENTRY
};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

/* HELP texts of the node's counters: DHT__COUNTER_HELP(name, "text"). */
static const struct counter_help {
  const char *name;
  const char *help;
} counter_helps[] = {
#define DHT__COUNTER_HELP(name, text) {#name, text},
#include "counter_help.h"
#undef DHT__COUNTER_HELP
};

static const char *const state_names[] = {
    [DHT_NODE_IDLE] = "idle",       [DHT_NODE_JOINING] = "joining",
    [DHT_NODE_JOINED] = "joined",   [DHT_NODE_LEAVING] = "leaving",
    [DHT_NODE_LEFT] = "left",
};

typedef struct mconn mconn;

struct mconn {
  uv_tcp_t tcp;         /* first: the handle's address is the conn's */
  dhtd_metrics *m;      /* owner */
  mconn *next, *prev;   /* the owner's list */
  http_parser parser;   /* the request in progress */
  char in[DHTD_METRICS_REQUEST_MAX]; /* its bytes (and any after it) */
  size_t in_len;        /* bytes held in in */
  size_t parsed;        /* ... of which the parser has had */
  size_t url_off;       /* the request target: where in in */
  size_t url_len;       /* ... and how long */
  bool url_seen;        /* its first byte came */
  bool past_url;        /* the request line is whole */
  int status;           /* the answer decided (0: not yet) */
  bool head;            /* a HEAD: the answer has no body */
  bool close_after;     /* close once the answer is written */
  bool writing;         /* an answer is being written */
  bool closing;         /* uv_close called */
  uint64_t deadline_ms; /* closed if no whole request (or written answer)
                           by then */
  uv_write_t wreq;      /* the answer's write */
  dht_buf out;          /* the answer, owned until its write ends */
};

struct dhtd_metrics {
  dhtd_metrics_config cfg;       /* copied settings */
  uv_loop_t *loop;               /* borrowed */
  uv_tcp_t listener;             /* accepts scrapers */
  uv_timer_t timer;              /* closes connections past deadline */
  bool stopping;                 /* no more accepting (stopped, or the
                                    listener failed) */
  mconn *conns;                  /* open (or closing) connections */
  uint32_t n_conns;              /* how many */
  http_parser_settings settings; /* the parser's callbacks */
  uint64_t responses[N_STATUSES]; /* answers given, by status */
  uint64_t refused;              /* connections closed: conns_max open */
  uint64_t timeouts;             /* connections closed past deadline */
};

static uint64_t now_ms(const dhtd_metrics *m) { return uv_now(m->loop); }

/* ---- the exposition --------------------------------------------------------- */

/* The answer being written; failed once an append did not fit in memory. */
typedef struct expo {
  dht_buf b;
  bool failed;
} expo;

static void put(expo *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void put(expo *e, const char *fmt, ...) {
  char line[512];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof(line) ||
      dht_buf_append(&e->b, line, (size_t)n) != 0) {
    e->failed = true;
  }
}

/* Appends s with the escapes of a label value ('\\', '"', newline) or,
 * label false, of a HELP text ('\\', newline). */
static void put_escaped(expo *e, const char *s, bool label) {
  size_t run;

  for (;;) {
    run = strcspn(s, label ? "\\\n\"" : "\\\n");
    if (dht_buf_append(&e->b, s, run) != 0) {
      e->failed = true;
    }
    s += run;
    if (*s == '\0') {
      return;
    }
    put(e, "%s", *s == '\n' ? "\\n" : *s == '"' ? "\\\"" : "\\\\");
    s++;
  }
}

/* The HELP and TYPE lines of a metric family. */
static void family(expo *e, const char *name, const char *type,
                   const char *help) {
  put(e, "# HELP %s ", name);
  put_escaped(e, help, false);
  put(e, "\n# TYPE %s %s\n", name, type);
}

/* A family of one sample without labels. */
static void single(expo *e, const char *name, const char *type,
                   const char *help, uint64_t value) {
  family(e, name, type, help);
  put(e, "%s %llu\n", name, (unsigned long long)value);
}

static const char *counter_help_of(const char *name) {
  size_t i;

  for (i = 0; i < sizeof(counter_helps) / sizeof(counter_helps[0]); i++) {
    if (strcmp(counter_helps[i].name, name) == 0 &&
        counter_helps[i].help[0] != '\0') {
      return counter_helps[i].help;
    }
  }
  return "node counter (dht stats)";
}

/* One of the node's counters: a counter dht_<name>_total, or, for a name
 * ending in _last (a value, not a count), a gauge dht_<name>. A name with
 * the word ms counts milliseconds: it says seconds instead, in seconds,
 * as Prometheus' base unit wants. */
static void node_counter(expo *e, const char *name, uint64_t value) {
  size_t len = strlen(name);
  bool gauge = len > 5 && strcmp(name + len - 5, "_last") == 0;
  const char *ms = strstr(name, "_ms");
  char metric[128], base[96];

  if (ms != NULL && (ms[3] == '\0' || ms[3] == '_')) {
    snprintf(base, sizeof(base), "%.*s_seconds%s", (int)(ms - name), name,
             ms + 3);
  } else {
    snprintf(base, sizeof(base), "%s", name);
    ms = NULL;
  }
  snprintf(metric, sizeof(metric), gauge ? "dht_%s" : "dht_%s_total", base);
  family(e, metric, gauge ? "gauge" : "counter", counter_help_of(name));
  if (ms != NULL) {
    put(e, "%s %.3f\n", metric, (double)value / 1000.0);
  } else {
    put(e, "%s %llu\n", metric, (unsigned long long)value);
  }
}

static void put_node(expo *e, const dht_node *node,
                     const dht_node_metrics *nm) {
  char hex[DHT_ID_HEX_LEN];
  int s;

  family(e, "dht_node_info", "gauge",
         "the node's ring id and advertised address, and dhtd's version");
  put(e, "dht_node_info{id=\"%s\",addr=\"", dht_id_hex(dht_node_id(node), hex));
  put_escaped(e, dht_node_addr(node), true);
  put(e, "\",version=\"%s\"} 1\n", DHT_VERSION);
  family(e, "dht_node_state", "gauge", "1 for the state the node is in");
  for (s = 0; s < (int)(sizeof(state_names) / sizeof(state_names[0])); s++) {
    put(e, "dht_node_state{state=\"%s\"} %d\n", state_names[s],
        nm->state == (dht_node_state)s);
  }
  single(e, "dht_node_joined", "gauge",
         "1 while the node is a member of a ring (joined)",
         nm->state == DHT_NODE_JOINED);
  single(e, "dht_node_ready", "gauge",
         "1 when the node is ready: joined, its neighbour lists agreeing "
         "with its neighbours', its range in sync with its replicas",
         dht_node_ready(node));
  single(e, "dht_successors", "gauge", "successors known", nm->succs);
  single(e, "dht_predecessors", "gauge",
         "predecessors known (the predecessor list)", nm->preds);
  single(e, "dht_predecessor_known", "gauge", "1 when the predecessor is known",
         nm->has_pred);
  single(e, "dht_fingers_distinct", "gauge",
         "finger table entries, runs of equal ones counted once",
         nm->fingers_distinct);
  single(e, "dht_pending_requests", "gauge",
         "requests this node has in flight to peers", nm->pending);
  single(e, "dht_requests_in_progress", "gauge",
         "requests received and not yet answered", nm->in_progress);
}

static void put_store(expo *e, const dhtd_metrics *m,
                      const dht_node_metrics *nm) {
  dht_store_lmdb_size size;

  single(e, "dht_keys", "gauge", "records in the store, tombstones included",
         nm->keys);
  if (!m->cfg.lmdb || dht_store_lmdb_get_size(m->cfg.store, &size) != 0) {
    return;
  }
  single(e, "dht_store_data_bytes", "gauge",
         "bytes of the LMDB pages that hold records", size.data_bytes);
  single(e, "dht_store_file_bytes", "gauge",
         "bytes of the LMDB data file in use, free pages included",
         size.file_bytes);
  single(e, "dht_store_map_bytes", "gauge",
         "the LMDB map size: how far the data file may grow before the map "
         "grows",
         size.map_bytes);
}

static void put_repair(expo *e, const dht_node_metrics *nm) {
  single(e, "dht_repair_sync_sessions", "gauge",
         "anti-entropy exchanges with replicas under way", nm->sync_sessions);
  single(e, "dht_repair_sync_buckets", "gauge",
         "digest buckets found to differ in those exchanges, whose records "
         "are being pushed",
         nm->sync_buckets);
  single(e, "dht_repair_handoff_busy", "gauge",
         "1 while a hand-off batch is in flight", nm->handoff_busy);
  single(e, "dht_repair_records", "gauge",
         "records still to push to replicas in the exchanges under way",
         nm->repair_records);
  single(e, "dht_repair_bytes", "gauge",
         "key and record bytes of those records", nm->repair_bytes);
  single(e, "dht_repair_handoff_records", "gauge",
         "records still to hand on to the nodes they belong to",
         nm->handoff_records);
  single(e, "dht_repair_handoff_bytes", "gauge",
         "key and record bytes of those records", nm->handoff_bytes);
  family(e, "dht_repair_eta_seconds", "gauge",
         "the node's estimate of the time the repair and hand-off left "
         "should take");
  put(e, "dht_repair_eta_seconds %.3f\n", (double)nm->backlog_eta_ms / 1000);
  single(e, "dht_repair_lost_ranges", "gauge",
         "ranges recorded lost (every copy died) and not yet acknowledged",
         nm->ranges_lost);
  single(e, "dht_repair_range_in_sync", "gauge",
         "1 when the node's range was synced with every replica since its "
         "predecessor last changed",
         nm->range_fresh);
  single(e, "dht_writes_in_flight", "gauge",
         "replicated writes waiting for their replicas", nm->writes_in_flight);
  single(e, "dht_acks_held", "gauge",
         "answers to writes waiting for the group commit", nm->acks_held);
}

/* The message types, from their X-macro table. */
static const struct msg_type {
  int value;
  const char *name;
} msg_types[] = {
#define MSG_TYPE_ENTRY(name, value) {value, #name},
    DHT_MSG_TYPE_MAP(MSG_TYPE_ENTRY)
#undef MSG_TYPE_ENTRY
};
#define N_MSG_TYPES (sizeof(msg_types) / sizeof(msg_types[0]))

/* A counter family with one sample per message type. */
static void by_type(expo *e, const char *name, const char *help,
                    const uint64_t counts[DHT_MSG_TYPE_LAST + 1]) {
  size_t i;

  family(e, name, "counter", help);
  for (i = 0; i < N_MSG_TYPES; i++) {
    put(e, "%s{type=\"%s\"} %llu\n", name, msg_types[i].name,
        (unsigned long long)counts[msg_types[i].value]);
  }
}

/* A counter family with one sample per message class. */
static void by_class(expo *e, const char *name, const char *help,
                     const uint64_t counts[DHT_MSG_CLASSES]) {
  int c;

  family(e, name, "counter", help);
  for (c = 0; c < DHT_MSG_CLASSES; c++) {
    put(e, "%s{class=\"%s\"} %llu\n", name, dht_msg_class_name(c),
        (unsigned long long)counts[c]);
  }
}

static void put_traffic(expo *e, const dht_node_metrics *nm) {
  static const char *const results[] = {
#define RESULT_LABEL(name, label) label,
      DHT_RESULT_MAP(RESULT_LABEL)
#undef RESULT_LABEL
  };
  size_t i;
  int r;

  by_type(e, "dht_messages_received_total",
          "frames received and decoded, by message type", nm->msgs_in);
  by_type(e, "dht_messages_sent_total",
          "frames queued (requests to peers and replies), by message type",
          nm->msgs_out);
  family(e, "dht_requests_total", "counter",
         "requests received and answered, by type and final answer (ok, "
         "not_found, error)");
  for (i = 0; i < N_MSG_TYPES; i++) {
    if (dht_msg_type_is_reply(msg_types[i].value)) {
      continue;
    }
    for (r = 0; r < DHT_RESULTS; r++) {
      put(e, "dht_requests_total{type=\"%s\",result=\"%s\"} %llu\n",
          msg_types[i].name, results[r],
          (unsigned long long)nm->results[msg_types[i].value][r]);
    }
  }
  family(e, "dht_error_replies_total", "counter",
         "ERROR replies sent, by code (UNKNOWN: a code outside the table)");
  put(e, "dht_error_replies_total{code=\"UNKNOWN\"} %llu\n",
      (unsigned long long)nm->errors_out[0]);
#define PUT_CODE(name, value, msg)                                             \
  put(e, "dht_error_replies_total{code=\"%s\"} %llu\n", #name,                \
      (unsigned long long)nm->errors_out[-(value)]);
  DHT_ERR_MAP(PUT_CODE)
#undef PUT_CODE
  single(e, "dht_requests_untracked_total", "counter",
         "requests left out of dht_requests_total and the latency "
         "histogram (no room to note their arrival, or no answer long "
         "after it)",
         nm->untracked);
  by_class(e, "dht_bytes_received_total",
           "frame bytes received, by message class (a reply in its "
           "request's)",
           nm->bytes_in);
  by_class(e, "dht_bytes_sent_total",
           "frame bytes queued to send, by message class (a reply in its "
           "request's)",
           nm->bytes_out);
}

static void put_latency(expo *e, const dht_node_metrics *nm) {
  static const char *const ops[] = {
#define OP_NAME(name) #name,
      DHT_LATENCY_OP_MAP(OP_NAME)
#undef OP_NAME
  };
  uint64_t total;
  int op, b;

  family(e, "dht_request_duration_seconds", "histogram",
         "time from a request's arrival to its final answer, by op, at the "
         "resolution of the event loop's millisecond clock");
  for (op = 0; op < DHT_LATENCY_OPS; op++) {
    total = 0;
    for (b = 0; b < DHT_LATENCY_BUCKETS; b++) {
      total += nm->latency[op][b];
      if (b < DHT_LATENCY_BUCKETS - 1) {
        put(e, "dht_request_duration_seconds_bucket{op=\"%s\",le=\"%.3f\"} "
               "%llu\n",
            ops[op], (double)(1u << b) / 1000.0, (unsigned long long)total);
      }
    }
    put(e, "dht_request_duration_seconds_bucket{op=\"%s\",le=\"+Inf\"} %llu\n",
        ops[op], (unsigned long long)total);
    put(e, "dht_request_duration_seconds_sum{op=\"%s\"} %.3f\n", ops[op],
        (double)nm->latency_sum_ms[op] / 1000.0);
    put(e, "dht_request_duration_seconds_count{op=\"%s\"} %llu\n", ops[op],
        (unsigned long long)total);
  }
}

static void put_endpoint(expo *e, const dhtd_metrics *m) {
  size_t i;

  family(e, "dht_metrics_http_responses_total", "counter",
         "answers of this metrics endpoint, by HTTP status (this scrape's "
         "not yet included)");
  for (i = 0; i < N_STATUSES; i++) {
    put(e, "dht_metrics_http_responses_total{code=\"%d\"} %llu\n",
        statuses[i].code, (unsigned long long)m->responses[i]);
  }
  single(e, "dht_metrics_connections_refused_total", "counter",
         "connections to this endpoint closed at once: --metrics-max-conns "
         "were open",
         m->refused);
  single(e, "dht_metrics_timeouts_total", "counter",
         "connections to this endpoint closed: no whole request, or its "
         "answer not taken, within --metrics-timeout-ms",
         m->timeouts);
}

/* The whole exposition, from one snapshot of the node. Returns 0 or
 * DHT_ERR_NOMEM. */
static int build_metrics(const dhtd_metrics *m, dht_buf *out) {
  const dht_node_counters *c = dht_node_get_counters(m->cfg.node);
  dht_node_metrics nm;
  expo e;

  dht_node_get_metrics(m->cfg.node, &nm);
  e.b = *out;
  e.failed = false;
  put_node(&e, m->cfg.node, &nm);
  put_store(&e, m, &nm);
  put_repair(&e, &nm);
#define PUT_COUNTER(name) node_counter(&e, #name, c->name);
  DHT_NODE_COUNTER_MAP(PUT_COUNTER)
#undef PUT_COUNTER
  put_traffic(&e, &nm);
  put_latency(&e, &nm);
  put_endpoint(&e, m);
  *out = e.b;
  return e.failed ? DHT_ERR_NOMEM : 0;
}

/* ---- connections -------------------------------------------------------------- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);
static void conn_process(mconn *c);

static void on_conn_closed(uv_handle_t *handle) {
  mconn *c = handle->data;
  dhtd_metrics *m = c->m;

  if (c->prev != NULL) {
    c->prev->next = c->next;
  } else {
    m->conns = c->next;
  }
  if (c->next != NULL) {
    c->next->prev = c->prev;
  }
  m->n_conns--;
  dht_buf_free(&c->out);
  free(c);
}

static void conn_close(mconn *c) {
  if (!c->closing) {
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  }
}

/* Ready for the next request on c, its bytes from in[parsed] on. */
static void conn_next_request(mconn *c) {
  memmove(c->in, c->in + c->parsed, c->in_len - c->parsed);
  c->in_len -= c->parsed;
  c->parsed = 0;
  c->url_seen = false;
  c->past_url = false;
  c->url_len = 0;
  c->status = 0;
  c->head = false;
  c->deadline_ms = now_ms(c->m) + c->m->cfg.timeout_ms;
  http_parser_pause(&c->parser, 0);
}

static void on_written(uv_write_t *req, int status) {
  mconn *c = req->data;

  c->writing = false;
  dht_buf_free(&c->out);
  if (status != 0 || c->close_after || c->m->stopping) {
    conn_close(c);
    return;
  }
  conn_next_request(c);
  if (c->in_len > 0) {
    conn_process(c); /* what was sent behind the last request */
  }
  if (!c->writing && !c->closing &&
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
  }
}

static size_t status_index(int code) {
  size_t i;

  for (i = 0; i < N_STATUSES && statuses[i].code != code; i++) {
  }
  return i < N_STATUSES ? i : N_STATUSES - 1;
}

/* Answers c's request with c->status (200: the metrics), then goes on with
 * the connection or closes it. */
static void conn_answer(mconn *c) {
  dhtd_metrics *m = c->m;
  dht_buf body;
  char head[256];
  const struct status *st;
  uv_buf_t buf;
  int n;

  uv_read_stop((uv_stream_t *)&c->tcp);
  dht_buf_init(&body);
  if (c->status == 200 && build_metrics(m, &body) != 0) {
    c->status = 500;
    c->close_after = true;
  }
  st = &statuses[status_index(c->status)];
  if (c->status != 200) {
    body.len = 0;
    n = snprintf(head, sizeof(head), "%d %s%s\n", st->code, st->reason,
                 st->code == 404 ? ": the metrics are at /metrics"
                 : st->code == 405 ? ": only GET and HEAD"
                                   : "");
    dht_buf_append(&body, head, (size_t)n);
  }
  n = snprintf(head, sizeof(head),
               "HTTP/1.1 %d %s\r\nContent-Type: text/plain; %scharset=utf-8"
               "\r\nContent-Length: %zu\r\n%s%s\r\n",
               st->code, st->reason, c->status == 200 ? "version=0.0.4; " : "",
               body.len, st->code == 405 ? "Allow: GET, HEAD\r\n" : "",
               c->close_after ? "Connection: close\r\n" : "");
  m->responses[status_index(c->status)]++;
  dht_buf_init(&c->out);
  if (dht_buf_append(&c->out, head, (size_t)n) != 0 ||
      (!c->head && dht_buf_append(&c->out, body.data, body.len) != 0)) {
    dht_buf_free(&body);
    conn_close(c);
    return;
  }
  dht_buf_free(&body);
  buf = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
  c->wreq.data = c;
  c->writing = true;
  c->deadline_ms = now_ms(m) + m->cfg.timeout_ms; /* for the reader too */
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &buf, 1, on_written) != 0) {
    c->writing = false;
    conn_close(c);
  }
}

/* Gives the parser what it has not had of c's bytes, then answers if the
 * request is whole, is bad, or has outgrown the buffer. */
static void conn_process(mconn *c) {
  size_t n = http_parser_execute(&c->parser, &c->m->settings,
                                 c->in + c->parsed, c->in_len - c->parsed);
  enum http_errno err = HTTP_PARSER_ERRNO(&c->parser);

  c->parsed += n;
  if (c->status == 0 && err != HPE_OK) {
    c->status = 400;
    c->close_after = true;
  } else if (c->status == 0 && c->in_len == sizeof(c->in)) {
    c->status = c->past_url ? 431 : 414;
    c->close_after = true;
  }
  if (c->status != 0) {
    conn_answer(c);
  }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  mconn *c = handle->data;

  (void)suggested;
  /* Never more than the rest of the request buffer: a request that fills
   * it is answered before anything else is read. */
  *buf = uv_buf_init(c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  mconn *c = stream->data;

  (void)buf;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in_len += (size_t)nread;
  if (nread > 0) {
    conn_process(c);
  }
}

/* ---- the parser's callbacks --------------------------------------------------- */

static int on_url(http_parser *p, const char *at, size_t len) {
  mconn *c = p->data;

  if (!c->url_seen) {
    c->url_seen = true;
    c->url_off = (size_t)(at - c->in);
  }
  c->url_len += len;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len) {
  mconn *c = p->data;

  (void)at;
  (void)len;
  c->past_url = true;
  return 0;
}

/* The request line and headers are in: decides the answer. One that will
 * close the connection stops the parser here (it reads no body). */
static int on_headers_complete(http_parser *p) {
  mconn *c = p->data;
  struct http_parser_url u;
  static const char path[] = "/metrics";

  c->past_url = true;
  c->head = p->method == HTTP_HEAD;
  http_parser_url_init(&u);
  if (p->method != HTTP_GET && p->method != HTTP_HEAD) {
    c->status = 405;
  } else if ((p->flags & F_CHUNKED) != 0 ||
             ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > 0)) {
    c->status = 400; /* a GET with a body: not read */
  } else if (http_parser_parse_url(c->in + c->url_off, c->url_len, 0, &u) !=
             0) {
    c->status = 400;
  } else if ((u.field_set & (1u << UF_PATH)) == 0 ||
             u.field_data[UF_PATH].len != sizeof(path) - 1 ||
             memcmp(c->in + c->url_off + u.field_data[UF_PATH].off, path,
                    sizeof(path) - 1) != 0) {
    c->status = 404;
    c->close_after = !http_should_keep_alive(p);
    return 0;
  } else {
    c->status = 200;
    c->close_after = !http_should_keep_alive(p);
    return 0;
  }
  c->close_after = true;
  http_parser_pause(p, 1);
  return 0;
}

/* A whole request without a body: the parser stops behind it, and what
 * follows waits for the answer to be written. */
static int on_message_complete(http_parser *p) {
  http_parser_pause(p, 1);
  return 0;
}

/* ---- accepting and timing out --------------------------------------------------- */

static void on_connection(uv_stream_t *server, int status) {
  dhtd_metrics *m = server->data;
  mconn *c;

  if (status != 0 || m->stopping) {
    return;
  }
  if (m->n_conns >= m->cfg.conns_max ||
      (c = calloc(1, sizeof(*c))) == NULL) {
    m->refused += dhtd_refuse_one(m->loop, server);
    return;
  }
  if (uv_tcp_init(m->loop, &c->tcp) != 0) {
    free(c);
    m->refused += dhtd_refuse_one(m->loop, server);
    return;
  }
  c->tcp.data = c;
  c->m = m;
  c->next = m->conns;
  if (m->conns != NULL) {
    m->conns->prev = c;
  }
  m->conns = c;
  m->n_conns++;
  dht_buf_init(&c->out);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  c->deadline_ms = now_ms(m) + m->cfg.timeout_ms;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
    conn_close(c);
  }
}

static void on_timer(uv_timer_t *t) {
  dhtd_metrics *m = t->data;
  uint64_t now = now_ms(m);
  mconn *c;

  for (c = m->conns; c != NULL; c = c->next) {
    if (!c->closing && now >= c->deadline_ms) {
      m->timeouts++;
      conn_close(c);
    }
  }
}

int dhtd_metrics_start(dhtd_metrics **out, uv_loop_t *loop,
                       const dhtd_metrics_config *cfg, char *err,
                       size_t err_len) {
  struct sockaddr_storage ss;
  dhtd_metrics *m;
  uint64_t every;
  int rv;

  *out = NULL;
  rv = dhtd_listen_addr(cfg->listen_addr, &ss, err, err_len);
  if (rv != 0) {
    return rv;
  }
  m = calloc(1, sizeof(*m));
  if (m == NULL) {
    snprintf(err, err_len, "out of memory");
    return UV_ENOMEM;
  }
  m->cfg = *cfg;
  m->loop = loop;
  http_parser_settings_init(&m->settings);
  m->settings.on_url = on_url;
  m->settings.on_header_field = on_header_field;
  m->settings.on_headers_complete = on_headers_complete;
  m->settings.on_message_complete = on_message_complete;
  uv_tcp_init(loop, &m->listener);
  m->listener.data = m;
  *out = m;
  rv = uv_tcp_bind(&m->listener, (const struct sockaddr *)&ss, 0);
  if (rv == 0) {
    rv = uv_listen((uv_stream_t *)&m->listener, 64, on_connection);
  }
  if (rv != 0) {
    snprintf(err, err_len, "cannot serve metrics on %s: %s",
             cfg->listen_addr, uv_strerror(rv));
    m->stopping = true;
    uv_close((uv_handle_t *)&m->listener, NULL);
    return rv;
  }
  every = cfg->timeout_ms / 4 + 1;
  uv_timer_init(loop, &m->timer);
  m->timer.data = m;
  uv_timer_start(&m->timer, on_timer, every < 1000 ? every : 1000,
                 every < 1000 ? every : 1000);
  return 0;
}

void dhtd_metrics_stop(dhtd_metrics *m) {
  mconn *c;

  if (m == NULL || m->stopping) {
    return;
  }
  m->stopping = true;
  for (c = m->conns; c != NULL; c = c->next) {
    conn_close(c);
  }
  uv_close((uv_handle_t *)&m->listener, NULL);
  uv_close((uv_handle_t *)&m->timer, NULL);
}

void dhtd_metrics_del(dhtd_metrics *m) { free(m); }
