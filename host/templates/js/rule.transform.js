// {{name}}: a streamhost transform rule in JavaScript. The module exports
// `transformRule` with `describe` and `transform`. `describe` returns the
// rule's info, or throws a string to refuse its configuration. `transform`
// returns { members: ['json object text', ...], results: [...] } with one
// result per record: { tag: 'ok', val: { tag: 'keep' | 'drop' } |
// { tag: 'replace', val: 'json text' } | { tag: 'merge', val: index into
// members } } or { tag: 'err', val: 'reason' }. Members every record gets
// are listed once.

import { get } from 'wasi:config/store@0.2.0-rc.1';

// The configuration's number for `key`, or `fallback` when it sets none.
// Configuration comes as text from the `[config]` table of {{name}}.toml
// beside the plugin, `--plugin-config {{name}}.digits=1`, or
// `streamhost plugins config {{name}} digits=1`.
function number(key, fallback) {
  const text = get(key); // undefined when not set
  if (text === undefined) return fallback;
  const value = text.trim() === '' ? NaN : Number(text);
  if (!Number.isFinite(value)) throw `${key} ${JSON.stringify(text)} is not a number`;
  return value;
}

// Decimals of `temperature_f`: `digits`, 2 unless configured. Read once:
// the configuration never changes within an instance.
let digits;
function config() {
  if (digits === undefined) {
    const value = number('digits', 2);
    if (!Number.isInteger(value) || value < 0 || value > 6) {
      throw `digits ${value} is not a whole number from 0 to 6`;
    }
    digits = value;
  }
  return digits;
}

export const transformRule = {
  describe() {
    config(); // throws: the configuration is refused
    return {
      name: '{{name}}',
      version: '0.1.0',
      kind: 'transform',
      needs: { keys: false, json: false, windowValues: false },
      // Declared windows are for trend and anomaly rules only.
      windows: [],
      tables: [],
    };
  },

  transform(batch) {
    const places = config();
    const f = batch.fields.indexOf('temperature');
    const members = [];
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      if (f < 0) {
        out.push({ tag: 'ok', val: { tag: 'keep' } });
      } else if (Number.isNaN(batch.values[f][i])) {
        out.push({ tag: 'ok', val: { tag: 'drop' } });
      } else {
        const fahrenheit = (batch.values[f][i] * 9) / 5 + 32;
        members.push(`{"temperature_f":${fahrenheit.toFixed(places)}}`);
        out.push({ tag: 'ok', val: { tag: 'merge', val: members.length - 1 } });
      }
    }
    return { members, results: out };
  },
};
