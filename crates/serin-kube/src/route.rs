//! A gateway route as a Gateway API HTTPRoute: the same rules, matches,
//! filters and weighted `backendRefs`, the backends being the per-version
//! Services.
//!
//! The types are the Gateway API's experimental channel, because serin's
//! routes use `retry` and the `ExternalAuth` filter, which only it has. The
//! `parentRefs` name the Gateway `serin-gateway`: the gateway with
//! `routes: kubernetes` serves exactly the HTTPRoutes that name it, and no
//! other implementation's Gateway takes them.

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefs,
    HttpRouteRulesBackendRefsFilters, HttpRouteRulesFilters, HttpRouteRulesFiltersCors,
    HttpRouteRulesFiltersExternalAuth, HttpRouteRulesFiltersExternalAuthBackendRef,
    HttpRouteRulesFiltersExternalAuthHttp, HttpRouteRulesFiltersExternalAuthProtocol,
    HttpRouteRulesFiltersRequestHeaderModifier, HttpRouteRulesFiltersRequestHeaderModifierAdd,
    HttpRouteRulesFiltersRequestHeaderModifierSet, HttpRouteRulesFiltersRequestMirror,
    HttpRouteRulesFiltersRequestMirrorBackendRef, HttpRouteRulesFiltersRequestMirrorFraction,
    HttpRouteRulesFiltersRequestRedirect, HttpRouteRulesFiltersRequestRedirectPath,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersResponseHeaderModifier, HttpRouteRulesFiltersResponseHeaderModifierAdd,
    HttpRouteRulesFiltersResponseHeaderModifierSet, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewrite, HttpRouteRulesFiltersUrlRewritePath,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches, HttpRouteRulesMatchesHeaders,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPath,
    HttpRouteRulesMatchesPathType, HttpRouteRulesMatchesQueryParams,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteRulesRetry, HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfig,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType, HttpRouteRulesSessionPersistenceType,
    HttpRouteRulesTimeouts, HttpRouteSpec,
};
use serin_config::proxy::{
    FilterConfig, HeaderModifierConfig, PathMatch, PathModifier, RouteConfig, RuleConfig,
    StringMatch, ValueMatch,
};

use crate::RenderError;
use crate::names::{CONTAINER_PORT, Context, GATEWAY_NAME, labels, version_object_name};
use crate::proxy_file::regex_source;

type Fallible<T> = Result<T, String>;

/// The HTTPRoute of one gateway route, named after it.
pub(crate) fn http_route(ctx: &Context, r: &RouteConfig) -> Result<HttpRoute, RenderError> {
    let err = |message: String| RenderError::Route {
        route: r.name.clone(),
        message,
    };
    let name_ok = !r.name.is_empty()
        && r.name.len() <= 253
        && r.name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && r.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && r.name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !name_ok {
        return Err(RenderError::BadName {
            name: r.name.clone(),
            what: "HTTPRoute",
            why: "lowercase letters, digits, - and . only, alphanumeric at both ends".into(),
        });
    }
    let mut rules = Vec::new();
    for (i, rule) in r.rules.iter().enumerate() {
        rules.push(self::rule(rule).map_err(|m| err(format!("rule {i}: {m}")))?);
    }
    Ok(HttpRoute {
        metadata: ctx.meta(&r.name, labels(&[])),
        spec: HttpRouteSpec {
            parent_refs: Some(vec![HttpRouteParentRefs {
                name: GATEWAY_NAME.into(),
                ..HttpRouteParentRefs::default()
            }]),
            hostnames: (!r.hostnames.is_empty()).then(|| r.hostnames.clone()),
            rules: Some(rules),
            ..HttpRouteSpec::default()
        },
        status: None,
    })
}

/// A Gateway API duration (GEP-2257: `25ms`, `1m30s`).
fn duration(d: std::time::Duration, what: &str) -> Fallible<String> {
    gateway_api::Duration::try_from(d)
        .map(|d| d.to_string())
        .map_err(|e| format!("{what} {d:?} has no Gateway API form: {e}"))
}

fn num<T: TryFrom<u64>>(v: impl Into<u64>, what: &str) -> Fallible<T> {
    let v = v.into();
    T::try_from(v).map_err(|_| format!("{what} {v} is out of range"))
}

/// A backendRef of another kind than Service, as written: it stays
/// unresolved in the cluster too (its share answers 500 there as here).
fn unresolved_ref(
    u: &serin_config::proxy::UnresolvedBackendRef,
) -> Option<Fallible<HttpRouteRulesBackendRefs>> {
    let serin_config::proxy::UnresolvedReason::InvalidKind { group, kind } = &u.reason else {
        return None;
    };
    Some(
        num(u.weight, "weight").map(|weight| HttpRouteRulesBackendRefs {
            name: u.name.clone(),
            group: Some(group.clone()),
            kind: Some(kind.clone()),
            weight: Some(weight),
            ..HttpRouteRulesBackendRefs::default()
        }),
    )
}

fn rule(rule: &RuleConfig) -> Fallible<HttpRouteRules> {
    let backend_refs = rule
        .backends
        .iter()
        .map(|b| {
            Ok(HttpRouteRulesBackendRefs {
                name: version_object_name(&b.service, &b.version),
                port: Some(i32::from(CONTAINER_PORT)),
                weight: Some(num(b.weight, "weight")?),
                filters: backend_filters(&b.filters)?,
                ..HttpRouteRulesBackendRefs::default()
            })
        })
        .chain(rule.unresolved.iter().filter_map(unresolved_ref))
        .collect::<Fallible<Vec<_>>>()?;
    // serin's request timeout is on unless set to 0s, which is also how the
    // Gateway API turns a timeout off.
    let timeouts = HttpRouteRulesTimeouts {
        request: Some(match rule.timeouts.request {
            Some(d) => duration(d, "timeouts.request")?,
            None => "0s".into(),
        }),
        backend_request: rule
            .timeouts
            .backend_request
            .map(|d| duration(d, "timeouts.backendRequest"))
            .transpose()?,
    };
    let retry = if rule.retry.configured {
        Some(HttpRouteRulesRetry {
            attempts: Some(i64::from(rule.retry.attempts)),
            codes: Some(rule.retry.codes.iter().map(|c| i64::from(*c)).collect()),
            backoff: Some(duration(rule.retry.backoff, "retry.backoff")?),
        })
    } else {
        None
    };
    Ok(HttpRouteRules {
        name: rule.name.clone(),
        matches: (!rule.matches.is_empty())
            .then(|| {
                rule.matches
                    .iter()
                    .map(match_)
                    .collect::<Fallible<Vec<_>>>()
            })
            .transpose()?,
        filters: (!rule.filters.is_empty())
            .then(|| {
                rule.filters
                    .iter()
                    .map(filter)
                    .collect::<Fallible<Vec<_>>>()
            })
            .transpose()?,
        backend_refs: (!backend_refs.is_empty()).then_some(backend_refs),
        timeouts: Some(timeouts),
        retry,
        session_persistence: rule
            .session_persistence
            .as_ref()
            .map(session_persistence)
            .transpose()?,
    })
}

/// A rule's `sessionPersistence`, in the Gateway API's own words.
fn session_persistence(
    s: &serin_config::proxy::SessionPersistenceConfig,
) -> Fallible<HttpRouteRulesSessionPersistence> {
    use serin_config::proxy::SessionKind;
    Ok(HttpRouteRulesSessionPersistence {
        session_name: Some(s.name.clone()),
        r#type: Some(match s.kind {
            SessionKind::Cookie => HttpRouteRulesSessionPersistenceType::Cookie,
            SessionKind::Header => HttpRouteRulesSessionPersistenceType::Header,
        }),
        absolute_timeout: s
            .absolute_timeout
            .map(|d| duration(d, "sessionPersistence.absoluteTimeout"))
            .transpose()?,
        idle_timeout: s
            .idle_timeout
            .map(|d| duration(d, "sessionPersistence.idleTimeout"))
            .transpose()?,
        cookie_config: s
            .permanent
            .then_some(HttpRouteRulesSessionPersistenceCookieConfig {
                lifetime_type: Some(
                    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType::Permanent,
                ),
            }),
    })
}

fn match_(m: &serin_config::proxy::MatchConfig) -> Fallible<HttpRouteRulesMatches> {
    let (kind, value) = match &m.path {
        PathMatch::Exact(v) => (HttpRouteRulesMatchesPathType::Exact, v.clone()),
        PathMatch::PathPrefix(v) => (
            HttpRouteRulesMatchesPathType::PathPrefix,
            if v.is_empty() { "/".into() } else { v.clone() },
        ),
        PathMatch::RegularExpression(r) => (
            HttpRouteRulesMatchesPathType::RegularExpression,
            regex_source(r),
        ),
    };
    let headers: Vec<_> = m
        .headers
        .iter()
        .map(|h| {
            let (t, value) = string_match(h);
            HttpRouteRulesMatchesHeaders {
                name: h.name.clone(),
                r#type: Some(if t {
                    HttpRouteRulesMatchesHeadersType::RegularExpression
                } else {
                    HttpRouteRulesMatchesHeadersType::Exact
                }),
                value,
            }
        })
        .collect();
    let query_params: Vec<_> = m
        .query_params
        .iter()
        .map(|q| {
            let (t, value) = string_match(q);
            HttpRouteRulesMatchesQueryParams {
                name: q.name.clone(),
                r#type: Some(if t {
                    HttpRouteRulesMatchesQueryParamsType::RegularExpression
                } else {
                    HttpRouteRulesMatchesQueryParamsType::Exact
                }),
                value,
            }
        })
        .collect();
    Ok(HttpRouteRulesMatches {
        path: Some(HttpRouteRulesMatchesPath {
            r#type: Some(kind),
            value: Some(value),
        }),
        headers: (!headers.is_empty()).then_some(headers),
        query_params: (!query_params.is_empty()).then_some(query_params),
        method: m.method.as_ref().map(|x| method(x.as_str())).transpose()?,
    })
}

/// (is it a regular expression, the value as written)
fn string_match(v: &ValueMatch) -> (bool, String) {
    match &v.value {
        StringMatch::Exact(s) => (false, s.clone()),
        StringMatch::RegularExpression(r) => (true, regex_source(r)),
    }
}

fn method(m: &str) -> Fallible<HttpRouteRulesMatchesMethod> {
    use HttpRouteRulesMatchesMethod as M;
    Ok(match m {
        "GET" => M::Get,
        "HEAD" => M::Head,
        "POST" => M::Post,
        "PUT" => M::Put,
        "DELETE" => M::Delete,
        "CONNECT" => M::Connect,
        "OPTIONS" => M::Options,
        "TRACE" => M::Trace,
        "PATCH" => M::Patch,
        other => return Err(format!("method {other} has no HTTPRoute form")),
    })
}

fn header_pairs(list: &[(http::HeaderName, http::HeaderValue)]) -> Fallible<Vec<(String, String)>> {
    list.iter()
        .map(|(n, v)| {
            let value = std::str::from_utf8(v.as_bytes())
                .map_err(|_| format!("header {n}: the value is not UTF-8"))?;
            Ok((n.as_str().to_string(), value.to_string()))
        })
        .collect()
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn request_headers(
    m: &HeaderModifierConfig,
) -> Fallible<HttpRouteRulesFiltersRequestHeaderModifier> {
    Ok(HttpRouteRulesFiltersRequestHeaderModifier {
        set: non_empty(
            header_pairs(&m.set)?
                .into_iter()
                .map(|(name, value)| HttpRouteRulesFiltersRequestHeaderModifierSet { name, value })
                .collect(),
        ),
        add: non_empty(
            header_pairs(&m.add)?
                .into_iter()
                .map(|(name, value)| HttpRouteRulesFiltersRequestHeaderModifierAdd { name, value })
                .collect(),
        ),
        remove: non_empty(m.remove.iter().map(|h| h.as_str().to_string()).collect()),
    })
}

fn response_headers(
    m: &HeaderModifierConfig,
) -> Fallible<HttpRouteRulesFiltersResponseHeaderModifier> {
    Ok(HttpRouteRulesFiltersResponseHeaderModifier {
        set: non_empty(
            header_pairs(&m.set)?
                .into_iter()
                .map(|(name, value)| HttpRouteRulesFiltersResponseHeaderModifierSet { name, value })
                .collect(),
        ),
        add: non_empty(
            header_pairs(&m.add)?
                .into_iter()
                .map(|(name, value)| HttpRouteRulesFiltersResponseHeaderModifierAdd { name, value })
                .collect(),
        ),
        remove: non_empty(m.remove.iter().map(|h| h.as_str().to_string()).collect()),
    })
}

/// A backendRef's header modifiers. The generated types of a backendRef's
/// filters are the rule's under other names (one schema in the CRD), so the
/// rule's are built and carried over as JSON rather than written twice.
fn backend_filters(
    f: &serin_config::proxy::BackendFilters,
) -> Fallible<Option<Vec<HttpRouteRulesBackendRefsFilters>>> {
    let as_json = |v: Result<serde_json::Value, serde_json::Error>| v.map_err(|e| e.to_string());
    let mut out = Vec::new();
    if let Some(m) = &f.request_headers {
        out.push(serde_json::json!({
            "type": "RequestHeaderModifier",
            "requestHeaderModifier": as_json(serde_json::to_value(request_headers(m)?))?,
        }));
    }
    if let Some(m) = &f.response_headers {
        out.push(serde_json::json!({
            "type": "ResponseHeaderModifier",
            "responseHeaderModifier": as_json(serde_json::to_value(response_headers(m)?))?,
        }));
    }
    if out.is_empty() {
        return Ok(None);
    }
    serde_json::from_value(serde_json::Value::Array(out))
        .map(Some)
        .map_err(|e| format!("backendRef filters: {e}"))
}

fn filter(f: &FilterConfig) -> Fallible<HttpRouteRulesFilters> {
    let base = |t| HttpRouteRulesFilters {
        r#type: t,
        ..HttpRouteRulesFilters::default()
    };
    Ok(match f {
        FilterConfig::RequestHeaderModifier(m) => HttpRouteRulesFilters {
            request_header_modifier: Some(request_headers(m)?),
            ..base(HttpRouteRulesFiltersType::RequestHeaderModifier)
        },
        FilterConfig::ResponseHeaderModifier(m) => HttpRouteRulesFilters {
            response_header_modifier: Some(response_headers(m)?),
            ..base(HttpRouteRulesFiltersType::ResponseHeaderModifier)
        },
        FilterConfig::UrlRewrite(u) => HttpRouteRulesFilters {
            url_rewrite: Some(HttpRouteRulesFiltersUrlRewrite {
                hostname: u.hostname.clone(),
                path: u.path.as_ref().map(|p| match p {
                    PathModifier::ReplaceFullPath(v) => HttpRouteRulesFiltersUrlRewritePath {
                        r#type: HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath,
                        replace_full_path: Some(v.clone()),
                        replace_prefix_match: None,
                    },
                    PathModifier::ReplacePrefixMatch(v) => HttpRouteRulesFiltersUrlRewritePath {
                        r#type: HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch,
                        replace_full_path: None,
                        replace_prefix_match: Some(v.clone()),
                    },
                }),
            }),
            ..base(HttpRouteRulesFiltersType::UrlRewrite)
        },
        FilterConfig::RequestRedirect(r) => HttpRouteRulesFilters {
            request_redirect: Some(HttpRouteRulesFiltersRequestRedirect {
                scheme: r
                    .scheme
                    .as_deref()
                    .map(|s| match s {
                        "http" => Ok(HttpRouteRulesFiltersRequestRedirectScheme::Http),
                        "https" => Ok(HttpRouteRulesFiltersRequestRedirectScheme::Https),
                        other => Err(format!("redirect scheme {other} has no HTTPRoute form")),
                    })
                    .transpose()?,
                hostname: r.hostname.clone(),
                path: r.path.as_ref().map(|p| match p {
                    PathModifier::ReplaceFullPath(v) => HttpRouteRulesFiltersRequestRedirectPath {
                        r#type: HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath,
                        replace_full_path: Some(v.clone()),
                        replace_prefix_match: None,
                    },
                    PathModifier::ReplacePrefixMatch(v) => {
                        HttpRouteRulesFiltersRequestRedirectPath {
                            r#type:
                                HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch,
                            replace_full_path: None,
                            replace_prefix_match: Some(v.clone()),
                        }
                    }
                }),
                port: r.port.map(i32::from),
                status_code: Some(i64::from(r.status.as_u16())),
            }),
            ..base(HttpRouteRulesFiltersType::RequestRedirect)
        },
        FilterConfig::ExternalAuth(a) => HttpRouteRulesFilters {
            external_auth: Some(HttpRouteRulesFiltersExternalAuth {
                protocol: HttpRouteRulesFiltersExternalAuthProtocol::Http,
                backend_ref: HttpRouteRulesFiltersExternalAuthBackendRef {
                    name: version_object_name(&a.service, &a.version),
                    port: Some(i32::from(CONTAINER_PORT)),
                    ..HttpRouteRulesFiltersExternalAuthBackendRef::default()
                },
                http: Some(HttpRouteRulesFiltersExternalAuthHttp {
                    path: (!a.path_prefix.is_empty()).then(|| a.path_prefix.clone()),
                    allowed_headers: non_empty(
                        a.allowed_headers
                            .iter()
                            .map(|h| h.as_str().to_string())
                            .collect(),
                    ),
                    allowed_response_headers: non_empty(
                        a.allowed_response_headers
                            .iter()
                            .map(|h| h.as_str().to_string())
                            .collect(),
                    ),
                }),
                ..HttpRouteRulesFiltersExternalAuth::default()
            }),
            ..base(HttpRouteRulesFiltersType::ExternalAuth)
        },
        // Keys are serin's setting, not the Gateway API's: an HTTPRoute
        // cannot carry them.
        FilterConfig::ApiKey(_) => return Err("the APIKey filter has no HTTPRoute form".into()),
        FilterConfig::Jwt(_) => return Err("the JWT filter has no HTTPRoute form".into()),
        FilterConfig::BasicAuth(_) => {
            return Err("the BasicAuth filter has no HTTPRoute form".into());
        }
        FilterConfig::Cors(c) => HttpRouteRulesFilters {
            cors: Some(cors(c)?),
            ..base(HttpRouteRulesFiltersType::Cors)
        },
        FilterConfig::RequestMirror(m) => {
            let (percent, fraction) = mirror_share(m.percent)?;
            HttpRouteRulesFilters {
                request_mirror: Some(HttpRouteRulesFiltersRequestMirror {
                    backend_ref: HttpRouteRulesFiltersRequestMirrorBackendRef {
                        name: version_object_name(&m.service, &m.version),
                        port: Some(i32::from(CONTAINER_PORT)),
                        ..HttpRouteRulesFiltersRequestMirrorBackendRef::default()
                    },
                    percent,
                    fraction,
                }),
                ..base(HttpRouteRulesFiltersType::RequestMirror)
            }
        }
    })
}

/// The CORS filter in the HTTPRoute's words (the same as the file's).
fn cors(c: &serin_config::proxy::CorsConfig) -> Fallible<HttpRouteRulesFiltersCors> {
    let value = serde_json::to_value(crate::proxy_file::Cors::of(c)).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| e.to_string())
}

type MirrorShare = (
    Option<i32>,
    Option<HttpRouteRulesFiltersRequestMirrorFraction>,
);

/// serin's mirror `percent` (0 to 100, fractional) as the Gateway API's
/// whole `percent`, or as a `fraction` when it has decimals; nothing for
/// 100, the default.
fn mirror_share(percent: f64) -> Fallible<MirrorShare> {
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("mirror percent {percent} is not from 0 to 100"));
    }
    // Parts per million of the requests: serin's percent to four decimals.
    const DENOMINATOR: i64 = 1_000_000;
    #[allow(clippy::cast_possible_truncation)] // 0..=1e6 after the check
    let ppm = (percent * 10_000.0).round() as i64;
    if ppm == DENOMINATOR {
        return Ok((None, None));
    }
    if ppm % 10_000 == 0 {
        return Ok((
            Some(num::<i32>(
                u64::try_from(ppm / 10_000).unwrap_or(0),
                "percent",
            )?),
            None,
        ));
    }
    let (mut a, mut b) = (ppm, DENOMINATOR);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let g = a.max(1);
    let part = |v: i64| i32::try_from(v / g).map_err(|_| format!("mirror percent {percent}"));
    Ok((
        None,
        Some(HttpRouteRulesFiltersRequestMirrorFraction {
            numerator: part(ppm)?,
            denominator: Some(part(DENOMINATOR)?),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first rule of a proxy config's text, rendered.
    fn first_rule(text: &str) -> HttpRouteRules {
        let cfg =
            serin_config::proxy::parse_proxy_config(text, "in.yaml", std::path::Path::new("/"))
                .unwrap_or_else(|e| panic!("{e}"));
        rule(&cfg.routes[0].rules[0]).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_backend_refs_header_modifiers_are_rendered_on_it() {
        let text = r#"
listeners: [{name: gw, address: "127.0.0.1:0"}]
services: [{name: a, versions: [{name: v1, endpoints: ["127.0.0.1:1"]}]}]
routes:
  - name: r
    rules:
      - backendRefs:
          - name: a
            version: v1
            filters:
              - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-v, value: "1"}]}}
              - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
"#;
        let rendered = first_rule(text);
        let refs = rendered.backend_refs.unwrap_or_default();
        let filters = serde_json::to_value(&refs[0].filters).unwrap_or_default();
        assert_eq!(
            filters,
            serde_json::json!([
                {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-v", "value": "1"}]}},
                {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["server"]}},
            ])
        );
    }

    #[test]
    fn session_persistence_is_rendered_in_the_gateway_apis_words() {
        let text = r#"
listeners: [{name: gw, address: "127.0.0.1:0"}]
services: [{name: a, versions: [{name: v1, endpoints: ["127.0.0.1:1"]}]}]
routes:
  - name: r
    rules:
      - backendRefs: [{name: a, version: v1}]
        sessionPersistence: {sessionName: shop, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}
"#;
        let rendered = first_rule(text);
        assert_eq!(
            serde_json::to_value(&rendered.session_persistence).unwrap_or_default(),
            serde_json::json!({
                "sessionName": "shop", "type": "Cookie", "absoluteTimeout": "1h",
                "cookieConfig": {"lifetimeType": "Permanent"},
            })
        );
    }

    #[test]
    fn mirror_shares() {
        assert_eq!(mirror_share(100.0), Ok((None, None)));
        assert_eq!(mirror_share(25.0), Ok((Some(25), None)));
        assert_eq!(mirror_share(0.0), Ok((Some(0), None)));
        let frac = |n, d| {
            Ok((
                None,
                Some(HttpRouteRulesFiltersRequestMirrorFraction {
                    numerator: n,
                    denominator: Some(d),
                }),
            ))
        };
        assert_eq!(mirror_share(1.5), frac(3, 200));
        assert_eq!(mirror_share(0.01), frac(1, 10_000));
        assert!(mirror_share(101.0).is_err());
    }
}
