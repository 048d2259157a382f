// The V8 heap settings of a process hosting engines: V8 ignores a flag it does not know when it
// is set at run time (setFlagsFromString), so each one is checked here against the V8 this Node
// runs (a renamed or removed flag would otherwise drop the memory bound silently).

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { ENGINE_V8_FLAGS } from '../../electron/host/engineHeap';

function nodeWith(flag: string): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [flag, '-e', '0'], { timeout: 30_000 }, (err, _out, stderr) =>
      resolve({ code: err ? Number((err as NodeJS.ErrnoException).code ?? 1) : 0, stderr }),
    );
  });
}

describe('V8 heap settings of an engine process', () => {
  it('names only flags this V8 knows (an unknown one is refused on the command line)', async () => {
    assert.ok(ENGINE_V8_FLAGS.length > 0);
    for (const flag of ENGINE_V8_FLAGS) {
      const r = await nodeWith(flag);
      assert.equal(r.code, 0, `${flag}: ${r.stderr}`);
    }
    const typo = await nodeWith('--heap-growng-percent=50');
    assert.notEqual(typo.code, 0, 'the check itself tells a flag V8 does not know');
  });
});
