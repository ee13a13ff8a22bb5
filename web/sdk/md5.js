// MD5 (RFC 1321), incremental, for the chunk-handshake dialect's file and chunk ids.
//
// MD5 is not a security measure here: the chunk dialect (SPEC §2.1) names files and chunks
// by their MD5, as the spark-md5 clients it comes from do, and the server re-checks every
// digest against the bytes it receives.
//
// Speed matters (multi-GB files are hashed before the first byte is sent), so:
// - the 64 steps are unrolled (generated once, with the shift amounts and the
//   floor(abs(sin(i + 1)) * 2^32) constants of RFC 1321 §3.4 written in);
// - whole blocks are read in place through one Int32Array view per update() call on
//   little-endian machines (MD5 words are little-endian, RFC 1321 §3.4), so no block is
//   copied and nothing is allocated per block;
// - the state lives in an Int32Array and all arithmetic is kept in int32 with `| 0`;
// - F and G use the equivalent three-operation forms d ^ (b & (c ^ d)) and
//   c ^ (d & (b ^ c)).
// Only a partial block at either end of an update() is copied, into a fixed 64-byte buffer
// (the framing shared with SHA-256 is in block-hash.js).

import { BlockHasher } from './block-hash.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Processes `count` 64-byte blocks of `x` (16 little-endian words each) from word `o`. */
function blocks(state, x, o, count) {
  let a = state[0];
  let b = state[1];
  let c = state[2];
  let d = state[3];
  for (let n = 0; n < count; n++, o += 16) {
    const a0 = a;
    const b0 = b;
    const c0 = c;
    const d0 = d;
    a = (a + (d ^ (b & (c ^ d))) + x[o] - 0x28955b88) | 0; a = (((a << 7) | (a >>> 25)) + b) | 0;
    d = (d + (c ^ (a & (b ^ c))) + x[o + 1] - 0x173848aa) | 0; d = (((d << 12) | (d >>> 20)) + a) | 0;
    c = (c + (b ^ (d & (a ^ b))) + x[o + 2] + 0x242070db) | 0; c = (((c << 17) | (c >>> 15)) + d) | 0;
    b = (b + (a ^ (c & (d ^ a))) + x[o + 3] - 0x3e423112) | 0; b = (((b << 22) | (b >>> 10)) + c) | 0;
    a = (a + (d ^ (b & (c ^ d))) + x[o + 4] - 0xa83f051) | 0; a = (((a << 7) | (a >>> 25)) + b) | 0;
    d = (d + (c ^ (a & (b ^ c))) + x[o + 5] + 0x4787c62a) | 0; d = (((d << 12) | (d >>> 20)) + a) | 0;
    c = (c + (b ^ (d & (a ^ b))) + x[o + 6] - 0x57cfb9ed) | 0; c = (((c << 17) | (c >>> 15)) + d) | 0;
    b = (b + (a ^ (c & (d ^ a))) + x[o + 7] - 0x2b96aff) | 0; b = (((b << 22) | (b >>> 10)) + c) | 0;
    a = (a + (d ^ (b & (c ^ d))) + x[o + 8] + 0x698098d8) | 0; a = (((a << 7) | (a >>> 25)) + b) | 0;
    d = (d + (c ^ (a & (b ^ c))) + x[o + 9] - 0x74bb0851) | 0; d = (((d << 12) | (d >>> 20)) + a) | 0;
    c = (c + (b ^ (d & (a ^ b))) + x[o + 10] - 0xa44f) | 0; c = (((c << 17) | (c >>> 15)) + d) | 0;
    b = (b + (a ^ (c & (d ^ a))) + x[o + 11] - 0x76a32842) | 0; b = (((b << 22) | (b >>> 10)) + c) | 0;
    a = (a + (d ^ (b & (c ^ d))) + x[o + 12] + 0x6b901122) | 0; a = (((a << 7) | (a >>> 25)) + b) | 0;
    d = (d + (c ^ (a & (b ^ c))) + x[o + 13] - 0x2678e6d) | 0; d = (((d << 12) | (d >>> 20)) + a) | 0;
    c = (c + (b ^ (d & (a ^ b))) + x[o + 14] - 0x5986bc72) | 0; c = (((c << 17) | (c >>> 15)) + d) | 0;
    b = (b + (a ^ (c & (d ^ a))) + x[o + 15] + 0x49b40821) | 0; b = (((b << 22) | (b >>> 10)) + c) | 0;
    a = (a + (c ^ (d & (b ^ c))) + x[o + 1] - 0x9e1da9e) | 0; a = (((a << 5) | (a >>> 27)) + b) | 0;
    d = (d + (b ^ (c & (a ^ b))) + x[o + 6] - 0x3fbf4cc0) | 0; d = (((d << 9) | (d >>> 23)) + a) | 0;
    c = (c + (a ^ (b & (d ^ a))) + x[o + 11] + 0x265e5a51) | 0; c = (((c << 14) | (c >>> 18)) + d) | 0;
    b = (b + (d ^ (a & (c ^ d))) + x[o] - 0x16493856) | 0; b = (((b << 20) | (b >>> 12)) + c) | 0;
    a = (a + (c ^ (d & (b ^ c))) + x[o + 5] - 0x29d0efa3) | 0; a = (((a << 5) | (a >>> 27)) + b) | 0;
    d = (d + (b ^ (c & (a ^ b))) + x[o + 10] + 0x2441453) | 0; d = (((d << 9) | (d >>> 23)) + a) | 0;
    c = (c + (a ^ (b & (d ^ a))) + x[o + 15] - 0x275e197f) | 0; c = (((c << 14) | (c >>> 18)) + d) | 0;
    b = (b + (d ^ (a & (c ^ d))) + x[o + 4] - 0x182c0438) | 0; b = (((b << 20) | (b >>> 12)) + c) | 0;
    a = (a + (c ^ (d & (b ^ c))) + x[o + 9] + 0x21e1cde6) | 0; a = (((a << 5) | (a >>> 27)) + b) | 0;
    d = (d + (b ^ (c & (a ^ b))) + x[o + 14] - 0x3cc8f82a) | 0; d = (((d << 9) | (d >>> 23)) + a) | 0;
    c = (c + (a ^ (b & (d ^ a))) + x[o + 3] - 0xb2af279) | 0; c = (((c << 14) | (c >>> 18)) + d) | 0;
    b = (b + (d ^ (a & (c ^ d))) + x[o + 8] + 0x455a14ed) | 0; b = (((b << 20) | (b >>> 12)) + c) | 0;
    a = (a + (c ^ (d & (b ^ c))) + x[o + 13] - 0x561c16fb) | 0; a = (((a << 5) | (a >>> 27)) + b) | 0;
    d = (d + (b ^ (c & (a ^ b))) + x[o + 2] - 0x3105c08) | 0; d = (((d << 9) | (d >>> 23)) + a) | 0;
    c = (c + (a ^ (b & (d ^ a))) + x[o + 7] + 0x676f02d9) | 0; c = (((c << 14) | (c >>> 18)) + d) | 0;
    b = (b + (d ^ (a & (c ^ d))) + x[o + 12] - 0x72d5b376) | 0; b = (((b << 20) | (b >>> 12)) + c) | 0;
    a = (a + (b ^ c ^ d) + x[o + 5] - 0x5c6be) | 0; a = (((a << 4) | (a >>> 28)) + b) | 0;
    d = (d + (a ^ b ^ c) + x[o + 8] - 0x788e097f) | 0; d = (((d << 11) | (d >>> 21)) + a) | 0;
    c = (c + (d ^ a ^ b) + x[o + 11] + 0x6d9d6122) | 0; c = (((c << 16) | (c >>> 16)) + d) | 0;
    b = (b + (c ^ d ^ a) + x[o + 14] - 0x21ac7f4) | 0; b = (((b << 23) | (b >>> 9)) + c) | 0;
    a = (a + (b ^ c ^ d) + x[o + 1] - 0x5b4115bc) | 0; a = (((a << 4) | (a >>> 28)) + b) | 0;
    d = (d + (a ^ b ^ c) + x[o + 4] + 0x4bdecfa9) | 0; d = (((d << 11) | (d >>> 21)) + a) | 0;
    c = (c + (d ^ a ^ b) + x[o + 7] - 0x944b4a0) | 0; c = (((c << 16) | (c >>> 16)) + d) | 0;
    b = (b + (c ^ d ^ a) + x[o + 10] - 0x41404390) | 0; b = (((b << 23) | (b >>> 9)) + c) | 0;
    a = (a + (b ^ c ^ d) + x[o + 13] + 0x289b7ec6) | 0; a = (((a << 4) | (a >>> 28)) + b) | 0;
    d = (d + (a ^ b ^ c) + x[o] - 0x155ed806) | 0; d = (((d << 11) | (d >>> 21)) + a) | 0;
    c = (c + (d ^ a ^ b) + x[o + 3] - 0x2b10cf7b) | 0; c = (((c << 16) | (c >>> 16)) + d) | 0;
    b = (b + (c ^ d ^ a) + x[o + 6] + 0x4881d05) | 0; b = (((b << 23) | (b >>> 9)) + c) | 0;
    a = (a + (b ^ c ^ d) + x[o + 9] - 0x262b2fc7) | 0; a = (((a << 4) | (a >>> 28)) + b) | 0;
    d = (d + (a ^ b ^ c) + x[o + 12] - 0x1924661b) | 0; d = (((d << 11) | (d >>> 21)) + a) | 0;
    c = (c + (d ^ a ^ b) + x[o + 15] + 0x1fa27cf8) | 0; c = (((c << 16) | (c >>> 16)) + d) | 0;
    b = (b + (c ^ d ^ a) + x[o + 2] - 0x3b53a99b) | 0; b = (((b << 23) | (b >>> 9)) + c) | 0;
    a = (a + (c ^ (b | ~d)) + x[o] - 0xbd6ddbc) | 0; a = (((a << 6) | (a >>> 26)) + b) | 0;
    d = (d + (b ^ (a | ~c)) + x[o + 7] + 0x432aff97) | 0; d = (((d << 10) | (d >>> 22)) + a) | 0;
    c = (c + (a ^ (d | ~b)) + x[o + 14] - 0x546bdc59) | 0; c = (((c << 15) | (c >>> 17)) + d) | 0;
    b = (b + (d ^ (c | ~a)) + x[o + 5] - 0x36c5fc7) | 0; b = (((b << 21) | (b >>> 11)) + c) | 0;
    a = (a + (c ^ (b | ~d)) + x[o + 12] + 0x655b59c3) | 0; a = (((a << 6) | (a >>> 26)) + b) | 0;
    d = (d + (b ^ (a | ~c)) + x[o + 3] - 0x70f3336e) | 0; d = (((d << 10) | (d >>> 22)) + a) | 0;
    c = (c + (a ^ (d | ~b)) + x[o + 10] - 0x100b83) | 0; c = (((c << 15) | (c >>> 17)) + d) | 0;
    b = (b + (d ^ (c | ~a)) + x[o + 1] - 0x7a7ba22f) | 0; b = (((b << 21) | (b >>> 11)) + c) | 0;
    a = (a + (c ^ (b | ~d)) + x[o + 8] + 0x6fa87e4f) | 0; a = (((a << 6) | (a >>> 26)) + b) | 0;
    d = (d + (b ^ (a | ~c)) + x[o + 15] - 0x1d31920) | 0; d = (((d << 10) | (d >>> 22)) + a) | 0;
    c = (c + (a ^ (d | ~b)) + x[o + 6] - 0x5cfebcec) | 0; c = (((c << 15) | (c >>> 17)) + d) | 0;
    b = (b + (d ^ (c | ~a)) + x[o + 13] + 0x4e0811a1) | 0; b = (((b << 21) | (b >>> 11)) + c) | 0;
    a = (a + (c ^ (b | ~d)) + x[o + 4] - 0x8ac817e) | 0; a = (((a << 6) | (a >>> 26)) + b) | 0;
    d = (d + (b ^ (a | ~c)) + x[o + 11] - 0x42c50dcb) | 0; d = (((d << 10) | (d >>> 22)) + a) | 0;
    c = (c + (a ^ (d | ~b)) + x[o + 2] + 0x2ad7d2bb) | 0; c = (((c << 15) | (c >>> 17)) + d) | 0;
    b = (b + (d ^ (c | ~a)) + x[o + 9] - 0x14792c6f) | 0; b = (((b << 21) | (b >>> 11)) + c) | 0;
    a = (a + a0) | 0;
    b = (b + b0) | 0;
    c = (c + c0) | 0;
    d = (d + d0) | 0;
  }
  state[0] = a;
  state[1] = b;
  state[2] = c;
  state[3] = d;
}

export class Md5 extends BlockHasher {
  constructor() {
    super(false);
    this.state = new Int32Array(4);
    this.buf32 = new Int32Array(this.buf.buffer);
    // Big-endian machines assemble each block's words here.
    this.words = LITTLE_ENDIAN ? this.buf32 : new Int32Array(16);
    this.reset();
  }

  reset() {
    this.state[0] = 0x67452301;
    this.state[1] = 0xefcdab89 | 0;
    this.state[2] = 0x98badcfe | 0;
    this.state[3] = 0x10325476;
    this.buffered = 0;
    this.length = 0;
    return this;
  }

  compress(bytes, pos, count) {
    if (bytes === this.buf) {
      this.block();
      return;
    }
    const at = bytes.byteOffset + pos;
    if (LITTLE_ENDIAN && (at & 3) === 0) {
      // Aligned little-endian input is already the words MD5 reads: no copy.
      blocks(this.state, new Int32Array(bytes.buffer, at, count << 4), 0, count);
      return;
    }
    for (let p = pos, end = pos + (count << 6); p < end; p += 64) {
      this.buf.set(bytes.subarray(p, p + 64));
      this.block();
    }
  }

  /** Hashes the 64 bytes in buf. */
  block() {
    if (!LITTLE_ENDIAN) {
      const b = this.buf;
      for (let i = 0; i < 16; i++) {
        this.words[i] = b[i * 4] | (b[i * 4 + 1] << 8) | (b[i * 4 + 2] << 16) | (b[i * 4 + 3] << 24);
      }
    }
    blocks(this.state, this.words, 0, 1);
  }

  /** The 16-byte digest. The hasher is finished afterwards; call reset() to reuse it. */
  digest() {
    this.finish();
    const out = new Uint8Array(16);
    for (let i = 0; i < 4; i++) {
      const w = this.state[i];
      out[i * 4] = w & 0xff;
      out[i * 4 + 1] = (w >>> 8) & 0xff;
      out[i * 4 + 2] = (w >>> 16) & 0xff;
      out[i * 4 + 3] = (w >>> 24) & 0xff;
    }
    return out;
  }
}

/** MD5 of bytes in one call, as hex. */
export function md5Hex(data) {
  return new Md5().update(data).hex();
}
