/**
 * How strong a passphrase is, estimated by zxcvbn (the @zxcvbn-ts port): it recognises common
 * passwords, names, English words, keyboard walks, dates, repeats and l33t substitutions, and
 * scores the guesses an attacker would need from 0 (trivial) to 4 (strong). The wizard shows the
 * score as a meter while the user types; the app host checks it again before it creates a
 * filespace (the renderer is not trusted), so both import this module and agree.
 *
 * The estimator sits behind `PassphraseEstimator` so the rules above it (wizard.ts) do not care
 * which library scores; the dictionaries are built on first use (a few MB of word lists).
 * Imports nothing of ours.
 */

import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import * as common from '@zxcvbn-ts/language-common';
import * as en from '@zxcvbn-ts/language-en';

export type StrengthScore = 0 | 1 | 2 | 3 | 4;

export interface StrengthEstimate {
  readonly score: StrengthScore;
  /** What makes it weak, if anything ("This is a top-100 common password."). */
  readonly warning: string | null;
  readonly suggestions: readonly string[];
}

export type PassphraseEstimator = (passphrase: string, userInputs: readonly string[]) => StrengthEstimate;

let factory: ZxcvbnFactory | undefined;

/** zxcvbn with the common and English dictionaries and English feedback. */
export const zxcvbnEstimator: PassphraseEstimator = (passphrase, userInputs) => {
  factory ??= new ZxcvbnFactory({
    translations: en.translations,
    graphs: common.adjacencyGraphs,
    dictionary: { ...common.dictionary, ...en.dictionary },
    useLevenshteinDistance: true,
  });
  // zxcvbn's cost grows with length; past 100 characters a passphrase is long enough to be strong.
  const r = factory.check(passphrase.slice(0, 100), [...userInputs]);
  return { score: r.score, warning: r.feedback.warning, suggestions: r.feedback.suggestions };
};
