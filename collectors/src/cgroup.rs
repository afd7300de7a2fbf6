//! What a process belongs to, read from its /proc/PID/cgroup: a systemd
//! unit, a container, a Slurm job, a Kubernetes pod. The GPU collector
//! labels GPU processes with it; the goodput and workload code find the
//! trainer's job and pod with it, so the layouts are recognised the same
//! way everywhere.

use std::path::Path;

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

/// The owner of `pid` from `<procfs>/PID/cgroup`; empty when it cannot be
/// read (the process exited, or runs in another pid namespace).
pub fn owner(procfs: &Path, pid: u32) -> Owner {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("cgroup"))
        .map(|t| parse_cgroup(&t))
        .unwrap_or_default()
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
