//! A dialplan the simulator runs (`--dialplan FILE`): the contexts of an `extensions.conf`, read by
//! the rules Asterisk applies to one, so a file that dialback generates (or a PBX admin writes) can
//! be loaded and calls placed through it.
//!
//! What is read: `[context]` sections, `exten => pattern,priority[(label)],App(args)` and
//! `same => n[(label)],App(args)`, `;` comments, and extension patterns (`_X.`, `_+X.`, `_9NXX`,
//! `[1-5]`, `!`). The applications the simulator can run are listed in `APPLICATIONS`; any other
//! is refused when the file is loaded, naming its line, rather than skipped at call time.
//!
//! A context may be defined more than once (a company's `extensions.conf` with `[from-courier]`,
//! then dialback's `#include`d file with `[from-courier]` again): as Asterisk's pbx_config, each
//! `[context]` header starts a section whose `n` priorities count from the section's own previous
//! line, and a priority an extension already has is refused (Asterisk logs `Unable to register
//! extension ... already in use`), so the first definition wins priority by priority and a later
//! one only adds the priorities the first lacks (tests/fixtures/asterisk-22/dialplan/k2).

use std::cmp::Ordering;
use std::collections::HashMap;

/// The applications a loaded dialplan may use.
pub(crate) const APPLICATIONS: &[&str] = &[
    "Answer",
    "AGI",
    "Dial",
    // Loaded (the reference PBX's `[from-courier]` uses it, tests/fixtures/asterisk-22/dialplan/k1),
    // but the call runners do not run it yet: a call passes over it.
    "ExecIf",
    "Goto",
    "GotoIf",
    "Hangup",
    "MixMonitor",
    "NoOp",
    "Playback",
    "Progress",
    "Read",
    // Ends a hangup handler (a Gosub-style subroutine).
    "Return",
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
    /// The application's name exactly as the file spells it (what `ShowDialPlan` shows).
    pub app_as_written: String,
    /// The argument text as written (no variable expanded).
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
    /// The context names in the order Asterisk walks them (`ShowDialPlan` without a Context):
    /// pbx_config creates a context at its first header and Asterisk puts each new one at the head
    /// of its list, so the last created comes first.
    walk: Vec<String>,
}

/// The `[context]` section being read: each header starts one, also for a context defined before.
struct Section {
    context: String,
    /// The header's line: priorities written before it belong to an earlier section.
    start: usize,
    /// What `same =>` continues and `n` counts from (pbx_config's `lastextension`, `lastpri`).
    last_extension: Option<String>,
    last_priority: Option<u32>,
}

/// What `ShowDialPlan` lists (pbx.c `manager_show_dialplan_helper`): one row per priority in the
/// order Asterisk walks them, and how many extensions and contexts it went through.
pub(crate) struct Listing<'a> {
    pub rows: Vec<Row<'a>>,
    pub extensions: usize,
    pub contexts: usize,
}

/// One `ListDialplan` event.
pub(crate) struct Row<'a> {
    pub context: &'a str,
    pub extension: &'a str,
    pub priority: &'a Priority,
}

/// The reference PBX's leg-2 extension, as its `ShowDialPlan` listed it
/// (tests/fixtures/asterisk-22/dialplan/k1): what the simulator runs without a loaded dialplan.
const REFERENCE_EXTENSION: &str = "\
exten => _X.,1,NoOp(callback leg2 -> ${EXTEN}, DIALBACK_CALL_ID=${DIALBACK_CALL_ID})
 same => n,ExecIf($[\"${DIALBACK_CALL_ID}\" != \"\"]?Set(CDR(userfield)=${DIALBACK_CALL_ID}))
 same => n,MixMonitor(/var/spool/asterisk/monitor/dialback/${UNIQUEID}.wav)
 same => n,Dial(Local/${EXTEN}@phones,${IF($[\"${DIAL_TIMEOUT}\" != \"\"]?${DIAL_TIMEOUT}:30)})
 same => n,NoOp(DIALSTATUS=${DIALSTATUS} HANGUPCAUSE=${HANGUPCAUSE})
 same => n,Hangup()
";

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
        let mut plan = Dialplan::default();
        let mut section: Option<Section> = None;
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
                // [general] and [globals] are settings, not contexts.
                if !is_settings(name) && !plan.contexts.contains_key(name) {
                    plan.contexts.insert(name.to_owned(), Vec::new());
                    plan.walk.insert(0, name.to_owned());
                }
                section =
                    Some(Section { context: name.to_owned(), start: line, last_extension: None, last_priority: None });
                continue;
            }
            let Some(section) = &mut section else {
                return Err(error(line, "a line outside any [context]"));
            };
            if is_settings(&section.context) {
                continue;
            }
            let (keyword, definition) = code
                .split_once("=>")
                .or_else(|| code.split_once('='))
                .ok_or_else(|| error(line, "expected `exten => ...` or `same => ...`"))?;
            let (pattern, rest) = match keyword.trim() {
                "exten" => {
                    let (pattern, rest) =
                        definition.split_once(',').ok_or_else(|| error(line, "exten => PATTERN,PRIORITY,APP(...)"))?;
                    let pattern = pattern.trim();
                    check_pattern(pattern).map_err(|m| error(line, m))?;
                    section.last_extension = Some(pattern.to_owned());
                    (pattern.to_owned(), rest)
                }
                "same" => {
                    let pattern =
                        section.last_extension.clone().ok_or_else(|| error(line, "same => before any exten =>"))?;
                    (pattern, definition)
                }
                "include" | "switch" | "ignorepat" => {
                    return Err(error(line, format!("{} is not supported by the simulator", keyword.trim())))
                }
                other => return Err(error(line, format!("unknown keyword {other:?}"))),
            };
            let (priority, label, app, app_as_written, data) = priority_line(rest, line)?;
            let number = match priority.as_str() {
                // The section's previous line, whatever its extension and whether it was registered.
                "n" => {
                    section.last_priority.map(|p| p + 1).ok_or_else(|| error(line, "priority n before priority 1"))?
                }
                _ if keyword.trim() == "same" => return Err(error(line, "same => takes priority n")),
                digits => digits.parse().map_err(|_| error(line, format!("{digits:?} is not a priority")))?,
            };
            section.last_priority = Some(number);
            plan.register(section, &pattern, Priority { number, label, app, app_as_written, data, line })?;
        }
        Ok(plan)
    }

    /// Adds a priority as Asterisk's `ast_add_extension2` (replace off, as pbx_config calls it)
    /// does: a number the extension already has is refused with Asterisk's warning, and a label a
    /// priority of an earlier section already has is dropped with its warning. A label twice in
    /// one section, or an extension that does not start at 1, is refused as a load error.
    fn register(&mut self, section: &Section, pattern: &str, mut step: Priority) -> Result<(), DialplanError> {
        let context = section.context.as_str();
        let extensions = self.contexts.get_mut(context).expect("the context was added at its header");
        // Asterisk's extensions are the same when `ext_cmp` finds no difference (`_x.` is `_X.`).
        let Some(extension) = extensions.iter_mut().find(|e| ext_cmp(&e.pattern, pattern).is_eq()) else {
            if step.number != 1 {
                return Err(error(step.line, format!("extension {pattern} starts at priority {}, not 1", step.number)));
            }
            extensions.push(Extension { pattern: pattern.to_owned(), priorities: vec![step] });
            return Ok(());
        };
        let taken = extension.priorities.iter().any(|p| p.number == step.number);
        if let Some(label) = step.label.clone() {
            if !taken && extension.priorities.iter().any(|p| p.line > section.start && p.label == step.label) {
                return Err(error(step.line, format!("label {label} twice in extension {}", extension.pattern)));
            }
            // pbx.c add_priority compares labels up to the first priority not below this one.
            let mut repeated = None;
            for p in &extension.priorities {
                if p.number != step.number && p.label == step.label {
                    repeated = Some(p.number);
                }
                if p.number >= step.number {
                    break;
                }
            }
            if let Some(at) = repeated {
                tracing::warn!(
                    line = step.line,
                    "Extension '{pattern}' priority {} in '{context}', label '{label}' already in use at priority {at}",
                    step.number
                );
                step.label = None;
            }
        }
        if taken {
            if extension.pattern == pattern {
                tracing::warn!(
                    line = step.line,
                    "Unable to register extension '{pattern}' priority {} in '{context}', already in use",
                    step.number
                );
            } else {
                tracing::warn!(
                    line = step.line,
                    "Unable to register extension '{pattern}' priority {} in '{context}', already in use by aliased \
                     extension '{}'",
                    step.number,
                    extension.pattern
                );
            }
            return Ok(());
        }
        let at = extension.priorities.partition_point(|p| p.number < step.number);
        extension.priorities.insert(at, step);
        Ok(())
    }

    /// The dialplan the simulator runs without a loaded one: the reference PBX's leg-2 extension
    /// in each of `contexts` (those an Originate may name).
    pub(crate) fn reference(contexts: &[String]) -> Dialplan {
        let text: String = contexts.iter().map(|context| format!("[{context}]\n{REFERENCE_EXTENSION}")).collect();
        Dialplan::parse(&text).unwrap_or_else(|e| {
            tracing::warn!(error = %dialback_logging::Chain(&e), "a configured context cannot hold the reference dialplan");
            Dialplan::default()
        })
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

    /// What AMI `ShowDialPlan` lists for a `Context` and an `Extension` (either may be absent: all
    /// contexts, every extension), walked as Asterisk walks them: contexts in `walk` order, the
    /// extensions of each in `ext_cmp` order, priorities by number. `Err` is Asterisk's message
    /// for a context or extension not found.
    pub(crate) fn show(&self, context: Option<&str>, exten: Option<&str>) -> Result<Listing<'_>, String> {
        let mut listing = Listing { rows: Vec::new(), extensions: 0, contexts: 0 };
        let mut extension_found = false;
        for name in self.walk.iter().filter(|name| context.is_none_or(|wanted| wanted == name.as_str())) {
            listing.contexts += 1;
            let mut extensions: Vec<&Extension> = self.contexts[name].iter().collect();
            extensions.sort_by(|a, b| ext_cmp(&a.pattern, &b.pattern));
            for extension in extensions {
                if exten.is_some_and(|wanted| !extension_matches(&extension.pattern, wanted)) {
                    continue;
                }
                extension_found = true;
                listing.extensions += 1;
                listing.rows.extend(extension.priorities.iter().map(|priority| Row {
                    context: name,
                    extension: &extension.pattern,
                    priority,
                }));
            }
        }
        match (context, exten) {
            (Some(context), _) if listing.contexts == 0 => Err(format!("Did not find context {context}")),
            (Some(context), Some(exten)) if !extension_found => {
                Err(format!("Did not find extension {exten}@{context}"))
            }
            (None, Some(exten)) if !extension_found => Err(format!("Did not find extension {exten} in any context")),
            _ => Ok(listing),
        }
    }
}

/// `[general]` and `[globals]` hold settings, not extensions (pbx_config compares without case).
fn is_settings(section: &str) -> bool {
    section.eq_ignore_ascii_case("general") || section.eq_ignore_ascii_case("globals")
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

/// `PRIORITY[(label)],App(args)` → (priority, label, app, app as written, args).
type PriorityLine = (String, Option<String>, &'static str, String, String);

fn priority_line(text: &str, line: usize) -> Result<PriorityLine, DialplanError> {
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
    Ok((priority, label, app, name.to_owned(), data))
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

/// Asterisk's order of the extensions in a context (pbx.c `ext_cmp`), which is also how it tells
/// two apart: plain extensions first, compared character by character, then patterns, the more
/// specific first (a smaller set of characters at the first place they differ). `-` is ignored.
fn ext_cmp(left: &str, right: &str) -> Ordering {
    match (left.strip_prefix('_'), right.strip_prefix('_')) {
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => ext_cmp_exten(left, right),
        (Some(left), Some(right)) => ext_cmp_pattern(left.as_bytes(), right.as_bytes()),
    }
}

fn ext_cmp_exten(left: &str, right: &str) -> Ordering {
    left.bytes().filter(|&b| b != b'-').cmp(right.bytes().filter(|&b| b != b'-'))
}

fn ext_cmp_pattern(left: &[u8], right: &[u8]) -> Ordering {
    let (mut l, mut r) = (0, 0);
    loop {
        let (mut left_set, mut right_set) = ([0u8; 32], [0u8; 32]);
        let left_pos = ext_cmp_pattern_pos(left, &mut l, &mut left_set);
        let right_pos = ext_cmp_pattern_pos(right, &mut r, &mut right_set);
        // Sets that score the same: the one with the lower characters first.
        let cmp = left_pos.cmp(&right_pos).then_with(|| right_set.cmp(&left_set));
        if cmp.is_ne() || left_pos == PATTERN_END {
            return cmp;
        }
    }
}

const PATTERN_END: u32 = 0x30000;

/// pbx.c `ext_cmp_pattern_pos`: the place at `*at` as a score (the number of characters it
/// admits, then its lowest one; `.` and `!` after any set, the end after those) and its set of
/// characters as a bitmap; `*at` moves past it.
fn ext_cmp_pattern_pos(pattern: &[u8], at: &mut usize, set: &mut [u8; 32]) -> u32 {
    /// Adds `c` to the set; false when it was there.
    fn add(set: &mut [u8; 32], c: u8) -> bool {
        let (byte, mask) = (usize::from(c / 8), 1 << (7 - c % 8));
        let new = set[byte] & mask == 0;
        set[byte] |= mask;
        new
    }
    loop {
        let mut c = 0;
        while *at < pattern.len() {
            c = pattern[*at];
            *at += 1;
            if c != b'-' {
                break;
            }
            c = 0;
        }
        match c {
            0 => return PATTERN_END,
            b'.' => return 0x18000,
            b'!' => return 0x28000,
            b'n' | b'N' => {
                (b'2'..=b'9').for_each(|c| {
                    add(set, c);
                });
                return 0x0800 | u32::from(b'2');
            }
            b'x' | b'X' => {
                (b'0'..=b'9').for_each(|c| {
                    add(set, c);
                });
                return 0x0A00 | u32::from(b'0');
            }
            b'z' | b'Z' => {
                (b'1'..=b'9').for_each(|c| {
                    add(set, c);
                });
                return 0x0900 | u32::from(b'1');
            }
            b'[' => {}
            c => {
                add(set, c);
                return 0x0100 | u32::from(c);
            }
        }
        let Some(end) = pattern[*at..].iter().position(|&b| b == b']').map(|i| *at + i) else {
            return 0x40000;
        };
        let (mut count, mut lowest) = (0u32, 0xFFu8);
        while *at < end {
            let first = pattern[*at];
            let last = if *at + 2 < end && pattern[*at + 1] == b'-' {
                *at += 2;
                pattern[*at]
            } else {
                first
            };
            lowest = lowest.min(first);
            for c in first..=last {
                if add(set, c) {
                    count += 0x100;
                }
            }
            *at += 1;
        }
        *at += 1;
        // An empty set is skipped.
        if count > 0 {
            return count | u32::from(lowest);
        }
    }
}

/// Whether the extension named `name` is the one `ShowDialPlan`'s `Extension: wanted` asks for
/// (pbx.c `ast_extension_match`): a plain one when equal (`-` ignored), a pattern when `wanted` is
/// the same pattern or a number it matches.
fn extension_matches(name: &str, wanted: &str) -> bool {
    match name.strip_prefix('_') {
        None => ext_cmp_exten(name, wanted).is_eq(),
        Some(pattern) => {
            wanted.strip_prefix('_').is_some_and(|w| ext_cmp_pattern(pattern.as_bytes(), w.as_bytes()).is_eq())
                || pattern_matches(pattern, wanted)
        }
    }
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

/// `${NAME}` (and the substrings `${NAME:offset}` and `${NAME:offset:length}`, a negative offset
/// counting from the end) replaced from `vars`; an unknown variable is empty, as in Asterisk.
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
        let mut parts = after[..end].splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let value = vars.get(name).map(String::as_str).unwrap_or("");
        let offset = parts.next().and_then(|o| o.trim().parse::<i64>().ok()).unwrap_or(0);
        let start =
            if offset < 0 { value.len().saturating_sub(offset.unsigned_abs() as usize) } else { offset as usize };
        let tail = value.get(start.min(value.len())..).unwrap_or("");
        let length = parts.next().and_then(|l| l.trim().parse::<usize>().ok()).unwrap_or(tail.len());
        out.push_str(tail.get(..length.min(tail.len())).unwrap_or(""));
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
        assert_eq!(expand("${EXTEN:-4}/${EXTEN:1:3}/${EXTEN:-20}", &vars), "4567/916/79161234567");
        assert!(!condition(&expand("$[\"${CONFIRM}\" != \"1\"]", &vars)));
        assert!(condition("$[\"\" != \"1\"]"));
    }

    /// The reference PBX's `[from-courier]` (k1), then dialback's definition of it again, as an
    /// `#include`d file would follow it.
    const SHADOWED: &str = "\
[from-courier]
exten => _X.,1,NoOp(old)
 same => n(dial),Dial(Local/${EXTEN}@phones,30)
 same => n,Hangup()

[from-courier] ; extensions_custom.conf
exten => _X.,1,NoOp(dialback marker)
 same => n,Set(CDR(userfield)=${DIALBACK_CALL_ID})
 same => n(dial),Dial(PJSIP/${EXTEN}@trunk,30)
 same => n(done),Hangup()
exten => 101,1,Dial(Local/101@from-internal,30)
";

    #[test]
    fn a_context_defined_again_keeps_the_first_definition_priority_by_priority() {
        let plan = Dialplan::parse(SHADOWED).unwrap();
        let client = plan.find("from-courier", "79161234567").unwrap();
        let steps: Vec<_> = client.priorities.iter().map(|p| (p.number, p.app, p.data.as_str(), p.line)).collect();
        assert_eq!(
            steps,
            [
                (1, "NoOp", "old", 2),
                (2, "Dial", "Local/${EXTEN}@phones,30", 3),
                (3, "Hangup", "", 4),
                // The second definition's 4th line counts from its own 3rd, refused as it was.
                (4, "Hangup", "", 10),
            ]
        );
        assert_eq!(client.target("dial"), Some(1), "the first definition's label");
        assert_eq!(client.target("done"), Some(3), "a label of a priority the first lacked is kept");
        // An extension only the second definition has is added whole.
        assert_eq!(plan.find("from-courier", "101").unwrap().priorities.len(), 1);
        assert_eq!(plan.show(None, None).unwrap().contexts, 1, "one context however often defined");
    }

    #[test]
    fn n_counts_from_the_previous_line_of_the_same_section() {
        let text = "[c]\nexten => 1,1,NoOp()\nexten => 2,1,NoOp()\n same => n,NoOp()\n same => n,NoOp()\n\
                    exten => 1,n,Hangup()\n";
        let plan = Dialplan::parse(text).unwrap();
        let numbers: Vec<_> = plan.find("c", "1").unwrap().priorities.iter().map(|p| p.number).collect();
        assert_eq!(numbers, [1, 4], "lastpri is the section's, whatever the extension");
        // A section starts afresh: nothing to continue or count from.
        assert_eq!(Dialplan::parse("[c]\nexten => 1,1,NoOp()\n[c]\n same => n,NoOp()").unwrap_err().line, 4);
        assert_eq!(Dialplan::parse("[c]\nexten => 1,1,NoOp()\n[c]\nexten => 1,n,NoOp()").unwrap_err().line, 4);
        // A priority refused within one section counts too, and a label reused by a later
        // section on a new priority is dropped (Asterisk warns), not refused.
        let text = "[c]\nexten => 1,1(a),NoOp()\nexten => 1,1,Hangup()\n same => n,NoOp()\n[c]\nexten => 1,3(a),NoOp()";
        let one = Dialplan::parse(text).unwrap();
        let one = one.find("c", "1").unwrap();
        assert_eq!(
            one.priorities.iter().map(|p| (p.number, p.app)).collect::<Vec<_>>(),
            [(1, "NoOp"), (2, "NoOp"), (3, "NoOp")]
        );
        assert_eq!(one.priorities.iter().filter_map(|p| p.label.as_deref()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(one.target("a"), Some(0));
    }

    #[test]
    fn show_dialplan_walks_like_asterisk() {
        let text = "[first]\nexten => _X.,1,NoOp()\nexten => _+X.,1,NoOp()\nexten => 101,1,noop(x)\n\
                    exten => _[1-5]!,1,NoOp()\nexten => _9NXX,1,NoOp()\n[empty]\n[general]\nstatic=yes\n";
        let plan = Dialplan::parse(text).unwrap();
        let all = plan.show(None, None).unwrap();
        assert_eq!((all.contexts, all.extensions, all.rows.len()), (2, 5, 5), "[general] is no context");
        let order: Vec<_> = all.rows.iter().map(|r| r.extension).collect();
        assert_eq!(order, ["101", "_+X.", "_9NXX", "_[1-5]!", "_X."]);
        assert_eq!(all.rows[0].priority.app_as_written, "noop", "the application as the file spells it");
        let walked: Vec<_> = plan.walk.iter().map(String::as_str).collect();
        assert_eq!(walked, ["empty", "first"], "the last context created comes first");

        let one = plan.show(Some("first"), Some("9234")).unwrap();
        assert_eq!(one.rows.iter().map(|r| r.extension).collect::<Vec<_>>(), ["_9NXX", "_X."]);
        assert_eq!(plan.show(Some("first"), Some("_X.")).unwrap().rows.len(), 1, "a pattern names itself");
        assert_eq!(plan.show(Some("empty"), None).unwrap().rows.len(), 0);
        assert_eq!(plan.show(Some("nope"), None).err().unwrap(), "Did not find context nope");
        assert_eq!(plan.show(Some("empty"), Some("1")).err().unwrap(), "Did not find extension 1@empty");
        assert_eq!(plan.show(None, Some("abc")).err().unwrap(), "Did not find extension abc in any context");
        assert!(ext_cmp("_x.", "_X.").is_eq() && ext_cmp("1-01", "101").is_eq());
    }

    #[test]
    fn the_reference_dialplan_is_the_six_priorities_k1_lists() {
        let plan = Dialplan::reference(&["from-courier".to_owned(), "from-internal".to_owned()]);
        let listing = plan.show(Some("from-courier"), None).unwrap();
        let apps: Vec<_> = listing.rows.iter().map(|r| r.priority.app_as_written.as_str()).collect();
        assert_eq!(apps, ["NoOp", "ExecIf", "MixMonitor", "Dial", "NoOp", "Hangup"]);
        assert_eq!(plan.show(None, None).unwrap().contexts, 2);
    }
}
