// A test fixture: an anomaly rule that reads what WASI offers of time and
// chance, and reports it in one alert per record. streamhost must answer
// with the batch's processing time and a random stream seeded from it, so
// that a replayed batch gives the same alerts.
//
// Built by `cargo xtask plugins` with plugins/jump-js/build.mjs.

export const anomalyRule = {
  describe() {
    return {
      name: 'clock-js',
      version: '0.0.1',
      kind: 'anomaly',
      needs: { keys: false, json: false, windowValues: false },
      windows: [],
      tables: [],
    };
  },

  detect(batch, _windows) {
    const bytes = new Uint8Array(8);
    crypto.getRandomValues(bytes);
    const seen = {
      now: Date.now(),
      monotonic: performance.now(),
      random: Math.random(),
      bytes: Array.from(bytes).join(','),
    };
    const out = [];
    for (let i = 0; i < batch.len; i++) {
      out.push({ tag: 'ok', val: [{ rule: 'clock-js', kind: 'clock', severity: 'low', message: JSON.stringify(seen) }] });
    }
    return out;
  },
};
