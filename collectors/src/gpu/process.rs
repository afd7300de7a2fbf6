//! Per-process GPU series: the compute processes holding each GPU, with
//! their command name and what /proc/PID/cgroup says they belong to (a
//! systemd unit, a container, a Slurm job, a Kubernetes pod), capped per
//! GPU. Every sample is
//! built afresh, so the series of a process that exited disappear with the
//! next sample.

use std::collections::HashMap;
use std::path::Path;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;
use nvml_wrapper::Nvml;

use super::jobs::ProcessJob;
use super::GpuSample;
use crate::MetricType;

/// What a process belongs to, from its cgroup path.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The systemd unit (`trainer.service`), or "".
    pub unit: String,
    /// The container id (64 hex digits), or "".
    pub container: String,
    /// The Slurm job id, or "".
    pub job: String,
    /// The Kubernetes pod uid, or "".
    pub pod_uid: String,
}

/// Parses /proc/PID/cgroup (v1 or v2) into the process's owner.
pub fn parse_cgroup(text: &str) -> Owner {
    let mut owner = Owner::default();
    // Prefer the v2 line ("0::/..."), else any v1 hierarchy.
    let lines = || {
        text.lines().filter_map(|l| {
            l.split_once(':')
                .and_then(|(id, rest)| Some((id, rest.split_once(':')?.1)))
        })
    };
    // The v2 line ("0::/...") if there is one, else the first v1 hierarchy.
    let paths: Vec<&str> = lines()
        .filter(|(id, _)| *id == "0")
        .chain(lines())
        .map(|(_, p)| p)
        .collect();
    // The Slurm job from any hierarchy: on a hybrid system (cgroup v1
    // controllers beside the v2 line), Slurm's cgroup/v1 plugin places the
    // job in the v1 controllers while the v2 line shows slurmd.service.
    owner.job = paths
        .iter()
        .find_map(|p| slurm_job(p))
        .unwrap_or_default()
        .to_owned();
    if let Some(path) = paths.first() {
        for part in path.split('/') {
            if owner.pod_uid.is_empty() && path.contains("kubepods") {
                if let Some(uid) = pod_uid(part) {
                    owner.pod_uid = uid;
                    continue;
                }
            }
            if owner.container.is_empty() {
                if let Some(id) = container_id(part) {
                    owner.container = id.to_owned();
                    continue;
                }
            }
            // The deepest unit is the most specific one.
            if part.ends_with(".service")
                || (part.ends_with(".scope") && !part.starts_with("session-"))
            {
                owner.unit = part.to_owned();
            }
        }
    }
    owner
}

/// The pod uid in a kubelet cgroup path component: `pod<uid>` (cgroupfs
/// driver) or `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd driver).
fn pod_uid(part: &str) -> Option<String> {
    let part = part.strip_suffix(".slice").unwrap_or(part);
    let uid = match part.strip_prefix("pod") {
        Some(uid) => uid,
        None if part.starts_with("kubepods") => &part[part.rfind("-pod")? + 4..],
        None => return None,
    };
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
    ok.then(|| uid.replace('_', "-"))
}

/// The Slurm job id in a cgroup path: `job_<id>` under `uid_<uid>` (cgroup
/// v1: `/slurm/uid_1000/job_42/step_0`, `/slurm_<node>/...` with several
/// slurmd per host) or under `slurmstepd.scope` (cgroup v2:
/// `/system.slice/slurmstepd.scope/job_42/step_0/user/task_0`, or
/// `<node>_slurmstepd.scope`). Elsewhere a `job_<n>` component is not
/// Slurm's.
fn slurm_job(path: &str) -> Option<&str> {
    let parts: Vec<&str> = path.split('/').collect();
    parts.windows(2).find_map(|w| {
        let parent_ok = w[0].starts_with("uid_") || w[0].ends_with("slurmstepd.scope");
        w[1].strip_prefix("job_")
            .filter(|id| parent_ok && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// A 64-hex-digit container id in a cgroup path component, as Docker,
/// containerd, CRI-O and Podman name them (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`, or
/// the bare id under cgroup v1).
fn container_id(part: &str) -> Option<&str> {
    let part = part.strip_suffix(".scope").unwrap_or(part);
    let id = part.rsplit('-').next().unwrap_or(part);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The command name of `pid` from procfs, or "" when it cannot be read (the
/// process ran in another pid namespace, or just exited).
fn comm(procfs: &Path, pid: u32) -> String {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

fn owner(procfs: &Path, pid: u32) -> Owner {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("cgroup"))
        .map(|t| parse_cgroup(&t))
        .unwrap_or_default()
}

/// Exports one GPU's processes; `sm_util` maps pid to its SM utilisation
/// (0-1) where NVML gives it; `pod_of` gives the (namespace, pod) holding
/// the GPU (or the GPU instance a process runs in), when exactly one does.
/// The Slurm jobs of all its processes, the ones past the cap included, are
/// added to `jobs`.
// The attribution sources (pod map, job list) arrived from two features;
// bundling them in a struct would only rename the same arguments.
#[allow(clippy::too_many_arguments)]
pub(super) fn export(
    g: &mut GpuSample<'_>,
    nvml: &Nvml,
    procs: &[ProcessInfo],
    sm_util: &HashMap<u32, f64>,
    procfs: &Path,
    cap: usize,
    pod_of: &dyn Fn(Option<u32>) -> Option<(String, String)>,
    jobs: &mut Vec<ProcessJob>,
) {
    let mut procs: Vec<&ProcessInfo> = procs.iter().collect();
    // Keep the biggest users when over the cap.
    procs.sort_by_key(|p| {
        std::cmp::Reverse(match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => b,
            UsedGpuMemory::Unavailable => 0,
        })
    });
    g.gauge(
        "accel_gpu_processes",
        "Compute processes holding the GPU.",
        procs.len() as f64,
    );
    for p in procs.iter().skip(cap) {
        let job = owner(procfs, p.pid).job;
        if !job.is_empty() {
            jobs.push(ProcessJob {
                gpu: g.index,
                gpu_instance: p.gpu_instance_id,
                job,
            });
        }
    }
    for p in procs.into_iter().take(cap) {
        let pid = p.pid.to_string();
        let mut comm = comm(procfs, p.pid);
        if comm.is_empty() {
            // Not in our /proc (another pid namespace): NVML knows its name.
            comm = nvml
                .sys_process_name(p.pid, 256)
                .ok()
                .and_then(|n| n.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default();
        }
        let o = owner(procfs, p.pid);
        if !o.job.is_empty() {
            jobs.push(ProcessJob {
                gpu: g.index,
                gpu_instance: p.gpu_instance_id,
                job: o.job.clone(),
            });
        }
        // Under MIG, the instance the process runs in.
        let gi = p.gpu_instance_id.map(|i| i.to_string()).unwrap_or_default();
        // Only a process whose cgroup is a pod's is given the pod that the
        // kubelet says holds its GPU: a host process on that GPU is not.
        let (namespace, pod) = if o.pod_uid.is_empty() {
            Default::default()
        } else {
            pod_of(p.gpu_instance_id).unwrap_or_default()
        };
        let labels = [
            ("pid", pid.as_str()),
            ("comm", comm.as_str()),
            ("unit", o.unit.as_str()),
            ("container", o.container.as_str()),
            ("namespace", namespace.as_str()),
            ("pod", pod.as_str()),
            // Not `job`: Prometheus would rename it, as the target label `job` wins.
            ("slurm_job", o.job.as_str()),
            ("gpu_instance", gi.as_str()),
        ];
        g.put(MetricType::Gauge, "accel_gpu_process_info", "A process holding the GPU, with its command and owner (systemd unit, container id, Kubernetes namespace and pod, Slurm job id); always 1.", &labels, 1.0);
        let key = [("pid", pid.as_str())];
        if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
            g.put(
                MetricType::Gauge,
                "accel_gpu_process_memory_used_bytes",
                "GPU memory used by a process, in bytes.",
                &key,
                bytes as f64,
            );
        }
        if let Some(u) = sm_util.get(&p.pid) {
            g.put(
                MetricType::Gauge,
                "accel_gpu_process_sm_utilization_ratio",
                "Fraction of the last sample period in which a kernel of the process ran (0-1).",
                &key,
                *u,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_unit_v2() {
        let o = parse_cgroup("0::/system.slice/trainer.service\n");
        assert_eq!(
            o,
            Owner {
                unit: "trainer.service".into(),
                ..Owner::default()
            }
        );
    }

    #[test]
    fn slurm_v1_and_v2() {
        let v1 = "12:memory:/slurm/uid_1000/job_4242/step_0/task_0\n11:cpuset:/slurm/uid_1000/job_4242/step_0\n";
        assert_eq!(parse_cgroup(v1).job, "4242");
        let v2 = "0::/system.slice/slurmstepd.scope/job_77/step_batch/user/task_0\n";
        let o = parse_cgroup(v2);
        assert_eq!(o.job, "77");
        assert_eq!(o.unit, "slurmstepd.scope");
    }

    #[test]
    fn slurm_hybrid_and_multiple_slurmd() {
        // cgroup v1 controllers with the job, the v2 line with slurmd.
        let hybrid = "13:freezer:/slurm/uid_1000/job_4243/step_0\n12:memory:/slurm/uid_1000/job_4243/step_0/task_1\n1:name=systemd:/system.slice/slurmd.service\n0::/system.slice/slurmd.service\n";
        let o = parse_cgroup(hybrid);
        assert_eq!(o.job, "4243");
        assert_eq!(o.unit, "slurmd.service");
        let v1 = "4:devices:/slurm_node07/uid_0/job_12/step_batch\n";
        assert_eq!(parse_cgroup(v1).job, "12");
        let v2 = "0::/system.slice/node07_slurmstepd.scope/job_4245/step_0/user/task_0\n";
        assert_eq!(parse_cgroup(v2).job, "4245");
        // job_<n> outside Slurm's layout is not a job.
        for other in [
            "0::/system.slice/job_5.service\n",
            "0::/user.slice/job_77/x\n",
            "0::/system.slice/slurmstepd.scope/job_x1/step_0\n",
        ] {
            assert_eq!(parse_cgroup(other).job, "", "{other}");
        }
    }

    #[test]
    fn containers() {
        let id = "3f4e8c1d2b9a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";
        let k8s = format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope\n");
        assert_eq!(parse_cgroup(&k8s).container, id);
        assert_eq!(parse_cgroup(&k8s).pod_uid, "1234");
        let systemd = format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0.slice/cri-containerd-{id}.scope\n");
        let o = parse_cgroup(&systemd);
        assert_eq!(o.pod_uid, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        assert_eq!((o.container.as_str(), o.unit.as_str()), (id, ""));
        let cgroupfs = format!(
            "11:devices:/kubepods/burstable/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/{id}\n"
        );
        let o = parse_cgroup(&cgroupfs);
        assert_eq!(o.pod_uid, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
        assert_eq!(o.container, id);
        // Not under kubepods: no pod.
        assert_eq!(parse_cgroup("0::/system.slice/pod12.service\n").pod_uid, "");
        assert_eq!(
            parse_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")).container,
            id
        );
        assert_eq!(
            parse_cgroup(&format!("4:devices:/docker/{id}\n")).container,
            id
        );
        assert_eq!(
            parse_cgroup(&format!("0::/system.slice/docker-{id}.scope\n")).unit,
            ""
        );
    }

    #[test]
    fn garbage_is_empty() {
        for t in [
            "",
            "x",
            ":::",
            "0::/",
            "0::/user.slice/user-1000.slice/session-3.scope",
        ] {
            assert_eq!(parse_cgroup(t), Owner::default(), "{t}");
        }
    }
}
