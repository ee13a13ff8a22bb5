// The chunk queue: never more than `concurrency` tasks at once, order kept, pause/resume,
// clear, and errors delivered to the task's own promise.

import test from 'node:test';
import assert from 'node:assert/strict';
import { TaskQueue } from '../../sdk/queue.js';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

test('concurrency limit is never exceeded, and every task runs once in order of start', async () => {
  for (const concurrency of [1, 2, 3, 5]) {
    const q = new TaskQueue(concurrency);
    let running = 0;
    let peak = 0;
    const started = [];
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        q.push(async () => {
          running++;
          peak = Math.max(peak, running);
          started.push(i);
          await tick(Math.floor(Math.random() * 5));
          running--;
          return i * 2;
        }),
      ),
    );
    assert.equal(peak, concurrency, `peak for ${concurrency}`);
    assert.deepEqual(started, [...Array(20).keys()]);
    assert.deepEqual(results, Array.from({ length: 20 }, (_, i) => i * 2));
    assert.equal(q.running, 0);
  }
});

test('pause stops new tasks from starting; resume continues', async () => {
  const q = new TaskQueue(2);
  let started = 0;
  const release = [];
  const task = () => {
    started++;
    return new Promise((r) => release.push(r));
  };
  const all = Promise.all(Array.from({ length: 6 }, () => q.push(task)));
  await tick();
  assert.equal(started, 2);
  q.pause();
  release.shift()();
  release.shift()();
  await tick(5);
  assert.equal(started, 2, 'nothing starts while paused');
  assert.equal(q.running, 0);
  assert.equal(q.size, 4);
  q.resume();
  await tick();
  assert.equal(started, 4);
  while (release.length) {
    release.shift()();
    await tick();
  }
  await all;
  assert.equal(started, 6);
  await q.onIdle();
});

test('a failing task rejects its own promise only; clear drops the waiting ones', async () => {
  const q = new TaskQueue(1);
  const a = q.push(async () => {
    throw new Error('boom');
  });
  const b = q.push(async () => 'b');
  await assert.rejects(a, /boom/);
  assert.equal(await b, 'b');

  q.pause();
  const c = q.push(async () => 'c');
  q.clear(new Error('dropped'));
  await assert.rejects(c, /dropped/);
  await q.onIdle();
});
