//! Where the figures of a window come from.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::analysis::{ShadowFigures, WindowFigures};
use crate::check::QueriedValue;

/// A boxed future, so the traits stay object-safe (`Arc<dyn ...>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The two versions of a service that a canary compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub service: String,
    pub baseline: String,
    pub canary: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot query Prometheus at {url}: {message}")]
    Prometheus { url: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// Measures canary and baseline over a window. One source may serve many
/// canaries (one per service) at once.
pub trait MetricsSource: Send + Sync {
    /// `embedded` or `prometheus`: shown with every analysis.
    fn kind(&self) -> &'static str;

    /// A window for `target` starts now.
    fn begin<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>>;

    /// The figures of `target` since its last [`begin`](Self::begin), which
    /// was `window` ago.
    fn end<'a>(
        &'a self,
        target: &'a Target,
        window: Duration,
    ) -> BoxFuture<'a, Result<WindowFigures, SourceError>>;

    /// A window of the mirror step for `target` starts now: the canary's
    /// shadow answers are counted from here. Only sources that see the
    /// proxy's shadow counters have them (the embedded one).
    fn begin_shadow<'a>(&'a self, _target: &'a Target) -> BoxFuture<'a, Result<(), SourceError>> {
        Box::pin(async {
            Err(SourceError::Other(
                "this metrics source has no shadow figures".into(),
            ))
        })
    }

    /// The canary's shadow answers since the last
    /// [`begin_shadow`](Self::begin_shadow); `percent` is the share
    /// mirrored, to report with them.
    fn end_shadow<'a>(
        &'a self,
        _target: &'a Target,
        _percent: f64,
    ) -> BoxFuture<'a, Result<ShadowFigures, SourceError>> {
        Box::pin(async {
            Err(SourceError::Other(
                "this metrics source has no shadow figures".into(),
            ))
        })
    }

    /// Runs the PromQL checks `(name, template)` of `target`'s canary over
    /// the window that just ended. Only sources that speak PromQL can;
    /// the others answer each with an error (which is inconclusive).
    fn run_checks<'a>(
        &'a self,
        _target: &'a Target,
        _window: Duration,
        checks: &'a [(String, String)],
    ) -> BoxFuture<'a, BTreeMap<String, QueriedValue>> {
        Box::pin(async move {
            checks
                .iter()
                .map(|(name, template)| {
                    (
                        name.clone(),
                        QueriedValue {
                            query: template.clone(),
                            value: Err(format!(
                                "the {} metrics source runs no PromQL (give --prometheus URL)",
                                self.kind()
                            )),
                        },
                    )
                })
                .collect()
        })
    }

    /// The queries it runs for `target` over `window` (name → query), for
    /// `status`; empty when it runs none.
    fn queries(&self, _target: &Target, _window: Duration) -> BTreeMap<String, QueryView> {
        BTreeMap::new()
    }
}

/// One templated query as status shows it: the template and what it
/// becomes for each version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueryView {
    pub template: String,
    pub canary: String,
    pub baseline: String,
}
