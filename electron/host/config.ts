/**
 * Per-machine configuration of linked filespaces: where things live on this machine and how
 * the engine is tuned here. One JSON file per filespace under the config directory, written
 * atomically, owner-only. No secret is ever stored here: the passphrase stays in its own 0600
 * file (headless) or the OS keychain (desktop), and AWS credentials come from the AWS chain.
 *
 * Locations: $FILESPACE_HOME/{config,cache,run} when set (tests, portable installs), else the
 * XDG base directories (~/.config/filespace, ~/.cache/filespace, $XDG_RUNTIME_DIR/filespace).
 */

import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { EngineSettings, resolveSettings } from '../engine/config';
import { HostError } from './errors';
import { writeFileAtomic } from '../engine/util/files';

export interface Homes {
  readonly configDir: string;
  readonly cacheRoot: string;
  readonly runDir: string;
}

export function homes(env: NodeJS.ProcessEnv = process.env): Homes {
  const base = env.FILESPACE_HOME;
  if (base) {
    const abs = path.resolve(base);
    return { configDir: path.join(abs, 'config'), cacheRoot: path.join(abs, 'cache'), runDir: path.join(abs, 'run') };
  }
  const home = os.homedir();
  const xdgConfig = env.XDG_CONFIG_HOME || path.join(home, '.config');
  const xdgCache = env.XDG_CACHE_HOME || path.join(home, '.cache');
  const runtime = env.XDG_RUNTIME_DIR ? path.join(env.XDG_RUNTIME_DIR, 'filespace') : path.join(xdgCache, 'filespace', 'run');
  return { configDir: path.join(xdgConfig, 'filespace'), cacheRoot: path.join(xdgCache, 'filespace'), runDir: runtime };
}

export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const storeSpecSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('s3'),
    bucket: z.string().min(3).max(63),
    prefix: z.string().max(512).default(''),
    region: z.string().optional(),
    endpoint: z.string().url().optional(),
    pathStyle: z.boolean().default(false),
  }),
  z.object({ kind: z.literal('local'), root: z.string().min(1) }),
]);
export type StoreSpec = z.infer<typeof storeSpecSchema>;

export const linkConfigSchema = z.object({
  version: z.literal(1),
  name: z.string().regex(NAME_RE),
  filespaceId: z.string(),
  store: storeSpecSchema,
  mountPoint: z.string(),
  cacheDir: z.string(),
  passphraseFile: z.string(),
  settings: z.record(z.string(), z.unknown()).default({}),
  /** Whether the store refuses a conditional write that should fail (checked at link). */
  conditionalWrites: z.boolean().default(true),
  /** 'keychain': linked by the desktop app; the passphrase and AWS keys live in the OS keychain, not in passphraseFile. */
  secrets: z.literal('keychain').optional(),
  /** Files and folders kept in this machine's cache for use offline (engine/pins.ts): inode, and path when last seen. */
  pins: z.array(z.object({ ino: z.number().int().positive(), path: z.string() })).optional(),
});
export type LinkConfig = z.infer<typeof linkConfigSchema>;

export function configPath(h: Homes, name: string): string {
  return path.join(h.configDir, 'filespaces', `${name}.json`);
}

/** The engine settings of a linked filespace: its saved settings over the defaults. */
export function settingsOf(cfg: LinkConfig): EngineSettings {
  return resolveSettings(cfg.settings);
}

export function socketPath(h: Homes, name: string): string {
  return path.join(h.runDir, `${name}.sock`);
}

export function logPath(h: Homes, name: string): string {
  return path.join(h.runDir, `${name}.log`);
}

export function checkName(name: string): void {
  if (!NAME_RE.test(name)) {
    throw new HostError(`"${name}" is not a valid filespace name: use letters, digits, ".", "_" or "-" (at most 64)`, 'BAD_NAME');
  }
}

export async function listConfigs(h: Homes): Promise<string[]> {
  try {
    return (await fsp.readdir(path.join(h.configDir, 'filespaces')))
      .filter((f) => f.endsWith('.json'))
      .map((f) => f.slice(0, -5))
      .sort();
  } catch {
    return [];
  }
}

export async function loadConfig(h: Homes, name: string | undefined): Promise<LinkConfig> {
  if (name === undefined) {
    const all = await listConfigs(h);
    if (all.length === 0) throw new HostError('no filespace is linked on this machine; run "filespace link" first', 'NOT_LINKED');
    if (all.length > 1) throw new HostError(`several filespaces are linked (${all.join(', ')}); name one`, 'AMBIGUOUS');
    name = all[0]!;
  }
  checkName(name);
  let text: string;
  try {
    text = await fsp.readFile(configPath(h, name), 'utf8');
  } catch {
    const all = await listConfigs(h);
    throw new HostError(
      `no filespace named "${name}" is linked on this machine${all.length ? ` (linked: ${all.join(', ')})` : ''}`,
      'UNKNOWN_NAME',
    );
  }
  const damaged = (why: string) =>
    new HostError(
      `the configuration of "${name}" (${configPath(h, name)}) is damaged: ${why}; ` +
        `fix the file, or unlink "${name}" and link it again`,
      'BAD_CONFIG',
    );
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw damaged(`it is not valid JSON (${(err as Error).message})`);
  }
  const parsed = linkConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw damaged(`${issue?.path.length ? `${issue.path.join('.')}: ` : ''}${issue?.message}`);
  }
  try {
    resolveSettings(parsed.data.settings);
  } catch (err) {
    throw damaged(`its settings are invalid (${(err as Error).message})`);
  }
  return parsed.data;
}

/** Where every filespace linked here lives (for the placement checks of electron/host/placement.ts). */
export async function linkedPlaces(h: Homes): Promise<Array<{ name: string; mountPoint: string; cacheDir: string }>> {
  const out: Array<{ name: string; mountPoint: string; cacheDir: string }> = [];
  for (const name of await listConfigs(h)) {
    const cfg = await loadConfig(h, name).catch(() => undefined);
    if (cfg) out.push({ name, mountPoint: cfg.mountPoint, cacheDir: cfg.cacheDir });
  }
  return out;
}

export async function saveConfig(h: Homes, cfg: LinkConfig): Promise<void> {
  await fsp.mkdir(path.join(h.configDir, 'filespaces'), { recursive: true, mode: 0o700 });
  await writeFileAtomic(configPath(h, cfg.name), JSON.stringify(cfg, null, 2) + '\n');
}

export async function deleteConfig(h: Homes, name: string): Promise<void> {
  await fsp.rm(configPath(h, name), { force: true });
}

/** Reads a passphrase file, refusing one that others can read. */
export async function readPassphraseFile(file: string): Promise<string> {
  if (file === '') {
    // Linked by the desktop app (secrets: 'keychain'): there is no file to read.
    throw new HostError(
      'this filespace was linked by the desktop app and its passphrase is in the OS keychain; mount, sync and check it from the app',
      'PASSPHRASE_IN_KEYCHAIN',
    );
  }
  let st;
  try {
    st = await fsp.stat(file);
  } catch {
    throw new HostError(`passphrase file ${file} does not exist`, 'NO_PASSPHRASE');
  }
  if (!st.isFile()) throw new HostError(`passphrase file ${file} is not a regular file`, 'NO_PASSPHRASE');
  if ((st.mode & 0o077) !== 0) {
    throw new HostError(`passphrase file ${file} is readable by other users; run "chmod 600 ${file}"`, 'PASSPHRASE_PERMS');
  }
  const text = (await fsp.readFile(file, 'utf8')).replace(/\r?\n$/, '');
  if (text.length === 0) throw new HostError(`passphrase file ${file} is empty`, 'NO_PASSPHRASE');
  return text;
}
