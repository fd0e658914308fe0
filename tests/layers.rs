//! Dependencies point one way: no top-level module of the crate reaches,
//! through `crate::` paths, back to itself (the design's habit; the
//! config <-> policy <-> session circle once existed). Read from the
//! sources, so a new circle fails here with its path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const SRC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src");

/// Modules that assemble the others and are imported by nothing below
/// them (the binary's helpers), plus test-support code.
const ROOTS: &[&str] = &["app", "dev", "emulator", "fuzzing", "main", "lib"];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn module_of(path: &Path) -> String {
    let rel = path.strip_prefix(SRC).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn no_module_imports_itself_through_others() {
    let mut files = Vec::new();
    sources(Path::new(SRC), &mut files);
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = module_of(f);
        let text = std::fs::read_to_string(f).unwrap();
        // Code only: the part before the unit tests, lines that are not comments.
        let code = text.split("#[cfg(test)]").next().unwrap();
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for (i, _) in line.match_indices("crate::") {
                let name: String = line[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != m {
                    deps.entry(m.clone()).or_default().insert(name);
                }
            }
        }
        deps.entry(m).or_default();
    }
    assert!(deps.len() > 10, "read the sources: {deps:?}");
    // Depth-first search for a path from each module back to itself.
    fn back_to(
        start: &str,
        at: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in deps.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if back_to(start, next, deps, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    for m in deps.keys().filter(|m| !ROOTS.contains(&m.as_str())) {
        let mut path = vec![m.clone()];
        let found = back_to(m, m, &deps, &mut path, &mut BTreeSet::new());
        assert!(!found, "import circle: {}", path.join(" -> "));
    }
}
