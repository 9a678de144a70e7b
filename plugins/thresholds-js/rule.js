// thresholds: an example streamhost anomaly rule in JavaScript that reads a
// reference table and its configuration (see docs/rules-cookbook.md).
//
// It declares the table `thresholds` (fields temperature_min and
// temperature_max, no JSON), which the host fills from a compacted topic
// given as `--table thresholds=TOPIC`: Kafka key = the record's key (the
// sensor_id), value = a JSON object such as {"temperature_max": 8}. A
// reading whose temperature is strictly above its maximum or below its
// minimum raises `temperature_out_of_range` (high). Each limit comes from
// the record's row when it has one and the row gives that limit (not NaN),
// else from the configuration; the message says which:
// `temperature 9.5 is above 8 (thresholds table)`.
//
//   key               default  meaning
//   temperature_min   0        the minimum for records without their own
//   temperature_max   40       the maximum for records without their own
//
// `describe` refuses a value that is not a number, and a minimum that is
// not below the maximum. Built by `cargo xtask plugins` with componentize-js
// (plugins/jump-js/build.mjs) into target/plugins/thresholds-js.wasm.

import { get } from 'wasi:config/store@0.2.0-rc.1';

const NAME = 'thresholds';
const VERSION = '1.0.0';
const FIELD = 'temperature';
const TABLE = 'thresholds';

// The configuration's number for `key`, or `fallback` when it sets none.
function number(key, fallback) {
  const text = get(key); // undefined when not set
  if (text === undefined) return fallback;
  const value = text.trim() === '' ? NaN : Number(text);
  if (!Number.isFinite(value)) throw `${key} ${JSON.stringify(text)} is not a number`;
  return value;
}

// The default limits, read once: the configuration never changes within an
// instance. Throws (a refusal) when they are not numbers or not a range.
let defaults;
function config() {
  if (defaults === undefined) {
    const min = number('temperature_min', 0);
    const max = number('temperature_max', 40);
    if (min >= max) throw `temperature_min ${min} is not below temperature_max ${max}`;
    defaults = { min, max };
  }
  return defaults;
}

// The limit to use: the row's (`fromRow`, NaN when the row lacks it, or
// undefined without a row), else the default.
function limit(fromRow, fallback) {
  return fromRow === undefined || Number.isNaN(fromRow)
    ? { value: fallback, source: 'default' }
    : { value: fromRow, source: `${TABLE} table` };
}

export const anomalyRule = {
  describe() {
    config(); // throws: the configuration is refused
    return {
      name: NAME,
      version: VERSION,
      kind: 'anomaly',
      needs: { keys: false, json: false, windowValues: false },
      windows: [],
      // Its rows arrive in batch.tables[0]: columns[0] temperature_min,
      // columns[1] temperature_max, in this order.
      tables: [{ name: TABLE, fields: ['temperature_min', 'temperature_max'], json: false }],
    };
  },

  detect(batch, windows) {
    const { min, max } = config();
    const f = batch.fields.indexOf(FIELD);
    const rows = batch.tables[0];
    if (rows === undefined) {
      const why = `the host passed no rows of the table ${TABLE}`;
      return Array.from({ length: batch.len }, () => ({ tag: 'err', val: why }));
    }
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      const t = f < 0 ? NaN : batch.values[f][i];
      // The index of the record's row, or undefined when the table has none.
      const r = rows.rowOf[i];
      const low = limit(r === undefined ? undefined : rows.columns[0][r], min);
      const high = limit(r === undefined ? undefined : rows.columns[1][r], max);
      const alerts = [];
      const raise = (side, l) =>
        alerts.push({
          rule: NAME,
          kind: 'temperature_out_of_range',
          severity: 'high',
          message: `temperature ${t} is ${side} ${l.value} (${l.source})`,
        });
      if (t > high.value) raise('above', high);
      else if (t < low.value) raise('below', low);
      out.push({ tag: 'ok', val: alerts });
    }
    return out;
  },
};
