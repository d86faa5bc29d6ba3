//! GPU inventory through NVML (dlopened at run time by nvml-wrapper, so the
//! build needs no NVIDIA libraries) and the engine's GPU allocator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;

use crate::GpuInfo;

const MIB: u64 = 1024 * 1024;

/// Which of the host's GPUs a node manages (`--gpus`).
///
/// Several nodes on one multi-GPU host, or a GPU kept for something else,
/// need a node to own only some of the GPUs NVML shows: two nodes that both
/// thought they owned a GPU would each hand it out, and two jobs would share
/// it unasked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuSelection {
    /// Every GPU NVML reports (the default).
    #[default]
    All,
    /// No GPU; NVML is not even loaded.
    None,
    /// The GPUs named, each by NVML index (`0`) or UUID (`GPU-8f0c…`).
    Only(Vec<GpuId>),
}

/// One GPU named in `--gpus`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpuId {
    Index(u32),
    Uuid(String),
}

impl std::str::FromStr for GpuSelection {
    type Err = String;

    /// `all`, `none`, or a comma-separated list of indices and UUIDs.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "all" => return Ok(GpuSelection::All),
            "none" => return Ok(GpuSelection::None),
            _ => {}
        }
        let mut ids = Vec::new();
        for part in t.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!(
                    "--gpus '{s}': empty entry; expected all, none, or GPU indices/UUIDs separated by commas"
                ));
            }
            let id = if part.bytes().all(|b| b.is_ascii_digit()) {
                GpuId::Index(
                    part.parse()
                        .map_err(|_| format!("--gpus '{s}': index '{part}' is out of range"))?,
                )
            } else if part.len() > 4 && part[..4].eq_ignore_ascii_case("GPU-") {
                GpuId::Uuid(part.to_string())
            } else {
                return Err(format!(
                    "--gpus '{s}': '{part}' is neither a GPU index (0, 1, …) nor a UUID (GPU-…, as nvidia-smi -L prints)"
                ));
            };
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(GpuSelection::Only(ids))
    }
}

impl GpuSelection {
    /// Whether this selection takes `g`.
    pub fn takes(&self, g: &GpuInfo) -> bool {
        match self {
            GpuSelection::All => true,
            GpuSelection::None => false,
            GpuSelection::Only(ids) => ids.iter().any(|id| match id {
                GpuId::Index(i) => *i == g.index,
                GpuId::Uuid(u) => u.eq_ignore_ascii_case(&g.uuid),
            }),
        }
    }

    /// The entries of an `Only` selection that match none of `gpus`.
    pub fn missing(&self, gpus: &[GpuInfo]) -> Vec<String> {
        let GpuSelection::Only(ids) = self else {
            return Vec::new();
        };
        ids.iter()
            .filter(|id| {
                !gpus.iter().any(|g| match id {
                    GpuId::Index(i) => *i == g.index,
                    GpuId::Uuid(u) => u.eq_ignore_ascii_case(&g.uuid),
                })
            })
            .map(|id| match id {
                GpuId::Index(i) => i.to_string(),
                GpuId::Uuid(u) => u.clone(),
            })
            .collect()
    }
}

/// GPU inventory through NVML loaded at run time; no NVML => an empty
/// inventory and ONE info log line, never an error.
#[derive(Clone)]
pub struct GpuInventory {
    nvml: Option<Arc<Nvml>>,
    selection: GpuSelection,
    last: Arc<Mutex<Vec<GpuInfo>>>,
}

impl GpuInventory {
    /// Initialises NVML and reads the GPUs once.
    pub fn load() -> GpuInventory {
        Self::load_selected(GpuSelection::All)
    }

    /// Like [`GpuInventory::load`], keeping only the GPUs `selection` takes.
    pub fn load_selected(selection: GpuSelection) -> GpuInventory {
        if selection == GpuSelection::None {
            tracing::info!(
                "GPUs disabled (--gpus none): this node reports no GPUs and runs no GPU jobs"
            );
            return GpuInventory::empty();
        }
        match Nvml::init() {
            Ok(nvml) => {
                let inv = GpuInventory {
                    nvml: Some(Arc::new(nvml)),
                    selection,
                    last: Arc::new(Mutex::new(Vec::new())),
                };
                let all = inv.read_all();
                let missing = inv.selection.missing(&all);
                if !missing.is_empty() {
                    tracing::warn!(
                        missing = ?missing,
                        present = ?all.iter().map(|g| format!("{} {}", g.index, g.uuid)).collect::<Vec<_>>(),
                        "--gpus names GPUs this host does not have; they are left out"
                    );
                }
                inv.refresh();
                tracing::info!(
                    gpus = inv.snapshot().len(),
                    host_gpus = all.len(),
                    "NVML loaded; GPU inventory ready"
                );
                inv
            }
            Err(e) => {
                tracing::info!(
                    reason = %e,
                    "NVML not available: this node reports no GPUs and runs no GPU jobs"
                );
                GpuInventory::empty()
            }
        }
    }

    /// An inventory without NVML (no GPUs).
    pub fn empty() -> GpuInventory {
        GpuInventory {
            nvml: None,
            selection: GpuSelection::None,
            last: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// An inventory of fixed GPUs without NVML (engine tests).
    #[cfg(test)]
    pub(crate) fn fixed(gpus: Vec<GpuInfo>) -> GpuInventory {
        GpuInventory {
            nvml: None,
            selection: GpuSelection::All,
            last: Arc::new(Mutex::new(gpus)),
        }
    }

    /// Whether NVML is loaded.
    pub fn has_nvml(&self) -> bool {
        self.nvml.is_some()
    }

    /// The GPUs as of the last refresh (refreshed every 10 s by the engine).
    pub fn snapshot(&self) -> Vec<GpuInfo> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Re-reads the selected GPUs. A device NVML cannot read is left out
    /// (and logged); it must not take the others with it.
    pub fn refresh(&self) {
        if self.nvml.is_none() {
            return;
        }
        let mut gpus = self.read_all();
        gpus.retain(|g| self.selection.takes(g));
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = gpus;
    }

    /// Every GPU of the host that NVML can read.
    fn read_all(&self) -> Vec<GpuInfo> {
        let Some(nvml) = &self.nvml else {
            return Vec::new();
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "NVML device_count failed");
                return Vec::new();
            }
        };
        let mut gpus = Vec::with_capacity(count as usize);
        for i in 0..count {
            match read_device(nvml, i) {
                Ok(g) => gpus.push(g),
                Err(e) => tracing::warn!(index = i, error = %e, "NVML could not read GPU"),
            }
        }
        gpus
    }

    /// Memory used (MiB, summed) and mean utilisation (%) of the given GPUs
    /// now; None without NVML or if any of them cannot be read.
    pub(crate) fn sample(&self, uuids: &[String]) -> Option<(u64, f64)> {
        let nvml = self.nvml.as_ref()?;
        if uuids.is_empty() {
            return None;
        }
        let mut used = 0;
        let mut util = 0u64;
        for u in uuids {
            let d = nvml.device_by_uuid(u.as_str()).ok()?;
            used += d.memory_info().ok()?.used / MIB;
            util += u64::from(d.utilization_rates().ok()?.gpu);
        }
        Some((used, util as f64 / uuids.len() as f64))
    }
}

fn read_device(nvml: &Nvml, index: u32) -> Result<GpuInfo, nvml_wrapper::error::NvmlError> {
    let d = nvml.device_by_index(index)?;
    let mem = d.memory_info()?;
    let cc = d.cuda_compute_capability()?;
    Ok(GpuInfo {
        uuid: d.uuid()?,
        index,
        name: d.name()?,
        memory_total_mb: mem.total / MIB,
        memory_used_mb: mem.used / MIB,
        // Utilisation and temperature are unsupported on some boards; report 0
        // rather than hiding the GPU.
        utilization_pct: d.utilization_rates().map(|u| u.gpu).unwrap_or(0),
        temperature_c: d.temperature(TemperatureSensor::Gpu).unwrap_or(0),
        compute_capability: format!("{}.{}", cc.major, cc.minor),
    })
}

/// Which GPUs running jobs hold. A GPU held exclusively is offered to nobody;
/// one held only by `shared_gpu` jobs may be given to more shared jobs but is
/// never offered in a claim (the claim cannot say "shared only").
#[derive(Default)]
pub(crate) struct GpuAllocator {
    held: Mutex<HashMap<String, Holders>>,
}

#[derive(Default, Clone, Copy)]
struct Holders {
    exclusive: bool,
    shared: u32,
}

impl GpuAllocator {
    /// GPUs of `all` that no running job holds.
    pub(crate) fn free(&self, all: &[GpuInfo]) -> Vec<GpuInfo> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|g| !held.contains_key(&g.uuid))
            .cloned()
            .collect()
    }

    /// GPUs of `all` that only `shared_gpu` jobs hold.
    pub(crate) fn shared_only(&self, all: &[GpuInfo]) -> Vec<GpuInfo> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|g| matches!(held.get(&g.uuid), Some(h) if !h.exclusive))
            .cloned()
            .collect()
    }

    /// Picks `n` GPUs with at least `mem_mb` free for a job; None if there
    /// are not enough. Shared jobs first reuse GPUs other shared jobs hold.
    pub(crate) fn allocate(
        &self,
        all: &[GpuInfo],
        n: u32,
        mem_mb: u64,
        shared: bool,
    ) -> Option<Vec<String>> {
        if n == 0 {
            return Some(Vec::new());
        }
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let fits = |g: &GpuInfo| g.memory_total_mb.saturating_sub(g.memory_used_mb) >= mem_mb;
        let mut picked: Vec<String> = Vec::new();
        if shared {
            for g in all.iter().filter(|g| fits(g)) {
                if picked.len() as u32 == n {
                    break;
                }
                if matches!(held.get(&g.uuid), Some(h) if !h.exclusive) {
                    picked.push(g.uuid.clone());
                }
            }
        }
        for g in all.iter().filter(|g| fits(g)) {
            if picked.len() as u32 == n {
                break;
            }
            if !held.contains_key(&g.uuid) {
                picked.push(g.uuid.clone());
            }
        }
        if (picked.len() as u32) < n {
            return None;
        }
        for u in &picked {
            let h = held.entry(u.clone()).or_default();
            if shared {
                h.shared += 1;
            } else {
                h.exclusive = true;
            }
        }
        Some(picked)
    }

    /// UUIDs of the GPUs running jobs hold, sorted.
    pub(crate) fn held(&self) -> Vec<String> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<String> = held.keys().cloned().collect();
        v.sort();
        v
    }

    pub(crate) fn release(&self, uuids: &[String], shared: bool) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for u in uuids {
            if let Some(h) = held.get_mut(u) {
                if shared {
                    h.shared = h.shared.saturating_sub(1);
                } else {
                    h.exclusive = false;
                }
                if !h.exclusive && h.shared == 0 {
                    held.remove(u);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(i: u32, total: u64, used: u64) -> GpuInfo {
        GpuInfo {
            uuid: format!("GPU-{i}"),
            index: i,
            name: "Test".into(),
            memory_total_mb: total,
            memory_used_mb: used,
            utilization_pct: 0,
            temperature_c: 0,
            compute_capability: "8.0".into(),
        }
    }

    #[test]
    fn no_nvml_means_empty_inventory() {
        // This machine has no NVIDIA driver; if one is present the inventory
        // must still load without error.
        let inv = GpuInventory::load();
        if !inv.has_nvml() {
            assert!(inv.snapshot().is_empty());
            assert_eq!(inv.sample(&["GPU-x".to_string()]), None);
        }
        inv.refresh();
        let e = GpuInventory::empty();
        assert!(e.snapshot().is_empty());
        assert_eq!(e.sample(&["GPU-x".to_string()]), None);
    }

    #[test]
    fn gpu_selection_parses_and_filters() {
        use std::str::FromStr;
        assert_eq!(GpuSelection::from_str("all").unwrap(), GpuSelection::All);
        assert_eq!(
            GpuSelection::from_str(" None ").unwrap(),
            GpuSelection::None
        );
        let sel = GpuSelection::from_str("1, GPU-7,1").unwrap();
        assert_eq!(
            sel,
            GpuSelection::Only(vec![GpuId::Index(1), GpuId::Uuid("GPU-7".into())])
        );
        let gpus = [gpu(0, 1, 0), gpu(1, 1, 0), gpu(7, 1, 0)];
        let taken: Vec<u32> = gpus
            .iter()
            .filter(|g| sel.takes(g))
            .map(|g| g.index)
            .collect();
        assert_eq!(taken, vec![1, 7], "index 1 and uuid GPU-7 (index 7)");
        assert!(sel.missing(&gpus).is_empty());
        assert_eq!(
            GpuSelection::from_str("3,gpu-9").unwrap().missing(&gpus),
            vec!["3".to_string(), "gpu-9".to_string()]
        );
        assert!(!GpuSelection::None.takes(&gpus[0]));
        assert!(GpuSelection::All.takes(&gpus[0]));
        for bad in ["", "0,,1", "gpu0", "-1", "99999999999", "GPU-"] {
            let e = GpuSelection::from_str(bad).unwrap_err();
            assert!(e.contains("--gpus"), "{bad}: {e}");
        }
    }

    #[test]
    fn gpus_none_loads_no_nvml() {
        let inv = GpuInventory::load_selected(GpuSelection::None);
        assert!(!inv.has_nvml());
        assert!(inv.snapshot().is_empty());
    }

    #[test]
    fn exclusive_gpus_are_never_given_twice() {
        let all = vec![gpu(0, 16000, 0), gpu(1, 16000, 0)];
        let a = GpuAllocator::default();
        let first = a.allocate(&all, 1, 0, false).unwrap();
        assert_eq!(a.free(&all).len(), 1);
        let second = a.allocate(&all, 1, 0, false).unwrap();
        assert_ne!(first, second);
        assert!(a.allocate(&all, 1, 0, false).is_none());
        assert!(a.allocate(&all, 1, 0, true).is_none());
        assert!(a.free(&all).is_empty());
        assert_eq!(a.held(), vec!["GPU-0".to_string(), "GPU-1".to_string()]);
        a.release(&first, false);
        assert_eq!(a.free(&all).len(), 1);
        assert_eq!(a.allocate(&all, 1, 0, false).unwrap(), first);
    }

    #[test]
    fn shared_jobs_share_and_exclusive_jobs_wait() {
        let all = vec![gpu(0, 16000, 0), gpu(1, 16000, 0)];
        let a = GpuAllocator::default();
        assert!(a.shared_only(&all).is_empty());
        let s1 = a.allocate(&all, 1, 0, true).unwrap();
        assert_eq!(a.shared_only(&all)[0].uuid, s1[0]);
        let s2 = a.allocate(&all, 1, 0, true).unwrap();
        assert_eq!(s1, s2, "shared jobs pack onto the same GPU");
        let x = a.allocate(&all, 1, 0, false).unwrap();
        assert_ne!(x, s1);
        assert_eq!(
            a.shared_only(&all).len(),
            1,
            "the exclusive one is not shared"
        );
        assert!(a.allocate(&all, 1, 0, false).is_none());
        a.release(&s1, true);
        assert!(
            a.allocate(&all, 1, 0, false).is_none(),
            "still held by one shared job"
        );
        a.release(&s2, true);
        assert_eq!(a.allocate(&all, 1, 0, false).unwrap(), s1);
    }

    #[test]
    fn memory_requirement_filters_gpus() {
        let all = vec![gpu(0, 8000, 7000), gpu(1, 16000, 1000)];
        let a = GpuAllocator::default();
        assert_eq!(
            a.allocate(&all, 1, 4000, false).unwrap(),
            vec!["GPU-1".to_string()]
        );
        assert!(a.allocate(&all, 1, 4000, false).is_none());
        assert!(a.allocate(&all, 2, 0, false).is_none(), "only one left");
        assert_eq!(a.allocate(&all, 0, 0, false).unwrap(), Vec::<String>::new());
    }
}
