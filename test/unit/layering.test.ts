// Pins down who may import what (STYLE.md): the rule itself on synthetic files, then the real source tree.

import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { SourceFile, checkLayering, classifyImport, collectSources, importSpecifiers, layerOf } from '../helpers/layering';

function check(file: string, text: string) {
  return checkLayering([{ path: file, text }]);
}

function assertViolates(file: string, text: string, specifier: string, reason?: RegExp): void {
  const v = check(file, text);
  assert.equal(v.length, 1, `${file}: expected one violation for ${specifier}, got ${JSON.stringify(v)}`);
  assert.equal(v[0]!.file, file);
  assert.equal(v[0]!.specifier, specifier);
  if (reason) assert.match(v[0]!.reason, reason);
}

function assertClean(file: string, text: string): void {
  assert.deepEqual(check(file, text), [], `${file} should be allowed:\n${text}`);
}

describe('layering rule: import scanner', () => {
  it('finds static, type-only, side-effect, re-export, require and dynamic imports', () => {
    const text = [
      "import type { A } from './a';",
      "import b, { c } from \"../b\";",
      "import '../side-effect';",
      "export { d } from '../d';",
      "export * from '../e';",
      "const f = require('../f');",
      "async function g() { return import('../g'); }",
      "type H = import('../h').H;",
      "import fs = require('node:fs');",
    ].join('\n');
    assert.deepEqual(importSpecifiers(text), ['./a', '../b', '../side-effect', '../d', '../e', '../f', '../g', '../h', 'node:fs']);
  });

  it('ignores imports that appear only in comments or strings', () => {
    const text = [
      "// import x from '../cli/commented';",
      "/* require('../cli/block') */",
      "const s = \"import y from '../cli/string'\";",
      'const t = `require("../cli/template")`;',
    ].join('\n');
    assert.deepEqual(importSpecifiers(text), []);
  });

  it('classifies our files, node builtins and packages, resolving relative paths', () => {
    assert.deepEqual(classifyImport('electron/engine/meta/tree.ts', '../cli/x'), { specifier: '../cli/x', kind: 'ours', target: 'electron/engine/cli/x' });
    assert.deepEqual(classifyImport('electron/engine/meta/tree.ts', '../../cli/x'), { specifier: '../../cli/x', kind: 'ours', target: 'electron/cli/x' });
    assert.equal(classifyImport('x.ts', 'node:fs').kind, 'builtin');
    assert.equal(classifyImport('x.ts', 'fs').kind, 'builtin');
    assert.equal(classifyImport('x.ts', 'fs/promises').kind, 'builtin');
    assert.equal(classifyImport('x.ts', 'zod').kind, 'package');
    assert.equal(classifyImport('x.ts', '@aws-sdk/client-s3').kind, 'package');
    assert.equal(classifyImport('x.ts', 'electron').kind, 'package');
  });

  it('maps paths to layers', () => {
    assert.equal(layerOf('electron/engine/vfs/vfs.ts'), 'engine');
    assert.equal(layerOf('electron/contract/api.ts'), 'contract');
    assert.equal(layerOf('native/fuse/adapter.ts'), 'native');
    assert.equal(layerOf('renderer/src/App.tsx'), 'renderer');
    assert.equal(layerOf('electron/main/index.ts'), 'main');
    assert.equal(layerOf('electron/preload/preload.ts'), 'preload');
    assert.equal(layerOf('electron/cli/main.ts'), 'cli');
    assert.equal(layerOf('test/ui/app.test.ts'), 'host');
    assert.equal(layerOf('electron/engineering/x.ts'), 'host', 'a prefix of a layer name is not the layer');
  });
});

describe('layering rule: engine', () => {
  const file = 'electron/engine/meta/tree.ts';

  it('reports an engine file importing the CLI', () => {
    assertViolates(file, "import { x } from '../../cli/x';", '../../cli/x', /engine may not import electron\/cli\/x/);
  });

  it('reports every import form reaching outside the engine', () => {
    assertViolates(file, "import type { FuseMount } from '../../../native/fuse/adapter';", '../../../native/fuse/adapter');
    assertViolates(file, "const h = require('../../cli/host');", '../../cli/host');
    assertViolates(file, "export * from '../../contract/api';", '../../contract/api');
    assertViolates(file, "void import('../../main/window');", '../../main/window');
  });

  it("reports the 'electron' package, also by subpath", () => {
    assertViolates(file, "import { app } from 'electron';", 'electron', /plain Node/);
    assertViolates(file, "import { ipcMain } from 'electron/main';", 'electron/main');
  });

  it('allows engine files, node builtins and npm packages', () => {
    assertClean(file, [
      "import { Journal } from './journal';",
      "import { Semaphore } from '../util/concurrency';",
      "import { UserError } from '../errors';",
      "import { promises as fsp } from 'node:fs';",
      "import * as path from 'path';",
      "import { z } from 'zod';",
      "import { S3Client } from '@aws-sdk/client-s3';",
    ].join('\n'));
  });
});

describe('layering rule: native, contract, renderer, hosts', () => {
  it('reports native code importing the engine, even for types only', () => {
    assertViolates('native/fuse/adapter.ts', "import type { Vfs } from '../../electron/engine/vfs/vfs';", '../../electron/engine/vfs/vfs');
    assertViolates('native/keychain/index.ts', "import { routes } from '../../electron/contract/api';", '../../electron/contract/api');
  });

  it('allows native code its own files, node builtins and addons', () => {
    assertClean('native/fuse/adapter.ts', "import { x } from './errno';\nimport * as os from 'node:os';\nconst F = require('fuse-native');");
  });

  it('reports the contract importing the engine or node builtins; allows zod', () => {
    assertViolates('electron/contract/api.ts', "import { UserError } from '../engine/errors';", '../engine/errors', /contract may not import/);
    assertViolates('electron/contract/api.ts', "import * as fs from 'node:fs';", 'node:fs', /builtins/);
    assertClean('electron/contract/api.ts', "import { z } from 'zod';\nimport { x } from './channels';");
  });

  it('allows the renderer the contract, its own files and npm packages', () => {
    assertClean('renderer/src/App.tsx', [
      "import type { StatusDto } from '../../electron/contract/api';",
      "import { create } from 'zustand';",
      "import React from 'react';",
      "import { Tray } from './components/Tray';",
    ].join('\n'));
  });

  it('reports the renderer importing the engine, native code, node builtins or electron', () => {
    assertViolates('renderer/src/App.tsx', "import { Engine } from '../../electron/engine/engine';", '../../electron/engine/engine');
    assertViolates('renderer/src/App.tsx', "import { FuseMount } from '../../native/fuse/adapter';", '../../native/fuse/adapter');
    assertViolates('renderer/src/App.tsx', "import { readFile } from 'fs';", 'fs', /builtins/);
    assertViolates('renderer/src/App.tsx', "import * as path from 'node:path';", 'node:path');
    assertViolates('renderer/src/App.tsx', "import { ipcRenderer } from 'electron';", 'electron', /preload/);
  });

  it('lets the CLI import the engine, native code and the contract', () => {
    assertClean('electron/cli/host.ts', [
      "import { Engine } from '../engine/engine';",
      "import type { FuseMount } from '../../native/fuse/adapter';",
      "import { routes } from '../contract/api';",
      "import * as http from 'node:http';",
    ].join('\n'));
  });

  it('reports each violation of a file separately', () => {
    const files: SourceFile[] = [
      { path: 'electron/engine/a.ts', text: "import '../cli/x';\nimport 'electron';\nimport './b';" },
      { path: 'native/n.ts', text: "import '../electron/engine/a';" },
    ];
    assert.deepEqual(checkLayering(files).map((v) => `${v.file} -> ${v.specifier}`), [
      'electron/engine/a.ts -> ../cli/x',
      'electron/engine/a.ts -> electron',
      'native/n.ts -> ../electron/engine/a',
    ]);
  });
});

describe('layering rule: Electron main, preload and the CLI', () => {
  it('lets main import the engine, native code, the contract and the CLI host, and electron', () => {
    assertClean('electron/main/appHost.ts', [
      "import { MountHost } from '../cli/host';",
      "import { Engine } from '../engine/engine';",
      "import { OsKeychain } from '../../native/keychain';",
      "import { appRoutes } from '../contract/app';",
      "import { app } from 'electron';",
      "import * as fs from 'node:fs';",
    ].join('\n'));
  });

  it('reports main importing the renderer or the preload', () => {
    assertViolates('electron/main/main.ts', "import { store } from '../../renderer/src/store';", '../../renderer/src/store', /main process may not import renderer/);
    assertViolates('electron/main/main.ts', "import '../preload/preload';", '../preload/preload');
  });

  it('lets the preload import only electron and the contract', () => {
    assertClean('electron/preload/preload.ts', "import { contextBridge } from 'electron';\nimport { IPC_INVOKE } from '../contract/app';");
    assertViolates('electron/preload/preload.ts', "import * as fs from 'node:fs';", 'node:fs', /no node builtins/);
    assertViolates('electron/preload/preload.ts', "import { Engine } from '../engine/engine';", '../engine/engine');
    assertViolates('electron/preload/preload.ts', "import { MountHost } from '../cli/host';", '../cli/host');
    assertViolates('electron/preload/preload.ts', "import { z } from 'zod';", 'zod', /only 'electron' and the contract/);
  });

  it("reports the CLI importing 'electron' or the app's layers", () => {
    assertViolates('electron/cli/main.ts', "import { app } from 'electron';", 'electron', /headless/);
    assertViolates('electron/cli/main.ts', "import { AppHost } from '../main/appHost';", '../main/appHost');
    assertViolates('electron/cli/main.ts', "import { store } from '../../renderer/src/store';", '../../renderer/src/store');
  });
});

describe('layering of the source tree', () => {
  const root = path.resolve(__dirname, '..', '..', '..');

  it('runs from the repository root', () => {
    assert.ok(existsSync(path.join(root, 'package.json')), root);
    assert.equal(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).name, 'filespace');
  });

  it('every file keeps to its layer', async () => {
    const files = await collectSources(root);
    const paths = files.map((f) => f.path);
    // Guard against a scan that silently finds nothing.
    for (const expected of ['electron/engine/engine.ts', 'electron/contract/api.ts', 'native/fuse/adapter.ts', 'electron/cli/main.ts',
      'electron/main/main.ts', 'electron/preload/preload.ts', 'renderer/src/main.tsx', 'native/keychain/index.ts']) {
      assert.ok(paths.includes(expected), `scan missed ${expected}`);
    }
    const engineFiles = files.filter((f) => layerOf(f.path) === 'engine');
    assert.ok(engineFiles.length >= 10, `only ${engineFiles.length} engine files found`);
    const engineImports = engineFiles.flatMap((f) => importSpecifiers(f.text).map((s) => classifyImport(f.path, s)));
    assert.ok(engineImports.filter((r) => r.kind === 'ours').length >= 20, 'the scanner found too few engine imports to be working');

    const violations = checkLayering(files);
    assert.deepEqual(violations, [], violations.map((v) => `${v.file}: '${v.specifier}': ${v.reason}`).join('\n'));
  });
});
