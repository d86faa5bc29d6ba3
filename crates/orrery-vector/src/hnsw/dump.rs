//! The graph as bytes and back, so that a restarted replica can load its
//! index instead of rebuilding it (see `crate::persist`).
//!
//! Little-endian, versioned, with a CRC32 over everything before it: a
//! damaged or foreign file is refused, never half-loaded.

use super::graph::Store;
use super::Hnsw;
use crate::Metric;
use std::sync::atomic::{AtomicU32, Ordering};

const MAGIC: &[u8; 8] = b"ORYHNSW1";

struct W(Vec<u8>);
impl W {
    fn u64(&mut self, x: u64) {
        self.0.extend_from_slice(&x.to_le_bytes());
    }
    fn u32s(&mut self, xs: impl ExactSizeIterator<Item = u32>) {
        self.u64(xs.len() as u64);
        for x in xs {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
    }
}

struct R<'a>(&'a [u8]);
impl R<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("truncated index dump".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| "short read")?))
    }
    fn usize(&mut self) -> Result<usize, String> {
        usize::try_from(self.u64()?).map_err(|_| "size out of range".to_string())
    }
    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        let n = self.usize()?;
        let b = self.take(n.checked_mul(4).ok_or("size out of range")?)?;
        Ok(b.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

fn metric_code(m: Metric) -> u64 {
    match m {
        Metric::L2 => 0,
        Metric::Cosine => 1,
        Metric::Dot => 2,
    }
}

impl Hnsw {
    /// The whole graph, consistent: taken under the store's write lock, so
    /// no batch is half appended or half linked (batches hold `batches`).
    pub fn dump(&self) -> Vec<u8> {
        let _batch = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.read();
        let mut w = W(Vec::with_capacity(s.bytes() + 128));
        w.0.extend_from_slice(MAGIC);
        w.u64(metric_code(self.metric));
        w.u64(self.m as u64);
        w.u64(self.ef_construction as u64);
        w.u64(self.seed);
        w.u64(self.entry.load(Ordering::Acquire));
        let (dim, m0, m, data, ext, levels, upper_off, layer0, upper) = s.parts();
        for x in [dim, m0, m] {
            w.u64(x as u64);
        }
        w.u32s(data.iter().map(|f| f.to_bits()));
        w.u64(ext.len() as u64);
        for e in ext {
            w.u64(*e as u64);
        }
        w.0.extend_from_slice(&(levels.len() as u64).to_le_bytes());
        w.0.extend_from_slice(levels);
        w.u64(upper_off.len() as u64);
        for o in upper_off {
            w.u64(*o as u64);
        }
        w.u32s(layer0.iter().map(|a| a.load(Ordering::Relaxed)));
        w.u32s(upper.iter().map(|a| a.load(Ordering::Relaxed)));
        let crc = crc32fast::hash(&w.0);
        w.0.extend_from_slice(&crc.to_le_bytes());
        w.0
    }

    /// A graph from [`Hnsw::dump`]'s bytes, checked: the CRC, the metric,
    /// and every length and link against the others (a link out of range
    /// would make a walk index past the store).
    pub fn load(bytes: &[u8], metric: Metric) -> Result<Hnsw, String> {
        let (body, crc) = bytes
            .len()
            .checked_sub(4)
            .map(|n| bytes.split_at(n))
            .ok_or("truncated index dump")?;
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err("index dump checksum mismatch".into());
        }
        let mut r = R(body);
        if r.take(8)? != MAGIC {
            return Err("not an index dump".into());
        }
        if r.u64()? != metric_code(metric) {
            return Err("index dump of another metric".into());
        }
        let (m, efc, seed, entry) = (r.usize()?, r.usize()?, r.u64()?, r.u64()?);
        let (dim, m0, sm) = (r.usize()?, r.usize()?, r.usize()?);
        let data: Vec<f32> = r.u32s()?.into_iter().map(f32::from_bits).collect();
        let n = r.usize()?;
        let ext = (0..n).map(|_| r.usize()).collect::<Result<Vec<_>, _>>()?;
        let nl = r.usize()?;
        let levels = r.take(nl)?.to_vec();
        let no = r.usize()?;
        let upper_off = (0..no).map(|_| r.usize()).collect::<Result<Vec<_>, _>>()?;
        let layer0 = r.u32s()?;
        let upper = r.u32s()?;
        if !r.0.is_empty() {
            return Err("trailing bytes in index dump".into());
        }
        let store = Store::from_parts(dim, m0, sm, data, ext, levels, upper_off, layer0, upper)?;
        if entry != super::NONE {
            let (slot, level) = (entry & 0xffff_ffff, entry >> 32);
            if slot as usize >= store.len() || level > u64::from(super::MAX_LEVEL) {
                return Err("index dump entry point out of range".into());
            }
        }
        let h = Hnsw::with_seed(metric, m, efc, store.len(), seed);
        *h.store.write().unwrap_or_else(|p| p.into_inner()) = store;
        h.entry.store(entry, Ordering::Release);
        Ok(h)
    }
}

impl Store {
    #[allow(clippy::type_complexity)]
    fn parts(
        &self,
    ) -> (
        usize,
        usize,
        usize,
        &[f32],
        &[usize],
        &[u8],
        &[usize],
        &[AtomicU32],
        &[AtomicU32],
    ) {
        (
            self.dim,
            self.m0,
            self.m,
            &self.data,
            &self.ext,
            &self.levels,
            &self.upper_off,
            &self.layer0,
            &self.upper,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn from_parts(
        dim: usize,
        m0: usize,
        m: usize,
        data: Vec<f32>,
        ext: Vec<usize>,
        levels: Vec<u8>,
        upper_off: Vec<usize>,
        layer0: Vec<u32>,
        upper: Vec<u32>,
    ) -> Result<Store, String> {
        let n = ext.len();
        let bad = |what: &str| Err(format!("index dump: inconsistent {what}"));
        if data.len() != n * dim || levels.len() != n || upper_off.len() != n {
            return bad("lengths");
        }
        if layer0.len() != n * (1 + m0) {
            return bad("layer-0 lists");
        }
        let mut off = 0usize;
        for (i, l) in levels.iter().enumerate() {
            if upper_off[i] != off {
                return bad("upper-layer offsets");
            }
            off += usize::from(*l) * (1 + m);
        }
        if off != upper.len() {
            return bad("upper-layer lists");
        }
        // Every list's count within its capacity, every link a slot.
        let lists = layer0
            .chunks(1 + m0)
            .map(|c| (c, m0))
            .chain(upper.chunks(1 + m).map(|c| (c, m)));
        for (c, cap) in lists {
            let k = c.first().copied().unwrap_or(0) as usize;
            if k > cap || c[1..=k].iter().any(|&id| id as usize >= n) {
                return bad("neighbour lists");
            }
        }
        let mut s = Store::new(dim, m, 0);
        s.m0 = m0;
        s.data = data;
        s.ext = ext;
        s.levels = levels;
        s.upper_off = upper_off;
        s.layer0 = layer0.into_iter().map(AtomicU32::new).collect();
        s.upper = upper.into_iter().map(AtomicU32::new).collect();
        s.locks = (0..n).map(|_| std::sync::Mutex::new(())).collect();
        Ok(s)
    }
}
