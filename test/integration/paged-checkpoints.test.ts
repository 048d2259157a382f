// Paged checkpoints (meta/pages.ts) through real mounts against the S3 test server: after a
// change in two directories the next checkpoint PUTs only their pages and the manifest; a
// fresh machine links and sees the same tree; compaction deletes the pages no kept checkpoint
// names; `filespace check` catches a missing and a damaged page, and notes unnamed ones.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { until } from '../helpers/bed';
import { proxiedBed } from '../helpers/faultProxy';
import { s3StoreFor } from '../helpers/moto';
import { unlockFilespace } from '../../electron/engine/filespace';
import { Manifest, isDirCover } from '../../electron/engine/meta/pages';
import { RemoteMeta } from '../../electron/engine/meta/remote';
import { ROOT_INO } from '../../electron/engine/meta/tree';
import { ObjectStore } from '../../electron/engine/store/types';

const PASSPHRASE = 'correct horse battery staple';

/** What each of `keys` covers in the newest manifest: `/name` for a directory under the root, `/` for the root, `links`. */
async function coversOf(store: ObjectStore, keys: readonly string[]): Promise<string[]> {
  const { header, keys: secrets } = await unlockFilespace(store, PASSPHRASE);
  const remote = new RemoteMeta(store, secrets.metaKey, header);
  const manifest = (await remote.readCheckpoint((await store.list('meta/ckpt/')).pop()!)) as Manifest;
  const names = new Map<number, string>([[ROOT_INO, '/']]);
  for (const page of await remote.readDirectory(manifest, ROOT_INO))
    if ('entries' in page) for (const [name, ino] of page.entries) names.set(ino, `/${name}`);
  return keys
    .map((k) => {
      const ref = manifest.pages.find((r) => r.key === k);
      if (!ref) return `${k}: not in the manifest`;
      return isDirCover(ref) ? (names.get(ref.dir) ?? `dir ${ref.dir}`) : `links ${ref.lo}`;
    })
    .sort();
}

const DIRS = 12;
const FILES = 6;

/** Every path under `root` with its type, mode, size and content (files) or target (links). */
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
      else out.push(`${rel} ${st.mode.toString(8)} ${st.size} nlink=${st.nlink} ${await fsp.readFile(p, 'utf8')}`);
    }
  };
  await walk(root);
  return out;
}

describe('paged checkpoints', () => {
  const env = proxiedBed('paged-ckpt');
  const bed = env.bed;

  it(
    'a checkpoint after changes in two directories writes only their pages; a fresh machine sees the same tree; check and compaction know the pages',
    { timeout: 15 * 60_000 },
    async () => {
      env.proxy.clear();
      const a = await bed.filespace({
        endpoint: env.proxy.endpoint,
        // Compaction (which also writes checkpoints) only later, so the unmount writes the checkpoint.
        settings: { 'lease-ttl': '2s', 'compact-grace': '0s', 'upload-delay': '0s' },
      });
      const store = s3StoreFor(bed.endpoint, a.bucket);
      try {
        await a.mount();
        for (let d = 0; d < DIRS; d++) {
          await fsp.mkdir(path.join(a.mnt, `d${d}`));
          for (let f = 0; f < FILES; f++) await fsp.writeFile(path.join(a.mnt, `d${d}`, `f${f}`), `content ${d}/${f}\n`);
        }
        await fsp.symlink('d0/f0', path.join(a.mnt, 'link'));
        await fsp.link(path.join(a.mnt, 'd1', 'f1'), path.join(a.mnt, 'd2', 'hard'));
        await fsp.chmod(path.join(a.mnt, 'd4'), 0o700);
        // Everything in the bucket first: unmount writes its checkpoint only once nothing waits
        // to upload, and gives the uploads a few seconds (a busy machine may need more).
        await a.sync();
        await a.unmount(); // writes a checkpoint
        const pagesFirst = await store.list('meta/page/');
        assert.ok(pagesFirst.length >= DIRS, `a page per directory at least: ${pagesFirst.length}`);

        // Change files in two directories (content only: their directories' records stay).
        await a.mount();
        await fsp.writeFile(path.join(a.mnt, 'd3', 'f2'), 'changed in d3\n');
        await fsp.writeFile(path.join(a.mnt, 'd7', 'f5'), 'changed in d7, a little longer\n');
        await a.sync();
        const from = env.proxy.log.length;
        await a.unmount();
        const puts = env.proxy.log.slice(from).filter((e) => e.method === 'PUT');
        const pagePuts = puts.filter((e) => e.url.includes('/meta/page/'));
        const ckptPuts = puts.filter((e) => e.url.includes('/meta/ckpt/'));
        const putKeys = pagePuts.map((e) => /\/(meta\/page\/[^?]+)/.exec(e.url)![1]!);
        assert.deepEqual(await coversOf(store, putKeys), ['/d3', '/d7'], 'the pages of d3 and d7');
        assert.equal(ckptPuts.length, 1, 'and the manifest');
        const expected = await (async () => {
          await a.mount({ readOnly: true });
          try {
            return await treeOf(a.mnt);
          } finally {
            await a.unmount();
          }
        })();
        assert.ok(expected.some((l) => l.startsWith('d3/f2 ') && l.endsWith('changed in d3\n')));

        // A fresh machine links from the paged checkpoint, reading no folder's page (they load
        // as the mount uses them), and sees the same tree.
        const linkFrom = env.proxy.log.length;
        const c = await bed.link(await bed.machine('fresh'), a.bucket, '', undefined, env.proxy.endpoint);
        const linkPages = env.proxy.log.slice(linkFrom).filter((e) => e.method === 'GET' && e.url.includes('/meta/page/'));
        const linkRead = await coversOf(
          store,
          linkPages.map((e) => /\/(meta\/page\/[^?]+)/.exec(e.url)![1]!),
        );
        assert.ok(linkRead.includes('/'), `the link reads the root's page (read: ${linkRead.join(', ')})`);
        assert.deepEqual(
          linkRead.filter((c) => c !== '/' && !c.startsWith('links')),
          [],
          'the link reads the root and link pages only',
        );
        const unmounted = await c.machine.cli('check', c.name);
        assert.equal(unmounted.code, 0, unmounted.stdout + unmounted.stderr);
        assert.match(unmounted.stdout, new RegExp(`local: ${DIRS} folder\\(s\\) not loaded from the bucket yet`));
        // Mounted, it loads the folders in the background; while their pages are held in the
        // network, `filespace status` says how many are still to load.
        env.proxy.set({ hold: true, match: { method: 'GET', pathIncludes: '/meta/page/' } });
        await c.mount({ readOnly: true });
        await until('the background asks for folder pages', () => env.proxy.heldCount > 0 || undefined, 60_000);
        const loading = await until(
          'status while the folders load',
          async () => {
            const st = await c.machine.cli('status', c.name);
            return /loading folders from the bucket/.test(st.stdout) ? st.stdout : undefined;
          },
          60_000,
        );
        assert.match(
          loading,
          new RegExp(`loading folders from the bucket: ${DIRS} left \\(each loads at once when it is used\\)`),
        );
        env.proxy.clear();
        await env.proxy.releaseHeld();
        assert.deepEqual(await treeOf(c.mnt), expected);
        const loaded = await until(
          'status once every folder is loaded',
          async () => {
            const st = await c.machine.cli('status', c.name, '--json');
            return !(JSON.parse(st.stdout) as { foldersLoading?: number }).foldersLoading ? st : undefined;
          },
          60_000,
        );
        assert.equal(loaded.code, 0);
        assert.doesNotMatch((await c.machine.cli('status', c.name)).stdout, /loading folders/);
        await c.unmount();
        // Another fresh machine writes before every folder is loaded; the writer sees it.
        const w = await bed.link(await bed.machine('fresh-writer'), a.bucket);
        await w.mount();
        await fsp.writeFile(path.join(w.mnt, 'd5', 'new'), 'written by a fresh machine\n');
        await fsp.rename(path.join(w.mnt, 'd6', 'f0'), path.join(w.mnt, 'd9', 'moved'));
        await fsp.mkdir(path.join(w.mnt, 'd4', 'sub'));
        await w.sync();
        await w.unmount();
        await a.mount({ readOnly: true });
        const after = await treeOf(a.mnt);
        await a.unmount();
        assert.ok(after.some((l) => /^d4\/sub\/ 407/.test(l)));
        assert.deepEqual(
          after.filter((l) => !l.startsWith('d4/sub/')).sort(),
          [
            ...expected.filter((l) => !l.startsWith('d6/f0 ')),
            'd5/new 100644 27 nlink=1 written by a fresh machine\n',
            expected.find((l) => l.startsWith('d6/f0 '))!.replace('d6/f0', 'd9/moved'),
          ].sort(),
        );

        const check = await a.machine.cli('check', a.name);
        assert.equal(check.code, 0, check.stdout + check.stderr);
        assert.match(check.stdout, /2 paged checkpoint\(s\) naming \d+ page\(s\)/);

        // Compaction: once the first checkpoint is no longer kept, the pages only it named go.
        await a.set({ 'compact-interval': '500ms' });
        await a.mount();
        await fsp.writeFile(path.join(a.mnt, 'd3', 'f2'), 'changed again\n');
        await a.sync();
        await until(
          'a third checkpoint and the deletion of the pages no kept checkpoint names',
          async () => {
            const pages = await store.list('meta/page/');
            // The pages of d3 and d7 the second checkpoint replaced were named by the first only.
            if (pagesFirst.filter((k) => !pages.includes(k)).length < 2) return undefined;
            const report = await a.machine.cli('check', a.name);
            return report.code === 0 && !/no kept checkpoint names/.test(report.stdout) ? true : undefined;
          },
          120_000,
        );
        await a.unmount();

        // A missing or damaged page named by a kept checkpoint is a problem `check` names.
        const named = /naming (\d+) page/.exec((await a.machine.ok('check', a.name)) ?? '');
        assert.ok(named);
        const newest = (await store.list('meta/page/')).pop()!;
        const body = (await store.get(newest))!.body;
        await store.delete(newest);
        const missing = await a.machine.cli('check', a.name);
        assert.notEqual(missing.code, 0);
        assert.match(missing.stdout + missing.stderr, new RegExp(`names page ${newest}, which is not in the bucket`));
        const damaged = Buffer.from(body);
        damaged[damaged.length - 1]! ^= 1;
        await store.put(newest, damaged);
        const bad = await a.machine.cli('check', a.name);
        assert.notEqual(bad.code, 0);
        assert.match(bad.stdout + bad.stderr, new RegExp(`metadata page ${newest} \\(named by checkpoint`));
        await store.put(newest, body);
        // An unnamed page is garbage left for compaction, not damage.
        await store.put('meta/page/000000000001-deadbeef-0', body);
        const garbage = await a.machine.cli('check', a.name);
        assert.equal(garbage.code, 0, garbage.stdout + garbage.stderr);
        assert.match(garbage.stdout, /1 page\(s\) no kept checkpoint names \(left for compaction to delete\)/);
      } finally {
        await store.close();
      }
    },
  );
});
