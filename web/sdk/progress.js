// Transfer speed, smoothed: an exponentially weighted moving average of the rate seen over
// intervals of at least `intervalMs`, with time constant `tauMs`, so that the number a
// person reads neither jumps with every progress event nor lags a real change by much.

export class SpeedMeter {
  constructor({ tauMs = 3000, intervalMs = 250 } = {}) {
    this.tauMs = tauMs;
    this.intervalMs = intervalMs;
    this.reset(null);
  }

  /** Forget the history (a pause or a stall must not drag the next figure down). */
  reset(now) {
    this.speed = 0;
    this.lastAt = now;
    this.pending = 0;
    this.primed = false;
  }

  /** `bytes` more went over the wire at time `now` (ms). Returns the current speed. */
  add(bytes, now) {
    if (this.lastAt == null) {
      this.lastAt = now;
      this.pending = bytes;
      return this.speed;
    }
    this.pending += bytes;
    const dt = now - this.lastAt;
    if (dt < this.intervalMs) return this.speed;
    const rate = (this.pending * 1000) / dt;
    if (!this.primed) {
      this.speed = rate;
      this.primed = true;
    } else {
      const alpha = 1 - Math.exp(-dt / this.tauMs);
      this.speed += alpha * (rate - this.speed);
    }
    this.lastAt = now;
    this.pending = 0;
    return this.speed;
  }

  /** Seconds to send `remaining` bytes at the current speed, or null when unknown. */
  eta(remaining) {
    if (remaining <= 0) return 0;
    return this.speed > 0 ? remaining / this.speed : null;
  }
}
