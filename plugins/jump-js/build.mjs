// Builds rule.js (or SOURCE.js) into a streamhost `anomaly` component:
//   node build.mjs OUT.wasm [SOURCE.js]
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ?? join(here, 'jump-js.wasm');
const { component } = await componentize({
  sourcePath: process.argv[3] ? join(here, process.argv[3]) : join(here, 'rule.js'),
  witPath: join(here, '../../wit'),
  worldName: 'anomaly',
  // Without these, the component would import wasi:http.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(out, component);
console.log(`built ${out} (${Math.round(component.length / 1024)} KiB)`);
