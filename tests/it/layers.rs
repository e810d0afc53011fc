//! The layers of the crate, enforced (docs/architecture.md draws them).
//!
//! Reads every file of the module tree under `src/` (from `lib.rs` and
//! `main.rs`, following `mod x;` and `#[path]`), collects the paths that
//! reach another top-level module — `crate::x`, the items of `crate::{x, y}`
//! groups, `super::super::x` when the supers climb to the crate root, the
//! crate root's re-exports (`crate::Error` is `error`'s), and in the binary
//! (`cli`) `twlab::x` — and fails if
//! - the top-level modules import each other in a cycle (a strongly
//!   connected component of more than one module), listing one cycle and
//!   every edge inside the component with file:line;
//! - a module imports one from a higher layer of [`LAYERS`] (modules of one
//!   layer may use each other, without cycles);
//! - a top-level module is missing from [`LAYERS`], or a file under `src/`
//!   is not part of the module tree.
//!
//! Paths are read in code and in comments (doc links are references too;
//! a plain comment that names a higher module should say it in words),
//! never inside string or character literals (except a literal that is
//! only a path, as serde's `with = "crate::json::millis"`). `cfg` is ignored: every
//! platform's code is held to the same order. Pure std: no dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// The top-level modules, lowest layer first. A module may use modules of
/// its own layer and of the layers before it, never of a later one.
const LAYERS: &[(&str, &[&str])] = &[
    ("platform calls (the only unsafe)", &["sys"]),
    (
        "helpers",
        &[
            "text", "json", "layout", "outcome", "error", "signal", "outfile",
        ],
    ),
    (
        "the kernel's tables, settings, sockets, namespaces, events",
        &["sysctl", "socket", "netns", "netstat", "diag", "events"],
    ),
    ("the experiment as pure data", &["experiment"]),
    ("the rule model (model::kernel inside)", &["model"]),
    ("the diagnosis over a socket table", &["why"]),
    (
        "runners",
        &[
            "scenario",
            "check",
            "demo",
            "matrix",
            "pairs",
            "load",
            "selfcheck",
            "trace",
        ],
    ),
    ("commands", &["peer", "ss"]),
    (
        "what sees every output (the JSON Schemas of all commands)",
        &["schema"],
    ),
    ("the binary's command line", &["cli"]),
];

/// One reference from a file of module `from` to module `to`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    from: String,
    to: String,
    /// "src/why/live.rs:137".
    at: String,
}

/// What a byte of a source file is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Code,
    Comment,
    /// A string or character literal.
    Literal,
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The kind of every byte of `s`: comments (line, block, nested block),
/// string literals (plain, byte, raw with any number of `#`) and
/// character literals are told apart from code; lifetimes are code.
fn classify(s: &str) -> Vec<Kind> {
    let b = s.as_bytes();
    let mut k = vec![Kind::Code; b.len()];
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let kind = match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                Kind::Comment
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                        depth += 1;
                        i += 2;
                    } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                Kind::Comment
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                Kind::Literal
            }
            b'r' if (i == 0
                || !is_ident(b[i - 1])
                || (b[i - 1] == b'b' && (i < 2 || !is_ident(b[i - 2]))))
                && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) =>
            {
                let mut j = i + 1;
                while b.get(j) == Some(&b'#') {
                    j += 1;
                }
                if b.get(j) != Some(&b'"') {
                    // A raw identifier (r#type).
                    i += 1;
                    continue;
                }
                let hashes = j - i - 1;
                let mut close = String::from("\"");
                close.push_str(&"#".repeat(hashes));
                i = match s[j + 1..].find(&close) {
                    Some(p) => j + 1 + p + close.len(),
                    None => b.len(),
                };
                Kind::Literal
            }
            b'\'' => {
                if b.get(i + 1) == Some(&b'\\') {
                    i += 3;
                    while i < b.len() && b[i] != b'\'' {
                        i += 1;
                    }
                    i += 1;
                    Kind::Literal
                } else {
                    let len = s[i + 1..].chars().next().map_or(0, char::len_utf8);
                    if len > 0 && b.get(i + 1 + len) == Some(&b'\'') {
                        i += len + 2;
                        Kind::Literal
                    } else {
                        // A lifetime or a label.
                        i += 1;
                        continue;
                    }
                }
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let end = i.min(b.len());
        k[start..end].fill(kind);
        i = end;
    }
    k
}

/// `s` with the bytes of the kinds not in `keep` blanked (newlines kept, so
/// offsets and line numbers stay).
fn masked(s: &str, kinds: &[Kind], keep: &[Kind]) -> Vec<u8> {
    s.bytes()
        .zip(kinds)
        .map(|(c, k)| {
            if keep.contains(k) || c == b'\n' {
                c
            } else {
                b' '
            }
        })
        .collect()
}

/// Put back string literals that hold nothing but a path from the crate
/// root (serde's `with = "crate::json::millis"`): they name code too.
fn unmask_path_literals(src: &str, kinds: &[Kind], text: &mut [u8]) {
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if kinds[i] != Kind::Literal || (i > 0 && kinds[i - 1] == Kind::Literal) {
            i += 1;
            continue;
        }
        let end = (i..b.len())
            .find(|&j| kinds[j] != Kind::Literal)
            .unwrap_or(b.len());
        let inner = &b[i..end];
        if let [b'"', path @ .., b'"'] = inner
            && path.starts_with(b"crate::")
            && path.iter().all(|c| is_ident(*c) || *c == b':')
        {
            text[i + 1..end - 1].copy_from_slice(path);
        }
        i = end;
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// The identifier at `i` (maybe `r#`-prefixed), and where it ends.
fn ident_at(b: &[u8], i: usize) -> Option<(String, usize)> {
    let i = if b[i..].starts_with(b"r#") { i + 2 } else { i };
    let mut j = i;
    while j < b.len() && is_ident(b[j]) {
        j += 1;
    }
    (j > i && !b[i].is_ascii_digit()).then(|| (String::from_utf8_lossy(&b[i..j]).into_owned(), j))
}

/// After `::` at `i`: the first segment of each path that continues there,
/// with its offset (one for a plain path, one per item of a `{...}` group).
fn first_segments(b: &[u8], i: usize) -> Vec<(String, usize)> {
    let i = skip_ws(b, i);
    if i >= b.len() {
        return Vec::new();
    }
    if b[i] != b'{' {
        return ident_at(b, i).map(|(n, _)| (n, i)).into_iter().collect();
    }
    let mut out = Vec::new();
    let mut depth = 0;
    let mut item = true;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'{' => {
                depth += 1;
                if depth == 1 {
                    item = true;
                }
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b',' if depth == 1 => item = true,
            c if item && depth == 1 && !c.is_ascii_whitespace() => {
                item = false;
                if let Some((n, _)) = ident_at(b, j) {
                    out.push((n, j));
                }
            }
            _ => {}
        }
        j += 1;
    }
    out
}

/// True if `b[i..]` is `::` after optional blanks; returns where it ends.
fn colons(b: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(b, i);
    b[i..].starts_with(b"::").then_some(i + 2)
}

/// A `mod x;` declaration: the name, its `#[path]` if any, where it is.
struct Decl {
    name: String,
    path: Option<String>,
    at: usize,
}

/// An inline module (`mod tests { ... }`): its name and byte range.
struct Inline {
    name: String,
    range: std::ops::Range<usize>,
}

/// `mod x;` declarations (name, `#[path]` if any) and inline modules of one
/// file, read from its code (literals and comments blanked; the path
/// attribute's string is read from `src`).
fn mods_of(src: &str, code: &[u8]) -> (Vec<Decl>, Vec<Inline>) {
    let mut files = Vec::new();
    let mut inline = Vec::new();
    let mut i = 0;
    while let Some(p) = find_word(code, b"mod", i) {
        i = p + 3;
        let j = skip_ws(code, i);
        let Some((name, end)) = (j < code.len()).then(|| ident_at(code, j)).flatten() else {
            continue;
        };
        let k = skip_ws(code, end);
        match code.get(k) {
            Some(b';') => {
                // The attributes right before `mod`: back to the previous
                // item's end in code.
                let from = code[..p]
                    .iter()
                    .rposition(|c| matches!(c, b';' | b'}' | b'{'))
                    .map_or(0, |x| x + 1);
                let attrs = &src[from..p];
                let path = attrs.find("#[path").and_then(|a| {
                    let q = attrs[a..].find('"')? + a + 1;
                    let e = attrs[q..].find('"')? + q;
                    Some(attrs[q..e].to_string())
                });
                files.push(Decl { name, path, at: p });
            }
            Some(b'{') => {
                let mut depth = 0;
                let mut e = k;
                while e < code.len() {
                    match code[e] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    e += 1;
                }
                inline.push(Inline { name, range: k..e });
            }
            _ => {}
        }
    }
    (files, inline)
}

/// The next `word` at or after `from`, on identifier boundaries.
fn find_word(b: &[u8], word: &[u8], mut from: usize) -> Option<usize> {
    while from + word.len() <= b.len() {
        let p = from + b[from..].windows(word.len()).position(|w| w == word)?;
        let before = p == 0 || !is_ident(b[p - 1]);
        let after = b.get(p + word.len()).is_none_or(|c| !is_ident(*c));
        if before && after {
            return Some(p);
        }
        from = p + 1;
    }
    None
}

/// One crate: its top-level modules and the root's re-exports (name →
/// the module it comes from).
#[derive(Default)]
struct Crate {
    modules: BTreeSet<String>,
    reexports: BTreeMap<String, String>,
}

impl Crate {
    /// The top-level module a root path's first segment names, if any.
    fn resolve(&self, segment: &str) -> Option<String> {
        if self.modules.contains(segment) {
            Some(segment.to_string())
        } else {
            self.reexports.get(segment).cloned()
        }
    }
}

/// `pub use m::{A, B as C};` at the root: A and C come from `m`.
fn reexports(code: &[u8], modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut i = 0;
    while let Some(p) = find_word(code, b"use", i) {
        i = p + 3;
        let Some(end) = code[i..].iter().position(|c| *c == b';') else {
            break;
        };
        let stmt = String::from_utf8_lossy(&code[i..i + end])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ::", "::")
            .replace(":: ", "::");
        let Some((module, rest)) = stmt.trim().split_once("::") else {
            continue;
        };
        if !modules.contains(module) {
            continue;
        }
        for item in rest.replace(['{', '}'], " ").split(',') {
            let item = item.trim();
            let name = match item.split_once(" as ") {
                Some((_, alias)) => alias.trim(),
                None => item.rsplit("::").next().unwrap_or(item),
            };
            if !name.is_empty() && name != "*" && name != "self" {
                out.insert(name.to_string(), module.to_string());
            }
        }
    }
    out
}

/// Every file of the module trees rooted at `lib.rs` and `main.rs`, as
/// (path under src/, module path, whether it is the binary's).
fn module_files(
    files: &BTreeMap<String, String>,
) -> Result<Vec<(String, Vec<String>, bool)>, String> {
    let mut out = Vec::new();
    let mut todo: Vec<(String, Vec<String>, bool)> = ["lib.rs", "main.rs"]
        .into_iter()
        .filter(|r| files.contains_key(*r))
        .map(|r| (r.to_string(), Vec::new(), r == "main.rs"))
        .collect();
    while let Some((path, module, bin)) = todo.pop() {
        let src = &files[&path];
        let kinds = classify(src);
        let code = masked(src, &kinds, &[Kind::Code]);
        let (decls, inline) = mods_of(src, &code);
        let dir = match path.rsplit_once('/') {
            Some((d, _)) => format!("{d}/"),
            None => String::new(),
        };
        let file = path.rsplit('/').next().unwrap_or(&path);
        // Where `mod x;` looks for x: beside a mod.rs (or a root), else in
        // the folder named after the file.
        let own = if matches!(file, "mod.rs" | "lib.rs" | "main.rs") {
            dir.clone()
        } else {
            format!("{dir}{}/", file.trim_end_matches(".rs"))
        };
        for Decl {
            name,
            path: attr,
            at,
        } in decls
        {
            let within: Vec<&str> = inline
                .iter()
                .filter(|m| m.range.contains(&at))
                .map(|m| m.name.as_str())
                .collect();
            let mut sub = module.clone();
            sub.extend(within.iter().map(|s| s.to_string()));
            sub.push(name.clone());
            let found = match attr {
                Some(p) => vec![format!("{dir}{p}")],
                None => {
                    let base = format!(
                        "{own}{}",
                        within.iter().map(|w| format!("{w}/")).collect::<String>()
                    );
                    vec![format!("{base}{name}.rs"), format!("{base}{name}/mod.rs")]
                }
            };
            match found.iter().find(|f| files.contains_key(*f)) {
                Some(f) => todo.push((f.clone(), sub, bin)),
                None => return Err(format!("src/{path}: mod {name}: none of {found:?} exists")),
            }
        }
        out.push((path, module, bin));
    }
    out.sort();
    Ok(out)
}

/// Every reference between top-level modules in `files` (path under src/ →
/// text). Errors: a declared module whose file is missing, a file outside
/// the module tree.
fn edges(files: &BTreeMap<String, String>) -> Result<(BTreeSet<String>, Vec<Edge>), String> {
    let tree = module_files(files)?;
    let reached: BTreeSet<&str> = tree.iter().map(|(p, _, _)| p.as_str()).collect();
    let orphans: Vec<&String> = files
        .keys()
        .filter(|p| !reached.contains(p.as_str()))
        .collect();
    if !orphans.is_empty() {
        return Err(format!(
            "files under src/ that no `mod` declares: {orphans:?}"
        ));
    }
    let mut lib = Crate::default();
    let mut bin = Crate::default();
    for (_, module, is_bin) in &tree {
        if let [top] = module.as_slice() {
            let c = if *is_bin { &mut bin } else { &mut lib };
            c.modules.insert(top.clone());
        }
    }
    if let Some(src) = files.get("lib.rs") {
        let code = masked(src, &classify(src), &[Kind::Code]);
        lib.reexports = reexports(&code, &lib.modules);
    }
    let mut out = Vec::new();
    for (path, module, is_bin) in &tree {
        let Some(top) = module.first() else {
            continue; // lib.rs, main.rs: the roots.
        };
        let src = &files[path];
        let kinds = classify(src);
        let mut text = masked(src, &kinds, &[Kind::Code, Kind::Comment]);
        unmask_path_literals(src, &kinds, &mut text);
        let code = masked(src, &kinds, &[Kind::Code]);
        let (_, inline) = mods_of(src, &code);
        let own_crate = if *is_bin { &bin } else { &lib };
        let mut add = |to: String, at: usize| {
            if &to != top {
                let line = 1 + text[..at].iter().filter(|c| **c == b'\n').count();
                out.push(Edge {
                    from: top.clone(),
                    to,
                    at: format!("src/{path}:{line}"),
                });
            }
        };
        let mut i = 0;
        while i < text.len() {
            if !is_ident(text[i]) || (i > 0 && is_ident(text[i - 1])) {
                i += 1;
                continue;
            }
            let Some((word, end)) = ident_at(&text, i) else {
                i += 1;
                continue;
            };
            let start = i;
            i = end;
            // Only where a path starts: not after `::` (`a::crate` is no
            // path, `x: crate::T` is).
            let before = text[..start].iter().rposition(|c| !c.is_ascii_whitespace());
            if before.is_some_and(|p| p > 0 && text[p] == b':' && text[p - 1] == b':') {
                continue;
            }
            let target = match word.as_str() {
                "crate" => Some(own_crate),
                "twlab" if *is_bin => Some(&lib),
                "super" => {
                    let mut supers = 1;
                    let mut j = end;
                    while let Some(k) = colons(&text, j) {
                        match ident_at(&text, skip_ws(&text, k)) {
                            Some((w, e)) if w == "super" => {
                                supers += 1;
                                j = e;
                            }
                            _ => break,
                        }
                    }
                    let depth =
                        module.len() + inline.iter().filter(|m| m.range.contains(&start)).count();
                    i = j;
                    (supers == depth).then_some(own_crate)
                }
                _ => None,
            };
            let Some(c) = target else {
                continue;
            };
            let Some(k) = colons(&text, i) else {
                continue;
            };
            for (segment, at) in first_segments(&text, k) {
                if let Some(to) = c.resolve(&segment) {
                    add(to, at);
                }
            }
        }
    }
    let modules = lib.modules.union(&bin.modules).cloned().collect();
    Ok((modules, out))
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(modules: &BTreeSet<String>, edges: &[Edge]) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        next: BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let next: Vec<&str> = self.next.get(v).into_iter().flatten().copied().collect();
            for w in next {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let l = self.low[v].min(self.low[w]);
                    self.low.insert(v, l);
                } else if self.on_stack.contains(w) {
                    let l = self.low[v].min(self.index[w]);
                    self.low.insert(v, l);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for e in edges {
        t.next.entry(&e.from).or_default().insert(&e.to);
    }
    for m in modules {
        if !t.index.contains_key(m.as_str()) {
            t.visit(m);
        }
    }
    t.found.sort();
    t.found
}

/// One cycle through the component `scc`, from its first module back to it
/// (breadth first, so the shortest).
fn one_cycle(scc: &[String], edges: &[Edge]) -> Vec<String> {
    let inside = |m: &str| scc.iter().any(|s| s == m);
    let start = &scc[0];
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.as_str()]);
    while let Some(v) = queue.pop_front() {
        for e in edges.iter().filter(|e| e.from == v && inside(&e.to)) {
            if e.to == *start {
                let mut path = vec![start.clone()];
                let mut at = v;
                while at != start.as_str() {
                    path.push(at.to_string());
                    at = came_from[at];
                }
                path.push(start.clone());
                path.reverse();
                return path;
            }
            if !came_from.contains_key(e.to.as_str()) {
                came_from.insert(e.to.as_str(), v);
                queue.push_back(e.to.as_str());
            }
        }
    }
    Vec::new()
}

/// Where `from` → `to` is written, at most `max` places.
fn places(edges: &[Edge], from: &str, to: &str, max: usize) -> String {
    let all: Vec<&str> = edges
        .iter()
        .filter(|e| e.from == from && e.to == to)
        .map(|e| e.at.as_str())
        .collect();
    let more = all.len().saturating_sub(max);
    let mut s = all[..all.len().min(max)].join(", ");
    if more > 0 {
        let _ = write!(s, " and {more} more");
    }
    s
}

/// Everything wrong with `files` against `layers`: one paragraph per
/// problem; empty when the layering holds.
fn problems(files: &BTreeMap<String, String>, layers: &[(&str, &[&str])]) -> Vec<String> {
    let (modules, edges) = match edges(files) {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    for scc in cycles(&modules, &edges) {
        let cycle = one_cycle(&scc, &edges);
        let mut s = format!(
            "import cycle between top-level modules {}: {}\n",
            scc.join(", "),
            cycle.join(" -> ")
        );
        for w in cycle.windows(2) {
            let _ = writeln!(
                s,
                "  {} -> {}: {}",
                w[0],
                w[1],
                places(&edges, &w[0], &w[1], 5)
            );
        }
        let _ = writeln!(s, "  every edge inside the cycle:");
        let pairs: BTreeSet<(&str, &str)> = edges
            .iter()
            .filter(|e| scc.contains(&e.from) && scc.contains(&e.to))
            .map(|e| (e.from.as_str(), e.to.as_str()))
            .collect();
        for (a, b) in pairs {
            let _ = writeln!(s, "    {a} -> {b}: {}", places(&edges, a, b, 5));
        }
        out.push(s);
    }
    let mut layer_of: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, (_, ms)) in layers.iter().enumerate() {
        for m in *ms {
            if layer_of.insert(m, n).is_some() {
                out.push(format!("`{m}` is in LAYERS twice"));
            }
        }
    }
    for m in &modules {
        if !layer_of.contains_key(m.as_str()) {
            out.push(format!(
                "top-level module `{m}` has no layer: add it to LAYERS in tests/it/layers.rs (and to docs/architecture.md)"
            ));
        }
    }
    for m in layer_of.keys() {
        if !modules.contains(*m) {
            out.push(format!(
                "LAYERS names `{m}`, which is not a top-level module"
            ));
        }
    }
    let upward: BTreeSet<(&str, &str)> = edges
        .iter()
        .filter(
            |e| match (layer_of.get(e.from.as_str()), layer_of.get(e.to.as_str())) {
                (Some(a), Some(b)) => b > a,
                _ => false,
            },
        )
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    for (a, b) in upward {
        out.push(format!(
            "`{a}` ({}) uses `{b}` ({}), a higher layer: {}",
            layers[layer_of[a]].0,
            layers[layer_of[b]].0,
            places(&edges, a, b, 5)
        ));
    }
    out
}

/// Every .rs file under `dir`, by its path relative to `root`.
fn read_tree(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            read_tree(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.insert(rel, text);
        }
    }
}

#[test]
fn top_level_modules_follow_the_layers_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_tree(&src, &src, &mut files);
    let (modules, edges) = edges(&files).unwrap();
    // The reader found the crate: the modules and some edges it must see.
    for m in ["sys", "diag", "model", "experiment", "why", "ss", "cli"] {
        assert!(modules.contains(m), "no top-level module {m}: {modules:?}");
    }
    assert!(edges.iter().any(|e| e.from == "ss" && e.to == "why"));
    assert!(edges.iter().any(|e| e.from == "cli" && e.to == "ss"));
    let p = problems(&files, LAYERS);
    assert!(
        p.is_empty(),
        "the layers of docs/architecture.md do not hold:\n\n{}",
        p.join("\n")
    );
}

/// A synthetic crate from (path, text) pairs.
fn fake(files: &[(&str, &str)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

const TWO: &[(&str, &[&str])] = &[("low", &["a"]), ("high", &["b", "c"])];

#[test]
fn a_cycle_is_found_with_its_places() {
    let files = fake(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use c::Thing;\n",
        ),
        ("a.rs", "//! Low.\n\nuse crate::{b::X, text};\n"),
        ("b/mod.rs", "mod inner;\npub struct X;\n"),
        // Two supers from b/inner.rs reach the root: `a`.
        ("b/inner.rs", "fn f() {\n    super::super::a::g();\n}\n"),
        ("c.rs", "pub struct Thing;\n"),
    ]);
    let (_, e) = edges(&files).unwrap();
    let got: Vec<(&str, &str, &str)> = e
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str(), e.at.as_str()))
        .collect();
    assert_eq!(
        got,
        [("a", "b", "src/a.rs:3"), ("b", "a", "src/b/inner.rs:2")]
    );
    let p = problems(&files, TWO);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].starts_with("import cycle between top-level modules a, b: a -> b -> a"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("a -> b: src/a.rs:3"), "{}", p[0]);
    assert!(p[0].contains("b -> a: src/b/inner.rs:2"), "{}", p[0]);
    assert!(
        p[1].starts_with("`a` (low) uses `b` (high), a higher layer: src/a.rs:3"),
        "{}",
        p[1]
    );
}

#[test]
fn an_upward_import_fails_without_a_cycle() {
    let files = fake(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use c::Thing;\n",
        ),
        // Through the root's re-export, in a doc link.
        ("a.rs", "/// See [`crate::Thing`].\npub fn f() {}\n"),
        ("b.rs", "use crate::a::f;\n"),
        ("c.rs", "pub struct Thing;\n"),
    ]);
    let p = problems(&files, TWO);
    assert_eq!(p, ["`a` (low) uses `c` (high), a higher layer: src/a.rs:1"]);
}

#[test]
fn literals_inline_modules_and_path_attributes_are_read_right() {
    let files = fake(&[
        ("lib.rs", "pub mod a;\npub mod b;\n"),
        (
            "a/mod.rs",
            concat!(
                "const S: &str = \"see crate::b::X\";\n",
                "const R: &str = r#\"crate::b\"#;\n",
                "const C: char = '\"';\n",
                "fn l<'x>(s: &'x str) -> &'x str { s }\n",
                "/* crate::b in a block comment /* nested */ still */\n",
                "#[serde(with = \"crate::b::g\")] struct T;\n",
                "#[cfg(test)]\n#[path = \"a_tests.rs\"]\nmod tests;\n",
                "mod inline {\n    fn f() { super::super::b::g(); }\n}\n",
            ),
        ),
        // Declared inside a/mod.rs under another name: a::tests, two
        // supers reach the root.
        (
            "a/a_tests.rs",
            "use super::super::b;\nfn f(x: crate::b::T) {}\n",
        ),
        ("b.rs", "pub fn g() {}\n"),
    ]);
    let (modules, e) = edges(&files).unwrap();
    assert_eq!(modules, BTreeSet::from(["a".to_string(), "b".to_string()]));
    let at: Vec<&str> = e.iter().map(|e| e.at.as_str()).collect();
    assert_eq!(
        at,
        [
            "src/a/a_tests.rs:1",
            "src/a/a_tests.rs:2",
            "src/a/mod.rs:5",
            "src/a/mod.rs:6",
            "src/a/mod.rs:11"
        ]
    );
}

#[test]
fn a_file_outside_the_module_tree_is_an_error() {
    let files = fake(&[("lib.rs", "pub mod a;\n"), ("a.rs", ""), ("b.rs", "")]);
    assert!(edges(&files).unwrap_err().contains("b.rs"));
    let files = fake(&[("lib.rs", "pub mod a;\n")]);
    assert!(edges(&files).unwrap_err().contains("mod a"));
}
