//! The controller's nodes, with one owner for the life of the process (of
//! `herd render`, of the window): the discovery socket, the servers given
//! by hand, those the user left out of jobs, the in-process local node, and
//! what is known of the servers on the LAN between jobs.
//!
//! Between jobs the pool's standing watch ([`super::watch`]) keeps the table
//! of servers current; a job's engine gets its nodes from
//! [`Pool::engine_config`] and watches them itself while it runs, hearing
//! beacons from the same socket. The pool carries the table across jobs, so
//! a server heard before a job is still known after it.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::discovery::Listener;
use super::engine::{EngineConfig, LocalNode, NodeView};
use super::scheduler::SchedulerConfig;
use super::watch::{self, ServerTable, WatchCommand, WatchConfig};

/// The controller's nodes.
#[derive(Debug)]
pub struct Pool {
    discovery: Option<Listener>,
    token: Option<String>,
    /// Servers given by hand (`http://HOST:PORT`), in the order given.
    added: Vec<String>,
    /// Addresses the user left out of jobs.
    left_out: BTreeSet<String>,
    local: Option<Arc<LocalNode>>,
    /// What was known of the servers when the watch last stopped.
    table: ServerTable,
    watch: Option<Watching>,
}

/// The standing watch, while it runs.
#[derive(Debug)]
struct Watching {
    stop: CancellationToken,
    commands: mpsc::Sender<WatchCommand>,
    task: JoinHandle<ServerTable>,
}

impl Pool {
    /// A pool hearing beacons on `discovery` (none: only the servers
    /// added), with the servers given by hand and the farm's `token`.
    pub fn new(discovery: Option<Listener>, added: Vec<String>, token: Option<String>) -> Self {
        let added = added
            .into_iter()
            .map(|uri| uri.trim_end_matches('/').to_string())
            .collect();
        Self {
            discovery,
            token,
            added,
            left_out: BTreeSet::new(),
            local: None,
            table: ServerTable::default(),
            watch: None,
        }
    }

    /// The controller's own node, once it is up.
    pub fn local(&self) -> Option<&Arc<LocalNode>> {
        self.local.as_ref()
    }

    /// Takes the controller's own node into the pool (it is stopped with
    /// the pool).
    pub fn set_local(&mut self, local: Arc<LocalNode>) {
        self.tell(WatchCommand::Add {
            uri: local.uri().to_string(),
            local: true,
        });
        self.local = Some(local);
    }

    /// Adds a server by address, for the watch and the next jobs (a running
    /// job is told by its own command).
    pub fn add(&mut self, uri: &str) {
        let uri = uri.trim_end_matches('/').to_string();
        if !self.added.contains(&uri) {
            self.added.push(uri.clone());
        }
        self.tell(WatchCommand::Add { uri, local: false });
    }

    /// The addresses left out of the next jobs.
    pub fn leave_out(&mut self, left_out: BTreeSet<String>) {
        self.tell(WatchCommand::LeftOut(left_out.clone()));
        self.left_out = left_out;
    }

    /// What a job's engine needs of the nodes.
    pub fn engine_config(&self, scheduler: SchedulerConfig) -> EngineConfig {
        EngineConfig {
            nodes: self.added.clone(),
            discovery: self.discovery.clone(),
            local: self.local.clone(),
            token: self.token.clone(),
            scheduler,
            left_out: self.left_out.clone(),
            ..EngineConfig::default()
        }
    }

    /// Starts the standing watch (if it is not running), which sends the
    /// table's rows to `rows` whenever they change.
    pub fn watch(&mut self, rows: mpsc::Sender<Vec<NodeView>>) {
        if self.watch.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        let (commands, commands_rx) = mpsc::channel(64);
        let config = WatchConfig {
            discovery: self.discovery.clone(),
            token: self.token.clone(),
        };
        let task = tokio::spawn(watch::run(
            config,
            std::mem::take(&mut self.table),
            self.left_out.clone(),
            commands_rx,
            rows,
            stop.clone(),
        ));
        self.watch = Some(Watching {
            stop,
            commands,
            task,
        });
        for uri in self.added.clone() {
            self.tell(WatchCommand::Add { uri, local: false });
        }
        if let Some(local) = &self.local {
            self.tell(WatchCommand::Add {
                uri: local.uri().to_string(),
                local: true,
            });
        }
    }

    /// Stops the standing watch (a job's engine watches its nodes while it
    /// runs), keeping what it knew for the next.
    pub async fn stop_watch(&mut self) {
        if let Some(watching) = self.watch.take() {
            watching.stop.cancel();
            self.table = watching.task.await.unwrap_or_default();
        }
    }

    /// Stops the watch and the local node.
    pub async fn close(mut self) {
        self.stop_watch().await;
        if let Some(local) = self.local.take() {
            local.stop().await;
        }
    }

    /// Tells the watch, if it runs; a busy watch misses nothing important
    /// (servers come back by beacon, the set is sent again on change).
    fn tell(&self, command: WatchCommand) {
        if let Some(watching) = &self.watch {
            let _ = watching.commands.try_send(command);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The next rows that name every address of `uris`.
    async fn rows_naming(rows: &mut mpsc::Receiver<Vec<NodeView>>, uris: &[&str]) -> Vec<NodeView> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let next = tokio::time::timeout_at(deadline, rows.recv())
                .await
                .expect("the rows came within 10 s")
                .expect("the watch runs");
            if uris
                .iter()
                .all(|uri| next.iter().any(|row| row.uri == *uri))
            {
                return next;
            }
        }
    }

    #[tokio::test]
    async fn what_the_pool_knows_outlives_a_job_and_goes_to_the_next() {
        // Nothing answers on these loopback ports: the rows show them
        // unreachable, which is enough to follow them.
        let (first, second) = ("http://127.0.0.1:9", "http://127.0.0.1:7");
        let mut pool = Pool::new(None, vec![format!("{first}/")], Some("secret".into()));
        let (rows_tx, mut rows) = mpsc::channel(4);
        pool.watch(rows_tx.clone());
        rows_naming(&mut rows, &[first]).await;

        // A job runs: the watch stops; what the user does meanwhile counts.
        pool.stop_watch().await;
        pool.add(second);
        pool.leave_out(BTreeSet::from([first.to_string()]));
        let config = pool.engine_config(SchedulerConfig::default());
        assert_eq!(config.nodes, vec![first.to_string(), second.to_string()]);
        assert!(config.left_out.contains(first));
        assert_eq!(config.token.as_deref(), Some("secret"));
        assert!(config.discovery.is_none() && config.local.is_none());

        // After the job the watch knows both, the first left out.
        pool.watch(rows_tx);
        let after = rows_naming(&mut rows, &[first, second]).await;
        let enabled = |uri: &str| after.iter().find(|row| row.uri == uri).unwrap().enabled;
        assert!(!enabled(first));
        assert!(enabled(second));
        pool.close().await;
    }
}
