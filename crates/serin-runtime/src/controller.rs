//! One controller per version, like a Kubernetes Deployment controller: it
//! drives the version's replicas toward what is wanted (the replica count,
//! the latest revision) whenever something changes, respecting the rollout
//! strategy.
//!
//! A rollout (a restart, or a changed template) bumps the version's
//! revision; replicas of older revisions are then replaced:
//! - `RollingUpdate`: new replicas are started while the total stays within
//!   `replicas + maxSurge`; an old replica is stopped when it is not ready,
//!   or when the ready count stays at least `replicas - maxUnavailable`
//!   without it. With the defaults (1, 0) one new replica starts, becomes
//!   ready, one old one stops, and so on.
//! - `Recreate`: every old replica is stopped, and once all are gone the
//!   new ones start.
//!
//! Scaling down stops replicas that are not ready first, then the newest.

use std::sync::Arc;

use serin_config::stack::Strategy;
use tokio::sync::watch;

use crate::logs::LineSource;
use crate::replica::{self, ReplicaCtx};
use crate::shared::{ReplicaEntry, Shared, State, VersionKey};
use crate::status::{ReplicaState, ReplicaStatus, RuntimeEvent};

/// Starts the controller of a version that was just put in the state.
pub(crate) fn spawn(shared: Arc<Shared>, vkey: VersionKey, wake: Arc<tokio::sync::Notify>) {
    let rt = shared.rt.clone();
    rt.spawn(async move {
        while reconcile(&shared, &vkey) {
            wake.notified().await;
        }
    });
}

/// One replica as the planner sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub uid: u64,
    pub index: u32,
    /// Of the version's latest revision.
    pub current: bool,
    pub ready: bool,
    pub stopping: bool,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub stop: Vec<u64>,
    pub create: usize,
}

/// Decides which replicas to stop and how many to start (see the module
/// docs).
pub(crate) fn plan(strategy: Strategy, desired: u32, replicas: &[View]) -> Plan {
    let desired = desired as usize;
    // Stopped first: not ready, then the highest index.
    let order = |a: &&View, b: &&View| a.ready.cmp(&b.ready).then(b.index.cmp(&a.index));
    let mut current: Vec<&View> = replicas
        .iter()
        .filter(|r| !r.stopping && r.current)
        .collect();
    let mut old: Vec<&View> = replicas
        .iter()
        .filter(|r| !r.stopping && !r.current)
        .collect();
    current.sort_by(order);
    old.sort_by(order);

    let mut out = Plan::default();
    if current.len() > desired {
        let excess = current.len() - desired;
        out.stop.extend(current.drain(..excess).map(|r| r.uid));
    }
    match strategy {
        Strategy::Recreate => {
            if !old.is_empty() {
                out.stop.extend(old.iter().map(|r| r.uid));
            } else if !replicas.iter().any(|r| !r.current) {
                out.create = desired - current.len();
            }
        }
        Strategy::RollingUpdate {
            max_surge,
            max_unavailable,
        } => {
            if old.is_empty() {
                out.create = desired - current.len();
                return out;
            }
            let max_total = desired + max_surge as usize;
            let mut total = current.len() + old.len();
            while current.len() + out.create < desired && total < max_total {
                out.create += 1;
                total += 1;
            }
            let min_available = desired.saturating_sub(max_unavailable as usize);
            let mut ready = current.iter().chain(&old).filter(|r| r.ready).count();
            for o in &old {
                if !o.ready {
                    out.stop.push(o.uid);
                } else if ready > min_available {
                    out.stop.push(o.uid);
                    ready -= 1;
                }
            }
        }
    }
    out
}

/// Brings one version closer to what is wanted. Returns `false` when its
/// controller should end (the version is gone, or serin is shutting down).
pub(crate) fn reconcile(shared: &Arc<Shared>, vkey: &VersionKey) -> bool {
    let mut complete = None;
    let keep_going = {
        let mut guard = shared.lock();
        let state = &mut *guard;
        if state.shutting_down {
            return false;
        }
        let shutting_down = state.shutting_down;
        let Some(vs) = state.versions.get_mut(vkey) else {
            return false;
        };
        if vs.removed {
            let uids: Vec<u64> = vs.replicas.keys().copied().collect();
            for uid in uids {
                shared.mark_stopping(shutting_down, vs, uid);
            }
            if vs.replicas.is_empty() {
                if let Some(vs) = state.versions.remove(vkey) {
                    shared.registry.remove(&vs.key);
                }
                false
            } else {
                true
            }
        } else {
            let views: Vec<View> = vs
                .replicas
                .iter()
                .map(|(uid, r)| View {
                    uid: *uid,
                    index: r.status.index,
                    current: r.revision == vs.revision,
                    ready: r.status.ready,
                    stopping: r.stopping,
                })
                .collect();
            let todo = plan(vs.spec.strategy, vs.desired, &views);
            for uid in &todo.stop {
                shared.mark_stopping(shutting_down, vs, *uid);
            }
            for _ in 0..todo.create {
                create_replica(shared, state, vkey);
            }
            if let Some(vs) = state.versions.get_mut(vkey)
                && vs.rolling
                && vs.rolled_out()
            {
                vs.rolling = false;
                complete = Some(RuntimeEvent::RolloutComplete {
                    service: vkey.0.clone(),
                    version: vkey.1.clone(),
                    revision: vs.revision,
                });
            }
            true
        }
    };
    if let Some(e) = complete {
        shared.emit(e);
    }
    shared.bump();
    keep_going
}

/// Adds a replica of the version's latest revision and starts its task.
fn create_replica(shared: &Arc<Shared>, state: &mut State, vkey: &VersionKey) {
    let uid = state.next_uid;
    state.next_uid += 1;
    let Some(vs) = state.versions.get_mut(vkey) else {
        return;
    };
    let used: std::collections::BTreeSet<u32> =
        vs.replicas.values().map(|r| r.status.index).collect();
    let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
    let name = format!("{}-{}-{index}", vkey.0, vkey.1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let status = ReplicaStatus {
        name: name.clone(),
        service: vkey.0.clone(),
        version: vkey.1.clone(),
        index,
        state: ReplicaState::Pending,
        ready: false,
        restarts: 0,
        port: 0,
        pid: None,
        created_unix_ms: crate::shared::now_ms(),
        started_unix_ms: None,
        age_secs: 0,
        last_exit: None,
        message: None,
        revision: vs.revision,
        sidecar: None,
    };
    let entry = ReplicaEntry {
        revision: vs.revision,
        stopping: false,
        stop: stop_tx,
        status,
        created: std::time::Instant::now(),
    };
    shared.emit(RuntimeEvent::ReplicaChanged {
        replica: Shared::snapshot(&entry),
    });
    vs.replicas.insert(uid, entry);
    let secrets: Vec<String> = vs
        .spec
        .secrets
        .iter()
        .map(|s| s.value.expose().to_string())
        .filter(|v| v.len() >= crate::logs::MIN_MASKED_SECRET_LEN)
        .collect();
    let ctx = ReplicaCtx {
        shared: shared.clone(),
        vkey: vkey.clone(),
        uid,
        spec: vs.spec.clone(),
        base_dir: vs.base_dir.clone(),
        stop: stop_rx,
        source: LineSource {
            service: vkey.0.clone(),
            version: vkey.1.clone(),
            replica: name,
            index,
            secrets: Arc::from(secrets),
            kind: crate::logs::LineKind::Service,
        },
    };
    replica::spawn(ctx);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(uid: u64, current: bool, ready: bool) -> View {
        View {
            uid,
            index: uid as u32,
            current,
            ready,
            stopping: false,
        }
    }

    const ROLLING: Strategy = Strategy::RollingUpdate {
        max_surge: 1,
        max_unavailable: 0,
    };

    #[test]
    fn scales_up_and_down() {
        assert_eq!(plan(ROLLING, 2, &[]).create, 2);
        let p = plan(
            ROLLING,
            1,
            &[v(0, true, true), v(1, true, false), v(2, true, true)],
        );
        assert_eq!(
            p,
            Plan {
                stop: vec![1, 2],
                create: 0
            }
        );
    }

    #[test]
    fn rolling_update_keeps_capacity() {
        // Two old ready replicas: start one new, stop none yet.
        let p = plan(ROLLING, 2, &[v(0, false, true), v(1, false, true)]);
        assert_eq!(
            p,
            Plan {
                stop: vec![],
                create: 1
            }
        );
        // The new one is not ready yet: wait.
        let p = plan(
            ROLLING,
            2,
            &[v(0, false, true), v(1, false, true), v(2, true, false)],
        );
        assert_eq!(p, Plan::default());
        // Ready: stop one old (the highest index).
        let p = plan(
            ROLLING,
            2,
            &[v(0, false, true), v(1, false, true), v(2, true, true)],
        );
        assert_eq!(
            p,
            Plan {
                stop: vec![1],
                create: 0
            }
        );
        // An old replica that is not ready goes at once.
        let p = plan(ROLLING, 2, &[v(0, false, false), v(1, false, true)]);
        assert_eq!(
            p,
            Plan {
                stop: vec![0],
                create: 1
            }
        );
    }

    #[test]
    fn rolling_update_with_max_unavailable() {
        let s = Strategy::RollingUpdate {
            max_surge: 0,
            max_unavailable: 1,
        };
        let p = plan(s, 2, &[v(0, false, true), v(1, false, true)]);
        assert_eq!(
            p,
            Plan {
                stop: vec![1],
                create: 0
            }
        );
    }

    #[test]
    fn recreate_stops_all_first() {
        let p = plan(
            Strategy::Recreate,
            2,
            &[v(0, false, true), v(1, false, true)],
        );
        assert_eq!(
            p,
            Plan {
                stop: vec![1, 0],
                create: 0
            }
        );
        let mut stopping = v(0, false, false);
        stopping.stopping = true;
        assert_eq!(plan(Strategy::Recreate, 2, &[stopping]), Plan::default());
        assert_eq!(plan(Strategy::Recreate, 2, &[]).create, 2);
    }
}
