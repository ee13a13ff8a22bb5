//! Error codes are defined once, in `ferry_core::codes`: the table of docs/PROTOCOL.md §7
//! lists exactly those, and no source file spells one as a string literal.

use ferry_core::codes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Names that occur more than once in `names`.
fn duplicates<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeMap::<&str, usize>::new();
    for n in names {
        *seen.entry(n).or_default() += 1;
    }
    seen.into_iter()
        .filter(|(_, c)| *c > 1)
        .map(|(n, _)| n)
        .collect()
}

/// The codes of the §7 table, in order, one per row (`| \`code\` | status | when |`).
fn protocol_codes() -> Vec<String> {
    let path = workspace().join("docs/PROTOCOL.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut in_section = false;
    let mut found_section = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with("## ") {
            in_section = line.starts_with("## 7.");
            found_section |= in_section;
            continue;
        }
        let Some(rest) = in_section.then(|| line.strip_prefix("| `")).flatten() else {
            continue;
        };
        let code = rest
            .split_once('`')
            .unwrap_or_else(|| panic!("a §7 row without a closing backtick: {line}"))
            .0;
        out.push(code.to_owned());
    }
    assert!(found_section, "docs/PROTOCOL.md has no section \"## 7.\"");
    assert!(
        !out.is_empty(),
        "the §7 table of docs/PROTOCOL.md has no rows"
    );
    out
}

#[test]
fn protocol_table_lists_every_code_once() {
    let doc = protocol_codes();
    let mut problems = Vec::new();
    let doc_dups = duplicates(doc.iter().map(String::as_str));
    if !doc_dups.is_empty() {
        problems.push(format!("more than one §7 row for: {doc_dups:?}"));
    }
    let all_dups = duplicates(codes::ALL.iter().copied());
    if !all_dups.is_empty() {
        problems.push(format!("codes::ALL lists more than once: {all_dups:?}"));
    }
    let doc: BTreeSet<&str> = doc.iter().map(String::as_str).collect();
    let all: BTreeSet<&str> = codes::ALL.iter().copied().collect();
    let missing: Vec<_> = all.difference(&doc).collect();
    if !missing.is_empty() {
        problems.push(format!(
            "in codes::ALL but without a row in docs/PROTOCOL.md §7: {missing:?}"
        ));
    }
    let extra: Vec<_> = doc.difference(&all).collect();
    if !extra.is_empty() {
        problems.push(format!(
            "in docs/PROTOCOL.md §7 but not in codes::ALL: {extra:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `pub const X: &str = "x";` of codes.rs is in `ALL`, and is named after its value.
#[test]
fn every_constant_is_in_all() {
    let path = workspace().join("crates/core/src/codes.rs");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut problems = Vec::new();
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(rest) = line.strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = \"") else {
            continue;
        };
        let value = value.trim_end_matches("\";");
        count += 1;
        if name != value.to_ascii_uppercase() {
            problems.push(format!(
                "codes.rs:{}: {name} is not named after {value:?}",
                i + 1
            ));
        }
        if !codes::ALL.contains(&value) {
            problems.push(format!("codes.rs:{}: {name} is missing from ALL", i + 1));
        }
    }
    if count != codes::ALL.len() {
        problems.push(format!(
            "codes.rs defines {count} codes but ALL has {} entries",
            codes::ALL.len()
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A string literal of a Rust source: its line and its text between the quotes (escapes
/// left as written; codes have none).
struct Literal {
    line: usize,
    text: String,
}

/// The string literals of `src` (plain, byte, C and raw), skipping comments and chars.
fn string_literals(src: &str) -> Vec<Literal> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let is_ident = |ch: char| ch == '_' || ch.is_alphanumeric();
    while i < c.len() {
        match c[i] {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                let mut depth = 0;
                while i < c.len() {
                    if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(c[i] == '\n');
                        i += 1;
                    }
                }
            }
            '"' => {
                let start = line;
                let mut text = String::new();
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() {
                        text.push(c[i]);
                        i += 1;
                    }
                    line += usize::from(c[i] == '\n');
                    text.push(c[i]);
                    i += 1;
                }
                i += 1;
                out.push(Literal { line: start, text });
            }
            '\'' => {
                // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
                if c.get(i + 1) == Some(&'\\') {
                    i += 3; // past the quote, the backslash and the escaped char
                    while i < c.len() && c[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if c.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            // A word; `r"…"`, `br#"…"#` and `cr"…"` start raw strings (b"…", c"…" and
            // b'…' are read by the arms above on the next turn).
            ch if is_ident(ch) => {
                let start = i;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
                let word: String = c[start..i].iter().collect();
                if matches!(word.as_str(), "r" | "br" | "cr") {
                    let mut hashes = 0;
                    while c.get(i + hashes) == Some(&'#') {
                        hashes += 1;
                    }
                    if c.get(i + hashes) != Some(&'"') {
                        continue; // a raw identifier (r#type) or a plain `r`
                    }
                    i += hashes + 1;
                    let start_line = line;
                    let mut text = String::new();
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
                            i += hashes + 1;
                            break;
                        }
                        line += usize::from(c[i] == '\n');
                        text.push(c[i]);
                        i += 1;
                    }
                    out.push(Literal {
                        line: start_line,
                        text,
                    });
                }
            }
            _ => i += 1,
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_lexer_finds_literals() {
    let src = "// \"not_found\"\n/* \"a\" /* \"b\" */ */ let x = 'a'; fn f<'a>() {}\n\
               let s = \"one\\\"two\"; let r = r#\"raw \"q\" \"#; let b = b'\"'; r#type;\n\
               let c = '\\''; let d = \"x\";";
    let found: Vec<(usize, String)> = string_literals(src)
        .into_iter()
        .map(|l| (l.line, l.text))
        .collect();
    assert_eq!(
        found,
        [
            (3, "one\\\"two".to_owned()),
            (3, "raw \"q\" ".to_owned()),
            (4, "x".to_owned())
        ]
    );
}

/// No source file but codes.rs spells a code as a string literal (or quotes one inside a
/// literal, as a hand-written JSON body would): use `ferry_core::codes::…`.
#[test]
fn no_code_literal_outside_codes_rs() {
    let root = workspace();
    let defining = root.join("crates/core/src/codes.rs");
    let mut files = Vec::new();
    rust_files(&root.join("crates/server/src"), &mut files);
    rust_files(&root.join("crates/core/src"), &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files.iter().filter(|p| **p != defining) {
        let src = std::fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for lit in string_literals(&src) {
            let hit = codes::ALL
                .iter()
                .find(|c| lit.text == **c || lit.text.contains(&format!("\"{c}\"")));
            if let Some(code) = hit {
                let shown = path.strip_prefix(&root).unwrap_or(path);
                found.push(format!(
                    "{}:{}: {code:?} (use ferry_core::codes::{})",
                    shown.display(),
                    lit.line,
                    code.to_ascii_uppercase()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "error codes spelt as literals outside crates/core/src/codes.rs:\n{}",
        found.join("\n")
    );
}
