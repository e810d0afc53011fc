//! JSON Schemas of every command's `--json` output, generated from the
//! types that are serialized (schemars), so that a field added, renamed or
//! retyped in the code shows in the schema. [`schemas`] is the one list of
//! outputs: the test that keeps `docs/json/*.schema.json` current and the
//! test that validates every command's real output both read it.
//!
//! A document's schema is its body's schema plus `schema_version`; a
//! stream's is a `oneOf` of its line types, each told apart by `type`.
//! No schema forbids unknown properties: a new field does not raise
//! [`SCHEMA_VERSION`], and readers are to ignore fields they do not know
//! (docs/json.md). Required fields, types and enumerated values are held.

use crate::json::SCHEMA_VERSION;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value};

/// Every output: its name (the file `docs/json/NAME.schema.json`) and its
/// schema. Documents first, then streams. The commands that run on Linux
/// only (`trace`, `reuseport`, `selfcheck`, `events`, `load`) have their
/// schemas on Linux only, where docs/json/ is generated and tested.
pub fn schemas() -> Vec<(&'static str, Schema)> {
    use crate::{check, matrix, pairs, peer, ss, why};
    let v = vec![
        ("demo", document::<crate::demo::Demo>("twlab demo --json")),
        ("ss", document::<ss::list::JsonList>("twlab ss --json")),
        (
            "ss-summary",
            document::<ss::summary::Summary>("twlab ss --summary --json"),
        ),
        ("why", document::<why::Diagnosis>("twlab why … --json")),
        (
            "matrix",
            document::<matrix::results::MatrixRun>("twlab matrix --json"),
        ),
        (
            "ss-watch",
            Stream::new("twlab ss --watch --json")
                .line::<ss::watch::JsonRefresh>("refresh")
                .done(),
        ),
        (
            "run",
            Stream::new("twlab run … --json")
                .line::<check::RunLine>("scenario")
                .line::<check::RunSummary>("summary")
                .done(),
        ),
        (
            "pairs",
            Stream::new("twlab pairs --json")
                .line::<pairs::PairResult>("cell")
                .line::<pairs::Summary>("summary")
                .done(),
        ),
        (
            "client",
            Stream::new("twlab client … --json")
                .line::<peer::client::Attempt>("attempt")
                .line::<peer::client::Summary>("summary")
                .done(),
        ),
        (
            "server",
            Stream::new("twlab server … --json")
                .line::<peer::server::ServerEvent>("connection")
                .line::<peer::server::PortFailure>("failure")
                .done(),
        ),
    ];
    #[cfg(target_os = "linux")]
    let v = {
        use crate::{events, load, selfcheck, trace};
        let mut v = v;
        v.extend([
            ("trace", document::<trace::Trace>("twlab trace … --json")),
            (
                "reuseport",
                document::<pairs::group::GroupReport>("twlab reuseport --json"),
            ),
            (
                "selfcheck",
                document::<selfcheck::Report>("twlab selfcheck --json"),
            ),
            (
                "events",
                Stream::new("twlab events --json")
                    .line::<events::Event>("event")
                    .line::<events::Life>("life")
                    .line::<events::life::Takeover>("time-wait")
                    .line::<events::Summary>("summary")
                    .done(),
            ),
            (
                "load",
                Stream::new("twlab load … --json")
                    .line::<load::SampleLine>("sample")
                    .line::<load::ReportLine>("report")
                    .done(),
            ),
        ]);
        v
    };
    v
}

/// The generator every schema comes from: draft 2020-12, describing what
/// is *serialized* (a field skipped when empty is not required; `into`
/// types are described as what they turn into).
fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
}

/// `schema_version`: always [`SCHEMA_VERSION`].
fn version() -> Value {
    serde_json::json!({
        "description": "The version of twlab's JSON output (docs/json.md); raised when a field is removed, renamed or changes meaning.",
        "type": "integer",
        "const": SCHEMA_VERSION,
    })
}

/// The root of a schema file: meta-schema, title, then `body`'s keywords
/// and the definitions it refers to.
fn root(title: &str, body: Map<String, Value>, defs: Map<String, Value>) -> Schema {
    let mut m = Map::new();
    m.insert(
        "$schema".into(),
        "https://json-schema.org/draft/2020-12/schema".into(),
    );
    m.insert("title".into(), title.into());
    m.extend(body);
    if !defs.is_empty() {
        m.insert("$defs".into(), Value::Object(defs));
    }
    Schema::from(m)
}

/// An object that has `T`'s fields (flattened in, as [`super::Doc`] does)
/// plus `extra` properties, all of them required.
fn with_fields(t: Schema, extra: &[(&str, Value)]) -> Map<String, Value> {
    let mut props = Map::new();
    let mut required = Vec::new();
    for (k, v) in extra {
        props.insert((*k).to_string(), v.clone());
        required.push(Value::from(*k));
    }
    let mut m = Map::new();
    m.insert("type".into(), "object".into());
    m.insert("properties".into(), Value::Object(props));
    m.insert("required".into(), Value::Array(required));
    // The body's own schema (usually a `$ref`) applies to the same object.
    m.insert("allOf".into(), Value::Array(vec![t.to_value()]));
    m
}

/// One document: `T`'s fields and `schema_version`.
fn document<T: JsonSchema + ?Sized>(title: &str) -> Schema {
    let mut g = generator();
    let t = g.subschema_for::<T>();
    let body = with_fields(t, &[("schema_version", version())]);
    root(title, body, g.take_definitions(true))
}

/// A stream: one object per line, each line one of the types added with
/// [`Stream::line`], told apart by its `type`.
struct Stream {
    title: &'static str,
    g: SchemaGenerator,
    lines: Vec<Value>,
}

impl Stream {
    fn new(title: &'static str) -> Self {
        Stream {
            title,
            g: generator(),
            lines: Vec::new(),
        }
    }

    /// Lines of type `kind` carry `T`'s fields.
    fn line<T: JsonSchema + ?Sized>(mut self, kind: &str) -> Self {
        let t = self.g.subschema_for::<T>();
        let kind_schema = serde_json::json!({"type": "string", "const": kind});
        let mut m = with_fields(t, &[("schema_version", version()), ("type", kind_schema)]);
        m.insert("title".into(), format!("a `{kind}` line").into());
        self.lines.push(Value::Object(m));
        self
    }

    fn done(mut self) -> Schema {
        let mut body = Map::new();
        body.insert("type".into(), "object".into());
        body.insert("oneOf".into(), Value::Array(self.lines));
        let defs = self.g.take_definitions(true);
        root(self.title, body, defs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_output_has_one_schema_under_its_own_name() {
        let s = schemas();
        let mut names: Vec<&str> = s.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), s.len(), "a name twice: {names:?}");
        for (n, schema) in &s {
            let v = schema.as_value();
            // Every reference resolves inside the file.
            let text = v.to_string();
            for r in text.split("\"$ref\":\"#/$defs/").skip(1) {
                let name = r.split('"').next().unwrap_or_default();
                assert!(
                    v["$defs"].get(name).is_some(),
                    "{n}: $ref to a missing definition {name}"
                );
            }
        }
    }
}
