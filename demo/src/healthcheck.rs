//! `serin-demo healthcheck`: the container image's HEALTHCHECK. An image
//! built `FROM scratch` has no curl, so the binary checks itself.

use anyhow::{Context as _, bail};

use crate::cli::HealthcheckArgs;
use crate::common::service_addr;

/// GETs the service's `/ready` (or `args.path`); an error unless it
/// answers 2xx.
pub async fn run(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let addr = service_addr(args.host, args.port)?;
    let path = args.path.trim_start_matches('/');
    let url = format!("http://{addr}/{path}");
    let client = serin_config::http_client::builder()?
        .timeout(args.timeout)
        .build()
        .context("cannot build an HTTP client")?;
    let response = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("GET {url}: HTTP {status}: {}", body.trim());
    }
    Ok(())
}
