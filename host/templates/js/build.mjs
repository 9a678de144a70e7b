// Builds rule.js into {{name}}.wasm with componentize-js.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'rule.js',
  witPath: 'wit',
  worldName: '{{world}}',
  // Without these, the component would import wasi:http.
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile('{{name}}.wasm', component);
console.log(`built {{name}}.wasm (${Math.round(component.length / 1024)} KiB)`);
