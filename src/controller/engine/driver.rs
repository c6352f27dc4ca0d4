//! The job's driver loop: feeds the [`Scheduler`] with what the nodes,
//! discovery and the user say, and carries out its decisions.

use super::blobs::{hash_file, job_blobs};
use super::*;

mod views;

/// Where the engine's events and snapshots go.
pub(super) struct Emitter {
    pub(super) events: mpsc::Sender<EngineEvent>,
    pub(super) progress: watch::Sender<JobProgress>,
    pub(super) notify: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Emitter {
    async fn send(&self, event: EngineEvent) {
        let _ = self.events.send(event).await;
        self.wake();
    }

    /// Replaces the snapshot when it changed; never waits.
    fn snapshot(&self, progress: JobProgress) {
        let changed = self.progress.send_if_modified(|current| {
            if *current == progress {
                false
            } else {
                *current = progress;
                true
            }
        });
        if changed {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(notify) = &self.notify {
            notify();
        }
    }

    async fn log(&self, message: String) {
        self.send(EngineEvent::Log { message }).await;
    }
}

/// Where the engine's connection to a node stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkState {
    /// Known, but not sent the file yet (left out of the job).
    Waiting,
    /// Being sent the job's files.
    Uploading,
    /// Has the files and takes frames.
    Ready,
    /// Stopped answering; asked again now and then.
    Lost,
    /// Cannot render this job.
    Refused,
}

/// What the engine knows of a node in the job; its [`NodeView`] is
/// derived from this (see `views`), never decided on.
struct NodeEntry {
    uri: String,
    name: String,
    blender_version: String,
    cores: usize,
    local: bool,
    /// In the job (the user may leave it out).
    enabled: bool,
    link: LinkState,
    /// The node's own state and the frame it renders, as last reported.
    state: Option<NodeState>,
    current: Option<(i32, f32)>,
    /// Why it was lost or refused.
    error: Option<String>,
    sender: Option<mpsc::Sender<ToNode>>,
    stale: Vec<String>,
    task: Option<tokio::task::JoinHandle<()>>,
    paused: bool,
    /// Seconds its frames spent before their first sample.
    prep_secs: Vec<f64>,
}

struct Confirmed {
    uri: String,
    local: bool,
    result: Result<NodeInfo, String>,
}

struct Job {
    spec: JobSpec,
    config: EngineConfig,
    ctx: Arc<JobContext>,
    links: Arc<dyn Links>,
    emit: Emitter,
    scheduler: Scheduler,
    journal: JournalWriter,
    started: Instant,
    nodes: BTreeMap<NodeId, NodeEntry>,
    by_uuid: HashMap<String, NodeId>,
    confirming: BTreeSet<String>,
    refused_at: HashMap<String, Instant>,
    reports_tx: mpsc::Sender<FromNode>,
    confirm_tx: mpsc::Sender<Confirmed>,
    /// What the events last said of each frame: state, attempts, node.
    published: Vec<(FrameState, u32, Option<NodeId>)>,
    skipped: usize,
    rendered_now: usize,
    end: Option<Outcome>,
    last_retry: Instant,
    unusable: Vec<String>,
    /// Paused by the user.
    paused: bool,
    /// Nodes' notes already said.
    notes_told: HashSet<String>,
}

/// How often lost nodes are asked whether they are back.
const LOST_RETRY: Duration = Duration::from_secs(3);

pub(super) async fn run(
    mut spec: JobSpec,
    mut config: EngineConfig,
    links: Arc<dyn Links>,
    emit: Emitter,
    mut commands: mpsc::Receiver<EngineCommand>,
) -> Result<JobSummary, EngineError> {
    let started = Instant::now();
    if spec.in_order {
        config.scheduler.in_order = true;
        spec.overrides.step_frames = Some(true);
    }
    let output = spec.output.clone();
    let output_error = |source| EngineError::Output {
        path: output.dir.clone(),
        source,
    };
    std::fs::create_dir_all(&output.dir).map_err(output_error)?;
    output.remove_stale_temps();
    for note in &output.notes {
        emit.log(note.clone()).await;
    }
    if spec.in_order {
        emit.log(
            "the frames depend on the ones before them: they render in order on one node, stepped from the scene's start as Blender plays them"
                .into(),
        )
        .await;
    }
    let (blob, blob_bytes) = hash_file(spec.baked.as_ref().unwrap_or(&spec.blend)).await?;
    let (blobs, manifest) = job_blobs(&spec, &blob, blob_bytes).await?;
    let record = JobRecord {
        blob: blob.clone(),
        frames: format_frames(&spec.frames),
        overrides: spec.overrides.clone(),
    };
    let dir = output.dir.clone();
    let (journal, previous) = tokio::task::spawn_blocking(move || Journal::open(&dir, &record))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
        .map_err(output_error)?;
    if let Some(other) = &previous.other_job
        && !spec.overwrite
    {
        emit.log(format!(
            "{} held frames of another job (frames {}, overrides {:?}); valid frames there are kept, use --overwrite to render them again",
            output.dir.display(),
            other.frames,
            other.overrides
        ))
        .await;
    }
    let mut scheduler = Scheduler::new(&spec.frames, config.scheduler.clone());
    let mut skipped = 0;
    for (index, &frame) in spec.frames.iter().enumerate() {
        let keep = !spec.overwrite || previous.done.contains(&frame);
        if keep && output.has_valid(frame, spec.expected_size) {
            scheduler.mark_done(index);
            skipped += 1;
        }
    }
    emit.send(EngineEvent::Started {
        total: spec.frames.len(),
        skipped,
        output_dir: output.dir.clone(),
    })
    .await;

    let client = reqwest::Client::builder()
        .connect_timeout(config.loss_timeout)
        // Nodes close a connection idle for their header timeout; dropping
        // it first means no request is ever sent on one being closed.
        .pool_idle_timeout(crate::node::http::HEADER_READ_TIMEOUT / 2)
        .build()
        .map_err(|err| EngineError::Local(format!("cannot build the HTTP client: {err}")))?;
    let ctx = Arc::new(JobContext {
        blob,
        blobs,
        manifest,
        overrides: spec.overrides.clone(),
        output,
        expected_size: spec.expected_size,
        client,
        token: config.token.clone(),
        watch_wait: config.watch_wait,
        loss_timeout: config.loss_timeout,
        local_renders: config.local.as_ref().map(|local| local.renders()),
    });
    let (journal, mut journal_errors) = journal.spawn_writer();
    let (reports_tx, mut reports_rx) = mpsc::channel(1024);
    let (confirm_tx, mut confirm_rx) = mpsc::channel(64);
    let mut job = Job {
        // As if every frame were queued: the first publish then reports the
        // frames found done in the output folder.
        published: vec![(FrameState::Queued, 0, None); scheduler.frames().len()],
        spec,
        config,
        ctx,
        links,
        emit,
        scheduler,
        journal,
        started,
        nodes: BTreeMap::new(),
        by_uuid: HashMap::new(),
        confirming: BTreeSet::new(),
        refused_at: HashMap::new(),
        reports_tx,
        confirm_tx,
        skipped,
        rendered_now: 0,
        end: None,
        last_retry: Instant::now(),
        unusable: Vec::new(),
        paused: false,
        notes_told: HashSet::new(),
    };
    if job.scheduler.is_finished() {
        job.end = Some(Outcome::Complete);
        return Ok(job.finish(journal_errors).await);
    }

    if let Some(local) = job.config.local.clone() {
        job.confirm(local.uri().to_string(), true);
    }
    for uri in job.config.nodes.clone() {
        job.confirm(uri.trim_end_matches('/').to_string(), false);
    }
    let mut beacons = job.config.discovery.as_ref().map(|listener| {
        let beacons = listener.subscribe();
        listener.probe();
        beacons
    });

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while job.end.is_none() {
        tokio::select! {
            Some(report) = reports_rx.recv() => job.report(report).await,
            Some(confirmed) = confirm_rx.recv() => job.confirmed(confirmed).await,
            Some(error) = journal_errors.recv() => job.emit.log(error).await,
            beacon = discovery::next_beacon(beacons.as_mut()) => job.beacon(beacon),
            command = commands.recv() => match command {
                Some(command) => job.command(command).await,
                None => job.end = Some(Outcome::Cancelled),
            },
            _ = tick.tick() => {
                job.handle(Event::Tick).await;
                job.retry_lost();
                job.publish().await;
            }
        }
    }
    Ok(job.finish(journal_errors).await)
}

impl Job {
    fn now(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Confirms a node at `uri` in the background.
    fn confirm(&mut self, uri: String, local: bool) {
        let recently_refused = self
            .refused_at
            .get(&uri)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(10));
        if recently_refused || self.confirming.len() >= 64 || !self.confirming.insert(uri.clone()) {
            return;
        }
        let confirming = self.links.confirm(&self.ctx, uri.clone());
        let sender = self.confirm_tx.clone();
        tokio::spawn(async move {
            let result = confirming.await;
            let _ = sender.send(Confirmed { uri, local, result }).await;
        });
    }

    /// A node announced itself: confirms it if it is new or was lost.
    fn beacon(&mut self, beacon: Beacon) {
        let known = self
            .by_uuid
            .get(&beacon.id)
            .and_then(|id| self.nodes.get(id));
        let wanted = match known {
            None => true,
            Some(entry) => entry.link == LinkState::Lost,
        };
        if wanted {
            self.confirm(beacon.uri, false);
        }
    }

    async fn confirmed(&mut self, confirmed: Confirmed) {
        self.confirming.remove(&confirmed.uri);
        let info = match confirmed.result {
            Ok(info) => info,
            Err(error) => {
                self.refused_at
                    .insert(confirmed.uri.clone(), Instant::now());
                let known = self.nodes.values().any(|entry| entry.uri == confirmed.uri);
                if !known {
                    self.emit
                        .log(format!("node {} not added: {error}", confirmed.uri))
                        .await;
                    self.unusable.push(format!("{}: {error}", confirmed.uri));
                }
                self.check_nodes_left();
                return;
            }
        };
        if let Some(&id) = self.by_uuid.get(&info.id) {
            let lost = self
                .nodes
                .get(&id)
                .is_some_and(|entry| entry.link == LinkState::Lost);
            if lost {
                self.emit
                    .log(format!("node {} is back at {}", info.name, confirmed.uri))
                    .await;
                self.connect(id, confirmed.uri).await;
            }
            return;
        }
        let id = NodeId::try_from(self.nodes.len()).unwrap_or(NodeId::MAX);
        let refusal = self
            .spec
            .node_check
            .as_ref()
            .and_then(|check| check(&info).err())
            .or_else(|| {
                info.cache_bytes
                    .and_then(|bytes| self.ctx.too_big_for(bytes))
            });
        let enabled = !self.config.left_out.contains(&confirmed.uri);
        self.by_uuid.insert(info.id.clone(), id);
        self.nodes.insert(
            id,
            NodeEntry {
                uri: confirmed.uri.clone(),
                name: info.name.clone(),
                blender_version: info.blender_version.clone(),
                cores: info.cores,
                local: confirmed.local,
                enabled,
                link: if refusal.is_some() {
                    LinkState::Refused
                } else {
                    LinkState::Waiting
                },
                state: None,
                current: None,
                error: refusal.clone(),
                sender: None,
                stale: Vec::new(),
                task: None,
                paused: false,
                prep_secs: Vec::new(),
            },
        );
        self.publish_progress();
        match refusal {
            Some(reason) => {
                self.emit
                    .log(format!(
                        "node {} cannot render this job: {reason}",
                        info.name
                    ))
                    .await;
                self.check_nodes_left();
            }
            None if !enabled => {
                self.emit
                    .log(format!(
                        "node {} at {} is left out of this job",
                        info.name, confirmed.uri
                    ))
                    .await;
            }
            None => {
                self.emit
                    .log(format!("node {} joined at {}", info.name, confirmed.uri))
                    .await;
                self.connect(id, confirmed.uri).await;
            }
        }
    }

    /// Asks lost nodes again now and then (a cable plugged back in, a node
    /// restarted): beacons bring them back too, but nodes given by hand and
    /// networks that drop broadcasts have only this.
    fn retry_lost(&mut self) {
        if self.last_retry.elapsed() < LOST_RETRY {
            return;
        }
        self.last_retry = Instant::now();
        let lost: Vec<String> = self
            .nodes
            .values()
            .filter(|entry| entry.link == LinkState::Lost)
            .map(|entry| entry.uri.clone())
            .collect();
        for uri in lost {
            self.confirm(uri, false);
        }
    }

    /// Without discovery, a job whose every given node is unusable (not
    /// reachable, not herd, refused the file) cannot start: say so once
    /// instead of waiting for ever.
    fn check_nodes_left(&mut self) {
        let waiting = !self.confirming.is_empty() || self.config.discovery.is_some();
        let usable = self
            .nodes
            .values()
            .any(|entry| entry.link != LinkState::Refused);
        if !waiting && !usable && self.end.is_none() {
            let mut reasons = self.unusable.clone();
            reasons.extend(self.nodes.values().filter_map(|entry| {
                let error = entry.error.as_ref()?;
                Some(format!("node {} ({}): {error}", entry.name, entry.uri))
            }));
            self.end = Some(Outcome::Stuck {
                reason: format!("no node can render this job: {}", reasons.join("; ")),
            });
        }
    }

    /// Starts the task that serves node `id` at `uri`.
    async fn connect(&mut self, id: NodeId, uri: String) {
        let Some(entry) = self.nodes.get_mut(&id) else {
            return;
        };
        let (sender, receiver) = mpsc::channel(64);
        let stale = std::mem::take(&mut entry.stale);
        entry.uri = uri.clone();
        entry.link = LinkState::Uploading;
        entry.state = None;
        entry.current = None;
        entry.error = None;
        entry.sender = Some(sender);
        let link = NodeLink {
            node: id,
            uri,
            stale,
            commands: receiver,
            reports: self.reports_tx.clone(),
        };
        entry.task = Some(tokio::spawn(self.links.serve(Arc::clone(&self.ctx), link)));
        self.handle(Event::NodeJoined { node: id }).await;
    }

    async fn report(&mut self, from: FromNode) {
        let node = from.node;
        let event = match from.report {
            Report::Uploading => {
                self.set_link(node, LinkState::Uploading);
                None
            }
            Report::Ready => {
                self.set_link(node, LinkState::Ready);
                Some(Event::NodeReady { node })
            }
            Report::Activity(state, current) => self.activity(node, state, current),
            Report::Prepared(secs) => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.prep_secs.push(secs);
                }
                None
            }
            Report::Note(note) => {
                // Said once per node: the same note comes with every frame.
                let message = format!("{}: {note}", self.node_name(node));
                if self.notes_told.insert(message.clone()) {
                    self.emit.log(message).await;
                }
                None
            }
            Report::MissingFiles(files) => {
                let name = self.node_name(node);
                self.emit
                    .log(format!(
                        "node {name} renders without files it does not have: {}",
                        files.join("; ")
                    ))
                    .await;
                None
            }
            Report::Refused(reason) => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.sender = None;
                    entry.link = LinkState::Refused;
                    entry.error = Some(reason.clone());
                }
                self.emit
                    .log(format!("node left out of this job: {reason}"))
                    .await;
                self.check_nodes_left();
                Some(Event::NodeLost { node })
            }
            Report::Lost { reason, stale } => {
                if let Some(entry) = self.nodes.get_mut(&node) {
                    entry.sender = None;
                    entry.stale = stale;
                    entry.link = LinkState::Lost;
                    entry.current = None;
                    entry.error = Some(reason.clone());
                }
                self.emit
                    .log(format!("node lost, its frames go elsewhere: {reason}"))
                    .await;
                Some(Event::NodeLost { node })
            }
            Report::Started(frame) => Some(Event::Started { node, frame }),
            Report::Progress(frame, progress) => Some(Event::Progress {
                node,
                frame,
                progress,
            }),
            Report::Rendered(frame) => Some(Event::Rendered { node, frame }),
            Report::Done(frame) => {
                self.rendered_now += 1;
                Some(Event::Done { node, frame })
            }
            Report::Failed(frame, error) => {
                let number = self.spec.frames.get(frame).copied().unwrap_or_default();
                let name = self.node_name(node);
                self.emit
                    .log(format!("frame {number} failed on {name}: {error}"))
                    .await;
                Some(Event::Failed { node, frame, error })
            }
        };
        if let Some(event) = event {
            let done = match &event {
                Event::Done { frame, .. } => Some(*frame),
                _ => None,
            };
            self.handle(event).await;
            if let Some(frame) = done {
                self.record_done(node, frame).await;
            }
        }
    }

    async fn record_done(&mut self, node: NodeId, frame: FrameIndex) {
        let Some(entry) = self.scheduler.frames().get(frame) else {
            return;
        };
        // Only the run that won counts (a late duplicate changes nothing).
        if entry.state != FrameState::Done || entry.node != Some(node) {
            return;
        }
        let (number, secs) = (entry.number, entry.render_secs);
        let name = self.node_name(node);
        self.journal
            .frame_done(FrameRecord {
                frame: number,
                node: name,
                secs,
            })
            .await;
    }

    fn activity(
        &mut self,
        node: NodeId,
        state: NodeState,
        current: Option<(i32, f32)>,
    ) -> Option<Event> {
        let entry = self.nodes.get_mut(&node)?;
        entry.current = current;
        entry.state = Some(state);
        let paused = state == NodeState::Paused;
        if paused != entry.paused {
            entry.paused = paused;
            return Some(Event::NodePaused { node, paused });
        }
        None
    }

    fn set_link(&mut self, node: NodeId, link: LinkState) {
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.link = link;
        }
    }

    fn node_name(&self, node: NodeId) -> String {
        self.nodes
            .get(&node)
            .map_or_else(|| format!("node {node}"), |entry| entry.name.clone())
    }

    async fn command(&mut self, command: EngineCommand) {
        match command {
            EngineCommand::Cancel => self.end = Some(Outcome::Cancelled),
            EngineCommand::AddNode(uri) => {
                self.confirm(uri.trim_end_matches('/').to_string(), false)
            }
            EngineCommand::SetPaused(paused) => {
                if paused != self.paused {
                    self.paused = paused;
                    self.emit
                        .log(if paused {
                            "job paused: frames being rendered finish, no new ones start".into()
                        } else {
                            "job resumed".to_string()
                        })
                        .await;
                    self.handle(Event::JobPaused { paused }).await;
                }
            }
            EngineCommand::SetNodeEnabled { node, enabled } => {
                let Some(entry) = self.nodes.get_mut(&node) else {
                    return;
                };
                entry.enabled = enabled;
                // A node left out from the start was never sent the file.
                if enabled && entry.link == LinkState::Waiting {
                    let uri = entry.uri.clone();
                    self.connect(node, uri).await;
                }
                self.handle(Event::NodeEnabled { node, enabled }).await;
            }
        }
    }

    /// Feeds the scheduler and carries out what it decides.
    async fn handle(&mut self, event: Event) {
        let mut pending = vec![event];
        while let Some(event) = pending.pop() {
            let now = self.now();
            for decision in self.scheduler.handle(event, now) {
                match decision {
                    Decision::Assign { node, frame } => {
                        let number = self.spec.frames[frame];
                        if !self.send(node, ToNode::Assign { frame, number }).await {
                            pending.push(Event::NodeLost { node });
                        }
                    }
                    Decision::Cancel { node, frame } => {
                        self.send(node, ToNode::Cancel { frame }).await;
                    }
                    Decision::Download { node, frame } => {
                        if !self.send(node, ToNode::Download { frame }).await {
                            pending.push(Event::NodeLost { node });
                        }
                    }
                    Decision::Finished => {
                        self.end = Some(if self.scheduler.failed_count() == 0 {
                            Outcome::Complete
                        } else {
                            Outcome::Incomplete
                        });
                    }
                    Decision::Stuck { reason } => self.end = Some(Outcome::Stuck { reason }),
                }
            }
        }
    }

    async fn send(&mut self, node: NodeId, message: ToNode) -> bool {
        let Some(sender) = self.nodes.get(&node).and_then(|entry| entry.sender.clone()) else {
            return false;
        };
        if sender.send(message).await.is_ok() {
            return true;
        }
        if let Some(entry) = self.nodes.get_mut(&node) {
            entry.sender = None;
            entry.link = LinkState::Lost;
        }
        false
    }

    /// Ends the job: cancels what nodes still hold, waits for the journal
    /// to be on disk (telling what could not be written) and sums up.
    async fn finish(mut self, mut journal_errors: mpsc::Receiver<String>) -> JobSummary {
        self.publish().await;
        self.journal.close().await;
        while let Ok(error) = journal_errors.try_recv() {
            self.emit.log(error).await;
        }
        if self.end == Some(Outcome::Complete) {
            let dir = self.ctx.output.dir.clone();
            let marked = tokio::task::spawn_blocking(move || {
                crate::controller::journal::mark_complete(&dir)
            })
            .await
            .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())));
            if let Err(err) = marked {
                self.emit
                    .log(format!("cannot record the job's end in its journal: {err}"))
                    .await;
            }
        }
        let mut tasks = Vec::new();
        for entry in self.nodes.values_mut() {
            // Dropping the sender makes the task cancel its renders and end.
            entry.sender = None;
            tasks.extend(entry.task.take());
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        let slots = self.scheduler.nodes();
        let nodes = self
            .nodes
            .iter()
            .filter_map(|(id, entry)| {
                let slot = slots.get(id)?;
                Some(NodeSummary {
                    name: entry.name.clone(),
                    uri: entry.uri.clone(),
                    frames: slot.done,
                    mean_secs: slot.secs_per_frame(),
                    prep_secs: median(&entry.prep_secs),
                    failures: slot.failures,
                })
            })
            .collect();
        let frames = self.scheduler.frames();
        let failed = frames
            .iter()
            .filter(|frame| frame.state != FrameState::Done)
            .map(|frame| {
                let error = frame
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "not rendered".into());
                (frame.number, error)
            })
            .collect();
        let renders: u32 = frames.iter().map(|frame| frame.attempts).sum();
        let summary = JobSummary {
            outcome: self.end.clone().unwrap_or(Outcome::Cancelled),
            frames_total: frames.len(),
            frames_done: self.scheduler.done_count(),
            frames_skipped: self.skipped,
            failed,
            nodes,
            retries: renders.saturating_sub(u32::try_from(self.rendered_now).unwrap_or(u32::MAX)),
            wall_secs: self.now(),
            output_dir: self.ctx.output.dir.clone(),
        };
        self.emit.send(EngineEvent::Finished(summary.clone())).await;
        summary
    }
}

/// The median of `values`, none when empty.
pub(super) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}
