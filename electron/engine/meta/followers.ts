/**
 * Who follows a filespace: each read-only follower announces itself in the bucket, so the
 * writer (and the people looking at it) can tell who reads along.
 *
 * A follower writes `followers/<machine id>` when it starts following and again every
 * `ANNOUNCE_EVERY_MS` while it follows, and deletes it when it unmounts; the writer lists the
 * prefix now and then (`FollowerBook`) and shows those heard from within `HEARD_WITHIN_MS`, so
 * a follower that crashed or lost its network drops off on its own. The record is sealed with
 * the metadata key like the lease (it names machines). It is advisory: nothing depends on it
 * for correctness, a follower whose keys may not write keeps following unannounced, and a
 * record that cannot be read is skipped. Nothing else in the engine lists or deletes this prefix
 * (garbage collection works under chunks/, the metadata log under meta/).
 */

import { open, seal } from '../chunk/crypto';
import { ObjectStore } from '../store/types';
import { Machine } from './lease';

export const FOLLOWERS_PREFIX = 'followers/';
/** How often a follower renews its record. */
export const ANNOUNCE_EVERY_MS = 30_000;
/** A record not renewed for this long is of a follower that is gone. */
export const HEARD_WITHIN_MS = 3 * ANNOUNCE_EVERY_MS + 10_000;
/** At most this many records are read per listing (the rest are counted, not named). */
const MAX_READ = 32;

export interface FollowerRecord {
  readonly machine: Machine;
  /** When this follower mounted. */
  readonly since: number;
  /** When it wrote this record. */
  readonly heardAt: number;
  /** How far behind the writer's log it was then, in ms (null: not caught up yet). */
  readonly lagMs: number | null;
}

export interface FollowerView {
  readonly name: string;
  readonly since: number;
  readonly heardAt: number;
  readonly lagMs: number | null;
}

const keyOf = (machineId: string) => `${FOLLOWERS_PREFIX}${machineId}`;
const aad = (key: string) => `meta:${key}`;

/** Writes (or renews) this follower's record. */
export async function announceFollower(store: ObjectStore, metaKey: Buffer, record: FollowerRecord): Promise<void> {
  const key = keyOf(record.machine.id);
  await store.put(key, seal(metaKey, Buffer.from(JSON.stringify(record), 'utf8'), aad(key)));
}

/** Removes this follower's record (it stopped following). */
export async function withdrawFollower(store: ObjectStore, machineId: string): Promise<void> {
  await store.delete(keyOf(machineId));
}

/** Reads the followers heard from within `HEARD_WITHIN_MS` of `now`, newest first, and how many more there are. */
export async function readFollowers(
  store: ObjectStore,
  metaKey: Buffer,
  now: number,
  exceptMachineId?: string,
): Promise<{ followers: FollowerView[]; more: number }> {
  const keys = (await store.list(FOLLOWERS_PREFIX)).filter((k) => k !== (exceptMachineId && keyOf(exceptMachineId)));
  const out: FollowerView[] = [];
  for (const key of keys.slice(0, MAX_READ)) {
    try {
      const got = await store.get(key);
      if (!got) continue;
      const r = JSON.parse(open(metaKey, got.body, aad(key), 'a follower record').toString('utf8')) as FollowerRecord;
      if (typeof r.heardAt !== 'number' || now - r.heardAt > HEARD_WITHIN_MS) continue;
      out.push({ name: String(r.machine.name), since: r.since, heardAt: r.heardAt, lagMs: r.lagMs ?? null });
    } catch {
      // A record this machine cannot read (damaged, or of another key) names nobody.
    }
  }
  out.sort((a, b) => b.heardAt - a.heardAt);
  return { followers: out, more: Math.max(0, keys.length - MAX_READ) };
}
