/**
 * Counts how often a prepared statement of a metadata database (meta/treeDb.ts) runs while
 * `fn` runs: how many folders' entry tables a call read (`entriesOf`), or how many batches of
 * inode rows a walk of every inode read (`inodesAfter`), or how many chunk counts it read from
 * the chunks table (`ref`).
 */

import type { TreeDb } from '../../electron/engine/meta/treeDb';

type Counted = 'entriesOf' | 'inodesAfter' | 'ref';

export function statementCalls<T>(db: TreeDb, statement: Counted, fn: () => T): { result: T; calls: number } {
  const st = (db as unknown as { st: Record<Counted, Record<'all' | 'get', (...a: unknown[]) => unknown>> }).st[statement];
  const how = statement === 'ref' ? 'get' : 'all';
  const run = st[how];
  let calls = 0;
  st[how] = (...a: unknown[]) => {
    calls++;
    return run.apply(st, a);
  };
  try {
    return { result: fn(), calls };
  } finally {
    st[how] = run;
  }
}
