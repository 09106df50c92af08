//! Writing Gateway API status: the writes [`crate::follow`] plans, made
//! while this replica holds the Lease ([`crate::lease`]).
//!
//! Each write is a merge patch of the `status` subresource that carries the
//! `resourceVersion` the status was computed from, so the API server
//! refuses it (409) when the object changed meanwhile. Then the object is
//! read again and its status computed again from what it is now; a write
//! that has become unneeded is dropped, and one for an older `generation`
//! is left to the next plan (the watch brings the new generation).

use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::route_status::{
    ListenerStatus, ParentStatus, gateway_class_status, gateway_status, route_status,
};

/// How often a write is tried when its object keeps changing under it.
const CONFLICT_ATTEMPTS: u32 = 5;
/// The pause before writes that failed (not by conflict) are tried again.
const RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Every status write one round of the follower wants.
pub type StatusPlan = Vec<StatusWrite>;

/// The object a status is written to, as it was read.
#[derive(Debug, Clone)]
pub struct Subject {
    pub resource: ApiResource,
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    /// Its status as read: what the write is computed against first.
    pub status: Option<Value>,
}

impl Subject {
    pub fn of(obj: &DynamicObject, resource: ApiResource) -> Self {
        Self {
            resource,
            namespace: obj.namespace().unwrap_or_default(),
            name: obj.name_any(),
            resource_version: obj.resource_version(),
            status: obj.data.get("status").cloned(),
        }
    }

    fn describe(&self) -> String {
        format!("{} {}/{}", self.resource.kind, self.namespace, self.name)
    }
}

/// serin's part of an object's status.
#[derive(Debug, Clone)]
pub enum Ours {
    /// An HTTPRoute's `status.parents[]` entries of serin's controller.
    Route(Vec<ParentStatus>),
    /// The Gateway's conditions and listeners.
    Gateway(Vec<ListenerStatus>),
    /// A GatewayClass of serin's controller: `Accepted`.
    GatewayClass,
}

/// One status to write.
#[derive(Debug, Clone)]
pub struct StatusWrite {
    pub subject: Subject,
    /// The `metadata.generation` the status describes.
    pub generation: Option<i64>,
    pub ours: Ours,
}

impl StatusWrite {
    /// The whole status, given the object's current one.
    pub fn wanted(&self, current: Option<&Value>, now: &str) -> Value {
        match &self.ours {
            Ours::Route(parents) => route_status(current, parents, self.generation, now),
            Ours::Gateway(listeners) => gateway_status(current, listeners, self.generation, now),
            Ours::GatewayClass => gateway_class_status(current, self.generation, now),
        }
    }

    /// Whether the current status differs from the wanted one.
    pub fn needed(&self, current: Option<&Value>, now: &str) -> bool {
        let empty = json!({});
        self.wanted(current, now) != *current.unwrap_or(&empty)
    }
}

/// What writing a status ran into.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{object}: {source}")]
    Api {
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "{object} kept changing: its status was not written after {CONFLICT_ATTEMPTS} attempts"
    )]
    Conflict { object: String },
}

/// Writes the latest plan whenever it changes, while `holding` says this
/// replica holds the Lease; runs until either sender is gone.
pub async fn write_statuses(
    client: Client,
    mut plans: watch::Receiver<StatusPlan>,
    mut holding: watch::Receiver<bool>,
) {
    loop {
        let held = *holding.borrow_and_update();
        let plan = plans.borrow_and_update().clone();
        let mut failed = false;
        if held {
            for write in &plan {
                match write_one(&client, write).await {
                    Ok(true) => {
                        tracing::info!(object = %write.subject.describe(), "Gateway API status written")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write Gateway API status; trying again");
                        failed = true;
                    }
                }
            }
        }
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY_PAUSE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            changed = plans.changed() => if changed.is_err() { return },
            changed = holding.changed() => if changed.is_err() { return },
            () = retry => {}
        }
    }
}

/// Writes one status; false when it turned out to be unneeded.
async fn write_one(client: &Client, write: &StatusWrite) -> Result<bool, StatusError> {
    let subject = &write.subject;
    let api: Api<DynamicObject> = if subject.namespace.is_empty() {
        Api::all_with(client.clone(), &subject.resource)
    } else {
        Api::namespaced_with(client.clone(), &subject.namespace, &subject.resource)
    };
    let api_error = |source| StatusError::Api {
        object: subject.describe(),
        source: Box::new(source),
    };
    let mut resource_version = subject.resource_version.clone();
    let mut status = subject.status.clone();
    for attempt in 0..CONFLICT_ATTEMPTS {
        let now = now();
        if attempt > 0 && !write.needed(status.as_ref(), &now) {
            return Ok(false);
        }
        let patch = json!({
            "metadata": { "resourceVersion": resource_version },
            "status": write.wanted(status.as_ref(), &now),
        });
        match api
            .patch_status(
                &subject.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let fresh = api.get_status(&subject.name).await.map_err(api_error)?;
                if fresh.metadata.generation != write.generation {
                    return Ok(false);
                }
                resource_version = fresh.resource_version();
                status = fresh.data.get("status").cloned();
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(false),
            Err(e) => return Err(api_error(e)),
        }
    }
    Err(StatusError::Conflict {
        object: subject.describe(),
    })
}

/// Now, as the Kubernetes `Time` of a condition (whole seconds).
pub fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}
