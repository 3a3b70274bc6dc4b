/*
 * wire.c: the wire codec declared in dht/wire.h; docs/PROTOCOL.md is the
 * reference for the format itself.
 *
 * Encoding packs with msgpack-c into the caller's dht_buf through a write
 * callback, after checking the message against the hard caps, so that the
 * packer itself can only fail on memory.
 *
 * Decoding runs in three steps, cheapest and most paranoid first:
 *   1. the body length against frame_len_max, then dht__mp_check(), which
 *      proves every declared count and length fits in the body, because
 *      msgpack-c allocates from declared counts before it looks at the bytes;
 *   2. msgpack_unpack() into a zone owned by the dht_msg, which also holds
 *      the arrays decoded in step 3 (one allocator, freed in one go);
 *   3. a schema check of the map: types, lengths and counts against
 *      dht_wire_limits and the hard caps.
 * str and bin objects from msgpack_unpack() point into the input buffer
 * (msgpack-c's template_callback_str/bin store the pointer, they never copy),
 * so decoded keys, values and addresses borrow the caller's body.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "dht/err.h"
#include "dht/wire.h"
#include "mp_check.h"
#include "wire_paths.h"

/* Counter names are short labels ("lookups", "rpc_timeouts"); wire.h
 * promises 1..64 bytes to whoever prints them. */
#define COUNTER_NAME_LEN_MAX 64

/* Entries in the body map, known and unknown keys together. v1 knows 37
 * keys and no message uses more than 10 of them; the cap leaves room for
 * later versions and keeps the duplicate-key check over unknown keys (which
 * has no table to lean on) quadratic in a small number. */
#define BODY_KEYS_MAX 64

/* Smallest and largest first chunk of a decode zone; see zone_chunk_size. */
#define ZONE_CHUNK_MIN 512
#define ZONE_CHUNK_MAX (64 * 1024)

/* The map keys, in the order the encoder writes them. */
enum field {
  F_V,
  F_T,
  F_RID,
  F_TARGET,
  F_HOPS,
  F_TRACE,
  F_FINAL,
  F_KEY,
  F_VALUE,
  F_PEER,
  F_PRED,
  F_SUCCS,
  F_PATH,
  F_FINGERS,
  F_ITEMS,
  F_COUNTERS,
  F_CODE,
  F_MSG,
  F_FROM,
  F_TO,
  F_LIMIT,
  F_MORE,
  F_PREDS,
  F_DIGESTS,
  F_BUCKETS,
  F_VER,
  F_WALL,
  F_LOST,
  F_LINK,
  F_SRC,
  F_EXCHANGES,
  F_DEAD,
  F_SEEN,
  F_VIEW,
  F_SAME,
  F_PROBE,
  F_DIRECT,
  F_COUNT
};
/* Field sets are uint64_t masks. */
_Static_assert(F_COUNT <= 64, "too many fields for a 64-bit mask");

#define FB(f) (UINT64_C(1) << (f))

static const struct field_name {
  const char *s; /* the key as it appears on the wire */
  uint32_t len;  /* strlen(s) */
} field_names[F_COUNT] = {
    [F_V] = {"v", 1},         [F_T] = {"t", 1},
    [F_RID] = {"rid", 3},     [F_TARGET] = {"target", 6},
    [F_HOPS] = {"hops", 4},   [F_TRACE] = {"trace", 5},
    [F_FINAL] = {"final", 5}, [F_KEY] = {"key", 3},
    [F_VALUE] = {"value", 5}, [F_PEER] = {"peer", 4},
    [F_PRED] = {"pred", 4},   [F_SUCCS] = {"succs", 5},
    [F_PATH] = {"path", 4},   [F_FINGERS] = {"fingers", 7},
    [F_ITEMS] = {"items", 5}, [F_COUNTERS] = {"counters", 8},
    [F_CODE] = {"code", 4},   [F_MSG] = {"msg", 3},
    [F_FROM] = {"from", 4},   [F_TO] = {"to", 2},
    [F_LIMIT] = {"limit", 5}, [F_MORE] = {"more", 4},
    [F_PREDS] = {"preds", 5}, [F_DIGESTS] = {"digests", 7},
    [F_BUCKETS] = {"buckets", 7}, [F_VER] = {"ver", 3},
    [F_WALL] = {"wall", 4},       [F_LOST] = {"lost", 4},
    [F_LINK] = {"link", 4},       [F_SRC] = {"src", 3},
    [F_EXCHANGES] = {"exchanges", 9}, [F_DEAD] = {"dead", 4},
    [F_SEEN] = {"seen", 4},           [F_VIEW] = {"view", 4},
    [F_SAME] = {"same", 4},           [F_PROBE] = {"probe", 5},
    [F_DIRECT] = {"direct", 6},
};

/* Per message type, the fields beyond v/t/rid that it carries and the ones
 * among them that must be present. Keys a type does not use are ignored by
 * the decoder exactly like unknown keys, so a later version may add a field
 * to an existing type without breaking v1 receivers. */
static const struct type_fields {
  uint64_t uses;
  uint64_t required;
} type_fields[] = {
    [DHT_MSG_ERROR] = {FB(F_CODE) | FB(F_MSG) | FB(F_VER), FB(F_CODE)},
    [DHT_MSG_PING] = {0, 0},
    [DHT_MSG_PONG] = {FB(F_PEER), FB(F_PEER)},
    [DHT_MSG_FIND_SUCC] = {FB(F_TARGET) | FB(F_HOPS) | FB(F_TRACE) |
                               FB(F_FINAL) | FB(F_PATH),
                           FB(F_TARGET)},
    [DHT_MSG_FIND_SUCC_R] = {FB(F_PEER) | FB(F_HOPS) | FB(F_PATH), FB(F_PEER)},
    [DHT_MSG_GET_NEIGHBORS] = {FB(F_SEEN), 0},
    /* peer and succs are required unless same is true (decode_body). */
    [DHT_MSG_NEIGHBORS] = {FB(F_PEER) | FB(F_PRED) | FB(F_SUCCS) |
                               FB(F_PREDS) | FB(F_WALL) | FB(F_VIEW) |
                               FB(F_SAME),
                           0},
    [DHT_MSG_NOTIFY] = {FB(F_PEER) | FB(F_LINK), FB(F_PEER)},
    [DHT_MSG_GET] = {FB(F_KEY) | FB(F_HOPS) | FB(F_FINAL) | FB(F_DIRECT),
                     FB(F_KEY)},
    [DHT_MSG_PUT] = {FB(F_KEY) | FB(F_VALUE) | FB(F_HOPS) | FB(F_FINAL) |
                         FB(F_VER) | FB(F_DIRECT),
                     FB(F_KEY) | FB(F_VALUE)},
    [DHT_MSG_DEL] = {FB(F_KEY) | FB(F_HOPS) | FB(F_FINAL) | FB(F_VER) |
                         FB(F_DIRECT),
                     FB(F_KEY)},
    [DHT_MSG_VALUE] = {FB(F_VALUE) | FB(F_HOPS), FB(F_VALUE)},
    [DHT_MSG_OK] = {FB(F_HOPS), 0},
    [DHT_MSG_HANDOFF] = {FB(F_ITEMS) | FB(F_LINK) | FB(F_SRC), FB(F_ITEMS)},
    [DHT_MSG_LEAVE] = {FB(F_PEER) | FB(F_PRED) | FB(F_SUCCS) | FB(F_LINK),
                       FB(F_PEER) | FB(F_SUCCS)},
    [DHT_MSG_STATS] = {0, 0},
    [DHT_MSG_STATS_R] = {FB(F_PEER) | FB(F_PRED) | FB(F_SUCCS) | FB(F_FINGERS) |
                             FB(F_COUNTERS) | FB(F_PREDS) | FB(F_LOST) |
                             FB(F_EXCHANGES) | FB(F_DEAD),
                         FB(F_PEER) | FB(F_SUCCS) | FB(F_FINGERS) |
                             FB(F_COUNTERS)},
    [DHT_MSG_ACCEPTED] = {0, 0},
    [DHT_MSG_REPLICATE] = {FB(F_ITEMS) | FB(F_LINK) | FB(F_SRC), FB(F_ITEMS)},
    [DHT_MSG_SYNC] = {FB(F_FROM) | FB(F_TO) | FB(F_DIGESTS) | FB(F_LINK) |
                          FB(F_SRC) | FB(F_PROBE),
                      FB(F_FROM) | FB(F_TO) | FB(F_DIGESTS)},
    [DHT_MSG_SYNC_R] = {FB(F_BUCKETS) | FB(F_ITEMS) | FB(F_MORE),
                        FB(F_BUCKETS) | FB(F_ITEMS)},
    [DHT_MSG_FETCH] = {FB(F_KEY) | FB(F_LINK) | FB(F_SRC), FB(F_KEY)},
    [DHT_MSG_RECORD] = {FB(F_ITEMS), FB(F_ITEMS)},
    [DHT_MSG_SCAN] = {FB(F_FROM) | FB(F_LIMIT), FB(F_FROM) | FB(F_LIMIT)},
    [DHT_MSG_SCAN_R] = {FB(F_ITEMS) | FB(F_MORE), FB(F_ITEMS)},
    [DHT_MSG_ACK_LOST] = {FB(F_FROM) | FB(F_TO), FB(F_FROM) | FB(F_TO)},
    [DHT_MSG_CHECK_LINK] = {FB(F_PEER) | FB(F_LINK), FB(F_PEER) | FB(F_LINK)},
    [DHT_MSG_MOVED] = {FB(F_PEER) | FB(F_FINAL), FB(F_PEER)},
};

_Static_assert(sizeof(type_fields) / sizeof(type_fields[0]) ==
                   DHT_MSG_TYPE_LAST + 1,
               "type_fields must have one row per message type");

const char *dht_msg_type_name(int type) {
  switch (type) {
#define DHT__MSG_NAME(name, value)                                             \
  case value:                                                                  \
    return #name;
    DHT_MSG_TYPE_MAP(DHT__MSG_NAME)
#undef DHT__MSG_NAME
  default:
    return "UNKNOWN";
  }
}

int dht_msg_peek_type(const uint8_t *b, size_t len) {
  size_t i;

  if (len >= 1 && (b[0] & 0xf0) == 0x80) {
    i = 1; /* fixmap */
  } else if (len >= 3 && b[0] == 0xde) {
    i = 3; /* map 16 */
  } else {
    return -1;
  }
  if (i + 5 < len && b[i] == 0xa1 && b[i + 1] == 'v' && b[i + 2] < 0x80 &&
      b[i + 3] == 0xa1 && b[i + 4] == 't') {
    if (b[i + 5] < 0x80) {
      return b[i + 5]; /* positive fixint */
    }
    if (b[i + 5] == 0xcc && i + 6 < len) {
      return b[i + 6]; /* uint 8 */
    }
  }
  return -1;
}

bool dht_msg_type_is_reply(int type) {
  switch (type) {
  case DHT_MSG_ERROR:
  case DHT_MSG_PONG:
  case DHT_MSG_FIND_SUCC_R:
  case DHT_MSG_NEIGHBORS:
  case DHT_MSG_VALUE:
  case DHT_MSG_OK:
  case DHT_MSG_STATS_R:
  case DHT_MSG_ACCEPTED:
  case DHT_MSG_SYNC_R:
  case DHT_MSG_RECORD:
  case DHT_MSG_SCAN_R:
  case DHT_MSG_MOVED:
    return true;
  default:
    return false;
  }
}

int dht_version_cmp(const dht_version *a, const dht_version *b) {
  if (a->hlc != b->hlc) {
    return a->hlc < b->hlc ? -1 : 1;
  }
  return dht_id_cmp(&a->writer, &b->writer);
}

void dht_wire_limits_default(dht_wire_limits *lim) {
  lim->frame_len_max = 4u * 1024 * 1024;
  lim->key_len_max = 1024;
  lim->value_len_max = 1024 * 1024;
  lim->addr_len_max = DHT_ADDR_LEN_MAX;
  lim->items_max = 65536;
  lim->error_msg_len_max = 256;
}

int dht_frame_peek(const uint8_t *buf, size_t len, uint32_t frame_len_max,
                   size_t *body_len) {
  uint32_t n;

  if (len < DHT_FRAME_HEADER_LEN) {
    return DHT_ERR_TRUNCATED;
  }
  n = (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 | (uint32_t)buf[2] << 8 |
      (uint32_t)buf[3];
  /* Stored even when too large, so the caller can log what was claimed. */
  *body_len = n;
  return n > frame_len_max ? DHT_ERR_TOO_LARGE : 0;
}

bool dht_msg_can_reply(const dht_msg *msg) { return msg->replyable_; }

void dht_msg_free(dht_msg *msg) {
  if (msg->zone_ != NULL) {
    msgpack_zone_destroy(msg->zone_);
    free(msg->zone_);
  }
  memset(msg, 0, sizeof(*msg));
}

/* ---- encoding ---------------------------------------------------------- */

/* The packer's sink. msgpack-c's pack functions return the callback's
 * result, but checking each of the hundreds of calls is noise: the first
 * error sticks here, later writes are refused, and dht_msg_encode() looks
 * once at the end. */
typedef struct encoder {
  dht_buf *out; /* where the frame goes */
  int err;      /* first DHT_ERR_* from an append, or 0 */
} encoder;

static int enc_write(void *data, const char *buf, size_t len) {
  encoder *enc = data;
  int rv;

  if (enc->err != 0) {
    return -1;
  }
  rv = dht_buf_append(enc->out, buf, len);
  if (rv != 0) {
    enc->err = rv;
    return -1;
  }
  return 0;
}

/* msgpack lengths are 32-bit. The cast keeps a 32-bit size_t build from
 * warning that the comparison is always false. */
static bool fits_u32(size_t n) { return (uint64_t)n <= UINT32_MAX; }

static bool addr_ok(const dht_bytes *addr) {
  return addr->len >= 1 && addr->len <= DHT_ADDR_LEN_MAX;
}

static bool peers_ok(const dht_peer_ref *peers, size_t n, size_t max) {
  size_t i;

  if (n > max) {
    return false;
  }
  assert(peers != NULL || n == 0);
  for (i = 0; i < n; i++) {
    if (!addr_ok(&peers[i].addr)) {
      return false;
    }
  }
  return true;
}

/* Refuses what any decoder rejects whatever its configured limits, so that a
 * frame this encoder writes only fails to decode because of a limit the
 * receiver chose. Returns 0 or DHT_ERR_INVAL. */
static int check_encodable(const dht_msg *msg, uint64_t uses) {
  size_t i;

  if ((uses & FB(F_HOPS)) && msg->hops > DHT_HOPS_MAX) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_KEY)) && (msg->key.len == 0 || !fits_u32(msg->key.len))) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_VALUE)) && !fits_u32(msg->value.len)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_PEER)) && !addr_ok(&msg->peer.addr)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_SRC)) && msg->has_src && !addr_ok(&msg->src.addr)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_PRED)) && msg->has_pred && !addr_ok(&msg->pred.addr)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_SUCCS)) &&
      !peers_ok(msg->succs, msg->n_succs, DHT_SUCC_LIST_MAX)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_PATH)) && !peers_ok(msg->path, msg->n_path, DHT_PATH_MAX)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_PREDS)) &&
      !peers_ok(msg->preds, msg->n_preds, DHT_SUCC_LIST_MAX)) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_DIGESTS)) &&
      (msg->n_digests == 0 || msg->n_digests > DHT_SYNC_BUCKETS_MAX)) {
    return DHT_ERR_INVAL;
  }
  if (uses & FB(F_BUCKETS)) {
    if (msg->n_buckets > DHT_SYNC_BUCKETS_MAX) {
      return DHT_ERR_INVAL;
    }
    for (i = 0; i < msg->n_buckets; i++) {
      if (msg->buckets[i] >= DHT_SYNC_BUCKETS_MAX) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_FINGERS)) {
    if (msg->n_fingers > DHT_ID_BITS) {
      return DHT_ERR_INVAL;
    }
    assert(msg->fingers != NULL || msg->n_fingers == 0);
    for (i = 0; i < msg->n_fingers; i++) {
      if (msg->fingers[i].start_bit >= DHT_ID_BITS ||
          !addr_ok(&msg->fingers[i].peer.addr)) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_ITEMS)) {
    if (!fits_u32(msg->n_items)) {
      return DHT_ERR_INVAL;
    }
    assert(msg->items != NULL || msg->n_items == 0);
    for (i = 0; i < msg->n_items; i++) {
      if (msg->items[i].key.len == 0 || !fits_u32(msg->items[i].key.len) ||
          !fits_u32(msg->items[i].value.len)) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_COUNTERS)) {
    if (msg->n_counters > DHT_COUNTERS_MAX) {
      return DHT_ERR_INVAL;
    }
    assert(msg->counters != NULL || msg->n_counters == 0);
    for (i = 0; i < msg->n_counters; i++) {
      if (msg->counters[i].name.len == 0 ||
          msg->counters[i].name.len > COUNTER_NAME_LEN_MAX) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_LOST)) {
    if (msg->n_lost > DHT_LOST_MAX) {
      return DHT_ERR_INVAL;
    }
    assert(msg->lost != NULL || msg->n_lost == 0);
    for (i = 0; i < msg->n_lost; i++) {
      if (!peers_ok(msg->lost[i].holders, msg->lost[i].n_holders,
                    DHT_SUCC_LIST_MAX)) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_EXCHANGES)) {
    if (msg->n_exchanges > DHT_EXCHANGES_MAX) {
      return DHT_ERR_INVAL;
    }
    assert(msg->exchanges != NULL || msg->n_exchanges == 0);
    for (i = 0; i < msg->n_exchanges; i++) {
      if (!peers_ok(&msg->exchanges[i].peer, 1, 1) ||
          msg->exchanges[i].outcome > DHT_EXCHANGE_OUTCOME_LAST) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if (uses & FB(F_DEAD)) {
    if (msg->n_dead > DHT_DEAD_MAX) {
      return DHT_ERR_INVAL;
    }
    assert(msg->dead != NULL || msg->n_dead == 0);
    for (i = 0; i < msg->n_dead; i++) {
      if (!peers_ok(&msg->dead[i].peer, 1, 1)) {
        return DHT_ERR_INVAL;
      }
    }
  }
  if ((uses & FB(F_CODE)) && msg->error_code >= 0) {
    return DHT_ERR_INVAL;
  }
  if ((uses & FB(F_MSG)) && !fits_u32(msg->error_msg.len)) {
    return DHT_ERR_INVAL;
  }
  return 0;
}

static void pack_key(msgpack_packer *pk, enum field f) {
  msgpack_pack_str_with_body(pk, field_names[f].s, field_names[f].len);
}

static void pack_bin(msgpack_packer *pk, const dht_bytes *b) {
  msgpack_pack_bin_with_body(pk, b->p, b->len);
}

static void pack_bool(msgpack_packer *pk, bool b) {
  if (b) {
    msgpack_pack_true(pk);
  } else {
    msgpack_pack_false(pk);
  }
}

static void pack_peer(msgpack_packer *pk, const dht_peer_ref *peer) {
  msgpack_pack_array(pk, 2);
  msgpack_pack_bin_with_body(pk, peer->id.b, DHT_ID_LEN);
  msgpack_pack_str_with_body(pk, peer->addr.p, peer->addr.len);
}

static void pack_peers(msgpack_packer *pk, const dht_peer_ref *peers,
                       size_t n) {
  size_t i;

  msgpack_pack_array(pk, n);
  for (i = 0; i < n; i++) {
    pack_peer(pk, &peers[i]);
  }
}

/* Packs the value of field f of msg. */
static void pack_field(msgpack_packer *pk, const dht_msg *msg, enum field f) {
  size_t i;

  switch (f) {
  case F_V:
    msgpack_pack_uint32(pk, DHT_PROTOCOL_VERSION);
    break;
  case F_T:
    msgpack_pack_uint32(pk, (uint32_t)msg->type);
    break;
  case F_RID:
    msgpack_pack_uint64(pk, msg->rid);
    break;
  case F_TARGET:
    msgpack_pack_bin_with_body(pk, msg->target.b, DHT_ID_LEN);
    break;
  case F_HOPS:
    msgpack_pack_uint32(pk, msg->hops);
    break;
  case F_TRACE:
    pack_bool(pk, msg->trace);
    break;
  case F_FINAL:
    pack_bool(pk, msg->final);
    break;
  case F_KEY:
    pack_bin(pk, &msg->key);
    break;
  case F_VALUE:
    pack_bin(pk, &msg->value);
    break;
  case F_PEER:
    pack_peer(pk, &msg->peer);
    break;
  case F_PRED:
    pack_peer(pk, &msg->pred);
    break;
  case F_SUCCS:
    pack_peers(pk, msg->succs, msg->n_succs);
    break;
  case F_PATH:
    pack_peers(pk, msg->path, msg->n_path);
    break;
  case F_FINGERS:
    msgpack_pack_array(pk, msg->n_fingers);
    for (i = 0; i < msg->n_fingers; i++) {
      msgpack_pack_array(pk, 2);
      msgpack_pack_uint32(pk, msg->fingers[i].start_bit);
      pack_peer(pk, &msg->fingers[i].peer);
    }
    break;
  case F_ITEMS:
    msgpack_pack_array(pk, msg->n_items);
    for (i = 0; i < msg->n_items; i++) {
      const dht_kv *kv = &msg->items[i];
      msgpack_pack_array(pk, kv->has_version ? 5 : 2);
      pack_bin(pk, &kv->key);
      pack_bin(pk, &kv->value);
      if (kv->has_version) {
        msgpack_pack_uint64(pk, kv->version.hlc);
        msgpack_pack_bin_with_body(pk, kv->version.writer.b, DHT_ID_LEN);
        pack_bool(pk, kv->tombstone);
      }
    }
    break;
  case F_COUNTERS:
    msgpack_pack_map(pk, msg->n_counters);
    for (i = 0; i < msg->n_counters; i++) {
      msgpack_pack_str_with_body(pk, msg->counters[i].name.p,
                                 msg->counters[i].name.len);
      msgpack_pack_uint64(pk, msg->counters[i].value);
    }
    break;
  case F_CODE:
    msgpack_pack_int32(pk, msg->error_code);
    break;
  case F_MSG:
    msgpack_pack_str_with_body(pk, msg->error_msg.p, msg->error_msg.len);
    break;
  case F_FROM:
    msgpack_pack_bin_with_body(pk, msg->from.b, DHT_ID_LEN);
    break;
  case F_TO:
    msgpack_pack_bin_with_body(pk, msg->to.b, DHT_ID_LEN);
    break;
  case F_LIMIT:
    msgpack_pack_uint32(pk, msg->limit);
    break;
  case F_MORE:
    pack_bool(pk, msg->more);
    break;
  case F_PREDS:
    pack_peers(pk, msg->preds, msg->n_preds);
    break;
  case F_DIGESTS:
    msgpack_pack_array(pk, msg->n_digests);
    for (i = 0; i < msg->n_digests; i++) {
      msgpack_pack_bin_with_body(pk, msg->digests + i * DHT_DIGEST_LEN,
                                 DHT_DIGEST_LEN);
    }
    break;
  case F_BUCKETS:
    msgpack_pack_array(pk, msg->n_buckets);
    for (i = 0; i < msg->n_buckets; i++) {
      msgpack_pack_uint16(pk, msg->buckets[i]);
    }
    break;
  case F_VER:
    msgpack_pack_array(pk, 2);
    msgpack_pack_uint64(pk, msg->ver.hlc);
    msgpack_pack_bin_with_body(pk, msg->ver.writer.b, DHT_ID_LEN);
    break;
  case F_WALL:
    msgpack_pack_uint64(pk, msg->wall_ms);
    break;
  case F_LINK:
    msgpack_pack_uint64(pk, msg->link);
    break;
  case F_SRC:
    pack_peer(pk, &msg->src);
    break;
  case F_LOST:
    msgpack_pack_array(pk, msg->n_lost);
    for (i = 0; i < msg->n_lost; i++) {
      const dht_lost_range *l = &msg->lost[i];
      msgpack_pack_array(pk, 4);
      msgpack_pack_bin_with_body(pk, l->from.b, DHT_ID_LEN);
      msgpack_pack_bin_with_body(pk, l->to.b, DHT_ID_LEN);
      msgpack_pack_uint64(pk, l->at_ms);
      pack_peers(pk, l->holders, l->n_holders);
    }
    break;
  case F_EXCHANGES:
    msgpack_pack_array(pk, msg->n_exchanges);
    for (i = 0; i < msg->n_exchanges; i++) {
      const dht_exchange *x = &msg->exchanges[i];
      msgpack_pack_array(pk, 8);
      pack_peer(pk, &x->peer);
      msgpack_pack_bin_with_body(pk, x->from.b, DHT_ID_LEN);
      msgpack_pack_bin_with_body(pk, x->to.b, DHT_ID_LEN);
      msgpack_pack_uint64(pk, x->ago_ms);
      msgpack_pack_uint64(pk, x->took_ms);
      msgpack_pack_uint64(pk, x->buckets);
      msgpack_pack_uint64(pk, x->pushed);
      msgpack_pack_uint64(pk, x->outcome);
    }
    break;
  case F_SEEN:
    msgpack_pack_uint64(pk, msg->seen);
    break;
  case F_VIEW:
    msgpack_pack_uint64(pk, msg->view);
    break;
  case F_SAME:
    pack_bool(pk, msg->same);
    break;
  case F_PROBE:
    pack_bool(pk, msg->probe);
    break;
  case F_DIRECT:
    pack_bool(pk, msg->direct);
    break;
  case F_DEAD:
    msgpack_pack_array(pk, msg->n_dead);
    for (i = 0; i < msg->n_dead; i++) {
      msgpack_pack_array(pk, 2);
      pack_peer(pk, &msg->dead[i].peer);
      msgpack_pack_uint64(pk, msg->dead[i].ago_ms);
    }
    break;
  case F_COUNT:
    break;
  }
}

/* Writes the frame header of a body of body_len bytes at p. */
static void put_frame_header(uint8_t *p, size_t body_len) {
  p[0] = (uint8_t)(body_len >> 24);
  p[1] = (uint8_t)(body_len >> 16);
  p[2] = (uint8_t)(body_len >> 8);
  p[3] = (uint8_t)body_len;
}

/* ---- the fast path ------------------------------------------------------- */

/*
 * The requests and replies of the data path (GET, PUT, DEL, VALUE, OK, and
 * PING, STATS, ACCEPTED) use only these fields: scalars, byte strings and
 * the version. They are encoded and decoded here by hand, without
 * msgpack-c's packer, unpacker and zone, which cost a request more
 * instructions than the node spent serving it (docs/PERFORMANCE.md). The
 * encoder writes exactly the bytes the packer writes (test_wire compares
 * them); the decoder takes only the plainest form of a message (a fixmap
 * of fixstr keys, each known and used by the type once, unsigned integers,
 * bin strings, nothing after the map) and leaves anything else, valid or
 * not, to the full decoder, so that it can never accept what that one
 * refuses nor read it differently (fuzz_wire compares them).
 */
#define FAST_FIELDS                                                            \
  (FB(F_V) | FB(F_T) | FB(F_RID) | FB(F_HOPS) | FB(F_FINAL) | FB(F_KEY) |      \
   FB(F_VALUE) | FB(F_VER) | FB(F_DIRECT))
/* The bytes of a fast field beyond its value's: its key (a fixstr of at
 * most 6 bytes) and the widest header of its value (a uint 64, a bin 32,
 * or the version's array, uint 64 and bin 8 header). */
#define FAST_FIELD_OVERHEAD (1 + 6 + 1 + 9 + 2)

static uint8_t *put_uint(uint8_t *p, uint64_t v) {
  int n, i;

  if (v <= 0x7f) {
    *p++ = (uint8_t)v;
    return p;
  }
  if (v <= UINT8_MAX) {
    *p++ = 0xcc;
    n = 1;
  } else if (v <= UINT16_MAX) {
    *p++ = 0xcd;
    n = 2;
  } else if (v <= UINT32_MAX) {
    *p++ = 0xce;
    n = 4;
  } else {
    *p++ = 0xcf;
    n = 8;
  }
  for (i = n - 1; i >= 0; i--) {
    *p++ = (uint8_t)(v >> (8 * i));
  }
  return p;
}

static uint8_t *put_bin(uint8_t *p, const uint8_t *b, size_t len) {
  if (len <= UINT8_MAX) {
    *p++ = 0xc4;
    *p++ = (uint8_t)len;
  } else if (len <= UINT16_MAX) {
    *p++ = 0xc5;
    *p++ = (uint8_t)(len >> 8);
    *p++ = (uint8_t)len;
  } else {
    *p++ = 0xc6;
    put_frame_header(p, len); /* the same 4 bytes, big-endian */
    p += 4;
  }
  if (len > 0) {
    memcpy(p, b, len);
  }
  return p + len;
}

/* Encodes msg's fields (n_fields of them, all in FAST_FIELDS). */
static int encode_fast(const dht_msg *msg, uint64_t fields, size_t n_fields,
                       dht_buf *out) {
  size_t room = DHT_FRAME_HEADER_LEN + 1 + n_fields * FAST_FIELD_OVERHEAD +
                DHT_ID_LEN, body_len;
  uint8_t *start, *p;
  uint64_t left;
  unsigned f;
  int rv;

  if (fields & FB(F_KEY)) {
    room += msg->key.len;
  }
  if (fields & FB(F_VALUE)) {
    room += msg->value.len;
  }
  rv = dht_buf_reserve(out, room);
  if (rv != 0) {
    return rv;
  }
  start = out->data + out->len;
  p = start + DHT_FRAME_HEADER_LEN;
  *p++ = (uint8_t)(0x80 | n_fields); /* fixmap: at most 9 fields here */
  for (left = fields; left != 0; left &= left - 1) {
    f = (unsigned)__builtin_ctzll(left); /* the lowest field left */
    *p++ = (uint8_t)(0xa0 | field_names[f].len); /* fixstr */
    memcpy(p, field_names[f].s, field_names[f].len);
    p += field_names[f].len;
    switch ((enum field)f) {
    case F_V:
      p = put_uint(p, DHT_PROTOCOL_VERSION);
      break;
    case F_T:
      p = put_uint(p, (uint32_t)msg->type);
      break;
    case F_RID:
      p = put_uint(p, msg->rid);
      break;
    case F_HOPS:
      p = put_uint(p, msg->hops);
      break;
    case F_FINAL:
      *p++ = msg->final ? 0xc3 : 0xc2;
      break;
    case F_DIRECT:
      *p++ = msg->direct ? 0xc3 : 0xc2;
      break;
    case F_KEY:
      p = put_bin(p, msg->key.p, msg->key.len);
      break;
    case F_VALUE:
      p = put_bin(p, msg->value.p, msg->value.len);
      break;
    case F_VER:
      *p++ = 0x92; /* fixarray of 2 */
      p = put_uint(p, msg->ver.hlc);
      p = put_bin(p, msg->ver.writer.b, DHT_ID_LEN);
      break;
    default:
      assert(0 && "encode_fast: not a fast field");
      break;
    }
  }
  body_len = (size_t)(p - start) - DHT_FRAME_HEADER_LEN;
  if (!fits_u32(body_len)) {
    return DHT_ERR_INVAL; /* as the packer's path: nothing appended */
  }
  put_frame_header(start, body_len);
  out->len += (size_t)(p - start);
  return 0;
}

static int encode_packed(const dht_msg *msg, uint64_t fields, size_t n_fields,
                         dht_buf *out);

/* dht_msg_encode, or with use_packer always through msgpack-c. */
static int encode(const dht_msg *msg, dht_buf *out, bool use_packer) {
  uint64_t fields;
  size_t n_fields;
  int rv;

  if ((unsigned)msg->type > DHT_MSG_TYPE_LAST) {
    return DHT_ERR_INVAL;
  }
  rv = check_encodable(msg, type_fields[msg->type].uses);
  if (rv != 0) {
    return rv;
  }
  fields = FB(F_V) | FB(F_T) | FB(F_RID) | type_fields[msg->type].uses;
  if (!msg->has_pred) {
    fields &= ~FB(F_PRED); /* absent means "no predecessor" */
  }
  if (!msg->has_ver) {
    fields &= ~FB(F_VER); /* absent: the write is not stamped yet */
  }
  if (msg->wall_ms == 0) {
    fields &= ~FB(F_WALL);
  }
  if (msg->link == 0 && msg->type != DHT_MSG_CHECK_LINK) {
    fields &= ~FB(F_LINK); /* absent: the sender sent no token */
  }
  if (!msg->has_src) {
    fields &= ~FB(F_SRC);
  }
  if (msg->seen == 0) {
    fields &= ~FB(F_SEEN);
  }
  if (msg->view == 0) {
    fields &= ~FB(F_VIEW);
  }
  if (msg->same) {
    /* the asker has this view already, responder included */
    fields &= ~(FB(F_PEER) | FB(F_PRED) | FB(F_SUCCS) | FB(F_PREDS));
  } else {
    fields &= ~FB(F_SAME);
  }
  if (!msg->probe) {
    fields &= ~FB(F_PROBE);
  }
  if (!msg->direct) {
    fields &= ~FB(F_DIRECT);
  }
  n_fields = (size_t)__builtin_popcountll(fields);
  if (use_packer || (fields & ~FAST_FIELDS) != 0) {
    return encode_packed(msg, fields, n_fields, out);
  }
  return encode_fast(msg, fields, n_fields, out);
}

/* Encodes msg's fields (n_fields of them) with msgpack-c's packer. */
static int encode_packed(const dht_msg *msg, uint64_t fields, size_t n_fields,
                         dht_buf *out) {
  static const uint8_t header_placeholder[DHT_FRAME_HEADER_LEN];
  const size_t start = out->len;
  encoder enc;
  msgpack_packer pk;
  size_t body_len;
  unsigned f;
  int rv;

  /* Reserve the length header; it is patched once the body size is known. */
  rv = dht_buf_append(out, header_placeholder, sizeof(header_placeholder));
  if (rv != 0) {
    return rv;
  }
  enc.out = out;
  enc.err = 0;
  msgpack_packer_init(&pk, &enc, enc_write);
  msgpack_pack_map(&pk, n_fields);
  for (f = 0; f < F_COUNT; f++) {
    if (fields & FB(f)) {
      pack_key(&pk, (enum field)f);
      pack_field(&pk, msg, (enum field)f);
    }
  }
  if (enc.err != 0) {
    out->len = start;
    return enc.err;
  }
  body_len = out->len - start - DHT_FRAME_HEADER_LEN;
  if (!fits_u32(body_len)) {
    out->len = start;
    return DHT_ERR_INVAL;
  }
  put_frame_header(out->data + start, body_len);
  return 0;
}

int dht_msg_encode(const dht_msg *msg, dht_buf *out) {
  return encode(msg, out, false);
}

int dht__msg_encode_packed(const dht_msg *msg, dht_buf *out) {
  return encode(msg, out, true);
}

/* ---- decoding ---------------------------------------------------------- */

/* What every field decoder needs to know. */
typedef struct decoder {
  msgpack_zone *zone;         /* where decoded arrays go */
  const dht_wire_limits *lim; /* the receiver's limits */
  uint32_t addr_len_max;      /* lim->addr_len_max, capped by the hard cap */
} decoder;

/* Returns the field whose key is s[0..len), or F_COUNT if it is unknown. */
static enum field field_lookup(const char *s, uint32_t len) {
  enum field f = F_COUNT;

  /* The one field a key's first letter and length (and at most two more
   * letters, read only when the length has them) leave, confirmed below:
   * a loop over every name cost more than the rest of a GET's decoding.
   * The round trips of test_wire look up every name. */
  if (len == 0) {
    return F_COUNT;
  }
  switch (s[0]) {
  case 'b':
    f = F_BUCKETS;
    break;
  case 'c':
    f = len == 4 ? F_CODE : F_COUNTERS;
    break;
  case 'd':
    f = len == 4 ? F_DEAD : len == 6 ? F_DIRECT : F_DIGESTS;
    break;
  case 'e':
    f = F_EXCHANGES;
    break;
  case 'f':
    f = len == 4 ? F_FROM : len == 5 ? F_FINAL : F_FINGERS;
    break;
  case 'h':
    f = F_HOPS;
    break;
  case 'i':
    f = F_ITEMS;
    break;
  case 'k':
    f = F_KEY;
    break;
  case 'l':
    f = len == 5 ? F_LIMIT : len >= 3 && s[2] == 's' ? F_LOST : F_LINK;
    break;
  case 'm':
    f = len == 3 ? F_MSG : F_MORE;
    break;
  case 'p':
    if (len == 4) {
      f = s[1] == 'e' ? F_PEER : s[1] == 'r' ? F_PRED : F_PATH;
    } else {
      f = len == 5 && s[2] == 'e' ? F_PREDS : F_PROBE;
    }
    break;
  case 'r':
    f = F_RID;
    break;
  case 's':
    f = len == 3   ? F_SRC
        : len == 5 ? F_SUCCS
        : len == 4 && s[1] == 'e' ? F_SEEN
                                  : F_SAME;
    break;
  case 't':
    f = len == 1 ? F_T : len == 2 ? F_TO : len == 5 ? F_TRACE : F_TARGET;
    break;
  case 'v':
    f = len == 1 ? F_V : len == 3 ? F_VER : len == 4 ? F_VIEW : F_VALUE;
    break;
  case 'w':
    f = F_WALL;
    break;
  default:
    return F_COUNT;
  }
  return field_names[f].len == len && memcmp(field_names[f].s, s, len) == 0
             ? f
             : F_COUNT;
}

static bool str_eq(const msgpack_object_str *a, const msgpack_object_str *b) {
  /* msgpack-c leaves ptr NULL for an empty str, and memcmp() must not
   * see NULL even for 0 bytes. */
  return a->size == b->size &&
         (a->size == 0 || memcmp(a->ptr, b->ptr, a->size) == 0);
}

/* Allocates n elements of size each from the zone; NULL for n == 0 too,
 * which the caller tells apart by n. */
static void *zone_array(msgpack_zone *zone, size_t n, size_t size) {
  if (n == 0) {
    return NULL;
  }
  /* n is bounded by a hard cap or by the body length, so no overflow. */
  return msgpack_zone_malloc(zone, n * size);
}

static int get_uint(const msgpack_object *o, uint64_t *v) {
  if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
    return DHT_ERR_BAD_TYPE;
  }
  *v = o->via.u64;
  return 0;
}

static int get_bool(const msgpack_object *o, bool *v) {
  if (o->type != MSGPACK_OBJECT_BOOLEAN) {
    return DHT_ERR_BAD_TYPE;
  }
  *v = o->via.boolean;
  return 0;
}

static int get_bin(const msgpack_object *o, dht_bytes *b) {
  if (o->type != MSGPACK_OBJECT_BIN) {
    return DHT_ERR_BAD_TYPE;
  }
  b->p = (const uint8_t *)o->via.bin.ptr;
  b->len = o->via.bin.size;
  return 0;
}

static int get_str(const msgpack_object *o, dht_bytes *b) {
  if (o->type != MSGPACK_OBJECT_STR) {
    return DHT_ERR_BAD_TYPE;
  }
  b->p = (const uint8_t *)o->via.str.ptr;
  b->len = o->via.str.size;
  return 0;
}

static int get_id(const msgpack_object *o, dht_id *id) {
  if (o->type != MSGPACK_OBJECT_BIN || o->via.bin.size != DHT_ID_LEN) {
    return DHT_ERR_BAD_TYPE;
  }
  memcpy(id->b, o->via.bin.ptr, DHT_ID_LEN);
  return 0;
}

/* A peer is [id bin 20, addr str 1..addr_len_max]. */
static int get_peer(const decoder *d, const msgpack_object *o,
                    dht_peer_ref *peer) {
  const msgpack_object *e;
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2) {
    return DHT_ERR_BAD_TYPE;
  }
  e = o->via.array.ptr;
  rv = get_id(&e[0], &peer->id);
  if (rv == 0) {
    rv = get_str(&e[1], &peer->addr);
  }
  if (rv == 0 && (peer->addr.len == 0 || peer->addr.len > d->addr_len_max)) {
    rv = DHT_ERR_TOO_LARGE;
  }
  return rv;
}

static int get_peers(const decoder *d, const msgpack_object *o, size_t max,
                     dht_peer_ref **out, size_t *n_out) {
  dht_peer_ref *peers;
  size_t i, n;
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.array.size;
  if (n > max) {
    return DHT_ERR_TOO_MANY;
  }
  peers = zone_array(d->zone, n, sizeof(*peers));
  if (peers == NULL && n > 0) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    rv = get_peer(d, &o->via.array.ptr[i], &peers[i]);
    if (rv != 0) {
      return rv;
    }
  }
  *out = peers;
  *n_out = n;
  return 0;
}

/* fingers: [[start_bit uint < 160, peer], ...], at most DHT_ID_BITS. */
static int get_fingers(const decoder *d, const msgpack_object *o,
                       dht_msg *msg) {
  dht_finger_ref *fingers;
  size_t i, n;
  uint64_t bit;
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.array.size;
  if (n > DHT_ID_BITS) {
    return DHT_ERR_TOO_MANY;
  }
  fingers = zone_array(d->zone, n, sizeof(*fingers));
  if (fingers == NULL && n > 0) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];

    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2) {
      return DHT_ERR_BAD_TYPE;
    }
    rv = get_uint(&e->via.array.ptr[0], &bit);
    if (rv != 0) {
      return rv;
    }
    if (bit >= DHT_ID_BITS) {
      return DHT_ERR_TOO_LARGE;
    }
    fingers[i].start_bit = (uint32_t)bit;
    rv = get_peer(d, &e->via.array.ptr[1], &fingers[i].peer);
    if (rv != 0) {
      return rv;
    }
  }
  msg->fingers = fingers;
  msg->n_fingers = n;
  return 0;
}

/* items: [[key bin, value bin, ...ignored], ...], at most items_max. */
static int get_items(const decoder *d, const msgpack_object *o, dht_msg *msg) {
  dht_kv *items;
  size_t i, n;
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.array.size;
  if (n > d->lim->items_max) {
    return DHT_ERR_TOO_MANY;
  }
  items = zone_array(d->zone, n, sizeof(*items));
  if (items == NULL && n > 0) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];

    /* [key, value] or [key, value, hlc, writer, tombstone]; elements
     * after those are room for later revisions and are skipped. */
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size < 2 ||
        (e->via.array.size > 2 && e->via.array.size < 5)) {
      return DHT_ERR_BAD_TYPE;
    }
    memset(&items[i], 0, sizeof(items[i]));
    rv = get_bin(&e->via.array.ptr[0], &items[i].key);
    if (rv == 0) {
      rv = get_bin(&e->via.array.ptr[1], &items[i].value);
    }
    if (rv == 0 && e->via.array.size >= 5) {
      items[i].has_version = true;
      rv = get_uint(&e->via.array.ptr[2], &items[i].version.hlc);
      if (rv == 0) {
        rv = get_id(&e->via.array.ptr[3], &items[i].version.writer);
      }
      if (rv == 0) {
        rv = get_bool(&e->via.array.ptr[4], &items[i].tombstone);
      }
    }
    if (rv != 0) {
      return rv;
    }
    if (items[i].key.len == 0 || items[i].key.len > d->lim->key_len_max ||
        items[i].value.len > d->lim->value_len_max) {
      return DHT_ERR_TOO_LARGE;
    }
  }
  msg->items = items;
  msg->n_items = n;
  return 0;
}

/* digests: [bin DHT_DIGEST_LEN, ...], 1..DHT_SYNC_BUCKETS_MAX of them,
 * copied into one zone array. */
static int get_digests(const decoder *d, const msgpack_object *o,
                       dht_msg *msg) {
  uint8_t *digests;
  size_t i, n;

  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.array.size;
  if (n == 0 || n > DHT_SYNC_BUCKETS_MAX) {
    return DHT_ERR_TOO_MANY;
  }
  digests = zone_array(d->zone, n, DHT_DIGEST_LEN);
  if (digests == NULL) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_BIN || e->via.bin.size != DHT_DIGEST_LEN) {
      return DHT_ERR_BAD_TYPE;
    }
    memcpy(digests + i * DHT_DIGEST_LEN, e->via.bin.ptr, DHT_DIGEST_LEN);
  }
  msg->digests = digests;
  msg->n_digests = n;
  return 0;
}

/* buckets: [uint < DHT_SYNC_BUCKETS_MAX, ...], at most that many. */
static int get_buckets(const decoder *d, const msgpack_object *o,
                       dht_msg *msg) {
  uint16_t *buckets;
  uint64_t u;
  size_t i, n;
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.array.size;
  if (n > DHT_SYNC_BUCKETS_MAX) {
    return DHT_ERR_TOO_MANY;
  }
  buckets = zone_array(d->zone, n, sizeof(*buckets));
  if (buckets == NULL && n > 0) {
    return DHT_ERR_NOMEM;
  }
  for (i = 0; i < n; i++) {
    rv = get_uint(&o->via.array.ptr[i], &u);
    if (rv != 0) {
      return rv;
    }
    if (u >= DHT_SYNC_BUCKETS_MAX) {
      return DHT_ERR_TOO_LARGE;
    }
    buckets[i] = (uint16_t)u;
  }
  msg->buckets = buckets;
  msg->n_buckets = n;
  return 0;
}

/* counters: {name str 1..64: uint}, at most DHT_COUNTERS_MAX, names unique. */
static int get_counters(const decoder *d, const msgpack_object *o,
                        dht_msg *msg) {
  dht_counter *counters;
  const msgpack_object_kv *kv;
  size_t i, j, n;
  int rv;

  if (o->type != MSGPACK_OBJECT_MAP) {
    return DHT_ERR_BAD_TYPE;
  }
  n = o->via.map.size;
  if (n > DHT_COUNTERS_MAX) {
    return DHT_ERR_TOO_MANY;
  }
  counters = zone_array(d->zone, n, sizeof(*counters));
  if (counters == NULL && n > 0) {
    return DHT_ERR_NOMEM;
  }
  kv = o->via.map.ptr;
  for (i = 0; i < n; i++) {
    rv = get_str(&kv[i].key, &counters[i].name);
    if (rv == 0) {
      rv = get_uint(&kv[i].val, &counters[i].value);
    }
    if (rv != 0) {
      return rv;
    }
    if (counters[i].name.len == 0 ||
        counters[i].name.len > COUNTER_NAME_LEN_MAX) {
      return DHT_ERR_TOO_LARGE;
    }
    /* Quadratic, but n <= 256 and STATS is an operator's command. */
    for (j = 0; j < i; j++) {
      if (str_eq(&kv[j].key.via.str, &kv[i].key.via.str)) {
        return DHT_ERR_MALFORMED;
      }
    }
  }
  msg->counters = counters;
  msg->n_counters = n;
  return 0;
}

/* ver: [hlc uint, writer bin 20]. */
static int get_version(const msgpack_object *o, dht_version *v) {
  int rv;

  if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 2) {
    return DHT_ERR_BAD_TYPE;
  }
  rv = get_uint(&o->via.array.ptr[0], &v->hlc);
  return rv != 0 ? rv : get_id(&o->via.array.ptr[1], &v->writer);
}

/* The start of a field that is an array of at most max compound entries
 * (STATS_R lost, exchanges, dead): *n gets their count and *out room for
 * them of elem_size each. Returns 0, BAD_TYPE, TOO_MANY or NOMEM. */
static int list_begin(const decoder *d, const msgpack_object *o, size_t max,
                      size_t elem_size, void **out, size_t *n) {
  if (o->type != MSGPACK_OBJECT_ARRAY) {
    return DHT_ERR_BAD_TYPE;
  }
  *n = o->via.array.size;
  if (*n > max) {
    return DHT_ERR_TOO_MANY;
  }
  *out = zone_array(d->zone, *n, elem_size);
  return *out == NULL && *n > 0 ? DHT_ERR_NOMEM : 0;
}

/* lost: [[from id, to id, at uint, holders [peer...]], ...], at most
 * DHT_LOST_MAX. */
static int get_lost(const decoder *d, const msgpack_object *o, dht_msg *msg) {
  dht_lost_range *lost;
  size_t i, n;
  int rv;

  if ((rv = list_begin(d, o, DHT_LOST_MAX, sizeof(*lost), (void **)&lost,
                       &n)) != 0) {
    return rv;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 4) {
      return DHT_ERR_BAD_TYPE;
    }
    e = e->via.array.ptr;
    if ((rv = get_id(&e[0], &lost[i].from)) != 0 ||
        (rv = get_id(&e[1], &lost[i].to)) != 0 ||
        (rv = get_uint(&e[2], &lost[i].at_ms)) != 0 ||
        (rv = get_peers(d, &e[3], DHT_SUCC_LIST_MAX, &lost[i].holders,
                        &lost[i].n_holders)) != 0) {
      return rv;
    }
  }
  msg->lost = lost;
  msg->n_lost = n;
  return 0;
}

/* exchanges: [[peer, from id, to id, ago uint, took uint, buckets uint,
 * pushed uint, outcome uint], ...], at most DHT_EXCHANGES_MAX; an outcome
 * above DHT_EXCHANGE_OUTCOME_LAST is TOO_LARGE. */
static int get_exchanges(const decoder *d, const msgpack_object *o,
                         dht_msg *msg) {
  dht_exchange *xs;
  size_t i, n;
  int rv;

  if ((rv = list_begin(d, o, DHT_EXCHANGES_MAX, sizeof(*xs), (void **)&xs,
                       &n)) != 0) {
    return rv;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 8) {
      return DHT_ERR_BAD_TYPE;
    }
    e = e->via.array.ptr;
    if ((rv = get_peer(d, &e[0], &xs[i].peer)) != 0 ||
        (rv = get_id(&e[1], &xs[i].from)) != 0 ||
        (rv = get_id(&e[2], &xs[i].to)) != 0 ||
        (rv = get_uint(&e[3], &xs[i].ago_ms)) != 0 ||
        (rv = get_uint(&e[4], &xs[i].took_ms)) != 0 ||
        (rv = get_uint(&e[5], &xs[i].buckets)) != 0 ||
        (rv = get_uint(&e[6], &xs[i].pushed)) != 0 ||
        (rv = get_uint(&e[7], &xs[i].outcome)) != 0) {
      return rv;
    }
    if (xs[i].outcome > DHT_EXCHANGE_OUTCOME_LAST) {
      return DHT_ERR_TOO_LARGE;
    }
  }
  msg->exchanges = xs;
  msg->n_exchanges = n;
  return 0;
}

/* dead: [[peer, ago uint], ...], at most DHT_DEAD_MAX. */
static int get_dead(const decoder *d, const msgpack_object *o, dht_msg *msg) {
  dht_dead_peer *dead;
  size_t i, n;
  int rv;

  if ((rv = list_begin(d, o, DHT_DEAD_MAX, sizeof(*dead), (void **)&dead,
                       &n)) != 0) {
    return rv;
  }
  for (i = 0; i < n; i++) {
    const msgpack_object *e = &o->via.array.ptr[i];
    if (e->type != MSGPACK_OBJECT_ARRAY || e->via.array.size != 2) {
      return DHT_ERR_BAD_TYPE;
    }
    e = e->via.array.ptr;
    if ((rv = get_peer(d, &e[0], &dead[i].peer)) != 0 ||
        (rv = get_uint(&e[1], &dead[i].ago_ms)) != 0) {
      return rv;
    }
  }
  msg->dead = dead;
  msg->n_dead = n;
  return 0;
}

/* Decodes the value o of field f (one a message type uses) into msg. */
static int decode_field(const decoder *d, enum field f, const msgpack_object *o,
                        dht_msg *msg) {
  const dht_wire_limits *lim = d->lim;
  uint64_t u;
  int rv;

  switch (f) {
  case F_TARGET:
    return get_id(o, &msg->target);
  case F_HOPS:
    rv = get_uint(o, &u);
    if (rv == 0 && u > DHT_HOPS_MAX) {
      rv = DHT_ERR_TOO_LARGE;
    }
    if (rv == 0) {
      msg->hops = (uint32_t)u;
    }
    return rv;
  case F_TRACE:
    return get_bool(o, &msg->trace);
  case F_FINAL:
    return get_bool(o, &msg->final);
  case F_KEY:
    rv = get_bin(o, &msg->key);
    if (rv == 0 && (msg->key.len == 0 || msg->key.len > lim->key_len_max)) {
      rv = DHT_ERR_TOO_LARGE;
    }
    return rv;
  case F_VALUE:
    rv = get_bin(o, &msg->value);
    if (rv == 0 && msg->value.len > lim->value_len_max) {
      rv = DHT_ERR_TOO_LARGE;
    }
    return rv;
  case F_PEER:
    rv = get_peer(d, o, &msg->peer);
    msg->has_peer = rv == 0;
    return rv;
  case F_PRED:
    if (o->type == MSGPACK_OBJECT_NIL) {
      return 0; /* nil is "no predecessor", like an absent key */
    }
    rv = get_peer(d, o, &msg->pred);
    msg->has_pred = rv == 0;
    return rv;
  case F_SUCCS:
    return get_peers(d, o, DHT_SUCC_LIST_MAX, &msg->succs, &msg->n_succs);
  case F_PATH:
    return get_peers(d, o, DHT_PATH_MAX, &msg->path, &msg->n_path);
  case F_FINGERS:
    return get_fingers(d, o, msg);
  case F_ITEMS:
    return get_items(d, o, msg);
  case F_COUNTERS:
    return get_counters(d, o, msg);
  case F_CODE:
    /* A DHT_ERR_* code: negative and within int32 (msgpack-c reports a
     * non-negative signed int as POSITIVE_INTEGER, so that is refused too). */
    if (o->type != MSGPACK_OBJECT_NEGATIVE_INTEGER || o->via.i64 < INT32_MIN) {
      return DHT_ERR_BAD_TYPE;
    }
    msg->error_code = (int32_t)o->via.i64;
    return 0;
  case F_MSG:
    rv = get_str(o, &msg->error_msg);
    if (rv == 0 && msg->error_msg.len > lim->error_msg_len_max) {
      rv = DHT_ERR_TOO_LARGE;
    }
    return rv;
  case F_FROM:
    return get_id(o, &msg->from);
  case F_TO:
    return get_id(o, &msg->to);
  case F_LIMIT:
    rv = get_uint(o, &u);
    if (rv == 0) {
      msg->limit = u > UINT32_MAX ? UINT32_MAX : (uint32_t)u;
    }
    return rv;
  case F_MORE:
    return get_bool(o, &msg->more);
  case F_PREDS:
    return get_peers(d, o, DHT_SUCC_LIST_MAX, &msg->preds, &msg->n_preds);
  case F_DIGESTS:
    return get_digests(d, o, msg);
  case F_BUCKETS:
    return get_buckets(d, o, msg);
  case F_VER:
    rv = get_version(o, &msg->ver);
    msg->has_ver = rv == 0;
    return rv;
  case F_WALL:
    return get_uint(o, &msg->wall_ms);
  case F_LOST:
    return get_lost(d, o, msg);
  case F_EXCHANGES:
    return get_exchanges(d, o, msg);
  case F_DEAD:
    return get_dead(d, o, msg);
  case F_LINK:
    return get_uint(o, &msg->link);
  case F_SEEN:
    return get_uint(o, &msg->seen);
  case F_VIEW:
    return get_uint(o, &msg->view);
  case F_SAME:
    return get_bool(o, &msg->same);
  case F_PROBE:
    return get_bool(o, &msg->probe);
  case F_DIRECT:
    return get_bool(o, &msg->direct);
  case F_SRC:
    rv = get_peer(d, o, &msg->src);
    msg->has_src = rv == 0;
    return rv;
  default: /* v, t and rid are read by decode_body */
    return 0;
  }
}

/* True when the str key kv[i] equals an earlier str key of the map. */
static bool key_seen_before(const msgpack_object_kv *kv, size_t i) {
  size_t j;

  for (j = 0; j < i; j++) {
    if (kv[j].key.type == MSGPACK_OBJECT_STR &&
        str_eq(&kv[j].key.via.str, &kv[i].key.via.str)) {
      return true;
    }
  }
  return false;
}

/* Reads "v", "t" and "rid" from slot into msg and sets replyable_. Returns
 * the first error in the order the protocol checks them: the version first,
 * because another version may lay out everything else differently; then
 * map_err (a structural problem of the map found earlier); then t, then rid.
 */
static int decode_header(const msgpack_object *const slot[F_COUNT], int map_err,
                         dht_msg *msg) {
  uint64_t v = 0, t = 0, rid = 0;
  int v_err, t_err, rid_err;

  v_err = slot[F_V] == NULL ? DHT_ERR_MISSING_FIELD : get_uint(slot[F_V], &v);
  t_err = slot[F_T] == NULL ? DHT_ERR_MISSING_FIELD : get_uint(slot[F_T], &t);
  rid_err =
      slot[F_RID] == NULL ? DHT_ERR_MISSING_FIELD : get_uint(slot[F_RID], &rid);

  if (v_err == 0) {
    msg->version = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
    if (v != DHT_PROTOCOL_VERSION) {
      v_err = DHT_ERR_BAD_VERSION;
    }
  }
  if (t_err == 0) {
    /* Kept even when unknown, for the log; clamped to stay an int. */
    msg->type = (dht_msg_type)(t > INT32_MAX ? INT32_MAX : t);
    if (t > DHT_MSG_TYPE_LAST) {
      t_err = DHT_ERR_UNKNOWN_TYPE;
    }
  }
  if (rid_err == 0) {
    msg->rid = rid;
  }
  /* An unknown type is answerable too: a node only receives replies to
   * requests it made, in types it knows, so an unknown type is a request of
   * a newer revision and its sender deserves a clear ERROR. The receiver
   * still must not answer known reply types and NOTIFY. */
  msg->replyable_ =
      (t_err == 0 || t_err == DHT_ERR_UNKNOWN_TYPE) && rid_err == 0;

  if (v_err != 0) {
    return v_err;
  }
  if (map_err != 0) {
    return map_err;
  }
  return t_err != 0 ? t_err : rid_err;
}

/* Checks the decoded object root against the schema and fills msg. */
static int decode_body(const decoder *d, const msgpack_object *root,
                       dht_msg *msg) {
  const msgpack_object *slot[F_COUNT] = {NULL};
  const msgpack_object_kv *kv;
  const struct type_fields *tf;
  size_t i, n;
  unsigned f;
  int map_err = 0, rv;

  if (root->type != MSGPACK_OBJECT_MAP) {
    return DHT_ERR_BAD_TYPE;
  }
  kv = root->via.map.ptr;
  n = root->via.map.size;
  if (n > BODY_KEYS_MAX) {
    map_err = DHT_ERR_TOO_MANY;
  }
  /* One pass files every known key into its slot. It goes on after a
   * problem, so that v, t and rid are found wherever they are in the map
   * and the receiver can still answer with an ERROR. */
  for (i = 0; i < n; i++) {
    enum field fk;

    if (kv[i].key.type != MSGPACK_OBJECT_STR) {
      if (map_err == 0) {
        map_err = DHT_ERR_BAD_TYPE;
      }
      continue;
    }
    fk = field_lookup(kv[i].key.via.str.ptr, kv[i].key.via.str.size);
    if (fk == F_COUNT) {
      if (map_err == 0 && key_seen_before(kv, i)) {
        map_err = DHT_ERR_MALFORMED;
      }
      continue;
    }
    if (slot[fk] != NULL) {
      if (map_err == 0) {
        map_err = DHT_ERR_MALFORMED;
      }
      continue;
    }
    slot[fk] = &kv[i].val;
  }

  rv = decode_header(slot, map_err, msg);
  if (rv != 0) {
    return rv;
  }
  tf = &type_fields[msg->type];
  for (f = F_TARGET; f < F_COUNT; f++) {
    if (!(tf->uses & FB(f))) {
      continue;
    }
    if (slot[f] == NULL) {
      if (tf->required & FB(f)) {
        return DHT_ERR_MISSING_FIELD;
      }
      continue;
    }
    rv = decode_field(d, (enum field)f, slot[f], msg);
    if (rv != 0) {
      return rv;
    }
  }
  if (msg->type == DHT_MSG_NEIGHBORS && !msg->same &&
      (slot[F_PEER] == NULL || slot[F_SUCCS] == NULL)) {
    return DHT_ERR_MISSING_FIELD; /* only an unchanged view leaves them out */
  }
  return 0;
}

/* The first chunk of a decode's zone. msgpack-c never grows its chunks: each
 * time one is full it allocates another of this size (or the request's, if
 * larger), so a chunk sized to the body keeps big messages to a few mallocs
 * while a PING still takes only 512 bytes. Decoded objects need about 1 to 6
 * times the body length (24 bytes per msgpack object, which is at least 1
 * byte on the wire, but keys and values take many). */
static size_t zone_chunk_size(size_t body_len) {
  size_t n = body_len < ZONE_CHUNK_MAX / 4 ? body_len * 4 : ZONE_CHUNK_MAX;

  return n < ZONE_CHUNK_MIN ? ZONE_CHUNK_MIN : n;
}

/* A cursor over the bytes of a body, for the fast decoder. */
typedef struct fast_rd {
  const uint8_t *p, *end;
} fast_rd;

/* Reads n big-endian bytes. */
static bool rd_be(fast_rd *r, size_t n, uint64_t *v) {
  size_t i;

  if ((size_t)(r->end - r->p) < n) {
    return false;
  }
  *v = 0;
  for (i = 0; i < n; i++) {
    *v = *v << 8 | r->p[i];
  }
  r->p += n;
  return true;
}

/* A positive fixint or uint 8..64 (msgpack-c also takes a non-negative
 * signed int as unsigned: left to the full decoder). */
static bool rd_uint(fast_rd *r, uint64_t *v) {
  uint8_t b;

  if (r->p == r->end) {
    return false;
  }
  b = *r->p++;
  if (b <= 0x7f) {
    *v = b;
    return true;
  }
  return b >= 0xcc && b <= 0xcf && rd_be(r, (size_t)1 << (b - 0xcc), v);
}

static bool rd_bool(fast_rd *r, bool *v) {
  if (r->p == r->end || (*r->p != 0xc2 && *r->p != 0xc3)) {
    return false;
  }
  *v = *r->p++ == 0xc3;
  return true;
}

/* A bin 8, 16 or 32, which must fit in the body. */
static bool rd_bin(fast_rd *r, dht_bytes *b) {
  uint64_t len;
  uint8_t t;

  if (r->p == r->end) {
    return false;
  }
  t = *r->p++;
  if (t < 0xc4 || t > 0xc6 || !rd_be(r, (size_t)1 << (t - 0xc4), &len) ||
      len > (uint64_t)(r->end - r->p)) {
    return false;
  }
  b->p = r->p;
  b->len = (size_t)len;
  r->p += len;
  return true;
}

/* Reads the value of fast field f into msg. */
static bool rd_field(fast_rd *r, enum field f, dht_msg *msg, uint64_t *num) {
  dht_bytes writer;

  switch (f) {
  case F_V:
  case F_T:
  case F_RID:
  case F_HOPS:
    return rd_uint(r, num);
  case F_FINAL:
    return rd_bool(r, &msg->final);
  case F_DIRECT:
    return rd_bool(r, &msg->direct);
  case F_KEY:
    return rd_bin(r, &msg->key);
  case F_VALUE:
    return rd_bin(r, &msg->value);
  case F_VER:
    if (r->p == r->end || *r->p++ != 0x92 || !rd_uint(r, &msg->ver.hlc) ||
        !rd_bin(r, &writer) || writer.len != DHT_ID_LEN) {
      return false;
    }
    memcpy(msg->ver.writer.b, writer.p, DHT_ID_LEN);
    msg->has_ver = true;
    return true;
  default:
    return false;
  }
}

bool dht__msg_decode_fast(dht_msg *msg, const uint8_t *body, size_t len,
                          const dht_wire_limits *lim) {
  fast_rd r = {body, body + len};
  uint64_t seen = 0, v = 0, t = 0, rid = 0, hops = 0, num;
  size_t n, i;

  memset(msg, 0, sizeof(*msg));
  if (len == 0 || (body[0] & 0xf0) != 0x80) {
    return false; /* not a fixmap */
  }
  n = body[0] & 0x0f;
  r.p++;
  for (i = 0; i < n; i++) {
    enum field f;
    size_t key_len;
    if (r.p == r.end || (*r.p & 0xe0) != 0xa0) {
      return false; /* not a fixstr key */
    }
    key_len = *r.p++ & 0x1f;
    if ((size_t)(r.end - r.p) < key_len) {
      return false;
    }
    f = field_lookup((const char *)r.p, (uint32_t)key_len);
    r.p += key_len;
    if (f == F_COUNT || !(FAST_FIELDS & FB(f)) || (seen & FB(f)) ||
        !rd_field(&r, f, msg, &num)) {
      return false;
    }
    seen |= FB(f);
    switch (f) {
    case F_V:
      v = num;
      break;
    case F_T:
      t = num;
      break;
    case F_RID:
      rid = num;
      break;
    case F_HOPS:
      hops = num;
      break;
    default:
      break;
    }
  }
  if (r.p != r.end || (seen & (FB(F_V) | FB(F_T) | FB(F_RID))) !=
                          (FB(F_V) | FB(F_T) | FB(F_RID)) ||
      v != DHT_PROTOCOL_VERSION || t > DHT_MSG_TYPE_LAST) {
    return false;
  }
  seen &= ~(FB(F_V) | FB(F_T) | FB(F_RID));
  if ((seen & ~type_fields[t].uses) != 0 ||
      (type_fields[t].uses & ~FAST_FIELDS) != 0 ||
      (type_fields[t].required & ~seen) != 0 || hops > DHT_HOPS_MAX ||
      ((seen & FB(F_KEY)) &&
       (msg->key.len == 0 || msg->key.len > lim->key_len_max)) ||
      ((seen & FB(F_VALUE)) && msg->value.len > lim->value_len_max)) {
    return false;
  }
  msg->version = DHT_PROTOCOL_VERSION;
  msg->type = (dht_msg_type)t;
  msg->rid = rid;
  msg->hops = (uint32_t)hops;
  msg->replyable_ = true;
  return true;
}

int dht_msg_decode(dht_msg *msg, const uint8_t *body, size_t len,
                   const dht_wire_limits *lim) {
  assert(lim != NULL);
  if (len <= lim->frame_len_max && dht__msg_decode_fast(msg, body, len, lim)) {
    return 0;
  }
  return dht__msg_decode_full(msg, body, len, lim);
}

int dht__msg_decode_full(dht_msg *msg, const uint8_t *body, size_t len,
                         const dht_wire_limits *lim) {
  msgpack_zone *zone;
  msgpack_object root;
  msgpack_unpack_return ur;
  decoder d;
  size_t off = 0;
  int rv;

  assert(lim != NULL);
  memset(msg, 0, sizeof(*msg));
  if (len > lim->frame_len_max) {
    return DHT_ERR_TOO_LARGE;
  }
  /* Must pass before msgpack-c sees a byte: see mp_check.h. */
  rv = dht__mp_check(body, len, DHT_NESTING_MAX);
  if (rv != 0) {
    return rv;
  }

  zone = malloc(sizeof(*zone));
  if (zone == NULL) {
    return DHT_ERR_NOMEM;
  }
  if (!msgpack_zone_init(zone, zone_chunk_size(len))) {
    free(zone);
    return DHT_ERR_NOMEM;
  }
  msg->zone_ = zone;

  ur = msgpack_unpack((const char *)body, len, &off, zone, &root);
  if (ur == MSGPACK_UNPACK_SUCCESS) {
    d.zone = zone;
    d.lim = lim;
    d.addr_len_max = lim->addr_len_max < DHT_ADDR_LEN_MAX ? lim->addr_len_max
                                                          : DHT_ADDR_LEN_MAX;
    rv = decode_body(&d, &root, msg);
  } else if (ur == MSGPACK_UNPACK_PARSE_ERROR ||
             ur == MSGPACK_UNPACK_NOMEM_ERROR) {
    /* The pre-scan accepted exactly what msgpack-c parses, so its failure
     * here is a failed zone allocation (which msgpack_unpack() reports as a
     * parse error). */
    rv = DHT_ERR_NOMEM;
  } else {
    rv = DHT_ERR_MALFORMED; /* CONTINUE or EXTRA_BYTES: cannot happen */
  }

  if (rv != 0) {
    /* Keep only what the caller may use to answer; the rest would point
     * into a freed zone or be half-filled. */
    dht_msg keep = {0};

    keep.version = msg->version;
    keep.type = msg->type;
    keep.rid = msg->rid;
    keep.replyable_ = msg->replyable_;
    dht_msg_free(msg);
    *msg = keep;
  }
  return rv;
}
