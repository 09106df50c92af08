//! Which gateway replica writes Gateway API status: the holder of the
//! `coordination.k8s.io/v1` Lease `serin-gateway` in the gateway's
//! namespace (Kubernetes' leader election, as client-go does it).
//!
//! Written here rather than taken from a crate: `kube-lease-manager` needs
//! kube 5 (serin is on kube 4.2 for gateway-api 0.22), and
//! `kube-leader-election` takes an expired Lease and renews it with merge
//! patches that carry no `resourceVersion`, so two replicas that take over
//! at once both believe they hold it. Here every create, renewal and
//! take-over is checked (a POST, or a PUT with the `resourceVersion` read),
//! and the replica whose write is refused does not hold the Lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::names::{GATEWAY_NAME, labels};

/// The environment variable with the pod's name (the rendered Deployment
/// sets it from the downward API): the holder's identity.
pub const POD_NAME_ENV: &str = "POD_NAME";
/// How long a Lease holds without renewal: client-go's default for leader
/// election, so a lost replica's Lease is taken over within that.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews and the others look: client-go's retry
/// period, well inside [`LEASE_DURATION`] so a slow renewal still lands.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What a replica does with the Lease as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder let it expire (or it names none): take it over.
    TakeOver,
    /// Someone else holds it and it has not expired.
    Wait { holder: String },
}

/// The decision for `identity` at `now`, given the Lease as read.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    let expires = spec.renew_time.as_ref().map(|t| {
        let seconds = spec.lease_duration_seconds.unwrap_or(0).max(0);
        t.0.saturating_add(SignedDuration::from_secs(i64::from(seconds)))
            .unwrap_or(t.0)
    });
    match expires {
        Some(at) if !holder.is_empty() && at > now => Decision::Wait {
            holder: holder.to_string(),
        },
        _ => Decision::TakeOver,
    }
}

/// The spec a holder writes: held by `identity`, renewed `now`.
fn held_spec(previous: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> LeaseSpec {
    let ours = previous.is_some_and(|p| p.holder_identity.as_deref() == Some(identity));
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs().try_into().unwrap_or(i32::MAX)),
        renew_time: Some(MicroTime(now)),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(match previous {
            Some(_) if !ours => transitions.saturating_add(1),
            _ => transitions,
        }),
        ..previous.cloned().unwrap_or_default()
    }
}

/// The identity of this replica: the pod's name, else host name and
/// process id (unique on one machine, where several gateways may run).
pub fn identity() -> String {
    if let Ok(pod) = std::env::var(POD_NAME_ENV)
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "serin".into());
    format!("{host}-{}", std::process::id())
}

/// One look at the Lease and, as [`decide`] says, one checked write.
/// True: this replica holds the Lease now.
async fn step(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let current = api.get_opt(GATEWAY_NAME).await?;
    let now = Timestamp::now();
    let decision = decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        identity,
        now,
    );
    let result = match (decision, current) {
        (Decision::Wait { .. }, _) => return Ok(false),
        (Decision::Create, _) | (_, None) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(GATEWAY_NAME.into()),
                    labels: Some(labels(&[])),
                    ..ObjectMeta::default()
                },
                spec: Some(held_spec(None, identity, now)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        (Decision::Renew | Decision::TakeOver, Some(mut lease)) => {
            // The resourceVersion read stays in the metadata: a PUT over a
            // Lease someone changed meanwhile is refused (409).
            lease.spec = Some(held_spec(lease.spec.as_ref(), identity, now));
            api.replace(GATEWAY_NAME, &PostParams::default(), &lease)
                .await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Conflict (someone renewed or took it meanwhile) or AlreadyExists
        // (someone created it first): not ours this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Takes and keeps the Lease for `identity` in the client's namespace,
/// telling `holding` whether this replica holds it, until the receivers are
/// gone. A replica that cannot renew (API errors) stops holding at once:
/// it cannot know that nobody else took over.
pub async fn hold_lease(client: kube::Client, identity: String, holding: watch::Sender<bool>) {
    let api: Api<Lease> = Api::default_namespaced(client);
    loop {
        let held = match step(&api, &identity).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(error = %e, lease = GATEWAY_NAME, "cannot read or renew the Lease; not writing status meanwhile");
                false
            }
        };
        let changed = holding.send_if_modified(|h| std::mem::replace(h, held) != held);
        if changed {
            tracing::info!(
                lease = GATEWAY_NAME,
                identity = %identity,
                held,
                "{}",
                if held {
                    "holding the Lease: this replica writes Gateway API status"
                } else {
                    "not holding the Lease: another replica writes Gateway API status"
                }
            );
        }
        if holding.is_closed() {
            return;
        }
        tokio::time::sleep(RETRY_PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn lease(holder: Option<&str>, renewed: Option<i64>, duration: Option<i32>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_string),
            renew_time: renewed.map(|s| MicroTime(at(s))),
            lease_duration_seconds: duration,
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let wait = |h: &str| Decision::Wait { holder: h.into() };
        let cases = [
            ("no Lease", None, 0, Decision::Create),
            (
                "ours",
                Some(lease(Some("a"), Some(0), Some(15))),
                100,
                Decision::Renew,
            ),
            (
                "theirs, fresh",
                Some(lease(Some("b"), Some(0), Some(15))),
                14,
                wait("b"),
            ),
            (
                "theirs, expired",
                Some(lease(Some("b"), Some(0), Some(15))),
                16,
                Decision::TakeOver,
            ),
            (
                "no holder",
                Some(lease(None, Some(0), Some(15))),
                1,
                Decision::TakeOver,
            ),
            (
                "empty holder",
                Some(lease(Some(""), Some(0), Some(15))),
                1,
                Decision::TakeOver,
            ),
            (
                "never renewed",
                Some(lease(Some("b"), None, Some(15))),
                1,
                Decision::TakeOver,
            ),
            (
                "no duration",
                Some(lease(Some("b"), Some(0), None)),
                1,
                Decision::TakeOver,
            ),
        ];
        for (what, spec, now, want) in cases {
            assert_eq!(decide(spec.as_ref(), "a", at(now)), want, "{what}");
        }
    }

    #[test]
    fn a_take_over_counts_a_transition_and_a_renewal_does_not() {
        let theirs = LeaseSpec {
            lease_transitions: Some(3),
            acquire_time: Some(MicroTime(at(0))),
            ..lease(Some("b"), Some(0), Some(15))
        };
        let taken = held_spec(Some(&theirs), "a", at(20));
        assert_eq!(taken.holder_identity.as_deref(), Some("a"));
        assert_eq!(taken.lease_transitions, Some(4));
        assert_eq!(taken.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(taken.lease_duration_seconds, Some(15));
        let renewed = held_spec(Some(&taken), "a", at(22));
        assert_eq!(renewed.lease_transitions, Some(4));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(22))));
        let created = held_spec(None, "a", at(0));
        assert_eq!(created.lease_transitions, Some(0));
    }
}
