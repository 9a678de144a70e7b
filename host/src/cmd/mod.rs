//! The subcommands, one file each, named like the subcommand: `run` (the
//! main job, `streamhost` without a subcommand), `run_local`, `replay`,
//! `new`, `componentize`, `inspect`, `plugins` and `key`. Each holds its
//! arguments (`Args`) and its `main`; `wiring` builds the pipeline's parts
//! from the settings for those that run rules.
//!
//! Commands sit above the data path: they may import any module, and no
//! module imports them.

/// `println!` that returns the write's error instead of panicking, so that a
/// reader that stops early (`streamhost inspect FILE | head`) ends the
/// command quietly: `main` treats a closed stdout as success.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::cmd::StdoutError)?
    }};
}

pub mod componentize;
pub mod inspect;
pub mod key;
pub mod new;
pub mod plugins;
pub mod replay;
pub mod run;
pub mod run_local;
pub mod wiring;

/// A failed write to stdout, told apart from every other I/O error (a
/// broken pipe to the admin API is a failure, not a reader gone).
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing to stdout: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `error` is only a reader of stdout gone (`| head`): no failure.
pub fn stdout_closed(error: &anyhow::Error) -> bool {
    error.chain().any(|c| {
        c.downcast_ref::<StdoutError>()
            .is_some_and(|out| out.0.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
