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
    let is_exr = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("exr"));
    let image = if is_exr {
        decode_exr(path)
    } else {
        image::open(path).map_err(|err| err.to_string())
    }
    .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
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

/// An OpenEXR frame as Blender would show it with its standard view: the
/// colour of its combined pass (a multilayer file's first view layer's
/// `Combined`, or a plain file's R, G, B), linear values turned to sRGB.
fn decode_exr(path: &Path) -> Result<image::DynamicImage, String> {
    use exr::prelude::*;
    let file = read()
        .no_deep_data()
        .largest_resolution_level()
        .all_channels()
        .all_layers()
        .all_attributes()
        .from_file(path)
        .map_err(|err| err.to_string())?;
    // Every channel by its full name: `ViewLayer.Combined.R`, or `R`.
    let mut channels = Vec::new();
    for layer in &file.layer_data {
        let prefix = layer
            .attributes
            .layer_name
            .as_ref()
            .map(|name| format!("{name}."))
            .unwrap_or_default();
        for channel in &layer.channel_data.list {
            let name = format!("{prefix}{}", channel.name);
            channels.push((name, layer.size, &channel.sample_data));
        }
    }
    let find = |name: &str| channels.iter().find(|(full, ..)| full == name);
    // The colour channels' common prefix: the combined pass first.
    let prefixes = channels
        .iter()
        .filter_map(|(name, ..)| name.strip_suffix('R'))
        .filter(|prefix| {
            find(&format!("{prefix}G")).is_some() && find(&format!("{prefix}B")).is_some()
        });
    let prefix = prefixes
        .clone()
        .find(|prefix| prefix.ends_with("Combined."))
        .or_else(|| prefixes.clone().find(|prefix| prefix.is_empty()))
        .or_else(|| prefixes.clone().next())
        .ok_or("no colour channels (R, G, B) in it")?
        .to_string();
    let colour: Vec<_> = ["R", "G", "B"]
        .iter()
        .filter_map(|channel| find(&format!("{prefix}{channel}")))
        .collect();
    let alpha = find(&format!("{prefix}A"));
    let size = colour[0].1;
    let pixels = size.width() * size.height();
    if colour.iter().any(|(_, other, _)| *other != size) {
        return Err("its colour channels differ in size".into());
    }
    let mut rgba = Vec::with_capacity(pixels * 4);
    for index in 0..pixels {
        for (_, _, samples) in &colour {
            rgba.push(linear_to_srgb(samples.value_by_flat_index(index).to_f32()));
        }
        let a = alpha
            .filter(|(_, alpha_size, _)| *alpha_size == size)
            .map_or(1.0, |(_, _, samples)| {
                samples.value_by_flat_index(index).to_f32()
            });
        rgba.push((a.clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    let width = u32::try_from(size.width()).map_err(|_| "too wide")?;
    let height = u32::try_from(size.height()).map_err(|_| "too tall")?;
    image::RgbaImage::from_raw(width, height, rgba)
        .map(image::DynamicImage::ImageRgba8)
        .ok_or_else(|| "its pixels do not fill it".into())
}

/// A linear value in sRGB's 8 bits (Blender's "Standard" view).
fn linear_to_srgb(linear: f32) -> u8 {
    let linear = if linear.is_finite() {
        linear.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let encoded = if linear <= 0.003_130_8 {
        linear * 12.92
    } else {
        1.055 * linear.powf(1.0 / 2.4) - 0.055
    };
    (encoded * 255.0).round() as u8
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

    /// Writes an EXR of 4×2 pixels holding `channels` (name, one value).
    fn exr(dir: &Path, name: &str, channels: &[(&str, f32)]) -> std::path::PathBuf {
        use exr::prelude::*;
        let pixels = 4 * 2;
        let list = channels
            .iter()
            .map(|(name, value)| AnyChannel::new(*name, FlatSamples::F32(vec![*value; pixels])))
            .collect();
        let path = dir.join(name);
        Image::from_channels((4, 2), AnyChannels::sort(list))
            .write()
            .to_file(&path)
            .unwrap();
        path
    }

    #[test]
    fn an_exr_shows_its_combined_pass_as_blender_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        // A multilayer file as Blender writes one: passes of a view layer.
        let multilayer = exr(
            dir.path(),
            "multilayer.exr",
            &[
                ("ViewLayer.Depth.Z", 40.0),
                ("ViewLayer.Normal.R", 0.0),
                ("ViewLayer.Normal.G", 0.0),
                ("ViewLayer.Normal.B", 1.0),
                ("ViewLayer.Combined.R", 1.0),
                ("ViewLayer.Combined.G", 0.2159),
                ("ViewLayer.Combined.B", 0.0),
                ("ViewLayer.Combined.A", 1.0),
            ],
        );
        let image = decode(&multilayer, 200).unwrap();
        assert_eq!(image.size, [4, 2]);
        // Linear 0.2159 is sRGB 128: the view transform, not a clamp.
        assert_eq!(image.pixels[0], egui::Color32::from_rgb(255, 128, 0));

        let plain = exr(
            dir.path(),
            "plain.exr",
            &[("R", 0.0), ("G", 0.0), ("B", 1.0)],
        );
        assert_eq!(
            decode(&plain, 200).unwrap().pixels[5],
            egui::Color32::from_rgb(0, 0, 255)
        );

        let passes_only = exr(dir.path(), "depth.exr", &[("ViewLayer.Depth.Z", 3.0)]);
        let error = decode(&passes_only, 200).unwrap_err();
        assert!(error.contains("no colour channels"), "{error}");
    }

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
