//! Payload indexes: for each payload path, which points hold which value —
//! so a filtered search finds its candidates without testing the filter
//! against every point of the shard.
//!
//! Derived and per replica, like the HNSW index: never replicated, rebuilt
//! from the points on restore, kept in step by apply. Every scalar leaf of
//! a payload is indexed (strings up to [`MAX_KEYWORD`] bytes, numbers,
//! booleans; the elements of a leaf array too), with no declaration: a
//! filter on any field is fast. Objects are walked; arrays are only
//! looked into at the leaf, exactly as [`crate::filter`] resolves keys.
//!
//! The index answers a filter with a **superset** of the points that match
//! it (from the `must` conditions it can answer; `should` and `must_not`
//! only ever narrow further), and the caller re-checks the whole filter on
//! each candidate. So the one property that matters is completeness: a
//! point that matches is always a candidate (`tests_payload_index.rs`).
//!
//! Its maps are persistent (`imbl`): a search's view of the collection
//! (see [`crate::SearchView`]) clones the index in O(1) and keeps reading
//! it while apply changes the live one.

use crate::filter::{Condition, Filter, Range, Scalar, Test};
use crate::PointId;
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// Longer strings are not indexed (they are rarely filtered on by equality
/// and would double the memory of text payloads); a condition on one
/// cannot be answered by the index and falls back to a scan.
pub const MAX_KEYWORD: usize = 256;

/// An f64 that orders totally, with -0.0 folded into 0.0 (they are equal
/// to the filter's `==`, but not to `total_cmp`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Num(f64);

impl Num {
    fn new(x: f64) -> Self {
        Num(if x == 0.0 { 0.0 } else { x })
    }
}
impl Eq for Num {}
impl PartialOrd for Num {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Num {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

type Ids = imbl::OrdSet<PointId>;

/// What [`PayloadIndex::candidates`] hands out: an ordinary set, built
/// for one search.
pub type Candidates = BTreeSet<PointId>;

#[derive(Clone, Debug, Default)]
struct Field {
    strs: imbl::HashMap<String, Ids>,
    nums: imbl::OrdMap<Num, Ids>,
    bools: [Ids; 2],
}

/// The payload index of one collection on one replica. The default is the
/// (complete) index of no points; [`PayloadIndex::unbuilt`] is what a
/// deserialized collection starts with until restore builds it.
#[derive(Clone, Debug)]
pub struct PayloadIndex {
    /// Whether it reflects every point (false until built after restore).
    built: bool,
    fields: imbl::HashMap<Vec<String>, Field>,
}

fn leaves<'a>(path: &mut Vec<String>, v: &'a Value, out: &mut dyn FnMut(&[String], &'a Value)) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                leaves(path, x, out);
                path.pop();
            }
        }
        Value::Array(items) => {
            for x in items {
                // The filter tests array elements only at the leaf.
                if !matches!(x, Value::Object(_) | Value::Array(_)) {
                    out(path, x);
                }
            }
        }
        x => out(path, x),
    }
}

impl Default for PayloadIndex {
    fn default() -> Self {
        PayloadIndex {
            built: true,
            fields: imbl::HashMap::new(),
        }
    }
}

impl PayloadIndex {
    pub fn unbuilt() -> Self {
        PayloadIndex {
            built: false,
            fields: imbl::HashMap::new(),
        }
    }

    /// An index of `points`, complete.
    pub fn build<'a>(points: impl Iterator<Item = (&'a PointId, &'a Map<String, Value>)>) -> Self {
        let mut ix = PayloadIndex::default();
        for (id, payload) in points {
            ix.insert(id, payload);
        }
        ix
    }

    pub fn is_built(&self) -> bool {
        self.built
    }

    fn each(payload: &Map<String, Value>, mut f: impl FnMut(&[String], &Value)) {
        let mut path = Vec::new();
        for (k, v) in payload {
            path.push(k.clone());
            leaves(&mut path, v, &mut f);
            path.pop();
        }
    }

    pub fn insert(&mut self, id: &PointId, payload: &Map<String, Value>) {
        let fields = &mut self.fields;
        Self::each(payload, |path, v| {
            let f = match fields.get_mut(path) {
                Some(f) => f,
                None => fields.entry(path.to_vec()).or_default(),
            };
            let set = match v {
                Value::String(s) if s.len() <= MAX_KEYWORD => f.strs.entry(s.clone()).or_default(),
                Value::Number(n) => match n.as_f64() {
                    Some(x) => f.nums.entry(Num::new(x)).or_default(),
                    None => return,
                },
                Value::Bool(b) => &mut f.bools[*b as usize],
                _ => return,
            };
            set.insert(id.clone());
        });
    }

    pub fn remove(&mut self, id: &PointId, payload: &Map<String, Value>) {
        let fields = &mut self.fields;
        Self::each(payload, |path, v| {
            let Some(f) = fields.get_mut(path) else {
                return;
            };
            match v {
                Value::String(s) => {
                    if let Some(set) = f.strs.get_mut(s) {
                        set.remove(id);
                        if set.is_empty() {
                            f.strs.remove(s);
                        }
                    }
                }
                Value::Number(n) => {
                    let Some(k) = n.as_f64().map(Num::new) else {
                        return;
                    };
                    if let Some(set) = f.nums.get_mut(&k) {
                        set.remove(id);
                        if set.is_empty() {
                            f.nums.remove(&k);
                        }
                    }
                }
                Value::Bool(b) => {
                    f.bools[*b as usize].remove(id);
                }
                _ => {}
            }
        });
    }

    /// What the index knows of the points matching `filter`: a superset
    /// of them when it has fewer than `few` points, else only that the
    /// superset is large (so the caller needs no scan to know the filter is
    /// not selective). Only the smallest answerable `must` condition is
    /// materialised; the caller checks the whole filter on each candidate.
    pub fn candidates(&self, filter: &Filter, few: usize) -> Narrowed {
        if !self.built {
            return Narrowed::Unknown;
        }
        let best = filter
            .must
            .iter()
            .filter_map(|c| self.estimate(c).map(|n| (n, c)))
            .min_by_key(|(n, _)| *n);
        match best {
            None => Narrowed::Unknown,
            Some((n, _)) if n >= few => Narrowed::Many,
            Some((_, c)) => match self.condition(c) {
                Some(ids) => Narrowed::Few(ids),
                None => Narrowed::Unknown,
            },
        }
    }

    /// An upper bound of the points for which `c` holds, without building
    /// the set; `None` if the index cannot answer `c`.
    fn estimate(&self, c: &Condition) -> Option<usize> {
        let Some(f) = self.fields.get(&c.path) else {
            return Some(0);
        };
        match &c.test {
            Test::Match(s) => f.scalar_len(s),
            Test::Any(list) => list.iter().map(|s| f.scalar_len(s)).sum(),
            Test::Range(r) => Some(f.range_keys(r).map(|(_, ids)| ids.len()).sum()),
        }
    }

    /// Every point for which `c` holds, or `None` if the index cannot say.
    fn condition(&self, c: &Condition) -> Option<Candidates> {
        let Some(f) = self.fields.get(&c.path) else {
            // No point has a scalar at this path: the condition holds for
            // none (a missing key makes every condition false).
            return Some(Candidates::new());
        };
        let mut out = Candidates::new();
        match &c.test {
            Test::Match(s) => out.extend(f.scalar(s)?.into_iter().flatten().cloned()),
            Test::Any(list) => {
                for s in list {
                    out.extend(f.scalar(s)?.into_iter().flatten().cloned());
                }
            }
            Test::Range(r) => {
                for (_, ids) in f.range_keys(r) {
                    out.extend(ids.iter().cloned());
                }
            }
        }
        Some(out)
    }
}

/// See [`PayloadIndex::candidates`].
#[derive(Debug)]
pub enum Narrowed {
    /// The index cannot narrow this filter: test it on every point.
    Unknown,
    /// At least the given number of points may match.
    Many,
    /// Every matching point is among these.
    Few(Candidates),
}

impl Field {
    /// The points holding `s` (`Some(None)`: none), or `None` if the index
    /// cannot say.
    fn scalar(&self, s: &Scalar) -> Option<Option<&Ids>> {
        Some(match s {
            Scalar::Str(x) if x.len() > MAX_KEYWORD => return None,
            Scalar::Str(x) => self.strs.get(x),
            Scalar::Num(x) => self.nums.get(&Num::new(*x)),
            Scalar::Bool(b) => Some(&self.bools[*b as usize]),
        })
    }

    fn scalar_len(&self, s: &Scalar) -> Option<usize> {
        self.scalar(s).map(|ids| ids.map_or(0, |ids| ids.len()))
    }

    /// The keys `r` accepts, with their points.
    fn range_keys<'a>(&'a self, r: &'a Range) -> impl Iterator<Item = (&'a Num, &'a Ids)> + 'a {
        use std::ops::Bound::{Included, Unbounded};
        // The loosest key range holding every value `r` accepts; each key
        // in it is then checked exactly.
        let lo = [r.gt, r.gte].into_iter().flatten().reduce(f64::max);
        let hi = [r.lt, r.lte].into_iter().flatten().reduce(f64::min);
        let inverted = matches!((lo, hi), (Some(a), Some(b)) if a > b);
        let lo = lo.map_or(Unbounded, |x| Included(Num::new(x)));
        let hi = hi.map_or(Unbounded, |x| Included(Num::new(x)));
        // (`BTreeMap::range` panics on an inverted range.)
        let keys = if inverted {
            None
        } else {
            Some(self.nums.range((lo, hi)))
        };
        keys.into_iter()
            .flatten()
            .filter(move |(k, _)| r.contains(k.0))
    }
}
