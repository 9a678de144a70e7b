#!/bin/sh
# Builds {{name}}.wasm: C bindings from wit-bindgen, clang with wasi-libc,
# then a component with the WASI adapter.
#   wit-bindgen: cargo install wit-bindgen-cli@0.61.0 --no-default-features --features c
#   clang, wasm-ld, wasi-libc: apt install clang lld libclang-rt-dev-wasm32 wasi-libc
#   (or the WASI SDK: CC=/opt/wasi-sdk/bin/clang)
set -eu
cd "$(dirname "$0")"
# Debian's clang-14 (with its wasm-ld and wasi-libc, as `cargo xtask`
# installs them) first, then any clang.
CC="${CC:-$(command -v clang-14 || command -v clang || echo clang)}"
"${WIT_BINDGEN:-wit-bindgen}" c wit --world {{world}} --out-dir bindings
"$CC" --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Ibindings \
    rule.c bindings/{{world}}.c bindings/{{world}}_component_type.o -o {{crate}}.core.wasm
"${STREAMHOST:-streamhost}" componentize {{crate}}.core.wasm -o {{name}}.wasm
