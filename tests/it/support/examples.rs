//! Checks the examples in `api/` against `openapi.yaml`: each names an operation (method + path
//! template), a request body and a response; both must validate against the spec's schemas.
//! The validator covers the subset of OpenAPI 3.0 schema the spec uses, and fails on the rest.

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

pub fn check_all() -> usize {
    let spec: Yaml = serde_yaml::from_str(dialback::http::docs::OPENAPI_YAML).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/api/examples");
    let mut count = 0;
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("api/examples exists").map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let example: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        check_one(&spec, &example).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        count += 1;
    }
    count
}

fn check_one(spec: &Yaml, example: &Json) -> Result<(), String> {
    let method = example["request"]["method"].as_str().ok_or("request.method missing")?.to_lowercase();
    let path = example["request"]["path"].as_str().ok_or("request.path missing")?;
    let path_only = path.split('?').next().unwrap();
    let (_, item) = spec["paths"]
        .as_mapping()
        .unwrap()
        .iter()
        .find(|(template, _)| template_matches(template.as_str().unwrap(), path_only))
        .ok_or_else(|| format!("no path in the spec matches {path}"))?;
    let op = item.get(&method).ok_or_else(|| format!("{method} {path} is not in the spec"))?;
    if let Some(body) = example["request"].get("body").filter(|b| !b.is_null()) {
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        if schema.is_null() {
            return Err("the example has a request body but the operation takes none".into());
        }
        validate(spec, schema, body, "request.body")?;
    }
    let status = example["response"]["status"].as_u64().ok_or("response.status missing")?.to_string();
    let mut response =
        op["responses"].get(status.as_str()).ok_or_else(|| format!("status {status} not documented"))?.clone();
    if let Some(r) = response.get("$ref").and_then(Yaml::as_str) {
        response = resolve(spec, r).clone();
    }
    if let Some(body) = example["response"].get("body").filter(|b| !b.is_null()) {
        let content = response["content"].as_mapping().ok_or("response has no documented content")?;
        let (_, media) = content.iter().next().unwrap();
        validate(spec, &media["schema"], body, "response.body")?;
    }
    Ok(())
}

fn template_matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

fn resolve<'a>(spec: &'a Yaml, reference: &str) -> &'a Yaml {
    reference.trim_start_matches("#/").split('/').fold(spec, |node, key| &node[key])
}

fn validate(spec: &Yaml, schema: &Yaml, value: &Json, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Yaml::as_str) {
        return validate(spec, resolve(spec, r), value, at);
    }
    if let Some(all) = schema.get("allOf").and_then(Yaml::as_sequence) {
        return all.iter().try_for_each(|s| validate(spec, s, value, at));
    }
    if let Some(one) = schema.get("oneOf").and_then(Yaml::as_sequence) {
        let ok = one.iter().filter(|s| validate(spec, s, value, at).is_ok()).count();
        return if ok == 1 { Ok(()) } else { Err(format!("{at}: matches {ok} of the oneOf schemas, not exactly one")) };
    }
    if value.is_null() {
        return if schema["nullable"].as_bool() == Some(true) {
            Ok(())
        } else {
            Err(format!("{at}: null is not allowed"))
        };
    }
    if let Some(allowed) = schema.get("enum").and_then(Yaml::as_sequence) {
        let as_json: Vec<Json> = allowed.iter().map(|v| serde_json::to_value(v).unwrap()).collect();
        if !as_json.contains(value) {
            return Err(format!("{at}: {value} is not one of {as_json:?}"));
        }
    }
    let ty = schema["type"].as_str().unwrap_or("");
    let type_ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "" => true,
        other => return Err(format!("{at}: schema type {other} not supported by this checker")),
    };
    if !type_ok {
        return Err(format!("{at}: expected {ty}, got {value}"));
    }
    if let Some(obj) = value.as_object() {
        for req in schema["required"].as_sequence().into_iter().flatten() {
            let key = req.as_str().unwrap();
            if !obj.contains_key(key) {
                return Err(format!("{at}: required property {key} missing"));
            }
        }
        let props = schema["properties"].as_mapping();
        for (key, v) in obj {
            match props.and_then(|p| p.get(key.as_str())) {
                Some(sub) => validate(spec, sub, v, &format!("{at}.{key}"))?,
                None => match schema.get("additionalProperties") {
                    Some(Yaml::Bool(false)) => return Err(format!("{at}: property {key} is not in the schema")),
                    Some(extra @ Yaml::Mapping(_)) => validate(spec, extra, v, &format!("{at}.{key}"))?,
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            validate(spec, &schema["items"], item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}
