/**
 * Hostile or bad input: thousands of malformed control messages are rejected with a clear
 * error and change nothing; the control socket refuses other users; no secret (AWS secret
 * key, passphrase) appears in anything the product writes or prints; file names with unusual
 * bytes and deep paths behave as on a local filesystem.
 */

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { Bed, CLI, run, sh, tmpDir } from '../helpers/bed';

/**
 * Sends one request. The body always goes with its Content-Length: node's client would send a
 * GET's or DELETE's body unframed, and those bytes would then read as the start of the next
 * request on the kept-alive connection (answered by node's own bare 400, not by the product).
 */
function post(
  socket: string,
  route: string,
  method: string,
  body: string | Buffer,
): Promise<{ status: number; json: unknown; text: string }> {
  return new Promise((resolve, reject) => {
    const headers = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = http.request({ socketPath: socket, path: route, method, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, json, text });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

function randomValue(depth = 0): unknown {
  const r = Math.random();
  if (depth > 2 || r < 0.15) return Math.random() < 0.5 ? Math.floor(Math.random() * 1e12) - 5e11 : Math.random();
  if (r < 0.3) return randomBytes(Math.floor(Math.random() * 40)).toString('latin1');
  if (r < 0.4) return [null, true, false, undefined][Math.floor(Math.random() * 4)];
  if (r < 0.55) return Array.from({ length: Math.floor(Math.random() * 4) }, () => randomValue(depth + 1));
  const o: Record<string, unknown> = {};
  for (const k of ['force', 'timeoutMs', 'key', 'value', 'paused', randomBytes(3).toString('hex')].filter(
    () => Math.random() < 0.5,
  ))
    o[k] = randomValue(depth + 1);
  return o;
}

describe('hostile input', () => {
  const bed = new Bed();
  let local: string;

  before(async () => {
    await bed.start();
    local = await tmpDir('hostile');
  });

  after(async () => {
    await bed.stop();
    await fsp.rm(local, { recursive: true, force: true });
  });

  it('rejects thousands of malformed control messages and changes nothing', async () => {
    const fs = await bed.filespace({ cacheSize: '64MiB' });
    await fs.mount();
    const socket = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    const routes = [
      '/v1/status',
      '/v1/unmount',
      '/v1/sync',
      '/v1/set',
      '/v1/pause',
      '/v1/nope',
      '/',
      '/v1/status/../unmount',
      '/v1/set?x=1',
    ];
    const methods = ['GET', 'POST', 'PUT', 'DELETE'];
    let rejected = 0;
    let previous = 'none';
    for (let i = 0; i < 3000; i++) {
      const route = routes[Math.floor(Math.random() * routes.length)]!;
      const method = methods[Math.floor(Math.random() * methods.length)]!;
      let body: string | Buffer;
      const kind = Math.random();
      // Random bytes: never empty (an empty body is a valid unmount) and never JSON (0xff is not UTF-8).
      if (kind < 0.1) body = Buffer.concat([Buffer.from([0xff]), randomBytes(Math.floor(Math.random() * 200))]);
      else if (kind < 0.15) body = Buffer.alloc(20_000 + Math.floor(Math.random() * 50_000), 0x7b);
      else {
        const v = randomValue();
        // Every object also carries an unknown key, so no message is accidentally valid.
        body = JSON.stringify(v && typeof v === 'object' && !Array.isArray(v) ? { ...v, [`fuzz${i}`]: 1 } : v) ?? 'undefined';
      }
      if (route === '/v1/status' && method === 'GET') continue; // the one harmless valid request
      const res = await post(socket, route, method, body).catch(() => ({ status: 0, json: undefined, text: '' }));
      const sent = `${method} ${route} (${body.length} bytes: ${JSON.stringify(String(body).slice(0, 80))})`;
      const what = `${sent} -> ${res.status} ${JSON.stringify(res.text.slice(0, 200))}, after ${previous}`;
      previous = `${sent} -> ${res.status}`;
      if (res.status === 0) {
        rejected++; // connection cut for an oversized body
        continue;
      }
      assert.ok(res.status >= 400 && res.status < 500, what);
      const err = res.json as { code?: unknown; message?: unknown };
      assert.equal(typeof err?.code, 'string', what);
      assert.equal(typeof err?.message, 'string', what);
      rejected++;
    }
    assert.ok(rejected > 2500);
    const st = await fs.status();
    assert.equal(st.state, 'mounted');
    assert.equal(st.cacheCapBytes, 64 * 1024 * 1024);
    assert.equal(st.uploadsPaused, false);
    await fs.unmount();
  });

  it('lets only the owner reach the control socket', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const socket = path.join(fs.machine.home, 'run', `${fs.name}.sock`);
    // Open every directory above the run directory, so only the product's own modes protect it.
    for (let d = path.dirname(path.dirname(socket)); d !== '/' && d !== path.dirname(d); d = path.dirname(d))
      await fsp.chmod(d, 0o755).catch(() => undefined);
    assert.equal((await fsp.stat(path.dirname(socket))).mode & 0o777, 0o700);
    assert.equal((await fsp.stat(socket)).mode & 0o777, 0o600);
    const probe = `require('http').get({ socketPath: ${JSON.stringify(socket)}, path: '/v1/status' }, (r) => { console.log('status', r.statusCode); }).on('error', (e) => { console.log('refused', e.code); });`;
    const asNobody = (cmd: string) =>
      run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', cmd]);
    let r = await asNobody(probe);
    assert.match(r.stdout, /refused EACCES/, r.stdout + r.stderr);
    // Even with the directory opened up, the socket itself refuses other users.
    await fsp.chmod(path.dirname(socket), 0o755);
    r = await asNobody(probe);
    assert.match(r.stdout, /refused EACCES/, r.stdout + r.stderr);
    const mine = await run(process.execPath, ['-e', probe]);
    assert.match(mine.stdout, /status 200/);
    await fs.unmount();
  });

  it('never writes or prints a secret', async () => {
    const secretKey = `SeCrEt${randomBytes(12).toString('hex')}KeY`;
    const passphrase = `pass-${randomBytes(12).toString('hex')}-phrase`;
    const passFile = path.join(local, 'secret-pass');
    await fsp.writeFile(passFile, passphrase, { mode: 0o600 });
    const m = await bed.machine('secrets');
    const env = { ...m.env, AWS_SECRET_ACCESS_KEY: secretKey };
    const outputs: string[] = [];
    const cli = async (...args: string[]) => {
      const r = await run(process.execPath, [CLI, ...args], { env });
      outputs.push(r.stdout, r.stderr);
      return r;
    };
    const bucket = await bed.newBucket();
    const mnt = path.join(m.home, 'mnt');
    await fsp.mkdir(mnt);
    assert.equal((await cli('init', ...bed.storeArgs(bucket), '--passphrase-file', passFile)).code, 0);
    assert.equal(
      (await cli('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 's', '--passphrase-file', passFile)).code,
      0,
    );
    assert.equal((await cli('mount', 's')).code, 0);
    await sh(`head -c 3000000 /dev/urandom > ${mnt}/f && echo ${passphrase.slice(0, 4)} > ${mnt}/g`);
    await cli('status', 's', '--json');
    await cli('status', 's');
    assert.equal((await cli('sync', 's')).code, 0);
    await cli('check', 's');
    const wrong = path.join(local, 'wrong-pass');
    await fsp.writeFile(wrong, `${passphrase}x`, { mode: 0o600 });
    await cli('link', ...bed.storeArgs(bucket), '--mount-point', mnt, '--name', 't', '--passphrase-file', wrong);
    assert.equal((await cli('unmount', 's')).code, 0);
    // Everything on disk the product wrote (config, cache, journal, logs) and everything printed.
    const files = (await sh(`find ${m.home} -type f`)).trim().split('\n').filter(Boolean);
    assert.ok(
      files.some((f) => f.endsWith('.log')),
      'the daemon log is among the files searched',
    );
    for (const f of files) {
      const text = (await fsp.readFile(f)).toString('latin1');
      assert.ok(!text.includes(secretKey), `${f} contains the AWS secret key`);
      assert.ok(!text.includes(passphrase), `${f} contains the passphrase`);
    }
    for (const o of outputs) {
      assert.ok(!o.includes(secretKey) && !o.includes(passphrase), `output leaks a secret: ${o.slice(0, 200)}`);
    }
  });

  it('treats unusual names and deep paths as a local filesystem does', async () => {
    const fs = await bed.filespace();
    await fs.mount();
    const script = String.raw`
import os, sys, errno
root = sys.argv[1]
os.chdir(root)
def attempt(label, fn):
    try:
        fn(); print(label, 'ok')
    except OSError as e:
        print(label, errno.errorcode[e.errno])
names = ['unicodé-名前-🎉', 'new\nline', 'tab\there', ' leading space', 'trailing space ', '-dash', '.hidden', '..dots', 'a' * 255, 'é' * 127 + 'x', 'é' * 128, 'b' * 256, 'quote"\'s', 'back\\slash', '%s%n', '\x01ctrl']
for i, n in enumerate(names):
    attempt('create %d' % i, lambda: open(n, 'w').write('content %d' % i))
    attempt('read %d' % i, lambda: open(n).read() == 'content %d' % i or (_ for _ in ()).throw(OSError(errno.EIO, 'mismatch')))
print('listing', sorted(os.listdir('.')) == sorted(n for n in names if os.path.exists(n)))
d = '.'
for depth in range(120):
    d = os.path.join(d, 'level%03d' % depth)
attempt('deep mkdir', lambda: os.makedirs(d))
attempt('deep file', lambda: open(os.path.join(d, 'leaf'), 'w').write('deep'))
attempt('deep read', lambda: open(os.path.join(d, 'leaf')).read() == 'deep' or (_ for _ in ()).throw(OSError(errno.EIO, 'mismatch')))
bnames = [b'\xff', b'\xfe', b'\xc3', b'\xc3(', b'latin1-caf\xe9', b'\xed\xa0\x80surrogate', b'cut-\xe2\x82', b'x' * 250 + b'\xff' * 5, b'y' * 250 + b'\xff' * 6, b'\xf0\x9f\x8e\x89-valid']
for i, n in enumerate(bnames):
    attempt('bytes create %d' % i, lambda: open(n, 'wb').write(b'bytes %d' % i))
    attempt('bytes read %d' % i, lambda: open(n, 'rb').read() == b'bytes %d' % i or (_ for _ in ()).throw(OSError(errno.EIO, 'mismatch')))
print('bytes listing', sorted(x for x in os.listdir(b'.') if x in bnames) == sorted(n for n in bnames if os.path.exists(n)))
attempt('bytes rename', lambda: os.rename(b'\xff', b'renamed-\xfe\xfd'))
attempt('bytes symlink', lambda: os.symlink(b'target-\xff', b'link-\xfe'))
attempt('bytes readlink', lambda: os.readlink(b'link-\xfe') == b'target-\xff' or (_ for _ in ()).throw(OSError(errno.EIO, 'mismatch')))
attempt('bytes mkdir', lambda: os.mkdir(b'dir-\x80'))
attempt('bytes nested', lambda: open(b'dir-\x80/f-\x81', 'wb').write(b'nested'))
for n in names:
    attempt('unlink ' + repr(n)[:12], lambda: os.unlink(n))
`;
    const file = path.join(local, 'names.py');
    await fsp.writeFile(file, script);
    const ref = path.join(local, 'ref-names');
    await fsp.mkdir(ref);
    const onLocal = await sh(`python3 ${file} ${ref}`);
    const onMount = await sh(`python3 ${file} ${fs.mnt}`);
    assert.equal(onMount, onLocal);
    assert.match(onLocal, /create 11 ENAMETOOLONG/);
    assert.match(onLocal, /bytes create 8 ENAMETOOLONG/);
    assert.match(onLocal, /bytes listing True/);
    // The byte names survive a remount and reach another machine unchanged. The walk goes
    // through folders in name order: the order readdir gives is not part of what is compared
    // (a remount lists a folder in the order of its stored entries, by name bytes).
    const listing = String.raw`
import os, sys
for root, dirs, files in os.walk(sys.argv[1].encode()):
    dirs.sort()
    rel = os.path.relpath(root, sys.argv[1].encode())
    for n in sorted(files + dirs):
        if not n.startswith(b'level'):
            print(os.path.join(rel, n).hex())
`;
    await fsp.writeFile(path.join(local, 'list.py'), listing);
    const before = await sh(`python3 ${local}/list.py ${fs.mnt}`);
    assert.match(before, new RegExp(Buffer.from('renamed-\xfe\xfd', 'latin1').toString('hex')));
    await fs.unmount();
    await fs.mount();
    assert.equal(await sh(`python3 ${local}/list.py ${fs.mnt}`), before);
    await fs.sync();
    const other = await bed.link(await bed.machine('names-b'), fs.bucket);
    await other.mount({ readOnly: true });
    assert.equal(await sh(`python3 ${local}/list.py ${other.mnt}`), before);
    await other.unmount();
    await fs.unmount();
  });
});
