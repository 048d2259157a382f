// The background engine process gets the memory settings of cli/engineProcess.ts, never over
// what the caller set, and node accepts them (a flag node does not know would stop every mount).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { ENGINE_MALLOC_ENV, ENGINE_NODE_FLAGS, engineNodeArgs, engineProcessEnv } from '../../electron/cli/engineProcess';

describe('engine process settings', () => {
  it('adds the malloc settings to the environment and keeps the rest of it', () => {
    const env = engineProcessEnv({ PATH: '/bin', FILESPACE_HOME: '/x' });
    assert.equal(env.PATH, '/bin');
    assert.equal(env.FILESPACE_HOME, '/x');
    for (const [k, v] of Object.entries(ENGINE_MALLOC_ENV)) assert.equal(env[k], v, k);
  });

  it("keeps the caller's own malloc settings", () => {
    const env = engineProcessEnv({ MALLOC_ARENA_MAX: '8', MALLOC_MMAP_THRESHOLD_: '' });
    assert.equal(env.MALLOC_ARENA_MAX, '8');
    assert.equal(env.MALLOC_MMAP_THRESHOLD_, ENGINE_MALLOC_ENV.MALLOC_MMAP_THRESHOLD_, 'an empty value counts as unset');
  });

  it('puts the node flags before the script, unless NODE_OPTIONS or node arguments size the semi-space', () => {
    assert.deepEqual(engineNodeArgs('/s.js', {}, []), [...ENGINE_NODE_FLAGS, '/s.js']);
    assert.deepEqual(engineNodeArgs('/s.js', { NODE_OPTIONS: '--max-semi-space-size=16' }, []), ['/s.js']);
    assert.deepEqual(engineNodeArgs('/s.js', {}, ['--max-semi-space-size=8']), ['/s.js']);
  });

  it('starts a node process that sees the settings', async () => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'fs-engine-process-'));
    try {
      const script = path.join(dir, 'show.js');
      await fsp.writeFile(script, 'process.stdout.write(JSON.stringify({ env: process.env, execArgv: process.execArgv }))');
      const env = engineProcessEnv({ PATH: process.env.PATH });
      const r = spawnSync(process.execPath, engineNodeArgs(script, env, []), { env, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const seen = JSON.parse(r.stdout) as { env: Record<string, string>; execArgv: string[] };
      assert.deepEqual(seen.execArgv, [...ENGINE_NODE_FLAGS]);
      for (const [k, v] of Object.entries(ENGINE_MALLOC_ENV)) assert.equal(seen.env[k], v, k);
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
});
