//! The graph's storage: every vector in one contiguous `Vec<f32>` (stride
//! `dim`), layer-0 neighbour lists in one flat array (stride `1 + m0`:
//! count then ids), upper-layer lists in a second flat array (each node
//! with level L owns L consecutive lists of stride `1 + m`).
//!
//! Lists are arrays of atomics: walks read them without locks (a list
//! being rewritten may be read half old, half new, but every id in it is a
//! linked node, which is all a walk needs), writers hold the node's lock.
//! Slots are appended under the index's write lock (`Hnsw::store`), before
//! the batch that links them starts; vectors never change afterwards.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

pub struct Store {
    pub dim: usize,
    /// Max neighbours on layer 0 and on the upper layers.
    pub m0: usize,
    pub m: usize,
    pub(super) data: Vec<f32>,
    /// Slot -> the caller's id.
    pub ext: Vec<usize>,
    pub levels: Vec<u8>,
    /// Slot -> start of its upper lists in `upper` (unused at level 0).
    pub(super) upper_off: Vec<usize>,
    pub(super) layer0: Vec<AtomicU32>,
    pub(super) upper: Vec<AtomicU32>,
    pub(super) locks: Vec<Mutex<()>>,
}

impl Store {
    pub fn new(dim: usize, m: usize, capacity: usize) -> Store {
        let m0 = 2 * m;
        let mut s = Store {
            dim,
            m0,
            m,
            data: Vec::new(),
            ext: Vec::new(),
            levels: Vec::new(),
            upper_off: Vec::new(),
            layer0: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
        };
        s.reserve(capacity);
        s
    }

    pub fn len(&self) -> usize {
        self.ext.len()
    }

    /// Room for `more` slots without reallocating (growth copies every
    /// vector, and happens under the write lock that stops searches).
    pub fn reserve(&mut self, more: usize) {
        self.data.reserve(more * self.dim);
        self.ext.reserve(more);
        self.levels.reserve(more);
        self.upper_off.reserve(more);
        self.layer0.reserve(more * (1 + self.m0));
        self.locks.reserve(more);
    }

    /// Appends an unlinked node; returns its slot.
    pub fn push(&mut self, ext: usize, v: &[f32], level: u8) -> u32 {
        let slot = self.ext.len() as u32;
        self.data.extend_from_slice(&v[..self.dim.min(v.len())]);
        // A vector of the wrong length (callers check dims) is padded, so
        // that strides stay aligned.
        self.data
            .resize(self.data.len() + self.dim.saturating_sub(v.len()), 0.0);
        self.ext.push(ext);
        self.levels.push(level);
        self.upper_off.push(self.upper.len());
        let upper = usize::from(level) * (1 + self.m);
        self.upper
            .resize_with(self.upper.len() + upper, || AtomicU32::new(0));
        self.layer0
            .resize_with(self.layer0.len() + 1 + self.m0, || AtomicU32::new(0));
        self.locks.push(Mutex::new(()));
        slot
    }

    #[inline]
    pub fn vector(&self, slot: u32) -> &[f32] {
        let i = slot as usize * self.dim;
        &self.data[i..i + self.dim]
    }

    /// Hints the CPU to load a vector that a walk is about to compare
    /// (the walk's next neighbours are scattered over memory).
    #[inline]
    pub fn prefetch(&self, slot: u32) {
        #[cfg(target_arch = "x86_64")]
        {
            let i = slot as usize * self.dim;
            if let Some(v) = self.data.get(i..i + self.dim) {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                // Two cache lines cover 32 floats; the loads after them
                // stream in while the first are compared.
                for off in [0usize, 16] {
                    if off < v.len() {
                        // SAFETY: a prefetch never faults or changes
                        // memory; the address is inside `data` anyway.
                        unsafe { _mm_prefetch::<_MM_HINT_T0>(v[off..].as_ptr().cast()) };
                    }
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = slot;
    }

    /// The list of `slot` on `layer` (count first), and its capacity.
    #[inline]
    fn list(&self, slot: u32, layer: usize) -> (&[AtomicU32], usize) {
        if layer == 0 {
            let w = 1 + self.m0;
            let i = slot as usize * w;
            (&self.layer0[i..i + w], self.m0)
        } else {
            let w = 1 + self.m;
            let i = self.upper_off[slot as usize] + (layer - 1) * w;
            (&self.upper[i..i + w], self.m)
        }
    }

    pub fn max_neighbours(&self, layer: usize) -> usize {
        if layer == 0 {
            self.m0
        } else {
            self.m
        }
    }

    /// Copies the neighbours of `slot` on `layer` into `out` (cleared).
    #[inline]
    pub fn neighbours(&self, slot: u32, layer: usize, out: &mut Vec<u32>) {
        out.clear();
        if layer > usize::from(self.levels[slot as usize]) {
            return;
        }
        let (l, cap) = self.list(slot, layer);
        let n = (l[0].load(Ordering::Acquire) as usize).min(cap);
        out.extend(l[1..=n].iter().map(|a| a.load(Ordering::Relaxed)));
    }

    /// Replaces the list; the caller holds `lock(slot)`.
    pub fn set_neighbours(&self, slot: u32, layer: usize, ids: &[u32]) {
        if layer > usize::from(self.levels[slot as usize]) {
            return;
        }
        let (l, cap) = self.list(slot, layer);
        let n = ids.len().min(cap);
        // Shrink the count first, write ids, then publish the new count:
        // a reader never sees a count covering ids not yet written.
        if (l[0].load(Ordering::Relaxed) as usize) > n {
            l[0].store(n as u32, Ordering::Release);
        }
        for (a, id) in l[1..=n].iter().zip(ids) {
            a.store(*id, Ordering::Relaxed);
        }
        l[0].store(n as u32, Ordering::Release);
    }

    pub fn lock(&self, slot: u32) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data are the atomics; a poisoned lock guards nothing
        // broken, so it is simply taken.
        self.locks[slot as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held (for reports).
    pub fn bytes(&self) -> usize {
        self.data.capacity() * 4
            + self.ext.capacity() * 8
            + self.levels.capacity()
            + self.upper_off.capacity() * 8
            + (self.layer0.capacity() + self.upper.capacity()) * 4
            + self.locks.capacity() * std::mem::size_of::<Mutex<()>>()
    }
}
