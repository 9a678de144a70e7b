// {{name}}: a streamhost trend rule in JavaScript. The module exports
// `trendRule` with `describe` and `trend`. `describe` returns the rule's
// info, or throws a string to refuse its configuration. Each record's
// answer is { tag: 'ok', val: result or undefined } or
// { tag: 'err', val: 'reason' }. The direction compares two moving
// averages: the last minute's mean temperature against the mean of the
// whole `--window`.

import { get } from 'wasi:config/store@0.2.0-rc.1';

const FIELD = 'temperature';

// The configuration's number for `key`, or `fallback` when it sets none.
// Configuration comes as text from the `[config]` table of {{name}}.toml
// beside the plugin, `--plugin-config {{name}}.stable=1`, or
// `streamhost plugins config {{name}} stable=1`.
function number(key, fallback) {
  const text = get(key); // undefined when not set
  if (text === undefined) return fallback;
  const value = text.trim() === '' ? NaN : Number(text);
  if (!Number.isFinite(value)) throw `${key} ${JSON.stringify(text)} is not a number`;
  return value;
}

// Differences smaller than this are stable: `stable`, 0.5 unless
// configured. Read once: the configuration never changes within an
// instance.
let stable;
function config() {
  if (stable === undefined) {
    const value = number('stable', 0.5);
    if (value < 0) throw `stable ${value} is negative`;
    stable = value;
  }
  return stable;
}

export const trendRule = {
  describe() {
    config(); // throws: the configuration is refused
    return {
      name: '{{name}}',
      version: '0.1.0',
      kind: 'trend',
      needs: { keys: false, json: false, windowValues: false },
      // A window of its own besides the `--window` one: the last minute's
      // mean temperature, passed in `windows.declared[0]`.
      windows: [{ lengthMs: 60000, fields: [FIELD], aggregates: ['mean'] }],
      tables: [],
    };
  },

  trend(batch, windows) {
    const threshold = config();
    const f = batch.fields.indexOf(FIELD);
    // The declared window's first field (temperature), one column per
    // aggregate as declared.
    const minuteMean = windows.declared[0].fields[0].columns[0];
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      if (f < 0 || windows.counts[i] < 2) {
        out.push({ tag: 'ok', val: undefined });
        continue;
      }
      const change = minuteMean[i] - windows.fields[f].mean[i];
      const direction = change > threshold ? 'increasing' : change < -threshold ? 'decreasing' : 'stable';
      out.push({ tag: 'ok', val: { field: f, direction, change } });
    }
    return out;
  },
};
