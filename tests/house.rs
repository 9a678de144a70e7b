//! The shape of `host/src`, checked from the code: the floors `lib.rs`
//! lists hold (a module imports only from its own floor or below, except
//! `cmd`, which nothing imports), every module is on a floor, and no
//! production file or function outgrows what one reader can hold: 700
//! lines a file (`window.rs` apart), 100 a function.

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

/// `code` with string and character literals and comments blanked out
/// (newlines kept), so that braces count as code only.
fn code_only(code: &str) -> String {
    let chars: Vec<char> = code.chars().collect();
    let mut out = String::with_capacity(code.len());
    let mut i = 0;
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                blank(&mut out, chars[i]);
                i += 1;
            }
            i += 2;
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !is_ident(chars.get(i.wrapping_sub(1)))
        {
            // A raw string: r"..." or r#"..."#.
            let hashes = chars[i + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            i += 2 + hashes;
            loop {
                if i >= chars.len() {
                    break;
                }
                if chars[i] == '"'
                    && chars[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    i += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                blank(&mut out, chars[i.min(chars.len() - 1)]);
                i += 1;
            }
            i += 1;
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{7b}'), not a lifetime ('a).
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&q| q == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => i = end + 1,
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: Option<&char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || *c == '_')
}

/// Each function of `code` (as `code_only` leaves it) longer than `limit`
/// lines: (line where it starts, name, lines).
fn long_functions(code: &str, limit: usize) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ") else {
            continue;
        };
        if at > 0 && is_ident(line[..at].chars().last().as_ref()) {
            continue;
        }
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (end, body) in lines.iter().enumerate().skip(start) {
            for c in body.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if !opened && body.trim_end().ends_with(';') {
                break;
            }
            if opened && depth <= 0 {
                let length = end - start + 1;
                if length > limit {
                    out.push((start + 1, name.clone(), length));
                }
                break;
            }
        }
    }
    out
}

#[test]
fn the_function_check_counts_code_braces_only() {
    let code = code_only(
        "fn a() {\n    let s = \"{{\";\n    let c = '{';\n    // {\n    let r = r#\"}\"#;\n    x::<'a>();\n}\n",
    );
    assert_eq!(long_functions(&code, 6), vec![(1, "a".to_string(), 7)]);
    assert!(long_functions(&code, 7).is_empty());
}

#[test]
fn no_production_function_is_over_100_lines() {
    let mut long = Vec::new();
    for file in files(&src()) {
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("\n#[cfg(test)]").next().unwrap();
        for (line, name, length) in long_functions(&code_only(code), 100) {
            long.push(format!(
                "{}:{line}: {name} is {length} lines",
                file.display()
            ));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}
