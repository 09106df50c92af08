//! End-to-end tests of the `serin` binary: real processes, real sockets,
//! real clients. One test binary; one module per area.

// Issue #11, point 3.
mod admin;
// Token auth filters: API keys (issue #13, point 4).
mod auth;
mod canary;
// Canary webhooks, gates, approval and notifications (issue #15, points 2, 3).
mod canary_hooks;
// Automatic canaries of `serin up` and blue/green with a preview (issue #15,
// points 4, 5).
mod canary_auto;
// The request-body limit (issue #13, point 6).
mod body_limit;
mod canary_kube;
// The client's address behind trusted proxies (issue #13, point 6).
mod client_address;
mod common;
// Response compression (issue #13, point 3).
mod compression;
mod config_errors;
// HTTP conformance and whose fault a failure is (issue #12, points 2 and 4).
mod conformance;
// One writer of the configuration (issue #11, point 2).
mod control;
// The CORS filter (issue #13, point 2).
mod cors;
mod dashboard;
mod ext_auth;
// `serin explain` (issue #16, point 3).
mod explain;
// Gateway API semantics of rules and backendRefs (issue #12, point 4).
mod gateway_api;
mod grpc;
mod images;
// Discovery and routes from the Kubernetes API (against a stand-in).
mod kubernetes;
// The rendered sidecar pod, run as processes against the API-server stand-in.
mod kubernetes_sidecars;
// serin as a Gateway API implementation: status, Lease, allowedRoutes and
// ReferenceGrants (issue #14, point 3; against the stand-in).
mod kubernetes_status;
mod mirror;
mod observability;
// Path normalisation before routing (issue #12, point 3).
mod paths;
mod protocols;
mod proxy_protocol;
mod ratelimit;
// The README's defaults against the code's constants (issue #11).
mod readme_defaults;
mod reload;
mod resilience;
mod routing;
// Session persistence (issue #13, point 5).
mod sessions;
mod strict;
// TLS in full (issue #13, point 1).
// `serin tap` (issue #16, point 4).
mod tap;
mod tls;
// JWT and BasicAuth filters, API keys from a file (issue #13, point 4).
mod token_auth;
mod up;
mod upstreams;
// `serin up --watch` (issue #16, point 1).
mod watch;
// Issue #6, points 5 and 6.
mod logs;
mod tracing;
