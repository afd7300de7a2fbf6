//! `accel_filesystem_*`: size, free and available bytes, inodes, read-only
//! and error state of each mounted filesystem, named, labelled and filtered
//! as node_exporter 1.5.0's `filesystem` collector (`node_filesystem_*`,
//! labels `device`, `mountpoint`, `fstype`).
//!
//! A training node fills its disks with checkpoints and its `/dev/shm` with
//! data loader batches; both end a run. So, unlike node_exporter's default,
//! `/dev/shm` is reported ([`mounts::DEFAULT_MOUNT_POINTS_EXCLUDE`]).
//!
//! The mount table is `<procfs>/1/mounts` (the host's mounts even when the
//! agent runs in a container with the host's /proc), or `<procfs>/mounts`
//! when PID 1's is hidden (`hidepid`), as node_exporter reads it.
//!
//! In a container the host's `/` is mounted somewhere (`--path.rootfs`,
//! e.g. `/host/root`): each mount point is then statfs'd under it and
//! keeps its host path as the `mountpoint` label ([`rebase`]).
//!
//! # A mount that does not answer
//!
//! statfs on a hung NFS, Lustre or FUSE (Cloud Storage FUSE) mount blocks
//! in the kernel, often uninterruptibly, for as long as the server is gone:
//! node_exporter's scrape then stalls with it. Here the sampler never calls
//! statfs. Each sample reads the mount table, serves each mount's last
//! statfs answer, and starts the next call on every mount point that has
//! none outstanding ([`statfs::Calls`]), so values are one interval old. A
//! call still outstanding after `--collector.filesystem.mount-timeout`
//! (node_exporter's flag of the same name and default) makes the mount
//! `device_error 1` and `accel_filesystem_stuck 1` (agent-only) until it
//! returns; it is not repeated meanwhile, so a hung mount holds one thread.
//!
//! Each call runs on a short-lived thread of its own rather than on a
//! supervised worker ([`crate::workers`]): a thread blocked in statfs cannot
//! be interrupted, so a worker that made the call would stop beating and the
//! supervisor would fail the whole collector for one mount; a pool would
//! have to abandon and replace its blocked threads, which is this design
//! with more code. The cost is one thread start per mount and sample.

pub mod mounts;
pub mod statfs;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::options::{options, parse_duration, parse_regex};
use crate::util::io_error;
use crate::{
    BuildContext, Built, CollectError, Collector, DeviceFilter, FamilyDef, Sample, Spec,
    HOST_INTERVAL,
};
use mounts::{Mount, MountFilter, DEFAULT_FS_TYPES_EXCLUDE, DEFAULT_MOUNT_POINTS_EXCLUDE};
use statfs::{Calls, State};

/// The filesystem collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "filesystem",
    help: "size, free space and inodes of mounted filesystems (statfs, off the sampler thread, with a deadline per mount), from <procfs>/1/mounts",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<FilesystemOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_filesystem_"],
    outside: &[],
    build,
};

/// The filesystem collector's options: node_exporter's flags.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct FilesystemOptions {
    /// Mount points to report, when set (wins over the exclude).
    #[arg(
        id = "collector.filesystem.mount-points-include",
        long = "collector.filesystem.mount-points-include",
        value_name = "REGEX",
        help = "Regexp of mount points to include (overrides the exclude).",
        value_parser = parse_regex
    )]
    pub mount_points_include: Option<String>,
    /// Mount points not to report.
    #[arg(
        id = "collector.filesystem.mount-points-exclude",
        long = "collector.filesystem.mount-points-exclude",
        value_name = "REGEX",
        help = "Regexp of mount points to exclude (node_exporter's default, with /dev/shm reported).",
        default_value = DEFAULT_MOUNT_POINTS_EXCLUDE,
        value_parser = parse_regex
    )]
    pub mount_points_exclude: String,
    /// Filesystem types to report, when set (wins over the exclude).
    #[arg(
        id = "collector.filesystem.fs-types-include",
        long = "collector.filesystem.fs-types-include",
        value_name = "REGEX",
        help = "Regexp of filesystem types to include (overrides the exclude).",
        value_parser = parse_regex
    )]
    pub fs_types_include: Option<String>,
    /// Filesystem types not to report.
    #[arg(
        id = "collector.filesystem.fs-types-exclude",
        long = "collector.filesystem.fs-types-exclude",
        value_name = "REGEX",
        help = "Regexp of filesystem types to exclude.",
        default_value = DEFAULT_FS_TYPES_EXCLUDE,
        value_parser = parse_regex
    )]
    pub fs_types_exclude: String,
    /// How long a statfs call may take before its mount is shown stuck.
    #[arg(
        id = "collector.filesystem.mount-timeout",
        long = "collector.filesystem.mount-timeout",
        value_name = "DURATION",
        help = "How long a mount's statfs may take before the mount is shown stuck (device_error 1, accel_filesystem_stuck 1).",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub mount_timeout: Duration,
}

impl FilesystemOptions {
    /// The filter the flags describe.
    pub fn filter(&self) -> Result<MountFilter, CollectError> {
        let f = |inc: &Option<String>, exc: &str| {
            DeviceFilter::new(inc.as_deref(), Some(exc))
                .map_err(|e| CollectError::parse(e.to_string()))
        };
        Ok(MountFilter {
            mount_points: f(&self.mount_points_include, &self.mount_points_exclude)?,
            fs_types: f(&self.fs_types_include, &self.fs_types_exclude)?,
        })
    }
}

const LABELS: &[&str] = &["device", "mountpoint", "fstype"];

/// `accel_filesystem_size_bytes`.
pub const SIZE: FamilyDef =
    FamilyDef::gauge("accel_filesystem_size_bytes", "Filesystem size in bytes.")
        .labels(LABELS)
        .doc("total size: `f_blocks × f_bsize`")
        .source("statfs(2) of the mount point")
        .equivalent("`node_filesystem_size_bytes`");
/// `accel_filesystem_free_bytes`.
pub const FREE: FamilyDef = FamilyDef::gauge(
    "accel_filesystem_free_bytes",
    "Filesystem free space in bytes.",
)
.labels(LABELS)
.doc("free space, the root-reserved blocks included: `f_bfree × f_bsize`")
.source("statfs(2)")
.equivalent("`node_filesystem_free_bytes`");
/// `accel_filesystem_avail_bytes`.
pub const AVAIL: FamilyDef = FamilyDef::gauge(
    "accel_filesystem_avail_bytes",
    "Filesystem space available to non-root users in bytes.",
)
.labels(LABELS)
.doc("space an unprivileged writer (a training job) can still use: `f_bavail × f_bsize`")
.source("statfs(2)")
.equivalent("`node_filesystem_avail_bytes`");
/// `accel_filesystem_files`.
pub const FILES: FamilyDef =
    FamilyDef::gauge("accel_filesystem_files", "Filesystem total file nodes.")
        .labels(LABELS)
        .doc("inodes: `f_files`")
        .source("statfs(2)")
        .equivalent("`node_filesystem_files`");
/// `accel_filesystem_files_free`.
pub const FILES_FREE: FamilyDef = FamilyDef::gauge(
    "accel_filesystem_files_free",
    "Filesystem total free file nodes.",
)
.labels(LABELS)
.doc("free inodes: `f_ffree`")
.source("statfs(2)")
.equivalent("`node_filesystem_files_free`");
/// `accel_filesystem_readonly`.
pub const READONLY: FamilyDef =
    FamilyDef::gauge("accel_filesystem_readonly", "Filesystem read-only status.")
        .labels(LABELS)
        .doc("1 when mounted `ro` (e.g. ext4 remounted read-only after an I/O error)")
        .source("mount options in `<procfs>/1/mounts`")
        .equivalent("`node_filesystem_readonly`");
/// `accel_filesystem_device_error`.
pub const DEVICE_ERROR: FamilyDef = FamilyDef::gauge(
    "accel_filesystem_device_error",
    "Whether an error occurred while getting statistics for the given device.",
)
.labels(LABELS)
.doc("1 when statfs failed or is stuck; the mount's other series (but `stuck`) are then left out")
.source("statfs(2)")
.equivalent("`node_filesystem_device_error`");
/// `accel_filesystem_stuck`.
pub const STUCK: FamilyDef = FamilyDef::gauge(
    "accel_filesystem_stuck",
    "Whether the mount's statfs call has been outstanding past --collector.filesystem.mount-timeout (a hung NFS, Lustre or FUSE mount).",
)
.labels(LABELS)
.doc("1 while a statfs call on the mount is outstanding past the deadline (`device_error` is then 1 too); agent-only: node_exporter's scrape would hang instead")
.source("the statfs calls' deadline; `collectors/src/filesystem/statfs.rs`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    SIZE,
    FREE,
    AVAIL,
    FILES,
    FILES_FREE,
    READONLY,
    DEVICE_ERROR,
    STUCK,
];

/// How long the agent's start waits for the first answers, so that the
/// first sample has values; a mount slower than this shows from the next.
const FIRST_ANSWERS: Duration = Duration::from_secs(1);

/// The filesystem collector.
pub struct Filesystem {
    tables: [PathBuf; 2],
    rootfs: PathBuf,
    filter: MountFilter,
    calls: Calls,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let o = ctx.options::<FilesystemOptions>();
    let mut c = Filesystem::new(
        ctx.paths.procfs.clone(),
        o.filter()?,
        Calls::new(statfs::statfs, o.mount_timeout),
    );
    c.rootfs = ctx.paths.rootfs.clone();
    match c.read_table() {
        Ok(Some(text)) => {
            let (m, _) = mounts::parse(&text);
            let m = c.filter.select(rebase(m, &c.rootfs));
            c.calls
                .poll(&m.iter().map(|m| m.path.as_str()).collect::<Vec<_>>());
            c.calls.wait_idle(FIRST_ANSWERS.min(o.mount_timeout));
            Ok(Built::Ready(Box::new(c)))
        }
        Ok(None) => Ok(Built::Absent(format!(
            "no mount table ({} nor {})",
            c.tables[0].display(),
            c.tables[1].display()
        ))),
        Err(e) => Err(e),
    }
}

/// The mounts as seen from a container whose `--path.rootfs` holds the
/// host's `/`: when the table has mounts under `rootfs` (it is the
/// container's own table, the host's mounts bind-mounted there), only
/// those, with `rootfs` stripped from their `mountpoint` label; otherwise
/// (the host's table, through the host's /proc) every mount, statfs'd at
/// `rootfs` + its path. With `rootfs` `/`, the mounts as they are.
pub fn rebase(mounts: Vec<Mount>, rootfs: &Path) -> Vec<Mount> {
    let Some(root) = rootfs.to_str().map(|r| r.trim_end_matches('/')) else {
        return mounts;
    };
    if root.is_empty() {
        return mounts;
    }
    let under = |p: &str| p == root || p.strip_prefix(root).is_some_and(|r| r.starts_with('/'));
    if mounts.iter().any(|m| under(&m.path)) {
        mounts
            .into_iter()
            .filter(|m| under(&m.path))
            .map(|mut m| {
                let strip = |p: &str| match &p[root.len()..] {
                    "" => "/".to_owned(),
                    r => r.to_owned(),
                };
                if m.mount_point.starts_with(root) {
                    m.mount_point = strip(&m.mount_point);
                }
                m
            })
            .collect()
    } else {
        mounts
            .into_iter()
            .map(|mut m| {
                m.path = format!("{root}{}", m.path);
                m
            })
            .collect()
    }
}

impl Filesystem {
    /// A collector reading `<procfs>/1/mounts`, with its statfs calls.
    pub fn new(procfs: PathBuf, filter: MountFilter, calls: Calls) -> Self {
        Self {
            tables: [procfs.join("1/mounts"), procfs.join("mounts")],
            rootfs: PathBuf::from("/"),
            filter,
            calls,
        }
    }

    /// The mount table's text; `None` when neither file exists.
    fn read_table(&self) -> Result<Option<String>, CollectError> {
        for path in &self.tables {
            match std::fs::read_to_string(path) {
                Ok(t) => return Ok(Some(t)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(path, &e)),
            }
        }
        Ok(None)
    }
}

impl Collector for Filesystem {
    fn name(&self) -> &'static str {
        "filesystem"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let text = self.read_table()?.ok_or_else(|| {
            CollectError::new(
                crate::ErrorKind::Io,
                format!("{}: no mount table", self.tables[0].display()),
            )
        })?;
        let (all, bad) = mounts::parse(&text);
        for line in bad {
            out.error(CollectError::parse(format!(
                "mounts: malformed line {line:?}"
            )));
        }
        let selected = self.filter.select(rebase(all, &self.rootfs));
        let paths: Vec<&str> = selected.iter().map(|m| m.path.as_str()).collect();
        let states = self.calls.poll(&paths);
        for (m, state) in selected.iter().zip(states) {
            let l = m.labels();
            let (error, stuck) = match &state {
                State::Pending => continue,
                State::Ok(s) => {
                    out.add(&SIZE).add(&l, s.size);
                    out.add(&FREE).add(&l, s.free);
                    out.add(&AVAIL).add(&l, s.avail);
                    out.add(&FILES).add(&l, s.files);
                    out.add(&FILES_FREE).add(&l, s.files_free);
                    out.add(&READONLY).add(&l, f64::from(u8::from(m.read_only)));
                    (0.0, 0.0)
                }
                State::Failed(_) => (1.0, 0.0),
                State::Stuck => (1.0, 1.0),
            };
            out.add(&DEVICE_ERROR).add(&l, error);
            out.add(&STUCK).add(&l, stuck);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Vec<Mount> {
        mounts::parse(text).0
    }

    fn shown(m: &[Mount]) -> Vec<(&str, &str)> {
        m.iter()
            .map(|m| (m.mount_point.as_str(), m.path.as_str()))
            .collect()
    }

    #[test]
    fn rebases_under_the_host_root() {
        let host = "/dev/vda1 / ext4 rw 0 0\n/dev/vdb /data xfs rw 0 0\n";
        // The root itself: as they are.
        for root in ["/", ""] {
            let m = rebase(table(host), Path::new(root));
            assert_eq!(shown(&m), [("/", "/"), ("/data", "/data")]);
        }
        // The host's table (hostPID): statfs'd under the root, labels kept.
        let m = rebase(table(host), Path::new("/host/root/"));
        assert_eq!(
            shown(&m),
            [("/", "/host/root/"), ("/data", "/host/root/data")]
        );
        // The container's own table: only what is under the root, labels
        // stripped; /host/rootfs is not under /host/root.
        let pod = "overlay / overlay rw 0 0\n/dev/vda1 /host/root ext4 ro 0 0\n\
                   /dev/vdb /host/root/data xfs ro 0 0\n/dev/vdc /host/rootfs ext4 rw 0 0\n";
        let m = rebase(table(pod), Path::new("/host/root"));
        assert_eq!(
            shown(&m),
            [("/", "/host/root"), ("/data", "/host/root/data")]
        );
    }
}
