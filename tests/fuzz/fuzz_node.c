/*
 * fuzz_node.c: one dht_node in a fake host, driven by the fuzzer's bytes.
 *
 * The host is like the unit tests' (tests/unit/test_util.h) but holds no
 * expectations: it only carries the node's actions out. Around the node
 * are six ring members at fixed ids (members 0..5 at 0x10.., 0x30.., ...,
 * 0xb0..; the node itself at 0x80..), clients on connections of their own,
 * and addresses the node learns from frames. The input is a few setup
 * bytes, then a list of steps (see the op enum below): frames on any
 * connection (raw bytes, or a message of any type built from the input and
 * run through the real encoder), replies to the requests the node sent
 * (their rid echoed, so they reach the node's pending table), time passing
 * with the node's timers, closed connections, unreachable peers, group
 * commits that succeed or fail, a store that starts refusing writes, and
 * the node's own commands (leave, join, create).
 *
 * After every step the host drains every action and requires that
 *   - dht_node_check_invariants() holds,
 *   - every frame the node sends or replies decodes under default limits,
 *   - a REPLY or CLOSE names a connection that has carried a frame in.
 * Anything else the node does wrong shows up as an ASan or UBSan report,
 * an assertion, or a leak when the node is deleted at the end.
 *
 * The setup bytes: start (create a ring of one / join through a member /
 * install routing as a converged ring would / stay idle), group commit on
 * or off, and default or small settings (two replicas, short lists, tight
 * wire limits, a short tombstone grace).
 */
#include <stdbool.h>
#include <stddef.h>

#include "dht/err.h"
#include "dht/id.h"
#include "dht/node.h"
#include "dht/store.h"
#include "dht/wire.h"
#include "fuzz.h"

#define N_MEMBERS 6     /* ring members at fixed ids */
#define SELF_SLOT 6     /* the node's own address in the address table */
#define ADDRS_MAX 16    /* address table: members, self, learnt addresses */
#define SENT_MAX 32     /* requests of the node kept for replies */
#define SEEN_MAX 64     /* connections that carried a frame in */
#define STEPS_MAX 2000  /* steps per input, so that one input stays fast */
#define WALL_START_MS 1700000000000ull
#define NOW_START_MS 1000
#define CLIENT_CONN 1000 /* clients: 1000..1003 */
#define INBOUND_CONN 2000 /* members that connected to the node: 2000.. */

/* What the fuzzer can make the host do next. */
enum op {
  OP_RAW,         /* conn, len, bytes: a frame body as it is */
  OP_MSG,         /* conn, type, fields: an encoded message of any type */
  OP_REPLY,       /* which request, what kind of reply, fields */
  OP_TICK,        /* a little time passes (1..1021 ms) */
  OP_JUMP,        /* to the next deadline, or seconds to an hour pass */
  OP_CONN_CLOSED, /* the host closed a connection */
  OP_UNREACHABLE, /* the host could not reach an address */
  OP_COMMIT,      /* a group commit finished: 0, DISK_FULL or STORE */
  OP_STORE_FAIL,  /* the store starts (or stops) refusing writes */
  OP_COMMAND,     /* leave, join, create, maintenance on/off */
  OP_COUNT
};

/* A memory store whose writes can be made to fail, as a full disk would. */
typedef struct fz_store {
  dht_store base;   /* first, so a dht_store * is a fz_store * */
  dht_store *inner; /* the records */
  int write_error;  /* 0, or what put and del return */
} fz_store;

/* One request the node sent, for replies to it. */
typedef struct sent_req {
  uint64_t conn;      /* the connection the host sent it on */
  uint64_t rid;       /* its request id */
  dht_msg_type type;  /* its type */
  size_t slot;        /* the address it went to */
  size_t n_digests;   /* SYNC: buckets, which SYNC_R indexes */
  uint8_t key[64];    /* GET/PUT/DEL/FETCH: its key (first 64 bytes) */
  size_t key_len;     /* bytes in key */
} sent_req;

/* An address the host knows and the connection it has open to it. */
typedef struct addr_slot {
  char addr[DHT_ADDR_LEN_MAX + 1]; /* NUL-terminated */
  dht_id id;                       /* its id, as a truthful peer says */
  uint64_t conn;                   /* open connection, or 0 */
} addr_slot;

/* Storage for the arrays of one built message. */
typedef struct msg_space {
  dht_peer_ref succs[6], preds[6], path[4], holders[2][3];
  dht_finger_ref fingers[4];
  dht_kv items[5];
  dht_lost_range lost[2];
  dht_counter counters[3];
  uint16_t buckets[6];
  uint8_t digests[8 * DHT_DIGEST_LEN];
  char texts[48][24]; /* addresses and keys made up for this message */
  size_t n_texts;
} msg_space;

typedef struct host {
  dht_node *node;
  fz_store *store;
  uint64_t now;           /* ms, monotonic */
  bool group_commit;      /* the node waits for commit_done */
  addr_slot addrs[ADDRS_MAX];
  size_t n_addrs;
  uint64_t next_conn;     /* the next connection number for an address */
  sent_req sent[SENT_MAX]; /* ring buffer of the node's requests */
  size_t n_sent;          /* requests recorded in all */
  uint64_t seen[SEEN_MAX]; /* connections that carried a frame in */
  size_t n_seen;
  bool maintenance;
  dht_settings set;
} host;

/* ---- the store -------------------------------------------------------------- */

static int fz_get(dht_store *st, const dht_id *id, const uint8_t *key,
                  size_t key_len, const uint8_t **value, size_t *value_len) {
  return dht_store_get(((fz_store *)st)->inner, id, key, key_len, value,
                       value_len);
}

static int fz_put(dht_store *st, const dht_id *id, const uint8_t *key,
                  size_t key_len, const uint8_t *value, size_t value_len) {
  fz_store *fs = (fz_store *)st;

  if (fs->write_error != 0) {
    return fs->write_error;
  }
  return dht_store_put(fs->inner, id, key, key_len, value, value_len);
}

static int fz_del(dht_store *st, const dht_id *id, const uint8_t *key,
                  size_t key_len) {
  fz_store *fs = (fz_store *)st;

  if (fs->write_error != 0) {
    return fs->write_error;
  }
  return dht_store_remove(fs->inner, id, key, key_len);
}

static int fz_scan(dht_store *st, const dht_id *from, const dht_id *to,
                   dht_store_scan_cb cb, void *ud) {
  return dht_store_scan(((fz_store *)st)->inner, from, to, cb, ud);
}

static size_t fz_count(dht_store *st) {
  return dht_store_count(((fz_store *)st)->inner);
}

static void fz_free(dht_store *st) {
  dht_store_del(((fz_store *)st)->inner);
  free(st);
}

static const char *fz_errmsg(dht_store *st) {
  return ((fz_store *)st)->write_error != 0 ? "fuzz: writes refused" : "";
}

static fz_store *fz_store_new(void) {
  static const dht_store_ops ops = {fz_get,   fz_put,  fz_del,   fz_scan,
                                    fz_count, fz_free, fz_errmsg};
  fz_store *fs = calloc(1, sizeof(*fs));

  if (fs == NULL || (fs->inner = dht_store_mem_new()) == NULL) {
    fuzz_fail("out of memory");
  }
  fs->base.ops = &ops;
  return fs;
}

/* ---- addresses, ids and connections ------------------------------------------ */

static dht_id member_id(size_t i) {
  dht_id id;

  memset(&id, 0, sizeof(id));
  id.b[0] = (uint8_t)(0x10 + 0x20 * i);
  id.b[DHT_ID_LEN - 1] = (uint8_t)i;
  return id;
}

static dht_id self_id(void) {
  dht_id id;

  memset(&id, 0, sizeof(id));
  id.b[0] = 0x80;
  return id;
}

/* The slot of addr (len bytes), added (with the id its hash gives) when
 * add and there is room; the last slot is reused when the table is full. */
static size_t addr_find(host *h, const char *addr, size_t len, bool add) {
  size_t i;

  for (i = 0; i < h->n_addrs; i++) {
    if (strlen(h->addrs[i].addr) == len && memcmp(h->addrs[i].addr, addr, len) == 0) {
      return i;
    }
  }
  if (!add) {
    return ADDRS_MAX;
  }
  if (h->n_addrs == ADDRS_MAX) {
    i = ADDRS_MAX - 1; /* forget the newest learnt address */
    if (h->addrs[i].conn != 0) {
      dht_node_conn_closed(h->node, h->addrs[i].conn);
    }
  } else {
    i = h->n_addrs++;
  }
  if (len > DHT_ADDR_LEN_MAX) {
    len = DHT_ADDR_LEN_MAX;
  }
  memcpy(h->addrs[i].addr, addr, len);
  h->addrs[i].addr[len] = '\0';
  dht_id_hash(&h->addrs[i].id, addr, len);
  h->addrs[i].conn = 0;
  return i;
}

/* The connection open to slot's address, opened now if none is. */
static uint64_t slot_conn(host *h, size_t slot) {
  if (h->addrs[slot].conn == 0) {
    h->addrs[slot].conn = h->next_conn++;
  }
  return h->addrs[slot].conn;
}

static void conn_seen(host *h, uint64_t conn) {
  size_t i;

  for (i = 0; i < h->n_seen; i++) {
    if (h->seen[i] == conn) {
      return;
    }
  }
  if (h->n_seen < SEEN_MAX) {
    h->seen[h->n_seen++] = conn;
  } else {
    h->seen[conn % SEEN_MAX] = conn; /* forget one; the check is lenient */
  }
}

static bool conn_was_seen(const host *h, uint64_t conn) {
  size_t i;

  for (i = 0; i < h->n_seen; i++) {
    if (h->seen[i] == conn) {
      return true;
    }
  }
  return h->n_seen == SEEN_MAX;
}

/* A connection chosen by the input: to a member (as the node opened it),
 * from a client, or from a member that connected to the node. */
static uint64_t pick_conn(host *h, fuzz_in *in) {
  uint8_t b = fuzz_u8(in) % 12;

  if (b < N_MEMBERS) {
    return slot_conn(h, b);
  }
  if (b < 10) {
    return CLIENT_CONN + (uint64_t)(b - N_MEMBERS);
  }
  return INBOUND_CONN + (uint64_t)(b - 10);
}

/* The host closes conn (the node asked, or gave up on its peer). */
static void host_close(host *h, uint64_t conn) {
  size_t i;

  for (i = 0; i < h->n_addrs; i++) {
    if (h->addrs[i].conn == conn) {
      h->addrs[i].conn = 0;
    }
  }
  dht_node_conn_closed(h->node, conn);
}

/* ---- the node's actions ---------------------------------------------------------- */

static void record_send(host *h, size_t slot, uint64_t conn, const dht_msg *m) {
  sent_req *s;

  if (dht_msg_type_is_reply((int)m->type) || m->type == DHT_MSG_NOTIFY) {
    return; /* nothing to answer */
  }
  s = &h->sent[h->n_sent++ % SENT_MAX];
  memset(s, 0, sizeof(*s));
  s->conn = conn;
  s->rid = m->rid;
  s->type = m->type;
  s->slot = slot;
  s->n_digests = m->n_digests;
  s->key_len = m->key.len < sizeof(s->key) ? m->key.len : sizeof(s->key);
  if (s->key_len > 0) {
    memcpy(s->key, m->key.p, s->key_len);
  }
}

/* Takes every action; checks the frames and the invariants. */
static void drain(host *h) {
  dht_wire_limits lim;
  dht_action a;
  dht_msg m;
  char why[256];
  size_t body_len, slot;
  int rv;

  dht_wire_limits_default(&lim);
  while (dht_node_poll_action(h->node, &a)) {
    switch (a.type) {
    case DHT_ACTION_SEND:
    case DHT_ACTION_REPLY:
      rv = dht_frame_peek(a.frame, a.frame_len, lim.frame_len_max, &body_len);
      if (rv != 0 || body_len + DHT_FRAME_HEADER_LEN != a.frame_len) {
        fuzz_fail("the node framed %zu bytes wrong", a.frame_len);
      }
      rv = dht_msg_decode(&m, a.frame + DHT_FRAME_HEADER_LEN, body_len, &lim);
      if (rv != 0) {
        fuzz_fail("the node sent a frame that does not decode: %s",
                  dht_strerror(rv));
      }
#ifdef FUZZ_NODE_TRACE
      fprintf(stderr, "  t=%llu state=%d %s %s rid=%llu to %s conn %llu\n",
              (unsigned long long)h->now, (int)dht_node_get_state(h->node),
              a.type == DHT_ACTION_SEND ? "SEND" : "REPLY",
              dht_msg_type_name((int)m.type), (unsigned long long)m.rid,
              a.type == DHT_ACTION_SEND ? a.addr : "-",
              (unsigned long long)a.conn);
#endif
      if (a.type == DHT_ACTION_SEND) {
        slot = addr_find(h, a.addr, strlen(a.addr), true);
        record_send(h, slot, slot_conn(h, slot), &m);
      } else if (!conn_was_seen(h, a.conn)) {
        fuzz_fail("a %s reply on conn %llu, which carried nothing in",
                  dht_msg_type_name((int)m.type), (unsigned long long)a.conn);
      }
      dht_msg_free(&m);
      break;
    case DHT_ACTION_CLOSE:
      if (!conn_was_seen(h, a.conn)) {
        fuzz_fail("a CLOSE of conn %llu, which carried nothing in",
                  (unsigned long long)a.conn);
      }
      host_close(h, a.conn);
      break;
    case DHT_ACTION_DISCONNECT:
      slot = addr_find(h, a.addr, strlen(a.addr), false);
      if (slot < ADDRS_MAX && h->addrs[slot].conn != 0) {
        host_close(h, h->addrs[slot].conn);
      }
      break;
    case DHT_ACTION_EVENT:
      break;
    }
  }
  if (!dht_node_check_invariants(h->node, why, sizeof(why))) {
    fuzz_fail("invariant broken: %s", why);
  }
}

/* ---- messages built from the input ------------------------------------------------- */

static char *space_text(msg_space *sp) {
  return sp->texts[sp->n_texts < 48 ? sp->n_texts++ : 47];
}

/* An id: a member's, the node's, one next to them, or any 20 bytes. */
static dht_id pick_id(fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  dht_id id = (b & 7) < N_MEMBERS ? member_id(b & 7) : self_id();
  const uint8_t *p;
  size_t got, i;

  switch ((b >> 3) & 3) {
  case 0:
    break;
  case 1: /* just after */
    for (i = DHT_ID_LEN; i-- > 0 && ++id.b[i] == 0;) {
    }
    break;
  case 2: /* just before */
    for (i = DHT_ID_LEN; i-- > 0 && id.b[i]-- == 0;) {
    }
    break;
  default:
    p = fuzz_bytes(in, DHT_ID_LEN, &got);
    memset(&id, 0, sizeof(id));
    memcpy(id.b, p, got);
    break;
  }
  return id;
}

/* A peer: a member or the node itself, telling the truth or not, or an
 * address no one listens at. */
static void pick_peer(host *h, fuzz_in *in, msg_space *sp, dht_peer_ref *ref) {
  uint8_t b = fuzz_u8(in);
  size_t i = b & 7;
  char *text;

  if (i <= SELF_SLOT) {
    ref->addr.p = (const uint8_t *)h->addrs[i].addr;
    ref->addr.len = strlen(h->addrs[i].addr);
    ref->id = h->addrs[i].id;
  } else {
    text = space_text(sp);
    snprintf(text, 24, "10.0.1.%u:7000", (unsigned)fuzz_u8(in));
    ref->addr.p = (const uint8_t *)text;
    ref->addr.len = strlen(text);
    dht_id_hash(&ref->id, text, ref->addr.len);
  }
  if (b & 8) {
    ref->id = pick_id(in); /* an id that need not match the address */
  }
}

static size_t pick_peers(host *h, fuzz_in *in, msg_space *sp,
                         dht_peer_ref *refs, size_t max) {
  size_t n = fuzz_u8(in) % (max + 1), i;

  for (i = 0; i < n; i++) {
    pick_peer(h, in, sp, &refs[i]);
  }
  return n;
}

/* A key: one of 16 short names (so that keys meet again), or bytes. */
static dht_bytes pick_key(fuzz_in *in, msg_space *sp) {
  uint8_t b = fuzz_u8(in);
  dht_bytes key;
  char *text;
  size_t got;

  if (b < 0xc0) {
    text = space_text(sp);
    snprintf(text, 24, "k%u", (unsigned)(b % 16));
    key.p = (const uint8_t *)text;
    key.len = strlen(text);
    return key;
  }
  key.p = fuzz_bytes(in, 1 + (size_t)(b - 0xc0) * 2, &got);
  key.len = got;
  return key;
}

static dht_bytes pick_value(fuzz_in *in) {
  dht_bytes v;

  v.p = fuzz_bytes(in, fuzz_u8(in) % 48, &v.len);
  return v;
}

/* A version: unstamped, about now, far ahead of the node's clock, or any. */
static dht_version pick_version(host *h, fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  uint64_t wall = WALL_START_MS + (h->now - NOW_START_MS);
  dht_version v;

  switch (b & 3) {
  case 0:
    v.hlc = 0;
    break;
  case 1:
    v.hlc = (wall << 16) + fuzz_u8(in);
    break;
  case 2:
    v.hlc = (wall + 1000ull * fuzz_u16(in)) << 16;
    break;
  default:
    v.hlc = fuzz_u64(in);
    break;
  }
  v.writer = pick_id(in);
  return v;
}

static size_t pick_items(host *h, fuzz_in *in, msg_space *sp, dht_kv *items,
                         size_t max) {
  size_t n = fuzz_u8(in) % (max + 1), i;
  uint8_t b;

  for (i = 0; i < n; i++) {
    memset(&items[i], 0, sizeof(items[i]));
    items[i].key = pick_key(in, sp);
    items[i].value = pick_value(in);
    b = fuzz_u8(in);
    items[i].has_version = (b & 1) != 0;
    items[i].tombstone = (b & 2) != 0;
    if (items[i].tombstone) {
      items[i].value.len = 0;
    }
    if (items[i].has_version) {
      items[i].version = pick_version(h, in);
    }
  }
  return n;
}

/* The sender fields of the messages only confirmed senders may send
 * (docs/PROTOCOL.md 4.4): a link token (none, or one of a few, which the
 * members asked confirm as the truth does) and, where the type has no peer
 * field naming the sender, src. Read last, so that the bytes before keep
 * what they meant to inputs kept before these fields. */
static void fill_sender(host *h, fuzz_in *in, msg_space *sp, dht_msg *m) {
  switch (m->type) {
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
  case DHT_MSG_SYNC:
  case DHT_MSG_FETCH:
    m->has_src = true;
    pick_peer(h, in, sp, &m->src);
    /* fall through */
  case DHT_MSG_NOTIFY:
  case DHT_MSG_LEAVE:
  case DHT_MSG_CHECK_LINK:
    m->link = fuzz_u8(in) % 4;
    break;
  default:
    break;
  }
}

/* Fills in the fields m->type uses (docs/PROTOCOL.md section 4), from the
 * input; arrays live in sp. */
static void fill_fields(host *h, fuzz_in *in, msg_space *sp, dht_msg *m) {
  uint8_t flags = fuzz_u8(in);
  size_t i, k, n, got;
  const uint8_t *p;

  m->hops = fuzz_u8(in) % (DHT_HOPS_MAX + 1);
  m->has_peer = true;
  switch (m->type) {
  case DHT_MSG_ERROR:
    m->error_code = -(int32_t)(1 + fuzz_u8(in) % 30);
    m->error_msg.p = fuzz_bytes(in, fuzz_u8(in) % 16, &m->error_msg.len);
    m->has_ver = (flags & 1) != 0;
    if (m->has_ver) {
      m->ver = pick_version(h, in);
    }
    break;
  case DHT_MSG_PONG:
  case DHT_MSG_NOTIFY:
    pick_peer(h, in, sp, &m->peer);
    break;
  case DHT_MSG_FIND_SUCC:
  case DHT_MSG_FIND_SUCC_R:
    m->target = pick_id(in);
    pick_peer(h, in, sp, &m->peer);
    m->trace = (flags & 1) != 0;
    m->final = (flags & 2) != 0;
    m->path = sp->path;
    m->n_path = pick_peers(h, in, sp, sp->path, 4);
    break;
  case DHT_MSG_NEIGHBORS:
  case DHT_MSG_LEAVE:
  case DHT_MSG_STATS_R:
    pick_peer(h, in, sp, &m->peer);
    m->has_pred = (flags & 1) != 0;
    if (m->has_pred) {
      pick_peer(h, in, sp, &m->pred);
    }
    m->succs = sp->succs;
    m->n_succs = pick_peers(h, in, sp, sp->succs, 6);
    m->preds = sp->preds;
    m->n_preds = pick_peers(h, in, sp, sp->preds, 6);
    if (flags & 2) {
      m->wall_ms = WALL_START_MS + (h->now - NOW_START_MS) +
                   (uint64_t)fuzz_u16(in) * 1000 - 32768000u;
    }
    if (m->type == DHT_MSG_STATS_R) {
      n = fuzz_u8(in) % 5;
      for (i = 0; i < n; i++) {
        sp->fingers[i].start_bit = fuzz_u8(in) % DHT_ID_BITS;
        pick_peer(h, in, sp, &sp->fingers[i].peer);
      }
      m->fingers = sp->fingers;
      m->n_fingers = n;
      n = fuzz_u8(in) % 4;
      for (i = 0; i < n; i++) {
        char *name = space_text(sp);
        snprintf(name, 24, "c%u", (unsigned)(fuzz_u8(in) % 4));
        sp->counters[i].name.p = (const uint8_t *)name;
        sp->counters[i].name.len = strlen(name);
        sp->counters[i].value = fuzz_u64(in);
      }
      m->counters = sp->counters;
      m->n_counters = n;
      n = fuzz_u8(in) % 3;
      for (i = 0; i < n; i++) {
        sp->lost[i].from = pick_id(in);
        sp->lost[i].to = pick_id(in);
        sp->lost[i].at_ms = fuzz_u64(in);
        sp->lost[i].holders = sp->holders[i];
        sp->lost[i].n_holders = pick_peers(h, in, sp, sp->holders[i], 3);
      }
      m->lost = sp->lost;
      m->n_lost = n;
    }
    break;
  case DHT_MSG_GET:
  case DHT_MSG_PUT:
  case DHT_MSG_DEL:
  case DHT_MSG_FETCH:
    m->key = pick_key(in, sp);
    if (m->type == DHT_MSG_PUT) {
      m->value = pick_value(in);
    }
    m->final = (flags & 2) != 0;
    m->has_ver = (flags & 4) != 0;
    if (m->has_ver) {
      m->ver = pick_version(h, in);
    }
    break;
  case DHT_MSG_VALUE:
    m->value = pick_value(in);
    break;
  case DHT_MSG_HANDOFF:
  case DHT_MSG_REPLICATE:
  case DHT_MSG_RECORD:
  case DHT_MSG_SCAN_R:
  case DHT_MSG_SYNC_R:
    m->items = sp->items;
    m->n_items = pick_items(h, in, sp, sp->items, 5);
    m->more = (flags & 1) != 0;
    if (m->type == DHT_MSG_SYNC_R) {
      n = fuzz_u8(in) % 7;
      for (i = 0; i < n; i++) {
        sp->buckets[i] = fuzz_u8(in);
      }
      m->buckets = sp->buckets;
      m->n_buckets = n;
    }
    break;
  case DHT_MSG_SYNC:
  case DHT_MSG_SCAN:
  case DHT_MSG_ACK_LOST:
    m->from = pick_id(in);
    m->to = pick_id(in);
    m->limit = fuzz_u16(in);
    if (m->type == DHT_MSG_SYNC) {
      /* zero digests match empty buckets, others differ */
      n = 1 + fuzz_u8(in) % 8;
      memset(sp->digests, 0, sizeof(sp->digests));
      for (i = 0; i < n; i++) {
        if (fuzz_u8(in) & 1) {
          p = fuzz_bytes(in, DHT_DIGEST_LEN, &got);
          for (k = 0; k < got; k++) {
            sp->digests[i * DHT_DIGEST_LEN + k] = p[k];
          }
        }
      }
      m->digests = sp->digests;
      m->n_digests = n;
    }
    break;
  case DHT_MSG_CHECK_LINK:
    pick_peer(h, in, sp, &m->peer);
    break;
  default: /* PING, GET_NEIGHBORS, OK, STATS, ACCEPTED: no fields */
    break;
  }
  fill_sender(h, in, sp, m);
}

/* Encodes m and gives it to the node on conn; the encoder may refuse. */
static void deliver(host *h, uint64_t conn, const dht_msg *m) {
  dht_buf buf;

  dht_buf_init(&buf);
  if (dht_msg_encode(m, &buf) == 0) {
#ifdef FUZZ_NODE_TRACE
    fprintf(stderr, "  t=%llu IN %s rid=%llu conn %llu peer %.*s id %02x..%02x target %02x..\n",
            (unsigned long long)h->now, dht_msg_type_name((int)m->type),
            (unsigned long long)m->rid, (unsigned long long)conn,
            (int)m->peer.addr.len, (const char *)m->peer.addr.p, m->peer.id.b[0],
            m->peer.id.b[19], m->target.b[0]);
    for (size_t t = 0; t < m->n_preds; t++) {
      fprintf(stderr, "      pred %zu: %.*s id %02x..%02x\n", t,
              (int)m->preds[t].addr.len, (const char *)m->preds[t].addr.p,
              m->preds[t].id.b[0], m->preds[t].id.b[19]);
    }
    if (m->has_pred) {
      fprintf(stderr, "      has pred: %.*s id %02x..%02x\n",
              (int)m->pred.addr.len, (const char *)m->pred.addr.p,
              m->pred.id.b[0], m->pred.id.b[19]);
    }
#endif
    conn_seen(h, conn);
    dht_node_recv(h->node, conn, buf.data + DHT_FRAME_HEADER_LEN,
                  buf.len - DHT_FRAME_HEADER_LEN, h->now);
  }
  dht_buf_free(&buf);
}

/* The reply a request of type expects. */
static dht_msg_type reply_type(dht_msg_type type) {
  switch (type) {
  case DHT_MSG_PING:
  case DHT_MSG_CHECK_LINK:
    return DHT_MSG_PONG;
  case DHT_MSG_FIND_SUCC:
    return DHT_MSG_FIND_SUCC_R;
  case DHT_MSG_GET_NEIGHBORS:
    return DHT_MSG_NEIGHBORS;
  case DHT_MSG_GET:
    return DHT_MSG_VALUE;
  case DHT_MSG_STATS:
    return DHT_MSG_STATS_R;
  case DHT_MSG_SYNC:
    return DHT_MSG_SYNC_R;
  case DHT_MSG_FETCH:
    return DHT_MSG_RECORD;
  case DHT_MSG_SCAN:
    return DHT_MSG_SCAN_R;
  default: /* PUT, DEL, HANDOFF, LEAVE, REPLICATE, ACK_LOST */
    return DHT_MSG_OK;
  }
}

static const dht_msg_type reply_types[] = {
    DHT_MSG_ERROR,  DHT_MSG_PONG,   DHT_MSG_FIND_SUCC_R, DHT_MSG_NEIGHBORS,
    DHT_MSG_VALUE,  DHT_MSG_OK,     DHT_MSG_STATS_R,     DHT_MSG_ACCEPTED,
    DHT_MSG_SYNC_R, DHT_MSG_RECORD, DHT_MSG_SCAN_R,
};

/* A reply to one of the node's recent requests, mostly of the kind it
 * expects and from the peer it asked. */
static void op_reply(host *h, fuzz_in *in) {
  uint8_t back = fuzz_u8(in), kind = fuzz_u8(in);
  const sent_req *s;
  msg_space sp;
  dht_msg m;
  size_t n = h->n_sent < SENT_MAX ? h->n_sent : SENT_MAX, i;

  if (n == 0) {
    return;
  }
  s = &h->sent[(h->n_sent - 1 - back % n) % SENT_MAX];
  memset(&m, 0, sizeof(m));
  memset(&sp, 0, sizeof(sp));
  switch (kind % 8) {
  case 4:
    m.type = DHT_MSG_ERROR;
    break;
  case 5:
    m.type = DHT_MSG_ACCEPTED;
    break;
  case 6:
  case 7:
    m.type = reply_types[fuzz_u8(in) % (sizeof(reply_types) / sizeof(reply_types[0]))];
    break;
  default:
    m.type = reply_type(s->type);
    break;
  }
  m.rid = s->rid;
  fill_fields(h, in, &sp, &m);
  if (kind & 0x80) {
    /* the truth: the peer asked is who answers, and answers about the key
     * asked, in the buckets asked */
    m.peer.addr.p = (const uint8_t *)h->addrs[s->slot].addr;
    m.peer.addr.len = strlen(h->addrs[s->slot].addr);
    m.peer.id = h->addrs[s->slot].id;
    if (m.n_items > 0 && s->key_len > 0) {
      m.items[0].key.p = s->key;
      m.items[0].key.len = s->key_len;
    }
    for (i = 0; i < m.n_buckets && s->n_digests > 0; i++) {
      m.buckets[i] = (uint16_t)(m.buckets[i] % s->n_digests);
    }
  }
  deliver(h, s->conn, &m);
}

static void op_msg(host *h, fuzz_in *in) {
  uint64_t conn = pick_conn(h, in);
  uint8_t b = fuzz_u8(in);
  msg_space sp;
  dht_msg m;

  memset(&m, 0, sizeof(m));
  memset(&sp, 0, sizeof(sp));
  m.type = (dht_msg_type)(b % (DHT_MSG_TYPE_LAST + 1));
  m.rid = (b & 0x80) ? fuzz_u64(in) : fuzz_u8(in);
  fill_fields(h, in, &sp, &m);
  deliver(h, conn, &m);
}

static void op_raw(host *h, fuzz_in *in) {
  uint64_t conn = pick_conn(h, in);
  size_t len = fuzz_u8(in), got;
  const uint8_t *p;

  if (len == 255) {
    len = fuzz_u16(in);
  }
  p = fuzz_bytes(in, len, &got);
  conn_seen(h, conn);
  dht_node_recv(h->node, conn, p, got, h->now);
}

static void op_jump(host *h, fuzz_in *in) {
  static const uint64_t jumps_ms[] = {2000, 5000, 30000, 3600000 + 20000};
  uint8_t b = fuzz_u8(in) % 5;
  uint64_t next;

  if (b == 4) {
    next = dht_node_next_deadline(h->node);
    if (next == DHT_TIME_NEVER || next <= h->now) {
      next = h->now + 1;
    }
    if (next - h->now > 2 * 3600 * 1000) {
      fuzz_fail("a deadline %llu ms away", (unsigned long long)(next - h->now));
    }
    h->now = next;
  } else {
    h->now += jumps_ms[b];
  }
  dht_node_handle_expiry(h->node, h->now);
}

static void op_command(host *h, fuzz_in *in) {
  uint8_t b = fuzz_u8(in);

  switch (b % 4) {
  case 0:
    (void)dht_node_leave(h->node, h->now);
    break;
  case 1:
    (void)dht_node_join(h->node, h->addrs[(b >> 2) % N_MEMBERS].addr, h->now);
    break;
  case 2:
    (void)dht_node_create_ring(h->node, h->now);
    break;
  default:
    h->maintenance = !h->maintenance;
    dht_node_set_maintenance(h->node, h->maintenance, h->now);
    break;
  }
}

static void step(host *h, fuzz_in *in) {
  static const int commit_status[] = {0, 0, DHT_ERR_DISK_FULL, DHT_ERR_STORE};
  static const int write_errors[] = {0, DHT_ERR_DISK_FULL, DHT_ERR_STORE, 0};
  uint8_t op = fuzz_u8(in) % OP_COUNT;
  size_t slot;

  switch ((enum op)op) {
  case OP_RAW:
    op_raw(h, in);
    break;
  case OP_MSG:
    op_msg(h, in);
    break;
  case OP_REPLY:
    op_reply(h, in);
    break;
  case OP_TICK:
    h->now += 1 + (uint64_t)fuzz_u8(in) * 4;
    dht_node_handle_expiry(h->node, h->now);
    break;
  case OP_JUMP:
    op_jump(h, in);
    break;
  case OP_CONN_CLOSED:
    host_close(h, pick_conn(h, in));
    break;
  case OP_UNREACHABLE:
    slot = fuzz_u8(in) % h->n_addrs;
    if (h->addrs[slot].conn != 0) {
      host_close(h, h->addrs[slot].conn);
    }
    dht_node_peer_unreachable(h->node, h->addrs[slot].addr, h->now);
    break;
  case OP_COMMIT:
    if (h->group_commit) {
      dht_node_commit_done(h->node, commit_status[fuzz_u8(in) % 4], h->now);
    }
    break;
  case OP_STORE_FAIL:
    h->store->write_error = write_errors[fuzz_u8(in) % 4];
    break;
  case OP_COMMAND:
    op_command(h, in);
    break;
  case OP_COUNT:
    break;
  }
}

/* ---- setup ----------------------------------------------------------------------- */

/* The node's log: only the line that names a broken invariant (the node
 * logs it before it aborts), and every line in a FUZZ_NODE_TRACE build. */
static void host_log(void *ud, dht_log_level level, const char *line) {
  (void)ud;
#ifdef FUZZ_NODE_TRACE
  (void)level;
  fprintf(stderr, "    log: %s\n", line);
#else
  if (level == DHT_LOG_ERROR && strstr(line, "invariant") != NULL) {
    fprintf(stderr, "fuzz: the node says: %s\n", line);
  }
#endif
}

static void small_settings(dht_settings *s) {
  s->succ_list_len = 2;
  s->replicas = 2;
  s->sync_buckets = 4;
  s->pending_max = 16;
  s->bad_frames_max = 2;
  s->tombstone_grace_ms = 10000;
  s->max_clock_skew_ms = 1000;
  s->handoff_batch_bytes = 64;
  s->limits.frame_len_max = 4096;
  s->limits.key_len_max = 16;
  s->limits.value_len_max = 32;
  s->limits.items_max = 3;
  s->limits.addr_len_max = 16;
  s->limits.error_msg_len_max = 8;
}

/* Routing as a converged ring of the members and the node would have:
 * member 3 before the node, members 4, 5, 0, ... after it. */
static void install_ring(host *h) {
  dht_routing_peer pred, succs[DHT_SUCC_LIST_MAX], fingers[DHT_ID_BITS];
  size_t i, n = h->set.succ_list_len < N_MEMBERS ? h->set.succ_list_len
                                                  : N_MEMBERS;

  pred.id = h->addrs[3].id;
  pred.addr = h->addrs[3].addr;
  for (i = 0; i < n; i++) {
    succs[i].id = h->addrs[(4 + i) % N_MEMBERS].id;
    succs[i].addr = h->addrs[(4 + i) % N_MEMBERS].addr;
  }
  for (i = 0; i < DHT_ID_BITS; i++) {
    /* self + 2^i: up to 2^156 the next member (4) is its successor, then
     * 5, 0 (past the wrap) and 2 for the farthest */
    size_t m = i < 157 ? 4 : i == 157 ? 5 : i == 158 ? 0 : 2;
    fingers[i].id = h->addrs[m].id;
    fingers[i].addr = h->addrs[m].addr;
  }
  if (dht_node_install_routing(h->node, &pred, succs, n, fingers, h->now) != 0) {
    fuzz_fail("install_routing refused a converged ring");
  }
}

static void host_setup(host *h, fuzz_in *in) {
  uint8_t b = fuzz_u8(in);
  dht_node_config cfg;
  dht_id id = self_id();
  size_t i;

  memset(h, 0, sizeof(*h));
  h->now = NOW_START_MS;
  h->next_conn = 1;
  h->maintenance = true;
  h->group_commit = (b & 4) != 0;
  for (i = 0; i < N_MEMBERS; i++) {
    snprintf(h->addrs[i].addr, sizeof(h->addrs[i].addr), "10.0.0.%zu:7000",
             i + 1);
    h->addrs[i].id = member_id(i);
  }
  snprintf(h->addrs[SELF_SLOT].addr, sizeof(h->addrs[SELF_SLOT].addr),
           "10.0.0.100:7000");
  h->addrs[SELF_SLOT].id = id;
  h->n_addrs = SELF_SLOT + 1;
  h->store = fz_store_new();

  dht_settings_default(&h->set);
  if (b & 8) {
    small_settings(&h->set);
  }
  /* The members sit at chosen ids, not at the hashes of their addresses:
   * a ring configured with explicit ids, which runs with --trust-ids. */
  h->set.trust_ids = true;
  memset(&cfg, 0, sizeof(cfg));
  cfg.addr = h->addrs[SELF_SLOT].addr;
  cfg.id = &id;
  cfg.store = &h->store->base;
  cfg.settings = h->set;
  cfg.seed = 42;
  cfg.wall_ms = WALL_START_MS;
  cfg.group_commit = h->group_commit;
  cfg.log = host_log;
#ifdef FUZZ_NODE_TRACE
  cfg.log_level = DHT_LOG_DEBUG;
#else
  cfg.log_level = DHT_LOG_ERROR;
#endif
  if (dht_node_new(&h->node, &cfg, h->now) != 0) {
    fuzz_fail("dht_node_new refused the fuzz settings");
  }
  switch (b & 3) {
  case 0:
    (void)dht_node_create_ring(h->node, h->now);
    break;
  case 1:
    (void)dht_node_join(h->node, h->addrs[(b >> 4) % N_MEMBERS].addr, h->now);
    break;
  case 2:
    install_ring(h);
    break;
  default:
    break; /* idle: only HANDOFF, STATS and ACK_LOST are served */
  }
  drain(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};
  host h;
  size_t steps = 0;

  host_setup(&h, &in);
  while (in.left > 0 && steps++ < STEPS_MAX) {
    step(&h, &in);
    drain(&h);
  }
  dht_node_del(h.node);
  dht_store_del(&h.store->base);
  return 0;
}
