//! The layering the README's "Architecture" section draws, enforced: every module under `src/`
//! may import only modules below it. A new upward import (say `store` reaching for `enrich`)
//! fails here, naming the file and line, so the architecture stays true because a test says so.

use std::path::{Path, PathBuf};

/// Top-level modules from the bottom up. A module may import the ones before it, never one after
/// it; this order is the README's layer table read left to right, top to bottom. `cli` is the
/// binary's shell (src/cli/, src/main.rs), which imports the library as `signaldesk::`.
const LAYERS: &[&[&str]] = &[
    // Foundation: leaves, typed configuration, content items, the chunker.
    &["fingerprint", "observe", "config", "content", "chunk"],
    // Vectors and where they live.
    &["embed", "store"],
    // The one search path; reading files and writing the store.
    &["search", "ingest"],
    // LLM clients and prompt templates.
    &["llm", "prompts"],
    // Tags and summaries.
    &["enrich"],
    // Claims verified over the archive (the verifier trains like the tagging head).
    &["answer"],
    // Recommendations.
    &["rank"],
    // Work and events across processes (NATS JetStream): the workers run the layers above.
    &["stream"],
    // Offline evaluation, then benchmarks (which measure everything below them).
    &["eval", "bench"],
    // The shells.
    &["api", "cli"],
];

/// Items the crate root re-exports, and the module each belongs to.
const ROOT_REEXPORTS: &[(&str, &str)] = &[("Config", "config"), ("Embedder", "embed")];

fn order() -> Vec<&'static str> {
    LAYERS.iter().flat_map(|l| l.iter().copied()).collect()
}

fn rank_of(module: &str) -> Option<usize> {
    order().iter().position(|m| *m == module)
}

/// One import that points up the layers.
#[derive(Debug, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    from: String,
    to: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: `{}` imports `{}`, which sits above it in the layers",
            self.file, self.line, self.from, self.to
        )
    }
}

/// The source without its line comments (line numbers kept): a doc comment may link to any
/// module. A `//` inside a string (a URL) cuts its line short too, which can only hide an import
/// written after a URL on the same line.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|line| line.find("//").map_or(line, |at| &line[..at]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every top-level module a source file names through `prefix` (`crate::` in the library,
/// `signaldesk::` in the binary), with the line it is named on: `prefix::a::B`, and each
/// branch of `prefix::{a::B, b::{C, D}}`.
fn imported_modules(src: &str, prefix: &str) -> Vec<(usize, String)> {
    let code = strip_comments(src);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        let preceded_by_ident = code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded_by_ident {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // A branch `group[from..to]`: its first name, on the line where that name starts.
            let branch = |from: usize, to: usize| {
                let text = &group[from..to];
                let lead = text.len() - text.trim_start().len();
                let at_name = at + prefix.len() + 1 + from + lead;
                (line_of(at_name), ident(text.trim_start()))
            };
            // Top-level branches of the group: split on commas at brace depth 0.
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(branch(start, i));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(branch(start, i));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push((line_of(at), ident(rest)));
        }
    }
    found
        .into_iter()
        .filter(|(_, name)| !name.is_empty())
        .map(|(line, name)| {
            let module = ROOT_REEXPORTS
                .iter()
                .find(|(item, _)| *item == name)
                .map_or(name, |(_, m)| m.to_string());
            (line, module)
        })
        .collect()
}

/// The layering violations of one file of module `from` (its path relative to src/ in `file`).
fn check_source(file: &str, from: &str, src: &str) -> Vec<Violation> {
    let prefix = if from == "cli" {
        "signaldesk::"
    } else {
        "crate::"
    };
    let from_rank = rank_of(from).unwrap_or_else(|| {
        panic!("{file}: module `{from}` is not in the layer table: add it to LAYERS and the README")
    });
    imported_modules(src, prefix)
        .into_iter()
        .filter(|(_, to)| to != from)
        .filter_map(|(line, to)| {
            let to_rank = rank_of(&to)?;
            (to_rank > from_rank).then(|| Violation {
                file: file.to_string(),
                line,
                from: from.to_string(),
                to,
            })
        })
        .collect()
}

/// The crate's src/, read at run time (a shared build cache may hold a binary built elsewhere).
fn src_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file under src/ belongs to (`None` for the crate root).
fn module_of(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" => None,
        "main.rs" => Some("cli".into()),
        _ => Some(first.trim_end_matches(".rs").to_string()),
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} files under src/",
        files.len()
    );
    let mut violations = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for path in &files {
        let relative = path.strip_prefix(&src).expect("under src/");
        let Some(module) = module_of(relative) else {
            continue;
        };
        modules.insert(module.clone());
        let text = std::fs::read_to_string(path).expect("a readable source file");
        violations.extend(check_source(
            &relative.display().to_string(),
            &module,
            &text,
        ));
    }
    let listed: std::collections::BTreeSet<String> =
        order().iter().map(|m| m.to_string()).collect();
    assert_eq!(
        modules, listed,
        "the layer table and the modules under src/ differ"
    );
    let report: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        report.is_empty(),
        "imports pointing up the layers:\n{}",
        report.join("\n")
    );
}

/// Longest a function in src/ may be, in lines from its `fn` to its closing brace.
const MAX_FUNCTION_LINES: usize = 120;

/// Each function of a source file that has a body: (name, first line, lines long). A function
/// ends at the first line holding only a closing brace at its own indentation (rustfmt's layout).
fn function_lengths(src: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut rest = trimmed;
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "const ",
            "async ",
            "unsafe ",
        ] {
            rest = rest.strip_prefix(prefix).unwrap_or(rest);
        }
        let Some(after) = rest.strip_prefix("fn ") else {
            continue;
        };
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // The signature ends at a line ending in `{` (a body) or `;` (a declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let l = lines[j].trim_end();
            l.ends_with('{') || l.ends_with(';') || (l.contains('{') && l.ends_with('}'))
        }) else {
            continue;
        };
        if !lines[open].trim_end().ends_with('{') {
            continue;
        }
        let closing = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == closing) {
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

#[test]
fn no_function_in_src_is_longer_than_the_limit() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("a readable source file");
        for (name, line, length) in function_lengths(&text) {
            if length > MAX_FUNCTION_LINES {
                let file = path.strip_prefix(&src).expect("under src/").display();
                long.push(format!("{file}:{line}: fn {name} is {length} lines"));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FUNCTION_LINES} lines (split them):\n{}",
        long.join("\n")
    );
}

#[test]
fn function_lengths_are_measured_from_fn_to_its_closing_brace() {
    let src = "fn one() -> u8 { 1 }\n\npub async fn two(\n    a: u8,\n) -> u8 {\n    a\n}\n\nimpl X {\n    fn three(&self) {\n        if true {\n        }\n    }\n    fn decl(&self);\n}\n";
    assert_eq!(
        function_lengths(src),
        vec![("two".to_string(), 3, 5), ("three".to_string(), 10, 4)]
    );
}

#[test]
fn a_planted_upward_import_is_named_with_its_file_and_line() {
    let planted = "//! A store module.\nuse crate::config::StoreConfig;\n\nfn f() {\n    let _ = crate::enrich::TaggerKind::Knn;\n}\n";
    assert_eq!(
        check_source("store/planted.rs", "store", planted),
        vec![Violation {
            file: "store/planted.rs".into(),
            line: 5,
            from: "store".into(),
            to: "enrich".into(),
        }]
    );
}

#[test]
fn grouped_imports_and_root_reexports_are_seen() {
    let src = "use crate::{\n    content::Item,\n    rank::{Recommender, RankerKind},\n};\nfn g(_: crate::Embedder) {}\n";
    let found = imported_modules(src, "crate::");
    assert_eq!(
        found,
        vec![
            (2, "content".to_string()),
            (3, "rank".to_string()),
            (5, "embed".to_string())
        ]
    );
    let v = check_source("chunk.rs", "chunk", src);
    let targets: Vec<&str> = v.iter().map(|v| v.to.as_str()).collect();
    assert_eq!(targets, ["rank", "embed"]);
}

#[test]
fn comments_do_not_count_as_imports() {
    let src = "/// Unlike [`crate::rank`], this is a leaf.\n// crate::api is above us\nuse crate::eval::x; // crate::api\n";
    let found = imported_modules(src, "crate::");
    assert_eq!(found, vec![(3, "eval".to_string())]);
}
