//! The `status` serin writes: an HTTPRoute's `status.parents[]` entries for
//! serin's Gateway, and the Gateway's conditions and listeners. Pure: what
//! the status should be, given what it is.
//!
//! Only serin's own entries (`controllerName` [`CONTROLLER_NAME`]) are
//! replaced; other controllers' stay as they are. A condition keeps its
//! `lastTransitionTime` while its `status` stays the same, so a status
//! that is already right is computed equal to itself and not written again
//! (two writers cannot chase each other).

use serde_json::{Value, json};

use crate::attachment::{GATEWAY_GROUP, Reason};
use crate::names::CONTROLLER_NAME;

/// One condition, without its `lastTransitionTime` (see [`with_times`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub ok: bool,
    /// A reason the Gateway API names for this type and status.
    pub reason: String,
    pub message: String,
}

impl Condition {
    /// `type_` True for `Ok`, False with the reason of `Err`.
    pub fn of(
        type_: &'static str,
        ok_reason: Reason,
        ok_message: &str,
        outcome: Result<(), (Reason, String)>,
    ) -> Self {
        match outcome {
            Ok(()) => Self::new(type_, true, &ok_reason.to_string(), ok_message),
            Err((reason, message)) => Self::new(type_, false, &reason.to_string(), &message),
        }
    }

    pub fn new(type_: &'static str, ok: bool, reason: &str, message: &str) -> Self {
        Self {
            type_,
            ok,
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }

    fn to_json(&self, generation: Option<i64>) -> Value {
        let mut c = json!({
            "type": self.type_,
            "status": if self.ok { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
        });
        if let Some(g) = generation {
            c["observedGeneration"] = json!(g);
        }
        c
    }
}

/// `conditions` as JSON, each with the `lastTransitionTime` of the current
/// condition of its type when its status is unchanged, else `now`.
pub fn with_times(
    conditions: &[Condition],
    generation: Option<i64>,
    current: Option<&Value>,
    now: &str,
) -> Value {
    let current = current
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let list = conditions
        .iter()
        .map(|c| {
            let mut out = c.to_json(generation);
            let time = current
                .iter()
                .find(|old| old.get("type") == out.get("type"))
                .filter(|old| old.get("status") == out.get("status"))
                .and_then(|old| old.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(now));
            out["lastTransitionTime"] = time;
            out
        })
        .collect();
    Value::Array(list)
}

/// serin's entry for one parentRef of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentStatus {
    /// The parentRef as the route's spec writes it.
    pub parent_ref: Value,
    pub accepted: Condition,
    pub resolved_refs: Condition,
}

/// A route's `status` with serin's entries replaced by `ours` (in order,
/// after the other controllers'), every other field of it kept.
pub fn route_status(
    current: Option<&Value>,
    ours: &[ParentStatus],
    generation: Option<i64>,
    now: &str,
) -> Value {
    let mut status = current.cloned().unwrap_or_else(|| json!({}));
    let parents = status
        .get("parents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (mine, mut out): (Vec<Value>, Vec<Value>) = parents
        .into_iter()
        .partition(|p| p.get("controllerName").and_then(Value::as_str) == Some(CONTROLLER_NAME));
    for p in ours {
        let previous = mine
            .iter()
            .find(|m| m.get("parentRef") == Some(&p.parent_ref))
            .and_then(|m| m.get("conditions"));
        let conditions = [p.accepted.clone(), p.resolved_refs.clone()];
        out.push(json!({
            "parentRef": p.parent_ref,
            "controllerName": CONTROLLER_NAME,
            "conditions": with_times(&conditions, generation, previous, now),
        }));
    }
    if let Value::Object(map) = &mut status {
        map.insert("parents".into(), Value::Array(out));
    }
    status
}

/// A GatewayClass's `status` for one whose controller is serin's:
/// `Accepted` True; other fields (`supportedFeatures`) are kept.
pub fn gateway_class_status(current: Option<&Value>, generation: Option<i64>, now: &str) -> Value {
    let mut status = current.cloned().unwrap_or_else(|| json!({}));
    let accepted = [Condition::new(
        "Accepted",
        true,
        "Accepted",
        "serin serves Gateways of this class",
    )];
    let conditions = with_times(&accepted, generation, status.get("conditions"), now);
    if let Value::Object(map) = &mut status {
        map.insert("conditions".into(), conditions);
    }
    status
}

/// One listener's part of the Gateway's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerStatus {
    pub name: String,
    pub attached_routes: usize,
    /// Whether it carries HTTPRoutes (its protocol and allowed kinds).
    pub takes_http_routes: bool,
}

/// The Gateway's `status`: `Accepted` and `Programmed`, and per listener
/// `attachedRoutes`, `supportedKinds` and `Accepted`, `Programmed`,
/// `ResolvedRefs`. Other fields (`addresses`) are kept.
pub fn gateway_status(
    current: Option<&Value>,
    listeners: &[ListenerStatus],
    generation: Option<i64>,
    now: &str,
) -> Value {
    let mut status = current.cloned().unwrap_or_else(|| json!({}));
    let gateway = [
        Condition::new("Accepted", true, "Accepted", "serin serves this Gateway"),
        Condition::new(
            "Programmed",
            true,
            "Programmed",
            "the serin gateway runs with these listeners",
        ),
    ];
    let old_listeners = status
        .get("listeners")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let listeners: Vec<Value> = listeners
        .iter()
        .map(|l| listener_json(l, &old_listeners, generation, now))
        .collect();
    let conditions = with_times(&gateway, generation, status.get("conditions"), now);
    if let Value::Object(map) = &mut status {
        map.insert("conditions".into(), conditions);
        map.insert("listeners".into(), Value::Array(listeners));
    }
    status
}

fn listener_json(l: &ListenerStatus, old: &[Value], generation: Option<i64>, now: &str) -> Value {
    let previous = old
        .iter()
        .find(|o| o.get("name").and_then(Value::as_str) == Some(&l.name))
        .and_then(|o| o.get("conditions"));
    let ok = l.takes_http_routes;
    let conditions = if ok {
        [
            Condition::new("Accepted", true, "Accepted", "serin takes HTTPRoutes here"),
            Condition::new("Programmed", true, "Programmed", ""),
            Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
        ]
    } else {
        let why = "serin takes HTTPRoutes on HTTP and HTTPS listeners only";
        [
            Condition::new("Accepted", false, "UnsupportedProtocol", why),
            Condition::new("Programmed", false, "Invalid", why),
            Condition::new("ResolvedRefs", false, "InvalidRouteKinds", why),
        ]
    };
    let out = with_times(&conditions, generation, previous, now);
    let kinds = if l.takes_http_routes {
        json!([{ "group": GATEWAY_GROUP, "kind": "HTTPRoute" }])
    } else {
        json!([])
    };
    json!({
        "name": l.name,
        "attachedRoutes": l.attached_routes,
        "supportedKinds": kinds,
        "conditions": out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(ok: bool) -> ParentStatus {
        ParentStatus {
            parent_ref: json!({ "name": "serin-gateway" }),
            accepted: Condition::of(
                "Accepted",
                Reason::Accepted,
                "accepted",
                if ok {
                    Ok(())
                } else {
                    Err((Reason::NotAllowedByListeners, "no".into()))
                },
            ),
            resolved_refs: Condition::of("ResolvedRefs", Reason::ResolvedRefs, "", Ok(())),
        }
    }

    #[test]
    fn other_controllers_entries_stay_and_ours_are_replaced() {
        let theirs = json!({
            "parentRef": { "name": "their-gateway" },
            "controllerName": "example.com/other",
            "conditions": [],
        });
        let stale = json!({
            "parentRef": { "name": "gone" },
            "controllerName": CONTROLLER_NAME,
            "conditions": [],
        });
        let current = json!({ "parents": [theirs, stale] });
        let status = route_status(Some(&current), &[accepted(true)], Some(3), "T1");
        let parents = status["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], theirs);
        assert_eq!(parents[1]["controllerName"], CONTROLLER_NAME);
        assert_eq!(parents[1]["parentRef"], json!({ "name": "serin-gateway" }));
        let accepted = &parents[1]["conditions"][0];
        assert_eq!(accepted["type"], "Accepted");
        assert_eq!(accepted["status"], "True");
        assert_eq!(accepted["reason"], "Accepted");
        assert_eq!(accepted["observedGeneration"], 3);
        assert_eq!(accepted["lastTransitionTime"], "T1");
    }

    #[test]
    fn a_status_that_is_right_stays_as_it_is() {
        let first = route_status(None, &[accepted(true)], Some(1), "T1");
        // Later, a new generation with the same outcome: only
        // observedGeneration changes, the transition time stays.
        let again = route_status(Some(&first), &[accepted(true)], Some(1), "T2");
        assert_eq!(again, first);
        let next = route_status(Some(&first), &[accepted(true)], Some(2), "T2");
        assert_eq!(
            next["parents"][0]["conditions"][0]["lastTransitionTime"],
            "T1"
        );
        assert_eq!(next["parents"][0]["conditions"][0]["observedGeneration"], 2);
        // A change of status is a transition.
        let refused = route_status(Some(&next), &[accepted(false)], Some(3), "T3");
        let c = &refused["parents"][0]["conditions"][0];
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("NotAllowedByListeners"))
        );
        assert_eq!(c["lastTransitionTime"], "T3");
        assert_eq!(
            refused["parents"][0]["conditions"][1]["lastTransitionTime"],
            "T1"
        );
    }

    #[test]
    fn gateway_status_counts_attached_routes_per_listener() {
        let listeners = [
            ListenerStatus {
                name: "http".into(),
                attached_routes: 2,
                takes_http_routes: true,
            },
            ListenerStatus {
                name: "tcp".into(),
                attached_routes: 0,
                takes_http_routes: false,
            },
        ];
        let current = json!({ "addresses": [{ "value": "10.0.0.1" }] });
        let status = gateway_status(Some(&current), &listeners, Some(4), "T1");
        assert_eq!(status["addresses"], current["addresses"]);
        assert_eq!(status["conditions"][0]["type"], "Accepted");
        assert_eq!(status["conditions"][1]["type"], "Programmed");
        assert_eq!(status["conditions"][1]["reason"], "Programmed");
        assert_eq!(status["listeners"][0]["attachedRoutes"], 2);
        assert_eq!(
            status["listeners"][0]["supportedKinds"][0]["kind"],
            "HTTPRoute"
        );
        assert_eq!(
            status["listeners"][1]["conditions"][0]["reason"],
            "UnsupportedProtocol"
        );
        assert_eq!(status["listeners"][1]["supportedKinds"], json!([]));
        assert_eq!(
            gateway_status(Some(&status), &listeners, Some(4), "T2"),
            status
        );
    }
}
