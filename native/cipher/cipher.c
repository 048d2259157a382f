/*
 * AES-256-GCM (and the AES-256-CTR that reads a range of a GCM ciphertext) into buffers the
 * caller owns: in place or into another buffer, never into a new one. node:crypto hands back a
 * fresh buffer per update, memory outside the JS heap that only a full collection returns;
 * sealing and opening here allocates nothing the caller can see. The *Async forms run on
 * libuv's thread pool, so a whole chunk is neither encrypted nor decrypted on the JS thread.
 *
 * OpenSSL is not linked at build time: its functions are looked up as the addon loads, first in
 * the process (Node bundles OpenSSL 3 and exports its symbols; Debian's Node links the system's
 * libcrypto.so.3), else in the system's libcrypto.so.3 opened privately (Electron ships
 * BoringSSL and exports no OpenSSL names). The addon refuses to load (and the engine keeps to
 * node:crypto, chunk/cipherAddon.ts) when neither gives OpenSSL 3, or when the process exports
 * EVP names that are not OpenSSL 3's. The few declarations used are written out below (stable
 * ABI of OpenSSL 3), so no OpenSSL headers are needed to build.
 *
 * Opening: the tag is checked by EVP_DecryptFinal_ex (in constant time). When it fails, the
 * output is wiped before anything returns, so unauthenticated plaintext never reaches a caller.
 * Output and input are either the same bytes (in place) or disjoint; a partial overlap is refused.
 *
 * Also here, for the same callers: `writeDirectAsync`, which writes a cache file opened with
 * O_DIRECT (see its comment below).
 *
 * Node-API 8 only (ABI-stable): one binary loads in Node 20, Node 22 and Electron.
 */
#define NAPI_VERSION 8
#include <node_api.h>

#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;
typedef struct evp_cipher_st EVP_CIPHER;

#define EVP_CTRL_GCM_SET_IVLEN 0x9
#define EVP_CTRL_GCM_GET_TAG 0x10
#define EVP_CTRL_GCM_SET_TAG 0x11

static struct {
  EVP_CIPHER_CTX *(*ctx_new)(void);
  void (*ctx_free)(EVP_CIPHER_CTX *);
  EVP_CIPHER *(*fetch)(void *, const char *, const char *);
  int (*ctx_ctrl)(EVP_CIPHER_CTX *, int, int, void *);
  int (*enc_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *, const unsigned char *, const unsigned char *);
  int (*enc_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
  int (*enc_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
  int (*dec_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, void *, const unsigned char *, const unsigned char *);
  int (*dec_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
  int (*dec_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
  unsigned long (*version_num)(void);
  void (*cleanse)(void *, size_t);
  const EVP_CIPHER *gcm;
  const EVP_CIPHER *ctr;
  const char *source;
} ossl;

/*
 * Optional, for the upload path (OPEN_UNITS_NAME, SEAL_SEGMENTS): HMAC-SHA256 from the same
 * OpenSSL, and zlib's crc32 and compress2 (the process's, else the system's libz.so.1; crc32
 * checked against a known value before it is trusted). When one is missing, the ops that need it are not offered
 * and the engine does that work on its own thread (chunk/cipherAddon.ts).
 */
static struct {
  unsigned char *(*hmac)(const void *md, const void *key, int key_len, const unsigned char *data, size_t len,
                         unsigned char *out, unsigned int *out_len);
  const void *(*sha256)(void);
  unsigned long (*crc32)(unsigned long crc, const unsigned char *buf, unsigned int len);
  int (*compress2)(unsigned char *dst, unsigned long *dst_len, const unsigned char *src, unsigned long src_len, int level);
  unsigned long (*compress_bound)(unsigned long src_len);
} extra;

#define SYMBOLS(X)                                   \
  X(ctx_new, "EVP_CIPHER_CTX_new")                   \
  X(ctx_free, "EVP_CIPHER_CTX_free")                 \
  X(fetch, "EVP_CIPHER_fetch")                       \
  X(ctx_ctrl, "EVP_CIPHER_CTX_ctrl")                 \
  X(enc_init, "EVP_EncryptInit_ex")                  \
  X(enc_update, "EVP_EncryptUpdate")                 \
  X(enc_final, "EVP_EncryptFinal_ex")                \
  X(dec_init, "EVP_DecryptInit_ex")                  \
  X(dec_update, "EVP_DecryptUpdate")                 \
  X(dec_final, "EVP_DecryptFinal_ex")                \
  X(version_num, "OpenSSL_version_num")              \
  X(cleanse, "OPENSSL_cleanse")

/* Fills `ossl` from `handle`; 0 when a symbol is missing or the library is not OpenSSL 3. */
static int resolve(void *handle) {
#define LOOKUP(field, name)                                   \
  *(void **)(&ossl.field) = dlsym(handle, name);              \
  if (ossl.field == NULL) return 0;
  SYMBOLS(LOOKUP)
#undef LOOKUP
  if ((ossl.version_num() >> 28) < 3) return 0;
  *(void **)(&extra.hmac) = dlsym(handle, "HMAC");
  *(void **)(&extra.sha256) = dlsym(handle, "EVP_sha256");
  ossl.gcm = ossl.fetch(NULL, "AES-256-GCM", NULL);
  ossl.ctr = ossl.fetch(NULL, "AES-256-CTR", NULL);
  return ossl.gcm != NULL && ossl.ctr != NULL;
}

/* NULL when OpenSSL 3 was found, else why not. */
static const char *load_openssl(void) {
  if (ossl.gcm != NULL) return NULL;
  if (dlsym(RTLD_DEFAULT, "EVP_EncryptInit_ex") != NULL) {
    /* The process has EVP names: they are the ones any library loaded now would bind to. */
    if (resolve(RTLD_DEFAULT)) {
      ossl.source = "process";
      return NULL;
    }
    return "the process exports EVP functions that are not OpenSSL 3's";
  }
  void *lib = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) return "no OpenSSL 3 in the process and no libcrypto.so.3";
  if (resolve(lib)) {
    ossl.source = "libcrypto.so.3";
    return NULL;
  }
  return "libcrypto.so.3 lacks a needed function";
}

/* zlib's crc32, compress2 and compressBound from one zlib, if its crc32 gives the standard answer. */
static void load_zlib(void) {
  static const unsigned char probe[] = "123456789";
  void *z = RTLD_DEFAULT; /* a null handle itself */
  if (dlsym(z, "crc32") == NULL || dlsym(z, "compress2") == NULL || dlsym(z, "compressBound") == NULL) {
    z = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (z == NULL) return;
  }
  *(void **)(&extra.crc32) = dlsym(z, "crc32");
  *(void **)(&extra.compress2) = dlsym(z, "compress2");
  *(void **)(&extra.compress_bound) = dlsym(z, "compressBound");
  if (extra.crc32 == NULL || extra.compress2 == NULL || extra.compress_bound == NULL ||
      extra.crc32(0, probe, 9) != 0xCBF43926UL)
    extra.crc32 = NULL;
}

/* ---- the operations, on plain memory (any thread) ---- */

/*
 * GMAC_UNITS: the codes of a received cache file (electron/engine/cache/received.ts). For each
 * unit u of `src` (UNIT bytes each, the last shorter), the GMAC under `key` with the nonce at
 * table[u * 28] of `aad` (with u written big-endian at its bytes 16..19) then the unit, into
 * table[u * 28 + 12 .. + 16].
 *
 * OPEN_SEGMENTS: segments first, first+1, ... of an FSC2 chunk object of `count` segments
 * (electron/engine/chunk/format.ts), stored back to back in `src` (each `nonce(12) |
 * ciphertext | tag(16)`, every one but the last SEGMENT_STORED bytes), each opened with the
 * associated data `aad` (the prefix "chunkseg:<name>:") followed by "<index>:<count>" in
 * decimal, into `dst` at SEGMENT_BYTES per segment. One job for a whole chunk, instead of one
 * per segment: what a job costs the JS thread (a callback, a promise) is paid once. If any
 * segment fails, all of `dst` is wiped.
 *
 * SEAL_UNITS: units of a sealed cache file (electron/engine/cache/sealed.ts) for a write, n in
 * one job: unit k's plaintext srcs[k] sealed into dsts[k] as `nonce(12) | ciphertext | tag(16)`,
 * with the nonce at spec[k * 16 + 4] and the associated data `aad` (20 bytes: the file's id
 * and 4 bytes replaced by the unit's index, big-endian, from spec[k * 16]). One job (one
 * callback, one promise) for a megabyte of units instead of sixteen.
 *
 * OPEN_UNITS_NAME: a dirty chunk on its way to S3 (electron/engine/upload/encoder.ts). `dst`
 * holds the sealed units first, first+1, ... of a sealed cache file as read from it (each
 * `nonce(12) | ciphertext | tag(16)`, every one but the last UNIT_BYTES + 28 bytes), `aad` the
 * file's 20-byte unit prefix (its id, then 4 bytes replaced by each unit's index, big-endian).
 * Each unit is opened in place and its data moved down to (index - first) * UNIT_BYTES, as
 * openSealedUnits in cache/sealed.ts does; then the data is named: HMAC-SHA256 under the key
 * `aad2` into `tag` (32 bytes). If any unit fails, all of `dst` is wiped and no name is made.
 *
 * SEAL_SEGMENTS: the FSC2 object of a chunk (chunk/format.ts writeSegmented) into `dst`, whose
 * first bytes (the header, written by the caller) are kept: segment k of the plaintext `src`
 * (SEGMENT_BYTES each, the last shorter; an empty chunk has one, empty) is sealed with the
 * nonce at iv[k * 12] and the associated data `aad` (the prefix "chunkseg:<name>:") followed by
 * "<k>:<count>", and stored as `nonce | ciphertext | tag` back to back to the end of `dst`. Then
 * the CRC32 of all of `dst`, header included, goes big-endian into the 4 bytes after the nonces.
 * With a sample size (`sample`, > 0), the first that many bytes of `src` are deflated first
 * (zlib, level 1, as chunk/format.ts samples a chunk): if they shrink to 7/8 or less, nothing is
 * sealed and the job says so (ok 2): the caller deflates the chunk instead.
 */
enum op { SEAL, OPEN, GMAC, CTR, GMAC_UNITS, OPEN_SEGMENTS, SEAL_UNITS, OPEN_UNITS_NAME, SEAL_SEGMENTS };

typedef struct {
  const uint8_t *src;
  size_t len;
  uint8_t *dst;
} seal_unit;

#define UNIT_BYTES 65536
#define UNIT_ENTRY 28
#define SEGMENT_BYTES 65536
#define SEAL_OVERHEAD 28
#define SEGMENT_STORED (SEGMENT_BYTES + SEAL_OVERHEAD)
#define SEGMENT_PREFIX_MAX 256

typedef struct {
  enum op op;
  const uint8_t *key, *iv, *aad, *aad2, *src;
  size_t aad_len, aad2_len, len;
  uint8_t *dst, *tag; /* tag: written by SEAL and GMAC, read by OPEN; the unit table for GMAC_UNITS */
  size_t tag_len;
  size_t dst_len;            /* OPEN_SEGMENTS: dst's length (shorter than src's) */
  size_t seg_first, seg_count; /* OPEN_SEGMENTS */
  size_t sample;               /* SEAL_SEGMENTS: bytes to try deflating first (0: none) */
  seal_unit *units;            /* SEAL_UNITS (malloc'd; freed with the job) */
  size_t nunits;
  int ok;
} job;

/* Feeds `len` bytes through update in pieces an int can count. */
static int update_all(int (*update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int),
                      EVP_CIPHER_CTX *c, uint8_t *dst, const uint8_t *src, size_t len) {
  const size_t step = (size_t)1 << 30;
  for (size_t at = 0; at < len; at += step) {
    size_t n = len - at < step ? len - at : step;
    int out = 0;
    if (!update(c, dst == NULL ? NULL : dst + at, &out, src + at, (int)n) || (size_t)out != n) return 0;
  }
  return 1;
}

/*
 * AES-256-GCM under key and iv over the associated data a then b (either may be empty) and the
 * plaintext src (len bytes, into dst; none for a GMAC), the tag into tag.
 */
static int seal_one(EVP_CIPHER_CTX *c, const uint8_t *key, const uint8_t *iv, const uint8_t *a, size_t an,
                    const uint8_t *b, size_t bn, const uint8_t *src, size_t len, uint8_t *dst, uint8_t *tag) {
  int fin = 0;
  uint8_t scratch[16];
  if (!ossl.enc_init(c, ossl.gcm, NULL, NULL, NULL) || !ossl.ctx_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) ||
      !ossl.enc_init(c, NULL, NULL, key, iv))
    return 0;
  if (an > 0 && !update_all(ossl.enc_update, c, NULL, a, an)) return 0;
  if (bn > 0 && !update_all(ossl.enc_update, c, NULL, b, bn)) return 0;
  if (len > 0 && !update_all(ossl.enc_update, c, dst, src, len)) return 0;
  if (!ossl.enc_final(c, scratch, &fin) || fin != 0) return 0;
  return ossl.ctx_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
}

static void run_gmac_units(job *j) {
  uint8_t prefix[128];
  size_t units = (j->len + UNIT_BYTES - 1) / UNIT_BYTES;
  j->ok = 0;
  if (j->aad_len > sizeof prefix || j->aad_len < 20 || j->tag_len != units * UNIT_ENTRY) return;
  EVP_CIPHER_CTX *c = ossl.ctx_new();
  if (c == NULL) return;
  memcpy(prefix, j->aad, j->aad_len);
  int ok = 1;
  for (size_t u = 0; u < units && ok; u++) {
    size_t from = u * UNIT_BYTES;
    size_t n = j->len - from < UNIT_BYTES ? j->len - from : UNIT_BYTES;
    prefix[16] = (uint8_t)(u >> 24);
    prefix[17] = (uint8_t)(u >> 16);
    prefix[18] = (uint8_t)(u >> 8);
    prefix[19] = (uint8_t)u;
    uint8_t *entry = j->tag + u * UNIT_ENTRY;
    ok = seal_one(c, j->key, entry, prefix, j->aad_len, j->src + from, n, NULL, 0, NULL, entry + 12);
  }
  ossl.ctx_free(c);
  j->ok = ok;
}

static int open_one(EVP_CIPHER_CTX *c, const uint8_t *key, const uint8_t *iv, const uint8_t *aad, size_t aad_len,
                    const uint8_t *src, size_t len, uint8_t *dst, const uint8_t *tag) {
  int fin = 0;
  uint8_t scratch[16];
  if (!ossl.dec_init(c, ossl.gcm, NULL, NULL, NULL) || !ossl.ctx_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) ||
      !ossl.dec_init(c, NULL, NULL, key, iv))
    return 0;
  if (!ossl.ctx_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)tag)) return 0;
  if (aad_len > 0 && !update_all(ossl.dec_update, c, NULL, aad, aad_len)) return 0;
  if (len > 0 && !update_all(ossl.dec_update, c, dst, src, len)) return 0;
  return ossl.dec_final(c, scratch, &fin) == 1 && fin == 0;
}

/* Writes n in decimal at out; returns the digits written. */
static size_t decimal(size_t n, char *out) {
  char rev[24];
  size_t k = 0;
  do {
    rev[k++] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);
  for (size_t i = 0; i < k; i++) out[i] = rev[k - 1 - i];
  return k;
}

static void run_open_segments(job *j) {
  char aad[SEGMENT_PREFIX_MAX + 48];
  size_t n = (j->len + SEGMENT_STORED - 1) / SEGMENT_STORED;
  j->ok = 0;
  /* read_job checked the sizes; checked again here, as this runs on plain memory. */
  if (n == 0 || j->aad_len > SEGMENT_PREFIX_MAX || j->seg_first + n > j->seg_count ||
      j->dst_len != j->len - n * SEAL_OVERHEAD) {
    if (j->dst_len > 0) ossl.cleanse(j->dst, j->dst_len);
    return;
  }
  EVP_CIPHER_CTX *c = ossl.ctx_new();
  if (c == NULL) {
    if (j->dst_len > 0) ossl.cleanse(j->dst, j->dst_len);
    return;
  }
  memcpy(aad, j->aad, j->aad_len);
  char count[24];
  size_t count_len = decimal(j->seg_count, count);
  int ok = 1;
  for (size_t k = 0; k < n && ok; k++) {
    const uint8_t *seg = j->src + k * SEGMENT_STORED;
    size_t left = j->len - k * SEGMENT_STORED;
    size_t stored = left < SEGMENT_STORED ? left : SEGMENT_STORED;
    if (stored < SEAL_OVERHEAD) {
      ok = 0;
      break;
    }
    size_t at = j->aad_len;
    at += decimal(j->seg_first + k, aad + at);
    aad[at++] = ':';
    memcpy(aad + at, count, count_len);
    at += count_len;
    ok = open_one(c, j->key, seg, (const uint8_t *)aad, at, seg + 12, stored - SEAL_OVERHEAD,
                  j->dst + k * SEGMENT_BYTES, seg + stored - 16);
  }
  ossl.ctx_free(c);
  j->ok = ok;
  /* A failed open leaves nothing of what was written, of any segment. */
  if (!ok && j->dst_len > 0) ossl.cleanse(j->dst, j->dst_len);
}

static void run_seal_units(job *j) {
  uint8_t aad[20];
  j->ok = 0;
  if (j->aad_len != sizeof aad) return;
  EVP_CIPHER_CTX *c = ossl.ctx_new();
  if (c == NULL) return;
  memcpy(aad, j->aad, sizeof aad);
  int ok = 1;
  for (size_t k = 0; k < j->nunits && ok; k++) {
    const uint8_t *spec = j->iv + k * 16;
    const seal_unit *u = &j->units[k];
    memcpy(aad + 16, spec, 4);
    memcpy(u->dst, spec + 4, 12);
    ok = seal_one(c, j->key, u->dst, aad, sizeof aad, NULL, 0, u->src, u->len, u->dst + 12, u->dst + 12 + u->len);
  }
  ossl.ctx_free(c);
  j->ok = ok;
}

static void run_open_units_name(job *j) {
  uint8_t aad[20];
  size_t data = 0, off = 0, i = j->seg_first;
  int ok = j->aad_len == sizeof aad && extra.hmac != NULL && extra.sha256 != NULL;
  j->ok = 0;
  EVP_CIPHER_CTX *c = ok ? ossl.ctx_new() : NULL;
  if (c == NULL) ok = 0;
  if (ok) memcpy(aad, j->aad, sizeof aad);
  while (ok && off < j->len) {
    size_t left = j->len - off;
    size_t n = left < UNIT_BYTES + SEAL_OVERHEAD ? left : UNIT_BYTES + SEAL_OVERHEAD;
    if (n <= SEAL_OVERHEAD) {
      ok = 0;
      break;
    }
    aad[16] = (uint8_t)(i >> 24);
    aad[17] = (uint8_t)(i >> 16);
    aad[18] = (uint8_t)(i >> 8);
    aad[19] = (uint8_t)i;
    uint8_t *u = j->dst + off;
    ok = open_one(c, j->key, u, aad, sizeof aad, u + 12, n - SEAL_OVERHEAD, u + 12, u + n - 16);
    if (ok) memmove(j->dst + data, u + 12, n - SEAL_OVERHEAD);
    data += n - SEAL_OVERHEAD;
    off += n;
    i++;
  }
  if (c != NULL) ossl.ctx_free(c);
  unsigned int md_len = 0;
  if (ok && (extra.hmac(extra.sha256(), j->aad2, (int)j->aad2_len, j->dst, data, j->tag, &md_len) == NULL || md_len != 32))
    ok = 0;
  if (!ok) {
    /* Nothing of what was opened stays readable. */
    if (j->len > 0) ossl.cleanse(j->dst, j->len);
    return;
  }
  j->dst_len = data;
  j->ok = 1;
}

static void run_seal_segments(job *j) {
  char aad[SEGMENT_PREFIX_MAX + 48];
  size_t count = j->seg_count;
  size_t head = j->dst_len - (j->len + count * SEAL_OVERHEAD); /* read_job checked the room */
  j->ok = 0;
  if (extra.crc32 == NULL || j->aad_len > SEGMENT_PREFIX_MAX) return;
  if (j->sample > 0) {
    /* The deflated sample without zlib's 2-byte header and 4-byte trailer: raw deflate's length. */
    unsigned long n = j->sample < j->len ? j->sample : j->len;
    unsigned long room = extra.compress_bound(n);
    uint8_t *tmp = malloc(room);
    if (tmp == NULL) return;
    int z = extra.compress2(tmp, &room, j->src, n, 1);
    free(tmp);
    if (z != 0) return;
    if (room >= 6 && (room - 6) * 8 <= n * 7) {
      j->ok = 2;
      return;
    }
  }
  EVP_CIPHER_CTX *c = ossl.ctx_new();
  if (c == NULL) return;
  memcpy(aad, j->aad, j->aad_len);
  char count_text[24];
  size_t count_len = decimal(count, count_text);
  int ok = 1;
  uint8_t *o = j->dst + head;
  for (size_t k = 0; k < count && ok; k++) {
    size_t from = k * SEGMENT_BYTES;
    size_t n = j->len - from < SEGMENT_BYTES ? j->len - from : SEGMENT_BYTES;
    size_t at = j->aad_len;
    at += decimal(k, aad + at);
    aad[at++] = ':';
    memcpy(aad + at, count_text, count_len);
    at += count_len;
    memcpy(o, j->iv + k * 12, 12);
    ok = seal_one(c, j->key, o, (const uint8_t *)aad, at, NULL, 0, j->src + from, n, o + 12, o + 12 + n);
    o += n + SEAL_OVERHEAD;
  }
  ossl.ctx_free(c);
  if (!ok) return;
  unsigned long crc = extra.crc32(0, NULL, 0);
  const size_t step = (size_t)1 << 30;
  for (size_t at = 0; at < j->dst_len; at += step) {
    size_t n = j->dst_len - at < step ? j->dst_len - at : step;
    crc = extra.crc32(crc, j->dst + at, (unsigned int)n);
  }
  uint8_t *crc_out = j->tag;
  crc_out[0] = (uint8_t)(crc >> 24);
  crc_out[1] = (uint8_t)(crc >> 16);
  crc_out[2] = (uint8_t)(crc >> 8);
  crc_out[3] = (uint8_t)crc;
  j->ok = 1;
}

static void run(job *j) {
  /* The batch ops have functions of their own; the single-blob ops follow. */
  void (*batch)(job *) = j->op == OPEN_UNITS_NAME ? run_open_units_name
                         : j->op == SEAL_SEGMENTS ? run_seal_segments
                         : j->op == SEAL_UNITS    ? run_seal_units
                         : j->op == GMAC_UNITS    ? run_gmac_units
                         : j->op == OPEN_SEGMENTS ? run_open_segments
                                                  : NULL;
  if (batch != NULL) {
    batch(j);
    return;
  }
  j->ok = 0;
  EVP_CIPHER_CTX *c = ossl.ctx_new();
  if (c == NULL) return;
  int fin = 0;
  uint8_t scratch[16];
  switch (j->op) {
    case GMAC_UNITS: /* run_gmac_units */
    case OPEN_SEGMENTS: /* run_open_segments */
    case SEAL_UNITS: /* run_seal_units */
    case OPEN_UNITS_NAME: /* run_open_units_name */
    case SEAL_SEGMENTS: /* run_seal_segments */
      break;
    case SEAL:
    case GMAC:
      j->ok = seal_one(c, j->key, j->iv, j->aad, j->aad_len, j->aad2, j->aad2_len, j->src, j->len, j->dst, j->tag);
      break;
    case OPEN:
      if (!ossl.dec_init(c, ossl.gcm, NULL, NULL, NULL) || !ossl.ctx_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) ||
          !ossl.dec_init(c, NULL, NULL, j->key, j->iv))
        break;
      if (!ossl.ctx_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, (void *)j->tag)) break;
      if (j->aad_len > 0 && !update_all(ossl.dec_update, c, NULL, j->aad, j->aad_len)) break;
      if (j->len > 0 && !update_all(ossl.dec_update, c, j->dst, j->src, j->len)) break;
      j->ok = ossl.dec_final(c, scratch, &fin) == 1 && fin == 0;
      break;
    case CTR:
      if (!ossl.enc_init(c, ossl.ctr, NULL, j->key, j->iv)) break;
      if (j->len > 0 && !update_all(ossl.enc_update, c, j->dst, j->src, j->len)) break;
      j->ok = 1;
      break;
  }
  ossl.ctx_free(c);
  /* A failed open (or any failure) leaves nothing of what was written. */
  if (!j->ok && j->dst != NULL && j->len > 0) ossl.cleanse(j->dst, j->len);
}

/* ---- arguments ---- */

#define CHECK(call)                                                     \
  do {                                                                  \
    if ((call) != napi_ok) {                                            \
      napi_throw_error(env, NULL, "cipher addon: a Node-API call failed"); \
      return NULL;                                                      \
    }                                                                   \
  } while (0)

/* The bytes of a Buffer or any typed array / ArrayBuffer view; 0 (and a thrown TypeError) otherwise. */
static int bytes_of(napi_env env, napi_value v, const char *what, uint8_t **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) == napi_ok && is) {
    void *p;
    if (napi_get_buffer_info(env, v, &p, len) != napi_ok) goto bad;
    *data = p;
    return 1;
  }
  if (napi_is_typedarray(env, v, &is) == napi_ok && is) {
    napi_typedarray_type t;
    size_t n, off;
    void *p;
    napi_value ab;
    if (napi_get_typedarray_info(env, v, &t, &n, &p, &ab, &off) != napi_ok || t != napi_uint8_array) goto bad;
    *data = p;
    *len = n;
    return 1;
  }
bad:
  napi_throw_type_error(env, NULL, what);
  return 0;
}

static int disjoint_or_same(const uint8_t *a, const uint8_t *b, size_t n) {
  return a == b || a + n <= b || b + n <= a || n == 0;
}

/*
 * Reads (key, iv, aad, [aad2,] src, dst, tag) for `op` from argv into `j`; 0 when something is
 * wrong (an exception is then pending).
 */
/* A whole number in [0, 2^32) from a JS number; 0 (and a thrown RangeError) otherwise. */
static int count_of(napi_env env, napi_value v, const char *what, size_t *out) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok || !(d >= 0 && d < 4294967296.0) || d != (double)(uint32_t)d) {
    napi_throw_range_error(env, NULL, what);
    return 0;
  }
  *out = (size_t)d;
  return 1;
}

/* The bytes of element k of the array `arr`; 0 (and a thrown TypeError) otherwise. */
static int element_bytes(napi_env env, napi_value arr, uint32_t k, const char *what, uint8_t **data, size_t *len) {
  napi_value v;
  if (napi_get_element(env, arr, k, &v) != napi_ok) return napi_throw_type_error(env, NULL, what), 0;
  return bytes_of(env, v, what, data, len);
}

static int read_job(napi_env env, enum op op, napi_value *argv, size_t argc, job *j) {
  size_t want = op == GMAC || op == SEAL_UNITS ? 5 : op == CTR || op == GMAC_UNITS ? 4 : 6;
  memset(j, 0, sizeof *j);
  j->op = op;
  /* Every op: enough arguments, and the key first. */
  if (argc < want) return napi_throw_type_error(env, NULL, "cipher addon: too few arguments"), 0;
  uint8_t *key;
  size_t key_len;
  if (!bytes_of(env, argv[0], "key: bytes expected", &key, &key_len)) return 0;
  if (key_len != 32) return napi_throw_range_error(env, NULL, "key: 32 bytes expected"), 0;
  j->key = key;
  if (op == OPEN_UNITS_NAME) {
    /* (key, aad, nameKey, buf, first, name) */
    uint8_t *p, *b;
    size_t n, bn;
    if (!bytes_of(env, argv[1], "aad: bytes expected", &p, &n)) return 0;
    if (n != 20) return napi_throw_range_error(env, NULL, "aad: 20 bytes expected"), 0;
    j->aad = p;
    j->aad_len = n;
    if (!bytes_of(env, argv[2], "nameKey: bytes expected", &p, &n)) return 0;
    if (n == 0 || n > 1024) return napi_throw_range_error(env, NULL, "nameKey: 1 to 1024 bytes expected"), 0;
    j->aad2 = p;
    j->aad2_len = n;
    if (!bytes_of(env, argv[3], "buf: bytes expected", &b, &bn)) return 0;
    if (!count_of(env, argv[4], "first: a whole number expected", &j->seg_first)) return 0;
    if (!bytes_of(env, argv[5], "name: bytes expected", &p, &n)) return 0;
    if (n != 32) return napi_throw_range_error(env, NULL, "name: 32 bytes expected"), 0;
    if (bn > 0 && !(p + n <= b || b + bn <= p)) return napi_throw_range_error(env, NULL, "name: must not overlap buf"), 0;
    j->dst = b;
    j->len = bn;
    j->tag = p;
    j->tag_len = n;
    return 1;
  }
  if (op == SEAL_SEGMENTS) {
    /* (key, prefix, spec, src, dst, sample) */
    uint8_t *p, *s, *d;
    size_t n, sn, dn;
    if (!bytes_of(env, argv[1], "prefix: bytes expected", &p, &n)) return 0;
    if (n > SEGMENT_PREFIX_MAX) return napi_throw_range_error(env, NULL, "prefix: at most 256 bytes expected"), 0;
    j->aad = p;
    j->aad_len = n;
    if (!bytes_of(env, argv[2], "spec: bytes expected", &p, &n)) return 0;
    if (!bytes_of(env, argv[3], "src: bytes expected", &s, &sn)) return 0;
    if (!bytes_of(env, argv[4], "dst: bytes expected", &d, &dn)) return 0;
    size_t count = sn == 0 ? 1 : (sn + SEGMENT_BYTES - 1) / SEGMENT_BYTES;
    if (n != count * 12 + 4) return napi_throw_range_error(env, NULL, "spec: 12 bytes per segment and 4 expected"), 0;
    if (dn < sn + count * SEAL_OVERHEAD) return napi_throw_range_error(env, NULL, "dst: room for the segments expected"), 0;
    if ((dn > 0 && sn > 0 && !(d + dn <= s || s + sn <= d)) || !(d + dn <= p || p + n <= d))
      return napi_throw_range_error(env, NULL, "dst: must not overlap src or spec"), 0;
    j->iv = p;
    j->tag = p + count * 12;
    j->src = s;
    j->len = sn;
    j->dst = d;
    j->dst_len = dn;
    j->seg_count = count;
    return count_of(env, argv[5], "sample: a whole number expected", &j->sample);
  }
  if (op == SEAL_UNITS) {
    /* (key, aad, spec, srcs, dsts) */
    uint8_t *p;
    size_t n;
    uint32_t count, dcount;
    bool is;
    if (!bytes_of(env, argv[1], "aad: bytes expected", &p, &n)) return 0;
    if (n != 20) return napi_throw_range_error(env, NULL, "aad: 20 bytes expected"), 0;
    j->aad = p;
    j->aad_len = n;
    if (napi_is_array(env, argv[3], &is) != napi_ok || !is || napi_get_array_length(env, argv[3], &count) != napi_ok)
      return napi_throw_type_error(env, NULL, "srcs: an array expected"), 0;
    if (napi_is_array(env, argv[4], &is) != napi_ok || !is || napi_get_array_length(env, argv[4], &dcount) != napi_ok)
      return napi_throw_type_error(env, NULL, "dsts: an array expected"), 0;
    if (dcount != count) return napi_throw_range_error(env, NULL, "dsts: one per src expected"), 0;
    if (!bytes_of(env, argv[2], "spec: bytes expected", &p, &n)) return 0;
    if (n != (size_t)count * 16) return napi_throw_range_error(env, NULL, "spec: 16 bytes per unit expected"), 0;
    j->iv = p;
    j->units = count > 0 ? malloc(count * sizeof(seal_unit)) : NULL;
    if (count > 0 && j->units == NULL) return napi_throw_error(env, NULL, "cipher addon: out of memory"), 0;
    j->nunits = count;
    for (uint32_t k = 0; k < count; k++) {
      uint8_t *s, *d;
      size_t sn, dn;
      if (!element_bytes(env, argv[3], k, "srcs: bytes expected", &s, &sn) ||
          !element_bytes(env, argv[4], k, "dsts: bytes expected", &d, &dn))
        goto bad_units;
      if (dn < sn + SEAL_OVERHEAD) {
        napi_throw_range_error(env, NULL, "dsts: room for the sealed unit expected");
        goto bad_units;
      }
      if (sn > 0 && !(d + dn <= s || s + sn <= d)) {
        napi_throw_range_error(env, NULL, "dsts: must not overlap srcs");
        goto bad_units;
      }
      j->units[k] = (seal_unit){s, sn, d};
    }
    return 1;
  bad_units:
    free(j->units);
    j->units = NULL;
    return 0;
  }
  if (op == OPEN_SEGMENTS) {
    /* (key, prefix, first, count, src, dst) */
    uint8_t *p, *d;
    size_t n, dn;
    if (!bytes_of(env, argv[1], "prefix: bytes expected", &p, &n)) return 0;
    if (n > SEGMENT_PREFIX_MAX) return napi_throw_range_error(env, NULL, "prefix: at most 256 bytes expected"), 0;
    j->aad = p;
    j->aad_len = n;
    if (!count_of(env, argv[2], "first: a whole number expected", &j->seg_first)) return 0;
    if (!count_of(env, argv[3], "count: a whole number expected", &j->seg_count)) return 0;
    if (!bytes_of(env, argv[4], "src: bytes expected", &p, &n)) return 0;
    if (!bytes_of(env, argv[5], "dst: bytes expected", &d, &dn)) return 0;
    size_t segs = (n + SEGMENT_STORED - 1) / SEGMENT_STORED;
    if (segs == 0 || n - (segs - 1) * SEGMENT_STORED < SEAL_OVERHEAD)
      return napi_throw_range_error(env, NULL, "src: whole segments expected"), 0;
    if (j->seg_first + segs > j->seg_count)
      return napi_throw_range_error(env, NULL, "src: more segments than first and count leave"), 0;
    if (dn != n - segs * SEAL_OVERHEAD)
      return napi_throw_range_error(env, NULL, "dst: must be as long as the plaintext"), 0;
    if (dn > 0 && !(d + dn <= p || p + n <= d))
      return napi_throw_range_error(env, NULL, "dst: must not overlap src"), 0;
    j->src = p;
    j->len = n;
    j->dst = d;
    j->dst_len = dn;
    return 1;
  }
  if (op == GMAC_UNITS) {
    /* (key, prefix, src, table) */
    uint8_t *p;
    size_t n;
    if (!bytes_of(env, argv[1], "prefix: bytes expected", &p, &n)) return 0;
    if (n < 20 || n > 128) return napi_throw_range_error(env, NULL, "prefix: 20 to 128 bytes expected"), 0;
    j->aad = p;
    j->aad_len = n;
    if (!bytes_of(env, argv[2], "src: bytes expected", &p, &n)) return 0;
    j->src = p;
    j->len = n;
    if (!bytes_of(env, argv[3], "table: bytes expected", &p, &n)) return 0;
    if (n != (j->len + UNIT_BYTES - 1) / UNIT_BYTES * UNIT_ENTRY)
      return napi_throw_range_error(env, NULL, "table: 28 bytes per 64 KiB unit expected"), 0;
    if (n > 0 && !(p + n <= j->src || j->src + j->len <= p))
      return napi_throw_range_error(env, NULL, "table: must not overlap src"), 0;
    j->tag = p;
    j->tag_len = n;
    return 1;
  }
  uint8_t *p;
  size_t n;
  size_t i = 1;
  if (!bytes_of(env, argv[i++], "iv: bytes expected", &p, &n)) return 0;
  if (n != (op == CTR ? 16u : 12u)) return napi_throw_range_error(env, NULL, "iv: wrong length"), 0;
  j->iv = p;
  if (op != CTR) {
    if (!bytes_of(env, argv[i++], "aad: bytes expected", &p, &n)) return 0;
    j->aad = p;
    j->aad_len = n;
  }
  if (op == GMAC) {
    if (!bytes_of(env, argv[i++], "aad2: bytes expected", &p, &n)) return 0;
    j->aad2 = p;
    j->aad2_len = n;
  } else {
    uint8_t *s, *d;
    size_t sn, dn;
    if (!bytes_of(env, argv[i++], "src: bytes expected", &s, &sn)) return 0;
    if (!bytes_of(env, argv[i++], "dst: bytes expected", &d, &dn)) return 0;
    if (sn != dn) return napi_throw_range_error(env, NULL, "dst: must be as long as src"), 0;
    if (!disjoint_or_same(s, d, sn))
      return napi_throw_range_error(env, NULL, "dst: must be src itself or not overlap it"), 0;
    j->src = s;
    j->dst = d;
    j->len = sn;
  }
  if (op != CTR) {
    if (!bytes_of(env, argv[i++], "tag: bytes expected", &p, &n)) return 0;
    if (n != 16) return napi_throw_range_error(env, NULL, "tag: 16 bytes expected"), 0;
    j->tag = p;
  }
  return 1;
}

/* ---- sync forms ---- */

static napi_value sync_op(napi_env env, napi_callback_info info, enum op op) {
  napi_value argv[6];
  size_t argc = 6;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  job j;
  if (!read_job(env, op, argv, argc, &j)) return NULL;
  run(&j);
  if (!j.ok && op != OPEN && op != OPEN_SEGMENTS) {
    napi_throw_error(env, NULL, "cipher addon: OpenSSL failed");
    return NULL;
  }
  napi_value r;
  CHECK(napi_get_boolean(env, j.ok, &r));
  return r;
}

static napi_value gcm_seal(napi_env env, napi_callback_info info) { return sync_op(env, info, SEAL); }
static napi_value gcm_open(napi_env env, napi_callback_info info) { return sync_op(env, info, OPEN); }
static napi_value gmac(napi_env env, napi_callback_info info) { return sync_op(env, info, GMAC); }
static napi_value ctr(napi_env env, napi_callback_info info) { return sync_op(env, info, CTR); }
static napi_value gmac_units(napi_env env, napi_callback_info info) { return sync_op(env, info, GMAC_UNITS); }
static napi_value open_segments(napi_env env, napi_callback_info info) { return sync_op(env, info, OPEN_SEGMENTS); }

/* ---- async forms: the buffers are held by references until the callback runs ---- */

typedef struct {
  job j;
  napi_async_work work;
  napi_ref refs[6];
  size_t nrefs;
  napi_ref cb;
} async_job;

static void async_execute(napi_env env, void *data) {
  (void)env;
  run(&((async_job *)data)->j);
}

static void async_complete(napi_env env, napi_status status, void *data) {
  async_job *a = data;
  napi_value cb, global, args[2];
  int ok = status == napi_ok && a->j.ok == 1;
  /* SEAL_SEGMENTS found its sample compressible: no error, nothing sealed. */
  int declined = status == napi_ok && a->j.op == SEAL_SEGMENTS && a->j.ok == 2;
  size_t written = a->j.op == OPEN_SEGMENTS || a->j.op == SEAL_SEGMENTS ? a->j.dst_len : a->j.len;
  free(a->j.units);
  if (status != napi_ok && a->j.op != GMAC_UNITS && a->j.dst != NULL && written > 0) ossl.cleanse(a->j.dst, written);
  napi_get_reference_value(env, a->cb, &cb);
  for (size_t i = 0; i < a->nrefs; i++) napi_delete_reference(env, a->refs[i]);
  napi_delete_reference(env, a->cb);
  napi_delete_async_work(env, a->work);
  enum op op = a->j.op;
  free(a);
  napi_get_global(env, &global);
  if (!ok && !declined && op != OPEN && op != OPEN_SEGMENTS && op != OPEN_UNITS_NAME) {
    napi_value msg;
    napi_create_string_utf8(env, "cipher addon: OpenSSL failed", NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &args[0]);
    napi_get_undefined(env, &args[1]);
  } else {
    napi_get_null(env, &args[0]);
    napi_get_boolean(env, ok, &args[1]);
  }
  napi_call_function(env, global, cb, 2, args, NULL);
}

static napi_value async_op(napi_env env, napi_callback_info info, enum op op) {
  napi_value argv[7];
  size_t argc = 7;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  size_t nargs = op == CTR || op == GMAC_UNITS ? 4 : op == SEAL_UNITS ? 5 : 6;
  /* Numbers take no reference (Node-API 8): only the buffers are held. */
  int held[6] = {1, 1, op != OPEN_SEGMENTS, op != OPEN_SEGMENTS, op != OPEN_UNITS_NAME, op != SEAL_SEGMENTS};
  napi_valuetype t = napi_undefined;
  if (argc < nargs + 1 || napi_typeof(env, argv[nargs], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "cipher addon: a callback is expected last");
    return NULL;
  }
  async_job *a = calloc(1, sizeof *a);
  if (a == NULL) {
    napi_throw_error(env, NULL, "cipher addon: out of memory");
    return NULL;
  }
  if (!read_job(env, op, argv, nargs, &a->j)) {
    free(a);
    return NULL;
  }
  for (size_t i = 0; i < nargs; i++)
    if (held[i]) CHECK(napi_create_reference(env, argv[i], 1, &a->refs[a->nrefs++]));
  CHECK(napi_create_reference(env, argv[nargs], 1, &a->cb));
  napi_value name;
  CHECK(napi_create_string_utf8(env, "filespace:cipher", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, async_execute, async_complete, a, &a->work));
  CHECK(napi_queue_async_work(env, a->work));
  return NULL;
}

static napi_value gcm_seal_async(napi_env env, napi_callback_info info) { return async_op(env, info, SEAL); }
static napi_value gcm_open_async(napi_env env, napi_callback_info info) { return async_op(env, info, OPEN); }
static napi_value ctr_async(napi_env env, napi_callback_info info) { return async_op(env, info, CTR); }
static napi_value gmac_units_async(napi_env env, napi_callback_info info) { return async_op(env, info, GMAC_UNITS); }
static napi_value open_segments_async(napi_env env, napi_callback_info info) {
  return async_op(env, info, OPEN_SEGMENTS);
}
static napi_value seal_units_async(napi_env env, napi_callback_info info) { return async_op(env, info, SEAL_UNITS); }
static napi_value open_units_name_async(napi_env env, napi_callback_info info) {
  return async_op(env, info, OPEN_UNITS_NAME);
}
static napi_value seal_segments_async(napi_env env, napi_callback_info info) {
  return async_op(env, info, SEAL_SEGMENTS);
}

/*
 * ---- cache files written around the page cache ----
 *
 * writeDirectAsync(fd, buffers, cb): writes the buffers back to back from offset 0 of `fd`, a
 * file opened with O_DIRECT, then cuts the file to their total length; cb(err, total). O_DIRECT
 * needs the memory, the offset and the length aligned (DIRECT_ALIGN covers every logical block
 * size Linux uses). Where a buffer's bytes at an aligned file offset also start at an aligned
 * address, its whole aligned blocks are written from where they lie (the caller can arrange
 * that, see `pageOffset`: a downloaded chunk received at the right place is written with no
 * copy); the other bytes go through an aligned buffer of DIRECT_PIECE that each thread of the
 * pool allocates once and keeps, and the last piece is padded with zeros up to the alignment
 * before the file is cut back. Runs on libuv's thread pool; the buffers must not change until cb.
 * On an error cb gets an Error whose `code` is the errno's name where known (ENOSPC, EIO, ...).
 */
#define DIRECT_ALIGN 4096
#define DIRECT_PIECE (1024 * 1024)

static _Thread_local uint8_t *direct_bounce;
/* Bytes direct writes copied through the bounce buffers, in all (`directCopied`: tests, probes). */
static uint64_t direct_copied;

typedef struct {
  napi_async_work work;
  napi_ref cb, bufs;
  int fd;
  uint32_t n;
  const uint8_t **ptr;
  size_t *len;
  size_t total;
  int err;
} direct_job;

static int pwrite_all(int fd, const uint8_t *p, size_t n, off_t at) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = pwrite(fd, p + done, n - done, at + (off_t)done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;
    done += (size_t)w;
  }
  return 0;
}

/* Whether buffer k's bytes from koff lie at an aligned address, a whole block or more of them:
   written from where they lie when the file offset is aligned too. */
static int direct_in_place(const direct_job *d, uint32_t k, size_t koff) {
  return k < d->n && ((uintptr_t)(d->ptr[k] + koff) & (DIRECT_ALIGN - 1)) == 0 && d->len[k] - koff >= DIRECT_ALIGN;
}

static void direct_execute(napi_env env, void *data) {
  (void)env;
  direct_job *d = data;
  if (direct_bounce == NULL) {
    void *p = NULL;
    if (posix_memalign(&p, DIRECT_ALIGN, DIRECT_PIECE) != 0) {
      d->err = ENOMEM;
      return;
    }
    direct_bounce = p;
  }
  uint32_t k = 0;
  size_t koff = 0;
  off_t at = 0;
  for (;;) {
    /* At a piece boundary (`at` aligned), a buffer whose next bytes lie aligned in memory is
       written in place, all its whole blocks at once. */
    if (direct_in_place(d, k, koff)) {
      size_t whole = (d->len[k] - koff) & ~(size_t)(DIRECT_ALIGN - 1);
      if ((d->err = pwrite_all(d->fd, d->ptr[k] + koff, whole, at)) != 0) return;
      at += (off_t)whole;
      koff += whole;
      if (koff == d->len[k]) {
        k++;
        koff = 0;
      }
      continue;
    }
    size_t fill = 0;
    while (fill < DIRECT_PIECE && k < d->n) {
      /* A piece ends early, aligned, where the next bytes can go in place. */
      if (fill > 0 && (fill & (DIRECT_ALIGN - 1)) == 0 && direct_in_place(d, k, koff)) break;
      size_t take = d->len[k] - koff;
      if (take > DIRECT_PIECE - fill) take = DIRECT_PIECE - fill;
      memcpy(direct_bounce + fill, d->ptr[k] + koff, take);
      fill += take;
      koff += take;
      if (koff == d->len[k]) {
        k++;
        koff = 0;
      }
    }
    if (fill == 0) break;
    __atomic_fetch_add(&direct_copied, (uint64_t)fill, __ATOMIC_RELAXED);
    size_t out = (fill + DIRECT_ALIGN - 1) & ~(size_t)(DIRECT_ALIGN - 1);
    memset(direct_bounce + fill, 0, out - fill);
    if ((d->err = pwrite_all(d->fd, direct_bounce, out, at)) != 0) return;
    at += (off_t)out;
    if (k >= d->n) break; /* the last piece (padded; the file is cut back below) */
  }
  if (ftruncate(d->fd, (off_t)d->total) != 0) d->err = errno;
}

/**
 * pageOffset(buffer): where the buffer's first byte lies within an aligned block of DIRECT_ALIGN
 * bytes (its address modulo DIRECT_ALIGN), so a caller can place bytes it will write with
 * writeDirectAsync at an aligned address.
 */
static napi_value page_offset(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  size_t argc = 1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  uint8_t *p;
  size_t len;
  if (argc < 1) return napi_throw_type_error(env, NULL, "cipher addon: pageOffset takes a buffer"), NULL;
  if (!bytes_of(env, argv[0], "cipher addon: pageOffset takes a buffer", &p, &len)) return NULL;
  napi_value out;
  CHECK(napi_create_uint32(env, (uint32_t)((uintptr_t)p & (DIRECT_ALIGN - 1)), &out));
  return out;
}

/** directCopied(): bytes direct writes have copied through their aligned buffers so far. */
static napi_value direct_copied_bytes(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  CHECK(napi_create_double(env, (double)__atomic_load_n(&direct_copied, __ATOMIC_RELAXED), &out));
  return out;
}

static const char *errno_code(int e) {
  switch (e) {
    case ENOSPC: return "ENOSPC";
    case EDQUOT: return "EDQUOT";
    case EIO: return "EIO";
    case EINVAL: return "EINVAL";
    case EBADF: return "EBADF";
    case ENOMEM: return "ENOMEM";
    case EROFS: return "EROFS";
    default: return "EIO";
  }
}

static void direct_complete(napi_env env, napi_status status, void *data) {
  direct_job *d = data;
  napi_value cb, global, args[2];
  napi_get_reference_value(env, d->cb, &cb);
  napi_delete_reference(env, d->cb);
  napi_delete_reference(env, d->bufs);
  napi_delete_async_work(env, d->work);
  int err = status != napi_ok ? EIO : d->err;
  size_t total = d->total;
  free(d->ptr);
  free(d->len);
  free(d);
  napi_get_global(env, &global);
  if (err != 0) {
    napi_value msg, code;
    char text[96];
    snprintf(text, sizeof text, "%s: %s (direct write of a cache file)", errno_code(err), strerror(err));
    napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &msg);
    napi_create_error(env, NULL, msg, &args[0]);
    napi_create_string_utf8(env, errno_code(err), NAPI_AUTO_LENGTH, &code);
    napi_set_named_property(env, args[0], "code", code);
    napi_get_undefined(env, &args[1]);
  } else {
    napi_get_null(env, &args[0]);
    napi_create_double(env, (double)total, &args[1]);
  }
  napi_call_function(env, global, cb, 2, args, NULL);
}

static napi_value write_direct_async(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  size_t argc = 3;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype t = napi_undefined;
  bool is_array = false;
  int32_t fd = -1;
  if (argc < 3 || napi_typeof(env, argv[2], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "cipher addon: a callback is expected last");
    return NULL;
  }
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "cipher addon: fd must be an open file descriptor");
    return NULL;
  }
  if (napi_is_array(env, argv[1], &is_array) != napi_ok || !is_array) {
    napi_throw_type_error(env, NULL, "cipher addon: buffers must be an array");
    return NULL;
  }
  direct_job *d = calloc(1, sizeof *d);
  if (d == NULL) {
    napi_throw_error(env, NULL, "cipher addon: out of memory");
    return NULL;
  }
  d->fd = fd;
  CHECK(napi_get_array_length(env, argv[1], &d->n));
  d->ptr = calloc(d->n ? d->n : 1, sizeof *d->ptr);
  d->len = calloc(d->n ? d->n : 1, sizeof *d->len);
  if (d->ptr == NULL || d->len == NULL) {
    free(d->ptr);
    free(d->len);
    free(d);
    napi_throw_error(env, NULL, "cipher addon: out of memory");
    return NULL;
  }
  for (uint32_t k = 0; k < d->n; k++) {
    uint8_t *p;
    if (!element_bytes(env, argv[1], k, "buffers", &p, &d->len[k])) {
      free(d->ptr);
      free(d->len);
      free(d);
      return NULL;
    }
    d->ptr[k] = p;
    d->total += d->len[k];
  }
  /* The array holds the buffers for the job's whole run (the caller does not change it). */
  CHECK(napi_create_reference(env, argv[1], 1, &d->bufs));
  CHECK(napi_create_reference(env, argv[2], 1, &d->cb));
  napi_value name;
  CHECK(napi_create_string_utf8(env, "filespace:direct-write", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_create_async_work(env, NULL, name, direct_execute, direct_complete, d, &d->work));
  CHECK(napi_queue_async_work(env, d->work));
  return NULL;
}

NAPI_MODULE_INIT() {
  const char *why = load_openssl();
  if (why != NULL) {
    napi_throw_error(env, "ERR_FILESPACE_CIPHER_OPENSSL", why);
    return NULL;
  }
  napi_property_descriptor props[] = {
      {"gcmSeal", NULL, gcm_seal, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmOpen", NULL, gcm_open, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gmac", NULL, gmac, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ctr", NULL, ctr, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmSealAsync", NULL, gcm_seal_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gcmOpenAsync", NULL, gcm_open_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"ctrAsync", NULL, ctr_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gmacUnits", NULL, gmac_units, NULL, NULL, NULL, napi_enumerable, NULL},
      {"gmacUnitsAsync", NULL, gmac_units_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openSegments", NULL, open_segments, NULL, NULL, NULL, napi_enumerable, NULL},
      {"openSegmentsAsync", NULL, open_segments_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sealUnitsAsync", NULL, seal_units_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeDirectAsync", NULL, write_direct_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pageOffset", NULL, page_offset, NULL, NULL, NULL, napi_enumerable, NULL},
      {"directCopied", NULL, direct_copied_bytes, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  load_zlib();
  napi_value fn;
  if (extra.hmac != NULL && extra.sha256 != NULL &&
      napi_create_function(env, "openUnitsNameAsync", NAPI_AUTO_LENGTH, open_units_name_async, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "openUnitsNameAsync", fn);
  if (extra.crc32 != NULL &&
      napi_create_function(env, "sealSegmentsAsync", NAPI_AUTO_LENGTH, seal_segments_async, NULL, &fn) == napi_ok)
    napi_set_named_property(env, exports, "sealSegmentsAsync", fn);
  napi_value src;
  if (napi_create_string_utf8(env, ossl.source, NAPI_AUTO_LENGTH, &src) == napi_ok)
    napi_set_named_property(env, exports, "openssl", src);
  return exports;
}
