//! Object names, labels and the checks that keep them valid and unique.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serin_config::stack::{Program, StackFile};

use crate::{DEMO_PROGRAM, RenderError, RenderOptions};

/// The label that names a service (`app: qotm`), as in the workshops and
/// in most charts; Services select on it.
pub const LABEL_APP: &str = "app";
/// The label that names a version (`version: v1`); per-version Services and
/// the gateway's discovery split endpoints by it.
pub const LABEL_VERSION: &str = "version";
/// Kubernetes' recommended label for the application a thing belongs to.
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
/// Its value on every rendered object.
pub const PART_OF: &str = "serin";
/// The name of the gateway's Deployment, Service, ConfigMap, ServiceAccount,
/// Role and RoleBinding, and its pods' `app` label.
pub const GATEWAY_NAME: &str = "serin-gateway";
/// The GatewayClass serin's Gateway names (`gatewayClassName`).
pub const GATEWAY_CLASS_NAME: &str = "serin";
/// The controller of that GatewayClass, as its `spec.controllerName` and
/// the `controllerName` of every `status.parents[]` entry serin writes. The
/// Gateway API wants a domain-prefixed path that names the implementation
/// and never changes: it is how serin finds its own status entries among
/// those of other gateways.
pub const CONTROLLER_NAME: &str = "serin.dev/gateway-controller";
/// The port every service listens on in its pod (`PORT`). Each pod has its
/// own address, so the ports the local runtime hands out are not needed.
pub const CONTAINER_PORT: u16 = 8080;
/// The name of that port in containers and Services.
pub const PORT_NAME: &str = "http";
/// The gateway's metrics listener (`admin.metricsAddress`), which
/// Prometheus scrapes while the admin API stays on the pod's loopback (the
/// first port from here that its listener and admin API do not use).
pub const METRICS_PORT: u16 = 9090;
/// The name of that port in the gateway's container.
pub const METRICS_PORT_NAME: &str = "metrics";

/// The pod annotations Prometheus' kubernetes-pods scrape job reads.
pub fn prometheus_annotations(port: u16) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), port.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ])
}
/// Kubernetes' limit for a DNS label (Service names, label values).
const MAX_LABEL: usize = 63;

/// What every part of the renderer needs: the options, checked, and the
/// names already given out.
pub(crate) struct Context {
    pub namespace: Option<String>,
    image_repo: String,
    tag: String,
    /// The stack file's folder (processes run in it locally).
    pub base_dir: PathBuf,
}

impl Context {
    pub fn new(stack: &StackFile, options: &RenderOptions) -> Result<Self, RenderError> {
        if let Some(ns) = &options.namespace {
            dns_label(ns, "namespace")?;
        }
        let image_repo = options.image_repo.trim_end_matches('/').to_string();
        if image_repo.is_empty() || image_repo.chars().any(char::is_whitespace) {
            return Err(RenderError::BadName {
                name: options.image_repo.clone(),
                what: "image repository",
                why: "expected e.g. localhost or registry.example.com/team".into(),
            });
        }
        let tag_ok = !options.tag.is_empty()
            && options.tag.len() <= 128
            && !options.tag.starts_with(['.', '-'])
            && options
                .tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !tag_ok {
            return Err(RenderError::BadName {
                name: options.tag.clone(),
                what: "image tag",
                why: "up to 128 of A-Z a-z 0-9 _ . -, not starting with . or -".into(),
            });
        }
        let ctx = Self {
            namespace: options.namespace.clone(),
            image_repo,
            tag: options.tag.clone(),
            base_dir: stack.stack.base_dir.clone(),
        };
        ctx.check_names(stack)?;
        Ok(ctx)
    }

    /// Every Service name (per service, per version, the gateway) is a DNS
    /// label and unique; so then are the Deployments, ConfigMaps and Secrets
    /// named after them.
    fn check_names(&self, stack: &StackFile) -> Result<(), RenderError> {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |name: String, owner: String| -> Result<(), RenderError> {
            dns_label(&name, "Service")?;
            if let Some(first) = seen.insert(name.clone(), owner.clone()) {
                return Err(RenderError::NameClash {
                    what: "Service",
                    name,
                    first,
                    second: owner,
                });
            }
            Ok(())
        };
        claim(GATEWAY_NAME.to_string(), "the gateway".into())?;
        for s in &stack.stack.services {
            claim(s.name.clone(), format!("service {}", s.name))?;
            for v in &s.versions {
                label_value(&v.name, "version label")?;
                claim(
                    version_object_name(&s.name, &v.name),
                    format!("version {}/{}", s.name, v.name),
                )?;
            }
        }
        Ok(())
    }

    /// The metadata of an object: name, namespace, labels.
    pub fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: self.namespace.clone(),
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    /// The image that runs `program` for `service`.
    pub fn image(&self, service: &str, program: &Program) -> String {
        let name = if is_demo(program) {
            DEMO_PROGRAM
        } else {
            service
        };
        self.image_named(name)
    }

    pub fn image_named(&self, name: &str) -> String {
        format!("{}/{name}:{}", self.image_repo, self.tag)
    }
}

/// Whether the program is serin's demo services (a bare `serin-demo`, or a
/// path to a build of it).
pub fn is_demo(program: &Program) -> bool {
    match program {
        Program::Name(n) => n == DEMO_PROGRAM,
        Program::Path(p) => p.file_name().is_some_and(|f| f == DEMO_PROGRAM),
    }
}

/// The Deployment and Service of one version: `qotm-v1`. Version names may
/// hold `.` (`1.10`), which a Service name may not: it becomes `-`.
pub fn version_object_name(service: &str, version: &str) -> String {
    format!("{service}-{}", version.replace('.', "-"))
}

/// `app.kubernetes.io/part-of: serin` and the given pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    map.insert(LABEL_PART_OF.into(), PART_OF.into());
    map
}

/// The labels that select one version's pods.
pub fn version_selector(service: &str, version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_APP.to_string(), service.to_string()),
        (LABEL_VERSION.to_string(), version.to_string()),
    ])
}

/// An RFC 1123 DNS label: what Service and namespace names must be.
fn dns_label(name: &str, what: &'static str) -> Result<(), RenderError> {
    let bad = |why: &str| RenderError::BadName {
        name: name.to_string(),
        what,
        why: why.to_string(),
    };
    if name.is_empty() || name.len() > MAX_LABEL {
        return Err(bad("it must be 1 to 63 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(bad("only a-z, 0-9 and - are allowed"));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(bad("it must start and end with a letter or digit"));
    }
    Ok(())
}

/// A label value: at most 63 of `A-Z a-z 0-9 - _ .`, alphanumeric at both
/// ends.
fn label_value(value: &str, what: &'static str) -> Result<(), RenderError> {
    let ok = value.len() <= MAX_LABEL
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(RenderError::BadName {
            name: value.to_string(),
            what,
            why: "a label value is at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends"
                .into(),
        })
    }
}

/// A key of a ConfigMap or Secret made from a file path (`config/app.toml`
/// becomes `config_app.toml`), unique among `taken`.
pub fn data_key(path: &str, taken: &mut std::collections::BTreeSet<String>) -> String {
    let base: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let base = if base.is_empty() || base == "." || base == ".." {
        "file".to_string()
    } else {
        base
    };
    let mut key = base.clone();
    let mut n = 2;
    while !taken.insert(key.clone()) {
        key = format!("{base}-{n}");
        n += 1;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_lose_their_dots() {
        assert_eq!(version_object_name("qotm", "v1"), "qotm-v1");
        assert_eq!(version_object_name("qotm", "1.10"), "qotm-1-10");
    }

    #[test]
    fn data_keys_are_valid_and_unique() {
        let mut taken = std::collections::BTreeSet::new();
        assert_eq!(data_key("config/app.toml", &mut taken), "config_app.toml");
        assert_eq!(data_key("config_app.toml", &mut taken), "config_app.toml-2");
        assert_eq!(data_key("a b", &mut taken), "a_b");
    }

    #[test]
    fn dns_labels() {
        assert!(dns_label("qotm-v1", "Service").is_ok());
        assert!(dns_label("Qotm", "Service").is_err());
        assert!(dns_label("-a", "Service").is_err());
        assert!(dns_label(&"a".repeat(64), "Service").is_err());
        assert!(label_value("1.10", "version").is_ok());
        assert!(label_value("v1.", "version").is_err());
    }
}
