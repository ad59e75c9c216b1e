//! What people read, in their language: the admin page and the Test button's hints, in Russian and
//! English. One Fluent catalogue per language (`locales/en.ftl`, `locales/ru.ftl`), compiled in;
//! a unit test checks that both have every message and that the page names only messages they have.
//!
//! The API's problem `title`/`detail` stay English (clients map `code`); what dialback writes for a
//! person to act on (hints) is a [`Text`], a message id with its arguments, rendered in the
//! language the request asked for.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource};
use fluent_syntax::ast;
use serde::{Deserialize, Serialize};

/// The languages dialback speaks to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    En,
    Ru,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::Ru];

    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ru => "ru",
        }
    }

    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        Lang::ALL.into_iter().find(|l| primary.eq_ignore_ascii_case(l.tag()))
    }

    /// The first language of an `Accept-Language` header (by weight, then order) that dialback
    /// speaks; English when it names none.
    pub fn from_accept_language(header: Option<&str>) -> Lang {
        let mut wanted: Vec<(f32, usize, Lang)> = header
            .unwrap_or_default()
            .split(',')
            .enumerate()
            .filter_map(|(i, item)| {
                let mut parts = item.split(';');
                let lang = Lang::from_tag(parts.next()?)?;
                let q = parts
                    .find_map(|p| p.trim().strip_prefix("q="))
                    .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
                (q > 0.0).then_some((q, i, lang))
            })
            .collect();
        wanted.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        wanted.first().map_or(Lang::En, |w| w.2)
    }

    fn source(self) -> &'static str {
        match self {
            Lang::En => include_str!("../locales/en.ftl"),
            Lang::Ru => include_str!("../locales/ru.ftl"),
        }
    }
}

/// Something to tell a person: a message of the catalogues and its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, Arg>,
}

/// An argument: a value as it is (a host, a context name), or other texts, rendered and joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Arg {
    Value(String),
    Texts(Vec<Text>),
}

impl Text {
    pub fn new(id: &str) -> Text {
        Text { id: id.to_owned(), args: BTreeMap::new() }
    }

    pub fn arg(mut self, name: &str, value: impl ToString) -> Text {
        self.args.insert(name.to_owned(), Arg::Value(value.to_string()));
        self
    }

    pub fn texts(mut self, name: &str, texts: Vec<Text>) -> Text {
        self.args.insert(name.to_owned(), Arg::Texts(texts));
        self
    }

    /// In `lang`; a message the catalogue lacks is logged and shown by its id.
    pub fn render(&self, lang: Lang) -> String {
        let catalog = catalog(lang);
        let Some(pattern) = catalog.bundle.get_message(&self.id).and_then(|m| m.value()) else {
            tracing::error!(id = %self.id, lang = lang.tag(), "a message is missing from the catalogue");
            return self.id.clone();
        };
        let mut args = FluentArgs::new();
        for (name, arg) in &self.args {
            let value = match arg {
                Arg::Value(v) => v.clone(),
                Arg::Texts(texts) => texts.iter().map(|t| t.render(lang)).collect::<Vec<_>>().join("; "),
            };
            args.set(name.clone(), value);
        }
        let mut errors = Vec::new();
        let text = catalog.bundle.format_pattern(pattern, Some(&args), &mut errors);
        if !errors.is_empty() {
            tracing::error!(id = %self.id, lang = lang.tag(), errors = ?errors, "a message could not be formatted");
        }
        text.into_owned()
    }
}

struct Catalog {
    bundle: FluentBundle<FluentResource>,
    /// Each message as the page's script fills it in: text with `{$name}` where an argument goes.
    patterns: BTreeMap<String, String>,
}

fn catalog(lang: Lang) -> &'static Catalog {
    static CATALOGS: OnceLock<Vec<Catalog>> = OnceLock::new();
    let all = CATALOGS.get_or_init(|| Lang::ALL.into_iter().map(load).collect());
    &all[Lang::ALL.iter().position(|l| *l == lang).expect("a language of ALL")]
}

fn load(lang: Lang) -> Catalog {
    // The catalogues are compiled in: one that does not parse is a bug the unit tests catch.
    let resource = FluentResource::try_new(lang.source().to_owned())
        .unwrap_or_else(|(_, errors)| panic!("locales/{}.ftl does not parse: {errors:?}", lang.tag()));
    let id: unic_langid::LanguageIdentifier = lang.tag().parse().expect("a language tag");
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // Unicode isolation marks around arguments would end up in the page's text and the hints.
    bundle.set_use_isolating(false);
    let patterns = page_patterns(&resource);
    bundle.add_resource(resource).expect("message ids are unique");
    Catalog { bundle, patterns }
}

/// Every message as text with `{$name}` placeholders (the page's script replaces them). Only
/// text and variables are allowed in them; anything else is left as its source would not help.
fn page_patterns(resource: &FluentResource) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for entry in resource.entries() {
        let ast::Entry::Message(message) = entry else { continue };
        let Some(value) = &message.value else { continue };
        out.insert(message.id.name.to_owned(), flatten(value));
    }
    out
}

fn flatten(pattern: &ast::Pattern<&str>) -> String {
    let mut text = String::new();
    for element in &pattern.elements {
        match element {
            ast::PatternElement::TextElement { value } => text.push_str(value),
            ast::PatternElement::Placeable {
                expression: ast::Expression::Inline(ast::InlineExpression::VariableReference { id }),
            } => {
                text.push_str("{$");
                text.push_str(id.name);
                text.push('}');
            }
            ast::PatternElement::Placeable {
                expression: ast::Expression::Inline(ast::InlineExpression::StringLiteral { value }),
            } => text.push_str(value),
            ast::PatternElement::Placeable { .. } => text.push_str("{?}"),
        }
    }
    text
}

/// A message without arguments, as text.
pub fn message(lang: Lang, id: &str) -> String {
    Text::new(id).render(lang)
}

/// Every message of `lang` as the page's script uses them.
pub fn page_messages(lang: Lang) -> &'static BTreeMap<String, String> {
    &catalog(lang).patterns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_catalogues_parse_and_have_the_same_messages() {
        let en: Vec<_> = page_messages(Lang::En).keys().collect();
        let ru: Vec<_> = page_messages(Lang::Ru).keys().collect();
        let only_en: Vec<_> = en.iter().filter(|k| !ru.contains(k)).collect();
        let only_ru: Vec<_> = ru.iter().filter(|k| !en.contains(k)).collect();
        assert!(only_en.is_empty() && only_ru.is_empty(), "only in en.ftl: {only_en:?}; only in ru.ftl: {only_ru:?}");
        assert!(en.len() > 100, "{} messages", en.len());
    }

    #[test]
    fn the_page_uses_only_text_and_variables() {
        for lang in Lang::ALL {
            for (id, pattern) in page_messages(lang) {
                assert!(!pattern.contains("{?}"), "{}: {id} uses more than text and variables: {pattern}", lang.tag());
            }
        }
    }

    #[test]
    fn each_message_uses_the_same_arguments_in_both_languages() {
        let vars = |p: &str| {
            let mut v: Vec<String> = p
                .split("{$")
                .skip(1)
                .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        for (id, en) in page_messages(Lang::En) {
            let ru = &page_messages(Lang::Ru)[id];
            assert_eq!(vars(en), vars(ru), "{id}: en {en:?}, ru {ru:?}");
        }
    }

    #[test]
    fn accept_language_picks_the_first_spoken_language_by_weight() {
        assert_eq!(Lang::from_accept_language(Some("ru-RU,ru;q=0.9,en-US;q=0.8")), Lang::Ru);
        assert_eq!(Lang::from_accept_language(Some("de-DE,en;q=0.5,ru;q=0.7")), Lang::Ru);
        assert_eq!(Lang::from_accept_language(Some("en-GB, ru")), Lang::En);
        assert_eq!(Lang::from_accept_language(Some("ru;q=0, en;q=0.1")), Lang::En);
        assert_eq!(Lang::from_accept_language(Some("de, fr")), Lang::En);
        assert_eq!(Lang::from_accept_language(None), Lang::En);
    }

    #[test]
    fn texts_render_with_their_arguments_and_nested_texts() {
        let nested = Text::new("hint-dialplan-warning")
            .texts("hints", vec![Text::new("hint-dialplan-missing").arg("context", "from-courier")]);
        let en = nested.render(Lang::En);
        let ru = nested.render(Lang::Ru);
        assert!(en.contains("dialplan reload") && !en.contains('{'), "{en}");
        assert!(ru.contains("dialplan reload") && ru.contains("Звонки"), "{ru}");
        assert_eq!(Text::new("no-such-message").render(Lang::Ru), "no-such-message");
    }

    #[test]
    fn a_text_survives_being_stored() {
        let text = Text::new("hint-auth-failed").arg("user", "dialback");
        let json = serde_json::to_value(&text).unwrap();
        assert_eq!(serde_json::from_value::<Text>(json).unwrap(), text);
    }
}
