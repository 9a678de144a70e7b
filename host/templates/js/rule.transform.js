// {{name}}: a streamhost transform rule in JavaScript. The module exports
// `transformRule` with `describe` and `transform`; each record's answer is
// { tag: 'ok', val: { tag: 'keep' | 'drop' } | { tag: 'replace' | 'merge',
// val: 'json text' } } or { tag: 'err', val: 'reason' }.

export const transformRule = {
  describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      kind: 'transform',
      needs: { keys: false, json: false, windowValues: false },
    };
  },

  transform(batch) {
    const f = batch.fields.indexOf('temperature');
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      if (f < 0) {
        out.push({ tag: 'ok', val: { tag: 'keep' } });
      } else if (Number.isNaN(batch.values[f][i])) {
        out.push({ tag: 'ok', val: { tag: 'drop' } });
      } else {
        const fahrenheit = (batch.values[f][i] * 9) / 5 + 32;
        out.push({ tag: 'ok', val: { tag: 'merge', val: `{"temperature_f":${fahrenheit.toFixed(2)}}` } });
      }
    }
    return out;
  },
};
