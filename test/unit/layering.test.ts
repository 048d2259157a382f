// Pins down who may import what (STYLE.md): the rule itself on synthetic files, then the real source tree.

import assert from 'node:assert/strict';
import { existsSync, promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  ENGINE_ORDER,
  SourceFile,
  checkLayering,
  classifyImport,
  collectSources,
  enginePartOf,
  importSpecifiers,
  layerOf,
} from '../helpers/layering';

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
      'import b, { c } from "../b";',
      "import '../side-effect';",
      "export { d } from '../d';",
      "export * from '../e';",
      "const f = require('../f');",
      "async function g() { return import('../g'); }",
      "type H = import('../h').H;",
      "import fs = require('node:fs');",
    ].join('\n');
    assert.deepEqual(importSpecifiers(text), [
      './a',
      '../b',
      '../side-effect',
      '../d',
      '../e',
      '../f',
      '../g',
      '../h',
      'node:fs',
    ]);
  });

  it('ignores imports that appear only in comments or strings', () => {
    const text = [
      "// import x from '../cli/commented';",
      "/* require('../cli/block') */",
      'const s = "import y from \'../cli/string\'";',
      'const t = `require("../cli/template")`;',
    ].join('\n');
    assert.deepEqual(importSpecifiers(text), []);
  });

  it('finds require.resolve and import.meta.resolve with a literal, not in comments or strings', () => {
    const text = [
      "const dir = path.dirname(require.resolve('fuse-native/package.json'));",
      "const url = import.meta.resolve('keytar');",
      "// require.resolve('../cli/commented')",
      'const s = "require.resolve(\'../cli/string\')";',
      'const dynamic = require.resolve(name);',
      "const other = resolver.resolve('not-a-module');",
    ].join('\n');
    assert.deepEqual(importSpecifiers(text, 'x.mjs'), ['fuse-native/package.json', 'keytar']);
  });

  it('reads JavaScript and JSX files', () => {
    assert.deepEqual(importSpecifiers("const a = require('./a');\nmodule.exports = a;", 'x.cjs'), ['./a']);
    assert.deepEqual(importSpecifiers("import { b } from './b';\nawait b();", 'x.mjs'), ['./b']);
    assert.deepEqual(
      importSpecifiers("import React from 'react';\nexport const C = () => <div a={require.resolve('./c')}>x</div>;", 'x.jsx'),
      ['react', './c'],
    );
    assert.deepEqual(importSpecifiers("const f = <T,>(x: T) => require.resolve('./d');", 'x.tsx'), ['./d']);
  });

  it('classifies our files, node builtins and packages, resolving relative paths', () => {
    assert.deepEqual(classifyImport('electron/engine/meta/tree.ts', '../cli/x'), {
      specifier: '../cli/x',
      kind: 'ours',
      target: 'electron/engine/cli/x',
    });
    assert.deepEqual(classifyImport('electron/engine/meta/tree.ts', '../../cli/x'), {
      specifier: '../../cli/x',
      kind: 'ours',
      target: 'electron/cli/x',
    });
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
    assert.equal(layerOf('electron/host/mountHost.ts'), 'host');
    assert.equal(layerOf('renderer/build.mjs'), 'build');
    assert.equal(layerOf('native/fuse/build-addon.js'), 'native');
    assert.equal(layerOf('test/ui/app.test.ts'), 'other');
    assert.equal(layerOf('electron/engineering/x.ts'), 'other', 'a prefix of a layer name is not the layer');
  });

  it('maps engine paths to their parts', () => {
    assert.equal(enginePartOf('electron/engine/vfs/vfs.ts'), 'vfs');
    assert.equal(enginePartOf('electron/engine/cache/dirty'), 'cache');
    assert.equal(enginePartOf('electron/engine/store/s3/client.ts'), 'store');
    assert.equal(enginePartOf('electron/engine/cache'), 'cache', 'a folder imported by its index');
    assert.equal(enginePartOf('electron/engine/engine.ts'), 'composition');
    assert.equal(enginePartOf('electron/engine/filespace'), 'composition');
    assert.equal(enginePartOf('electron/engine/errors.ts'), 'errors');
    assert.equal(enginePartOf('electron/engine/errors'), 'errors');
    assert.equal(enginePartOf('electron/cli/main.ts'), undefined);
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
    assertClean(
      file,
      [
        "import { Journal } from './journal';",
        "import { Semaphore } from '../util/concurrency';",
        "import { UserError } from '../errors';",
        "import { promises as fsp } from 'node:fs';",
        "import * as path from 'path';",
        "import { z } from 'zod';",
      ].join('\n'),
    );
  });
});

describe('layering rule: native, contract, renderer, hosts', () => {
  it('reports native code importing the engine, even for types only', () => {
    assertViolates(
      'native/fuse/adapter.ts',
      "import type { Vfs } from '../../electron/engine/vfs/vfs';",
      '../../electron/engine/vfs/vfs',
    );
    assertViolates(
      'native/keychain/index.ts',
      "import { routes } from '../../electron/contract/api';",
      '../../electron/contract/api',
    );
  });

  it('allows native code its own files, node builtins and addons', () => {
    assertClean(
      'native/fuse/adapter.ts',
      "import { x } from './errno';\nimport * as os from 'node:os';\nconst F = require('fuse-native');",
    );
  });

  it('reports the contract importing the engine or node builtins; allows zod', () => {
    assertViolates(
      'electron/contract/api.ts',
      "import { UserError } from '../engine/errors';",
      '../engine/errors',
      /contract may not import/,
    );
    assertViolates('electron/contract/api.ts', "import * as fs from 'node:fs';", 'node:fs', /builtins/);
    assertClean('electron/contract/api.ts', "import { z } from 'zod';\nimport { x } from './channels';");
  });

  it('allows the renderer the contract, its own files and npm packages', () => {
    assertClean(
      'renderer/src/App.tsx',
      [
        "import type { StatusDto } from '../../electron/contract/api';",
        "import { create } from 'zustand';",
        "import React from 'react';",
        "import { Tray } from './components/Tray';",
      ].join('\n'),
    );
  });

  it('reports the renderer importing the engine, native code, node builtins or electron', () => {
    assertViolates(
      'renderer/src/App.tsx',
      "import { Engine } from '../../electron/engine/engine';",
      '../../electron/engine/engine',
    );
    assertViolates('renderer/src/App.tsx', "import { FuseMount } from '../../native/fuse/adapter';", '../../native/fuse/adapter');
    assertViolates('renderer/src/App.tsx', "import { readFile } from 'fs';", 'fs', /builtins/);
    assertViolates('renderer/src/App.tsx', "import * as path from 'node:path';", 'node:path');
    assertViolates('renderer/src/App.tsx', "import { ipcRenderer } from 'electron';", 'electron', /preload/);
  });

  it('lets the CLI import the engine, native code and the contract', () => {
    assertClean(
      'electron/cli/host.ts',
      [
        "import { Engine } from '../engine/engine';",
        "import type { FuseMount } from '../../native/fuse/adapter';",
        "import { routes } from '../contract/api';",
        "import * as http from 'node:http';",
      ].join('\n'),
    );
  });

  it('reports each violation of a file separately', () => {
    const files: SourceFile[] = [
      { path: 'electron/engine/a.ts', text: "import '../cli/x';\nimport 'electron';\nimport './b';" },
      { path: 'native/n.ts', text: "import '../electron/engine/a';" },
    ];
    assert.deepEqual(
      checkLayering(files).map((v) => `${v.file} -> ${v.specifier}`),
      ['electron/engine/a.ts -> ../cli/x', 'electron/engine/a.ts -> electron', 'native/n.ts -> ../electron/engine/a'],
    );
  });
});

describe('layering rule: Electron main, preload, the host library and the CLI', () => {
  it('lets main import the host library, the engine, native code, the contract, and electron', () => {
    assertClean(
      'electron/main/appHost.ts',
      [
        "import { MountHost } from '../host/mountHost';",
        "import { Engine } from '../engine/engine';",
        "import { OsKeychain } from '../../native/keychain';",
        "import { appRoutes } from '../contract/app';",
        "import { app } from 'electron';",
        "import * as fs from 'node:fs';",
      ].join('\n'),
    );
  });

  it("reports main importing the command's code: a host library is not a command", () => {
    assertViolates(
      'electron/main/appHost.ts',
      "import { MountHost } from '../cli/host';",
      '../cli/host',
      /main process may not import electron\/cli\/host/,
    );
    assertViolates('electron/main/main.ts', "import type { Settings } from '../cli/config';", '../cli/config');
    assertViolates(
      'electron/main/appHost.ts',
      "import { applySetting } from '../cli/main';",
      '../cli/main',
      /main process may not import electron\/cli\/main/,
    );
    assertViolates('electron/main/appHost.ts', "import { parseSize } from '../cli/units';", '../cli/units');
  });

  it('reports main importing the renderer or the preload', () => {
    assertViolates(
      'electron/main/main.ts',
      "import { store } from '../../renderer/src/store';",
      '../../renderer/src/store',
      /main process may not import renderer/,
    );
    assertViolates('electron/main/main.ts', "import '../preload/preload';", '../preload/preload');
  });

  it('lets the preload import only electron and the contract', () => {
    assertClean(
      'electron/preload/preload.ts',
      "import { contextBridge } from 'electron';\nimport { IPC_INVOKE } from '../contract/app';",
    );
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

  it('lets the CLI import the host library', () => {
    assertClean(
      'electron/cli/main.ts',
      "import { MountHost } from '../host/mountHost';\nimport { parseSize } from '../engine/util/sizes';",
    );
  });

  it('lets the host library import the engine, native code, the contract and itself', () => {
    assertClean(
      'electron/host/mountHost.ts',
      [
        "import { Engine } from '../engine/engine';",
        "import { FuseMount } from '../../native/fuse/adapter';",
        "import type { OsKeychain } from '../../native/keychain';",
        "import { routes } from '../contract/api';",
        "import { ControlServer } from './control';",
        "import * as http from 'node:http';",
        "import { z } from 'zod';",
      ].join('\n'),
    );
  });

  it("reports the host library importing 'electron', the command, the app or the UI", () => {
    assertViolates(
      'electron/host/mountHost.ts',
      "import { app } from 'electron';",
      'electron',
      /host library also runs headless/,
    );
    assertViolates(
      'electron/host/mountHost.ts',
      "import { parseArgs } from '../cli/main';",
      '../cli/main',
      /host library may not import electron\/cli\/main/,
    );
    assertViolates('electron/host/mountHost.ts', "import { AppHost } from '../main/appHost';", '../main/appHost');
    assertViolates('electron/host/mountHost.ts', "import '../preload/preload';", '../preload/preload');
    assertViolates('electron/host/mountHost.ts', "import { store } from '../../renderer/src/store';", '../../renderer/src/store');
  });
});

describe('layering rule: build scripts', () => {
  it('lets a build script import node builtins and npm packages', () => {
    assertClean(
      'renderer/build.mjs',
      "import { build } from 'esbuild';\nimport { copyFileSync } from 'node:fs';\nimport { fileURLToPath } from 'node:url';",
    );
  });

  it('reports a build script importing our code', () => {
    assertViolates(
      'renderer/build.mjs',
      "import { routes } from '../electron/contract/api.js';",
      '../electron/contract/api.js',
      /build script may not import our code/,
    );
  });

  it('keeps other files beside a build script in their layer', () => {
    assertViolates(
      'renderer/src/build.mjs',
      "import { readFileSync } from 'node:fs';",
      'node:fs',
      /renderer may not import node builtins/,
    );
  });
});

describe('layering rule: packages with one home', () => {
  it('lets native/fuse load fuse-native, also by resolving its directory', () => {
    assertClean(
      'native/fuse/adapter.ts',
      "const Fuse = require('fuse-native');\nconst dir = require.resolve('fuse-native/package.json');",
    );
    assertClean('native/fuse/build-addon.js', "const src = path.dirname(require.resolve('fuse-native/package.json'));");
  });

  it('reports fuse-native anywhere else', () => {
    assertViolates(
      'native/keychain/index.ts',
      "const Fuse = require('fuse-native');",
      'fuse-native',
      /fuse-native \(fuse-native\) may be imported only in native\/fuse/,
    );
    assertViolates('electron/host/mountHost.ts', "import Fuse from 'fuse-native';", 'fuse-native');
    assertViolates(
      'electron/engine/vfs/vfs.ts',
      "const dir = require.resolve('fuse-native/package.json');",
      'fuse-native/package.json',
    );
    assertViolates('electron/main/main.ts', "type F = typeof import('fuse-native');", 'fuse-native');
  });

  it('lets native/keychain load keytar and reports it anywhere else', () => {
    assertClean('native/keychain/index.ts', "type Keytar = typeof import('keytar');\nconst k = require('keytar');");
    assertViolates(
      'electron/main/vault.ts',
      "import * as keytar from 'keytar';",
      'keytar',
      /keytar \(keytar\) may be imported only in native\/keychain/,
    );
    assertViolates('native/fuse/adapter.ts', "const k = require('keytar');", 'keytar');
    assertViolates('electron/cli/main.ts', "const k = require('keytar');", 'keytar');
  });

  it('lets only native code load addons with node-gyp-build', () => {
    assertClean('native/fuse/adapter.ts', "const binding = require('node-gyp-build')(dir);");
    assertViolates(
      'electron/engine/chunk/crypto.ts',
      "const binding = require('node-gyp-build')(dir);",
      'node-gyp-build',
      /addon loader/,
    );
  });

  it('lets the S3 store and the permission probe import the AWS SDK', () => {
    assertClean(
      'electron/engine/store/s3.ts',
      "import { S3Client } from '@aws-sdk/client-s3';\nimport { NodeHttpHandler } from '@smithy/node-http-handler';",
    );
    assertClean('electron/main/permissions.ts', "import { ListBucketsCommand, S3Client } from '@aws-sdk/client-s3';");
  });

  it('reports the AWS SDK anywhere else, the renderer included', () => {
    assertViolates(
      'renderer/src/store.ts',
      "import { S3Client } from '@aws-sdk/client-s3';",
      '@aws-sdk/client-s3',
      /the AWS SDK \(@aws-sdk\/client-s3\) may be imported only in electron\/engine\/store\/s3\.ts and electron\/engine\/store\/s3direct\.ts and electron\/engine\/transfer\/s3Tree\.ts and electron\/main\/permissions\.ts/,
    );
    assertViolates('electron/engine/meta/remote.ts', "import { S3Client } from '@aws-sdk/client-s3';", '@aws-sdk/client-s3');
    assertViolates('electron/engine/store/local.ts', "import type { S3Client } from '@aws-sdk/client-s3';", '@aws-sdk/client-s3');
    assertViolates(
      'electron/engine/store/memory.ts',
      "import { NodeHttpHandler } from '@smithy/node-http-handler';",
      '@smithy/node-http-handler',
    );
    assertViolates('electron/cli/stores.ts', "import { S3Client } from '@aws-sdk/client-s3';", '@aws-sdk/client-s3');
    assertViolates('electron/main/appHost.ts', "import { IAMClient } from '@aws-sdk/client-iam';", '@aws-sdk/client-iam');
    assertViolates(
      'electron/contract/app.ts',
      "import type { BucketLocationConstraint } from '@aws-sdk/client-s3';",
      '@aws-sdk/client-s3',
    );
  });

  it('lets the renderer import React and reports React anywhere else', () => {
    assertClean(
      'renderer/src/App.tsx',
      "import React, { useState } from 'react';\nimport { createRoot } from 'react-dom/client';\nimport { jsx } from 'react/jsx-runtime';",
    );
    assertViolates(
      'electron/main/tray.ts',
      "import React from 'react';",
      'react',
      /React \(react\) may be imported only in renderer/,
    );
    assertViolates('electron/contract/format.ts', "import type { ReactNode } from 'react';", 'react');
    assertViolates('electron/cli/main.tsx', "import { renderToString } from 'react-dom/server';", 'react-dom/server');
    assertClean('electron/main/tray.ts', "import { reactive } from 'reactivity';");
  });

  it('leaves other code (tests, benchmarks, tools) free to import any package', () => {
    assertClean(
      'test/integration/credentials.test.ts',
      "import { IAMClient } from '@aws-sdk/client-iam';\nimport { S3Client } from '@aws-sdk/client-s3';",
    );
    assertClean('test/unit/renderer/store.test.ts', "import React from 'react';");
    assertClean('test/helpers/keyring.ts', "const k = require('keytar');\nconst F = require('fuse-native');");
  });
});

describe("layering rule: the engine's own order", () => {
  const tierOf = (part: string) => ENGINE_ORDER.findIndex((t) => t.includes(part));

  it('states transfer over vfs over prefetch and upload over cache and meta over chunk and store over util over errors, composition on top', () => {
    assert.deepEqual(
      ENGINE_ORDER.map((t) => [...t]),
      [
        ['composition'],
        ['transfer'],
        ['vfs'],
        ['prefetch', 'upload'],
        ['cache', 'meta'],
        ['chunk', 'store'],
        ['util'],
        ['errors'],
      ],
    );
  });

  it('lets the composition import every part and its fellow top-level files', () => {
    assertClean(
      'electron/engine/engine.ts',
      [
        "import { Vfs } from './vfs/vfs';",
        "import { Fetcher } from './prefetch/fetcher';",
        "import { WriteBack } from './upload/writeback';",
        "import { ChunkCache } from './cache/chunkCache';",
        "import { MetaStore } from './meta/metastore';",
        "import { seal } from './chunk/format';",
        "import type { ObjectStore } from './store/types';",
        "import { Semaphore } from './util/concurrency';",
        "import { UserError } from './errors';",
        "import { openFilespace } from './filespace';",
        "import { collectGarbage } from './gc';",
      ].join('\n'),
    );
  });

  // Every part may import every part in a lower tier, and its own files.
  for (const [i, tier] of ENGINE_ORDER.entries()) {
    for (const part of tier) {
      if (part === 'composition' || part === 'errors') continue;
      const file = `electron/engine/${part}/x.ts`;
      const below = ENGINE_ORDER.slice(i + 1).flat();
      it(`lets ${part} import its own files and ${below.join(', ')}`, () => {
        assertClean(
          file,
          [
            "import { y } from './y';",
            ...below.map((b) => (b === 'errors' ? "import { UserError } from '../errors';" : `import { z } from '../${b}/z';`)),
          ].join('\n'),
        );
      });
    }
  }

  it('reports every import from a part to a part above it', () => {
    let checked = 0;
    for (const [i, tier] of ENGINE_ORDER.entries()) {
      for (const part of tier) {
        for (const above of ENGINE_ORDER.slice(0, i).flat()) {
          if (above === 'composition') continue;
          const file = part === 'errors' ? 'electron/engine/errors.ts' : `electron/engine/${part}/x.ts`;
          const from = part === 'errors' ? './' : '../';
          assertViolates(file, `import { z } from '${from}${above}/z';`, `${from}${above}/z`, new RegExp(`${above} is above it`));
          checked++;
        }
      }
    }
    assert.ok(checked >= 20, `only ${checked} upward imports checked`);
  });

  it('reports a part importing the composition (a top-level file other than errors.ts)', () => {
    assertViolates('electron/engine/meta/tree.ts', "import { Engine } from '../engine';", '../engine', /composition is above it/);
    assertViolates(
      'electron/engine/store/s3.ts',
      "import type { FilespaceHeader } from '../filespace';",
      '../filespace',
      /composition is above it/,
    );
    assertViolates(
      'electron/engine/util/sizes.ts',
      "import { EngineConfig } from '../config';",
      '../config',
      /composition is above it/,
    );
    assertViolates('electron/engine/errors.ts', "import { Engine } from './engine';", './engine', /composition is above it/);
  });

  it('reports a part importing one beside it', () => {
    assertViolates(
      'electron/engine/cache/chunkCache.ts',
      "import { Inode } from '../meta/tree';",
      '../meta/tree',
      /meta is beside it/,
    );
    assertViolates(
      'electron/engine/meta/tree.ts',
      "import { DirtyStore } from '../cache/dirty';",
      '../cache/dirty',
      /cache is beside it/,
    );
    assertViolates(
      'electron/engine/upload/writeback.ts',
      "import { Fetcher } from '../prefetch/fetcher';",
      '../prefetch/fetcher',
      /prefetch is beside it/,
    );
    assertViolates(
      'electron/engine/chunk/format.ts',
      "import type { ObjectStore } from '../store/types';",
      '../store/types',
      /store is beside it/,
    );
  });

  it('places a folder imported by its index, and files nested deeper in a part', () => {
    assertClean('electron/engine/vfs/vfs.ts', "import { ChunkCache } from '../cache';");
    assertViolates('electron/engine/cache/chunkCache.ts', "import { Vfs } from '../vfs';", '../vfs', /vfs is above it/);
    assertClean(
      'electron/engine/store/s3/client.ts',
      "import type { ObjectStore } from '../types';\nimport { Semaphore } from '../../util/concurrency';",
    );
    assertViolates(
      'electron/engine/store/s3/client.ts',
      "import { Tree } from '../../meta/tree';",
      '../../meta/tree',
      /meta is above it/,
    );
  });

  it('reports a folder that has no place in the order, from either side', () => {
    assert.equal(tierOf('lease'), -1);
    assertViolates(
      'electron/engine/lease/holder.ts',
      "import { Semaphore } from '../util/concurrency';",
      '../util/concurrency',
      /electron\/engine\/lease has no place/,
    );
    assertViolates(
      'electron/engine/vfs/vfs.ts',
      "import { Lease } from '../lease/holder';",
      '../lease/holder',
      /electron\/engine\/lease has no place/,
    );
    assertViolates(
      'electron/engine/engine.ts',
      "import { Lease } from './lease/holder';",
      './lease/holder',
      /electron\/engine\/lease has no place/,
    );
  });
});

describe('layering rule: every source extension', () => {
  it('checks .js, .mjs, .cjs and .jsx files like TypeScript ones', () => {
    for (const ext of ['js', 'mjs', 'cjs', 'jsx', 'mts', 'cts', 'tsx']) {
      assertViolates(`electron/engine/meta/x.${ext}`, "const c = require('../../cli/main.js');", '../../cli/main.js');
      assertViolates(`native/x.${ext}`, "import '../electron/engine/engine.js';", '../electron/engine/engine.js');
    }
  });

  it('collects every extension, skipping node_modules and the generated addon', async () => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'layering-'));
    try {
      const files = ['a.ts', 'b.tsx', 'c.mts', 'd.cts', 'e.js', 'f.mjs', 'g.cjs', 'h.jsx', 'i.d.ts'].map(
        (f) => `electron/engine/${f}`,
      );
      const skipped = [
        'native/fuse/addon/index.js',
        'native/node_modules/x/index.js',
        'renderer/app.css',
        'electron/engine/README.md',
      ];
      for (const f of [...files, ...skipped, 'native/fuse/build-addon.js']) {
        await fsp.mkdir(path.dirname(path.join(root, f)), { recursive: true });
        await fsp.writeFile(path.join(root, f), '');
      }
      const found = (await collectSources(root)).map((f) => f.path);
      assert.deepEqual(found, [...files, 'native/fuse/build-addon.js'].sort());
    } finally {
      await fsp.rm(root, { recursive: true, force: true });
    }
  });
});

describe('layering of the source tree', () => {
  const root = path.resolve(__dirname, '..', '..', '..');

  it('runs from the repository root', () => {
    assert.ok(existsSync(path.join(root, 'package.json')), root);
    assert.equal((JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { name: unknown }).name, 'filespace');
  });

  it('every file keeps to its layer', async () => {
    const files = await collectSources(root);
    const paths = files.map((f) => f.path);
    // Guard against a scan that silently finds nothing.
    for (const expected of [
      'electron/engine/engine.ts',
      'electron/contract/api.ts',
      'native/fuse/adapter.ts',
      'electron/cli/main.ts',
      'electron/main/main.ts',
      'electron/preload/preload.ts',
      'renderer/src/main.tsx',
      'native/keychain/index.ts',
      'native/fuse/build-addon.js',
      'renderer/build.mjs',
    ]) {
      assert.ok(paths.includes(expected), `scan missed ${expected}`);
    }
    const engineFiles = files.filter((f) => layerOf(f.path) === 'engine');
    assert.ok(engineFiles.length >= 10, `only ${engineFiles.length} engine files found`);
    const engineImports = engineFiles.flatMap((f) => importSpecifiers(f.text).map((s) => classifyImport(f.path, s)));
    assert.ok(
      engineImports.filter((r) => r.kind === 'ours').length >= 20,
      'the scanner found too few engine imports to be working',
    );

    assert.ok(!paths.some((p) => p.startsWith('native/fuse/addon/')), 'the generated addon is not ours');

    const violations = checkLayering(files);
    assert.deepEqual(violations, [], violations.map((v) => `${v.file}: '${v.specifier}': ${v.reason}`).join('\n'));
  });

  it('fails the tree as soon as the app imports the command', async () => {
    const files = await collectSources(root);
    const appHost = files.find((f) => f.path === 'electron/main/appHost.ts');
    assert.ok(appHost, 'scan missed electron/main/appHost.ts');
    const tampered = files.map((f) =>
      f === appHost ? { path: f.path, text: `import { main } from '../cli/main';\n${f.text}` } : f,
    );
    assert.deepEqual(
      checkLayering(tampered).map((v) => [v.file, v.specifier]),
      [['electron/main/appHost.ts', '../cli/main']],
    );
  });
});
