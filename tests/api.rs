//! Router tests: the node's HTTP API called with `tower::ServiceExt::oneshot`,
//! no socket and no Blender (nothing here renders). What crosses a real
//! network or needs Blender lives in `node_e2e.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

use herd::blender::BlenderConfig;
use herd::node::{Node, NodeConfig, api};

fn node(dir: &Path, token: Option<&str>) -> Arc<Node> {
    Node::new(NodeConfig {
        name: "test-node".into(),
        work_dir: dir.to_path_buf(),
        cache_size_bytes: 1 << 20,
        blender: BlenderConfig {
            path: "/nonexistent/blender".into(),
            threads: None,
            allow_scripts: false,
            frame_timeout: Duration::from_secs(10),
            max_frame_time: None,
            script_dir: dir.to_path_buf(),
        },
        blender_version: "3.4.1".into(),
        allow: vec!["192.0.2.0/24".parse().unwrap()],
        token: token.map(str::to_string),
        simulate: None,
    })
    .unwrap()
}

fn request(method: Method, uri: &str, from: &str, body: Body) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(body)
        .unwrap();
    let addr: SocketAddr = from.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, serde_json::Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

const LOCAL: &str = "127.0.0.1:40000";

#[tokio::test]
async fn node_info_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let (status, json) = send(
        &app,
        request(Method::GET, "/api/v1/node", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["name"], "test-node");
    assert_eq!(json["state"], "idle");
    assert_eq!(json["blender_version"], "3.4.1");
    // The id survives a restart on the same work dir.
    let id = json["id"].as_str().unwrap().to_string();
    let again = api::router(node(dir.path(), None));
    let (_, json) = send(
        &again,
        request(Method::GET, "/api/v1/node", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(json["id"], id.as_str());
}

#[tokio::test]
async fn upload_under_the_wrong_hash_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let wrong = sha(b"not these bytes");
    let uri = format!("/api/v1/blobs/{wrong}");
    let (status, json) = send(
        &app,
        request(Method::PUT, &uri, LOCAL, Body::from("some bytes")),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("does not match its hash"),
        "{json}"
    );
    let (status, _) = send(&app, request(Method::HEAD, &uri, LOCAL, Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_then_head_then_skip() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let data = b"BLENDER-v304 pretend".to_vec();
    let uri = format!("/api/v1/blobs/{}", sha(&data));
    let (status, _) = send(&app, request(Method::HEAD, &uri, LOCAL, Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(
        &app,
        request(Method::PUT, &uri, LOCAL, Body::from(data.clone())),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send(&app, request(Method::HEAD, &uri, LOCAL, Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(&app, request(Method::PUT, &uri, LOCAL, Body::from(data))).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a second upload of the same bytes is skipped"
    );
}

#[tokio::test]
async fn truncated_upload_is_refused_and_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let data = b"0123456789".to_vec();
    let uri = format!("/api/v1/blobs/{}", sha(&data));
    let mut req = request(Method::PUT, &uri, LOCAL, Body::from(data[..4].to_vec()));
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, "10".parse().unwrap());
    let (status, json) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"].as_str().unwrap().contains("interrupted"),
        "{json}"
    );
    let (status, _) = send(&app, request(Method::HEAD, &uri, LOCAL, Body::empty())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let incoming = std::fs::read_dir(dir.path().join("blobs/incoming")).unwrap();
    assert_eq!(incoming.count(), 0, "no partial file left behind");
}

#[tokio::test]
async fn upload_larger_than_the_cache_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let uri = format!("/api/v1/blobs/{}", sha(b"x"));
    let mut req = request(Method::PUT, &uri, LOCAL, Body::from("x"));
    req.headers_mut().insert(
        header::CONTENT_LENGTH,
        (4u64 << 20).to_string().parse().unwrap(),
    );
    let (status, json) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["error"].as_str().unwrap().contains("--cache-size"),
        "{json}"
    );
}

#[tokio::test]
async fn ids_are_validated_and_unknown_ones_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    for bad in [
        "/api/v1/blobs/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/blobs/ABCDEF",
        "/api/v1/renders/..%2F..%2Fnode-id",
        "/api/v1/renders/%2Fetc%2Fpasswd/image",
        "/api/v1/renders/not-a-uuid/thumbnail",
    ] {
        let method = if bad.contains("blobs") {
            Method::HEAD
        } else {
            Method::GET
        };
        let (status, _) = send(&app, request(method, bad, LOCAL, Body::empty())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // Paths that try to climb out never reach a handler.
    let (status, _) = send(
        &app,
        request(
            Method::GET,
            "/api/v1/renders/../../node-id",
            LOCAL,
            Body::empty(),
        ),
    )
    .await;
    assert!(status.is_client_error(), "{status}");

    let unknown = uuid::Uuid::new_v4();
    for uri in [
        format!("/api/v1/renders/{unknown}"),
        format!("/api/v1/renders/{unknown}/image"),
    ] {
        let (status, json) = send(&app, request(Method::GET, &uri, LOCAL, Body::empty())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            json["error"].as_str().unwrap().contains("no render"),
            "{json}"
        );
    }
    let (status, _) = send(
        &app,
        request(
            Method::DELETE,
            &format!("/api/v1/renders/{unknown}"),
            LOCAL,
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_render_requests_are_400_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let blob = sha(b"x");
    let cases = [
        ("not json".to_string(), "invalid render request"),
        (r#"{"frame": 1}"#.to_string(), "missing field `blob`"),
        (
            format!(r#"{{"blob":"{blob}","frame":"one"}}"#),
            "invalid type",
        ),
        (
            format!(r#"{{"blob":"{blob}","frame":99999999999}}"#),
            "invalid",
        ),
        (
            format!(r#"{{"blob":"{blob}","frame":2000000}}"#),
            "outside Blender's frame range",
        ),
        (
            format!(r#"{{"blob":"{blob}","frame":1,"overrides":{{"samples":0}}}}"#),
            "samples 0 is out of range",
        ),
        (
            format!(r#"{{"blob":"{blob}","frame":1,"overrides":{{"format":"GIF"}}}}"#),
            "unknown variant",
        ),
        (r#"{"blob":"../x","frame":1}"#.to_string(), "not a SHA-256"),
    ];
    for (body, expected) in cases {
        let (status, json) = send(
            &app,
            request(
                Method::POST,
                "/api/v1/renders",
                LOCAL,
                Body::from(body.clone()),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let error = json["error"].as_str().unwrap();
        assert!(error.contains(expected), "{body}: {error}");
    }
    let missing = format!(r#"{{"blob":"{blob}","frame":1}}"#);
    let (status, json) = send(
        &app,
        request(Method::POST, "/api/v1/renders", LOCAL, Body::from(missing)),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("upload it with PUT"),
        "{json}"
    );
}

#[tokio::test]
async fn clients_outside_the_lan_get_403() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    for outsider in ["8.8.8.8:5000", "[2001:db8::1]:5000", "198.51.100.7:80"] {
        let (status, json) = send(
            &app,
            request(Method::GET, "/api/v1/node", outsider, Body::empty()),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{outsider}");
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .contains("not on this node's local network")
        );
    }
    // Loopback, IPv4-mapped loopback and --allow networks get in.
    for insider in [
        "127.0.0.1:1",
        "[::1]:1",
        "[::ffff:127.0.0.1]:1",
        "192.0.2.55:1",
    ] {
        let (status, _) = send(
            &app,
            request(Method::GET, "/api/v1/node", insider, Body::empty()),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{insider}");
    }
    // Without the client's address the guard refuses rather than guesses.
    let anonymous = Request::builder()
        .uri("/api/v1/node")
        .body(Body::empty())
        .unwrap();
    let (status, _) = send(&app, anonymous).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn token_missing_or_wrong_is_401_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), Some("s3cret")));
    let blob = format!("/api/v1/blobs/{}", sha(b"x"));
    let image = format!("/api/v1/renders/{}/image", uuid::Uuid::new_v4());
    for (method, uri) in [
        (Method::GET, "/api/v1/node"),
        (Method::HEAD, blob.as_str()),
        (Method::PUT, blob.as_str()),
        (Method::GET, image.as_str()),
        (Method::POST, "/api/v1/stop"),
    ] {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("s3cret"),
            Some("Bearer s3cre"),
        ] {
            let mut req = request(method.clone(), uri, LOCAL, Body::empty());
            if let Some(auth) = auth {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, auth.parse().unwrap());
            }
            let (status, _) = send(&app, req).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} {auth:?}");
        }
    }
    let mut req = request(Method::GET, "/api/v1/node", LOCAL, Body::empty());
    req.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    let (status, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    // The LAN guard comes first: an outsider with the right token is still 403.
    let mut req = request(Method::GET, "/api/v1/node", "8.8.8.8:1", Body::empty());
    req.headers_mut()
        .insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
    let (status, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn pause_and_resume_change_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let (status, json) = send(
        &app,
        request(Method::POST, "/api/v1/pause", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["state"], "paused");
    let (_, json) = send(
        &app,
        request(Method::POST, "/api/v1/resume", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(json["state"], "idle");
}

#[tokio::test]
async fn watching_renders_waits_for_a_change_or_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), None);
    let app = api::router(Arc::clone(&node));
    let (status, json) = send(
        &app,
        request(Method::GET, "/api/v1/renders", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["seq"], 0);
    assert_eq!(json["state"], "idle");
    assert_eq!(json["renders"], serde_json::json!([]));

    let started = std::time::Instant::now();
    let uri = "/api/v1/renders?since=0&wait_ms=300";
    let (status, _) = send(&app, request(Method::GET, uri, LOCAL, Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(290),
        "waited for a change"
    );

    // A render queued while a watch waits ends the wait at once.
    let data = b"pretend blend".to_vec();
    let hash = sha(&data);
    let put = format!("/api/v1/blobs/{hash}");
    send(&app, request(Method::PUT, &put, LOCAL, Body::from(data))).await;
    let watcher = tokio::spawn({
        let app = app.clone();
        async move {
            let started = std::time::Instant::now();
            let uri = "/api/v1/renders?since=0&wait_ms=10000";
            let (_, json) = send(&app, request(Method::GET, uri, LOCAL, Body::empty())).await;
            (started.elapsed(), json)
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = format!(r#"{{"blob":"{hash}","frame":3}}"#);
    let (status, _) = send(
        &app,
        request(Method::POST, "/api/v1/renders", LOCAL, Body::from(body)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (waited, json) = watcher.await.unwrap();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert_eq!(json["seq"], 1);
    assert_eq!(json["renders"][0]["frame"], 3);
    assert_eq!(json["renders"][0]["state"], "queued");

    let (status, json) = send(
        &app,
        request(Method::GET, "/api/v1/renders?since=x", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json["error"].as_str().unwrap().contains("invalid query"),
        "{json}"
    );
}

#[tokio::test]
async fn oversized_render_requests_are_413_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let app = api::router(node(dir.path(), None));
    let huge = format!(r#"{{"blob":"{}","frame":1}}"#, "a".repeat(200_000));
    let (status, json) = send(
        &app,
        request(Method::POST, "/api/v1/renders", LOCAL, Body::from(huge)),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("larger than 65536 bytes"),
        "{json}"
    );
}

#[tokio::test]
async fn show_is_taken_from_loopback_only_and_reaches_the_window_watch() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), None);
    let mut show = node.subscribe_show();
    let app = api::router(Arc::clone(&node));

    let (status, json) = send(
        &app,
        request(
            Method::POST,
            "/api/v1/show",
            "192.0.2.7:40000",
            Body::empty(),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("only this machine")
    );
    assert!(!show.has_changed().unwrap());

    let (status, _) = send(
        &app,
        request(Method::POST, "/api/v1/show", LOCAL, Body::empty()),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(show.has_changed().unwrap());
    assert_eq!(*show.borrow_and_update(), 1);
}

/// The controller's typed client against a node on a real socket: answers
/// read as the wire types, errors carry the node's reason, and a blob sent
/// twice (as two controllers would) succeeds both times.
#[tokio::test]
async fn the_controllers_client_reads_every_answer_and_error_typed() {
    use herd::controller::client::{ClientError, NodeClient};
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), Some("secret"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(herd::node::serve(
        node,
        listener,
        None,
        stop.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::new();
    let timeout = Duration::from_secs(5);
    let api = NodeClient::new(http.clone(), &uri, Some("secret".into()), timeout);

    assert_eq!(api.info().await.unwrap().name, "test-node");

    let blob = vec![7u8; 512 * 1024];
    let hash = sha(&blob);
    assert!(!api.has_blob(&hash).await.unwrap());
    for _ in 0..2 {
        let body = reqwest::Body::from(blob.clone());
        api.put_blob(&hash, body, blob.len() as u64, timeout)
            .await
            .unwrap();
    }
    assert!(api.has_blob(&hash).await.unwrap());

    // The node's own reason comes back with the status.
    let wrong = api
        .put_blob(
            &sha(b"other"),
            reqwest::Body::from(blob.clone()),
            blob.len() as u64,
            timeout,
        )
        .await
        .unwrap_err();
    match &wrong {
        ClientError::Status {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert!(message.contains("hash"), "{message}");
        }
        other => panic!("a status error, not {other:?}"),
    }

    let anonymous = NodeClient::new(http.clone(), &uri, None, timeout);
    match anonymous.info().await.unwrap_err() {
        ClientError::Status {
            status, message, ..
        } => {
            assert_eq!(status, 401);
            assert_ne!(message, "no reason given");
        }
        other => panic!("a status error, not {other:?}"),
    }

    stop.cancel();
    server.await.unwrap().unwrap();
    let gone = api.info().await.unwrap_err();
    assert!(gone.is_transport(), "{gone:?}");
    assert!(
        gone.to_string().starts_with(&format!("cannot reach {uri}")),
        "{gone}"
    );
}
