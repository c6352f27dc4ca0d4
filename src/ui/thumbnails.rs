//! Previews of the latest finished frames: decoded and shrunk off the UI
//! thread ([`decode`], run by the bridge), kept as textures in a cache
//! bounded to [`THUMBNAILS`] frames.

use std::collections::VecDeque;
use std::path::Path;

/// Finished frames shown (and textures kept).
pub const THUMBNAILS: usize = 6;

/// Longest side of a preview, in pixels.
pub const THUMBNAIL_PIXELS: u32 = 200;

/// Longest side of a frame shown on its own, in pixels: bigger frames are
/// shrunk to it (a screen shows no more, and memory stays bounded); the
/// file itself opens in the desktop's viewer.
pub const FULL_VIEW_PIXELS: u32 = 2048;

/// Reads an image file, shrunk to fit `max_side_px` if it is bigger:
/// blocking, for a background thread.
pub fn decode(path: &Path, max_side_px: u32) -> Result<egui::ColorImage, String> {
    let image =
        image::open(path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let small = if image.width() > max_side_px || image.height() > max_side_px {
        image.thumbnail(max_side_px, max_side_px)
    } else {
        image
    }
    .to_rgba8();
    let size = [small.width() as usize, small.height() as usize];
    Ok(egui::ColorImage::from_rgba_unmultiplied(
        size,
        small.as_raw(),
    ))
}

/// The latest finished frames' previews, newest last.
#[derive(Default)]
pub struct Thumbnails {
    shown: VecDeque<(i32, egui::TextureHandle)>,
    wanted: VecDeque<i32>,
}

impl std::fmt::Debug for Thumbnails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thumbnails")
            .field("shown", &self.frames())
            .field("wanted", &self.wanted)
            .finish()
    }
}

impl Thumbnails {
    /// Forgets every preview (a new job).
    pub fn clear(&mut self) {
        self.shown.clear();
        self.wanted.clear();
    }

    /// Notes that `frame` is finished; only the latest [`THUMBNAILS`] are
    /// asked for.
    pub fn want(&mut self, frame: i32) {
        if self.wanted.contains(&frame) || self.shown.iter().any(|(shown, _)| *shown == frame) {
            return;
        }
        if self.wanted.len() >= THUMBNAILS {
            self.wanted.pop_front();
        }
        self.wanted.push_back(frame);
    }

    /// The frames to ask the background for now.
    pub fn take_wanted(&mut self) -> Vec<i32> {
        self.wanted.drain(..).collect()
    }

    /// Keeps a decoded preview, dropping the oldest past [`THUMBNAILS`].
    pub fn insert(&mut self, ctx: &egui::Context, frame: i32, image: egui::ColorImage) {
        self.shown.retain(|(shown, _)| *shown != frame);
        let texture = ctx.load_texture(
            format!("frame_{frame}"),
            image,
            egui::TextureOptions::LINEAR,
        );
        self.shown.push_back((frame, texture));
        while self.shown.len() > THUMBNAILS {
            self.shown.pop_front();
        }
    }

    /// The frames with a preview, oldest first.
    pub fn frames(&self) -> Vec<i32> {
        self.shown.iter().map(|(frame, _)| *frame).collect()
    }

    /// Draws the previews in a row, newest first; returns the frame whose
    /// preview was clicked.
    pub fn ui(&self, ui: &mut egui::Ui) -> Option<i32> {
        let mut clicked = None;
        ui.horizontal_wrapped(|ui| {
            for (frame, texture) in self.shown.iter().rev() {
                ui.vertical(|ui| {
                    let image = ui
                        .add(
                            egui::Image::from_texture(egui::load::SizedTexture::from_handle(
                                texture,
                            ))
                            .max_height(90.0)
                            .sense(egui::Sense::click()),
                        )
                        .accessible_name(format!("Open frame {frame}"))
                        .on_hover_text("Click to see it whole")
                        .on_hover_cursor(egui::CursorIcon::PointingHand);
                    if image.clicked() {
                        clicked = Some(*frame);
                    }
                    ui.weak(format!("frame {frame}"));
                });
            }
        });
        clicked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_frames_are_wanted_and_kept() {
        let ctx = egui::Context::default();
        let mut thumbnails = Thumbnails::default();
        for frame in 1..=10 {
            thumbnails.want(frame);
        }
        thumbnails.want(10);
        let wanted = thumbnails.take_wanted();
        assert_eq!(wanted, (5..=10).collect::<Vec<_>>());
        for frame in wanted.iter().chain(&[11, 12]) {
            thumbnails.insert(
                &ctx,
                *frame,
                egui::ColorImage::filled([2, 2], egui::Color32::RED),
            );
        }
        assert_eq!(thumbnails.frames(), (7..=12).collect::<Vec<_>>());
        thumbnails.want(12);
        assert!(
            thumbnails.take_wanted().is_empty(),
            "a shown frame is not asked again"
        );
    }

    #[test]
    fn decoding_shrinks_the_image_and_a_bad_file_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("frame.png");
        image::RgbaImage::from_pixel(800, 400, image::Rgba([10, 200, 30, 255]))
            .save(&path)
            .unwrap();
        let preview = decode(&path, THUMBNAIL_PIXELS).unwrap();
        assert_eq!(preview.size, [200, 100]);
        let full = decode(&path, FULL_VIEW_PIXELS).unwrap();
        assert_eq!(full.size, [800, 400], "a small frame is not enlarged");
        let missing = decode(&dir.path().join("none.png"), THUMBNAIL_PIXELS).unwrap_err();
        assert!(missing.contains("none.png"), "{missing}");
    }
}
