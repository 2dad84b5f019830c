//! The vault's module graph has no cycle: each subsystem uses only the subsystems below it
//! (see the README's architecture section). A module that starts to use one above it fails
//! here, with the cycle it closes, before it lands.
//!
//! Read from the source, not the compiler: a `crate::<module>` path in code (comments and doc
//! links are not uses) is an edge from the file's top-level module to that module.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading vault/src") {
        let path = entry.expect("reading vault/src").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line, without its comment (a `//` inside a string is rare enough here).
fn code(line: &str) -> &str {
    match line.find("//") {
        Some(at) => &line[..at],
        None => line,
    }
}

/// The top-level modules the code of `text` names as `crate::<module>`.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let mut rest = code(line);
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            // `crate::{a, b}` names several.
            if name.is_empty() && rest.starts_with('{') {
                let list = &rest[1..rest.find('}').unwrap_or(rest.len())];
                for item in list.split(',') {
                    let item: String = item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                    if !item.is_empty() {
                        found.insert(item);
                    }
                }
            } else if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The vault's module graph: each top-level module and the modules it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let module_of = |path: &Path| -> String {
        let relative = path.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a path").as_os_str().to_string_lossy().to_string();
        first.trim_end_matches(".rs").to_string()
    };
    let modules: BTreeSet<String> = files.iter().map(|p| module_of(p)).filter(|m| m != "lib" && m != "main").collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for file in &files {
        let from = module_of(file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("reading a source file");
        for to in uses(&text) {
            // Items re-exported at the crate root (`crate::Vault`) belong to their module;
            // names that are no module (`crate::VaultConfig`) are looked up below.
            if to != from && modules.contains(&to) {
                graph.get_mut(&from).expect("listed").insert(to);
            }
        }
    }
    graph
}

/// A cycle of `graph`, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let at = path.iter().position(|n| n == node).expect("on the path");
                let mut found = path[at..].to_vec();
                found.push(node.to_string());
                return Some(found);
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, marks, path) {
                return Some(found);
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(found) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(found);
        }
    }
    None
}

#[test]
fn the_vault_module_graph_has_no_cycle() {
    let graph = graph();
    for (module, uses) in &graph {
        eprintln!("{module} -> {}", uses.iter().cloned().collect::<Vec<_>>().join(", "));
    }
    if let Some(cycle) = cycle(&graph) {
        panic!("the vault's modules use each other in a circle: {}", cycle.join(" -> "));
    }
    // The subsystems sit where the architecture says: none of them uses the server.
    for module in ["context", "records", "audit", "repair", "pointer", "inbox", "ledger", "payments"] {
        assert!(graph.contains_key(module), "module {module} is gone: update this test and the README");
        assert!(!graph[module].contains("server"), "{module} uses the server module");
    }
}

#[test]
fn only_the_server_module_implements_the_vault() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).expect("reading a source file");
        if file.file_name().is_some_and(|n| n == "server.rs") {
            continue;
        }
        for line in text.lines().map(code) {
            let rest = line.trim_start().strip_prefix("impl Vault").unwrap_or("x");
            let names_vault = !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
            assert!(!names_vault, "{} has `impl Vault`: a subsystem owns its state", file.display());
        }
    }
}

#[test]
fn the_checker_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), ["b".to_string()].into());
    graph.insert("b".into(), ["c".to_string()].into());
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
    graph.get_mut("c").unwrap().insert("a".into());
    assert_eq!(cycle(&graph), Some(vec!["a".into(), "b".into(), "c".into(), "a".into()]));
    assert_eq!(uses("use crate::{audit::Auditor, repair};\n// crate::server\nlet x = crate::ledger::f(); // crate::inbox"), ["audit", "ledger", "repair"].map(String::from).into());
}
