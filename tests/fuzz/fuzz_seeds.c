/*
 * fuzz_seeds.c: writes the seed corpora of tests/fuzz/corpus/ from the real
 * encoder, so that the fuzzers start from valid frames of every message
 * type rather than having to discover msgpack. `scripts/fuzz --seeds`
 * runs it; the files it writes are committed.
 *
 *   fuzz_seeds DIR   writes DIR/wire/<type>-<n> (frame bodies, no header),
 *                    DIR/node/<start>-<type> and DIR/node/<scenario>
 *                    (inputs in fuzz_node.c's step language) and
 *                    DIR/seal/<case> (inputs in fuzz_seal.c's)
 *
 * The node seeds must follow fuzz_node.c's input format: keep the op
 * numbers and setup bits below in step with it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dht/err.h"
#include "dht/id.h"
#include "dht/wire.h"

/* fuzz_node.c's ops and setup bits. */
enum { OP_RAW, OP_MSG, OP_REPLY, OP_TICK, OP_JUMP, OP_CONN_CLOSED,
       OP_UNREACHABLE, OP_COMMIT, OP_STORE_FAIL, OP_COMMAND };
enum { START_CREATE = 0, START_JOIN = 1, START_INSTALLED = 2, START_IDLE = 3,
       SETUP_GROUP_COMMIT = 4, SETUP_SMALL = 8 };
#define CONN_CLIENT 6 /* fuzz_node's pick_conn: the first client */
#define CONN_MEMBER0 0
#define REPLY_TRUTH 0x80 /* op_reply: the expected type, from the peer asked */

static const char *out_dir;

static void die(const char *what) {
  fprintf(stderr, "fuzz_seeds: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void write_file(const char *sub, const char *name, const uint8_t *p,
                       size_t len) {
  char path[4096];
  FILE *f;

  snprintf(path, sizeof(path), "%s/%s", out_dir, sub);
  if (mkdir(path, 0777) != 0 && errno != EEXIST) {
    die(path);
  }
  snprintf(path, sizeof(path), "%s/%s/%s", out_dir, sub, name);
  f = fopen(path, "wb");
  if (f == NULL || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
    die(path);
  }
}

/* ---- frames of every type ------------------------------------------------------ */

static dht_id member_id(unsigned i) {
  dht_id id;

  memset(&id, 0, sizeof(id));
  id.b[0] = (uint8_t)(0x10 + 0x20 * i);
  id.b[DHT_ID_LEN - 1] = (uint8_t)i;
  return id;
}

static const char *const member_addrs[] = {
    "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000",
    "10.0.0.4:7000", "10.0.0.5:7000", "10.0.0.6:7000",
};

static dht_peer_ref member(unsigned i) {
  dht_peer_ref ref;

  ref.id = member_id(i);
  ref.addr.p = (const uint8_t *)member_addrs[i];
  ref.addr.len = strlen(member_addrs[i]);
  return ref;
}

static dht_bytes bytes_of(const char *s) {
  dht_bytes b;

  b.p = (const uint8_t *)s;
  b.len = strlen(s);
  return b;
}

/* Arrays the sample messages point into. */
static dht_peer_ref succs[3], path[2], holders[2];
static dht_finger_ref fingers[2];
static dht_kv items[2];
static dht_counter counters[2];
static uint16_t buckets[2] = {0, 3};
static uint8_t digests[4 * DHT_DIGEST_LEN];
static dht_lost_range lost[1];
static dht_exchange exchanges[1];
static dht_dead_peer dead[1];

/* A message of type with every field it uses set; variant 1 sets the
 * optional ones too. */
static void sample(dht_msg *m, dht_msg_type type, int variant) {
  const uint64_t hlc = 1700000000000ull << 16;
  unsigned i;

  memset(m, 0, sizeof(*m));
  m->type = type;
  m->rid = variant == 0 ? 7 : 0x123456789ull;
  m->hops = (uint32_t)variant * 3;
  m->has_peer = true;
  m->peer = member(1);
  m->has_pred = variant == 1;
  m->pred = member(3);
  for (i = 0; i < 3; i++) {
    succs[i] = member(4 + i % 2);
  }
  path[0] = member(0);
  path[1] = member(2);
  m->succs = succs;
  m->n_succs = variant == 1 ? 3 : 1;
  m->preds = path;
  m->n_preds = variant == 1 ? 2 : 0;
  m->target = member_id(2);
  m->target.b[5] = 0x42;
  m->trace = variant == 1;
  m->final = variant == 1;
  m->path = path;
  m->n_path = variant == 1 ? 2 : 0;
  m->key = bytes_of(variant == 1 ? "k3" : "k1");
  m->value = bytes_of(variant == 1 ? "" : "hello");
  m->has_ver = variant == 1;
  m->ver.hlc = hlc + 1;
  m->ver.writer = member_id(5);
  m->wall_ms = variant == 1 ? 1700000000500ull : 0;
  fingers[0].start_bit = 0;
  fingers[0].peer = member(4);
  fingers[1].start_bit = 157;
  fingers[1].peer = member(5);
  m->fingers = fingers;
  m->n_fingers = variant == 1 ? 2 : 0;
  memset(items, 0, sizeof(items));
  items[0].key = bytes_of("k1");
  items[0].value = bytes_of("v1");
  items[1].key = bytes_of("k2");
  items[1].has_version = true;
  items[1].tombstone = true;
  items[1].version.hlc = hlc;
  items[1].version.writer = member_id(0);
  if (variant == 1) {
    items[0].has_version = true;
    items[0].version.hlc = hlc + 5;
    items[0].version.writer = member_id(1);
  }
  m->items = items;
  m->n_items = variant == 1 ? 2 : 1;
  memset(digests, 0, sizeof(digests));
  digests[DHT_DIGEST_LEN] = 0xab;
  m->digests = digests;
  m->n_digests = variant == 1 ? 4 : 1;
  m->buckets = buckets;
  m->n_buckets = variant == 1 ? 2 : 0;
  m->from = member_id(3);
  m->to = variant == 1 ? member_id(3) : member_id(0);
  m->limit = variant == 1 ? 4096 : 10;
  m->more = variant == 1;
  counters[0].name = bytes_of("frames_in");
  counters[0].value = 12;
  counters[1].name = bytes_of("keys");
  counters[1].value = 3;
  m->counters = counters;
  m->n_counters = variant == 1 ? 2 : 1;
  holders[0] = member(2);
  holders[1] = member(3);
  lost[0].from = member_id(2);
  lost[0].to = member_id(3);
  lost[0].at_ms = 1700000000000ull;
  lost[0].holders = holders;
  lost[0].n_holders = 2;
  m->lost = lost;
  m->n_lost = variant == 1 ? 1 : 0;
  exchanges[0].peer = member(4);
  exchanges[0].from = member_id(0);
  exchanges[0].to = member_id(1);
  exchanges[0].ago_ms = 1500;
  exchanges[0].took_ms = 20;
  exchanges[0].buckets = 2;
  exchanges[0].pushed = 7;
  exchanges[0].outcome = DHT_EXCHANGE_DONE;
  m->exchanges = exchanges;
  m->n_exchanges = variant == 1 ? 1 : 0;
  dead[0].peer = member(5);
  dead[0].ago_ms = 30000;
  m->dead = dead;
  m->n_dead = variant == 1 ? 1 : 0;
  m->error_code = variant == 1 ? DHT_ERR_STALE : DHT_ERR_NOT_FOUND;
  m->error_msg = bytes_of(variant == 1 ? "stale" : "key not found");
}

/* The encoded frame of a sample, header included, in buf. */
static void sample_frame(dht_buf *buf, dht_msg_type type, int variant) {
  dht_msg m;
  int rv;

  sample(&m, type, variant);
  buf->len = 0;
  rv = dht_msg_encode(&m, buf);
  if (rv != 0) {
    fprintf(stderr, "fuzz_seeds: cannot encode %s: %s\n",
            dht_msg_type_name((int)type), dht_strerror(rv));
    exit(1);
  }
}

static void lower(char *dst, size_t len, const char *src) {
  size_t i;

  for (i = 0; i + 1 < len && src[i] != '\0'; i++) {
    dst[i] = (char)(src[i] >= 'A' && src[i] <= 'Z' ? src[i] - 'A' + 'a' : src[i]);
  }
  dst[i] = '\0';
}

static void wire_seeds(void) {
  char name[64], type_name[32];
  dht_buf buf;
  int t, v;

  dht_buf_init(&buf);
  for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
    lower(type_name, sizeof(type_name), dht_msg_type_name(t));
    for (v = 0; v < 2; v++) {
      sample_frame(&buf, (dht_msg_type)t, v);
      snprintf(name, sizeof(name), "%02d-%s-%d", t, type_name, v);
      write_file("wire", name, buf.data + DHT_FRAME_HEADER_LEN,
                 buf.len - DHT_FRAME_HEADER_LEN);
    }
  }
  dht_buf_free(&buf);
}

/* ---- inputs for the node --------------------------------------------------------- */

typedef struct script {
  uint8_t b[4096];
  size_t len;
} script;

static void put1(script *s, int byte) {
  if (s->len == sizeof(s->b)) {
    fprintf(stderr, "fuzz_seeds: script too long\n");
    exit(1);
  }
  s->b[s->len++] = (uint8_t)byte;
}

/* A frame body as an OP_RAW step on connection choice conn. */
static void put_raw(script *s, int conn, const dht_buf *frame) {
  size_t body = frame->len - DHT_FRAME_HEADER_LEN, i;

  put1(s, OP_RAW);
  put1(s, conn);
  put1(s, 255);
  put1(s, (int)(body >> 8));
  put1(s, (int)(body & 0xff));
  for (i = 0; i < body; i++) {
    put1(s, frame->data[DHT_FRAME_HEADER_LEN + i]);
  }
}

/* A reply of the kind expected, from the peer asked, to the back-th most
 * recent request; its fields from the zero bytes that follow. */
static void put_reply(script *s, int back, int extra) {
  int i;

  put1(s, OP_REPLY);
  put1(s, back);
  put1(s, REPLY_TRUTH);
  for (i = 0; i < extra; i++) {
    put1(s, 0);
  }
}

static void node_file(const char *name, const script *s) {
  write_file("node", name, s->b, s->len);
}

static void node_seeds(void) {
  static const char *const starts[] = {"create", "join", "installed", "idle"};
  char name[64], type_name[32];
  dht_buf buf;
  script s;
  int start, t, i;

  dht_buf_init(&buf);
  /* every type of frame, from a client and from a member, in each start */
  for (start = 0; start < 4; start++) {
    for (t = 0; t <= DHT_MSG_TYPE_LAST; t++) {
      s.len = 0;
      put1(&s, start | (t % 3 == 0 ? SETUP_SMALL : 0) |
                   (t % 2 == 0 ? SETUP_GROUP_COMMIT : 0));
      sample_frame(&buf, (dht_msg_type)t, t % 2);
      put_raw(&s, t % 2 ? CONN_CLIENT : CONN_MEMBER0, &buf);
      put1(&s, OP_COMMIT);
      put1(&s, 0);
      put1(&s, OP_TICK);
      put1(&s, 200);
      put_reply(&s, 0, 8);
      lower(type_name, sizeof(type_name), dht_msg_type_name(t));
      snprintf(name, sizeof(name), "%s-%02d-%s", starts[start], t, type_name);
      node_file(name, &s);
    }
  }

  /* a join answered, then maintenance with every request answered */
  s.len = 0;
  put1(&s, START_JOIN);
  put_reply(&s, 0, 16); /* FIND_SUCC_R: the bootstrap owns the id */
  for (i = 0; i < 24; i++) {
    put1(&s, OP_TICK);
    put1(&s, 130);
    put_reply(&s, 0, 12);
    put_reply(&s, 1, 12);
  }
  node_file("scenario-join-maintain", &s);

  /* a converged ring: a client's PUT, the replicas' OKs, GET, DEL */
  s.len = 0;
  put1(&s, START_INSTALLED | SETUP_GROUP_COMMIT);
  for (t = 0; t < 3; t++) {
    static const dht_msg_type types[] = {DHT_MSG_PUT, DHT_MSG_GET, DHT_MSG_DEL};
    dht_msg m;
    sample(&m, types[t], 0);
    m.key = bytes_of("k7");
    m.final = true;
    buf.len = 0;
    if (dht_msg_encode(&m, &buf) != 0) {
      exit(1);
    }
    put_raw(&s, CONN_CLIENT, &buf);
    put1(&s, OP_COMMIT);
    put1(&s, 0);
    put_reply(&s, 0, 8);
    put_reply(&s, 1, 8);
    put_reply(&s, 2, 8);
    put1(&s, OP_COMMIT);
    put1(&s, 0);
    put1(&s, OP_TICK);
    put1(&s, 50);
  }
  node_file("scenario-installed-writes", &s);

  /* timers without answers: peers die, the ring of one remains */
  s.len = 0;
  put1(&s, START_INSTALLED | SETUP_SMALL);
  for (i = 0; i < 30; i++) {
    put1(&s, OP_JUMP);
    put1(&s, 4);
  }
  put1(&s, OP_JUMP);
  put1(&s, 3);
  node_file("scenario-installed-silence", &s);

  /* a graceful leave, its handoff and LEAVEs answered */
  s.len = 0;
  put1(&s, START_INSTALLED);
  sample_frame(&buf, DHT_MSG_HANDOFF, 1);
  put_raw(&s, CONN_MEMBER0 + 3, &buf);
  put1(&s, OP_COMMAND);
  put1(&s, 0);
  for (i = 0; i < 6; i++) {
    put_reply(&s, 0, 8);
    put1(&s, OP_TICK);
    put1(&s, 100);
  }
  node_file("scenario-leave", &s);
  dht_buf_free(&buf);
}

/* ---- inputs for the sealed channel ------------------------------------------------ */

/* fuzz_seal.c's ops and setup values. */
enum { SEAL_SEND, SEAL_DELIVER, SEAL_FLIP, SEAL_DROP, SEAL_REPLAY };
enum { SEAL_KEYS_MEMBER = 0, SEAL_KEYS_CLIENT = 1, SEAL_KEYS_OTHER_RING = 2 };

static void seal_deliver(script *s, int pipe) {
  put1(s, SEAL_DELIVER);
  put1(s, pipe);
  put1(s, 0xff);
  put1(s, 0xff);
}

static void seal_send(script *s, int side, const char *body) {
  size_t i, n = strlen(body);

  put1(s, SEAL_SEND);
  put1(s, side);
  put1(s, (int)(n >> 8));
  put1(s, (int)(n & 0xff));
  for (i = 0; i < n; i++) {
    put1(s, body[i]);
  }
}

/* The handshake (HELLO, CHALLENGE, both proofs) and a frame each way, with
 * the keys of setup; then, after the last step given, whatever tamper
 * says. */
static void seal_file(const char *name, int setup, int tamper) {
  script s;
  int i;

  s.len = 0;
  put1(&s, setup);
  for (i = 0; i < 2 * 32; i++) {
    put1(&s, i < 32 ? 0x11 : 0x22);
  }
  for (i = 0; i < 4; i++) {
    seal_deliver(&s, i % 2);
  }
  seal_send(&s, 0, "a frame from the initiator");
  seal_send(&s, 1, "a frame from the responder");
  if (tamper >= 0) { /* on the pipe from the initiator */
    put1(&s, tamper);
    put1(&s, 0);
  }
  if (tamper == SEAL_FLIP || tamper == SEAL_DROP) {
    put1(&s, 0); /* offset, or bytes dropped: 9 */
    put1(&s, 9);
  }
  if (tamper == SEAL_FLIP) {
    put1(&s, 3); /* the bit */
  }
  seal_deliver(&s, 0);
  seal_deliver(&s, 1);
  write_file("seal", name, s.b, s.len);
}

static void seal_seeds(void) {
  seal_file("member", SEAL_KEYS_MEMBER, -1);
  seal_file("client", SEAL_KEYS_CLIENT, -1);
  seal_file("other-ring", SEAL_KEYS_OTHER_RING, -1);
  seal_file("flipped-bit", SEAL_KEYS_MEMBER, SEAL_FLIP);
  seal_file("dropped-bytes", SEAL_KEYS_MEMBER, SEAL_DROP);
  seal_file("replayed", SEAL_KEYS_MEMBER, SEAL_REPLAY);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: fuzz_seeds DIR\n");
    return 2;
  }
  out_dir = argv[1];
  if (mkdir(out_dir, 0777) != 0 && errno != EEXIST) {
    die(out_dir);
  }
  wire_seeds();
  node_seeds();
  seal_seeds();
  return 0;
}
