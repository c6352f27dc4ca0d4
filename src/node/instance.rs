//! One node per machine and port: a second start of herd in node mode
//! finds the node already serving on loopback, asks it to show its window
//! (`POST /api/v1/show`) and leaves it be.

use std::time::Duration;

use crate::wire::NodeInfo;

/// How long the running node has to answer; a node on this machine
/// answers in milliseconds, and nothing there should not delay a start.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// The herd node serving on this machine's loopback at `port`, if one
/// does; it is asked to show its window. `token` is the node's shared
/// secret, when it has one.
pub async fn raise_running(port: u16, token: Option<&str>) -> Option<NodeInfo> {
    let client = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .no_proxy()
        .build()
        .ok()?;
    let base = format!("http://127.0.0.1:{port}/api/v1");
    let with_token = |request: reqwest::RequestBuilder| match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    let info: NodeInfo = with_token(client.get(format!("{base}/node")))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    match with_token(client.post(format!("{base}/show"))).send().await {
        Ok(response) if response.status().is_success() => {}
        Ok(response) => tracing::warn!(
            "the running node did not show its window: {}",
            response.status()
        ),
        Err(err) => tracing::warn!("the running node did not show its window: {err}"),
    }
    Some(info)
}
