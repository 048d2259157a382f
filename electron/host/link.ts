/**
 * Linking a filespace to this machine: checks where it goes (name, mount point, cache folder)
 * before anything is created, unlocks the filespace in the bucket, builds its local metadata
 * in a new cache folder and writes the link configuration. Used by `filespace link`, `filespace
 * demo` and the desktop app's wizard. Nothing is left behind when a step fails, and a link
 * stopped half-way (killed, power lost) leaves a folder the next link into it starts over in.
 */

import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createLocalMetadata } from '../engine/cacheFolder';
import { resolveSettings } from '../engine/config';
import { HostError } from './errors';
import { explainStoreError, unlockFilespace } from '../engine/filespace';
import { probeConditionalWrites } from '../engine/meta/lease';
import type { ObjectStore } from '../engine/store/types';
import { Homes, LinkConfig, StoreSpec, checkName, configPath, linkedPlaces, readPassphraseFile, saveConfig } from './config';
import { checkMountPoint } from './mountPoint';
import { checkPlacement } from './placement';
import { openStore } from './stores';
import { fsyncDir } from '../engine/util/files';

/** Said when a store ignores conditional writes (checked at init and link). */
export const NO_CONDITIONAL_NOTE =
  'note: this store ignores conditional writes (If-None-Match / If-Match), so Filespace cannot stop two machines from writing at once: ' +
  'only the first machine to mount it read-write may write; other machines can mount it read-only (--read-only).';

/** Extra inputs of hosts that keep secrets in the OS keychain (the desktop app). */
export interface LinkExtras {
  /** A store opened with explicit credentials instead of the AWS chain; closed after linking. */
  readonly store?: ObjectStore;
  readonly secrets?: 'keychain';
}

/**
 * Put in a cache folder while a link builds its metadata there, removed once the link is
 * saved. A folder that holds it and nothing but that metadata is what a link stopped half-way
 * left, and the next link into it starts over.
 */
const LINKING_MARKER = '.linking';

/**
 * Whether `dir` (whose entries are `present`) holds only what an unfinished link left: the
 * marker, naming a link, and the metadata folder. Anything else there (a user's file, a
 * cache's dirty data) makes it a folder a link must not touch.
 */
async function unfinishedLink(dir: string, present: readonly string[]): Promise<boolean> {
  if (!present.includes(LINKING_MARKER) || present.some((e) => e !== LINKING_MARKER && e !== 'meta')) return false;
  try {
    const said = JSON.parse(await fsp.readFile(path.join(dir, LINKING_MARKER), 'utf8')) as { linking?: unknown };
    return typeof said.linking === 'string';
  } catch {
    return false;
  }
}

export async function linkFilespace(
  h: Homes,
  name: string,
  spec: StoreSpec,
  mountPoint: string,
  cacheDir: string | undefined,
  cacheCapBytes: number | undefined,
  passphraseFile: string,
  passphraseOverride?: string,
  extras: LinkExtras = {},
): Promise<LinkConfig> {
  checkName(name);
  if (
    await fsp.access(configPath(h, name)).then(
      () => true,
      () => false,
    )
  ) {
    throw new HostError(
      `a filespace named "${name}" is already linked on this machine; pick another --name or unlink it`,
      'EXISTS',
    );
  }
  const mp = path.resolve(mountPoint);
  const dir = path.resolve(cacheDir ?? path.join(h.cacheRoot, name));
  await checkPlacement({ name, mountPoint: mp, cacheDir: dir }, await linkedPlaces(h));
  await checkMountPoint(mp);
  const settings = cacheCapBytes !== undefined ? { cacheCapBytes } : {};
  resolveSettings(settings);
  const passphrase = passphraseOverride ?? (await readPassphraseFile(passphraseFile));
  const store = extras.store ?? openStore(spec);
  try {
    const { header, keys } = await unlockFilespace(store, passphrase);
    const present = await fsp.readdir(dir).catch(() => []);
    if (present.length > 0) {
      if (!(await unfinishedLink(dir, present)))
        throw new HostError(`cache directory ${dir} is not empty; pick another --cache-dir`, 'CACHE_NOT_EMPTY');
      // What a link stopped half-way (killed, power lost) left: nothing but metadata it was building.
      await fsp.rm(dir, { recursive: true, force: true });
    }
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const marker = path.join(dir, LINKING_MARKER);
    let conditionalWrites: boolean;
    try {
      await fsp.writeFile(marker, `${JSON.stringify({ linking: name, filespaceId: header.id })}\n`, { mode: 0o600 });
      await fsyncDir(dir);
      conditionalWrites = await probeConditionalWrites(store, randomBytes(8).toString('hex'));
      await createLocalMetadata(store, keys, header, dir);
    } catch (err) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw explainStoreError(err, store);
    }
    const cfg: LinkConfig = {
      version: 1,
      name,
      filespaceId: header.id,
      store: spec,
      mountPoint: mp,
      cacheDir: dir,
      passphraseFile: extras.secrets === 'keychain' ? '' : path.resolve(passphraseFile),
      settings,
      conditionalWrites,
      ...(extras.secrets ? { secrets: extras.secrets } : {}),
    };
    await saveConfig(h, cfg);
    await fsp.rm(marker, { force: true });
    return cfg;
  } finally {
    await store.close();
  }
}
