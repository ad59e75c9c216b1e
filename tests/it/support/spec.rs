//! Every answer the tests see is checked against `openapi.yaml`, strictly (and so are the examples
//! in `api/`).
//!
//! The spec's Schema Objects are OpenAPI 3.0.3, which JSON Schema tools do not read as such; they
//! are converted once to JSON Schema draft 4 (the dialect OpenAPI 3.0 extends) and checked with the
//! `jsonschema` crate. The conversion is where strictness is decided:
//! - `nullable: true` adds `"null"` to `type` and nothing else: an `enum` must list `null` itself
//!   (OpenAPI 3.0.3 says so), and `nullable` without a `type` of its own (beside `allOf` or `$ref`)
//!   is refused, because it has no effect there;
//! - `additionalProperties` stays as written (absent means any extra property is allowed);
//! - formats are assertions (`date-time`, `uuid`), and an unknown format is an error;
//! - a key without a value (YAML's reading of an unquoted comma in a flow mapping) is an error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Map, Value as Json};

/// Which way a body travels: `readOnly` properties are never sent, `writeOnly` ones never returned.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Direction {
    Request,
    Response,
}

pub struct Spec {
    doc: Json,
    /// Every `components.schemas` entry, converted, per direction.
    definitions: HashMap<Direction, Json>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// The committed spec, loaded (and every schema converted) once per test process.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| Spec::load(dialback::http::docs::OPENAPI_YAML).unwrap_or_else(|e| panic!("openapi.yaml: {e}")))
}

impl Spec {
    pub fn load(yaml: &str) -> Result<Spec, String> {
        let doc: Json = yaml_serde::from_str(yaml).map_err(|e| e.to_string())?;
        let schemas = doc["components"]["schemas"].as_object().ok_or("no components.schemas")?;
        let mut definitions = HashMap::new();
        for direction in [Direction::Request, Direction::Response] {
            let mut converted = Map::new();
            for (name, schema) in schemas {
                converted.insert(name.clone(), convert(schema, direction, &format!("#/components/schemas/{name}"))?);
            }
            definitions.insert(direction, Json::Object(converted));
        }
        Ok(Spec { doc, definitions, validators: Mutex::default() })
    }

    pub fn doc(&self) -> &Json {
        &self.doc
    }

    /// The path template serving a concrete path (literal segments win over parameters), and its
    /// operation for `method` if the spec has one.
    pub fn operation(&self, method: &str, path: &str) -> Option<(&str, Option<&Json>)> {
        let segments: Vec<&str> = path.split('?').next().unwrap_or_default().split('/').collect();
        let mut best: Option<(usize, &str, &Json)> = None;
        for (template, item) in self.doc["paths"].as_object()? {
            let parts: Vec<&str> = template.split('/').collect();
            let fits = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
            let literal = parts.iter().filter(|t| !t.starts_with('{')).count();
            if fits && best.is_none_or(|(l, _, _)| literal > l) {
                best = Some((literal, template, item));
            }
        }
        best.map(|(_, template, item)| (template, item.get(method.to_ascii_lowercase())))
    }

    /// Panics unless the spec documents this answer for the operation: the status, the media type,
    /// and a body valid against its schema.
    pub fn assert_answer(&self, method: &str, template: &str, status: u16, content_type: Option<&str>, body: &[u8]) {
        let at = format!("{method} {template} -> {status}");
        let operation = &self.doc["paths"][template][method.to_ascii_lowercase()];
        assert!(operation.is_object(), "{at}: the operation is not in openapi.yaml");
        let (code, range) = (status.to_string(), format!("{}XX", status / 100));
        let response = [code.as_str(), range.as_str(), "default"]
            .into_iter()
            .find_map(|key| operation["responses"].get(key))
            .unwrap_or_else(|| panic!("{at}: status not documented; body: {}", String::from_utf8_lossy(body)));
        let response = self.resolve(response);
        let Some(content) = response.get("content").and_then(Json::as_object) else {
            assert!(body.is_empty(), "{at}: documented without a body, got {}", String::from_utf8_lossy(body));
            return;
        };
        let media_type = media_type(content_type).unwrap_or_else(|| panic!("{at}: no Content-Type"));
        let media = content.get(&media_type).unwrap_or_else(|| {
            panic!("{at}: Content-Type {media_type} not documented (only {:?})", content.keys().collect::<Vec<_>>())
        });
        let Some(schema) = media.get("schema") else { return };
        if is_json(&media_type) {
            let value: Json = serde_json::from_slice(body)
                .unwrap_or_else(|e| panic!("{at}: the body is not JSON ({e}): {}", String::from_utf8_lossy(body)));
            self.assert_valid(&format!("{at} {media_type}"), schema, Direction::Response, &value);
        }
        // Text, HTML, YAML, audio, event streams: the media type is the contract.
    }

    /// A path or method the spec does not have is answered with the generic problem.
    pub fn assert_unlisted(&self, method: &str, path: &str, status: u16, content_type: Option<&str>, body: &[u8]) {
        let at = format!("{method} {path} (not in the spec) -> {status}");
        assert!(status == 404 || status == 405, "{at}: expected 404 or 405");
        assert_eq!(media_type(content_type).as_deref(), Some("application/problem+json"), "{at}");
        let value: Json = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{at}: the body is not JSON ({e})"));
        self.assert_valid(&at, &json!({"$ref": "#/components/schemas/Problem"}), Direction::Response, &value);
    }

    /// Panics with every violation when `value` does not match `schema` (a spec Schema Object).
    pub fn assert_valid(&self, at: &str, schema: &Json, direction: Direction, value: &Json) {
        let validator = self.validator(at, schema, direction);
        let errors: Vec<String> =
            validator.iter_errors(value).map(|e| format!("  at {:?}: {e}", e.instance_path().as_str())).collect();
        assert!(errors.is_empty(), "{at}: not what openapi.yaml says:\n{}\nbody: {value}", errors.join("\n"));
    }

    fn validator(&self, at: &str, schema: &Json, direction: Direction) -> Arc<jsonschema::Validator> {
        let key = format!("{direction:?} {schema}");
        let mut cache = self.validators.lock().expect("validator cache");
        cache
            .entry(key)
            .or_insert_with(|| {
                let converted = convert(schema, direction, at).unwrap_or_else(|e| panic!("openapi.yaml: {e}"));
                let root = json!({ "definitions": self.definitions[&direction], "allOf": [converted] });
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft4)
                    .should_validate_formats(true)
                    .should_ignore_unknown_formats(false)
                    // Draft 4 knows no uuid format; the API writes them hyphenated.
                    .with_format("uuid", |s: &str| s.len() == 36 && uuid::Uuid::try_parse(s).is_ok())
                    .build(&root)
                    .unwrap_or_else(|e| panic!("{at}: the schema does not compile: {e}"));
                Arc::new(validator)
            })
            .clone()
    }

    /// Follows `$ref`s (to responses, schemas, ...) within the document.
    pub fn resolve<'a>(&'a self, mut node: &'a Json) -> &'a Json {
        while let Some(reference) = node.get("$ref").and_then(Json::as_str) {
            node = reference.trim_start_matches("#/").split('/').fold(&self.doc, |n, key| &n[key]);
        }
        node
    }
}

fn media_type(content_type: Option<&str>) -> Option<String> {
    content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// One OpenAPI 3.0.3 Schema Object as JSON Schema draft 4; an error names what in the spec is
/// wrong or outside what this checker supports.
pub fn convert(schema: &Json, direction: Direction, at: &str) -> Result<Json, String> {
    let object = schema.as_object().ok_or_else(|| format!("{at}: a schema must be a mapping"))?;
    if let Some((key, _)) = object.iter().find(|(k, v)| v.is_null() && !matches!(k.as_str(), "default" | "example")) {
        return Err(format!("{at}: `{key}` has no value (an unquoted comma in a flow mapping? quote the text)"));
    }
    if let Some(reference) = object.get("$ref") {
        if let Some(extra) = object.keys().find(|k| !matches!(k.as_str(), "$ref" | "description")) {
            return Err(format!("{at}: `{extra}` beside $ref is ignored by OpenAPI 3.0; use allOf"));
        }
        let name = reference
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .ok_or_else(|| format!("{at}: unsupported $ref {reference}"))?;
        return Ok(json!({ "$ref": format!("#/definitions/{name}") }));
    }
    let mut out = Map::new();
    for (key, value) in object {
        let sub = |v: &Json, path: &str| convert(v, direction, &format!("{at}/{path}"));
        match key.as_str() {
            "nullable" | "readOnly" | "writeOnly" | "example" | "externalDocs" | "xml" | "deprecated" => {}
            "discriminator" => return Err(format!("{at}: discriminator is not supported by the test checker")),
            "properties" => {
                let mut properties = Map::new();
                for (name, s) in value.as_object().ok_or_else(|| format!("{at}: properties must be a mapping"))? {
                    properties.insert(name.clone(), sub(s, &format!("properties/{name}"))?);
                }
                out.insert(key.clone(), Json::Object(properties));
            }
            "items" | "not" => {
                out.insert(key.clone(), sub(value, key)?);
            }
            "additionalProperties" if value.is_object() => {
                out.insert(key.clone(), sub(value, key)?);
            }
            "allOf" | "anyOf" | "oneOf" => {
                let list = value.as_array().ok_or_else(|| format!("{at}: {key} must be a list"))?;
                let converted = list.iter().enumerate().map(|(i, s)| sub(s, &format!("{key}/{i}")));
                out.insert(key.clone(), Json::Array(converted.collect::<Result<_, _>>()?));
            }
            "format" => match value.as_str() {
                // Formats of bodies that are never parsed as JSON, or of numbers (draft 4 checks
                // formats of strings only).
                Some("binary" | "byte" | "password" | "float" | "double") => {}
                Some("int32") => {
                    out.entry("minimum").or_insert(json!(i32::MIN));
                    out.entry("maximum").or_insert(json!(i32::MAX));
                }
                Some("int64") => {}
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            },
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    let nullable = object.get("nullable") == Some(&Json::Bool(true));
    if nullable {
        let ty = object.get("type").and_then(Json::as_str).ok_or_else(|| {
            format!(
                "{at}: nullable without a type of its own has no effect in OpenAPI 3.0.3 (null must still match the \
                 allOf/$ref): write the type here"
            )
        })?;
        out.insert("type".into(), json!([ty, "null"]));
    }
    if let Some(values) = object.get("enum").and_then(Json::as_array) {
        match (nullable, values.contains(&Json::Null)) {
            (true, false) => return Err(format!("{at}: nullable, but its enum does not list null (OpenAPI 3.0.3)")),
            (false, true) => return Err(format!("{at}: its enum lists null, but it is not nullable")),
            _ => {}
        }
    }
    let hidden_by = if direction == Direction::Response { "writeOnly" } else { "readOnly" };
    if let Some(properties) = object.get("properties").and_then(Json::as_object) {
        let hidden: Vec<&String> =
            properties.iter().filter(|(_, p)| p.get(hidden_by) == Some(&Json::Bool(true))).map(|(k, _)| k).collect();
        if let Some(Json::Array(required)) = out.get_mut("required") {
            required.retain(|r| !hidden.iter().any(|h| r.as_str() == Some(h.as_str())));
            if required.is_empty() {
                out.remove("required"); // draft 4 refuses an empty list
            }
        }
        if let Some(converted) = out.get_mut("properties").and_then(Json::as_object_mut) {
            for name in hidden {
                converted.insert(name.clone(), json!({ "not": {} }));
            }
        }
    }
    Ok(Json::Object(out))
}

/// Checks a response against the spec and gives back an equivalent one (its body read into
/// memory; an event stream is checked by its status and media type and passed on unread).
pub async fn checked(method: &str, path: &str, response: reqwest::Response) -> reqwest::Response {
    let (status, version, headers) = (response.status(), response.version(), response.headers().clone());
    let content_type = headers.get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let spec = spec();
    let operation = spec.operation(method, path);
    if media_type(content_type.as_deref()).as_deref() == Some("text/event-stream") {
        if let Some((template, Some(_))) = operation {
            spec.assert_answer(method, template, status.as_u16(), content_type.as_deref(), b"");
            note_in_ledger(method, template, status.as_u16(), b"");
        }
        return response;
    }
    let body = response.bytes().await.expect("the response body");
    match operation {
        Some((template, Some(_))) => {
            spec.assert_answer(method, template, status.as_u16(), content_type.as_deref(), &body);
            note_in_ledger(method, template, status.as_u16(), &body);
        }
        _ => spec.assert_unlisted(method, path, status.as_u16(), content_type.as_deref(), &body),
    }
    let mut rebuilt = http::Response::builder().status(status).version(version);
    *rebuilt.headers_mut().expect("a fresh builder") = headers;
    reqwest::Response::from(rebuilt.body(body).expect("the same parts"))
}

/// Notes a checked answer for `scripts/spec_coverage_check.py` (which tells what the suite never
/// saw) when `DIALBACK_SPEC_LEDGER_DIR` is set: `METHOD TEMPLATE STATUS`, and for callbacks the
/// status each callback in the body had.
fn note_in_ledger(method: &str, template: &str, status: u16, body: &[u8]) {
    use std::io::Write;
    let Some(dir) = std::env::var_os("DIALBACK_SPEC_LEDGER_DIR") else { return };
    let mut lines = Vec::new();
    let callback_statuses: Vec<String> = match serde_json::from_slice::<Json>(body) {
        Ok(value) if template.starts_with("/v1/callbacks") => {
            let items = value.get("items").and_then(Json::as_array).cloned().unwrap_or_else(|| vec![value]);
            items.iter().filter_map(|c| c.get("status").and_then(Json::as_str).map(str::to_owned)).collect()
        }
        _ => Vec::new(),
    };
    if callback_statuses.is_empty() {
        lines.push(format!("{method} {template} {status}\n"));
    }
    for callback_status in callback_statuses {
        lines.push(format!("{method} {template} {status} {callback_status}\n"));
    }
    let path = std::path::Path::new(&dir).join(format!("{}.txt", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the spec ledger");
    file.write_all(lines.concat().as_bytes()).expect("the spec ledger");
}
