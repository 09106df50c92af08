//! The verified client certificate of a connection: what routes match on,
//! and the `x-forwarded-client-cert` value (Envoy's format) upstreams get.

use std::fmt::Write;

use http::HeaderValue;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The header serin sets from the verified client certificate; a client's
/// own is removed, never trusted.
const X_FORWARDED_CLIENT_CERT: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-client-cert");

/// Who the client proved to be, read once per connection.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// RFC 4514 form, most significant last (`CN=client,O=Example`).
    pub subject: String,
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    /// `x-forwarded-client-cert`, made once for every request of the
    /// connection.
    pub xfcc: HeaderValue,
}

impl PeerIdentity {
    /// Reads the client's leaf certificate (rustls has verified it).
    /// `by`: the URI SAN of the certificate serin served. `None` when the
    /// certificate cannot be parsed, which verification rules out.
    pub fn of(leaf: &CertificateDer<'_>, by: Option<&str>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
        let subject = rfc4514(cert.subject());
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => dns.push((*d).to_string()),
                    _ => {}
                }
            }
        }
        let hash = ring::digest::digest(&ring::digest::SHA256, leaf);
        let xfcc = xfcc_value(by, hash.as_ref(), &subject, &uris, &dns);
        Some(Self {
            subject,
            uris,
            dns,
            xfcc: HeaderValue::from_str(&xfcc).ok()?,
        })
    }
}

/// The first URI subject alternative name of a certificate (XFCC's `By`
/// for the one serin serves).
pub fn first_uri(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    })
}

/// Sets `x-forwarded-client-cert` to what the handshake verified, and
/// removes whatever the client sent in its name: before routing, so that
/// header matches, auth services and upstreams all see only serin's.
pub fn forward_client_cert(headers: &mut http::HeaderMap, peer: Option<&PeerIdentity>) {
    match peer {
        Some(p) => {
            headers.insert(X_FORWARDED_CLIENT_CERT, p.xfcc.clone());
        }
        None => {
            headers.remove(X_FORWARDED_CLIENT_CERT);
        }
    }
}

/// A name as RFC 4514 writes it: RDNs most significant last, joined by `,`.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut rdns = Vec::new();
    for rdn in name.iter() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map_or_else(|_| a.attr_type().to_id_string(), str::to_string);
                let value = a.as_str().map_or_else(|_| "#".to_string(), escape_dn);
                format!("{key}={value}")
            })
            .collect();
        rdns.push(attrs.join("+"));
    }
    rdns.reverse();
    rdns.join(",")
}

/// RFC 4514 §2.4's escapes of an attribute value.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i + 1 == v.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Envoy's `x-forwarded-client-cert` element:
/// `By=…;Hash=…;Subject="…";URI=…;DNS=…` (a key per SAN; `Subject`
/// always quoted, other values when they hold `,;="`).
fn xfcc_value(
    by: Option<&str>,
    hash: &[u8],
    subject: &str,
    uris: &[String],
    dns: &[String],
) -> String {
    let mut out = String::new();
    if let Some(by) = by {
        let _ = write!(out, "By={};", quoted_if_needed(by));
    }
    out.push_str("Hash=");
    for b in hash {
        let _ = write!(out, "{b:02x}");
    }
    let _ = write!(
        out,
        ";Subject=\"{}\"",
        subject.replace('\\', "\\\\").replace('"', "\\\"")
    );
    for u in uris {
        let _ = write!(out, ";URI={}", quoted_if_needed(u));
    }
    for d in dns {
        let _ = write!(out, ";DNS={}", quoted_if_needed(d));
    }
    out
}

fn quoted_if_needed(v: &str) -> String {
    if v.contains([',', ';', '=', '"']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_follows_envoys_format() {
        let uris = ["spiffe://example.org/client".to_string()];
        let dns = ["client.test".to_string(), "alt.test".to_string()];
        #[rustfmt::skip]
        let cases = [
            (Some("spiffe://example.org/gw"), "CN=client,O=Example", &uris[..], &dns[..],
             "By=spiffe://example.org/gw;Hash=0aff;Subject=\"CN=client,O=Example\";URI=spiffe://example.org/client;DNS=client.test;DNS=alt.test"),
            (None, "CN=a \\\"b\\\"", &[][..], &[][..], "Hash=0aff;Subject=\"CN=a \\\\\\\"b\\\\\\\"\""),
        ];
        for (by, subject, uris, dns, want) in cases {
            assert_eq!(xfcc_value(by, &[0x0a, 0xff], subject, uris, dns), want);
        }
    }

    #[test]
    fn identity_is_read_from_the_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["client.test".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.subject_alt_names.push(rcgen::SanType::URI(
            "spiffe://example.org/client"
                .try_into()
                .unwrap_or_else(|e| panic!("{e}")),
        ));
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client");
        let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let id = PeerIdentity::of(cert.der(), None).unwrap_or_else(|| panic!("unparsed"));
        assert_eq!(id.subject, "CN=client,O=Example\\, Inc");
        assert_eq!(id.uris, ["spiffe://example.org/client"]);
        assert_eq!(id.dns, ["client.test"]);
        let xfcc = id.xfcc.to_str().unwrap_or_default();
        assert!(xfcc.starts_with("Hash="), "{xfcc}");
        assert!(
            xfcc.ends_with(";URI=spiffe://example.org/client;DNS=client.test"),
            "{xfcc}"
        );
    }
}
