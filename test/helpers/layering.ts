/**
 * The layering rule of STYLE.md ("who may import what") as a pure function over source texts,
 * so the rule can be tested on synthetic files as well as run on the real tree.
 *
 *   electron/engine/**    nothing of ours outside electron/engine; never the 'electron' package
 *   native/**             nothing of ours outside native
 *   electron/contract/**  nothing of ours outside electron/contract; no node builtins and no
 *                         'electron' either, because the renderer and preload load it too
 *   renderer/**           of ours only renderer and electron/contract; npm packages, but no node
 *                         builtins and no 'electron' (the UI reaches the host through preload)
 *   electron/preload/**   of ours only electron/contract; 'electron', but no node builtins (a
 *                         sandboxed preload has none) and no other npm package
 *   electron/cli/**       engine, native, contract; never 'electron' (the CLI runs headless on
 *                         servers) and nothing of main, preload or renderer
 *   electron/main/**      engine, native, contract and cli (it hosts engines the CLI's way);
 *                         nothing of preload or renderer (they run in other processes)
 * Other code (tests, tools) may import any layer.
 *
 * Import specifiers come from TypeScript's own pre-processor, which sees `import`/`export ...
 * from`, `import type`, `import x = require()`, `require()` and `import()` (also in type
 * positions) and ignores comments and string contents, so a regular expression's false hits
 * and misses cannot hide a violation. Type-only imports count: a type import still couples
 * the layers.
 */

import { promises as fsp } from 'node:fs';
import { isBuiltin } from 'node:module';
import * as path from 'node:path';
import * as ts from 'typescript';

export type Layer = 'engine' | 'native' | 'contract' | 'renderer' | 'preload' | 'cli' | 'main' | 'host';

export interface SourceFile {
  /** Path relative to the repository root, with '/' separators. */
  readonly path: string;
  readonly text: string;
}

export interface Violation {
  readonly file: string;
  readonly specifier: string;
  readonly reason: string;
}

export type ImportKind = 'ours' | 'builtin' | 'package';

export interface ImportRef {
  readonly specifier: string;
  readonly kind: ImportKind;
  /** For our own files: the repository-relative path the specifier points at. */
  readonly target?: string;
}

const LAYER_ROOTS: ReadonlyArray<readonly [Layer, string]> = [
  ['engine', 'electron/engine'],
  ['contract', 'electron/contract'],
  ['native', 'native'],
  ['renderer', 'renderer'],
  ['preload', 'electron/preload'],
  ['cli', 'electron/cli'],
  ['main', 'electron/main'],
];

function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

export function layerOf(file: string): Layer {
  for (const [layer, dir] of LAYER_ROOTS) if (isUnder(file, dir)) return layer;
  return 'host';
}

/** Every module specifier a TypeScript or JavaScript source text imports or re-exports. */
export function importSpecifiers(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

export function classifyImport(fromFile: string, specifier: string): ImportRef {
  if (specifier.startsWith('.') || specifier.startsWith('/')) {
    const target = specifier.startsWith('/')
      ? specifier
      : path.posix.normalize(path.posix.join(path.posix.dirname(fromFile), specifier));
    return { specifier, kind: 'ours', target };
  }
  if (isBuiltin(specifier)) return { specifier, kind: 'builtin' };
  return { specifier, kind: 'package' };
}

function isElectronPackage(ref: ImportRef): boolean {
  return ref.kind === 'package' && (ref.specifier === 'electron' || ref.specifier.startsWith('electron/'));
}

/** Why `ref` may not be imported from a file of `layer`, or undefined when it may. */
function reasonAgainst(layer: Layer, ref: ImportRef): string | undefined {
  const ours = (allowed: readonly string[], what: string) =>
    ref.kind === 'ours' && !allowed.some((dir) => isUnder(ref.target!, dir))
      ? `${what} may not import ${ref.target} (outside ${allowed.join(' and ')})`
      : undefined;
  switch (layer) {
    case 'engine':
      if (isElectronPackage(ref)) return "the engine is plain Node and may not import 'electron'";
      return ours(['electron/engine'], 'the engine');
    case 'native':
      return ours(['native'], 'native code');
    case 'contract':
      if (ref.kind === 'builtin') return 'the contract is loaded by the renderer and may not import node builtins';
      if (isElectronPackage(ref)) return "the contract may not import 'electron'";
      return ours(['electron/contract'], 'the contract');
    case 'renderer':
      if (ref.kind === 'builtin') return 'the renderer may not import node builtins';
      if (isElectronPackage(ref)) return "the renderer may not import 'electron'; it talks to the host through preload";
      return ours(['renderer', 'electron/contract'], 'the renderer');
    case 'preload':
      if (ref.kind === 'builtin') return 'a sandboxed preload has no node builtins';
      if (ref.kind === 'package' && !isElectronPackage(ref)) return `the preload may import only 'electron' and the contract, not ${ref.specifier}`;
      return ours(['electron/contract'], 'the preload');
    case 'cli':
      if (isElectronPackage(ref)) return "the CLI runs headless and may not import 'electron'";
      return ours(['electron/cli', 'electron/engine', 'electron/contract', 'native'], 'the CLI');
    case 'main':
      return ours(['electron/main', 'electron/cli', 'electron/engine', 'electron/contract', 'native'], 'the Electron main process');
    case 'host':
      return undefined;
  }
}

export function checkLayering(files: readonly SourceFile[]): Violation[] {
  const out: Violation[] = [];
  for (const f of files) {
    const layer = layerOf(f.path);
    for (const specifier of importSpecifiers(f.text)) {
      const reason = reasonAgainst(layer, classifyImport(f.path, specifier));
      if (reason) out.push({ file: f.path, specifier, reason });
    }
  }
  return out;
}

const SOURCE_EXT = /\.(ts|tsx|mts|cts)$/;

/** Reads every TypeScript source under `dirs` (relative to `root`); missing dirs are skipped. */
export async function collectSources(root: string, dirs: readonly string[] = ['electron', 'native', 'renderer']): Promise<SourceFile[]> {
  const out: SourceFile[] = [];
  const walk = async (rel: string): Promise<void> => {
    let entries;
    try {
      entries = await fsp.readdir(path.join(root, rel), { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    for (const e of entries) {
      const child = `${rel}/${e.name}`;
      if (e.isDirectory()) {
        if (e.name !== 'node_modules') await walk(child);
      } else if (e.isFile() && SOURCE_EXT.test(e.name)) {
        out.push({ path: child, text: await fsp.readFile(path.join(root, child), 'utf8') });
      }
    }
  };
  for (const d of dirs) await walk(d);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
