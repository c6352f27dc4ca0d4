//! `herd nodes`: list the nodes on the LAN.

use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use herd::controller::discovery;
use herd::wire::{DEFAULT_PORT, NodeInfo};

/// Options of `herd nodes`.
#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Seconds to listen for beacons.
    #[arg(long, default_value_t = 2.0)]
    pub wait: f64,
    /// UDP port nodes announce on.
    #[arg(long, default_value_t = DEFAULT_PORT)]
    pub discovery_port: u16,
    /// Also ask this node directly, e.g. http://10.0.0.5:8082 (repeatable).
    #[arg(long, value_name = "URI")]
    pub node: Vec<String>,
    /// Do not probe or listen: only ask the --node addresses.
    #[arg(long)]
    pub no_discovery: bool,
    /// Shared secret of the nodes (their --token).
    #[arg(long, env = "HERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One line of the listing.
#[derive(Debug, Serialize)]
struct Listed {
    uri: String,
    #[serde(flatten)]
    info: Option<NodeInfo>,
    error: Option<String>,
}

/// Runs `herd nodes`.
pub async fn run(args: NodesArgs) -> Result<()> {
    if !(0.0..=600.0).contains(&args.wait) {
        bail!("--wait {} is out of range: use 0 to 600 seconds", args.wait);
    }
    let mut uris: Vec<String> = args
        .node
        .iter()
        .map(|uri| uri.trim_end_matches('/').to_string())
        .collect();
    if !args.no_discovery {
        let listener = discovery::Listener::bind(args.discovery_port)?;
        let mut beacons = listener.subscribe();
        listener.probe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.wait);
        while let Ok(beacon) = tokio::time::timeout_at(deadline, beacons.next()).await {
            if !uris.contains(&beacon.uri) {
                uris.push(beacon.uri);
            }
        }
    }
    let client = reqwest::Client::new();
    let mut listed = Vec::new();
    for uri in uris {
        let confirmed = discovery::confirm(&client, &uri, args.token.as_deref()).await;
        let (info, error) = match confirmed {
            Ok(info) => (Some(info), None),
            Err(err) => (None, Some(err.to_string())),
        };
        listed.push(Listed { uri, info, error });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        print_table(&listed);
    }
    Ok(())
}

fn print_table(listed: &[Listed]) {
    if listed.is_empty() {
        println!("no nodes found (is `herd node` running on the LAN, and UDP port open?)");
        return;
    }
    println!(
        "{:<20} {:<28} {:<10} {:<8} {:>5}",
        "NAME", "URI", "STATE", "BLENDER", "CORES"
    );
    for entry in listed {
        match (&entry.info, &entry.error) {
            (Some(info), _) => println!(
                "{:<20} {:<28} {:<10} {:<8} {:>5}",
                info.name, entry.uri, info.state, info.blender_version, info.cores
            ),
            (None, error) => println!(
                "{:<20} {:<28} error: {}",
                "?",
                entry.uri,
                error.as_deref().unwrap_or("unknown")
            ),
        }
    }
}
