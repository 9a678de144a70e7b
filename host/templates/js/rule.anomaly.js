// {{name}}: a streamhost anomaly rule in JavaScript. The module exports
// `anomalyRule` with `describe` and `detect`. `describe` returns the rule's
// info, or throws a string to refuse its configuration. Each record's
// answer is { tag: 'ok', val: [alerts...] } or { tag: 'err', val: 'reason' }
// (the record goes to the dead-letter topic). console output goes to
// streamhost's log.

import { get } from 'wasi:config/store@0.2.0-rc.1';

const NAME = '{{name}}';

// The configuration's number for `key`, or `fallback` when it sets none.
// Configuration comes as text from the `[config]` table of {{name}}.toml
// beside the plugin, `--plugin-config {{name}}.limit=35`, or
// `streamhost plugins config {{name}} limit=35`.
function number(key, fallback) {
  const text = get(key); // undefined when not set
  if (text === undefined) return fallback;
  const value = text.trim() === '' ? NaN : Number(text);
  if (!Number.isFinite(value)) throw `${key} ${JSON.stringify(text)} is not a number`;
  return value;
}

// Alert above this temperature: `limit`, 30 unless configured. Read once:
// the configuration never changes within an instance.
let limit;
function config() {
  limit ??= number('limit', 30);
  return limit;
}

export const anomalyRule = {
  describe() {
    config(); // throws: the configuration is refused
    return {
      name: NAME,
      version: '0.1.0',
      kind: 'anomaly',
      needs: { keys: false, json: false, windowValues: false },
      // A window of its own besides the `--window` one: the last minute's
      // mean and standard deviation of the temperature, passed in
      // `windows.declared[0]`.
      windows: [{ lengthMs: 60000, fields: ['temperature'], aggregates: ['mean', 'stddev'] }],
      tables: [],
    };
  },

  detect(batch, windows) {
    const above = config();
    const f = batch.fields.indexOf('temperature');
    // The declared window's first field (temperature): one column per
    // aggregate, in the order declared.
    const [mean, stddev] = windows.declared[0].fields[0].columns;
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      const alerts = [];
      // Columns: batch.values[field][record] (NaN if the record lacks it).
      if (f >= 0 && batch.values[f][i] > above) {
        const t = batch.values[f][i];
        alerts.push({
          rule: NAME,
          kind: 'too_hot',
          severity: 'high',
          message: `temperature ${t} is above ${above} (last minute: mean ${mean[i].toFixed(2)}, stddev ${stddev[i].toFixed(2)})`,
        });
      }
      out.push({ tag: 'ok', val: alerts });
    }
    return out;
  },
};
