//! The shape of `host/src`, checked from the code: the floors `lib.rs`
//! lists hold (a module imports only from its own floor or below, except
//! `cmd`, which nothing imports), every module is on a floor, and no
//! production file outgrows what one reader can hold (`window.rs` apart).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("host/src")
}

/// `lib.rs`'s `pub mod` lines, floor by floor: a blank line between two
/// of them starts the next floor.
fn floors() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let mut floors = BTreeMap::new();
    let mut floor = 0;
    let mut in_mods = false;
    for line in lib.lines() {
        if let Some(name) = line.strip_prefix("pub mod ") {
            in_mods = true;
            floors.insert(name.trim_end_matches(';').to_string(), floor);
        } else if in_mods && line.trim().is_empty() {
            floor += 1;
        }
    }
    floors
}

/// Every `.rs` file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The top-level module a file belongs to (`None`: `lib.rs`, `main.rs`).
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The top-level modules a file's code names as `crate::NAME`, outside
/// comments.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_floor_above_its_own() {
    let floors = floors();
    assert!(floors.len() >= 10, "lib.rs lists {floors:?}");
    let mut wrong = Vec::new();
    for file in files(&src()) {
        let Some(module) = module_of(&file) else {
            continue;
        };
        let floor = *floors
            .get(&module)
            .unwrap_or_else(|| panic!("{} is in no floor of lib.rs", file.display()));
        let text = std::fs::read_to_string(&file).unwrap();
        for import in imports(&text) {
            if import == "cmd" && module != "cmd" {
                wrong.push(format!("{}: imports cmd", file.display()));
            }
            let Some(&theirs) = floors.get(&import) else {
                continue;
            };
            if module != "cmd" && theirs > floor {
                wrong.push(format!(
                    "{} (floor {floor}) imports {import} (floor {theirs})",
                    file.display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_floor_check_sees_imports() {
    let text = "use crate::pipeline::Pipeline; // crate::cmd\nlet x = crate::window::X;";
    assert_eq!(imports(text), ["pipeline", "window"]);
}

#[test]
fn no_production_file_is_over_700_lines() {
    let mut long = Vec::new();
    for file in files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests are not production code.
        let code = text.split("\n#[cfg(test)]").next().unwrap();
        let lines = code.lines().count();
        if lines > 700 && !file.ends_with("window.rs") {
            long.push(format!("{}: {lines} lines", file.display()));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}
