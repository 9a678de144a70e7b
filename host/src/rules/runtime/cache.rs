//! Compiled components kept on disk, so that loading a component seen
//! before (after a restart, or by another streamhost on the same machine)
//! costs a file map instead of a compilation: Python and JavaScript
//! components compile for tens of seconds.
//!
//! One file per component and engine, `<sha256 of the component>-<engine
//! hash>.cwasm`, holding what `Component::serialize` wrote. The engine hash
//! covers wasmtime's version and every setting that changes compiled code
//! (`Engine::precompile_compatibility_hash`), so two streamhost builds
//! sharing a folder never read each other's files. Files are written to a
//! temporary name and renamed, so a reader never sees half a file.
//!
//! Trust: wasmtime runs what such a file holds as native code, without
//! checking it. The folder is created readable and writable by its owner
//! only (0700), and must stay so; point `--compile-cache` only at a folder
//! no one else can write.
//!
//! Size: after each write, the least recently used files beyond `max_bytes`
//! are removed (a hit refreshes a file's modification time).
//!
//! Why not wasmtime's own cache (`Config::cache`, the `cache` feature,
//! which is therefore not enabled): as of wasmtime 48 it is transparent
//! inside `Component::new`, and so
//! - cannot tell a load that hit it from one that compiled (it only counts
//!   hits and misses over all loads), while each plugin's load says where
//!   its code came from (`CompiledFrom::DiskCache`), and tests check it;
//! - creates its folder with `create_dir_all`, with the umask's mode, and
//!   never checks who may write there, though what it reads runs unchecked;
//! - stores the code zstd-compressed and reads a hit whole into memory to
//!   decompress it, where a file here is mapped as it is;
//! - trims by size and age too, but from a background thread per cache, at
//!   most once per `cleanup-interval` (an hour by default) and with `.stats`
//!   files beside each entry, where here the trim is done after each write,
//!   in the thread that wrote.

use std::hash::Hasher;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The on-disk cache of compiled components.
pub struct DiskCache {
    dir: PathBuf,
    /// Hex digest of the engine's compatibility hash.
    engine: String,
    max_bytes: u64,
}

/// A `Hasher` that feeds SHA-256, for a digest that is stable across Rust
/// versions (std's `DefaultHasher` is not).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is read")
    }
}

impl DiskCache {
    /// Opens (creating it, owner-only) the cache folder `dir` for `engine`.
    pub fn open(dir: &Path, engine: &Engine, max_bytes: u64) -> std::io::Result<DiskCache> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode();
        if mode & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} is writable by others (mode {:o}); compiled code read from it would run \
                 unchecked. `chmod go-w` it or choose another folder",
                dir.display(),
                mode & 0o777
            )));
        }
        let mut hasher = ShaHasher(Sha256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
        let engine = super::hex(&hasher.0.finalize()[..8]);
        Ok(DiskCache {
            dir: dir.to_path_buf(),
            engine,
            max_bytes,
        })
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.engine))
    }

    /// The component compiled from the file whose SHA-256 is `sha256`, if
    /// it is here and readable by this engine.
    pub fn get(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `put` below, from
        // `Component::serialize` by an engine with the same compatibility
        // hash, into a folder only this user can write (checked at open).
        // wasmtime checks the header and the engine settings again.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(component) => {
                // Refresh the file's place in the LRU order.
                if let Ok(f) = std::fs::File::options().append(true).open(&path) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Some(component)
            }
            Err(error) => {
                tracing::warn!(file = %path.display(), error = %format!("{error:#}"), "Unreadable compiled component in the cache; compiling again.");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `component`, compiled from the file whose SHA-256 is
    /// `sha256`. Failures are logged, never fatal: the cache only saves time.
    pub fn put(&self, sha256: &str, component: &Component) {
        if let Err(error) = self.write(sha256, component) {
            tracing::warn!(dir = %self.dir.display(), %error, "Could not store a compiled component; the next load compiles it again.");
        }
        self.trim();
    }

    fn write(&self, sha256: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        let path = self.path(sha256);
        let tmp = self
            .dir
            .join(format!(".{sha256}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, &bytes)?;
        std::fs::rename(&tmp, &path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        Ok(())
    }

    /// Removes the least recently used files beyond `max_bytes`.
    fn trim(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(std::time::SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                Some((m.modified().ok()?, m.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        // The newest file (the one just written) stays, however large.
        files.pop();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// The default cache folder: `$XDG_CACHE_HOME/streamhost/compiled`, else
/// `$HOME/.cache/streamhost/compiled`.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("streamhost/compiled"))
}
