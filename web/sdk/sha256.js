// SHA-256 (FIPS 180-4), incremental, for tus `Upload-Checksum: sha256 …` where
// `crypto.subtle` is missing (pages served over plain http on a LAN address are not a
// secure context, and Web Crypto exists only in secure contexts) and for hashing large
// blobs in slices with flat memory.
//
// Kept fast the same way as md5.js: the message schedule W and the constants K are
// preallocated Int32Arrays, words are read big-endian straight from the input bytes
// (FIPS 180-4 §3.1), whole blocks are processed in place, and only a partial block at
// either end of an update() is copied into a fixed 64-byte buffer.

import { asBytes, toHex } from './md5.js';

// FIPS 180-4 §4.2.2: the first 32 bits of the fractional parts of the cube roots of the
// first 64 primes.
const K = new Int32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

// FIPS 180-4 §5.3.3: the initial hash value.
const H0 = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/** Processes `count` 64-byte blocks of `m` starting at byte `p` (FIPS 180-4 §6.2.2). */
function blocks(H, W, m, p, count) {
  let h0 = H[0];
  let h1 = H[1];
  let h2 = H[2];
  let h3 = H[3];
  let h4 = H[4];
  let h5 = H[5];
  let h6 = H[6];
  let h7 = H[7];
  for (let n = 0; n < count; n++, p += 64) {
    for (let t = 0; t < 16; t++) {
      const q = p + t * 4;
      W[t] = (m[q] << 24) | (m[q + 1] << 16) | (m[q + 2] << 8) | m[q + 3];
    }
    for (let t = 16; t < 64; t++) {
      const x = W[t - 15];
      const y = W[t - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      W[t] = (W[t - 16] + s0 + W[t - 7] + s1) | 0;
    }
    let a = h0;
    let b = h1;
    let c = h2;
    let d = h3;
    let e = h4;
    let f = h5;
    let g = h6;
    let h = h7;
    for (let t = 0; t < 64; t++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const ch = (e & f) ^ (~e & g);
      const T1 = (h + S1 + ch + K[t] + W[t]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const T2 = (S0 + maj) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + T1) | 0;
      d = c;
      c = b;
      b = a;
      a = (T1 + T2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + h) | 0;
  }
  H[0] = h0;
  H[1] = h1;
  H[2] = h2;
  H[3] = h3;
  H[4] = h4;
  H[5] = h5;
  H[6] = h6;
  H[7] = h7;
}

export class Sha256 {
  constructor() {
    this.H = new Int32Array(8);
    this.W = new Int32Array(64);
    this.buf = new Uint8Array(64);
    this.reset();
  }

  reset() {
    for (let i = 0; i < 8; i++) this.H[i] = H0[i] | 0;
    this.buffered = 0;
    this.length = 0; // bytes so far; exact up to 2^53
    return this;
  }

  /** Adds bytes (ArrayBuffer, typed array, or a string as UTF-8). Returns this. */
  update(data) {
    const bytes = asBytes(data);
    const n = bytes.length;
    let pos = 0;
    this.length += n;
    if (this.buffered > 0) {
      const take = Math.min(64 - this.buffered, n);
      this.buf.set(bytes.subarray(0, take), this.buffered);
      this.buffered += take;
      pos = take;
      if (this.buffered < 64) return this;
      blocks(this.H, this.W, this.buf, 0, 1);
      this.buffered = 0;
    }
    const whole = (n - pos) & ~63;
    if (whole > 0) {
      blocks(this.H, this.W, bytes, pos, whole >> 6);
      pos += whole;
    }
    if (pos < n) {
      this.buf.set(bytes.subarray(pos), 0);
      this.buffered = n - pos;
    }
    return this;
  }

  /** The 32-byte digest. The hasher is finished afterwards; call reset() to reuse it. */
  digest() {
    // Padding (FIPS 180-4 §5.1.1): 0x80, zeros to 56 mod 64, the bit length big-endian.
    const bits = this.length * 8;
    const b = this.buf;
    b[this.buffered++] = 0x80;
    if (this.buffered > 56) {
      b.fill(0, this.buffered);
      blocks(this.H, this.W, b, 0, 1);
      this.buffered = 0;
    }
    b.fill(0, this.buffered, 56);
    const lo = bits % 0x100000000;
    const hi = Math.floor(bits / 0x100000000);
    for (let i = 0; i < 4; i++) {
      b[63 - i] = (lo >>> (8 * i)) & 0xff;
      b[59 - i] = (hi >>> (8 * i)) & 0xff;
    }
    blocks(this.H, this.W, b, 0, 1);
    const out = new Uint8Array(32);
    for (let i = 0; i < 8; i++) {
      const w = this.H[i];
      out[i * 4] = w >>> 24;
      out[i * 4 + 1] = (w >>> 16) & 0xff;
      out[i * 4 + 2] = (w >>> 8) & 0xff;
      out[i * 4 + 3] = w & 0xff;
    }
    return out;
  }

  hex() {
    return toHex(this.digest());
  }
}

/** SHA-256 of bytes in one call, as hex. */
export function sha256Hex(data) {
  return new Sha256().update(data).hex();
}
