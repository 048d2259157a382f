// Pins down the write-stall rule (vfs/backpressure.ts): a write waits for room while uploads
// free it, however long; while nothing can drain it waits at most the stall timeout and then
// fails with ENOSPC; later writes fail at once until room is freed or uploads can drain again;
// a mount turning read-only fails waiting writes with EROFS at once; status says it as a state.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FsError } from '../../electron/engine/errors';
import { Backpressure, StallCause } from '../../electron/engine/vfs/backpressure';

interface World {
  full: boolean;
  blocked: StallCause | undefined;
  readOnly: string | undefined;
  stallMs: number;
  pressure: number;
}

function setup(init: Partial<World> = {}): { w: World; bp: Backpressure } {
  const w: World = { full: true, blocked: undefined, readOnly: undefined, stallMs: 60_000, pressure: 0, ...init };
  const bp = new Backpressure({
    reserve: () => (w.full ? undefined : () => undefined),
    blocked: () => w.blocked,
    readOnly: () => w.readOnly,
    stallTimeoutMs: () => w.stallMs,
    onPressure: () => void w.pressure++,
  });
  return { w, bp };
}

const errno = (code: string) => (err: unknown) => err instanceof FsError && err.errno === code;

/** True if `p` is still pending after the event loop turned a few times. */
async function pending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  return !settled;
}

describe('Backpressure: how long a write waits for room', () => {
  it('goes on at once when there is room', async () => {
    const { bp } = setup({ full: false });
    await bp.waitForRoom(1);
    assert.equal(bp.status(), undefined);
  });

  it('waits while uploads make progress, and goes on when they free room', async () => {
    const { w, bp } = setup({ stallMs: 0 });
    const write = bp.waitForRoom(1);
    assert.ok(await pending(write), 'waits: uploads drain, so the stall timeout does not apply');
    assert.ok(w.pressure > 0, 'tells the uploader that writers wait');
    assert.equal(bp.status()?.cause, 'uploading');
    w.full = false;
    bp.freed();
    await write;
    assert.equal(bp.status(), undefined, 'the state ends with the wait');
  });

  it('fails with ENOSPC after the stall timeout while nothing can drain, then refuses at once until something drains', async () => {
    const { w, bp } = setup({ blocked: 'paused', stallMs: 50 });
    await assert.rejects(bp.waitForRoom(1), errno('ENOSPC'));
    const st = bp.status();
    assert.equal(st?.cause, 'paused');
    assert.equal(st?.refusing, true);
    assert.equal(st?.refused, 1);
    // With a timeout that long, only the refusal can fail the next write at once.
    w.stallMs = 3_600_000;
    await assert.rejects(bp.waitForRoom(1), errno('ENOSPC'));
    assert.equal(bp.status()?.refused, 2);
    // Room freed (a file deleted): writes wait again instead of failing.
    bp.freed();
    const next = bp.waitForRoom(1);
    assert.ok(await pending(next));
    w.full = false;
    bp.freed();
    await next;
    assert.equal(bp.status(), undefined);
  });

  it('resuming uploads ends the refusal: writes wait for them again', async () => {
    const { w, bp } = setup({ blocked: 'offline', stallMs: 0 });
    await assert.rejects(bp.waitForRoom(1), errno('ENOSPC'));
    w.blocked = undefined; // the bucket answers again
    bp.drainChanged();
    const next = bp.waitForRoom(1);
    assert.ok(await pending(next));
    assert.equal(bp.status()?.refusing, false);
    w.full = false;
    bp.freed();
    await next;
  });

  it('a write waiting when the mount turns read-only fails with EROFS at once', async () => {
    const { w, bp } = setup({ blocked: 'paused' });
    const write = bp.waitForRoom(1);
    assert.ok(await pending(write));
    w.readOnly = 'read-only: the write lease was taken over by another machine';
    bp.drainChanged();
    await assert.rejects(write, errno('EROFS'));
  });

  it('a write waiting when uploads become impossible fails once the stall timeout has passed, not before', async () => {
    const { w, bp } = setup({ stallMs: 3_600_000 });
    const write = bp.waitForRoom(1);
    assert.ok(await pending(write));
    w.blocked = 'failing';
    bp.drainChanged();
    assert.ok(await pending(write), 'still within its stall timeout');
    assert.equal(bp.status()?.cause, 'failing');
    assert.equal(bp.status()?.refusing, false);
    w.stallMs = 0;
    bp.drainChanged();
    await assert.rejects(write, errno('ENOSPC'));
  });
});
