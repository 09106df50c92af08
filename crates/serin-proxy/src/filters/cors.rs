//! The CORS filter (Gateway API v1.5): a preflight is answered here, before
//! any other filter of the rule and before any upstream; every other answer
//! of the rule gets the CORS response headers when its `Origin` is allowed,
//! and none when it is not (so the browser refuses to share it).
//!
//! Where `*` is configured and `allowCredentials` is true, the answer names
//! the request's own origin, method and headers instead (the Gateway API
//! and the Fetch standard forbid `*` with credentials).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use serin_config::proxy::{CorsConfig, CorsList, OriginPattern, parse_origin};

use crate::body::ResponseBody;

/// A CORS filter with its header values built once per snapshot.
pub struct CompiledCors {
    origins: Vec<OriginPattern>,
    credentials: bool,
    methods: Allowed,
    headers: Allowed,
    expose: Allowed,
    max_age: HeaderValue,
}

/// What an `Access-Control-Allow-*` or `-Expose-Headers` header says.
enum Allowed {
    /// Nothing configured: the header is left out.
    Nothing,
    /// `*` configured: `*`, or with credentials the request's own names.
    Any,
    /// The configured names, joined with `, `.
    These(HeaderValue),
}

/// What the filter makes of a request.
pub enum CorsRequest {
    /// A preflight, answered by serin.
    Preflight(Response<ResponseBody>),
    /// Anything else: the answer gets the headers for this `Origin`.
    Actual(Option<HeaderValue>),
}

static TRUE: HeaderValue = HeaderValue::from_static("true");
static ANY: HeaderValue = HeaderValue::from_static("*");
static VARY_ORIGIN: HeaderValue = HeaderValue::from_static("origin");
static VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

impl CompiledCors {
    pub fn new(cfg: &CorsConfig) -> Self {
        Self {
            origins: cfg.allow_origins.clone(),
            credentials: cfg.allow_credentials,
            methods: allowed(&cfg.allow_methods, Method::as_str),
            headers: allowed(&cfg.allow_headers, HeaderName::as_str),
            expose: allowed(&cfg.expose_headers, HeaderName::as_str),
            max_age: HeaderValue::from(cfg.max_age),
        }
    }

    /// A preflight (`OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`) gets its answer; any other request
    /// keeps its `Origin` for [`Self::on_response`].
    pub fn on_request<B>(&self, req: &Request<B>) -> CorsRequest {
        let h = req.headers();
        let origin = h.get(header::ORIGIN);
        match (
            req.method(),
            origin,
            h.get(header::ACCESS_CONTROL_REQUEST_METHOD),
        ) {
            (&Method::OPTIONS, Some(origin), Some(method)) => {
                let mut resp = Response::new(ResponseBody::empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                let asked = h.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
                self.preflight_headers(origin, method, asked, resp.headers_mut());
                CorsRequest::Preflight(resp)
            }
            _ => CorsRequest::Actual(origin.cloned()),
        }
    }

    /// The answer's headers are the same for every origin only with `*`
    /// and no credentials; otherwise caches must key on `Origin`.
    fn depends_on_origin(&self) -> bool {
        self.credentials || !self.origins.contains(&OriginPattern::Any)
    }

    fn preflight_headers(
        &self,
        origin: &HeaderValue,
        method: &HeaderValue,
        asked: Option<&HeaderValue>,
        out: &mut HeaderMap,
    ) {
        out.insert(header::VARY, VARY_PREFLIGHT.clone());
        if !self.allows(origin) {
            return;
        }
        self.allow_origin(origin, out);
        let name = header::ACCESS_CONTROL_ALLOW_METHODS;
        self.list_header(&self.methods, name, Some(method), out);
        let name = header::ACCESS_CONTROL_ALLOW_HEADERS;
        self.list_header(&self.headers, name, asked, out);
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
    }

    /// Adds the CORS headers to an answer of the rule (the upstream's or
    /// serin's own) for the request's `origin`; for an origin not allowed,
    /// removes any the upstream set.
    pub fn on_response(&self, origin: Option<&HeaderValue>, out: &mut HeaderMap) {
        if self.depends_on_origin() {
            out.append(header::VARY, VARY_ORIGIN.clone());
        }
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            for name in CORS_RESPONSE_HEADERS {
                out.remove(name);
            }
            return;
        };
        let exposed = match (&self.expose, self.credentials) {
            // With credentials `*` means the header named `*`: name the
            // answer's own headers instead.
            (Allowed::Any, true) => joined(out.keys().map(HeaderName::as_str)),
            _ => None,
        };
        self.allow_origin(origin, out);
        let name = header::ACCESS_CONTROL_EXPOSE_HEADERS;
        match exposed {
            Some(v) => {
                out.insert(name, v);
            }
            None => self.list_header(&self.expose, name, None, out),
        }
    }

    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderMap) {
        let value = if self.depends_on_origin() {
            origin.clone()
        } else {
            ANY.clone()
        };
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if self.credentials {
            out.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
    }

    /// One list header: the configured names, or for `*` either `*` or
    /// (with credentials) what the request asked for, left out when it
    /// asked for nothing.
    fn list_header(
        &self,
        allowed: &Allowed,
        name: HeaderName,
        asked: Option<&HeaderValue>,
        out: &mut HeaderMap,
    ) {
        let value = match allowed {
            Allowed::Nothing => return,
            Allowed::These(v) => v.clone(),
            Allowed::Any if !self.credentials => ANY.clone(),
            Allowed::Any => match asked {
                Some(v) => v.clone(),
                None => return,
            },
        };
        out.insert(name, value);
    }

    /// Whether `origin` (as the browser sent it) is in `allowOrigins`.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        let Ok(text) = origin.to_str() else {
            return false;
        };
        // `null` (sandboxed frames, files, redirects) is never an allowed
        // origin: anything may send it.
        let Ok(OriginPattern::Origin {
            scheme,
            host,
            wildcard: false,
            port,
        }) = parse_origin(text)
        else {
            return false;
        };
        self.origins.iter().any(|p| match p {
            OriginPattern::Any => true,
            OriginPattern::Origin {
                scheme: s,
                host: h,
                wildcard,
                port: n,
            } => {
                *s == scheme
                    && *n == port
                    && if *wildcard {
                        host.len() > h.len() && host.ends_with(h.as_str())
                    } else {
                        *h == host
                    }
            }
        })
    }
}

/// The headers this filter owns on an answer.
const CORS_RESPONSE_HEADERS: [HeaderName; 3] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
];

fn allowed<T>(list: &CorsList<T>, name: fn(&T) -> &str) -> Allowed {
    match list {
        CorsList::Any => Allowed::Any,
        CorsList::Only(items) => match joined(items.iter().map(name)) {
            Some(v) => Allowed::These(v),
            None => Allowed::Nothing,
        },
    }
}

/// `a, b, c` as a header value; `None` for no names.
fn joined<'a>(names: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = names.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return None;
    }
    HeaderValue::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool, methods: CorsList<Method>) -> CompiledCors {
        CompiledCors::new(&CorsConfig {
            allow_origins: origins
                .iter()
                .map(|o| parse_origin(o).unwrap_or_else(|e| panic!("{o}: {e}")))
                .collect(),
            allow_methods: methods,
            allow_headers: CorsList::Any,
            expose_headers: CorsList::Only(vec![HeaderName::from_static("x-total")]),
            max_age: 600,
            allow_credentials: credentials,
        })
    }

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn origins_match_by_scheme_host_and_port_with_wildcards_to_the_left() {
        let c = cors(
            &[
                "https://app.example.com",
                "https://*.example.org",
                "http://localhost:3000",
            ],
            false,
            CorsList::Any,
        );
        for (origin, allowed) in [
            ("https://app.example.com", true),
            ("https://APP.example.com", true),
            ("https://app.example.com:443", true),
            ("https://app.example.com:8443", false),
            ("http://app.example.com", false),
            ("https://evil-app.example.com", false),
            ("https://app.example.com.evil.net", false),
            ("https://a.example.org", true),
            ("https://a.b.example.org", true),
            ("https://example.org", false),
            ("https://evilexample.org", false),
            ("http://localhost:3000", true),
            ("http://localhost", false),
            ("null", false),
            ("https://*.example.org", false),
            ("", false),
        ] {
            assert_eq!(
                c.allows(&HeaderValue::from_static(origin)),
                allowed,
                "{origin}"
            );
        }
        let any = cors(&["*"], false, CorsList::Any);
        assert!(any.allows(&v("https://anything.example")));
        assert!(!any.allows(&v("null")), "null is never allowed");
        let none = cors(&[], false, CorsList::Any);
        assert!(!none.allows(&v("https://app.example.com")));
    }

    /// A preflight's answer, as header name → value (None: absent).
    fn preflight(c: &CompiledCors, origin: &'static str, asked: Option<&'static str>) -> HeaderMap {
        let mut req = Request::builder()
            .method(Method::OPTIONS)
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT");
        if let Some(a) = asked {
            req = req.header(header::ACCESS_CONTROL_REQUEST_HEADERS, a);
        }
        let req = req.body(()).unwrap_or_else(|e| panic!("{e}"));
        match c.on_request(&req) {
            CorsRequest::Preflight(resp) => {
                assert_eq!(resp.status(), StatusCode::NO_CONTENT);
                resp.headers().clone()
            }
            CorsRequest::Actual(_) => panic!("not taken for a preflight"),
        }
    }

    #[test]
    fn preflights_are_answered_by_the_spec() {
        let get =
            |h: &HeaderMap, n: HeaderName| h.get(n).map(|v| v.to_str().unwrap_or("?").to_string());
        let put_delete = CorsList::Only(vec![Method::PUT, Method::DELETE]);
        use header::{
            ACCESS_CONTROL_ALLOW_CREDENTIALS as CRED, ACCESS_CONTROL_ALLOW_HEADERS as HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS as METHODS, ACCESS_CONTROL_ALLOW_ORIGIN as ORIGIN,
            ACCESS_CONTROL_MAX_AGE as MAX_AGE,
        };
        // (filter, origin, requested headers) → origin, methods, headers, credentials, max age
        type Row = (
            CompiledCors,
            &'static str,
            Option<&'static str>,
            [Option<&'static str>; 5],
        );
        let rows: Vec<Row> = vec![
            (
                cors(&["https://a.example"], false, put_delete.clone()),
                "https://a.example",
                Some("x-a"),
                [
                    Some("https://a.example"),
                    Some("PUT, DELETE"),
                    Some("*"),
                    None,
                    Some("600"),
                ],
            ),
            // `*` without credentials: `*` everywhere.
            (
                cors(&["*"], false, CorsList::Any),
                "https://b.example",
                Some("x-a"),
                [Some("*"), Some("*"), Some("*"), None, Some("600")],
            ),
            // `*` with credentials: the request's own origin, method, headers.
            (
                cors(&["*"], true, CorsList::Any),
                "https://b.example",
                Some("x-a, x-b"),
                [
                    Some("https://b.example"),
                    Some("PUT"),
                    Some("x-a, x-b"),
                    Some("true"),
                    Some("600"),
                ],
            ),
            // ... and no Allow-Headers when none were asked for.
            (
                cors(&["*"], true, CorsList::Any),
                "https://b.example",
                None,
                [
                    Some("https://b.example"),
                    Some("PUT"),
                    None,
                    Some("true"),
                    Some("600"),
                ],
            ),
            // A disallowed origin: answered, with no CORS headers at all.
            (
                cors(&["https://a.example"], true, put_delete),
                "https://evil.example",
                Some("x-a"),
                [None, None, None, None, None],
            ),
        ];
        for (i, (c, origin, asked, want)) in rows.iter().enumerate() {
            let h = preflight(c, origin, *asked);
            let got = [ORIGIN, METHODS, HEADERS, CRED, MAX_AGE].map(|n| get(&h, n));
            let want = want.map(|w| w.map(str::to_string));
            assert_eq!(got, want, "row {i}");
            assert!(
                get(&h, header::VARY).is_some_and(|v| v.contains("origin")),
                "row {i}"
            );
        }
    }

    #[test]
    fn only_options_with_origin_and_a_requested_method_is_a_preflight() {
        let c = cors(&["*"], false, CorsList::Any);
        for (method, origin, acrm, preflight) in [
            (Method::OPTIONS, true, true, true),
            (Method::OPTIONS, true, false, false),
            (Method::OPTIONS, false, true, false),
            (Method::GET, true, true, false),
        ] {
            let mut req = Request::builder().method(method.clone());
            if origin {
                req = req.header(header::ORIGIN, "https://a.example");
            }
            if acrm {
                req = req.header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT");
            }
            let req = req.body(()).unwrap_or_else(|e| panic!("{e}"));
            let got = matches!(c.on_request(&req), CorsRequest::Preflight(_));
            assert_eq!(got, preflight, "{method} origin={origin} acrm={acrm}");
        }
    }

    #[test]
    fn actual_answers_get_headers_for_allowed_origins_only() {
        let c = cors(&["https://a.example"], true, CorsList::Any);
        let mut allowed = HeaderMap::new();
        allowed.insert("x-total", v("3"));
        c.on_response(Some(&v("https://a.example")), &mut allowed);
        assert_eq!(
            allowed[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://a.example"
        );
        assert_eq!(allowed[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(allowed[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-total");
        assert_eq!(allowed[header::VARY], "origin");

        let mut refused = HeaderMap::new();
        refused.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v("*"));
        c.on_response(Some(&v("https://evil.example")), &mut refused);
        assert!(
            refused.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
            "the upstream's is removed"
        );
        assert_eq!(refused[header::VARY], "origin");

        // `*` exposed with credentials: the answer's own header names.
        let mut any = cors(&["*"], true, CorsList::Any);
        any.expose = Allowed::Any;
        let mut h = HeaderMap::new();
        h.insert("x-a", v("1"));
        any.on_response(Some(&v("https://b.example")), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-a, vary");
    }
}
