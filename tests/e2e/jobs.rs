//! Batch jobs per GPU end to end: `accel_gpu_job_info` from the processes'
//! cgroups (fixture procfs) and from a job-mapping directory that a test
//! changes under the running agent, as a Slurm prolog and epilog would.

use std::time::Duration;

use crate::golden::promtool_check;
use crate::gpu::sim_agent;
use crate::util::{fixtures, TempDir};

/// The `accel_gpu_job_info` lines, sorted, with the uuid left out.
fn jobs(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("accel_gpu_job_info{"))
        .map(|l| {
            let (head, rest) = l.split_once(",uuid=\"").unwrap();
            let (_, rest) = rest.split_once('"').unwrap();
            format!("{head}{rest}")
        })
        .collect();
    v.sort();
    v
}

fn line(gpu: u32, job: &str, gi: &str, source: &str) -> String {
    format!(
        "accel_gpu_job_info{{gpu=\"{gpu}\",slurm_job=\"{job}\",gpu_instance=\"{gi}\",source=\"{source}\"}} 1"
    )
}

#[test]
fn jobs_follow_the_processes_and_the_mapping_directory() {
    let dir = TempDir::new("jobmap");
    // Not there yet at start: the prolog of the first job creates it.
    let map = dir.0.join("map");
    let procfs = format!("--path.procfs={}", fixtures().join("proc").display());
    let mapping = format!("--collector.gpu.job-mapping-dir={}", map.display());
    // 8 GPUs, each held by a process of Slurm job 81234 (fixture cgroups).
    let agent = sim_agent(
        "8xh100-training",
        "100ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            &procfs,
            &mapping,
        ],
    );
    agent.wait_ready();
    let from_procs: Vec<String> = (0..8).map(|g| line(g, "81234", "", "process")).collect();
    let text = agent.wait_for("jobs from processes", Duration::from_secs(10), |t| {
        jobs(t) == from_procs
    });
    assert!(text.contains("slurm_job=\"81234\",gpu_instance=\"\"} 1"));

    // The prolog of job 900 (GPU 3, which job 81234 also holds) and of job
    // 901 (GPUs 6 and 7), and a file that names no GPU.
    std::fs::create_dir(&map).unwrap();
    std::fs::write(map.join("3"), "81234\n900\n").unwrap();
    std::fs::write(map.join("6"), "901\n").unwrap();
    std::fs::write(map.join("7"), "901\n").unwrap();
    std::fs::write(map.join("notes"), "hello\n").unwrap();
    let mut want = from_procs.clone();
    want.extend([
        line(3, "900", "", "mapping"),
        line(6, "901", "", "mapping"),
        line(7, "901", "", "mapping"),
    ]);
    want.sort();
    agent.wait_for("jobs from the mapping", Duration::from_secs(10), |t| {
        jobs(t) == want
    });

    // GPU 6 passes to job 902, rewritten in place.
    std::fs::write(map.join("6"), "902\n").unwrap();
    let mut want = from_procs.clone();
    want.extend([
        line(3, "900", "", "mapping"),
        line(6, "902", "", "mapping"),
        line(7, "901", "", "mapping"),
    ]);
    want.sort();
    agent.wait_for("a changed mapping", Duration::from_secs(10), |t| {
        jobs(t) == want
    });

    // Epilogs remove the files: only the processes' job is left.
    for f in ["3", "6", "7"] {
        std::fs::remove_file(map.join(f)).unwrap();
    }
    let text = agent.wait_for("the mapping gone", Duration::from_secs(10), |t| {
        jobs(t) == from_procs
    });
    let (ok, msg) = promtool_check(&text);
    assert!(ok && msg.trim().is_empty(), "promtool:\n{msg}");
    let log = agent.log_lines().join("\n");
    assert!(
        log.contains("job-mapping directory not readable"),
        "the missing directory is logged: {log}"
    );
    assert_eq!(
        log.matches("job-mapping directory not readable").count(),
        1,
        "logged once, not every poll: {log}"
    );
}

#[test]
fn mig_instances_and_every_cgroup_layout() {
    // mig-h100 with fixture cgroups: pid 7100 (GPU 0, GPU instance 2) in a
    // Slurm job on a hybrid cgroup v1/v2 system, 7200 (GPU 0, instance 4)
    // under pure cgroup v1, 7301 (GPU 1) under cgroup v2 with several slurmd.
    let dir = TempDir::new("jobmig");
    // The idle 2g.20gb instance (GPU instance 3) is allocated to job 5000.
    std::fs::write(dir.0.join("0.3"), "5000\n").unwrap();
    let procfs = format!("--path.procfs={}", fixtures().join("proc").display());
    let mapping = format!("--collector.gpu.job-mapping-dir={}", dir.0.display());
    let agent = sim_agent(
        "mig-h100",
        "100ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            &procfs,
            &mapping,
        ],
    );
    agent.wait_ready();
    let mut want = vec![
        line(0, "4243", "2", "process"),
        line(0, "4244", "4", "process"),
        line(0, "5000", "3", "mapping"),
        line(1, "4245", "", "process"),
    ];
    want.sort();
    let text = agent.wait_for("MIG jobs", Duration::from_secs(10), |t| jobs(t) == want);
    // The process series carry the same jobs.
    for (pid, job) in [("7100", "4243"), ("7200", "4244"), ("7301", "4245")] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("accel_gpu_process_info{")
                    && l.contains(&format!("pid=\"{pid}\""))
                    && l.contains(&format!("slurm_job=\"{job}\""))),
            "pid {pid}:\n{text}"
        );
    }
}
