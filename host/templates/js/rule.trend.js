// {{name}}: a streamhost trend rule in JavaScript. The module exports
// `trendRule` with `describe` and `trend`; each record's answer is
// { tag: 'ok', val: result or undefined } or { tag: 'err', val: 'reason' }.

const FIELD = 'temperature';
const STABLE = 0.5;

export const trendRule = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      kind: 'trend',
      needs: { keys: false, json: false, windowValues: false },
    };
  },

  trend(batch, windows) {
    const f = batch.fields.indexOf(FIELD);
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      if (f < 0 || windows.counts[i] < 2) {
        out.push({ tag: 'ok', val: undefined });
        continue;
      }
      const change = windows.fields[f].last[i] - windows.fields[f].first[i];
      const direction = change > STABLE ? 'increasing' : change < -STABLE ? 'decreasing' : 'stable';
      out.push({ tag: 'ok', val: { field: f, direction, change } });
    }
    return out;
  },
};
