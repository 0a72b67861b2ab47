//! Errors of the backup repository. A leaf: the backup errors wrap it.

/// What can go wrong with a repository.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// BACKUP_REPO or the S3 settings are wrong.
    #[error("{0}")]
    Config(String),
    /// The storage did not answer or refused (down, wrong credentials, no such bucket).
    #[error("the backup repository is unavailable: {0}")]
    Unavailable(String),
    /// An object or manifest is not there.
    #[error("{0} is not in the backup repository")]
    Missing(String),
    /// The repository holds no backup.
    #[error("the backup repository {0} holds no backup")]
    Empty(String),
    /// A backup needs more room than this machine gives a restore.
    #[error("{0}")]
    NoRoom(String),
    /// What the repository holds does not check out.
    #[error("the backup repository holds something damaged: {0}")]
    Damaged(String),
    /// A backup is encrypted to keys this machine does not hold.
    #[error("{0}")]
    NoKey(String),
    /// A local file could not be read or written.
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// The error as an I/O error, to cross a `Read` or `Write` (see [`from_io`]).
    pub fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }
}

/// The repository error an I/O error carries, or the I/O error itself when it carries none.
pub fn from_io(e: std::io::Error) -> Result<Error, std::io::Error> {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        let inner = e.into_inner().expect("checked above");
        return Ok(*inner.downcast::<Error>().expect("checked above"));
    }
    Err(e)
}
