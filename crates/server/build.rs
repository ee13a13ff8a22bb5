//! Embeds the browser SDK (`web/sdk`) and the upload page (`web/app`) into the binary, so
//! `ferry serve` needs no web build step and no files beside it (SPEC §1). The generated
//! table maps each URL path (`sdk/ferry.js`, `app/index.html`) to `include_bytes!` of the
//! file; cargo re-runs this script when anything under either directory changes.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = manifest.join("../../web");
    let mut files = Vec::new();
    for dir in ["sdk", "app"] {
        let root = web.join(dir);
        println!("cargo:rerun-if-changed={}", root.display());
        collect(&root, dir, &mut files);
    }
    files.sort();
    let mut out = String::from("/// Every embedded asset: URL path under `/`, bytes.\n");
    out.push_str("pub(crate) static ASSETS: &[(&str, &[u8])] = &[\n");
    for (url, path) in &files {
        let _ = writeln!(out, "    ({url:?}, include_bytes!({:?})),", path.display());
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    std::fs::write(dest, out).expect("writing web_assets.rs");
}

/// Files under `dir`, recursively, skipping dot files (editor swap files, `.gitignore`).
fn collect(dir: &Path, url: &str, files: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let url = format!("{url}/{name}");
        if path.is_dir() {
            collect(&path, &url, files);
        } else {
            files.push((url, path.canonicalize().expect("asset path")));
        }
    }
}
