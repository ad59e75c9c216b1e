//! `GET /admin`: the admin panel, one self-contained page (no CDN, works offline) that talks to
//! the same API as everyone else with the admin's pasted token.

use actix_web::HttpResponse;

const PAGE: &str = include_str!("admin_page.html");

pub async fn admin_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        // The page's script and styles are inline; nothing else may load or frame it.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .body(PAGE)
}
