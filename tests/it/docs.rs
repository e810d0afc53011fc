//! What the README and docs/ show must still run: every `twlab` command in
//! their code blocks is run, each in a fresh network namespace of its own,
//! and the README's demo output is compared with a fresh run of the demo
//! (times, timers and the kernel release as placeholders). Linux only:
//! the documents' commands run in network namespaces.

use crate::common;

use common::{bin, netns_or_skip};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use twlab::netns;

/// One command as a document shows it.
#[derive(Debug, Clone)]
struct DocCommand {
    /// "docs/commands.md:53".
    at: String,
    /// The arguments after `twlab`.
    args: Vec<String>,
    /// Shown after a `$ ` prompt with its output: a sample of a staged
    /// situation (a port held, ports exhausted) that a fresh namespace
    /// does not have, so a failure exit (1, 4) is as good as success.
    sample: bool,
}

impl DocCommand {
    /// Runs until stopped (a server without --count, a watch without
    /// --iterations, events without --duration): stopped with SIGINT after
    /// a moment, and it must then exit 130.
    fn live(&self) -> bool {
        let has = |f: &str| {
            self.args
                .iter()
                .any(|a| a == f || a.starts_with(&format!("{f}=")))
        };
        match self.args.first().map(String::as_str) {
            Some("server") => !has("--count"),
            Some("ss") => has("--watch") && !has("--iterations"),
            Some("events") => !has("--duration"),
            _ => false,
        }
    }
}

/// The markdown files whose commands must run.
fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// Split a command line as a shell would for these documents (words,
/// single and double quotes); `None` for a line with syntax placeholders
/// (`[--reuseaddr]`, `on|off`, `<PORT>`), which is a synopsis, not a command.
fn words(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    let synopsis = out
        .iter()
        .any(|w| w.starts_with('[') || w.starts_with('<') || (w.contains('|') && w.len() > 1));
    (!synopsis).then_some(out)
}

/// Every `twlab` command in the code blocks of `text`. In a block with
/// `$ ` prompts only the prompted lines are commands (the rest is their
/// output); elsewhere every line that starts with `twlab ` (or `sudo
/// twlab `) and is not output ("twlab demo: …") is. A trailing comment, a
/// redirection or a pipe is cut off; `\` continues a line. A block marked
/// as another language than a shell's (```toml: a dependency line that
/// starts with `twlab =`) holds no commands.
fn commands_in(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    // The open block's lines, and whether it is a shell's.
    let mut block: Option<(Vec<(usize, &str)>, bool)> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(lang) = line.trim_start().strip_prefix("```") {
            match block.take() {
                Some((lines, true)) => out.extend(block_commands(file, &lines)),
                Some((_, false)) => {}
                None => {
                    let shell = matches!(lang.trim(), "" | "sh" | "shell" | "bash" | "console");
                    block = Some((Vec::new(), shell));
                }
            }
            continue;
        }
        if let Some((b, _)) = block.as_mut() {
            b.push((n + 1, line));
        } else if line.starts_with("| `") {
            // A table of commands: its last cell is an invocation.
            let last = line
                .trim_end()
                .trim_end_matches('|')
                .rsplit('|')
                .next()
                .unwrap_or("");
            let code = last.trim().trim_matches('`');
            if code.starts_with("twlab ") && !last.trim().trim_matches('`').contains('`') {
                out.extend(block_commands(file, &[(n + 1, code)]));
            }
        }
    }
    out
}

fn block_commands(file: &str, lines: &[(usize, &str)]) -> Vec<DocCommand> {
    let prompted = lines.iter().any(|(_, l)| l.starts_with("$ "));
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let (n, first) = lines[i];
        let mut line = first.to_string();
        while line.trim_end().ends_with('\\') && i + 1 < lines.len() {
            line = line.trim_end().trim_end_matches('\\').to_string();
            i += 1;
            line.push(' ');
            line.push_str(lines[i].1.trim());
        }
        i += 1;
        let l = line.trim();
        let l = if prompted {
            match l.strip_prefix("$ ") {
                Some(rest) => rest,
                None => continue,
            }
        } else {
            l
        };
        let l = l.strip_prefix("sudo ").unwrap_or(l);
        // Not a command: a line of output that starts with the program's
        // name ("twlab demo: a client…", "twlab why bind … (options: …)").
        let Some(rest) = l.strip_prefix("twlab ") else {
            continue;
        };
        if rest
            .split_whitespace()
            .next()
            .is_some_and(|w| w.ends_with(':'))
            || rest.contains("(options:")
        {
            continue;
        }
        // Cut a comment, then a redirection or a pipe.
        let mut cmd = rest;
        for cut in [" #", " > ", " | "] {
            if let Some(at) = cmd.find(cut) {
                cmd = &cmd[..at];
            }
        }
        if let Some(args) = words(cmd) {
            out.push(DocCommand {
                at: format!("{file}:{n}"),
                args,
                sample: prompted,
            });
        }
    }
    out
}

/// An argument that names files of the repository, as the shell would
/// pass it from the repository's root: `dir/*.toml` expanded, an existing
/// relative path made absolute; anything else as it is.
fn repo_paths(arg: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some((dir, pattern)) = arg.rsplit_once('/').filter(|(_, p)| p.starts_with('*')) {
        let suffix = &pattern[1..];
        let mut found: Vec<String> = std::fs::read_dir(root.join(dir))
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.to_string_lossy().ends_with(suffix))
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        if !found.is_empty() {
            return found;
        }
    }
    if !arg.starts_with('-')
        && arg.contains('/')
        && !arg.starts_with('/')
        && root.join(arg).exists()
    {
        return vec![root.join(arg).display().to_string()];
    }
    vec![arg.to_string()]
}

/// How long a command may take before it counts as hung (the slowest
/// documented ones are `selfcheck --cases 2000` and `load --compare`);
/// a live one is stopped after [`LIVE_FOR`].
const BUDGET: Duration = Duration::from_secs(120);
const LIVE_FOR: Duration = Duration::from_millis(1500);

/// Run one documented command in a fresh namespace, in a directory of its
/// own (files it writes land there): `Err` says what went wrong.
fn run_one(c: &DocCommand, dir: &Path) -> Result<(), String> {
    let args = c.args.clone();
    let dir = dir.to_path_buf();
    let live = c.live();
    let sample = c.sample;
    let is_client = c.args.first().is_some_and(|a| a == "client");
    let out = netns::run_in_fresh(vec![], move || {
        // Absolute paths under /tmp stay inside the test's directory; the
        // repository's own files (examples/…, globs a shell would expand)
        // are read where they are.
        let args: Vec<String> = args
            .iter()
            .flat_map(|a| repo_paths(a))
            .map(|a| a.replace("/tmp/", &format!("{}/", dir.display())))
            .collect();
        // A client needs its server, as the docs say: started first in
        // the same namespace, stopped after.
        let server = match args.iter().position(|a| a == "--connect") {
            Some(i) if args[0] == "client" => {
                let addr: std::net::SocketAddr = args[i + 1].parse().map_err(|e| format!("{e}"))?;
                let s = Command::new(bin())
                    .args(["server", "--listen", &addr.to_string(), "--reuseaddr"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("server: {e}"))?;
                common::wait_listening(addr);
                Some(s)
            }
            _ => None,
        };
        let mut child = Command::new(bin())
            .args(&args)
            .current_dir(&dir)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        // Its own end within the limit, or SIGINT then (at most 5 s more).
        let limit = if live { LIVE_FOR } else { BUDGET };
        let start = Instant::now();
        let exited = loop {
            let st = child.try_wait().map_err(|e| e.to_string())?;
            if st.is_some() || start.elapsed() > limit {
                break st;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let ended = match exited {
            Some(status) => {
                let mut err = String::new();
                use std::io::Read;
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                Ok((status.code(), false, err))
            }
            None => common::try_stop_with(
                child,
                nix::sys::signal::Signal::SIGINT,
                Duration::from_secs(5),
            )
            .map(|o| (o.code, true, o.stderr)),
        };
        if let Some(mut s) = server {
            let _ = s.kill();
            let _ = s.wait();
        }
        ended
    })
    .map_err(|e| format!("namespace: {e}"))??;
    let (code, stopped, err) = out;
    if err.contains("panicked") {
        return Err(format!("panicked: {err}"));
    }
    match (code, stopped) {
        (Some(130), true) => Ok(()),
        (_, true) => Err(format!(
            "stopped with SIGINT, exit {code:?} (want 130): {err}"
        )),
        (Some(0), false) => Ok(()),
        // A staged sample (a client toward exhausted ports) may fail here
        // as documented (1: error, 4: a step failed); never a usage error.
        (Some(1 | 4), false) if sample => Ok(()),
        // The story's client reconnecting from a fixed port: a step that
        // fails (exit 4) is the lesson it shows.
        (Some(4), false) if is_client => Ok(()),
        (code, false) => Err(format!("exit {code:?}: {err}")),
    }
}

#[test]
fn the_extraction_finds_commands_and_skips_output_and_synopses() {
    let text = "\
```
twlab why bind 0.0.0.0:8080 [--reuseaddr] [--try]
twlab ss --summary          # where did the ports go?
twlab matrix -f next=reconnect \\
             -f close=client --format md
twlab completions bash > ~/.bash_completion
sudo twlab selfcheck --cases 20 --seed 1
```

```
$ twlab client --connect 127.0.0.1:5000
twlab why bind 127.0.0.1:8080 (options: REUSEADDR)
   0.000s #1 connect FAILED
```

```
twlab demo: a client with a fixed local port reconnects
```

```toml
twlab = { path = \"..\", default-features = false }
```

| `ss` | the table | `twlab ss --summary` |
| `x` | not a command | `twlab` |
";
    let got: Vec<String> = commands_in("x.md", text)
        .iter()
        .map(|c| format!("{} {}", c.at, c.args.join(" ")))
        .collect();
    assert_eq!(
        got,
        [
            "x.md:3 ss --summary",
            "x.md:4 matrix -f next=reconnect -f close=client --format md",
            "x.md:6 completions bash",
            "x.md:7 selfcheck --cases 20 --seed 1",
            "x.md:11 client --connect 127.0.0.1:5000",
            "x.md:24 ss --summary",
        ]
    );
}

/// Every command the README and docs/ show runs: exit 0 (or 1 where the
/// example shows a failure), never a usage error or a panic; one that runs
/// until stopped exits 130 on SIGINT.
#[test]
fn every_documented_command_runs() {
    if !netns_or_skip("every_documented_command_runs") {
        return;
    }
    let mut all = Vec::new();
    for f in documents() {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f
            .strip_prefix(env!("CARGO_MANIFEST_DIR"))
            .unwrap()
            .display()
            .to_string();
        all.extend(commands_in(name.trim_start_matches('/'), &text));
    }
    // The docs show at least the commands of every chapter; an extraction
    // that silently found none would pass everything.
    assert!(
        all.len() >= 30,
        "only {} commands found: {all:?}",
        all.len()
    );
    // A command shown twice (the README and docs/) runs once.
    let mut seen = std::collections::HashSet::new();
    all.retain(|c| seen.insert(c.args.clone()));
    let root = std::env::temp_dir().join(format!("twlab-docs-{}", std::process::id()));
    let queue = Arc::new(Mutex::new(
        all.clone().into_iter().enumerate().collect::<Vec<_>>(),
    ));
    let failures = Arc::new(Mutex::new(Vec::new()));
    // Two at a time: several of them (load, selfcheck) want a core each.
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (queue, failures, root) = (queue.clone(), failures.clone(), root.clone());
            std::thread::spawn(move || {
                loop {
                    let Some((i, c)) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    let dir = root.join(i.to_string());
                    std::fs::create_dir_all(&dir).unwrap();
                    let t = Instant::now();
                    let r = run_one(&c, &dir);
                    eprintln!(
                        "{:>6.1} s  twlab {}",
                        t.elapsed().as_secs_f64(),
                        c.args.join(" ")
                    );
                    if let Err(why) = r {
                        failures.lock().unwrap().push(format!(
                            "{}: twlab {}: {why}",
                            c.at,
                            c.args.join(" ")
                        ));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let _ = std::fs::remove_dir_all(&root);
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} documented commands failed:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

/// Replace what differs between two honest runs of the demo: the run's
/// milliseconds, TIME_WAIT timers, the kernel release.
fn normalise_line(line: &str) -> String {
    let mut l = String::new();
    let mut rest = line;
    // "(3 ms)" → "(N ms)"; "60.0 s left" → "N s left".
    while let Some(c) = rest.chars().next() {
        if c.is_ascii_digit() {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
                .unwrap_or(rest.len());
            let after = &rest[end..];
            if after.starts_with(" ms)")
                || after.starts_with(" s left")
                || after.starts_with(" s\n")
            {
                l.push('N');
            } else {
                l.push_str(&rest[..end]);
            }
            rest = after;
            continue;
        }
        l.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if l.starts_with("This host: Linux ") {
        l = "This host: Linux RELEASE".into();
    }
    l.trim_end().to_string()
}

/// The demo's text as units to compare: each table row as its words
/// (sorted: which line of a wrapped cell a word lands on depends on the
/// other rows' widths), each numbered explanation as its text, every other
/// line as it is. Case 2 is left out: it is the story's race (the old
/// socket is FIN_WAIT1 or already FIN_WAIT2, and the outcome follows).
fn units(text: &str) -> Vec<String> {
    let mut out: Vec<(Option<u32>, String)> = Vec::new();
    let mut section = String::new();
    let mut in_table = false;
    for raw in text.lines() {
        let line = normalise_line(raw);
        if line.starts_with('┌') {
            in_table = true;
            continue;
        }
        if in_table {
            if line.starts_with('└') {
                in_table = false;
                continue;
            }
            if line.starts_with('╞') {
                continue;
            }
            let cells: Vec<&str> = line.trim_matches('│').split('┆').map(str::trim).collect();
            let number = cells.first().and_then(|c| c.parse::<u32>().ok());
            let words = cells.iter().flat_map(|c| c.split_whitespace());
            match (number, out.last_mut()) {
                (None, Some((_, row))) if row.starts_with("row") => {
                    row.push(' ');
                    row.push_str(&words.collect::<Vec<_>>().join(" "));
                }
                _ => out.push((
                    number,
                    format!("row {}", words.collect::<Vec<_>>().join(" ")),
                )),
            }
            continue;
        }
        let body = line.trim_start();
        let item = body
            .split_once(". ")
            .and_then(|(n, _)| n.parse::<u32>().ok());
        match item {
            Some(n) => out.push((Some(n), format!("{section} / {body}"))),
            None if line.starts_with(' ') && out.last().is_some_and(|(n, _)| n.is_some()) => {
                let last = &mut out.last_mut().unwrap().1;
                last.push(' ');
                last.push_str(body);
            }
            None => {
                if !line.starts_with(' ') {
                    section = line.clone();
                }
                out.push((None, line));
            }
        }
    }
    out.into_iter()
        .filter(|(n, _)| *n != Some(2))
        .map(|(_, u)| {
            if let Some(row) = u.strip_prefix("row ") {
                let mut w: Vec<&str> = row.split_whitespace().collect();
                w.sort_unstable();
                format!("row: {}", w.join(" "))
            } else {
                u
            }
        })
        .collect()
}

/// The README's demo output is what `twlab demo` prints now, in a fresh
/// namespace (the kernel's default sysctls), at the width the README names.
#[test]
fn the_readme_demo_is_what_the_demo_prints() {
    if !netns_or_skip("the_readme_demo_is_what_the_demo_prints") {
        return;
    }
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let heading = readme
        .lines()
        .find(|l| l.starts_with("## What `COLUMNS="))
        .expect(
            "the README's demo heading names its width: ## What `COLUMNS=N twlab demo` printed",
        );
    let width: usize = heading["## What `COLUMNS=".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let start = readme
        .find("```\ntwlab demo: ")
        .expect("the README shows the demo's output");
    let sample = &readme[start + 4..];
    let sample = &sample[..sample.find("```").unwrap()];
    let out = netns::run_in_fresh(vec![], move || {
        Command::new(bin())
            .arg("demo")
            .env("COLUMNS", width.to_string())
            .output()
            .unwrap()
    })
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let now = String::from_utf8(out.stdout).unwrap();
    let (then, now_u) = (units(sample), units(&now));
    assert!(then.len() > 20, "{then:#?}");
    assert_eq!(
        then, now_u,
        "the README's demo output (left) is not what `COLUMNS={width} twlab demo` prints now (right):\n{now}"
    );
}

#[test]
fn demo_units_ignore_case_2_and_wrapping() {
    let a = "\
twlab demo: x (3 ms)
┌───┬──────┐
│ # ┆ case │
╞═══╪══════╡
│ 1 ┆ a b  │
│   ┆ c    │
│ 2 ┆ ok   │
└───┴──────┘
Why:
  1. one
     two
  2. varies
";
    let b = "\
twlab demo: x (5 ms)
┌───┬────────┐
│ # ┆ case   │
╞═══╪════════╡
│ 1 ┆ a      │
│   ┆ b c    │
│ 2 ┆ failed │
└───┴────────┘
Why:
  1. one two
  2. other
";
    assert_eq!(units(a), units(b));
    assert_ne!(units(a), units(&a.replace("one", "uno")));
    assert_ne!(units(a), units(&a.replace("a b", "a x")));
}
