// A task queue with a concurrency limit: at most `concurrency` tasks run at once, the rest
// wait in order. pause() stops starting new tasks (those running go on; the uploader aborts
// them itself when it needs to), resume() starts them again. The chunk dialect sends its
// chunks through one of these per upload.

export class TaskQueue {
  constructor(concurrency = 3) {
    this.concurrency = Math.max(1, concurrency | 0);
    this.running = 0;
    this.paused = false;
    this.waiting = [];
    this.idleWaiters = [];
  }

  /** Adds a task (`() => Promise`); the returned promise settles with the task's result. */
  push(task) {
    return new Promise((resolve, reject) => {
      this.waiting.push({ task, resolve, reject });
      this.pump();
    });
  }

  pause() {
    this.paused = true;
  }

  resume() {
    this.paused = false;
    this.pump();
  }

  /** Drops tasks not yet started; their promises reject with `reason`. */
  clear(reason) {
    const dropped = this.waiting.splice(0);
    for (const w of dropped) w.reject(reason);
    this.checkIdle();
  }

  get size() {
    return this.waiting.length;
  }

  /** Resolves when nothing runs and nothing waits. */
  onIdle() {
    if (this.running === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  pump() {
    while (!this.paused && this.running < this.concurrency && this.waiting.length > 0) {
      const { task, resolve, reject } = this.waiting.shift();
      this.running++;
      Promise.resolve()
        .then(task)
        .then(resolve, reject)
        .finally(() => {
          this.running--;
          this.pump();
          this.checkIdle();
        });
    }
  }

  checkIdle() {
    if (this.running === 0 && this.waiting.length === 0) {
      for (const r of this.idleWaiters.splice(0)) r();
    }
  }
}
