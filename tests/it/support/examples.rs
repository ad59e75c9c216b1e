//! Checks the examples in `api/` against `openapi.yaml` with the strict checker of
//! [`super::spec`]: each names an operation (method and path), a request body and a response, and
//! both bodies must be what the spec says.

use serde_json::Value as Json;

use super::spec::{spec, Direction};

pub fn check_all() -> usize {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/api/examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir).expect("api/examples exists").map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut count = 0;
    for path in paths.into_iter().filter(|p| p.extension().is_some_and(|e| e == "json")) {
        let example: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
        check_one(&example, &path.display().to_string());
        count += 1;
    }
    count
}

fn check_one(example: &Json, at: &str) {
    let spec = spec();
    let method = example["request"]["method"].as_str().unwrap_or_else(|| panic!("{at}: request.method missing"));
    let path = example["request"]["path"].as_str().unwrap_or_else(|| panic!("{at}: request.path missing"));
    let (template, operation) = spec.operation(method, path).unwrap_or_else(|| panic!("{at}: no path matches {path}"));
    let operation = operation.unwrap_or_else(|| panic!("{at}: {method} {template} is not in the spec"));
    if let Some(body) = example["request"].get("body").filter(|b| !b.is_null()) {
        let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
        assert!(!schema.is_null(), "{at}: the example has a request body but the operation takes none");
        spec.assert_valid(&format!("{at} request.body"), schema, Direction::Request, body);
    }
    let status = example["response"]["status"].as_u64().unwrap_or_else(|| panic!("{at}: response.status missing"));
    let body = example["response"].get("body").filter(|b| !b.is_null());
    let content_type = match (body, status) {
        (None, _) => None,
        (Some(_), 400..) => Some("application/problem+json"),
        (Some(_), _) => Some("application/json"),
    };
    let bytes = body.map(|b| serde_json::to_vec(b).unwrap()).unwrap_or_default();
    spec.assert_answer(method, template, status as u16, content_type, &bytes);
}
