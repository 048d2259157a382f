/**
 * Test fixture for the desktop app in a browser: starts the app host (electron/main/serve.ts,
 * the same AppHost Electron runs) as a child process with its own FILESPACE_HOME, HOME and
 * keychain bus, and real Chromium (Debian's, driven by playwright-core) on its page.
 *
 * The host serves FUSE mounts on its own event loop, so it always runs in its own process; the
 * test process only talks to it over HTTP and looks at mounts asynchronously.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO, sh } from './bed';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Where the UI tests put their screenshots: the temp folder, or docs/screenshots/ with FILESPACE_SCREENSHOTS=1. */
export const SHOTS =
  process.env.FILESPACE_SCREENSHOTS === '1'
    ? path.join(REPO, 'docs', 'screenshots')
    : path.join(os.tmpdir(), 'filespace-ui-shots');
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export interface RunningHost {
  readonly url: string;
  /** The page URL with the per-run token in its fragment. */
  readonly open: string;
  readonly token: string;
  readonly stderr: () => string;
  stop(): Promise<void>;
}

export async function startAppHost(opts: {
  home: string;
  userHome: string;
  mountRoot: string;
  keychainService: string;
  env: NodeJS.ProcessEnv;
  args?: string[];
}): Promise<RunningHost> {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env, FILESPACE_HOME: opts.home, HOME: opts.userHome };
  // The app must take its keys from the keychain, never from the AWS environment.
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE']) delete env[k];
  const child: ChildProcess = spawn(
    process.execPath,
    [
      path.join(REPO, 'dist', 'electron', 'main', 'serve.js'),
      '--mount-root',
      opts.mountRoot,
      '--keychain-service',
      opts.keychainService,
      ...(opts.args ?? []),
    ],
    {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const reap = () => child.kill('SIGKILL');
  process.once('exit', reap);
  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => (stderr = (stderr + d).slice(-20_000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const first = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve(out.split('\n')[0]!);
    });
    void exited.then(() => reject(new Error(`the app host exited before it was ready:\n${stderr}`)));
  });
  const { url, open } = JSON.parse(first) as { url: string; open: string };
  const tokenFile = JSON.parse(await fsp.readFile(path.join(opts.home, 'run', 'app-http.json'), 'utf8')) as { token: string };
  return {
    url,
    open,
    token: tokenFile.token,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
        await exited;
        clearTimeout(timer);
      }
      process.removeListener('exit', reap);
    },
  };
}

export async function launchChromium(): Promise<{ browser: Browser; page: Page }> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const page = await browser.newPage({ viewport: { width: 960, height: 900 } });
  return { browser, page };
}

/** Whether `dir` is a mount point right now, from /proc (never touches the mount itself). */
export async function isMounted(dir: string): Promise<boolean> {
  const text = await fsp.readFile('/proc/self/mounts', 'utf8');
  return text.split('\n').some((l) => l.split(' ')[1] === dir.replace(/ /g, '\\040'));
}

/** Calls the app host's contract over HTTP as the page does (for checks beside the UI). */
export async function callHost(h: RunningHost, route: string, body: unknown): Promise<{ status: number; text: string }> {
  const res = await fetch(`${h.url}/app/${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${h.token}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

/**
 * Stops the app hosts, then lazily unmounts any of `mounts` still mounted (a host that stopped
 * must have unmounted them); resolves to whether one was left behind.
 */
export async function stopHosts(hosts: ReadonlyArray<RunningHost | undefined>, mounts: readonly string[]): Promise<boolean> {
  for (const h of hosts) await h?.stop();
  let left = false;
  for (const mnt of mounts) {
    if (!(await isMounted(mnt))) continue;
    left = true;
    await sh(`fusermount -uz '${mnt}'`).catch(() => undefined);
  }
  return left;
}
