//! The TLS sections of a proxy file (a listener's, a service's) checked
//! against the files they name, as the proxy will load them.

use std::collections::BTreeMap;
use std::path::Path;

use super::model::*;
use super::raw;
use super::validate::readable_file;
use crate::decode::Spanned;
use crate::error::Problems;
use crate::tls::{ca_bundle, certificates, certified_key, dns_names};

pub(super) fn listener_tls(t: &raw::Tls, base_dir: &Path, p: &mut Problems) -> TlsConfig {
    let default = match (&t.certificate, &t.key) {
        (Some(c), Some(k)) => pair(c, k, base_dir, p),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            p.report(
                t.span,
                t.node_path.clone(),
                "the default certificate needs both `certificate` and `key`",
            );
            None
        }
    };
    if t.certificate.is_none() && t.key.is_none() && t.certificates.is_empty() {
        p.report(
            t.span,
            t.node_path.clone(),
            "tls needs a certificate: `certificate` and `key` (the default), or `certificates` chosen by SNI",
        );
    }
    let mut seen = BTreeMap::new();
    let certificates = t
        .certificates
        .iter()
        .filter_map(|c| sni_certificate(c, base_dir, &mut seen, p))
        .collect();
    let client_validation = t.client_validation.as_ref().map(|v| {
        let ca_certificates = readable_file(&v.ca_certificates, base_dir, p);
        if ca_certificates.is_file()
            && let Err(e) = ca_bundle(&ca_certificates)
        {
            v.ca_certificates.report(p, e.to_string());
        }
        ClientValidationConfig {
            mode: v.mode,
            ca_certificates,
        }
    });
    TlsConfig {
        default,
        certificates,
        client_validation,
    }
}

/// A certificate and its key, both readable and belonging together; the
/// problem is placed at the certificate.
fn pair(
    cert: &Spanned<String>,
    key: &Spanned<String>,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<CertificateFiles> {
    let files = CertificateFiles {
        certificate: readable_file(cert, base_dir, p),
        key: readable_file(key, base_dir, p),
    };
    if !files.certificate.is_file() || !files.key.is_file() {
        return None;
    }
    if let Err(e) = certified_key(&files.certificate, &files.key) {
        cert.report(p, e.to_string());
        return None;
    }
    Some(files)
}

fn sni_certificate(
    c: &raw::SniCertificate,
    base_dir: &Path,
    seen: &mut BTreeMap<String, u32>,
    p: &mut Problems,
) -> Option<SniCertificateConfig> {
    let files = pair(&c.certificate, &c.key, base_dir, p)?;
    let (hostnames, names) = match &c.hostnames {
        Some(list) => {
            let names = list
                .iter()
                .filter_map(|h| {
                    let name = h.to_ascii_lowercase();
                    match hostname_problem(&name) {
                        Some(why) => {
                            h.report(p, format!("`{}`: {why}", **h));
                            None
                        }
                        None => Some((name, h.span.line)),
                    }
                })
                .collect::<Vec<_>>();
            let hostnames = names.iter().map(|(n, _)| n.clone()).collect();
            (hostnames, names)
        }
        None => {
            // Named by the certificate itself: read with the file each
            // time, so only checked here.
            let leaf = certificates(&files.certificate).ok()?.into_iter().next()?;
            match dns_names(&leaf, &files.certificate) {
                Ok(n) if n.is_empty() => {
                    c.certificate.report(
                        p,
                        "the certificate has no DNS names to be chosen by: give `hostnames`",
                    );
                    return None;
                }
                Ok(n) => {
                    let line = c.certificate.span.line;
                    (Vec::new(), n.into_iter().map(|n| (n, line)).collect())
                }
                Err(e) => {
                    c.certificate.report(p, e.to_string());
                    return None;
                }
            }
        }
    };
    for (name, line) in names {
        if let Some(first) = seen.insert(name.clone(), line) {
            p.report(
                c.span,
                c.node_path.clone(),
                format!("`{name}` is served by the certificate at line {first} already"),
            );
        }
    }
    Some(SniCertificateConfig { files, hostnames })
}

/// What is wrong with an SNI name (lowercase), if anything: a DNS name, or
/// `*.` and one, as rustls and Envoy match (the wildcard is one label).
fn hostname_problem(name: &str) -> Option<&'static str> {
    let dns = name.strip_prefix("*.").unwrap_or(name);
    if dns.contains('*') {
        return Some("a wildcard is `*.` followed by a name, as in *.example.com");
    }
    if rustls_pki_types::DnsName::try_from(dns).is_err() || dns.parse::<std::net::IpAddr>().is_ok()
    {
        return Some("not a DNS name");
    }
    None
}

pub(super) fn upstream_tls(
    s: &raw::Service,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<UpstreamTlsConfig> {
    let at_service = |p: &mut Problems, msg: &str| {
        p.report(s.span, s.node_path.clone(), msg);
    };
    let Some(t) = &s.tls else {
        if s.protocol == UpstreamProtocol::H2 {
            at_service(
                p,
                "protocol h2 is HTTP/2 over TLS: give the service a `tls` section (or use h2c)",
            );
        }
        return None;
    };
    if s.protocol == UpstreamProtocol::H2c {
        at_service(
            p,
            "protocol h2c is HTTP/2 without TLS; with `tls`, use protocol h2",
        );
    }
    let server_name = match &t.sni {
        Some(n) => {
            if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
                n.report(p, format!("`{}` is not a DNS name or an IP address", **n));
            }
            n.value.clone()
        }
        None => {
            if rustls_pki_types::ServerName::try_from(s.name.as_str()).is_err() {
                s.name.report(
                    p,
                    "the service's name is not a DNS name, so it cannot be the SNI: give `tls.sni`",
                );
            }
            s.name.value.clone()
        }
    };
    let ca_certificates = t.ca_certificates.as_ref().map(|ca| {
        let path = readable_file(ca, base_dir, p);
        if path.is_file()
            && let Err(e) = ca_bundle(&path)
        {
            ca.report(p, e.to_string());
        }
        path
    });
    let client_certificate = match (&t.certificate, &t.key) {
        (Some(c), Some(k)) => pair(c, k, base_dir, p),
        (None, None) => None,
        _ => {
            p.report(
                t.span,
                t.node_path.clone(),
                "a client certificate needs both `certificate` and `key`",
            );
            None
        }
    };
    Some(UpstreamTlsConfig {
        server_name,
        ca_certificates,
        client_certificate,
    })
}

#[cfg(test)]
mod tests {
    use super::hostname_problem;

    #[test]
    fn sni_names_are_dns_names_or_one_label_wildcards() {
        #[rustfmt::skip]
        let cases = [
            ("api.example.com", true),
            ("*.example.com", true),
            ("localhost", true),
            ("*.*.example.com", false),
            ("a*.example.com", false),
            ("*", false),
            ("", false),
            ("127.0.0.1", false),
            ("exa mple.com", false),
        ];
        for (name, ok) in cases {
            assert_eq!(hostname_problem(name).is_none(), ok, "{name}");
        }
    }
}
