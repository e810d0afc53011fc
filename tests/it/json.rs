//! The JSON contract (docs/json.md), held on every command's real output:
//! stdout is nothing but JSON (one document, or one object per line), each
//! document starts with `schema_version`, stream lines name their `type`,
//! and no Rust shape leaks (enum tags such as `{"Span": …}` or `{"Ok": …}`,
//! `Duration` structs `{"secs", "nanos"}`, tuples such as `["connect", {…}]`).

use crate::common;

use serde_json::Value;
use std::process::{Command, Output, Stdio};
use twlab::json::SCHEMA_VERSION;

/// The documents on stdout: the whole of it as one document, or else
/// every line as one. Any other byte on stdout fails the test.
/// Each comes with its text, whose key order serde_json's `Value` loses.
fn documents(args: &[&str], o: &Output) -> Vec<(String, Value)> {
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.trim().is_empty(),
        "twlab {args:?} printed no JSON; stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    if let Ok(v) = serde_json::from_str::<Value>(&out) {
        return vec![(out.to_string(), v)];
    }
    out.lines()
        .map(|l| {
            let v = serde_json::from_str(l).unwrap_or_else(|e| {
                panic!("twlab {args:?}: stdout holds a line that is not JSON ({e}): {l:?}")
            });
            (l.to_string(), v)
        })
        .collect()
}

/// The first key of a JSON object's text.
fn first_key(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('{')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    rest.split('"').next()
}

/// Every Rust shape found in `v`, with its path.
fn rust_shapes(v: &Value, path: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
            keys.sort_unstable();
            if keys == ["nanos", "secs"] {
                found.push(format!("{path}: a Duration struct"));
            }
            // serde's externally tagged newtype variant in kebab-case
            // (`{"per-second": 100.0}`): one key, a variant's name, over a
            // number. (A map with one entry has this shape too, but twlab's
            // maps are keyed by names without `-` or by spaced text.)
            if let [(k, x)] = m.iter().collect::<Vec<_>>()[..]
                && is_kebab_variant(k)
                && x.is_number()
            {
                found.push(format!("{path}: an externally tagged enum {{{k:?}: {x}}}"));
            }
            for (k, x) in m {
                // Enum variants are CamelCase identifiers (`Ok`, `Span`);
                // field names and the user's own spellings are not, nor
                // are the kernel's counter names (`TcpExt:TW`), data keys.
                if k.starts_with(|c: char| c.is_ascii_uppercase())
                    && k.chars().any(|c| c.is_ascii_lowercase())
                    && k.chars().all(|c| c.is_ascii_alphanumeric())
                {
                    found.push(format!("{path}: key {k:?}"));
                }
                rust_shapes(x, &format!("{path}.{k}"), found);
            }
        }
        Value::Array(a) => {
            // A Rust tuple: a short array whose places hold different
            // kinds (`["connect", {"result": "ok"}]`); a list's items
            // are all of one kind.
            let kind = |x: &Value| std::mem::discriminant(x);
            if (2..=4).contains(&a.len()) && a.iter().any(|x| kind(x) != kind(&a[0])) {
                found.push(format!("{path}: a positional tuple {v}"));
            }
            a.iter()
                .take(200)
                .for_each(|x| rust_shapes(x, &format!("{path}[]"), found))
        }
        _ => {}
    }
}

/// `per-second`, `after-ms`: a serde enum variant's kebab-case name.
fn is_kebab_variant(k: &str) -> bool {
    k.contains('-')
        && !k.starts_with('-')
        && !k.ends_with('-')
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Every externally tagged enum variant a schema describes, by its place
/// (`$defs/Rate` and the variant's key): schemars writes one as an object
/// whose one property is required and that allows no other
/// (`additionalProperties: false`), where a struct has its fields and a map
/// `additionalProperties` of a schema.
fn tagged_in_schema(v: &Value, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let (Some(Value::Object(props)), Some(Value::Bool(false))) =
                (m.get("properties"), m.get("additionalProperties"))
                && props.len() == 1
                && m.get("required")
                    == Some(&Value::from(props.keys().cloned().collect::<Vec<_>>()))
            {
                let def = at.split('/').nth(2).unwrap_or(at);
                found.push(format!("{def}: {{{:?}: …}}", props.keys().next().unwrap()));
            }
            for (k, x) in m {
                tagged_in_schema(x, &format!("{at}/{k}"), found);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| tagged_in_schema(x, at, found)),
        _ => {}
    }
}

/// No output's schema has an externally tagged enum (load's `rate` was
/// `{"per-second": N}`, the experiment's `when` `{"after-ms": 40}`, its
/// `client_port` `{"fixed": 0}`, matrix's `until_free` and load's
/// `port_choice` likewise: each is tagged with `kind` now).
#[test]
fn no_schema_describes_an_externally_tagged_enum() {
    let mut found = Vec::new();
    for (name, schema) in twlab::schema::schemas() {
        let mut here = Vec::new();
        tagged_in_schema(schema.as_value(), "", &mut here);
        found.extend(here.into_iter().map(|f| (name, f)));
    }
    assert!(
        found.is_empty(),
        "externally tagged enums in the schemas: {found:?}"
    );
    // The checker sees the shape it looks for, and not a struct or a map.
    let schema = serde_json::json!({"$defs": {
        "Rate": {"oneOf": [
            {"type": "string", "const": "max"},
            {"type": "object", "properties": {"per-second": {"type": "number"}},
             "required": ["per-second"], "additionalProperties": false},
        ]},
        "Struct": {"type": "object", "properties": {"value": {"type": "number"}}, "required": ["value"]},
        "Map": {"type": "object", "additionalProperties": {"type": "integer"}},
    }});
    let mut f = Vec::new();
    tagged_in_schema(&schema, "", &mut f);
    assert_eq!(f, [r#"Rate: {"per-second": …}"#], "{f:?}");
}

/// Run `twlab args` and hold its stdout to the contract and to the JSON
/// Schema of output `schema` (docs/json/SCHEMA.schema.json); `stream`
/// says whether it prints lines with a `type`. Returns the documents.
fn check(schema: &str, args: &[&str], stream: bool) -> Vec<Value> {
    let o = Command::new(common::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run twlab");
    assert!(
        // 3: a disagreement found; 4: `why` predicts the call fails.
        matches!(o.status.code(), Some(0 | 3 | 4)),
        "twlab {args:?} exited {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    let docs = documents(args, &o);
    for (i, (text, d)) in docs.iter().enumerate() {
        let m = d
            .as_object()
            .unwrap_or_else(|| panic!("twlab {args:?}: document {i} is not an object"));
        assert_eq!(
            first_key(text),
            Some("schema_version"),
            "twlab {args:?}: document {i} does not start with schema_version"
        );
        assert_eq!(m["schema_version"], SCHEMA_VERSION, "twlab {args:?}");
        if stream {
            assert!(
                m.get("type").and_then(Value::as_str).is_some(),
                "twlab {args:?}: line {i} names no type"
            );
        }
        let mut found = Vec::new();
        rust_shapes(d, "", &mut found);
        assert!(
            found.is_empty(),
            "twlab {args:?}: Rust shapes in JSON: {found:?}"
        );
        let errors = common::schema_errors(schema, d);
        assert!(
            errors.is_empty(),
            "twlab {args:?}: document {i} breaks docs/json/{schema}.schema.json: {errors:#?}\n{text}"
        );
    }
    docs.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn the_checker_finds_the_shapes_it_looks_for() {
    // The shapes that leaked before (issue 19): the test must see them.
    let bad: Value = serde_json::json!({
        "range": {"Span": [32768, 60999]},
        "observed": {"Ok": {}},
        "sample_every": {"secs": 0, "nanos": 250000000},
        "steps": [["connect", {"result": "ok"}]],
        "rate": {"per-second": 100.0},
    });
    let mut found = Vec::new();
    rust_shapes(&bad, "", &mut found);
    assert_eq!(found.len(), 5, "{found:?}");
    let good: Value = serde_json::json!({"range": "1024-1030", "state": "time-wait",
        "error": {"name": "EADDRINUSE", "code": 98}, "by_check": {"why-bind": {}},
        "rate": {"kind": "per-second", "value": 100.0}, "errors": {"connect EADDRNOTAVAIL": 3}});
    let mut found = Vec::new();
    rust_shapes(&good, "", &mut found);
    assert!(found.is_empty(), "{found:?}");
    // A line of a type the stream does not have: said so, with the types.
    let errors = common::schema_errors(
        "pairs",
        &serde_json::json!({"schema_version": 1, "type": "celll"}),
    );
    assert!(
        errors.len() == 1 && errors[0].contains("\"cell\""),
        "{errors:?}"
    );
    assert_eq!(
        first_key(" {\n  \"schema_version\": 1}"),
        Some("schema_version")
    );
    assert_eq!(
        first_key("{\"elapsed_ms\":1,\"schema_version\":1}"),
        Some("elapsed_ms")
    );
}

netns_test! {
    /// The one-document commands.
    fn one_document_commands_keep_the_contract() {
        check("demo", &["demo", "--json"], false);
        check("ss", &["ss", "--json"], false);
        check("ss-summary", &["ss", "--summary", "--json"], false);
        check("why", &["why", "bind", "127.0.0.1:32401", "--json"], false);
        // A holder with a timer (it was a `["timewait", 59000]` tuple): a
        // client TIME_WAIT on the port asked about.
        let l = std::net::TcpListener::bind("127.0.0.1:32403").unwrap();
        let c = std::net::TcpStream::connect("127.0.0.1:32403").unwrap();
        let port = c.local_addr().unwrap().port();
        let (s, _) = l.accept().unwrap();
        drop(c);
        // (demo ran its cases in this namespace too: look at this port only.)
        let in_state = |st: twlab::diag::TcpState| {
            twlab::diag::dump(&twlab::diag::Query::default())
                .unwrap()
                .iter()
                .any(|e| e.state == st && (e.local.port() == port || e.peer.port() == port))
        };
        let five = std::time::Duration::from_secs(5);
        common::wait_until(five, "the server's end in CLOSE_WAIT", || {
            in_state(twlab::diag::TcpState::CloseWait).then_some(())
        });
        drop(s);
        common::wait_until(five, "the client's TIME_WAIT", || {
            in_state(twlab::diag::TcpState::TimeWait).then_some(())
        });
        let w = check("why", &["why", "bind", &format!("127.0.0.1:{port}"), "--json"], false);
        let timer = &w[0]["holders"][0]["timer"];
        assert_eq!(timer["kind"], "timewait", "{timer}");
        assert!(timer["expires_ms"].as_u64().is_some_and(|ms| ms <= 60_000), "{timer}");
        // The predicted errno as every command writes one (it was the name
        // alone, "EADDRINUSE", before issue 19's item 3 was finished).
        let errno = &w[0]["expect"]["errno"];
        assert_eq!(errno["name"], "EADDRINUSE", "{}", w[0]);
        assert_eq!(errno["code"], libc::EADDRINUSE, "{}", w[0]);
        let bad = mutated(&w[0], "/expect/errno", Some("EADDRINUSE".into()));
        assert!(!common::schema_errors("why", &bad).is_empty(), "{bad}");
        check("why", &["why", "port", &port.to_string(), "--json"], false);
        check("trace", &["trace", "1", "--json"], false);
        check("reuseport", &["reuseport", "--json"], false);
        check("selfcheck", &["selfcheck", "--json", "--cases", "20"], false);
        // The port-range factor was {"Span": [a, b]}: now as typed.
        let m = check("matrix", &["matrix", "-f", "close=client", "-f", "port-range=host,1024-1030", "--json"], false);
        let ranges: Vec<&str> = m[0]["cells"]
            .as_array()
            .expect("cells")
            .iter()
            .filter_map(|c| c["spec"]["range"].as_str())
            .collect();
        assert!(ranges.contains(&"1024-1030"), "ranges: {ranges:?}");
        assert!(ranges.contains(&"host"), "ranges: {ranges:?}");
    }
}

netns_test! {
    /// The streaming commands: one typed object per line, and nothing else
    /// on stdout (`run --json` used to end with two human lines).
    fn streaming_commands_keep_the_contract() {
        let run = check("run", &["run", "examples/scenarios/story-client.toml", "--json"], true);
        assert_eq!(run.last().unwrap()["type"], "summary");
        assert!(run.last().unwrap()["steps"].as_u64().unwrap() > 0);
        // A step's outcome as every command writes a call's (it was the
        // file's word, "ok" or "EADDRINUSE"); the file's own `expect`
        // stays its word.
        let steps: Vec<&Value> = run
            .iter()
            .filter_map(|d| d["report"]["steps"].as_array())
            .flatten()
            .collect();
        assert!(!steps.is_empty(), "{run:?}");
        for st in &steps {
            let r = st["observed"]["result"].as_str().unwrap_or("");
            assert!(r == "ok" || (r == "failed" && st["observed"]["error"]["code"].is_i64()), "{st}");
            if !st["model"].is_null() {
                assert!(st["model"]["outcome"]["result"].is_string(), "{st}");
            }
        }
        let bad = mutated(&run[0], "/report/steps/0/observed", Some("ok".into()));
        assert!(!common::schema_errors("run", &bad).is_empty(), "{bad}");
        let pairs = check("pairs", &["pairs", "--same-uid", "--bindv6only", "0", "--json"], true);
        assert!(pairs.iter().any(|d| d["type"] == "cell" && d.get("observed").is_some()));
        // A documented expectation as an errno name alone (before issue
        // 19's item 3) breaks the schema; the real one has the number.
        let cell = pairs.iter().find(|d| d["windows"]["second_bind"]["result"] == "failed").expect("a cell Windows refuses");
        assert!(cell["windows"]["second_bind"]["error"]["code"].as_i64().is_some_and(|c| c > 10000), "{cell}");
        let bad = mutated(cell, "/windows/second_bind", Some("WSAEADDRINUSE".into()));
        assert!(!common::schema_errors("pairs", &bad).is_empty(), "{bad}");
        assert_eq!(pairs.last().unwrap()["type"], "summary");
        let watch = check("ss-watch", &["ss", "--watch=50ms", "--iterations", "2", "--json"], true);
        assert_eq!(watch.len(), 2, "one line per refresh");
        assert!(watch[0]["sockets"].is_array() && watch[1].get("sockets").is_none());
        let events = check("events", &["events", "--json", "--duration", "300ms"], true);
        // load: samples as a time series, then the report; durations with
        // their unit, latency percentiles by name.
        let load = check("load", &["load", "--duration", "1s", "--json"], true);
        let report = load.last().unwrap();
        assert_eq!(report["type"], "report");
        assert!(load.iter().any(|d| d["type"] == "sample"));
        assert_eq!(report["plan"]["sample_every_ms"], 250, "{report}");
        // The pace tagged with `kind`, as `mode` is (it was `"max"` or
        // `{"per-second": N}`, serde's external tag).
        assert_eq!(report["plan"]["workload"]["rate"], serde_json::json!({"kind": "max"}), "{report}");
        let bad = mutated(report, "/plan/workload/rate", Some(serde_json::json!({"per-second": 100.0})));
        assert!(!common::schema_errors("load", &bad).is_empty(), "{bad}");
        let mut found = Vec::new();
        rust_shapes(&bad, "", &mut found);
        assert!(!found.is_empty(), "{bad}");
        // The shape it had before issue 19 is not the schema's.
        let was = serde_json::json!({"secs": 0, "nanos": 250_000_000});
        let bad = mutated(report, "/plan/sample_every_ms", Some(was));
        // The line is held to its own type's schema (`report`), so the
        // error names the field, not only "none of the oneOf".
        let errors = common::schema_errors("load", &bad);
        assert!(
            errors.iter().any(|e| e.contains("/plan/sample_every_ms") && e.contains("integer")),
            "{errors:#?}"
        );
        assert!(errors.iter().all(|e| !e.contains("oneOf")), "{errors:#?}");
        for p in ["p50_us", "p90_us", "p99_us", "p99_9_us", "mean_us", "max_us"] {
            assert!(report["connect_us"][p].is_number(), "{p}: {report}");
        }
        assert_eq!(events.last().unwrap()["type"], "summary");
        let server = common::start_server("127.0.0.1:32402".parse().unwrap(), &["--json"]);
        let client = check("client", &["client", "--connect", "127.0.0.1:32402", "--count", "2", "--json"], true);
        let out = common::stop_server(server);
        assert!(client.iter().any(|d| d["type"] == "attempt"), "{client:?}");
        let attempt = client.iter().find(|d| d["type"] == "attempt").unwrap();
        assert_eq!(attempt["steps"][0]["step"], "connect", "{attempt}");
        assert!(attempt["t_s"].is_number() && attempt.get("t").is_none(), "{attempt}");
        // Steps as objects: {"step", "result": "ok"|"failed"[, "error"]}.
        for st in attempt["steps"].as_array().expect("steps") {
            assert!(st["step"].is_string(), "{attempt}");
            let r = st["result"].as_str().unwrap_or("");
            assert!(r == "ok" || (r == "failed" && st["error"]["name"].is_string()), "{attempt}");
        }
        let mut served = 0;
        for l in out.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(l).expect("server line");
            assert_eq!(v["schema_version"], SCHEMA_VERSION, "{l}");
            common::assert_conforms("server", &v);
            let mut found = Vec::new();
            rust_shapes(&v, "", &mut found);
            assert!(found.is_empty(), "server: {found:?}");
            served += usize::from(v["type"] == "connection" && v["t_s"].is_number());
            // The state after close as every command spells states.
            let st = v["state_after_close"].as_str().unwrap_or("gone");
            assert!(st.chars().all(|c| c.is_ascii_lowercase() || c == '-'), "{l}");
        }
        assert_eq!(served, 2, "{out}");
    }
}

/// docs/json/NAME.schema.json holds exactly what `twlab::schema::schemas()`
/// generates from the types; `TWLAB_BLESS=1` rewrites the files (and
/// removes those of outputs that are gone).
#[test]
fn schemas_in_docs_json_are_current() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json");
    let bless = std::env::var_os("TWLAB_BLESS").is_some_and(|v| v == "1");
    let schemas = twlab::schema::schemas();
    let file = |name: &str| format!("{name}.schema.json");
    let mut stale = Vec::new();
    for (name, schema) in &schemas {
        let text = serde_json::to_string_pretty(schema).expect("a schema as JSON") + "\n";
        let path = dir.join(file(name));
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        if bless {
            std::fs::create_dir_all(&dir).expect("create docs/json");
            std::fs::write(&path, text).expect("write a schema");
        } else {
            stale.push(format!("docs/json/{} is stale", file(name)));
        }
    }
    let known: Vec<String> = schemas.iter().map(|(n, _)| file(n)).collect();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".schema.json") && !known.contains(&name) {
            if bless {
                std::fs::remove_file(e.path()).expect("remove a schema of no output");
            } else {
                stale.push(format!("docs/json/{name} is the schema of no output"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{}: run `TWLAB_BLESS=1 cargo test --test it json::schemas` and commit docs/json/",
        stale.join(", ")
    );
}

/// `doc` with the value at JSON pointer `at` replaced by `with` (`None`:
/// the field removed).
fn mutated(doc: &Value, at: &str, with: Option<Value>) -> Value {
    let mut d = doc.clone();
    let (parent, key) = at.rsplit_once('/').expect("a pointer");
    let p = d
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("no object at {parent:?} in {doc}"));
    assert!(p.contains_key(key), "no {key:?} at {parent:?} in {doc}");
    match with {
        Some(v) => p.insert(key.to_string(), v),
        None => p.remove(key),
    };
    d
}

netns_test! {
    /// The schemas can fail: real documents, each with one thing the
    /// contract forbids, are rejected (and the real ones are not).
    fn the_schemas_reject_what_the_contract_forbids() {
        let l = std::net::TcpListener::bind("127.0.0.1:32404").unwrap();
        let ss = check("ss", &["ss", "--json"], false).remove(0);
        drop(l);
        let demo = check("demo", &["demo", "--json"], false).remove(0);
        // Each mutation with its reason; the originals conform (check()).
        let bad = [
            ("ss", mutated(&ss, "/sockets/0/family", Some("v4".into())), "family v4"),
            ("ss", mutated(&ss, "/sockets/0/state", Some("TIME_WAIT".into())), "state TIME_WAIT"),
            ("ss", mutated(&ss, "/sockets/0/state", Some("timewait".into())), "state timewait"),
            ("ss", mutated(&ss, "/sockets/0/local", None), "no local address"),
            ("ss", mutated(&ss, "/sockets/0/recv_q", Some("0".into())), "a number as a string"),
            ("ss", mutated(&ss, "/schema_version", None), "no schema_version"),
            ("ss", mutated(&ss, "/schema_version", Some(2.into())), "schema_version 2"),
            ("demo", mutated(&demo, "/schema_version", None), "no schema_version"),
            (
                "demo",
                mutated(&demo, "/elapsed_ms", Some(serde_json::json!({"secs": 0, "nanos": 3_000_000}))),
                "a Duration struct",
            ),
            ("demo", mutated(&demo, "/rows/0/rule", Some("BindConflict".into())), "a rule as a Rust name"),
        ];
        // A failed row's errno as the text it was before issue 19's last step.
        let failed = demo["rows"]
            .as_array()
            .and_then(|rows| rows.iter().position(|r| r.get("errno").is_some()))
            .expect("a demo row that failed (case 5 always does)");
        let errno_text = mutated(&demo, &format!("/rows/{failed}/errno"), Some("EADDRINUSE (98)".into()));
        let bad: Vec<_> = bad.into_iter().chain([("demo", errno_text, "an errno as text")]).collect();
        for (schema, doc, what) in &bad {
            assert!(
                !common::schema_errors(schema, doc).is_empty(),
                "the {schema} schema accepts {what}: {doc}"
            );
        }
        // ss --json names the retransmission timer as every command does
        // (`retransmit`, as `ss --watch --json` and `why`), not `on`
        // (iproute2's word, which its text keeps).
        let mut timer = ss.clone();
        timer["sockets"][0]["timer"] =
            serde_json::json!({"kind": "retransmit", "expires_ms": 200, "retrans": 1});
        common::assert_conforms("ss", &timer);
        timer["sockets"][0]["timer"]["kind"] = "on".into();
        assert!(!common::schema_errors("ss", &timer).is_empty(), "{timer}");
        // A field the schema does not know is no error: readers ignore it.
        let mut extra = ss.clone();
        extra["sockets"][0]["a_new_field"] = "x".into();
        common::assert_conforms("ss", &extra);
    }
}
