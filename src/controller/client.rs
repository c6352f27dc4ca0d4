//! A node's HTTP API as the controller uses it (docs/API.md): each call
//! sends and reads the [`wire`](crate::wire) types the node itself uses,
//! and every failure is one [`ClientError`]: the node could not be
//! reached, it answered an error (with the reason it gave), or it answered
//! something that is not what the API says.

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::wire::{ErrorBody, NodeInfo, RenderChanges, RenderCreated, RenderRequest};

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer: the node is down, unreachable or too slow.
    #[error("cannot reach {uri}: {reason}")]
    Transport {
        /// The node.
        uri: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// The node answered with an error status.
    #[error("{uri} answered {status}: {message}")]
    Status {
        /// The node.
        uri: String,
        /// The HTTP status.
        status: u16,
        /// The reason the node gave (its [`ErrorBody`]).
        message: String,
    },
    /// The node answered, but not what the API says it answers.
    #[error("{uri} answered what herd cannot read: {reason}")]
    Answer {
        /// The node.
        uri: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A file of the controller's could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl ClientError {
    /// Whether the node did not answer at all (it may come back), as
    /// opposed to answering no.
    pub fn is_transport(&self) -> bool {
        matches!(self, Self::Transport { .. })
    }

    /// The reason alone, without the node's address (for a place that
    /// names the node already).
    pub fn reason(&self) -> String {
        match self {
            Self::Transport { reason, .. } | Self::Answer { reason, .. } => reason.clone(),
            Self::Status {
                status, message, ..
            } => format!("{status}: {message}"),
            Self::Write { .. } => self.to_string(),
        }
    }
}

/// One node's API, at `http://HOST:PORT`.
#[derive(Debug, Clone)]
pub struct NodeClient {
    http: reqwest::Client,
    uri: String,
    token: Option<String>,
    /// How long a short call may take before the node counts as silent.
    timeout: Duration,
}

impl NodeClient {
    /// The API of the node at `uri`, called through `http` with the farm's
    /// `token`; short calls give up after `timeout`.
    pub fn new(
        http: reqwest::Client,
        uri: impl Into<String>,
        token: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            http,
            uri: uri.into().trim_end_matches('/').to_string(),
            token,
            timeout,
        }
    }

    /// The node's address.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `GET /api/v1/node`: who the node is and what it does.
    pub async fn info(&self) -> Result<NodeInfo, ClientError> {
        let response = self.send(self.request(Method::GET, "node")).await?;
        self.json(response).await
    }

    /// `HEAD /api/v1/blobs/{hash}`: whether the node has the blob.
    pub async fn has_blob(&self, hash: &str) -> Result<bool, ClientError> {
        let path = format!("blobs/{hash}");
        let response = self.send(self.request(Method::HEAD, &path)).await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(self.status_error(status, "no reason given (a HEAD has no body)".into())),
        }
    }

    /// `PUT /api/v1/blobs/{hash}`: sends `bytes` bytes of `body`, allowing
    /// `limit` for it. A blob the node has already (another controller sent
    /// it meanwhile) is a success, however the node ended the transfer.
    pub async fn put_blob(
        &self,
        hash: &str,
        body: reqwest::Body,
        bytes: u64,
        limit: Duration,
    ) -> Result<(), ClientError> {
        let path = format!("blobs/{hash}");
        let request = self
            .request(Method::PUT, &path)
            .header(reqwest::header::CONTENT_LENGTH, bytes)
            .body(body)
            .timeout(limit);
        match self.send(request).await {
            Ok(response) => self.expect_success(response).await,
            Err(err) if err.is_transport() && self.has_blob(hash).await.unwrap_or(false) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// `POST /api/v1/renders`: queues a frame; the answer names the render.
    pub async fn render(&self, request: &RenderRequest) -> Result<RenderCreated, ClientError> {
        let response = self
            .send(self.request(Method::POST, "renders").json(request))
            .await?;
        self.json(response).await
    }

    /// `DELETE /api/v1/renders/{id}`: cancels a render, or frees a
    /// finished one's files.
    pub async fn delete_render(&self, id: &str) -> Result<(), ClientError> {
        let response = self
            .send(self.request(Method::DELETE, &format!("renders/{id}")))
            .await?;
        self.expect_success(response).await
    }

    /// `GET /api/v1/renders?since=SEQ&wait_ms=MS`: what changed after
    /// `since`, waiting up to `wait` for a change.
    pub async fn changes(&self, since: u64, wait: Duration) -> Result<RenderChanges, ClientError> {
        let path = format!("renders?since={since}&wait_ms={}", wait.as_millis());
        let request = self
            .request(Method::GET, &path)
            .timeout(wait + self.timeout);
        let response = self.send(request).await?;
        self.json(response).await
    }

    /// Streams `GET /api/v1/{path}` (a render's image or file) to `file`,
    /// flushed to disk, allowing `limit` for it; returns the bytes written.
    pub async fn download(
        &self,
        path: &str,
        file: &Path,
        limit: Duration,
    ) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let mut response = self
            .send(self.request(Method::GET, path).timeout(limit))
            .await?;
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let write = |source| ClientError::Write {
            path: file.to_path_buf(),
            source,
        };
        if let Some(parent) = file.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(write)?;
        }
        let mut out = tokio::fs::File::create(file).await.map_err(write)?;
        let mut written = 0u64;
        while let Some(bytes) = response.chunk().await.map_err(|err| self.transport(&err))? {
            out.write_all(&bytes).await.map_err(write)?;
            written += bytes.len() as u64;
        }
        out.sync_all().await.map_err(write)?;
        Ok(written)
    }

    /// A request to `path` under `/api/v1/`, with the token and the short
    /// timeout (calls that take longer set their own).
    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self
            .http
            .request(method, format!("{}/api/v1/{path}", self.uri))
            .timeout(self.timeout);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        request.send().await.map_err(|err| self.transport(&err))
    }

    /// The answer as `T`, or the node's error.
    async fn json<T: DeserializeOwned>(&self, response: Response) -> Result<T, ClientError> {
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        let bytes = response.bytes().await.map_err(|err| self.transport(&err))?;
        serde_json::from_slice(&bytes).map_err(|err| ClientError::Answer {
            uri: self.uri.clone(),
            reason: format!("not a herd answer: {err}"),
        })
    }

    async fn expect_success(&self, response: Response) -> Result<(), ClientError> {
        if response.status().is_success() {
            Ok(())
        } else {
            Err(self.error_from(response).await)
        }
    }

    /// The error a failed answer carries ([`ErrorBody`]), or why it has none.
    async fn error_from(&self, response: Response) -> ClientError {
        let status = response.status();
        let message = match response.bytes().await {
            Ok(bytes) => match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => body.error,
                Err(_) if bytes.is_empty() => "no reason given".into(),
                Err(_) => format!(
                    "no herd error, the answer began {:?}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
                ),
            },
            Err(err) => format!("the answer broke off: {}", transport_text(&err)),
        };
        self.status_error(status, message)
    }

    fn status_error(&self, status: StatusCode, message: String) -> ClientError {
        ClientError::Status {
            uri: self.uri.clone(),
            status: status.as_u16(),
            message,
        }
    }

    fn transport(&self, err: &reqwest::Error) -> ClientError {
        ClientError::Transport {
            uri: self.uri.clone(),
            reason: transport_text(err),
        }
    }
}

/// A transport error with its causes, short enough for a table cell.
pub fn transport_text(err: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
