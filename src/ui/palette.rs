//! Every status colour of the window, in one place: frame states, node
//! statuses, messages and the drop highlight.

use egui::Color32;

use crate::controller::engine::NodeStatus;
use crate::controller::scheduler::FrameState;
use crate::wire::NodeState;

/// Every frame state, in the order the legend shows them.
pub const FRAME_STATES: [FrameState; 6] = [
    FrameState::Queued,
    FrameState::Assigned,
    FrameState::Rendering,
    FrameState::Downloading,
    FrameState::Done,
    FrameState::Failed,
];

/// The colour of a frame cell in `state`.
pub fn frame_color(state: FrameState) -> Color32 {
    match state {
        FrameState::Queued => Color32::from_gray(70),
        FrameState::Assigned => Color32::from_rgb(90, 110, 150),
        FrameState::Rendering => Color32::from_rgb(230, 160, 40),
        FrameState::Downloading => Color32::from_rgb(80, 170, 220),
        FrameState::Done => Color32::from_rgb(70, 180, 90),
        FrameState::Failed => Color32::from_rgb(220, 60, 60),
    }
}

/// The fill of a rendering cell's background, under its progress.
pub const RENDERING_BACKGROUND: Color32 = Color32::from_rgb(90, 70, 40);

/// A frame state's name as the legend and tooltips show it.
pub fn frame_label(state: FrameState) -> &'static str {
    match state {
        FrameState::Queued => "queued",
        FrameState::Assigned => "assigned",
        FrameState::Rendering => "rendering",
        FrameState::Downloading => "downloading",
        FrameState::Done => "done",
        FrameState::Failed => "failed",
    }
}

/// The colour of a node's status text.
pub fn node_color(status: NodeStatus) -> Color32 {
    match status {
        NodeStatus::Uploading | NodeStatus::Loading => Color32::from_rgb(80, 170, 220),
        NodeStatus::Idle => Color32::from_gray(170),
        NodeStatus::Rendering => Color32::from_rgb(230, 160, 40),
        NodeStatus::Paused => Color32::from_rgb(170, 140, 220),
        NodeStatus::Lost | NodeStatus::Refused | NodeStatus::Blocklisted => {
            Color32::from_rgb(220, 60, 60)
        }
    }
}

/// The colour of a node's own state (the node window).
pub fn node_state_color(state: NodeState) -> Color32 {
    node_color(NodeStatus::from(state))
}

/// A node status's name as the table shows it.
pub fn node_label(status: NodeStatus) -> &'static str {
    match status {
        NodeStatus::Uploading => "uploading",
        NodeStatus::Idle => "idle",
        NodeStatus::Loading => "loading",
        NodeStatus::Rendering => "rendering",
        NodeStatus::Paused => "paused",
        NodeStatus::Lost => "lost",
        NodeStatus::Refused => "refused",
        NodeStatus::Blocklisted => "blocklisted",
    }
}

/// Text of an error the user must act on.
pub const ERROR: Color32 = Color32::from_rgb(235, 90, 80);

/// Text of a warning (e.g. a scene's).
pub const WARNING: Color32 = Color32::from_rgb(230, 180, 60);

/// Text of good news (a finished job).
pub const SUCCESS: Color32 = Color32::from_rgb(90, 200, 110);

/// Veil over the window while a file is dragged over it.
pub const DROP_VEIL: Color32 = Color32::from_rgba_premultiplied(20, 60, 110, 160);

/// Outline of the window while a file is dragged over it.
pub const DROP_OUTLINE: Color32 = Color32::from_rgb(90, 170, 255);
