//! README.md's Configuration table and `ferry serve --help` name the same flags.
//!
//! The table is where people look up what `ferry serve` accepts; `--help` is what the binary
//! actually accepts. This test fails when a flag is added to the server without a row in the
//! table, or when the table keeps a flag the server no longer has, and names every difference.
//! `--help` and `--config` (the file the table's settings may come from) are explained in the
//! prose above the table and need no row.

use std::collections::BTreeSet;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ferry");

/// Flags `--help` prints that the table need not name.
const NOT_IN_TABLE: [&str; 2] = ["--help", "--config"];

/// Every long flag (`--name`) in `text`: two dashes, then a lowercase letter or digit, then
/// lowercase letters, digits and dashes. A run of dashes (a table separator) is no flag.
fn long_flags(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
    let mut out = BTreeSet::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--").map(|p| p + i) {
        let start = at + 2;
        let preceded_by_dash = at > 0 && bytes[at - 1] == b'-';
        let mut end = start;
        while end < bytes.len() && is_name(bytes[end]) {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('-');
        let first_ok = name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !preceded_by_dash && first_ok {
            out.insert(format!("--{name}"));
        }
        i = end.max(start);
    }
    out
}

/// The long flags `ferry serve --help` defines: read from its option lines (those starting
/// with `-`), up to where a description on the same line would begin, so that a flag a
/// description merely mentions is not mistaken for one of the command's own.
fn help_flags() -> BTreeSet<String> {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("running {BIN} serve --help: {e}"));
    let text = String::from_utf8(out.stdout).expect("--help prints UTF-8");
    assert!(
        out.status.success(),
        "`ferry serve --help` failed ({}): {}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| long_flags(line.split("  ").next().unwrap_or(line)))
        .collect()
}

/// The flags named in the first column of README.md's `## Configuration` table.
fn readme_flags() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let section = readme
        .split_once("\n## Configuration\n")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{path} has no \"## Configuration\" section"));
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(long_flags)
        .collect()
}

#[test]
fn readme_configuration_table_names_exactly_the_serve_flags() {
    let help = help_flags();
    assert!(
        help.contains("--listen") && help.contains("--data-dir"),
        "could not read the flags of `ferry serve --help`; found {help:?}"
    );
    let table = readme_flags();
    assert!(
        !table.is_empty(),
        "README.md's Configuration table names no flags"
    );

    let missing: Vec<&String> = help
        .iter()
        .filter(|f| !NOT_IN_TABLE.contains(&f.as_str()) && !table.contains(*f))
        .collect();
    let unknown: Vec<&String> = table.difference(&help).collect();
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!(
            "`ferry serve --help` prints flags README.md's Configuration table does not name: {missing:?}"
        ));
    }
    if !unknown.is_empty() {
        problems.push(format!(
            "README.md's Configuration table names flags `ferry serve --help` does not print: {unknown:?}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn long_flags_are_read_as_written() {
    let found = long_flags("| `--a-b`, `--c1` | x | `--public-url` --- |---|--|-- --Z ---x");
    let want: BTreeSet<String> = ["--a-b", "--c1", "--public-url"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}
