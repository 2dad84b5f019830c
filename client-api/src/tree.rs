//! Restoring a directory tree from a manifest that a stranger may have crafted.
//!
//! Anyone can store a manifest and hand out its address, so `kura get` treats every entry as
//! hostile. [`TreePlan::check`] refuses, before anything is written, a manifest with an entry
//! that could leave the output folder: names that are empty, absolute, `.` or `..`; paths
//! beneath a file or a link; duplicates; links whose target is absolute or climbs above the
//! tree; more entries, nesting or bytes than the limits. [`Extractor`] then writes it with
//! each directory opened relative to its parent without following links, each file created
//! exclusively (never over an existing name, never through a link), links created last, and
//! modes masked to `0o777` (no setuid, setgid or sticky bits) and by the user's umask, as `tar`
//! restores for a user. Checking and writing are separate layers, so a bug in one is caught
//! by the other.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::error::ClientError;
use crate::root::{Content, DirEntry, EntryKind};

/// Most entries one manifest may hold.
pub const MAX_ENTRIES: usize = 1_000_000;
/// Deepest nesting of an entry (path components).
pub const MAX_DEPTH: usize = 128;
/// Longest path of an entry, in bytes (Linux's `PATH_MAX` less its terminator).
pub const MAX_PATH: usize = 4095;
/// Longest single name, in bytes (`NAME_MAX`).
const MAX_NAME: usize = 255;
/// Permission bits a restored entry may carry.
const MODE_MASK: u32 = 0o777;

/// A regular file to write.
#[derive(Debug)]
pub struct PlannedFile {
    /// Path components under the output folder.
    pub path: Vec<String>,
    /// Permission bits, masked.
    pub mode: u32,
    /// Where its bytes are; writing stops with an error past [`Content::size`].
    pub content: Content,
}

/// A manifest that has been checked to stay inside its folder, in the order to write it.
#[derive(Debug, Default)]
pub struct TreePlan {
    /// Directories and their masked modes, parents before children.
    pub dirs: Vec<(Vec<String>, u32)>,
    /// Regular files.
    pub files: Vec<PlannedFile>,
    /// Symbolic links and their targets, written after everything else.
    pub links: Vec<(Vec<String>, String)>,
    /// Sum of the files' declared sizes: the most bytes the restore writes.
    pub total_bytes: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dir,
    File,
    Link,
}

fn refuse(entry: &str, reason: impl Into<String>) -> ClientError {
    ClientError::UnsafeEntry { entry: entry.chars().take(200).collect(), reason: reason.into() }
}

/// The components of a manifest path, if it is a plain relative path of bounded size.
fn components(path: &str) -> Result<Vec<String>, ClientError> {
    if path.is_empty() {
        return Err(refuse(path, "empty name"));
    }
    if path.len() > MAX_PATH {
        return Err(refuse(path, format!("path longer than {MAX_PATH} bytes")));
    }
    if path.starts_with('/') {
        return Err(refuse(path, "absolute path"));
    }
    let parts: Vec<String> = path.split('/').map(str::to_owned).collect();
    if parts.len() > MAX_DEPTH {
        return Err(refuse(path, format!("nested deeper than {MAX_DEPTH}")));
    }
    for p in &parts {
        match p.as_str() {
            "" => return Err(refuse(path, "empty path component")),
            "." | ".." => return Err(refuse(path, format!("{p:?} component"))),
            _ if p.len() > MAX_NAME => return Err(refuse(path, format!("name longer than {MAX_NAME} bytes"))),
            _ if p.contains('\0') => return Err(refuse(path, "NUL in name")),
            _ => {}
        }
    }
    Ok(parts)
}

/// Checks that a link at depth `depth` (its folder's component count) with `target` resolves
/// inside the tree.
///
/// The target may climb only with leading `..` components, no more of them than the link's
/// folder is deep, and then descend by plain names. Lexical checks alone are not enough once
/// a path climbs *after* a name (`x/..` where `x` is itself a link climbs from where `x`
/// points), so that form is refused; with it refused, every link resolves inside the tree by
/// induction: the folders it climbs through are real folders of the tree (links are written
/// last and never traversed on the way), and each link it descends through stays inside.
fn check_link_target(entry: &str, depth: usize, target: &str) -> Result<(), ClientError> {
    if target.is_empty() || target.len() > MAX_PATH || target.contains('\0') {
        return Err(refuse(entry, "link target empty, too long or with NUL"));
    }
    let mut climbs = 0;
    let mut descended = false;
    for c in Path::new(target).components() {
        match c {
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(entry, format!("link to absolute path {target:?}")))
            }
            Component::CurDir => {}
            Component::ParentDir if descended => {
                return Err(refuse(entry, format!("link target {target:?} climbs after a name")))
            }
            Component::ParentDir => climbs += 1,
            Component::Normal(_) => descended = true,
        }
    }
    if climbs > depth {
        return Err(refuse(entry, format!("link target {target:?} leaves the tree")));
    }
    Ok(())
}

impl TreePlan {
    /// Checks a manifest and orders it for writing; refuses it whole if any entry is unsafe.
    pub fn check(entries: Vec<DirEntry>) -> Result<TreePlan, ClientError> {
        if entries.len() > MAX_ENTRIES {
            return Err(refuse("<manifest>", format!("{} entries, more than {MAX_ENTRIES}", entries.len())));
        }
        let mut kinds: HashMap<Vec<String>, Kind> = HashMap::with_capacity(entries.len());
        let mut plan = TreePlan::default();
        for entry in entries {
            let path = components(&entry.path)?;
            let mode = entry.mode & MODE_MASK;
            let kind = match entry.kind {
                EntryKind::Dir => {
                    plan.dirs.push((path.clone(), mode));
                    Kind::Dir
                }
                EntryKind::File { size, content } => {
                    if size != content.size() {
                        return Err(refuse(&entry.path, format!("size {size} but content of {} bytes", content.size())));
                    }
                    plan.total_bytes = plan
                        .total_bytes
                        .checked_add(size)
                        .ok_or_else(|| refuse(&entry.path, "sizes overflow"))?;
                    plan.files.push(PlannedFile { path: path.clone(), mode, content });
                    Kind::File
                }
                EntryKind::Symlink(target) => {
                    check_link_target(&entry.path, path.len() - 1, &target)?;
                    plan.links.push((path.clone(), target));
                    Kind::Link
                }
            };
            if kinds.insert(path, kind).is_some() {
                return Err(refuse(&entry.path, "named twice"));
            }
        }
        // Nothing may lie beneath a file or a link: writing it would mean going through one.
        for path in kinds.keys() {
            for depth in 1..path.len() {
                if matches!(kinds.get(&path[..depth]), Some(Kind::File | Kind::Link)) {
                    return Err(refuse(&path.join("/"), format!("lies beneath {}, which is not a folder", path[..depth].join("/"))));
                }
            }
        }
        plan.dirs.sort_by_key(|(p, _)| p.len());
        Ok(plan)
    }
}

/// Writes a checked tree under one folder, never following a link on the way.
#[derive(Debug)]
pub struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    /// The user's umask: restored modes lose its bits, as `tar` does for a user.
    umask: u32,
}

/// This process's umask, read without changing it (`/proc/self/status`, Linux 4.7 on); 022 if
/// it cannot be read.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Umask:").and_then(|v| u32::from_str_radix(v.trim(), 8).ok())))
        .unwrap_or(0o022)
}

impl Extractor {
    /// Opens (creating if needed) the output folder.
    pub fn open(out: &Path) -> Result<Extractor, ClientError> {
        let io = |e: std::io::Error| ClientError::Io { path: out.to_path_buf(), source: e };
        match std::fs::create_dir(out) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
            _ => {}
        }
        // The output folder is the user's own choice, so it may itself be reached through a link.
        let root = rustix::fs::open(out, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| io(e.into()))?;
        Ok(Extractor { root, root_path: out.to_path_buf(), umask: process_umask() })
    }

    fn io_err(&self, path: &[String]) -> impl Fn(rustix::io::Errno) -> ClientError + '_ {
        let path = self.root_path.join(path.join("/"));
        move |e| ClientError::Io { path: path.clone(), source: e.into() }
    }

    /// The folder at `path` (relative to the root), opened without following links; missing
    /// folders are created when `create`.
    fn dir(&self, path: &[String], create: bool) -> Result<OwnedFd, ClientError> {
        let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
        let mut fd = rustix::io::dup(&self.root).map_err(self.io_err(&[]))?;
        for (i, name) in path.iter().enumerate() {
            let here = &path[..=i];
            fd = match rustix::fs::openat(&fd, name.as_str(), flags, Mode::empty()) {
                Ok(next) => next,
                Err(rustix::io::Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&fd, name.as_str(), Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(self.io_err(here)(e)),
                    }
                    rustix::fs::openat(&fd, name.as_str(), flags, Mode::empty()).map_err(self.io_err(here))?
                }
                // ELOOP or ENOTDIR: a link or a file stands where a folder should be.
                Err(e) => return Err(self.io_err(here)(e)),
            };
        }
        Ok(fd)
    }

    /// Creates the folder at `path` and any missing parents.
    pub fn make_dir(&self, path: &[String]) -> Result<(), ClientError> {
        self.dir(path, true).map(drop)
    }

    /// Creates a new, empty regular file at `path` (mode 0600 until [`Extractor::finish_file`]);
    /// fails if anything already has its name.
    pub fn create_file(&self, path: &[String]) -> Result<File, ClientError> {
        let (name, parent) = path.split_last().ok_or_else(|| refuse("", "empty name"))?;
        let dir = self.dir(parent, true)?;
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(&dir, name.as_str(), flags, Mode::from_raw_mode(0o600)).map_err(self.io_err(path))?;
        Ok(File::from(fd))
    }

    /// The mode a restored entry gets: the tree's, masked, less the user's umask.
    fn restored(&self, mode: u32) -> Mode {
        Mode::from_raw_mode(mode & MODE_MASK & !self.umask)
    }

    /// Makes a written file durable and gives it its mode (less the user's umask).
    pub fn finish_file(&self, path: &[String], file: &File, mode: u32) -> Result<(), ClientError> {
        rustix::fs::fchmod(file, self.restored(mode)).map_err(self.io_err(path))?;
        file.sync_all().map_err(|e| ClientError::Io { path: self.root_path.join(path.join("/")), source: e })
    }

    /// Removes a file this extractor created (after a failed download).
    pub fn remove_file(&self, path: &[String]) {
        if let Some((name, parent)) = path.split_last() {
            if let Ok(dir) = self.dir(parent, false) {
                let _ = rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty());
            }
        }
    }

    /// Creates a link at `path` to `target` (checked by [`TreePlan::check`]); fails if anything
    /// already has its name.
    pub fn link(&self, path: &[String], target: &str) -> Result<(), ClientError> {
        let (name, parent) = path.split_last().ok_or_else(|| refuse("", "empty name"))?;
        let dir = self.dir(parent, true)?;
        rustix::fs::symlinkat(target, &dir, name.as_str()).map_err(self.io_err(path))
    }

    /// Gives the folder at `path` its mode, less the user's umask (call deepest first, after
    /// its contents are written).
    pub fn set_dir_mode(&self, path: &[String], mode: u32) -> Result<(), ClientError> {
        let dir = self.dir(path, false)?;
        rustix::fs::fchmod(&dir, self.restored(mode)).map_err(self.io_err(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn dir(path: &str) -> DirEntry {
        DirEntry { path: path.into(), mode: 0o755, kind: EntryKind::Dir }
    }
    fn file(path: &str, bytes: &[u8]) -> DirEntry {
        DirEntry {
            path: path.into(),
            mode: 0o644,
            kind: EntryKind::File { size: bytes.len() as u64, content: Content::Inline(bytes.to_vec()) },
        }
    }
    fn link(path: &str, target: &str) -> DirEntry {
        DirEntry { path: path.into(), mode: 0o777, kind: EntryKind::Symlink(target.into()) }
    }

    fn refused(entries: Vec<DirEntry>) -> String {
        match TreePlan::check(entries) {
            Err(ClientError::UnsafeEntry { entry, reason }) => format!("{entry}: {reason}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn names_that_leave_the_folder_are_refused() {
        for bad in ["", "/etc/passwd", "..", "../x", "a/../../b", "./a", "a//b", "a/", "a/.", "a\0b"] {
            refused(vec![file(bad, b"x")]);
        }
        let deep = vec!["d"; MAX_DEPTH + 1].join("/");
        assert!(refused(vec![dir(&deep)]).contains("deeper"));
        refused(vec![file(&"n".repeat(MAX_NAME + 1), b"")]);
        assert!(TreePlan::check(vec![file("a/b/c.txt", b"x"), dir("a")]).is_ok());
    }

    #[test]
    fn links_must_resolve_inside_the_tree() {
        for (at, target) in [
            ("l", "/etc"),
            ("l", ".."),
            ("l", "../x"),
            ("a/l", "../../x"),
            ("a/b/l", "x/../.."),
            ("l", "a/b/s/.."),
            ("l", ""),
        ] {
            refused(vec![link(at, target)]);
        }
        for (at, target) in [("l", "a"), ("l", "./a/b"), ("a/l", ".."), ("a/b/l", "../../c/d"), ("l", ".")] {
            TreePlan::check(vec![link(at, target)]).unwrap_or_else(|e| panic!("{at} -> {target}: {e}"));
        }
    }

    #[test]
    fn nothing_may_lie_beneath_a_link_or_a_file_or_be_named_twice() {
        assert!(refused(vec![link("esc", "a"), file("esc/pwned", b"x")]).contains("beneath"));
        assert!(refused(vec![file("f", b"x"), file("f/g", b"y")]).contains("beneath"));
        assert!(refused(vec![file("f", b"x"), link("f", "g")]).contains("twice"));
    }

    #[test]
    fn declared_sizes_must_agree_and_modes_are_masked() {
        let lie = DirEntry { path: "f".into(), mode: 0o644, kind: EntryKind::File { size: 1, content: Content::Inline(vec![1, 2]) } };
        refused(vec![lie]);
        let suid = DirEntry { mode: 0o4755, ..file("f", b"x") };
        let plan = TreePlan::check(vec![suid, DirEntry { mode: 0o3777, ..dir("d") }]).unwrap();
        assert_eq!(plan.files[0].mode, 0o755);
        assert_eq!(plan.dirs[0].1, 0o777);
    }

    #[test]
    fn writing_never_follows_a_link_already_in_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, outside) = (tmp.path().join("out"), tmp.path().join("outside"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("esc")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), out.join("f")).unwrap();
        let ex = Extractor::open(&out).unwrap();
        let path = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
        assert!(ex.create_file(&path("esc/pwned")).is_err(), "a folder that is a link is not entered");
        assert!(ex.make_dir(&path("esc/sub")).is_err());
        assert!(ex.create_file(&path("f")).is_err(), "a link is not written through");
        assert!(ex.link(&path("f"), "x").is_err(), "an existing name is not replaced");
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");

        let mut f = ex.create_file(&path("d/e/new")).unwrap();
        f.write_all(b"hello").unwrap();
        ex.finish_file(&path("d/e/new"), &f, 0o4777).unwrap();
        let meta = std::fs::metadata(out.join("d/e/new")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777, 0o777 & !ex.umask, "no setuid; the umask applies");
        // A world-writable folder in a tree comes back as the user's umask allows, as from tar.
        ex.set_dir_mode(&path("d"), 0o1777).unwrap();
        let meta = std::fs::metadata(out.join("d")).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777, 0o777 & !ex.umask);
        assert_eq!(ex.umask, process_umask(), "read without being changed");
        assert!(ex.create_file(&path("d/e/new")).is_err(), "never over an existing name");
        ex.remove_file(&path("d/e/new"));
        assert!(!out.join("d/e/new").exists());
    }
}
