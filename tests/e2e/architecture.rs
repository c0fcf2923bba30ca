//! Architecture invariants that a look at the sources can check (ARCHITECTURE.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate's top-level modules and the other top-level modules each one names
/// (`crate::x`, and `super::x` from a top-level module), production code only: test modules
/// and comments are left out.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src).unwrap();
        let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let first = parts[0].trim_end_matches(".rs").to_owned();
        if matches!(first.as_str(), "lib" | "main" | "bin") {
            continue;
        }
        let top_level = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        let text = std::fs::read_to_string(&file).unwrap();
        let production = text.split("#[cfg(test)]").next().unwrap_or("");
        let deps = graph.entry(first.clone()).or_default();
        for line in production.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for prefix in ["crate::", "super::"] {
                if prefix == "super::" && !top_level {
                    continue;
                }
                for (at, _) in line.match_indices(prefix) {
                    let name: String = line[at + prefix.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != first {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| modules.contains(d));
    }
    graph
}

/// A cycle through `start`, if any (depth-first).
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn visit(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        let node = path.last().unwrap().clone();
        for next in &graph[&node] {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if visit(graph, start, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    visit(graph, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut crates: Vec<PathBuf> = vec![root.join("src")];
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            crates.push(src);
        }
    }
    let mut cycles = Vec::new();
    let mut modules = 0;
    for src in &crates {
        let graph = module_graph(src);
        modules += graph.len();
        for module in graph.keys() {
            if let Some(cycle) = cycle_through(&graph, module) {
                cycles.push(format!("{}: {}", src.display(), cycle.join(" -> ")));
            }
        }
    }
    assert!(modules > 40, "only {modules} modules found: is the walk still finding the sources?");
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// The check finds a cycle when there is one (so that it cannot pass by finding nothing).
#[test]
fn the_cycle_check_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(dir.path().join("a.rs"), "use crate::b::B;\n").unwrap();
    std::fs::write(dir.path().join("b.rs"), "// use crate::c::C;\nuse super::a::A;\n").unwrap();
    std::fs::write(dir.path().join("c.rs"), "#[cfg(test)]\nmod tests { use crate::a::A; }\n").unwrap();
    let graph = module_graph(dir.path());
    assert_eq!(cycle_through(&graph, "a"), Some(vec!["a".to_owned(), "b".to_owned()]));
    // Comments and test modules do not count.
    assert_eq!(cycle_through(&graph, "c"), None);
}
