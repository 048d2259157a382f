/**
 * POSIX as ext4 does it, through a real mount started by root (as the systemd unit does, so
 * with `allow_other,default_permissions`), run as root and as a second user, each scenario
 * compared with the same operations on a local folder: new files belong to the user who
 * created them, setgid directories hand on their group, chmod/chown are allowed as on ext4
 * and clear setuid/setgid as it does, directories count their subdirectories, `cp -a` keeps
 * modes (POSIX ACL names are refused so tools use chmod), `df` shows usable sizes, `du` counts
 * what a sparse file holds, O_APPEND writes never overwrite each other, and the cache lets go
 * of a deleted file's chunks.
 *
 * The scenarios live in posix-checks.sh (also a conformance count to run by hand); each test
 * here runs the ones of its subject and reads their verdicts.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Bed, Linked, REPO, run, sh, tmpDir, until } from '../helpers/bed';

const USER = 'fsposix';
const GROUP = 'fsposixg';
const CHECKS = path.join(REPO, 'test', 'integration', 'posix-checks.sh');

/** A second user with a supplementary group, created once on this machine if missing. */
async function ensureUser(): Promise<void> {
  if ((await run('getent', ['group', GROUP])).code !== 0) await sh(`groupadd ${GROUP}`);
  if ((await run('id', [USER])).code !== 0) await sh(`useradd -M -N -g nogroup -G ${GROUP} -s /usr/sbin/nologin ${USER}`);
}

/** Bytes of chunk files in a cache folder (what the cache holds on disk). */
async function cachedChunkBytes(cacheDir: string): Promise<number> {
  const out = await sh(`find ${cacheDir}/chunks -type f -printf '%s\\n' 2>/dev/null | awk '{s+=$1} END {print s+0}'`);
  return Number(out.trim());
}

describe('POSIX ownership, permissions and sizes as on ext4', () => {
  const bed = new Bed();
  let fs: Linked & { bucket: string; prefix: string };
  let local: string;
  /** Verdicts of posix-checks.sh by check name: "ok" or the failure text. */
  const verdicts = new Map<string, string>();
  let summary = '';

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'these tests mount as root and switch users (as CI runs them)');
    await ensureUser();
    await bed.start();
    local = await tmpDir('posix-local');
    fs = await bed.filespace({ chunkSize: '1MiB', cacheSize: '256MiB' });
    // The second user must reach both folders (temporary folders are private by default).
    await sh(`chmod 0711 ${bed.root} ${fs.machine.home} && chmod 0777 ${local}`);
    await fs.mount();
    await sh(`chmod 0777 ${fs.mnt}`);
    const r = await run('bash', [CHECKS, fs.mnt, local, USER, GROUP], { timeoutMs: 600_000 });
    summary = r.stdout.trim().split('\n').pop() ?? '';
    for (const line of r.stdout.split('\n')) {
      const m = /^(ok|FAIL) +([\w-]+)(?:: (.*))?$/.exec(line);
      if (m) verdicts.set(m[2]!, m[1] === 'ok' ? 'ok' : (m[3] ?? 'failed'));
    }
    assert.ok(verdicts.size >= 17, `posix-checks.sh ran: ${r.stdout}${r.stderr}`);
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  const expectOk = (...names: string[]) => {
    for (const n of names) assert.equal(verdicts.get(n), 'ok', `${n} (${summary})`);
  };

  it('gives a new file, directory and symlink to the user who created them, who can then write it', () => {
    expectOk('owner-of-new');
  });

  it('lets only the owner chmod, only root chown, and the owner chgrp to its own groups', () => {
    expectOk('non-owner-chmod', 'chown-other-user', 'chgrp-own-group', 'chgrp-foreign-group');
  });

  it('hands a setgid directory’s group to new entries and its setgid bit to new subdirectories', () => {
    expectOk('setgid-dir');
  });

  it('clears setuid/setgid when another user writes the file or its owner changes', () => {
    expectOk('write-clears-setuid', 'chown-clears-setuid');
  });

  it('counts a directory’s links as 2 + its subdirectories', () => {
    expectOk('dir-nlink');
  });

  it('keeps modes through cp -a and cp -p, refusing POSIX ACL names with EOPNOTSUPP', () => {
    expectOk('cp-a-modes', 'acl-names');
  });

  it('reports what a sparse file holds to du, and keeps concurrent O_APPEND writes whole', () => {
    expectOk('sparse-blocks', 'append');
  });

  it('keeps a descriptor working after its name and folder are gone, and the names of a file one file', () => {
    expectOk('open-after-rmdir', 'names-one-file');
  });

  it('shows df and stat -f sizes tools can use, with used space following the data', async () => {
    expectOk('statfs-sizes', 'df-size');
    const used = async () => Number((await sh(`df -B1 --output=used ${fs.mnt} | tail -1`)).trim());
    const before = await used();
    await sh(`head -c $((8 << 20)) /dev/urandom > ${fs.mnt}/df-data`);
    const grown = await used();
    assert.ok(grown - before >= 8 << 20, `used grew by ${grown - before}`);
    await sh(`rm ${fs.mnt}/df-data`);
    assert.ok((await used()) <= before, 'used space comes back after a delete');
  });

  it('shows the same owners, modes and link counts on a second machine following the writer', async () => {
    await sh(`runuser -u ${USER} -- sh -c 'mkdir ${fs.mnt}/follow && touch ${fs.mnt}/follow/f && mkdir ${fs.mnt}/follow/d'`);
    await fs.sync();
    const list = (dir: string) =>
      sh(`cd ${dir} && stat -c '%n %u %g %a %h' follow follow/f follow/d owner-of-new/f setgid-dir/g/sub`);
    const here = await list(fs.mnt);
    const other = await bed.link(await bed.machine('follower'), fs.bucket, fs.prefix);
    await other.mount({ readOnly: true });
    try {
      assert.equal(await list(other.mnt), here);
    } finally {
      await other.unmount();
    }
  });

  it('frees the cache space of deleted files once they are gone, keeping live data', async () => {
    await fs.sync(); // what the checks above wrote is uploaded: its chunks are part of the baseline
    const baseline = await cachedChunkBytes(fs.cacheDir);
    await sh(`mkdir -p ${fs.mnt}/gone && for i in 1 2 3 4; do head -c $((6 << 20)) /dev/urandom > ${fs.mnt}/gone/$i; done`);
    await sh(`head -c $((3 << 20)) /dev/urandom > ${fs.mnt}/kept`);
    await fs.sync(); // uploaded: the chunks are clean and held by the cache
    const full = await cachedChunkBytes(fs.cacheDir);
    assert.ok(full - baseline >= 27 << 20, `the cache holds the uploaded chunks (${full - baseline} bytes more)`);
    await sh(`rm -r ${fs.mnt}/gone`);
    const left = await until(
      'the deleted files’ chunks to leave the cache',
      async () => {
        const b = (await cachedChunkBytes(fs.cacheDir)) - baseline;
        return b < 4 << 20 ? b : undefined;
      },
      60_000,
    );
    assert.ok(left >= 3 << 20, `the live file's chunks stay cached (${left} bytes)`);
  });
});
