//! The mount table (`<procfs>/1/mounts`) and which of its lines are
//! reported: parsed, decoded and filtered as node_exporter 1.5.0 does
//! (`parseFilesystemLabels`, `GetStats`), so that the `device`,
//! `mountpoint` and `fstype` labels are node_exporter's, byte for byte.

use std::collections::HashSet;

use crate::DeviceFilter;

/// node_exporter 1.5.0's default `--collector.filesystem.mount-points-exclude`
/// (upstream's; Debian's package widens it to /run, /mnt and /media).
pub const NODE_EXPORTER_MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// The agent's default: node_exporter's, except that `/dev/shm` (and what is
/// mounted under it) is reported: PyTorch data loaders pass batches through
/// it and die with "bus error" when it fills. The regex crate has no
/// look-ahead, so "/dev and below, but not /dev/shm" is spelt out: `/dev`,
/// `/dev/`, or `/dev/` followed by anything that does not begin `shm` +
/// end-or-slash. A property test checks it against node_exporter's default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str = "^/(dev($|/($|[^s]|s($|[^h])|sh($|[^m])|shm[^/]))|(proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/))";

/// node_exporter 1.5.0's default `--collector.filesystem.fs-types-exclude`.
pub const DEFAULT_FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Field 1, as written (node_exporter does not decode it).
    pub device: String,
    /// Field 2 with `\040` and `\011` decoded, as node_exporter does: the
    /// `mountpoint` label.
    pub mount_point: String,
    /// Field 2 with every escape the kernel writes decoded (`\040` space,
    /// `\011` tab, `\012` newline, `\134` backslash): the path given to
    /// statfs, so that a mount point with a backslash or newline is read
    /// where node_exporter reports an error.
    pub path: String,
    /// Field 3.
    pub fs_type: String,
    /// Whether field 4's options include `ro`.
    pub read_only: bool,
}

impl Mount {
    /// The label values, in the families' label order.
    pub fn labels(&self) -> [(&'static str, &str); 3] {
        [
            ("device", &self.device),
            ("mountpoint", &self.mount_point),
            ("fstype", &self.fs_type),
        ]
    }
}

/// The mount table's lines, in order; a line with fewer than four fields
/// (node_exporter fails the whole scrape on one) is returned apart, to be
/// counted as a parse error while the others are reported.
pub fn parse(text: &str) -> (Vec<Mount>, Vec<String>) {
    let mut mounts = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 4 {
            bad.push(line.chars().take(200).collect());
            continue;
        }
        mounts.push(Mount {
            device: f[0].to_owned(),
            mount_point: f[1].replace("\\040", " ").replace("\\011", "\t"),
            path: unescape(f[1]),
            fs_type: f[2].to_owned(),
            read_only: f[3].split(',').any(|o| o == "ro"),
        });
    }
    (mounts, bad)
}

/// Decodes the kernel's escapes of a mount table field (`\` and three octal
/// digits, for space, tab, newline and backslash: `mangle()` in
/// fs/proc_namespace.c). Any other backslash is kept as it is.
pub fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| {
            b.get(j)
                .filter(|c| (b'0'..=b'7').contains(c))
                .map(|c| c - b'0')
        };
        if b[i] == b'\\' {
            if let (Some(x), Some(y), Some(z)) = (octal(i + 1), octal(i + 2), octal(i + 3)) {
                let v = u32::from(x) * 64 + u32::from(y) * 8 + u32::from(z);
                if let Some(c) = [b' ', b'\t', b'\n', b'\\']
                    .into_iter()
                    .find(|c| u32::from(*c) == v)
                {
                    out.push(c);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII bytes were replaced by ASCII bytes: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Which mounts are reported: node_exporter's two filters (mount point,
/// then filesystem type), each an include-or-exclude pair where an include
/// wins, as node_exporter 1.7's `--collector.filesystem.*-include` do.
#[derive(Clone, Debug)]
pub struct MountFilter {
    /// On the `mountpoint` label.
    pub mount_points: DeviceFilter,
    /// On the `fstype` label.
    pub fs_types: DeviceFilter,
}

impl MountFilter {
    /// The mounts to report, in table order, each (device, mount point,
    /// type) once: the first line wins, as in node_exporter, where a second
    /// line with the same labels is dropped (identical options) or refused
    /// by the registry (other options) — a path mounted over twice.
    pub fn select(&self, mounts: Vec<Mount>) -> Vec<Mount> {
        let mut seen = HashSet::new();
        mounts
            .into_iter()
            .filter(|m| {
                self.mount_points.accepts(&m.mount_point) && self.fs_types.accepts(&m.fs_type)
            })
            .filter(|m| seen.insert((m.device.clone(), m.mount_point.clone(), m.fs_type.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn default_filter() -> MountFilter {
        MountFilter {
            mount_points: DeviceFilter::new(None, Some(DEFAULT_MOUNT_POINTS_EXCLUDE)).unwrap(),
            fs_types: DeviceFilter::new(None, Some(DEFAULT_FS_TYPES_EXCLUDE)).unwrap(),
        }
    }

    #[test]
    fn parses_and_decodes_as_node_exporter() {
        let text = "/dev/vda / ext4 rw,relatime 0 0\n\
                    srv:/a\\040b /mnt/with\\040space\\011tab nfs4 ro,noatime 0 0\n\
                    x /mnt/back\\134slash\\012nl ext4 rw,ro2 0 0\n\
                    short line\n";
        let (m, bad) = parse(text);
        assert_eq!(bad, vec!["short line".to_owned()]);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].mount_point, "/");
        assert!(!m[0].read_only);
        // The device is not decoded; the mount point's \040 and \011 are.
        assert_eq!(m[1].device, "srv:/a\\040b");
        assert_eq!(m[1].mount_point, "/mnt/with space\ttab");
        assert_eq!(m[1].path, "/mnt/with space\ttab");
        assert!(m[1].read_only);
        // node_exporter leaves \134 and \012 as they are; statfs gets the path.
        assert_eq!(m[2].mount_point, "/mnt/back\\134slash\\012nl");
        assert_eq!(m[2].path, "/mnt/back\\slash\nnl");
        assert!(!m[2].read_only, "ro2 is not ro");
        assert_eq!(unescape("\\1\\777\\0400\\"), "\\1\\777 0\\");
    }

    #[test]
    fn default_excludes_are_node_exporters_but_dev_shm() {
        let f = default_filter();
        let mount = |mp: &str, t: &str| Mount {
            device: "d".into(),
            mount_point: mp.into(),
            path: mp.into(),
            fs_type: t.into(),
            read_only: false,
        };
        let picked = f.select(vec![
            mount("/", "ext4"),
            mount("/dev/shm", "tmpfs"),
            mount("/dev/shm/x", "tmpfs"),
            mount("/dev", "devtmpfs"),
            mount("/dev/pts", "tmpfs"),
            mount("/dev/shmem", "tmpfs"),
            mount("/proc", "ext4"),
            mount("/sys/fs/cgroup", "tmpfs"),
            mount("/run/credentials/x.service", "tmpfs"),
            mount("/run", "tmpfs"),
            mount("/var/lib/docker/overlay2/x", "ext4"),
            mount("/var/lib/docker", "ext4"),
            mount("/data", "overlay"),
            mount("/data2", "xfs"),
            mount("/", "ext4"),
        ]);
        let names: Vec<&str> = picked.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(
            names,
            [
                "/",
                "/dev/shm",
                "/dev/shm/x",
                "/run",
                "/var/lib/docker",
                "/data2"
            ]
        );
    }

    #[test]
    fn include_wins_over_exclude() {
        let f = MountFilter {
            mount_points: DeviceFilter::new(Some("^/data"), Some(".*")).unwrap(),
            fs_types: DeviceFilter::new(None, Some(DEFAULT_FS_TYPES_EXCLUDE)).unwrap(),
        };
        let (m, _) = parse("a /data xfs rw 0 0\nb / ext4 rw 0 0\nc /data2 proc rw 0 0\n");
        let picked = f.select(m);
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].device, "a");
    }

    /// The kernel's mangling of a path in the mount table.
    fn mangle(path: &str) -> String {
        let mut s = String::new();
        for c in path.chars() {
            match c {
                ' ' => s.push_str("\\040"),
                '\t' => s.push_str("\\011"),
                '\n' => s.push_str("\\012"),
                '\\' => s.push_str("\\134"),
                c => s.push(c),
            }
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn parse_never_panics(s in "([a-z/\\\\0-7 ,]{0,12}( |\t|\n)){0,12}|\\PC{0,100}") {
            let (m, bad) = parse(&s);
            prop_assert!(m.len() + bad.len() <= s.lines().count());
        }

        #[test]
        fn kernel_mangled_paths_come_back(
            path in "/[a-z \\t\\n\\\\é0-7]{0,40}",
            dev in "[a-z/:]{1,10}",
            ro in any::<bool>(),
        ) {
            let opts = if ro { "ro,relatime" } else { "rw,relatime" };
            let line = format!("{dev} {} ext4 {opts} 0 0\n", mangle(&path));
            let (m, bad) = parse(&line);
            prop_assert!(bad.is_empty());
            prop_assert_eq!(m.len(), 1);
            prop_assert_eq!(&m[0].path, &path);
            // The label: node_exporter's two replacements only.
            let label = mangle(&path).replace("\\040", " ").replace("\\011", "\t");
            prop_assert_eq!(&m[0].mount_point, &label);
            prop_assert_eq!(m[0].read_only, ro);
        }

        /// The agent's default mount-point exclude is node_exporter's with
        /// /dev/shm and below let through, nothing else.
        #[test]
        fn default_exclude_is_node_exporters_but_dev_shm(
            path in "(/(dev|de|devs|shm|sh|s|proc|sys|run|credentials|var|lib|docker|containers|storage|x|\\PC{0,3})){0,4}/?",
        ) {
            static RE: std::sync::OnceLock<(regex::Regex, regex::Regex)> = std::sync::OnceLock::new();
            let (ne, ours) = RE.get_or_init(|| {
                (
                    regex::Regex::new(NODE_EXPORTER_MOUNT_POINTS_EXCLUDE).unwrap(),
                    regex::Regex::new(DEFAULT_MOUNT_POINTS_EXCLUDE).unwrap(),
                )
            });
            let shm = path == "/dev/shm" || path.starts_with("/dev/shm/");
            prop_assert_eq!(ours.is_match(&path), ne.is_match(&path) && !shm, "{:?}", path);
        }
    }
}
