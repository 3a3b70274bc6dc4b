/*
 * store_mem.c: the in-memory store backend (dht_store_mem_new).
 *
 * It serves the simulator, where thousands of stores live in one process,
 * and `dhtd --memory`, where one store may hold millions of records; nothing
 * survives a restart. The records are in a B+tree ordered by (key id, key
 * bytes), the order of the LMDB backend, so that a ring interval is one
 * range of leaves: hand-off and anti-entropy read ranges, never the whole
 * table. Lookups, inserts and deletes cost O(log n); a scan costs O(log n)
 * to find its start and O(1) per record after it.
 *
 * Why this shape: memory per record. A leaf is one allocation holding its
 * records inline, back to back in store order, each a 28-byte header (id and
 * two lengths) followed by its key and value bytes; there is no per-record
 * allocation, pointer or slot. A leaf's allocation follows its contents
 * (rounded up to LEAF_GRANULE), so the half-empty pages of a B-tree filled in
 * random order, which cost LMDB a third of its file, cost nothing here. At a
 * million keys with 100-byte values that is about 150 bytes a record against
 * Redis's 200 (docs/PERFORMANCE.md). A skiplist or a tree of per-record
 * allocations would add 24-40 bytes of pointers and allocator headers per
 * record.
 *
 * Within a leaf (at most LEAF_BYTES_MAX bytes, so a bounded number of
 * records) a lookup walks the records from the start, and an insert or a
 * delete moves the records after it; both are cheap next to a cache miss.
 * Inner nodes hold fixed-size separators: a separator is a key id only, and
 * every record of one key id lives in the same leaf (a leaf only splits
 * between two ids). Ids are hashes, so records sharing an id are as rare as
 * a hash collision; a leaf full of one id simply grows past LEAF_BYTES_MAX.
 *
 * Splits and merges only ever make the tree faster: a split or merge that
 * cannot get memory is skipped, leaving a leaf larger or smaller than usual
 * but every record in place, so a put that stored its record succeeds.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dht/err.h"
#include "dht/store.h"

/* A leaf whose records take more bytes than this splits in two halves. */
#define LEAF_BYTES_MAX 4096
/* A leaf left with fewer bytes than this by a delete merges with a
 * neighbour if the two fit in one leaf. */
#define LEAF_BYTES_MERGE (LEAF_BYTES_MAX / 4)
/* Leaves are allocated in steps of this many bytes: a leaf wastes half a
 * step on average, and a value that changes its length by a few bytes does
 * not reallocate its leaf. */
#define LEAF_GRANULE 64
/* Children of an inner node: at most INNER_MAX, at least INNER_MIN but for
 * the root, which has at least 2. */
#define INNER_MAX 64
#define INNER_MIN (INNER_MAX / 2)
/* Levels of inner nodes a path may cross: a tree that deep already has at
 * least 2 * INNER_MIN^(DEPTH_MAX - 1) leaves, 2^76. */
#define DEPTH_MAX 16

/* A record in a leaf: REC_HDR bytes (the key id, then key_len and value_len
 * as native uint32_t, unaligned), then the key bytes, then the value bytes.
 * The id comes first so that comparisons start at the record's address. */
#define REC_KEY_LEN_AT DHT_ID_LEN
#define REC_VALUE_LEN_AT (DHT_ID_LEN + 4)
#define REC_HDR (DHT_ID_LEN + 8)

typedef struct mem_leaf {
  size_t n;       /* records */
  size_t bytes;   /* bytes of records at data */
  uint8_t data[]; /* the records, in store order, no duplicates; the
                     allocation has leaf_alloc_size(bytes) bytes or more */
} mem_leaf;

typedef struct mem_inner {
  size_t n;                  /* children in use */
  dht_id sep[INNER_MAX - 1]; /* sep[i] splits child i from child i + 1:
                                every id in child i is below sep[i], every
                                id in child i + 1 is at or above it */
  void *child[INNER_MAX];    /* mem_inner * on all but the last inner level,
                                mem_leaf * below it */
} mem_inner;

typedef struct mem_store {
  dht_store base;     /* must stay first: dht_store pointers are cast back */
  void *root;         /* a mem_leaf * when depth is 0, else a mem_inner * */
  unsigned depth;     /* levels of inner nodes above the leaves */
  size_t count;       /* records in the store */
  bool scanning;      /* true inside a scan callback, to catch modifications */
  const char *errmsg; /* why the last failing call failed */
} mem_store;

/* The way from the root to one leaf, and a place in that leaf: what a
 * lookup, an insert or a scan holds on to. */
typedef struct mem_path {
  mem_inner *inner[DEPTH_MAX]; /* inner[d]: the node at depth d */
  size_t idx[DEPTH_MAX];       /* the child taken at depth d */
  mem_leaf *leaf;              /* the leaf reached */
  size_t off;                  /* a byte offset in leaf->data */
} mem_path;

static mem_store *mem_of(dht_store *st) { return (mem_store *)st; }

/* ---- records ------------------------------------------------------------- */

static const dht_id *rec_id(const uint8_t *r) {
  return (const dht_id *)r; /* dht_id is bytes only: no alignment */
}

static size_t rec_u32(const uint8_t *r, size_t at) {
  uint32_t v;

  memcpy(&v, r + at, sizeof(v));
  return v;
}

static size_t rec_key_len(const uint8_t *r) {
  return rec_u32(r, REC_KEY_LEN_AT);
}

static size_t rec_value_len(const uint8_t *r) {
  return rec_u32(r, REC_VALUE_LEN_AT);
}

static const uint8_t *rec_key(const uint8_t *r) { return r + REC_HDR; }

static const uint8_t *rec_value(const uint8_t *r) {
  return r + REC_HDR + rec_key_len(r);
}

static size_t rec_size(const uint8_t *r) {
  return REC_HDR + rec_key_len(r) + rec_value_len(r);
}

static void rec_write(uint8_t *r, const dht_id *key_id, const uint8_t *key,
                      size_t key_len, const uint8_t *value, size_t value_len) {
  uint32_t k = (uint32_t)key_len;
  uint32_t v = (uint32_t)value_len;

  memcpy(r, key_id->b, DHT_ID_LEN);
  memcpy(r + REC_KEY_LEN_AT, &k, sizeof(k));
  memcpy(r + REC_VALUE_LEN_AT, &v, sizeof(v));
  memcpy(r + REC_HDR, key, key_len);
  /* value may be NULL when value_len is 0, and memcpy(NULL) is undefined. */
  if (value_len > 0) {
    memcpy(r + REC_HDR + key_len, value, value_len);
  }
}

/* Orders by id first, then by key bytes with a shorter prefix first, so the
 * order matches LMDB's on the (id || key) composite key. */
static int rec_cmp(const uint8_t *r, const dht_id *key_id, const uint8_t *key,
                   size_t key_len) {
  int c = dht_id_cmp(rec_id(r), key_id);
  size_t r_len = rec_key_len(r);
  size_t n = r_len < key_len ? r_len : key_len;

  if (c != 0) {
    return c;
  }
  c = memcmp(rec_key(r), key, n);
  if (c != 0) {
    return c;
  }
  return (r_len > key_len) - (r_len < key_len);
}

/* ---- leaves -------------------------------------------------------------- */

static size_t leaf_alloc_size(size_t bytes) {
  return sizeof(mem_leaf) +
         (bytes + LEAF_GRANULE - 1) / LEAF_GRANULE * LEAF_GRANULE;
}

/* A leaf with room for bytes bytes of records, holding none yet; NULL when
 * out of memory. */
static mem_leaf *leaf_new(size_t bytes) {
  mem_leaf *l = malloc(leaf_alloc_size(bytes));

  if (l != NULL) {
    l->n = 0;
    l->bytes = 0;
  }
  return l;
}

/* Resizes l's allocation for bytes bytes of records when its step changes.
 * Returns the leaf, perhaps moved, or NULL when growing failed (l is then
 * unchanged). A failed shrink keeps the larger allocation. */
static mem_leaf *leaf_realloc(mem_leaf *l, size_t bytes) {
  size_t want = leaf_alloc_size(bytes);
  mem_leaf *moved;

  if (want == leaf_alloc_size(l->bytes)) {
    return l;
  }
  moved = realloc(l, want);
  if (moved == NULL) {
    return bytes < l->bytes ? l : NULL;
  }
  return moved;
}

/* The first 8 bytes of an id as a number. */
static uint64_t id_top(const uint8_t *b) {
  return (uint64_t)b[0] << 56 | (uint64_t)b[1] << 48 | (uint64_t)b[2] << 40 |
         (uint64_t)b[3] << 32 | (uint64_t)b[4] << 24 | (uint64_t)b[5] << 16 |
         (uint64_t)b[6] << 8 | (uint64_t)b[7];
}

/* Compares the id at a with id, as dht_id_cmp does; top is id_top(id). Ids
 * whose tops differ compare as their tops, which spares the searches a call
 * and a memcmp for nearly every id they pass. */
static int id_cmp_top(const uint8_t *a, const dht_id *id, uint64_t top) {
  uint64_t a_top = id_top(a);

  if (a_top != top) {
    return a_top < top ? -1 : 1;
  }
  return dht_id_cmp((const dht_id *)a, id);
}

/* Offset of the first record of l not below (key_id, key) (l->bytes if
 * none); sets *found when that record is equal to it. */
static size_t leaf_find(const mem_leaf *l, const dht_id *key_id,
                        const uint8_t *key, size_t key_len, bool *found) {
  uint64_t top = id_top(key_id->b);
  size_t off = 0;

  *found = false;
  while (off < l->bytes) {
    const uint8_t *r = l->data + off;
    int c = id_cmp_top(r, key_id, top);
    if (c == 0) {
      c = rec_cmp(r, key_id, key, key_len);
    }
    if (c >= 0) {
      *found = c == 0;
      break;
    }
    off += rec_size(r);
  }
  return off;
}

/* Offset of the first record of l whose id is above id (l->bytes if none). */
static size_t leaf_after_id(const mem_leaf *l, const dht_id *id) {
  uint64_t top = id_top(id->b);
  size_t off = 0;

  while (off < l->bytes && id_cmp_top(l->data + off, id, top) <= 0) {
    off += rec_size(l->data + off);
  }
  return off;
}

/* Where to split l: the start of the record, not the first, that begins a
 * new id and lies closest to the middle of l's bytes; 0 when every record
 * has the same id. Sets *n_left to the records before it. */
static size_t leaf_split_point(const mem_leaf *l, size_t *n_left) {
  size_t best = 0, best_gap = SIZE_MAX;
  size_t prev = 0, off = rec_size(l->data), i = 1;

  *n_left = 0;
  while (off < l->bytes) {
    size_t gap = off < l->bytes / 2 ? l->bytes / 2 - off : off - l->bytes / 2;
    if (gap < best_gap &&
        !dht_id_eq(rec_id(l->data + prev), rec_id(l->data + off))) {
      best = off;
      best_gap = gap;
      *n_left = i;
    }
    prev = off;
    off += rec_size(l->data + off);
    i++;
  }
  return best;
}

/* ---- inner nodes --------------------------------------------------------- */

/* The child of in whose ids may include id: the number of separators at or
 * below it. */
static size_t inner_child_for(const mem_inner *in, const dht_id *id) {
  uint64_t top = id_top(id->b);
  size_t lo = 0, hi = in->n - 1;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (id_cmp_top(in->sep[mid].b, id, top) <= 0) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Puts child at position at (>= 1) of in, which has room, its ids starting
 * at sep. */
static void inner_insert(mem_inner *in, size_t at, const dht_id *sep,
                         void *child) {
  assert(at >= 1 && at <= in->n && in->n < INNER_MAX);
  memmove(&in->child[at + 1], &in->child[at],
          (in->n - at) * sizeof(in->child[0]));
  memmove(&in->sep[at], &in->sep[at - 1], (in->n - at) * sizeof(in->sep[0]));
  in->child[at] = child;
  in->sep[at - 1] = *sep;
  in->n++;
}

/* Takes child at out of in; its ids become its left neighbour's (its right
 * neighbour's when it is the first). */
static void inner_remove(mem_inner *in, size_t at) {
  size_t sep_at = at > 0 ? at - 1 : 0;

  assert(at < in->n && in->n >= 2);
  memmove(&in->child[at], &in->child[at + 1],
          (in->n - at - 1) * sizeof(in->child[0]));
  memmove(&in->sep[sep_at], &in->sep[sep_at + 1],
          (in->n - 2 - sep_at) * sizeof(in->sep[0]));
  in->n--;
}

/* Moves the upper half of the full node in to the empty node right; sets
 * *up to the separator between them. */
static void inner_split(mem_inner *in, mem_inner *right, dht_id *up) {
  size_t half = INNER_MAX / 2;

  assert(in->n == INNER_MAX);
  right->n = in->n - half;
  memcpy(right->child, &in->child[half], right->n * sizeof(in->child[0]));
  memcpy(right->sep, &in->sep[half], (right->n - 1) * sizeof(in->sep[0]));
  *up = in->sep[half - 1];
  in->n = half;
}

/* Appends the children of right to left, sep being the separator between
 * them in their parent, and empties right. */
static void inner_merge(mem_inner *left, mem_inner *right, const dht_id *sep) {
  assert(left->n + right->n <= INNER_MAX);
  left->sep[left->n - 1] = *sep;
  memcpy(&left->sep[left->n], right->sep,
         (right->n - 1) * sizeof(left->sep[0]));
  memcpy(&left->child[left->n], right->child,
         right->n * sizeof(left->child[0]));
  left->n += right->n;
  right->n = 0;
}

/* ---- paths --------------------------------------------------------------- */

/* Fills p with the way to the leaf whose ids may include id. */
static void path_to(const mem_store *m, const dht_id *id, mem_path *p) {
  void *node = m->root;
  unsigned d;

  for (d = 0; d < m->depth; d++) {
    mem_inner *in = node;
    p->inner[d] = in;
    p->idx[d] = inner_child_for(in, id);
    node = in->child[p->idx[d]];
  }
  p->leaf = node;
  p->off = 0;
}

/* Below depth d of p, takes the first child at every level. */
static void path_down_first(const mem_store *m, mem_path *p, unsigned d) {
  void *node = p->inner[d]->child[p->idx[d]];

  for (d++; d < m->depth; d++) {
    p->inner[d] = node;
    p->idx[d] = 0;
    node = p->inner[d]->child[0];
  }
  p->leaf = node;
  p->off = 0;
}

/* Fills p with the way to the first leaf. */
static void path_first(const mem_store *m, mem_path *p) {
  if (m->depth == 0) {
    p->leaf = m->root;
    p->off = 0;
    return;
  }
  p->inner[0] = m->root;
  p->idx[0] = 0;
  path_down_first(m, p, 0);
}

/* Moves p to the start of the next leaf; false when p's leaf is the last. */
static bool path_next_leaf(const mem_store *m, mem_path *p) {
  unsigned d = m->depth;

  while (d-- > 0) {
    if (p->idx[d] + 1 < p->inner[d]->n) {
      p->idx[d]++;
      path_down_first(m, p, d);
      return true;
    }
  }
  return false;
}

/* Stores leaf where p's leaf hangs, after it moved or was replaced. */
static void path_set_leaf(mem_store *m, mem_path *p, mem_leaf *leaf) {
  if (m->depth == 0) {
    m->root = leaf;
  } else {
    p->inner[m->depth - 1]->child[p->idx[m->depth - 1]] = leaf;
  }
  p->leaf = leaf;
}

/* ---- splitting and merging ----------------------------------------------- */

/* Splits p's leaf, which grew past LEAF_BYTES_MAX, and every full inner node
 * above it that must make room. All the memory is taken first: when some is
 * missing nothing changes (the leaf stays large, which is correct). */
static void split_leaf(mem_store *m, mem_path *p) {
  mem_inner *spare[DEPTH_MAX + 1];
  size_t n_spare = 0, used = 0, n_left;
  size_t at = leaf_split_point(p->leaf, &n_left);
  mem_leaf *right;
  unsigned d = m->depth;
  void *child;
  dht_id sep;

  if (at == 0) {
    return; /* one id throughout: it cannot split */
  }
  /* One new inner node per full node on the path, and a new root when
   * every node on the path is full (or the root is this leaf). */
  while (d > 0 && p->inner[d - 1]->n == INNER_MAX) {
    d--;
  }
  n_spare = m->depth - d + (d == 0 ? 1 : 0);
  right = leaf_new(p->leaf->bytes - at);
  for (used = 0; right != NULL && used < n_spare; used++) {
    spare[used] = malloc(sizeof(mem_inner));
    if (spare[used] == NULL) {
      break;
    }
  }
  if (right == NULL || used < n_spare) {
    while (used-- > 0) {
      free(spare[used]);
    }
    free(right);
    return;
  }

  right->bytes = p->leaf->bytes - at;
  right->n = p->leaf->n - n_left;
  memcpy(right->data, p->leaf->data + at, right->bytes);
  path_set_leaf(m, p, leaf_realloc(p->leaf, at)); /* a shrink: never NULL */
  p->leaf->bytes = at;
  p->leaf->n = n_left;
  sep = *rec_id(right->data);
  child = right;

  /* Hang child (ids from sep on) right of the node on the path at each
   * level, splitting full nodes on the way up. */
  used = 0;
  for (d = m->depth; d-- > 0;) {
    mem_inner *in = p->inner[d];
    size_t pos = p->idx[d] + 1;
    mem_inner *sib;
    dht_id up;

    if (in->n < INNER_MAX) {
      inner_insert(in, pos, &sep, child);
      return;
    }
    sib = spare[used++];
    inner_split(in, sib, &up);
    if (pos <= in->n) {
      inner_insert(in, pos, &sep, child);
    } else {
      inner_insert(sib, pos - in->n, &sep, child);
    }
    sep = up;
    child = sib;
  }
  {
    mem_inner *root = spare[used++];
    root->n = 2;
    root->child[0] = m->root;
    root->child[1] = child;
    root->sep[0] = sep;
    assert(m->depth < DEPTH_MAX);
    m->root = root;
    m->depth++;
  }
  assert(used == n_spare);
}

/* After p's inner node at depth d lost a child: collapses a root with one
 * child, or refills a node below INNER_MIN from a neighbour (merging with
 * it when both fit in one node, which may empty the level above too). */
static void fix_inner(mem_store *m, mem_path *p, unsigned d) {
  for (;;) {
    mem_inner *in = p->inner[d];
    mem_inner *parent, *left, *right;
    size_t i;

    if (d == 0) {
      if (in->n == 1) {
        m->root = in->child[0];
        m->depth--;
        free(in);
      }
      return;
    }
    if (in->n >= INNER_MIN) {
      return;
    }
    parent = p->inner[d - 1];
    i = p->idx[d - 1];
    /* The pair to rebalance: in and its right neighbour, or its left one
     * when it is the last child. */
    if (i + 1 < parent->n) {
      left = in;
      right = parent->child[i + 1];
    } else {
      i--;
      left = parent->child[i];
      right = in;
    }
    if (left->n + right->n <= INNER_MAX) {
      inner_merge(left, right, &parent->sep[i]);
      free(right);
      inner_remove(parent, i + 1);
      d--;
      continue;
    }
    /* The other one has more than enough: move one child across. */
    if (right == in) {
      memmove(&in->child[1], &in->child[0], in->n * sizeof(in->child[0]));
      memmove(&in->sep[1], &in->sep[0], (in->n - 1) * sizeof(in->sep[0]));
      in->child[0] = left->child[left->n - 1];
      in->sep[0] = parent->sep[i];
      parent->sep[i] = left->sep[left->n - 2];
      left->n--;
    } else {
      in->child[in->n] = right->child[0];
      in->sep[in->n - 1] = parent->sep[i];
      parent->sep[i] = right->sep[0];
      memmove(&right->child[0], &right->child[1],
              (right->n - 1) * sizeof(right->child[0]));
      memmove(&right->sep[0], &right->sep[1],
              (right->n - 2) * sizeof(right->sep[0]));
      right->n--;
    }
    in->n++;
    return;
  }
}

/* After a delete from p's leaf: drops the leaf when it is empty, or merges
 * it with a neighbour when it is small and the two fit in one leaf. The
 * root leaf stays, empty or not. */
static void shrink_leaf(mem_store *m, mem_path *p) {
  mem_inner *parent;
  mem_leaf *left, *right, *merged;
  size_t i;

  if (m->depth == 0) {
    return;
  }
  parent = p->inner[m->depth - 1];
  i = p->idx[m->depth - 1];
  if (p->leaf->n == 0) {
    free(p->leaf);
    inner_remove(parent, i);
    fix_inner(m, p, m->depth - 1);
    return;
  }
  if (p->leaf->bytes >= LEAF_BYTES_MERGE) {
    return;
  }
  /* The pair: the leaf and its right neighbour if they fit together, else
   * its left one if those fit. */
  if (i + 1 < parent->n &&
      p->leaf->bytes + ((mem_leaf *)parent->child[i + 1])->bytes <=
          LEAF_BYTES_MAX) {
    left = p->leaf;
    right = parent->child[i + 1];
  } else if (i > 0 &&
             p->leaf->bytes + ((mem_leaf *)parent->child[i - 1])->bytes <=
                 LEAF_BYTES_MAX) {
    i--;
    left = parent->child[i];
    right = p->leaf;
  } else {
    return;
  }
  merged = leaf_realloc(left, left->bytes + right->bytes);
  if (merged == NULL) {
    return; /* stays small: correct, a little slower */
  }
  memcpy(merged->data + merged->bytes, right->data, right->bytes);
  merged->bytes += right->bytes;
  merged->n += right->n;
  parent->child[i] = merged;
  free(right);
  inner_remove(parent, i + 1);
  fix_inner(m, p, m->depth - 1);
}

/* ---- the dht_store operations -------------------------------------------- */

static int mem_get(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t **value, size_t *value_len) {
  mem_store *m = mem_of(st);
  mem_path p;
  bool found;
  const uint8_t *r;

  assert(key != NULL && key_len >= 1);
  assert(value != NULL && value_len != NULL);
  path_to(m, key_id, &p);
  p.off = leaf_find(p.leaf, key_id, key, key_len, &found);
  if (!found) {
    return DHT_ERR_NOT_FOUND;
  }
  r = p.leaf->data + p.off;
  *value = rec_value(r);
  *value_len = rec_value_len(r);
  return 0;
}

static int mem_put(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len, const uint8_t *value, size_t value_len) {
  mem_store *m = mem_of(st);
  mem_leaf *l;
  mem_path p;
  size_t old_size = 0, new_size, tail;
  bool found;

  assert(key != NULL && key_len >= 1);
  assert(value != NULL || value_len == 0);
  assert(!m->scanning && "the store must not be modified during a scan");
  if (key_len > UINT32_MAX || value_len > UINT32_MAX ||
      key_len + value_len > SIZE_MAX / 2) {
    m->errmsg = "a key or value of 4 GiB or more";
    return DHT_ERR_TOO_LARGE;
  }
  new_size = REC_HDR + key_len + value_len;
  path_to(m, key_id, &p);
  p.off = leaf_find(p.leaf, key_id, key, key_len, &found);
  if (found) {
    old_size = rec_size(p.leaf->data + p.off);
  }
  tail = p.leaf->bytes - p.off - old_size;
  if (new_size >= old_size) {
    l = leaf_realloc(p.leaf, p.leaf->bytes - old_size + new_size);
    if (l == NULL) {
      m->errmsg = "out of memory";
      return DHT_ERR_NOMEM;
    }
    path_set_leaf(m, &p, l);
    memmove(l->data + p.off + new_size, l->data + p.off + old_size, tail);
  } else {
    l = p.leaf;
    memmove(l->data + p.off + new_size, l->data + p.off + old_size, tail);
    path_set_leaf(m, &p, leaf_realloc(l, l->bytes - old_size + new_size));
    l = p.leaf;
  }
  rec_write(l->data + p.off, key_id, key, key_len, value, value_len);
  l->bytes = l->bytes - old_size + new_size;
  if (!found) {
    l->n++;
    m->count++;
  }
  if (l->bytes > LEAF_BYTES_MAX) {
    split_leaf(m, &p);
  }
  return 0;
}

static int mem_del(dht_store *st, const dht_id *key_id, const uint8_t *key,
                   size_t key_len) {
  mem_store *m = mem_of(st);
  mem_leaf *l;
  mem_path p;
  size_t size;
  bool found;

  assert(key != NULL && key_len >= 1);
  assert(!m->scanning && "the store must not be modified during a scan");
  path_to(m, key_id, &p);
  p.off = leaf_find(p.leaf, key_id, key, key_len, &found);
  if (!found) {
    return DHT_ERR_NOT_FOUND;
  }
  l = p.leaf;
  size = rec_size(l->data + p.off);
  memmove(l->data + p.off, l->data + p.off + size, l->bytes - p.off - size);
  path_set_leaf(m, &p, leaf_realloc(l, l->bytes - size));
  p.leaf->bytes -= size;
  p.leaf->n--;
  m->count--;
  shrink_leaf(m, &p);
  return 0;
}

/* Visits the records whose id is above after (after NULL: from the first
 * record) and at most hi (hi NULL: to the last), setting *stopped when cb
 * asks to stop. */
static void scan_run(const mem_store *m, const dht_id *after, const dht_id *hi,
                     dht_store_scan_cb cb, void *ud, bool *stopped) {
  mem_path p;

  if (after != NULL) {
    path_to(m, after, &p);
    p.off = leaf_after_id(p.leaf, after);
  } else {
    path_first(m, &p);
  }
  for (;;) {
    const uint8_t *r;

    while (p.off == p.leaf->bytes) {
      if (!path_next_leaf(m, &p)) {
        return;
      }
    }
    r = p.leaf->data + p.off;
    if (hi != NULL && dht_id_cmp(rec_id(r), hi) > 0) {
      return;
    }
    if (cb(ud, rec_id(r), rec_key(r), rec_key_len(r), rec_value(r),
           rec_value_len(r)) != 0) {
      *stopped = true;
      return;
    }
    p.off += rec_size(r);
  }
}

static int mem_scan(dht_store *st, const dht_id *from, const dht_id *to,
                    dht_store_scan_cb cb, void *ud) {
  mem_store *m = mem_of(st);
  bool stopped = false;

  assert(cb != NULL);
  assert(!m->scanning && "scans do not nest");
  m->scanning = true;
  if (dht_id_cmp(from, to) < 0) {
    scan_run(m, from, to, cb, ud, &stopped);
  } else {
    /* Wrapping, or from == to (the whole ring): the ids above from, then
     * those up to to, so the records at from itself come last. */
    scan_run(m, from, NULL, cb, ud, &stopped);
    if (!stopped) {
      scan_run(m, NULL, to, cb, ud, &stopped);
    }
  }
  m->scanning = false;
  return 0;
}

static size_t mem_count(dht_store *st) { return mem_of(st)->count; }

/* Frees node, at depth levels of inner nodes above the leaves, and all
 * below it. */
static void free_node(void *node, unsigned depth) {
  if (depth > 0) {
    mem_inner *in = node;
    size_t i;
    for (i = 0; i < in->n; i++) {
      free_node(in->child[i], depth - 1);
    }
  }
  free(node);
}

static void mem_del_store(dht_store *st) {
  mem_store *m = mem_of(st);

  free_node(m->root, m->depth);
  free(m);
}

static const char *mem_errmsg(dht_store *st) { return mem_of(st)->errmsg; }

static const dht_store_ops mem_ops = {
    .get = mem_get,
    .put = mem_put,
    .del = mem_del,
    .scan = mem_scan,
    .count = mem_count,
    .del_store = mem_del_store,
    .errmsg = mem_errmsg,
};

dht_store *dht_store_mem_new(void) {
  mem_store *m = calloc(1, sizeof(*m));

  if (m == NULL) {
    return NULL;
  }
  m->root = leaf_new(0);
  if (m->root == NULL) {
    free(m);
    return NULL;
  }
  m->base.ops = &mem_ops;
  m->errmsg = "";
  return &m->base;
}
