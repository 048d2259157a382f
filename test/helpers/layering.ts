/**
 * The layering rule of STYLE.md ("who may import what") as a pure function over source texts,
 * so the rule can be tested on synthetic files as well as run on the real tree.
 *
 * Layers, by folder:
 *   electron/engine/**    nothing of ours outside electron/engine; never the 'electron' package
 *   native/**             nothing of ours outside native
 *   electron/contract/**  nothing of ours outside electron/contract; no node builtins and no
 *                         'electron' either, because the renderer and preload load it too
 *   renderer/**           of ours only renderer and electron/contract; npm packages, but no node
 *                         builtins and no 'electron' (the UI reaches the host through preload)
 *   electron/preload/**   of ours only electron/contract; 'electron', but no node builtins (a
 *                         sandboxed preload has none) and no other npm package
 *   electron/host/**      the host library both hosts share (mounts, link, settings, status,
 *                         the control server): engine, native, contract; never 'electron',
 *                         because the headless command hosts engines with it too
 *   electron/cli/**       the command (arguments and printing): host, engine, native, contract;
 *                         never 'electron' (it runs headless on servers) and nothing of main,
 *                         preload or renderer
 *   electron/main/**      the desktop app: host, engine, native, contract; not the command
 *                         (a host library is not a command) and nothing of preload or renderer
 *                         (they run in other processes)
 *   build scripts         (BUILD_SCRIPTS) run in Node at build time: node builtins and npm
 *                         packages, nothing of ours (they name our files, never import them)
 * Other code (tests, benchmarks, tools) may import anything.
 *
 * Packages with one home, whatever the layer (other code excepted): fuse-native only in
 * native/fuse and keytar only in native/keychain (native code is the only code that loads
 * addons, and each addon has one adapter), the AWS SDK only in the S3 store (s3.ts, and
 * s3direct.ts for chunk PUTs), the plain-object end of import and export, and the permission
 * probe (everything else speaks ObjectStore), React only in renderer/.
 *
 * Inside the engine, parts (its folders; its top-level files are the composition) are ordered
 * top to bottom as ENGINE_ORDER says; a file imports its own part and parts of lower tiers
 * only, never a part beside or above it, so no arrow runs back up and parts cannot form a cycle.
 *
 * The rule has no exceptions: the tree test fails on any import it reports.
 *
 * Import specifiers come from TypeScript's own pre-processor, which sees `import`/`export ...
 * from`, `import type`, `import x = require()`, `require()` and `import()` (also in type
 * positions) and ignores comments and string contents, so a regular expression's false hits
 * and misses cannot hide a violation; `require.resolve()` and `import.meta.resolve()` calls
 * with a literal count too (that is how an addon's directory is found). Type-only imports count:
 * a type import still couples the layers.
 */

import { promises as fsp } from 'node:fs';
import { isBuiltin } from 'node:module';
import * as path from 'node:path';
import * as ts from 'typescript';

export type Layer = 'engine' | 'native' | 'contract' | 'renderer' | 'preload' | 'host' | 'cli' | 'main' | 'build' | 'other';

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
  ['host', 'electron/host'],
  ['cli', 'electron/cli'],
  ['main', 'electron/main'],
];

/** Scripts inside a layer's folder that are not part of it: they build it. */
export const BUILD_SCRIPTS: readonly string[] = ['renderer/build.mjs'];

/** Folders under the scanned roots that hold generated or upstream code, not ours. */
const NOT_OURS: readonly string[] = ['native/fuse/addon'];

/**
 * The engine's parts, top tier first. 'composition' is the engine's top-level files (engine.ts,
 * check.ts, gc.ts, ...), which wire the parts; errors.ts is the exception: the shared error
 * vocabulary sits at the very bottom, so every part may throw its errors. prefetch and upload
 * sit on the cache (prefetch fills it, the upload queue drains its dirty part); meta, like the
 * cache, sits on chunk and store. transfer (import and export) copies trees through the vfs
 * and reads plain objects of a bucket: above the vfs, below nothing of the engine's wiring.
 */
export const ENGINE_ORDER: ReadonlyArray<readonly string[]> = [
  ['composition'],
  ['transfer'],
  ['vfs'],
  ['prefetch', 'upload'],
  ['cache', 'meta'],
  ['chunk', 'store'],
  ['util'],
  ['errors'],
];

interface PackageHome {
  /** What the package is, for the message. */
  readonly what: string;
  readonly matches: (specifier: string) => boolean;
  /** Folders or files (repository-relative) that may import it. */
  readonly homes: readonly string[];
}

const packageNamed =
  (...names: string[]) =>
  (s: string) =>
    names.some((n) => s === n || s.startsWith(`${n}/`));

const PACKAGE_HOMES: readonly PackageHome[] = [
  { what: 'fuse-native', matches: packageNamed('fuse-native'), homes: ['native/fuse'] },
  { what: 'keytar', matches: packageNamed('keytar'), homes: ['native/keychain'] },
  { what: 'an addon loader', matches: packageNamed('node-gyp-build', 'bindings'), homes: ['native'] },
  {
    what: 'the AWS SDK',
    matches: (s) => s.startsWith('@aws-sdk/') || s.startsWith('@smithy/') || packageNamed('aws-sdk')(s),
    // store/s3.ts holds the filespace's objects and store/s3direct.ts sends its chunk PUTs (signed
    // with the SDK's signer); transfer/s3Tree.ts reads and writes plain objects (import, export).
    homes: [
      'electron/engine/store/s3.ts',
      'electron/engine/store/s3direct.ts',
      'electron/engine/transfer/s3Tree.ts',
      'electron/main/permissions.ts',
    ],
  },
  { what: 'React', matches: packageNamed('react', 'react-dom'), homes: ['renderer'] },
];

function isUnder(p: string, dir: string): boolean {
  return p === dir || p.startsWith(`${dir}/`);
}

export function layerOf(file: string): Layer {
  if (BUILD_SCRIPTS.includes(file)) return 'build';
  for (const [layer, dir] of LAYER_ROOTS) if (isUnder(file, dir)) return layer;
  return 'other';
}

const MODULE_EXT = /\.(d\.ts|ts|tsx|mts|cts|js|jsx|mjs|cjs)$/;

/**
 * The engine part a repository path (a file, or an import target without extension) belongs
 * to: its folder under electron/engine, 'errors' for errors.ts, 'composition' for the other
 * top-level files; undefined outside the engine.
 */
export function enginePartOf(p: string): string | undefined {
  if (!isUnder(p, 'electron/engine')) return undefined;
  const parts = p
    .slice('electron/engine/'.length)
    .split('/')
    .filter((s) => s !== '');
  if (parts.length === 0) return 'composition';
  if (parts.length > 1) return parts[0];
  const name = parts[0]!;
  if (name.replace(MODULE_EXT, '') === 'errors') return 'errors';
  // A folder imported by its index ('../cache') is that part.
  return engineTier(name) >= 0 ? name : 'composition';
}

function engineTier(part: string): number {
  return ENGINE_ORDER.findIndex((tier) => tier.includes(part));
}

function scriptKind(file: string): ts.ScriptKind {
  if (file.endsWith('.tsx')) return ts.ScriptKind.TSX;
  if (file.endsWith('.jsx')) return ts.ScriptKind.JSX;
  if (/\.(js|mjs|cjs)$/.test(file)) return ts.ScriptKind.JS;
  return ts.ScriptKind.TS;
}

/** Literal arguments of `require.resolve(...)` and `import.meta.resolve(...)` calls. */
function resolvedSpecifiers(text: string, fileName: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, false, scriptKind(fileName));
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && node.expression.name.text === 'resolve') {
      const on = node.expression.expression;
      const isRequire = ts.isIdentifier(on) && on.text === 'require';
      const isImportMeta = ts.isMetaProperty(on) && on.keywordToken === ts.SyntaxKind.ImportKeyword && on.name.text === 'meta';
      const arg = node.arguments[0];
      if ((isRequire || isImportMeta) && arg && ts.isStringLiteralLike(arg)) out.push(arg.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/**
 * Every module specifier a TypeScript or JavaScript source text imports, re-exports or
 * resolves. `fileName` only picks the parser's dialect (JSX or not, TypeScript or not).
 */
export function importSpecifiers(text: string, fileName = 'source.ts'): string[] {
  return [...ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName), ...resolvedSpecifiers(text, fileName)];
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

/** Why a file of `layer` may not import `ref` by the layers alone, or undefined when it may. */
function layerReason(layer: Layer, ref: ImportRef): string | undefined {
  const ours = (allowed: readonly string[], what: string) =>
    ref.kind === 'ours' && !allowed.some((dir) => isUnder(ref.target!, dir))
      ? `${what} may not import ${ref.target} (outside ${allowed.join(', ')})`
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
      if (ref.kind === 'package' && !isElectronPackage(ref))
        return `the preload may import only 'electron' and the contract, not ${ref.specifier}`;
      return ours(['electron/contract'], 'the preload');
    case 'host':
      if (isElectronPackage(ref)) return "the host library also runs headless (the command) and may not import 'electron'";
      return ours(['electron/host', 'electron/engine', 'electron/contract', 'native'], 'the host library');
    case 'cli':
      if (isElectronPackage(ref)) return "the CLI runs headless and may not import 'electron'";
      return ours(['electron/cli', 'electron/host', 'electron/engine', 'electron/contract', 'native'], 'the CLI');
    case 'main':
      return ours(
        ['electron/main', 'electron/host', 'electron/engine', 'electron/contract', 'native'],
        'the Electron main process',
      );
    case 'build':
      return ref.kind === 'ours' ? `a build script may not import our code (${ref.target}); it names files to build` : undefined;
    case 'other':
      return undefined;
  }
}

/** Why `file` may not import the npm package of `ref`, or undefined when it may. */
function packageReason(file: string, ref: ImportRef): string | undefined {
  if (ref.kind !== 'package') return undefined;
  const home = PACKAGE_HOMES.find((h) => h.matches(ref.specifier));
  if (!home || home.homes.some((dir) => isUnder(file, dir))) return undefined;
  return `${home.what} (${ref.specifier}) may be imported only in ${home.homes.join(' and ')}`;
}

/** Why an engine file may not import `ref` by the engine's order, or undefined when it may. */
function engineOrderReason(file: string, ref: ImportRef): string | undefined {
  if (ref.kind !== 'ours' || !isUnder(ref.target!, 'electron/engine')) return undefined;
  const from = enginePartOf(file)!;
  const to = enginePartOf(ref.target!)!;
  if (from === to) return undefined;
  const fromTier = engineTier(from);
  const toTier = engineTier(to);
  const unplaced = fromTier < 0 ? from : toTier < 0 ? to : undefined;
  if (unplaced !== undefined) return `electron/engine/${unplaced} has no place in the engine's order (ENGINE_ORDER)`;
  if (toTier < fromTier) return `the engine's ${from} may not import ${ref.target}: ${to} is above it in the engine's order`;
  if (toTier === fromTier) return `the engine's ${from} may not import ${ref.target}: ${to} is beside it in the engine's order`;
  return undefined;
}

function reasonAgainst(file: string, ref: ImportRef): string | undefined {
  const layer = layerOf(file);
  if (layer === 'other') return undefined;
  return layerReason(layer, ref) ?? packageReason(file, ref) ?? (layer === 'engine' ? engineOrderReason(file, ref) : undefined);
}

export function checkLayering(files: readonly SourceFile[]): Violation[] {
  const out: Violation[] = [];
  for (const f of files) {
    for (const specifier of importSpecifiers(f.text, f.path)) {
      const reason = reasonAgainst(f.path, classifyImport(f.path, specifier));
      if (reason) out.push({ file: f.path, specifier, reason });
    }
  }
  return out;
}

/** Every source extension the toolchain compiles or runs. */
const SOURCE_EXT = /\.(ts|tsx|mts|cts|js|jsx|mjs|cjs)$/;

/**
 * Reads every source file under `dirs` (relative to `root`); missing dirs are skipped, and so
 * are node_modules and NOT_OURS.
 */
export async function collectSources(
  root: string,
  dirs: readonly string[] = ['electron', 'native', 'renderer'],
): Promise<SourceFile[]> {
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
        if (e.name !== 'node_modules' && !NOT_OURS.includes(child)) await walk(child);
      } else if (e.isFile() && SOURCE_EXT.test(e.name)) {
        out.push({ path: child, text: await fsp.readFile(path.join(root, child), 'utf8') });
      }
    }
  };
  for (const d of dirs) await walk(d);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}
