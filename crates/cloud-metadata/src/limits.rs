//! Size, depth and count limits applied to all untrusted input.

use serde::{Deserialize, Serialize};

/// Caps applied by every parser. The defaults suit a small VM; callers may raise or lower them.
///
/// Every parser checks the input length first and refuses documents over the cap, then bounds
/// nesting depth and the number of nodes it builds, so memory use is proportional to the input
/// (YAML aliases cannot inflate it past `max_nodes` / `max_string_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Metadata documents: NoCloud `meta-data`, `meta_data.json`, `network_data.json`,
    /// `network-config`, `vendor_data.json`, one IMDS leaf (default 1 MiB).
    pub max_metadata_bytes: usize,
    /// User-data and vendor-data, as delivered (default 16 MiB).
    pub max_user_data_bytes: usize,
    /// Output of all decompression and transfer decoding of one user-data blob, summed over its
    /// parts (default 16 MiB). Guards against gzip bombs.
    pub max_decoded_bytes: usize,
    /// Nesting depth of JSON/YAML documents (default 32).
    pub max_depth: usize,
    /// Nodes (scalars, sequences, mappings) in one JSON/YAML document, after alias expansion
    /// (default 200 000).
    pub max_nodes: usize,
    /// Bytes of string data in one JSON/YAML document, after alias expansion (default 32 MiB).
    pub max_string_bytes: usize,
    /// Nesting of MIME multiparts, gzip layers and `#cloud-config-archive` inside each other
    /// (default 4).
    pub max_user_data_depth: usize,
    /// Parts in one user-data blob, all levels together (default 256).
    pub max_user_data_parts: usize,
    /// Requests one metadata-service crawl may issue (default 256).
    pub max_requests: usize,
    /// Public keys, files or similar list entries taken from one source (default 256).
    pub max_list_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_metadata_bytes: 1 << 20,
            max_user_data_bytes: 16 << 20,
            max_decoded_bytes: 16 << 20,
            max_depth: 32,
            max_nodes: 200_000,
            max_string_bytes: 32 << 20,
            max_user_data_depth: 4,
            max_user_data_parts: 256,
            max_requests: 256,
            max_list_entries: 256,
        }
    }
}

impl Limits {
    /// Fails with [`crate::MetadataError::TooLarge`] when `input` exceeds `limit`.
    pub(crate) fn check_size(
        what: &'static str,
        input: &[u8],
        limit: usize,
    ) -> Result<(), crate::MetadataError> {
        if input.len() > limit {
            return Err(crate::MetadataError::TooLarge {
                what,
                size: input.len(),
                limit,
            });
        }
        Ok(())
    }
}
