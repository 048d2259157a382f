/**
 * Per-machine settings of the desktop app itself (engine tuning lives in each filespace's link
 * configuration): whether uploads are paused, start at login, and which filespaces to mount at
 * start. One JSON file beside the link configurations, written atomically and owner-only;
 * a missing file means defaults, and a damaged one is set aside (renamed) rather than
 * silently overwritten, so the user can see what was lost.
 */

import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../engine/util/files';

export const appSettingsSchema = z
  .object({
    version: z.literal(1),
    uploadsPaused: z.boolean(),
    startAtLogin: z.boolean(),
    mountAtStart: z.array(z.string()),
  })
  .strict();
export type AppSettings = z.infer<typeof appSettingsSchema>;

export const DEFAULT_APP_SETTINGS: AppSettings = { version: 1, uploadsPaused: false, startAtLogin: false, mountAtStart: [] };

export class AppSettingsFile {
  constructor(readonly file: string) {}

  static in(configDir: string): AppSettingsFile {
    return new AppSettingsFile(path.join(configDir, 'app.json'));
  }

  /** Reads the settings; `damaged` names the file a broken copy was moved to. */
  async load(): Promise<{ settings: AppSettings; damaged?: string }> {
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { settings: DEFAULT_APP_SETTINGS };
      throw err;
    }
    let parsed: ReturnType<typeof appSettingsSchema.safeParse> | undefined;
    try {
      parsed = appSettingsSchema.safeParse(JSON.parse(text));
    } catch {
      parsed = undefined;
    }
    if (parsed?.success) return { settings: parsed.data };
    const aside = `${this.file}.damaged-${Date.now()}`;
    await fsp.rename(this.file, aside);
    return { settings: DEFAULT_APP_SETTINGS, damaged: aside };
  }

  async save(settings: AppSettings): Promise<void> {
    const valid = appSettingsSchema.parse(settings);
    await fsp.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    await writeFileAtomic(this.file, JSON.stringify(valid, null, 2) + '\n');
  }

  /** Applies a change to the stored settings and saves them. */
  async update(change: Partial<Omit<AppSettings, 'version'>>): Promise<AppSettings> {
    const next = { ...(await this.load()).settings, ...change };
    await this.save(next);
    return next;
  }
}
