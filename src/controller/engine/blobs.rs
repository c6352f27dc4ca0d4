//! What a job sends to each node: the files' hashes and the manifest that
//! places them beside the .blend.

use super::*;

/// Everything a node needs besides the .blend: the files the scene reads
/// and the manifest that places them; returns every blob to send (the
/// .blend last) and the manifest's hash.
pub(super) async fn job_blobs(
    spec: &JobSpec,
    blend_hash: &str,
    blend_bytes: u64,
) -> Result<(Vec<Blob>, Option<String>), EngineError> {
    let blend = Blob {
        hash: blend_hash.to_string(),
        bytes: blend_bytes,
        source: BlobSource::File(spec.baked.clone().unwrap_or_else(|| spec.blend.clone())),
    };
    if spec.files.is_empty() {
        return Ok((vec![blend], None));
    }
    let blend_abs = std::path::absolute(&spec.blend).map_err(|source| EngineError::Blend {
        path: spec.blend.clone(),
        source,
    })?;
    let placed = |path: &std::path::Path| {
        deps::job_key(path).ok_or_else(|| EngineError::Blend {
            path: path.to_path_buf(),
            source: std::io::Error::other("not an absolute path herd can place on the nodes"),
        })
    };
    let mut blobs = Vec::with_capacity(spec.files.len() + 2);
    let mut files = Vec::with_capacity(spec.files.len());
    for path in &spec.files {
        let (hash, bytes) = hash_file(path).await?;
        files.push(ManifestFile {
            path: placed(path)?,
            blob: hash.clone(),
        });
        if !blobs.iter().any(|blob: &Blob| blob.hash == hash) {
            blobs.push(Blob {
                hash,
                bytes,
                source: BlobSource::File(path.clone()),
            });
        }
    }
    let manifest = Manifest {
        blend_path: placed(&blend_abs)?,
        files,
    };
    manifest.validate().map_err(|err| EngineError::Blend {
        path: spec.blend.clone(),
        source: std::io::Error::other(err.to_string()),
    })?;
    let json = serde_json::to_vec(&manifest)
        .map_err(|err| EngineError::Local(format!("cannot write the job's manifest: {err}")))?;
    let hash = hex::encode(Sha256::digest(&json));
    blobs.push(Blob {
        hash: hash.clone(),
        bytes: json.len() as u64,
        source: BlobSource::Memory(bytes::Bytes::from(json)),
    });
    blobs.push(blend);
    Ok((blobs, Some(hash)))
}

pub(super) async fn hash_file(path: &std::path::Path) -> Result<(String, u64), EngineError> {
    let path = path.to_path_buf();
    let error_path = path.clone();
    tokio::task::spawn_blocking(move || crate::node::blobs::hash_file(&path))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
        .map_err(|source| EngineError::Blend {
            path: error_path,
            source,
        })
}
