// The framing MD5 (RFC 1321 §3.1–3.2) and SHA-256 (FIPS 180-4 §5.1.1) share: input is
// compressed in 64-byte blocks, a partial block waits in a fixed buffer between update()
// calls, and the message ends with 0x80, zeros up to 56 mod 64, then its length in bits as
// a 64-bit number (little-endian for MD5, big-endian for SHA-256). Subclasses supply
// compress(bytes, pos, count), which hashes `count` whole blocks starting at bytes[pos].

/** Any of ArrayBuffer, a typed array or a DataView as a Uint8Array over the same memory. */
export function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (typeof data === 'string') return new TextEncoder().encode(data);
  throw new TypeError('expected bytes (ArrayBuffer, typed array or string)');
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i++) s += HEX[bytes[i]];
  return s;
}

export class BlockHasher {
  /** `bigEndianLength`: byte order of the bit length in the last block. */
  constructor(bigEndianLength) {
    this.buf = new Uint8Array(64);
    this.bigEndianLength = bigEndianLength;
    this.buffered = 0;
    this.length = 0; // bytes so far; exact up to 2^53
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
      this.compress(this.buf, 0, 1);
      this.buffered = 0;
    }
    // Whole blocks are hashed where they lie; only a partial block at either end is copied.
    const whole = (n - pos) & ~63;
    if (whole > 0) {
      this.compress(bytes, pos, whole >> 6);
      pos += whole;
    }
    if (pos < n) {
      this.buf.set(bytes.subarray(pos), 0);
      this.buffered = n - pos;
    }
    return this;
  }

  /** Pads and compresses the last block(s); the subclass then reads its digest out. */
  finish() {
    const bits = this.length * 8;
    const b = this.buf;
    b[this.buffered++] = 0x80;
    if (this.buffered > 56) {
      b.fill(0, this.buffered);
      this.compress(b, 0, 1);
      this.buffered = 0;
    }
    b.fill(0, this.buffered, 56);
    const lo = bits % 0x100000000;
    const hi = Math.floor(bits / 0x100000000);
    for (let i = 0; i < 4; i++) {
      if (this.bigEndianLength) {
        b[63 - i] = (lo >>> (8 * i)) & 0xff;
        b[59 - i] = (hi >>> (8 * i)) & 0xff;
      } else {
        b[56 + i] = (lo >>> (8 * i)) & 0xff;
        b[60 + i] = (hi >>> (8 * i)) & 0xff;
      }
    }
    this.compress(b, 0, 1);
  }

  /** The digest as lowercase hex. */
  hex() {
    return toHex(this.digest());
  }
}
