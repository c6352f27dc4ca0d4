//! The node's HTTP API (`/api/v1`), documented with examples in
//! `docs/API.md`. Every request passes the LAN guard (loopback, the node's
//! own subnets, `--allow`; else 403) and, with `--token`, the bearer check
//! (else 401). Errors are JSON `{"error": "..."}` with a fitting status.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use super::Node;
use super::blobs::{self, BlobError, PutOutcome, is_valid_hash};
use super::renderer;
use super::renders::{FinishedFiles, JobInput};
use crate::wire::{
    ErrorBody, Manifest, NodeInfo, RenderChanges, RenderCreated, RenderRequest, RenderStatus,
};

/// Largest JSON body the API reads.
const JSON_LIMIT_BYTES: usize = 64 * 1024;

/// Longest a client may take to send a JSON body. A render request is a few
/// hundred bytes, sent at once; a client trickling one must not keep a
/// request (and its connection) open for long.
pub const JSON_BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// An API error: a status code and a message for the JSON body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: the shared secret is missing or wrong.
    #[error("missing or wrong token: send 'Authorization: Bearer <token>' with the node's --token")]
    Unauthorized,
    /// 403: the client is not on the node's LAN.
    #[error(
        "{0} is not on this node's local network: only loopback, the node's subnets and --allow networks get in"
    )]
    Forbidden(std::net::IpAddr),
    /// 403: only this machine (loopback) may ask for this.
    #[error("{0} may not ask this: only this machine (loopback) may")]
    LoopbackOnly(std::net::IpAddr),
    /// 404: no such thing.
    #[error("{0}")]
    NotFound(String),
    /// 408: the client took too long to send the request.
    #[error("{0}")]
    Timeout(String),
    /// 409: the thing exists but is not in a state for this.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// 500: the node failed.
    #[error("{0}")]
    Internal(String),
    /// 507: the node's disk is full.
    #[error("{0}")]
    DiskFull(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::LoopbackOnly(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::DiskFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        };
        let mut response = (
            status,
            Json(ErrorBody {
                error: self.to_string(),
            }),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<BlobError> for ApiError {
    fn from(err: BlobError) -> Self {
        match err {
            BlobError::InvalidHash(_) | BlobError::HashMismatch { .. } => {
                Self::BadRequest(err.to_string())
            }
            BlobError::Interrupted { .. } | BlobError::Stalled { .. } => {
                Self::BadRequest(err.to_string())
            }
            BlobError::DiskFull { .. } => Self::DiskFull(err.to_string()),
            BlobError::NotFound(_) => Self::NotFound(err.to_string()),
            BlobError::TooLarge { .. } => Self::TooLarge(err.to_string()),
            BlobError::Io { .. } => Self::Internal(err.to_string()),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The node's routes, guarded. The guard reads the client's address from
/// the request's `ConnectInfo<SocketAddr>` ([`super::http::serve`] puts it
/// there); a request without one is refused.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/api/v1/node", get(node_info))
        .route("/api/v1/blobs/{hash}", put(put_blob).head(head_blob))
        .route("/api/v1/renders", post(create_render).get(list_renders))
        .route(
            "/api/v1/renders/{id}",
            get(render_status).delete(cancel_render),
        )
        .route("/api/v1/renders/{id}/image", get(render_image))
        .route("/api/v1/renders/{id}/thumbnail", get(render_thumbnail))
        .route("/api/v1/renders/{id}/files/{*path}", get(render_output))
        .route("/api/v1/pause", post(pause))
        .route("/api/v1/resume", post(resume))
        .route("/api/v1/stop", post(stop))
        .route("/api/v1/show", post(show))
        .fallback(|| async { ApiError::NotFound("no such API route: see docs/API.md".into()) })
        .layer(DefaultBodyLimit::max(JSON_LIMIT_BYTES))
        .layer(middleware::from_fn_with_state(Arc::clone(&node), guard))
        .with_state(node)
}

/// Lets in only the LAN, then only bearers of the token (when one is set).
async fn guard(State(node): State<Arc<Node>>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip());
    let Some(peer) = peer.filter(|ip| node.access.allows(*ip)) else {
        let shown = peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
        tracing::warn!(
            "refused {} {} from {shown}: not on the local network",
            request.method(),
            request.uri().path()
        );
        return ApiError::Forbidden(shown).into_response();
    };
    if let Some(token) = &node.token {
        let offered = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or("");
        if !bool::from(offered.as_bytes().ct_eq(token.as_bytes())) {
            tracing::warn!(
                "refused {} from {peer}: missing or wrong token",
                request.uri().path()
            );
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}

async fn node_info(State(node): State<Arc<Node>>) -> Json<NodeInfo> {
    Json(node.info())
}

fn checked_hash(hash: &str) -> ApiResult<()> {
    if is_valid_hash(hash) {
        Ok(())
    } else {
        Err(BlobError::InvalidHash(hash.to_string()).into())
    }
}

async fn head_blob(
    State(node): State<Arc<Node>>,
    Path(hash): Path<String>,
) -> ApiResult<StatusCode> {
    checked_hash(&hash)?;
    if node.blobs.contains(&hash) {
        Ok(StatusCode::OK)
    } else {
        Err(BlobError::NotFound(hash).into())
    }
}

async fn put_blob(
    State(node): State<Arc<Node>>,
    Path(hash): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<StatusCode> {
    checked_hash(&hash)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    // A client still sending when the answer is ready gets a broken pipe
    // instead of the answer, and loses its connection: what it sends is
    // read to the end first (no further than the cache could hold).
    let limit = declared.map_or(node.blobs.capacity_bytes(), |declared| {
        declared.min(node.blobs.capacity_bytes())
    });
    let mut body = body.into_data_stream();
    if node.blobs.contains(&hash) {
        // A client that sent `Expect: 100-continue` waits for a go-ahead
        // that does not come: it reads this answer and sends nothing. Any
        // other is sending the body now.
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            blobs::discard(body, limit).await;
        }
        return Ok(StatusCode::OK);
    }
    match node.blobs.put(&hash, declared, &mut body).await {
        Ok(PutOutcome::Stored) => {
            tracing::info!("stored blob {hash}");
            Ok(StatusCode::CREATED)
        }
        Ok(PutOutcome::AlreadyPresent) => Ok(StatusCode::OK),
        Err(err) => {
            tracing::warn!("upload of {hash} refused: {err}");
            // Refused part way (a full disk, say): the rest is still coming.
            // A declared size over the cache was refused before any of it
            // was read, and a stalled or broken upload sends no more.
            let part_way = matches!(err, BlobError::DiskFull { .. } | BlobError::Io { .. })
                || matches!(err, BlobError::TooLarge { .. } if declared.is_none_or(|bytes| bytes <= limit));
            if part_way {
                blobs::discard(body, limit).await;
            }
            Err(err.into())
        }
    }
}

async fn create_render(
    State(node): State<Arc<Node>>,
    request: Request,
) -> ApiResult<(StatusCode, Json<RenderCreated>)> {
    // Read whole before anything is queued: a slow body holds no render.
    let body = tokio::time::timeout(JSON_BODY_TIMEOUT, Bytes::from_request(request, &()))
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "the render request's body took longer than {} s to arrive: send it at once",
                JSON_BODY_TIMEOUT.as_secs()
            ))
        })?;
    let body = body.map_err(|err| match err.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(format!(
            "render request larger than {JSON_LIMIT_BYTES} bytes: send only blob, frame and overrides"
        )),
        _ => ApiError::BadRequest(format!("unreadable render request: {err}")),
    })?;
    let request =
        RenderRequest::from_json(&body).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let input = job_input(&node, &request).await?;
    let id = node
        .update(|renders| renders.enqueue(input, request.frame, request.overrides, &node.shutdown));
    Ok((StatusCode::CREATED, Json(RenderCreated { id })))
}

/// Largest manifest read, in bytes (about a million files).
const MANIFEST_LIMIT_BYTES: u64 = 256 << 20;

/// Pins a render's blobs and lays out its job folder (once per job).
async fn job_input(node: &Arc<Node>, request: &RenderRequest) -> ApiResult<JobInput> {
    let mut pins = vec![node.blobs.pin(&request.blob)?];
    let manifest = match &request.manifest {
        None => None,
        Some(hash) => {
            let pin = node.blobs.pin(hash)?;
            let path = pin.path();
            pins.push(pin);
            Some((hash.clone(), path))
        }
    };
    let blend_hash = request.blob.clone();
    let manifest_hash = manifest.as_ref().map(|(hash, _)| hash.as_str());
    if let Some(folder) = node.jobs.existing(&blend_hash, manifest_hash) {
        return Ok(JobInput { pins, folder });
    }
    let worker_node = Arc::clone(node);
    let folder = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let node = worker_node;
        let manifest = match manifest {
            None => None,
            Some((hash, path)) => Some((hash, read_manifest(&path)?)),
        };
        // The files are pinned while they are linked into the folder; the
        // links keep them after that, whatever the blob cache evicts.
        let _pins = manifest
            .iter()
            .flat_map(|(_, manifest)| manifest.blobs())
            .map(|blob| node.blobs.pin(blob))
            .collect::<Result<Vec<_>, _>>()?;
        let manifest = manifest.as_ref().map(|(hash, m)| (hash.as_str(), m));
        node.jobs
            .lay_out(&node.blobs, &blend_hash, manifest)
            .map_err(|err| match err.raw_os_error() {
                Some(28) => ApiError::DiskFull(format!("{err}: free space in the node's work dir")),
                _ => ApiError::Internal(err.to_string()),
            })
    })
    .await
    .map_err(|err| ApiError::Internal(format!("laying out the job's files failed: {err}")))??;
    Ok(JobInput { pins, folder })
}

/// Reads and checks a manifest blob.
fn read_manifest(path: &std::path::Path) -> ApiResult<Manifest> {
    let size = std::fs::metadata(path)
        .map_err(|err| ApiError::Internal(format!("cannot read the manifest: {err}")))?
        .len();
    if size > MANIFEST_LIMIT_BYTES {
        return Err(ApiError::TooLarge(format!(
            "the job's manifest is {size} bytes, more than {MANIFEST_LIMIT_BYTES}"
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|err| ApiError::Internal(format!("cannot read the manifest: {err}")))?;
    Manifest::from_json(&bytes).map_err(|err| ApiError::BadRequest(err.to_string()))
}

/// Query of `GET /api/v1/renders`.
#[derive(Debug, serde::Deserialize)]
struct WatchQuery {
    /// Sequence number the client has seen; 0 (default) lists everything.
    #[serde(default)]
    since: u64,
    /// Wait up to this long for a change after `since` (at most 30 s).
    #[serde(default)]
    wait_ms: u64,
}

/// Longest a watch request waits.
const WATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

async fn list_renders(
    State(node): State<Arc<Node>>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> ApiResult<Json<RenderChanges>> {
    let Query(query) =
        query.map_err(|err| ApiError::BadRequest(format!("invalid query: {err}")))?;
    if query.wait_ms > 0 {
        let mut changes = node.subscribe_changes();
        let wait = std::time::Duration::from_millis(query.wait_ms).min(WATCH_LIMIT);
        let stop = node.shutdown.clone();
        tokio::select! {
            _ = tokio::time::timeout(wait, changes.wait_for(|seq| *seq > query.since)) => {}
            () = stop.cancelled() => {}
        }
    }
    let renders = node.renders();
    Ok(Json(RenderChanges {
        seq: renders.seq(),
        state: renders.node_state(),
        renders: renders.changes_since(query.since),
    }))
}

fn checked_id(id: &str) -> ApiResult<()> {
    uuid::Uuid::parse_str(id)
        .map(|_| ())
        .map_err(|_| ApiError::BadRequest(format!("'{id}' is not a render id")))
}

fn unknown_render(id: &str) -> ApiError {
    ApiError::NotFound(format!("no render {id} on this node"))
}

async fn render_status(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RenderStatus>> {
    checked_id(&id)?;
    node.renders()
        .status(&id)
        .map(Json)
        .ok_or_else(|| unknown_render(&id))
}

async fn cancel_render(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Json<RenderStatus>> {
    checked_id(&id)?;
    node.update(|renders| renders.cancel(&id))
        .map(Json)
        .ok_or_else(|| unknown_render(&id))
}

async fn render_image(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let files = finished_files(&node, &id)?;
    send_file(&files.image).await
}

async fn render_thumbnail(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let files = finished_files(&node, &id)?;
    let thumbnail = renderer::thumbnail_file(files)
        .await
        .map_err(ApiError::Internal)?;
    send_file(&thumbnail).await
}

async fn render_output(
    State(node): State<Arc<Node>>,
    Path((id, output)): Path<(String, String)>,
) -> ApiResult<Response> {
    finished_files(&node, &id)?;
    // Only the paths the render lists are served: nothing else is reachable.
    let file = node.renders().output(&id, &output).ok_or_else(|| {
        ApiError::NotFound(format!(
            "render {id} wrote no file {output:?}: its status lists its outputs"
        ))
    })?;
    send_file(&file).await
}

fn finished_files(node: &Node, id: &str) -> ApiResult<FinishedFiles> {
    checked_id(id)?;
    let renders = node.renders();
    let status = renders.status(id).ok_or_else(|| unknown_render(id))?;
    renders.image(id).ok_or_else(|| {
        ApiError::Conflict(format!(
            "render {id} (frame {}) is {:?}, not done: it has no image",
            status.frame, status.state
        ))
    })
}

async fn send_file(path: &std::path::Path) -> ApiResult<Response> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|err| ApiError::Internal(format!("cannot open {}: {err}", path.display())))?;
    let length = file.metadata().await.map(|meta| meta.len()).ok();
    let content_type = match path.extension().and_then(|ext| ext.to_str()) {
        Some("png") => "image/png",
        Some("jpg") => "image/jpeg",
        Some("exr") => "image/x-exr",
        _ => "application/octet-stream",
    };
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    Ok(response)
}

async fn pause(State(node): State<Arc<Node>>) -> Json<NodeInfo> {
    tracing::info!("paused: no new frames until resumed");
    node.pause();
    Json(node.info())
}

async fn resume(State(node): State<Arc<Node>>) -> Json<NodeInfo> {
    tracing::info!("resumed");
    node.resume();
    Json(node.info())
}

/// `POST /api/v1/show`: a second start of herd on this machine asks the
/// node's window to come back. Only from loopback: no one else has a
/// reason to pop up a window on this machine.
async fn show(
    State(node): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Result<StatusCode, ApiError> {
    if !peer.ip().is_loopback() {
        return Err(ApiError::LoopbackOnly(peer.ip()));
    }
    tracing::info!("asked to show the node's window (herd started again on this machine)");
    node.ask_to_show();
    Ok(StatusCode::ACCEPTED)
}

async fn stop(State(node): State<Arc<Node>>) -> StatusCode {
    tracing::info!("stop requested over the API");
    node.shutdown.cancel();
    StatusCode::ACCEPTED
}
