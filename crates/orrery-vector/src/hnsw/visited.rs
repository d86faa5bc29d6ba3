//! The visited set of a graph walk: one generation-stamped array per thread,
//! reused between walks, so that a search neither allocates nor clears a
//! set the size of the graph. Stamps are u16 (as hnswlib's): 2 bytes per
//! node per thread that ever walked the graph, cleared once every 65 535
//! walks.

use std::cell::RefCell;

pub struct Visited {
    marks: Vec<u16>,
    generation: u16,
}

impl Visited {
    /// Starts a new walk over ids below `n`: everything reads unvisited.
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // After 2^16 walks stamps would repeat: clear once and go on.
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.generation = 1;
        }
    }

    /// Marks `id`; returns whether it was already visited in this walk.
    /// Ids past the size given to `reset` (nodes added since) grow the set.
    #[inline]
    pub fn check_and_mark(&mut self, id: u32) -> bool {
        let i = id as usize;
        if i >= self.marks.len() {
            self.marks.resize(i + 1, 0);
        }
        let seen = self.marks[i] == self.generation;
        self.marks[i] = self.generation;
        seen
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited { marks: Vec::new(), generation: 0 })
    };
}

/// Runs `f` with this thread's visited set, reset for ids below `n`.
/// A re-entrant call (not done by the walks) gets a fresh set rather than
/// a borrow panic.
pub fn with_visited<R>(n: usize, f: impl FnOnce(&mut Visited) -> R) -> R {
    VISITED.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            v.reset(n);
            f(&mut v)
        }
        Err(_) => {
            let mut v = Visited {
                marks: Vec::new(),
                generation: 0,
            };
            v.reset(n);
            f(&mut v)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_walk_starts_empty() {
        with_visited(10, |v| {
            assert!(!v.check_and_mark(3));
            assert!(v.check_and_mark(3));
            assert!(!v.check_and_mark(50));
        });
        with_visited(10, |v| {
            assert!(!v.check_and_mark(3));
            assert!(!v.check_and_mark(50));
        });
    }

    #[test]
    fn generation_wrap_clears_old_stamps() {
        let mut v = Visited {
            marks: Vec::new(),
            generation: u16::MAX - 1,
        };
        v.reset(4);
        assert!(!v.check_and_mark(1));
        v.reset(4); // wraps to 0: cleared, generation 1
        assert!(!v.check_and_mark(1));
        assert!(!v.check_and_mark(2));
    }
}
