//! The vocabulary of a canary's webhooks, gates and notifications, shared by
//! the stack file's `canary.webhooks` / `canary.notify`, `serin canary start
//! --webhook / --notify` and the admin API: the hook types (Flagger's),
//! one webhook as written (name, type, URL, timeout, metadata) and one
//! notification target. What a hook *means* for a canary is serin-canary's.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::canary_check::{CheckError, check_name};

/// When a webhook is called, with Flagger's names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookType {
    /// Once, before any traffic moves; a non-2xx answer (or none) rolls the
    /// canary back with all traffic on the baseline.
    PreRollout,
    /// At the end of each analysis window; a non-2xx answer is a failed
    /// check.
    Rollout,
    /// A gate before the first step: polled each interval until it answers
    /// 2xx.
    ConfirmRollout,
    /// A gate before the promotion: the canary holds its last weights,
    /// judged every window, polled each interval until it answers 2xx.
    ConfirmPromotion,
    /// After the promotion or the rollback; its answer changes nothing.
    PostRollout,
}

impl HookType {
    pub const ALL: [HookType; 5] = [
        Self::PreRollout,
        Self::Rollout,
        Self::ConfirmRollout,
        Self::ConfirmPromotion,
        Self::PostRollout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRollout => "pre-rollout",
            Self::Rollout => "rollout",
            Self::ConfirmRollout => "confirm-rollout",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::PostRollout => "post-rollout",
        }
    }

    fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for HookType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HookType {
    type Err = HookError;
    fn from_str(s: &str) -> Result<Self, HookError> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| HookError::UnknownType(s.to_string()))
    }
}

/// One webhook of a canary. As JSON: `{"name": "load-test", "type":
/// "pre-rollout", "url": "http://127.0.0.1:8080/", "timeout": "10s",
/// "metadata": {"cmd": "hey -z 1m"}}` (`timeout` and `metadata` optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WrittenWebhook", into = "WrittenWebhook")]
pub struct Webhook {
    pub name: String,
    pub kind: HookType,
    pub url: String,
    /// None: serin-canary's default.
    pub timeout: Option<Duration>,
    /// Handed to the webhook as it is, in the body's `metadata`.
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WrittenWebhook {
    name: String,
    #[serde(rename = "type")]
    kind: HookType,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl TryFrom<WrittenWebhook> for Webhook {
    type Error = String;
    fn try_from(w: WrittenWebhook) -> Result<Self, String> {
        let timeout = w
            .timeout
            .as_deref()
            .map(crate::parse_duration)
            .transpose()
            .map_err(|e| format!("webhook `{}`: timeout: {e}", w.name))?;
        Ok(Webhook {
            name: w.name,
            kind: w.kind,
            url: w.url,
            timeout,
            metadata: w.metadata,
        })
    }
}

impl From<Webhook> for WrittenWebhook {
    fn from(w: Webhook) -> Self {
        WrittenWebhook {
            name: w.name,
            kind: w.kind,
            url: w.url,
            timeout: w.timeout.map(duration_text),
            metadata: w.metadata,
        }
    }
}

/// `10s`, `250ms`: as config writes durations.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The shape of a notification.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifyFormat {
    /// `{"text": "..."}`: what a Slack (or Mattermost, or Discord's
    /// `/slack`) incoming webhook takes.
    #[default]
    Slack,
    /// `{"event": ..., "service": ..., "weights": ..., "message": ...}`.
    Json,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Slack => "slack",
            Self::Json => "json",
        }
    }
}

impl FromStr for NotifyFormat {
    type Err = HookError;
    fn from_str(s: &str) -> Result<Self, HookError> {
        match s {
            "slack" => Ok(Self::Slack),
            "json" => Ok(Self::Json),
            _ => Err(HookError::UnknownFormat(s.to_string())),
        }
    }
}

/// Where a canary's transitions are told. As JSON: `{"url": "...",
/// "format": "slack"}` (`format` optional, `slack` by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTarget {
    pub url: String,
    #[serde(default)]
    pub format: NotifyFormat,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HookError {
    #[error("unknown webhook type `{0}`; the types are {names}", names = HookType::names())]
    UnknownType(String),
    #[error("unknown notification format `{0}`; the formats are slack and json")]
    UnknownFormat(String),
    #[error(
        "`{0}` is not an http:// or https:// URL such as http://127.0.0.1:8080/hook or \
         https://hooks.slack.com/services/..."
    )]
    BadUrl(String),
    #[error("a webhook's timeout must be more than 0")]
    ZeroTimeout,
    #[error("webhook `{0}` is given twice; give the second one its own name")]
    Duplicate(String),
    #[error("{0}")]
    BadName(#[from] CheckError),
    #[error(
        "`{0}` is not a webhook: write TYPE=URL, optionally followed by ;name=NAME and \
         ;timeout=DURATION, e.g. 'confirm-promotion=http://127.0.0.1:9000/ok;timeout=5s'"
    )]
    BadFlag(String),
    #[error(
        "`{0}` is not a notification target: write URL, optionally followed by ;format=slack \
         or ;format=json"
    )]
    BadNotifyFlag(String),
}

/// Checks a hook or notification URL: `http://` or `https://` (verified
/// against the system's trust store, `serin_config::http_client`) and a
/// host.
pub fn check_hook_url(url: &str) -> Result<(), HookError> {
    let ok = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
        && !url.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(HookError::BadUrl(url.to_string()))
    }
}

impl Webhook {
    /// Every problem of this webhook on its own (names against each
    /// other are [`check_unique_hooks`]'s).
    pub fn problems(&self) -> Vec<HookError> {
        let mut out = Vec::new();
        if let Err(e) = check_name(&self.name) {
            out.push(e.into());
        }
        if let Err(e) = check_hook_url(&self.url) {
            out.push(e);
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            out.push(HookError::ZeroTimeout);
        }
        out
    }
}

/// The first webhook name given twice, if any.
pub fn check_unique_hooks(hooks: &[Webhook]) -> Result<(), HookError> {
    let mut seen = std::collections::BTreeSet::new();
    for h in hooks {
        if !seen.insert(h.name.as_str()) {
            return Err(HookError::Duplicate(h.name.clone()));
        }
    }
    Ok(())
}

/// Reads `serin canary start --webhook`: `TYPE=URL[;name=NAME][;timeout=D]`.
/// The name is the type when none is given. The options are the `;name=`
/// and `;timeout=` parts at the end, so a URL may hold `;` itself.
pub fn parse_webhook_flag(s: &str) -> Result<Webhook, HookError> {
    let bad = || HookError::BadFlag(s.to_string());
    let (kind, mut rest) = s.split_once('=').ok_or_else(bad)?;
    let kind: HookType = kind.trim().parse()?;
    let (mut name, mut timeout) = (None, None);
    while let Some(cut) = rest.rfind(';') {
        let tail = rest[cut + 1..].trim();
        if let Some(v) = tail.strip_prefix("name=") {
            name = Some(v.to_string());
        } else if let Some(v) = tail.strip_prefix("timeout=") {
            timeout = Some(crate::parse_duration(v).map_err(|_| bad())?);
        } else {
            break;
        }
        rest = &rest[..cut];
    }
    let hook = Webhook {
        name: name.unwrap_or_else(|| kind.as_str().to_string()),
        kind,
        url: rest.trim().to_string(),
        timeout,
        metadata: BTreeMap::new(),
    };
    match hook.problems().into_iter().next() {
        Some(e) => Err(e),
        None => Ok(hook),
    }
}

/// Reads `serin canary start --notify`: `URL[;format=slack|json]`.
pub fn parse_notify_flag(s: &str) -> Result<NotifyTarget, HookError> {
    let (url, format) = match s.rsplit_once(";format=") {
        Some((url, f)) => (url, f.trim().parse()?),
        None => (s, NotifyFormat::default()),
    };
    if url.is_empty() {
        return Err(HookError::BadNotifyFlag(s.to_string()));
    }
    check_hook_url(url.trim())?;
    Ok(NotifyTarget {
        url: url.trim().to_string(),
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_flags() {
        let h = parse_webhook_flag("confirm-promotion=http://127.0.0.1:9/ok;timeout=5s").unwrap();
        assert_eq!(
            (h.name.as_str(), h.kind, h.url.as_str(), h.timeout),
            (
                "confirm-promotion",
                HookType::ConfirmPromotion,
                "http://127.0.0.1:9/ok",
                Some(Duration::from_secs(5))
            )
        );
        let h = parse_webhook_flag("rollout=http://h/a;b;name=smoke").unwrap();
        assert_eq!((h.name.as_str(), h.url.as_str()), ("smoke", "http://h/a;b"));
        let h = parse_webhook_flag("rollout=https://hooks.example/x").unwrap();
        assert_eq!(h.url, "https://hooks.example/x");
        for (flag, part) in [
            ("http://h/", "not a webhook"),
            ("pre-deploy=http://h/", "unknown webhook type `pre-deploy`"),
            ("rollout=ftp://h/", "not an http:// or https:// URL"),
            ("rollout=https://", "not an http:// or https:// URL"),
            ("rollout=https:///x", "not an http:// or https:// URL"),
            ("rollout=http://h/;timeout=0s", "more than 0"),
            ("rollout=http://h/;name=9x", "not a check name"),
        ] {
            let e = parse_webhook_flag(flag).unwrap_err().to_string();
            assert!(e.contains(part), "{flag}: {part} not in {e}");
        }
    }

    #[test]
    fn notify_flags() {
        let n = parse_notify_flag("http://h/x").unwrap();
        assert_eq!(n.format, NotifyFormat::Slack);
        let n = parse_notify_flag("http://h/x;format=json").unwrap();
        assert_eq!(
            (n.url.as_str(), n.format),
            ("http://h/x", NotifyFormat::Json)
        );
        let e = parse_notify_flag("http://h/x;format=xml").unwrap_err();
        assert_eq!(e, HookError::UnknownFormat("xml".into()));
    }

    #[test]
    fn webhooks_as_json() {
        let h: Webhook = serde_json::from_value(serde_json::json!({
            "name": "gate", "type": "confirm-promotion", "url": "http://h/",
            "timeout": "250ms", "metadata": {"team": "shop"},
        }))
        .unwrap();
        assert_eq!(h.timeout, Some(Duration::from_millis(250)));
        assert_eq!(
            serde_json::to_value(&h).unwrap()["timeout"],
            serde_json::json!("250ms")
        );
        let e = serde_json::from_value::<Webhook>(
            serde_json::json!({"name": "g", "type": "confirm", "url": "http://h/"}),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown variant `confirm`"), "{e}");
    }
}
