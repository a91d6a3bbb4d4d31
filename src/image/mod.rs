//! Images: references, the OCI content store, registry pull/push and layer unpacking.
//!
//! The store is an OCI image layout under `<root>/images/` (see [`store`]); layers are
//! unpacked once per diff-id into directories that serve as overlayfs lower dirs
//! (see [`unpack`]). Registry traffic speaks the OCI distribution API (see [`registry`]).

pub mod archive;
pub mod auth;
pub mod config_change;
pub mod digest;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

use std::path::PathBuf;

pub use reference::Reference;
pub use registry::{lookup_or_pull, pull, push, PullEvent, PullEvents, PullOptions};
pub use store::{LayerDescriptor, Store, StoredImage};

/// Everything that can go wrong with images, with messages that say what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("invalid reference format: {reason}: {input:?}")]
    InvalidReference { input: String, reason: String },

    /// A reference that names a tag or repository which is not in the local store.
    #[error("Unable to find image '{0}' locally")]
    NotFoundLocally(String),

    /// An image ID (or prefix) or name that matches nothing.
    #[error("No such image: {0}")]
    NoSuchImage(String),

    #[error("image ID prefix {0:?} is ambiguous: it matches more than one image")]
    AmbiguousId(String),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("corrupt file in the image store: {0}; remove the image (husk rmi -f) and pull or load it again")]
    CorruptStore(String),

    #[error("unsafe layer archive: {0}")]
    UnsafeArchive(String),

    #[error("bad archive: {0}")]
    BadArchive(String),

    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    #[error("invalid image content: {0}")]
    InvalidImage(String),

    #[error("cannot reach registry {registry}: {reason}")]
    RegistryUnreachable { registry: String, reason: String },

    #[error("manifest for {0} not found: manifest unknown")]
    ManifestUnknown(String),

    #[error("pull access denied for {0}, repository does not exist or may require 'husk login'")]
    AccessDenied(String),

    #[error("unauthorized: authentication to {0} failed: wrong username or password")]
    Unauthorized(String),

    #[error("registry {registry} error: {reason}")]
    Registry { registry: String, reason: String },

    #[error("no matching manifest for linux/amd64 in the manifest list entries of {0}")]
    NoMatchingPlatform(String),

    #[error("conflict: {0}")]
    Conflict(String),

    #[error("invalid --change {0:?}: {1}")]
    InvalidChange(String, String),

    #[error("docker config {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },

    #[error("{0}")]
    Json(String),
}

impl ImageError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}
