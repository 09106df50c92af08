//! Which of serin's two file formats a file is written in — a proxy config
//! (`serin proxy --config`) or a stack file (`serin up`) — told from its
//! keys, for commands that take either (`serin validate`).

use saphyr::{MarkedYamlOwned, YamlDataOwned};

use crate::decode::{parse_document, scalar_text};
use crate::error::Problems;
use crate::proxy::raw::{Config, Service, Version};
use crate::stack::raw::{RawService, RawStack, RawVersion};

/// A file format of serin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    ProxyConfig,
    StackFile,
}

/// The format `text` is written in: a stack file when its top level has a
/// key only stack files have (`gateway`), or when it has none of the keys
/// only proxy configs have (`listeners`, `routes`, `admin`, ...) and one of
/// its services or versions has a key only stack services have (`command`,
/// `replicas`, `readiness`, ...); a proxy config otherwise (also when it is
/// not YAML: either reader reports that the same way).
pub fn file_kind(text: &str) -> FileKind {
    let mut ignored = Problems::new("");
    let Some(doc) = parse_document(text, &mut ignored) else {
        return FileKind::ProxyConfig;
    };
    let top = keys(&doc);
    let only_in = |keys: &[&str], of: &[&str], not_of: &[&str]| {
        keys.iter().any(|k| of.contains(k) && !not_of.contains(k))
    };
    if only_in(&top, RawStack::FIELDS, Config::FIELDS) {
        return FileKind::StackFile;
    }
    if only_in(&top, Config::FIELDS, RawStack::FIELDS) {
        return FileKind::ProxyConfig;
    }
    let stack_service = items(value(&doc, "services")).any(|service| {
        only_in(&keys(service), RawService::FIELDS, Service::FIELDS)
            || items(value(service, "versions"))
                .any(|v| only_in(&keys(v), RawVersion::FIELDS, Version::FIELDS))
    });
    if stack_service {
        FileKind::StackFile
    } else {
        FileKind::ProxyConfig
    }
}

/// The keys of a mapping (none for anything else).
fn keys(yaml: &MarkedYamlOwned) -> Vec<&str> {
    match &yaml.data {
        YamlDataOwned::Mapping(map) => map
            .iter()
            .filter_map(|(k, _)| scalar_text(k).map(|(s, _)| s))
            .collect(),
        _ => Vec::new(),
    }
}

/// The value of `key` in a mapping.
fn value<'a>(yaml: &'a MarkedYamlOwned, key: &str) -> Option<&'a MarkedYamlOwned> {
    match &yaml.data {
        YamlDataOwned::Mapping(map) => map
            .iter()
            .find(|(k, _)| scalar_text(k).is_some_and(|(s, _)| s == key))
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The items of a list (none for anything else).
fn items(yaml: Option<&MarkedYamlOwned>) -> impl Iterator<Item = &MarkedYamlOwned> {
    let list: &[MarkedYamlOwned] = match yaml.map(|y| &y.data) {
        Some(YamlDataOwned::Sequence(items)) => items,
        _ => &[],
    };
    list.iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_files_and_proxy_configs_are_told_apart() {
        use FileKind::*;
        for (text, kind) in [
            (
                "gateway: {listen: 127.0.0.1:8080}\nservices: []\n",
                StackFile,
            ),
            ("services:\n  - name: a\n    command: x\n", StackFile),
            (
                "services:\n  - name: a\n    versions: [{name: v1, replicas: 2}]\n",
                StackFile,
            ),
            (
                "services:\n  - name: a\n    versions: [{name: v1, endpoints: []}]\n",
                ProxyConfig,
            ),
            (
                "listeners: []\nservices: [{name: a, command: x}]\n",
                ProxyConfig,
            ),
            ("routes: kubernetes\n", ProxyConfig),
            ("tracing: {endpoint: http://127.0.0.1:4318}\n", ProxyConfig),
            ("[not, a, mapping]\n", ProxyConfig),
            ("a: [unclosed\n", ProxyConfig),
            ("", ProxyConfig),
        ] {
            assert_eq!(file_kind(text), kind, "{text}");
        }
        for example in [
            include_str!("../../../examples/qotm/stack.yaml"),
            include_str!("../../../examples/mesh/stack.yaml"),
            include_str!("../../../examples/counter/stack.yaml"),
        ] {
            assert_eq!(file_kind(example), StackFile);
        }
        assert_eq!(
            file_kind(include_str!("../../../examples/proxy/serin.yaml")),
            ProxyConfig
        );
    }
}
