//! The backup file: a copy of every group's state, each at one point of its
//! log, written and read as a stream (one group's state in memory at a
//! time).
//!
//! ```text
//! header   "ORRYBAK\0" | format u32 | len u32 | JSON BackupHeader (the groups, in order)
//! section  "SECT" | group u64 | index u64 | term u64 | leader u64 | len u64 | data
//!          | sha256(section from "SECT" to the end of data)        (one per group)
//! footer   "FOOT" | len u32 | JSON Footer (each section's log point, size, sha256)
//!          | sha256(every byte of the file before it)
//! ```
//!
//! Integers are little-endian. The header names the groups before their
//! state is taken; a group's log point is known only once its copy is
//! taken, so it travels in its section and again in the footer's table.
//! Every byte is covered by a checksum: a section's own sha256 catches
//! damage as soon as that section is read, the file's sha256 anything in
//! the header and footer. A reader also refuses a section out of order, a
//! missing or extra group, and bytes after the file's checksum.

use orrery_types::GroupId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;

pub const MAGIC: &[u8; 8] = b"ORRYBAK\0";
pub const FORMAT_VERSION: u32 = 1;
const SECTION_TAG: &[u8; 4] = b"SECT";
const FOOTER_TAG: &[u8; 4] = b"FOOT";
/// Bound on the JSON header and footer, so that a damaged length cannot
/// make a reader allocate without limit.
const MAX_JSON: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupFileError {
    #[error("reading the backup: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an Orrery backup (bad magic bytes)")]
    BadMagic,
    #[error("backup format {0} is not supported (this build reads format {FORMAT_VERSION})")]
    UnsupportedFormat(u32),
    #[error("the backup is truncated: {0}")]
    Truncated(String),
    #[error("the backup is damaged: {0}")]
    Damaged(String),
    #[error("writing the backup: {0}")]
    Encode(String),
}

type Result<T> = std::result::Result<T, BackupFileError>;

/// What the file holds, written first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub cluster_id: String,
    /// The cluster version active in the source cluster.
    pub cluster_version: u32,
    /// The build that wrote the file.
    pub build: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The node that gathered the groups.
    pub source_node: u64,
    pub shard_count: u32,
    /// The groups, in the order their sections follow.
    pub groups: Vec<GroupId>,
}

/// The log entry whose state a section holds (after applying it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPoint {
    pub index: u64,
    pub term: u64,
    /// The node that led the term of that entry.
    pub leader: u64,
}

/// One section as the footer lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionInfo {
    pub group: GroupId,
    pub point: LogPoint,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Footer {
    pub sections: Vec<SectionInfo>,
}

/// One group's state, checked against its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub group: GroupId,
    pub point: LogPoint,
    pub data: Vec<u8>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn section_head(group: GroupId, point: LogPoint, len: u64) -> Vec<u8> {
    let mut head = Vec::with_capacity(44);
    head.extend_from_slice(SECTION_TAG);
    for v in [group, point.index, point.term, point.leader, len] {
        head.extend_from_slice(&v.to_le_bytes());
    }
    head
}

/// Writes a backup as byte pieces for the caller to send or store in
/// order: [`BackupEncoder::new`] gives the header, each
/// [`BackupEncoder::section`] the bytes around one group's data (the data
/// itself is not copied), [`BackupEncoder::finish`] the footer.
pub struct BackupEncoder {
    file: Sha256,
    groups: Vec<GroupId>,
    sections: Vec<SectionInfo>,
}

impl BackupEncoder {
    pub fn new(header: &BackupHeader) -> Result<(Self, Vec<u8>)> {
        let json =
            serde_json::to_vec(header).map_err(|e| BackupFileError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(16 + json.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        let mut file = Sha256::new();
        file.update(&out);
        let enc = Self {
            file,
            groups: header.groups.clone(),
            sections: Vec::new(),
        };
        Ok((enc, out))
    }

    /// The bytes before and after `data` in the section of `group`, which
    /// must be the next group the header names.
    pub fn section(
        &mut self,
        group: GroupId,
        point: LogPoint,
        data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let expected = self.groups.get(self.sections.len()).copied();
        if expected != Some(group) {
            return Err(BackupFileError::Encode(format!(
                "section for group {group}, but the header's next group is {expected:?}"
            )));
        }
        let head = section_head(group, point, data.len() as u64);
        let mut h = Sha256::new();
        h.update(&head);
        h.update(data);
        let sum = h.finalize();
        self.file.update(&head);
        self.file.update(data);
        self.file.update(sum);
        self.sections.push(SectionInfo {
            group,
            point,
            bytes: data.len() as u64,
            sha256: hex(&sum),
        });
        Ok((head, sum.to_vec()))
    }

    /// The footer; fails unless every group of the header has its section.
    pub fn finish(mut self) -> Result<Vec<u8>> {
        if self.sections.len() != self.groups.len() {
            return Err(BackupFileError::Encode(format!(
                "{} of {} groups written",
                self.sections.len(),
                self.groups.len()
            )));
        }
        let json = serde_json::to_vec(&Footer {
            sections: self.sections,
        })
        .map_err(|e| BackupFileError::Encode(e.to_string()))?;
        let mut out = Vec::with_capacity(40 + json.len());
        out.extend_from_slice(FOOTER_TAG);
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        self.file.update(&out);
        out.extend_from_slice(&self.file.finalize());
        Ok(out)
    }
}

/// Writes a whole backup to `w` (tests, tools).
pub fn write_backup<W: std::io::Write>(
    mut w: W,
    header: &BackupHeader,
    sections: &[Section],
) -> Result<()> {
    let (mut enc, head) = BackupEncoder::new(header)?;
    w.write_all(&head)?;
    for s in sections {
        let (head, tail) = enc.section(s.group, s.point, &s.data)?;
        w.write_all(&head)?;
        w.write_all(&s.data)?;
        w.write_all(&tail)?;
    }
    w.write_all(&enc.finish()?)?;
    Ok(())
}

/// A reader that hashes everything read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashing<R> {
    /// Exactly `n` bytes (read in pieces, so a damaged length fails with
    /// "truncated" instead of allocating it up front).
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.inner).take(n).read_to_end(&mut out)?;
        if (out.len() as u64) < n {
            return Err(BackupFileError::Truncated(format!(
                "{what}: {} of {n} bytes",
                out.len()
            )));
        }
        self.hash.update(&out);
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let v = self.bytes(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&v);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}

/// Reads a backup section by section, checking each checksum as it goes
/// and the file's at the end. Nothing it returns is unverified, but a
/// caller that must not act on a damaged file at all reads it through
/// once with [`verify`] first.
pub struct BackupReader<R> {
    r: Hashing<R>,
    header: BackupHeader,
    sections: Vec<SectionInfo>,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    pub fn open(inner: R) -> Result<Self> {
        let mut r = Hashing {
            inner,
            hash: Sha256::new(),
        };
        let magic: [u8; 8] = r.array("magic")?;
        if &magic != MAGIC {
            return Err(BackupFileError::BadMagic);
        }
        let format = r.u32("format")?;
        if format != FORMAT_VERSION {
            return Err(BackupFileError::UnsupportedFormat(format));
        }
        let len = r.u32("header length")?;
        if len > MAX_JSON {
            return Err(BackupFileError::Damaged(format!("header length {len}")));
        }
        let json = r.bytes(len.into(), "header")?;
        let header: BackupHeader = serde_json::from_slice(&json)
            .map_err(|e| BackupFileError::Damaged(format!("header: {e}")))?;
        Ok(Self {
            r,
            header,
            sections: Vec::new(),
            done: false,
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// The next group's section, or `None` after the last one once the
    /// footer and the file's checksum have been checked.
    pub fn next_section(&mut self) -> Result<Option<Section>> {
        if self.done {
            return Ok(None);
        }
        let Some(&expected) = self.header.groups.get(self.sections.len()) else {
            self.read_footer()?;
            self.done = true;
            return Ok(None);
        };
        let what = format!("section {} (group {expected})", self.sections.len());
        let tag: [u8; 4] = self.r.array(&what)?;
        if &tag != SECTION_TAG {
            return Err(BackupFileError::Damaged(format!("{what}: bad section tag")));
        }
        let group = self.r.u64(&what)?;
        let point = LogPoint {
            index: self.r.u64(&what)?,
            term: self.r.u64(&what)?,
            leader: self.r.u64(&what)?,
        };
        let len = self.r.u64(&what)?;
        if group != expected {
            return Err(BackupFileError::Damaged(format!(
                "{what}: holds group {group}"
            )));
        }
        let data = self.r.bytes(len, &what)?;
        let mut h = Sha256::new();
        h.update(section_head(group, point, len));
        h.update(&data);
        let computed = h.finalize();
        let stored: [u8; 32] = self.r.array(&what)?;
        if stored[..] != computed[..] {
            return Err(BackupFileError::Damaged(format!(
                "{what}: checksum mismatch (stored {}, computed {})",
                hex(&stored),
                hex(&computed)
            )));
        }
        self.sections.push(SectionInfo {
            group,
            point,
            bytes: len,
            sha256: hex(&computed),
        });
        Ok(Some(Section { group, point, data }))
    }

    fn read_footer(&mut self) -> Result<()> {
        let tag: [u8; 4] = self.r.array("footer")?;
        if &tag != FOOTER_TAG {
            return Err(BackupFileError::Damaged(
                "bad footer tag (an extra or missing section?)".into(),
            ));
        }
        let len = self.r.u32("footer")?;
        if len > MAX_JSON {
            return Err(BackupFileError::Damaged(format!("footer length {len}")));
        }
        let json = self.r.bytes(len.into(), "footer")?;
        let computed = self.r.hash.clone().finalize();
        let mut stored = [0u8; 32];
        self.r
            .inner
            .read_exact(&mut stored)
            .map_err(|_| BackupFileError::Truncated("the file's checksum is missing".into()))?;
        if stored[..] != computed[..] {
            return Err(BackupFileError::Damaged(format!(
                "file checksum mismatch (stored {}, computed {})",
                hex(&stored),
                hex(&computed)
            )));
        }
        let mut rest = [0u8; 1];
        if self.r.inner.read(&mut rest)? != 0 {
            return Err(BackupFileError::Damaged(
                "bytes after the file's checksum".into(),
            ));
        }
        let footer: Footer = serde_json::from_slice(&json)
            .map_err(|e| BackupFileError::Damaged(format!("footer: {e}")))?;
        if footer.sections != self.sections {
            return Err(BackupFileError::Damaged(
                "the footer's table does not match the sections".into(),
            ));
        }
        Ok(())
    }
}

/// Reads a whole backup, checking every checksum; returns its header and
/// its sections' table (one section in memory at a time).
pub fn verify<R: Read>(r: R) -> Result<(BackupHeader, Vec<SectionInfo>)> {
    let mut reader = BackupReader::open(r)?;
    while reader.next_section()?.is_some() {}
    Ok((reader.header, reader.sections))
}

#[cfg(test)]
#[path = "backup_file_tests.rs"]
mod tests;
