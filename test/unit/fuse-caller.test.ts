// The caller of a FUSE request: its supplementary groups come from the Groups: line of
// /proc/<pid>/status (the same list the kernel checks), a process that is gone has none, and
// outside a request's handler no caller is named (the engine then uses the mounting user).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { callerNow, groupsOf } from '../../native/fuse/adapter';

describe('the caller of a FUSE request', () => {
  it("reads a process's supplementary groups as the kernel lists them", () => {
    // Node adds the effective group to getgroups(2)'s list; the kernel's list need not hold it.
    const want = new Set(process.getgroups?.() ?? []);
    const got = new Set([...groupsOf(process.pid), process.getegid?.() ?? 0]);
    assert.deepEqual([...got].sort(), [...want].sort());
  });

  it('names no groups for a process that is gone, and no caller outside a handler', () => {
    assert.equal(groupsOf(2 ** 22 + 12345).size, 0);
    assert.equal(callerNow(), undefined);
  });
});
