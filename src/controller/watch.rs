//! The servers on the LAN between jobs: the window shows them before the
//! first job starts, so the user sees who will render. While a job runs its
//! engine does discovery itself; the watch then stands aside (it holds the
//! discovery port) and picks up again afterwards with what it knew.
//!
//! [`ServerTable`] is the pure part (what is known of whom, and since when);
//! [`run`] does the I/O: probes, beacons and a `GET /api/v1/node` now and
//! then to every known server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::discovery;
use super::engine::{NodeStatus, NodeView};
use crate::wire::NodeInfo;

/// How often a known server is asked how it is.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How long a server may not answer before it shows as lost.
pub const LOSS_TIMEOUT: Duration = Duration::from_secs(6);

/// How often a probe asks the LAN who is there (nodes also announce
/// themselves on their own).
pub const PROBE_INTERVAL: Duration = Duration::from_secs(15);

/// How long a server heard only by beacon stays in the table once lost.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Servers asked at once, at most.
const POLLS_IN_FLIGHT: usize = 64;

/// One server as the watch knows it.
#[derive(Debug, Clone)]
struct Known {
    /// The controller's own node.
    local: bool,
    /// Given by hand or the local node: never forgotten.
    pinned: bool,
    /// Its last answer.
    info: Option<NodeInfo>,
    /// When it last answered.
    answered_at: Option<Instant>,
    /// When it was first heard of (for servers that never answered).
    added_at: Instant,
    /// When it was last asked.
    polled_at: Option<Instant>,
    /// Its last failure to answer.
    error: Option<String>,
}

/// What is known of the servers, by API address. Pure: time is passed in.
#[derive(Debug, Clone, Default)]
pub struct ServerTable {
    servers: BTreeMap<String, Known>,
    in_flight: BTreeSet<String>,
}

impl ServerTable {
    /// Adds a server at `uri` (`http://HOST:PORT`); `pinned` ones (given by
    /// hand, the local node) stay even when lost. Returns whether it is new.
    pub fn add(&mut self, uri: &str, local: bool, pinned: bool, now: Instant) -> bool {
        let uri = uri.trim_end_matches('/').to_string();
        match self.servers.get_mut(&uri) {
            Some(known) => {
                known.local |= local;
                known.pinned |= pinned;
                false
            }
            None => {
                self.servers.insert(
                    uri,
                    Known {
                        local,
                        pinned,
                        info: None,
                        answered_at: None,
                        added_at: now,
                        polled_at: None,
                        error: None,
                    },
                );
                true
            }
        }
    }

    /// The servers to ask now: those never asked or asked
    /// [`POLL_INTERVAL`] ago, not already being asked. They count as asked.
    pub fn due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (uri, known) in &mut self.servers {
            if self.in_flight.len() >= POLLS_IN_FLIGHT {
                break;
            }
            let ready = known
                .polled_at
                .is_none_or(|at| now.saturating_duration_since(at) >= POLL_INTERVAL);
            if ready && !self.in_flight.contains(uri) {
                known.polled_at = Some(now);
                self.in_flight.insert(uri.clone());
                due.push(uri.clone());
            }
        }
        due
    }

    /// Takes in a server's answer (or why there was none).
    pub fn answered(&mut self, uri: &str, result: Result<NodeInfo, String>, now: Instant) {
        self.in_flight.remove(uri);
        let Some(known) = self.servers.get_mut(uri) else {
            return;
        };
        match result {
            Ok(info) => {
                known.info = Some(info);
                known.answered_at = Some(now);
                known.error = None;
            }
            Err(error) => known.error = Some(error),
        }
    }

    /// Drops servers heard only by beacon that have not answered for
    /// [`FORGET_AFTER`].
    pub fn forget_old(&mut self, now: Instant) {
        self.servers.retain(|_, known| {
            let last = known.answered_at.unwrap_or(known.added_at);
            known.pinned || now.saturating_duration_since(last) < FORGET_AFTER
        });
    }

    /// The addresses known, local node included.
    pub fn uris(&self) -> impl Iterator<Item = &str> {
        self.servers.keys().map(String::as_str)
    }

    /// The table's rows: one per server (a server heard at two addresses is
    /// shown once, at the one that answered last), the local node first,
    /// servers that never answered last.
    /// `left_out` holds the addresses the user unticked.
    pub fn views(&self, left_out: &BTreeSet<String>, now: Instant) -> Vec<NodeView> {
        let mut newest: BTreeMap<&str, (&String, &Known)> = BTreeMap::new();
        let mut unanswered = Vec::new();
        for (uri, known) in &self.servers {
            match &known.info {
                Some(info) => {
                    let keep = newest
                        .get(info.id.as_str())
                        .is_none_or(|(_, other)| other.answered_at < known.answered_at);
                    if keep {
                        newest.insert(info.id.as_str(), (uri, known));
                    }
                }
                None => unanswered.push((uri, known)),
            }
        }
        let mut rows: Vec<(&String, &Known)> = newest.into_values().collect();
        rows.extend(unanswered);
        rows.sort_by(|(a_uri, a), (b_uri, b)| {
            let answered = |known: &Known| known.info.is_some();
            b.local
                .cmp(&a.local)
                .then(answered(b).cmp(&answered(a)))
                .then_with(|| {
                    let a_name = a.info.as_ref().map_or(a_uri.as_str(), |i| i.name.as_str());
                    let b_name = b.info.as_ref().map_or(b_uri.as_str(), |i| i.name.as_str());
                    a_name.cmp(b_name)
                })
        });
        rows.into_iter()
            .enumerate()
            .map(|(index, (uri, known))| view(index, uri, known, left_out, now))
            .collect()
    }
}

/// One row of the table.
fn view(
    index: usize,
    uri: &str,
    known: &Known,
    left_out: &BTreeSet<String>,
    now: Instant,
) -> NodeView {
    let last_seen_secs = known
        .answered_at
        .map(|at| now.saturating_duration_since(at).as_secs_f64());
    let lost = last_seen_secs.is_none_or(|secs| secs > LOSS_TIMEOUT.as_secs_f64());
    let info = known.info.as_ref();
    NodeView {
        id: u32::try_from(index).unwrap_or(u32::MAX),
        uri: uri.to_string(),
        name: info.map_or_else(
            || uri.trim_start_matches("http://").to_string(),
            |i| i.name.clone(),
        ),
        status: match info {
            Some(info) if !lost => NodeStatus::from(info.state),
            _ => NodeStatus::Lost,
        },
        blender_version: info.map(|i| i.blender_version.clone()).unwrap_or_default(),
        cores: info.map_or(0, |i| i.cores),
        current: info
            .filter(|_| !lost)
            .and_then(|i| i.current.as_ref())
            .map(|current| (current.frame, current.progress)),
        frames_done: 0,
        secs_per_frame: None,
        prep_secs: None,
        local: known.local,
        enabled: !left_out.contains(uri),
        error: if lost { known.error.clone() } else { None },
        last_seen_secs,
    }
}

/// What the watch is told while it runs.
#[derive(Debug, Clone)]
pub enum WatchCommand {
    /// A server given by hand, or the local node once it is up.
    Add {
        /// `http://HOST:PORT`.
        uri: String,
        /// The controller's own node.
        local: bool,
    },
    /// The addresses the user left out of jobs.
    LeftOut(BTreeSet<String>),
}

/// How the watch finds servers.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Where beacons are heard and probes sent (the process's one
    /// discovery socket); `None`: only servers added.
    pub discovery: Option<discovery::Listener>,
    /// Shared secret of the nodes.
    pub token: Option<String>,
}

/// Watches the servers until `shutdown`, sending the table's rows to
/// `rows` whenever they change; returns what it knew, to start again with.
pub async fn run(
    config: WatchConfig,
    mut table: ServerTable,
    mut left_out: BTreeSet<String>,
    mut commands: mpsc::Receiver<WatchCommand>,
    rows: mpsc::Sender<Vec<NodeView>>,
    shutdown: CancellationToken,
) -> ServerTable {
    let mut beacons = config
        .discovery
        .as_ref()
        .map(discovery::Listener::subscribe);
    let client = reqwest::Client::new();
    let (answers_tx, mut answers) = mpsc::channel::<(String, Result<NodeInfo, String>)>(256);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe: Option<Instant> = None;
    let mut last_rows: Vec<NodeView> = Vec::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            beacon = discovery::next_beacon(beacons.as_mut()) => {
                table.add(&beacon.uri, false, false, Instant::now());
            }
            Some((uri, result)) = answers.recv() => table.answered(&uri, result, Instant::now()),
            command = commands.recv() => match command {
                Some(WatchCommand::Add { uri, local }) => {
                    table.add(&uri, local, true, Instant::now());
                }
                Some(WatchCommand::LeftOut(set)) => left_out = set,
                None => break,
            },
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        if let Some(listener) = &config.discovery
            && last_probe.is_none_or(|at| now.duration_since(at) >= PROBE_INTERVAL)
        {
            last_probe = Some(now);
            listener.probe();
        }
        for uri in table.due(now) {
            let client = client.clone();
            let token = config.token.clone();
            let answers = answers_tx.clone();
            tokio::spawn(async move {
                let result = discovery::confirm(&client, &uri, token.as_deref())
                    .await
                    .map_err(|err| err.to_string());
                let _ = answers.send((uri, result)).await;
            });
        }
        table.forget_old(now);
        // Whole seconds: the rows go out when something changed, at most
        // about once a second for the "last seen" column.
        let mut current = table.views(&left_out, now);
        for row in &mut current {
            row.last_seen_secs = row.last_seen_secs.map(f64::floor);
        }
        if current != last_rows {
            if rows.send(current.clone()).await.is_err() {
                break;
            }
            last_rows = current;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::NodeState;

    fn info(id: &str, name: &str, state: NodeState) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            name: name.into(),
            version: "0".into(),
            blender_version: "3.4.1".into(),
            blender_path: "/usr/bin/blender".into(),
            blender_pid: None,
            cores: 8,
            state,
            current: None,
            queued: 0,
            frames_rendered: 0,
            uptime_secs: 1.0,
            blob_bytes_received: 0,
            cache_bytes: None,
        }
    }

    #[test]
    fn servers_are_polled_then_shown_then_lost() {
        let start = Instant::now();
        let mut table = ServerTable::default();
        assert!(table.add("http://10.0.0.2:8082/", false, false, start));
        assert!(!table.add("http://10.0.0.2:8082", false, false, start));
        assert_eq!(table.due(start), vec!["http://10.0.0.2:8082".to_string()]);
        // Being asked: not asked again until it answers and time passes.
        assert!(table.due(start + POLL_INTERVAL).is_empty());
        let uri = "http://10.0.0.2:8082";
        table.answered(uri, Ok(info("a", "alpha", NodeState::Rendering)), start);
        let rows = table.views(&BTreeSet::new(), start);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].name, "alpha");
        assert_eq!(rows[0].status, NodeStatus::Rendering);
        assert!(rows[0].enabled);
        assert_eq!(table.due(start + POLL_INTERVAL), vec![uri.to_string()]);
        let later = start + LOSS_TIMEOUT + Duration::from_secs(1);
        table.answered(uri, Err("cannot reach it".into()), later);
        let rows = table.views(&BTreeSet::from([uri.to_string()]), later);
        assert_eq!(rows[0].status, NodeStatus::Lost);
        assert_eq!(rows[0].error.as_deref(), Some("cannot reach it"));
        assert!(!rows[0].enabled);
        assert!(rows[0].last_seen_secs.is_some_and(|secs| secs >= 7.0));
    }

    #[test]
    fn one_row_per_node_local_first_and_old_beacons_forgotten() {
        let now = Instant::now();
        let mut table = ServerTable::default();
        table.add("http://10.0.0.9:8082", false, false, now);
        table.add("http://192.168.0.9:8082", false, false, now);
        table.add("http://127.0.0.1:4000", true, true, now);
        table.add("http://10.0.0.3:8082", false, true, now);
        table.due(now);
        let later = now + Duration::from_secs(1);
        table.answered(
            "http://10.0.0.9:8082",
            Ok(info("z", "zed", NodeState::Idle)),
            now,
        );
        table.answered(
            "http://192.168.0.9:8082",
            Ok(info("z", "zed", NodeState::Idle)),
            later,
        );
        table.answered(
            "http://127.0.0.1:4000",
            Ok(info("l", "me", NodeState::Idle)),
            later,
        );
        let rows = table.views(&BTreeSet::new(), later);
        let names: Vec<_> = rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names, ["me", "zed", "10.0.0.3:8082"]);
        assert_eq!(rows[1].uri, "http://192.168.0.9:8082");
        assert_eq!(rows[2].status, NodeStatus::Lost);
        table.forget_old(now + FORGET_AFTER + Duration::from_secs(2));
        let left: Vec<_> = table.uris().collect();
        assert_eq!(left, ["http://10.0.0.3:8082", "http://127.0.0.1:4000"]);
    }
}
