/*
 * fuzz_seal.c: the closed ring's authenticated framing (libdht/src/seal.c)
 * with an attacker on the wire.
 *
 * Two ends of one connection, an initiator I and a responder R, talk
 * through two byte pipes (I to R, R to I) that the input controls. The
 * input is:
 *
 *   setup   one byte: bits 0-1 pick the keys (0: both the member key, I a
 *           member; 1: I holds the client key and claims a client; 2: I
 *           holds another ring's member key), bit 2 shortens the
 *           handshake deadline to 50 ms
 *   nonces  32 bytes for I, then 32 for R
 *   steps   until the input ends (at most STEPS_MAX): an op byte, then the
 *           op's arguments:
 *             SEND      side, u16 length, body bytes: a frame for that side
 *                       to seal (held until the handshake allows it)
 *             DELIVER   pipe, u16 count: that many pending bytes arrive
 *             FLIP      pipe, u16 offset, u8 bit: a pending bit flips
 *             DROP      pipe, u16 count: pending bytes vanish
 *             REPLAY    pipe: the last chunk delivered on it comes again
 *             INJECT    pipe, u8 count, bytes: bytes join the pipe's front
 *             REFLECT   pipe: its pending bytes go back to their sender
 *             TICK      u16 milliseconds pass
 *
 * What must hold, whatever the attacker did:
 *   - every frame an end accepts is the next frame the other end sealed:
 *     in order, once, byte for byte (a tampered, dropped, replayed,
 *     reordered, injected or reflected record is refused, never taken);
 *   - with another ring's key neither end is ever established nor accepts
 *     a frame;
 *   - an established responder has the role the initiator claimed;
 *   - until the initiator has proved the key, R has written nothing but its
 *     CHALLENGE (an unauthenticated peer gets nothing else out of it);
 *   - a failed end stays failed: every later call returns an error;
 *   - nothing leaks (ASan's leak check, in the fuzz build).
 * Keys are fixed and nonces come from the input, so an input replays.
 */
#include "dht/err.h"
#include "dht/seal.h"
#include "fuzz.h"

#define STEPS_MAX 512
#define SENT_MAX 64        /* frames remembered per side */
#define BODY_LEN_MAX 2048  /* longest frame body a SEND makes */

enum { OP_SEND, OP_DELIVER, OP_FLIP, OP_DROP, OP_REPLAY, OP_INJECT,
       OP_REFLECT, OP_TICK, OP_COUNT };
enum { KEYS_MEMBER = 0, KEYS_CLIENT = 1, KEYS_OTHER_RING = 2 };
#define SETUP_SHORT_DEADLINE 4

/* One end: its seal, what it sealed (for the other end to check), how many
 * frames it accepted, and its state. */
typedef struct end {
  dht_seal *seal;
  dht_buf sent[SENT_MAX]; /* frames it sealed, in order */
  size_t n_sent;          /* ...how many (at most SENT_MAX remembered) */
  size_t accepted;        /* frames it opened from the other end */
  size_t out_unproved;    /* bytes it wrote in calls that succeeded and
                             left it not established */
  int failed;             /* 0, or the error that ended it */
} end;

/* Bytes on their way from end `from` to the other. */
typedef struct pipe {
  dht_buf bytes;      /* pending, oldest first */
  dht_buf last;       /* the last chunk delivered */
} pipe;

static void pipe_cut_front(pipe *p, size_t n) {
  if (n > p->bytes.len) {
    n = p->bytes.len;
  }
  if (n == 0) {
    return;
  }
  memmove(p->bytes.data, p->bytes.data + n, p->bytes.len - n);
  p->bytes.len -= n;
}

static void pipe_put_front(pipe *p, const uint8_t *data, size_t n) {
  size_t old = p->bytes.len;

  if (n == 0 || dht_buf_reserve(&p->bytes, n) != 0) {
    return;
  }
  memmove(p->bytes.data + n, p->bytes.data, old);
  memcpy(p->bytes.data, data, n);
  p->bytes.len = old + n;
}

static void fail_end(end *e, int rv) {
  if (e->failed == 0) {
    e->failed = rv;
  }
}

/* Takes every frame e can open now and checks each against what the other
 * end sealed. */
static void take_frames(end *e, const end *other) {
  const uint8_t *frame;
  size_t len;
  int rv;

  while (e->failed == 0 && (rv = dht_seal_read(e->seal, &frame, &len)) == 1) {
    size_t i = e->accepted++;
    if (i >= other->n_sent) {
      fuzz_fail("an end accepted frame %zu, but only %zu were sealed", i + 1,
                other->n_sent);
    }
    if (i < SENT_MAX && (len != other->sent[i].len ||
                         memcmp(frame, other->sent[i].data, len) != 0)) {
      fuzz_fail("accepted frame %zu (%zu bytes) is not the one sealed", i + 1,
                len);
    }
  }
  if (e->failed == 0 && rv < 0) {
    fail_end(e, rv);
  }
}

/* Hands len bytes to e; what it answers goes into its outgoing pipe. */
static void deliver(end *e, const end *other, pipe *out, const uint8_t *data,
                    size_t len, uint64_t now_ms) {
  size_t before;
  int rv;

  if (e->failed != 0) {
    if (dht_seal_recv(e->seal, data, len, &out->bytes, now_ms) == 0) {
      fuzz_fail("a failed end took bytes again");
    }
    return;
  }
  before = out->bytes.len;
  rv = dht_seal_recv(e->seal, data, len, &out->bytes, now_ms);
  /* A call that fails may have checked the proof first (and answered it)
   * before a bad record behind it in the same bytes. */
  if (rv == 0 && !dht_seal_established(e->seal)) {
    e->out_unproved += out->bytes.len - before;
  }
  if (rv != 0) {
    fail_end(e, rv);
    return;
  }
  take_frames(e, other);
}

static void send_frame(end *e, pipe *out, fuzz_in *in) {
  size_t body_len = fuzz_u16(in) % BODY_LEN_MAX, got;
  const uint8_t *body = fuzz_bytes(in, body_len, &got);
  uint8_t header[4];
  dht_buf frame;
  int rv;

  dht_buf_init(&frame);
  header[0] = (uint8_t)(body_len >> 24);
  header[1] = (uint8_t)(body_len >> 16);
  header[2] = (uint8_t)(body_len >> 8);
  header[3] = (uint8_t)body_len;
  if (dht_buf_append(&frame, header, sizeof(header)) != 0 ||
      dht_buf_append(&frame, body, got) != 0 ||
      dht_buf_reserve(&frame, body_len - got) != 0) {
    dht_buf_free(&frame);
    return;
  }
  memset(frame.data + frame.len, 0, body_len - got); /* short input: zeros */
  frame.len += body_len - got;
  rv = dht_seal_send(e->seal, frame.data, frame.len, &out->bytes);
  if (rv == 0 && e->failed != 0) {
    fuzz_fail("a failed end sealed a frame");
  }
  if (rv == 0 && e->n_sent < SENT_MAX) {
    e->sent[e->n_sent++] = frame;
    return;
  }
  if (rv == 0) {
    e->n_sent++; /* sealed, not remembered: later frames go unchecked */
  } else {
    fail_end(e, rv);
  }
  dht_buf_free(&frame);
}

static void make_keys(int keys, dht_ring_key *for_i, dht_ring_key *for_r) {
  uint8_t member[DHT_KEY_LEN], other[DHT_KEY_LEN];
  dht_ring_key ring;

  memset(member, 0x5a, sizeof(member));
  memset(other, 0xa5, sizeof(other));
  dht_ring_key_from_member(for_r, member);
  switch (keys) {
  case KEYS_CLIENT:
    dht_ring_key_from_member(&ring, member);
    dht_ring_key_from_client(for_i, ring.client);
    dht_ring_key_wipe(&ring);
    break;
  case KEYS_OTHER_RING:
    dht_ring_key_from_member(for_i, other);
    break;
  default:
    dht_ring_key_from_member(for_i, member);
    break;
  }
}

static void run(fuzz_in *in) {
  uint8_t setup = fuzz_u8(in);
  int keys = setup & 3;
  dht_role role = keys == KEYS_CLIENT ? DHT_ROLE_CLIENT : DHT_ROLE_MEMBER;
  uint8_t nonce_i[DHT_SEAL_NONCE_LEN], nonce_r[DHT_SEAL_NONCE_LEN];
  dht_ring_key key_i, key_r;
  dht_seal_settings set;
  end ends[2];   /* 0: I, 1: R */
  pipe pipes[2]; /* 0: I to R, 1: R to I */
  uint64_t now_ms = 1000;
  const uint8_t *nonce;
  size_t got;
  int step, i;

  if (keys == 3) {
    keys = KEYS_MEMBER;
  }
  memset(nonce_i, 0, sizeof(nonce_i));
  memset(nonce_r, 0, sizeof(nonce_r));
  nonce = fuzz_bytes(in, sizeof(nonce_i), &got);
  memcpy(nonce_i, nonce, got);
  nonce = fuzz_bytes(in, sizeof(nonce_r), &got);
  memcpy(nonce_r, nonce, got);
  make_keys(keys, &key_i, &key_r);
  dht_seal_settings_default(&set);
  if (setup & SETUP_SHORT_DEADLINE) {
    set.handshake_timeout_ms = 50;
  }
  memset(ends, 0, sizeof(ends));
  for (i = 0; i < 2; i++) {
    dht_buf_init(&pipes[i].bytes);
    dht_buf_init(&pipes[i].last);
  }
  if (dht_seal_new(&ends[0].seal, &key_i, true, role, nonce_i, &set,
                   now_ms) != 0 ||
      dht_seal_new(&ends[1].seal, &key_r, false, DHT_ROLE_MEMBER, nonce_r,
                   &set, now_ms) != 0 ||
      dht_seal_start(ends[0].seal, &pipes[0].bytes) != 0) {
    fuzz_fail("a seal with a valid key and role could not start");
  }

  for (step = 0; step < STEPS_MAX && in->left > 0; step++) {
    uint8_t op = fuzz_u8(in) % OP_COUNT;
    int which = fuzz_u8(in) & 1; /* SEND: the end; else: the pipe */
    pipe *p = &pipes[which];
    end *to = &ends[1 - which], *from = &ends[which];
    size_t n, off;

    switch (op) {
    case OP_SEND:
      send_frame(from, p, in);
      break;
    case OP_DELIVER:
      n = fuzz_u16(in);
      if (n > p->bytes.len) {
        n = p->bytes.len;
      }
      p->last.len = 0;
      if (n > 0 && dht_buf_append(&p->last, p->bytes.data, n) == 0) {
        pipe_cut_front(p, n);
        deliver(to, from, &pipes[1 - which], p->last.data, p->last.len,
                now_ms);
      }
      break;
    case OP_FLIP:
      off = fuzz_u16(in);
      n = fuzz_u8(in) % 8;
      if (p->bytes.len > 0) {
        p->bytes.data[off % p->bytes.len] ^= (uint8_t)(1u << n);
      }
      break;
    case OP_DROP:
      pipe_cut_front(p, fuzz_u16(in));
      break;
    case OP_REPLAY:
      pipe_put_front(p, p->last.data, p->last.len);
      break;
    case OP_INJECT: {
      const uint8_t *bytes = fuzz_bytes(in, fuzz_u8(in), &n);
      pipe_put_front(p, bytes, n);
      break;
    }
    case OP_REFLECT:
      /* The pipe's bytes go back to the end that wrote them. */
      if (p->bytes.len > 0) {
        dht_buf back;
        dht_buf_init(&back);
        if (dht_buf_append(&back, p->bytes.data, p->bytes.len) == 0) {
          p->bytes.len = 0;
          deliver(from, to, &pipes[which], back.data, back.len, now_ms);
        }
        dht_buf_free(&back);
      }
      break;
    default:
      now_ms += fuzz_u16(in);
      break;
    }
  }

  /* Unproved, the responder says CHALLENGE and no more: its proof and its
   * frames go out only from the call that checked the initiator's. */
  if (ends[1].out_unproved > DHT_SEAL_HELLO_LEN) {
    fuzz_fail("the responder wrote %zu bytes while the initiator had not "
              "proved the key", ends[1].out_unproved);
  }
  if (keys == KEYS_OTHER_RING &&
      (dht_seal_established(ends[0].seal) ||
       dht_seal_established(ends[1].seal) || ends[0].accepted > 0 ||
       ends[1].accepted > 0)) {
    fuzz_fail("ends with keys of two rings got through the handshake");
  }
  if (dht_seal_established(ends[1].seal) &&
      dht_seal_role(ends[1].seal) != role) {
    fuzz_fail("the responder took role %d; the initiator claimed %d",
              (int)dht_seal_role(ends[1].seal), (int)role);
  }

  for (i = 0; i < 2; i++) {
    size_t k;
    dht_seal_del(ends[i].seal);
    for (k = 0; k < ends[i].n_sent && k < SENT_MAX; k++) {
      dht_buf_free(&ends[i].sent[k]);
    }
    dht_buf_free(&pipes[i].bytes);
    dht_buf_free(&pipes[i].last);
  }
  dht_ring_key_wipe(&key_i);
  dht_ring_key_wipe(&key_r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_in in = {data, size};

  run(&in);
  return 0;
}
