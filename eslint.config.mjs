// Lint gate (`npm run lint`, run by `npm test` with --max-warnings 0).
// TypeScript: typescript-eslint's type-aware recommended set over every TypeScript project of
// the repository (the project service finds each file's nearest tsconfig: ./tsconfig.json,
// renderer/tsconfig.json, test/unit/renderer/tsconfig.json), plus the rules that catch the
// async mistakes a filesystem cannot afford: a promise nobody awaits (its rejection is lost or
// crashes the process), a promise passed where a callback's result is ignored, a switch over a
// union that forgets a member. Scripts (.js/.mjs, bin/filespace) get the plain JavaScript set.
// Layout and formatting belong to Prettier (.prettierrc.json); no stylistic rules here.
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import tseslint from 'typescript-eslint';

// The globals a Node script may use (the `globals` package is not a dependency).
const nodeGlobals = Object.fromEntries(
  [
    'process',
    'console',
    'Buffer',
    'URL',
    'URLSearchParams',
    'TextEncoder',
    'TextDecoder',
    'setTimeout',
    'clearTimeout',
    'setInterval',
    'clearInterval',
    'setImmediate',
    'clearImmediate',
    'queueMicrotask',
    'structuredClone',
    'AbortController',
    'AbortSignal',
    'fetch',
    'performance',
  ].map((name) => [name, 'readonly']),
);
const commonJsGlobals = {
  require: 'readonly',
  module: 'writable',
  exports: 'writable',
  __dirname: 'readonly',
  __filename: 'readonly',
};

const unusedVars = [
  'error',
  {
    args: 'after-used',
    argsIgnorePattern: '^_',
    varsIgnorePattern: '^_',
    caughtErrorsIgnorePattern: '^_',
    destructuredArrayIgnorePattern: '^_',
    ignoreRestSiblings: true,
  },
];

export default defineConfig(
  globalIgnores(['**/dist/', '**/node_modules/', 'native/fuse/addon/', 'native/cipher/addon/', 'release/', '.demo/']),
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  {
    files: ['**/*.ts', '**/*.tsx'],
    extends: [js.configs.recommended, tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // node:test's test()/describe() return a promise the runner itself awaits and reports.
      '@typescript-eslint/no-floating-promises': [
        'error',
        { allowForKnownSafeCalls: [{ from: 'package', package: 'node:test', name: ['test', 'it', 'describe', 'suite'] }] },
      ],
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // A switch over a union names every member, even with a default: a code added to the
      // union later is then flagged in each switch that has to decide what it means.
      '@typescript-eslint/switch-exhaustiveness-check': [
        'error',
        { allowDefaultCaseForExhaustiveSwitch: true, considerDefaultExhaustiveForUnions: false },
      ],
      // `return promise` inside try/catch/finally skips the catch and the finally's ordering.
      '@typescript-eslint/return-await': ['error', 'error-handling-correctness-only'],
      '@typescript-eslint/no-unused-vars': unusedVars,
      // Off: an async method without await is how an implementation of a Promise-returning
      // interface (the in-memory store, test doubles) turns a throw into a rejection; dropping
      // `async` would change that. A missing await on a promise is no-floating-promises' job.
      '@typescript-eslint/require-await': 'off',
      // Cases grouped under a comment ("// The bucket.") are one group of labels, not a fall-through.
      'no-fallthrough': ['error', { allowEmptyCase: true }],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', 'bin/filespace'],
    extends: [js.configs.recommended],
    languageOptions: { ecmaVersion: 2022, globals: nodeGlobals },
    rules: { 'no-unused-vars': unusedVars },
  },
  {
    files: ['**/*.js', 'bin/filespace'],
    languageOptions: { sourceType: 'commonjs', globals: commonJsGlobals },
  },
);
