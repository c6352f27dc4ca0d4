//! Wire types shared by node and controller: the UDP discovery datagrams and
//! the bodies of the HTTP API. Serde only; every datagram carries the protocol
//! version so old and new herds on one LAN ignore each other instead of
//! misreading each other.

use serde::{Deserialize, Serialize};

/// Version of the discovery datagrams and of the `/api/v1` bodies.
pub const PROTOCOL_VERSION: u32 = 1;

/// Default TCP port of a node's HTTP API and UDP port of discovery.
pub const DEFAULT_PORT: u16 = 8082;

/// Largest discovery datagram herd sends or reads; anything longer is not ours.
pub const MAX_DATAGRAM_BYTES: usize = 1024;

/// Lowest and highest frame number Blender accepts (`MINAFRAME`, `MAXFRAME`).
pub const FRAME_RANGE: std::ops::RangeInclusive<i32> = -1_048_574..=1_048_574;

/// What a node is doing, as announced in beacons and `GET /api/v1/node`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Waiting for work.
    Idle,
    /// Starting Blender or loading a .blend into it.
    Loading,
    /// Rendering a frame.
    Rendering,
    /// Paused by the machine's owner: takes no new frames.
    Paused,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Idle => "idle",
            Self::Loading => "loading",
            Self::Rendering => "rendering",
            Self::Paused => "paused",
        })
    }
}

/// A UDP discovery datagram.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Datagram {
    /// A node announcing itself.
    Beacon(Beacon),
    /// A controller asking every node to announce itself now.
    Probe(Probe),
}

/// A node's announcement: who it is and where its API is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Beacon {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub herd: u32,
    /// The node's stable id.
    pub id: String,
    /// Human-readable name, the host name by default.
    pub name: String,
    /// Base URI of the node's HTTP API as reachable from the receiving side,
    /// e.g. `http://10.77.0.2:8082`.
    pub uri: String,
    /// What the node is doing.
    pub state: NodeState,
    /// herd version of the node.
    pub version: String,
}

/// A controller's "who is there".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Protocol version, [`PROTOCOL_VERSION`].
    pub herd: u32,
}

impl Datagram {
    /// Reads a datagram; anything that is not a well-formed herd datagram of
    /// this protocol version gives `None`. Never panics, whatever the bytes.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_DATAGRAM_BYTES {
            return None;
        }
        let datagram: Self = serde_json::from_slice(bytes).ok()?;
        let version = match &datagram {
            Self::Beacon(beacon) => beacon.herd,
            Self::Probe(probe) => probe.herd,
        };
        (version == PROTOCOL_VERSION).then_some(datagram)
    }

    /// The datagram's bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `GET /api/v1/node`: the node's identity and what it is doing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Stable id, kept in the node's work dir across restarts.
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// herd version.
    pub version: String,
    /// Blender version, e.g. `3.4.1`.
    pub blender_version: String,
    /// Path of the Blender executable.
    pub blender_path: String,
    /// Process id of the loaded Blender, when one is running.
    pub blender_pid: Option<u32>,
    /// CPU cores the machine offers.
    pub cores: usize,
    /// What the node is doing.
    pub state: NodeState,
    /// The frame being rendered, if any.
    pub current: Option<CurrentFrame>,
    /// Renders waiting in the node's queue.
    pub queued: usize,
    /// Frames rendered successfully since start.
    pub frames_rendered: u64,
    /// Seconds since the node started.
    pub uptime_secs: f64,
    /// Bytes of files uploaded to it and kept since it started.
    #[serde(default)]
    pub blob_bytes_received: u64,
    /// Bound of its file cache in bytes (`--cache-size`): a job's files
    /// must fit in it together. Absent from older nodes.
    #[serde(default)]
    pub cache_bytes: Option<u64>,
}

/// The frame a node is working on.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurrentFrame {
    /// Render id.
    pub render_id: String,
    /// Frame number.
    pub frame: i32,
    /// 0.0 to 1.0, from Blender's own statistics.
    pub progress: f32,
}

/// Output image format a render can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    /// PNG, 8 bits per channel.
    #[serde(rename = "PNG")]
    Png,
    /// JPEG.
    #[serde(rename = "JPEG")]
    Jpeg,
    /// OpenEXR, floating point.
    #[serde(rename = "OPEN_EXR")]
    OpenExr,
}

/// Per-request changes to the file's own render settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Resolution percentage, 1 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution_percent: Option<u32>,
    /// Render samples (Cycles samples, EEVEE render samples), at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<u32>,
    /// Output format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ImageFormat>,
    /// The scene to render (Blender's `-S`); none: the file's active scene.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scene: Option<String>,
    /// The file part of the output path (e.g. `shot_###`), named by
    /// Blender's rules (`#` for the frame number, the format's extension);
    /// none: the scene's own. The controller chooses the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_name: Option<String>,
    /// Keep a Cycles scene warm between frames (persistent data); none:
    /// yes, unless the node runs short of memory. `false`: the file's own
    /// setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_data: Option<bool>,
    /// Step through every frame from the scene's start (or from the frame
    /// rendered before) up to this one, as playback does: for scenes whose
    /// frames depend on the ones before (unbaked simulations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_frames: Option<bool>,
}

impl Overrides {
    /// Checks the values are ones Blender accepts; the error says which is not.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(percent) = self.resolution_percent
            && !(1..=1000).contains(&percent)
        {
            return Err(format!(
                "resolution_percent {percent} is out of range: use 1 to 1000"
            ));
        }
        if let Some(samples) = self.samples
            && !(1..=16_777_216).contains(&samples)
        {
            return Err(format!(
                "samples {samples} is out of range: use 1 to 16777216"
            ));
        }
        if let Some(scene) = &self.scene
            && (scene.is_empty() || scene.len() > 255 || scene.contains('\0'))
        {
            return Err("scene must be a scene's name: 1 to 255 bytes, no NUL".into());
        }
        if let Some(name) = &self.output_name
            && (name.len() > 255 || name.contains(['/', '\\', '\0']) || name == "." || name == "..")
        {
            return Err(format!(
                "output_name {name:?} must be a file name: at most 255 bytes, no slashes or NUL"
            ));
        }
        Ok(())
    }
}

/// `POST /api/v1/renders`: render one frame of an uploaded .blend.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenderRequest {
    /// SHA-256 (lowercase hex) of the .blend, uploaded before with
    /// `PUT /api/v1/blobs/{sha256}`.
    pub blob: String,
    /// Frame number.
    pub frame: i32,
    /// Changes to the file's own settings.
    #[serde(default)]
    pub overrides: Overrides,
    /// SHA-256 of the job's [`Manifest`], uploaded as a blob: the .blend's
    /// place in the job's folder and the other files it reads. None: the
    /// .blend alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// Files in a manifest, at most.
pub const MANIFEST_MAX_FILES: usize = 1_000_000;

/// The files of a job besides its .blend, laid out in a folder of the job's
/// own on each node (see `controller::deps`). Sent as a blob (JSON) and
/// named by render requests, so thousands of frames share one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Where the .blend goes in the job's folder, e.g. `home/ann/shot/a.blend`.
    pub blend_path: String,
    /// The other files.
    pub files: Vec<ManifestFile>,
}

/// One file of a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// Its place in the job's folder, e.g. `home/ann/shot/tex/wood.png`.
    pub path: String,
    /// SHA-256 of its content, a blob on the node.
    pub blob: String,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, or not a manifest's fields.
    #[error("the job's manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// A path that could leave the job's folder or cannot be a file name.
    #[error(
        "the job's manifest names an unsafe path {0:?}: paths are relative, with plain parts only (no '..', '.', empty parts or backslashes)"
    )]
    UnsafePath(String),
    /// Not a SHA-256 in lowercase hex.
    #[error("the job's manifest names {0:?}, which is not a SHA-256 in lowercase hex")]
    BadHash(String),
    /// Two files in one place, or a file where a folder must be.
    #[error("the job's manifest puts two files at {0:?}")]
    Clash(String),
    /// More files than [`MANIFEST_MAX_FILES`].
    #[error("the job's manifest lists {0} files, more than {MANIFEST_MAX_FILES}")]
    TooMany(usize),
}

impl Manifest {
    /// Reads and checks a manifest; never panics, whatever the bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let manifest: Self = serde_json::from_slice(bytes)?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks every path is a safe place in the job's folder (see
    /// [`is_safe_job_path`]), every blob a hash, and that no two files
    /// clash (the same path, or a file where another needs a folder).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.files.len() > MANIFEST_MAX_FILES {
            return Err(ManifestError::TooMany(self.files.len()));
        }
        let mut paths: Vec<&str> = Vec::with_capacity(self.files.len() + 1);
        paths.push(&self.blend_path);
        for file in &self.files {
            if !is_hash(&file.blob) {
                return Err(ManifestError::BadHash(file.blob.clone()));
            }
            paths.push(&file.path);
        }
        for path in &paths {
            if !is_safe_job_path(path) {
                return Err(ManifestError::UnsafePath((*path).to_string()));
            }
        }
        // Sorted, a clash sits next to what it clashes with: "a" before
        // "a/b" ('/' sorts before the other characters of a name... or
        // after some: compare with every later path sharing the prefix).
        paths.sort_unstable();
        for (index, path) in paths.iter().enumerate() {
            for later in &paths[index + 1..] {
                if !later.starts_with(path) {
                    break;
                }
                if later.len() == path.len() || later.as_bytes()[path.len()] == b'/' {
                    return Err(ManifestError::Clash((*later).to_string()));
                }
            }
        }
        Ok(())
    }

    /// Every blob it names, the .blend's excluded.
    pub fn blobs(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|file| file.blob.as_str())
    }
}

/// Whether `hash` is a SHA-256 in lowercase hex.
pub fn is_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `path` is a safe place in a job's folder: relative, plain parts
/// only (no `..`, `.`, empty parts or backslashes), no NUL, at most 4096
/// bytes. Nodes refuse anything else, whoever sent it.
pub fn is_safe_job_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 4096
        && !path.contains(['\0', '\\'])
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// Why a `POST /api/v1/renders` body was refused; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RenderRequestError {
    /// Not JSON, or not the fields and types of a render request.
    #[error("invalid render request: {0}")]
    Json(#[from] serde_json::Error),
    /// A frame Blender cannot render.
    #[error(
        "frame {0} is outside Blender's frame range {min}..={max}",
        min = FRAME_RANGE.start(),
        max = FRAME_RANGE.end()
    )]
    FrameOutOfRange(i32),
    /// An override Blender does not accept.
    #[error("{0}")]
    Overrides(String),
}

impl RenderRequest {
    /// Reads and checks a request body, as the node's API does: the
    /// JSON, then [`RenderRequest::validate`]. Never panics, whatever the
    /// bytes.
    pub fn from_json(body: &[u8]) -> Result<Self, RenderRequestError> {
        let request: Self = serde_json::from_slice(body)?;
        request.validate()?;
        Ok(request)
    }

    /// Checks the frame and the overrides are ones Blender accepts. The blob
    /// is checked where it is looked up.
    pub fn validate(&self) -> Result<(), RenderRequestError> {
        if !FRAME_RANGE.contains(&self.frame) {
            return Err(RenderRequestError::FrameOutOfRange(self.frame));
        }
        self.overrides
            .validate()
            .map_err(RenderRequestError::Overrides)
    }
}

/// Answer to `POST /api/v1/renders`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderCreated {
    /// Id of the new render, for `/api/v1/renders/{id}`.
    pub id: String,
}

/// Where a render is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenderState {
    /// Waiting in the node's queue.
    Queued,
    /// Blender is starting or loading the .blend.
    Loading,
    /// Blender is rendering (or the image is being checked).
    Rendering,
    /// The image exists, decodes and has the expected size.
    Done,
    /// Blender or the image check failed; `error` says why.
    Failed,
    /// Cancelled by `DELETE` or by the node shutting down.
    Cancelled,
}

impl RenderState {
    /// Whether the render has ended, one way or another.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Done | Self::Failed | Self::Cancelled)
    }
}

/// `GET /api/v1/renders/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderStatus {
    /// Render id.
    pub id: String,
    /// SHA-256 of the .blend.
    pub blob: String,
    /// Frame number.
    pub frame: i32,
    /// Where the render is.
    pub state: RenderState,
    /// 0.0 to 1.0.
    pub progress: f32,
    /// Seconds Blender took to start and load the .blend for this frame, when
    /// it had to.
    pub load_secs: Option<f64>,
    /// Seconds Blender took to render and save the frame.
    pub render_secs: Option<f64>,
    /// Seconds the render waited in the queue.
    pub queued_secs: Option<f64>,
    /// Image width in pixels, once done.
    pub width: Option<u32>,
    /// Image height in pixels, once done.
    pub height: Option<u32>,
    /// File extension of the image (`png`, `jpg`, `exr`), once done.
    pub extension: Option<String>,
    /// Why the render failed, in Blender's own words where it gave some.
    pub error: Option<String>,
    /// Blender's last output lines while this render ran.
    pub log_tail: Vec<String>,
    /// Files the scene reads that this node does not have (not sent, or
    /// outside the job's folder): rendered without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_files: Vec<String>,
    /// Every file the frame wrote, once done, relative to the render:
    /// `image/NAME` for the frame itself (as Blender named it), `fo/K/PATH`
    /// for what the K-th File Output node of the scene wrote. Each is
    /// fetched with `GET /api/v1/renders/{id}/files/{path}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// What the node changed and the controller should say (e.g. a movie
    /// scene's frame written as PNG).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Of `render_secs`, the seconds before the first sample: moving to the
    /// frame and preparing the scene (sync, BVH, shaders). A warm scene
    /// (Cycles' persistent data) makes it small from the second frame on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prep_secs: Option<f64>,
}

/// `GET /api/v1/renders?since=SEQ&wait_ms=MS`: what changed on the node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RenderChanges {
    /// Sequence number of the last change; pass it as `since` next time.
    pub seq: u64,
    /// What the node is doing.
    pub state: NodeState,
    /// Renders not finished, and finished ones that changed after `since`.
    pub renders: Vec<RenderStatus>,
}

/// The body of every API error.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong and what to do about it.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beacon_round_trips() {
        let beacon = Datagram::Beacon(Beacon {
            herd: PROTOCOL_VERSION,
            id: "abc".into(),
            name: "box".into(),
            uri: "http://10.77.0.2:8082".into(),
            state: NodeState::Idle,
            version: "0.1.0".into(),
        });
        assert_eq!(Datagram::parse(&beacon.to_bytes()), Some(beacon));
    }

    #[test]
    fn garbage_and_other_versions_are_ignored() {
        assert_eq!(Datagram::parse(b""), None);
        assert_eq!(Datagram::parse(b"\xff\x00garbage"), None);
        assert_eq!(Datagram::parse(br#"{"kind":"probe","herd":99}"#), None);
        assert_eq!(Datagram::parse(br#"{"kind":"beacon","herd":1}"#), None);
        let huge = vec![b' '; MAX_DATAGRAM_BYTES + 1];
        assert_eq!(Datagram::parse(&huge), None);
        assert_eq!(
            Datagram::parse(br#"{"kind":"probe","herd":1}"#),
            Some(Datagram::Probe(Probe { herd: 1 }))
        );
    }

    #[test]
    fn overrides_are_range_checked() {
        assert!(Overrides::default().validate().is_ok());
        let zero = Overrides {
            resolution_percent: Some(0),
            ..Overrides::default()
        };
        assert!(zero.validate().unwrap_err().contains("resolution_percent"));
        let samples = Overrides {
            samples: Some(0),
            ..Overrides::default()
        };
        assert!(samples.validate().unwrap_err().contains("samples"));
    }

    #[test]
    fn render_requests_are_read_and_checked() {
        let blob = "a".repeat(64);
        let request =
            RenderRequest::from_json(format!(r#"{{"blob":"{blob}","frame":-3}}"#).as_bytes())
                .unwrap();
        assert_eq!((request.blob.as_str(), request.frame), (blob.as_str(), -3));
        for (body, expected) in [
            ("{".to_string(), "invalid render request"),
            (
                format!(r#"{{"blob":"{blob}","frame":1048575}}"#),
                "frame 1048575 is outside Blender's frame range -1048574..=1048574",
            ),
            (
                format!(
                    r#"{{"blob":"{blob}","frame":1,"overrides":{{"resolution_percent":1001}}}}"#
                ),
                "resolution_percent 1001 is out of range",
            ),
        ] {
            let err = RenderRequest::from_json(body.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(expected), "{body}: {err}");
        }
    }
}
