//! Scenario files: what the simulated runtime serves.

use std::path::Path;

use serde::Deserialize;

use crate::wire::{self, Attr, Measure};

/// How the server behaves.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Behaviour {
    /// Answers from the scenario.
    #[default]
    Serve,
    /// Accepts connections and calls, never answers.
    Hang,
    /// Answers every call with malformed protobuf.
    Malformed,
    /// Listens on nothing (no workload serves the metrics).
    Absent,
}

/// How `device_ordinal` is encoded in key-value attributes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Ordinal {
    /// A string of digits (newer libtpu).
    #[default]
    String,
    /// An int (older libtpu).
    Int,
}

/// A distribution with exponential buckets: `counts` has the underflow
/// bucket first and the overflow bucket last.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    pub scale: f64,
    pub growth: f64,
    pub mean: f64,
    pub counts: Vec<u64>,
}

/// A transfer or collective latency distribution for one buffer size.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// `collective`, `dcn`, `host_to_device` or `device_to_host`.
    pub kind: String,
    pub buffer_size: String,
    #[serde(flatten)]
    pub dist: Dist,
}

/// A scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What it shows, for people.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub behaviour: Behaviour,
    #[serde(default)]
    pub device_ordinal: Ordinal,
    /// TensorCore devices (libtpu's devices).
    #[serde(default)]
    pub devices: u32,
    /// Devices per chip (2 for v2, v3, 7x).
    #[serde(default = "one")]
    pub devices_per_chip: u32,
    /// Per device, cycled when shorter than `devices`.
    #[serde(default)]
    pub hbm_total_bytes: Vec<u64>,
    #[serde(default)]
    pub hbm_used_bytes: Vec<u64>,
    /// Per chip, percent, cycled.
    #[serde(default)]
    pub duty_cycle_percent: Vec<f64>,
    #[serde(default)]
    pub tensorcore_utilization_percent: Vec<f64>,
    #[serde(default)]
    pub hbm_bandwidth_utilization_percent: Vec<f64>,
    /// Per device, cycled.
    #[serde(default)]
    pub hlo_queue_size: Vec<u64>,
    pub uptime_seconds: Option<f64>,
    /// `megascale.error.detected.gauge` and `slice.error.detected.gauge`
    /// (0 or 1), when served.
    pub megascale_error: Option<i64>,
    pub slice_error: Option<i64>,
    /// Every device's HLO execution time, microseconds.
    pub hlo_execution_us: Option<Dist>,
    /// Latencies, microseconds.
    #[serde(default)]
    pub latency: Vec<Latency>,
}

fn one() -> u32 {
    1
}

fn cycled<T: Copy>(v: &[T], i: usize) -> Option<T> {
    (!v.is_empty()).then(|| v[i % v.len()])
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let s: Scenario = toml::from_str(&text).map_err(|e| e.to_string())?;
        if s.devices_per_chip == 0 {
            return Err("devices_per_chip must be at least 1".into());
        }
        Ok(s)
    }

    fn chips(&self) -> u32 {
        self.devices / self.devices_per_chip
    }

    /// The lone-int attribute of memory and duty cycle points.
    fn device_id(i: u32) -> Vec<u8> {
        wire::attribute("device-id", &Attr::Int(i64::from(i)))
    }

    /// The key-value attribute of HLO points.
    fn ordinal(&self, i: u32) -> Vec<u8> {
        let s = i.to_string();
        let ord = match self.device_ordinal {
            Ordinal::String => Attr::Str(&s),
            Ordinal::Int => Attr::Int(i64::from(i)),
        };
        wire::kvlist(&[
            ("device_ordinal", ord),
            ("core_type", Attr::Str("TPU_CORE_TYPE_TENSOR_CORE")),
        ])
    }

    fn per_device_int(&self, v: &[u64]) -> Option<Vec<Vec<u8>>> {
        (!v.is_empty()).then(|| {
            (0..self.devices)
                .map(|i| {
                    let x = cycled(v, i as usize).unwrap_or(0);
                    wire::metric(&Self::device_id(i), &Measure::Int(x as i64))
                })
                .collect()
        })
    }

    fn per_chip_pct(&self, v: &[f64]) -> Option<Vec<Vec<u8>>> {
        (!v.is_empty()).then(|| {
            (0..self.chips())
                .map(|i| {
                    let x = cycled(v, i as usize).unwrap_or(0.0);
                    wire::metric(&Self::device_id(i), &Measure::Double(x))
                })
                .collect()
        })
    }

    /// The `MetricResponse` for `name`, or `None` when not served.
    pub fn response(&self, name: &str) -> Option<Vec<u8>> {
        let metrics: Vec<Vec<u8>> = match name {
            "tpu.runtime.hbm.memory.total.bytes" => self.per_device_int(&self.hbm_total_bytes)?,
            "tpu.runtime.hbm.memory.usage.bytes" => self.per_device_int(&self.hbm_used_bytes)?,
            "tpu.runtime.tensorcore.dutycycle.percent" => {
                self.per_chip_pct(&self.duty_cycle_percent)?
            }
            "tpu.runtime.tensorcore.utilization.percent" => {
                self.per_chip_pct(&self.tensorcore_utilization_percent)?
            }
            "tpu.runtime.hbm.bandwidth.utilization.percent" => {
                self.per_chip_pct(&self.hbm_bandwidth_utilization_percent)?
            }
            "tpu.runtime.uptime.seconds.gauge" => {
                let up = self.uptime_seconds?;
                vec![wire::metric(
                    &wire::kvlist(&[("hostname", Attr::Str("t1v-sim-w-0"))]),
                    &Measure::Double(up),
                )]
            }
            "megascale.error.detected.gauge" | "slice.error.detected.gauge" => {
                let v = if name.starts_with("megascale") {
                    self.megascale_error?
                } else {
                    self.slice_error?
                };
                vec![wire::metric(
                    &wire::kvlist(&[("hostname", Attr::Str("t1v-sim-w-0"))]),
                    &Measure::Int(v),
                )]
            }
            "hlo.queue.size.gauge" => {
                if self.hlo_queue_size.is_empty() {
                    return None;
                }
                (0..self.devices)
                    .map(|i| {
                        let x = cycled(&self.hlo_queue_size, i as usize).unwrap_or(0);
                        wire::metric(&self.ordinal(i), &Measure::Int(x as i64))
                    })
                    .collect()
            }
            "hlo.execution.timing.distribution.microseconds" => {
                let d = self.hlo_execution_us.as_ref()?;
                (0..self.devices)
                    .map(|i| wire::metric(&self.ordinal(i), &Measure::Distribution(d)))
                    .collect()
            }
            other => {
                let kind = match other {
                    "megascale.collective_end_to_end_latencies.microsecond.cumulative.distribution" => "collective",
                    "megascale.dcn_transfer_latencies.microsecond.cumulative.distribution" => "dcn",
                    "megascale.host_to_device_transfer_latencies.microsecond.cumulative.distribution" => "host_to_device",
                    "megascale.device_to_host_transfer_latencies.microsecond.cumulative.distribution" => "device_to_host",
                    _ => return None,
                };
                let l: Vec<Vec<u8>> = self
                    .latency
                    .iter()
                    .filter(|l| l.kind == kind)
                    .map(|l| {
                        wire::metric(
                            &wire::kvlist(&[
                                ("buffer_size", Attr::Str(&l.buffer_size)),
                                ("type", Attr::Str("grpc")),
                            ]),
                            &Measure::Distribution(&l.dist),
                        )
                    })
                    .collect();
                if l.is_empty() {
                    return None;
                }
                l
            }
        };
        Some(wire::response(name, &metrics))
    }
}
