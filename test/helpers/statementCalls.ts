/**
 * Counts how often a prepared statement of a metadata database (meta/treeDb.ts) runs while
 * `fn` runs: how many folders' entry tables a call read (`entriesOf`), or how many batches of
 * inode rows a walk of every inode read (`inodesAfter`), or how many chunk counts it read from
 * the chunks table (`ref`: by name, or with the name's places in packs).
 */

import type { TreeDb } from '../../electron/engine/meta/treeDb';

type Counted = 'entriesOf' | 'inodesAfter' | 'ref';

export function statementCalls<T>(db: TreeDb, statement: Counted, fn: () => T): { result: T; calls: number } {
  const all = (db as unknown as { st: Record<string, Record<'all' | 'get', (...a: unknown[]) => unknown>> }).st;
  // A chunk's count is read by its name alone, or with its places in packs (`refFrom`).
  const names = statement === 'ref' ? ['ref', 'refFrom'] : [statement];
  const how = statement === 'ref' ? 'get' : 'all';
  let calls = 0;
  const runs = names.map((n) => {
    const st = all[n]!;
    const run = st[how];
    st[how] = (...a: unknown[]) => {
      calls++;
      return run.apply(st, a);
    };
    return () => (st[how] = run);
  });
  try {
    return { result: fn(), calls };
  } finally {
    for (const restore of runs) restore();
  }
}
