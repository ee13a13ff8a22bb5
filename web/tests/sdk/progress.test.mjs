// The smoothed speed and the time left.

import test from 'node:test';
import assert from 'node:assert/strict';
import { SpeedMeter } from '../../sdk/progress.js';

test('speed follows a steady rate, smooths a burst, and gives the time left', () => {
  const m = new SpeedMeter({ tauMs: 3000, intervalMs: 250 });
  m.reset(0);
  // 1 MB/s in 100 ms steps for 10 s.
  let t = 0;
  for (; t < 10000; t += 100) m.add(100000, t + 100);
  assert.ok(Math.abs(m.speed - 1e6) < 1e4, `steady: ${m.speed}`);
  assert.equal(Math.round(m.eta(5e6)), 5);
  // One 500 ms burst at 10x moves the figure, but far less than 10x.
  for (let k = 0; k < 5; k++, t += 100) m.add(1e6, t + 100);
  assert.ok(m.speed > 1.5e6 && m.speed < 5e6, `burst: ${m.speed}`);
  assert.equal(m.eta(0), 0);
  m.reset(t);
  assert.equal(m.speed, 0);
  assert.equal(m.eta(100), null, 'unknown before anything was measured');
});
