//! The control plane's background tasks: endpoint sets follow discovery,
//! and the config file is reloaded when it changes.

use std::sync::Arc;
use std::time::Duration;

use super::{Change, Proxy};

/// How often the config file is read for changes. Polled, not watched:
/// polling works with every editor's save (rename-over included) and every
/// filesystem, and a read of a small file twice a second costs nothing.
const CONFIG_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps every backend's endpoints in step with the registry.
pub(super) async fn endpoints(proxy: Arc<Proxy>) {
    let mut changes = proxy.registry.subscribe();
    let mut generations = proxy.generation.subscribe();
    loop {
        for b in proxy.shared.backends() {
            b.set_endpoints(&proxy.registry.get(&b.key));
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { break },
            r = generations.changed() => if r.is_err() { break },
        }
        if proxy.shared.is_draining() {
            break;
        }
    }
}

/// Reloads when the config file's contents change. A rejected file is
/// reported and the watch goes on, so the next good save applies.
pub(super) async fn config_file(proxy: Arc<Proxy>) {
    let Some(path) = proxy.control().file_config.source.clone() else {
        return;
    };
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(CONFIG_POLL_INTERVAL);
    loop {
        tick.tick().await;
        if proxy.shared.is_draining() {
            return;
        }
        let now = std::fs::read(&path).ok();
        if now.is_none() || now == last {
            continue;
        }
        last = now;
        let p = proxy.clone();
        let file = path.display().to_string();
        match tokio::task::spawn_blocking(move || p.edit(Change::ReloadFile)).await {
            Ok(Ok(_)) => tracing::info!(file, "configuration reloaded"),
            Ok(Err(e)) => {
                tracing::error!(file, "configuration rejected; the running one stays:\n{e}")
            }
            Err(e) => tracing::error!(file, error = %e, "configuration reload failed"),
        }
    }
}
