/*
 * seal.c: the closed ring's handshake and frame sealing (dht/seal.h), and
 * the text form of a key. docs/PROTOCOL.md section 9 is the reference; the
 * comments here say why, the layout is there.
 *
 * Only libsodium's primitives are used: crypto_kdf (BLAKE2b with salt and
 * personalisation) derives every key, keyed BLAKE2b (crypto_generichash)
 * makes the proofs and the session secret, and each frame is one
 * crypto_aead_chacha20poly1305_ietf record whose nonce is a per-direction
 * counter that never goes on the wire. A replayed, dropped or reordered
 * record is opened with the wrong counter and fails; a reflected one is
 * opened with the other direction's key and fails.
 *
 * The responder commits to nothing that depends on the key before the
 * initiator has proved it: its CHALLENGE is a random nonce, and its own
 * proof comes only after the initiator's checked out.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/seal.h"

#define TRANSCRIPT_LEN (2 * DHT_SEAL_HELLO_LEN)
#define ROLE_BYTE_MEMBER 1
#define ROLE_BYTE_CLIENT 2

static const uint8_t magic[4] = {'D', 'H', 'T', 'K'};
static const uint8_t hs_version = 1;
/* Equal lengths, so label || transcript can never be read two ways. */
static const char label_proof_i[] = "chord-dht/1 proof initiator";
static const char label_proof_r[] = "chord-dht/1 proof responder";
static const char label_session[] = "chord-dht/1 session";

typedef enum seal_state {
  I_WAIT_CHALLENGE, /* initiator: HELLO sent (or about to be) */
  I_WAIT_PROOF,     /* initiator: PROOF_I sent, may seal; waits for PROOF_R */
  R_WAIT_HELLO,     /* responder: nothing yet */
  R_WAIT_PROOF,     /* responder: CHALLENGE sent, waits for PROOF_I */
  ESTABLISHED,      /* both proved: records both ways */
} seal_state;

struct dht_seal {
  dht_seal_settings set;            /* copied */
  bool initiator;                   /* this side connected */
  dht_role role;                    /* claimed (initiator) or proved */
  seal_state state;                 /* where the handshake is */
  int failed;                       /* 0, or the error that ended it */
  bool started;                     /* initiator: HELLO appended */
  bool can_send;                    /* frame keys derived and this side's
                                       proof sent: records may go out */
  dht_ring_key key;                 /* copied */
  uint8_t nonce[DHT_SEAL_NONCE_LEN]; /* this side's handshake nonce */
  uint8_t transcript[TRANSCRIPT_LEN]; /* HELLO || CHALLENGE */
  uint8_t auth_key[DHT_KEY_LEN];    /* makes and checks the proofs */
  uint8_t tx_key[DHT_KEY_LEN];      /* seals what this side sends */
  uint8_t rx_key[DHT_KEY_LEN];      /* opens what it receives */
  uint64_t tx_ctr;                  /* records sealed so far */
  uint64_t rx_ctr;                  /* records opened so far */
  uint64_t deadline_ms;             /* handshake deadline */
  dht_buf in;                       /* bytes read, not yet consumed */
  size_t in_off;                    /* first unconsumed byte of in */
  size_t in_checked;                /* in_off .. in_checked: whole records
                                       whose lengths were checked */
  dht_buf held;                     /* frames waiting for can_send */
};

/* ---- keys --------------------------------------------------------------- */

void dht_ring_key_from_member(dht_ring_key *key,
                              const uint8_t member[DHT_KEY_LEN]) {
  memset(key, 0, sizeof(*key));
  key->kind = DHT_KEY_MEMBER;
  memcpy(key->member, member, DHT_KEY_LEN);
  crypto_kdf_derive_from_key(key->client, DHT_KEY_LEN, 1, "dhtclkey", member);
}

void dht_ring_key_from_client(dht_ring_key *key,
                              const uint8_t client[DHT_KEY_LEN]) {
  memset(key, 0, sizeof(*key));
  key->kind = DHT_KEY_CLIENT;
  memcpy(key->client, client, DHT_KEY_LEN);
}

void dht_ring_key_wipe(dht_ring_key *key) {
  sodium_memzero(key, sizeof(*key));
}

static const char file_prefix[] = "chord-dht-key 1 ";

int dht_ring_key_parse(dht_ring_key *key, const char *text, size_t len) {
  size_t plen = sizeof(file_prefix) - 1, bin_len = 0;
  uint8_t raw[DHT_KEY_LEN];
  const char *end = NULL;
  bool member;

  if (len > 0 && text[len - 1] == '\n') {
    len--;
  }
  if (len != plen + 7 + 2 * DHT_KEY_LEN ||
      memcmp(text, file_prefix, plen) != 0) {
    return DHT_ERR_MALFORMED;
  }
  if (memcmp(text + plen, "member ", 7) == 0) {
    member = true;
  } else if (memcmp(text + plen, "client ", 7) == 0) {
    member = false;
  } else {
    return DHT_ERR_MALFORMED;
  }
  if (sodium_hex2bin(raw, sizeof(raw), text + plen + 7, 2 * DHT_KEY_LEN, NULL,
                     &bin_len, &end) != 0 ||
      bin_len != DHT_KEY_LEN || end != text + len) {
    sodium_memzero(raw, sizeof(raw));
    return DHT_ERR_MALFORMED;
  }
  if (member) {
    dht_ring_key_from_member(key, raw);
  } else {
    dht_ring_key_from_client(key, raw);
  }
  sodium_memzero(raw, sizeof(raw));
  return 0;
}

int dht_ring_key_format(const dht_ring_key *key, bool as_client, char *buf,
                        size_t buf_len) {
  bool client = as_client || key->kind == DHT_KEY_CLIENT;
  size_t plen = sizeof(file_prefix) - 1;

  if (key->kind == DHT_KEY_NONE || buf_len < DHT_KEY_FILE_LEN_MAX) {
    return DHT_ERR_INVAL;
  }
  memcpy(buf, file_prefix, plen);
  memcpy(buf + plen, client ? "client " : "member ", 7);
  sodium_bin2hex(buf + plen + 7, 2 * DHT_KEY_LEN + 1,
                 client ? key->client : key->member, DHT_KEY_LEN);
  buf[plen + 7 + 2 * DHT_KEY_LEN] = '\n';
  buf[plen + 8 + 2 * DHT_KEY_LEN] = '\0';
  return (int)(plen + 8 + 2 * DHT_KEY_LEN);
}

/* ---- the connection ------------------------------------------------------ */

void dht_seal_settings_default(dht_seal_settings *set) {
  dht_wire_limits lim;

  dht_wire_limits_default(&lim);
  set->handshake_timeout_ms = 5000;
  set->frame_len_max = lim.frame_len_max;
}

int dht_seal_new(dht_seal **out, const dht_ring_key *key, bool initiator,
                 dht_role role, const uint8_t nonce[DHT_SEAL_NONCE_LEN],
                 const dht_seal_settings *set, uint64_t now_ms) {
  dht_seal *s;

  *out = NULL;
  if (key == NULL || key->kind == DHT_KEY_NONE || set == NULL ||
      set->handshake_timeout_ms < 1 || set->frame_len_max < 1 ||
      set->frame_len_max > UINT32_MAX - DHT_SEAL_OVERHEAD - 4 ||
      (role != DHT_ROLE_MEMBER && role != DHT_ROLE_CLIENT) ||
      (initiator && role == DHT_ROLE_MEMBER && key->kind != DHT_KEY_MEMBER) ||
      (!initiator && key->kind != DHT_KEY_MEMBER)) {
    return DHT_ERR_INVAL;
  }
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return DHT_ERR_NOMEM;
  }
  s->set = *set;
  s->initiator = initiator;
  s->role = role;
  s->state = initiator ? I_WAIT_CHALLENGE : R_WAIT_HELLO;
  s->key = *key;
  memcpy(s->nonce, nonce, DHT_SEAL_NONCE_LEN);
  s->deadline_ms = now_ms + set->handshake_timeout_ms;
  dht_buf_init(&s->in);
  dht_buf_init(&s->held);
  *out = s;
  return 0;
}

void dht_seal_del(dht_seal *s) {
  if (s == NULL) {
    return;
  }
  dht_buf_free(&s->in);
  if (s->held.data != NULL) {
    sodium_memzero(s->held.data, s->held.cap);
  }
  dht_buf_free(&s->held);
  sodium_memzero(s, sizeof(*s));
  free(s);
}

static int fail(dht_seal *s, int code) {
  if (s->failed == 0) {
    s->failed = code;
    /* Nothing more will be read or sent: drop what is buffered. */
    s->in.len = 0;
    s->in_off = 0;
    s->in_checked = 0;
    s->held.len = 0;
  }
  return s->failed;
}

/* HELLO (initiator) or CHALLENGE (responder): magic, version, role byte
 * (0 in a CHALLENGE), two reserved zero bytes, the nonce. */
static void hello_write(const dht_seal *s, uint8_t msg[DHT_SEAL_HELLO_LEN]) {
  memcpy(msg, magic, 4);
  msg[4] = hs_version;
  msg[5] = !s->initiator                 ? 0
           : s->role == DHT_ROLE_MEMBER ? ROLE_BYTE_MEMBER
                                         : ROLE_BYTE_CLIENT;
  msg[6] = 0;
  msg[7] = 0;
  memcpy(msg + 8, s->nonce, DHT_SEAL_NONCE_LEN);
}

int dht_seal_start(dht_seal *s, dht_buf *out) {
  int rv;

  assert(s->initiator && !s->started && "dht_seal_start: initiators, once");
  if (s->failed != 0) {
    return s->failed;
  }
  rv = dht_buf_reserve(out, DHT_SEAL_HELLO_LEN);
  if (rv != 0) {
    return fail(s, rv);
  }
  hello_write(s, s->transcript);
  dht_buf_append(out, s->transcript, DHT_SEAL_HELLO_LEN);
  s->started = true;
  return 0;
}

/* BLAKE2b-256 keyed with key over label || transcript. */
static void keyed_hash(uint8_t out[32], const uint8_t key[DHT_KEY_LEN],
                       const char *label, const uint8_t *transcript) {
  crypto_generichash_state st;

  crypto_generichash_init(&st, key, DHT_KEY_LEN, 32);
  crypto_generichash_update(&st, (const unsigned char *)label, strlen(label));
  crypto_generichash_update(&st, transcript, TRANSCRIPT_LEN);
  crypto_generichash_final(&st, out, 32);
  sodium_memzero(&st, sizeof(st));
}

/* Once the transcript is whole: the proof key and both frame keys, from
 * the key of the connection's role. */
static void derive(dht_seal *s) {
  const uint8_t *role_key =
      s->role == DHT_ROLE_MEMBER ? s->key.member : s->key.client;
  uint8_t session_seed[DHT_KEY_LEN], session[32];
  uint8_t k_ir[DHT_KEY_LEN], k_ri[DHT_KEY_LEN];

  crypto_kdf_derive_from_key(s->auth_key, DHT_KEY_LEN, 1, "dhtauth1",
                             role_key);
  crypto_kdf_derive_from_key(session_seed, DHT_KEY_LEN, 2, "dhtauth1",
                             role_key);
  keyed_hash(session, session_seed, label_session, s->transcript);
  crypto_kdf_derive_from_key(k_ir, DHT_KEY_LEN, 1, "dhtframe", session);
  crypto_kdf_derive_from_key(k_ri, DHT_KEY_LEN, 2, "dhtframe", session);
  memcpy(s->tx_key, s->initiator ? k_ir : k_ri, DHT_KEY_LEN);
  memcpy(s->rx_key, s->initiator ? k_ri : k_ir, DHT_KEY_LEN);
  sodium_memzero(session_seed, sizeof(session_seed));
  sodium_memzero(session, sizeof(session));
  sodium_memzero(k_ir, sizeof(k_ir));
  sodium_memzero(k_ri, sizeof(k_ri));
}

/* The 96-bit IETF nonce of record number ctr: 4 zero bytes, then the
 * counter little-endian (as WireGuard does). */
static void record_nonce(uint8_t nonce[12], uint64_t ctr) {
  int i;

  memset(nonce, 0, 4);
  for (i = 0; i < 8; i++) {
    nonce[4 + i] = (uint8_t)(ctr >> (8 * i));
  }
}

static uint32_t get_be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* Seals frame into out as one record. */
static int seal_into(dht_seal *s, const uint8_t *frame, size_t len,
                     dht_buf *out) {
  uint8_t nonce[12], *rec;
  unsigned long long clen;
  int rv;

  if (s->tx_ctr == UINT64_MAX) {
    return fail(s, DHT_ERR_STATE); /* the nonce would repeat: never reached */
  }
  rv = dht_buf_reserve(out, DHT_SEAL_OVERHEAD + len);
  if (rv != 0) {
    return fail(s, rv);
  }
  rec = out->data + out->len;
  put_be32(rec, (uint32_t)(len + DHT_SEAL_TAG_LEN));
  record_nonce(nonce, s->tx_ctr);
  crypto_aead_chacha20poly1305_ietf_encrypt(
      rec + DHT_SEAL_RECORD_HEADER_LEN, &clen, frame, len, rec,
      DHT_SEAL_RECORD_HEADER_LEN, NULL, nonce, s->tx_key);
  assert(clen == len + DHT_SEAL_TAG_LEN);
  out->len += DHT_SEAL_OVERHEAD + len;
  s->tx_ctr++;
  return 0;
}

/* This side may seal from now on: what was held goes out first, in order. */
static int release_held(dht_seal *s, dht_buf *out) {
  size_t off = 0, flen;
  int rv;

  s->can_send = true;
  while (off < s->held.len) {
    flen = DHT_FRAME_HEADER_LEN + get_be32(s->held.data + off);
    rv = seal_into(s, s->held.data + off, flen, out);
    if (rv != 0) {
      return rv;
    }
    off += flen;
  }
  if (s->held.data != NULL) {
    sodium_memzero(s->held.data, s->held.len);
  }
  s->held.len = 0;
  return 0;
}

/* Checks a HELLO or CHALLENGE; the role byte of a HELLO sets s->role. */
static int hello_check(dht_seal *s, const uint8_t *msg) {
  if (memcmp(msg, magic, 4) != 0 || msg[4] != hs_version || msg[6] != 0 ||
      msg[7] != 0) {
    return DHT_ERR_MALFORMED;
  }
  if (s->initiator) {
    return msg[5] == 0 ? 0 : DHT_ERR_MALFORMED;
  }
  if (msg[5] == ROLE_BYTE_MEMBER) {
    s->role = DHT_ROLE_MEMBER;
  } else if (msg[5] == ROLE_BYTE_CLIENT) {
    s->role = DHT_ROLE_CLIENT;
  } else {
    return DHT_ERR_MALFORMED;
  }
  return 0;
}

/* Checks the peer's proof (its label is the other side's). */
static int proof_check(dht_seal *s, const uint8_t *proof) {
  uint8_t want[DHT_SEAL_PROOF_LEN];
  int ok;

  keyed_hash(want, s->auth_key, s->initiator ? label_proof_r : label_proof_i,
             s->transcript);
  ok = crypto_verify_32(want, proof) == 0;
  sodium_memzero(want, sizeof(want));
  return ok ? 0 : DHT_ERR_AUTH;
}

static int proof_send(dht_seal *s, dht_buf *out) {
  uint8_t proof[DHT_SEAL_PROOF_LEN];
  int rv;

  keyed_hash(proof, s->auth_key, s->initiator ? label_proof_i : label_proof_r,
             s->transcript);
  rv = dht_buf_append(out, proof, sizeof(proof));
  sodium_memzero(proof, sizeof(proof));
  return rv;
}

/* One handshake step on the bytes at in_off, if enough are there. Returns
 * 1 (a step was taken), 0 (waiting for bytes) or an error. */
static int handshake_step(dht_seal *s, dht_buf *out) {
  const uint8_t *p = s->in.data + s->in_off;
  size_t avail = s->in.len - s->in_off;
  int rv;

  switch (s->state) {
  case R_WAIT_HELLO:
  case I_WAIT_CHALLENGE:
    if (avail < DHT_SEAL_HELLO_LEN) {
      /* Check what is there already: garbage closes at once. */
      if (avail >= 4 && memcmp(p, magic, 4) != 0) {
        return DHT_ERR_MALFORMED;
      }
      return 0;
    }
    /* Nothing may follow: the other side waits for our answer first. */
    if (avail > DHT_SEAL_HELLO_LEN) {
      return DHT_ERR_MALFORMED;
    }
    rv = hello_check(s, p);
    if (rv != 0) {
      return rv;
    }
    if (s->state == R_WAIT_HELLO) {
      if (s->role == DHT_ROLE_MEMBER && s->key.kind != DHT_KEY_MEMBER) {
        return DHT_ERR_AUTH;
      }
      memcpy(s->transcript, p, DHT_SEAL_HELLO_LEN);
      hello_write(s, s->transcript + DHT_SEAL_HELLO_LEN);
      rv = dht_buf_append(out, s->transcript + DHT_SEAL_HELLO_LEN,
                          DHT_SEAL_HELLO_LEN);
      if (rv != 0) {
        return rv;
      }
      derive(s);
      s->state = R_WAIT_PROOF;
    } else {
      memcpy(s->transcript + DHT_SEAL_HELLO_LEN, p, DHT_SEAL_HELLO_LEN);
      derive(s);
      rv = proof_send(s, out);
      if (rv == 0) {
        rv = release_held(s, out);
      }
      if (rv != 0) {
        return rv;
      }
      s->state = I_WAIT_PROOF;
    }
    s->in_off += DHT_SEAL_HELLO_LEN;
    return 1;
  case R_WAIT_PROOF:
  case I_WAIT_PROOF:
    if (avail < DHT_SEAL_PROOF_LEN) {
      return 0;
    }
    /* A responder may find records after PROOF_I (the initiator seals as
     * soon as it has sent it); an initiator may find them after PROOF_R. */
    rv = proof_check(s, p);
    if (rv != 0) {
      return rv;
    }
    if (s->state == R_WAIT_PROOF) {
      rv = proof_send(s, out);
      if (rv == 0) {
        rv = release_held(s, out);
      }
      if (rv != 0) {
        return rv;
      }
    }
    sodium_memzero(s->auth_key, sizeof(s->auth_key));
    s->in_off += DHT_SEAL_PROOF_LEN;
    s->in_checked = s->in_off;
    s->state = ESTABLISHED;
    return 1;
  case ESTABLISHED:
    break;
  }
  return 0;
}

/* Checks the declared length of every record header now in the buffer, so
 * that an oversized one closes before its body is buffered. */
static int check_records(dht_seal *s) {
  uint64_t max = (uint64_t)s->set.frame_len_max + DHT_FRAME_HEADER_LEN +
                 DHT_SEAL_TAG_LEN;
  uint32_t rlen;

  while (s->in.len - s->in_checked >= DHT_SEAL_RECORD_HEADER_LEN) {
    rlen = get_be32(s->in.data + s->in_checked);
    if (rlen > max || rlen < DHT_FRAME_HEADER_LEN + DHT_SEAL_TAG_LEN) {
      return DHT_ERR_TOO_LARGE;
    }
    if (s->in.len - s->in_checked < DHT_SEAL_RECORD_HEADER_LEN + rlen) {
      break;
    }
    s->in_checked += DHT_SEAL_RECORD_HEADER_LEN + rlen;
  }
  return 0;
}

int dht_seal_recv(dht_seal *s, const uint8_t *data, size_t len, dht_buf *out,
                  uint64_t now_ms) {
  size_t rest;
  int rv;

  if (s->failed != 0) {
    return s->failed;
  }
  if (s->state != ESTABLISHED && now_ms >= s->deadline_ms) {
    return fail(s, DHT_ERR_TIMEOUT);
  }
  if (s->in_off > 0) {
    rest = s->in.len - s->in_off;
    memmove(s->in.data, s->in.data + s->in_off, rest);
    s->in.len = rest;
    s->in_checked -= s->in_off;
    s->in_off = 0;
  }
  rv = dht_buf_append(&s->in, data, len);
  if (rv != 0) {
    return fail(s, rv);
  }
  while (s->state != ESTABLISHED) {
    rv = handshake_step(s, out);
    if (rv < 0) {
      return fail(s, rv);
    }
    if (rv == 0) {
      return 0;
    }
  }
  rv = check_records(s);
  return rv != 0 ? fail(s, rv) : 0;
}

int dht_seal_read(dht_seal *s, const uint8_t **frame, size_t *len) {
  uint8_t nonce[12], *rec;
  unsigned long long mlen;
  uint32_t rlen;

  if (s->failed != 0) {
    return s->failed;
  }
  if (s->state != ESTABLISHED || s->in.len - s->in_off <
                                     DHT_SEAL_RECORD_HEADER_LEN) {
    return 0;
  }
  rec = s->in.data + s->in_off;
  rlen = get_be32(rec);
  if (s->in.len - s->in_off < DHT_SEAL_RECORD_HEADER_LEN + (size_t)rlen) {
    return 0;
  }
  assert(s->in_off < s->in_checked && "an unchecked record is whole");
  record_nonce(nonce, s->rx_ctr);
  /* Opened in place: the plaintext is the ciphertext's first bytes. */
  if (crypto_aead_chacha20poly1305_ietf_decrypt(
          rec + DHT_SEAL_RECORD_HEADER_LEN, &mlen, NULL,
          rec + DHT_SEAL_RECORD_HEADER_LEN, rlen, rec,
          DHT_SEAL_RECORD_HEADER_LEN, nonce, s->rx_key) != 0) {
    return fail(s, DHT_ERR_AUTH);
  }
  s->rx_ctr++;
  if (mlen < DHT_FRAME_HEADER_LEN ||
      get_be32(rec + DHT_SEAL_RECORD_HEADER_LEN) !=
          mlen - DHT_FRAME_HEADER_LEN) {
    return fail(s, DHT_ERR_MALFORMED);
  }
  *frame = rec + DHT_SEAL_RECORD_HEADER_LEN;
  *len = (size_t)mlen;
  s->in_off += DHT_SEAL_RECORD_HEADER_LEN + rlen;
  return 1;
}

int dht_seal_send(dht_seal *s, const uint8_t *frame, size_t len,
                  dht_buf *out) {
  int rv;

  if (s->failed != 0) {
    return s->failed;
  }
  if (len < DHT_FRAME_HEADER_LEN ||
      get_be32(frame) != len - DHT_FRAME_HEADER_LEN ||
      len - DHT_FRAME_HEADER_LEN > s->set.frame_len_max) {
    return DHT_ERR_INVAL;
  }
  if (!s->can_send) {
    rv = dht_buf_append(&s->held, frame, len);
    return rv != 0 ? fail(s, rv) : 0;
  }
  return seal_into(s, frame, len, out);
}

bool dht_seal_established(const dht_seal *s) {
  return s->failed == 0 && s->state == ESTABLISHED;
}

dht_role dht_seal_role(const dht_seal *s) { return s->role; }

uint64_t dht_seal_deadline(const dht_seal *s) {
  return s->state == ESTABLISHED ? UINT64_MAX : s->deadline_ms;
}

size_t dht_seal_held_len(const dht_seal *s) { return s->held.len; }

size_t dht_seal_in_len(const dht_seal *s) { return s->in.len - s->in_off; }
