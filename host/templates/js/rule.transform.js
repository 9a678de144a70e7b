// {{name}}: a streamhost transform rule in JavaScript. The module exports
// `transformRule` with `describe` and `transform`, which returns
// { members: ['json object text', ...], results: [...] } with one result per
// record: { tag: 'ok', val: { tag: 'keep' | 'drop' } | { tag: 'replace',
// val: 'json text' } | { tag: 'merge', val: index into members } } or
// { tag: 'err', val: 'reason' }. Members every record gets are listed once.

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
    const members = [];
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      if (f < 0) {
        out.push({ tag: 'ok', val: { tag: 'keep' } });
      } else if (Number.isNaN(batch.values[f][i])) {
        out.push({ tag: 'ok', val: { tag: 'drop' } });
      } else {
        const fahrenheit = (batch.values[f][i] * 9) / 5 + 32;
        members.push(`{"temperature_f":${fahrenheit.toFixed(2)}}`);
        out.push({ tag: 'ok', val: { tag: 'merge', val: members.length - 1 } });
      }
    }
    return { members, results: out };
  },
};
