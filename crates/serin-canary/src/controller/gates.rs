//! The controller's side of webhooks, gates and notifications: calling a
//! canary's hooks (each call in the audit log), the rounds before any
//! traffic moves (pre-rollout, then the confirm-rollout gate), the gate
//! before the promotion, the post-rollout call and the notifications of
//! each transition. What the answers decide is [`crate::gate`]'s.

use tokio::sync::watch;

use super::{Controller, Slot, now_text, step_text, weights_text};
use crate::analysis::Analysis;
use crate::audit::{Actor, AuditEntry};
use crate::gate::{self, GateKind, Position, Waiting};
use crate::hooks::{self, HookBody, HookOutcome};
use crate::notify::{Event, Notification};
use crate::settings::HookType;
use crate::sink::SinkError;
use crate::store::{CanaryState, Phase};

impl Controller {
    /// Calls every webhook of `kind` in turn; each call and its answer go
    /// into the audit log.
    pub(super) async fn call_hooks(
        &self,
        state: &CanaryState,
        kind: HookType,
        window: Option<&Analysis>,
    ) -> Vec<HookOutcome> {
        let mut out = Vec::new();
        for hook in state.settings.hooks(kind) {
            let body = HookBody::new(hook, state, step_text(state), window);
            let outcome = hooks::call(&self.inner.http, hook, &body).await;
            self.record_hook(state, &outcome);
            out.push(outcome);
        }
        out
    }

    fn record_hook(&self, state: &CanaryState, outcome: &HookOutcome) {
        self.inner.audit.record(&AuditEntry {
            time: now_text(),
            actor: Actor::Controller,
            service: state.service.clone(),
            decision: "webhook".into(),
            baseline: state.baseline.clone(),
            canary: state.canary.clone(),
            step: state.step,
            from: state.weights.clone(),
            to: state.weights.clone(),
            figures: None,
            webhook: Some(outcome.clone()),
            message: outcome.text(),
        });
    }

    /// One round before any traffic moved, under the slot's lock: the
    /// pre-rollout webhooks (once; one that fails rolls the canary back),
    /// then the confirm-rollout gate (open: the first step). Answers
    /// whether the gate holds, so that the next round waits an interval.
    pub(super) async fn before_rollout(
        &self,
        service: &str,
        slot: &Slot,
        epochs: &mut watch::Receiver<u64>,
    ) -> bool {
        let _deciding = slot.decide.lock().await;
        if epochs.has_changed().unwrap_or(true) {
            return false;
        }
        let Some(mut state) = self
            .inner
            .store
            .get(service)
            .filter(|s| s.id == slot.id && s.phase == Phase::Progressing && s.before_rollout)
        else {
            return false;
        };
        let newly_passed = !state.pre_rollout_passed;
        if newly_passed {
            let outcomes = self.call_hooks(&state, HookType::PreRollout, None).await;
            if let Some(failed) = gate::pre_rollout_failure(&outcomes) {
                self.roll_back_before_rollout(state, failed).await;
                return false;
            }
            state.pre_rollout_passed = true;
        }
        let confirm = self
            .call_hooks(&state, HookType::ConfirmRollout, None)
            .await;
        let since = waiting_since(&state, GateKind::ConfirmRollout);
        let pending = gate::pending(
            Position::BeforeRollout,
            &state.settings,
            &confirm,
            state.approved,
            service,
            &since,
        );
        match pending {
            Some(w) => {
                if newly_passed || state.waiting.as_ref() != Some(&w) {
                    state.message = format!(
                        "waiting before any traffic for {}; weights stay at {}",
                        w.text(),
                        weights_text(&state.weights)
                    );
                    state.waiting = Some(w);
                    let from = state.weights.clone();
                    self.commit(state, Actor::Controller, "wait", from, None)
                        .await;
                }
                true
            }
            None => {
                self.roll_out(state).await;
                false
            }
        }
    }

    /// The gates before traffic are open: on to the first step.
    async fn roll_out(&self, mut state: CanaryState) {
        let from = state.weights.clone();
        let has = |k| state.settings.hooks(k).next().is_some();
        let passed = match (has(HookType::PreRollout), has(HookType::ConfirmRollout)) {
            (true, true) => "pre-rollout webhooks passed and the confirm-rollout gate opened",
            (false, true) => "the confirm-rollout gate opened",
            _ => "pre-rollout webhooks passed",
        };
        state.waiting = None;
        state.before_rollout = false;
        let decision = match self.enter_first_step(&mut state).await {
            Ok(()) => {
                state.message = format!(
                    "{passed}; now {}, weights {}",
                    step_text(&state),
                    weights_text(&state.weights)
                );
                "advance"
            }
            Err(e) => self.halt_on_sink_error(&mut state, &e),
        };
        self.commit(state, Actor::Controller, decision, from, None)
            .await;
    }

    /// The first step: the mirror step, the header or cookie step, or the
    /// first weighted step.
    pub(super) async fn enter_first_step(&self, state: &mut CanaryState) -> Result<(), SinkError> {
        if state.settings.mirror_step.is_some() {
            self.enter_mirror(state).await
        } else if state.settings.first_step.is_some() {
            self.set_weights(state, 0, true).await
        } else {
            let first = state.settings.steps.first().copied().unwrap_or(100);
            self.set_weights(state, first, false).await
        }
    }

    /// A pre-rollout webhook failed: the canary is rolled back (final),
    /// its weight never having left 0, so that all traffic stays on the
    /// baseline and nothing waits for someone to notice.
    async fn roll_back_before_rollout(&self, mut state: CanaryState, failed: &HookOutcome) {
        let from = state.weights.clone();
        let decision = match self.set_weights(&mut state, 0, false).await {
            Ok(()) => {
                state.phase = Phase::RolledBack;
                state.message = format!(
                    "rolled back before any traffic: {}; all traffic stays on {}/{}",
                    failed.text(),
                    state.service,
                    state.baseline
                );
                "rollback"
            }
            Err(e) => self.halt_on_sink_error(&mut state, &e),
        };
        self.commit(state, Actor::Controller, decision, from, None)
            .await;
    }

    /// At the last step, its window passed: the gate that still holds the
    /// promotion (confirm-promotion webhooks, polled now, then the
    /// approval), if any.
    pub(super) async fn promotion_gate(
        &self,
        state: &CanaryState,
        window: &Analysis,
    ) -> Option<Waiting> {
        let confirm = self
            .call_hooks(state, HookType::ConfirmPromotion, Some(window))
            .await;
        let kind = if confirm.iter().any(|o| !o.ok) {
            GateKind::ConfirmPromotion
        } else {
            GateKind::Approval
        };
        gate::pending(
            Position::BeforePromotion,
            &state.settings,
            &confirm,
            state.approved,
            &state.service,
            &waiting_since(state, kind),
        )
    }

    /// After a decision is kept: its notification, and after a promotion
    /// or rollback the post-rollout webhooks (off the controller's path:
    /// their answers change nothing).
    pub(super) fn after_commit(&self, state: &CanaryState, decision: &str) {
        if let Some(event) = Event::of_decision(decision) {
            self.inner.notifier.send(Notification {
                targets: state.settings.notify.clone(),
                event,
                service: state.service.clone(),
                baseline: state.baseline.clone(),
                canary: state.canary.clone(),
                phase: state.phase.as_str().to_string(),
                step_label: step_text(state),
                weights: state.weights.clone(),
                message: state.message.clone(),
                time: state.updated_at.clone(),
            });
        }
        if state.post_rollout_pending {
            self.spawn_post_rollout(state.clone());
        }
    }

    /// Calls the post-rollout webhooks of a finished canary on a task of
    /// their own, then notes in its state that they were called.
    pub(super) fn spawn_post_rollout(&self, state: CanaryState) {
        let me = self.clone();
        tokio::spawn(async move {
            me.call_hooks(&state, HookType::PostRollout, None).await;
            if let Err(e) = me
                .inner
                .store
                .post_rollout_done(&state.service, state.id)
                .await
            {
                tracing::error!(error = %e, "canary state not saved");
            }
        });
    }
}

/// When the canary began to wait at `gate`: kept while it waits there,
/// now when it starts to.
fn waiting_since(state: &CanaryState, gate: GateKind) -> String {
    state
        .waiting
        .as_ref()
        .filter(|w| w.gate == gate)
        .map_or_else(now_text, |w| w.since.clone())
}
