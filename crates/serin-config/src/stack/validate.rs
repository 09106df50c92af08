//! From raw structs to the validated [`Stack`]: defaults, merging a service's
//! settings into its versions, reading files and secrets, and the checks that
//! need more than one value (names, `dependsOn`, probes, strategies). Every
//! problem is reported with the place it was written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::canary_check::{
    CanaryCheck, CheckError, CheckSource, Figure, check_name, check_range, check_template,
};
use super::canary_hook::{
    HookError, HookType, NotifyFormat, NotifyTarget, Webhook, check_hook_url,
};
use super::model::*;
use super::raw::*;
use crate::decode::{Spanned, suggest};
use crate::error::{Problems, Span};

pub(super) fn validate(
    raw: &RawStack,
    file_name: &str,
    base_dir: &Path,
    p: &mut Problems,
) -> Stack {
    // When `services` is missing or unreadable, that is reported already
    // and this is dropped (its path is settled).
    if raw.services.value.is_empty() {
        raw.services.report(p, "a stack needs at least one service");
    }
    let services: Vec<ServiceSpec> = raw
        .services
        .value
        .iter()
        .map(|s| service(s, base_dir, p))
        .collect();
    check_unique_services(&raw.services.value, p);
    check_replica_names(&raw.services.value, &services, p);
    check_depends_on(&raw.services.value, p);
    Stack {
        source: file_name.to_string(),
        base_dir: base_dir.to_path_buf(),
        services,
    }
}

/// Where a value of a version came from when the version has no own place
/// (a service without `versions`).
struct Place {
    span: Span,
    path: String,
}

impl Place {
    fn report(&self, p: &mut Problems, message: impl Into<String>) {
        p.report(self.span, self.path.clone(), message);
    }
}

fn service(raw: &RawService, base_dir: &Path, p: &mut Problems) -> ServiceSpec {
    check_service_name(&raw.name, p);
    let versions = match &raw.versions {
        None => vec![version(raw, None, base_dir, p)],
        Some(vs) if vs.value.is_empty() => {
            vs.report(
                p,
                format!(
                    "a service needs at least one version; leave `versions` out for a single \
                     version named `{DEFAULT_VERSION}`"
                ),
            );
            Vec::new()
        }
        Some(vs) => vs
            .value
            .iter()
            .map(|v| version(raw, Some(v), base_dir, p))
            .collect(),
    };
    if let Some(vs) = &raw.versions {
        let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
        for v in &vs.value {
            if let Some(line) = seen.get(v.name.value.as_str()) {
                v.name.report(
                    p,
                    format!(
                        "version `{}` is defined twice (first on line {line})",
                        v.name.value
                    ),
                );
            } else {
                seen.insert(&v.name.value, v.name.span.line);
            }
        }
    }
    let canary = raw.canary.as_ref().map(|c| {
        check_auto_names(c, &versions, p);
        canary(c, p)
    });
    let watch = raw
        .watch
        .as_ref()
        .map(|w| super::watch::validate(w, base_dir, p));
    if let (Some(raw_watch), Some(watch)) = (&raw.watch, &watch) {
        check_build_output(raw, raw_watch, watch, &versions, base_dir, p);
    }
    ServiceSpec {
        name: raw.name.value.clone(),
        depends_on: raw
            .depends_on
            .iter()
            .map(|d| Dependency {
                service: d.service.value.clone(),
                condition: d.condition.as_ref().map(|c| c.value).unwrap_or_default(),
            })
            .collect(),
        versions,
        canary,
        watch,
    }
}

/// A build of an `auto: true` service must leave the running revision's
/// program alone, so it names its `output` (copied out per build), and
/// that output must be what a version runs: its `command`, or a folder
/// holding it or one of its `args`.
fn check_build_output(
    raw: &RawService,
    raw_watch: &super::watch::RawWatch,
    watch: &super::watch::WatchSpec,
    versions: &[VersionSpec],
    base_dir: &Path,
    p: &mut Problems,
) {
    let auto = raw
        .canary
        .as_ref()
        .and_then(|c| c.auto.as_ref())
        .is_some_and(|a| a.value);
    match (&watch.output, &raw_watch.output, &raw_watch.build) {
        (None, _, Some(build)) if auto => build.argv.report(
            p,
            "with `canary: {auto: true}` a build needs `output`: the file or folder it writes \
             that the versions run (e.g. `output: target/debug/app`), so each build runs from \
             its own copy and the running revision keeps serving while the new one is judged",
        ),
        (Some(out), Some(written), _) => {
            let runs_it = versions
                .iter()
                .any(|v| super::build_output::runs_from(v, out, base_dir));
            if !runs_it {
                written.report(
                    p,
                    format!(
                        "no version runs `{}` ({}): `output` is what the versions' `command` \
                         (or one of their `args`) runs",
                        written.value,
                        out.display()
                    ),
                );
            }
        }
        _ => {}
    }
}

/// With `auto: true`, a new revision of version `X` runs as `X-canary`: no
/// version of the service may already have that name.
fn check_auto_names(raw: &RawCanary, versions: &[VersionSpec], p: &mut Problems) {
    let Some(auto) = raw.auto.as_ref().filter(|a| a.value) else {
        return;
    };
    for v in versions {
        let taken = format!("{}{CANARY_VERSION_SUFFIX}", v.name);
        if versions.iter().any(|w| w.name == taken) {
            auto.report(
                p,
                format!(
                    "`auto: true` runs a new revision of `{}` as `{taken}`, which is already a \
                     version of this service: rename it",
                    v.name
                ),
            );
        }
    }
}

/// What a `blueGreen` section previews on: its header or its host.
#[derive(Default)]
struct BlueGreenPreview {
    header: Option<String>,
    host: Option<String>,
}

/// `blueGreen`: the preview (a header or a host) is a first step and the
/// switch is one step of 100%, so the canary takes no steps or
/// header/cookie step of its own. One preview match, not both: a request
/// carrying one but not the other would quietly see the old version.
fn blue_green(raw: &RawCanary, p: &mut Problems) -> BlueGreenPreview {
    let Some(bg) = raw.blue_green.as_ref() else {
        return BlueGreenPreview::default();
    };
    for (given, key) in [
        (
            raw.steps.as_ref().map(|s| (s.span, s.path.clone())),
            "steps",
        ),
        (
            raw.header_step.as_ref().map(|s| (s.span, s.path.clone())),
            "headerStep",
        ),
        (
            raw.cookie_step.as_ref().map(|s| (s.span, s.path.clone())),
            "cookieStep",
        ),
        (
            raw.mirror_step.as_ref().map(|s| (s.span, s.path.clone())),
            "mirrorStep",
        ),
    ] {
        if let Some((span, path)) = given {
            p.report(
                span,
                path,
                format!(
                    "`{key}` does not go with `blueGreen`, which previews on its header or host \
                     and then switches at once (steps [100])"
                ),
            );
        }
    }
    match (&bg.preview_header, &bg.preview_host) {
        (None, None) => {
            p.report(
                bg.span,
                bg.node_path.clone(),
                "`blueGreen` needs `previewHeader` (NAME=VALUE, e.g. x-preview=1) or \
                 `previewHost` (a host name, e.g. preview.qotm.local)",
            );
            BlueGreenPreview::default()
        }
        (Some(_), Some(host)) => {
            host.report(
                p,
                "`blueGreen` previews on `previewHeader` or `previewHost`, not both: a request \
                 with one but not the other would see the old version",
            );
            BlueGreenPreview::default()
        }
        (Some(header), None) => {
            if let Err(msg) = parse_match_step(&header.value) {
                header.report(p, msg);
            }
            BlueGreenPreview {
                header: Some(header.value.clone()),
                host: None,
            }
        }
        (None, Some(host)) => match parse_preview_host(&host.value) {
            Ok(name) => BlueGreenPreview {
                header: None,
                host: Some(name),
            },
            Err(msg) => {
                host.report(p, msg);
                BlueGreenPreview::default()
            }
        },
    }
}

/// A service's `canary:` defaults, each value checked on its own.
fn canary(raw: &RawCanary, p: &mut Problems) -> CanaryDefaults {
    let steps = raw.steps.as_ref().map(|steps| {
        let values: Vec<u32> = steps.value.iter().map(|s| s.value).collect();
        if let Err(msg) = check_canary_steps(&values) {
            // Point at the first bad step when there is one.
            match steps.value.iter().find(|s| !(1..=100).contains(&s.value)) {
                Some(bad) => bad.report(p, msg),
                None => steps.report(p, msg),
            }
        }
        values
    });
    let interval = raw.interval.as_ref().map(|i| {
        if i.value.is_zero() {
            i.report(p, "`interval` must be more than 0");
        }
        i.value
    });
    let max_error_rate = raw
        .max_error_rate
        .as_ref()
        .and_then(|r| match parse_rate(&r.value) {
            Ok(v) => Some(v),
            Err(msg) => {
                r.report(p, msg);
                None
            }
        });
    let max_latency_ratio = raw.max_latency_ratio.as_ref().map(|r| {
        if !(r.value.is_finite() && r.value >= 1.0) {
            r.report(
                p,
                format!(
                    "`maxLatencyRatio` must be at least 1 (the canary's p99 over the \
                     baseline's), found {}",
                    r.value
                ),
            );
        }
        r.value
    });
    let at_least_one = |v: &Option<Spanned<u32>>, key: &str, p: &mut Problems| {
        v.as_ref().map(|v| {
            if v.value < 1 {
                v.report(p, format!("`{key}` must be at least 1"));
            }
            v.value
        })
    };
    let failures = at_least_one(&raw.failures, "failures", p);
    let inconclusive_limit = at_least_one(&raw.inconclusive_limit, "inconclusiveLimit", p);
    let min_requests = raw.min_requests.as_ref().map(|m| {
        if m.value < 1 {
            m.report(
                p,
                "`minRequests` must be at least 1: a window with no traffic proves nothing",
            );
        }
        m.value
    });
    let prometheus = raw.prometheus.as_ref().map(|u| {
        let ok = u
            .value
            .strip_prefix("http://")
            .or_else(|| u.value.strip_prefix("https://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(char::is_whitespace));
        if !ok {
            u.report(
                p,
                format!(
                    "`{}` is not a Prometheus URL such as http://127.0.0.1:9090",
                    u.value
                ),
            );
        }
        u.value.trim_end_matches('/').to_string()
    });
    let mut queries = BTreeMap::new();
    if let Some(q) = &raw.queries {
        for (name, template) in [
            ("requests", &q.requests),
            ("error_rate", &q.error_rate),
            ("latency_p99", &q.latency_p99),
        ] {
            if let Some(t) = template {
                if t.value.trim().is_empty() {
                    t.report(p, "a query template cannot be empty");
                }
                queries.insert(name.to_string(), t.value.clone());
            }
        }
    }
    let match_step = |v: &Option<Spanned<String>>, p: &mut Problems| {
        v.as_ref().map(|s| {
            if let Err(msg) = parse_match_step(&s.value) {
                s.report(p, msg);
            }
            s.value.clone()
        })
    };
    let header_step = match_step(&raw.header_step, p);
    let cookie_step = match_step(&raw.cookie_step, p);
    if let (Some(_), Some(c)) = (&raw.header_step, &raw.cookie_step) {
        c.report(p, "a canary takes `headerStep` or `cookieStep`, not both");
    }
    let mirror_step = raw.mirror_step.as_ref().map(|m| {
        if !(m.value.is_finite() && m.value > 0.0 && m.value <= 100.0) {
            m.report(
                p,
                format!(
                    "`mirrorStep` is the percent of requests to shadow, above 0 and at most \
                     100, found {}",
                    m.value
                ),
            );
        }
        m.value
    });
    let checks = raw
        .checks
        .as_ref()
        .map(|list| canary_checks(list, p))
        .unwrap_or_default();
    let preview = blue_green(raw, p);
    CanaryDefaults {
        checks,
        webhooks: raw
            .webhooks
            .as_ref()
            .map(|list| canary_webhooks(list, p))
            .unwrap_or_default(),
        approval: raw.approval.as_ref().map(|a| a.value),
        auto: raw.auto.as_ref().map(|a| a.value),
        blue_green_preview_header: preview.header,
        blue_green_preview_host: preview.host,
        notify: raw
            .notify
            .as_ref()
            .map(|list| canary_notify(list, p))
            .unwrap_or_default(),
        steps,
        interval,
        max_error_rate,
        max_latency_ratio,
        latency_floor: raw.latency_floor.as_ref().map(|f| f.value),
        min_requests,
        failures,
        inconclusive_limit,
        prometheus,
        queries,
        header_step,
        cookie_step,
        mirror_step,
    }
}

/// A canary's named entry (a webhook, a check): a valid name, once.
fn check_unique_name<'a>(
    name: &'a Spanned<String>,
    what: &str,
    seen: &mut BTreeMap<&'a str, u32>,
    p: &mut Problems,
) {
    if let Err(e) = check_name(&name.value) {
        name.report(p, e.to_string());
    }
    if let Some(line) = seen.get(name.value.as_str()) {
        let message = format!(
            "{what} `{}` is defined twice (first on line {line})",
            name.value
        );
        name.report(p, message);
    } else {
        seen.insert(&name.value, name.span.line);
    }
}

/// A canary's `webhooks`, each reported at the key that is wrong.
fn canary_webhooks(list: &[RawCanaryWebhook], p: &mut Problems) -> Vec<Webhook> {
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let mut out = Vec::new();
    for raw in list {
        let name = &raw.name;
        check_unique_name(name, "webhook", &mut seen, p);
        if let Err(e) = check_hook_url(&raw.url.value) {
            raw.url.report(p, e.to_string());
        }
        if let Some(t) = raw.timeout.as_ref().filter(|t| t.value.is_zero()) {
            t.report(p, HookError::ZeroTimeout.to_string());
        }
        let kind = match raw.kind.value.parse::<HookType>() {
            Ok(k) => k,
            Err(e) => {
                raw.kind.report(p, e.to_string());
                continue;
            }
        };
        out.push(Webhook {
            name: name.value.clone(),
            kind,
            url: raw.url.value.clone(),
            timeout: raw.timeout.as_ref().map(|t| t.value),
            metadata: raw.metadata.clone().unwrap_or_default(),
        });
    }
    out
}

/// A canary's `notify` targets, each reported at the key that is wrong.
fn canary_notify(list: &[RawCanaryNotify], p: &mut Problems) -> Vec<NotifyTarget> {
    let mut out = Vec::new();
    for raw in list {
        if let Err(e) = check_hook_url(&raw.url.value) {
            raw.url.report(p, e.to_string());
        }
        let format = match &raw.format {
            None => NotifyFormat::default(),
            Some(f) => match f.value.parse::<NotifyFormat>() {
                Ok(f) => f,
                Err(e) => {
                    f.report(p, e.to_string());
                    continue;
                }
            },
        };
        out.push(NotifyTarget {
            url: raw.url.value.clone(),
            format,
        });
    }
    out
}

/// A canary's `checks`, each reported at the key that is wrong.
fn canary_checks(list: &[RawCanaryCheck], p: &mut Problems) -> Vec<CanaryCheck> {
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    let mut out = Vec::new();
    for raw in list {
        let name = &raw.name;
        check_unique_name(name, "check", &mut seen, p);
        let source = match (&raw.figure, &raw.promql) {
            (Some(f), None) => match f.value.parse::<Figure>() {
                Ok(figure) => Some(CheckSource::Figure(figure)),
                Err(e) => {
                    f.report(p, e.to_string());
                    None
                }
            },
            (None, Some(t)) => {
                if let Err(e) = check_template(&t.value) {
                    t.report(p, e.to_string());
                }
                Some(CheckSource::Promql(t.value.clone()))
            }
            (Some(_), Some(t)) => {
                t.report(p, CheckError::TwoSources.to_string());
                None
            }
            (None, None) => {
                p.report(
                    raw.span,
                    raw.node_path.clone(),
                    CheckError::NoSource.to_string(),
                );
                None
            }
        };
        let (min, max) = (raw.min.as_ref(), raw.max.as_ref());
        if let Err(e) = check_range(min.map(|m| m.value), max.map(|m| m.value)) {
            match (&e, min, max) {
                (CheckError::NotFinite("min") | CheckError::EmptyRange { .. }, Some(m), _) => {
                    m.report(p, e.to_string())
                }
                (CheckError::NotFinite(_), _, Some(m)) => m.report(p, e.to_string()),
                _ => p.report(raw.span, raw.node_path.clone(), e.to_string()),
            }
        }
        if let Some(source) = source {
            out.push(CanaryCheck {
                name: name.value.clone(),
                source,
                min: min.map(|m| m.value),
                max: max.map(|m| m.value),
            });
        }
    }
    out
}

fn version(
    svc: &RawService,
    v: Option<&RawVersion>,
    base_dir: &Path,
    p: &mut Problems,
) -> VersionSpec {
    let place = match v {
        Some(v) => Place {
            span: v.span,
            path: v.node_path.clone(),
        },
        None => Place {
            span: svc.span,
            path: svc.node_path.clone(),
        },
    };
    let name = match v {
        Some(v) => {
            check_version_name(&v.name, p);
            v.name.value.clone()
        }
        None => DEFAULT_VERSION.to_string(),
    };

    // Each level's values are checked even when a version overrides them,
    // so a mistake in a service default is reported whatever uses it.
    let program = match override_of(
        svc.command.as_ref().map(|c| program(c, base_dir, p)),
        v.and_then(|v| v.command.as_ref())
            .map(|c| program(c, base_dir, p)),
    ) {
        Some(program) => program,
        None => {
            place.report(
                p,
                "missing `command`: set it on the service or on each of its versions",
            );
            Program::Name(String::new())
        }
    };
    let args = v
        .and_then(|v| v.args.clone())
        .or_else(|| svc.args.clone())
        .unwrap_or_default();

    let mut env = BTreeMap::new();
    for raw_env in [svc.env.as_ref(), v.and_then(|v| v.env.as_ref())]
        .into_iter()
        .flatten()
    {
        for (key, value) in &raw_env.entries {
            check_env_name(key, "environment variable", p);
            if value.contains('\0') {
                key.report(
                    p,
                    "an environment variable's value cannot hold a NUL character",
                );
            }
            env.insert(key.value.clone(), value.clone());
        }
    }

    let replicas = override_of(
        svc.replicas.as_ref().map(|r| replicas(r, p)),
        v.and_then(|v| v.replicas.as_ref()).map(|r| replicas(r, p)),
    )
    .unwrap_or(DEFAULT_REPLICAS);

    let readiness = override_of(
        svc.readiness.as_ref().map(|r| probe(r, false, p)),
        v.and_then(|v| v.readiness.as_ref())
            .map(|r| probe(r, false, p)),
    );
    let liveness = override_of(
        svc.liveness.as_ref().map(|r| probe(r, true, p)),
        v.and_then(|v| v.liveness.as_ref())
            .map(|r| probe(r, true, p)),
    );
    let restart_policy = v
        .and_then(|v| v.restart_policy)
        .or(svc.restart_policy)
        .unwrap_or_default();
    let restart_backoff = override_of(
        svc.restart_backoff.as_ref().map(|b| backoff(b, p)),
        v.and_then(|v| v.restart_backoff.as_ref())
            .map(|b| backoff(b, p)),
    )
    .unwrap_or_default();
    let termination_grace_period = v
        .and_then(|v| v.termination_grace_period)
        .or(svc.termination_grace_period)
        .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD);

    let mut files: Vec<FileSpec> = Vec::new();
    for list in [svc.files.as_ref(), v.and_then(|v| v.files.as_ref())]
        .into_iter()
        .flatten()
    {
        let mut seen = BTreeSet::new();
        for f in list {
            if !seen.insert(f.file_path.value.as_str()) {
                f.file_path
                    .report(p, format!("file `{}` is listed twice", f.file_path.value));
            }
            let spec = file(f, base_dir, p);
            files.retain(|old| old.path != spec.path);
            files.push(spec);
        }
    }

    let mut secrets: Vec<SecretSpec> = Vec::new();
    for list in [svc.secrets.as_ref(), v.and_then(|v| v.secrets.as_ref())]
        .into_iter()
        .flatten()
    {
        let mut seen = BTreeSet::new();
        for s in list {
            if !seen.insert(s.name.value.as_str()) {
                s.name
                    .report(p, format!("secret `{}` is listed twice", s.name.value));
            }
            let spec = secret(s, base_dir, p);
            secrets.retain(|old| old.name != spec.name);
            secrets.push(spec);
        }
    }
    // A secret given as an environment variable must not fight with `env`.
    for list in [svc.secrets.as_ref(), v.and_then(|v| v.secrets.as_ref())]
        .into_iter()
        .flatten()
    {
        for s in list {
            if !s.as_file.unwrap_or(false) && env.contains_key(&s.name.value) {
                s.name.report(
                    p,
                    format!("`{}` is also set in `env`; give it one value", s.name.value),
                );
            }
        }
    }

    let strategy = override_of(
        svc.strategy.as_ref().map(|s| strategy(s, p)),
        v.and_then(|v| v.strategy.as_ref()).map(|s| strategy(s, p)),
    )
    .unwrap_or_default();

    VersionSpec {
        name,
        program,
        args,
        env,
        replicas,
        readiness,
        liveness,
        restart_policy,
        restart_backoff,
        termination_grace_period,
        files,
        secrets,
        strategy,
        sidecar: svc.sidecar.as_ref().map(|sc| SidecarSpec {
            outbound: sc
                .outbound
                .iter()
                .map(|o| OutboundSpec {
                    service: o.name.value.clone(),
                    env: o.env.value.clone(),
                })
                .collect(),
        }),
    }
}

/// A version's value when it has one, else its service's.
fn override_of<T>(service: Option<T>, version: Option<T>) -> Option<T> {
    version.or(service)
}

fn replicas(r: &Spanned<u32>, p: &mut Problems) -> u32 {
    if r.value > MAX_REPLICAS {
        r.report(
            p,
            format!(
                "replicas must be from 0 to {MAX_REPLICAS}, found {}",
                r.value
            ),
        );
    }
    r.value
}

fn program(command: &Spanned<String>, base_dir: &Path, p: &mut Problems) -> Program {
    let c = command.value.as_str();
    if c.trim().is_empty() {
        command.report(p, "`command` is empty");
        return Program::Name(String::new());
    }
    if c.contains('\0') {
        command.report(p, "`command` cannot hold a NUL character");
    }
    if c.contains('/') {
        Program::Path(base_dir.join(c))
    } else {
        Program::Name(c.to_string())
    }
}

fn probe(raw: &RawProbe, liveness: bool, p: &mut Problems) -> Probe {
    let place = Place {
        span: raw.span,
        path: raw.node_path.clone(),
    };
    let mut given = Vec::new();
    if raw.http_get.is_some() {
        given.push("httpGet");
    }
    if raw.tcp_socket.is_some() {
        given.push("tcpSocket");
    }
    if raw.exec.is_some() {
        given.push("exec");
    }
    match given.len() {
        0 => place.report(
            p,
            "a probe needs one of `httpGet`, `tcpSocket` (e.g. `tcpSocket: {}`) or `exec`",
        ),
        1 => {}
        _ => place.report(
            p,
            format!(
                "a probe takes only one of `httpGet`, `tcpSocket` or `exec`, found {}",
                given.join(" and ")
            ),
        ),
    }
    let check_port = |port: &Option<Spanned<u16>>, p: &mut Problems| {
        let port = port.as_ref()?;
        if port.value == 0 {
            port.report(p, "a probe's port must be from 1 to 65535");
        }
        Some(port.value)
    };
    let action = if let Some(h) = &raw.http_get {
        let path = match &h.path {
            Some(path) => {
                if !path.value.starts_with('/') {
                    path.report(
                        p,
                        format!("an HTTP path starts with `/`, found `{}`", path.value),
                    );
                }
                if path
                    .value
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
                {
                    path.report(p, "an HTTP path cannot hold spaces or control characters");
                }
                path.value.clone()
            }
            None => "/".to_string(),
        };
        ProbeAction::HttpGet {
            path,
            port: check_port(&h.port, p),
        }
    } else if let Some(t) = &raw.tcp_socket {
        ProbeAction::TcpSocket {
            port: check_port(&t.port, p),
        }
    } else if let Some(e) = &raw.exec {
        if e.command.value.is_empty() {
            e.command
                .report(p, "an exec probe needs a command, e.g. [sh, -c, \"...\"]");
        }
        ProbeAction::Exec {
            command: e.command.value.clone(),
        }
    } else {
        ProbeAction::TcpSocket { port: None }
    };

    let positive =
        |d: &Option<Spanned<Duration>>, default: Duration, what: &str, p: &mut Problems| match d {
            Some(d) => {
                if d.value.is_zero() {
                    d.report(p, format!("`{what}` must be more than 0"));
                }
                d.value
            }
            None => default,
        };
    let threshold = |t: &Option<Spanned<u32>>, default: u32, what: &str, p: &mut Problems| match t {
        Some(t) => {
            if t.value < 1 {
                t.report(p, format!("`{what}` must be at least 1"));
            }
            t.value
        }
        None => default,
    };
    let period = positive(&raw.period, DEFAULT_PROBE_PERIOD, "period", p);
    let timeout = positive(&raw.timeout, DEFAULT_PROBE_TIMEOUT, "timeout", p);
    let failure_threshold = threshold(
        &raw.failure_threshold,
        DEFAULT_PROBE_FAILURE_THRESHOLD,
        "failureThreshold",
        p,
    );
    let success_threshold = threshold(
        &raw.success_threshold,
        DEFAULT_PROBE_SUCCESS_THRESHOLD,
        "successThreshold",
        p,
    );
    if liveness
        && let Some(s) = &raw.success_threshold
        && s.value != 1
    {
        s.report(p, "a liveness probe's `successThreshold` must be 1");
    }
    Probe {
        action,
        initial_delay: raw
            .initial_delay
            .as_ref()
            .map_or(DEFAULT_PROBE_INITIAL_DELAY, |d| d.value),
        period,
        timeout,
        failure_threshold,
        success_threshold,
    }
}

fn backoff(raw: &RawBackoff, p: &mut Problems) -> Backoff {
    let d = Backoff::default();
    let initial = raw.initial.as_ref().map_or(d.initial, |i| i.value);
    let max = raw.max.as_ref().map_or(d.max, |m| m.value);
    let reset_after = raw.reset_after.as_ref().map_or(d.reset_after, |r| r.value);
    if let Some(i) = &raw.initial
        && i.value.is_zero()
    {
        i.report(p, "`initial` must be more than 0");
    }
    if max < initial {
        match (&raw.max, &raw.initial) {
            (Some(m), _) => m.report(p, "`max` must not be less than `initial`"),
            (None, Some(i)) => i.report(
                p,
                format!(
                    "`initial` is more than the default `max` ({}s); set `max` too",
                    d.max.as_secs()
                ),
            ),
            (None, None) => {}
        }
    }
    if let Some(r) = &raw.reset_after
        && r.value.is_zero()
    {
        r.report(p, "`resetAfter` must be more than 0");
    }
    Backoff {
        initial,
        max,
        reset_after,
    }
}

fn strategy(raw: &RawStrategy, p: &mut Problems) -> Strategy {
    let kind = raw.kind.as_ref().map(|k| k.value).unwrap_or_default();
    match kind {
        StrategyType::Recreate => {
            for (v, key) in [
                (&raw.max_surge, "maxSurge"),
                (&raw.max_unavailable, "maxUnavailable"),
            ] {
                if let Some(v) = v {
                    v.report(p, format!("`{key}` applies only to `type: RollingUpdate`"));
                }
            }
            Strategy::Recreate
        }
        StrategyType::RollingUpdate => {
            let max_surge = raw
                .max_surge
                .as_ref()
                .map_or(DEFAULT_MAX_SURGE, |v| v.value);
            let max_unavailable = raw
                .max_unavailable
                .as_ref()
                .map_or(DEFAULT_MAX_UNAVAILABLE, |v| v.value);
            if max_surge == 0 && max_unavailable == 0 {
                p.report(
                    raw.span,
                    raw.node_path.clone(),
                    "`maxSurge` and `maxUnavailable` cannot both be 0: the rollout could not \
                     make progress",
                );
            }
            Strategy::RollingUpdate {
                max_surge,
                max_unavailable,
            }
        }
    }
}

fn file(raw: &RawFile, base_dir: &Path, p: &mut Problems) -> FileSpec {
    let path = PathBuf::from(&raw.file_path.value);
    if raw.file_path.value.is_empty() {
        raw.file_path.report(p, "a file's `path` is empty");
    } else if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        || path.components().all(|c| matches!(c, Component::CurDir))
    {
        raw.file_path.report(
            p,
            format!(
                "`{}` must be a relative path inside the service's files folder (no leading `/`, \
                 no `..`)",
                raw.file_path.value
            ),
        );
    }
    let content = match (&raw.content, &raw.from_file) {
        (Some(c), None) => c.clone().into_bytes(),
        (None, Some(from)) => read_file(from, base_dir, p).unwrap_or_default(),
        (Some(_), Some(_)) => {
            p.report(
                raw.span,
                raw.node_path.clone(),
                "a file takes `content` or `fromFile`, not both",
            );
            Vec::new()
        }
        (None, None) => {
            p.report(
                raw.span,
                raw.node_path.clone(),
                "a file needs `content` or `fromFile`",
            );
            Vec::new()
        }
    };
    FileSpec { path, content }
}

fn secret(raw: &RawSecret, base_dir: &Path, p: &mut Problems) -> SecretSpec {
    check_env_name(&raw.name, "secret", p);
    let mut sources = Vec::new();
    if raw.value.is_some() {
        sources.push("value");
    }
    if raw.from_file.is_some() {
        sources.push("fromFile");
    }
    if raw.from_env.is_some() {
        sources.push("fromEnv");
    }
    if sources.len() != 1 {
        let msg = if sources.is_empty() {
            "a secret needs one of `value`, `fromFile` or `fromEnv`".to_string()
        } else {
            format!(
                "a secret takes only one of `value`, `fromFile` or `fromEnv`, found {}",
                sources.join(" and ")
            )
        };
        p.report(raw.span, raw.node_path.clone(), msg);
    }
    let value = if let Some(v) = &raw.value {
        v.clone()
    } else if let Some(from) = &raw.from_file {
        match read_file(from, base_dir, p).map(String::from_utf8) {
            Some(Ok(mut s)) => {
                if s.ends_with('\n') {
                    s.pop();
                    if s.ends_with('\r') {
                        s.pop();
                    }
                }
                s
            }
            Some(Err(_)) => {
                from.report(p, format!("`{}` is not UTF-8 text", from.value));
                String::new()
            }
            None => String::new(),
        }
    } else if let Some(var) = &raw.from_env {
        match std::env::var(&var.value) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                var.report(
                    p,
                    format!("the environment variable `{}` is not set", var.value),
                );
                String::new()
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                var.report(
                    p,
                    format!("the environment variable `{}` is not UTF-8 text", var.value),
                );
                String::new()
            }
        }
    } else {
        String::new()
    };
    let as_file = raw.as_file.unwrap_or(false);
    if !as_file && value.contains('\0') {
        raw.name.report(
            p,
            "this secret's value holds a NUL character, which an environment variable cannot; \
             use `asFile: true`",
        );
    }
    SecretSpec {
        name: raw.name.value.clone(),
        value: SecretValue::new(value),
        as_file,
    }
}

/// Reads a file named relative to the stack file's folder.
fn read_file(from: &Spanned<String>, base_dir: &Path, p: &mut Problems) -> Option<Vec<u8>> {
    let path = base_dir.join(&from.value);
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => {
            from.report(p, format!("`{}` is not a file", path.display()));
            return None;
        }
        Ok(m) if m.len() > MAX_FILE_BYTES => {
            from.report(
                p,
                format!("`{}` is larger than {MAX_FILE_BYTES} bytes", path.display()),
            );
            return None;
        }
        Ok(_) => {}
        Err(e) => {
            from.report(p, format!("cannot read `{}`: {e}", path.display()));
            return None;
        }
    }
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            from.report(p, format!("cannot read `{}`: {e}", path.display()));
            None
        }
    }
}

fn check_service_name(name: &Spanned<String>, p: &mut Problems) {
    let n = name.value.as_str();
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.starts_with(|c: char| c.is_ascii_lowercase())
        && !n.ends_with('-')
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        name.report(
            p,
            format!(
                "bad service name `{n}`: use up to 63 lowercase letters, digits and `-`, starting \
                 with a letter (a DNS label, as Kubernetes wants)"
            ),
        );
    }
}

fn check_version_name(name: &Spanned<String>, p: &mut Problems) {
    let n = name.value.as_str();
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.starts_with(alnum)
        && n.ends_with(alnum)
        && n.chars().all(|c| alnum(c) || c == '-' || c == '.');
    if !ok {
        name.report(
            p,
            format!(
                "bad version name `{n}`: use up to 63 lowercase letters, digits, `-` and `.`, \
                 starting and ending with a letter or digit"
            ),
        );
    }
}

fn check_env_name(name: &Spanned<String>, what: &str, p: &mut Problems) {
    let n = name.value.as_str();
    let ok = n.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        name.report(
            p,
            format!(
                "bad {what} name `{n}`: use letters, digits and `_`, not starting with a digit"
            ),
        );
    } else if RESERVED_ENV.contains(&n) {
        name.report(
            p,
            format!("`{n}` is set by serin for every replica; pick another name"),
        );
    }
}

fn check_unique_services(services: &[RawService], p: &mut Problems) {
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for s in services {
        if let Some(line) = seen.get(s.name.value.as_str()) {
            s.name.report(
                p,
                format!(
                    "service `{}` is defined twice (first on line {line})",
                    s.name.value
                ),
            );
        } else {
            seen.insert(&s.name.value, s.name.span.line);
        }
    }
}

/// Replicas are named `service-version-N`; two pairs must not give the same
/// names (`a-b`/`c` and `a`/`b-c`).
fn check_replica_names(raw: &[RawService], services: &[ServiceSpec], p: &mut Problems) {
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (r, s) in raw.iter().zip(services) {
        for (i, v) in s.versions.iter().enumerate() {
            let key = format!("{}-{}", s.name, v.name);
            if let Some((os, ov)) = seen.get(&key) {
                if *os == s.name {
                    continue; // a duplicate version, reported already
                }
                let place = r
                    .versions
                    .as_ref()
                    .and_then(|vs| vs.value.get(i))
                    .map_or((r.name.span, r.name.path.clone()), |rv| {
                        (rv.name.span, rv.name.path.clone())
                    });
                p.report(
                    place.0,
                    place.1,
                    format!(
                        "{}/{} and {os}/{ov} would both name their replicas `{key}-N`; rename one",
                        s.name, v.name
                    ),
                );
            } else {
                seen.insert(key, (s.name.clone(), v.name.clone()));
            }
        }
    }
}

fn check_depends_on(services: &[RawService], p: &mut Problems) {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.value.as_str()).collect();
    // Edges that name a known other service, for the cycle search.
    let mut edges: BTreeMap<&str, Vec<&Spanned<String>>> = BTreeMap::new();
    for s in services {
        let mut seen = BTreeSet::new();
        for d in s.depends_on.iter().map(|d| &d.service) {
            if !seen.insert(d.value.as_str()) {
                d.report(p, format!("`{}` is listed twice", d.value));
                continue;
            }
            if d.value == s.name.value {
                d.report(p, "a service cannot depend on itself");
            } else if names.contains(&d.value.as_str()) {
                edges.entry(s.name.value.as_str()).or_default().push(d);
            } else {
                let mut msg = format!("unknown service `{}`", d.value);
                let known: Vec<&str> = names.iter().copied().collect();
                if let Some(g) = suggest(&d.value, &known) {
                    msg.push_str(&format!(", did you mean `{g}`?"));
                }
                d.report(p, msg);
            }
        }
    }

    // Depth-first search; a dependency on a service still on the path
    // closes a cycle, reported at that `dependsOn` entry. Iterative, with
    // the path kept by hand: a chain of thousands of services in a file
    // must not overflow the thread's stack.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for start in &names {
        if marks.get(start).copied().unwrap_or(Mark::New) != Mark::New {
            continue;
        }
        // Each service on the path, with the next of its edges to follow.
        let mut path: Vec<(&str, usize)> = vec![(start, 0)];
        marks.insert(start, Mark::OnPath);
        while let Some((node, next_edge)) = path.last_mut() {
            let node = *node;
            let Some(d) = edges.get(node).and_then(|e| e.get(*next_edge)) else {
                marks.insert(node, Mark::Done);
                path.pop();
                continue;
            };
            *next_edge += 1;
            let next = d.value.as_str();
            match marks.get(next).copied().unwrap_or(Mark::New) {
                Mark::New => {
                    marks.insert(next, Mark::OnPath);
                    path.push((next, 0));
                }
                Mark::OnPath => {
                    let from = path.iter().position(|(n, _)| *n == next).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[from..].iter().map(|(n, _)| *n).collect();
                    cycle.push(next);
                    d.report(p, format!("dependsOn forms a cycle: {}", cycle.join(" → ")));
                }
                Mark::Done => {}
            }
        }
    }
}
