//! The controller's own node, in this process.

use super::*;

/// The controller's own node: a node in this process on a loopback port,
/// scheduled like any other. Start it early: its Blender starts at once, so
/// it is warm by the time the job begins.
#[derive(Debug)]
pub struct LocalNode {
    uri: String,
    node: Arc<Node>,
    stop: CancellationToken,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<std::io::Result<()>>>>,
}

impl LocalNode {
    /// Starts a node with `config` on 127.0.0.1, port chosen by the system.
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, EngineError> {
        let node = Node::new(config).map_err(|err| EngineError::Local(err.to_string()))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|err| EngineError::Local(err.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|err| EngineError::Local(err.to_string()))?;
        let stop = node.shutdown.clone();
        let task = tokio::spawn(node::serve(
            Arc::clone(&node),
            listener,
            None,
            std::future::pending(),
        ));
        Ok(Arc::new(Self {
            uri: format!("http://{addr}"),
            node,
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }))
    }

    /// Its API address.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Where its renders are on this machine's disk, for taking their
    /// files without HTTP.
    pub fn renders(&self) -> remote::LocalRenders {
        remote::LocalRenders {
            uri: self.uri.clone(),
            dir: self.node.render_dirs.root().to_path_buf(),
        }
    }

    /// Its Blender's version.
    pub fn blender_version(&self) -> &str {
        &self.node.blender_version
    }

    /// Reads a scene of the .blend at `path` with its warm Blender (see
    /// [`Node::inspect`]).
    pub async fn inspect(
        &self,
        path: &std::path::Path,
        scene: Option<&str>,
    ) -> Result<(serde_json::Value, Vec<String>), String> {
        self.node.inspect(path, scene).await
    }

    /// Stops it: cancels its frame and ends its Blender.
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl LocalNode {
    /// The local node's settings: this machine's name, the user's cache
    /// folder (or `work_dir`), `blender` with `threads` render threads.
    pub async fn config(
        blender: std::path::PathBuf,
        threads: Option<u32>,
        work_dir: Option<std::path::PathBuf>,
    ) -> Result<NodeConfig, String> {
        let blender_version = crate::blender::version(&blender)
            .await
            .map_err(|err| err.to_string())?;
        let work_dir = match work_dir {
            Some(dir) => dir,
            None => directories::ProjectDirs::from("", "", "herd")
                .map(|dirs| dirs.cache_dir().join("local-node"))
                .ok_or("no cache dir for this user: pass --work-dir")?,
        };
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Ok(NodeConfig {
            name: format!("{host} (local)"),
            work_dir: work_dir.clone(),
            cache_size_bytes: 20 << 30,
            blender: crate::blender::BlenderConfig {
                path: blender,
                threads,
                allow_scripts: false,
                frame_timeout: Duration::from_secs(600),
                max_frame_time: None,
                script_dir: work_dir,
            },
            blender_version,
            allow: Vec::new(),
            token: None,
            simulate: None,
        })
    }
}
