//! Shared by the benchmarks.

use std::path::Path;

/// The filesystem type and source device of the mount holding `path` (from
/// /proc/self/mountinfo), so a benchmark can refuse to measure durability on tmpfs.
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
        if path.starts_with(mount_point) && best.as_ref().is_none_or(|(len, ..)| mount_point.len() >= *len) {
            best = Some((mount_point.len(), fstype.to_string(), source.to_string()));
        }
    }
    best.map(|(_, fstype, source)| (fstype, source))
}
