/**
 * `node dist/electron/main/serve.js [--port N]`: the app host without Electron. Hosts the
 * engines exactly as the desktop app does (same AppHost, same keychain) and serves the
 * renderer and the app contract over loopback HTTP (server.ts). Prints one JSON line
 * `{"url": ..., "open": ...}` once ready; `open` carries the per-run token in its fragment.
 * SIGTERM/SIGINT unmount everything and exit.
 */

import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { homes } from '../host/config';
import { log } from '../host/log';
import { OsKeychain } from '../../native/keychain';
import { AppHost } from './appHost';
import { startAppServer } from './server';
import { CredentialVault } from './vault';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string' },
      'mount-root': { type: 'string' },
      'keychain-service': { type: 'string' },
      'mount-at-start': { type: 'boolean' },
    },
  });
  const h = homes();
  const host = new AppHost({
    homes: h,
    log,
    mountRoot: values['mount-root'],
    vault: new CredentialVault(new OsKeychain(values['keychain-service'] ?? 'Filespace')),
  });
  await host.init();
  process.on('unhandledRejection', (err) =>
    log(`internal error (kept running): ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`),
  );
  const server = await startAppServer(host, {
    rendererDir: path.resolve(__dirname, '..', '..', 'renderer'),
    port: values.port ? Number(values.port) : 0,
    tokenFile: path.join(h.runDir, 'app-http.json'),
    log,
  });
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    void (async () => {
      await host.shutdown();
      await server.close();
      process.exit(0);
    })();
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  if (values['mount-at-start']) await host.mountAtStart();
  process.stdout.write(JSON.stringify({ url: server.url, open: `${server.url}/#token=${server.token}` }) + '\n');
}

main().catch((err) => {
  log(`cannot start: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
