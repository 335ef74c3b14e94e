//! Opening a lake: a URL or directory → an object store and a root prefix.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

/// Why a lake could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The local directory could not be created or used.
    #[error("cannot use lake directory {path}: {reason}")]
    Local {
        /// The directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// A scheme this build does not support yet.
    #[error(
        "lake {0}: object-store lakes (s3://) arrive in a later release; use a local directory"
    )]
    Unsupported(String),
}

/// A lake root on an object store.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

impl Lake {
    /// Opens (creating if needed) the lake at `url`: a directory path or `file://` URL.
    pub fn open(url: &str) -> Result<Lake, LakeError> {
        Self::open_with(url, true)
    }

    /// Opens the lake at `url`, which must exist (for commands that only read).
    pub fn open_existing(url: &str) -> Result<Lake, LakeError> {
        Self::open_with(url, false)
    }

    fn open_with(url: &str, create: bool) -> Result<Lake, LakeError> {
        if url.contains("://") && !url.starts_with("file://") {
            return Err(LakeError::Unsupported(url.to_owned()));
        }
        // The same spellings `rushhour query` takes: PATH, file:PATH, file:///PATH,
        // file://localhost/PATH.
        let dir = url
            .strip_prefix("file://localhost")
            .or_else(|| url.strip_prefix("file://"))
            .or_else(|| url.strip_prefix("file:"))
            .unwrap_or(url);
        if dir.is_empty() {
            return Err(LakeError::Local {
                path: url.to_owned(),
                reason: "empty path".into(),
            });
        }
        let local = |reason: String| LakeError::Local {
            path: dir.to_owned(),
            reason,
        };
        if create {
            std::fs::create_dir_all(dir).map_err(|e| local(e.to_string()))?;
        } else if !std::path::Path::new(dir).is_dir() {
            return Err(local("no such directory".into()));
        }
        let canonical = std::fs::canonicalize(dir).map_err(|e| local(e.to_string()))?;
        if !canonical.is_dir() {
            return Err(local("not a directory".into()));
        }
        let store =
            LocalFileSystem::new_with_prefix(&canonical).map_err(|e| local(e.to_string()))?;
        Ok(Lake {
            store: Arc::new(store),
            root: Path::default(),
            url: canonical.display().to_string(),
        })
    }

    /// A lake over any object store under `root` (tests, and S3 later).
    pub fn from_store(store: Arc<dyn ObjectStore>, root: Path, url: &str) -> Lake {
        Lake {
            store,
            root,
            url: url.to_owned(),
        }
    }

    /// The lake rooted at `relative` inside this one (same store): where a pipeline's
    /// checkpoints live, `_checkpoints/<name>`.
    pub fn child(&self, relative: &str) -> Lake {
        let url = format!("{}/{}", self.url.trim_end_matches('/'), relative);
        Lake {
            store: self.store.clone(),
            root: self.path(relative),
            url,
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// Where the lake is, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object path of `relative` (slash-separated, relative to the lake root).
    pub fn path(&self, relative: &str) -> Path {
        let relative = Path::from(relative);
        let mut parts: Vec<_> = self.root.parts().collect();
        parts.extend(relative.parts());
        Path::from_iter(parts)
    }

    /// The lake-relative form of an object path.
    pub fn relative(&self, path: &Path) -> String {
        path.prefix_match(&self.root)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| path.to_string())
    }
}
