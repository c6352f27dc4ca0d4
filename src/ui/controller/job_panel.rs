//! The job panel (what to render and how, before the job) and the
//! running job's progress.

use super::*;

impl ControllerApp {
    pub(super) fn job_panel_ui(&mut self, ui: &mut egui::Ui) {
        let mut start = false;
        let mut pick_dir = false;
        let mut close = false;
        let mut chosen_scene = None;
        let Some((scene, form)) = &mut self.scene else {
            return;
        };
        ui.heading(display_name(&scene.file));
        let samples = scene
            .samples
            .map_or_else(String::new, |samples| format!(", {samples} samples"));
        ui.label(format!(
            "Scene {}: frames {} at {} fps, {}×{} at {}%, {}{}, {}; saved by Blender {}",
            scene.scene,
            scene_frames(scene),
            scene.fps,
            scene.resolution_x,
            scene.resolution_y,
            scene.resolution_percentage,
            scene.engine,
            samples,
            scene.file_format,
            scene.saved_by,
        ));
        let files: usize = scene.dependencies.iter().map(|d| d.files.len()).sum();
        if files > 0 {
            ui.label(format!(
                "Reads {files} files beside the .blend (textures, libraries, caches): each is sent to every server once"
            ));
        }
        for warning in &scene.warnings {
            ui.colored_label(palette::WARNING, format!("Warning: {warning}"));
        }
        for note in &self.output_notes {
            ui.colored_label(palette::WARNING, format!("Note: {note}"));
        }
        let missing = scene.missing().len();
        egui::Grid::new("job_form")
            .num_columns(2)
            .spacing([12.0, 6.0])
            .show(ui, |ui| {
                let label = ui.label("Frames");
                ui.horizontal(|ui| {
                    ui.add(
                        egui::TextEdit::singleline(&mut form.frames)
                            .desired_width(160.0)
                            .hint_text("1-24,30,40-50x2"),
                    )
                    .labelled_by(label.id);
                    match form.parsed_frames() {
                        Ok(frames) => ui.weak(format!("{} frames", frames.len())),
                        Err(err) => ui.colored_label(palette::ERROR, err),
                    };
                });
                ui.end_row();

                let label = ui.label("Output folder");
                ui.horizontal(|ui| {
                    ui.add(egui::TextEdit::singleline(&mut form.output_dir).desired_width(320.0))
                        .labelled_by(label.id);
                    pick_dir = ui.button("Choose…").clicked();
                });
                ui.end_row();

                let label = ui.label("Resolution %");
                ui.add(egui::DragValue::new(&mut form.resolution_percent).range(1..=1000))
                    .labelled_by(label.id);
                ui.end_row();

                if let Some(samples) = &mut form.samples {
                    let label = ui.label("Samples");
                    ui.add(egui::DragValue::new(samples).range(1..=16_777_216))
                        .labelled_by(label.id);
                    ui.end_row();
                }

                if scene.scenes.len() > 1 {
                    let label = ui.label("Scene");
                    egui::ComboBox::from_id_salt("scene")
                        .selected_text(&scene.scene)
                        .show_ui(ui, |ui| {
                            for name in &scene.scenes {
                                if ui.selectable_label(*name == scene.scene, name).clicked()
                                    && *name != scene.scene
                                {
                                    chosen_scene = Some(name.clone());
                                }
                            }
                        })
                        .response
                        .labelled_by(label.id);
                    ui.end_row();
                }

                let label = ui.label("Format");
                let own = format!("As the scene ({})", scene.file_format);
                let selected = FORMATS
                    .iter()
                    .find(|(format, _)| Some(*format) == form.format)
                    .map_or(own.as_str(), |(_, name)| *name);
                egui::ComboBox::from_id_salt("format")
                    .selected_text(selected)
                    .show_ui(ui, |ui| {
                        ui.selectable_value(&mut form.format, None, own.as_str());
                        for (format, name) in FORMATS {
                            ui.selectable_value(&mut form.format, Some(format), name);
                        }
                    })
                    .response
                    .labelled_by(label.id);
                ui.end_row();

                ui.label("");
                ui.checkbox(
                    &mut form.overwrite,
                    "Render frames again that are there already",
                );
                ui.end_row();

                if scene.engine == "CYCLES" {
                    ui.label("");
                    ui.checkbox(
                        &mut form.warm_scene,
                        "Keep the scene warm between frames (faster; more memory)",
                    )
                    .on_hover_text(
                        "Cycles' persistent data: a node keeps geometry, BVH and shaders from one frame to the next and rebuilds only what changed",
                    );
                    ui.end_row();
                }
            });
        ui.horizontal(|ui| {
            let label = ui.label("When the job ends, run:");
            ui.add(
                egui::TextEdit::singleline(&mut self.remembered.on_end)
                    .hint_text("a shell command; it gets the job's summary as JSON on stdin")
                    .desired_width(320.0),
            )
            .labelled_by(label.id);
        });
        if missing > 0 {
            ui.checkbox(
                &mut self.allow_missing,
                format!(
                    "Render without the {missing} missing file(s) (a missing texture renders magenta)"
                ),
            );
        }
        ui.horizontal(|ui| {
            let valid = form.parsed_frames().is_ok() && (missing == 0 || self.allow_missing);
            start = ui.add_enabled(valid, egui::Button::new("Start")).clicked();
            close = ui.button("Close").clicked();
        });
        if pick_dir {
            self.send(BridgeCommand::PickOutputDir);
        }
        if start {
            self.start_job();
        }
        if close {
            self.scene = None;
        }
        if let Some(name) = chosen_scene
            && let Some((scene, form)) = &mut self.scene
        {
            form.scene = Some(name.clone());
            self.remembered.remember_form(&scene.file, form.clone());
            let path = scene.file.clone();
            self.inspect(path, Some(name));
        }
    }

    pub(super) fn progress_ui(&mut self, ui: &mut egui::Ui) {
        let total = self.state.frames.len();
        let (done, failed) = self
            .state
            .progress
            .as_ref()
            .map_or((0, 0), |progress| (progress.done, progress.failed));
        let fraction = if total == 0 {
            0.0
        } else {
            done as f32 / total as f32
        };
        ui.horizontal(|ui| {
            ui.add(
                egui::ProgressBar::new(fraction)
                    .desired_width(ui.available_width().min(400.0))
                    .text(format!("{done} / {total} frames")),
            );
            if let Some((step, done, of)) = self.encoding {
                ui.add(
                    egui::ProgressBar::new(done as f32 / of.max(1) as f32)
                        .desired_width(240.0)
                        .text(format!("{step}: {done} / {of}")),
                );
            }
            if self.job_running() {
                let paused = self.state.progress.as_ref().is_some_and(|p| p.paused);
                let (label, hint) = if paused {
                    ("Resume", "Hand out frames again")
                } else {
                    (
                        "Pause",
                        "Start no new frame; the frames being rendered finish",
                    )
                };
                if ui.button(label).on_hover_text(hint).clicked() {
                    self.send(BridgeCommand::Engine(EngineCommand::SetPaused(!paused)));
                }
                if ui.button("Cancel").clicked() {
                    self.send(BridgeCommand::Engine(EngineCommand::Cancel));
                }
            }
        });
        if let Some(progress) = &self.state.progress {
            let eta = progress.eta_secs.map_or_else(|| "–".to_string(), clock);
            if progress.paused {
                ui.colored_label(
                    palette::WARNING,
                    "Paused: no new frame starts; the frames being rendered finish",
                );
            }
            ui.label(format!(
                "Elapsed {}   ETA {}   {:.1} frames/min{}",
                clock(progress.elapsed_secs),
                eta,
                progress.frames_per_minute,
                if failed > 0 {
                    format!("   {failed} failed")
                } else {
                    String::new()
                }
            ));
        }
        if let Some(summary) = &self.state.summary {
            let (color, text) = match &summary.outcome {
                Outcome::Complete => (
                    palette::SUCCESS,
                    format!(
                        "Done: all {} frames are in {}",
                        summary.frames_total,
                        summary.output_dir.display()
                    ),
                ),
                Outcome::Incomplete => (
                    palette::ERROR,
                    format!(
                        "{} frames failed; hover them in the grid to see why",
                        summary.failed.len()
                    ),
                ),
                Outcome::Stuck { reason } => (palette::ERROR, format!("The job stopped: {reason}")),
                Outcome::Cancelled => (
                    palette::WARNING,
                    format!(
                        "Cancelled: {} of {} frames done",
                        summary.frames_done, summary.frames_total
                    ),
                ),
            };
            ui.colored_label(color, text);
        } else if let Some(dir) = self.state.output_dir.clone() {
            ui.horizontal(|ui| {
                ui.weak(format!("Output: {}", dir.display()));
                if ui.small_button("Open output folder").clicked() {
                    self.send(BridgeCommand::OpenPath(dir));
                }
            });
        }
    }
}
