// A writer cut off from S3 (DESIGN invariant 4: being offline is not losing the lease), through
// real mounts, with the writer behind a fault proxy and a second machine talking to the S3 test
// server directly: a frozen server that applies a lease renewal whose answer the writer never
// got does not fence the writer off; a writer offline for longer than its lease keeps taking
// writes, says so in its status, and commits them at reconnect when nobody took the lease; when
// another machine took it meanwhile, the writer turns read-only, commits nothing, says so in
// `sync`, and sets its changes aside at its next mount.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Linked, randomFile, run, sh, until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';

const SHORT_TTL = '3s';
const isLeasePut = (e: { method: string; url: string }) => e.method === 'PUT' && /\/lease(\?|$)/.test(e.url);

describe('a writer cut off from S3', () => {
  const env = proxiedBed('lease-outage');
  const bed = env.bed;

  /** Machine A talks to S3 through the proxy; B (when asked for) talks to it directly. */
  async function writerAndOther(settings: Record<string, string>): Promise<{ a: Linked & { bucket: string }; b: Linked }> {
    env.proxy.clear();
    const a = await bed.filespace({ endpoint: env.proxy.endpoint, settings: { 'upload-delay': '0s', ...settings } });
    const b = await bed.link(await bed.machine('other'), a.bucket);
    await b.set(settings);
    return { a, b };
  }

  /** Waits until everything is uploaded, or the mount turned read-only (then fails with its reason). */
  async function uploadedOrFenced(a: Linked): Promise<Record<string, unknown>> {
    const st = await until(
      'the writer to upload everything (or turn read-only)',
      async () => {
        const s = await a.status();
        return s.readOnlyReason || (s.dirtyBytes === 0 && s.pendingMetaOps === 0) ? s : undefined;
      },
      180_000,
    );
    assert.equal(st.readOnlyReason, null, `the writer must keep writing: ${String(st.readOnlyReason)}`);
    return st;
  }

  it("a renewal applied by a frozen server whose answer was lost is recognised as this mount's own; the writer keeps writing", async () => {
    const { a, b } = await writerAndOther({});
    await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'before.txt'), 'before\n');
    await a.sync();
    const mark = env.proxy.log.length;
    env.proxy.freeze();
    try {
      await fsp.writeFile(path.join(a.mnt, 'during.txt'), 'written while the server was frozen\n');
      // The renewal's first attempt times out and the S3 client sends it again: both wait in the frozen server.
      await until(
        'a lease renewal and its retry to wait in the frozen server',
        () => env.proxy.log.slice(mark).filter(isLeasePut).length >= 2,
        180_000,
      );
    } finally {
      await env.proxy.thaw();
    }
    const answers = env.proxy.log
      .slice(mark)
      .filter(isLeasePut)
      .map((e) => e.status);
    assert.ok(answers.includes(412), `the retry found the lease changed by the first attempt (answers: ${answers.join(',')})`);
    await uploadedOrFenced(a);
    const st = await a.status();
    assert.equal((st.lease as Record<string, unknown>).role, 'writer');
    await fsp.writeFile(path.join(a.mnt, 'after.txt'), 'after\n');
    await a.sync();
    await b.mount({ readOnly: true });
    for (const [name, text] of [
      ['before.txt', 'before\n'],
      ['during.txt', 'written while the server was frozen\n'],
      ['after.txt', 'after\n'],
    ]) {
      assert.equal(await fsp.readFile(path.join(b.mnt, name!), 'utf8'), text, `${name} reached the bucket`);
    }
    await b.unmount();
    await a.unmount();
  });

  it('offline for longer than the lease: writes are kept, status says so, and they are committed at reconnect when nobody took the lease', async () => {
    const { a, b } = await writerAndOther({ 'lease-ttl': SHORT_TTL });
    await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'before.txt'), 'before\n');
    await a.sync();
    env.proxy.goOffline();
    let offlineBin: string;
    try {
      offlineBin = await randomFile(env.local, 'offline-a.bin', 2 * 1024 * 1024);
      await sh(`cp ${offlineBin} ${a.mnt}/offline.bin && mkdir ${a.mnt}/made-offline`);
      // Well past the lease's TTL: other machines would now see it expired.
      const line = await until(
        'status to say the lease could not be renewed for longer than its TTL',
        async () => {
          const out = await a.machine.ok('status', a.name);
          const m = /could not renew the write lease since \d\d:\d\d:\d\d \((\d+)s\)[^\n]*/.exec(out);
          return m && Number(m[1]) >= 8 ? m[0] : undefined;
        },
        120_000,
      );
      assert.match(line, /kept on this computer/);
      assert.doesNotMatch(line, /holds the write lease \(renewed/);
      const st = await a.status();
      assert.equal(st.readOnlyReason, null);
      assert.equal(typeof (st.lease as Record<string, unknown>).renewFailingSince, 'number');
      // Still taking writes, long after the lease would have expired.
      await fsp.writeFile(path.join(a.mnt, 'made-offline', 'late.txt'), 'late\n');
    } finally {
      env.proxy.goOnline();
    }
    const st = await uploadedOrFenced(a);
    const lease = st.lease as Record<string, unknown>;
    assert.equal(lease.role, 'writer');
    assert.match(await a.machine.ok('status', a.name), /holds the write lease \(renewed/);
    await b.mount({ readOnly: true });
    await sh(
      `cmp ${offlineBin} ${b.mnt}/offline.bin && test "$(cat ${b.mnt}/made-offline/late.txt)" = late && test "$(cat ${b.mnt}/before.txt)" = before`,
    );
    await b.unmount();
    await a.unmount();
  });

  it('offline while another machine takes the lease: the writer turns read-only at reconnect, commits nothing, and sets its changes aside at its next mount', async () => {
    const { a, b } = await writerAndOther({ 'lease-ttl': SHORT_TTL, 'follow-interval': '500ms' });
    await a.mount();
    await fsp.writeFile(path.join(a.mnt, 'before.txt'), 'before\n');
    await a.sync();
    env.proxy.goOffline();
    try {
      await fsp.writeFile(path.join(a.mnt, 'offline.txt'), 'written offline on a\n');
      // A's lease expires: B takes it with a plain mount, and writes.
      await until(
        'the other machine to take the expired lease',
        async () => (await b.machine.cli('mount', b.name)).code === 0 || undefined,
        60_000,
      );
      await fsp.writeFile(path.join(b.mnt, 'by-b.txt'), 'b writes now\n');
      await b.sync();
    } finally {
      env.proxy.goOnline();
    }
    const st = await until(
      'the writer to find its lease taken',
      async () => {
        const s = await a.status();
        return /taken over by/.test(String(s.readOnlyReason)) ? s : undefined;
      },
      120_000,
    );
    assert.notEqual((st.lease as Record<string, unknown>).role, 'writer');
    const w = await run('touch', [path.join(a.mnt, 'after-reconnect.txt')]);
    assert.match(w.stderr, /Read-only file system/);
    const sync = await a.machine.cli('sync', a.name, '--timeout', '5s');
    assert.notEqual(sync.code, 0, 'sync cannot succeed without the lease');
    assert.match(sync.stderr, /lost the write lease to \S+ \(process \d+, machine [0-9a-f]{8}\)/);
    assert.match(sync.stderr, /kept in this computer's cache and set aside at the next mount/);
    assert.doesNotMatch(sync.stderr, /timed out/);
    // Nothing of A's reached the filespace after B took over.
    await until(
      'b to be unaffected',
      async () => (await fsp.readdir(b.mnt)).sort().join(',') === 'before.txt,by-b.txt' || undefined,
      10_000,
    );
    await a.unmount();
    await b.unmount();
    // B released the lease: A mounts read-write again, with its offline change set aside.
    await a.mount();
    const after = await a.status();
    const aside = after.aside as Array<{ id: string; files: number }>;
    assert.equal(aside.length, 1, JSON.stringify(after));
    assert.equal(await fsp.readFile(path.join(a.mnt, 'by-b.txt'), 'utf8'), 'b writes now\n', "b's data is intact");
    assert.equal(
      await fsp.stat(path.join(a.mnt, 'offline.txt')).then(
        () => true,
        () => false,
      ),
      false,
    );
    const out = path.join(env.local, 'recovered-outage');
    await a.machine.ok('aside', a.name, 'export', aside[0]!.id, out);
    assert.equal(
      await fsp.readFile(path.join(out, 'offline.txt'), 'utf8'),
      'written offline on a\n',
      'the offline change is recoverable',
    );
    await a.unmount();
  });
});
