use std::error::Error as StdError;

/// A type-erased error, for plumbing between layers.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What a registry operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No live node of this service is registered.
    #[error("service {0} not found")]
    NotFound(String),
    /// The service or node given cannot be stored.
    #[error("invalid registration: {0}")]
    Invalid(String),
    /// The backend could not be reached or did not answer in time.
    #[error("registry [{registry}] unavailable: {detail}")]
    Unavailable { registry: String, detail: String },
    /// A watcher fell behind and dropped events; list again.
    #[error("registry watcher lagged behind and missed {0} events")]
    Lagged(u64),
    /// Any other backend failure.
    #[error("registry [{registry}]: {source}")]
    Backend {
        registry: String,
        #[source]
        source: BoxError,
    },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound(_))
    }
}
