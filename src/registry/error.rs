//! Errors of the registry.

/// What can go wrong in the registry.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event or record id is malformed.
    #[error("invalid id {0:?}: ids match [A-Za-z0-9_-]{{1,64}}")]
    InvalidId(String),
    /// A collection name is malformed.
    #[error("invalid collection name {0:?}: names match [a-z][a-z0-9_-]{{0,63}}")]
    InvalidCollection(String),
    /// A collection name that a route takes.
    #[error(
        "the collection name {0:?} is reserved (POST /api/events/{{id}}/backup writes a backup of the event)"
    )]
    ReservedCollection(String),
    /// The event changed while its backup was written, so deleting it would lose the change.
    #[error("event {0:?} kept changing while its backup was written; it was not deleted, retry")]
    ChangedSinceBackup(String),
    /// A body that is not JSON.
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A document is not a JSON object.
    #[error("{0} must be a JSON object")]
    NotAnObject(&'static str),
    /// A shipped message that cannot be replayed (damaged, or older than replayable logs).
    #[error("the shipped log cannot be replayed: {0}")]
    Unreplayable(String),
    /// No event has this id.
    #[error("event {0:?} not found")]
    EventNotFound(String),
    /// No record has this id in this event and collection.
    #[error("record {id:?} not found in collection {collection:?} of event {event_id:?}")]
    RecordNotFound {
        /// Event id.
        event_id: String,
        /// Collection.
        collection: String,
        /// Record id.
        id: String,
    },
    /// `If-Match` named another version.
    #[error("version mismatch: If-Match asked for version {expected}, the current version is {current}")]
    VersionMismatch {
        /// Version in `If-Match`.
        expected: u64,
        /// Stored version.
        current: u64,
    },
    /// A batch holds more records than allowed.
    #[error("a batch holds at most {max} records; this one holds {len}")]
    BatchTooLarge {
        /// Records sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A document would be larger than the registry stores.
    #[error("the document would be {size} bytes; documents are at most {max} bytes")]
    DocumentTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A pagination cursor that this server did not hand out.
    #[error("invalid cursor: pass the nextCursor of a previous page unchanged")]
    InvalidCursor,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Result of registry operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the request was refused (it does not fit the registry) rather than the
    /// registry failing: a damaged log or the store failing are failures.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Unreplayable(_) | Error::Store(_))
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Store(e.into())
    }
}
