// {{name}}: a streamhost anomaly rule in JavaScript. The module exports
// `anomalyRule` with `describe` and `detect`; each record's answer is
// { tag: 'ok', val: [alerts...] } or { tag: 'err', val: 'reason' } (the
// record goes to the dead-letter topic). console output goes to
// streamhost's log.

const NAME = '{{name}}';
const LIMIT = 30.0;

export const anomalyRule = {
  describe() {
    return {
      name: NAME,
      version: '0.1.0',
      kind: 'anomaly',
      needs: { keys: false, json: false, windowValues: false },
    };
  },

  detect(batch, windows) {
    const f = batch.fields.indexOf('temperature');
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      const alerts = [];
      // Columns: batch.values[field][record] (NaN if the record lacks it).
      if (f >= 0 && batch.values[f][i] > LIMIT) {
        const t = batch.values[f][i];
        alerts.push({
          rule: NAME,
          kind: 'too_hot',
          severity: 'high',
          message: `temperature ${t} is above ${LIMIT} (window mean ${windows.fields[f].mean[i].toFixed(2)})`,
        });
      }
      out.push({ tag: 'ok', val: alerts });
    }
    return out;
  },
};
