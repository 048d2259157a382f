// The systemd unit agrees with the engine's own stop behaviour: ExecStop talks to a running
// engine only (after an unmount from outside the engine has exited by itself, and a sync would
// start a new one), each stop phase is bounded below TimeoutStopSec, and Restart restarts
// after a crash but not after a clean exit; and the engine gets the same memory settings as
// the one `filespace mount` starts in the background.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { STOP_DEADLINE_MS } from '../../electron/cli/main';
import { ENGINE_MALLOC_ENV } from '../../electron/cli/engineProcess';

const UNIT = path.resolve(__dirname, '..', '..', '..', 'build', 'systemd', 'filespace@.service');

async function service(): Promise<Map<string, string>> {
  const text = await fsp.readFile(UNIT, 'utf8');
  const out = new Map<string, string>();
  let section = '';
  for (const line of text.split('\n')) {
    const sec = /^\[(\w+)\]$/.exec(line.trim());
    if (sec) section = sec[1]!;
    const kv = /^(\w+)=(.*)$/.exec(line);
    if (kv && section === 'Service') out.set(kv[1]!, kv[2]!);
  }
  return out;
}

/** Splits a systemd command line into words (single quotes; `$$` is a literal `$`). */
function words(cmd: string): string[] {
  const out: string[] = [];
  const re = /'([^']*)'|(\S+)/g;
  for (let m = re.exec(cmd); m; m = re.exec(cmd)) out.push((m[1] ?? m[2]!).replace(/\$\$/g, '$'));
  return out;
}

function seconds(v: string): number {
  const m = /^(\d+)(s|min)?$/.exec(v.trim());
  assert.ok(m, `a duration: ${v}`);
  return Number(m[1]) * (m[2] === 'min' ? 60 : 1);
}

describe('the systemd unit', () => {
  it('bounds each stop phase below TimeoutStopSec and restarts only after a failure', async () => {
    const s = await service();
    const stopSec = seconds(s.get('TimeoutStopSec') ?? '');
    assert.ok(stopSec > STOP_DEADLINE_MS / 1000, 'SIGTERM to exit fits');
    const sync = /--timeout (\d+)m/.exec(s.get('ExecStop') ?? '');
    assert.ok(sync, 'ExecStop syncs with a timeout');
    assert.ok(stopSec > Number(sync[1]) * 60 + 30, 'the sync (plus its 30 s margin) fits');
    assert.equal(s.get('Restart'), 'on-failure');
    assert.equal(s.get('KillSignal'), 'SIGTERM');
  });

  it('gives the engine the memory settings `filespace mount` gives its background engine', async () => {
    const text = await fsp.readFile(UNIT, 'utf8');
    const env = new Map<string, string>();
    for (const line of text.split('\n')) {
      const m = /^Environment=(.*)$/.exec(line);
      if (m) for (const w of words(m[1]!)) env.set(w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1));
    }
    for (const [k, v] of Object.entries(ENGINE_MALLOC_ENV)) assert.equal(env.get(k), v, k);
  });

  it('runs the ExecStop sync only while the engine runs ($MAINPID set)', async () => {
    const s = await service();
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-unit-'));
    try {
      const stub = path.join(dir, 'filespace');
      const called = path.join(dir, 'called');
      await fsp.writeFile(stub, `#!/bin/sh\necho "$@" >> ${called}\n`, { mode: 0o755 });
      const argv = words(
        (s.get('ExecStop') ?? '')
          .replace(/^-/, '')
          .replace(/%i/g, 'team')
          .replace(/\/usr\/bin\/filespace/g, stub),
      );
      const runStop = (env: NodeJS.ProcessEnv) =>
        new Promise<void>((resolve) => execFile(argv[0]!, argv.slice(1), { env }, () => resolve()));
      const env = { PATH: process.env.PATH };
      await runStop(env);
      await assert.rejects(fsp.readFile(called, 'utf8'), { code: 'ENOENT' }, 'nothing runs once the engine exited');
      await runStop({ ...env, MAINPID: '4242' });
      assert.equal(await fsp.readFile(called, 'utf8'), 'sync team --timeout 2m\n');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
