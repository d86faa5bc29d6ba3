//! Job ids.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;

/// A job's id: the stamped millisecond (48 bits), the shard (16 bits) and a
/// sequence number (40 bits, see [`job_seq`]). Shown as 26 lowercase hex
/// digits, which sort as the number does: ids sort by submission time.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub(crate) u128);

impl JobId {
    pub const LEN: usize = 26;
    /// Larger than every id (a bound for range scans).
    pub const MAX: JobId = JobId(u128::MAX);

    pub fn new(now_ms: u64, shard: u32, seq: u64) -> JobId {
        JobId(
            (u128::from(now_ms & 0xffff_ffff_ffff) << 56)
                | (u128::from(shard & 0xffff) << 40)
                | u128::from(seq & 0xff_ffff_ffff),
        )
    }

    /// `None` unless `s` is exactly 26 lowercase hex digits.
    pub fn parse(s: &str) -> Option<JobId> {
        if s.len() != Self::LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        u128::from_str_radix(s, 16).ok().map(JobId)
    }

    pub fn shard(self) -> u32 {
        ((self.0 >> 40) & 0xffff) as u32
    }

    pub(crate) fn hex(self) -> [u8; Self::LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'0'; Self::LEN];
        for (i, b) in out.iter_mut().enumerate() {
            let shift = 4 * (Self::LEN - 1 - i);
            *b = DIGITS[((self.0 >> shift) & 0xf) as usize];
        }
        out
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex digits are ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&self.hex()).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.hex() == other.as_bytes()
    }
}

impl PartialEq<String> for JobId {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let hex = self.hex();
        s.serialize_str(std::str::from_utf8(&hex).map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s: Cow<'de, str> = Deserialize::deserialize(d)?;
        JobId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad job id {s:?}")))
    }
}

/// The sequence part of the id of the `nth` job of the entry at `index`.
/// It wraps after 2^30 log entries; ids stay unique because they also hold
/// the stamped millisecond, and 2^30 entries never share one.
pub fn job_seq(index: u64, nth: usize) -> u64 {
    (index << 10) | (nth as u64 & 0x3ff)
}

/// The shard a job id names, or `None` when it is not a job id.
pub fn job_shard(id: &str) -> Option<u32> {
    JobId::parse(id).map(JobId::shard)
}
