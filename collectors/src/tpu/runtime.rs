//! The libtpu runtime metric service, asked on the collector's background
//! thread: every port in turn is dialled on localhost, and each metric the
//! collector reads is asked with `GetRuntimeMetric` on one HTTP/2
//! connection, concurrently, the whole port under one deadline. A port with
//! nothing listening is a host without a workload (normal); a port that
//! hangs or answers garbage is counted by kind and its data withheld until
//! it answers well again. Ports are asked concurrently, so one that hangs
//! does not delay the others.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::grpc::{self, Channel};
use crate::workers::Heartbeat;

use super::proto::{self, TpuMetric};

/// The method called.
const GET_METRIC: &str =
    "http://localhost/tpu.monitoring.runtime.RuntimeMetricService/GetRuntimeMetric";

/// Largest answer accepted per metric, bytes.
pub const MAX_MESSAGE: usize = 4 << 20;

/// The libtpu metrics read.
pub mod names {
    /// HBM used, per device, bytes.
    pub const HBM_USAGE: &str = "tpu.runtime.hbm.memory.usage.bytes";
    /// HBM total, per device, bytes.
    pub const HBM_TOTAL: &str = "tpu.runtime.hbm.memory.total.bytes";
    /// Duty cycle, per chip, percent.
    pub const DUTY_CYCLE: &str = "tpu.runtime.tensorcore.dutycycle.percent";
    /// TensorCore utilisation, per chip, percent (when served).
    pub const TENSORCORE_UTIL: &str = "tpu.runtime.tensorcore.utilization.percent";
    /// HBM bandwidth utilisation, per chip, percent (when served).
    pub const HBM_BW_UTIL: &str = "tpu.runtime.hbm.bandwidth.utilization.percent";
    /// Runtime uptime, seconds.
    pub const UPTIME: &str = "tpu.runtime.uptime.seconds.gauge";
    /// Programs queued, per device.
    pub const HLO_QUEUE: &str = "hlo.queue.size.gauge";
    /// HLO execution time distribution, per device, microseconds.
    pub const HLO_EXEC: &str = "hlo.execution.timing.distribution.microseconds";
    /// Collective end-to-end latency, microseconds.
    pub const COLLECTIVE: &str =
        "megascale.collective_end_to_end_latencies.microsecond.cumulative.distribution";
    /// DCN transfer latency, microseconds.
    pub const DCN: &str = "megascale.dcn_transfer_latencies.microsecond.cumulative.distribution";
    /// Host-to-device transfer latency, microseconds.
    pub const H2D: &str =
        "megascale.host_to_device_transfer_latencies.microsecond.cumulative.distribution";
    /// Device-to-host transfer latency, microseconds.
    pub const D2H: &str =
        "megascale.device_to_host_transfer_latencies.microsecond.cumulative.distribution";

    /// Multislice (megascale) error detected, 0 or 1.
    pub const MEGASCALE_ERROR: &str = "megascale.error.detected.gauge";
    /// Slice error detected, 0 or 1.
    pub const SLICE_ERROR: &str = "slice.error.detected.gauge";

    /// Every one, in the order asked.
    pub const ALL: [&str; 14] = [
        HBM_USAGE,
        HBM_TOTAL,
        DUTY_CYCLE,
        TENSORCORE_UTIL,
        HBM_BW_UTIL,
        UPTIME,
        HLO_QUEUE,
        HLO_EXEC,
        COLLECTIVE,
        DCN,
        H2D,
        D2H,
        MEGASCALE_ERROR,
        SLICE_ERROR,
    ];
}

/// Why a port's poll failed: the `kind` label of
/// `accel_tpu_runtime_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// No complete answer within the deadline.
    Timeout,
    /// Connecting (other than refused) or HTTP/2 failed.
    Transport,
    /// A gRPC status other than OK, NOT_FOUND or UNIMPLEMENTED.
    Status,
    /// Not a gRPC message, or not valid protobuf, or too large.
    Invalid,
}

impl Failure {
    /// Every kind, in label order.
    pub const ALL: [Failure; 4] = [
        Failure::Timeout,
        Failure::Transport,
        Failure::Status,
        Failure::Invalid,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Transport => "transport",
            Failure::Status => "status",
            Failure::Invalid => "invalid",
        }
    }
}

/// What one poll of a port gave.
#[derive(Clone, Debug, PartialEq)]
pub enum Poll {
    /// Nothing listens: no workload serves metrics on it.
    Absent,
    /// The metrics it serves (those it does not know are left out).
    Up(Vec<TpuMetric>),
    /// It failed.
    Failed(Failure, String),
}

/// What the collector knows of one port.
#[derive(Clone, Debug, Default)]
pub struct PortState {
    /// The last good answer (None while absent or failing).
    pub metrics: Option<Arc<Vec<TpuMetric>>>,
    /// Failed polls, by kind.
    pub errors: [u64; 4],
    /// Whether the last poll failed (logged once per episode).
    pub failing: bool,
}

/// The latest state of every port, shared between the poller and `sample`.
pub type States = Arc<Mutex<BTreeMap<u16, PortState>>>;

/// Asks one port for every metric in [`names::ALL`].
pub async fn poll(addr: SocketAddr, timeout: Duration) -> Poll {
    match tokio::time::timeout(timeout, poll_inner(addr)).await {
        Ok(p) => p,
        Err(_) => Poll::Failed(Failure::Timeout, format!("no answer within {timeout:?}")),
    }
}

async fn poll_inner(addr: SocketAddr) -> Poll {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Poll::Absent,
        Err(e) => return Poll::Failed(Failure::Transport, format!("connect {addr}: {e}")),
    };
    let _ = stream.set_nodelay(true);
    let channel = match Channel::handshake(stream).await {
        Ok(c) => c,
        Err(e) => return Poll::Failed(Failure::Transport, e.to_string()),
    };
    let mut set = tokio::task::JoinSet::new();
    for (i, name) in names::ALL.iter().enumerate() {
        let ch = channel.clone();
        set.spawn(async move {
            let r = ch
                .unary(GET_METRIC, &proto::encode_request(name), MAX_MESSAGE)
                .await;
            (i, name, r)
        });
    }
    let mut got: Vec<(usize, TpuMetric)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        let Ok((i, name, r)) = joined else {
            return Poll::Failed(Failure::Transport, "a call's task failed".into());
        };
        match r {
            Ok(msg) => match proto::decode_response(&msg) {
                Ok(mut m) => {
                    if m.name.is_empty() {
                        m.name = (*name).to_owned();
                    }
                    if m.name == *name {
                        got.push((i, m));
                    }
                }
                Err(e) => return Poll::Failed(Failure::Invalid, format!("{name}: {e}")),
            },
            // A metric this libtpu does not serve.
            Err(grpc::Error::Status(code, _))
                if code == grpc::NOT_FOUND || code == grpc::UNIMPLEMENTED => {}
            Err(e @ grpc::Error::Status(..)) => {
                return Poll::Failed(Failure::Status, format!("{name}: {e}"))
            }
            Err(e @ grpc::Error::Transport(_)) => {
                return Poll::Failed(Failure::Transport, format!("{name}: {e}"))
            }
            Err(e) => return Poll::Failed(Failure::Invalid, format!("{name}: {e}")),
        }
    }
    got.sort_by_key(|(i, _)| *i);
    Poll::Up(got.into_iter().map(|(_, m)| m).collect())
}

/// One run of the poller: every `interval`, asks every port concurrently
/// and records what each gave in `states`. Beats before and after each
/// round, which the deadline bounds.
pub fn poll_loop(
    host: IpAddr,
    ports: &[u16],
    interval: Duration,
    timeout: Duration,
    states: &States,
    hb: &Heartbeat,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "tpu: cannot start the I/O runtime; runtime metrics are off");
            return;
        }
    };
    while !hb.stopped() {
        hb.beat();
        let started = Instant::now();
        let results: Vec<(u16, Poll)> = rt.block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for &port in ports {
                set.spawn(async move { (port, poll(SocketAddr::new(host, port), timeout).await) });
            }
            let mut out = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok(r) = r {
                    out.push(r);
                }
            }
            out
        });
        hb.beat();
        {
            let mut st = states.lock().unwrap_or_else(|e| e.into_inner());
            for (port, p) in results {
                let s = st.entry(port).or_default();
                match p {
                    Poll::Absent => {
                        s.metrics = None;
                        s.failing = false;
                    }
                    Poll::Up(m) => {
                        if s.failing {
                            tracing::info!(port, "tpu: the runtime metric service answers again");
                        }
                        s.metrics = Some(Arc::new(m));
                        s.failing = false;
                    }
                    Poll::Failed(kind, msg) => {
                        if !s.failing {
                            tracing::warn!(port, kind = kind.as_str(), error = %msg, "tpu: runtime metric service failed; its data is withheld");
                        }
                        s.metrics = None;
                        s.failing = true;
                        s.errors[kind as usize] += 1;
                    }
                }
            }
        }
        let rest = interval.saturating_sub(started.elapsed());
        if hb.sleep(rest) {
            return;
        }
    }
}
