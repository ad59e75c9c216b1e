//! Whether a company's PBX runs the dialplan dialback generated for it: each context it needs,
//! read over AMI (`ShowDialPlan`) and compared priority by priority (`domain::dialplan::check`).
//! One verdict and one wording for the Test button's `dialplan` step and the periodic check.

use crate::ami::AmiClient;
use crate::domain::dialplan::{self, Found, Generated, LiveLine};
use crate::domain::settings::DEFAULT_CONTEXT;

/// What the PBX runs, compared with what dialback generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every context as generated, this version.
    Current,
    /// Something differs, and nothing the company turned on needs it: calls work, with less.
    Warning,
    /// Answer confirmation or return calls need a context the PBX does not run as generated.
    Failing,
    /// The PBX would not list its dialplan (the AMI user's permissions).
    Unreadable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Current => "current",
            Verdict::Warning => "warning",
            Verdict::Failing => "failing",
            Verdict::Unreadable => "unreadable",
        }
    }
}

/// A verdict, what was found, and what to change (none when current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub verdict: Verdict,
    pub detail: String,
    pub hint: Option<String>,
}

/// Reads each context of `expected` on the PBX behind `client` (logged in) and compares it.
pub async fn inspect(client: &AmiClient, expected: &Generated) -> Inspection {
    let mut current = Vec::new();
    let mut warnings = Vec::new();
    for context in &expected.contexts {
        let listed = match client.show_dialplan(&context.name).await {
            Ok(listed) => listed,
            Err(e) => {
                return Inspection {
                    verdict: Verdict::Unreadable,
                    detail: format!("the PBX's dialplan could not be read: {e}"),
                    hint: Some(
                        "give the AMI user `reporting` (or `config`) in the write= line of manager.conf, so dialback can \
                         tell whether the PBX runs its dialplan; until then a call the PBX dials to a client without the \
                         confirmation the settings ask for is still hung up"
                            .into(),
                    ),
                };
            }
        };
        let live: Option<Vec<LiveLine>> = listed.map(|lines| {
            lines
                .into_iter()
                .map(|l| LiveLine {
                    extension: l.extension,
                    priority: l.priority,
                    application: l.application,
                    app_data: l.app_data,
                })
                .collect()
        });
        let found = dialplan::check(context, live.as_deref());
        if found == Found::Current {
            current.push(format!("[{}]", context.name));
            continue;
        }
        let (detail, hint) = problem(&context.name, &found, &expected.version);
        if let Some(feature) = context.required_by {
            return Inspection {
                verdict: Verdict::Failing,
                detail: format!("{feature} needs dialback's context [{}]: {detail}", context.name),
                hint: Some(hint),
            };
        }
        warnings.push((detail, hint));
    }
    if warnings.is_empty() {
        return Inspection {
            verdict: Verdict::Current,
            detail: format!("the PBX runs dialback's dialplan version {}: {}", expected.version, current.join(" and ")),
            hint: None,
        };
    }
    let (details, hints): (Vec<String>, Vec<String>) = warnings.into_iter().unzip();
    Inspection {
        verdict: Verdict::Warning,
        detail: details.join("; "),
        hint: Some(format!(
            "{}. Calls work without it, but the company misses what dialback's context adds: recordings bound to their \
             call by name, the call id in the CDR's userfield, and answer confirmation if it is turned on",
            hints.join("; ")
        )),
    }
}

/// What is wrong with a context the PBX runs, and what to change.
fn problem(context: &str, found: &Found, version: &str) -> (String, String) {
    let install =
        "download the dialplan (GET /v1/admin/pbx/dialplan, or \"Download the dialplan\" on the admin page), \
                   install it as extensions_custom.conf and run `dialplan reload`";
    match found {
        Found::Current => (String::new(), String::new()),
        Found::Missing => (format!("the PBX has no context [{context}]"), install.to_owned()),
        Found::MissingExtension { extension } => (
            format!("context [{context}] has no extension {extension}, which these settings need"),
            format!("the installed file is from other settings: {install}"),
        ),
        Found::Outdated { installed } => (
            format!(
                "the PBX runs an earlier download of [{context}] (version {installed}; these settings make {version})"
            ),
            format!("the settings changed since: {install}"),
        ),
        Found::Differs { extension, priorities, first } => (
            format!(
                "the PBX runs another definition of [{context}]: priorities {} of extension {extension} are not \
                 dialback's (priority {} runs {first})",
                dialplan::ranges(priorities),
                priorities[0]
            ),
            format!(
                "an older [{context}] (in extensions.conf or another included file) loaded before dialback's file \
                 shadows it: Asterisk keeps the first definition of a context priority by priority and logs \
                 \"Unable to register extension '{extension}' priority {} in '{context}', already in use\" on \
                 dialplan reload. Rename or remove that older [{context}], or give dialback's context a name no other \
                 file uses (the setting context, e.g. {DEFAULT_CONTEXT}); then download the dialplan again and run \
                 `dialplan reload`",
                priorities[0]
            ),
        ),
    }
}
