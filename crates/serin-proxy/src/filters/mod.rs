//! A rule's filters, compiled once per snapshot into one enum: each has an
//! `on_request` step (in the rule's order, after routing) and an
//! `on_response` step (on the upstream's answer). A new filter is a variant
//! and a module of its own.

mod api_key;
mod basic_auth;
mod cors;
mod ext_auth;
mod header_modifier;
mod jwks;
mod jwt;
mod url;

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::body::ClientBody;
use http::header::{self, HeaderValue};
use http::{Request, Response};
use serin_config::proxy::{FilterConfig, HeaderModifierConfig, RedirectConfig, UrlRewriteConfig};
use serin_discovery::BackendKey;

pub use cors::{CompiledCors, CorsRequest};
pub use header_modifier::modify_headers;
pub use url::split_host_port;

use crate::body::ResponseBody;
use crate::endpoints::Backend;
use crate::mirror::CompiledMirror;
use crate::request::RequestCx;
use crate::snapshot::CompiledService;

/// An ExternalAuth filter with its auth service resolved.
pub struct CompiledExtAuth {
    pub config: serin_config::proxy::ExternalAuthConfig,
    pub backend: Arc<Backend>,
    pub service: Arc<CompiledService>,
}

/// One filter of a rule, ready to run.
pub enum Filter {
    RequestHeaderModifier(HeaderModifierConfig),
    ResponseHeaderModifier(HeaderModifierConfig),
    UrlRewrite(UrlRewriteConfig),
    RequestRedirect(RedirectConfig),
    ExternalAuth(CompiledExtAuth),
    /// Marks the request for shadowing; the upstream phase sends the
    /// shadows once the request's body is known.
    RequestMirror(CompiledMirror),
    /// Answers preflights before every other filter, whatever its place
    /// (see [`crate::request`]), and adds its headers to every answer.
    Cors(CompiledCors),
    /// Refuses requests without one of the configured API keys.
    ApiKey(serin_config::proxy::ApiKeyConfig),
    /// Refuses requests without a valid JWT; copies claims to headers.
    /// Boxed: its validations (one per key family) dwarf the others.
    Jwt(Box<jwt::CompiledJwt>),
    /// Refuses requests without a user and password of its htpasswd file.
    BasicAuth(basic_auth::CompiledBasicAuth),
}

/// What a request filter decided.
pub enum Flow {
    /// On to the next filter, then the backend.
    Continue,
    /// The rule answers the request itself (a redirect, a denial). Boxed:
    /// the common `Continue` stays one word.
    Respond(Box<Response<ResponseBody>>),
}

/// Why a filter cannot be built: the snapshot is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{filter} names service {service}, which the config does not have")]
    UnknownService {
        filter: &'static str,
        service: String,
    },
    #[error("the JWT filter's key set {location} cannot be used: {why}")]
    Jwks { location: String, why: String },
}

impl Filter {
    /// Builds a filter; its backend state comes from `backend`.
    pub fn compile(
        config: &FilterConfig,
        services: &BTreeMap<&str, Arc<CompiledService>>,
        backend: &mut impl FnMut(&BackendKey) -> Arc<Backend>,
    ) -> Result<Self, FilterError> {
        let service = |filter: &'static str, name: &str| {
            services
                .get(name)
                .cloned()
                .ok_or_else(|| FilterError::UnknownService {
                    filter,
                    service: name.to_string(),
                })
        };
        Ok(match config {
            FilterConfig::RequestHeaderModifier(m) => Self::RequestHeaderModifier(m.clone()),
            FilterConfig::ResponseHeaderModifier(m) => Self::ResponseHeaderModifier(m.clone()),
            FilterConfig::UrlRewrite(rw) => Self::UrlRewrite(rw.clone()),
            FilterConfig::RequestRedirect(r) => Self::RequestRedirect(r.clone()),
            FilterConfig::ExternalAuth(a) => Self::ExternalAuth(CompiledExtAuth {
                service: service("ExternalAuth", &a.service)?,
                backend: backend(&BackendKey::new(&a.service, &a.version)),
                config: a.clone(),
            }),
            FilterConfig::RequestMirror(m) => Self::RequestMirror(CompiledMirror {
                service: service("RequestMirror", &m.service)?,
                backend: backend(&BackendKey::new(&m.service, &m.version)),
                config: m.clone(),
            }),
            FilterConfig::Cors(c) => Self::Cors(CompiledCors::new(c)),
            FilterConfig::ApiKey(k) => Self::ApiKey(k.clone()),
            FilterConfig::Jwt(j) => Self::Jwt(Box::new(jwt::CompiledJwt::new(j)?)),
            FilterConfig::BasicAuth(b) => Self::BasicAuth(basic_auth::CompiledBasicAuth::new(b)),
        })
    }

    /// The filter's type, as the config names it.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::RequestHeaderModifier(_) => "RequestHeaderModifier",
            Self::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
            Self::UrlRewrite(_) => "URLRewrite",
            Self::RequestRedirect(_) => "RequestRedirect",
            Self::ExternalAuth(_) => "ExternalAuth",
            Self::RequestMirror(_) => "RequestMirror",
            Self::Cors(_) => "CORS",
            Self::ApiKey(_) => "APIKey",
            Self::Jwt(_) => "JWT",
            Self::BasicAuth(_) => "BasicAuth",
        }
    }

    /// The headers this filter copies a token's claims into.
    pub fn claim_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        let jwt = match self {
            Self::Jwt(j) => Some(j.claim_headers()),
            _ => None,
        };
        jwt.into_iter().flatten()
    }

    /// A backendRef's own filters (header modifiers), in the order they
    /// run: the request's once the backend is picked, then the answer's.
    pub fn of_backend(f: &serin_config::proxy::BackendFilters) -> Vec<Self> {
        let request = f.request_headers.clone().map(Self::RequestHeaderModifier);
        let response = f.response_headers.clone().map(Self::ResponseHeaderModifier);
        request.into_iter().chain(response).collect()
    }

    /// Runs on the request, after routing and before the backend is picked
    /// (a backendRef's own filters: once it is picked).
    pub async fn on_request<'s>(
        &'s self,
        cx: &mut RequestCx<'s>,
        req: &mut Request<ClientBody>,
    ) -> Flow {
        match self {
            Self::RequestHeaderModifier(m) => modify_headers(req.headers_mut(), m),
            Self::ResponseHeaderModifier(_) => {}
            Self::UrlRewrite(rw) => {
                let mut uri = req.uri().clone();
                url::rewrite_url(&mut uri, req.headers_mut(), cx.matched(), rw);
                *req.uri_mut() = uri;
            }
            Self::RequestRedirect(cfg) => {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or_default();
                return Flow::Respond(Box::new(url::redirect(
                    cfg,
                    req.uri(),
                    host,
                    cx.info.tls,
                    cx.matched(),
                )));
            }
            Self::ExternalAuth(auth) => {
                if let Err(denied) = ext_auth::check(cx.ctx, cx.info, req, auth).await {
                    return Flow::Respond(Box::new(denied));
                }
            }
            Self::RequestMirror(m) => cx.mirrors.push(m),
            Self::ApiKey(k) => {
                if let Err(denied) = api_key::check(k, req.headers_mut()) {
                    return Flow::Respond(denied);
                }
            }
            Self::Jwt(j) => {
                if let Err(denied) = j.check(req.headers_mut()) {
                    return Flow::Respond(denied);
                }
            }
            Self::BasicAuth(b) => {
                if let Err(denied) = b.check(req.headers_mut()).await {
                    return Flow::Respond(denied);
                }
            }
            // Run by the request path before any filter.
            Self::Cors(_) => {}
        }
        Flow::Continue
    }

    /// Runs on the upstream's answer (not on answers serin made itself).
    pub fn on_response(&self, resp: &mut Response<ResponseBody>) {
        if let Self::ResponseHeaderModifier(m) = self {
            modify_headers(resp.headers_mut(), m);
        }
    }
}

/// A permanent redirect to `path` (with the request's query), for a path
/// that normalisation changed in a way the client should see.
pub fn redirect_to_path(path: &str, query: Option<&str>) -> Response<ResponseBody> {
    let location = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = http::StatusCode::TEMPORARY_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
