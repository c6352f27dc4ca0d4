//! The controller window's picture of a job, built only from
//! [`EngineEvent`]s and [`JobProgress`] snapshots:
//! [`ControllerState::apply`] and [`ControllerState::apply_progress`] are
//! pure, so what the window shows can be tested without a network, a
//! Blender or a screen.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;

use crate::controller::engine::{
    EngineEvent, FrameView, JobProgress, JobSummary, NodeView, ProgressView,
};
use crate::controller::scheduler::{FrameIndex, FrameState, NodeId};

use super::palette;

/// Log lines kept; older ones are dropped.
pub const LOG_LINES: usize = 1000;

/// What the window knows of the current (or last) job.
#[derive(Debug, Clone, Default)]
pub struct ControllerState {
    /// Nodes by the engine's id; the local node is one of them.
    pub nodes: BTreeMap<NodeId, NodeView>,
    /// The servers on the LAN as seen between jobs, in the table's order.
    pub servers: Vec<NodeView>,
    /// One entry per frame of the job, by index in the job.
    pub frames: Vec<FrameView>,
    /// Overall progress, once the engine sent it.
    pub progress: Option<ProgressView>,
    /// The output folder, once the job started.
    pub output_dir: Option<PathBuf>,
    /// Frames that were in the output folder already.
    pub skipped: usize,
    /// The engine's messages, oldest first, at most [`LOG_LINES`].
    pub log: VecDeque<String>,
    /// How the job ended, once it did.
    pub summary: Option<JobSummary>,
    /// Whether a job is under way: from its start until it is over, with
    /// the steps after its frames (a movie to encode). The one flag of it.
    pub running: bool,
}

impl ControllerState {
    /// Forgets the last job and shows `frames` (in render order) as queued,
    /// so the grid is whole before the engine reports on any frame.
    pub fn begin_job(&mut self, frames: &[i32]) {
        let log = std::mem::take(&mut self.log);
        *self = Self {
            frames: frames
                .iter()
                .enumerate()
                .map(|(index, &frame)| queued(index, frame))
                .collect(),
            log,
            running: true,
            ..Self::default()
        };
    }

    /// The job is over (its frames, and the steps after them).
    pub fn end_job(&mut self) {
        self.running = false;
    }

    /// Takes in one event from the engine.
    pub fn apply(&mut self, event: EngineEvent) {
        match event {
            EngineEvent::Started {
                total,
                skipped,
                output_dir,
            } => {
                self.running = true;
                self.skipped = skipped;
                self.output_dir = Some(output_dir);
                if self.frames.len() < total {
                    let start = self.frames.len();
                    self.frames
                        .extend((start..total).map(|index| queued(index, 0)));
                }
                self.push_log(format!("job started: {total} frames"));
            }
            EngineEvent::Node(view) => {
                self.nodes.insert(view.id, view);
            }
            EngineEvent::Frame(view) => {
                let index = view.index;
                if index >= self.frames.len() {
                    let start = self.frames.len();
                    self.frames
                        .extend((start..=index).map(|index| queued(index, 0)));
                }
                if let Some(slot) = self.frames.get_mut(index) {
                    *slot = view;
                }
            }
            EngineEvent::Progress(progress) => self.progress = Some(progress),
            EngineEvent::Log { message } => self.push_log(message),
            EngineEvent::Finished(summary) => {
                self.push_log(format!(
                    "job ended: {} of {} frames done",
                    summary.frames_done, summary.frames_total
                ));
                self.summary = Some(summary);
            }
        }
    }

    /// Takes in the engine's latest snapshot: overall progress, the nodes,
    /// and how far the frames being rendered are.
    pub fn apply_progress(&mut self, snapshot: &JobProgress) {
        for event in snapshot.events(None) {
            self.apply(event);
        }
        for &(index, progress) in &snapshot.rendering {
            if let Some(frame) = self
                .frames
                .get_mut(index)
                .filter(|frame| frame.state == FrameState::Rendering)
            {
                frame.progress = progress;
            }
        }
    }

    /// Adds a line to the log, dropping the oldest past [`LOG_LINES`].
    pub fn push_log(&mut self, message: String) {
        if self.log.len() >= LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(message);
    }

    /// The servers table's rows: the job's nodes while it runs (and after,
    /// until the servers are heard again), else the servers on the LAN.
    pub fn table_rows(&self) -> Vec<&NodeView> {
        if self.running || self.servers.is_empty() {
            self.nodes_sorted()
        } else {
            self.servers.iter().collect()
        }
    }

    /// The job's nodes in the table's order: the local node first, then by
    /// name.
    pub fn nodes_sorted(&self) -> Vec<&NodeView> {
        let mut nodes: Vec<&NodeView> = self.nodes.values().collect();
        nodes.sort_by(|a, b| b.local.cmp(&a.local).then_with(|| a.name.cmp(&b.name)));
        nodes
    }

    /// How many frames are in each state, in [`palette::FRAME_STATES`] order.
    pub fn frame_counts(&self) -> [usize; palette::FRAME_STATES.len()] {
        let mut counts = [0; palette::FRAME_STATES.len()];
        for frame in &self.frames {
            if let Some(slot) = palette::FRAME_STATES
                .iter()
                .position(|state| *state == frame.state)
            {
                counts[slot] += 1;
            }
        }
        counts
    }

    /// The text a frame cell shows on hover: number, state, node, attempts,
    /// seconds and error.
    pub fn frame_tooltip(&self, index: FrameIndex) -> Option<String> {
        let frame = self.frames.get(index)?;
        let mut text = format!(
            "Frame {}: {}",
            frame.frame,
            palette::frame_label(frame.state)
        );
        if frame.state == FrameState::Rendering {
            let _ = write!(text, " {:.0}%", frame.progress * 100.0);
        }
        if let Some(node) = &frame.node {
            let _ = write!(text, "\nnode: {node}");
        }
        if frame.attempts > 0 {
            let _ = write!(text, "\nattempts: {}", frame.attempts);
        }
        if let Some(secs) = frame.secs {
            let _ = write!(text, "\ntime: {secs:.1} s");
        }
        if let Some(error) = &frame.error {
            let _ = write!(text, "\nerror: {error}");
        }
        Some(text)
    }
}

/// A frame nobody reported on yet.
fn queued(index: FrameIndex, frame: i32) -> FrameView {
    FrameView {
        index,
        frame,
        state: FrameState::Queued,
        attempts: 0,
        node: None,
        progress: 0.0,
        secs: None,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::engine::{NodeStatus, Outcome};

    fn node(id: NodeId, name: &str, local: bool) -> NodeView {
        NodeView {
            id,
            uri: format!("http://127.0.0.1:{}", 9000 + id),
            name: name.into(),
            status: NodeStatus::Idle,
            blender_version: "3.4.1".into(),
            cores: 4,
            current: None,
            frames_done: 0,
            secs_per_frame: None,
            prep_secs: None,
            local,
            enabled: true,
            error: None,
            last_seen_secs: None,
        }
    }

    fn frame(index: FrameIndex, number: i32, state: FrameState) -> FrameView {
        FrameView {
            state,
            ..queued(index, number)
        }
    }

    #[test]
    fn begin_job_shows_every_frame_queued_and_keeps_the_log() {
        let mut state = ControllerState::default();
        state.push_log("earlier".into());
        state.begin_job(&[1, 2, 5]);
        assert_eq!(state.frames.len(), 3);
        assert_eq!(state.frames[2].frame, 5);
        assert!(state.frames.iter().all(|f| f.state == FrameState::Queued));
        assert!(state.running);
        assert_eq!(state.log.len(), 1);
    }

    #[test]
    fn events_update_nodes_frames_progress_and_log() {
        let mut state = ControllerState::default();
        state.begin_job(&[1, 2, 3]);
        state.apply(EngineEvent::Started {
            total: 3,
            skipped: 0,
            output_dir: "/tmp/out".into(),
        });
        state.apply(EngineEvent::Node(node(1, "beta", false)));
        state.apply(EngineEvent::Node(node(0, "alpha (local)", true)));
        let mut renamed = node(1, "beta", false);
        renamed.status = NodeStatus::Rendering;
        renamed.current = Some((2, 0.5));
        state.apply(EngineEvent::Node(renamed));
        state.apply(EngineEvent::Frame(frame(0, 1, FrameState::Done)));
        state.apply(EngineEvent::Frame(FrameView {
            progress: 0.5,
            node: Some("beta".into()),
            ..frame(1, 2, FrameState::Rendering)
        }));
        state.apply(EngineEvent::Log {
            message: "hello".into(),
        });
        state.apply(EngineEvent::Progress(ProgressView {
            done: 1,
            failed: 0,
            total: 3,
            elapsed_secs: 2.0,
            eta_secs: Some(4.0),
            frames_per_minute: 30.0,
            paused: false,
        }));

        let names: Vec<&str> = state
            .nodes_sorted()
            .iter()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["alpha (local)", "beta"]);
        assert_eq!(state.nodes[&1].status, NodeStatus::Rendering);
        assert_eq!(state.frame_counts(), [1, 0, 1, 0, 1, 0]);
        assert_eq!(state.progress.as_ref().map(|p| p.done), Some(1));
        assert_eq!(state.output_dir, Some(PathBuf::from("/tmp/out")));
        assert_eq!(state.log.back().map(String::as_str), Some("hello"));
    }

    #[test]
    fn a_snapshot_sets_progress_nodes_and_the_rendering_frames_only() {
        let mut state = ControllerState::default();
        state.begin_job(&[1, 2, 3]);
        state.apply(EngineEvent::Frame(frame(0, 1, FrameState::Rendering)));
        state.apply(EngineEvent::Frame(frame(1, 2, FrameState::Done)));
        let mut busy = node(0, "alpha (local)", true);
        busy.current = Some((1, 0.25));
        let snapshot = JobProgress {
            progress: ProgressView {
                done: 1,
                total: 3,
                ..ProgressView::default()
            },
            nodes: vec![busy.clone()],
            // Frame 2 was rendering when the snapshot was taken; its Done
            // event came first: it stays done.
            rendering: vec![(0, 0.25), (1, 0.9)],
        };
        state.apply_progress(&snapshot);
        assert_eq!(state.progress.as_ref().map(|p| p.done), Some(1));
        assert_eq!(state.nodes.get(&0), Some(&busy));
        assert!((state.frames[0].progress - 0.25).abs() < 1e-6);
        assert_eq!(state.frames[1].state, FrameState::Done);
        assert!(state.frames[1].progress.abs() < 1e-6);
    }

    #[test]
    fn a_frame_beyond_the_known_ones_grows_the_grid() {
        let mut state = ControllerState::default();
        state.apply(EngineEvent::Frame(frame(4, 9, FrameState::Failed)));
        assert_eq!(state.frames.len(), 5);
        assert_eq!(state.frames[4].state, FrameState::Failed);
    }

    #[test]
    fn the_tooltip_of_a_failed_frame_says_node_attempts_and_error() {
        let mut state = ControllerState::default();
        state.begin_job(&[7]);
        state.apply(EngineEvent::Frame(FrameView {
            attempts: 3,
            node: Some("gamma".into()),
            secs: Some(1.25),
            error: Some("Blender crashed".into()),
            ..frame(0, 7, FrameState::Failed)
        }));
        let text = state.frame_tooltip(0).unwrap_or_default();
        assert!(text.starts_with("Frame 7: failed"), "{text}");
        assert!(text.contains("node: gamma"), "{text}");
        assert!(text.contains("attempts: 3"), "{text}");
        assert!(text.contains("1.2 s") || text.contains("1.3 s"), "{text}");
        assert!(text.contains("error: Blender crashed"), "{text}");
        assert_eq!(state.frame_tooltip(1), None);
    }

    #[test]
    fn finished_ends_the_job_and_the_log_stays_bounded() {
        let mut state = ControllerState::default();
        state.begin_job(&[1]);
        for line in 0..LOG_LINES + 10 {
            state.push_log(line.to_string());
        }
        assert_eq!(state.log.len(), LOG_LINES);
        state.apply(EngineEvent::Finished(JobSummary {
            outcome: Outcome::Complete,
            frames_total: 1,
            frames_done: 1,
            frames_skipped: 0,
            failed: Vec::new(),
            nodes: Vec::new(),
            retries: 0,
            wall_secs: 1.0,
            output_dir: "/tmp/out".into(),
        }));
        assert!(state.summary.is_some());
        // The frames are done; the job is over once its last step is.
        assert!(state.running);
        state.end_job();
        assert!(!state.running);
        assert_eq!(state.log.len(), LOG_LINES);
    }
}
