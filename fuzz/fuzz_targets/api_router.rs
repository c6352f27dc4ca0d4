//! `POST /api/v1/renders` through the node's real router (LAN guard, body
//! limit, body timeout, `RenderRequest::from_json`, the blob lookup, the
//! error responses), called with `tower::ServiceExt::oneshot` on a
//! current-thread runtime: no socket, no Blender. The node has no blobs, so
//! nothing is ever queued: every body must get a 400 or 404 (or 413) with a
//! JSON error.

#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

use herd::blender::BlenderConfig;
use herd::node::{Node, NodeConfig, api};
use herd::wire::ErrorBody;

/// One node for the whole run: its runtime, its router, its work dir.
struct Harness {
    runtime: tokio::runtime::Runtime,
    router: Router,
    _work_dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let work_dir = tempfile::tempdir().expect("a temp dir");
        let node = Node::new(NodeConfig {
            name: "fuzz".into(),
            work_dir: work_dir.path().to_path_buf(),
            cache_size_bytes: 1 << 20,
            blender: BlenderConfig {
                path: "/nonexistent/blender".into(),
                threads: None,
                allow_scripts: false,
                frame_timeout: Duration::from_secs(10),
                max_frame_time: None,
                script_dir: work_dir.path().to_path_buf(),
            },
            blender_version: "3.4.1".into(),
            allow: Vec::new(),
            token: None,
            simulate: None,
        })
        .expect("a node in a temp dir");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        Harness {
            runtime,
            router: api::router(node),
            _work_dir: work_dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let mut request = Request::post("/api/v1/renders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a request");
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    request.extensions_mut().insert(ConnectInfo(peer));
    let (status, body) = harness.runtime.block_on(async {
        let response = harness
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("an in-memory body")
            .to_bytes();
        (status, body)
    });
    assert!(
        matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND | StatusCode::PAYLOAD_TOO_LARGE
        ),
        "status {status}"
    );
    let error: ErrorBody = serde_json::from_slice(&body).expect("a JSON error body");
    assert!(!error.error.is_empty());
});
