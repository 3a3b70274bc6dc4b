/*
 * fuzz_wire.c: the frame decoder (libdht/src/wire.c, with the msgpack
 * pre-scan of mp_check.c) on arbitrary bytes.
 *
 * The input is one frame body (no 4-byte header), of any message type. It
 * is decoded twice, under the default limits and under tight ones, and
 * each time the decoder must either refuse it or produce a message that:
 *   - the encoder takes (the decoder enforces every hard cap the encoder
 *     does, so a decoded message is always encodable), and
 *   - survives a round trip: decode(encode(m)) succeeds under the same
 *     limits and encodes to the very same bytes (the encoder's output is a
 *     fixed point).
 * A refused frame must still leave a message that dht_msg_free() takes.
 * The fast decoder must take nothing the full one refuses and read what it
 * takes as that one does, and the fast encoder write the packer's bytes.
 * ASan and UBSan, in the fuzz build, catch what the decoder reads or
 * computes out of bounds.
 */
#include "dht/err.h"
#include "dht/wire.h"
#include "fuzz.h"
#include "wire_paths.h"

/* Tighter than the defaults, as a node may be configured: fields that fit
 * the defaults hit these limits. */
static void tight_limits(dht_wire_limits *lim) {
  lim->frame_len_max = 4096;
  lim->key_len_max = 8;
  lim->value_len_max = 32;
  lim->addr_len_max = 16;
  lim->items_max = 3;
  lim->error_msg_len_max = 8;
}

/* Encodes m and checks the round trip; m was decoded under lim. */
static void check_round_trip(const dht_msg *m, const dht_wire_limits *lim) {
  dht_buf first, second;
  dht_msg again;
  int rv;

  dht_buf_init(&first);
  dht_buf_init(&second);
  rv = dht_msg_encode(m, &first);
  if (rv != 0) {
    fuzz_fail("a decoded %s does not encode: %s", dht_msg_type_name((int)m->type),
              dht_strerror(rv));
  }
  rv = dht_msg_decode(&again, first.data + DHT_FRAME_HEADER_LEN,
                      first.len - DHT_FRAME_HEADER_LEN, lim);
  if (rv != 0) {
    fuzz_fail("a re-encoded %s does not decode: %s",
              dht_msg_type_name((int)m->type), dht_strerror(rv));
  }
  if (again.type != m->type || again.rid != m->rid) {
    fuzz_fail("a re-encoded %s decodes as %s", dht_msg_type_name((int)m->type),
              dht_msg_type_name((int)again.type));
  }
  rv = dht_msg_encode(&again, &second);
  if (rv != 0 || second.len != first.len ||
      memcmp(second.data, first.data, first.len) != 0) {
    fuzz_fail("a %s changes on its second round trip (%zu then %zu bytes)",
              dht_msg_type_name((int)m->type), first.len, second.len);
  }
  dht_msg_free(&again);
  dht_buf_free(&first);
  dht_buf_free(&second);
}

/* The fast decoder may only take what the full one takes, read the same
 * way: both messages encode (through the packer) to the same bytes. And
 * the fast encoder writes the packer's bytes. */
static void check_paths(const uint8_t *data, size_t size,
                        const dht_wire_limits *lim) {
  dht_buf a, b;
  dht_msg fast, full;
  int rv;

  if (size > lim->frame_len_max || !dht__msg_decode_fast(&fast, data, size, lim)) {
    return;
  }
  rv = dht__msg_decode_full(&full, data, size, lim);
  if (rv != 0) {
    fuzz_fail("the fast decoder took a %s the full one refuses: %s",
              dht_msg_type_name((int)fast.type), dht_strerror(rv));
  }
  dht_buf_init(&a);
  dht_buf_init(&b);
  if (dht__msg_encode_packed(&fast, &a) != 0 ||
      dht__msg_encode_packed(&full, &b) != 0 || a.len != b.len ||
      memcmp(a.data, b.data, a.len) != 0 ||
      fast.replyable_ != full.replyable_) {
    fuzz_fail("the fast and full decoders read a %s differently",
              dht_msg_type_name((int)fast.type));
  }
  a.len = 0;
  if (dht_msg_encode(&fast, &a) != 0 || a.len != b.len ||
      memcmp(a.data, b.data, a.len) != 0) {
    fuzz_fail("the fast encoder and the packer write a %s differently",
              dht_msg_type_name((int)fast.type));
  }
  dht_buf_free(&a);
  dht_buf_free(&b);
  dht_msg_free(&fast);
  dht_msg_free(&full);
}

static void decode_under(const uint8_t *data, size_t size,
                         const dht_wire_limits *lim) {
  dht_msg m;
  int rv = dht_msg_decode(&m, data, size, lim);

  if (rv == 0) {
    if (!dht_msg_can_reply(&m)) {
      fuzz_fail("a decoded %s cannot be replied to",
                dht_msg_type_name((int)m.type));
    }
    check_round_trip(&m, lim);
  } else if (rv >= 0 || rv < DHT_ERR_MIN) {
    fuzz_fail("decode returned %d, not a DHT_ERR_*", rv);
  } else if (m.zone_ != NULL || m.items != NULL || m.succs != NULL) {
    fuzz_fail("a refused frame left decoded fields behind");
  }
  (void)dht_msg_type_name((int)m.type);
  (void)dht_msg_type_is_reply((int)m.type);
  dht_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dht_wire_limits lim;
  size_t body_len;

  dht_wire_limits_default(&lim);
  decode_under(data, size, &lim);
  check_paths(data, size, &lim);
  tight_limits(&lim);
  decode_under(data, size, &lim);
  check_paths(data, size, &lim);
  /* The same bytes read as a stream's start: a header check only. */
  (void)dht_frame_peek(data, size, lim.frame_len_max, &body_len);
  return 0;
}
