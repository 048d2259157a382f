// The renderer's store and transports in plain Node: wizard actions, host events, and the IPC
// transport's checks, against a scripted host (each case resets the store). Bundled by
// renderer/build.mjs, because the renderer is browser code built by esbuild.

import assert from 'node:assert/strict';
import { beforeEach, describe, it } from 'node:test';
import type { StatusDto } from '../../../electron/contract/api';
import type { AppEvent, AppRequest, AppResponse, AppRoute, AppStatus } from '../../../electron/contract/app';
import {
  askDiscardAside,
  askTakeover,
  connect,
  discardAside,
  editCacheCap,
  editWizard,
  mount,
  mountAs,
  saveAside,
  resetStore,
  NOTICE_MS,
  retry,
  selectFilespaces,
  wizardErrors,
  setPaused,
  tick,
  store,
  submitBucket,
  submitKeys,
  submitPassphrase,
  submitPlace,
  unmount,
} from '../../../renderer/src/store';
import { ERROR_CODES, ERRORS } from '../../../electron/contract/errors';
import { treatmentOf } from '../../../renderer/src/errors';
import { HostError, ipcTransport, type BridgeApi, type Transport } from '../../../renderer/src/transport';

/** Polls `cond` until it holds or `ms` pass (no timed assertions: the deadline is generous). */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

type Calls = Array<{ route: AppRoute; body: unknown }>;

/** A host that answers from a script; unknown routes fail the test. */
function scripted(
  answers: Partial<{ [R in AppRoute]: (body: AppRequest<R>) => AppResponse<R> }>,
): Transport & { calls: Calls; emit: (e: AppEvent) => void } {
  const calls: Calls = [];
  let listener: (e: AppEvent) => void = () => undefined;
  return {
    calls,
    emit: (e) => listener(e),
    async call(route, body) {
      calls.push({ route, body });
      const answer = answers[route] as ((b: unknown) => unknown) | undefined;
      if (!answer) throw new Error(`unexpected call ${route}`);
      return answer(body) as never;
    },
    subscribe(onEvent) {
      listener = onEvent;
      return () => undefined;
    },
  };
}

function fsStatus(over: Partial<StatusDto> = {}): StatusDto {
  return {
    name: 'team',
    state: 'mounted',
    mountPoint: '/m/team',
    dirtyBytes: 0,
    dirtyFiles: 0,
    pendingMetaOps: 0,
    uploadBytesPerSec: 10,
    downloadBytesPerSec: 20,
    cacheUsedBytes: 0,
    cacheCapBytes: 1e9,
    cacheHitRatio: 0,
    openFiles: 0,
    offline: false,
    uploadsPaused: false,
    readOnlyReason: null,
    lastError: null,
    ...over,
  };
}

function appStatus(filespaces: StatusDto[]): AppStatus {
  return {
    filespaces: filespaces.map((s) => ({
      name: s.name,
      location: 's3://b/team',
      kind: 's3' as const,
      mountPoint: s.mountPoint,
      cacheDir: '/c',
      status: s,
    })),
    uploadsPaused: false,
    keys: { stored: false },
  };
}

const w = () => store.getState().wizard;

describe('renderer store: wizard', () => {
  beforeEach(() => resetStore());

  it('checks the keys step locally before asking the host', async () => {
    const host = scripted({});
    connect(host);
    editWizard({ accessKeyId: 'AKIA EXAMPLE', secretAccessKey: 's' });
    await submitKeys();
    // Said beside the field, not sent.
    assert.equal(w().attempted, true);
    assert.equal(wizardErrors(w()).accessKeyId, 'An access key ID has no spaces');
    assert.deepEqual(host.calls, []);
  });

  it('sends good keys once, forgets the secret, and goes on with the account buckets', async () => {
    const host = scripted({
      'keys.check': () => ({ keys: { stored: true, accessKeyIdHint: 'AKIAIOSF…' }, buckets: ['alpha', 'beta'] }),
    });
    connect(host);
    editWizard({
      accessKeyId: ' AKIAIOSFODNN7EXAMPLE ',
      secretAccessKey: 'top-secret',
      endpoint: 'http://127.0.0.1:9000',
      pathStyle: true,
    });
    await submitKeys();
    assert.deepEqual(host.calls, [
      {
        route: 'keys.check',
        body: {
          accessKeyId: 'AKIAIOSFODNN7EXAMPLE',
          secretAccessKey: 'top-secret',
          region: 'us-east-1',
          endpoint: 'http://127.0.0.1:9000',
          pathStyle: true,
        },
      },
    ]);
    assert.equal(w().step, 'bucket');
    assert.equal(w().secretAccessKey, '', 'the secret is dropped from the renderer once the host has it');
    assert.deepEqual(w().buckets, ['alpha', 'beta']);
    assert.equal(w().bucket, 'alpha');
    assert.ok(!JSON.stringify(store.getState()).includes('top-secret'));
  });

  it('shows the host error for rejected keys and stays on the step', async () => {
    connect(
      scripted({
        'keys.check': () => {
          throw new HostError('BAD_CREDENTIALS', 'S3 rejected these keys');
        },
      }),
    );
    editWizard({ accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 's' });
    await submitKeys();
    assert.equal(w().step, 'keys');
    assert.equal(w().error, 'S3 rejected these keys');
    assert.equal(w().busy, false);
  });

  it('keeps the policy when permissions are missing; refuses create over an existing filespace and link to none', async () => {
    let answer: AppResponse<'bucket.check'> = {
      ok: false,
      missing: ['s3:PutObject'],
      message: 'These keys lack s3:PutObject',
      policy: '{}',
      filespaceExists: false,
    };
    const host = scripted({ 'bucket.check': () => answer });
    connect(host);
    editWizard({ step: 'bucket', bucket: 'my-bucket', prefix: '/team/', mode: 'create' });
    await submitBucket();
    assert.deepEqual(host.calls[0], { route: 'bucket.check', body: { bucket: 'my-bucket', prefix: 'team' } });
    assert.equal(w().step, 'bucket');
    assert.equal(w().error, 'These keys lack s3:PutObject');
    assert.deepEqual(w().check?.missing, ['s3:PutObject']);

    answer = { ...answer, ok: true, missing: [], filespaceExists: true };
    await submitBucket();
    assert.match(w().error ?? '', /already exists/);
    editWizard({ mode: 'link' });
    answer = { ...answer, filespaceExists: false };
    await submitBucket();
    assert.match(w().error ?? '', /no filespace at this bucket/);
    answer = { ...answer, filespaceExists: true };
    await submitBucket();
    assert.equal(w().step, 'passphrase');
    assert.equal(w().name, 'team', 'the name is suggested from the prefix');
  });

  it('catches a wrong passphrase on the spot when linking', async () => {
    const host = scripted({
      'filespace.probe': () => {
        throw new HostError('WRONG_PASSPHRASE', 'wrong passphrase for this filespace');
      },
    });
    connect(host);
    editWizard({ step: 'passphrase', mode: 'link', bucket: 'b-1', prefix: 'team', name: 'team', passphrase: 'nope' });
    await submitPassphrase();
    assert.equal(w().step, 'passphrase');
    assert.equal(w().error, 'wrong passphrase for this filespace');
  });

  it('creates: passphrase twice, then the suggested mount point and cache cap', async () => {
    const host = scripted({
      'filespace.suggest': () => ({
        mountPoint: '/home/u/Filespace/team',
        cacheDir: '/c/team',
        cacheDiskFreeBytes: 50e9,
        cacheCapBytes: 20e9,
      }),
    });
    connect(host);
    editWizard({
      step: 'passphrase',
      mode: 'create',
      name: 'team',
      passphrase: 'correct horse battery',
      repeat: 'correct horse batter',
    });
    await submitPassphrase();
    assert.equal(w().attempted, true);
    assert.deepEqual(wizardErrors(w()), { repeat: 'Does not match the passphrase above' });
    assert.deepEqual(host.calls, []);
    editWizard({ repeat: 'correct horse battery' });
    await submitPassphrase();
    // The recovery kit comes next, with a key made here; going on needs the kit kept.
    assert.equal(w().step, 'passphrase');
    assert.equal(w().kitShown, true);
    assert.match(w().recoveryKey, /^[0-9A-HJKMNP-TV-Z]{32}$/);
    assert.deepEqual(host.calls, []);
    await submitPassphrase();
    assert.match(w().error ?? '', /recovery kit/);
    editWizard({ kitSaved: true });
    await submitPassphrase();
    assert.equal(w().step, 'place');
    assert.equal(w().mountPoint, '/home/u/Filespace/team');
    assert.equal(w().cacheCapBytes, 20e9);
    assert.equal(w().cacheDiskFreeBytes, 50e9);
  });

  it('the last step checks the folder, links, mounts, and lands on the status screen with the wizard cleared', async () => {
    const summary = {
      name: 'team',
      location: 's3://b/team',
      kind: 's3' as const,
      mountPoint: '/m/team',
      cacheDir: '/c/team',
      status: fsStatus(),
    };
    const host = scripted({
      'mountpoint.check': () => ({ ok: true }),
      'filespace.link': () => summary,
      'filespace.mount': () => summary,
    });
    connect(host);
    editWizard({
      step: 'place',
      mode: 'create',
      bucket: 'b-1',
      prefix: 'team',
      name: 'team',
      passphrase: 'correct horse battery',
      mountPoint: '/m/team',
      cacheCapBytes: 1e9,
      cacheCapText: String(1e9 / 2 ** 20),
      cacheCapUnit: 'MiB',
      cacheDiskFreeBytes: 5e9,
      recoveryKey: '0123456789ABCDEFGHJKMNPQRSTVWXYZ',
    });
    await submitPlace();
    assert.deepEqual(
      host.calls.map((c) => c.route),
      ['mountpoint.check', 'filespace.link', 'filespace.mount'],
    );
    assert.deepEqual(host.calls[1]!.body, {
      mode: 'create',
      target: { bucket: 'b-1', prefix: 'team' },
      passphrase: 'correct horse battery',
      name: 'team',
      mountPoint: '/m/team',
      cacheCapBytes: 1e9,
      recoveryKey: '0123456789ABCDEFGHJKMNPQRSTVWXYZ',
    });
    assert.equal(store.getState().screen, 'status');
    assert.equal(w().passphrase, '', 'the passphrase leaves the renderer state');
    assert.equal(w().recoveryKey, '', 'the recovery key leaves the renderer state');
    assert.equal(w().step, 'keys');
  });

  it('linking a filespace another computer writes lands on its card with who writes, not on an error', async () => {
    const summary = {
      name: 'team',
      location: 's3://b/team',
      kind: 's3' as const,
      mountPoint: '/m/team',
      cacheDir: '/c/team',
      status: fsStatus({ state: 'unmounted' }),
    };
    const writer = { computer: 'laptop', since: 1, lastHeard: 2, live: true, thisComputer: false };
    const host = scripted({
      'mountpoint.check': () => ({ ok: true }),
      'filespace.link': () => summary,
      'filespace.mount': () => {
        throw new HostError('LEASE_HELD', '"team" is being written by laptop');
      },
      'filespace.writer': () => ({ writer }),
    });
    connect(host);
    editWizard({
      step: 'place',
      mode: 'link',
      bucket: 'b-1',
      name: 'team',
      passphrase: 'correct horse battery',
      mountPoint: '/m/team',
      cacheCapBytes: 1e9,
      cacheCapText: String(1e9 / 2 ** 20),
      cacheCapUnit: 'MiB',
      cacheDiskFreeBytes: 5e9,
    });
    await submitPlace();
    assert.equal(w().error, null);
    assert.equal(store.getState().screen, 'status');
    assert.deepEqual(store.getState().secondMachine.team, { writer, confirmTakeover: false });
    assert.deepEqual(store.getState().errors, []);
  });

  it('refuses a cache cap above the free space without asking the host', async () => {
    const host = scripted({});
    connect(host);
    editWizard({ step: 'place', name: 'team', mountPoint: '/m/team', cacheDiskFreeBytes: 5e9 });
    editCacheCap('6', 'GiB');
    await submitPlace();
    assert.match(wizardErrors(w()).cacheCapText ?? '', /^At most 4\.7 GiB \(the room the cache disk has\)$/);
    assert.deepEqual(host.calls, []);
  });
});

describe('renderer store: host events and actions', () => {
  beforeEach(() => resetStore());

  it('a first status with nothing linked opens the wizard; later events update status, history and errors', () => {
    const host = scripted({});
    connect(host, { tickMs: 0 });
    host.emit({ type: 'status', status: appStatus([]) });
    assert.equal(store.getState().screen, 'wizard');
    host.emit({ type: 'status', status: appStatus([fsStatus()]) });
    host.emit({ type: 'status', status: appStatus([fsStatus({ lastError: 'read: EIO' })]) });
    host.emit({ type: 'status', status: appStatus([fsStatus({ lastError: 'read: EIO' })]) });
    assert.deepEqual(
      selectFilespaces(store.getState()).map((f) => f.name),
      ['team'],
    );
    tick();
    tick();
    assert.equal(store.getState().history.team?.length, 2, 'one sample per tick');
    assert.deepEqual(
      store.getState().errors.map((e) => [e.filespace, e.headline, e.detail, e.count]),
      [['team', 'A file could not be read or written (input/output error)', 'read: EIO', 1]],
      'the same error is listed once',
    );
    host.emit({ type: 'status', status: appStatus([fsStatus()]) });
    assert.deepEqual(store.getState().errors, [], 'a problem the filespace no longer reports is gone');
  });

  it('samples throughput every tick, 0 once a filespace is unmounted, and keeps it across a remount', () => {
    const host = scripted({});
    connect(host, { tickMs: 0 });
    host.emit({ type: 'status', status: appStatus([fsStatus({ state: 'unmounted' })]) });
    tick(500);
    assert.equal(store.getState().history.team, undefined, 'no chart for a filespace not mounted yet');
    host.emit({ type: 'status', status: appStatus([fsStatus({ uploadBytesPerSec: 300 * 1024, downloadBytesPerSec: 0 })]) });
    tick(1000);
    host.emit({ type: 'status', status: appStatus([fsStatus({ state: 'unmounted', uploadBytesPerSec: 0 })]) });
    tick(2000);
    host.emit({ type: 'status', status: appStatus([fsStatus({ uploadBytesPerSec: 0, downloadBytesPerSec: 5000 })]) });
    tick(3000);
    assert.deepEqual(
      store.getState().history.team?.map((s) => [s.t, s.up, s.down]),
      [
        [1000, 300 * 1024, 0],
        [2000, 0, 0],
        [3000, 0, 5000],
      ],
    );
    assert.equal(store.getState().now, 3000, 'the clock moves with the tick');
  });

  it('tracks the upload batch: done grows as pending bytes fall, writing while they grow', () => {
    const host = scripted({});
    connect(host, { tickMs: 0 });
    const MiB = 1024 * 1024;
    host.emit({ type: 'status', status: appStatus([fsStatus({ dirtyFiles: 1, dirtyBytes: 10 * MiB })]) });
    host.emit({ type: 'status', status: appStatus([fsStatus({ dirtyFiles: 1, dirtyBytes: 4 * MiB })]) });
    const b = store.getState().batches.team!;
    assert.deepEqual([b.totalBytes, b.doneBytes], [10 * MiB, 6 * MiB]);
    host.emit({ type: 'status', status: appStatus([fsStatus({ dirtyFiles: 2, dirtyBytes: 8 * MiB })]) });
    const c = store.getState().batches.team!;
    assert.deepEqual([c.totalBytes, c.doneBytes], [14 * MiB, 6 * MiB], 'new writes grow the total, not the done part');
    assert.ok(c.writingUntil > Date.now(), 'bytes are being written');
    host.emit({ type: 'status', status: appStatus([fsStatus()]) });
    assert.equal(store.getState().batches.team, undefined, 'nothing left: the batch is over');
  });

  it('a busy unmount becomes a question on the card, not an error; a forced one clears it', async () => {
    let busy = true;
    connect(
      scripted({
        'filespace.unmount': () => {
          if (busy) throw new HostError('BUSY', '/m/team is in use by sleep (pid 7)');
          return { ok: true };
        },
      }),
    );
    await unmount('team');
    assert.deepEqual(store.getState().unmountBusy, { team: '/m/team is in use by sleep (pid 7)' });
    assert.deepEqual(store.getState().errors, []);
    busy = false;
    await unmount('team', true);
    assert.deepEqual(store.getState().unmountBusy, {});
    assert.equal(store.getState().notice, 'Unmounted "team"');
  });

  it('a notice expires; pausing is said as information, not as success', async () => {
    connect(scripted({ 'uploads.pause': () => ({ ok: true }) }), { tickMs: 0 });
    await setPaused(true);
    assert.equal(store.getState().noticeTone, 'info');
    assert.match(store.getState().notice ?? '', /^Uploads paused/);
    await until(() => store.getState().notice === null, NOTICE_MS + 10_000, 'the notice expires');
  });
});

describe('renderer store: several computers', () => {
  beforeEach(() => resetStore());

  const summary = (over: Partial<StatusDto> = {}) => ({
    name: 'team',
    location: 's3://b/team',
    kind: 's3' as const,
    mountPoint: '/m/team',
    cacheDir: '/c/team',
    status: fsStatus(over),
  });
  const writer = { computer: 'laptop', since: 1, lastHeard: 2, live: true, thisComputer: false };

  it('a mount refused because another computer writes opens the choice on the card; read-only then closes it', async () => {
    const host = scripted({
      'filespace.mount': (b) => {
        if (b.mode !== 'read') throw new HostError('LEASE_HELD', '"team" is being written by laptop');
        return summary();
      },
      'filespace.writer': () => ({ writer }),
    });
    connect(host);
    host.emit({ type: 'status', status: appStatus([fsStatus({ state: 'unmounted' })]) });
    await mount('team');
    assert.deepEqual(store.getState().errors, [], 'a lease held elsewhere is a choice, not an error');
    assert.deepEqual(store.getState().secondMachine.team, { writer, confirmTakeover: false });
    askTakeover('team', true);
    assert.equal(store.getState().secondMachine.team?.confirmTakeover, true);
    askTakeover('team', false);
    await mountAs('team', 'read', false);
    assert.deepEqual(host.calls.at(-1), { route: 'filespace.mount', body: { name: 'team', mode: 'read', takeover: false } });
    assert.equal(store.getState().secondMachine.team, undefined);
    assert.equal(store.getState().notice, 'Opened "team" read-only');
  });

  it('a follower asked to write while the writer lives stays a follower and says why', async () => {
    const host = scripted({
      'filespace.mount': () => {
        throw new HostError('LEASE_HELD', '"team" is still being written by laptop');
      },
    });
    connect(host);
    host.emit({ type: 'status', status: appStatus([fsStatus({ state: 'mounted' })]) });
    await mountAs('team', 'write', false);
    assert.equal(store.getState().secondMachine.team, undefined);
    const problem = store.getState().errors[0];
    assert.equal(problem?.filespace, 'team');
    assert.equal(problem?.detail, '"team" is still being written by laptop');
  });

  it('discarding set-aside changes first lists them, then discards through the host', async () => {
    const sets = [
      { id: '20261202T095255Z', createdAt: 1, reason: 'r', files: [{ path: '/a.txt', size: 3, incomplete: false }], removed: [] },
    ];
    const host = scripted({
      'aside.list': () => ({ sets }),
      'aside.discard': () => ({ ok: true }),
      'aside.export': (b) => ({ files: 1, dir: b.dir }),
    });
    connect(host);
    await askDiscardAside('team', sets[0]!.id);
    assert.deepEqual(store.getState().aside.team?.sets, sets);
    assert.equal(store.getState().aside.team?.discarding, sets[0]!.id);
    await discardAside('team', sets[0]!.id);
    assert.deepEqual(host.calls.at(-1), { route: 'aside.discard', body: { name: 'team', id: sets[0]!.id } });
    assert.equal(store.getState().aside.team?.discarding, null);
    await saveAside('team', sets[0]!.id, ' /home/u/kept ');
    assert.deepEqual(host.calls.at(-1), { route: 'aside.export', body: { name: 'team', id: sets[0]!.id, dir: '/home/u/kept' } });
    assert.equal(store.getState().aside.team?.message, 'Saved a copy of 1 file to /home/u/kept');
  });
});

describe('renderer store: recent errors', () => {
  beforeEach(() => resetStore());

  it('a failed mount is listed with a Retry that runs it again', async () => {
    let reachable = false;
    const summary = {
      name: 'team',
      location: 's3://b/team',
      kind: 's3' as const,
      mountPoint: '/m/team',
      cacheDir: '/c/team',
      status: fsStatus(),
    };
    const host = scripted({
      'filespace.mount': () => {
        if (!reachable) throw new HostError('UNREACHABLE', 'cannot reach s3://b/team');
        return summary;
      },
    });
    connect(host);
    await mount('team');
    const [entry] = store.getState().errors;
    assert.equal(entry?.detail, 'cannot reach s3://b/team');
    assert.equal(entry?.headline, 'Cannot reach the bucket');
    assert.equal(entry?.filespace, 'team', 'the card of the filespace shows it');
    assert.ok(entry?.retry, 'a failed action can be retried');
    await retry(entry);
    assert.equal(store.getState().errors.length, 1, 'failing again lists the new failure only');
    await mount('team');
    assert.equal(store.getState().errors.length, 1, 'the same failure again is one line');
    assert.equal(store.getState().errors[0]?.count, 2, 'with a count');
    reachable = true;
    await retry(store.getState().errors[0]!);
    assert.deepEqual(store.getState().errors, []);
    assert.equal(store.getState().notice, 'Mounted "team"');
    assert.equal(host.calls.filter((c) => c.route === 'filespace.mount').length, 4);
  });

  it('engine errors from the status are listed without a Retry (the engine retries by itself)', () => {
    const host = scripted({});
    connect(host);
    host.emit({ type: 'status', status: appStatus([fsStatus({ lastError: 'upload: S3 is throttling' })]) });
    assert.equal(store.getState().errors[0]?.retry, undefined);
  });
});

describe('error treatment', () => {
  beforeEach(() => resetStore());

  it('decides every code of the vocabulary; only a busy mount asks a question', () => {
    const asks = ERROR_CODES.filter((c) => treatmentOf(c) === 'in-use');
    assert.deepEqual(asks, ['BUSY']);
    assert.equal(treatmentOf('WRONG_PASSPHRASE'), 'expected');
    assert.equal(treatmentOf('INTERNAL'), 'unexpected');
  });

  it('a busy unmount is recognised by its code, whatever its text says', async () => {
    connect(
      scripted({
        'filespace.unmount': () => {
          throw new HostError('BUSY', 'held');
        },
      }),
    );
    await unmount('team');
    assert.deepEqual(store.getState().unmountBusy, { team: 'held' });
    connect(
      scripted({
        'filespace.unmount': () => {
          throw new HostError('NOT_MOUNTED', '/m/team is in use by nobody: not mounted');
        },
      }),
    );
    await unmount('team');
    assert.deepEqual(store.getState().unmountBusy, {});
    assert.equal(store.getState().errors.at(-1)?.detail, '/m/team is in use by nobody: not mounted');
  });
});

describe('IPC transport', () => {
  function bridge(reply: unknown, events: unknown[] = []): BridgeApi & { sent: unknown[] } {
    const sent: unknown[] = [];
    return {
      sent,
      async invoke(route, body) {
        sent.push([route, body]);
        return reply as never;
      },
      onEvent(listener) {
        for (const e of events) listener(e);
        return () => undefined;
      },
      async pickFolder() {
        return '/picked';
      },
      async openFolder() {
        return undefined;
      },
    };
  }

  it('passes answers that match the contract and turns errors into HostError', async () => {
    const ok = ipcTransport(bridge({ ok: true, data: { ok: true } }));
    assert.deepEqual(await ok.call('keys.forget', {}), { ok: true });
    const failing = ipcTransport(bridge({ ok: false, error: { code: 'KEYCHAIN', message: 'the OS keychain refused' } }));
    await assert.rejects(
      failing.call('keys.forget', {}),
      (e: HostError) => e.code === 'KEYCHAIN' && e.message === 'the OS keychain refused',
    );
  });

  it('an error answer without a message says what the contract says of its code', async () => {
    const bare = ipcTransport(bridge({ ok: false, error: { code: 'NOT_MOUNTED', message: '' } }));
    await assert.rejects(
      bare.call('keys.forget', {}),
      (e: HostError) => e.code === 'NOT_MOUNTED' && e.message === ERRORS.NOT_MOUNTED.message,
    );
    assert.equal(new HostError('NO_HOST').message, 'not connected to the app host');
  });

  it("takes error codes only from the contract's vocabulary", async () => {
    const unknown = ipcTransport(bridge({ ok: false, error: { code: 'SOMETHING_NEW', message: 'a host from another version' } }));
    await assert.rejects(
      unknown.call('keys.forget', {}),
      (e: HostError) => e.code === 'BAD_RESPONSE' && /error the window does not know/.test(e.message),
    );
  });

  it('refuses answers and events of the wrong shape', async () => {
    const wrong = ipcTransport(bridge({ ok: true, data: { ok: 'yes' } }));
    await assert.rejects(wrong.call('keys.forget', {}), (e: HostError) => e.code === 'BAD_RESPONSE');
    const got: unknown[] = [];
    const troubles: string[] = [];
    ipcTransport(
      bridge(null, [
        { type: 'status', status: appStatus([]) },
        { type: 'status', status: { filespaces: 3 } },
      ]),
    ).subscribe(
      (e) => got.push(e),
      (m) => troubles.push(m),
    );
    assert.equal(got.length, 1);
    assert.deepEqual(troubles, ['the app host sent a status event of the wrong shape']);
  });
});
