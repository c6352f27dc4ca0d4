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
                .iter()
                .map(|(&id, entry)| self.node_view(id, entry))
                .collect(),
            rendering,
        };
        self.emit.snapshot(snapshot);
    }

    /// How node `id` is shown: its record, with the scheduler's count of
    /// its frames.
    fn node_view(&self, id: NodeId, entry: &NodeEntry) -> NodeView {
        let slot = self.scheduler.nodes().get(&id);
        let status = match entry.link {
            _ if slot.is_some_and(|slot| slot.blocklisted) => NodeStatus::Blocklisted,
            // Before its upload a node shows as being sent the file.
            LinkState::Waiting | LinkState::Uploading => NodeStatus::Uploading,
            LinkState::Lost => NodeStatus::Lost,
            LinkState::Refused => NodeStatus::Refused,
            LinkState::Ready => entry.state.map_or(NodeStatus::Idle, NodeStatus::from),
        };
        NodeView {
            id,
            uri: entry.uri.clone(),
            name: entry.name.clone(),
            status,
            blender_version: entry.blender_version.clone(),
            cores: entry.cores,
            current: entry.current,
            frames_done: slot.map_or(0, |slot| slot.done),
            secs_per_frame: slot.and_then(|slot| slot.secs_per_frame()),
            prep_secs: median(&entry.prep_secs),
            local: entry.local,
            enabled: entry.enabled,
            error: entry.error.clone(),
            last_seen_secs: None,
        }
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
