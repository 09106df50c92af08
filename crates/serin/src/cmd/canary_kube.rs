//! `serin canary run --kubernetes`: a canary in a cluster. The controller
//! runs in this process until the canary is promoted, rolled back or
//! halted; weights are written to the HTTPRoute (serin-kube's
//! [`RouteClient`]), figures come from Prometheus, and the state is kept in
//! an annotation on that HTTPRoute, so a restarted `run` (another pod, a
//! rescheduled Job) resumes the canary at the same step.
//!
//! The route's backendRefs name the per-version Services `SERVICE-VERSION`
//! (as `serin render kubernetes` writes them): that is how a backendRef is
//! known to be a version of the service.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use serin_canary::sink::{RuleRef, SinkError, WeightSink, shared_rules};
use serin_canary::source::BoxFuture;
use serin_canary::{
    Controller, ControllerOptions, PrometheusSource, StartRequest, StateBackend, StoreError, Target,
};
use serin_kube::route_client::{RouteClient, RouteError, RuleWeights};

use super::canary::{CanaryArgs, start_body};
use super::canary_status::follow;

/// The annotation on the HTTPRoute that holds the canaries' state (JSON).
pub const STATE_ANNOTATION: &str = "serin.io/canary-state";

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub canary: CanaryArgs,

    /// Write the weights to a Kubernetes HTTPRoute (connecting as kubectl
    /// does: the pod's service account, else KUBECONFIG or ~/.kube/config).
    #[arg(long, required = true)]
    pub kubernetes: bool,

    /// The HTTPRoute whose rules carry the service's versions (backendRefs
    /// named SERVICE-VERSION). Its annotation serin.io/canary-state keeps
    /// the canary's state.
    #[arg(long, value_name = "NAME")]
    pub route: String,

    /// The HTTPRoute's namespace [default: the kubeconfig's; in a pod, its
    /// own].
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Append every decision as a JSON line to this file (default: they
    /// are logged, and the last one is in the state).
    #[arg(long, value_name = "FILE")]
    pub audit_file: Option<PathBuf>,
}

fn sink_error(e: RouteError) -> SinkError {
    SinkError::Rejected {
        route: String::new(),
        message: e.to_string(),
    }
}

/// Weights in an HTTPRoute.
struct HttpRouteSink {
    route: RouteClient,
}

impl HttpRouteSink {
    /// The route's rules as the canary sees them: per rule, the versions
    /// of `service` among its backendRefs with their weights.
    async fn rules_of(&self, service: &str) -> Result<Vec<BTreeMap<String, u32>>, SinkError> {
        let rules = self.route.rules().await.map_err(sink_error)?;
        let prefix = format!("{service}-");
        Ok(rules
            .iter()
            .map(|rule| {
                rule.iter()
                    .filter_map(|(name, w)| {
                        let version = name.strip_prefix(&prefix)?;
                        (!version.is_empty()).then(|| (version.to_string(), *w))
                    })
                    .collect()
            })
            .collect())
    }

    async fn carriers_now(&self, service: &str, version: &str) -> Result<Vec<RuleRef>, SinkError> {
        Ok(self
            .rules_of(service)
            .await?
            .into_iter()
            .enumerate()
            .filter(|(_, w)| w.contains_key(version))
            .map(|(rule, weights)| RuleRef {
                route: self.route.describe(),
                rule,
                weights,
            })
            .collect())
    }
}

impl WeightSink for HttpRouteSink {
    fn versions<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<String>, SinkError>> {
        Box::pin(async move {
            let mut versions: Vec<String> = self
                .rules_of(service)
                .await?
                .into_iter()
                .flat_map(BTreeMap::into_keys)
                .collect();
            versions.sort();
            versions.dedup();
            if versions.is_empty() {
                return Err(SinkError::UnknownService(format!(
                    "{service} (HTTPRoute {} has no backendRef named {service}-VERSION)",
                    self.route.describe()
                )));
            }
            Ok(versions)
        })
    }

    fn carriers<'a>(
        &'a self,
        service: &'a str,
        version: &'a str,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(self.carriers_now(service, version))
    }

    fn set<'a>(
        &'a self,
        target: &'a Target,
        canary_percent: u32,
    ) -> BoxFuture<'a, Result<Vec<RuleRef>, SinkError>> {
        Box::pin(async move {
            let percent = canary_percent.min(100);
            let rules = shared_rules(
                self.carriers_now(&target.service, &target.canary).await?,
                target,
            );
            if rules.is_empty() {
                return Err(SinkError::no_rule(target));
            }
            let name = |v: &str| serin_kube::version_object_name(&target.service, v);
            let changes: BTreeMap<usize, RuleWeights> = rules
                .iter()
                .map(|r| {
                    (
                        r.rule,
                        BTreeMap::from([
                            (name(&target.baseline), 100 - percent),
                            (name(&target.canary), percent),
                        ]),
                    )
                })
                .collect();
            self.route.set_weights(&changes).await.map_err(sink_error)?;
            tracing::info!(route = %self.route.describe(), service = %target.service, baseline = %target.baseline, canary = %target.canary, percent, "HTTPRoute weights written");
            Ok(shared_rules(
                self.carriers_now(&target.service, &target.canary).await?,
                target,
            ))
        })
    }
}

/// The canaries' state in an annotation of the HTTPRoute: it lives as long
/// as the route, is written with the route's resourceVersion like the
/// weights, and `kubectl get httproute NAME -o yaml` shows it.
#[derive(Debug)]
struct AnnotationState {
    route: RouteClient,
}

impl AnnotationState {
    fn error(&self, e: RouteError) -> StoreError {
        StoreError::Backend {
            place: self.place(),
            message: e.to_string(),
        }
    }
}

impl StateBackend for AnnotationState {
    fn place(&self) -> String {
        format!(
            "annotation {STATE_ANNOTATION} of HTTPRoute {}",
            self.route.describe()
        )
    }

    fn load(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move {
            self.route
                .annotation(STATE_ANNOTATION)
                .await
                .map_err(|e| self.error(e))
        })
    }

    fn save<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.route
                .set_annotation(STATE_ANNOTATION, text)
                .await
                .map_err(|e| self.error(e))
        })
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let Some(prometheus) = args.canary.prometheus.clone() else {
        bail!(
            "serin canary run needs --prometheus URL: in a cluster the figures come from Prometheus"
        );
    };
    if args.canary.approval {
        // `serin canary approve` speaks to a serin's admin API, and this
        // process has none: the gate could never open.
        bail!(
            "serin canary run cannot wait for an approval (it has no admin API for `serin canary \
             approve`): use a confirm-promotion webhook (--webhook confirm-promotion=URL) instead"
        );
    }
    if let Some(host) = &args.canary.host_step {
        // The HTTPRoute's canary is its weights: serin adds no rules to it,
        // so a preview host would never be routed.
        bail!(
            "serin canary run --kubernetes cannot take --host-step {host}: it writes only the \
             weights of the HTTPRoute. Preview on a host with an HTTPRoute of its own for {host} \
             that sends to the new version's Service, or run the canary under serin up / serin \
             proxy"
        );
    }
    let service = args.canary.service.clone();
    let request = StartRequest::from_json(start_body(&args.canary))?;
    let rt = super::control_runtime()?;
    let controller = rt.block_on(async {
        let route = RouteClient::connect(args.namespace.as_deref(), &args.route).await?;
        // Fails early on a route that is not there or cannot be read.
        route
            .rules()
            .await
            .with_context(|| format!("cannot read HTTPRoute {}", route.describe()))?;
        let controller = Controller::start(
            Arc::new(HttpRouteSink {
                route: route.clone(),
            }),
            Arc::new(PrometheusSource::in_namespace(
                &prometheus,
                Default::default(),
                route.namespace(),
            )?),
            ControllerOptions {
                state_backend: Some(Arc::new(AnnotationState {
                    route: route.clone(),
                })),
                audit_file: args.audit_file.clone(),
                namespace: Some(route.namespace().to_string()),
                ..ControllerOptions::default()
            },
        )
        .await
        .context("cannot start the canary controller")?;
        match controller.status(&service) {
            Ok(s) if !s.state.phase.is_final() => {
                tracing::info!(service = %service, phase = s.state.phase.as_str(), step = %s.step_label, "resuming the canary kept in the HTTPRoute's annotation");
            }
            _ => {
                controller.start_canary(&service, request).await?;
            }
        }
        anyhow::Ok(controller)
    })?;
    // The state is saved before every next window, so stopping at any
    // point loses nothing: the next run resumes where this one was.
    rt.spawn(async {
        if let Ok(signal) = shutdown_signal().await {
            tracing::info!(signal, "stopped; the canary's state stays in the HTTPRoute's annotation and resumes with the next run");
            std::process::exit(EXIT_SIGNALLED);
        }
    });
    let code = follow(|| Ok(controller.status(&service)?));
    controller.stop();
    code
}

/// Exit status after SIGTERM or Ctrl-C (128 + SIGTERM, as a shell says).
const EXIT_SIGNALLED: i32 = 143;

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
    }
}
