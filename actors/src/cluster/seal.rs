//! The authenticator on node-to-node messages: HMAC-SHA256 keyed with the
//! secret every node of a deployment shares (`NOVA_CLUSTER_SECRET`).
//!
//! Anyone who can `PUBLISH` to Redis can write a payload in the nodes' own
//! forwarding format; only a holder of the secret can seal one. The sending
//! node seals each message once, over the exact bytes it publishes and the
//! Redis channel it publishes them on (so a sealed message replayed on
//! another channel does not verify); a receiving node checks the seal once
//! per message, before it believes anything in it.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a seal written as lowercase hex.
pub const SEAL_HEX_LEN: usize = 64;

/// The deployment's secret, keyed once: each message clones the keyed state
/// instead of hashing the key again.
#[derive(Clone)]
pub struct ClusterKey {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret, not even in a debug dump of the configuration.
        f.write_str("ClusterKey(…)")
    }
}

/// A secret HMAC cannot take. HMAC takes keys of any length, so this is
/// never seen in practice; it exists so no `unwrap` is needed.
#[derive(Debug, thiserror::Error)]
#[error("the cluster secret cannot key HMAC-SHA256")]
pub struct KeyError;

impl ClusterKey {
    /// The key of `secret`.
    pub fn new(secret: &[u8]) -> Result<ClusterKey, KeyError> {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| KeyError)?;
        Ok(ClusterKey { mac })
    }

    /// HMAC over `parts` concatenated.
    fn digest(&self, parts: &[&[u8]]) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        mac
    }

    /// The seal of `body` published on Redis channel `channel`, as
    /// lowercase hex. The channel's length comes first, so no split of the
    /// same bytes between channel and body seals alike.
    pub fn seal(&self, channel: &[u8], body: &[u8]) -> [u8; SEAL_HEX_LEN] {
        let len = (channel.len() as u64).to_be_bytes();
        let tag = self.digest(&[&len, channel, body]).finalize().into_bytes();
        let mut hex = [0u8; SEAL_HEX_LEN];
        for (i, byte) in tag.iter().enumerate() {
            hex[2 * i] = HEX[usize::from(byte >> 4)];
            hex[2 * i + 1] = HEX[usize::from(byte & 0xf)];
        }
        hex
    }

    /// Whether `hex` is the seal of `body` on `channel`. The comparison
    /// takes the same time wherever the first wrong byte is, so a forger
    /// learns nothing from timing.
    pub fn verify(&self, channel: &[u8], body: &[u8], hex: &[u8]) -> bool {
        let Some(tag) = unhex(hex) else { return false };
        let len = (channel.len() as u64).to_be_bytes();
        self.digest(&[&len, channel, body]).verify_slice(&tag).is_ok()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn unhex(hex: &[u8]) -> Option<[u8; SEAL_HEX_LEN / 2]> {
    if hex.len() != SEAL_HEX_LEN {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; SEAL_HEX_LEN / 2];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let key = ClusterKey::new(b"Jefe").unwrap();
        let tag = key.digest(&[b"what do ya want ", b"for nothing?"]).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_seal_verifies_only_for_its_key_channel_and_bytes() {
        let key = ClusterKey::new(b"s3cret").unwrap();
        let seal = key.seal(b"nova:ch:team:t1", b"{\"a\":1}");
        assert!(seal.iter().all(|c| HEX.contains(c)));
        assert!(key.verify(b"nova:ch:team:t1", b"{\"a\":1}", &seal));
        assert!(!ClusterKey::new(b"other").unwrap().verify(b"nova:ch:team:t1", b"{\"a\":1}", &seal));
        assert!(!key.verify(b"nova:ch:team:t2", b"{\"a\":1}", &seal), "replayed on another channel");
        assert!(!key.verify(b"nova:ch:team:t1", b"{\"a\":2}", &seal), "bytes changed");
        // The same bytes split differently between channel and body.
        assert!(!key.verify(b"nova:ch:team:t1{", b"\"a\":1}", &seal));
        let mut flipped = seal;
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert!(!key.verify(b"nova:ch:team:t1", b"{\"a\":1}", &flipped));
        assert!(
            !key.verify(b"nova:ch:team:t1", b"{\"a\":1}", &seal.to_ascii_uppercase())
                || !seal.iter().any(u8::is_ascii_alphabetic)
        );
        assert!(!key.verify(b"nova:ch:team:t1", b"{\"a\":1}", &seal[..63]));
        assert!(!key.verify(b"nova:ch:team:t1", b"{\"a\":1}", b""));
    }
}
