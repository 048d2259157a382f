/**
 * Counts how often a prepared statement of a metadata database (meta/treeDb.ts) runs while
 * `fn` runs: how many folders' entry tables a call read (`entriesOf`), or how many batches of
 * inode rows a walk of every inode read (`inodesAfter`).
 */

import type { TreeDb } from '../../electron/engine/meta/treeDb';

type Counted = 'entriesOf' | 'inodesAfter';

export function statementCalls<T>(db: TreeDb, statement: Counted, fn: () => T): { result: T; calls: number } {
  const st = (db as unknown as { st: Record<Counted, { all: (...a: unknown[]) => unknown[] }> }).st[statement];
  const all = st.all;
  let calls = 0;
  st.all = (...a: unknown[]) => {
    calls++;
    return all.apply(st, a);
  };
  try {
    return { result: fn(), calls };
  } finally {
    st.all = all;
  }
}
