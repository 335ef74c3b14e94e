//! Opening a lake: a URL or directory → an object store, a root prefix, and the I/O
//! runtime its requests run on.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;
use rushhour_cloud::{BadLakeUrl, Io, LakeUrl, StoreError, open_store};

/// Why a lake could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// The URL does not name a lake.
    #[error(transparent)]
    Url(#[from] BadLakeUrl),
    /// The store could not be opened.
    #[error("lake: {0}")]
    Store(#[from] StoreError),
    /// The store answered with an error.
    #[error("lake {url}: {source}")]
    Unreachable {
        /// The lake.
        url: String,
        /// What the store said.
        #[source]
        source: object_store::Error,
    },
    /// A lake to read has nothing there.
    #[error("no lake at {0}: nothing is stored under it")]
    Missing(String),
}

/// A lake root on an object store, with the runtime that runs its I/O.
#[derive(Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    location: LakeUrl,
    io: Io,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("url", &self.url).finish()
    }
}

impl Lake {
    /// Opens the lake at `url` (a directory, `file:` URL or `s3://BUCKET/PREFIX`; see
    /// [`LakeUrl`]), creating a local directory if needed. Its I/O runs on `io`.
    pub fn open(url: &str, io: &Io) -> Result<Lake, LakeError> {
        Self::open_url(&LakeUrl::parse(url)?, true, io)
    }

    /// Opens the lake at `url`, which must exist (for commands that only read): a
    /// local directory that is there, or an S3 prefix with at least one object.
    pub fn open_existing(url: &str, io: &Io) -> Result<Lake, LakeError> {
        let lake = Self::open_url(&LakeUrl::parse(url)?, false, io)?;
        if !lake.location.is_local() {
            let store = lake.store.clone();
            let root = lake.root.clone();
            let first = io.block_on(async move {
                use futures::StreamExt;
                store.list(Some(&root)).next().await.transpose()
            });
            match first {
                Ok(Some(_)) => {}
                Ok(None) => return Err(LakeError::Missing(lake.url.clone())),
                Err(source) => {
                    return Err(LakeError::Unreachable {
                        url: lake.url.clone(),
                        source,
                    });
                }
            }
        }
        Ok(lake)
    }

    /// Opens the lake at a parsed location.
    pub fn open_url(location: &LakeUrl, create: bool, io: &Io) -> Result<Lake, LakeError> {
        let (store, root, url) = open_store(location, create)?;
        Ok(Lake {
            store,
            root,
            url,
            location: location.clone(),
            io: io.clone(),
        })
    }

    /// A lake over any object store under `root` (tests).
    pub fn from_store(store: Arc<dyn ObjectStore>, root: Path, url: &str, io: &Io) -> Lake {
        Lake {
            store,
            location: LakeUrl::Local(url.into()),
            root,
            url: url.to_owned(),
            io: io.clone(),
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
            location: self.location.join(relative),
            io: self.io.clone(),
        }
    }

    /// The store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The runtime the lake's I/O runs on.
    pub fn io(&self) -> &Io {
        &self.io
    }

    /// Where the lake is, for messages.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where the lake is, parsed.
    pub fn location(&self) -> &LakeUrl {
        &self.location
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
