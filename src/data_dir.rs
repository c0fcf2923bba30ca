//! The data directory is private to the server's user: the directory 0700, every directory
//! in it 0700 and every file 0600, whatever umask the process was started with.
//!
//! - New files: [`restrict_umask`] sets the process's umask to 077 before anything is created,
//!   so the journal, the sled index and FX store (and their temporary and snapshot files), key
//!   files and backups are made owner-only by whichever crate creates them.
//! - Existing files: [`make_private`] runs at every start, before the ledger opens. It creates
//!   the directory 0700 if it is missing and otherwise **tightens** it: group and other
//!   permission bits are removed from the directory and, when it holds a journal (it is a
//!   Puente data directory), from everything in it, each change logged as a warning. Symbolic
//!   links are never followed. A directory that is not empty but holds no journal (a fresh
//!   volume with `lost+found`, or a mistake) has only its own mode tightened: what is not
//!   Puente's is left alone. What cannot be changed (not the owner, a read-only file system) is
//!   logged and the start goes on: with the directory itself 0700 nobody else can reach into it.

use std::path::{Path, PathBuf};

/// Owner-only modes.
const DIR_MODE: u32 = 0o700;
const GROUP_OTHER_BITS: u32 = 0o077;
/// Paths named one by one in the warning; the rest are counted.
const PATHS_LOGGED_MAX: usize = 20;
/// The journal's file name: its presence makes a directory a Puente data directory.
/// What makes a directory Puente's: its journal (segments, or the single file of earlier
/// versions, or that file kept after its migration).
const JOURNAL_PATHS: [&str; 3] = ["journal", "journal.log", "journal.j2.log"];

/// From now on, files and directories this process creates get no group or other permission
/// bits (umask 077), whatever the umask it inherited.
pub fn restrict_umask() {
    #[cfg(unix)]
    // SAFETY: umask(2) only sets the calling process's file-mode creation mask; it cannot fail
    // and touches no memory of ours.
    unsafe {
        libc::umask(0o077);
    }
}

/// What [`make_private`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Tightened {
    /// Paths whose mode lost group or other bits, with the old and new mode.
    pub changed: Vec<(PathBuf, u32, u32)>,
    /// Paths that stay open to group or others: symbolic links not followed, foreign entries
    /// of a directory without a journal, or a chmod that failed (with the reason).
    pub left: Vec<(PathBuf, String)>,
}

/// Creates `dir` owner-only (its missing parents with the process's umask), or tightens an
/// existing one as described in the module documentation; logs what it changed and what it
/// could not.
pub fn make_private(dir: &Path) -> Result<Tightened, String> {
    let error = |what: &str, e: std::io::Error| format!("data directory {}: {what}: {e}", dir.display());
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| error("cannot create its parent", e))?;
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(DIR_MODE);
        }
        match builder.create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error("cannot create it", e)),
        }
    }
    let metadata = std::fs::metadata(dir).map_err(|e| error("cannot read it", e))?;
    if !metadata.is_dir() {
        return Err(format!("data directory {} is not a directory", dir.display()));
    }
    let mut tightened = Tightened::default();
    tighten(dir, &mut tightened);
    let entries = std::fs::read_dir(dir).map_err(|e| error("cannot list it", e))?;
    let puente_dir = JOURNAL_PATHS.iter().any(|p| dir.join(p).exists());
    for entry in entries {
        let path = entry.map_err(|e| error("cannot list it", e))?.path();
        if puente_dir {
            tighten_tree(&path, &mut tightened);
        } else if is_open(&path) {
            tightened
                .left
                .push((path, "not Puente's (the directory holds no journal yet): left as is".into()));
        }
    }
    report(dir, &tightened);
    Ok(tightened)
}

/// Whether `path` (not followed if a link) has group or other permission bits.
fn is_open(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| !m.file_type().is_symlink() && mode(&m) & GROUP_OTHER_BITS != 0)
}

fn tighten_tree(path: &Path, tightened: &mut Tightened) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return };
    if metadata.file_type().is_symlink() {
        tightened.left.push((path.to_owned(), "a symbolic link: not followed".into()));
        return;
    }
    tighten(path, tightened);
    if metadata.is_dir() {
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    tighten_tree(&entry.path(), tightened);
                }
            }
            Err(e) => tightened.left.push((path.to_owned(), format!("cannot list it: {e}"))),
        }
    }
}

/// Removes group and other bits from `path` (never a link: callers check).
fn tighten(path: &Path, tightened: &mut Tightened) {
    let Ok(metadata) = std::fs::symlink_metadata(path) else { return };
    let old = mode(&metadata);
    if old & GROUP_OTHER_BITS == 0 {
        return;
    }
    // Directories keep the owner's access to them; files keep their owner bits.
    let new = if metadata.is_dir() {
        (old & !GROUP_OTHER_BITS & 0o7777) | DIR_MODE
    } else {
        old & !GROUP_OTHER_BITS & 0o7777
    };
    match set_mode(path, new) {
        Ok(()) => tightened.changed.push((path.to_owned(), old, new)),
        Err(e) => tightened.left.push((path.to_owned(), format!("mode {old:o}, cannot change it: {e}"))),
    }
}

#[cfg(unix)]
fn mode(metadata: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    metadata.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn mode(_: &std::fs::Metadata) -> u32 {
    0
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

fn report(dir: &Path, tightened: &Tightened) {
    if !tightened.changed.is_empty() {
        let shown: Vec<String> = tightened
            .changed
            .iter()
            .take(PATHS_LOGGED_MAX)
            .map(|(path, old, new)| format!("{} {old:o}->{new:o}", path.display()))
            .collect();
        tracing::warn!(
            data_dir = %dir.display(),
            tightened = tightened.changed.len(),
            paths = %shown.join(", "),
            "the data directory was readable by group or others: removed their permissions"
        );
    }
    for (path, reason) in tightened.left.iter().take(PATHS_LOGGED_MAX) {
        tracing::warn!(path = %path.display(), reason = %reason, "data directory entry not made private");
    }
    if tightened.left.len() > PATHS_LOGGED_MAX {
        tracing::warn!(
            more = tightened.left.len() - PATHS_LOGGED_MAX,
            "more data directory entries not made private"
        );
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn a_puente_directory_is_tightened_and_links_are_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(JOURNAL_PATHS[1]), b"x").unwrap();
        std::fs::create_dir(dir.join("index")).unwrap();
        std::fs::write(dir.join("index/db"), b"x").unwrap();
        let outside = root.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();
        for (path, mode) in [
            (&dir, 0o755),
            (&dir.join(JOURNAL_PATHS[1]), 0o644),
            (&dir.join("index"), 0o775),
            (&dir.join("index/db"), 0o666),
            (&outside, 0o644),
        ] {
            set_mode(path, mode).unwrap();
        }
        let tightened = make_private(&dir).unwrap();
        assert_eq!(tightened.changed.len(), 4, "{tightened:?}");
        assert_eq!((mode_of(&dir), mode_of(&dir.join("index"))), (0o700, 0o700));
        assert_eq!((mode_of(&dir.join(JOURNAL_PATHS[1])), mode_of(&dir.join("index/db"))), (0o600, 0o600));
        assert_eq!(mode_of(&outside), 0o644, "the link's target is not touched");
        assert!(tightened.left.iter().any(|(p, r)| p.ends_with("link") && r.contains("symbolic link")));
        // Idempotent.
        assert_eq!(make_private(&dir).unwrap().changed, vec![]);
    }

    #[test]
    fn a_missing_directory_is_made_private_and_foreign_entries_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new/data");
        make_private(&dir).unwrap();
        assert_eq!(mode_of(&dir), 0o700);
        // Not empty, no journal (a new volume's lost+found): only the directory is tightened.
        let volume = root.path().join("volume");
        std::fs::create_dir(&volume).unwrap();
        std::fs::create_dir(volume.join("lost+found")).unwrap();
        set_mode(&volume, 0o775).unwrap();
        set_mode(&volume.join("lost+found"), 0o755).unwrap();
        let tightened = make_private(&volume).unwrap();
        assert_eq!((mode_of(&volume), mode_of(&volume.join("lost+found"))), (0o700, 0o755));
        assert_eq!(tightened.left.len(), 1, "{tightened:?}");
    }
}
