//! A dialplan the simulator runs (`--dialplan FILE`): the contexts of an `extensions.conf`, read by
//! the rules Asterisk applies to one, so a file that dialback generates (or a PBX admin writes) can
//! be loaded and calls placed through it.
//!
//! What is read: `[context]` sections, `exten => pattern,priority[(label)],App(args)` and
//! `same => n[(label)],App(args)`, `;` comments, and extension patterns (`_X.`, `_+X.`, `_9NXX`,
//! `[1-5]`, `!`). The applications the simulator can run are listed in `APPLICATIONS`; any other
//! is refused when the file is loaded, naming its line, rather than skipped at call time.

use std::collections::HashMap;

/// The applications a loaded dialplan may use.
pub(crate) const APPLICATIONS: &[&str] = &[
    "Answer",
    "AGI",
    "Dial",
    "Goto",
    "GotoIf",
    "Hangup",
    "MixMonitor",
    "NoOp",
    "Playback",
    "Progress",
    "Read",
    "Ringing",
    "Set",
    "UserEvent",
    "Verbose",
    "Wait",
];

/// One priority of an extension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Priority {
    pub number: u32,
    pub label: Option<String>,
    /// As written in the file, in its canonical case (`Dial`, not `dial`).
    pub app: &'static str,
    pub data: String,
    /// The line it was written on (for errors).
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extension {
    pub pattern: String,
    pub priorities: Vec<Priority>,
}

impl Extension {
    /// The index of the priority a `Goto` names: a label of this extension, or a number.
    pub fn target(&self, label_or_number: &str) -> Option<usize> {
        let wanted = label_or_number.trim();
        match wanted.parse::<u32>() {
            Ok(number) => self.priorities.iter().position(|p| p.number == number),
            Err(_) => self.priorities.iter().position(|p| p.label.as_deref() == Some(wanted)),
        }
    }
}

/// A loaded dialplan: context name → its extensions, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dialplan {
    contexts: HashMap<String, Vec<Extension>>,
}

/// Why a dialplan could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DialplanError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> DialplanError {
    DialplanError { line, message: message.into() }
}

impl Dialplan {
    pub fn parse(text: &str) -> Result<Dialplan, DialplanError> {
        let mut contexts: HashMap<String, Vec<Extension>> = HashMap::new();
        let mut current: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let code = strip_comment(raw).trim();
            if code.is_empty() || code.starts_with("#include") {
                continue;
            }
            if let Some(rest) = code.strip_prefix('[') {
                let name = rest.strip_suffix(']').ok_or_else(|| error(line, "a context header is [name]"))?.trim();
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                    return Err(error(line, format!("{name:?} is not a context name")));
                }
                current = Some(name.to_owned());
                contexts.entry(name.to_owned()).or_default();
                continue;
            }
            let Some(context) = &current else {
                return Err(error(line, "a line outside any [context]"));
            };
            if matches!(context.as_str(), "general" | "globals") {
                continue;
            }
            let (keyword, definition) = code
                .split_once("=>")
                .or_else(|| code.split_once('='))
                .ok_or_else(|| error(line, "expected `exten => ...` or `same => ...`"))?;
            let extensions = contexts.get_mut(context).expect("the context was added at its header");
            match keyword.trim() {
                "exten" => {
                    let (pattern, rest) =
                        definition.split_once(',').ok_or_else(|| error(line, "exten => PATTERN,PRIORITY,APP(...)"))?;
                    let pattern = pattern.trim();
                    check_pattern(pattern).map_err(|m| error(line, m))?;
                    let (priority, label, app, data) = priority_line(rest, line)?;
                    let number = match priority.as_str() {
                        "n" => extensions
                            .iter()
                            .rev()
                            .find(|e| e.pattern == pattern)
                            .and_then(|e| e.priorities.last())
                            .map(|p| p.number + 1)
                            .ok_or_else(|| error(line, "priority n before priority 1"))?,
                        digits => digits.parse().map_err(|_| error(line, format!("{digits:?} is not a priority")))?,
                    };
                    let step = Priority { number, label, app, data, line };
                    match extensions.iter_mut().find(|e| e.pattern == pattern) {
                        Some(extension) => extension.priorities.push(step),
                        None if number == 1 => {
                            extensions.push(Extension { pattern: pattern.to_owned(), priorities: vec![step] })
                        }
                        None => {
                            return Err(error(line, format!("extension {pattern} starts at priority {number}, not 1")))
                        }
                    }
                }
                "same" => {
                    let (priority, label, app, data) = priority_line(definition, line)?;
                    if priority != "n" {
                        return Err(error(line, "same => takes priority n"));
                    }
                    let extension = extensions.last_mut().ok_or_else(|| error(line, "same => before any exten =>"))?;
                    let number = extension.priorities.last().map_or(1, |p| p.number + 1);
                    extension.priorities.push(Priority { number, label, app, data, line });
                }
                "include" | "switch" | "ignorepat" => {
                    return Err(error(line, format!("{} is not supported by the simulator", keyword.trim())))
                }
                other => return Err(error(line, format!("unknown keyword {other:?}"))),
            }
        }
        for extensions in contexts.values() {
            for extension in extensions {
                let mut labels = std::collections::HashSet::new();
                for p in &extension.priorities {
                    if let Some(label) = &p.label {
                        if !labels.insert(label) {
                            return Err(error(
                                p.line,
                                format!("label {label} twice in extension {}", extension.pattern),
                            ));
                        }
                    }
                }
            }
        }
        Ok(Dialplan { contexts })
    }

    pub fn has_context(&self, context: &str) -> bool {
        self.contexts.contains_key(context)
    }

    /// The extension of `context` that runs `exten`: an exact one first, then the patterns in
    /// Asterisk's order (the most specific first).
    pub(crate) fn find(&self, context: &str, exten: &str) -> Option<&Extension> {
        let extensions = self.contexts.get(context)?;
        if let Some(exact) = extensions.iter().find(|e| e.pattern == exten) {
            return Some(exact);
        }
        extensions
            .iter()
            .filter(|e| e.pattern.starts_with('_') && pattern_matches(&e.pattern[1..], exten))
            .min_by_key(|e| specificity(&e.pattern[1..]))
    }
}

/// A line without its comment (`;` to the end, unless written `\;`).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b';' && (i == 0 || bytes[i - 1] != b'\\') {
            return &line[..i];
        }
    }
    line
}

/// `PRIORITY[(label)],App(args)` → (priority, label, app, args).
fn priority_line(text: &str, line: usize) -> Result<(String, Option<String>, &'static str, String), DialplanError> {
    let (priority, call) = text.split_once(',').ok_or_else(|| error(line, "PRIORITY,APP(...) expected"))?;
    let priority = priority.trim();
    let (priority, label) = match priority.split_once('(') {
        Some((p, rest)) => {
            let label = rest.strip_suffix(')').ok_or_else(|| error(line, "a label is written n(label)"))?;
            (p.trim().to_owned(), Some(label.trim().to_owned()))
        }
        None => (priority.to_owned(), None),
    };
    let call = call.trim();
    let (name, data) = match call.split_once('(') {
        Some((name, rest)) => {
            let data =
                rest.strip_suffix(')').ok_or_else(|| error(line, format!("unbalanced parentheses in {call}")))?;
            (name.trim(), data.to_owned())
        }
        None => (call, String::new()),
    };
    let app = APPLICATIONS
        .iter()
        .find(|a| a.eq_ignore_ascii_case(name))
        .ok_or_else(|| error(line, format!("application {name:?} is not one the simulator runs")))?;
    Ok((priority, label, app, data))
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("no extension name given".into());
    }
    if let Some(body) = pattern.strip_prefix('_') {
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '[' => {
                    if !chars.by_ref().any(|c| c == ']') {
                        return Err(format!("pattern {pattern}: unclosed ["));
                    }
                }
                'X' | 'Z' | 'N' | 'x' | 'z' | 'n' | '.' | '!' | '+' | '*' | '#' | '-' => {}
                c if c.is_ascii_digit() => {}
                c => return Err(format!("pattern {pattern}: {c:?} is not a pattern character")),
            }
        }
    } else if !pattern.chars().all(|c| c.is_ascii_alphanumeric() || "+*#-_".contains(c)) {
        return Err(format!("{pattern:?} is not an extension"));
    }
    Ok(())
}

/// One pattern element.
enum Element {
    Set(Vec<(char, char)>),
    /// `.`: one or more of anything; `!`: zero or more.
    Rest {
        at_least_one: bool,
    },
}

fn elements(pattern: &str) -> Vec<Element> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c.to_ascii_uppercase() {
            'X' => Element::Set(vec![('0', '9')]),
            'Z' => Element::Set(vec![('1', '9')]),
            'N' => Element::Set(vec![('2', '9')]),
            '.' => Element::Rest { at_least_one: true },
            '!' => Element::Rest { at_least_one: false },
            '[' => {
                let mut ranges = Vec::new();
                let mut inner: Vec<char> = Vec::new();
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    inner.push(c);
                }
                let mut i = 0;
                while i < inner.len() {
                    if i + 2 < inner.len() && inner[i + 1] == '-' {
                        ranges.push((inner[i], inner[i + 2]));
                        i += 3;
                    } else {
                        ranges.push((inner[i], inner[i]));
                        i += 1;
                    }
                }
                Element::Set(ranges)
            }
            literal => Element::Set(vec![(literal, literal)]),
        });
    }
    out
}

fn pattern_matches(pattern: &str, exten: &str) -> bool {
    let elements = elements(pattern);
    let chars: Vec<char> = exten.chars().collect();
    let mut i = 0;
    for element in &elements {
        match element {
            Element::Rest { at_least_one } => return chars.len() - i >= usize::from(*at_least_one),
            Element::Set(ranges) => {
                let Some(&c) = chars.get(i) else { return false };
                if !ranges.iter().any(|&(lo, hi)| (lo..=hi).contains(&c.to_ascii_uppercase())) {
                    return false;
                }
                i += 1;
            }
        }
    }
    i == chars.len()
}

/// Asterisk tries the most specific pattern first: fewer characters each place admits, and a
/// pattern ending in `.`/`!` after one that does not.
fn specificity(pattern: &str) -> (usize, usize) {
    let elements = elements(pattern);
    let open_ended = elements.iter().any(|e| matches!(e, Element::Rest { .. }));
    let width: usize = elements
        .iter()
        .map(|e| match e {
            Element::Set(ranges) => ranges.iter().map(|&(lo, hi)| (hi as usize).saturating_sub(lo as usize) + 1).sum(),
            Element::Rest { .. } => 0,
        })
        .sum();
    (usize::from(open_ended), width)
}

/// `${NAME}` (and `${NAME:offset}`) replaced from `vars`; an unknown variable is empty, as in
/// Asterisk.
pub(crate) fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let (name, offset) = match name.split_once(':') {
            Some((name, offset)) => (name, offset.parse::<usize>().unwrap_or(0)),
            None => (name, 0),
        };
        let value = vars.get(name).map(String::as_str).unwrap_or("");
        out.push_str(value.get(offset..).unwrap_or(""));
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A `GotoIf` condition after expansion: `$["a" = "b"]`, `$["a" != "b"]`, or a bare value (true
/// unless empty or 0).
pub(crate) fn condition(expression: &str) -> bool {
    let inner = expression.trim().strip_prefix("$[").and_then(|e| e.strip_suffix(']')).unwrap_or(expression).trim();
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    if let Some((a, b)) = inner.split_once("!=") {
        return unquote(a) != unquote(b);
    }
    if let Some((a, b)) = inner.split_once('=') {
        return unquote(a) == unquote(b);
    }
    let value = unquote(inner);
    !(value.is_empty() || value == "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
[general]
static=yes

[from-courier] ; callbacks
exten => 101,1,Set(CDR(userfield)=${DIALBACK_CALL_ID})
 same => n,Dial(Local/${EXTEN}@from-internal,30)
 same => n,Hangup()
exten => _X.,1,NoOp()
 same => n,GotoIf($[\"${CONFIRM}\" != \"1\"]?unconfirmed)
 same => n(dial),Dial(PJSIP/${EXTEN}@trunk,30)
 same => n(unconfirmed),Hangup()
exten => _+X.,1,Hangup()
";

    #[test]
    fn contexts_extensions_priorities_and_labels_are_read() {
        let plan = Dialplan::parse(PLAN).unwrap();
        assert!(plan.has_context("from-courier") && !plan.has_context("from-nowhere"));
        let office = plan.find("from-courier", "101").unwrap();
        assert_eq!(office.priorities.iter().map(|p| p.app).collect::<Vec<_>>(), ["Set", "Dial", "Hangup"]);
        let client = plan.find("from-courier", "79161234567").unwrap();
        assert_eq!(client.pattern, "_X.");
        assert_eq!(client.target("unconfirmed"), Some(3));
        assert_eq!(client.priorities[2].number, 3);
        assert_eq!(plan.find("from-courier", "+79161234567").unwrap().pattern, "_+X.");
        assert!(plan.find("from-courier", "abc").is_none());
    }

    #[test]
    fn what_asterisk_would_refuse_is_refused_with_its_line() {
        for (text, line) in [
            ("[a]\nexten => _X.,2,NoOp()", 2),
            ("exten => _X.,1,NoOp()", 1),
            ("[a]\nexten => _X.,1,System(rm -rf /)", 2),
            ("[a]\nexten => _X.,1,Dial(x\n", 2),
            ("[a]\nsame => n,NoOp()", 2),
            ("[a]\nexten => _X.,1,NoOp()\n same => n(x),NoOp()\n same => n(x),NoOp()", 4),
        ] {
            assert_eq!(Dialplan::parse(text).unwrap_err().line, line, "{text}");
        }
    }

    #[test]
    fn patterns_match_like_asterisk() {
        assert!(pattern_matches("X.", "79161234567"));
        assert!(!pattern_matches("X.", "7"));
        assert!(pattern_matches("9NXX", "9234"));
        assert!(!pattern_matches("9NXX", "9134"));
        assert!(pattern_matches("[1-5]!", "3"));
        assert!(pattern_matches("+X.", "+79161234567"));
        assert!(!pattern_matches("X.", "+79161234567"));
    }

    #[test]
    fn variables_expand_and_conditions_compare() {
        let vars =
            HashMap::from([("EXTEN".to_owned(), "79161234567".to_owned()), ("CONFIRM".to_owned(), "1".to_owned())]);
        assert_eq!(expand("Local/${EXTEN}@phones,30", &vars), "Local/79161234567@phones,30");
        assert_eq!(expand("${EXTEN:1}|${NOPE}", &vars), "9161234567|");
        assert!(!condition(&expand("$[\"${CONFIRM}\" != \"1\"]", &vars)));
        assert!(condition("$[\"\" != \"1\"]"));
    }
}
