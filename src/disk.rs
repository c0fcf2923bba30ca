//! The filesystem a path lives on, so that a benchmark of the durable write path refuses to run
//! where `fdatasync` costs nothing (tmpfs, ramfs). Used by `puente benchmark` and, through
//! `benches/common/mod.rs`, by the benches: one copy of the check.

use std::path::Path;

/// Filesystems in memory: a durability benchmark there measures nothing.
pub const MEMORY_FILESYSTEMS: [&str; 2] = ["tmpfs", "ramfs"];

/// The filesystem type and source device of the mount holding `path`, from
/// `/proc/self/mountinfo` (the longest mount point that is a prefix of the canonical path; the
/// later of two equal ones, which is mounted over the other). `None` where that file cannot be
/// read (not Linux) or `path` does not exist.
pub fn filesystem_of(path: &Path) -> Option<(String, String)> {
    let path = path.canonicalize().ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(mount_point), Some(fstype), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mount_point = unescape(mount_point);
        if path.starts_with(&mount_point) && best.as_ref().is_none_or(|(len, ..)| mount_point.len() >= *len) {
            best = Some((mount_point.len(), fstype.to_string(), source.to_string()));
        }
    }
    best.map(|(_, fstype, source)| (fstype, source))
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\040`, `\011`, `\012`
/// and `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                out.push(digits.iter().fold(0u8, |n, d| n.wrapping_mul(8).wrapping_add(d - b'0')));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where a durability benchmark writes: `"<fstype> on <source>"`, or "unknown filesystem".
/// Refuses (with the reason) a directory on tmpfs or ramfs.
pub fn require_real_disk(dir: &Path) -> Result<String, String> {
    match filesystem_of(dir) {
        Some((fstype, source)) if MEMORY_FILESYSTEMS.contains(&fstype.as_str()) => Err(format!(
            "{} is on {fstype} (mounted from {source}): fdatasync costs nothing there, so a \
             durability benchmark would measure nothing; use a directory on a real disk",
            dir.display()
        )),
        Some((fstype, source)) => Ok(format!("{fstype} on {source}")),
        None => Ok("unknown filesystem".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"/a\134b\011c"), "/a\\b\tc");
        assert_eq!(unescape(r"/plain\04"), r"/plain\04");
        assert_eq!(unescape("/"), "/");
    }

    #[test]
    fn tmpfs_is_refused_and_a_real_disk_is_not() {
        // /dev/shm is tmpfs on Linux (and in the containers this project runs in).
        let shm = Path::new("/dev/shm");
        assert_eq!(filesystem_of(shm).map(|(fstype, _)| fstype).as_deref(), Some("tmpfs"));
        let error = require_real_disk(shm).unwrap_err();
        assert!(error.contains("tmpfs") && error.contains("real disk"), "{error}");
        // The working directory (the repository) is on a disk: accepted, and named.
        let here = std::env::current_dir().unwrap();
        if let Some((fstype, _)) =
            filesystem_of(&here).filter(|(t, _)| !MEMORY_FILESYSTEMS.contains(&t.as_str()))
        {
            assert!(require_real_disk(&here).unwrap().starts_with(&fstype));
        }
    }
}
