//! The kubernetes collector end to end: the real binary on a simulated GPU
//! node (tests/nvml-sim, so the GPU uuids are the scenario's) asks a fake
//! kubelet PodResources server on a temporary Unix socket. The fake is a
//! real gRPC server (hyper's HTTP/2 server, gRPC framing and trailers) with
//! its own protobuf encoder, written here from the field numbers of
//! k8s.io/kubelet/pkg/apis/podresources/v1/api.proto, independently of the
//! agent's decoder. The deploy/kubernetes manifests are checked here too.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::gpu::sim_agent;
use crate::util::{root, value, Agent, TempDir};

/// GPU uuids of the `8xh100-training` scenario.
const H100: [&str; 8] = [
    "GPU-e220a839-7b1d-cdaf-a706-dd2f4d197e6f",
    "GPU-485cbb36-1837-e915-29a6-3c2339fa8dd2",
    "GPU-e34893ee-9119-463f-df60-8622d3621718",
    "GPU-3f5194ef-e9d2-1dfc-f617-7baf674bfc61",
    "GPU-0f9e9641-839d-0909-87be-18f897ef5dfb",
    "GPU-7d7c3cbb-588e-5799-e406-19b3da358aba",
    "GPU-7f123d41-0358-dc31-abb5-bf45c9ee7ee9",
    "GPU-897cf73f-0ae5-1061-fcce-4632140f13e6",
];

/// The PodResources v1 messages, encoded.
mod pb {
    // ListPodResourcesResponse.pod_resources
    const LIST_PODS: u64 = 1;
    // PodResources.name, .namespace, .containers, .cpu_ids
    const POD_NAME: u64 = 1;
    const POD_NAMESPACE: u64 = 2;
    const POD_CONTAINERS: u64 = 3;
    const POD_CPU_IDS: u64 = 4;
    // ContainerResources.name, .devices, .cpu_ids
    const CONTAINER_NAME: u64 = 1;
    const CONTAINER_DEVICES: u64 = 2;
    const CONTAINER_CPU_IDS: u64 = 3;
    // ContainerDevices.resource_name, .device_ids, .topology
    const DEVICES_RESOURCE: u64 = 1;
    const DEVICES_IDS: u64 = 2;
    const DEVICES_TOPOLOGY: u64 = 3;
    // TopologyInfo.nodes, NUMANode.ID
    const TOPOLOGY_NODES: u64 = 1;
    const NUMA_ID: u64 = 1;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn len_field(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    /// (resource, device ids) given to a container.
    pub type Devices<'a> = (&'a str, Vec<&'a str>);

    /// A pod: namespace, name, and containers (name, devices).
    pub struct Pod<'a> {
        pub namespace: &'a str,
        pub name: &'a str,
        pub containers: Vec<(&'a str, Vec<Devices<'a>>)>,
    }

    fn container(name: &str, devices: &[Devices<'_>]) -> Vec<u8> {
        let mut c = Vec::new();
        len_field(CONTAINER_NAME, name.as_bytes(), &mut c);
        for (resource, ids) in devices {
            let mut d = Vec::new();
            len_field(DEVICES_RESOURCE, resource.as_bytes(), &mut d);
            for id in ids {
                len_field(DEVICES_IDS, id.as_bytes(), &mut d);
            }
            let mut numa = Vec::new();
            varint(NUMA_ID << 3, &mut numa);
            varint(1, &mut numa);
            let mut topo = Vec::new();
            len_field(TOPOLOGY_NODES, &numa, &mut topo);
            len_field(DEVICES_TOPOLOGY, &topo, &mut d);
            len_field(CONTAINER_DEVICES, &d, &mut c);
        }
        // Packed cpu ids, as a kubelet with the static CPU manager sends.
        len_field(CONTAINER_CPU_IDS, &[2, 3, 4, 5], &mut c);
        c
    }

    /// A ListPodResourcesResponse.
    pub fn list(pods: &[Pod<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for pod in pods {
            let mut p = Vec::new();
            len_field(POD_NAME, pod.name.as_bytes(), &mut p);
            len_field(POD_NAMESPACE, pod.namespace.as_bytes(), &mut p);
            for (name, devices) in &pod.containers {
                len_field(POD_CONTAINERS, &container(name, devices), &mut p);
            }
            len_field(POD_CPU_IDS, &[7], &mut p);
            len_field(LIST_PODS, &p, &mut out);
        }
        out
    }
}

fn pod<'a>(namespace: &'a str, name: &'a str, devices: Vec<pb::Devices<'a>>) -> pb::Pod<'a> {
    pb::Pod {
        namespace,
        name,
        containers: vec![("main", devices)],
    }
}

/// What the fake kubelet answers.
#[derive(Clone)]
enum Answer {
    /// This ListPodResourcesResponse, status OK in the trailers.
    Message(Vec<u8>),
    /// A "trailers-only" error: the status in the headers, no message.
    Status(u32, &'static str),
    /// No answer for an hour (a wedged kubelet).
    Hang,
}

/// A gRPC response body: one message, then the trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn grpc_status(code: u32, msg: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(code));
    h.insert("grpc-message", HeaderValue::from_str(msg).unwrap());
    h
}

async fn serve(
    req: Request<hyper::body::Incoming>,
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
) -> Result<Response<GrpcBody>, Infallible> {
    let grpc = req.uri().path() == "/v1.PodResourcesLister/List"
        && req
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    calls.fetch_add(1, Ordering::SeqCst);
    let answer = if !grpc {
        Answer::Status(12, "unimplemented")
    } else if body[..] != [0, 0, 0, 0, 0] {
        Answer::Status(3, "expected an empty ListPodResourcesRequest")
    } else {
        answer.lock().unwrap().clone()
    };
    if let Answer::Hang = answer {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    let mut resp = Response::builder().header("content-type", "application/grpc");
    let body = match answer {
        Answer::Message(msg) => {
            let mut framed = Vec::with_capacity(msg.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            framed.extend_from_slice(&msg);
            GrpcBody {
                data: Some(framed.into()),
                trailers: Some(grpc_status(0, "")),
            }
        }
        Answer::Hang => GrpcBody {
            data: None,
            trailers: None,
        },
        Answer::Status(code, msg) => {
            for (k, v) in &grpc_status(code, msg) {
                resp = resp.header(k, v);
            }
            GrpcBody {
                data: None,
                trailers: None,
            }
        }
    };
    Ok(resp.body(body).unwrap())
}

/// A fake kubelet serving PodResourcesLister on a Unix socket.
struct FakeKubelet {
    path: PathBuf,
    rt: Option<tokio::runtime::Runtime>,
    answer: Arc<Mutex<Answer>>,
    calls: Arc<AtomicUsize>,
}

impl FakeKubelet {
    fn start(path: &Path, answer: Answer) -> FakeKubelet {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = {
            let _in = rt.enter();
            tokio::net::UnixListener::bind(path).expect("bind the fake kubelet socket")
        };
        let answer = Arc::new(Mutex::new(answer));
        let calls = Arc::new(AtomicUsize::new(0));
        let (a, c) = (answer.clone(), calls.clone());
        rt.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| serve(req, a.clone(), c.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeKubelet {
            path: path.to_owned(),
            rt: Some(rt),
            answer,
            calls,
        }
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeKubelet {
    /// Stops serving and removes the socket, as a kubelet that exits.
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The agent on simulated `scenario` with the GPU and kubernetes collectors.
fn k8s_agent(scenario: &str, socket: &Path, refresh: &str, extra: &[&str]) -> Agent {
    let socket = format!("--collector.kubernetes.socket={}", socket.display());
    let refresh = format!("--collector.kubernetes.refresh-interval={refresh}");
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.kubernetes",
        "--collector.kubernetes.interval=100ms",
        socket.as_str(),
        refresh.as_str(),
    ];
    args.extend_from_slice(extra);
    sim_agent(scenario, "100ms", &args)
}

/// The `accel_gpu_pod_info` series, sorted, without the value.
fn pod_info(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("accel_gpu_pod_info{"))
        .map(|l| {
            assert!(l.ends_with(" 1"), "{l}");
            l.trim_end_matches(" 1").to_owned()
        })
        .collect();
    v.sort();
    v
}

/// The pods are known and joined with the GPU collector's GPUs: at start
/// the kubernetes collector may sample before the GPU collector has
/// published its GPUs, and then every `gpu` label is empty for a sample.
fn joined(text: &str) -> bool {
    pod_info(text)
        .iter()
        .any(|l| !l.starts_with("accel_gpu_pod_info{gpu=\"\""))
}

#[allow(clippy::too_many_arguments)]
fn info(
    gpu: &str,
    uuid: &str,
    gi: &str,
    ns: &str,
    pod: &str,
    container: &str,
    resource: &str,
) -> String {
    format!("accel_gpu_pod_info{{gpu=\"{gpu}\",uuid=\"{uuid}\",gpu_instance=\"{gi}\",namespace=\"{ns}\",pod=\"{pod}\",container=\"{container}\",resource=\"{resource}\"}}")
}

/// The (namespace, pod) labels of `pid`'s `accel_gpu_process_info`.
fn process_pod(text: &str, pid: u32) -> Option<(String, String)> {
    let line = text.lines().find(|l| {
        l.starts_with("accel_gpu_process_info{") && l.contains(&format!("pid=\"{pid}\""))
    })?;
    let label = |k: &str| {
        let start = line.find(&format!(",{k}=\""))? + k.len() + 3;
        Some(line[start..].split('"').next()?.to_owned())
    };
    Some((label("namespace")?, label("pod")?))
}

/// A procfs with the command name and cgroup of the given pids.
fn procfs(dir: &Path, procs: &[(u32, &str)]) -> PathBuf {
    let proc = dir.join("proc");
    for (pid, cgroup) in procs {
        let d = proc.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), "python3\n").unwrap();
        std::fs::write(d.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
    }
    proc
}

const CONTAINER_ID: &str = "3f4e8c1d2b9a7f6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e";

fn pod_cgroup(uid: &str) -> String {
    format!(
        "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        uid.replace('-', "_")
    )
}

#[test]
fn gpus_replicas_and_other_resources() {
    let dir = TempDir::new("k8s-gpus");
    let socket = dir.0.join("kubelet.sock");
    let replicas2 = [format!("{}::0", H100[2]), format!("{}::1", H100[2])];
    let shared3a = [format!("{}::0", H100[3])];
    let shared3b = [format!("{}::1", H100[3])];
    let r2: Vec<&str> = replicas2.iter().map(String::as_str).collect();
    let s3a: Vec<&str> = shared3a.iter().map(String::as_str).collect();
    let s3b: Vec<&str> = shared3b.iter().map(String::as_str).collect();
    let pods = [
        pb::Pod {
            namespace: "ml",
            name: "train-0",
            containers: vec![
                ("trainer", vec![("nvidia.com/gpu", vec![H100[0], H100[1]])]),
                // A sidecar with other resources only.
                ("sidecar", vec![("example.com/nic", vec!["nic-7"])]),
            ],
        },
        // One container given two replicas of GPU 2: one series.
        pod("ml", "replicas", vec![("nvidia.com/gpu", r2)]),
        // GPU 3 shared by two pods (time-slicing).
        pod("team-a", "shared-a", vec![("nvidia.com/gpu.shared", s3a)]),
        pod("team-b", "shared-b", vec![("nvidia.com/gpu.shared", s3b)]),
        // Not GPUs: an RDMA device whose id looks like a GPU's, an FPGA.
        pod(
            "net",
            "rdma",
            vec![
                ("rdma/hca_shared_devices_a", vec![H100[5]]),
                ("example.com/fpga", vec!["fpga-0"]),
            ],
        ),
        // A GPU the node does not have (the GPU collector does not know it).
        pod(
            "ml",
            "elsewhere",
            vec![("nvidia.com/gpu", vec!["GPU-00000000-dead"])],
        ),
        // No devices at all.
        pod("kube-system", "coredns", vec![]),
    ];
    let kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&pods)));
    let proc = procfs(
        &dir.0,
        &[
            (4100, &pod_cgroup("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
            // On GPU 1, held by train-0, but a host process: no pod.
            (4101, "/system.slice/burn-in.service"),
            (4102, &pod_cgroup("11111111-2222-3333-4444-555555555555")),
            // On GPU 3, shared by two pods: which one is unknown.
            (4103, &pod_cgroup("66666666-2222-3333-4444-555555555555")),
        ],
    );
    let procfs_flag = format!("--path.procfs={}", proc.display());
    let agent = k8s_agent("8xh100-training", &socket, "10s", &[&procfs_flag]);
    let text = agent.wait_for("pods and process pods", Duration::from_secs(15), |t| {
        joined(t) && process_pod(t, 4100).is_some_and(|p| !p.1.is_empty())
    });
    assert_eq!(
        pod_info(&text),
        {
            let mut want = vec![
                info(
                    "0",
                    H100[0],
                    "",
                    "ml",
                    "train-0",
                    "trainer",
                    "nvidia.com/gpu",
                ),
                info(
                    "1",
                    H100[1],
                    "",
                    "ml",
                    "train-0",
                    "trainer",
                    "nvidia.com/gpu",
                ),
                info("2", H100[2], "", "ml", "replicas", "main", "nvidia.com/gpu"),
                info(
                    "3",
                    H100[3],
                    "",
                    "team-a",
                    "shared-a",
                    "main",
                    "nvidia.com/gpu.shared",
                ),
                info(
                    "3",
                    H100[3],
                    "",
                    "team-b",
                    "shared-b",
                    "main",
                    "nvidia.com/gpu.shared",
                ),
                info(
                    "",
                    "GPU-00000000-dead",
                    "",
                    "ml",
                    "elsewhere",
                    "main",
                    "nvidia.com/gpu",
                ),
            ];
            want.sort();
            want
        },
        "{text}"
    );
    let pp = |pid| process_pod(&text, pid).unwrap_or_else(|| panic!("pid {pid}:\n{text}"));
    assert_eq!(pp(4100), ("ml".into(), "train-0".into()));
    assert_eq!(pp(4101), (String::new(), String::new()));
    assert_eq!(pp(4102), ("ml".into(), "replicas".into()));
    assert_eq!(pp(4103), (String::new(), String::new()));
    // A process with no /proc entry (another pid namespace): no pod.
    assert_eq!(pp(4104), (String::new(), String::new()));
    assert_eq!(value(&text, "accel_kubernetes_pod_resources_up"), Some(1.0));
    assert_eq!(
        value(&text, "accel_kubernetes_pod_resources_errors_total"),
        Some(0.0)
    );
    let age = value(&text, "accel_kubernetes_pod_resources_age_seconds").unwrap();
    assert!((0.0..10.0).contains(&age), "{age}");
    // The kubelet is asked in the background, not per scrape.
    let before = kubelet.calls();
    for _ in 0..30 {
        agent.get("/metrics");
    }
    assert!(kubelet.calls() <= before + 1, "{} calls", kubelet.calls());
    let (ok, msg) = crate::golden::promtool_check(&text);
    assert!(ok && msg.trim().is_empty(), "{msg}");
    // The collector's families and the process series, as a golden.
    let ours: String = text
        .lines()
        .filter(|l| {
            let name = l
                .strip_prefix("# HELP ")
                .or_else(|| l.strip_prefix("# TYPE "))
                .unwrap_or(l);
            [
                "accel_kubernetes_",
                "accel_gpu_pod_info",
                "accel_gpu_process_info",
            ]
            .iter()
            .any(|p| name.starts_with(p))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let got = crate::golden::normalize(
        &ours,
        &[
            "accel_kubernetes_pod_resources_age_seconds",
            "accel_kubernetes_pod_resources_last_success_timestamp_seconds",
        ],
    );
    crate::golden::check_golden("kubernetes", &got);
}

#[test]
fn mig_devices() {
    let dir = TempDir::new("k8s-mig");
    let socket = dir.0.join("kubelet.sock");
    // mig-h100: GPU 0 split into GI 2 (pid 7100), GI 3 (idle), GI 4 (pid
    // 7200); GPU 1 whole (pid 7301).
    let gi2 = "MIG-90ab2664-58d8-5f8a-bffb-236afc702b10";
    let gi4 = "MIG-35f2f170-6fde-5799-a873-938e5f8df3f9";
    let gpu0 = "GPU-e220a839-7b1d-cdaf-a706-dd2f4d197e6f";
    let gpu1 = "GPU-485cbb36-1837-e915-29a6-3c2339fa8dd2";
    let legacy3 = format!("MIG-{gpu0}/3/0");
    let pods = [
        pod(
            "ml",
            "mig-train",
            vec![("nvidia.com/mig-3g.40gb", vec![gi2])],
        ),
        pod(
            "serve",
            "triton",
            vec![("nvidia.com/mig-2g.20gb", vec![gi4])],
        ),
        // The pre-470 id form of GI 3.
        pod(
            "serve",
            "old",
            vec![("nvidia.com/mig-2g.20gb", vec![legacy3.as_str()])],
        ),
        pod("ml", "big", vec![("nvidia.com/gpu", vec![gpu1])]),
    ];
    let _kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&pods)));
    let proc = procfs(
        &dir.0,
        &[
            (7100, &pod_cgroup("aaaaaaaa-2222-3333-4444-555555555555")),
            (7200, &pod_cgroup("bbbbbbbb-2222-3333-4444-555555555555")),
            (7301, &pod_cgroup("cccccccc-2222-3333-4444-555555555555")),
        ],
    );
    let procfs_flag = format!("--path.procfs={}", proc.display());
    let agent = k8s_agent("mig-h100", &socket, "10s", &[&procfs_flag]);
    let text = agent.wait_for("MIG pods", Duration::from_secs(15), |t| {
        pod_info(t).iter().any(|l| l.contains("gpu_instance=\"2\""))
            && process_pod(t, 7100).is_some_and(|p| !p.1.is_empty())
    });
    let mut want = vec![
        info(
            "0",
            gpu0,
            "2",
            "ml",
            "mig-train",
            "main",
            "nvidia.com/mig-3g.40gb",
        ),
        info(
            "0",
            gpu0,
            "4",
            "serve",
            "triton",
            "main",
            "nvidia.com/mig-2g.20gb",
        ),
        info(
            "0",
            gpu0,
            "3",
            "serve",
            "old",
            "main",
            "nvidia.com/mig-2g.20gb",
        ),
        info("1", gpu1, "", "ml", "big", "main", "nvidia.com/gpu"),
    ];
    want.sort();
    assert_eq!(pod_info(&text), want, "{text}");
    let pp = |pid| process_pod(&text, pid).unwrap_or_else(|| panic!("pid {pid}:\n{text}"));
    assert_eq!(pp(7100), ("ml".into(), "mig-train".into()));
    assert_eq!(pp(7200), ("serve".into(), "triton".into()));
    assert_eq!(pp(7301), ("ml".into(), "big".into()));
}

#[test]
fn a_response_over_4_mib() {
    let dir = TempDir::new("k8s-big");
    let socket = dir.0.join("kubelet.sock");
    // 30,000 pods with a long non-GPU device id each, and one GPU pod last.
    let names: Vec<String> = (0..30_000).map(|i| format!("batch-{i:05}")).collect();
    let id = "x".repeat(160);
    let mut pods: Vec<pb::Pod> = names
        .iter()
        .map(|n| pod("batch", n, vec![("example.com/scratch", vec![id.as_str()])]))
        .collect();
    pods.push(pod("ml", "last", vec![("nvidia.com/gpu", vec![H100[7]])]));
    let msg = pb::list(&pods);
    assert!(msg.len() > 5 << 20, "{} bytes", msg.len());
    let _kubelet = FakeKubelet::start(&socket, Answer::Message(msg.clone()));
    let agent = k8s_agent("8xh100-training", &socket, "10s", &["--log.level=debug"]);
    let text = agent.wait_for("the big answer", Duration::from_secs(20), joined);
    // What the call cost (shown with --no-capture; docs/kubernetes.md).
    for l in agent.log_lines() {
        if l.contains("kubelet PodResources List") {
            println!("{l}");
        }
    }
    assert_eq!(
        pod_info(&text),
        [info(
            "7",
            H100[7],
            "",
            "ml",
            "last",
            "main",
            "nvidia.com/gpu"
        )]
    );
    assert_eq!(
        value(&text, "accel_kubernetes_pod_resources_response_bytes"),
        Some(msg.len() as f64)
    );
}

/// Waits until `cond` holds on the log, at most `within`.
fn wait_log(agent: &Agent, what: &str, within: Duration, cond: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + within;
    while !cond(&agent.log_lines()) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            agent.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn errors_a_missing_socket_and_a_recreated_one() {
    let dir = TempDir::new("k8s-errors");
    let socket = dir.0.join("kubelet.sock");
    let agent = k8s_agent("8xh100-training", &socket, "200ms", &[]);
    // No socket: logged once, nothing exported, the collector is fine.
    const MISSING: &str = "no kubelet PodResources socket";
    wait_log(
        &agent,
        "the missing-socket line",
        Duration::from_secs(10),
        |l| count(l, MISSING) == 1,
    );
    std::thread::sleep(Duration::from_millis(1500));
    let text = agent.get("/metrics").text();
    assert_eq!(count(&agent.log_lines(), MISSING), 1);
    assert!(!text.contains("accel_kubernetes_"), "{text}");
    assert!(pod_info(&text).is_empty());
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"kubernetes\"}"),
        Some(1.0)
    );

    // The kubelet starts: picked up at the next refresh.
    let pods = [pod("ml", "first", vec![("nvidia.com/gpu", vec![H100[0]])])];
    let kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&pods)));
    let first = info("0", H100[0], "", "ml", "first", "main", "nvidia.com/gpu");
    agent.wait_for("the first map", Duration::from_secs(10), |t| {
        pod_info(t) == [first.clone()] && value(t, "accel_kubernetes_pod_resources_up") == Some(1.0)
    });

    // gRPC errors: the map is kept, its age grows, errors are counted, and
    // the failure is logged once.
    kubelet.set(Answer::Status(14, "kubelet is shutting down"));
    let text = agent.wait_for("errors", Duration::from_secs(10), |t| {
        value(t, "accel_kubernetes_pod_resources_errors_total").unwrap_or(0.0) >= 3.0
    });
    assert_eq!(value(&text, "accel_kubernetes_pod_resources_up"), Some(0.0));
    assert_eq!(pod_info(&text), std::slice::from_ref(&first));
    let age = value(&text, "accel_kubernetes_pod_resources_age_seconds").unwrap();
    assert!(age >= 0.4, "age {age}");
    let failed = "kubelet PodResources call failed";
    let lines = agent.log_lines();
    assert_eq!(count(&lines, failed), 1, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains(failed) && l.contains("status 14")),
        "{lines:#?}"
    );
    // Garbage instead of protobuf: an error too, the map still kept.
    let errors = value(&text, "accel_kubernetes_pod_resources_errors_total").unwrap();
    kubelet.set(Answer::Message(vec![0x0a, 0x7f, 0x01]));
    let text = agent.wait_for("decode errors", Duration::from_secs(10), |t| {
        value(t, "accel_kubernetes_pod_resources_errors_total").unwrap_or(0.0) >= errors + 2.0
    });
    assert_eq!(pod_info(&text), std::slice::from_ref(&first));

    // The kubelet restarts: socket removed, a new server on the same path
    // with a new answer. The map follows.
    drop(kubelet);
    assert!(!socket.exists());
    let text = agent.wait_for("the socket gone", Duration::from_secs(10), |t| {
        value(t, "accel_kubernetes_pod_resources_errors_total").unwrap_or(0.0) >= errors + 4.0
    });
    assert_eq!(value(&text, "accel_kubernetes_pod_resources_up"), Some(0.0));
    assert_eq!(pod_info(&text), std::slice::from_ref(&first));
    let pods = [pod("ml", "second", vec![("nvidia.com/gpu", vec![H100[1]])])];
    let _kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&pods)));
    let second = info("1", H100[1], "", "ml", "second", "main", "nvidia.com/gpu");
    let text = agent.wait_for("the new map", Duration::from_secs(10), |t| {
        pod_info(t) == [second.clone()]
    });
    assert_eq!(value(&text, "accel_kubernetes_pod_resources_up"), Some(1.0));
    let age = value(&text, "accel_kubernetes_pod_resources_age_seconds").unwrap();
    assert!(age < 1.0, "age {age}");
    assert_eq!(count(&agent.log_lines(), MISSING), 1);
}

#[test]
fn a_hung_kubelet_never_stalls_a_scrape() {
    let dir = TempDir::new("k8s-hang");
    let socket = dir.0.join("kubelet.sock");
    let pods = [pod("ml", "a", vec![("nvidia.com/gpu", vec![H100[0]])])];
    let kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&pods)));
    let agent = k8s_agent(
        "8xh100-training",
        &socket,
        "200ms",
        &["--collector.kubernetes.timeout=1s"],
    );
    agent.wait_for("the map", Duration::from_secs(10), |t| {
        pod_info(t).len() == 1
    });
    kubelet.set(Answer::Hang);
    let text = agent.wait_for("timeouts", Duration::from_secs(10), |t| {
        value(t, "accel_kubernetes_pod_resources_errors_total").unwrap_or(0.0) >= 2.0
    });
    assert_eq!(value(&text, "accel_kubernetes_pod_resources_up"), Some(0.0));
    assert_eq!(pod_info(&text).len(), 1, "the last good map is kept");
    // Scrapes while calls hang: none waits for the kubelet.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = agent.get("/metrics");
        slowest = slowest.max(t.elapsed());
        assert_eq!(r.status, 200);
        std::thread::sleep(Duration::from_millis(25));
    }
    // A scrape that waited for a call would take up to the 1 s timeout.
    assert!(
        slowest < Duration::from_millis(400),
        "slowest scrape {slowest:?}"
    );
    let lines = agent.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("no answer within the timeout")),
        "{lines:#?}"
    );
}

#[test]
fn a_new_gpu_process_outside_the_map_triggers_an_early_call() {
    let dir = TempDir::new("k8s-early");
    let socket = dir.0.join("kubelet.sock");
    // Two GPUs; a process appears on GPU 1 eight seconds in.
    let scenario = dir.0.join("late-process.toml");
    std::fs::write(
        &scenario,
        r#"description = "GPU 0 busy from the start, a process on GPU 1 from t=8 s."
[[gpus]]
model = "h100-sxm5-80gb"
processes = [{ pid = 6100, name = "python3", used_memory_mib = 1000 }]
[[gpus]]
model = "h100-sxm5-80gb"
processes = [{ pid = 6101, name = "python3", used_memory_mib = 1000, from = 8 }]
"#,
    )
    .unwrap();
    // Pod a holds GPU 0 (by index: the device plugin's
    // --device-id-strategy=index).
    let first = [pod("ml", "a", vec![("nvidia.com/gpu", vec!["0"])])];
    let kubelet = FakeKubelet::start(&socket, Answer::Message(pb::list(&first)));
    let agent = k8s_agent(scenario.to_str().unwrap(), &socket, "1h", &[]);
    // The GPU collector's first sample too, and the pod map labelled with
    // it: on a loaded machine the first List can come before it, and the
    // device is then shown with an empty gpu label until the next sample.
    let text = agent.wait_for("the first map", Duration::from_secs(6), |t| {
        let p = pod_info(t);
        p.len() == 1 && p[0].contains("gpu=\"0\"") && t.contains("accel_gpu_up{gpu=\"1\"")
    });
    let uuid = |gpu: &str| {
        let prefix = format!("accel_gpu_up{{gpu=\"{gpu}\",uuid=\"");
        let line = text
            .lines()
            .find(|l| l.starts_with(&prefix))
            .expect("gpu up");
        line[prefix.len()..].split('"').next().unwrap().to_owned()
    };
    let (u0, u1) = (uuid("0"), uuid("1"));
    let a = info("0", &u0, "", "ml", "a", "main", "nvidia.com/gpu");
    assert_eq!(pod_info(&text), std::slice::from_ref(&a));
    // The scheduler places pod b on GPU 1; its process starts at t=8 s.
    let both = [
        pod("ml", "a", vec![("nvidia.com/gpu", vec!["0"])]),
        pod("ml", "b", vec![("nvidia.com/gpu", vec!["1"])]),
    ];
    kubelet.set(Answer::Message(pb::list(&both)));
    let b = info("1", &u1, "", "ml", "b", "main", "nvidia.com/gpu");
    let text = agent.wait_for(
        "pod b, long before the 1h refresh",
        Duration::from_secs(15),
        |t| pod_info(t).contains(&b),
    );
    assert_eq!(pod_info(&text).len(), 2);
    // The first call and one early call; placed now, no more calls.
    let calls = kubelet.calls();
    assert_eq!(calls, 2, "one early call for the newly busy GPU");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(kubelet.calls(), calls);
}

// ---- deploy/kubernetes ----

fn manifests() -> Vec<(PathBuf, serde_norway::Value)> {
    let dir = root().join("deploy/kubernetes");
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = <serde_norway::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                out.push((f.clone(), v));
            }
        }
    }
    out
}

fn kind<'a>(
    docs: &'a [(PathBuf, serde_norway::Value)],
    kind: &str,
) -> Vec<&'a serde_norway::Value> {
    docs.iter()
        .filter(|(_, v)| v["kind"].as_str() == Some(kind))
        .map(|(_, v)| v)
        .collect()
}

fn strs(v: &serde_norway::Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn manifests_are_hardened_and_complete() {
    let docs = manifests();
    for (f, v) in &docs {
        assert!(
            v["apiVersion"].as_str().is_some(),
            "{}: no apiVersion",
            f.display()
        );
        assert!(
            v["metadata"]["name"].as_str().is_some(),
            "{}: no name",
            f.display()
        );
    }
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1);
    let ds = ds[0];
    let spec = &ds["spec"]["template"]["spec"];
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&ds["spec"]["selector"]["matchLabels"], labels);

    // The NVIDIA runtime gives the container the GPUs; hostPID lets NVML's
    // pids be found in /proc; nothing else from the host.
    assert_eq!(spec["runtimeClassName"].as_str(), Some("nvidia"));
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    assert_ne!(spec["hostNetwork"].as_bool(), Some(true));
    assert_ne!(spec["hostIPC"].as_bool(), Some(true));
    assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));

    // The pod-resources directory, not the socket (a kubelet restart
    // recreates the socket; a file mount would keep the dead one).
    let volumes = spec["volumes"].as_sequence().expect("volumes");
    let pr = volumes
        .iter()
        .find(|v| v["hostPath"]["path"].as_str() == Some("/var/lib/kubelet/pod-resources"))
        .expect("a hostPath volume of /var/lib/kubelet/pod-resources");
    assert_eq!(pr["hostPath"]["type"].as_str(), Some("Directory"));
    for v in volumes {
        if let Some(p) = v["hostPath"]["path"].as_str() {
            assert!(!p.ends_with(".sock"), "a socket mounted as a file: {p}");
            assert_ne!(p, "/", "the host root mounted");
        }
    }

    // Training events: the socket lives in a hostPath directory that
    // training pods can mount, with a group they can join.
    let ev = volumes
        .iter()
        .find(|v| v["hostPath"]["path"].as_str() == Some("/run/accel-agent"))
        .expect("a hostPath volume of /run/accel-agent for the event socket");
    assert_eq!(ev["hostPath"]["type"].as_str(), Some("DirectoryOrCreate"));
    assert!(spec["securityContext"]["supplementalGroups"]
        .as_sequence()
        .is_some_and(|g| g.iter().any(|g| g.as_i64() == Some(2000))));

    let containers = spec["containers"].as_sequence().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let args = strs(&c["args"]);
    assert!(
        args.contains(&"--events.socket=/run/accel-agent/events.sock"),
        "{args:?}"
    );
    assert!(args.contains(&"--events.socket-group=2000"), "{args:?}");
    assert!(c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"].as_str() == Some("/run/accel-agent")
            && m["readOnly"].as_bool() != Some(true)));
    let mount = c["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"] == pr["name"])
        .expect("the pod-resources volume mounted");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let dir = mount["mountPath"].as_str().unwrap();
    let socket_flag = args
        .iter()
        .find_map(|a| a.strip_prefix("--collector.kubernetes.socket="))
        .unwrap_or(accel_collectors::kubernetes::DEFAULT_SOCKET);
    assert_eq!(
        Path::new(socket_flag).parent(),
        Some(Path::new(dir)),
        "the socket flag points into the mounted directory"
    );
    // Every flag in args is one the agent knows.
    let help = std::process::Command::new(crate::util::bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args {
        // --no-collector.X is listed as --collector.X.
        let flag = a.split('=').next().unwrap().replace("--no-", "--");
        assert!(
            help.split_whitespace().any(|w| w == flag),
            "unknown flag {flag}"
        );
    }

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_ne!(sc["privileged"].as_bool(), Some(true));
    assert_eq!(strs(&sc["capabilities"]["drop"]), ["ALL"]);
    // Reading /proc/PID of other users' GPU processes (comm, cgroup) needs
    // none of them; nothing else is added.
    assert!(
        strs(&sc["capabilities"]["add"]).is_empty(),
        "{:?}",
        sc["capabilities"]["add"]
    );
    // The user is chosen, not left to the image. Root only because the
    // kubelet's socket is root's, and then with no capability at all.
    let user = sc["runAsUser"]
        .as_u64()
        .or(spec["securityContext"]["runAsUser"].as_u64())
        .expect("runAsUser");
    if user != 0 {
        assert_eq!(
            sc["runAsNonRoot"]
                .as_bool()
                .or(spec["securityContext"]["runAsNonRoot"].as_bool()),
            Some(true)
        );
    }
    let seccomp = sc["seccompProfile"]["type"]
        .as_str()
        .or(spec["securityContext"]["seccompProfile"]["type"].as_str());
    assert_eq!(seccomp, Some("RuntimeDefault"));

    for what in ["requests", "limits"] {
        for res in ["cpu", "memory"] {
            assert!(
                c["resources"][what][res].as_str().is_some()
                    || c["resources"][what][res].as_u64().is_some(),
                "resources.{what}.{res}"
            );
        }
    }
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/healthy")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/-/ready")
    );
    let port = c["ports"][0]["containerPort"].as_u64().expect("a port");
    let port_name = c["ports"][0]["name"].as_str().expect("a named port");
    assert!(
        args.contains(&format!("--web.listen-address=:{port}").as_str()),
        "{args:?}"
    );
    // The NVIDIA runtime hands the GPUs over by this variable.
    let env = c["env"].as_sequence().expect("env");
    assert!(env
        .iter()
        .any(|e| e["name"].as_str() == Some("NVIDIA_VISIBLE_DEVICES")
            && e["value"].as_str() == Some("all")));

    // A Service selecting the pods and a PodMonitor scraping the port.
    let svc = kind(&docs, "Service");
    assert_eq!(svc.len(), 1);
    let sel = svc[0]["spec"]["selector"].as_mapping().expect("selector");
    for (k, v) in sel {
        assert_eq!(&labels[k], v, "the Service selects the DaemonSet's pods");
    }
    let pm = kind(&docs, "PodMonitor");
    assert_eq!(pm.len(), 1);
    assert_eq!(
        pm[0]["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    let pm_sel = pm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("PodMonitor selector");
    for (k, v) in pm_sel {
        assert_eq!(&labels[k], v, "the PodMonitor selects the DaemonSet's pods");
    }
    let ep = &pm[0]["spec"]["podMetricsEndpoints"][0];
    assert_eq!(ep["port"].as_str(), Some(port_name));
    // The target's pod, namespace and container labels are dropped, so the
    // exported ones (the GPU workloads') are not renamed exported_*, and
    // honor_labels is not used (it would give every series without a pod
    // label the agent's own pod).
    assert_ne!(ep["honorLabels"].as_bool(), Some(true));
    let drops: Vec<&str> = ep["relabelings"]
        .as_sequence()
        .expect("relabelings")
        .iter()
        .filter(|r| r["action"].as_str() == Some("labeldrop"))
        .filter_map(|r| r["regex"].as_str())
        .collect();
    for l in ["pod", "namespace", "container"] {
        assert!(
            drops.iter().any(|re| re.split('|').any(|x| x == l)),
            "{l} not dropped: {drops:?}"
        );
    }
    // No RBAC: PodResources needs none, and the pod has no API token.
    for k in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(kind(&docs, k).is_empty(), "{k}");
    }
}

/// `patch` (RFC 6902: `test`, `replace`, `add`, as kubectl applies them)
/// applied to `doc`; panics on an op that does not apply, as kubectl
/// refuses it.
fn json_patch(doc: &mut serde_json::Value, patch: &serde_json::Value) {
    for op in patch.as_array().expect("a JSON patch is an array") {
        let path = op["path"].as_str().expect("path");
        let value = op["value"].clone();
        match op["op"].as_str() {
            Some("test") => assert_eq!(doc.pointer(path), Some(&value), "test {path}"),
            Some("replace") => {
                *doc.pointer_mut(path).unwrap_or_else(|| panic!("no {path}")) = value
            }
            Some("add") => {
                let (parent, last) = path.rsplit_once('/').unwrap();
                let target = doc
                    .pointer_mut(parent)
                    .unwrap_or_else(|| panic!("no {parent}"));
                match (target, last) {
                    (serde_json::Value::Array(a), "-") => a.push(value),
                    (serde_json::Value::Object(o), k) => {
                        o.insert(k.to_owned(), value);
                    }
                    (t, _) => panic!("add at {path} into {t}"),
                }
            }
            other => panic!("op {other:?}"),
        }
    }
}

/// The node's network through hostPID and its /sys; its filesystems through
/// host-root.patch.json, which mounts the node's / read-only (with
/// HostToContainer propagation, so later mounts appear) and points
/// --path.rootfs at it in place of --no-collector.filesystem.
#[test]
fn the_node_network_and_the_host_root_patch() {
    let docs = manifests();
    let ds = kind(&docs, "DaemonSet")[0];
    let args = |ds: &serde_json::Value| -> Vec<String> {
        ds["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let mount_of = |ds: &serde_json::Value, path: &str| -> (serde_json::Value, serde_json::Value) {
        let spec = &ds["spec"]["template"]["spec"];
        let vol = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["hostPath"]["path"] == path)
            .unwrap_or_else(|| panic!("a hostPath volume of {path}"))
            .clone();
        let mount = spec["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == vol["name"])
            .unwrap_or_else(|| panic!("{path} mounted"))
            .clone();
        (vol, mount)
    };
    let mut ds = serde_json::to_value(ds).unwrap();
    let a = args(&ds);
    assert!(!a.iter().any(|a| a == "--no-collector.network"), "{a:?}");
    let (_, sys) = mount_of(&ds, "/sys");
    assert_eq!(sys["readOnly"], true);
    let flag = format!("--path.sysfs={}", sys["mountPath"].as_str().unwrap());
    assert!(a.contains(&flag), "{a:?}");

    let patch: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/kubernetes/host-root.patch.json")).unwrap(),
    )
    .unwrap();
    json_patch(&mut ds, &patch);
    let a = args(&ds);
    assert!(!a.iter().any(|a| a == "--no-collector.filesystem"), "{a:?}");
    let (_, host) = mount_of(&ds, "/");
    assert_eq!(host["readOnly"], true);
    assert_eq!(host["mountPropagation"], "HostToContainer");
    let flag = format!("--path.rootfs={}", host["mountPath"].as_str().unwrap());
    assert!(a.contains(&flag), "{a:?}");
    // Every flag of the patched DaemonSet is one the agent accepts: it
    // starts with them (paths that do not exist here are not fatal) and
    // serves the filesystem collector.
    let local: Vec<String> = a
        .iter()
        .filter(|a| !a.starts_with("--events.") && !a.starts_with("--web.listen-address"))
        .map(|a| a.replace("/host/root", "/").replace("/host/sys", "/sys"))
        .collect();
    let local: Vec<&str> = local.iter().map(String::as_str).collect();
    let agent = crate::util::Agent::start(&local);
    let text = agent.get_ready("/metrics").text();
    assert!(
        text.contains("accel_collector_success{collector=\"filesystem\"} 1")
            && text.contains("accel_filesystem_size_bytes{"),
        "{text}"
    );
}
