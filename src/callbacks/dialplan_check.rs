//! Whether a company's PBX runs the dialplan dialback generated for it: each context it needs,
//! read over AMI (`ShowDialPlan`) and compared priority by priority (`domain::dialplan::check`).
//! One verdict and one wording for the Test button's `dialplan` step and the periodic check.

use crate::ami::AmiClient;
use crate::domain::dialplan::{self, Found, Generated, LiveLine};
use crate::domain::settings::DEFAULT_CONTEXT;
use crate::i18n::Text;
use strum::{EnumString, IntoStaticStr, VariantArray};

/// What the PBX runs, compared with what dialback generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, IntoStaticStr, EnumString, VariantArray)]
#[strum(serialize_all = "snake_case")]
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

crate::domain::enum_names!(Verdict);

/// A verdict, what was found, and what to change (none when current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub verdict: Verdict,
    pub detail: String,
    pub hint: Option<Text>,
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
                    hint: Some(Text::new("hint-dialplan-unreadable")),
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
    let (details, hints): (Vec<String>, Vec<Text>) = warnings.into_iter().unzip();
    Inspection {
        verdict: Verdict::Warning,
        detail: details.join("; "),
        hint: Some(Text::new("hint-dialplan-warning").texts("hints", hints)),
    }
}

/// What is wrong with a context the PBX runs, and what to change.
fn problem(context: &str, found: &Found, version: &str) -> (String, Text) {
    match found {
        Found::Current => (String::new(), Text::new("hint-dialplan-missing")),
        Found::Missing => (format!("the PBX has no context [{context}]"), Text::new("hint-dialplan-missing")),
        Found::MissingExtension { extension } => (
            format!("context [{context}] has no extension {extension}, which these settings need"),
            Text::new("hint-dialplan-other-settings"),
        ),
        Found::Outdated { installed } => (
            format!(
                "the PBX runs an earlier download of [{context}] (version {installed}; these settings make {version})"
            ),
            Text::new("hint-dialplan-outdated"),
        ),
        Found::Differs { extension, priorities, first } => (
            format!(
                "the PBX runs another definition of [{context}]: priorities {} of extension {extension} are not \
                 dialback's (priority {} runs {first})",
                dialplan::ranges(priorities),
                priorities[0]
            ),
            Text::new("hint-dialplan-shadowed")
                .arg("context", context)
                .arg("extension", extension)
                .arg("priority", priorities[0])
                .arg("default_context", DEFAULT_CONTEXT),
        ),
    }
}
