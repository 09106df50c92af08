//! Picking an endpoint of a backend: P2C least-request (default), round
//! robin, random, ring hash on a header.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serin_config::proxy::LbPolicy;

use crate::endpoints::{Backend, Endpoint, EndpointSet, hash64};

/// Picks an endpoint, skipping the ones in `exclude` (already tried by this
/// request) when others exist, and ejected or unhealthy ones unless fewer
/// than `panic_threshold` percent are left.
pub fn pick(
    policy: LbPolicy,
    backend: &Backend,
    set: &EndpointSet,
    hash_key: Option<&[u8]>,
    exclude: &[u64],
    panic_threshold: f64,
) -> Option<Arc<Endpoint>> {
    let list = &set.list;
    match list.len() {
        0 => return None,
        1 => return Some(list[0].clone()),
        _ => {}
    }
    // Health matters only while something is ejected or unhealthy.
    let degraded = backend.degraded_until.load(Ordering::Relaxed);
    let now = if degraded == 0 {
        0
    } else {
        crate::outlier::now_ms()
    };
    if degraded != 0 && degraded <= now {
        backend.degraded_until.store(0, Ordering::Relaxed);
    }
    let check_health = (degraded > now || backend.unhealthy.load(Ordering::Relaxed) > 0) && {
        let usable = list.iter().filter(|e| e.health.usable(now)).count();
        (usable as f64) * 100.0 >= panic_threshold * list.len() as f64 && usable > 0
    };
    let usable =
        |e: &Arc<Endpoint>| !exclude.contains(&e.id) && (!check_health || e.health.usable(now));
    if (!exclude.is_empty() || check_health) && !list.iter().any(usable) {
        // Everything was tried: any endpoint is better than none.
        return Some(list[fastrand::usize(..list.len())].clone());
    }
    let picked = match policy {
        LbPolicy::LeastRequest => p2c(list, &usable),
        LbPolicy::RoundRobin => {
            let n = list.len();
            let start = backend.cursor.fetch_add(1, Ordering::Relaxed);
            (0..n).map(|i| &list[(start + i) % n]).find(|e| usable(e))
        }
        LbPolicy::Random => random(list, &usable),
        LbPolicy::RingHash => match hash_key {
            Some(key) => ring_pick(set, hash64(key), &usable),
            None => random(list, &usable),
        },
    };
    picked.cloned()
}

fn random<'a>(
    list: &'a [Arc<Endpoint>],
    usable: &impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let n = list.len();
    let start = fastrand::usize(..n);
    (0..n).map(|i| &list[(start + i) % n]).find(|e| usable(e))
}

/// Power of two choices: two random endpoints, the one with fewer requests
/// in flight wins. Near least-request balance without scanning every
/// endpoint or herding onto one.
fn p2c<'a>(
    list: &'a [Arc<Endpoint>],
    usable: &impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let n = list.len();
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    let (ea, eb) = (&list[a], &list[b]);
    match (usable(ea), usable(eb)) {
        (true, true) => Some(if eb.active() < ea.active() { eb } else { ea }),
        (true, false) => Some(ea),
        (false, true) => Some(eb),
        (false, false) => random(list, usable),
    }
}

fn ring_pick<'a>(
    set: &'a EndpointSet,
    hash: u64,
    usable: &impl Fn(&Arc<Endpoint>) -> bool,
) -> Option<&'a Arc<Endpoint>> {
    let ring = set.ring();
    if ring.is_empty() {
        return None;
    }
    let start = ring.partition_point(|(h, _)| *h < hash);
    (0..ring.len())
        .map(|i| &set.list[ring[(start + i) % ring.len()].1])
        .find(|e| usable(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_discovery::{BackendKey, EndpointSpec};
    use std::collections::HashMap;

    fn backend(n: u16) -> Backend {
        let b = Backend::new(BackendKey::new("s", "v1"));
        let specs: Vec<EndpointSpec> = (0..n)
            .map(|i| EndpointSpec {
                addr: ([127, 0, 0, 1], 9000 + i).into(),
                name: format!("e{i}").into(),
            })
            .collect();
        b.set_endpoints(&specs);
        b
    }

    #[test]
    fn round_robin_cycles() {
        let b = backend(3);
        let set = b.endpoints();
        let picks: Vec<u16> = (0..6)
            .filter_map(|_| pick(LbPolicy::RoundRobin, &b, &set, None, &[], 50.0))
            .map(|e| e.addr.port())
            .collect();
        assert_eq!(picks, vec![9000, 9001, 9002, 9000, 9001, 9002]);
    }

    #[test]
    fn p2c_avoids_the_busy_endpoint() {
        let b = backend(2);
        let set = b.endpoints();
        let busy = set.list[0].clone();
        let _g: Vec<_> = (0..5).map(|_| busy.start_request()).collect();
        for _ in 0..50 {
            let e = pick(LbPolicy::LeastRequest, &b, &set, None, &[], 50.0).map(|e| e.addr.port());
            assert_eq!(e, Some(9001));
        }
    }

    #[test]
    fn ring_hash_is_sticky_and_spreads() {
        let b = backend(4);
        let set = b.endpoints();
        let mut seen = HashMap::new();
        for user in 0..400 {
            let key = format!("user-{user}");
            let a = pick(
                LbPolicy::RingHash,
                &b,
                &set,
                Some(key.as_bytes()),
                &[],
                50.0,
            )
            .map(|e| e.id);
            let again = pick(
                LbPolicy::RingHash,
                &b,
                &set,
                Some(key.as_bytes()),
                &[],
                50.0,
            )
            .map(|e| e.id);
            assert_eq!(a, again);
            *seen.entry(a).or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert!(seen.values().all(|n| *n > 40), "{seen:?}");
    }

    #[test]
    fn exclude_skips_tried_endpoints() {
        let b = backend(2);
        let set = b.endpoints();
        let first = set.list[0].id;
        for policy in [
            LbPolicy::LeastRequest,
            LbPolicy::RoundRobin,
            LbPolicy::Random,
        ] {
            for _ in 0..20 {
                let e = pick(policy, &b, &set, None, &[first], 50.0).map(|e| e.id);
                assert_eq!(e, Some(set.list[1].id));
            }
        }
    }
}
