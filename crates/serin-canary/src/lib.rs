//! Progressive delivery: a canary release moves traffic to a new version of
//! a service step by step (5% → 25% → 50% → 100% by default), compares the
//! new version with the old one over each step's window, and advances,
//! rolls back or halts by itself.
//!
//! The [`Controller`] runs inside the serin process that serves the traffic
//! (one tokio task per canary, one canary per service at a time), driven
//! over the admin API ([`api::router`]). Its two seams are traits, so where
//! weights are written and where figures come from can change without
//! touching the controller:
//!
//! - a [`WeightSink`] writes weights: the running proxy's route rules
//!   (persisted by the proxy), or the HTTPRoute of a cluster (`serin canary
//!   run --kubernetes`);
//! - a [`MetricsSource`] measures a window: the proxy's own per-version
//!   counters (nothing to set up) or [`PrometheusSource`] (PromQL over
//!   Prometheus' HTTP API, with templated queries).
//!
//! The proxy's sink and source, like the Kubernetes sink, are adapters in
//! the binary (crates/serin, `cmd/canary_proxy`, `cmd/canary_kube.rs`):
//! this crate depends on no data plane (`tests/seams.rs` keeps it so), and
//! speaks to one only in the vocabulary of its traits ([`Target`],
//! [`RuleRef`], [`WindowFigures`], ...).
//!
//! # The rules of a canary
//!
//! At each step the sink sets the canary's weight to the step's percentage
//! and the baseline's to the rest, on every route rule whose backends hold
//! both versions. After one interval the window is judged ([`analysis`]):
//!
//! - fewer than `min_requests` canary requests: **inconclusive** — it
//!   neither advances nor counts as healthy; `inconclusive_limit`
//!   inconclusive windows in a row **halt** the canary (weights stay);
//! - canary error rate above `max_error_rate`, or p99(canary) /
//!   p99(baseline) above `max_latency_ratio`: a **failed check**; after
//!   `failures` of them the canary is **rolled back** (all traffic to the
//!   baseline);
//! - otherwise it **passes** and advances; passing the last step
//!   **promotes** the canary (it takes all the traffic).
//!
//! Before the weighted steps, optional first steps send the canary no live
//! weight: a **mirror step** (`mirror_step`: the canary gets shadow copies
//! of a share of the baseline's requests, set with [`WeightSink::mirror`],
//! and is judged by [`analysis::judge_shadow`] on how many of its shadow
//! answers differ from the baseline's or fail, always from serin's own
//! shadow counters), then a header or cookie step.
//!
//! Every change is saved ([`store`]: a state file, or a [`StateBackend`]
//! such as an annotation on the HTTPRoute) before the next window starts,
//! so a restarted serin (even after SIGKILL) resumes each canary at the
//! same step with the same weights, and every decision is appended to an
//! audit log ([`audit`]).
//!
//! # Webhooks, gates and notifications
//!
//! A canary may name webhooks with Flagger's types ([`hooks`], decided by
//! [`gate`]): `pre-rollout` ones are called once before any traffic moves
//! (one that does not answer 2xx rolls the canary back: its weight never
//! left 0), `confirm-rollout` ones hold it there, polled each interval,
//! until they answer 2xx; `rollout` ones are called at the end of each
//! window, as checks of it; at the last step, `confirm-promotion` ones and
//! the manual approval (`approval`, opened by `serin canary approve`) hold
//! the canary at its last weights, judged every window, until they open;
//! `post-rollout` ones are told of the promotion or rollback. Every call is
//! in the audit log; what a canary waits for is in its state
//! ([`CanaryState::waiting`]). Its transitions are told to its `notify`
//! targets off the controller's path ([`notify`]).
//!
//! # Canaries that start themselves
//!
//! Under `serin up`, a service with `auto: true` gets a canary for each new
//! revision an apply brings: [`auto`] decides what an apply means and which
//! stack and gateway hold the new revision beside the baseline; the binary
//! runs it (`cmd/canary_auto.rs`).

pub mod analysis;
pub mod api;
pub mod audit;
pub mod auto;
pub mod check;
mod controller;
pub mod duration_text;
pub mod error;
pub mod gate;
pub mod hooks;
pub mod metrics;
pub mod notify;
pub mod prometheus;
pub mod settings;
pub mod sink;
pub mod source;
pub mod store;

pub use analysis::{Analysis, Verdict, VersionFigures, WindowFigures};
pub use controller::{Command, Controller, ControllerOptions, Status, files_beside};
pub use error::CanaryError;
pub use prometheus::PrometheusSource;
pub use settings::{Options, Settings, StartRequest};
pub use sink::{RuleRef, SinkError, WeightSink};
pub use source::{MetricsSource, Target};
pub use store::{CanaryState, FileBackend, Phase, StateBackend, StoreError};
