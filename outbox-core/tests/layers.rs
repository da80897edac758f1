//! The modules of `outbox-core` stand in layers: each imports only from the layers below it, so
//! a store author reads the model, the store contract and the kit without the runtime, and the
//! runtime can change without touching what a backend depends on.
//!
//! | module | may import from |
//! |---|---|
//! | `model` | nothing else in the crate |
//! | `store` | `model` |
//! | `kit` | `model`, `store` |
//! | `handlers` | `model`, `store`, `kit` |
//! | `ops` | `model`, `store` |
//! | `runtime` | everything above |
//!
//! Doc comments may link anywhere; code may not.

use std::path::{Path, PathBuf};

const LAYERS: &[(&str, &[&str])] = &[
    ("model", &["store", "kit", "handlers", "runtime", "ops"]),
    ("store", &["kit", "handlers", "runtime", "ops"]),
    ("kit", &["handlers", "runtime", "ops"]),
    ("handlers", &["runtime", "ops"]),
    ("ops", &["kit", "handlers", "runtime"]),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines of `file` that are code: comments and doc comments left out.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).expect("read a source file");
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(n, line)| (n + 1, line.to_owned()))
        .collect()
}

#[test]
fn every_module_imports_only_from_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for (module, forbidden) in LAYERS {
        let mut files = Vec::new();
        rust_files(&src.join(module), &mut files);
        assert!(!files.is_empty(), "module {module} has no files");
        for file in &files {
            for (n, line) in code_lines(file) {
                for other in *forbidden {
                    for form in [format!("crate::{other}::"), format!("crate::{other};")] {
                        if line.contains(&form) {
                            wrong.push(format!(
                                "{}:{n}: `{module}` imports `{other}`: {}",
                                file.strip_prefix(&src).unwrap_or(file).display(),
                                line.trim()
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_in_code_and_not_in_a_doc_comment() {
    let dir = std::env::temp_dir().join(format!("outbox-layers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("probe.rs");
    std::fs::write(
        &file,
        "/// [`Worker`](crate::runtime::Worker)\nuse crate::runtime::Worker;\n",
    )
    .expect("write probe");
    let code = code_lines(&file);
    assert_eq!(code.len(), 1);
    assert!(code[0].1.contains("crate::runtime::"));
    let _ = std::fs::remove_dir_all(&dir);
}
