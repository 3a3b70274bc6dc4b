/*
 * dht/seal.h: the closed ring. A connection between holders of the ring's
 * cluster key starts with a mutual challenge-response handshake, then every
 * frame travels sealed (encrypted and authenticated) with per-direction keys
 * and implicit counters; docs/PROTOCOL.md section 9 is the byte-level
 * reference and docs/SECURITY.md says what it protects.
 *
 * A dht_seal is one connection's end of that, sans-IO: the host feeds it the
 * bytes it read (dht_seal_recv), takes the plaintext frames out
 * (dht_seal_read), hands it the frames it wants sent (dht_seal_send), and
 * writes whatever the calls appended to its output buffer. The frames inside
 * are exactly the frames of an open ring (4-byte length + msgpack body).
 * Randomness (the handshake nonce) and time come from the host.
 *
 * Any failure is final: the host closes the connection without a word to
 * the peer, and every later call returns the same error.
 *
 * Keys: a ring has one 32-byte member key. The client key is derived from
 * it one way (BLAKE2b via crypto_kdf), so a node can check it but its holder
 * cannot compute the member key. The key file functions at the end (the only
 * part that touches the file system) read and write the one-line text form.
 */
#ifndef DHT_SEAL_H
#define DHT_SEAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dht/wire.h"

#define DHT_KEY_LEN 32          /* a member or client key */
#define DHT_SEAL_NONCE_LEN 32   /* a handshake nonce */
#define DHT_SEAL_HELLO_LEN 40   /* HELLO and CHALLENGE */
#define DHT_SEAL_PROOF_LEN 32   /* PROOF_I and PROOF_R */
#define DHT_SEAL_TAG_LEN 16     /* Poly1305 tag of a sealed record */
#define DHT_SEAL_RECORD_HEADER_LEN 4 /* a record's big-endian length */
/* Bytes a sealed record adds to the frame it carries. */
#define DHT_SEAL_OVERHEAD (DHT_SEAL_RECORD_HEADER_LEN + DHT_SEAL_TAG_LEN)
/* Bytes of a key file: "chord-dht-key 1 member " + 64 hex digits + "\n". */
#define DHT_KEY_FILE_LEN_MAX 128

/* Which keys a holder has. */
typedef enum dht_key_kind {
  DHT_KEY_NONE = 0,   /* no key: an open ring */
  DHT_KEY_MEMBER = 1, /* the member key (and the client key derived from it) */
  DHT_KEY_CLIENT = 2, /* the client key only */
} dht_key_kind;

/* A cluster key as held in memory. Zeroed: no key. */
typedef struct dht_ring_key {
  dht_key_kind kind;           /* what is set below */
  uint8_t member[DHT_KEY_LEN]; /* DHT_KEY_MEMBER: the member key; else 0 */
  uint8_t client[DHT_KEY_LEN]; /* DHT_KEY_MEMBER and _CLIENT: the client key */
} dht_ring_key;

/* Sets *key from a member key, deriving the client key. */
void dht_ring_key_from_member(dht_ring_key *key,
                              const uint8_t member[DHT_KEY_LEN]);
/* Sets *key from a client key alone. */
void dht_ring_key_from_client(dht_ring_key *key,
                              const uint8_t client[DHT_KEY_LEN]);
/* Zeroes *key so that no copy of the secret is left in it. */
void dht_ring_key_wipe(dht_ring_key *key);

/*
 * Parses the text of a key file: "chord-dht-key 1 member HEX\n" or
 * "chord-dht-key 1 client HEX\n", HEX 64 hex digits, the final newline
 * optional, nothing else. Returns 0 or DHT_ERR_MALFORMED.
 */
int dht_ring_key_parse(dht_ring_key *key, const char *text, size_t len);
/*
 * Writes the key file text of key into buf (NUL-terminated): its member
 * key, or with as_client (or a client-only key) its client key.
 * Returns the length, or DHT_ERR_INVAL (no key, buf shorter than
 * DHT_KEY_FILE_LEN_MAX).
 */
int dht_ring_key_format(const dht_ring_key *key, bool as_client, char *buf,
                        size_t buf_len);

/*
 * Reads a key file. It must be a regular file that neither group nor others
 * may read or write (mode 0600 or stricter), or the key may have leaked.
 * Returns 0, or DHT_ERR_INVAL / DHT_ERR_MALFORMED with the reason in err.
 */
int dht_ring_key_load(dht_ring_key *key, const char *path, char *err,
                      size_t err_len);
/*
 * Writes a new key file at path with mode 0600 (as dht_ring_key_format),
 * refusing to replace an existing file. Returns 0 or DHT_ERR_INVAL with the
 * reason in err (the file is then not left behind half-written).
 */
int dht_ring_key_save(const dht_ring_key *key, bool as_client, const char *path,
                      char *err, size_t err_len);

/* Limits of one sealed connection. */
typedef struct dht_seal_settings {
  uint32_t handshake_timeout_ms; /* the handshake must finish by then: 5000 */
  uint32_t frame_len_max;        /* longest frame body carried, as the wire's
                                    frame_len_max: 4 MiB */
} dht_seal_settings;

void dht_seal_settings_default(dht_seal_settings *set);

typedef struct dht_seal dht_seal;

/*
 * Creates one connection's end. The initiator (the side that connected)
 * claims role, which its key must allow (DHT_ROLE_MEMBER needs the member
 * key), and must call dht_seal_start(). The responder takes whichever role
 * the initiator proves; it needs the member key. nonce is DHT_SEAL_NONCE_LEN
 * fresh random bytes (copied); now_ms starts the handshake's deadline.
 * Returns 0, DHT_ERR_INVAL (no key, a role the key does not allow, bad
 * settings) or DHT_ERR_NOMEM.
 */
int dht_seal_new(dht_seal **out, const dht_ring_key *key, bool initiator,
                 dht_role role, const uint8_t nonce[DHT_SEAL_NONCE_LEN],
                 const dht_seal_settings *set, uint64_t now_ms);
/* Wipes the keys and frees. NULL is a no-op. */
void dht_seal_del(dht_seal *s);

/* Initiator: appends HELLO to out. Returns 0 or DHT_ERR_NOMEM. */
int dht_seal_start(dht_seal *s, dht_buf *out);

/*
 * Takes len bytes read from the connection; appends to out what the
 * handshake answers. Records that arrive are kept for dht_seal_read().
 * Returns 0, or (close the connection, say nothing):
 *   DHT_ERR_MALFORMED  the bytes are not this handshake (magic, version,
 *                      role, reserved bytes), or bytes came that the peer
 *                      could not have sent yet;
 *   DHT_ERR_AUTH       the peer's proof is wrong: another key, or none;
 *   DHT_ERR_TIMEOUT    the handshake's deadline has passed;
 *   DHT_ERR_TOO_LARGE  a record declares more than frame_len_max allows
 *                      (or less than a tag and a frame header);
 *   DHT_ERR_NOMEM.
 */
int dht_seal_recv(dht_seal *s, const uint8_t *data, size_t len, dht_buf *out,
                  uint64_t now_ms);

/*
 * The next frame that arrived, opened: *frame (header included, *len bytes)
 * stays valid until the next call on s. Returns 1 (a frame), 0 (none
 * complete yet) or, closing for good, DHT_ERR_AUTH (a record was tampered
 * with, replayed, reordered, reflected or cut) or DHT_ERR_MALFORMED (it did
 * not hold exactly one frame).
 */
int dht_seal_read(dht_seal *s, const uint8_t **frame, size_t *len);

/*
 * Seals one whole frame (header included) into out, or holds a copy while
 * the handshake has not yet reached the point where this side may send;
 * held frames go out, sealed, from the dht_seal_recv() that gets there.
 * Returns 0, DHT_ERR_INVAL (not exactly one frame, or longer than
 * frame_len_max), DHT_ERR_NOMEM, or the failure that ended the connection.
 */
int dht_seal_send(dht_seal *s, const uint8_t *frame, size_t len, dht_buf *out);

/* True once both sides have proved the key and frames flow both ways. */
bool dht_seal_established(const dht_seal *s);
/* The role of the connection: what the initiator claimed, proved once
 * established. */
dht_role dht_seal_role(const dht_seal *s);
/* When the handshake must be done by (the host closes the connection then);
 * UINT64_MAX once established. */
uint64_t dht_seal_deadline(const dht_seal *s);
/* Bytes of frames held until the handshake lets them out. */
size_t dht_seal_held_len(const dht_seal *s);
/* Bytes read and kept, not yet taken out by dht_seal_read (a partial
 * record, or whole ones waiting): for the host's memory budget and its
 * frame deadline. */
size_t dht_seal_in_len(const dht_seal *s);

#endif /* DHT_SEAL_H */
