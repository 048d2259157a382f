// The background engine process gets the malloc settings of cli/engineProcess.ts, never over
// what the caller set (the memory soak checks that the engine `filespace mount` starts has them).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ENGINE_MALLOC_ENV, engineProcessEnv } from '../../electron/cli/engineProcess';

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
});
