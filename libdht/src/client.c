/*
 * client.c: the blocking client library declared in dht/client.h, and the
 * "HOST:PORT" parser that dhtd shares.
 *
 * This file and the daemon are the only places that touch sockets and the
 * clock (tests/check_sans_io.sh exempts client*.c). Everything runs on one
 * non-blocking socket driven by poll(): a blocking call is "queue the
 * request, then poll for the socket until its reply is complete or the
 * deadline passes", so that no step can wait longer than what is left of
 * the caller's timeout, and the pipelined layer is the same machinery with
 * the waiting left to the caller's own poll loop.
 *
 * Buffers: requests are encoded into `out` and written from out_off; replies
 * are read into `in` and parsed from in_off. A reply handed to the caller
 * (c->reply) borrows its bytes from `in`, so `in` is neither compacted nor
 * grown while one is held: every entry point releases it first. Compaction
 * happens once per read, not once per frame, so that a burst of small
 * pipelined replies costs one memmove.
 *
 * Retries (off unless dht_client_set_retry) wrap the blocking key calls:
 * call_retry() runs attempts, each with its own deadline cut from the
 * call's, and moves through the primary address and the fallbacks.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "dht/client.h"
#include "dht/err.h"

/* Bytes asked of one recv() when the current frame needs fewer. */
#define READ_CHUNK (64u * 1024u)
/* dht_client_last_error() text, truncated beyond this. */
#define ERR_TEXT_MAX 512
/* Default output queue bound: sixteen 1 MiB values. */
#define OUT_LEN_MAX_DEFAULT (16u * 1024u * 1024u)
/* Retries: the shortest share of the deadline an attempt gets (unless less
 * remains), and the pause before an attempt on a node already tried in the
 * call, doubled each time up to the maximum. */
#define ATTEMPT_MS_MIN 250
#define BACKOFF_MS_MIN 25
#define BACKOFF_MS_MAX 200
/* Longest DNS name (RFC 1035) and label. */
#define NAME_LEN_MAX 253
#define LABEL_LEN_MAX 63

#if defined(__GNUC__)
#define DHT__PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define DHT__PRINTF(f, a)
#endif

/* One node the client may talk to: the primary address or a fallback. */
typedef struct client_node {
  char addr[DHT_ADDR_LEN_MAX + 1]; /* as given */
  char host[DHT_ADDR_LEN_MAX + 1]; /* addr without port and brackets */
  uint16_t port;                   /* addr's port */
} client_node;

struct dht_client {
  dht_client_settings settings; /* copied at _new */
  client_node primary;          /* the address given to _new */
  client_node *fallbacks;       /* copies of set_fallbacks' addresses */
  size_t n_fallbacks;           /* entries in fallbacks */
  size_t cur;                   /* node in use: 0 primary, i fallbacks[i-1] */
  const client_node *node;      /* the node in use (primary or a fallback) */
  bool retry;                   /* dht_client_set_retry */
  unsigned attempts;            /* dht_client_last_attempts */
  int fd;                       /* the connection (to node), -1 when closed */

  dht_buf out;    /* queued request frames */
  size_t out_off; /* bytes of out already written */
  dht_buf in;     /* received bytes */
  size_t in_off;  /* bytes of in already parsed */

  dht_msg reply;   /* the frame last decoded, borrowing from in */
  bool held;       /* reply (and its bytes at in_off) is handed out */
  size_t held_len; /* header + body of the held frame */

  dht_seal *seal; /* closed ring: this end of the connection's seal */
  dht_buf plain;  /* closed ring: a request encoded, before sealing */
  dht_buf raw;    /* closed ring: bytes read, before opening */
  bool got_bytes; /* the connection has received something */
  bool refused;   /* the last connect was refused (nothing listens there) */

  uint64_t next_rid;      /* rid of the next request; never 0 */
  char err[ERR_TEXT_MAX]; /* dht_client_last_error() */
  char refusal[ERR_TEXT_MAX]; /* dht_client_last_refusal() */

  bool answered;          /* the last call ended with an ERROR reply */

  uint64_t hlc;           /* the hybrid clock that stamps writes */
  dht_id writer;          /* this client's writer id, at random */
  bool stale_known;       /* stale_ver is the last STALE's newer version */
  dht_version stale_ver;  /* ... */
};

/* ---- address parsing ---------------------------------------------------- */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

static bool is_alnum(char ch) {
  return is_digit(ch) || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
}

/* "1".."65535", decimal, no sign or leading zero, nothing after. */
static bool parse_port(const char *s, uint16_t *port) {
  uint32_t v = 0;
  size_t i;

  if (s[0] == '\0' || s[0] == '0') {
    return false;
  }
  for (i = 0; s[i] != '\0'; i++) {
    if (!is_digit(s[i]) || i >= 5) {
      return false;
    }
    v = v * 10 + (uint32_t)(s[i] - '0');
  }
  if (v > 65535) {
    return false;
  }
  *port = (uint16_t)v;
  return true;
}

/* An IPv6 literal, optionally followed by %zone (letters, digits, '-',
 * '_', '.'), as found between brackets. */
static bool valid_v6(const char *h, size_t len) {
  char buf[INET6_ADDRSTRLEN];
  struct in6_addr a6;
  const char *pct = memchr(h, '%', len);
  size_t alen = pct != NULL ? (size_t)(pct - h) : len;
  size_t i;

  if (alen == 0 || alen >= sizeof(buf)) {
    return false;
  }
  if (pct != NULL) {
    if (pct + 1 == h + len) {
      return false;
    }
    for (i = alen + 1; i < len; i++) {
      if (!is_alnum(h[i]) && h[i] != '-' && h[i] != '_' && h[i] != '.') {
        return false;
      }
    }
  }
  memcpy(buf, h, alen);
  buf[alen] = '\0';
  return inet_pton(AF_INET6, buf, &a6) == 1;
}

/* A DNS name or an IPv4 literal (a name made only of digits and dots must
 * be a valid dotted quad, so "1.2.3" or "256.1.1.1" are refused). */
static bool valid_name(const char *h, size_t len) {
  char buf[INET_ADDRSTRLEN];
  struct in_addr a4;
  size_t i, label = 0;
  bool numeric = true;

  if (len > 1 && h[len - 1] == '.') {
    len--; /* one trailing dot: a fully qualified name */
    numeric = false;
  }
  if (len == 0 || len > NAME_LEN_MAX) {
    return false;
  }
  for (i = 0; i < len; i++) {
    if (h[i] == '.') {
      if (label == 0) {
        return false;
      }
      label = 0;
      continue;
    }
    if (!is_alnum(h[i]) && h[i] != '-' && h[i] != '_') {
      return false;
    }
    if (!is_digit(h[i])) {
      numeric = false;
    }
    if (++label > LABEL_LEN_MAX) {
      return false;
    }
  }
  if (label == 0) {
    return false;
  }
  if (numeric) {
    if (len >= sizeof(buf)) {
      return false;
    }
    memcpy(buf, h, len);
    buf[len] = '\0';
    return inet_pton(AF_INET, buf, &a4) == 1;
  }
  return true;
}

int dht_addr_parse(const char *addr, char *host, size_t host_len,
                   uint16_t *port) {
  const char *h, *p, *colon, *close;
  size_t len, hlen;
  uint16_t pv;

  if (addr == NULL || host == NULL || port == NULL) {
    return DHT_ERR_INVAL;
  }
  len = strnlen(addr, DHT_ADDR_LEN_MAX + 1);
  if (len == 0 || len > DHT_ADDR_LEN_MAX) {
    return DHT_ERR_INVAL;
  }
  if (addr[0] == '[') {
    close = memchr(addr, ']', len);
    if (close == NULL || close[1] != ':') {
      return DHT_ERR_INVAL;
    }
    h = addr + 1;
    hlen = (size_t)(close - h);
    p = close + 2;
    if (!valid_v6(h, hlen)) {
      return DHT_ERR_INVAL;
    }
  } else {
    colon = memchr(addr, ':', len);
    if (colon == NULL ||
        memchr(colon + 1, ':', len - (size_t)(colon - addr) - 1)) {
      return DHT_ERR_INVAL;
    }
    h = addr;
    hlen = (size_t)(colon - addr);
    p = colon + 1;
    if (!valid_name(h, hlen)) {
      return DHT_ERR_INVAL;
    }
  }
  if (!parse_port(p, &pv) || hlen >= host_len) {
    return DHT_ERR_INVAL;
  }
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  *port = pv;
  return 0;
}

/* ---- small helpers ------------------------------------------------------ */

static int64_t now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A version for a new write: the wall clock in the hybrid stamp format of
 * docs/PROTOCOL.md, newer than every stamp this client has issued or been
 * shown, and this client's writer id. */
static dht_version stamp(dht_client *c) {
  struct timespec ts;
  uint64_t pt;
  dht_version v;

  clock_gettime(CLOCK_REALTIME, &ts);
  pt = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 16;
  c->hlc = pt > c->hlc ? pt : c->hlc + 1;
  v.hlc = c->hlc;
  v.writer = c->writer;
  return v;
}

/* What is left until deadline, for poll(): 0 when it has passed. */
static int remaining_ms(int64_t deadline) {
  int64_t left = deadline - now_ms();

  if (left <= 0) {
    return 0;
  }
  return left > INT_MAX ? INT_MAX : (int)left;
}

DHT__PRINTF(2, 3)
static void set_err(dht_client *c, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(c->err, sizeof(c->err), fmt, ap);
  va_end(ap);
}

/* Copies len bytes into a NUL-terminated string of size dst_size,
 * truncating, with control and non-ASCII bytes replaced by '?': the bytes
 * come from the network and end up on terminals. */
static void copy_printable(char *dst, size_t dst_size, const uint8_t *src,
                           size_t len) {
  size_t i;

  if (len >= dst_size) {
    len = dst_size - 1;
  }
  for (i = 0; i < len; i++) {
    dst[i] = (src[i] < 0x20 || src[i] >= 0x7f) ? '?' : (char)src[i];
  }
  dst[len] = '\0';
}

static void copy_peer(dht_client_peer *dst, const dht_peer_ref *src) {
  dst->id = src->id;
  copy_printable(dst->addr, sizeof(dst->addr), src->addr.p, src->addr.len);
}

/* Gives back the reply handed out by the last call, and its bytes. */
static void release(dht_client *c) {
  if (c->held) {
    dht_msg_free(&c->reply);
    c->in_off += c->held_len;
    c->held = false;
    c->held_len = 0;
  }
  if (c->in_off == c->in.len) {
    c->in.len = 0;
    c->in_off = 0;
  }
}

/* ---- lifecycle ---------------------------------------------------------- */

void dht_client_settings_default(dht_client_settings *settings) {
  memset(settings, 0, sizeof(*settings));
  dht_wire_limits_default(&settings->limits);
  settings->out_len_max = OUT_LEN_MAX_DEFAULT;
}

int dht_client_new(dht_client **out, const char *addr,
                   const dht_client_settings *settings) {
  dht_client *c;

  if (out == NULL) {
    return DHT_ERR_INVAL;
  }
  *out = NULL;
  c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return DHT_ERR_NOMEM;
  }
  if (settings != NULL) {
    c->settings = *settings;
  } else {
    dht_client_settings_default(&c->settings);
  }
  if (dht_addr_parse(addr, c->primary.host, sizeof(c->primary.host),
                     &c->primary.port) != 0 ||
      c->settings.limits.frame_len_max == 0 ||
      c->settings.limits.addr_len_max > DHT_ADDR_LEN_MAX ||
      c->settings.out_len_max == 0) {
    free(c);
    return DHT_ERR_INVAL;
  }
  snprintf(c->primary.addr, sizeof(c->primary.addr), "%s", addr);
  c->node = &c->primary;
  c->fd = -1;
  c->next_rid = 1;
  randombytes_buf(c->writer.b, DHT_ID_LEN);
  dht_buf_init(&c->out);
  dht_buf_init(&c->in);
  dht_buf_init(&c->plain);
  dht_buf_init(&c->raw);
  *out = c;
  return 0;
}

void dht_client_close(dht_client *c) {
  if (c->held) {
    dht_msg_free(&c->reply);
    c->held = false;
    c->held_len = 0;
  }
  if (c->fd >= 0) {
    close(c->fd);
    c->fd = -1;
  }
  dht_seal_del(c->seal);
  c->seal = NULL;
  c->out.len = 0;
  c->out_off = 0;
  c->in.len = 0;
  c->in_off = 0;
}

void dht_client_del(dht_client *c) {
  if (c == NULL) {
    return;
  }
  dht_client_close(c);
  dht_buf_free(&c->out);
  dht_buf_free(&c->in);
  dht_buf_free(&c->plain);
  dht_buf_free(&c->raw);
  sodium_memzero(&c->settings.key, sizeof(c->settings.key));
  free(c->fallbacks);
  free(c);
}

const char *dht_client_addr(const dht_client *c) { return c->primary.addr; }

const char *dht_client_current_addr(const dht_client *c) {
  return c->node->addr;
}

int dht_client_set_fallbacks(dht_client *c, const char *const *addrs,
                             size_t n) {
  client_node *list = NULL;
  size_t i;

  if ((addrs == NULL && n > 0) || n > DHT_CLIENT_FALLBACKS_MAX) {
    set_err(c, "invalid fallback list");
    return DHT_ERR_INVAL;
  }
  if (n > 0) {
    list = calloc(n, sizeof(*list));
    if (list == NULL) {
      set_err(c, "out of memory for %zu fallback addresses", n);
      return DHT_ERR_NOMEM;
    }
  }
  for (i = 0; i < n; i++) {
    if (dht_addr_parse(addrs[i], list[i].host, sizeof(list[i].host),
                       &list[i].port) != 0) {
      copy_printable(list[0].addr, sizeof(list[0].addr),
                     (const uint8_t *)addrs[i],
                     addrs[i] != NULL ? strnlen(addrs[i], 64) : 0);
      set_err(c, "bad fallback address '%s'", list[0].addr);
      free(list);
      return DHT_ERR_INVAL;
    }
    snprintf(list[i].addr, sizeof(list[i].addr), "%s", addrs[i]);
  }
  if (c->cur != 0) {
    /* The connection belongs to an entry that is going away. */
    dht_client_close(c);
  }
  free(c->fallbacks);
  c->fallbacks = list;
  c->n_fallbacks = n;
  c->cur = 0;
  c->node = &c->primary;
  return 0;
}

void dht_client_set_retry(dht_client *c, bool on) { c->retry = on; }

unsigned dht_client_last_attempts(const dht_client *c) { return c->attempts; }

const char *dht_client_last_error(const dht_client *c) { return c->err; }

const char *dht_client_last_refusal(const dht_client *c) {
  return c->refusal;
}

bool dht_client_connected(const dht_client *c) { return c->fd >= 0; }

int dht_client_fd(const dht_client *c) { return c->fd; }

/* ---- connecting --------------------------------------------------------- */

static bool host_is_numeric(const char *host) {
  struct in6_addr a6;
  struct in_addr a4;

  return inet_pton(AF_INET, host, &a4) == 1 ||
         inet_pton(AF_INET6, host, &a6) == 1;
}

/* Sets up a fresh socket: non-blocking, close-on-exec. */
static int socket_prepare(int fd) {
  int fl = fcntl(fd, F_GETFL);

  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
      fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) {
    return -1;
  }
  return 0;
}

/* Waits for a non-blocking connect on fd until deadline. Returns 0 and
 * sets *err to the connect's errno (0: connected), or DHT_ERR_TIMEOUT. */
static int connect_wait(int fd, int64_t deadline, int *err) {
  struct pollfd pfd;
  socklen_t len = sizeof(*err);
  int n;

  for (;;) {
    pfd.fd = fd;
    pfd.events = POLLOUT;
    pfd.revents = 0;
    n = poll(&pfd, 1, remaining_ms(deadline));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      *err = errno;
      return 0;
    }
    if (n == 0) {
      return DHT_ERR_TIMEOUT;
    }
    break;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) < 0) {
    *err = errno;
  }
  return 0;
}

static int read_some(dht_client *c);

/* Closed ring: runs the key handshake on the fresh connection until both
 * sides have proved the key, or the deadline. Returns 0, or with the
 * connection closed DHT_ERR_AUTH (the node closed it: it does not take this
 * key), DHT_ERR_TIMEOUT, DHT_ERR_UNAVAILABLE, DHT_ERR_NOMEM. */
static int handshake_until(dht_client *c, int64_t deadline, int timeout_ms) {
  uint8_t nonce[DHT_SEAL_NONCE_LEN];
  dht_seal_settings set;
  struct pollfd pfd;
  int rv, n;

  dht_seal_settings_default(&set);
  /* The call's deadline bounds it; the seal's own must not cut in first. */
  set.handshake_timeout_ms = 3600u * 1000u;
  set.frame_len_max = c->settings.limits.frame_len_max;
  randombytes_buf(nonce, sizeof(nonce));
  rv = dht_seal_new(&c->seal, &c->settings.key, true,
                    c->settings.key.kind == DHT_KEY_MEMBER ? DHT_ROLE_MEMBER
                                                           : DHT_ROLE_CLIENT,
                    nonce, &set, (uint64_t)now_ms());
  if (rv == 0) {
    rv = dht_seal_start(c->seal, &c->out);
  }
  if (rv != 0) {
    set_err(c, "cannot start the cluster-key handshake with %s: %s",
            c->node->addr, dht_strerror(rv));
    dht_client_close(c);
    return rv;
  }
  while (!dht_seal_established(c->seal)) {
    rv = dht_client_flush(c);
    if (rv != 0) {
      return rv;
    }
    if (remaining_ms(deadline) == 0) {
      set_err(c, "no cluster-key handshake from %s within %d ms",
              c->node->addr, timeout_ms);
      dht_client_close(c);
      return DHT_ERR_TIMEOUT;
    }
    pfd.fd = c->fd;
    pfd.events = (short)(POLLIN | (dht_client_want_write(c) ? POLLOUT : 0));
    pfd.revents = 0;
    n = poll(&pfd, 1, remaining_ms(deadline));
    if (n < 0 && errno != EINTR) {
      set_err(c, "poll on %s: %s", c->node->addr, strerror(errno));
      dht_client_close(c);
      return DHT_ERR_UNAVAILABLE;
    }
    if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
      rv = read_some(c);
      if (rv == DHT_ERR_UNAVAILABLE) {
        set_err(c,
                "%s closed the connection during the cluster-key handshake: "
                "it does not take this key (another ring's key, a client key "
                "where the member key is needed, or a node of an open ring)",
                c->node->addr);
        return DHT_ERR_AUTH;
      }
      if (rv != 0) {
        return rv;
      }
    }
  }
  return 0;
}

static int connect_until(dht_client *c, int64_t deadline, int timeout_ms) {
  struct addrinfo hints, *res = NULL, *ai;
  char port_str[8], numeric[INET6_ADDRSTRLEN] = "";
  bool is_numeric = host_is_numeric(c->node->host);
  int rv, fd, err = 0, one = 1;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (is_numeric ? AI_NUMERICHOST : 0);
  snprintf(port_str, sizeof(port_str), "%u", (unsigned)c->node->port);
  rv = getaddrinfo(c->node->host, port_str, &hints, &res);
  if (rv != 0) {
    set_err(c, "cannot resolve %s: %s", c->node->host,
            rv == EAI_SYSTEM ? strerror(errno) : gai_strerror(rv));
    return DHT_ERR_UNAVAILABLE;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    if (getnameinfo(ai->ai_addr, ai->ai_addrlen, numeric, sizeof(numeric), NULL,
                    0, NI_NUMERICHOST) != 0) {
      snprintf(numeric, sizeof(numeric), "?");
    }
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    if (socket_prepare(fd) < 0) {
      err = errno;
      close(fd);
      continue;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      err = 0;
    } else if (errno == EINPROGRESS || errno == EINTR) {
      /* EINTR: the connect carries on asynchronously, as EINPROGRESS. */
      if (connect_wait(fd, deadline, &err) == DHT_ERR_TIMEOUT) {
        close(fd);
        freeaddrinfo(res);
        if (is_numeric) {
          set_err(c, "cannot reach %s: connect timed out after %d ms",
                  c->node->addr, timeout_ms);
        } else {
          set_err(c, "cannot reach %s (%s): connect timed out after %d ms",
                  c->node->addr, numeric, timeout_ms);
        }
        return DHT_ERR_TIMEOUT;
      }
    } else {
      err = errno;
    }
    if (err == 0) {
      /* Small request frames must not wait for Nagle. Best effort. */
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      freeaddrinfo(res);
      c->fd = fd;
      c->got_bytes = false;
      c->out.len = c->out_off = 0;
      c->in.len = c->in_off = 0;
      return c->settings.key.kind == DHT_KEY_NONE
                 ? 0
                 : handshake_until(c, deadline, timeout_ms);
    }
    close(fd);
  }
  freeaddrinfo(res);
  c->refused = err == ECONNREFUSED;
  if (is_numeric) {
    set_err(c, "cannot reach %s: %s", c->node->addr, strerror(err));
  } else {
    set_err(c, "cannot reach %s (%s): %s", c->node->addr, numeric,
            strerror(err));
  }
  return DHT_ERR_UNAVAILABLE;
}

int dht_client_connect(dht_client *c, int timeout_ms) {
  if (timeout_ms < 0) {
    set_err(c, "negative timeout");
    return DHT_ERR_INVAL;
  }
  release(c);
  if (c->fd >= 0) {
    return 0;
  }
  return connect_until(c, now_ms() + timeout_ms, timeout_ms);
}

/* ---- writing ------------------------------------------------------------ */

bool dht_client_want_write(const dht_client *c) {
  return c->fd >= 0 && c->out_off < c->out.len;
}

int dht_client_flush(dht_client *c) {
  ssize_t n;

  if (c->fd < 0) {
    set_err(c, "not connected to %s", c->node->addr);
    return DHT_ERR_UNAVAILABLE;
  }
  while (c->out_off < c->out.len) {
    n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off,
             MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    }
    if (n < 0) {
      set_err(c, "write to %s: %s", c->node->addr, strerror(errno));
      dht_client_close(c);
      return DHT_ERR_UNAVAILABLE;
    }
    c->out_off += (size_t)n;
  }
  c->out.len = 0;
  c->out_off = 0;
  return 0;
}

int dht_client_queue(dht_client *c, dht_msg *req, uint64_t *rid) {
  size_t pending, before;
  int rv;

  if (req == NULL) {
    set_err(c, "no request");
    return DHT_ERR_INVAL;
  }
  if (c->fd < 0) {
    set_err(c, "not connected to %s", c->node->addr);
    return DHT_ERR_UNAVAILABLE;
  }
  /* Move the unwritten tail to the front, so the queue never creeps. */
  if (c->out_off > 0) {
    pending = c->out.len - c->out_off;
    memmove(c->out.data, c->out.data + c->out_off, pending);
    c->out.len = pending;
    c->out_off = 0;
  }
  before = c->out.len;
  req->rid = c->next_rid;
  if (c->seal != NULL) {
    /* Sealing moves the counter on: check the room before, not after. */
    c->plain.len = 0;
    rv = dht_msg_encode(req, &c->plain);
    if (rv == 0 && before > 0 &&
        before + c->plain.len + DHT_SEAL_OVERHEAD > c->settings.out_len_max) {
      set_err(c, "output queue to %s is full (%zu bytes unsent)",
              c->node->addr, before);
      return DHT_ERR_FULL;
    }
    if (rv == 0) {
      rv = dht_seal_send(c->seal, c->plain.data, c->plain.len, &c->out);
    }
  } else {
    rv = dht_msg_encode(req, &c->out);
  }
  if (rv != 0) {
    set_err(c, "cannot encode %s request: %s", dht_msg_type_name(req->type),
            dht_strerror(rv));
    return rv;
  }
  if (before > 0 && c->out.len > c->settings.out_len_max) {
    c->out.len = before;
    set_err(c, "output queue to %s is full (%zu bytes unsent)", c->node->addr,
            before);
    return DHT_ERR_FULL;
  }
  c->next_rid = c->next_rid == UINT64_MAX ? 1 : c->next_rid + 1;
  if (rid != NULL) {
    *rid = req->rid;
  }
  return 0;
}

int dht_client_send(dht_client *c, dht_msg *req, uint64_t *rid) {
  int rv = dht_client_queue(c, req, rid);

  return rv != 0 ? rv : dht_client_flush(c);
}

/* ---- reading ------------------------------------------------------------ */

/* One recv() into in. Returns 0 (bytes arrived, or none yet), or
 * DHT_ERR_UNAVAILABLE / DHT_ERR_TOO_LARGE / DHT_ERR_NOMEM with the
 * connection closed (NOMEM leaves it open). */
/* Closed ring: one recv() through the seal; the frames it opens are
 * appended to in, as plain frames would have arrived. */
static int read_sealed(dht_client *c) {
  const uint8_t *frame;
  size_t flen;
  ssize_t n;
  int rv;

  rv = dht_buf_reserve(&c->raw, READ_CHUNK);
  if (rv != 0) {
    set_err(c, "out of memory reading from %s", c->node->addr);
    return rv;
  }
  do {
    n = recv(c->fd, c->raw.data, READ_CHUNK, 0);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return 0;
  }
  if (n <= 0) {
    if (n == 0) {
      set_err(c, "%s closed the connection", c->node->addr);
    } else {
      set_err(c, "read from %s: %s", c->node->addr, strerror(errno));
    }
    dht_client_close(c);
    return DHT_ERR_UNAVAILABLE;
  }
  rv = dht_seal_recv(c->seal, c->raw.data, (size_t)n, &c->out,
                     (uint64_t)now_ms());
  while (rv == 0 && (rv = dht_seal_read(c->seal, &frame, &flen)) == 1) {
    rv = dht_buf_append(&c->in, frame, flen);
  }
  if (rv == DHT_ERR_NOMEM) {
    set_err(c, "out of memory reading from %s", c->node->addr);
  }
  if (rv < 0) {
    if (rv != DHT_ERR_NOMEM) {
      set_err(c, "%s %s: connection closed", c->node->addr,
              dht_seal_established(c->seal)
                  ? "sent a frame that failed authentication"
                  : "failed the cluster-key handshake (it does not hold the "
                    "key it claims)");
    }
    dht_client_close(c);
    return rv == DHT_ERR_NOMEM ? rv : DHT_ERR_AUTH;
  }
  return 0;
}

static int read_some(dht_client *c) {
  size_t avail, want = READ_CHUNK, body_len = 0;
  ssize_t n;
  int rv;

  /* Compact once per read, never while a reply borrows the bytes. */
  if (!c->held && c->in_off > 0) {
    avail = c->in.len - c->in_off;
    memmove(c->in.data, c->in.data + c->in_off, avail);
    c->in.len = avail;
    c->in_off = 0;
  }
  if (c->seal != NULL) {
    return read_sealed(c);
  }
  avail = c->in.len - c->in_off;
  if (avail >= DHT_FRAME_HEADER_LEN) {
    rv = dht_frame_peek(c->in.data + c->in_off, avail,
                        c->settings.limits.frame_len_max, &body_len);
    if (rv != 0) {
      return rv; /* the caller has checked this already; defensive */
    }
    if (avail < DHT_FRAME_HEADER_LEN + body_len &&
        DHT_FRAME_HEADER_LEN + body_len - avail > want) {
      want = DHT_FRAME_HEADER_LEN + body_len - avail;
    }
  }
  rv = dht_buf_reserve(&c->in, want);
  if (rv != 0) {
    set_err(c, "out of memory reading from %s", c->node->addr);
    return rv;
  }
  for (;;) {
    n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    break;
  }
  if (n > 0) {
    c->in.len += (size_t)n;
    c->got_bytes = true;
    return 0;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    return 0;
  }
  if (n == 0) {
    /* A closed ring closes a keyless connection at its first frame. */
    set_err(c, "%s closed the connection%s", c->node->addr,
            c->got_bytes ? ""
                         : " before answering anything (if it runs a closed "
                           "ring, a cluster key is needed)");
  } else {
    set_err(c, "read from %s: %s", c->node->addr, strerror(errno));
  }
  dht_client_close(c);
  return DHT_ERR_UNAVAILABLE;
}

/*
 * Decodes the next complete frame in `in` into c->reply (held).
 * Returns 1 (decoded; *decode_rv is 0 or the decoder's error), 0 (no
 * complete frame yet), or DHT_ERR_TOO_LARGE (the header declares too much:
 * connection closed).
 */
static int take_frame(dht_client *c, int *decode_rv) {
  size_t avail, body_len = 0;
  const uint8_t *p;

  release(c);
  avail = c->in.len - c->in_off;
  if (avail < DHT_FRAME_HEADER_LEN) {
    return 0;
  }
  p = c->in.data + c->in_off;
  if (dht_frame_peek(p, avail, c->settings.limits.frame_len_max, &body_len) !=
      0) {
    set_err(c,
            "%s sent a frame of %zu bytes, above the limit of %u; "
            "connection closed",
            c->node->addr, body_len,
            (unsigned)c->settings.limits.frame_len_max);
    dht_client_close(c);
    return DHT_ERR_TOO_LARGE;
  }
  if (avail - DHT_FRAME_HEADER_LEN < body_len) {
    return 0;
  }
  *decode_rv = dht_msg_decode(&c->reply, p + DHT_FRAME_HEADER_LEN, body_len,
                              &c->settings.limits);
  c->held = true;
  c->held_len = DHT_FRAME_HEADER_LEN + body_len;
  return 1;
}

/*
 * Waits until deadline for the next final reply (any rid, or only rid when
 * match_rid), writing queued output meanwhile. Polls at least once, so a
 * deadline already passed still picks up what is readable right now.
 */
static int wait_reply(dht_client *c, int64_t deadline, int timeout_ms,
                      bool match_rid, uint64_t rid, const dht_msg **reply) {
  struct pollfd pfd;
  bool polled = false;
  int rv, decode_rv = 0, n;

  *reply = NULL;
  for (;;) {
    rv = take_frame(c, &decode_rv);
    if (rv < 0) {
      return rv;
    }
    if (rv == 1 && decode_rv != 0) {
      if (match_rid && dht_msg_can_reply(&c->reply) && c->reply.rid != rid) {
        continue; /* garbled, but not ours */
      }
      set_err(c, "undecodable reply from %s: %s", c->node->addr,
              dht_strerror(decode_rv));
      return decode_rv;
    }
    if (rv == 1) {
      if (c->reply.type == DHT_MSG_ACCEPTED ||
          !dht_msg_type_is_reply((int)c->reply.type) ||
          (match_rid && c->reply.rid != rid)) {
        continue;
      }
      *reply = &c->reply;
      return 0;
    }
    if (c->fd < 0) {
      set_err(c, "not connected to %s", c->node->addr);
      return DHT_ERR_UNAVAILABLE;
    }
    if (polled && remaining_ms(deadline) == 0) {
      set_err(c, "no reply from %s within %d ms", c->node->addr, timeout_ms);
      return DHT_ERR_TIMEOUT;
    }
    pfd.fd = c->fd;
    pfd.events = (short)(POLLIN | (dht_client_want_write(c) ? POLLOUT : 0));
    pfd.revents = 0;
    n = poll(&pfd, 1, remaining_ms(deadline));
    polled = true;
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      set_err(c, "poll on %s: %s", c->node->addr, strerror(errno));
      dht_client_close(c);
      return DHT_ERR_UNAVAILABLE;
    }
    if (pfd.revents & POLLNVAL) {
      set_err(c, "connection to %s is not open", c->node->addr);
      c->fd = -1; /* not ours to close any more */
      dht_client_close(c);
      return DHT_ERR_UNAVAILABLE;
    }
    if (pfd.revents & POLLOUT) {
      rv = dht_client_flush(c);
      if (rv != 0) {
        return rv;
      }
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      rv = read_some(c);
      if (rv != 0) {
        return rv;
      }
    }
  }
}

int dht_client_recv(dht_client *c, const dht_msg **reply, int timeout_ms) {
  if (reply == NULL || timeout_ms < 0) {
    set_err(c, "invalid argument to dht_client_recv");
    return DHT_ERR_INVAL;
  }
  return wait_reply(c, now_ms() + timeout_ms, timeout_ms, false, 0, reply);
}

/* ---- blocking calls ----------------------------------------------------- */

/* Before reusing an idle connection, notices a close the node made while
 * we were not looking, so that it costs a reconnect rather than a failed
 * call. Only an EOF that is already there counts; nothing is resent. */
static void drop_if_closed(dht_client *c) {
  struct pollfd pfd;

  if (c->fd < 0) {
    return;
  }
  pfd.fd = c->fd;
  pfd.events = POLLIN;
  pfd.revents = 0;
  if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
    /* Stale replies read here are skipped later by rid. */
    if (read_some(c) != 0) {
      dht_client_close(c);
    }
  }
}

static int call_until(dht_client *c, dht_msg *req, const dht_msg **reply,
                      int64_t deadline, int timeout_ms) {
  uint64_t rid;
  int rv;

  *reply = NULL;
  release(c);
  drop_if_closed(c);
  if (c->fd < 0) {
    rv = connect_until(c, deadline, timeout_ms);
    if (rv != 0) {
      return rv;
    }
  }
  rv = dht_client_send(c, req, &rid);
  if (rv != 0) {
    return rv;
  }
  return wait_reply(c, deadline, timeout_ms, true, rid, reply);
}

int dht_client_call(dht_client *c, dht_msg *req, const dht_msg **reply,
                    int timeout_ms) {
  c->attempts = 0;
  if (req == NULL || reply == NULL || timeout_ms < 0) {
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  c->attempts = 1;
  return call_until(c, req, reply, now_ms() + timeout_ms, timeout_ms);
}

/* One attempt: calls, then turns an ERROR reply into its code (and sets
 * *answered) and a reply of another type than expect into
 * DHT_ERR_UNEXPECTED. */
static int call_expect_until(dht_client *c, dht_msg *req, dht_msg_type expect,
                             const dht_msg **reply, int64_t deadline,
                             int timeout_ms, bool *answered) {
  char msg[DHT_ADDR_LEN_MAX + 1];
  const dht_msg *r;
  int rv;

  *answered = false;
  c->refusal[0] = '\0';
  c->stale_known = false;
  rv = call_until(c, req, &r, deadline, timeout_ms);
  if (rv != 0) {
    return rv;
  }
  if (r->type == DHT_MSG_ERROR) {
    copy_printable(msg, sizeof(msg), r->error_msg.p, r->error_msg.len);
    set_err(c, "%s answered ERROR %s (%d)%s%s", c->node->addr,
            dht_errname(r->error_code), (int)r->error_code,
            msg[0] != '\0' ? ": " : "", msg);
    copy_printable(c->refusal, sizeof(c->refusal), r->error_msg.p,
                   r->error_msg.len);
    c->stale_known = r->error_code == DHT_ERR_STALE && r->has_ver;
    c->stale_ver = r->ver;
    *answered = true;
    /* The decoder guarantees a negative code; keep it so if not. */
    return r->error_code < 0 ? (int)r->error_code : DHT_ERR_UNEXPECTED;
  }
  if (r->type != expect && !(req->direct && r->type == DHT_MSG_MOVED)) {
    set_err(c, "%s answered %s to %s", c->node->addr,
            dht_msg_type_name(r->type), dht_msg_type_name(req->type));
    return DHT_ERR_UNEXPECTED;
  }
  *reply = r;
  return 0;
}

/* What a failed attempt calls for. */
typedef enum retry_kind {
  RETRY_NONE, /* a definite answer: return it */
  RETRY_SAME, /* the node answered for the ring: ask it again */
  RETRY_NEXT  /* the node itself is the problem: move on */
} retry_kind;

static retry_kind retry_kind_of(int rv, bool answered) {
  if (answered) {
    switch (rv) {
    case DHT_ERR_UNAVAILABLE:
    case DHT_ERR_TIMEOUT:
    case DHT_ERR_HOPS:
      return RETRY_SAME;
    case DHT_ERR_STATE:
    case DHT_ERR_FULL:
      return RETRY_NEXT;
    default:
      return RETRY_NONE;
    }
  }
  /* Our own side: cannot connect, connection lost, attempt timed out, the
   * output queue is stuck. Anything else (a reply that does not decode, an
   * oversized frame, the wrong reply type) would happen again. */
  switch (rv) {
  case DHT_ERR_UNAVAILABLE:
  case DHT_ERR_TIMEOUT:
  case DHT_ERR_FULL:
    return RETRY_NEXT;
  default:
    return RETRY_NONE;
  }
}

/* Switches to the next address, round-robin over primary + fallbacks,
 * dropping the connection to the current one. */
static void next_node(dht_client *c) {
  dht_client_close(c);
  c->cur = (c->cur + 1) % (c->n_fallbacks + 1);
  c->node = c->cur == 0 ? &c->primary : &c->fallbacks[c->cur - 1];
}

static void sleep_ms(int ms) {
  struct timespec ts;

  ts.tv_sec = ms / 1000;
  ts.tv_nsec = (long)(ms % 1000) * 1000000L;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/*
 * Runs req until it succeeds, fails for good or the deadline fixed here
 * passes; one attempt only when may_retry is false or retries are off.
 * Every attempt sends req afresh (a new rid), so a late reply to an
 * earlier attempt is skipped.
 */
static int call_retry(dht_client *c, dht_msg *req, dht_msg_type expect,
                      const dht_msg **reply, int timeout_ms, bool may_retry) {
  char err[ERR_TEXT_MAX];
  int64_t start = now_ms(), deadline = start + timeout_ms;
  size_t n_nodes = c->n_fallbacks + 1, tried = 1;
  bool retry = may_retry && c->retry, answered, refused_all = true;
  int rv, left, share, backoff_ms = BACKOFF_MS_MIN;
  retry_kind kind;

  c->attempts = 0;
  c->answered = false;
  if (timeout_ms < 0) {
    set_err(c, "negative timeout");
    return DHT_ERR_INVAL;
  }
  for (;;) {
    left = remaining_ms(deadline);
    share = left;
    if (retry && left / 2 > ATTEMPT_MS_MIN) {
      share = left / 2;
    } else if (retry && left > ATTEMPT_MS_MIN) {
      share = ATTEMPT_MS_MIN;
    }
    c->attempts++;
    c->refused = false;
    rv = call_expect_until(c, req, expect, reply, now_ms() + share, share,
                           &answered);
    c->answered = answered;
    if (rv == 0 || !retry) {
      return rv;
    }
    refused_all = refused_all && c->refused;
    if (rv == DHT_ERR_STALE && c->stale_known && req->has_ver &&
        remaining_ms(deadline) > 0) {
      /* A newer write of the key is stored (this client's clock is behind
       * the writer's, or its retry met a later write): this call's write
       * is newer than that one, since it was issued after it was stored.
       * Stamp it so and send it again at once. */
      if (c->stale_ver.hlc > c->hlc) {
        c->hlc = c->stale_ver.hlc;
      }
      req->ver = stamp(c);
      continue;
    }
    kind = retry_kind_of(rv, answered);
    /* Every address refused to connect: nothing listens at any, and
     * waiting out the deadline would only hide that. */
    if (kind == RETRY_NONE || remaining_ms(deadline) == 0 ||
        (refused_all && tried >= n_nodes)) {
      break;
    }
    if (kind == RETRY_NEXT) {
      next_node(c);
    }
    /* A node not tried yet in this call goes at once; otherwise pause, so
     * that a ring in the middle of repairing itself gets a moment, and
     * nodes that are all down are not hammered until the deadline. */
    if (kind == RETRY_SAME || tried >= n_nodes) {
      left = remaining_ms(deadline);
      sleep_ms(left < backoff_ms ? left : backoff_ms);
      backoff_ms =
          2 * backoff_ms < BACKOFF_MS_MAX ? 2 * backoff_ms : BACKOFF_MS_MAX;
      if (remaining_ms(deadline) == 0) {
        break;
      }
    } else {
      tried++;
    }
  }
  if (refused_all && c->attempts > 1) {
    snprintf(err, sizeof(err), "%s", c->err);
    set_err(c, "%s (and so did the %u other address%s)", err,
            c->attempts - 1, c->attempts > 2 ? "es" : "");
  } else if (c->attempts > 1) {
    snprintf(err, sizeof(err), "%s", c->err);
    set_err(c, "%s (gave up after %u attempts in %lld ms)", err, c->attempts,
            (long long)(now_ms() - start));
  }
  return rv;
}

/* A single attempt with the whole timeout (stats, neighbors, ping, scan:
 * questions for one particular node). */
static int call_expect(dht_client *c, dht_msg *req, dht_msg_type expect,
                       const dht_msg **reply, int timeout_ms) {
  return call_retry(c, req, expect, reply, timeout_ms, false);
}

/* Checks a key (and value) against the limits before anything is sent. */
static int check_kv(dht_client *c, const void *key, size_t key_len,
                    size_t value_len) {
  c->attempts = 0;
  if (key == NULL || key_len == 0) {
    set_err(c, "empty key");
    return DHT_ERR_INVAL;
  }
  if (key_len > c->settings.limits.key_len_max) {
    set_err(c, "key of %zu bytes is above the limit of %u", key_len,
            (unsigned)c->settings.limits.key_len_max);
    return DHT_ERR_TOO_LARGE;
  }
  if (value_len > c->settings.limits.value_len_max) {
    set_err(c, "value of %zu bytes is above the limit of %u", value_len,
            (unsigned)c->settings.limits.value_len_max);
    return DHT_ERR_TOO_LARGE;
  }
  return 0;
}

int dht_client_request(dht_client *c, dht_msg *req, dht_msg_type expect,
                       const dht_msg **reply, int timeout_ms) {
  if (req == NULL || reply == NULL) {
    c->attempts = 0;
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  if (req->type == DHT_MSG_GET || req->type == DHT_MSG_PUT ||
      req->type == DHT_MSG_DEL) {
    int rv = check_kv(c, req->key.p, req->key.len,
                      req->type == DHT_MSG_PUT ? req->value.len : 0);
    if (rv != 0) {
      return rv;
    }
  }
  return call_retry(c, req, expect, reply, timeout_ms, true);
}

bool dht_client_last_answered(const dht_client *c) { return c->answered; }

dht_version dht_client_stamp(dht_client *c) { return stamp(c); }

static void key_req(dht_msg *req, dht_msg_type type, const void *key,
                    size_t key_len) {
  memset(req, 0, sizeof(*req));
  req->type = type;
  req->key.p = key;
  req->key.len = key_len;
}

int dht_client_ping(dht_client *c, dht_client_peer *node, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  int rv;

  c->attempts = 0;
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_PING;
  rv = call_expect(c, &req, DHT_MSG_PONG, &r, timeout_ms);
  if (rv == 0 && node != NULL) {
    copy_peer(node, &r->peer);
  }
  return rv;
}

int dht_client_put(dht_client *c, const void *key, size_t key_len,
                   const void *value, size_t value_len, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  int rv;

  c->attempts = 0;
  if (value == NULL && value_len > 0) {
    set_err(c, "no value");
    return DHT_ERR_INVAL;
  }
  rv = check_kv(c, key, key_len, value_len);
  if (rv != 0) {
    return rv;
  }
  key_req(&req, DHT_MSG_PUT, key, key_len);
  req.value.p = value;
  req.value.len = value_len;
  /* Fixed here, carried by every retry: they are all this one write. */
  req.has_ver = true;
  req.ver = stamp(c);
  return call_retry(c, &req, DHT_MSG_OK, &r, timeout_ms, true);
}

int dht_client_get(dht_client *c, const void *key, size_t key_len,
                   uint8_t **value, size_t *value_len, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  uint8_t *copy;
  int rv;

  c->attempts = 0;
  if (value == NULL || value_len == NULL) {
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  *value = NULL;
  *value_len = 0;
  rv = check_kv(c, key, key_len, 0);
  if (rv != 0) {
    return rv;
  }
  key_req(&req, DHT_MSG_GET, key, key_len);
  rv = call_retry(c, &req, DHT_MSG_VALUE, &r, timeout_ms, true);
  if (rv != 0) {
    return rv;
  }
  copy = malloc(r->value.len > 0 ? r->value.len : 1);
  if (copy == NULL) {
    set_err(c, "out of memory for a value of %zu bytes", r->value.len);
    return DHT_ERR_NOMEM;
  }
  if (r->value.len > 0) {
    memcpy(copy, r->value.p, r->value.len);
  }
  *value = copy;
  *value_len = r->value.len;
  return 0;
}

int dht_client_remove(dht_client *c, const void *key, size_t key_len,
                      int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  int rv;

  rv = check_kv(c, key, key_len, 0);
  if (rv != 0) {
    return rv;
  }
  key_req(&req, DHT_MSG_DEL, key, key_len);
  req.has_ver = true;
  req.ver = stamp(c);
  return call_retry(c, &req, DHT_MSG_OK, &r, timeout_ms, true);
}

int dht_client_lookup(dht_client *c, const dht_id *target, bool trace,
                      dht_client_lookup_result *out, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  size_t i;
  int rv;

  c->attempts = 0;
  if (target == NULL || out == NULL) {
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_FIND_SUCC;
  req.target = *target;
  req.trace = trace;
  rv = call_retry(c, &req, DHT_MSG_FIND_SUCC_R, &r, timeout_ms, true);
  if (rv != 0) {
    return rv;
  }
  copy_peer(&out->owner, &r->peer);
  out->hops = r->hops;
  out->n_path = r->n_path < DHT_PATH_MAX ? r->n_path : DHT_PATH_MAX;
  for (i = 0; i < out->n_path; i++) {
    copy_peer(&out->path[i], &r->path[i]);
  }
  return 0;
}

/* Copies pred, succs and preds, which NEIGHBORS and STATS_R share. */
static void copy_ring(const dht_msg *r, dht_client_peer *node, bool *has_pred,
                      dht_client_peer *pred, dht_client_peer *succs,
                      size_t *n_succs, dht_client_peer *preds,
                      size_t *n_preds) {
  size_t i;

  copy_peer(node, &r->peer);
  *has_pred = r->has_pred;
  if (r->has_pred) {
    copy_peer(pred, &r->pred);
  } else {
    memset(pred, 0, sizeof(*pred));
  }
  *n_succs = r->n_succs < DHT_SUCC_LIST_MAX ? r->n_succs : DHT_SUCC_LIST_MAX;
  for (i = 0; i < *n_succs; i++) {
    copy_peer(&succs[i], &r->succs[i]);
  }
  *n_preds = r->n_preds < DHT_SUCC_LIST_MAX ? r->n_preds : DHT_SUCC_LIST_MAX;
  for (i = 0; i < *n_preds; i++) {
    copy_peer(&preds[i], &r->preds[i]);
  }
}

int dht_client_neighbors(dht_client *c, dht_client_neighbors_result *out,
                         int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  int rv;

  c->attempts = 0;
  if (out == NULL) {
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_GET_NEIGHBORS;
  rv = call_expect(c, &req, DHT_MSG_NEIGHBORS, &r, timeout_ms);
  if (rv != 0) {
    return rv;
  }
  copy_ring(r, &out->node, &out->has_pred, &out->pred, out->succs,
            &out->n_succs, out->preds, &out->n_preds);
  return 0;
}

int dht_client_stats(dht_client *c, dht_client_stats_result *out,
                     int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  size_t i;
  int rv;

  c->attempts = 0;
  if (out == NULL) {
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_STATS;
  rv = call_expect(c, &req, DHT_MSG_STATS_R, &r, timeout_ms);
  if (rv != 0) {
    return rv;
  }
  copy_ring(r, &out->node, &out->has_pred, &out->pred, out->succs,
            &out->n_succs, out->preds, &out->n_preds);
  out->n_fingers = r->n_fingers < DHT_ID_BITS ? r->n_fingers : DHT_ID_BITS;
  for (i = 0; i < out->n_fingers; i++) {
    out->fingers[i].start_bit = r->fingers[i].start_bit;
    copy_peer(&out->fingers[i].peer, &r->fingers[i].peer);
  }
  out->n_counters =
      r->n_counters < DHT_COUNTERS_MAX ? r->n_counters : DHT_COUNTERS_MAX;
  for (i = 0; i < out->n_counters; i++) {
    copy_printable(out->counters[i].name, sizeof(out->counters[i].name),
                   r->counters[i].name.p, r->counters[i].name.len);
    out->counters[i].value = r->counters[i].value;
  }
  out->n_lost = r->n_lost < DHT_LOST_MAX ? r->n_lost : DHT_LOST_MAX;
  for (i = 0; i < out->n_lost; i++) {
    const dht_lost_range *l = &r->lost[i];
    dht_client_lost_range *o = &out->lost[i];
    size_t k;
    o->from = l->from;
    o->to = l->to;
    o->at_ms = l->at_ms;
    o->n_holders = l->n_holders < DHT_CLIENT_LOST_HOLDERS_MAX
                       ? l->n_holders
                       : DHT_CLIENT_LOST_HOLDERS_MAX;
    for (k = 0; k < o->n_holders; k++) {
      copy_peer(&o->holders[k], &l->holders[k]);
    }
  }
  out->n_exchanges = r->n_exchanges < DHT_EXCHANGES_MAX ? r->n_exchanges
                                                        : DHT_EXCHANGES_MAX;
  for (i = 0; i < out->n_exchanges; i++) {
    const dht_exchange *x = &r->exchanges[i];
    dht_client_exchange *o = &out->exchanges[i];
    copy_peer(&o->replica, &x->peer);
    o->from = x->from;
    o->to = x->to;
    o->ago_ms = x->ago_ms;
    o->took_ms = x->took_ms;
    o->buckets = x->buckets;
    o->pushed = x->pushed;
    o->outcome = (dht_exchange_outcome)x->outcome;
  }
  out->n_dead = r->n_dead < DHT_DEAD_MAX ? r->n_dead : DHT_DEAD_MAX;
  for (i = 0; i < out->n_dead; i++) {
    copy_peer(&out->dead[i].peer, &r->dead[i].peer);
    out->dead[i].ago_ms = r->dead[i].ago_ms;
  }
  return 0;
}

int dht_client_ack_lost(dht_client *c, const dht_id *from, const dht_id *to,
                        int timeout_ms) {
  const dht_msg *r;
  dht_msg req;

  c->attempts = 0;
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_ACK_LOST;
  req.from = *from;
  req.to = *to;
  return call_expect(c, &req, DHT_MSG_OK, &r, timeout_ms);
}

int dht_client_stats_counter(const dht_client_stats_result *stats,
                             const char *name, uint64_t *value) {
  size_t i;

  for (i = 0; i < stats->n_counters; i++) {
    if (strcmp(stats->counters[i].name, name) == 0) {
      *value = stats->counters[i].value;
      return 0;
    }
  }
  return DHT_ERR_NOT_FOUND;
}

/* ---- scan --------------------------------------------------------------- */

void dht_client_scan_result_free(dht_client_scan_result *res) {
  if (res == NULL) {
    return;
  }
  free(res->items);
  free(res->keys_);
  memset(res, 0, sizeof(*res));
}

int dht_client_scan(dht_client *c, const dht_id *from, uint32_t limit,
                    dht_client_scan_result *out, int timeout_ms) {
  const dht_msg *r;
  dht_msg req;
  size_t i, total = 0, off = 0;
  int rv;

  if (out != NULL) {
    memset(out, 0, sizeof(*out));
  }
  if (from == NULL || out == NULL || limit == 0) {
    c->attempts = 0;
    set_err(c, "invalid argument");
    return DHT_ERR_INVAL;
  }
  memset(&req, 0, sizeof(req));
  req.type = DHT_MSG_SCAN;
  req.from = *from;
  req.limit = limit;
  rv = call_expect(c, &req, DHT_MSG_SCAN_R, &r, timeout_ms);
  if (rv != 0) {
    return rv;
  }
  /* Each key is at most key_len_max and n_items at most items_max (the
   * decoder saw to it), so the sum cannot overflow. */
  for (i = 0; i < r->n_items; i++) {
    total += r->items[i].key.len;
  }
  if (r->n_items > 0) {
    out->items = calloc(r->n_items, sizeof(*out->items));
    out->keys_ = malloc(total > 0 ? total : 1);
    if (out->items == NULL || out->keys_ == NULL) {
      dht_client_scan_result_free(out);
      set_err(c, "out of memory for a scan of %zu items", r->n_items);
      return DHT_ERR_NOMEM;
    }
  }
  for (i = 0; i < r->n_items; i++) {
    const dht_kv *kv = &r->items[i];
    dht_client_scan_item *it = &out->items[i];

    memcpy(out->keys_ + off, kv->key.p, kv->key.len);
    it->key = out->keys_ + off;
    it->key_len = kv->key.len;
    off += kv->key.len;
    dht_id_hash(&it->key_id, kv->key.p, kv->key.len);
    it->has_version = kv->has_version;
    it->tombstone = kv->tombstone;
    it->version = kv->version;
  }
  out->n_items = r->n_items;
  out->more = r->more;
  return 0;
}
