//! A stand-in for the Kubernetes API server, for tests of code that lists,
//! watches and writes Kubernetes objects through a real client (kube-rs).
//!
//! It speaks the API server's JSON wire format over plain HTTP on
//! 127.0.0.1 (port picked by the OS) for a fixed set of kinds ([`KINDS`]:
//! EndpointSlices, HTTPRoutes, Gateways, ReferenceGrants, Leases and
//! Services in namespaces; GatewayClasses and Namespaces cluster-scoped,
//! under paths without `namespaces/NS`):
//!
//! - list: `GET /apis/G/V/namespaces/NS/PLURAL` (and without
//!   `namespaces/NS` for every namespace; core kinds under `/api/v1`) answers
//!   a `KindList` with `metadata.resourceVersion`; `labelSelector` (`k=v`,
//!   `k==v`, `k!=v`, `k`, `!k`, comma-separated; not the set forms `in`,
//!   `notin`) and `fieldSelector` (`metadata.name`, `metadata.namespace`) are
//!   obeyed;
//! - watch: the same path with `watch=true&resourceVersion=N` streams
//!   newline-delimited `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR",
//!   "object":…}` events after N, live, until `timeoutSeconds`; without N (or
//!   with 0) it first sends every current object as ADDED. A resourceVersion
//!   older than the last [`KubeApi::compact`] gets an ERROR event with a 410
//!   `Status` (reason `Expired`), or HTTP 410 after
//!   [`KubeApi::gone_as_http`];
//! - `GET …/PLURAL/NAME` one object; `POST` creates (409 AlreadyExists);
//!   `PUT` replaces (409 Conflict when `metadata.resourceVersion` is given
//!   and is not the current one); `PATCH` with `application/merge-patch+json`
//!   (RFC 7386) or `application/apply-patch+yaml` (server-side apply, taken
//!   as a merge of the JSON body that creates the object when missing; no
//!   field ownership) — a `metadata.resourceVersion` in the patch must be the
//!   current one (else 409); `DELETE` removes.
//! - status subresource (HTTPRoutes, Gateways, GatewayClasses, Services,
//!   Namespaces): `PUT` or `PATCH` of `…/NAME/status` changes only
//!   `.status`, with the same resourceVersion check; a write to the object
//!   itself (and [`KubeApi::apply`]) leaves `.status` as it is, and a create
//!   drops it, as the API server does. The object's `metadata.generation`
//!   grows when its `spec` changes, never for a status write.
//!
//! [`KubeApi::forbid_everywhere`] refuses lists and watches of a kind
//! across namespaces with 403, as RBAC without a ClusterRole does.
//!
//! Every write bumps one global resourceVersion counter, like etcd's
//! revision. Tests change objects directly ([`KubeApi::apply`],
//! [`KubeApi::delete`]) and provoke the failures a watcher must survive:
//! [`KubeApi::bookmark`], [`KubeApi::drop_watches`] (connections cut
//! mid-stream), [`KubeApi::compact`] (open watches get an ERROR event with a
//! 410 `Status`; later watches from an older resourceVersion get 410 too)
//! and [`KubeApi::stop`] / [`KubeApi::restart`] (same port, objects kept,
//! like an API server restart over the same etcd).
//! [`KubeApi::write_kubeconfig`] writes a kubeconfig that points a client
//! (`KUBECONFIG=…`) at it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Map, Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::server_thread::ServerThread;

/// A kind the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    /// False for cluster-scoped kinds (no `namespaces/NS` in their paths).
    pub namespaced: bool,
    /// Whether it has a `/status` subresource.
    pub status: bool,
}

impl Kind {
    /// `group/version` (`v1` for the core group).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const ENDPOINT_SLICE: Kind = Kind {
    group: "discovery.k8s.io",
    version: "v1",
    plural: "endpointslices",
    kind: "EndpointSlice",
    namespaced: true,
    status: false,
};
pub const HTTP_ROUTE: Kind = Kind {
    group: "gateway.networking.k8s.io",
    version: "v1",
    plural: "httproutes",
    kind: "HTTPRoute",
    namespaced: true,
    status: true,
};
pub const GATEWAY: Kind = Kind {
    group: "gateway.networking.k8s.io",
    version: "v1",
    plural: "gateways",
    kind: "Gateway",
    namespaced: true,
    status: true,
};
pub const GATEWAY_CLASS: Kind = Kind {
    group: "gateway.networking.k8s.io",
    version: "v1",
    plural: "gatewayclasses",
    kind: "GatewayClass",
    namespaced: false,
    status: true,
};
pub const REFERENCE_GRANT: Kind = Kind {
    group: "gateway.networking.k8s.io",
    version: "v1",
    plural: "referencegrants",
    kind: "ReferenceGrant",
    namespaced: true,
    status: false,
};
pub const LEASE: Kind = Kind {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    status: false,
};
pub const NAMESPACE: Kind = Kind {
    group: "",
    version: "v1",
    plural: "namespaces",
    kind: "Namespace",
    namespaced: false,
    status: true,
};
pub const SERVICE: Kind = Kind {
    group: "",
    version: "v1",
    plural: "services",
    kind: "Service",
    namespaced: true,
    status: true,
};

/// Every kind the stand-in serves.
pub const KINDS: [Kind; 8] = [
    ENDPOINT_SLICE,
    HTTP_ROUTE,
    GATEWAY,
    GATEWAY_CLASS,
    REFERENCE_GRANT,
    LEASE,
    SERVICE,
    NAMESPACE,
];

/// (plural, namespace ("" for cluster-scoped kinds), name)
type ObjectKey = (&'static str, String, String);

#[derive(Clone)]
struct Change {
    rv: u64,
    kind: Kind,
    namespace: String,
    event: &'static str,
    object: Value,
}

/// What open watches are told.
#[derive(Clone)]
enum Signal {
    Change(Box<Change>),
    Bookmark(u64),
    /// Cut every watch connection mid-stream.
    Drop,
    /// History was compacted: send a 410 ERROR event and end.
    Expired(u64),
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    /// Answer such a watch with HTTP 410 instead of an ERROR event.
    gone_as_http: bool,
    objects: BTreeMap<ObjectKey, Value>,
    history: Vec<Change>,
    /// Kinds (plurals) that may not be listed or watched across namespaces,
    /// as RBAC without a ClusterRole says: 403.
    forbidden_everywhere: Vec<&'static str>,
    /// (plural, "list" | "watch") → requests served.
    counts: BTreeMap<(String, &'static str), u64>,
    log: Vec<String>,
}

struct Shared {
    store: Mutex<Store>,
    signals: broadcast::Sender<Signal>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The API-server stand-in. Stops on drop.
pub struct KubeApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<ServerThread>>,
}

impl Default for KubeApi {
    fn default() -> Self {
        Self::start()
    }
}

impl KubeApi {
    /// Starts the stand-in on 127.0.0.1 with a port the OS picks.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind API stand-in: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("API stand-in address: {e}"));
        let (signals, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            signals,
        });
        let running = serve_on(listener, shared.clone());
        Self {
            addr,
            shared,
            running: Mutex::new(Some(running)),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig whose current context points at the stand-in
    /// (plain HTTP, no credentials) with `namespace` as its namespace.
    pub fn write_kubeconfig(&self, path: &Path, namespace: &str) {
        let text = format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: stand-in\n  cluster:\n    server: {}\n\
             users:\n\
             - name: stand-in\n  user: {{}}\n\
             contexts:\n\
             - name: stand-in\n  context:\n    cluster: stand-in\n    user: stand-in\n    namespace: {namespace}\n\
             current-context: stand-in\n",
            self.url()
        );
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("write kubeconfig {}: {e}", path.display()));
    }

    /// Creates or replaces an object (its `apiVersion`/`kind` pick the kind;
    /// `metadata.namespace` defaults to "default", and is none for
    /// cluster-scoped kinds) as `kubectl apply` would: a kind with a status
    /// subresource keeps its current `status`. Watchers see ADDED or
    /// MODIFIED. Returns the new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let kind = kind_of(&object).unwrap_or_else(|| panic!("no served kind for {object}"));
        let namespace = if kind.namespaced {
            str_at(&object, &["metadata", "namespace"])
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut store = self.shared.store();
        if kind.status {
            let name = str_at(&object, &["metadata", "name"]).unwrap_or_default();
            let current = store
                .objects
                .get(&(kind.plural, namespace.clone(), name.to_string()))
                .cloned();
            keep_status(&mut object, current.as_ref());
        }
        store.put(&self.shared.signals, kind, &namespace, object);
        store.rv
    }

    /// Deletes an object (`namespace` "" for a cluster-scoped kind);
    /// watchers see DELETED. False when there was none.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> bool {
        let mut store = self.shared.store();
        store
            .remove(&self.shared.signals, kind, namespace, name)
            .is_some()
    }

    /// The stored object, with its resourceVersion (`namespace` "" for a
    /// cluster-scoped kind).
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store()
            .objects
            .get(&(kind.plural, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().rv
    }

    /// Sends a BOOKMARK with the current resourceVersion to open watches.
    pub fn bookmark(&self) {
        let rv = self.shared.store().rv;
        let _ = self.shared.signals.send(Signal::Bookmark(rv));
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.shared.signals.send(Signal::Drop);
    }

    /// Forgets the change history (like etcd compaction): open watches get an
    /// ERROR event with a 410 `Status` and end; a watch from an older
    /// resourceVersion gets HTTP 410 until the client lists again.
    pub fn compact(&self) {
        let mut store = self.shared.store();
        store.oldest = store.rv;
        store.history.clear();
        let _ = self.shared.signals.send(Signal::Expired(store.rv));
    }

    /// How a watch from a compacted resourceVersion is refused: false (the
    /// default, what API servers do) answers 200 with one ERROR event
    /// holding a 410 `Status`; true answers HTTP 410 with the `Status`.
    pub fn gone_as_http(&self, on: bool) {
        self.shared.store().gone_as_http = on;
    }

    /// From now on, lists and watches of `kind` across namespaces (and, for
    /// a cluster-scoped kind, at all) are refused with 403 Forbidden, as
    /// for a client whose RBAC is a namespaced Role only.
    pub fn forbid_everywhere(&self, kind: Kind) {
        self.shared.store().forbidden_everywhere.push(kind.plural);
    }

    /// How many list (`"list"`) or watch (`"watch"`) requests for `kind` were
    /// served.
    pub fn requests(&self, kind: Kind, verb: &str) -> u64 {
        let store = self.shared.store();
        store
            .counts
            .iter()
            .find(|((plural, v), _)| plural == kind.plural && *v == verb)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }

    /// Every request served so far, as `METHOD path?query` lines.
    pub fn request_log(&self) -> Vec<String> {
        self.shared.store().log.clone()
    }

    /// Stops serving: the port closes and every connection is cut. Objects
    /// and history are kept for [`KubeApi::restart`].
    pub fn stop(&self) {
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut server) = running {
            server.stop();
        }
    }

    /// Serves again on the same port after [`KubeApi::stop`].
    pub fn restart(&self) {
        self.stop();
        // The port was ours a moment ago; SO_REUSEADDR (set by std on Unix)
        // lets us take it back while old connections linger in TIME_WAIT.
        let mut listener = None;
        for _ in 0..100 {
            match std::net::TcpListener::bind(self.addr) {
                Ok(l) => {
                    listener = Some(l);
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let listener =
            listener.unwrap_or_else(|| panic!("cannot bind {} again for a restart", self.addr));
        let running = serve_on(listener, self.shared.clone());
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(running);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_on(listener: std::net::TcpListener, shared: Arc<Shared>) -> ServerThread {
    ServerThread::start(listener, move |stream| {
        let shared = shared.clone();
        async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, &shared).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        }
    })
}

type Body = BoxBody<Bytes, std::io::Error>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A `Status` object, as the API server sends for failures.
fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn failure(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json_response(code, &status_object(code.as_u16(), reason, message))
}

/// The parts of a request path: which kind, which namespace (None: all),
/// which object (None: the collection), and whether its `/status`.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    // `namespaces/NS/PLURAL…` is a namespaced path; `namespaces[/NAME
    // [/status]]` the Namespace kind's own (no kind is named `status`).
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" => {
            (Some(ns.to_string()), [&[*plural][..], tail].concat())
        }
        other => (None, other.to_vec()),
    };
    let (plural, name, status) = match rest.as_slice() {
        [plural] => (*plural, None, false),
        [plural, name] => (*plural, Some(name.to_string()), false),
        [plural, name, "status"] => (*plural, Some(name.to_string()), true),
        _ => return None,
    };
    let kind = KINDS
        .into_iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)?;
    let scope_ok = if kind.namespaced {
        namespace.is_some() || name.is_none()
    } else {
        namespace.is_none()
    };
    if !scope_ok || status && !kind.status {
        return None;
    }
    Some(Target {
        kind,
        namespace,
        name,
        status,
    })
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn handle(req: Request<Incoming>, shared: &Arc<Shared>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = query_map(req.uri().query());
    shared.store().log.push(format!(
        "{method} {path}{}",
        req.uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let Some(target) = parse_path(&path) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    };
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return failure(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    let is_watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let everywhere = target.namespace.is_none() && target.name.is_none();
    if everywhere
        && method == Method::GET
        && shared
            .store()
            .forbidden_everywhere
            .contains(&target.kind.plural)
    {
        return failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "{} is forbidden: cannot list resource \"{}\" in API group \"{}\" at the cluster scope",
                target.kind.plural, target.kind.plural, target.kind.group
            ),
        );
    }
    match (&method, &target.name) {
        (&Method::GET, None) if is_watch => watch(shared, &target, &query),
        (&Method::GET, None) => list(shared, &target, &query),
        (&Method::GET, Some(name)) => {
            let ns = target.namespace.clone().unwrap_or_default();
            match shared
                .store()
                .objects
                .get(&(target.kind.plural, ns, name.clone()))
            {
                Some(obj) => json_response(StatusCode::OK, obj),
                None => not_found(&target, name),
            }
        }
        (&Method::DELETE, Some(name)) => {
            let ns = target.namespace.clone().unwrap_or_default();
            let mut store = shared.store();
            match store.remove(&shared.signals, target.kind, &ns, name) {
                Some(obj) => json_response(StatusCode::OK, &obj),
                None => not_found(&target, name),
            }
        }
        (&Method::POST, None) | (&Method::PUT, Some(_)) | (&Method::PATCH, Some(_)) => {
            write(shared, &method, &target, &content_type, &body)
        }
        _ => failure(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("{method} is not supported on {path}"),
        ),
    }
}

fn not_found(target: &Target, name: &str) -> Response<Body> {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!(
            "{}.{} \"{name}\" not found",
            target.kind.plural, target.kind.group
        ),
    )
}

fn write(
    shared: &Arc<Shared>,
    method: &Method,
    target: &Target,
    content_type: &str,
    body: &[u8],
) -> Response<Body> {
    let namespace = match (&target.namespace, target.kind.namespaced) {
        (None, true) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "writes need a namespace in the path",
            );
        }
        (ns, _) => ns.clone().unwrap_or_default(),
    };
    let media = content_type.split(';').next().unwrap_or("").trim();
    let patch_kind = match (method, media) {
        (&Method::PATCH, "application/merge-patch+json") => Some(false),
        (&Method::PATCH, "application/apply-patch+yaml") => Some(true),
        (&Method::PATCH, other) => {
            return failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                &format!("the stand-in does not support the patch type {other:?}"),
            );
        }
        _ => None,
    };
    let input: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not a JSON object",
            );
        }
        Err(e) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("the body is not JSON: {e}"),
            );
        }
    };
    let mut store = shared.store();
    let name = target
        .name
        .clone()
        .or_else(|| str_at(&input, &["metadata", "name"]).map(str::to_string))
        .unwrap_or_default();
    if name.is_empty() {
        return failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "metadata.name: Required value",
        );
    }
    let key = (target.kind.plural, namespace.clone(), name.clone());
    let current = store.objects.get(&key).cloned();
    let wanted_rv = str_at(&input, &["metadata", "resourceVersion"]).map(str::to_string);
    let conflict = || {
        failure(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                target.kind.plural, target.kind.group
            ),
        )
    };
    let before = current.clone();
    let (object, status) = match (method, current) {
        (&Method::POST, Some(_)) => {
            return failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!(
                    "{}.{} \"{name}\" already exists",
                    target.kind.plural, target.kind.group
                ),
            );
        }
        (&Method::POST, None) => (input, StatusCode::CREATED),
        (&Method::PUT, None) => return not_found(target, &name),
        (_, Some(cur))
            if wanted_rv
                .as_deref()
                .is_some_and(|rv| Some(rv) != rv_of(&cur)) =>
        {
            return conflict();
        }
        (&Method::PUT, Some(_)) => (input, StatusCode::OK),
        (&Method::PATCH, Some(mut cur)) => {
            merge_patch(&mut cur, &input);
            (cur, StatusCode::OK)
        }
        (&Method::PATCH, None) if patch_kind == Some(true) => (input, StatusCode::CREATED),
        (&Method::PATCH, None) => return not_found(target, &name),
        _ => {
            return failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "unsupported",
            );
        }
    };
    let mut object = match (target.status, before) {
        // `/status` changes the status and nothing else.
        (true, Some(mut before)) => {
            let status = object.get("status").cloned().unwrap_or(Value::Null);
            set_status(&mut before, status);
            before
        }
        (_, before) if target.kind.status => {
            let mut object = object;
            keep_status(&mut object, before.as_ref());
            object
        }
        (_, _) => object,
    };
    set_at(
        &mut object,
        &["metadata", "name"],
        Value::String(name.clone()),
    );
    let stored = store.put(&shared.signals, target.kind, &namespace, object);
    json_response(status, &stored)
}

/// A write to the main resource of a kind with a status subresource leaves
/// the status as it is (none on create), as the API server does.
fn keep_status(object: &mut Value, current: Option<&Value>) {
    let status = current
        .and_then(|c| c.get("status"))
        .cloned()
        .unwrap_or(Value::Null);
    set_status(object, status);
}

fn set_status(object: &mut Value, status: Value) {
    if let Value::Object(map) = object {
        if status.is_null() {
            map.remove("status");
        } else {
            map.insert("status".into(), status);
        }
    }
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

fn list(shared: &Arc<Shared>, target: &Target, query: &BTreeMap<String, String>) -> Response<Body> {
    let mut store = shared.store();
    *store
        .counts
        .entry((target.kind.plural.to_string(), "list"))
        .or_insert(0) += 1;
    let selector = Selector::new(query);
    let items: Vec<Value> = store
        .objects
        .iter()
        .filter(|((plural, ns, _), obj)| {
            *plural == target.kind.plural
                && target.namespace.as_ref().is_none_or(|want| want == ns)
                && selector.matches(obj)
        })
        .map(|(_, obj)| obj.clone())
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": target.kind.api_version(),
            "kind": format!("{}List", target.kind.kind),
            "metadata": { "resourceVersion": store.rv.to_string() },
            "items": items,
        }),
    )
}

fn watch(
    shared: &Arc<Shared>,
    target: &Target,
    query: &BTreeMap<String, String>,
) -> Response<Body> {
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let selector = Selector::new(query);
    let kind = target.kind;
    let namespace = target.namespace.clone();
    let wanted = move |c: &Change| {
        c.kind == kind
            && namespace.as_ref().is_none_or(|ns| *ns == c.namespace)
            && selector.matches(&c.object)
    };
    // Subscribe and read the backlog under one lock, so no change falls
    // between them.
    let (backlog, mut signals) = {
        let mut store = shared.store();
        *store
            .counts
            .entry((kind.plural.to_string(), "watch"))
            .or_insert(0) += 1;
        if from != 0 && from < store.oldest {
            let message = format!("too old resource version: {from} ({})", store.oldest);
            let gone = status_object(410, "Expired", &message);
            if store.gone_as_http {
                return json_response(StatusCode::GONE, &gone);
            }
            // What an API server does: the watch starts, says 410 and ends.
            let event = json!({ "type": "ERROR", "object": gone });
            let mut resp = Response::new(full(format!("{event}\n")));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            return resp;
        }
        let backlog: Vec<Change> = if from == 0 {
            // "Any": start with every current object as ADDED.
            store
                .objects
                .iter()
                .filter(|((plural, _, _), _)| *plural == kind.plural)
                .map(|((_, ns, _), obj)| Change {
                    rv: store.rv,
                    kind,
                    namespace: ns.clone(),
                    event: "ADDED",
                    object: obj.clone(),
                })
                .filter(|c| wanted(c))
                .collect()
        } else {
            store
                .history
                .iter()
                .filter(|c| c.rv > from && wanted(c))
                .cloned()
                .collect()
        };
        (backlog, shared.signals.subscribe())
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |v: Value| Ok(Bytes::from(format!("{v}\n")));
        for c in backlog {
            if tx.send(line(event_json(&c))).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            let signal = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                s = signals.recv() => s,
            };
            let out = match signal {
                Ok(Signal::Change(c)) if wanted(&c) => line(event_json(&c)),
                Ok(Signal::Change(_)) => continue,
                Ok(Signal::Bookmark(rv)) => line(json!({
                    "type": "BOOKMARK",
                    "object": {
                        "apiVersion": kind.api_version(),
                        "kind": kind.kind,
                        "metadata": { "resourceVersion": rv.to_string() },
                    },
                })),
                Ok(Signal::Expired(oldest)) => {
                    let message = format!("too old resource version: {from} ({oldest})");
                    let _ = tx
                        .send(line(json!({
                            "type": "ERROR",
                            "object": status_object(410, "Expired", &message),
                        })))
                        .await;
                    return;
                }
                // A cut connection: an error makes hyper abort it instead of
                // ending the chunked body cleanly.
                Ok(Signal::Drop) | Err(_) => Err(std::io::Error::other("watch dropped")),
            };
            let cut = out.is_err();
            if tx.send(out).await.is_err() || cut {
                return;
            }
        }
    });
    let mut resp = Response::new(ChannelBody { rx }.boxed());
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn event_json(c: &Change) -> Value {
    json!({ "type": c.event, "object": c.object })
}

/// A response body fed by a channel (the watch stream).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|next| next.map(|r| r.map(Frame::data)))
    }
}

impl Store {
    /// Stores `object` as the new version of its key, filling in the
    /// metadata the API server owns; tells watchers. Returns what is stored.
    fn put(
        &mut self,
        signals: &broadcast::Sender<Signal>,
        kind: Kind,
        namespace: &str,
        mut object: Value,
    ) -> Value {
        let name = str_at(&object, &["metadata", "name"])
            .unwrap_or_else(|| panic!("object without metadata.name: {object}"))
            .to_string();
        let key = (kind.plural, namespace.to_string(), name);
        let old = self.objects.get(&key);
        self.rv += 1;
        let rv = self.rv;
        let generation = match old {
            Some(old) if old.get("spec") == object.get("spec") => {
                old.pointer("/metadata/generation").cloned()
            }
            Some(old) => Some(json!(
                old.pointer("/metadata/generation")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    + 1
            )),
            None => Some(json!(1)),
        };
        let uid = old
            .and_then(|o| o.pointer("/metadata/uid").cloned())
            .unwrap_or_else(|| json!(format!("00000000-0000-4000-8000-{rv:012}")));
        let created = old
            .and_then(|o| o.pointer("/metadata/creationTimestamp").cloned())
            .unwrap_or_else(|| json!("2026-01-01T00:00:00Z"));
        let event = if old.is_some() { "MODIFIED" } else { "ADDED" };
        if let Value::Object(map) = &mut object {
            map.insert("apiVersion".into(), json!(kind.api_version()));
            map.insert("kind".into(), json!(kind.kind));
        }
        if kind.namespaced {
            set_at(&mut object, &["metadata", "namespace"], json!(namespace));
        } else if let Some(Value::Object(meta)) = object.get_mut("metadata") {
            meta.remove("namespace");
        }
        set_at(
            &mut object,
            &["metadata", "resourceVersion"],
            json!(rv.to_string()),
        );
        set_at(&mut object, &["metadata", "uid"], uid);
        set_at(&mut object, &["metadata", "creationTimestamp"], created);
        if let Some(generation) = generation {
            set_at(&mut object, &["metadata", "generation"], generation);
        }
        self.objects.insert(key, object.clone());
        self.record(signals, kind, namespace, event, object.clone());
        object
    }

    fn remove(
        &mut self,
        signals: &broadcast::Sender<Signal>,
        kind: Kind,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let mut object =
            self.objects
                .remove(&(kind.plural, namespace.to_string(), name.to_string()))?;
        self.rv += 1;
        set_at(
            &mut object,
            &["metadata", "resourceVersion"],
            json!(self.rv.to_string()),
        );
        self.record(signals, kind, namespace, "DELETED", object.clone());
        Some(object)
    }

    fn record(
        &mut self,
        signals: &broadcast::Sender<Signal>,
        kind: Kind,
        namespace: &str,
        event: &'static str,
        object: Value,
    ) {
        let change = Change {
            rv: self.rv,
            kind,
            namespace: namespace.to_string(),
            event,
            object,
        };
        self.history.push(change.clone());
        let _ = signals.send(Signal::Change(Box::new(change)));
    }
}

/// A label and field selector from a request's query.
#[derive(Clone, Default)]
struct Selector {
    labels: Vec<LabelTerm>,
    fields: Vec<(String, String)>,
}

#[derive(Clone)]
enum LabelTerm {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    fn new(query: &BTreeMap<String, String>) -> Self {
        let labels = query
            .get("labelSelector")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| {
                        if let Some((k, v)) = t.split_once("!=") {
                            LabelTerm::NotEquals(k.trim().into(), v.trim().into())
                        } else if let Some((k, v)) =
                            t.split_once("==").or_else(|| t.split_once('='))
                        {
                            LabelTerm::Equals(k.trim().into(), v.trim().into())
                        } else if let Some(k) = t.strip_prefix('!') {
                            LabelTerm::Absent(k.trim().into())
                        } else {
                            LabelTerm::Exists(t.into())
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let fields = query
            .get("fieldSelector")
            .map(|s| {
                s.split(',')
                    .filter_map(|t| t.split_once('='))
                    .map(|(k, v)| (k.trim_end_matches('=').into(), v.into()))
                    .collect()
            })
            .unwrap_or_default();
        Self { labels, fields }
    }

    fn matches(&self, object: &Value) -> bool {
        let label = |k: &str| {
            object
                .pointer("/metadata/labels")
                .and_then(|l| l.get(k))
                .and_then(Value::as_str)
        };
        let labels_ok = self.labels.iter().all(|t| match t {
            LabelTerm::Equals(k, v) => label(k) == Some(v),
            LabelTerm::NotEquals(k, v) => label(k) != Some(v),
            LabelTerm::Exists(k) => label(k).is_some(),
            LabelTerm::Absent(k) => label(k).is_none(),
        });
        let fields_ok = self.fields.iter().all(|(k, v)| match k.as_str() {
            "metadata.name" => str_at(object, &["metadata", "name"]) == Some(v),
            "metadata.namespace" => str_at(object, &["metadata", "namespace"]) == Some(v),
            _ => false,
        });
        labels_ok && fields_ok
    }
}

fn kind_of(object: &Value) -> Option<Kind> {
    let api_version = object.get("apiVersion")?.as_str()?;
    let kind = object.get("kind")?.as_str()?;
    KINDS
        .into_iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

fn rv_of(object: &Value) -> Option<&str> {
    str_at(object, &["metadata", "resourceVersion"])
}

fn str_at<'a>(object: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(object, |v, k| v.get(k))
        .and_then(Value::as_str)
}

fn set_at(object: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut at = object;
    for key in parents {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        at = map
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !at.is_object() {
        *at = Value::Object(Map::new());
    }
    if let Value::Object(map) = at {
        map.insert(last.to_string(), value);
    }
}
