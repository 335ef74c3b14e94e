//! Lake URLs: the one parser behind every `--lake` and `--checkpoint`.

use std::fmt;
use std::path::PathBuf;

/// Where a lake (or a checkpoint directory) lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeUrl {
    /// A local directory: a plain path (relative or absolute), `file:PATH`,
    /// `file:///ABSOLUTE/PATH` or `file://localhost/ABSOLUTE/PATH`. The path is taken
    /// verbatim (no percent-decoding), as in the `file:` endpoints.
    Local(PathBuf),
    /// A prefix in an S3 bucket: `s3://BUCKET` or `s3://BUCKET/PREFIX`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

/// Why a lake URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad lake `{url}`: {reason}; expected a directory, file:PATH or s3://BUCKET/PREFIX")]
pub struct BadLakeUrl {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl LakeUrl {
    /// Parses a lake URL.
    pub fn parse(url: &str) -> Result<LakeUrl, BadLakeUrl> {
        let bad = |reason: &str| BadLakeUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if url.is_empty() {
            return Err(bad("the lake is empty"));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("missing bucket"));
            }
            if !bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
            {
                return Err(bad(
                    "a bucket name has lowercase letters, digits, `-` and `.` only",
                ));
            }
            let prefix = prefix.trim_matches('/');
            if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
                return Err(bad("the prefix has an empty, `.` or `..` segment"));
            }
            return Ok(LakeUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            });
        }
        if let Some(rest) = url.strip_prefix("file:") {
            let path = rushhour_schemas::endpoint::file_url_path(rest).map_err(bad)?;
            return Ok(LakeUrl::Local(PathBuf::from(path)));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(&format!("unknown scheme `{scheme}://`")));
        }
        Ok(LakeUrl::Local(PathBuf::from(url)))
    }

    /// Whether the lake is on the local file system.
    pub fn is_local(&self) -> bool {
        matches!(self, LakeUrl::Local(_))
    }

    /// This location joined with a relative, slash-separated path.
    pub fn join(&self, relative: &str) -> LakeUrl {
        let relative = relative.trim_matches('/');
        match self {
            LakeUrl::Local(dir) => LakeUrl::Local(dir.join(relative)),
            LakeUrl::S3 { bucket, prefix } => LakeUrl::S3 {
                bucket: bucket.clone(),
                prefix: match prefix.as_str() {
                    "" => relative.to_owned(),
                    p => format!("{p}/{relative}"),
                },
            },
        }
    }
}

impl std::str::FromStr for LakeUrl {
    type Err = BadLakeUrl;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LakeUrl::parse(s)
    }
}

impl fmt::Display for LakeUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LakeUrl::Local(dir) => write!(f, "{}", dir.display()),
            LakeUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            LakeUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_lake() {
        let local = |p: &str| Ok(LakeUrl::Local(PathBuf::from(p)));
        assert_eq!(LakeUrl::parse("lake"), local("lake"));
        assert_eq!(LakeUrl::parse("/tmp/lake"), local("/tmp/lake"));
        assert_eq!(LakeUrl::parse("file:lake"), local("lake"));
        assert_eq!(LakeUrl::parse("file:///tmp/lake"), local("/tmp/lake"));
        assert_eq!(
            LakeUrl::parse("file://localhost/tmp/lake"),
            local("/tmp/lake")
        );
        let s3 = |b: &str, p: &str| {
            Ok(LakeUrl::S3 {
                bucket: b.into(),
                prefix: p.into(),
            })
        };
        assert_eq!(LakeUrl::parse("s3://b"), s3("b", ""));
        assert_eq!(LakeUrl::parse("s3://b/"), s3("b", ""));
        assert_eq!(LakeUrl::parse("s3://b/x/y/"), s3("b", "x/y"));
        assert_eq!(
            LakeUrl::parse("s3://b/x").unwrap().join("_checkpoints/p"),
            s3("b", "x/_checkpoints/p").unwrap()
        );
        assert_eq!(
            LakeUrl::parse("s3://b/x/y").unwrap().to_string(),
            "s3://b/x/y"
        );
    }

    #[test]
    fn refuses_what_it_cannot_mean() {
        for url in [
            "",
            "file:",
            "file://host/x",
            "file://",
            "s3://",
            "s3:///x",
            "s3://Bucket/x",
            "s3://b/x/../y",
            "gs://b/x",
        ] {
            assert!(LakeUrl::parse(url).is_err(), "{url}");
        }
    }
}
