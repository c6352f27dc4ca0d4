//! What the engine shows of a job: the views of its frames and nodes and the
//! progress snapshot, derived from the scheduler and the node records (the
//! engine decides on those, never on a view).

use super::*;

impl Job {
    /// Sends the frames that changed and replaces the snapshot.
    pub(super) async fn publish(&mut self) {
        let mut changed = Vec::new();
        for (index, frame) in self.scheduler.frames().iter().enumerate() {
            let signature = (frame.state, frame.attempts, frame.node);
            if self.published[index] != signature {
                self.published[index] = signature;
                changed.push(index);
            }
        }
        for index in changed {
            let view = self.frame_view(index);
            self.emit.send(EngineEvent::Frame(view)).await;
        }
        self.publish_progress();
    }

    /// Replaces the snapshot: nodes, overall progress, frames rendering.
    pub(super) fn publish_progress(&mut self) {
        let slots = self.scheduler.nodes();
        for (id, entry) in &mut self.nodes {
            if let Some(slot) = slots.get(id) {
                entry.view.frames_done = slot.done;
                entry.view.secs_per_frame = slot.secs_per_frame();
                entry.view.prep_secs = median(&entry.prep_secs);
                if slot.blocklisted {
                    entry.view.status = NodeStatus::Blocklisted;
                }
            }
        }
        let rendering = self
            .scheduler
            .frames()
            .iter()
            .enumerate()
            .filter(|(_, frame)| frame.state == FrameState::Rendering)
            .map(|(index, frame)| (index, frame.progress))
            .collect();
        let snapshot = JobProgress {
            progress: self.progress(),
            nodes: self
                .nodes
                .values()
                .map(|entry| entry.view.clone())
                .collect(),
            rendering,
        };
        self.emit.snapshot(snapshot);
    }

    pub(super) fn frame_view(&self, index: FrameIndex) -> FrameView {
        let frame = &self.scheduler.frames()[index];
        FrameView {
            index,
            frame: frame.number,
            state: frame.state,
            attempts: frame.attempts,
            node: frame.node.map(|node| self.node_name(node)),
            progress: frame.progress,
            secs: frame.render_secs,
            error: frame.last_error.clone(),
        }
    }

    pub(super) fn progress(&self) -> ProgressView {
        let elapsed_secs = self.now();
        ProgressView {
            done: self.scheduler.done_count(),
            failed: self.scheduler.failed_count(),
            total: self.spec.frames.len(),
            elapsed_secs,
            eta_secs: self.scheduler.eta_secs(),
            frames_per_minute: self.rendered_now as f64 * 60.0 / elapsed_secs.max(1e-3),
            paused: self.paused,
        }
    }
}
