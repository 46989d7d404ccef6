//! Hex digests: the content hashes, model fingerprints, key hashes and model versions that
//! several layers print and compare. A leaf module: it imports nothing of the crate.

/// Lower-case hex of a byte string (a digest as stored in payloads and lineage).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
