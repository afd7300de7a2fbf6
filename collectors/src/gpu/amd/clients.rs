//! Who holds an AMD GPU: the amdgpu DRM clients in /proc/PID/fdinfo of the
//! fds that link into /dev/dri, summed per GPU and process.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use super::sysfs::{self, DrmClient};

/// How long a process seen without an amdgpu DRM fd is left unscanned: a
/// process that opens a GPU later is seen within this time. Scanning every
/// fd of every process each sample cost 7.9 ms a sample on a build host
/// with 126 processes and 755 fds (release build); scanning only new
/// processes and those that hold a GPU costs one directory listing.
const RESCAN: Duration = Duration::from_secs(10);

/// Finds the processes holding AMD GPUs in procfs.
#[derive(Debug, Default)]
pub(super) struct ClientScan {
    /// Processes seen without a DRM fd, and when to look at them again.
    idle: HashMap<u32, Instant>,
}

impl ClientScan {
    /// The amdgpu DRM clients of every process: (pid, client) for each
    /// distinct (pid, pdev, client id). Processes whose fds cannot be read
    /// (another user's, without CAP_SYS_PTRACE) are not seen.
    pub(super) fn clients(&mut self, procfs: &Path, now: Instant) -> Vec<(u32, DrmClient)> {
        let mut out: Vec<(u32, DrmClient)> = Vec::new();
        let Ok(procs) = std::fs::read_dir(procfs) else {
            return out;
        };
        let mut alive = HashSet::new();
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            alive.insert(pid);
            if self.idle.get(&pid).is_some_and(|t| now < *t) {
                continue;
            }
            let found = out.len();
            if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
                for fd in fds.flatten() {
                    let is_dri =
                        std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with("/dev/dri/"));
                    if !is_dri {
                        continue;
                    }
                    let info = p.path().join("fdinfo").join(fd.file_name());
                    let Some(c) = std::fs::read_to_string(info)
                        .ok()
                        .and_then(|t| sysfs::parse_fdinfo(&t))
                    else {
                        continue;
                    };
                    let seen = out[found..]
                        .iter()
                        .any(|(_, d)| d.pdev == c.pdev && d.client_id == c.client_id);
                    if !seen {
                        out.push((pid, c));
                    }
                }
            }
            if out.len() == found {
                self.idle.insert(pid, now + RESCAN);
            } else {
                self.idle.remove(&pid);
            }
        }
        self.idle.retain(|pid, _| alive.contains(pid));
        out
    }
}

/// One process on one GPU: its clients summed.
#[derive(Debug, Default)]
pub(super) struct Proc {
    pub(super) pid: u32,
    pub(super) vram: Option<f64>,
    pub(super) engine_ns: Option<u64>,
}

/// Groups the clients by GPU: per PCI address, per pid, summed.
pub(super) fn by_gpu(clients: Vec<(u32, DrmClient)>) -> HashMap<String, Vec<Proc>> {
    let mut out: HashMap<String, Vec<Proc>> = HashMap::new();
    for (pid, c) in clients {
        let procs = out.entry(c.pdev).or_default();
        let i = match procs.iter().position(|p| p.pid == pid) {
            Some(i) => i,
            None => {
                procs.push(Proc {
                    pid,
                    ..Default::default()
                });
                procs.len() - 1
            }
        };
        let p = &mut procs[i];
        if let Some(v) = c.vram_bytes {
            p.vram = Some(p.vram.unwrap_or(0.0) + v);
        }
        if let Some(ns) = c.engine_ns {
            p.engine_ns = Some(p.engine_ns.unwrap_or(0).saturating_add(ns));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_without_a_gpu_are_looked_at_again_later() {
        let root = std::env::temp_dir().join(format!("accel-amd-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let proc_ = |pid: u32| root.join(pid.to_string());
        let open_gpu = |pid: u32, fd: u32, client: u32| {
            std::fs::create_dir_all(proc_(pid).join("fdinfo")).unwrap();
            std::fs::create_dir_all(proc_(pid).join("fd")).unwrap();
            std::os::unix::fs::symlink("/dev/dri/renderD128", proc_(pid).join(format!("fd/{fd}")))
                .unwrap();
            std::fs::write(
                proc_(pid).join(format!("fdinfo/{fd}")),
                format!("drm-driver:\tamdgpu\ndrm-client-id:\t{client}\ndrm-pdev:\t0000:0c:00.0\n"),
            )
            .unwrap();
        };
        for pid in [10, 20] {
            std::fs::create_dir_all(proc_(pid).join("fd")).unwrap();
            std::os::unix::fs::symlink("/dev/null", proc_(pid).join("fd/0")).unwrap();
        }
        open_gpu(10, 3, 1);
        open_gpu(10, 4, 1); // a dup of the same open: one client
        let mut scan = ClientScan::default();
        let t0 = Instant::now();
        let pids = |c: Vec<(u32, DrmClient)>| c.into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        assert_eq!(pids(scan.clients(&root, t0)), [10]);
        // 20 opens the GPU: seen once its rescan is due, not before.
        open_gpu(20, 5, 2);
        let mut got = pids(scan.clients(&root, t0 + Duration::from_secs(1)));
        assert_eq!(got, [10]);
        got = pids(scan.clients(&root, t0 + RESCAN + Duration::from_secs(1)));
        got.sort();
        assert_eq!(got, [10, 20]);
        // A new process is looked at at once.
        open_gpu(30, 3, 3);
        assert_eq!(
            pids(scan.clients(&root, t0 + RESCAN + Duration::from_secs(2))).len(),
            3
        );
        // Exited processes are forgotten.
        std::fs::remove_dir_all(proc_(20)).unwrap();
        scan.clients(&root, t0 + RESCAN + Duration::from_secs(3));
        assert!(!scan.idle.contains_key(&20));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn clients_are_summed_per_gpu_and_process() {
        let c = |pdev: &str, id, vram, ns| DrmClient {
            pdev: pdev.into(),
            client_id: id,
            vram_bytes: vram,
            engine_ns: ns,
        };
        let g = by_gpu(vec![
            (1, c("a", 1, Some(10.0), Some(5))),
            (1, c("a", 2, Some(5.0), None)),
            (2, c("a", 3, None, None)),
            (1, c("b", 4, Some(1.0), Some(1))),
        ]);
        let a = &g["a"];
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].pid, a[0].vram, a[0].engine_ns),
            (1, Some(15.0), Some(5))
        );
        assert_eq!((a[1].pid, a[1].vram, a[1].engine_ns), (2, None, None));
        assert_eq!(g["b"][0].vram, Some(1.0));
    }
}
