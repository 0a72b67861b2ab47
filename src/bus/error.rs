//! Errors of the bus.

/// What can go wrong on the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The topic name is malformed.
    #[error("invalid topic {0:?}: topics match [a-z][a-z0-9._-]{{0,63}}")]
    InvalidTopic(String),
    /// The topic is taken by the registry or a route.
    #[error("topic {0:?} is reserved; publish to a topic of your own")]
    ReservedTopic(String),
    /// The message type is malformed.
    #[error("invalid message type {0:?}: types match [A-Za-z0-9._-]{{1,128}}")]
    InvalidType(String),
    /// The consumer name is malformed.
    #[error("invalid consumer name {0:?}: names match [A-Za-z0-9._-]{{1,128}}")]
    InvalidConsumer(String),
    /// No offset is stored for this consumer.
    #[error("no offset is stored for consumer {0:?}")]
    UnknownConsumer(String),
    /// An offset past the end of the log.
    #[error("offset {offset} is past the end of the log (lastSeq is {last_seq})")]
    OffsetPastEnd {
        /// Offset asked for.
        offset: u64,
        /// End of the log.
        last_seq: u64,
    },
    /// An offset read on a timeline the log is no longer on.
    #[error("the log is on timeline {current}, not {sent}: a restore replaced it; read the offset again and resync")]
    TimelineChanged {
        /// The timeline the client read on.
        sent: String,
        /// The log's timeline.
        current: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Result of bus operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Error::Store(e.into())
    }
}
