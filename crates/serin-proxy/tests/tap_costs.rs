//! The tap costs a request nothing while nobody taps: offering it neither
//! allocates nor builds its summary. Counted with an allocator that counts
//! the allocations of the thread that makes them, so other tests' threads
//! do not blur the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use serin_proxy::tap::{Hub, TapEvent, TapFilter, TapItem};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call goes to the system allocator unchanged; the count is
// a thread-local Cell with a const initialiser, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's contract is passed on as it is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn event(path: &str) -> TapEvent {
    TapEvent {
        unix_ms: 0,
        listener: "gw".into(),
        method: "GET".into(),
        path: path.into(),
        status: 200,
        latency_ms: 1.0,
        route: Some("r".into()),
        service: Some("s".into()),
        version: Some("v1".into()),
        endpoint: None,
        replica: None,
        retries: 0,
        trace_id: None,
    }
}

#[test]
fn offering_a_request_while_nobody_taps_allocates_nothing_and_builds_nothing() {
    let hub = Arc::new(Hub::default());
    let before = allocations();
    for _ in 0..10_000 {
        assert!(!hub.active());
        hub.offer(|| panic!("the summary was built though nobody taps"));
    }
    assert_eq!(allocations() - before, 0, "allocations while nobody taps");
}

#[tokio::test]
async fn a_watcher_gets_what_its_filter_admits_and_leaving_stops_the_tap() {
    let hub = Arc::new(Hub::default());
    let filter = TapFilter {
        path_prefix: Some("/api".into()),
        ..TapFilter::default()
    };
    let mut watcher = hub.watch(filter, 1000);
    assert!(hub.active());
    hub.offer(|| event("/other"));
    hub.offer(|| event("/api/x"));
    match watcher.next().await {
        Some(TapItem::Request(e)) => assert_eq!(e.path, "/api/x"),
        other => panic!("{other:?}"),
    }
    drop(watcher);
    assert!(
        !hub.active(),
        "the tap stays on after its last watcher left"
    );
}

#[tokio::test]
async fn over_the_rate_requests_are_counted_then_the_next_is_shown() {
    let hub = Arc::new(Hub::default());
    // One a second, judged on the requests' own times.
    let mut watcher = hub.watch(TapFilter::default(), 1);
    for (path, at) in [("/a", 0), ("/b", 10), ("/c", 20), ("/d", 1_500)] {
        hub.offer(|| TapEvent {
            unix_ms: at,
            ..event(path)
        });
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        match watcher.next().await {
            Some(TapItem::Request(e)) => seen.push(e.path.clone()),
            Some(TapItem::Dropped { count }) => seen.push(format!("dropped {count}")),
            None => panic!("the hub closed"),
        }
    }
    assert_eq!(seen, ["/a", "dropped 2", "/d"]);
}
