//! The servers table: every node heard or added, its state in the job,
//! and whether it takes part.

use super::*;

impl ControllerApp {
    /// A field to add a server by address.
    pub(super) fn add_node_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            let label = ui.label("Add a server");
            let field = ui
                .add(
                    egui::TextEdit::singleline(&mut self.new_node)
                        .hint_text("http://192.168.1.20:8082")
                        .desired_width(220.0),
                )
                .labelled_by(label.id);
            let entered = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui.button("Add").clicked() || entered {
                let uri = self.new_node.trim().trim_end_matches('/').to_string();
                let host = uri.strip_prefix("http://").unwrap_or("");
                if host.is_empty() || host.contains('/') {
                    self.message = Some((
                        MessageKind::Error,
                        format!("'{uri}' is not a server address: write it like http://192.168.1.20:8082"),
                    ));
                } else {
                    if !self.remembered.servers.contains(&uri) {
                        self.remembered.servers.push(uri.clone());
                    }
                    self.send(BridgeCommand::AddNode(uri));
                    self.new_node.clear();
                }
            }
        });
    }

    pub(super) fn servers_ui(&mut self, ui: &mut egui::Ui) {
        ui.heading("Servers");
        self.add_node_ui(ui);
        let nodes: Vec<_> = self.state.table_rows().into_iter().cloned().collect();
        if nodes.is_empty() {
            ui.weak("Looking for servers… (nodes on this network show up by themselves)");
            return;
        }
        let mut toggled = Vec::new();
        let row_height = ui.spacing().interact_size.y + 2.0;
        TableBuilder::new(ui)
            .id_salt("servers")
            .striped(true)
            .vscroll(false)
            .cell_layout(egui::Layout::left_to_right(egui::Align::Center))
            .column(Column::auto())
            .column(Column::auto().at_least(120.0))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::remainder().at_least(120.0))
            .column(Column::auto())
            .column(Column::auto())
            .column(Column::auto())
            .header(20.0, |mut header| {
                for title in [
                    "Use",
                    "Name",
                    "Address",
                    "Status",
                    "Blender",
                    "Cores",
                    "Frame",
                    "Done",
                    "s/frame",
                    "Last seen",
                ] {
                    header.col(|ui| {
                        ui.strong(title);
                    });
                }
            })
            .body(|body| {
                body.rows(row_height, nodes.len(), |mut row| {
                    let Some(node) = nodes.get(row.index()) else {
                        return;
                    };
                    row.col(|ui| {
                        let mut enabled = node.enabled;
                        if ui
                            .checkbox(&mut enabled, "")
                            .accessible_name(format!("Use {}", node.name))
                            .on_hover_text("Use this server in the job")
                            .changed()
                        {
                            toggled.push((node.id, node.uri.clone(), enabled));
                        }
                    });
                    row.col(|ui| {
                        ui.label(&node.name);
                    });
                    row.col(|ui| {
                        ui.label(node.uri.trim_start_matches("http://"));
                    });
                    row.col(|ui| {
                        let status = ui.colored_label(
                            palette::node_color(node.status),
                            palette::node_label(node.status),
                        );
                        if let Some(error) = &node.error {
                            status.on_hover_text(error);
                        }
                    });
                    row.col(|ui| {
                        ui.label(&node.blender_version);
                    });
                    row.col(|ui| {
                        ui.label(node.cores.to_string());
                    });
                    row.col(|ui| match node.current {
                        Some((frame, progress)) => {
                            ui.add(
                                egui::ProgressBar::new(progress)
                                    .text(format!("frame {frame}: {:.0}%", progress * 100.0)),
                            );
                        }
                        None => {
                            ui.weak("–");
                        }
                    });
                    row.col(|ui| {
                        ui.label(node.frames_done.to_string());
                    });
                    row.col(|ui| {
                        let label = ui.label(
                            node.secs_per_frame
                                .map_or_else(|| "–".to_string(), |secs| format!("{secs:.1}")),
                        );
                        if let Some(prep) = node.prep_secs {
                            label.on_hover_text(format!(
                                "{prep:.2} s of a frame go before its first sample (moving to the frame, preparing the scene)"
                            ));
                        }
                    });
                    row.col(|ui| {
                        ui.label(last_seen(node));
                    });
                });
            });
        for (node, uri, enabled) in toggled {
            if enabled {
                self.remembered.left_out.remove(&uri);
            } else {
                self.remembered.left_out.insert(uri);
            }
            if self.job_running() {
                self.send(BridgeCommand::Engine(EngineCommand::SetNodeEnabled {
                    node,
                    enabled,
                }));
            } else if let Some(row) = self.state.servers.iter_mut().find(|row| row.id == node) {
                row.enabled = enabled;
            }
            self.send(BridgeCommand::LeaveOut(self.remembered.left_out.clone()));
        }
    }
}

/// When a server last answered, as the table says it.
fn last_seen(node: &NodeView) -> String {
    match node.last_seen_secs {
        Some(secs) if secs >= 3600.0 => format!("{:.0} h ago", (secs / 3600.0).floor()),
        Some(secs) if secs >= 60.0 => format!("{:.0} min ago", (secs / 60.0).floor()),
        Some(secs) if secs >= 3.0 => format!("{secs:.0} s ago"),
        Some(_) => "now".into(),
        None if node.status == NodeStatus::Lost => "–".into(),
        None => "now".into(),
    }
}
