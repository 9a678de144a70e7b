//! `streamhost componentize`: a core module built with wit-bindgen (Rust,
//! C, Zig) turned into a plugin component, the last step of those builds.

use std::path::PathBuf;

use anyhow::Context;

/// `streamhost componentize MODULE -o FILE`.
#[derive(clap::Args)]
pub struct Args {
    /// The core module.
    pub module: PathBuf,
    /// Where to write the component.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Runs `streamhost componentize`.
pub fn main(args: Args) -> anyhow::Result<()> {
    let Args { module, output } = args;
    let bytes = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    let component =
        componentize(&bytes).with_context(|| format!("componentizing {}", module.display()))?;
    std::fs::write(&output, &component).with_context(|| format!("writing {}", output.display()))?;
    out!(
        "wrote {} ({} KiB)",
        output.display(),
        component.len() / 1024
    );
    Ok(())
}

/// Turns a core module built with wit-bindgen (which embeds the WIT world
/// in a custom section) into a component, the last step of building a
/// plugin in Rust or C. A module that imports WASI 0.1
/// (`wasi_snapshot_preview1`, as wasi-libc's stdio does) gets the reactor
/// adapter of the wasmtime this streamhost embeds, which maps those imports
/// onto WASI 0.2.
pub fn componentize(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    if module.len() < 8 || &module[..4] != b"\0asm" {
        anyhow::bail!("not a WebAssembly file");
    }
    if module[4..8] != [1, 0, 0, 0] {
        anyhow::bail!("already a component; load it as it is");
    }
    let imports_wasi = wasmparser::Parser::new(0)
        .parse_all(module)
        .filter_map(Result::ok)
        .any(|payload| match payload {
            wasmparser::Payload::ImportSection(reader) => reader
                .into_imports()
                .filter_map(Result::ok)
                .any(|i| i.module == "wasi_snapshot_preview1"),
            _ => false,
        });
    let mut encoder = wit_component::ComponentEncoder::default();
    encoder
        .module(module)
        .context("reading the module's component-type section (was it built with wit-bindgen?)")?
        .validate(true);
    if imports_wasi {
        encoder
            .adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
            .context("linking the WASI 0.1 reactor adapter")?;
    }
    encoder.encode().context("encoding the component")
}
