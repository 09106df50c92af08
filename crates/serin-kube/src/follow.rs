//! `routes: kubernetes`: following the cluster. The HTTPRoutes of every
//! namespace, serin's Gateway, the ReferenceGrants and the Namespaces'
//! labels are watched; after every change the routes that attach
//! ([`crate::attachment`]) are handed to the proxy, and the status they
//! should show ([`crate::route_status`]) is handed to the status writer
//! ([`crate::status_writer`]) as a [`StatusPlan`].
//!
//! While the cluster has no Gateway `serin-gateway`, serin acts on the one
//! it renders ([`crate::gateway_spec`]: routes from its own namespace) and
//! writes no Gateway status. A bad HTTPRoute (one the proxy's validator
//! refuses) is logged once per version, and its last good version (if any)
//! keeps serving; its status says `Accepted: False` (`UnsupportedValue`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::{Stream, StreamExt};
use gateway_api::gateways::GatewaySpec;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use serin_config::ConfigErrors;
use serin_config::proxy::{ProxyConfig, RouteConfig};
use serin_discovery::kubernetes::relisting_watcher;
use tokio::sync::watch;

use crate::attachment::{
    GatewayView, Reason, References, controls_class, grants_of, listener_takes_http_routes,
};
use crate::http_routes::{
    RouteProblem, http_route_resource, per_version_service_names, route_from_http_route_with,
};
use crate::names::{CONTROLLER_NAME, GATEWAY_NAME};
use crate::route_status::{Condition, ListenerStatus, ParentStatus};
use crate::status_writer::{Ours, StatusPlan, StatusWrite, Subject};

/// The kinds followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    HttpRoutes,
    Gateways,
    ReferenceGrants,
    Namespaces,
    GatewayClasses,
}

/// How many kinds are followed: status is written once all are listed.
const SOURCES: usize = 5;

type Tagged = (Source, Result<Event<DynamicObject>, watcher::Error>);

/// A reflector over `api`: its store and its events, tagged.
fn reflect(
    api: Api<DynamicObject>,
    resource: ApiResource,
    source: Source,
) -> (Store<DynamicObject>, impl Stream<Item = Tagged> + Send) {
    let writer = reflector::store::Writer::<DynamicObject>::new(resource);
    let store = writer.as_reader();
    let events = reflector::reflector(writer, relisting_watcher(api, watcher::Config::default()))
        .map(move |e| (source, e));
    (store, events)
}

/// The stores of everything followed.
struct Stores {
    routes: Store<DynamicObject>,
    gateways: Store<DynamicObject>,
    grants: Store<DynamicObject>,
    namespaces: Store<DynamicObject>,
    classes: Store<DynamicObject>,
    /// False when GatewayClasses cannot be read: the Gateway is taken for
    /// serin's.
    classes_known: bool,
}

/// What the gateway's RBAC lets it read beyond its own namespace. With the
/// rendered ClusterRole, all of it; with an older Role only, it follows
/// HTTPRoutes and ReferenceGrants of its own namespace, no Namespace labels
/// (a `Selector` admits nothing) and no GatewayClasses (its Gateway is
/// taken for serin's), and says so, rather than serving nothing.
#[derive(Debug, Clone, Copy)]
struct Access {
    all_routes: bool,
    all_grants: bool,
    namespaces: bool,
    classes: bool,
}

impl Access {
    async fn probe(client: &Client) -> Self {
        Self {
            all_routes: may_list_all(client, &http_route_resource()).await,
            all_grants: may_list_all(client, &grant_kind()).await,
            namespaces: may_list_all(client, &ApiResource::erase::<Namespace>(&())).await,
            classes: may_list_all(client, &class_kind()).await,
        }
    }
}

fn grant_kind() -> ApiResource {
    ApiResource::erase::<gateway_api::referencegrants::ReferenceGrant>(&())
}

fn class_kind() -> ApiResource {
    ApiResource::erase::<gateway_api::gatewayclasses::GatewayClass>(&())
}

/// False when listing `kind` in every namespace is forbidden (403); any
/// other failure is the watch's to retry.
async fn may_list_all(client: &Client, kind: &ApiResource) -> bool {
    let api = Api::<DynamicObject>::all_with(client.clone(), kind);
    let forbidden = matches!(
        api.list(&kube::api::ListParams::default().limit(1)).await,
        Err(kube::Error::Api(status)) if status.code == 403
    );
    if forbidden {
        tracing::warn!(
            resource = %kind.plural,
            "may not list {} in every namespace (RBAC: the rendered ClusterRole serin-gateway grants it); following less",
            kind.plural
        );
    }
    !forbidden
}

/// The reflectors of every kind followed, their events as one stream, and
/// the kinds not followed (taken as listed, and empty).
fn watch_all(
    client: &Client,
    namespace: &str,
    access: Access,
) -> (
    Stores,
    impl Stream<Item = Tagged> + Send + Unpin + use<>,
    Vec<Source>,
) {
    let api = |kind: &ApiResource, everywhere: bool| {
        if everywhere {
            Api::<DynamicObject>::all_with(client.clone(), kind)
        } else {
            Api::<DynamicObject>::namespaced_with(client.clone(), namespace, kind)
        }
    };
    let mut events = Vec::new();
    let mut skipped = Vec::new();
    let mut follow = |kind: ApiResource, everywhere: bool, source: Source, allowed: bool| {
        if !allowed {
            skipped.push(source);
            return reflector::store::Writer::<DynamicObject>::new(kind).as_reader();
        }
        let (store, stream) = reflect(api(&kind, everywhere), kind, source);
        events.push(stream.boxed());
        store
    };
    let gateway_kind = ApiResource::erase::<gateway_api::gateways::Gateway>(&());
    let stores = Stores {
        routes: follow(
            http_route_resource(),
            access.all_routes,
            Source::HttpRoutes,
            true,
        ),
        gateways: follow(gateway_kind, false, Source::Gateways, true),
        grants: follow(
            grant_kind(),
            access.all_grants,
            Source::ReferenceGrants,
            true,
        ),
        namespaces: follow(
            ApiResource::erase::<Namespace>(&()),
            true,
            Source::Namespaces,
            access.namespaces,
        ),
        classes: follow(class_kind(), true, Source::GatewayClasses, access.classes),
        classes_known: access.classes,
    };
    (stores, futures_util::stream::select_all(events), skipped)
}

/// Follows the cluster for a gateway in the client's namespace: after every
/// change (once the HTTPRoutes and the Gateway are listed), hands the
/// routes to serve to `apply` (which validates and swaps
/// them in, or refuses them) and the status to write to `statuses` (sent
/// only once every kind has been listed). `config` gives the running
/// config, whose services the routes must name. Runs until dropped.
pub async fn follow_cluster<C, A>(
    client: Client,
    config: C,
    apply: A,
    statuses: watch::Sender<StatusPlan>,
) where
    C: Fn() -> ProxyConfig,
    A: Fn(Vec<RouteConfig>) -> Result<(), ConfigErrors>,
{
    let namespace = client.default_namespace().to_string();
    let access = Access::probe(&client).await;
    let (stores, mut events, skipped) = watch_all(&client, &namespace, access);
    let mut served = Served::default();
    // The routes last applied, as JSON (None: none applied, or refused).
    let mut applied: Option<Value> = None;
    let mut listed: BTreeSet<Source> = skipped.into_iter().collect();
    let mut failing: BTreeSet<Source> = BTreeSet::new();
    while let Some((source, event)) = events.next().await {
        match event {
            Ok(Event::InitDone) => {
                listed.insert(source);
            }
            Ok(Event::Apply(_) | Event::Delete(_)) => {}
            Ok(Event::Init | Event::InitApply(_)) => continue,
            Err(e) => {
                if failing.insert(source) {
                    tracing::warn!(error = %e, kind = ?source, "watch failed; the current routes keep serving while it retries");
                }
                continue;
            }
        }
        failing.remove(&source);
        // What attaches depends on the Gateway as much as on the routes.
        if !listed.contains(&Source::HttpRoutes) || !listed.contains(&Source::Gateways) {
            continue;
        }
        let running = config();
        let round = evaluate(&namespace, &stores, &running, &mut served);
        // Status writes bring events too: the same routes are not applied
        // again (once they were applied without error).
        let now = serde_json::to_value(&round.routes).ok();
        if now.is_none() || now != applied {
            let count = round.routes.len();
            applied = match apply(round.routes) {
                Ok(()) => {
                    tracing::info!(routes = count, "routes from HTTPRoutes applied");
                    now
                }
                Err(e) => {
                    tracing::error!(
                        "routes from HTTPRoutes rejected; the current routes keep serving:\n{e}"
                    );
                    None
                }
            };
        }
        if listed.len() == SOURCES {
            statuses.send_replace(round.plan);
        }
    }
}

/// What one round decided.
struct Round {
    routes: Vec<RouteConfig>,
    plan: StatusPlan,
}

/// What is remembered between rounds: each HTTPRoute's last good route and
/// the resourceVersion of each bad one already reported.
#[derive(Default)]
struct Served {
    last_good: BTreeMap<String, RouteConfig>,
    reported: BTreeMap<String, String>,
    /// The class of serin's Gateway last reported as another controller's.
    foreign: Option<String>,
}

fn object_key(obj: &DynamicObject) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// serin's Gateway as the cluster has it (or as it renders it), with the
/// Namespaces' labels.
fn gateway_view(
    namespace: &str,
    stores: &Stores,
    config: &ProxyConfig,
) -> (GatewayView, Option<Arc<DynamicObject>>) {
    let object = stores
        .gateways
        .state()
        .into_iter()
        .find(|g| g.name_any() == GATEWAY_NAME);
    let spec = match object.as_ref().map(|g| g.data.get("spec").cloned()) {
        None => crate::gateway_spec(config),
        Some(spec) => serde_json::from_value::<GatewaySpec>(spec.unwrap_or_default())
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, gateway = GATEWAY_NAME, "the Gateway's spec does not parse: no route attaches");
                GatewaySpec::default()
            }),
    };
    let namespace_labels = stores
        .namespaces
        .state()
        .iter()
        .map(|n| (n.name_any(), n.labels().clone()))
        .collect();
    let controlled = object.is_none()
        || !stores.classes_known
        || controls_class(&spec.gateway_class_name, &class_controllers(stores));
    let view = GatewayView {
        namespace: namespace.to_string(),
        controlled,
        spec,
        namespace_labels,
    };
    (view, object)
}

/// GatewayClass name → its `spec.controllerName`.
fn class_controllers(stores: &Stores) -> BTreeMap<String, String> {
    stores
        .classes
        .state()
        .iter()
        .filter_map(|c| {
            let controller = c.data.pointer("/spec/controllerName")?.as_str()?;
            Some((c.name_any(), controller.to_string()))
        })
        .collect()
}

/// `Accepted` for every GatewayClass of serin's controller that does not
/// say so yet.
fn class_writes(stores: &Stores, now: &str) -> Vec<StatusWrite> {
    let resource = ApiResource::erase::<gateway_api::gatewayclasses::GatewayClass>(&());
    stores
        .classes
        .state()
        .iter()
        .filter(|c| {
            c.data
                .pointer("/spec/controllerName")
                .and_then(Value::as_str)
                == Some(CONTROLLER_NAME)
        })
        .map(|c| StatusWrite {
            subject: Subject::of(c, resource.clone()),
            generation: c.metadata.generation,
            ours: Ours::GatewayClass,
        })
        .filter(|w| w.needed(w.subject.status.as_ref(), now))
        .collect()
}

/// One round: every HTTPRoute judged, the routes to serve and the status
/// writes wanted.
fn evaluate(namespace: &str, stores: &Stores, config: &ProxyConfig, served: &mut Served) -> Round {
    let (view, gateway) = gateway_view(namespace, stores, config);
    let refs = References {
        gateway_namespace: namespace.to_string(),
        grants: stores
            .grants
            .state()
            .iter()
            .flat_map(|g| {
                grants_of(
                    &g.namespace().unwrap_or_default(),
                    g.data.get("spec").unwrap_or(&Value::Null),
                )
            })
            .collect(),
    };
    let services = per_version_service_names(config);
    let now = Timestamp::from_second(Timestamp::now().as_second())
        .unwrap_or(Timestamp::UNIX_EPOCH)
        .to_string();
    let mut objects = stores.routes.state();
    objects.sort_by_key(|o| object_key(o));
    let mut routes = Vec::new();
    let mut plan = Vec::new();
    let mut attached: BTreeMap<String, usize> = BTreeMap::new();
    let mut present = BTreeSet::new();
    for obj in &objects {
        let judged = judge(obj, &view, &refs, &services, config);
        let key = object_key(obj);
        if judged.accepted_on.is_empty() {
            served.last_good.remove(&key);
        } else {
            present.insert(key.clone());
            for listener in &judged.accepted_on {
                *attached.entry(listener.clone()).or_insert(0) += 1;
            }
            routes.extend(served.route(&key, obj, judged.read));
        }
        if let Some(write) = route_write(obj, judged.parents, &now) {
            plan.push(write);
        }
    }
    served.last_good.retain(|k, _| present.contains(k));
    served.reported.retain(|k, _| present.contains(k));
    served.foreign_class(&view, gateway.as_deref());
    if let Some(gateway) = gateway.filter(|_| view.controlled)
        && let Some(write) = gateway_write(&gateway, &view, &attached, &now)
    {
        plan.push(write);
    }
    plan.extend(class_writes(stores, &now));
    Round { routes, plan }
}

/// How one HTTPRoute fares.
struct Judged {
    /// serin's entry per parentRef naming serin's Gateway.
    parents: Vec<ParentStatus>,
    /// The listeners it is accepted on (none: not served).
    accepted_on: BTreeSet<String>,
    read: Result<crate::http_routes::ReadRoute, Vec<RouteProblem>>,
}

fn judge(
    obj: &DynamicObject,
    view: &GatewayView,
    refs: &References,
    services: &BTreeSet<String>,
    config: &ProxyConfig,
) -> Judged {
    let namespace = obj.namespace().unwrap_or_default();
    let spec = obj.data.get("spec").cloned().unwrap_or_default();
    let hostnames: Vec<String> = spec
        .get("hostnames")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let read = route_from_http_route_with(obj, config, refs);
    let refused = read.as_ref().err().map(|problems| {
        let list: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {}", p.field, p.message))
            .collect();
        (Reason::UnsupportedValue, list.join("; "))
    });
    let resolved = Condition::of(
        "ResolvedRefs",
        Reason::ResolvedRefs,
        "every backendRef resolves",
        crate::attachment::resolved_refs(refs, &namespace, &spec, services),
    );
    let mut accepted_on = BTreeSet::new();
    let parents = spec
        .get("parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| view.is_ours(p, &namespace))
        .map(|parent| {
            let outcome = view.attach(&parent, &namespace, &hostnames);
            if let Ok(listeners) = &outcome {
                accepted_on.extend(listeners.iter().cloned());
            }
            let outcome = match (outcome, &refused) {
                (Ok(_), Some(refused)) => Err(refused.clone()),
                (outcome, _) => outcome.map(|_| ()),
            };
            ParentStatus {
                parent_ref: parent,
                accepted: Condition::of(
                    "Accepted",
                    Reason::Accepted,
                    "serin serves this route",
                    outcome,
                ),
                resolved_refs: resolved.clone(),
            }
        })
        .collect();
    Judged {
        parents,
        accepted_on,
        read,
    }
}

impl Served {
    /// Reports, once per class, a Gateway `serin-gateway` of a class that
    /// is not serin's.
    fn foreign_class(&mut self, view: &GatewayView, gateway: Option<&DynamicObject>) {
        let class =
            (!view.controlled && gateway.is_some()).then(|| view.spec.gateway_class_name.clone());
        if class != self.foreign
            && let Some(class) = &class
        {
            tracing::error!(
                gateway = GATEWAY_NAME,
                class = %class,
                "the Gateway's gatewayClassName is no GatewayClass of serin's controller ({CONTROLLER_NAME}): no HTTPRoute attaches"
            );
        }
        self.foreign = class;
    }

    /// The route to serve for an accepted HTTPRoute: this version when it
    /// reads well, else its last good one; reported once per version.
    fn route(
        &mut self,
        key: &str,
        obj: &DynamicObject,
        read: Result<crate::http_routes::ReadRoute, Vec<RouteProblem>>,
    ) -> Option<RouteConfig> {
        let version = obj.resource_version().unwrap_or_default();
        let fresh = self.reported.get(key) != Some(&version);
        self.reported.insert(key.to_string(), version);
        match read {
            Ok(read) => {
                if fresh {
                    for p in &read.warnings {
                        tracing::warn!(httproute = %key, field = %p.field, "{p}");
                    }
                }
                self.last_good.insert(key.to_string(), read.route.clone());
                Some(read.route)
            }
            Err(problems) => {
                let previous = self.last_good.get(key).cloned();
                if fresh {
                    let then = if previous.is_some() {
                        "its last good version keeps serving"
                    } else {
                        "it is not served"
                    };
                    for p in &problems {
                        tracing::error!(httproute = %key, field = %p.field, "{p}; {then}");
                    }
                }
                previous
            }
        }
    }
}

/// The status write an HTTPRoute needs, if any: none when serin's entries
/// are already what they should be, or when it has none and needs none.
fn route_write(obj: &DynamicObject, ours: Vec<ParentStatus>, now: &str) -> Option<StatusWrite> {
    let current = obj.data.get("status");
    let has_ours = current
        .and_then(|s| s.get("parents"))
        .and_then(Value::as_array)
        .is_some_and(|p| p.iter().any(|e| e["controllerName"] == CONTROLLER_NAME));
    if ours.is_empty() && !has_ours {
        return None;
    }
    let write = StatusWrite {
        subject: Subject::of(obj, http_route_resource()),
        generation: obj.metadata.generation,
        ours: Ours::Route(ours),
    };
    write.needed(current, now).then_some(write)
}

/// The status write the Gateway needs, if any.
fn gateway_write(
    gateway: &DynamicObject,
    view: &GatewayView,
    attached: &BTreeMap<String, usize>,
    now: &str,
) -> Option<StatusWrite> {
    let listeners = view
        .spec
        .listeners
        .iter()
        .map(|l| ListenerStatus {
            name: l.name.clone(),
            attached_routes: attached.get(&l.name).copied().unwrap_or(0),
            takes_http_routes: listener_takes_http_routes(l),
        })
        .collect();
    let write = StatusWrite {
        subject: Subject::of(
            gateway,
            ApiResource::erase::<gateway_api::gateways::Gateway>(&()),
        ),
        generation: gateway.metadata.generation,
        ours: Ours::Gateway(listeners),
    };
    write
        .needed(gateway.data.get("status"), now)
        .then_some(write)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn qotm() -> ProxyConfig {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/qotm/stack.yaml");
        serin_config::stack::load_stack_file(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .gateway
    }

    fn route(namespace: &str, spec: Value, status: Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": "r", "namespace": namespace, "generation": 2, "resourceVersion": "7" },
            "spec": spec,
            "status": status,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    fn view(config: &ProxyConfig) -> GatewayView {
        GatewayView {
            namespace: "shop".into(),
            controlled: true,
            spec: crate::gateway_spec(config),
            namespace_labels: BTreeMap::new(),
        }
    }

    fn spec(weight: u64) -> Value {
        json!({
            "parentRefs": [{ "name": "serin-gateway" }, { "name": "someone-else" }],
            "rules": [{ "backendRefs": [{ "name": "qotm-v1", "port": 8080, "weight": weight }] }],
        })
    }

    fn conditions(judged: &Judged) -> Vec<(bool, String)> {
        judged
            .parents
            .iter()
            .flat_map(|p| [&p.accepted, &p.resolved_refs])
            .map(|c| (c.ok, c.reason.clone()))
            .collect()
    }

    #[test]
    fn a_route_the_validator_refuses_is_attached_but_not_accepted() {
        let config = qotm();
        let (view, refs) = (view(&config), References::within("shop"));
        let services = per_version_service_names(&config);
        let good = judge(
            &route("shop", spec(1), json!({})),
            &view,
            &refs,
            &services,
            &config,
        );
        assert!(good.read.is_ok());
        assert_eq!(
            good.parents.len(),
            1,
            "only the parentRef to serin's Gateway"
        );
        assert_eq!(
            conditions(&good),
            [(true, "Accepted".into()), (true, "ResolvedRefs".into())]
        );
        // Over the Gateway API's weight limit: its last good version serves
        // (it stays attached), its status says why.
        let bad = judge(
            &route("shop", spec(2_000_000), json!({})),
            &view,
            &refs,
            &services,
            &config,
        );
        assert!(bad.read.is_err());
        assert_eq!(bad.accepted_on, BTreeSet::from(["gateway".to_string()]));
        assert_eq!(
            conditions(&bad),
            [
                (false, "UnsupportedValue".into()),
                (true, "ResolvedRefs".into())
            ]
        );
        assert!(
            bad.parents[0].accepted.message.contains("weight"),
            "{}",
            bad.parents[0].accepted.message
        );
        // From another namespace the rendered Gateway does not admit.
        let other = judge(
            &route("team-a", spec(1), json!({})),
            &view,
            &refs,
            &services,
            &config,
        );
        assert!(
            other.parents.is_empty(),
            "its parentRef names team-a's serin-gateway"
        );
    }

    #[test]
    fn status_is_written_only_where_it_changes() {
        let config = qotm();
        let (view, refs) = (view(&config), References::within("shop"));
        let services = per_version_service_names(&config);
        let judged = |obj: &DynamicObject| judge(obj, &view, &refs, &services, &config).parents;
        let fresh = route("shop", spec(1), json!({}));
        let write = route_write(&fresh, judged(&fresh), "T1").unwrap_or_else(|| panic!("no write"));
        assert_eq!(write.generation, Some(2));
        assert_eq!(write.subject.resource_version.as_deref(), Some("7"));
        // Written: the same status again needs no write.
        let status = write.wanted(None, "T1");
        let written = route("shop", spec(1), status.clone());
        assert!(route_write(&written, judged(&written), "T2").is_none());
        // A route that names no serin Gateway and has no serin entry: none.
        let theirs = json!({ "parentRefs": [{ "name": "someone-else" }], "rules": [] });
        let foreign = route("shop", theirs.clone(), json!({}));
        assert!(route_write(&foreign, judged(&foreign), "T2").is_none());
        // One that stopped naming it: its serin entry is removed.
        let left = route("shop", theirs, status);
        let removal = route_write(&left, judged(&left), "T2").unwrap_or_else(|| panic!("no write"));
        assert_eq!(
            removal.wanted(left.data.get("status"), "T2")["parents"],
            json!([])
        );
    }
}
