// Bundles the renderer (React + zustand + the contract) and the Electron preload script with
// esbuild into dist/: the renderer as one browser script beside its HTML and CSS, the preload
// as one CommonJS file (a sandboxed preload cannot require our modules). Type checking is
// tsc's job (npm run build runs both). Also bundles the renderer's unit tests for Node.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'renderer');
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(root, 'renderer', 'src', 'main.tsx')],
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'chrome120',
  minify: true,
  sourcemap: true,
  outfile: join(out, 'app.js'),
  define: { 'process.env.NODE_ENV': '"production"' },
  jsx: 'automatic',
  logLevel: 'warning',
});
for (const f of ['index.html', 'app.css']) copyFileSync(join(root, 'renderer', f), join(out, f));
copyFileSync(join(root, 'build', 'icon.svg'), join(out, 'icon.svg'));
await build({
  entryPoints: [join(root, 'electron', 'preload', 'preload.ts')],
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node22',
  external: ['electron'],
  outfile: join(root, 'dist', 'app', 'preload.js'),
  logLevel: 'warning',
});

// The renderer's unit tests run in plain Node; bundle them the same way (zustand, zod and the
// renderer modules inlined) into dist/test/unit/renderer/, where test/run.mjs finds them.
const testDir = join(root, 'test', 'unit', 'renderer');
const tests = readdirSync(testDir).filter((f) => f.endsWith('.test.ts'));
await build({
  entryPoints: tests.map((f) => join(testDir, f)),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  jsx: 'automatic',
  sourcemap: true,
  outdir: join(root, 'dist', 'test', 'unit', 'renderer'),
  logLevel: 'warning',
});
