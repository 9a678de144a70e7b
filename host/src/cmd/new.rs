//! `streamhost new`: a ready-to-build plugin project, from the templates
//! under `host/templates/` (compiled into the binary): the rule, its build
//! script, the WIT contract with the packages it imports, and a sample
//! input for `streamhost run-local`. Every template reads a value of its
//! configuration with a default; the trend and anomaly ones declare a
//! window of their own.

use std::path::Path;

use anyhow::{Context, bail};

use crate::rules::runtime::Kind;

/// A language a plugin can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, built with wit-bindgen and `streamhost componentize`.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
    /// C, built with wit-bindgen's C bindings and `streamhost componentize`.
    C,
}

impl Lang {
    fn title(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
            Lang::C => "C",
        }
    }
}

/// The files of a project: path, contents, executable.
fn files(lang: Lang, kind: Kind) -> Vec<(&'static str, &'static str, bool)> {
    macro_rules! t {
        ($path:literal) => {
            include_str!(concat!("../../templates/", $path))
        };
    }
    let mut files = vec![
        (
            "wit/streamhost.wit",
            include_str!("../../../wit/streamhost.wit"),
            false,
        ),
        // The packages the contract imports (`wasi:config/store`), where
        // every binding generator looks for them.
        (
            "wit/deps/config/store.wit",
            include_str!("../../../wit/deps/config/store.wit"),
            false,
        ),
        (
            "wit/deps/config/world.wit",
            include_str!("../../../wit/deps/config/world.wit"),
            false,
        ),
        (
            "sample.jsonl",
            include_str!("../../../examples/sample/readings.jsonl"),
            false,
        ),
        ("README.md", t!("common/README.md"), false),
    ];
    let by_kind = |a, t, n| match kind {
        Kind::Anomaly => a,
        Kind::Trend => t,
        Kind::Transform => n,
    };
    match lang {
        Lang::Rust => files.extend([
            ("Cargo.toml", t!("rust/Cargo.toml"), false),
            ("build.sh", t!("rust/build.sh"), true),
            (
                "src/lib.rs",
                by_kind(
                    t!("rust/lib.anomaly.rs"),
                    t!("rust/lib.trend.rs"),
                    t!("rust/lib.transform.rs"),
                ),
                false,
            ),
        ]),
        Lang::Python => files.extend([
            ("build.sh", t!("python/build.sh"), true),
            (
                "app.py",
                by_kind(
                    t!("python/app.anomaly.py"),
                    t!("python/app.trend.py"),
                    t!("python/app.transform.py"),
                ),
                false,
            ),
        ]),
        Lang::Js => files.extend([
            ("package.json", t!("js/package.json"), false),
            ("build.mjs", t!("js/build.mjs"), false),
            ("build.sh", t!("js/build.sh"), true),
            (
                "rule.js",
                by_kind(
                    t!("js/rule.anomaly.js"),
                    t!("js/rule.trend.js"),
                    t!("js/rule.transform.js"),
                ),
                false,
            ),
        ]),
        Lang::C => files.extend([
            ("build.sh", t!("c/build.sh"), true),
            (
                "rule.c",
                by_kind(
                    t!("c/rule.anomaly.c"),
                    t!("c/rule.trend.c"),
                    t!("c/rule.transform.c"),
                ),
                false,
            ),
        ]),
    }
    files
}

/// Writes a new plugin project called `name` into `dir` (which must not
/// exist, or be empty); returns the files written.
pub fn new_project(name: &str, kind: Kind, lang: Lang, dir: &Path) -> anyhow::Result<Vec<String>> {
    let usable = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !usable {
        bail!(
            "{name:?}: a plugin name is lowercase letters, digits and `-`, starting with a letter"
        );
    }
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    // The configuration value each kind's template reads, and an example
    // setting of it, for the README.
    let (key, example) = match kind {
        Kind::Anomaly => ("limit", "35"),
        Kind::Trend => ("stable", "1"),
        Kind::Transform => ("digits", "1"),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{world}}", kind.as_str())
            .replace("{{lang}}", lang.title())
            .replace("{{key}}", key)
            .replace("{{example}}", example)
    };
    let mut written = Vec::new();
    for (path, text, executable) in files(lang, kind) {
        let dest = dir.join(path);
        std::fs::create_dir_all(dest.parent().unwrap())
            .with_context(|| format!("creating {}", dest.parent().unwrap().display()))?;
        std::fs::write(&dest, fill(text)).with_context(|| format!("writing {}", dest.display()))?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(path.to_string());
    }
    Ok(written)
}

/// `streamhost new NAME --lang LANG`.
#[derive(clap::Args)]
pub struct Args {
    /// The plugin's name (lowercase letters, digits and `-`).
    pub name: String,
    /// What the rule does.
    #[arg(long, value_enum, default_value = "anomaly")]
    pub kind: Kind,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to write it. [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// Runs `streamhost new`.
pub fn main(args: Args) -> anyhow::Result<()> {
    let Args {
        name,
        kind,
        lang,
        dir,
    } = args;
    let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(&name));
    let files = new_project(&name, kind, lang, &dir)?;
    out!(
        "wrote {} files into {}: {}",
        files.len(),
        dir.display(),
        files.join(", ")
    );
    out!(
        "next:\n  cd {}\n  ./build.sh\n  streamhost run-local --plugin {name}.wasm --input sample.jsonl",
        dir.display()
    );
    Ok(())
}
