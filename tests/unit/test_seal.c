/*
 * test_seal.c: the closed ring's handshake and frame sealing (dht/seal.h),
 * two ends wired back to back in memory: every way a frame or a handshake
 * can be forged, cut, replayed, reordered or reflected must be refused, and
 * honest ends must get exactly the frames that were sent.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "dht/err.h"
#include "dht/seal.h"

/* One end and the bytes it has written that the other has not read. */
typedef struct end {
  dht_seal *s;
  dht_buf out;
} end;

typedef struct pair {
  end i, r; /* initiator, responder */
  uint64_t now;
} pair;

static void key_member(dht_ring_key *k, uint8_t fill) {
  uint8_t raw[DHT_KEY_LEN];

  memset(raw, fill, sizeof(raw));
  dht_ring_key_from_member(k, raw);
}

static void pair_new(pair *p, const dht_ring_key *ik, dht_role role,
                     const dht_ring_key *rk) {
  dht_seal_settings set;
  uint8_t ni[DHT_SEAL_NONCE_LEN], nr[DHT_SEAL_NONCE_LEN];

  memset(p, 0, sizeof(*p));
  memset(ni, 0x11, sizeof(ni));
  memset(nr, 0x22, sizeof(nr));
  p->now = 1000;
  dht_seal_settings_default(&set);
  dht_buf_init(&p->i.out);
  dht_buf_init(&p->r.out);
  assert_int_equal(dht_seal_new(&p->i.s, ik, true, role, ni, &set, p->now), 0);
  assert_int_equal(dht_seal_new(&p->r.s, rk, false, DHT_ROLE_MEMBER, nr, &set,
                                p->now),
                   0);
  assert_int_equal(dht_seal_start(p->i.s, &p->i.out), 0);
}

static void pair_del(pair *p) {
  dht_seal_del(p->i.s);
  dht_seal_del(p->r.s);
  dht_buf_free(&p->i.out);
  dht_buf_free(&p->r.out);
}

/* Delivers everything from's end wrote to to's end; returns to's verdict. */
static int deliver(end *from, end *to, uint64_t now) {
  dht_buf bytes = from->out;
  int rv;

  dht_buf_init(&from->out);
  rv = dht_seal_recv(to->s, bytes.data, bytes.len, &to->out, now);
  dht_buf_free(&bytes);
  return rv;
}

/* Runs the handshake to its end; both must be established. */
static void handshake(pair *p) {
  assert_int_equal(deliver(&p->i, &p->r, p->now), 0); /* HELLO */
  assert_int_equal(deliver(&p->r, &p->i, p->now), 0); /* CHALLENGE */
  assert_int_equal(deliver(&p->i, &p->r, p->now), 0); /* PROOF_I */
  assert_true(dht_seal_established(p->r.s));
  assert_int_equal(deliver(&p->r, &p->i, p->now), 0); /* PROOF_R */
  assert_true(dht_seal_established(p->i.s));
}

/* A frame of the wire with a body of n bytes, all b. */
static size_t frame_make(uint8_t *f, size_t n, uint8_t b) {
  f[0] = (uint8_t)(n >> 24);
  f[1] = (uint8_t)(n >> 16);
  f[2] = (uint8_t)(n >> 8);
  f[3] = (uint8_t)n;
  memset(f + 4, b, n);
  return n + 4;
}

static void send_frame(end *e, size_t n, uint8_t b) {
  uint8_t f[300];

  assert_true(n + 4 <= sizeof(f));
  assert_int_equal(dht_seal_send(e->s, f, frame_make(f, n, b), &e->out), 0);
}

/* The next frame e has must be a body of n bytes b. */
static void expect_frame(end *e, size_t n, uint8_t b) {
  uint8_t want[300];
  const uint8_t *f;
  size_t len;

  assert_int_equal(dht_seal_read(e->s, &f, &len), 1);
  assert_int_equal(len, frame_make(want, n, b));
  assert_memory_equal(f, want, len);
}

static void test_frames_flow_both_ways(void **state) {
  dht_ring_key k;
  const uint8_t *f;
  size_t len;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  /* Sent before the handshake: held, then sealed in order. */
  send_frame(&p.i, 10, 'a');
  assert_int_equal(dht_seal_held_len(p.i.s), 14);
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  assert_int_equal(deliver(&p.r, &p.i, p.now), 0);
  assert_int_equal(dht_seal_held_len(p.i.s), 0);
  send_frame(&p.i, 0, 0);
  /* PROOF_I and two records in one read: the responder opens them. */
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  assert_true(dht_seal_established(p.r.s));
  assert_int_equal(dht_seal_role(p.r.s), DHT_ROLE_MEMBER);
  expect_frame(&p.r, 10, 'a');
  expect_frame(&p.r, 0, 0);
  assert_int_equal(dht_seal_read(p.r.s, &f, &len), 0);
  send_frame(&p.r, 200, 'z');
  assert_int_equal(deliver(&p.r, &p.i, p.now), 0);
  assert_true(dht_seal_established(p.i.s));
  expect_frame(&p.i, 200, 'z');
  /* A record split across reads byte by byte. */
  send_frame(&p.i, 33, 'q');
  {
    dht_buf bytes = p.i.out;
    size_t j;
    dht_buf_init(&p.i.out);
    for (j = 0; j < bytes.len; j++) {
      assert_int_equal(dht_seal_recv(p.r.s, bytes.data + j, 1, &p.r.out, p.now),
                       0);
      if (j + 1 < bytes.len) {
        assert_int_equal(dht_seal_read(p.r.s, &f, &len), 0);
      }
    }
    dht_buf_free(&bytes);
  }
  expect_frame(&p.r, 33, 'q');
  assert_int_equal(dht_seal_deadline(p.r.s), UINT64_MAX);
  pair_del(&p);
}

static void test_client_key_proves_client_role(void **state) {
  dht_ring_key member, client;
  pair p;

  (void)state;
  key_member(&member, 7);
  dht_ring_key_from_client(&client, member.client);
  assert_memory_not_equal(member.member, member.client, DHT_KEY_LEN);
  pair_new(&p, &client, DHT_ROLE_CLIENT, &member);
  handshake(&p);
  assert_int_equal(dht_seal_role(p.r.s), DHT_ROLE_CLIENT);
  send_frame(&p.i, 5, 'c');
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  expect_frame(&p.r, 5, 'c');
  pair_del(&p);
}

static void test_client_key_cannot_claim_member(void **state) {
  dht_seal_settings set;
  dht_ring_key member, client;
  uint8_t nonce[DHT_SEAL_NONCE_LEN] = {0};
  dht_seal *s;
  pair p;

  (void)state;
  key_member(&member, 7);
  dht_ring_key_from_client(&client, member.client);
  dht_seal_settings_default(&set);
  assert_int_equal(dht_seal_new(&s, &client, true, DHT_ROLE_MEMBER, nonce,
                                &set, 0),
                   DHT_ERR_INVAL);
  assert_null(s);
  /* A client that patches its HELLO to say "member" proves with the client
   * key what the member key should have proved: refused. */
  pair_new(&p, &client, DHT_ROLE_CLIENT, &member);
  p.i.out.data[5] = 1;
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  assert_int_equal(deliver(&p.r, &p.i, p.now), 0);
  assert_int_equal(deliver(&p.i, &p.r, p.now), DHT_ERR_AUTH);
  assert_false(dht_seal_established(p.r.s));
  /* Failures are final, and nothing goes back to the peer. */
  assert_int_equal(p.r.out.len, 0);
  send_frame(&p.i, 1, 1);
  assert_int_equal(deliver(&p.i, &p.r, p.now), DHT_ERR_AUTH);
  pair_del(&p);
}

static void test_wrong_key_is_refused(void **state) {
  dht_ring_key a, b;
  pair p;

  (void)state;
  key_member(&a, 7);
  key_member(&b, 8);
  pair_new(&p, &a, DHT_ROLE_MEMBER, &b);
  send_frame(&p.i, 3, 'x');
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  assert_int_equal(deliver(&p.r, &p.i, p.now), 0);
  /* The responder finds the proof wrong before it opens a record, and
   * answers nothing: it never proves its own key to a stranger. */
  assert_int_equal(deliver(&p.i, &p.r, p.now), DHT_ERR_AUTH);
  assert_int_equal(p.r.out.len, 0);
  assert_false(dht_seal_established(p.i.s));
  pair_del(&p);

  /* The other way: a responder with another key cannot fake PROOF_R. */
  pair_new(&p, &a, DHT_ROLE_MEMBER, &a);
  handshake(&p);
  pair_del(&p);
  {
    pair q;
    pair_new(&q, &a, DHT_ROLE_MEMBER, &b);
    assert_int_equal(deliver(&q.i, &q.r, q.now), 0);
    assert_int_equal(deliver(&q.r, &q.i, q.now), 0);
    /* Give the initiator a proof the wrong-key responder would make. */
    {
      uint8_t fake[DHT_SEAL_PROOF_LEN];
      memset(fake, 0x5a, sizeof(fake));
      assert_int_equal(dht_seal_recv(q.i.s, fake, sizeof(fake), &q.i.out,
                                     q.now),
                       DHT_ERR_AUTH);
    }
    pair_del(&q);
  }
}

/* Seals two frames from i to r and returns their records' bytes. */
static void two_records(pair *p, dht_buf *first, dht_buf *second) {
  send_frame(&p->i, 8, '1');
  *first = p->i.out;
  dht_buf_init(&p->i.out);
  send_frame(&p->i, 8, '2');
  *second = p->i.out;
  dht_buf_init(&p->i.out);
}

static void test_tampered_byte_is_refused(void **state) {
  dht_buf a, b;
  dht_ring_key k;
  const uint8_t *f;
  size_t len, j;
  pair p;

  (void)state;
  key_member(&k, 7);
  /* Every byte of a record, header included, flipped in turn. */
  for (j = 0; j < 4 + 12 + 16; j++) {
    pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
    handshake(&p);
    two_records(&p, &a, &b);
    a.data[j] ^= 0x01;
    if (j < 4) {
      /* A length changed: refused now (too long, too short) or the record
       * does not open with the header it was sealed under. */
      int rv = dht_seal_recv(p.r.s, a.data, a.len, &p.r.out, p.now);
      if (rv == 0) {
        /* A longer length waits for more bytes: given them, it fails. */
        uint8_t *more = calloc(1, 70000);
        assert_non_null(more);
        assert_true(dht_seal_recv(p.r.s, b.data, b.len, &p.r.out, p.now) < 0 ||
                    dht_seal_recv(p.r.s, more, 70000, &p.r.out, p.now) < 0 ||
                    dht_seal_read(p.r.s, &f, &len) < 0);
        free(more);
      } else {
        assert_int_equal(rv, DHT_ERR_TOO_LARGE);
      }
    } else {
      assert_int_equal(dht_seal_recv(p.r.s, a.data, a.len, &p.r.out, p.now), 0);
      assert_int_equal(dht_seal_read(p.r.s, &f, &len), DHT_ERR_AUTH);
    }
    /* ... and the connection is over. */
    assert_true(dht_seal_read(p.r.s, &f, &len) < 0);
    dht_buf_free(&a);
    dht_buf_free(&b);
    pair_del(&p);
  }
}

static void test_replayed_frame_is_refused(void **state) {
  dht_buf a, b;
  dht_ring_key k;
  const uint8_t *f;
  size_t len;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  two_records(&p, &a, &b);
  assert_int_equal(dht_seal_recv(p.r.s, a.data, a.len, &p.r.out, p.now), 0);
  expect_frame(&p.r, 8, '1');
  assert_int_equal(dht_seal_recv(p.r.s, a.data, a.len, &p.r.out, p.now), 0);
  assert_int_equal(dht_seal_read(p.r.s, &f, &len), DHT_ERR_AUTH);
  dht_buf_free(&a);
  dht_buf_free(&b);
  pair_del(&p);

  /* A record of one connection replayed into another with the same key
   * (and even the same nonces) does not open either: fresh nonces make
   * fresh keys, and here the second connection's responder nonce differs. */
  {
    dht_seal_settings set;
    uint8_t nr[DHT_SEAL_NONCE_LEN];
    pair q;
    pair_new(&q, &k, DHT_ROLE_MEMBER, &k);
    handshake(&q);
    two_records(&q, &a, &b);
    pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
    dht_seal_del(p.r.s);
    memset(nr, 0x33, sizeof(nr));
    dht_seal_settings_default(&set);
    assert_int_equal(dht_seal_new(&p.r.s, &k, false, DHT_ROLE_MEMBER, nr, &set,
                                  p.now),
                     0);
    handshake(&p);
    assert_int_equal(dht_seal_recv(p.r.s, a.data, a.len, &p.r.out, p.now), 0);
    assert_int_equal(dht_seal_read(p.r.s, &f, &len), DHT_ERR_AUTH);
    dht_buf_free(&a);
    dht_buf_free(&b);
    pair_del(&p);
    pair_del(&q);
  }
}

static void test_reordered_frames_are_refused(void **state) {
  dht_buf a, b;
  dht_ring_key k;
  const uint8_t *f;
  size_t len;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  two_records(&p, &a, &b);
  assert_int_equal(dht_seal_recv(p.r.s, b.data, b.len, &p.r.out, p.now), 0);
  assert_int_equal(dht_seal_read(p.r.s, &f, &len), DHT_ERR_AUTH);
  dht_buf_free(&a);
  dht_buf_free(&b);
  pair_del(&p);

  /* Both, swapped, in one read: the first to open fails. */
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  two_records(&p, &a, &b);
  assert_int_equal(dht_buf_append(&b, a.data, a.len), 0);
  assert_int_equal(dht_seal_recv(p.r.s, b.data, b.len, &p.r.out, p.now), 0);
  assert_int_equal(dht_seal_read(p.r.s, &f, &len), DHT_ERR_AUTH);
  dht_buf_free(&a);
  dht_buf_free(&b);
  pair_del(&p);
}

static void test_reflected_frame_is_refused(void **state) {
  dht_buf a, b;
  dht_ring_key k;
  const uint8_t *f;
  size_t len;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  /* The initiator's first record, sent back to it as the responder's
   * first (same counter): the other direction's key does not open it. */
  two_records(&p, &a, &b);
  assert_int_equal(dht_seal_recv(p.i.s, a.data, a.len, &p.i.out, p.now), 0);
  assert_int_equal(dht_seal_read(p.i.s, &f, &len), DHT_ERR_AUTH);
  dht_buf_free(&a);
  dht_buf_free(&b);
  pair_del(&p);
}

static void test_truncated_or_garbled_handshake(void **state) {
  static const uint8_t plain_ping[] = {0x00, 0x00, 0x00, 0x0c, 0x83, 0xa1,
                                       0x76, 0x01, 0xa1, 0x74, 0x01, 0xa3,
                                       0x72, 0x69, 0x64, 0x2a};
  dht_ring_key k;
  dht_buf hello;
  pair p;

  (void)state;
  key_member(&k, 7);
  /* Half a HELLO, then nothing until the deadline. */
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  assert_int_equal(dht_seal_deadline(p.r.s), p.now + 5000);
  assert_int_equal(dht_seal_recv(p.r.s, p.i.out.data, 20, &p.r.out, p.now), 0);
  assert_false(dht_seal_established(p.r.s));
  assert_int_equal(dht_seal_recv(p.r.s, NULL, 0, &p.r.out, p.now + 5000),
                   DHT_ERR_TIMEOUT);
  pair_del(&p);

  /* A plaintext frame (a client of an open ring): garbage, closed at once. */
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  assert_int_equal(
      dht_seal_recv(p.r.s, plain_ping, sizeof(plain_ping), &p.r.out, p.now),
      DHT_ERR_MALFORMED);
  assert_int_equal(p.r.out.len, 0);
  pair_del(&p);

  /* Bytes after the HELLO that the initiator could not have sent yet. */
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  hello = p.i.out;
  dht_buf_init(&p.i.out);
  dht_buf_append(&hello, "x", 1);
  assert_int_equal(dht_seal_recv(p.r.s, hello.data, hello.len, &p.r.out, p.now),
                   DHT_ERR_MALFORMED);
  dht_buf_free(&hello);
  pair_del(&p);

  /* Another version, an unknown role, a reserved byte set. */
  {
    size_t at[] = {4, 5, 6, 7};
    size_t j;
    for (j = 0; j < sizeof(at) / sizeof(at[0]); j++) {
      pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
      p.i.out.data[at[j]] = 9;
      assert_int_equal(deliver(&p.i, &p.r, p.now), DHT_ERR_MALFORMED);
      pair_del(&p);
    }
  }

  /* The initiator cut off after its proof: the responder's deadline holds. */
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  assert_int_equal(deliver(&p.i, &p.r, p.now), 0);
  assert_int_equal(deliver(&p.r, &p.i, p.now), 0);
  assert_int_equal(
      dht_seal_recv(p.r.s, p.i.out.data, 31, &p.r.out, p.now + 10), 0);
  assert_int_equal(dht_seal_recv(p.r.s, NULL, 0, &p.r.out, p.now + 6000),
                   DHT_ERR_TIMEOUT);
  pair_del(&p);
}

static void test_oversized_record_closes_before_buffering(void **state) {
  static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff};
  static const uint8_t tiny[] = {0x00, 0x00, 0x00, 0x05};
  dht_ring_key k;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  assert_int_equal(dht_seal_recv(p.r.s, huge, sizeof(huge), &p.r.out, p.now),
                   DHT_ERR_TOO_LARGE);
  pair_del(&p);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  handshake(&p);
  assert_int_equal(dht_seal_recv(p.r.s, tiny, sizeof(tiny), &p.r.out, p.now),
                   DHT_ERR_TOO_LARGE);
  pair_del(&p);
}

static void test_send_checks_the_frame(void **state) {
  uint8_t f[8] = {0, 0, 0, 9, 1, 2, 3, 4};
  dht_ring_key k;
  pair p;

  (void)state;
  key_member(&k, 7);
  pair_new(&p, &k, DHT_ROLE_MEMBER, &k);
  assert_int_equal(dht_seal_send(p.i.s, f, sizeof(f), &p.i.out), DHT_ERR_INVAL);
  assert_int_equal(dht_seal_send(p.i.s, f, 3, &p.i.out), DHT_ERR_INVAL);
  pair_del(&p);
}

static void test_key_text_round_trips(void **state) {
  char text[DHT_KEY_FILE_LEN_MAX];
  dht_ring_key k, back;
  int len;

  (void)state;
  key_member(&k, 0xab);
  len = dht_ring_key_format(&k, false, text, sizeof(text));
  assert_true(len > 0);
  assert_string_equal(text,
                      "chord-dht-key 1 member "
                      "abababababababababababababababababababababababababababab"
                      "abababab\n");
  assert_int_equal(dht_ring_key_parse(&back, text, (size_t)len), 0);
  assert_int_equal(back.kind, DHT_KEY_MEMBER);
  assert_memory_equal(back.member, k.member, DHT_KEY_LEN);
  assert_memory_equal(back.client, k.client, DHT_KEY_LEN);
  /* Without the newline too. */
  assert_int_equal(dht_ring_key_parse(&back, text, (size_t)len - 1), 0);
  len = dht_ring_key_format(&k, true, text, sizeof(text));
  assert_int_equal(dht_ring_key_parse(&back, text, (size_t)len), 0);
  assert_int_equal(back.kind, DHT_KEY_CLIENT);
  assert_memory_equal(back.client, k.client, DHT_KEY_LEN);
  /* Broken ones. */
  text[20] = 'x';
  assert_int_equal(dht_ring_key_parse(&back, text, (size_t)len),
                   DHT_ERR_MALFORMED);
  assert_int_equal(dht_ring_key_parse(&back, "chord-dht-key 1 member ab\n", 26),
                   DHT_ERR_MALFORMED);
  len = dht_ring_key_format(&k, false, text, sizeof(text));
  text[30] = 'g';
  assert_int_equal(dht_ring_key_parse(&back, text, (size_t)len),
                   DHT_ERR_MALFORMED);
  memset(&back, 0, sizeof(back));
  assert_int_equal(dht_ring_key_format(&back, false, text, sizeof(text)),
                   DHT_ERR_INVAL);
}

static void test_key_files(void **state) {
  char dir[] = "/tmp/test_seal-XXXXXX", path[64], err[256];
  dht_ring_key k, back;

  (void)state;
  assert_non_null(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/ring.key", dir);
  key_member(&k, 3);
  assert_int_equal(dht_ring_key_save(&k, false, path, err, sizeof(err)), 0);
  {
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
  }
  /* Never overwritten. */
  assert_int_equal(dht_ring_key_save(&k, true, path, err, sizeof(err)),
                   DHT_ERR_INVAL);
  assert_non_null(strstr(err, "never overwritten"));
  assert_int_equal(dht_ring_key_load(&back, path, err, sizeof(err)), 0);
  assert_memory_equal(back.member, k.member, DHT_KEY_LEN);
  /* Readable by others: refused. */
  assert_int_equal(chmod(path, 0644), 0);
  assert_int_equal(dht_ring_key_load(&back, path, err, sizeof(err)),
                   DHT_ERR_INVAL);
  assert_non_null(strstr(err, "chmod 600"));
  unlink(path);
  assert_int_equal(dht_ring_key_load(&back, path, err, sizeof(err)),
                   DHT_ERR_INVAL);
  rmdir(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_frames_flow_both_ways),
      cmocka_unit_test(test_client_key_proves_client_role),
      cmocka_unit_test(test_client_key_cannot_claim_member),
      cmocka_unit_test(test_wrong_key_is_refused),
      cmocka_unit_test(test_tampered_byte_is_refused),
      cmocka_unit_test(test_replayed_frame_is_refused),
      cmocka_unit_test(test_reordered_frames_are_refused),
      cmocka_unit_test(test_reflected_frame_is_refused),
      cmocka_unit_test(test_truncated_or_garbled_handshake),
      cmocka_unit_test(test_oversized_record_closes_before_buffering),
      cmocka_unit_test(test_send_checks_the_frame),
      cmocka_unit_test(test_key_text_round_trips),
      cmocka_unit_test(test_key_files),
  };

  if (sodium_init() < 0) {
    return 1;
  }
  return cmocka_run_group_tests(tests, NULL, NULL);
}
