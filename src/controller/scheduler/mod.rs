//! The scheduling core: a pure state machine with no I/O, no clock and no
//! async. It takes [`Event`]s (a node joined, a frame started, rendered,
//! failed, a node was lost, the clock moved) stamped with the time in
//! seconds since the job began, and returns [`Decision`]s (assign frame F to
//! node N, cancel, download) for the driver to carry out.
//!
//! The rules:
//! - Pull-based: a node gets the next queued frame the moment it has room;
//!   each node holds one frame rendering and `queue_ahead` waiting on it, so
//!   Blender never waits for the network. Fast nodes naturally take more.
//! - A lost node's frames go back to the front of the queue at once.
//! - A failed frame is retried, on another node when there is one, up to
//!   `max_attempts`; a node that fails `blocklist_after` frames of this job
//!   takes no more of them. When every node is blocklisted the job is stuck
//!   and says why, once.
//! - At the end of the job an idle node takes back a frame still waiting on
//!   a busy node, or renders a straggler (running longer than
//!   `straggler_factor` × the median frame time) a second time; the first good
//!   result wins and the other run is cancelled, so no frame is written twice.
//! - A job whose frames depend on the ones before (an unbaked simulation
//!   herd cannot bake) runs `in_order`: all its frames go, in order, to one
//!   node (the one it began on while it is there), and nothing is rendered
//!   twice at the end.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

mod messages;

pub use messages::{Decision, Event};

/// A node, as numbered by the driver.
pub type NodeId = u32;

/// Index of a frame in the job's frame list.
pub type FrameIndex = usize;

/// Tunables of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Renders of one frame allowed before it counts as failed (`--retries`).
    pub max_attempts: u32,
    /// Frames kept waiting on a node behind the one it renders.
    pub queue_ahead: usize,
    /// Failed frames after which a node takes no more of this job.
    pub blocklist_after: u32,
    /// A frame running longer than this × the median frame time is a
    /// straggler, rendered again on an idle node at the end of the job.
    pub straggler_factor: f64,
    /// Every frame, in order, on one node (frames that depend on the ones
    /// before them).
    pub in_order: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            queue_ahead: 1,
            blocklist_after: 3,
            straggler_factor: 2.0,
            in_order: false,
        }
    }
}

/// Where a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameState {
    /// Waiting for a node.
    Queued,
    /// Sent to a node, waiting in its queue.
    Assigned,
    /// A node is rendering it.
    Rendering,
    /// Rendered; the image is being fetched and checked.
    Downloading,
    /// In the output folder.
    Done,
    /// Failed on every attempt.
    Failed,
}

impl FrameState {
    /// Whether the frame has ended, one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Assigned,
    Rendering,
    Downloading,
}

/// One node's work on one frame.
#[derive(Debug, Clone)]
struct Run {
    node: NodeId,
    phase: Phase,
    started_at: Option<f64>,
}

/// A frame of the job.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Frame number in the scene.
    pub number: i32,
    /// Where it is.
    pub state: FrameState,
    /// Times it was handed to a node (duplicates included).
    pub attempts: u32,
    /// Times it failed.
    pub failures: u32,
    /// Progress of its leading run, 0 to 1.
    pub progress: f32,
    /// The node rendering it, or the one that rendered it.
    pub node: Option<NodeId>,
    /// Seconds from start to finish on the node that rendered it.
    pub render_secs: Option<f64>,
    /// The last error it failed with.
    pub last_error: Option<String>,
    failed_on: Vec<NodeId>,
    runs: Vec<Run>,
}

impl Frame {
    fn run_mut(&mut self, node: NodeId) -> Option<&mut Run> {
        self.runs.iter_mut().find(|run| run.node == node)
    }

    fn remove_run(&mut self, node: NodeId) -> bool {
        let before = self.runs.len();
        self.runs.retain(|run| run.node != node);
        self.runs.len() != before
    }
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct NodeSlot {
    /// Joined and not lost.
    pub online: bool,
    /// Has the job's files.
    pub ready: bool,
    /// Paused by its owner.
    pub paused: bool,
    /// Left in the job by the user.
    pub enabled: bool,
    /// Failed too many frames of this job.
    pub blocklisted: bool,
    /// Frames of this job it failed.
    pub failures: u32,
    /// Frames of this job it rendered.
    pub done: u32,
    total_secs: f64,
    /// Frames it holds, in the order it got them.
    runs: Vec<FrameIndex>,
}

impl NodeSlot {
    fn eligible(&self) -> bool {
        self.online && self.ready && !self.paused && self.enabled && !self.blocklisted
    }

    /// Measured seconds per frame in this job.
    pub fn secs_per_frame(&self) -> Option<f64> {
        (self.done > 0).then(|| self.total_secs / f64::from(self.done))
    }

    /// Frames it holds (rendering or waiting on it).
    pub fn held(&self) -> &[FrameIndex] {
        &self.runs
    }
}

/// The job's frames and nodes, and the rules between them.
#[derive(Debug, Clone)]
pub struct Scheduler {
    config: SchedulerConfig,
    frames: Vec<Frame>,
    queue: VecDeque<FrameIndex>,
    nodes: BTreeMap<NodeId, NodeSlot>,
    durations: Vec<f64>,
    final_frames: usize,
    ended: bool,
    paused: bool,
}

impl Scheduler {
    /// A job of `frames` (frame numbers, in render order).
    pub fn new(frames: &[i32], config: SchedulerConfig) -> Self {
        Self {
            config,
            frames: frames
                .iter()
                .map(|&number| Frame {
                    number,
                    state: FrameState::Queued,
                    attempts: 0,
                    failures: 0,
                    progress: 0.0,
                    node: None,
                    render_secs: None,
                    last_error: None,
                    failed_on: Vec::new(),
                    runs: Vec::new(),
                })
                .collect(),
            queue: (0..frames.len()).collect(),
            nodes: BTreeMap::new(),
            durations: Vec::new(),
            final_frames: 0,
            ended: false,
            paused: false,
        }
    }

    /// Marks a frame done before the job starts (its image is already in the
    /// output folder from an earlier run).
    pub fn mark_done(&mut self, frame: FrameIndex) {
        if let Some(entry) = self.frames.get_mut(frame)
            && !entry.state.is_final()
        {
            entry.state = FrameState::Done;
            entry.progress = 1.0;
            self.final_frames += 1;
            self.queue.retain(|&queued| queued != frame);
        }
    }

    /// The frames.
    pub fn frames(&self) -> &[Frame] {
        &self.frames
    }

    /// The nodes.
    pub fn nodes(&self) -> &BTreeMap<NodeId, NodeSlot> {
        &self.nodes
    }

    /// Frames done.
    pub fn done_count(&self) -> usize {
        self.count(FrameState::Done)
    }

    /// Frames failed for good.
    pub fn failed_count(&self) -> usize {
        self.count(FrameState::Failed)
    }

    fn count(&self, state: FrameState) -> usize {
        self.frames
            .iter()
            .filter(|frame| frame.state == state)
            .count()
    }

    /// Whether every frame is done or failed.
    pub fn is_finished(&self) -> bool {
        self.final_frames == self.frames.len()
    }

    /// Median seconds a frame took, over the frames done in this job.
    pub fn median_frame_secs(&self) -> Option<f64> {
        median(&self.durations)
    }

    /// Seconds until the job is done, from each node's own measured speed
    /// (nodes not measured yet count at the median of the others).
    pub fn eta_secs(&self) -> Option<f64> {
        let remaining = self
            .frames
            .iter()
            .filter(|frame| !frame.state.is_final())
            .map(|frame| 1.0 - f64::from(frame.progress).clamp(0.0, 1.0) * 0.9)
            .sum::<f64>();
        if remaining == 0.0 {
            return Some(0.0);
        }
        let measured: Vec<f64> = self
            .nodes
            .values()
            .filter_map(NodeSlot::secs_per_frame)
            .collect();
        let fallback = median(&measured)?;
        let frames_per_sec: f64 = self
            .nodes
            .values()
            .filter(|node| node.eligible())
            .map(|node| 1.0 / node.secs_per_frame().unwrap_or(fallback).max(1e-6))
            .sum();
        (frames_per_sec > 0.0).then(|| remaining / frames_per_sec)
    }

    /// Takes an event at `now` (seconds since the job began) and returns
    /// what to do.
    pub fn handle(&mut self, event: Event, now: f64) -> Vec<Decision> {
        let mut decisions = Vec::new();
        match event {
            Event::NodeJoined { node } => {
                let slot = self.nodes.entry(node).or_insert_with(|| NodeSlot {
                    online: true,
                    ready: false,
                    paused: false,
                    enabled: true,
                    blocklisted: false,
                    failures: 0,
                    done: 0,
                    total_secs: 0.0,
                    runs: Vec::new(),
                });
                if !slot.online {
                    slot.online = true;
                    // Back after a loss: it must show it has the files again.
                    slot.ready = false;
                }
            }
            Event::NodeReady { node } => {
                if let Some(slot) = self.nodes.get_mut(&node) {
                    slot.ready = slot.online;
                }
            }
            Event::NodeLost { node } => {
                if let Some(slot) = self.nodes.get_mut(&node) {
                    slot.online = false;
                    slot.ready = false;
                }
                self.take_back(node, |_| true);
            }
            Event::NodePaused { node, paused } => {
                if let Some(slot) = self.nodes.get_mut(&node) {
                    slot.paused = paused;
                }
                if paused {
                    self.take_back_waiting(node, &mut decisions);
                }
            }
            Event::JobPaused { paused } => {
                self.paused = paused;
                if paused {
                    let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
                    for node in nodes {
                        self.take_back_waiting(node, &mut decisions);
                    }
                }
            }
            Event::NodeEnabled { node, enabled } => {
                if let Some(slot) = self.nodes.get_mut(&node) {
                    slot.enabled = enabled;
                }
                if !enabled {
                    self.take_back_waiting(node, &mut decisions);
                }
            }
            Event::Started { node, frame } => {
                if let Some(entry) = self.frames.get_mut(frame)
                    && let Some(run) = entry.run_mut(node)
                    && run.phase == Phase::Assigned
                {
                    run.phase = Phase::Rendering;
                    run.started_at = Some(now);
                    if matches!(entry.state, FrameState::Queued | FrameState::Assigned) {
                        entry.state = FrameState::Rendering;
                        entry.node = Some(node);
                    }
                }
            }
            Event::Progress {
                node,
                frame,
                progress,
            } => {
                if let Some(entry) = self.frames.get_mut(frame)
                    && entry.state == FrameState::Rendering
                    && entry.runs.iter().any(|run| run.node == node)
                {
                    entry.progress = entry.progress.max(progress.clamp(0.0, 1.0));
                }
            }
            Event::Rendered { node, frame } => self.rendered(node, frame, &mut decisions),
            Event::Done { node, frame } => self.done(node, frame, now, &mut decisions),
            Event::Failed { node, frame, error } => self.failed(node, frame, error, &mut decisions),
            Event::Tick => {}
        }
        self.dispatch(now, &mut decisions);
        self.check_end(&mut decisions);
        decisions
    }

    fn rendered(&mut self, node: NodeId, frame: FrameIndex, decisions: &mut Vec<Decision>) {
        let Some(entry) = self.frames.get_mut(frame) else {
            return;
        };
        match entry.run_mut(node) {
            None => return,
            // Reported again: it is already being fetched.
            Some(run) if run.phase == Phase::Downloading => return,
            Some(_) => {}
        }
        if matches!(entry.state, FrameState::Downloading | FrameState::Done) {
            // Another node's image of this frame already won.
            entry.remove_run(node);
            self.release(node, frame);
            decisions.push(Decision::Cancel { node, frame });
            return;
        }
        entry.state = FrameState::Downloading;
        entry.node = Some(node);
        entry.progress = 1.0;
        let losers: Vec<NodeId> = entry
            .runs
            .iter()
            .map(|run| run.node)
            .filter(|&other| other != node)
            .collect();
        entry.runs.retain(|run| run.node == node);
        if let Some(run) = entry.run_mut(node) {
            run.phase = Phase::Downloading;
        }
        for loser in losers {
            self.release(loser, frame);
            decisions.push(Decision::Cancel { node: loser, frame });
        }
        decisions.push(Decision::Download { node, frame });
    }

    fn done(&mut self, node: NodeId, frame: FrameIndex, now: f64, decisions: &mut Vec<Decision>) {
        let Some(entry) = self.frames.get_mut(frame) else {
            return;
        };
        let Some(run) = entry.runs.iter().find(|run| run.node == node).cloned() else {
            return;
        };
        if entry.state == FrameState::Done {
            return;
        }
        if entry.state == FrameState::Failed {
            self.final_frames -= 1;
        }
        self.final_frames += 1;
        entry.state = FrameState::Done;
        entry.node = Some(node);
        entry.progress = 1.0;
        let secs = run.started_at.map(|started| (now - started).max(0.0));
        entry.render_secs = secs;
        let others: Vec<NodeId> = entry.runs.iter().map(|r| r.node).collect();
        entry.runs.clear();
        for other in others {
            self.release(other, frame);
            if other != node {
                decisions.push(Decision::Cancel { node: other, frame });
            }
        }
        if let Some(slot) = self.nodes.get_mut(&node) {
            slot.done += 1;
            slot.total_secs += secs.unwrap_or(0.0);
        }
        if let Some(secs) = secs {
            self.durations.push(secs);
        }
    }

    fn failed(
        &mut self,
        node: NodeId,
        frame: FrameIndex,
        error: String,
        decisions: &mut Vec<Decision>,
    ) {
        let Some(entry) = self.frames.get_mut(frame) else {
            return;
        };
        if !entry.remove_run(node) {
            return;
        }
        self.release(node, frame);
        let Some(entry) = self.frames.get_mut(frame) else {
            return;
        };
        if entry.state.is_final() {
            return;
        }
        entry.failures += 1;
        entry.failed_on.push(node);
        entry.last_error = Some(error);
        if entry.runs.is_empty() {
            entry.progress = 0.0;
            if entry.failures >= self.config.max_attempts {
                entry.state = FrameState::Failed;
                self.final_frames += 1;
            } else {
                entry.state = FrameState::Queued;
                entry.node = None;
                self.queue.push_front(frame);
            }
        }
        let blocklist_after = self.config.blocklist_after;
        let newly_blocked = self.nodes.get_mut(&node).is_some_and(|slot| {
            slot.failures += 1;
            let block = !slot.blocklisted && slot.failures >= blocklist_after;
            slot.blocklisted |= block;
            block
        });
        if newly_blocked {
            self.take_back_waiting(node, decisions);
        }
    }

    /// Removes `frame` from `node`'s list of held frames.
    fn release(&mut self, node: NodeId, frame: FrameIndex) {
        if let Some(slot) = self.nodes.get_mut(&node) {
            slot.runs.retain(|&held| held != frame);
        }
    }

    /// Takes back every run of `node` that `which` selects; frames left with
    /// no run go to the front of the queue.
    fn take_back(&mut self, node: NodeId, which: impl Fn(&Run) -> bool) -> Vec<FrameIndex> {
        let held = self
            .nodes
            .get(&node)
            .map(|slot| slot.runs.clone())
            .unwrap_or_default();
        let mut taken = Vec::new();
        // Reverse, so pushing to the front keeps the frames' order.
        for frame in held.into_iter().rev() {
            let Some(entry) = self.frames.get_mut(frame) else {
                continue;
            };
            let selected = entry.runs.iter().any(|run| run.node == node && which(run));
            if !selected {
                continue;
            }
            entry.remove_run(node);
            taken.push(frame);
            if entry.runs.is_empty() && !entry.state.is_final() {
                entry.state = FrameState::Queued;
                entry.progress = 0.0;
                entry.node = None;
                self.queue.push_front(frame);
            }
            self.release(node, frame);
        }
        taken
    }

    /// Takes back the frames waiting on `node` that it has not started.
    fn take_back_waiting(&mut self, node: NodeId, decisions: &mut Vec<Decision>) {
        for frame in self.take_back(node, |run| run.phase == Phase::Assigned) {
            decisions.push(Decision::Cancel { node, frame });
        }
    }

    fn assign(&mut self, node: NodeId, frame: FrameIndex, decisions: &mut Vec<Decision>) {
        if let Some(entry) = self.frames.get_mut(frame) {
            entry.runs.push(Run {
                node,
                phase: Phase::Assigned,
                started_at: None,
            });
            entry.attempts += 1;
            if entry.state == FrameState::Queued {
                entry.state = FrameState::Assigned;
                entry.node = Some(node);
            }
        }
        if let Some(slot) = self.nodes.get_mut(&node) {
            slot.runs.push(frame);
        }
        decisions.push(Decision::Assign { node, frame });
    }

    /// The next queued frame for `node`: the first that has not failed on
    /// it, or, when no other eligible node could take it, the first at all.
    fn next_for(&self, node: NodeId, eligible: &[NodeId]) -> Option<usize> {
        let fresh = self
            .queue
            .iter()
            .position(|&frame| !self.frames[frame].failed_on.contains(&node));
        fresh.or_else(|| {
            self.queue.iter().position(|&frame| {
                let failed_on = &self.frames[frame].failed_on;
                eligible.iter().all(|other| failed_on.contains(other))
            })
        })
    }

    fn dispatch(&mut self, now: f64, decisions: &mut Vec<Decision>) {
        if self.paused {
            return;
        }
        let mut eligible: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, slot)| slot.eligible())
            .map(|(&id, _)| id)
            .collect();
        if self.config.in_order {
            // The node that holds frames of the job keeps them coming; else
            // the first one there.
            let holder = eligible.iter().copied().find(|&node| self.busy(node) > 0);
            eligible = holder
                .or_else(|| eligible.first().copied())
                .into_iter()
                .collect();
        }
        let capacity = 1 + self.config.queue_ahead;
        // Fill nodes round-robin, one frame each per pass, so a burst of
        // frames spreads over the nodes instead of filling the first.
        loop {
            let mut assigned = false;
            for &node in &eligible {
                if self.queue.is_empty() {
                    break;
                }
                if self.busy(node) >= capacity {
                    continue;
                }
                if let Some(position) = self.next_for(node, &eligible)
                    && let Some(frame) = self.queue.remove(position)
                {
                    self.assign(node, frame, decisions);
                    assigned = true;
                }
            }
            if !assigned || self.queue.is_empty() {
                break;
            }
        }
        if self.queue.is_empty() && !self.config.in_order {
            self.rebalance(now, &eligible, decisions);
        }
    }

    /// End of the job: idle nodes take back frames waiting behind another
    /// node's current frame, then render stragglers a second time.
    fn rebalance(&mut self, now: f64, eligible: &[NodeId], decisions: &mut Vec<Decision>) {
        for &idle in eligible {
            if self.busy(idle) > 0 {
                continue;
            }
            if let Some((owner, frame)) = self.waiting_behind() {
                self.frames[frame].remove_run(owner);
                self.release(owner, frame);
                decisions.push(Decision::Cancel { node: owner, frame });
                self.frames[frame].state = FrameState::Queued;
                self.assign(idle, frame, decisions);
                continue;
            }
            if let Some(frame) = self.straggler(now, idle) {
                self.assign(idle, frame, decisions);
            }
        }
    }

    /// Frames `node` is rendering or holds waiting; frames whose image is
    /// being fetched from it no longer keep it busy.
    fn busy(&self, node: NodeId) -> usize {
        self.nodes.get(&node).map_or(0, |slot| {
            slot.runs
                .iter()
                .filter(|&&frame| {
                    self.frames[frame]
                        .runs
                        .iter()
                        .any(|run| run.node == node && run.phase != Phase::Downloading)
                })
                .count()
        })
    }

    /// A frame assigned to a node but waiting behind another of its frames.
    fn waiting_behind(&self) -> Option<(NodeId, FrameIndex)> {
        let phase = |node: NodeId, frame: FrameIndex| {
            self.frames[frame]
                .runs
                .iter()
                .find(|run| run.node == node)
                .map(|run| run.phase)
        };
        self.nodes.iter().find_map(|(&node, slot)| {
            slot.runs
                .iter()
                .copied()
                .filter(|&frame| phase(node, frame) != Some(Phase::Downloading))
                .skip(1)
                .find(|&frame| {
                    self.frames[frame].runs.len() == 1
                        && phase(node, frame) == Some(Phase::Assigned)
                })
                .map(|frame| (node, frame))
        })
    }

    /// The longest-running frame past the straggler limit that `idle` has
    /// not failed and that runs only once.
    fn straggler(&self, now: f64, idle: NodeId) -> Option<FrameIndex> {
        let limit = self.median_frame_secs()? * self.config.straggler_factor;
        self.frames
            .iter()
            .enumerate()
            .filter(|(_, entry)| entry.state == FrameState::Rendering && entry.runs.len() == 1)
            .filter(|(_, entry)| !entry.failed_on.contains(&idle))
            .filter_map(|(index, entry)| {
                let started = entry.runs[0].started_at?;
                let running = now - started;
                (running > limit).then_some((index, running))
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(index, _)| index)
    }

    fn check_end(&mut self, decisions: &mut Vec<Decision>) {
        if self.ended {
            return;
        }
        if self.is_finished() {
            self.ended = true;
            decisions.push(Decision::Finished);
            return;
        }
        let mut online = self.nodes.values().filter(|slot| slot.online).peekable();
        let all_blocked = online.peek().is_some() && online.all(|slot| slot.blocklisted);
        if all_blocked && self.frames.iter().all(|frame| frame.runs.is_empty()) {
            self.ended = true;
            let last_error = self
                .frames
                .iter()
                .rev()
                .find_map(|frame| frame.last_error.clone())
                .unwrap_or_else(|| "no error recorded".into());
            decisions.push(Decision::Stuck {
                reason: format!(
                    "every node failed {} frames of this job and takes no more; last error: {last_error}",
                    self.config.blocklist_after
                ),
            });
        }
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
mod tests {
    //! The scheduler driven by a simulated farm on a simulated clock: nodes
    //! render their assigned frames one at a time at a set speed.

    use super::*;

    #[derive(Debug)]
    struct SimNode {
        secs_per_frame: f64,
        waiting: VecDeque<FrameIndex>,
        current: Option<(FrameIndex, f64)>,
        fails: bool,
        online: bool,
    }

    struct Sim {
        scheduler: Scheduler,
        now: f64,
        nodes: BTreeMap<NodeId, SimNode>,
        downloads: Vec<(f64, NodeId, FrameIndex)>,
        written: Vec<i32>,
        cancels: usize,
        outcome: Option<Decision>,
    }

    impl Sim {
        fn new(frames: usize, config: SchedulerConfig) -> Self {
            let numbers: Vec<i32> = (1..=frames as i32).collect();
            Self {
                scheduler: Scheduler::new(&numbers, config),
                now: 0.0,
                nodes: BTreeMap::new(),
                downloads: Vec::new(),
                written: Vec::new(),
                cancels: 0,
                outcome: None,
            }
        }

        fn add_node(&mut self, node: NodeId, secs_per_frame: f64) {
            self.nodes.insert(
                node,
                SimNode {
                    secs_per_frame,
                    waiting: VecDeque::new(),
                    current: None,
                    fails: false,
                    online: true,
                },
            );
            self.event(Event::NodeJoined { node });
            self.event(Event::NodeReady { node });
        }

        fn event(&mut self, event: Event) {
            let decisions = self.scheduler.handle(event, self.now);
            for decision in decisions {
                match decision {
                    Decision::Assign { node, frame } => {
                        self.nodes.get_mut(&node).unwrap().waiting.push_back(frame);
                    }
                    Decision::Cancel { node, frame } => {
                        self.cancels += 1;
                        let sim = self.nodes.get_mut(&node).unwrap();
                        sim.waiting.retain(|&f| f != frame);
                        if sim.current.is_some_and(|(f, _)| f == frame) {
                            sim.current = None;
                        }
                        self.downloads.retain(|&(_, n, f)| (n, f) != (node, frame));
                    }
                    Decision::Download { node, frame } => {
                        self.downloads.push((self.now + 0.01, node, frame));
                    }
                    end @ (Decision::Finished | Decision::Stuck { .. }) => self.outcome = Some(end),
                }
            }
        }

        /// Starts waiting frames on idle nodes.
        fn start_idle(&mut self) {
            let starts: Vec<(NodeId, FrameIndex)> = self
                .nodes
                .iter_mut()
                .filter(|(_, sim)| sim.online && sim.current.is_none())
                .filter_map(|(&node, sim)| {
                    let frame = sim.waiting.pop_front()?;
                    sim.current = Some((frame, self.now + sim.secs_per_frame));
                    Some((node, frame))
                })
                .collect();
            for (node, frame) in starts {
                self.event(Event::Started { node, frame });
            }
        }

        /// Runs until the job ends or `until` seconds pass.
        fn run(&mut self, until: f64) {
            while self.outcome.is_none() && self.now < until {
                self.start_idle();
                let next_render = self
                    .nodes
                    .iter()
                    .filter(|(_, sim)| sim.online)
                    .filter_map(|(&node, sim)| sim.current.map(|(f, end)| (end, node, f)))
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let next_download = self
                    .downloads
                    .iter()
                    .copied()
                    .min_by(|a, b| a.0.total_cmp(&b.0));
                let next_tick = self.now + 0.5;
                match (next_render, next_download) {
                    (Some(r), d) if d.is_none_or(|d| r.0 <= d.0) && r.0 <= next_tick => {
                        self.now = r.0;
                        let (_, node, frame) = r;
                        let sim = self.nodes.get_mut(&node).unwrap();
                        sim.current = None;
                        if sim.fails {
                            self.event(Event::Failed {
                                node,
                                frame,
                                error: format!("Error: node {node} cannot render"),
                            });
                        } else {
                            self.event(Event::Rendered { node, frame });
                        }
                    }
                    (_, Some(d)) if d.0 <= next_tick => {
                        self.now = d.0;
                        self.downloads.retain(|&x| x != d);
                        let (_, node, frame) = d;
                        self.written.push(self.scheduler.frames()[frame].number);
                        self.event(Event::Done { node, frame });
                    }
                    _ => {
                        self.now = next_tick;
                        self.event(Event::Tick);
                    }
                }
            }
        }

        fn assert_each_frame_written_once(&self) {
            let mut written = self.written.clone();
            written.sort_unstable();
            let expected: Vec<i32> = self.scheduler.frames().iter().map(|f| f.number).collect();
            assert_eq!(written, expected);
        }
    }

    #[test]
    fn one_node_renders_every_frame_in_order() {
        let mut sim = Sim::new(10, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.run(100.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        assert_eq!(sim.written, (1..=10).collect::<Vec<_>>());
        assert!((sim.now - 10.01).abs() < 0.1, "no idle time: {}", sim.now);
    }

    #[test]
    fn an_in_order_job_renders_every_frame_in_order_on_one_node() {
        let config = SchedulerConfig {
            in_order: true,
            ..SchedulerConfig::default()
        };
        let mut sim = Sim::new(12, config.clone());
        sim.add_node(1, 1.0);
        // Faster, but the job began on node 1: no frame goes to node 2, and
        // nothing is rendered twice at the end.
        sim.add_node(2, 0.25);
        sim.run(100.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        assert_eq!(sim.written, (1..=12).collect::<Vec<_>>());
        assert_eq!(sim.scheduler.nodes()[&2].done, 0);
        assert_eq!(sim.cancels, 0);

        // Node 1 is lost midway: node 2 carries on, in order.
        let mut sim = Sim::new(12, config);
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.run(4.5);
        sim.nodes.get_mut(&1).unwrap().online = false;
        sim.event(Event::NodeLost { node: 1 });
        sim.run(100.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        assert_eq!(sim.written, (1..=12).collect::<Vec<_>>());
        sim.assert_each_frame_written_once();
    }

    #[test]
    fn each_node_holds_one_frame_ahead() {
        let mut sim = Sim::new(10, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        for slot in sim.scheduler.nodes().values() {
            assert_eq!(slot.held().len(), 2);
        }
        assert_eq!(
            sim.scheduler
                .frames()
                .iter()
                .filter(|f| f.state == FrameState::Queued)
                .count(),
            6
        );
    }

    #[test]
    fn fast_nodes_take_more_frames() {
        let mut sim = Sim::new(40, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 4.0);
        sim.run(1000.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        sim.assert_each_frame_written_once();
        let nodes = sim.scheduler.nodes();
        assert!(nodes[&1].done >= 3 * nodes[&2].done, "{nodes:?}");
        // Per-node speed is measured, not averaged over the farm.
        assert!((nodes[&1].secs_per_frame().unwrap() - 1.0).abs() < 0.05);
        assert!((nodes[&2].secs_per_frame().unwrap() - 4.0).abs() < 0.05);
    }

    #[test]
    fn a_late_joiner_gets_work_at_once() {
        let mut sim = Sim::new(20, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.run(5.0);
        sim.add_node(2, 1.0);
        assert_eq!(sim.scheduler.nodes()[&2].held().len(), 2);
        sim.run(100.0);
        sim.assert_each_frame_written_once();
        assert!(sim.scheduler.nodes()[&2].done >= 6);
    }

    #[test]
    fn a_lost_nodes_frames_are_requeued_and_rendered_elsewhere() {
        let mut sim = Sim::new(20, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.run(3.5);
        let held = sim.scheduler.nodes()[&2].held().to_vec();
        assert_eq!(held.len(), 2);
        sim.nodes.get_mut(&2).unwrap().online = false;
        sim.event(Event::NodeLost { node: 2 });
        for &frame in &held {
            let entry = &sim.scheduler.frames()[frame];
            assert!(entry.runs.iter().all(|run| run.node == 1), "{entry:?}");
            assert_eq!(entry.failures, 0, "a lost node is not the frame's fault");
        }
        sim.run(100.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        sim.assert_each_frame_written_once();
    }

    #[test]
    fn a_node_that_comes_back_must_be_ready_again() {
        let mut sim = Sim::new(6, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.event(Event::NodeLost { node: 1 });
        sim.nodes.get_mut(&1).unwrap().online = false;
        sim.event(Event::NodeJoined { node: 1 });
        assert!(sim.scheduler.nodes()[&1].held().is_empty(), "not ready yet");
        sim.nodes.get_mut(&1).unwrap().online = true;
        sim.nodes.get_mut(&1).unwrap().waiting.clear();
        sim.nodes.get_mut(&1).unwrap().current = None;
        sim.event(Event::NodeReady { node: 1 });
        sim.run(100.0);
        sim.assert_each_frame_written_once();
    }

    #[test]
    fn failed_frames_are_retried_on_another_node() {
        let mut sim = Sim::new(12, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.nodes.get_mut(&2).unwrap().fails = true;
        sim.run(200.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        sim.assert_each_frame_written_once();
        let nodes = sim.scheduler.nodes();
        assert!(nodes[&2].blocklisted, "3 failures block the node");
        assert_eq!(nodes[&2].failures, 3);
        assert_eq!(nodes[&1].done, 12);
        for frame in sim.scheduler.frames() {
            assert!(frame.failures <= 1, "{frame:?}");
        }
    }

    #[test]
    fn a_bad_scene_stops_the_job_once_with_its_error() {
        let mut sim = Sim::new(50, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.nodes.get_mut(&1).unwrap().fails = true;
        sim.nodes.get_mut(&2).unwrap().fails = true;
        sim.run(1000.0);
        let Some(Decision::Stuck { reason }) = &sim.outcome else {
            panic!("expected stuck, got {:?}", sim.outcome);
        };
        assert!(reason.contains("cannot render"), "{reason}");
        assert!(
            sim.now < 20.0,
            "stopped early, not after 50 frames × 3 tries"
        );
        assert!(sim.written.is_empty());
    }

    #[test]
    fn a_frame_failing_everywhere_fails_after_max_attempts() {
        let config = SchedulerConfig {
            blocklist_after: 100,
            ..SchedulerConfig::default()
        };
        let mut sim = Sim::new(2, config);
        sim.add_node(1, 1.0);
        sim.nodes.get_mut(&1).unwrap().fails = true;
        sim.run(100.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        for frame in sim.scheduler.frames() {
            assert_eq!(frame.state, FrameState::Failed);
            assert_eq!(frame.failures, 3, "retried on the only node there is");
            assert!(
                frame
                    .last_error
                    .as_deref()
                    .unwrap()
                    .contains("cannot render")
            );
        }
    }

    #[test]
    fn stragglers_are_rendered_again_and_the_first_result_wins() {
        let mut sim = Sim::new(10, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 100.0);
        sim.run(1000.0);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        sim.assert_each_frame_written_once();
        assert!(
            sim.now < 20.0,
            "the slow node's frame was taken over: {}",
            sim.now
        );
        assert!(sim.cancels >= 1, "the slow run was cancelled");
    }

    #[test]
    fn a_frame_waiting_behind_a_busy_node_moves_to_an_idle_one() {
        let mut sim = Sim::new(4, SchedulerConfig::default());
        sim.add_node(1, 10.0);
        sim.add_node(2, 1.0);
        // Node 1 holds frames 0 and 2; node 2 finishes 1 and 3 quickly and
        // then takes frame 2 back from node 1's queue.
        sim.run(1000.0);
        sim.assert_each_frame_written_once();
        assert!(sim.now < 11.0, "{}", sim.now);
        assert!(sim.scheduler.nodes()[&1].done <= 1);
    }

    #[test]
    fn a_paused_node_starts_nothing_new() {
        let mut sim = Sim::new(10, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.run(1.5);
        sim.event(Event::NodePaused {
            node: 2,
            paused: true,
        });
        let done_before = sim.scheduler.nodes()[&2].done;
        sim.run(100.0);
        sim.assert_each_frame_written_once();
        // It finishes the frame it was rendering, nothing more.
        assert!(sim.scheduler.nodes()[&2].done <= done_before + 1);
    }

    #[test]
    fn a_paused_job_starts_nothing_until_resumed() {
        let mut sim = Sim::new(20, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.run(2.5);
        sim.event(Event::JobPaused { paused: true });
        // The frames being rendered finish; nothing else starts.
        sim.run(10.0);
        let done = sim.scheduler.done_count();
        assert!((4..=8).contains(&done), "{done} frames done while paused");
        sim.run(30.0);
        assert_eq!(
            sim.scheduler.done_count(),
            done,
            "nothing starts while paused"
        );
        sim.event(Event::JobPaused { paused: false });
        sim.run(100.0);
        sim.assert_each_frame_written_once();
        assert!(sim.scheduler.is_finished());
    }

    #[test]
    fn a_disabled_node_gives_back_its_waiting_frames() {
        let mut sim = Sim::new(4, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 1.0);
        sim.event(Event::NodeEnabled {
            node: 2,
            enabled: false,
        });
        assert!(sim.scheduler.nodes()[&2].held().len() <= 1);
        sim.run(100.0);
        sim.assert_each_frame_written_once();
    }

    #[test]
    fn resumed_jobs_skip_frames_already_done() {
        let mut scheduler = Scheduler::new(&[1, 2, 3], SchedulerConfig::default());
        scheduler.mark_done(0);
        scheduler.mark_done(2);
        let decisions = scheduler.handle(Event::NodeJoined { node: 1 }, 0.0);
        assert!(decisions.is_empty());
        let decisions = scheduler.handle(Event::NodeReady { node: 1 }, 0.0);
        assert_eq!(decisions, vec![Decision::Assign { node: 1, frame: 1 }]);
    }

    #[test]
    fn a_second_result_for_a_done_frame_is_discarded() {
        let mut scheduler = Scheduler::new(&[1], SchedulerConfig::default());
        scheduler.handle(Event::NodeJoined { node: 1 }, 0.0);
        scheduler.handle(Event::NodeReady { node: 1 }, 0.0);
        scheduler.handle(Event::Started { node: 1, frame: 0 }, 0.0);
        let decisions = scheduler.handle(Event::Rendered { node: 1, frame: 0 }, 1.0);
        assert!(decisions.contains(&Decision::Download { node: 1, frame: 0 }));
        scheduler.handle(Event::Done { node: 1, frame: 0 }, 1.1);
        // A late duplicate report changes nothing.
        let decisions = scheduler.handle(Event::Rendered { node: 1, frame: 0 }, 2.0);
        assert!(decisions.is_empty(), "{decisions:?}");
        let decisions = scheduler.handle(Event::Done { node: 1, frame: 0 }, 2.0);
        assert!(decisions.is_empty());
        assert_eq!(scheduler.done_count(), 1);
    }

    #[test]
    fn eta_uses_each_nodes_own_speed() {
        let mut sim = Sim::new(100, SchedulerConfig::default());
        sim.add_node(1, 1.0);
        sim.add_node(2, 3.0);
        sim.run(12.0);
        let eta = sim.scheduler.eta_secs().unwrap();
        let remaining = 100 - sim.scheduler.done_count();
        // 1/1 + 1/3 frames per second.
        let expected = remaining as f64 / (1.0 + 1.0 / 3.0);
        assert!(
            (eta - expected).abs() / expected < 0.1,
            "{eta} vs {expected}"
        );
    }

    #[test]
    fn scales_to_thousands_of_frames() {
        let mut sim = Sim::new(2_000, SchedulerConfig::default());
        for node in 0..32 {
            sim.add_node(node, 1.0 + f64::from(node % 4));
        }
        sim.run(1e6);
        assert_eq!(sim.outcome, Some(Decision::Finished));
        sim.assert_each_frame_written_once();
    }
}
