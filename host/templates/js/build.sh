#!/bin/sh
# Builds {{name}}.wasm with componentize-js (installed by npm on first build).
set -eu
cd "$(dirname "$0")"
[ -d node_modules/@bytecodealliance/componentize-js ] || npm install --no-audit --no-fund
node build.mjs
