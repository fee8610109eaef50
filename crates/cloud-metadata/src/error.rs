//! The error type shared by every parser and state machine of this crate.

/// Why a metadata document, a user-data blob or a metadata-service exchange was rejected.
///
/// `what` fields name the document (`"meta-data"`, `"network_data.json"`, `"user-data"` …) so a
/// message reads well on its own in the guest's status document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// The input is larger than the configured cap (see [`crate::Limits`]).
    #[error("{what} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Document name.
        what: &'static str,
        /// Size seen (a lower bound when reading stopped at the limit).
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The document nests deeper than the configured limit.
    #[error("{what} nests deeper than {limit} levels")]
    TooDeep {
        /// Document name.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The document has more nodes (or expands, through YAML aliases, to more) than allowed.
    #[error("{what} has more than {limit} nodes or string bytes")]
    TooManyNodes {
        /// Document name.
        what: &'static str,
        /// The limit that was hit.
        limit: usize,
    },
    /// Malformed JSON.
    #[error("{what} is not valid JSON")]
    Json {
        /// Document name.
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Malformed YAML.
    #[error("{what} is not valid YAML")]
    Yaml {
        /// Document name.
        what: &'static str,
        /// The parser's error (libyaml's message and position, or the tree builder's).
        #[source]
        source: crate::value::YamlError,
    },
    /// The document is not UTF-8 text where text is required.
    #[error("{what} is not UTF-8 text")]
    NotUtf8 {
        /// Document name.
        what: &'static str,
    },
    /// The top level (or a named field) has the wrong shape.
    #[error("{what}: {field}: {reason}")]
    InvalidField {
        /// Document name.
        what: &'static str,
        /// Field path, e.g. `write_files[2].path`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A required field is missing.
    #[error("{what}: required field {field} is missing")]
    MissingField {
        /// Document name.
        what: &'static str,
        /// Field name.
        field: &'static str,
    },
    /// base64 that does not decode.
    #[error("{what}: invalid base64")]
    Base64 {
        /// Field or document name.
        what: String,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// A gzip stream that does not decompress.
    #[error("{what}: invalid gzip data")]
    Gzip {
        /// Document name.
        what: &'static str,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// A compressed stream that expands more than the allowed ratio (a decompression bomb).
    #[error(
        "{what}: gzip data of {input} bytes expands more than {ratio} times (and past 1 MiB); refused"
    )]
    CompressionRatio {
        /// Document name.
        what: &'static str,
        /// Compressed size.
        input: usize,
        /// The ratio limit ([`crate::Limits::max_decompression_ratio`]).
        ratio: usize,
    },
    /// Malformed MIME structure.
    #[error("user-data MIME: {reason}")]
    Mime {
        /// What is wrong.
        reason: String,
    },
    /// A path given for `write_files` (or ConfigDrive `files`) is not acceptable.
    #[error("unsafe path {path:?}: {reason}")]
    UnsafePath {
        /// The path as given (truncated to 256 bytes).
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A `ds=nocloud…` kernel command-line / SMBIOS string that cannot be used.
    #[error("nocloud seed string: {reason}")]
    NoCloudSeed {
        /// What is wrong.
        reason: String,
    },
    /// An SSH public key line that is not a well-formed OpenSSH public key.
    #[error("invalid SSH public key: {reason}")]
    SshKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// A metadata service answered with a status the crawl cannot continue from.
    #[error("metadata service: {method} {path} returned HTTP {status}")]
    HttpStatus {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// Status code.
        status: u16,
    },
    /// The driver could not complete a request (timeout, refused connection, reset …).
    #[error("metadata service: {method} {path} failed: {reason}")]
    Transport {
        /// Request method.
        method: &'static str,
        /// Request path.
        path: String,
        /// The driver's description.
        reason: String,
    },
    /// The crawl cannot go on (protocol violation, no usable version, too many requests …).
    #[error("metadata service: {reason}")]
    Protocol {
        /// What happened.
        reason: String,
    },
    /// `query` was asked for a key it does not know.
    #[error("unknown query key {0:?}")]
    UnknownQueryKey(String),
    /// A frequency name that is not one of the accepted spellings.
    #[error("unknown frequency {0:?} (expected per-boot, per-instance, per-once, always)")]
    UnknownFrequency(String),
    /// A semaphore (marker) name with characters that are not allowed in a file name.
    #[error("invalid semaphore name {0:?}")]
    InvalidSemaphoreName(String),
}

impl MetadataError {
    /// Whether retrying the same operation later can help: transport failures and
    /// server-side (5xx) or throttling (429) statuses. Parse errors are never retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            MetadataError::Transport { .. } => true,
            MetadataError::HttpStatus { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn invalid(
        what: &'static str,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        MetadataError::InvalidField {
            what,
            field: field.into(),
            reason: reason.into(),
        }
    }
}
