//! Container records, state and the OCI runtime spec built from image config + flags.

pub mod events;
pub mod logs;
pub mod names;
pub mod private_dir;
pub mod record;
pub mod spec;
pub mod teardown;
pub mod volume;

use std::collections::HashSet;
use std::path::Path;

pub use record::{
    Containers, Isolation, NewContainer, ProcessIdentity, Record, RecordError, RestartPolicy,
    Status,
};

/// Image IDs ("sha256:<hex>") used by any container record under `root`, so that `rmi` can
/// refuse to delete an image a container still needs. A record that cannot be read counts as
/// using nothing: it will show up (and be removable) in `ps -a`.
pub fn images_in_use(root: &Path) -> std::io::Result<HashSet<String>> {
    let mut used = HashSet::new();
    let dir = root.join("containers");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(used),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let path = entry?.path().join("record.json");
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Some(id) = value.get("image_id").and_then(|v| v.as_str()) {
            used.insert(id.to_string());
        }
    }
    Ok(used)
}
