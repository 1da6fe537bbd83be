//! The crates' structure: no import ring among the top-level modules of
//! `crdt`, `protocol` or `node`.
//!
//! A module's imports are every `crate::NAME` path in its files (its
//! submodules included), outside comments and outside its `mod tests`. A
//! ring (A imports B, which imports A, possibly through others) means
//! neither can be read or changed without the other; the layout keeps
//! interfaces (e.g. `node/src/control`) in modules of their own instead.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level modules of the crate whose sources are in `src`, each
/// with the other top-level modules it names.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).expect("the crate's src/") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            files.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            files.entry(name).or_default().push(path);
        }
    }
    let modules: BTreeSet<String> = files.keys().cloned().collect();
    files
        .iter()
        .map(|(module, paths)| {
            let mut named = BTreeSet::new();
            for path in paths {
                let text = std::fs::read_to_string(path).expect("a source file");
                for other in crate_paths(&text) {
                    if other != *module && modules.contains(&other) {
                        named.insert(other);
                    }
                }
            }
            (module.clone(), named)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a module directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The first segment of every `crate::` path in `text`, outside comments
/// and before its unit-test module.
fn crate_paths(text: &str) -> Vec<String> {
    let code = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    let mut out = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let preceded = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name.is_empty() && !preceded {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

/// A ring in `graph`, as the modules along it (first repeated at the
/// end), if there is one.
fn find_ring(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut ring = path[at..].to_vec();
            ring.push(node.to_owned());
            return Some(ring);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(ring) = visit(next, graph, path, done) {
                return Some(ring);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_ring_in_crdt_protocol_or_node() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for krate in ["crdt", "protocol", "node"] {
        let graph = imports(&root.join(krate).join("src"));
        assert!(graph.len() > 3, "{krate}: modules found: {graph:?}");
        if let Some(ring) = find_ring(&graph) {
            panic!("{krate}: an import ring: {}", ring.join(" -> "));
        }
    }
}

#[test]
fn the_ring_finder_finds_rings_and_only_rings() {
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    };
    assert_eq!(
        find_ring(&graph(&[
            ("api", "task"),
            ("task", "store"),
            ("api", "store")
        ])),
        None
    );
    let ring = find_ring(&graph(&[
        ("api", "task"),
        ("task", "audit"),
        ("audit", "api"),
    ]))
    .expect("a ring of three");
    assert_eq!(ring.len(), 4);
    assert_eq!(ring.first(), ring.last());
    let paths = crate_paths(
        "use crate::task::X;\n// crate::api in a comment\nlet a = weft_crate::b; f(crate::store::open());\n#[cfg(test)]\nmod tests {\n use crate::api;\n}",
    );
    assert_eq!(paths, ["task", "store"]);
}
