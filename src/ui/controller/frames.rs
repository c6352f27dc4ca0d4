//! The frame grid, coloured by state, and the viewer of a finished frame.

use super::*;

/// Side of a frame cell, in points.
pub(super) const CELL_SIZE: f32 = 14.0;

/// Space between frame cells, in points.
pub(super) const CELL_GAP: f32 = 2.0;

/// Where the frame grid was drawn last, to find the frame under a point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridLayout {
    /// Top left of the first cell.
    pub origin: Pos2,
    /// Cells per row.
    pub columns: usize,
}

impl GridLayout {
    /// The cell of frame `index`.
    pub fn cell(&self, index: FrameIndex) -> Rect {
        let pitch = CELL_SIZE + CELL_GAP;
        let columns = self.columns.max(1);
        let min = self.origin
            + Vec2::new(
                (index % columns) as f32 * pitch,
                (index / columns) as f32 * pitch,
            );
        Rect::from_min_size(min, Vec2::splat(CELL_SIZE))
    }

    /// The frame whose cell (or the gap after it) holds `pos`.
    pub fn index_at(&self, pos: Pos2) -> Option<FrameIndex> {
        let pitch = CELL_SIZE + CELL_GAP;
        let offset = pos - self.origin;
        if offset.x < 0.0 || offset.y < 0.0 {
            return None;
        }
        let column = (offset.x / pitch) as usize;
        if column >= self.columns {
            return None;
        }
        Some((offset.y / pitch) as usize * self.columns + column)
    }
}

/// A finished frame shown on its own, over the window.
pub struct FrameViewer {
    /// Frame number.
    pub frame: i32,
    /// Its file in the output folder.
    pub path: PathBuf,
    /// The image once decoded, or why it could not be.
    pub image: Option<Result<egui::TextureHandle, String>>,
}

impl std::fmt::Debug for FrameViewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameViewer")
            .field("frame", &self.frame)
            .field("path", &self.path)
            .field(
                "image",
                &self
                    .image
                    .as_ref()
                    .map(|image| image.as_ref().map(egui::TextureHandle::size)),
            )
            .finish()
    }
}

impl ControllerApp {
    pub(super) fn frames_ui(&mut self, ui: &mut egui::Ui) {
        if self.state.frames.is_empty() {
            return;
        }
        ui.heading("Frames");
        legend_ui(ui, &self.state.frame_counts());
        ui.add_space(4.0);
        let pitch = CELL_SIZE + CELL_GAP;
        let width = ui.available_width().max(pitch);
        let columns = (((width + CELL_GAP) / pitch).floor() as usize).max(1);
        let rows = self.state.frames.len().div_ceil(columns);
        let (rect, response) =
            ui.allocate_exact_size(Vec2::new(width, rows as f32 * pitch), Sense::click());
        let layout = GridLayout {
            origin: rect.min,
            columns,
        };
        let painter = ui.painter();
        let visible = ui.clip_rect();
        for (index, frame) in self.state.frames.iter().enumerate() {
            let cell = layout.cell(index);
            if !visible.intersects(cell) {
                continue;
            }
            let color = palette::frame_color(frame.state);
            if frame.state == FrameState::Rendering {
                painter.rect_filled(cell, 2.0, palette::RENDERING_BACKGROUND);
                let mut filled = cell;
                filled.set_width(cell.width() * frame.progress.clamp(0.0, 1.0));
                painter.rect_filled(filled, 2.0, color);
            } else {
                painter.rect_filled(cell, 2.0, color);
            }
        }
        self.grid = Some(layout);
        if let Some(pos) = response.hover_pos()
            && let Some(index) = layout.index_at(pos)
            && let Some(text) = self.state.frame_tooltip(index)
        {
            if response.clicked() {
                let done = self
                    .state
                    .frames
                    .get(index)
                    .filter(|frame| frame.state == FrameState::Done);
                if let Some(frame) = done.map(|frame| frame.frame) {
                    self.view_frame(frame);
                }
            }
            response.on_hover_text_at_pointer(text);
        }
        if !self.thumbnails.frames().is_empty() {
            ui.add_space(8.0);
            ui.strong("Latest frames");
            if let Some(frame) = self.thumbnails.ui(ui) {
                self.view_frame(frame);
            }
        }
    }

    /// The clicked frame on its own, in a window of its own over the rest.
    pub(super) fn viewer_ui(&mut self, ctx: &egui::Context) {
        let Some(viewer) = &self.viewer else {
            return;
        };
        let mut open = !ctx.input(|i| i.key_pressed(egui::Key::Escape));
        let mut open_file = None;
        egui::Window::new(format!("Frame {}", viewer.frame))
            .open(&mut open)
            .collapsible(false)
            .resizable(true)
            .default_size([720.0, 460.0])
            .show(ctx, |ui| {
                ui.horizontal(|ui| {
                    if ui.button("Open in image viewer").clicked() {
                        open_file = Some(viewer.path.clone());
                    }
                    ui.weak(viewer.path.display().to_string());
                });
                match &viewer.image {
                    None => {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("Reading the image…");
                        });
                    }
                    Some(Ok(texture)) => {
                        ui.add(
                            egui::Image::from_texture(egui::load::SizedTexture::from_handle(
                                texture,
                            ))
                            .max_size(ui.available_size())
                            .maintain_aspect_ratio(true),
                        );
                    }
                    Some(Err(err)) => {
                        ui.colored_label(palette::ERROR, err);
                    }
                }
            });
        if let Some(path) = open_file {
            self.send(BridgeCommand::OpenPath(path));
        }
        if !open {
            self.viewer = None;
        }
    }
}

/// One coloured square per frame state, with how many frames are in it.
pub(super) fn legend_ui(ui: &mut egui::Ui, counts: &[usize]) {
    ui.horizontal_wrapped(|ui| {
        for (state, count) in palette::FRAME_STATES.iter().zip(counts) {
            let (rect, _) = ui.allocate_exact_size(Vec2::splat(CELL_SIZE * 0.8), Sense::hover());
            ui.painter()
                .rect_filled(rect, 2.0, palette::frame_color(*state));
            ui.label(format!("{} {count}", palette::frame_label(*state)));
            ui.add_space(8.0);
        }
    });
}
