//! Size, depth and count limits applied to all untrusted input.

use serde::{Deserialize, Serialize};

/// The most heap one parser call of this crate may add, whatever its input, with the
/// [`Limits::default`] caps: 48 MiB, not counting the input buffer the caller passes in.
///
/// How it is kept (each enforced inside the parsers, before the allocation it guards):
/// - YAML is streamed from libyaml's event parser (look-ahead of one line or 1024
///   characters) into the tree: no event list; depth is checked before a collection opens,
///   node count and string bytes before a scalar is copied, an alias's expanded size before
///   it is cloned ([`Limits::max_depth`], [`Limits::max_nodes`],
///   [`Limits::max_string_bytes`] = 16 MiB).
/// - JSON is deserialised straight into the tree under the same budget.
/// - gzip is decompressed in 16 KiB steps into a buffer that never grows past
///   `min(`[`Limits::max_decoded_bytes`]`, max(ratio × input, 1 MiB))`
///   ([`Limits::max_decompression_ratio`]).
/// - MIME splitting stops at the first part over [`Limits::max_user_data_parts`]; base64 is
///   decoded in 64 KiB chunks; all decoded user-data output is summed against
///   [`Limits::max_decoded_bytes`].
///
/// Why 48 MiB: a 16 MiB document whose content is one scalar exists three times over at the
/// worst moment (libyaml's buffer while it grows to 16 MiB, 8 + 16 MiB, then the tree's copy);
/// every hostile input measured (flow-list, nested-list, alias, MIME and gzip bombs) stays
/// under 24 MiB, most under 1 MiB. `tests/memory.rs` measures each with a counting allocator.
pub const MEMORY_BUDGET: usize = 48 << 20;

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
    /// Bytes of string data in one JSON/YAML document, after alias expansion, anchors counted
    /// once more (default 16 MiB).
    pub max_string_bytes: usize,
    /// Largest expansion of a gzip stream: output may not exceed this many times the
    /// compressed size, or 1 MiB, whichever is more (default 100; real text compresses 3-10x,
    /// a bomb about 1000x).
    pub max_decompression_ratio: usize,
    /// Nesting of MIME multiparts, gzip layers and `#cloud-config-archive` inside each other
    /// (default 4).
    pub max_user_data_depth: usize,
    /// Parts in one user-data blob, all levels together (default 256).
    pub max_user_data_parts: usize,
    /// Requests one metadata-service crawl may issue (default 256).
    pub max_requests: usize,
    /// Public keys, files or similar list entries taken from one source (default 256).
    pub max_list_entries: usize,
    /// URLs taken from one `#include` / `#include-once` part (default 16).
    pub max_include_urls: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_metadata_bytes: 1 << 20,
            max_user_data_bytes: 16 << 20,
            max_decoded_bytes: 16 << 20,
            max_depth: 32,
            max_nodes: 200_000,
            max_string_bytes: 16 << 20,
            max_decompression_ratio: 100,
            max_user_data_depth: 4,
            max_user_data_parts: 256,
            max_requests: 256,
            max_list_entries: 256,
            max_include_urls: 16,
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
