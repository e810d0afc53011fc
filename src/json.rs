//! The JSON contract: every document twlab prints with `--json` (or
//! `--format json`) carries [`SCHEMA_VERSION`] as its first field, and
//! streams (one JSON object per line) name each line's `type`.
//!
//! The shapes inside follow one rule per concept (docs/json.md): names
//! in snake_case or the user's own spelling (`time-wait`, `1024-1030`),
//! durations as numbers with the unit in the field's name (`_ms`, `_s`,
//! `_us`), errnos as `{"name", "code"}`, never a Rust enum tag or a
//! `Duration` struct. `tests/it/json.rs` holds every command to it.

use serde::Serialize;

/// The version of twlab's JSON output. Raised when a field is removed,
/// renamed or changes meaning; adding a field does not raise it.
pub const SCHEMA_VERSION: u32 = 1;

/// How a command prints: the one output format of every command. `--json`
/// (and matrix's `--format json`) is [`OutputFormat::Json`]; `Md` and
/// `Csv` are for commands with a table of results (matrix's `--format
/// md|csv`), which only they offer; a command without one prints text for
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// For people: lines, aligned columns, or the terminal table (matrix's
    /// `--format table`).
    #[default]
    Text,
    /// JSON: one document, or one object per line for a stream
    /// (docs/json.md).
    Json,
    /// Markdown for a bug report: environment, table, mismatches, rules.
    Md,
    /// CSV: one line per row of the table.
    Csv,
}

impl OutputFormat {
    /// `Json` if `json` (a command's `--json` flag), else `Text`.
    pub fn json_if(json: bool) -> Self {
        if json {
            OutputFormat::Json
        } else {
            OutputFormat::Text
        }
    }

    /// True for [`OutputFormat::Json`].
    pub fn is_json(self) -> bool {
        self == OutputFormat::Json
    }
}

/// A document: `schema_version`, then `type` (for lines of a stream),
/// then the body's own fields.
#[derive(Serialize)]
pub struct Doc<'a, T: Serialize + ?Sized> {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What a line of a stream holds (`attempt`, `summary`, `cell`…).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    /// The body: a struct or a map (its fields are flattened in).
    #[serde(flatten)]
    pub body: &'a T,
}

/// `body` as a whole document (no `type`).
pub fn doc<T: Serialize + ?Sized>(body: &T) -> Doc<'_, T> {
    Doc {
        schema_version: SCHEMA_VERSION,
        kind: None,
        body,
    }
}

/// `body` as one line of a stream, of type `kind`.
pub fn line<'a, T: Serialize + ?Sized>(kind: &'static str, body: &'a T) -> Doc<'a, T> {
    Doc {
        schema_version: SCHEMA_VERSION,
        kind: Some(kind),
        body,
    }
}

/// A [`Duration`](std::time::Duration) as seconds (a float), for a field
/// named `…_s`: `#[serde(rename = "elapsed_s", serialize_with = "crate::json::secs")]`.
pub fn secs<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A [`Duration`](std::time::Duration) as whole milliseconds, for a field
/// named `…_ms`.
pub fn millis<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A whole document, pretty-printed.
pub fn pretty<T: Serialize + ?Sized>(body: &T) -> serde_json::Result<String> {
    serde_json::to_string_pretty(&doc(body))
}

/// One line of a stream, compact (no newline).
pub fn compact_line<T: Serialize + ?Sized>(
    kind: &'static str,
    body: &T,
) -> serde_json::Result<String> {
    serde_json::to_string(&line(kind, body))
}

/// Schema snippets for fields serialized by hand (`#[schemars(schema_with
/// = "crate::json::…")]`); the schemas themselves are put together in
/// the schema module at the top of the library, which sees every output type.
pub(crate) mod schema_of {
    use schemars::{Schema, SchemaGenerator, json_schema};

    /// A duration as a number of seconds (`…_s`, [`super::secs`]).
    pub(crate) fn seconds(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "number", "minimum": 0})
    }

    /// A duration as whole milliseconds (`…_ms`, [`super::millis`]).
    #[cfg(target_os = "linux")] // `load` is Linux only.
    pub(crate) fn millis(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 0})
    }

    /// A number written as a hexadecimal string (`"0xffff8880…"`).
    #[cfg(target_os = "linux")] // `events` is Linux only.
    pub(crate) fn hex(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^0x[0-9a-f]+$"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Body {
        a: u8,
        b_ms: u64,
    }

    #[test]
    fn the_version_comes_first_then_the_type_then_the_body() {
        let s = compact_line("sample", &Body { a: 1, b_ms: 2 }).unwrap();
        assert_eq!(s, r#"{"schema_version":1,"type":"sample","a":1,"b_ms":2}"#);
        let v: serde_json::Value =
            serde_json::from_str(&pretty(&Body { a: 3, b_ms: 4 }).unwrap()).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert!(v.get("type").is_none());
        assert_eq!(v["a"], 3);
    }

    #[test]
    fn a_body_that_is_not_an_object_is_an_error_not_a_silent_shape() {
        // flatten needs a map: a bare array must not print as something else.
        assert!(pretty(&[1, 2]).is_err());
    }
}
