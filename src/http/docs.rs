//! The committed OpenAPI spec, served as is, and an API reference page rendered from it on the
//! server (no scripts, no CDN: it works offline).

use std::fmt::Write;
use std::sync::OnceLock;

use actix_web::HttpResponse;
use yaml_serde::Value;

/// The committed spec: the contract. Tests prove the server serves exactly its paths.
pub const OPENAPI_YAML: &str = include_str!("../../openapi.yaml");

pub async fn openapi_yaml() -> HttpResponse {
    HttpResponse::Ok().content_type("application/yaml").body(OPENAPI_YAML)
}

pub async fn docs_page() -> HttpResponse {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| render(OPENAPI_YAML));
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page.as_str())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn render(yaml: &str) -> String {
    let spec: Value = yaml_serde::from_str(yaml).unwrap_or(Value::Null);
    let info = spec.get("info").cloned().unwrap_or(Value::Null);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{title} API reference</title><style>\
body{{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}\
h2{{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}}\
.op{{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}}\
.m{{font-weight:700;font-family:monospace;padding:.1rem .4rem;border-radius:4px;background:#eef}}\
code,pre{{font-family:ui-monospace,monospace;background:#f6f6f6}}pre{{padding:.6rem;overflow:auto}}\
td,th{{text-align:left;padding:.15rem .6rem .15rem 0;vertical-align:top}}</style></head><body>\
<h1>{title} <small>{version}</small></h1><p>{desc}</p><p>Machine-readable spec: <a href=\"/openapi.yaml\">/openapi.yaml</a></p>",
        title = esc(text(&info, "title")),
        version = esc(text(&info, "version")),
        desc = esc(text(&info, "description")),
    );
    if let Some(paths) = spec.get("paths").and_then(Value::as_mapping) {
        html.push_str("<h2>Operations</h2>");
        for (path, item) in paths {
            let path = path.as_str().unwrap_or("");
            for method in ["get", "put", "post", "delete", "patch"] {
                let Some(op) = item.get(method) else { continue };
                let _ = write!(
                    html,
                    "<section class=\"op\" id=\"{id}\"><h3><span class=\"m\">{m}</span> <code>{p}</code></h3><p><strong>{s}</strong></p><p>{d}</p>",
                    id = esc(text(op, "operationId")),
                    m = method.to_uppercase(),
                    p = esc(path),
                    s = esc(text(op, "summary")),
                    d = esc(text(op, "description")),
                );
                if let Some(params) = op.get("parameters").and_then(Value::as_sequence).filter(|p| !p.is_empty()) {
                    html.push_str("<table><tr><th>Parameter</th><th>In</th><th>Description</th></tr>");
                    for p in params {
                        let _ = write!(
                            html,
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                            esc(text(p, "name")),
                            esc(text(p, "in")),
                            esc(text(p, "description"))
                        );
                    }
                    html.push_str("</table>");
                }
                if let Some(responses) = op.get("responses").and_then(Value::as_mapping) {
                    html.push_str("<table><tr><th>Status</th><th>Meaning</th></tr>");
                    for (code, resp) in responses {
                        let code = code
                            .as_str()
                            .map(str::to_owned)
                            .or_else(|| code.as_u64().map(|c| c.to_string()))
                            .unwrap_or_default();
                        let _ =
                            write!(html, "<tr><td>{}</td><td>{}</td></tr>", esc(&code), esc(text(resp, "description")));
                    }
                    html.push_str("</table>");
                }
                html.push_str("</section>");
            }
        }
    }
    if let Some(schemas) = spec.get("components").and_then(|c| c.get("schemas")).and_then(Value::as_mapping) {
        html.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            let body = yaml_serde::to_string(schema).unwrap_or_default();
            let _ = write!(
                html,
                "<h3 id=\"schema-{n}\">{n}</h3><pre>{b}</pre>",
                n = esc(name.as_str().unwrap_or("")),
                b = esc(&body)
            );
        }
    }
    html.push_str("</body></html>");
    html
}
