//! `GET /admin`: the admin panel, one self-contained page (no CDN, works offline) that talks to
//! the same API as everyone else with the admin's pasted token. Served in the admin's language:
//! `?lang=` (the page's switch, remembered in a cookie), else the cookie, else `Accept-Language`.
//! The page's text comes from the catalogues (`crate::i18n`): `{{id}}` in admin_page.html is a
//! message, and the messages its script uses travel with it as JSON.

use std::sync::OnceLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use crate::i18n::{self, Lang};

const TEMPLATE: &str = include_str!("admin_page.html");
const COOKIE: &str = "dialback_lang";

/// The page in `lang`: every `{{id}}` of the template replaced by its message (HTML-escaped, but
/// for messages whose id ends in `-html`, markup of the catalogues' own).
fn render(lang: Lang) -> String {
    let mut page = String::with_capacity(TEMPLATE.len() * 2);
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").map(|e| start + e).expect("every {{ of admin_page.html is closed");
        page.push_str(&rest[..start]);
        let id = &rest[start + 2..end];
        match id {
            "lang" => page.push_str(lang.tag()),
            // Inside <script>: nothing in it may close the element.
            "messages-json" => page.push_str(
                &serde_json::to_string(i18n::page_messages(lang)).expect("messages serialise").replace("</", "<\\/"),
            ),
            id => {
                assert!(i18n::page_messages(lang).contains_key(id), "admin_page.html names {id}, which locales/ lacks");
                let text = i18n::message(lang, id);
                page.push_str(&if id.ends_with("-html") { text } else { escape(&text) });
            }
        }
        rest = &rest[end + 2..];
    }
    page.push_str(rest);
    page
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn page(lang: Lang) -> &'static str {
    static PAGES: OnceLock<Vec<String>> = OnceLock::new();
    let pages = PAGES.get_or_init(|| Lang::ALL.into_iter().map(render).collect());
    &pages[Lang::ALL.iter().position(|l| *l == lang).expect("a language of ALL")]
}

pub async fn admin_page(req: HttpRequest) -> HttpResponse {
    let chosen = req.query_string().split('&').find_map(|p| p.strip_prefix("lang=")).and_then(Lang::from_tag);
    let remembered = req
        .headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .and_then(Lang::from_tag);
    let accepted = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok());
    let lang = chosen.or(remembered).unwrap_or_else(|| Lang::from_accept_language(accepted));
    let mut res = HttpResponse::Ok();
    res.content_type("text/html; charset=utf-8")
        .insert_header(("Content-Language", lang.tag()))
        .insert_header(("Vary", "Accept-Language, Cookie"))
        // The page's script and styles are inline; nothing else may load or frame it.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src 'self' data:; media-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"));
    if let Some(lang) = chosen {
        // The switch is remembered for a year, for this page only.
        res.insert_header((
            header::SET_COOKIE,
            format!("{COOKIE}={}; Path=/admin; Max-Age=31536000; SameSite=Strict; HttpOnly", lang.tag()),
        ));
    }
    res.body(page(lang))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_renders_in_each_language_with_every_message_it_names() {
        for lang in Lang::ALL {
            let page = render(lang);
            assert!(!page.contains("{{"), "{}: a placeholder left", lang.tag());
            assert!(page.starts_with(&format!("<!doctype html>\n<html lang=\"{}\">", lang.tag())));
        }
        assert!(render(Lang::Ru).contains("<h2 id=\"settings-title\">Настройки АТС</h2>"));
        assert!(render(Lang::En).contains("<h2 id=\"settings-title\">PBX settings</h2>"));
    }

    #[test]
    fn every_message_the_script_names_is_in_the_catalogues() {
        let script = &TEMPLATE[TEMPLATE.find("\"use strict\"").expect("the page's script")..];
        let mut named = Vec::new();
        for quote in ['"', '`'] {
            let call = format!("t({quote}");
            for (i, _) in script.match_indices(&call) {
                if script[..i].ends_with(|c: char| c.is_alphanumeric() || c == '.' || c == '_') {
                    continue;
                }
                let rest = &script[i + call.len()..];
                let id = &rest[..rest.find(quote).expect("a closed string")];
                if !id.contains("${") && !id.ends_with('-') {
                    named.push(id.to_owned());
                }
            }
        }
        assert!(named.len() > 30, "{named:?}");
        for lang in Lang::ALL {
            for id in &named {
                assert!(
                    i18n::page_messages(lang).contains_key(id),
                    "the script names {id}, which {}.ftl lacks",
                    lang.tag()
                );
            }
        }
    }

    #[test]
    fn the_messages_cannot_close_the_script_they_travel_in() {
        for lang in Lang::ALL {
            let page = render(lang);
            let json = &page[page.find("id=\"messages\">").unwrap()..];
            let json = &json[..json.find("</script>").unwrap()];
            assert!(json.len() > 1000 && !json.contains("</"), "{}", lang.tag());
        }
    }
}
