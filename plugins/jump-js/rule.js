// A streamhost anomaly rule in JavaScript: flags a reading whose
// temperature is more than 5 degrees away from its window's mean
// (`temperature_jump`, medium), once the window holds two readings or more.
//
// Built into a component by componentize-js (see build.mjs). Its console
// output goes through WASI to streamhost's log.

import { log } from 'streamhost:plugin/host@0.3.0';

const NAME = 'jump-js';
const VERSION = '1.0.0';
const JUMP = 5.0;
let greeted = false;

export const anomalyRule = {
  // Returning is `ok`; throwing a string would refuse the configuration.
  describe() {
    return {
      name: NAME,
      version: VERSION,
      kind: 'anomaly',
      needs: { keys: false, json: false, windowValues: false },
      windows: [],
      tables: [],
    };
  },

  detect(batch, windows) {
    if (!greeted) {
      greeted = true;
      console.log(`${NAME} ${VERSION}: first batch of ${batch.len} records`);
      log('debug', `${NAME} sees fields ${batch.fields.join(', ')}`);
    }
    const out = [];
    const f = batch.fields.indexOf('temperature');
    for (let i = 0; i < batch.len; i++) {
      if (f < 0) {
        out.push({ tag: 'ok', val: [] });
        continue;
      }
      const t = batch.values[f][i];
      const mean = windows.fields[f].mean[i];
      const alerts = [];
      if (windows.counts[i] >= 2 && Math.abs(t - mean) > JUMP) {
        alerts.push({
          rule: NAME,
          kind: 'temperature_jump',
          severity: 'medium',
          message: `temperature ${t} is ${(t - mean).toFixed(2)} from the window mean ${mean.toFixed(2)}`,
        });
      }
      out.push({ tag: 'ok', val: alerts });
    }
    return out;
  },
};
