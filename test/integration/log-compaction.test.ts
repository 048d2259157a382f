// Compaction of the metadata log (meta/compaction.ts), through real mounts against the S3 test
// server, with small compaction intervals and graces: meta/ stays bounded under a steady stream
// of changes and a new machine still links the filespace; a writer whose segment PUT was held in
// the network while another machine took over and compacted the slot away does not count that
// segment as committed (its mount is read-only, its change stays unsent and is set aside), and
// the new writer's tree is intact; a live follower, also one suspended until the log was
// compacted past it, shows the writer's tree; `filespace check` checks the layout.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, run, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';
import { s3StoreFor } from '../helpers/moto';

/** Compaction every half second; the grace is then its floor, twice the lease TTL (4 s). */
const SETTINGS = {
  'lease-ttl': '2s',
  'follow-interval': '500ms',
  'compact-interval': '500ms',
  'compact-grace': '0s',
  'upload-delay': '0s',
};

const seqOf = (key: string) => Number(key.slice(key.lastIndexOf('/') + 1));

describe('metadata log compaction', () => {
  const env = proxiedBed('log-compaction');
  const bed = env.bed;

  async function logState(bucket: string): Promise<{ meta: number; segments: number[]; head: number; ckpts: number[] }> {
    const store = s3StoreFor(bed.endpoint, bucket);
    try {
      const keys = await store.list('meta/');
      const segments = keys.filter((k) => k.startsWith('meta/log/')).map(seqOf);
      const ckpts = keys.filter((k) => k.startsWith('meta/ckpt/')).map(seqOf);
      return { meta: keys.length, segments, head: Math.max(0, ...segments), ckpts };
    } finally {
      await store.close();
    }
  }

  /** The compaction mark, as `filespace check` reports it (0: never compacted). */
  async function markOf(m: Linked): Promise<number> {
    const out = await m.machine.ok('check', m.name);
    return Number(/compacted up to segment (\d+)/.exec(out)?.[1] ?? 0);
  }

  async function listing(dir: string): Promise<string> {
    const names = (await fsp.readdir(dir)).sort();
    const parts: string[] = [];
    for (const n of names) parts.push(`${n}=${await fsp.readFile(path.join(dir, n), 'utf8')}`);
    return parts.join('|');
  }

  async function headerFormat(bucket: string): Promise<number> {
    const store = s3StoreFor(bed.endpoint, bucket);
    try {
      const got = await store.get('filespace.json');
      return (JSON.parse(got!.body.toString('utf8')) as { format: number }).format;
    } finally {
      await store.close();
    }
  }

  it(
    'keeps meta/ bounded under a steady stream of changes; a new machine links the compacted filespace',
    { timeout: 15 * 60_000 },
    async () => {
      const a = await bed.filespace({ settings: SETTINGS });
      await a.mount();
      const samples: number[] = [];
      let state = await logState(a.bucket);
      for (let i = 0; state.head < 120; i++) {
        assert.ok(i < 2000, 'the log advances');
        const before = state.head;
        await fsp.writeFile(path.join(a.mnt, `f${i % 40}.txt`), `change ${i}\n`);
        // One change per segment: wait for it to reach the bucket.
        state = await until('the change to reach the bucket', async () => {
          const s = await logState(a.bucket);
          return s.head > before ? s : undefined;
        });
        samples.push(state.meta);
      }
      const late = samples.slice(samples.length / 2);
      process.stdout.write(
        `meta/ objects after ${state.head} segments: ${state.meta} (most in the second half: ${Math.max(...late)}; samples ${samples.join(',')})\n`,
      );
      // Bounded, not a cadence: compaction runs every 500 ms while a change lands about every
      // 100 ms, so a round delayed on a loaded machine lets ten or more objects pile up before
      // the next (peaks of 34 to 44 seen in CI, each followed by a drop to about 20); a log
      // that is not compacted would hold 120 and more here.
      assert.ok(Math.max(...late) <= 60, `meta/ stays bounded: ${samples.join(',')}`);
      assert.ok(state.segments.length < state.head / 2, `segments were deleted: ${state.segments.length} of ${state.head}`);
      // Paged checkpoints raise it to 4, which allows a compacted log too.
      assert.ok((await headerFormat(a.bucket)) >= 3, 'the header says the log may be compacted');
      const mark = await markOf(a);
      assert.ok(mark > 0 && state.ckpts.some((c) => c >= mark), `a checkpoint covers the mark ${mark}: ${state.ckpts.join(',')}`);
      await a.sync();
      const expected = await listing(a.mnt);
      const check = await a.machine.cli('check', a.name);
      assert.equal(check.code, 0, check.stdout + check.stderr);

      // A new machine reads the newest checkpoint and the segments after it.
      const c = await bed.link(await bed.machine('fresh'), a.bucket);
      await a.unmount();
      await c.mount({ readOnly: true });
      assert.equal(await listing(c.mnt), expected);
      await c.unmount();
    },
  );

  it(
    "a writer whose segment PUT lands in a slot compaction emptied does not count it; the new writer's tree is intact",
    { timeout: 10 * 60_000 },
    async () => {
      env.proxy.clear();
      // A talks to S3 through the proxy, B directly.
      const a = await bed.filespace({ endpoint: env.proxy.endpoint, settings: SETTINGS });
      const b = await bed.link(await bed.machine('b'), a.bucket);
      await b.set(SETTINGS);
      const pidA = await a.mount();
      await fsp.writeFile(path.join(a.mnt, 'before.txt'), 'committed\n');
      await a.sync();

      // A's next segment PUT is held in the network; A is suspended while it waits for the answer.
      env.proxy.set({ hold: true, match: { method: 'PUT', pathIncludes: '/meta/log/' } });
      await fsp.writeFile(path.join(a.mnt, 'late.txt'), 'written by a, never committed\n');
      await until('the segment PUT of a to be held', () => env.proxy.heldCount > 0);
      const heldUrl = env.proxy.log.filter((e) => e.method === 'PUT' && e.url.includes('/meta/log/')).pop()!.url;
      const slot = seqOf(heldUrl.split('?')[0]!);
      process.kill(pidA, 'SIGSTOP');
      let written = 0;
      try {
        // Past A's TTL, B takes the lease with a plain mount, fences slot `slot`, writes, compacts.
        await until(
          'the lease of a to expire',
          async () => (await b.machine.cli('mount', b.name)).code === 0 || undefined,
          60_000,
        );
        // The mark follows the older kept checkpoint: B keeps changing until it passes the slot.
        await until(
          `compaction to delete slot ${slot}`,
          async () => {
            await fsp.writeFile(path.join(b.mnt, `from-b-${written}.txt`), `b ${written}\n`);
            written++;
            await b.sync();
            return !(await logState(a.bucket)).segments.includes(slot) && (await markOf(b)) >= slot;
          },
          120_000,
          200,
        );
        // The held PUT reaches the server now: into the empty slot.
        await env.proxy.releaseHeld();
      } catch (err) {
        const logB = await fsp.readFile(path.join(b.machine.home, 'run', `${b.name}.log`), 'utf8').catch(() => '');
        process.stdout.write(`B LOG\n${logB}\n${JSON.stringify(await logState(a.bucket))}\n`);
        throw err;
      } finally {
        env.proxy.clear();
        process.kill(pidA, 'SIGCONT');
      }
      assert.ok((await logState(a.bucket)).segments.includes(slot), 'the late PUT of a wrote into the compacted slot');

      const st = await until('a to find out it lost the lease', async () => {
        const s = await a.status();
        return /lost|taken over|another machine/.test(String(s.readOnlyReason)) ? s : undefined;
      });
      assert.ok(Number(st.pendingMetaOps) > 0, `a does not count its late segment as committed: ${JSON.stringify(st)}`);
      const w = await run('touch', [path.join(a.mnt, 'after-wake.txt')]);
      assert.match(w.stderr, /Read-only file system/);

      // B's tree is intact, for B and for a machine that links it now.
      const expected = ['before.txt=committed\n']
        .concat(Array.from({ length: written }, (_, i) => `from-b-${i}.txt=b ${i}\n`))
        .sort()
        .join('|');
      assert.equal(await listing(b.mnt), expected);
      const check = await b.machine.cli('check', b.name);
      assert.equal(check.code, 0, check.stdout + check.stderr);
      // The late segment lies at or below the mark (no reader looks there; a later round deletes it).
      assert.ok(Number(/compacted up to segment (\d+)/.exec(check.stdout)?.[1]) >= slot, check.stdout);
      const c = await bed.link(await bed.machine('c'), a.bucket);
      await c.mount({ readOnly: true });
      assert.equal(await listing(c.mnt), expected);
      await c.unmount();

      // A's next mount sets its change aside and shows B's tree.
      await a.unmount();
      await a.mount({ readOnly: true });
      assert.equal(await listing(a.mnt), expected);
      const aside = (await a.status()).aside as Array<{ files: number }>;
      assert.equal(aside.length, 1, 'the change of a is set aside');
      await a.unmount();
      await b.unmount();
    },
  );

  it(
    "a live follower, also one suspended until the log was compacted past it, shows the writer's tree",
    { timeout: 10 * 60_000 },
    async () => {
      const a = await bed.filespace({ settings: SETTINGS });
      const b = await bed.link(await bed.machine('follower'), a.bucket);
      await b.set(SETTINGS);
      await a.mount();
      await b.mount({ readOnly: true });
      const pidB = await b.pid();
      const write = async (from: number, to: number) => {
        for (let i = from; i < to; i++) {
          await fsp.writeFile(path.join(a.mnt, `n${i % 15}.txt`), `v${i}\n`);
          if (i % 4 === 3) await a.sync();
        }
        await a.sync();
      };
      // Live: it follows across compactions.
      await write(0, 40);
      // The mark needs two checkpoints after the first; they are written by compaction rounds
      // that find every change pushed, so changes go on until it is raised.
      let more = 0;
      await until(
        'a compaction',
        async () => {
          if ((await markOf(a)) > 0) return true;
          await fsp.writeFile(path.join(a.mnt, `w${more++ % 5}.txt`), `w${more}\n`);
          await a.sync();
          return undefined;
        },
        120_000,
        500,
      );
      await write(40, 60);
      let expected = await listing(a.mnt);
      await until('the live follower to show the tree', async () => (await listing(b.mnt)) === expected);

      // Suspended: the writer compacts past its position; it wakes, finds the gap, reloads.
      const behind = (await logState(a.bucket)).head;
      process.kill(pidB, 'SIGSTOP');
      try {
        for (let round = 60; ; round += 10) {
          assert.ok(round < 1000, 'compaction passes the follower');
          await write(round, round + 10);
          const s = await logState(a.bucket);
          if ((await markOf(a)) > behind && !s.segments.includes(behind + 1)) break;
        }
        expected = await listing(a.mnt);
      } finally {
        process.kill(pidB, 'SIGCONT');
      }
      await until('the woken follower to show the tree', async () => (await listing(b.mnt)) === expected, 60_000);
      const log = await fsp.readFile(path.join(b.machine.home, 'run', `${b.name}.log`), 'utf8');
      assert.match(log, /compacted past this machine's copy .*reloaded it from the newest checkpoint/);
      await b.unmount();
      await a.unmount();
    },
  );
});
