//! Glob expansion through the fs root's directory handle.
//!
//! The `glob` crate walks the ambient file system by path; here each
//! pattern component is matched against `entries()` of a directory handle
//! opened beneath the root, so a match can never lead out of it. Per
//! component: a literal name is opened directly; a name with `*`, `?` or
//! `[...]` is matched (with [`glob::Pattern`], default options) against the
//! directory's entries; `**` matches zero or more real directories (symlinks
//! are not descended by `**`: no loops, no surprises).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use cap_std::fs::Dir;

use crate::confine::{bad, dot, shown, FsRoot};
use crate::ExecError;

fn has_meta(c: &str) -> bool {
    c.contains(['*', '?', '['])
}

/// Not found, or a file where a directory was needed: simply no match.
fn no_match(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

impl FsRoot {
    /// Expands a glob under the root into the matching regular files, as
    /// root-relative paths, sorted. A match (or a directory on the way to
    /// one) that leads outside the root through a symlink is an error for
    /// the whole pattern, as is any `..` or an absolute path outside.
    pub fn glob(&self, field: &str, pattern: &str) -> Result<Vec<PathBuf>, ExecError> {
        let rel = self.relative(field, pattern)?;
        let comps: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mut g = Glob {
            fs: self,
            field,
            pattern,
            out: Vec::new(),
        };
        g.expand(self.dir(), Path::new(""), &comps)?;
        let mut out = g.out;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

struct Glob<'a> {
    fs: &'a FsRoot,
    field: &'a str,
    pattern: &'a str,
    out: Vec<PathBuf>,
}

impl Glob<'_> {
    fn err(&self, at: &Path, e: std::io::Error) -> ExecError {
        self.fs.io_err(self.field, &shown(at), e)
    }

    /// Matches `comps` under `dir`, whose root-relative path is `at`.
    fn expand(&mut self, dir: &Dir, at: &Path, comps: &[String]) -> Result<(), ExecError> {
        let Some((first, rest)) = comps.split_first() else {
            return Ok(());
        };
        if first == "**" {
            self.expand(dir, at, rest)?;
            for entry in dir.entries().map_err(|e| self.err(at, e))? {
                let entry = entry.map_err(|e| self.err(at, e))?;
                let path = at.join(entry.file_name());
                let is_dir = entry.file_type().map_err(|e| self.err(&path, e))?.is_dir();
                if is_dir {
                    let sub = entry.open_dir().map_err(|e| self.err(&path, e))?;
                    self.expand(&sub, &path, comps)?;
                }
            }
            return Ok(());
        }
        if !has_meta(first) {
            return self.one(dir, &at.join(first), Path::new(first), rest);
        }
        let pat = glob::Pattern::new(first).map_err(|e| bad(self.field, self.pattern, e))?;
        let mut names = Vec::new();
        for entry in dir.entries().map_err(|e| self.err(at, e))? {
            let name = entry.map_err(|e| self.err(at, e))?.file_name();
            if pat.matches(&name.to_string_lossy()) {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            self.one(dir, &at.join(&name), Path::new(&name), rest)?;
        }
        Ok(())
    }

    /// One candidate `name` in `dir` (root-relative `path`): a file when
    /// the pattern ends here, else a directory to go on in. Symlinks that
    /// stay inside the root are followed (cap-std refuses the others).
    fn one(
        &mut self,
        dir: &Dir,
        path: &Path,
        name: &Path,
        rest: &[String],
    ) -> Result<(), ExecError> {
        if rest.is_empty() {
            match dir.metadata(dot(name)) {
                Ok(md) if md.is_file() => self.out.push(path.to_path_buf()),
                Ok(_) => {}
                Err(e) if no_match(&e) => {}
                Err(e) => return Err(self.err(path, e)),
            }
            return Ok(());
        }
        match dir.open_dir(dot(name)) {
            Ok(sub) => self.expand(&sub, path, rest),
            Err(e) if no_match(&e) => Ok(()),
            Err(e) => Err(self.err(path, e)),
        }
    }
}
