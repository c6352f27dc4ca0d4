//! The engine against a scripted farm: nodes that answer, render, refuse
//! or vanish on cue behind [`Links`], with no network and no Blender. Like
//! the scheduler's simulated farm, these check what the engine does with
//! what its nodes say; the end-to-end tests check the real thing.

use std::collections::VecDeque;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::*;
use crate::controller::output::OutputPlan;

/// How a scripted node behaves once the engine connects to it.
#[derive(Debug, Clone)]
enum Behaviour {
    /// Takes the file and renders every frame it is given.
    Renders,
    /// Stops answering while it is sent the file, and for good.
    LostInUpload,
    /// Answers that it cannot take the job.
    Refuses(String),
    /// Renders this many frames, then stops answering for good.
    LostAfter(usize),
}

/// What the scripted farm saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// A node was given a frame (by number).
    Assigned(String, i32),
    /// The engine let a node go (its commands closed).
    Released(String),
    /// The engine began serving a node (sending it the files first).
    Served(String),
}

struct FakeNode {
    name: String,
    behaviour: Behaviour,
    render: Duration,
    reachable: bool,
    /// The bound of its file cache it says it has.
    cache_bytes: Option<u64>,
}

/// Scripted nodes by address.
#[derive(Default)]
struct FakeFarm {
    nodes: Mutex<BTreeMap<String, FakeNode>>,
    seen: Mutex<Vec<Seen>>,
}

impl FakeFarm {
    fn with(nodes: &[(&str, Behaviour, u64)]) -> Arc<Self> {
        let farm = Arc::new(Self::default());
        for (name, behaviour, render_ms) in nodes {
            farm.add(name, behaviour.clone(), *render_ms);
        }
        farm
    }

    fn add(&self, name: &str, behaviour: Behaviour, render_ms: u64) {
        self.nodes.lock().unwrap().insert(
            uri(name),
            FakeNode {
                name: name.to_string(),
                behaviour,
                render: Duration::from_millis(render_ms),
                reachable: true,
                cache_bytes: None,
            },
        );
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn assigned_to(&self, name: &str) -> Vec<i32> {
        self.seen()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Assigned(node, frame) if node == name => Some(frame),
                _ => None,
            })
            .collect()
    }

    fn note(&self, seen: Seen) {
        self.seen.lock().unwrap().push(seen);
    }

    fn limit_cache(&self, name: &str, bytes: u64) {
        if let Some(node) = self.nodes.lock().unwrap().get_mut(&uri(name)) {
            node.cache_bytes = Some(bytes);
        }
    }

    fn vanish(&self, uri: &str) {
        if let Some(node) = self.nodes.lock().unwrap().get_mut(uri) {
            node.reachable = false;
        }
    }

    /// Serves one node as its script says.
    async fn serve(self: Arc<Self>, mut link: NodeLink) {
        let (name, behaviour, render) = {
            let nodes = self.nodes.lock().unwrap();
            let node = &nodes[&link.uri];
            (node.name.clone(), node.behaviour.clone(), node.render)
        };
        self.note(Seen::Served(name.clone()));
        let report = |report| {
            let reports = link.reports.clone();
            let node = link.node;
            async move {
                let _ = reports.send(FromNode { node, report }).await;
            }
        };
        report(Report::Uploading).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        let lose_after = match behaviour {
            Behaviour::LostInUpload => {
                self.vanish(&link.uri);
                let reason = format!("{} stopped answering while being sent the file", link.uri);
                report(Report::Lost {
                    reason,
                    stale: Vec::new(),
                })
                .await;
                return;
            }
            Behaviour::Refuses(reason) => {
                report(Report::Refused(reason)).await;
                return;
            }
            Behaviour::Renders => usize::MAX,
            Behaviour::LostAfter(frames) => frames,
        };
        report(Report::Ready).await;
        let mut queue = VecDeque::new();
        let mut current: Option<(FrameIndex, tokio::time::Instant)> = None;
        let mut rendered = 0;
        loop {
            let until = current.map(|(_, until)| until);
            tokio::select! {
                command = link.commands.recv() => match command {
                    None => {
                        self.note(Seen::Released(name));
                        return;
                    }
                    Some(ToNode::Assign { frame, number }) => {
                        self.note(Seen::Assigned(name.clone(), number));
                        queue.push_back(frame);
                    }
                    Some(ToNode::Cancel { frame }) => {
                        queue.retain(|&queued| queued != frame);
                        if current.is_some_and(|(rendering, _)| rendering == frame) {
                            current = None;
                        }
                    }
                    Some(ToNode::Download { frame }) => report(Report::Done(frame)).await,
                },
                () = tokio::time::sleep_until(until.unwrap_or_else(tokio::time::Instant::now)), if until.is_some() => {
                    let (frame, _) = current.take().expect("a frame is rendering");
                    report(Report::Rendered(frame)).await;
                    rendered += 1;
                    if rendered >= lose_after {
                        self.vanish(&link.uri);
                        report(Report::Lost {
                            reason: format!("{} stopped answering", link.uri),
                            stale: Vec::new(),
                        })
                        .await;
                        return;
                    }
                }
            }
            if current.is_none()
                && let Some(frame) = queue.pop_front()
            {
                report(Report::Started(frame)).await;
                current = Some((frame, tokio::time::Instant::now() + render));
            }
        }
    }
}

impl Links for Arc<FakeFarm> {
    fn confirm(
        &self,
        _job: &JobContext,
        uri: String,
    ) -> BoxFuture<'static, Result<NodeInfo, String>> {
        let info = self.nodes.lock().unwrap().get(&uri).and_then(|node| {
            node.reachable.then(|| NodeInfo {
                id: format!("id-{}", node.name),
                name: node.name.clone(),
                version: "test".into(),
                blender_version: "4.2.0".into(),
                blender_path: "blender".into(),
                blender_pid: None,
                cores: 2,
                state: NodeState::Idle,
                current: None,
                queued: 0,
                frames_rendered: 0,
                uptime_secs: 1.0,
                blob_bytes_received: 0,
                cache_bytes: node.cache_bytes,
            })
        });
        Box::pin(async move { info.ok_or_else(|| format!("{uri}: connection refused")) })
    }

    fn serve(&self, _job: Arc<JobContext>, link: NodeLink) -> BoxFuture<'static, ()> {
        Box::pin(Arc::clone(self).serve(link))
    }
}

fn uri(name: &str) -> String {
    format!("http://{name}.test:8080")
}

/// A job over `frames` frames on the nodes named, reached through `farm`.
struct Run {
    handle: EngineHandle,
    logs: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Run {
    fn start(farm: &Arc<FakeFarm>, nodes: &[&str], frames: i32) -> Self {
        Self::start_with(farm, nodes, frames, |_| {})
    }

    fn start_with(
        farm: &Arc<FakeFarm>,
        nodes: &[&str],
        frames: i32,
        configure: impl FnOnce(&mut EngineConfig),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let blend = dir.path().join("scene.blend");
        std::fs::write(&blend, b"BLENDER-v300 not really a scene").unwrap();
        let spec = JobSpec {
            blend,
            files: Vec::new(),
            frames: (1..=frames).collect(),
            output: OutputPlan {
                dir: dir.path().join("frames"),
                name: "####".into(),
                format: "PNG".into(),
                use_extension: true,
                file_outputs: Vec::new(),
                movie: None,
                notes: Vec::new(),
            },
            baked: None,
            in_order: false,
            overrides: Overrides::default(),
            expected_size: None,
            overwrite: false,
            node_check: None,
        };
        let mut config = EngineConfig {
            nodes: nodes.iter().map(|name| uri(name)).collect(),
            ..EngineConfig::default()
        };
        configure(&mut config);
        let links: Arc<dyn Links> = Arc::new(Arc::clone(farm));
        Self {
            handle: start_with(spec, config, links, None),
            logs: Vec::new(),
            _dir: dir,
        }
    }

    fn command(&self, command: EngineCommand) {
        self.handle.commands.try_send(command).unwrap();
    }

    /// Reads events until one matches; panics after 10 s.
    async fn until(&mut self, mut wanted: impl FnMut(&EngineEvent) -> bool) -> EngineEvent {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, self.handle.events.recv())
                .await
                .expect("the awaited event came within 10 s")
                .expect("the engine is still running");
            if let EngineEvent::Log { message } = &event {
                self.logs.push(message.clone());
            }
            if wanted(&event) {
                return event;
            }
        }
    }

    /// Runs the job to its end.
    async fn summary(mut self) -> (JobSummary, Vec<String>) {
        let event = self
            .until(|event| matches!(event, EngineEvent::Finished(_)))
            .await;
        let EngineEvent::Finished(summary) = event else {
            unreachable!()
        };
        self.handle.task.await.unwrap().unwrap();
        (summary, self.logs)
    }

    fn node(&self, name: &str) -> NodeView {
        self.handle
            .progress
            .borrow()
            .nodes
            .iter()
            .find(|node| node.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("node {name} is in the job"))
    }
}

fn frames_of(summary: &JobSummary, name: &str) -> u32 {
    summary
        .nodes
        .iter()
        .find(|node| node.name == name)
        .map_or(0, |node| node.frames)
}

fn frame_done(event: &EngineEvent) -> bool {
    matches!(event, EngineEvent::Frame(view) if view.state == FrameState::Done)
}

#[tokio::test]
async fn every_frame_is_rendered_across_the_farm() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 5), ("b", Behaviour::Renders, 5)]);
    let (summary, _) = Run::start(&farm, &["a", "b"], 20).summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(summary.frames_done, 20);
    assert!(summary.failed.is_empty());
    assert!(frames_of(&summary, "a") > 0 && frames_of(&summary, "b") > 0);
    assert_eq!(frames_of(&summary, "a") + frames_of(&summary, "b"), 20);
    let mut assigned = farm.assigned_to("a");
    assigned.extend(farm.assigned_to("b"));
    assigned.sort_unstable();
    assigned.dedup();
    assert_eq!(
        assigned,
        (1..=20).collect::<Vec<_>>(),
        "every frame handed out"
    );
    // The job's end lets every node go.
    for name in ["a", "b"] {
        assert!(farm.seen().contains(&Seen::Released(name.into())));
    }
}

#[tokio::test]
async fn a_node_lost_while_being_sent_the_file_leaves_its_frames_to_the_others() {
    let farm = FakeFarm::with(&[
        ("a", Behaviour::LostInUpload, 5),
        ("b", Behaviour::Renders, 5),
    ]);
    let (summary, logs) = Run::start(&farm, &["a", "b"], 10).summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(frames_of(&summary, "b"), 10);
    assert!(
        farm.assigned_to("a").is_empty(),
        "a lost node is given nothing"
    );
    assert!(
        logs.iter()
            .any(|log| log.contains("node lost") && log.contains("while being sent the file")),
        "the loss is said: {logs:?}"
    );
}

#[tokio::test]
async fn a_node_refusing_the_file_is_left_out_and_says_why() {
    let farm = FakeFarm::with(&[
        (
            "a",
            Behaviour::Refuses("no space left for the file".into()),
            5,
        ),
        ("b", Behaviour::Renders, 5),
    ]);
    let mut run = Run::start(&farm, &["a", "b"], 10);
    run.until(frame_done).await;
    let a = run.node("a");
    assert_eq!(a.status, NodeStatus::Refused);
    assert_eq!(a.error.as_deref(), Some("no space left for the file"));
    let (summary, logs) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(frames_of(&summary, "b"), 10);
    assert!(farm.assigned_to("a").is_empty());
    assert!(
        logs.iter()
            .any(|log| log.contains("no space left for the file"))
    );
}

#[tokio::test]
async fn a_node_whose_cache_cannot_hold_the_file_is_left_out_before_any_upload() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 5), ("b", Behaviour::Renders, 5)]);
    // The job's .blend is 31 bytes.
    farm.limit_cache("a", 16);
    farm.limit_cache("b", 1 << 20);
    let mut run = Run::start(&farm, &["a", "b"], 4);
    run.until(frame_done).await;
    let a = run.node("a");
    assert_eq!(a.status, NodeStatus::Refused);
    let why = a.error.unwrap();
    assert!(
        why.contains("scene.blend") && why.contains("--cache-size"),
        "{why}"
    );
    let (summary, _) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(frames_of(&summary, "b"), 4);
    assert!(!farm.seen().contains(&Seen::Served("a".into())));
}

#[tokio::test]
async fn a_job_whose_only_node_refuses_stops_and_says_why() {
    let farm = FakeFarm::with(&[(
        "a",
        Behaviour::Refuses("Blender 4.2 cannot open a 5.0 file".into()),
        5,
    )]);
    let (summary, _) = Run::start(&farm, &["a"], 3).summary().await;
    let Outcome::Stuck { reason } = &summary.outcome else {
        panic!("the job is stuck, not {:?}", summary.outcome);
    };
    assert!(
        reason.contains("node a (http://a.test:8080): Blender 4.2 cannot open a 5.0 file"),
        "{reason}"
    );
    assert_eq!(summary.frames_done, 0);
}

#[tokio::test]
async fn a_node_lost_mid_job_gives_its_frames_to_the_others() {
    let farm = FakeFarm::with(&[
        ("a", Behaviour::LostAfter(2), 5),
        ("b", Behaviour::Renders, 20),
    ]);
    let mut run = Run::start(&farm, &["a", "b"], 12);
    run.until(|event| matches!(event, EngineEvent::Log { message } if message.contains("its frames go elsewhere")))
        .await;
    // The snapshot says so by its next publish.
    let snapshot = tokio::time::timeout(
        Duration::from_secs(5),
        run.handle.progress.wait_for(|progress| {
            progress
                .nodes
                .iter()
                .any(|node| node.name == "a" && node.status == NodeStatus::Lost)
        }),
    )
    .await
    .map(|seen| seen.is_ok());
    assert_eq!(snapshot, Ok(true), "the snapshot shows a lost");
    let (summary, _) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(summary.frames_done, 12);
    assert!(frames_of(&summary, "a") <= 2);
}

#[tokio::test]
async fn a_late_joiner_takes_frames() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 40)]);
    let mut run = Run::start(&farm, &["a"], 20);
    run.until(frame_done).await;
    farm.add("late", Behaviour::Renders, 5);
    run.command(EngineCommand::AddNode(uri("late")));
    let (summary, logs) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert!(
        logs.iter().any(|log| log.contains("node late joined")),
        "{logs:?}"
    );
    assert!(
        frames_of(&summary, "late") > frames_of(&summary, "a"),
        "the fast newcomer did most"
    );
}

#[tokio::test]
async fn pause_starts_no_frame_until_resumed() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 20)]);
    let mut run = Run::start(&farm, &["a"], 30);
    run.until(frame_done).await;
    run.command(EngineCommand::SetPaused(true));
    run.until(
        |event| matches!(event, EngineEvent::Log { message } if message.starts_with("job paused")),
    )
    .await;
    // What was handed out before the pause finishes; nothing new starts.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let before = farm.assigned_to("a").len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        farm.assigned_to("a").len(),
        before,
        "no frame handed out while paused"
    );
    assert!(run.handle.progress.borrow().progress.paused);
    assert!(before < 30);
    run.command(EngineCommand::SetPaused(false));
    let (summary, _) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert_eq!(summary.frames_done, 30);
}

#[tokio::test]
async fn cancel_ends_the_job_and_lets_the_nodes_go() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 5_000)]);
    let mut run = Run::start(&farm, &["a"], 5);
    run.until(
        |event| matches!(event, EngineEvent::Frame(view) if view.state == FrameState::Rendering),
    )
    .await;
    run.command(EngineCommand::Cancel);
    let (summary, _) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Cancelled);
    assert_eq!(summary.frames_done, 0);
    assert!(farm.seen().contains(&Seen::Released("a".into())));
}

#[tokio::test]
async fn a_node_left_out_is_sent_nothing_until_let_in() {
    let farm = FakeFarm::with(&[("a", Behaviour::Renders, 30), ("b", Behaviour::Renders, 5)]);
    let mut run = Run::start_with(&farm, &["a", "b"], 15, |config| {
        config.left_out.insert(uri("b"));
    });
    run.until(frame_done).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let b = run.node("b");
    assert!(!b.enabled);
    assert!(
        farm.assigned_to("b").is_empty(),
        "a node left out gets nothing"
    );
    run.command(EngineCommand::SetNodeEnabled {
        node: b.id,
        enabled: true,
    });
    let (summary, _) = run.summary().await;
    assert_eq!(summary.outcome, Outcome::Complete);
    assert!(frames_of(&summary, "b") > 0, "let in, it renders");
}
