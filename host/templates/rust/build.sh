#!/bin/sh
# Builds {{name}}.wasm: the rule as a core module, then a component.
set -eu
cd "$(dirname "$0")"
target="${CARGO_TARGET_DIR:-target}"
if rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    cargo build --release --target wasm32-unknown-unknown
else
    # Debian's wasm32 toolchain (rustc-web, cargo-web, rust-web-src,
    # rust-web-llvm) builds std from source.
    RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc /usr/bin/cargo build --release \
        --target wasm32-unknown-unknown -Zbuild-std=std,panic_abort
fi
"${STREAMHOST:-streamhost}" componentize \
    "$target/wasm32-unknown-unknown/release/{{crate}}.wasm" -o {{name}}.wasm
