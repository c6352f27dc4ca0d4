//! The scheduler's language: the [`Event`]s the driver tells it and the
//! [`Decision`]s it answers with.

use super::{FrameIndex, NodeId};

/// What happened, as the driver saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A node is available (new, or back after being lost).
    NodeJoined {
        /// The node.
        node: NodeId,
    },
    /// A node has the job's files and can render.
    NodeReady {
        /// The node.
        node: NodeId,
    },
    /// A node stopped answering.
    NodeLost {
        /// The node.
        node: NodeId,
    },
    /// A node was paused or resumed by its owner.
    NodePaused {
        /// The node.
        node: NodeId,
        /// Paused now.
        paused: bool,
    },
    /// The user paused or resumed the whole job: no frame starts while
    /// paused, the frames being rendered finish.
    JobPaused {
        /// Paused now.
        paused: bool,
    },
    /// The user left a node in or out of the job.
    NodeEnabled {
        /// The node.
        node: NodeId,
        /// In the job now.
        enabled: bool,
    },
    /// A node began rendering a frame.
    Started {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// A node's progress on a frame.
    Progress {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
        /// 0 to 1.
        progress: f32,
    },
    /// A node finished rendering a frame; its image can be fetched.
    Rendered {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// The frame's image was fetched, checked and written.
    Done {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// A node failed a frame (render, or fetching its image).
    Failed {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
        /// Why.
        error: String,
    },
    /// Time passed.
    Tick,
}

/// What the driver is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send this frame to this node.
    Assign {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// Drop this node's run of this frame (and its result, if any).
    Cancel {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// Fetch this node's image of this frame: it is the one kept.
    Download {
        /// The node.
        node: NodeId,
        /// The frame.
        frame: FrameIndex,
    },
    /// Every frame is done or failed.
    Finished,
    /// Frames remain but no node may render them.
    Stuck {
        /// Why, with the last error.
        reason: String,
    },
}
