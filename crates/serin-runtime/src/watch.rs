//! `serin up --watch`: a change to a service's watched paths rebuilds it and
//! rolls its versions out again; a change to the stack file applies it.
//!
//! - Paths are watched with `notify` (inotify on Linux): each folder of a
//!   service's `watch.paths` recursively, a watched file through its
//!   folder (an editor's save replaces the file), and the stack file's
//!   folder for the stack file.
//! - Reads do not count (the build itself reads every source), nor paths
//!   matching the service's `ignore` globs, nor the files serin writes
//!   beside the stack file (`STEM.state.json`, `STEM.canary*.json*`, the
//!   build copies in `STEM.builds/`).
//! - Changes are debounced per service and for the stack file
//!   ([`debounce`]): a burst of saves is one build; a change while a build
//!   runs queues exactly one more.
//! - A build ([`build`]) runs `watch.build` in the stack file's folder with
//!   its output in the service's logs; exit 0 rolls every version of the
//!   service out with its strategy (by default a new replica is ready
//!   before an old one stops, so no request fails), or hands the build to
//!   the service's automatic canary ([`AfterBuild`]), anything else leaves
//!   the running replicas as they are and says why (logs, serin's log,
//!   [`crate::BuildStatus`]). A service without `build` is only rolled out.
//! - A stack file change calls the `apply` given to [`spawn`] (what `serin
//!   apply` does: a broken file changes nothing); the watched paths are
//!   then read again from the stack as applied.
//! - A lost event (the kernel's queue overflowed) counts as a change of
//!   everything watched.

mod build;
mod debounce;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use debounce::{Input, Phase};
pub use debounce::{MAX_DELAY, QUIET_PERIOD};
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use serin_config::stack::{IgnoreRules, Stack};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinSet};
use tokio::time::Instant;

use crate::handle::RuntimeHandle;

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("service `{service}`: {source}")]
    Ignore {
        service: String,
        #[source]
        source: serin_config::stack::WatchError,
    },
}

/// What a change concerns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Target {
    StackFile,
    Service(String),
}

/// The watch while it runs; dropping it (or [`Watching::stop`]) ends it,
/// a running build with it.
pub struct Watching {
    task: tokio::task::JoinHandle<()>,
}

impl Watching {
    pub fn stop(self) {
        self.task.abort();
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Who rolls a service out after a successful build, when not the
/// runtime in place: given the service, `None` leaves it to the runtime
/// (every version restarted), `Some` is the roll-out that replaces it (an
/// automatic canary judging the build), whose outcome is one line for the
/// service's logs.
pub type AfterBuild =
    Arc<dyn Fn(&str) -> Option<Pin<Box<dyn Future<Output = String> + Send>>> + Send + Sync>;

/// Starts watching `stack_file` and the `watch:` paths of the services
/// `handle` runs. `apply` applies the stack file again (`serin apply`);
/// it reports its own outcome. `after_build`: see [`AfterBuild`].
pub fn spawn<F, Fut>(
    handle: RuntimeHandle,
    stack_file: &Path,
    apply: F,
    after_build: AfterBuild,
) -> Result<Watching, WatchError>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let stack_file = std::path::absolute(stack_file).unwrap_or_else(|_| stack_file.to_path_buf());
    let (tx, events) = mpsc::unbounded_channel();
    let routes = Routes::new(&stack_file, &handle.stack())?;
    let watcher = routes.watch(tx.clone())?;
    let mut watch = WatchLoop {
        handle,
        stack_file,
        apply,
        after_build,
        routes,
        watcher,
        tx,
        events,
        phases: BTreeMap::new(),
        running: JoinSet::new(),
        running_targets: HashMap::new(),
    };
    let task = tokio::spawn(async move { watch.run().await });
    Ok(Watching { task })
}

type Events = mpsc::UnboundedReceiver<notify::Result<notify::Event>>;

struct WatchLoop<F> {
    handle: RuntimeHandle,
    stack_file: PathBuf,
    apply: F,
    after_build: AfterBuild,
    routes: Routes,
    /// Watches while it lives.
    watcher: RecommendedWatcher,
    tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
    events: Events,
    phases: BTreeMap<Target, Phase>,
    /// Builds and applies under way.
    running: JoinSet<()>,
    running_targets: HashMap<Id, Target>,
}

impl<F, Fut> WatchLoop<F>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    async fn run(&mut self) {
        loop {
            let due = self.phases.values().filter_map(Phase::due).min();
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => self.on_event(event),
                    None => return,
                },
                Some(done) = self.running.join_next_with_id(), if !self.running.is_empty() => {
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    if let Some(target) = self.running_targets.remove(&id) {
                        self.on_done(target);
                    }
                }
                () = sleep_until(due) => self.on_tick(),
            }
        }
    }

    fn on_event(&mut self, event: notify::Result<notify::Event>) {
        let targets: BTreeSet<Target> = match event {
            Err(e) => {
                tracing::warn!(error = %e, "watching: counting everything as changed");
                self.routes.all()
            }
            Ok(ev) if ev.need_rescan() => self.routes.all(),
            Ok(ev) if !is_change(ev.kind) => BTreeSet::new(),
            Ok(ev) => ev
                .paths
                .iter()
                .flat_map(|p| self.routes.targets(p))
                .collect(),
        };
        let now = std::time::Instant::now();
        for target in targets {
            self.feed(target, Input::Changed(now));
        }
    }

    fn on_tick(&mut self) {
        let now = std::time::Instant::now();
        let targets: Vec<Target> = self.phases.keys().cloned().collect();
        for target in targets {
            self.feed(target, Input::Tick(now));
        }
    }

    fn on_done(&mut self, target: Target) {
        if target == Target::StackFile {
            self.rewatch();
        }
        self.feed(target, Input::BuildDone(std::time::Instant::now()));
    }

    fn feed(&mut self, target: Target, input: Input) {
        let phase = self.phases.entry(target.clone()).or_default();
        let (next, start) = phase.step(input);
        *phase = next;
        if start {
            self.start(target);
        }
    }

    fn start(&mut self, target: Target) {
        let id = match &target {
            Target::StackFile => {
                tracing::info!(file = %self.stack_file.display(), "stack file changed: applying it");
                self.running.spawn((self.apply)()).id()
            }
            Target::Service(service) => {
                let (handle, service) = (self.handle.clone(), service.clone());
                let after_build = self.after_build.clone();
                self.running
                    .spawn(
                        async move { build::build_and_roll(&handle, &service, &after_build).await },
                    )
                    .id()
            }
        };
        self.running_targets.insert(id, target);
    }

    /// Watches what the stack as applied says; on failure keeps the
    /// current watch.
    fn rewatch(&mut self) {
        let watched = Routes::new(&self.stack_file, &self.handle.stack())
            .and_then(|routes| Ok((routes.watch(self.tx.clone())?, routes)));
        match watched {
            Ok((watcher, routes)) => {
                // From here on the applied stack's paths are watched (a
                // save before this line, to a path the apply added, is not
                // seen).
                let services: Vec<&str> = routes.services.iter().map(|s| &*s.name).collect();
                tracing::info!(?services, "watching the stack as applied");
                self.watcher = watcher;
                self.routes = routes;
            }
            Err(e) => {
                tracing::error!(error = %e, "watching the applied stack; the old watch stays")
            }
        }
    }
}

async fn sleep_until(due: Option<std::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// A change, not a read (an open, a read, a close without writing).
fn is_change(kind: EventKind) -> bool {
    match kind {
        EventKind::Access(access) => access == AccessKind::Close(AccessMode::Write),
        _ => true,
    }
}

/// One service's watched paths and what they ignore.
#[derive(Debug)]
struct WatchedService {
    name: String,
    roots: Vec<PathBuf>,
    ignore: IgnoreRules,
}

/// Which target a changed path concerns.
#[derive(Debug)]
struct Routes {
    stack_file: PathBuf,
    services: Vec<WatchedService>,
}

impl Routes {
    fn new(stack_file: &Path, stack: &Stack) -> Result<Self, WatchError> {
        let services = stack
            .services
            .iter()
            .filter_map(|s| Some((s, s.watch.as_ref()?)))
            .map(|(s, w)| {
                Ok(WatchedService {
                    name: s.name.clone(),
                    roots: w.paths.clone(),
                    ignore: w.ignore_rules().map_err(|source| WatchError::Ignore {
                        service: s.name.clone(),
                        source,
                    })?,
                })
            })
            .collect::<Result<_, WatchError>>()?;
        Ok(Self {
            stack_file: stack_file.to_path_buf(),
            services,
        })
    }

    /// The targets a change of `path` concerns.
    fn targets(&self, path: &Path) -> BTreeSet<Target> {
        if path == self.stack_file {
            return BTreeSet::from([Target::StackFile]);
        }
        if self.is_serins_own(path) {
            return BTreeSet::new();
        }
        self.services
            .iter()
            .filter(|s| {
                s.roots.iter().any(|root| {
                    let Ok(relative) = path.strip_prefix(root) else {
                        return false;
                    };
                    let relative = match relative.as_os_str().is_empty() {
                        true => Path::new(root.file_name().unwrap_or_default()),
                        false => relative,
                    };
                    !s.ignore.is_ignored(relative)
                })
            })
            .map(|s| Target::Service(s.name.clone()))
            .collect()
    }

    /// Every target, for a change that could have been anything.
    fn all(&self) -> BTreeSet<Target> {
        let services = self
            .services
            .iter()
            .map(|s| Target::Service(s.name.clone()));
        std::iter::once(Target::StackFile).chain(services).collect()
    }

    /// A file serin writes beside the stack file (weights, canaries, and
    /// their temporary files `.NAME.PID.N.tmp`; the build copies automatic
    /// canaries judge).
    fn is_serins_own(&self, path: &Path) -> bool {
        let (Some(dir), Some(stem)) = (self.stack_file.parent(), self.stack_file.file_stem())
        else {
            return false;
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return false;
        };
        // Each build an automatic canary judges is copied into
        // `STEM.builds/` (see the binary's `builds`).
        let builds = serin_config::beside(
            &self.stack_file,
            serin_config::stack::build_output::BUILDS_SUFFIX,
        );
        if path.starts_with(builds) {
            return true;
        }
        let (stem, name) = (stem.to_string_lossy(), name.to_string_lossy());
        let name = name.trim_start_matches('.');
        parent == dir
            && [".state.json", ".canary"]
                .iter()
                .any(|suffix| name.starts_with(&format!("{stem}{suffix}")))
    }

    /// Starts a watcher sending its events to `tx`: the stack file's
    /// folder, each watched folder recursively, each watched file's folder.
    fn watch(
        &self,
        tx: mpsc::UnboundedSender<notify::Result<notify::Event>>,
    ) -> Result<RecommendedWatcher, WatchError> {
        let mut watches: BTreeMap<PathBuf, RecursiveMode> = BTreeMap::new();
        let mut add = |path: &Path, mode: RecursiveMode| {
            let entry = watches.entry(path.to_path_buf()).or_insert(mode);
            if mode == RecursiveMode::Recursive {
                *entry = mode;
            }
        };
        add(parent_of(&self.stack_file), RecursiveMode::NonRecursive);
        for root in self.services.iter().flat_map(|s| &s.roots) {
            match root.is_dir() {
                true => add(root, RecursiveMode::Recursive),
                false => add(parent_of(root), RecursiveMode::NonRecursive),
            }
        }
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WatchError::Watch { path, source }
        };
        let mut watcher = notify::recommended_watcher(move |event| {
            let _ = tx.send(event);
        })
        .map_err(fail(&self.stack_file))?;
        for (path, mode) in &watches {
            watcher.watch(path, *mode).map_err(fail(path))?;
        }
        Ok(watcher)
    }
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serin_config::stack::{ServiceSpec, WatchSpec};

    fn routes() -> Routes {
        let service = |name: &str, paths: &[&str], ignore: &[&str]| ServiceSpec {
            name: name.into(),
            watch: Some(WatchSpec {
                paths: paths.iter().map(PathBuf::from).collect(),
                ignore: ignore.iter().map(|g| g.to_string()).collect(),
                build: None,
                output: None,
            }),
            ..ServiceSpec::default()
        };
        let stack = Stack {
            services: vec![
                service("api", &["/app", "/shared/lib.rs"], &["*.tmp", "target"]),
                service("web", &["/app/web"], &[]),
                ServiceSpec {
                    name: "db".into(),
                    ..ServiceSpec::default()
                },
            ],
            ..Stack::default()
        };
        Routes::new(Path::new("/app/stack.yaml"), &stack).unwrap()
    }

    #[test]
    fn a_changed_path_concerns_the_services_that_watch_it() {
        let routes = routes();
        let api = || Target::Service("api".into());
        let web = || Target::Service("web".into());
        for (path, expected) in [
            ("/app/stack.yaml", vec![Target::StackFile]),
            ("/app/src/main.rs", vec![api()]),
            ("/app/web/index.html", vec![api(), web()]),
            ("/app/notes.tmp", vec![]),
            ("/app/target/debug/api", vec![]),
            ("/app/web/target/out.js", vec![web()]),
            ("/shared/lib.rs", vec![api()]),
            ("/shared/other.rs", vec![]),
            ("/elsewhere/main.rs", vec![]),
            // serin's own files beside the stack file
            ("/app/stack.state.json", vec![]),
            ("/app/.stack.state.json.41.0.tmp", vec![]),
            ("/app/stack.canary-audit.jsonl", vec![]),
            ("/app/stack.builds/api/0a1b2c/api", vec![]),
            ("/app/stack.builds-notes/api", vec![api()]),
            ("/app/stacks.rs", vec![api()]),
        ] {
            let got: Vec<Target> = routes.targets(Path::new(path)).into_iter().collect();
            assert_eq!(got, expected, "{path}");
        }
        assert_eq!(routes.all().len(), 3, "the stack file, api and web");
    }

    #[test]
    fn reads_are_not_changes() {
        use notify::event::{CreateKind, ModifyKind};
        assert!(is_change(EventKind::Create(CreateKind::File)));
        assert!(is_change(EventKind::Modify(ModifyKind::Any)));
        assert!(is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!is_change(EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
    }
}
