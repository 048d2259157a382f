// Renders the app icon (build/icon.svg) and the tray icons to PNG with Chromium, so the
// SVGs stay the source and the PNGs electron-builder and the tray need are reproducible:
//   node build/render-icons.mjs   (needs chromium; CHROMIUM_PATH overrides /usr/bin/chromium)
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const appIcon = readFileSync(join(here, 'icon.svg'), 'utf8');

// Tray: a folder glyph with a state badge. idle: none; syncing: blue arrow; read-only: teal eye; paused: amber
// bars; offline: grey slash; waiting (writes wait for room): orange "!"; error: red "!".
const badge = {
  idle: '',
  syncing:
    '<circle cx="24" cy="24" r="8" fill="#2f6fd6"/><path d="M24 19v8m-3.5-3.5L24 27l3.5-3.5" stroke="#fff" stroke-width="2" fill="none" stroke-linecap="round"/>',
  'read-only':
    '<circle cx="24" cy="24" r="8" fill="#0f766e"/><path d="M19 24c2.8-4 7.2-4 10 0c-2.8 4-7.2 4-10 0z" fill="#fff"/><circle cx="24" cy="24" r="1.6" fill="#0f766e"/>',
  paused:
    '<circle cx="24" cy="24" r="8" fill="#d97706"/><path d="M21.5 20.5v7m5-7v7" stroke="#fff" stroke-width="2.2" stroke-linecap="round"/>',
  waiting:
    '<circle cx="24" cy="24" r="8" fill="#ea580c"/><path d="M24 19.5v5" stroke="#fff" stroke-width="2.4" stroke-linecap="round"/><circle cx="24" cy="28" r="1.3" fill="#fff"/>',
  offline:
    '<circle cx="24" cy="24" r="8" fill="#6b7280"/><path d="M20 28l8-8" stroke="#fff" stroke-width="2.2" stroke-linecap="round"/>',
  error:
    '<circle cx="24" cy="24" r="8" fill="#dc2626"/><path d="M24 19.5v5" stroke="#fff" stroke-width="2.4" stroke-linecap="round"/><circle cx="24" cy="28" r="1.3" fill="#fff"/>',
};
const tray = (state) => `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32" width="32" height="32">
  <path d="M3 9a3 3 0 0 1 3-3h7l3 3h10a3 3 0 0 1 3 3v12a3 3 0 0 1-3 3H6a3 3 0 0 1-3-3z" fill="${state === 'offline' ? '#9ca3af' : '#1f3b63'}"/>
  ${badge[state]}</svg>`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
});
const page = await browser.newPage();
async function render(svg, size, file) {
  await page.setViewportSize({ width: size, height: size });
  await page.setContent(
    `<html><body style="margin:0;background:transparent">${svg.replace(/width="\d+" height="\d+"/, `width="${size}" height="${size}"`)}</body></html>`,
  );
  writeFileSync(file, await page.screenshot({ omitBackground: true, clip: { x: 0, y: 0, width: size, height: size } }));
}
await render(appIcon, 512, join(here, 'icon.png'));
for (const state of Object.keys(badge)) {
  writeFileSync(join(here, 'tray', `${state}.svg`), tray(state));
  await render(tray(state), 32, join(here, 'tray', `${state}.png`));
}
await browser.close();
