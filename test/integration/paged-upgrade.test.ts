// Upgrade to paged checkpoints: a filespace written by the release before them (the fixture: a
// whole-tree checkpoint and segments after it, format 2) mounts, its next checkpoint is paged,
// the header says format 4, and the tree is the same before and after, also on a fresh machine.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { REPO } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';
import { s3StoreFor } from '../helpers/moto';

/** Every path under `root` with its type, mode, size, link count and content (files) or target (links). */
async function treeOf(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const name of (await fsp.readdir(dir)).sort()) {
      const p = path.join(dir, name);
      const st = await fsp.lstat(p);
      const rel = path.relative(root, p);
      if (st.isDirectory()) {
        out.push(`${rel}/ ${st.mode.toString(8)}`);
        await walk(p);
      } else if (st.isSymbolicLink()) out.push(`${rel} -> ${await fsp.readlink(p)}`);
      else if (!st.isFile()) out.push(`${rel} ${st.mode.toString(8)} special`);
      else {
        const body = await fsp.readFile(p);
        const text = body.length > 100 ? `${body.length} bytes of ${body[0]}` : body.toString('utf8');
        out.push(`${rel} ${st.mode.toString(8)} ${st.size} nlink=${st.nlink} ${text}`);
      }
    }
  };
  await walk(root);
  return out;
}

describe('upgrade to paged checkpoints', () => {
  const env = proxiedBed('paged-upgrade');
  const bed = env.bed;

  it(
    'a filespace written by the release before mounts, its next checkpoint is paged, and the tree stays the same',
    { timeout: 10 * 60_000 },
    async () => {
      const fixture = JSON.parse(await fsp.readFile(path.join(REPO, 'test', 'fixtures', 'format2-filespace.json'), 'utf8')) as {
        objects: Record<string, string>;
      };
      const bucket = await bed.newBucket();
      const store = s3StoreFor(bed.endpoint, bucket);
      try {
        for (const [key, b64] of Object.entries(fixture.objects)) await store.put(key, Buffer.from(b64, 'base64'));
        const header = async () =>
          (JSON.parse((await store.get('filespace.json'))!.body.toString('utf8')) as { format: number }).format;
        assert.equal(await header(), 2);

        const a = await bed.link(await bed.machine('a'), bucket);
        // Read as it is (a follower writes nothing).
        await a.mount({ readOnly: true });
        const before = await treeOf(a.mnt);
        await a.unmount();
        for (const line of [
          'd0/after 100644 29 nlink=1 written after the checkpoint\n',
          'd1/moved 100644 12 nlink=1 content 3/0\n',
          'd1/f1 100644 12 nlink=2 content 1/1\n',
          'd2/hard 100644 12 nlink=2 content 1/1\n',
          'd1/sub/big 100644 153600 nlink=1 153600 bytes of 7',
          'd3/f3 100600 12 nlink=1 content 3/3\n',
          'd4/fifo 10644 special',
          'link -> d0/f0',
        ])
          assert.ok(before.includes(line), `${JSON.stringify(line)} in\n${before.join('\n')}`);
        assert.equal(await header(), 2, 'reading does not upgrade');
        assert.equal((await store.list('meta/page/')).length, 0);

        // The writer's checkpoint (at unmount) is the first paged one; the header goes to 4 before it.
        await a.mount();
        assert.deepEqual(await treeOf(a.mnt), before);
        await a.unmount();
        assert.equal(await header(), 4);
        assert.ok((await store.list('meta/page/')).length > 0, 'pages written');
        const check = await a.machine.cli('check', a.name);
        assert.equal(check.code, 0, check.stdout + check.stderr);
        assert.match(check.stdout, /1 paged checkpoint\(s\)/);

        // Mounted again on the same machine and linked on a fresh one: the same tree.
        await a.mount({ readOnly: true });
        assert.deepEqual(await treeOf(a.mnt), before);
        await a.unmount();
        const c = await bed.link(await bed.machine('fresh'), bucket);
        await c.mount({ readOnly: true });
        assert.deepEqual(await treeOf(c.mnt), before);
        await c.unmount();
      } finally {
        await store.close();
      }
    },
  );
});
