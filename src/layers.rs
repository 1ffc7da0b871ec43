//! The crate's layering, checked over its own sources: which top-level module may name which, and no
//! import cycle among the top-level modules or among the files of one module. A cycle makes a layer
//! impossible to read, test or replace on its own; this keeps one from creeping back in.
//!
//! A reference is any `crate::a` or `crate::a::b` path, and any `super::b` path in a module's file,
//! outside comments and `#[cfg(test)] mod tests` blocks (tests may reach across layers).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level modules each layer may use. `cli` (the commands) may use every other one.
const ALLOWED: &[(&str, &[&str])] = &[
    // The network: no library, no query, no I/O beyond loading weights.
    ("model", &[]),
    // Finding, reading and caching photos: no tensors.
    ("library", &[]),
    // The data sets as groups of photos; a `photoseg synth` set is one of them (`data::format`).
    ("data", &["synth"]),
    ("synth", &[]),
    ("builtin", &["library", "model"]),
    // The installed models and the active one: files in the data directory, checked by loading them.
    ("catalog", &["library", "model", "whole_dir"]),
    // Files of Hugging Face hub repos, through the hub's own cache: knows nothing of models.
    ("hub", &[]),
    // A folder written whole or not at all: plain files.
    ("whole_dir", &[]),
    ("eval", &["data", "library", "model"]),
    ("train", &["data", "library", "model", "synth", "whole_dir"]),
    ("query", &["builtin", "catalog", "data", "library", "model"]),
    // The daemon: D-Bus around `query`, no tensor maths of its own.
    ("service", &["library", "query"]),
];

/// `(file, module path)` of every `.rs` file under `dir`, e.g. `src/model/neck.rs` -> `["model", "neck"]`.
fn sources(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(dir).unwrap().with_extension("");
                let mut module: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                out.push((path, module));
            }
        }
    }
    out.sort();
    out
}

/// The code of a file without comments and without its unit-test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// The identifiers that follow each occurrence of `prefix` (e.g. `crate::`), with the one after them
/// when the path goes on (`crate::model::neck` -> ("model", Some("neck"))).
fn paths_after(code: &str, prefix: &str) -> Vec<(String, Option<String>)> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let first = ident(rest);
        let second = rest[first.len()..].strip_prefix("::").map(ident).filter(|s| !s.is_empty());
        if !first.is_empty() {
            out.push((first, second));
        }
    }
    out
}

/// Which modules (or files) each one names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// A cycle in `graph`, as the nodes along it, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| n == node).unwrap();
                let mut cycle = path[start..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node.to_string(), 1);
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    graph.keys().find_map(|n| visit(n, graph, &mut state, &mut Vec::new()))
}

/// The module graph: top-level modules, and for each top-level module the graph of its files.
fn graphs(src: &Path) -> (Graph, BTreeMap<String, Graph>) {
    let mut top: Graph = BTreeMap::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    for (path, module) in sources(src) {
        let Some(layer) = module.first().filter(|m| !["lib", "main", "layers"].contains(&m.as_str())) else {
            continue;
        };
        let code = code(&path);
        top.entry(layer.clone()).or_default();
        let file = module.get(1).cloned();
        let mut uses = |to: String| {
            if let Some(f) = &file {
                if to != *f {
                    inner.entry(layer.clone()).or_default().entry(f.clone()).or_default().insert(to);
                }
            }
        };
        for (first, second) in paths_after(&code, "crate::") {
            if first == *layer {
                if let Some(s) = second {
                    uses(s);
                }
            } else {
                top.get_mut(layer).unwrap().insert(first);
            }
        }
        if module.len() == 2 {
            for (first, _) in paths_after(&code, "super::") {
                uses(first);
            }
        }
    }
    (top, inner)
}

#[test]
fn layers_use_only_what_they_are_allowed_to() {
    let (top, _) = graphs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(top.contains_key("model") && top.contains_key("service"), "modules not found: {top:?}");
    for (layer, uses) in &top {
        if layer == "cli" {
            continue;
        }
        let allowed = ALLOWED.iter().find(|(l, _)| l == layer).map(|(_, a)| *a);
        let allowed = allowed.unwrap_or_else(|| panic!("src/layers.rs does not say what `{layer}` may use"));
        for u in uses {
            assert!(allowed.contains(&u.as_str()), "`{layer}` uses `{u}`, which its layer may not");
        }
    }
}

#[test]
fn no_import_cycles_between_modules_or_their_files() {
    let (top, inner) = graphs(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert_eq!(find_cycle(&top), None, "top-level modules");
    // model's files name each other (grser uses neck, tqm, ...): the check has something to see.
    assert!(inner.get("model").is_some_and(|g| g.get("grser").is_some_and(|u| u.contains("neck"))), "{inner:?}");
    for (layer, graph) in &inner {
        assert_eq!(find_cycle(graph), None, "files of `{layer}`");
    }
}

#[test]
fn a_cycle_is_found_and_a_chain_is_not() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: Graph = BTreeMap::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    let cycle = find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).unwrap();
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    let code = "use crate::model::neck::X; let y = super::codec::f(); // crate::service::z\nnot_crate::q";
    let code = code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
    assert_eq!(paths_after(&code, "crate::"), vec![("model".to_string(), Some("neck".to_string()))]);
    assert_eq!(paths_after(&code, "super::"), vec![("codec".to_string(), Some("f".to_string()))]);
}
