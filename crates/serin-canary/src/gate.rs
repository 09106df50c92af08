//! What the answers of a canary's webhooks decide, as pure functions (the
//! controller calls the hooks and acts): whether a pre-rollout failed,
//! which gate still holds a canary (`confirm-rollout` before the first
//! step; `confirm-promotion`, then the manual approval, before the
//! promotion), and the `rollout` hooks of a window as checks of it.

use serde::{Deserialize, Serialize};

use crate::analysis::{Analysis, Verdict};
use crate::check::{CheckResult, CheckVerdict};
use crate::hooks::HookOutcome;
use crate::settings::Settings;

/// What a waiting canary waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GateKind {
    /// `confirm-rollout` webhooks, before the first step (no traffic yet).
    ConfirmRollout,
    /// `confirm-promotion` webhooks, at the last step.
    ConfirmPromotion,
    /// `serin canary approve`, at the last step.
    Approval,
}

impl GateKind {
    pub const ALL: [GateKind; 3] = [Self::ConfirmRollout, Self::ConfirmPromotion, Self::Approval];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConfirmRollout => "confirm-rollout",
            Self::ConfirmPromotion => "confirm-promotion",
            Self::Approval => "approval",
        }
    }
}

/// A gate that holds a canary (kept in its state, shown by status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    pub gate: GateKind,
    /// The webhooks that did not answer 2xx, by name (empty for the
    /// approval).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
    /// What they answered last, in words.
    pub last_answer: String,
    /// When it began to wait (RFC 3339).
    pub since: String,
}

impl Waiting {
    /// `confirm-promotion webhook `gate` (answered 403)`, `approval (serin
    /// canary approve qotm)`.
    pub fn text(&self) -> String {
        match self.gate {
            GateKind::Approval => format!("approval ({})", self.last_answer),
            g => format!(
                "{} webhook{} {} ({})",
                g.as_str(),
                if self.hooks.len() == 1 { "" } else { "s" },
                self.hooks
                    .iter()
                    .map(|h| format!("`{h}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.last_answer
            ),
        }
    }
}

/// Where a canary stands before a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// No traffic has moved yet.
    BeforeRollout,
    /// Its last step passed; the promotion is next.
    BeforePromotion,
}

/// The first pre-rollout webhook that did not answer 2xx (all must pass).
pub fn pre_rollout_failure(outcomes: &[HookOutcome]) -> Option<&HookOutcome> {
    outcomes.iter().find(|o| !o.ok)
}

/// The gate that holds a canary at `position`, given the answers of the
/// gate's webhooks just polled (`confirm` are the confirm-rollout ones
/// before the rollout, the confirm-promotion ones before the promotion)
/// and whether it was approved; none: it may go on. `since` is when it
/// began to wait, kept when it was already waiting at the same gate.
pub fn pending(
    position: Position,
    settings: &Settings,
    confirm: &[HookOutcome],
    approved: bool,
    service: &str,
    since: &str,
) -> Option<Waiting> {
    let shut: Vec<&HookOutcome> = confirm.iter().filter(|o| !o.ok).collect();
    if !shut.is_empty() {
        return Some(Waiting {
            gate: match position {
                Position::BeforeRollout => GateKind::ConfirmRollout,
                Position::BeforePromotion => GateKind::ConfirmPromotion,
            },
            hooks: shut.iter().map(|o| o.name.clone()).collect(),
            last_answer: shut
                .iter()
                .map(|o| o.answer_text())
                .collect::<Vec<_>>()
                .join("; "),
            since: since.to_string(),
        });
    }
    (position == Position::BeforePromotion && settings.approval && !approved).then(|| Waiting {
        gate: GateKind::Approval,
        hooks: Vec::new(),
        last_answer: format!("serin canary approve {service}"),
        since: since.to_string(),
    })
}

/// The `rollout` webhooks of a window as checks of it: each is a check
/// with its name, passed by a 2xx answer. One that failed makes the window
/// a failed check even when its figures were too few to judge: its answer
/// is a verdict of its own.
pub fn add_rollout_results(analysis: &mut Analysis, outcomes: &[HookOutcome]) {
    for o in outcomes {
        analysis.checks.push(CheckResult {
            name: o.name.clone(),
            source: "webhook rollout".into(),
            query: Some(o.url.clone()),
            value: o.status.map(f64::from),
            // The 2xx statuses, as a range.
            min: Some(200.0),
            max: Some(299.0),
            verdict: if o.ok {
                CheckVerdict::Pass
            } else {
                CheckVerdict::Fail
            },
            reason: (!o.ok).then(|| format!("rollout webhook `{}` {}", o.name, o.answer_text())),
        });
        if !o.ok {
            analysis.verdict = Verdict::Fail;
            analysis
                .reasons
                .push(format!("rollout webhook `{}` {}", o.name, o.answer_text()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{HookType, Options};

    fn outcome(name: &str, status: Option<u16>) -> HookOutcome {
        HookOutcome {
            name: name.into(),
            kind: HookType::ConfirmPromotion,
            url: "http://h/".into(),
            status,
            error: status.is_none().then(|| "connection refused".into()),
            answer: String::new(),
            ok: status.is_some_and(|s| (200..300).contains(&s)),
            millis: 1,
        }
    }

    /// Where the canary is, its settings, the gate's answers, whether it
    /// was approved, and the gate that should hold it.
    type Row<'a> = (
        Position,
        &'a Settings,
        Vec<HookOutcome>,
        bool,
        Option<GateKind>,
    );

    #[test]
    fn gates_hold_until_every_hook_answers_2xx_then_the_approval() {
        let plain = Options::default().resolve().unwrap();
        let approval = Options {
            approval: Some(true),
            ..Options::default()
        }
        .resolve()
        .unwrap();
        use GateKind::*;
        use Position::*;
        let table: [Row<'_>; 9] = [
            (BeforeRollout, &plain, vec![], false, None),
            (
                BeforeRollout,
                &plain,
                vec![outcome("a", Some(403))],
                false,
                Some(ConfirmRollout),
            ),
            (
                BeforeRollout,
                &approval,
                vec![outcome("a", Some(200))],
                false,
                None,
            ),
            (
                BeforePromotion,
                &plain,
                vec![outcome("a", Some(200)), outcome("b", None)],
                false,
                Some(ConfirmPromotion),
            ),
            (
                BeforePromotion,
                &plain,
                vec![outcome("a", Some(204))],
                false,
                None,
            ),
            (BeforePromotion, &approval, vec![], false, Some(Approval)),
            (BeforePromotion, &approval, vec![], true, None),
            (
                BeforePromotion,
                &approval,
                vec![outcome("a", Some(500))],
                true,
                Some(ConfirmPromotion),
            ),
            (
                BeforePromotion,
                &approval,
                vec![outcome("a", Some(200))],
                false,
                Some(Approval),
            ),
        ];
        for (i, (position, settings, confirm, approved, want)) in table.into_iter().enumerate() {
            let got = pending(position, settings, &confirm, approved, "qotm", "t");
            assert_eq!(got.as_ref().map(|w| w.gate), want, "row {i}: {got:?}");
        }
        let w = pending(
            BeforePromotion,
            &plain,
            &[outcome("a", Some(200)), outcome("b", Some(403))],
            false,
            "qotm",
            "t",
        )
        .unwrap();
        assert_eq!(w.hooks, ["b"]);
        assert_eq!(w.text(), "confirm-promotion webhook `b` (answered 403)");
    }

    #[test]
    fn a_failed_rollout_hook_fails_the_window_even_an_inconclusive_one() {
        use crate::analysis::VersionFigures;
        let window = |verdict| Analysis {
            at: "t".into(),
            step: 0,
            canary_weight: 20,
            window_seconds: 1.0,
            source: "embedded".into(),
            canary: VersionFigures::new("v2", 0, 0, None),
            baseline: VersionFigures::new("v1", 0, 0, None),
            latency_ratio: None,
            verdict,
            reasons: Vec::new(),
            checks: Vec::new(),
            shadow: None,
        };
        let table = [
            (Verdict::Pass, Some(200), Verdict::Pass, CheckVerdict::Pass),
            (Verdict::Pass, Some(500), Verdict::Fail, CheckVerdict::Fail),
            (
                Verdict::Inconclusive,
                None,
                Verdict::Fail,
                CheckVerdict::Fail,
            ),
            (
                Verdict::Inconclusive,
                Some(204),
                Verdict::Inconclusive,
                CheckVerdict::Pass,
            ),
        ];
        for (before, status, after, check) in table {
            let mut a = window(before);
            add_rollout_results(&mut a, &[outcome("smoke", status)]);
            assert_eq!(
                (a.verdict, a.checks[0].verdict),
                (after, check),
                "{status:?}"
            );
            assert_eq!(a.checks[0].name, "smoke");
            assert_eq!(a.reasons.is_empty(), check == CheckVerdict::Pass);
        }
    }

    #[test]
    fn pre_rollout_fails_on_the_first_non_2xx() {
        assert!(pre_rollout_failure(&[outcome("a", Some(200))]).is_none());
        let all = [outcome("a", Some(200)), outcome("b", Some(500))];
        assert_eq!(
            pre_rollout_failure(&all).map(|o| o.name.as_str()),
            Some("b")
        );
        assert!(pre_rollout_failure(&[outcome("c", None)]).is_some());
    }
}
