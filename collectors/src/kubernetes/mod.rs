//! `accel_gpu_pod_info` and `accel_kubernetes_*`: which pod holds each GPU,
//! from the kubelet's PodResources v1 API (`List`) on its Unix socket.
//!
//! The kubelet is asked on this collector's own background thread, every
//! `--collector.kubernetes.refresh-interval` and early when a GPU or MIG
//! instance starts holding a process the last answer did not place; never
//! on the scrape path and never from `sample()`, which only joins the last
//! good answer with the GPU collector's identities (the [`gpus`](crate::Shared::gpus) topic). When a
//! call fails the last good answer stays, with its age exported. A missing
//! socket is not an error: this may not be a Kubernetes node, or the
//! kubelet starts later or is recreating its socket; it is logged once and
//! tried again quietly, and nothing is exported until the socket has been
//! there once. The refresher runs under the collector's supervisor
//! ([`crate::workers`]): restarted if it panics, and the sample fails while
//! it is silent for longer than one call's timeout (with margin), since the
//! map it would serve is no longer refreshed.
//!
//! The gRPC client is hand-written on hyper's HTTP/2 client ([`grpc`]) with
//! a hand-written decoder for the four messages read ([`proto`]); see
//! docs/kubernetes.md for why not tonic.

mod grpc;
pub mod proto;

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::options::{options, parse_duration, parse_interval};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::{Heartbeat, Worker};
use crate::{
    BuildContext, Built, CollectError, Collector, FamilyDef, GpuIds, MigIds, Sample, Spec, Workers,
    HOST_INTERVAL,
};

/// Where the kubelet serves PodResources.
pub const DEFAULT_SOCKET: &str = "/var/lib/kubelet/pod-resources/kubelet.sock";

/// Largest answer accepted, in bytes. grpc-go's default client limit is
/// 4 MiB, which a node with many pods and devices exceeds (dcgm-exporter
/// issue #509); the kubelet's own server limit is 16 MiB by default.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Shortest time between two calls, early ones included.
const MIN_GAP: Duration = Duration::from_secs(1);

/// Settings of the kubernetes collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct KubernetesOptions {
    /// The kubelet's PodResources socket.
    #[arg(
        id = "collector.kubernetes.socket",
        long = "collector.kubernetes.socket",
        value_name = "PATH",
        help = "The kubelet's PodResources socket (mount its directory, /var/lib/kubelet/pod-resources, into the agent's container).",
        default_value = DEFAULT_SOCKET,
        value_parser = crate::options::parse_path
    )]
    pub socket: PathBuf,
    /// Interval between two `List` calls.
    #[arg(
        id = "collector.kubernetes.refresh-interval",
        long = "collector.kubernetes.refresh-interval",
        value_name = "DURATION",
        help = "Interval between two calls of the kubelet PodResources API (List), on a background thread; a GPU that starts holding a process no known pod holds triggers an early call.",
        default_value = "10s",
        value_parser = parse_interval
    )]
    pub refresh: Duration,
    /// Deadline of one call.
    #[arg(
        id = "collector.kubernetes.timeout",
        long = "collector.kubernetes.timeout",
        value_name = "DURATION",
        help = "Deadline of one PodResources call.",
        default_value = "5s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
}

/// The kubernetes collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "kubernetes",
    help: "which pod holds each GPU, from the kubelet's PodResources API (refreshed in the background)",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<KubernetesOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_kubernetes_"],
    outside: &["accel_gpu_pod_info"],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[POD_INFO, UP, ERRORS, LAST_SUCCESS, AGE, RESPONSE_BYTES];

/// Which container holds each GPU (outside `accel_kubernetes_`: it
/// describes the GPU, and is joined with the `accel_gpu_*` families).
pub const POD_INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pod_info",
    "A container holding the GPU (or its MIG instance gpu_instance), from the kubelet; always 1. gpu is empty when the GPU collector does not know the device, and uuid is then the kubelet's device id.",
)
.labels(&["gpu", "uuid", "gpu_instance", "namespace", "pod", "container", "resource"])
.doc("always 1, one per (device, container) holding an `nvidia.com/*` resource. `gpu_instance` is set for a MIG device (`MIG-…` ids, or the old `MIG-GPU-<uuid>/<gi>/<ci>`), `\"\"` for a whole GPU. Shared replicas (`<uuid>::<n>`) count once per container; a GPU shared by two pods has two series. A device the GPU collector does not know has `gpu=\"\"` and the kubelet's id as `uuid`. Join on `gpu, uuid` with `group_left(namespace, pod)`")
.source("`List` → `pod_resources[].containers[].devices[]` (`resource_name`, `device_ids`); `collectors/src/kubernetes/mod.rs`")
.equivalent("the `pod`, `namespace`, `container` labels dcgm-exporter puts on every GPU series");

/// Whether the last call succeeded.
pub const UP: FamilyDef = FamilyDef::gauge(
    "accel_kubernetes_pod_resources_up",
    "1 when the last call of the kubelet PodResources API (List) succeeded, 0 when it failed (the last good answer is kept).",
)
.doc("1 when the last `List` call succeeded, 0 when it failed (socket gone, transport error, timeout, gRPC status ≠ 0, answer over 64 MiB or not valid protobuf)")
.source("`collectors/src/kubernetes/grpc.rs`");

/// Failed calls.
pub const ERRORS: FamilyDef = FamilyDef::counter(
    "accel_kubernetes_pod_resources_errors_total",
    "Failed calls of the kubelet PodResources API.",
)
.doc("failed `List` calls since the agent started (a missing socket counts only after it has existed once)")
.source("`collectors/src/kubernetes/mod.rs`");

/// When the last call succeeded.
pub const LAST_SUCCESS: FamilyDef = FamilyDef::gauge(
    "accel_kubernetes_pod_resources_last_success_timestamp_seconds",
    "Unix time of the last successful PodResources call.",
)
.doc("Unix time of the last successful call; absent before the first")
.source("`collectors/src/kubernetes/mod.rs`");

/// Age of the pod map in use.
pub const AGE: FamilyDef = FamilyDef::gauge(
    "accel_kubernetes_pod_resources_age_seconds",
    "Age of the pod-to-GPU map in use: time since the last successful PodResources call, in seconds.",
)
.doc("seconds since the last successful call: the age of the pod map in use (at most about refresh interval + collector interval while the kubelet answers)")
.source("`collectors/src/kubernetes/mod.rs`");

/// Size of the last good answer.
pub const RESPONSE_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_kubernetes_pod_resources_response_bytes",
    "Size of the last successful PodResources answer, in bytes.",
)
.doc("size of the last good answer, bytes (grpc-go clients fail above 4 MiB by default; we accept up to 64 MiB)")
.source("`collectors/src/kubernetes/grpc.rs`");

/// A kubelet device id for an NVIDIA resource, as NVIDIA's device plugin
/// names them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    /// A whole GPU by uuid (`GPU-…`).
    Gpu(String),
    /// A MIG instance by uuid (`MIG-…`, drivers 470 and newer).
    Mig(String),
    /// A MIG instance in the old form `MIG-GPU-<uuid>/<gi>/<ci>`.
    LegacyMig(String, u32),
    /// A GPU by index (`--device-id-strategy=index`).
    Index(u32),
}

impl Device {
    /// Parses a device id; the replica suffix of a shared GPU
    /// (`<uuid>::<n>`, time-slicing or MPS) is dropped. `None` for what is
    /// not a GPU.
    pub fn parse(id: &str) -> Option<Device> {
        let id = id.split("::").next().unwrap_or(id).trim();
        if let Some(rest) = id.strip_prefix("MIG-GPU-") {
            let mut parts = rest.split('/');
            let gpu = parts.next()?;
            let gi = parts.next()?.parse().ok()?;
            return Some(Device::LegacyMig(format!("GPU-{gpu}"), gi));
        }
        if id.len() > 4 && id.starts_with("MIG-") {
            return Some(Device::Mig(id.to_owned()));
        }
        if id.len() > 4 && id.starts_with("GPU-") {
            return Some(Device::Gpu(id.to_owned()));
        }
        if !id.is_empty() && id.len() <= 4 && id.bytes().all(|b| b.is_ascii_digit()) {
            return id.parse().ok().map(Device::Index);
        }
        None
    }

    /// Whether this device is `gpu` (or, with `mig`, that instance of it).
    fn holds(&self, gpu: &GpuIds, mig: Option<&MigIds>) -> bool {
        match self {
            Device::Gpu(u) => *u == gpu.uuid,
            Device::Mig(u) => mig.is_some_and(|m| m.uuid == *u),
            Device::LegacyMig(u, gi) => {
                *u == gpu.uuid && mig.is_some_and(|m| m.gpu_instance == *gi)
            }
            Device::Index(i) => *i == gpu.index,
        }
    }

    /// The `gpu`, `uuid` and `gpu_instance` labels: from the GPU collector
    /// when it knows the device, else ("", the id, "").
    fn labels(&self, gpus: &[GpuIds]) -> (String, String, String) {
        let found = match self {
            Device::Gpu(u) => gpus.iter().find(|g| g.uuid == *u).map(|g| (g, None)),
            Device::Mig(u) => gpus.iter().find_map(|g| {
                g.migs
                    .iter()
                    .find(|m| m.uuid == *u)
                    .map(|m| (g, Some(m.gpu_instance)))
            }),
            Device::LegacyMig(u, gi) => gpus.iter().find(|g| g.uuid == *u).map(|g| (g, Some(*gi))),
            Device::Index(i) => gpus.iter().find(|g| g.index == *i).map(|g| (g, None)),
        };
        match found {
            Some((g, gi)) => (
                g.index.to_string(),
                g.uuid.clone(),
                gi.map(|i| i.to_string()).unwrap_or_default(),
            ),
            None => {
                let id = match self {
                    Device::Gpu(u) | Device::Mig(u) => u.clone(),
                    Device::LegacyMig(u, gi) => format!("MIG-{u}/{gi}"),
                    Device::Index(i) => i.to_string(),
                };
                (String::new(), id, String::new())
            }
        }
    }
}

/// A container holding a device.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// Resource name (`nvidia.com/gpu`, `nvidia.com/mig-3g.40gb`, ...).
    pub resource: String,
}

/// The kubelet's answer reduced to NVIDIA devices and who holds them, each
/// pair once (a container given two replicas of one GPU holds it once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodMap {
    /// (device, holder), sorted.
    pub entries: Vec<(Device, Holder)>,
}

impl PodMap {
    /// Keeps the `nvidia.com/*` devices of `pods`; other resources are not
    /// GPUs and are left out.
    pub fn from_pods(pods: &[proto::Pod]) -> PodMap {
        let mut set = BTreeSet::new();
        for pod in pods {
            for c in &pod.containers {
                for d in c
                    .devices
                    .iter()
                    .filter(|d| d.resource.starts_with("nvidia.com/"))
                {
                    for dev in d.ids.iter().filter_map(|id| Device::parse(id)) {
                        set.insert((
                            dev,
                            Holder {
                                namespace: pod.namespace.clone(),
                                pod: pod.name.clone(),
                                container: c.name.clone(),
                                resource: d.resource.clone(),
                            },
                        ));
                    }
                }
            }
        }
        PodMap {
            entries: set.into_iter().collect(),
        }
    }

    /// The (namespace, pod) holding `gpu` (or its instance `gpu_instance`),
    /// when exactly one pod does; `None` when none does or when several
    /// share it (replicas), as the answer cannot tell which one a process
    /// belongs to.
    pub fn pod_of(&self, gpu: &GpuIds, gpu_instance: Option<u32>) -> Option<(String, String)> {
        let mig = gpu_instance.and_then(|gi| gpu.migs.iter().find(|m| m.gpu_instance == gi));
        let map = self;
        let mut found: Option<(&str, &str)> = None;
        for (_, h) in map.entries.iter().filter(|(d, _)| d.holds(gpu, mig)) {
            let this = (h.namespace.as_str(), h.pod.as_str());
            match found {
                None => found = Some(this),
                Some(f) if f == this => {}
                Some(_) => return None,
            }
        }
        found.map(|(ns, pod)| (ns.to_owned(), pod.to_owned()))
    }

    /// Whether some entry places `gpu` (or its instance `mig`).
    fn places(&self, gpu: &GpuIds, mig: Option<&MigIds>) -> bool {
        self.entries.iter().any(|(d, _)| d.holds(gpu, mig))
    }
}

/// What the refresher knows about the kubelet.
#[derive(Default)]
struct Status {
    /// Whether the socket has ever been there (until then nothing is
    /// exported: this is probably not a Kubernetes node).
    seen: bool,
    /// Whether the last call succeeded.
    up: bool,
    /// Failed calls.
    errors: u64,
    /// The last success: when (monotonic and Unix time) and the size of
    /// the answer.
    last_success: Option<(Instant, f64, usize)>,
}

/// GPUs and MIG instances holding a process that `map` does not place.
fn unplaced(gpus: &[GpuIds], map: &PodMap) -> HashSet<String> {
    let mut out = HashSet::new();
    for g in gpus {
        if g.migs.is_empty() {
            if g.busy && !map.places(g, None) {
                out.insert(g.uuid.clone());
            }
        } else {
            for m in g.migs.iter().filter(|m| m.busy) {
                if !map.places(g, Some(m)) {
                    out.insert(m.uuid.clone());
                }
            }
        }
    }
    out
}

/// Longest the refresher rests between two looks at the GPUs.
const TICK: Duration = Duration::from_millis(200);
/// Margin of the refresher's heartbeat bound over one call's timeout.
const SILENCE_MARGIN: Duration = Duration::from_secs(10);

/// One run of the refresher: calls `List` when due, or early when a GPU
/// that the map does not place starts holding a process (once per such GPU,
/// so a process outside Kubernetes does not make it call every second).
/// It beats every [`TICK`] and around each call (bounded by the timeout);
/// what it keeps between calls starts afresh on each run, so a run after a
/// panic starts clean (the status and the last map stay).
fn refresh_loop(
    opts: &KubernetesOptions,
    gpus: &Topic<GpuSnapshot>,
    pods: &Topic<PodMap>,
    status: &Mutex<Status>,
    hb: &Heartbeat,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "kubernetes: cannot start the I/O runtime; pod attribution is off");
            return;
        }
    };
    let mut next = Instant::now();
    let mut last_call: Option<Instant> = None;
    // Unplaced GPUs already called about.
    let mut asked: HashSet<String> = HashSet::new();
    let mut logged_missing = false;
    let mut failing = false;
    while !hb.stopped() {
        hb.beat();
        let now = Instant::now();
        let gap_ok = last_call.map_or(true, |t| now.duration_since(t) >= MIN_GAP);
        let early = gap_ok && {
            let new = unplaced(&gpus.latest().gpus, &pods.latest());
            new.iter().any(|u| !asked.contains(u))
        };
        let due = now >= next && gap_ok;
        if !due && !early {
            if hb.sleep(TICK) {
                return;
            }
            continue;
        }
        if early {
            tracing::debug!(
                "kubernetes: a GPU holds a process no pod is known for; asking the kubelet early"
            );
        }
        last_call = Some(now);
        next = now + opts.refresh;
        let r = rt.block_on(grpc::list(&opts.socket, opts.timeout, MAX_MESSAGE));
        hb.beat();
        let took = now.elapsed();
        let mut st = status.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(listed) => {
                let map = PodMap::from_pods(&listed.pods);
                tracing::debug!(
                    ms = format!("{:.2}", took.as_secs_f64() * 1e3),
                    bytes = listed.bytes,
                    pods = listed.pods.len(),
                    gpu_devices = map.entries.len(),
                    "kubelet PodResources List"
                );
                if failing || !st.seen {
                    tracing::info!(socket = %opts.socket.display(), pods = listed.pods.len(), gpu_devices = map.entries.len(), "kubelet PodResources answers");
                }
                failing = false;
                st.seen = true;
                st.up = true;
                let unix = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                st.last_success = Some((Instant::now(), unix, listed.bytes));
                drop(st);
                asked = unplaced(&gpus.latest().gpus, &map);
                pods.publish(map);
            }
            Err(grpc::Error::Missing) => {
                st.up = false;
                if st.seen {
                    st.errors += 1;
                }
                if !logged_missing && !st.seen {
                    tracing::info!(socket = %opts.socket.display(), "no kubelet PodResources socket (not a Kubernetes node, or the kubelet has not started); checking again quietly");
                    logged_missing = true;
                } else if !failing && st.seen {
                    tracing::info!(socket = %opts.socket.display(), "the kubelet PodResources socket is gone (kubelet restarting?); keeping the last answer and checking again");
                }
                failing = st.seen;
                asked = unplaced(&gpus.latest().gpus, &pods.latest());
            }
            Err(e) => {
                st.seen = true;
                st.up = false;
                st.errors += 1;
                if !failing {
                    tracing::warn!(socket = %opts.socket.display(), error = %e, "kubelet PodResources call failed; keeping the last answer and trying again");
                } else {
                    tracing::debug!(error = %e, "kubelet PodResources call failed again");
                }
                failing = true;
                asked = unplaced(&gpus.latest().gpus, &pods.latest());
            }
        }
    }
}

/// The kubernetes collector.
pub struct Kubernetes {
    gpus: Topic<GpuSnapshot>,
    pods: Topic<PodMap>,
    status: Arc<Mutex<Status>>,
    workers: Workers,
    /// The refresher; dropping it stops it.
    _refresher: Worker,
}

/// Builds the collector and starts its refresher. Always ready: the
/// kubelet may start after the agent.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let status = Arc::new(Mutex::new(Status::default()));
    let (o, gpus, pods, st) = (
        ctx.options::<KubernetesOptions>().clone(),
        ctx.shared.gpus.clone(),
        ctx.shared.pods.clone(),
        status.clone(),
    );
    let silence = o
        .timeout
        .saturating_add(TICK)
        .saturating_add(SILENCE_MARGIN);
    let refresher = ctx.workers.spawn("refresher", silence, move |hb| {
        refresh_loop(&o, &gpus, &pods, &st, hb)
    })?;
    Ok(Built::Ready(Box::new(Kubernetes {
        gpus: ctx.shared.gpus.clone(),
        pods: ctx.shared.pods.clone(),
        status,
        workers: ctx.workers.clone(),
        _refresher: refresher,
    })))
}

impl Collector for Kubernetes {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        self.workers.check()?;
        let (seen, up, errors, last) = {
            let st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            (st.seen, st.up, st.errors, st.last_success)
        };
        if !seen {
            return Ok(());
        }
        out.add(&UP).add(&[], if up { 1.0 } else { 0.0 });
        out.add(&ERRORS).add(&[], errors as f64);
        let Some((at, unix, bytes)) = last else {
            return Ok(());
        };
        out.add(&LAST_SUCCESS).add(&[], unix);
        out.add(&AGE).add(&[], at.elapsed().as_secs_f64());
        out.add(&RESPONSE_BYTES).add(&[], bytes as f64);
        let snapshot = self.gpus.latest();
        let gpus = &snapshot.gpus;
        let map = self.pods.latest();
        let info = out.add(&POD_INFO);
        // In GPU order (a device the GPU collector does not know last);
        // two ids naming one device (uuid and index) give one series.
        let key = |s: &str| s.parse::<u32>().unwrap_or(u32::MAX);
        let rows: BTreeSet<_> = map
            .entries
            .iter()
            .map(|(dev, h)| {
                let (gpu, uuid, gi) = dev.labels(gpus);
                ((key(&gpu), key(&gi)), gpu, uuid, gi, h)
            })
            .collect();
        for (_, gpu, uuid, gi, h) in &rows {
            info.add(
                &[
                    ("gpu", gpu),
                    ("uuid", uuid),
                    ("gpu_instance", gi),
                    ("namespace", &h.namespace),
                    ("pod", &h.pod),
                    ("container", &h.container),
                    ("resource", &h.resource),
                ],
                1.0,
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::proto::{Container, Devices, Pod};
    use super::*;

    fn pod(ns: &str, name: &str, devices: &[(&str, &[&str])]) -> Pod {
        Pod {
            name: name.into(),
            namespace: ns.into(),
            containers: vec![Container {
                name: "main".into(),
                devices: devices
                    .iter()
                    .map(|(r, ids)| Devices {
                        resource: (*r).into(),
                        ids: ids.iter().map(|s| (*s).into()).collect(),
                    })
                    .collect(),
            }],
        }
    }

    fn gpus() -> Vec<GpuIds> {
        vec![
            GpuIds {
                index: 0,
                uuid: "GPU-aaaa".into(),
                busy: true,
                migs: vec![
                    MigIds {
                        gpu_instance: 2,
                        uuid: "MIG-m2".into(),
                        busy: true,
                    },
                    MigIds {
                        gpu_instance: 3,
                        uuid: "MIG-m3".into(),
                        busy: false,
                    },
                ],
                ..Default::default()
            },
            GpuIds {
                index: 1,
                uuid: "GPU-bbbb".into(),
                busy: true,
                migs: vec![],
                ..Default::default()
            },
        ]
    }

    #[test]
    fn device_ids() {
        assert_eq!(
            Device::parse("GPU-ab-12"),
            Some(Device::Gpu("GPU-ab-12".into()))
        );
        assert_eq!(
            Device::parse("GPU-ab-12::3"),
            Some(Device::Gpu("GPU-ab-12".into()))
        );
        assert_eq!(
            Device::parse("MIG-c0ffee"),
            Some(Device::Mig("MIG-c0ffee".into()))
        );
        assert_eq!(
            Device::parse("MIG-GPU-ab-12/7/0"),
            Some(Device::LegacyMig("GPU-ab-12".into(), 7))
        );
        assert_eq!(Device::parse("3"), Some(Device::Index(3)));
        for bad in ["", "GPU-", "MIG-GPU-x", "0000:3b:00.0", "mlx5_0", "12345"] {
            assert_eq!(Device::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn map_keeps_nvidia_devices_once() {
        let map = PodMap::from_pods(&[
            pod(
                "ml",
                "a",
                &[
                    ("nvidia.com/gpu", &["GPU-aaaa::0", "GPU-aaaa::1"]),
                    ("rdma/hca_shared_devices_a", &["GPU-looks-like-one"]),
                ],
            ),
            pod("ml", "b", &[("nvidia.com/mig-3g.40gb", &["MIG-m2"])]),
        ]);
        let ids: Vec<&Device> = map.entries.iter().map(|e| &e.0).collect();
        assert_eq!(
            ids,
            [
                &Device::Gpu("GPU-aaaa".into()),
                &Device::Mig("MIG-m2".into())
            ]
        );
    }

    #[test]
    fn pod_of_a_process() {
        let shared = Topic::<PodMap>::default();
        let g = gpus();
        shared.publish(PodMap::from_pods(&[
            pod("ml", "mig-user", &[("nvidia.com/mig-3g.40gb", &["MIG-m2"])]),
            pod("ml", "s1", &[("nvidia.com/gpu", &["GPU-bbbb::0"])]),
        ]));
        assert_eq!(
            shared.latest().pod_of(&g[0], Some(2)),
            Some(("ml".into(), "mig-user".into()))
        );
        assert_eq!(shared.latest().pod_of(&g[0], Some(3)), None);
        assert_eq!(shared.latest().pod_of(&g[0], None), None);
        assert_eq!(
            shared.latest().pod_of(&g[1], None),
            Some(("ml".into(), "s1".into()))
        );
        // A second pod shares GPU 1: which one a process belongs to is unknown.
        shared.publish(PodMap::from_pods(&[
            pod("ml", "s1", &[("nvidia.com/gpu", &["GPU-bbbb::0"])]),
            pod("ml", "s2", &[("nvidia.com/gpu", &["GPU-bbbb::1"])]),
        ]));
        assert_eq!(shared.latest().pod_of(&g[1], None), None);
    }

    #[test]
    fn unplaced_gpus_trigger_a_call() {
        let g = gpus();
        let empty = PodMap::default();
        let u = unplaced(&g, &empty);
        assert_eq!(u, ["MIG-m2".to_owned(), "GPU-bbbb".to_owned()].into());
        let map = PodMap::from_pods(&[pod("ml", "a", &[("nvidia.com/gpu", &["1"])])]);
        assert_eq!(unplaced(&g, &map), ["MIG-m2".to_owned()].into());
    }

    #[test]
    fn labels_from_the_gpu_collector() {
        let g = gpus();
        assert_eq!(
            Device::Mig("MIG-m3".into()).labels(&g),
            ("0".into(), "GPU-aaaa".into(), "3".into())
        );
        assert_eq!(
            Device::Index(1).labels(&g),
            ("1".into(), "GPU-bbbb".into(), String::new())
        );
        assert_eq!(
            Device::Gpu("GPU-zzzz".into()).labels(&g),
            (String::new(), "GPU-zzzz".into(), String::new())
        );
    }
}
