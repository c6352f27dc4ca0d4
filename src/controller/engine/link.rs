//! How the engine reaches its nodes. Everything the engine says to a node
//! and hears from it crosses a [`Links`]: asking what answers at an
//! address, and running the task that serves one node for the job (upload,
//! renders, downloads). herd's own is HTTP ([`HttpLinks`]); the engine's
//! tests script nodes behind the same interface, as the scheduler's tests
//! simulate a farm.

use std::sync::Arc;

use super::super::discovery;
use super::super::remote::{self, JobContext, NodeLink};
use crate::wire::NodeInfo;
use futures_util::future::BoxFuture;

/// The engine's way to its nodes.
pub trait Links: Send + Sync {
    /// What answers at `uri`: a herd node's info, or why not.
    fn confirm(
        &self,
        job: &JobContext,
        uri: String,
    ) -> BoxFuture<'static, Result<NodeInfo, String>>;

    /// Serves one node for the job until its commands close or it is lost
    /// (said with [`remote::Report::Lost`]).
    fn serve(&self, job: Arc<JobContext>, link: NodeLink) -> BoxFuture<'static, ()>;
}

/// Nodes over their HTTP API (see docs/API.md).
#[derive(Debug, Default, Clone, Copy)]
pub struct HttpLinks;

impl Links for HttpLinks {
    fn confirm(
        &self,
        job: &JobContext,
        uri: String,
    ) -> BoxFuture<'static, Result<NodeInfo, String>> {
        let client = job.client.clone();
        let token = job.token.clone();
        Box::pin(async move {
            discovery::confirm(&client, &uri, token.as_deref())
                .await
                .map_err(|err| err.to_string())
        })
    }

    fn serve(&self, job: Arc<JobContext>, link: NodeLink) -> BoxFuture<'static, ()> {
        Box::pin(remote::run(job, link))
    }
}
