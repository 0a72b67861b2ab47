//! Where a repository is: `BACKUP_REPO` parsed, with the S3 settings beside it. Secrets are
//! kept out of everything that can be shown: [`Location`]'s `Display` is the URL alone.
//! A leaf: the options parse `BACKUP_REPO` with it.

use std::fmt;
use std::path::PathBuf;

/// How a repository is reached and read: the S3 settings, its encryption, and the bandwidth
/// its uploads may use.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// How S3 is reached.
    pub s3: S3Settings,
    /// Its encryption.
    pub crypt: super::crypt::Settings,
    /// REPO_MAX_MBPS: the most its uploads send, in megabytes (10^6 bytes) a second.
    pub max_mbps: Option<u32>,
}

/// S3 settings (`S3_ENDPOINT`, `S3_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `S3_ALLOW_HTTP`).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// Endpoint URL of an S3-compatible server; unset: AWS.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow a plain-HTTP endpoint.
    pub allow_http: bool,
}

impl fmt::Debug for S3Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Settings")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "(set)"))
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "(set)"))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// A repository's place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `file:///path`: a local (or mounted) folder.
    Folder(PathBuf),
    /// `s3://bucket/prefix`.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix inside it, without slashes at either end ("" for the whole bucket).
        prefix: String,
    },
}

impl Location {
    /// Parses `BACKUP_REPO`.
    pub fn parse(url: &str) -> Result<Location, String> {
        let bad = |why: &str| format!("{url:?}: {why}");
        if url.chars().any(char::is_control) || url.len() > 1024 {
            return Err(bad("not a URL"));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad("a file:// URL names an absolute path, as file:///var/backups/eventvault"));
            }
            return Ok(Location::Folder(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
            if !bucket_ok {
                return Err(bad("the bucket name must be 3 to 63 characters of a-z, 0-9, '-' and '.'"));
            }
            let prefix = prefix.trim_matches('/');
            // Plain names only: characters S3 clients encode (`%`, `#`, `?`, spaces, non-ASCII)
            // would make the listing's keys differ from the keys written.
            let plain = |b: u8| b.is_ascii_alphanumeric() || b"._-/".contains(&b);
            if prefix.split('/').any(|p| p == "." || p == "..")
                || prefix.contains("//")
                || !prefix.bytes().all(plain)
            {
                return Err(bad("the prefix must be plain folder names of A-Z, a-z, 0-9, '.', '_' and '-'"));
            }
            return Ok(Location::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() });
        }
        Err(bad("use file:///path or s3://bucket/prefix"))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Folder(path) => write!(f, "file://{}", path.display()),
            Location::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(Location::parse("file:///var/b").unwrap(), Location::Folder("/var/b".into()));
        assert_eq!(
            Location::parse("s3://my-bucket/a/b/").unwrap(),
            Location::S3 { bucket: "my-bucket".into(), prefix: "a/b".into() }
        );
        assert_eq!(Location::parse("s3://my-bucket").unwrap().to_string(), "s3://my-bucket");
        for bad in [
            "file://rel",
            "s3://A",
            "s3://b/../x",
            "http://x",
            "s3://bb/a//b",
            "s3://bucket/\n",
            "s3://bkt/50%",
            "s3://bkt/a#b",
            "s3://bkt/ä",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }
}
