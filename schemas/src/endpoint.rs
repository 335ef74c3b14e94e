//! Source and sink URLs (CONTRACT §5): `file:PATH` (`-` is stdin/stdout), `log:DIR`,
//! `kafka://HOST:PORT[,HOST:PORT]/TOPIC`, `kinesis://STREAM`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where events are read from or written to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Newline-delimited JSON in a file.
    File(PathBuf),
    /// Newline-delimited JSON on stdin (as a source) or stdout (as a sink).
    Stdio,
    /// The embedded stream log in a directory.
    Log(PathBuf),
    /// A Kafka topic.
    Kafka {
        /// `HOST:PORT` of each bootstrap broker.
        brokers: Vec<String>,
        /// The topic.
        topic: String,
    },
    /// A Kinesis data stream.
    Kinesis {
        /// The stream name.
        stream: String,
    },
}

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "bad endpoint `{url}`: {reason}; expected file:PATH, file:-, log:DIR, kafka://HOST:PORT/TOPIC or kinesis://STREAM"
)]
pub struct BadEndpoint {
    /// The URL as given.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Endpoint {
    type Err = BadEndpoint;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| BadEndpoint {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(rest) = url.strip_prefix("kafka://") {
            let (hosts, topic) = rest.split_once('/').ok_or_else(|| bad("missing /TOPIC"))?;
            if topic.is_empty() || topic.contains('/') {
                return Err(bad("the topic must be one non-empty path segment"));
            }
            let brokers: Vec<String> = hosts.split(',').map(str::to_owned).collect();
            if brokers.iter().any(|b| {
                b.rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            }) {
                return Err(bad("each broker must be HOST:PORT"));
            }
            return Ok(Endpoint::Kafka {
                brokers,
                topic: topic.to_owned(),
            });
        }
        if let Some(stream) = url.strip_prefix("kinesis://") {
            if stream.is_empty() || stream.contains('/') {
                return Err(bad("the stream name must be one non-empty segment"));
            }
            return Ok(Endpoint::Kinesis {
                stream: stream.to_owned(),
            });
        }
        if let Some(path) = url.strip_prefix("file:") {
            if path == "-" {
                return Ok(Endpoint::Stdio);
            }
            return Ok(Endpoint::File(PathBuf::from(
                file_url_path(path).map_err(bad)?,
            )));
        }
        if let Some(dir) = url.strip_prefix("log:") {
            return Ok(Endpoint::Log(PathBuf::from(
                file_url_path(dir).map_err(bad)?,
            )));
        }
        Err(bad("unknown scheme"))
    }
}

/// The local path of what follows `file:` (or `log:`) in a URL: `PATH` (relative or
/// absolute, verbatim), `///ABSOLUTE` or `//localhost/ABSOLUTE`. Any other host is a
/// remote file, which is refused. Every URL parser of rushhour (endpoints, lakes)
/// reads local paths through this one function.
pub fn file_url_path(rest: &str) -> Result<&str, &'static str> {
    let path = match rest.strip_prefix("//") {
        Some(after) if after.starts_with('/') => after,
        Some(after) => match after.strip_prefix("localhost") {
            Some(path) if path.starts_with('/') => path,
            _ => return Err("a URL with // must name an absolute local path (file:///PATH)"),
        },
        None => rest,
    };
    if path.is_empty() {
        return Err("missing path");
    }
    Ok(path)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::File(p) => write!(f, "file:{}", p.display()),
            Endpoint::Stdio => f.write_str("file:-"),
            Endpoint::Log(p) => write!(f, "log:{}", p.display()),
            Endpoint::Kafka { brokers, topic } => {
                write!(f, "kafka://{}/{topic}", brokers.join(","))
            }
            Endpoint::Kinesis { stream } => write!(f, "kinesis://{stream}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            "file:a/b.jsonl".parse(),
            Ok(Endpoint::File("a/b.jsonl".into()))
        );
        assert_eq!("file:-".parse(), Ok(Endpoint::Stdio));
        assert_eq!("log:/tmp/x".parse(), Ok(Endpoint::Log("/tmp/x".into())));
        assert_eq!(
            "kafka://h1:9092,h2:9093/orders".parse(),
            Ok(Endpoint::Kafka {
                brokers: vec!["h1:9092".into(), "h2:9093".into()],
                topic: "orders".into()
            })
        );
        assert_eq!(
            "kinesis://events".parse(),
            Ok(Endpoint::Kinesis {
                stream: "events".into()
            })
        );
        assert_eq!("file:///tmp/a".parse(), Ok(Endpoint::File("/tmp/a".into())));
        assert_eq!(
            "log://localhost/tmp/l".parse(),
            Ok(Endpoint::Log("/tmp/l".into()))
        );
        for url in ["file:a", "file:-", "log:/d", "kafka://h:1/t", "kinesis://s"] {
            assert_eq!(url.parse::<Endpoint>().unwrap().to_string(), url);
        }
    }

    #[test]
    fn refuses_nonsense() {
        for url in [
            "",
            "orders.jsonl",
            "file:",
            "log:",
            "kafka://h/t",
            "kafka://h:1",
            "kinesis://",
            "s3://b/k",
            "file://host/x",
            "log://",
        ] {
            assert!(url.parse::<Endpoint>().is_err(), "{url}");
        }
    }
}
