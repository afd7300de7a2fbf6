//! The few kubelet PodResources v1 messages the collector reads, decoded by
//! hand from the protobuf wire format.
//!
//! Field numbers are those of `k8s.io/kubelet/pkg/apis/podresources/v1/api.proto`:
//!
//! ```text
//! ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
//! PodResources       { string name = 1; string namespace = 2;
//!                      repeated ContainerResources containers = 3; ... }
//! ContainerResources { string name = 1; repeated ContainerDevices devices = 2; ... }
//! ContainerDevices   { string resource_name = 1; repeated string device_ids = 2;
//!                      TopologyInfo topology = 3; }
//! ```
//!
//! Every other field (cpu ids, memory, topology, dynamic resources, and
//! whatever later versions add) is skipped by its wire type, so a newer
//! kubelet decodes. Decoding is bounded: one pass over a message whose size
//! the caller has already capped, a fixed nesting depth of four, no
//! recursion, and every length checked against what is left.

use std::fmt;

use crate::protowire::{Reader, Value, WireError};

/// A pod and the devices its containers were given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// Pod name.
    pub name: String,
    /// Pod namespace.
    pub namespace: String,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// A container and its devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    /// Container name.
    pub name: String,
    /// Devices by resource.
    pub devices: Vec<Devices>,
}

/// The devices of one extended resource given to a container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// `nvidia.com/gpu`, `nvidia.com/mig-1g.10gb`, ...
    pub resource: String,
    /// The device plugin's ids (GPU uuids for NVIDIA's plugin).
    pub ids: Vec<String>,
}

/// A message that is not valid protobuf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid PodResources message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError(e.0)
    }
}

/// Calls `f` with every length-delimited field of `buf` (others are
/// skipped); a field expected to be a string or message but sent with
/// another wire type is an error.
fn fields<'a>(
    buf: &'a [u8],
    wanted: &[u64],
    mut f: impl FnMut(u64, &'a [u8]) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next()? {
        match value {
            Value::Bytes(b) => f(field, b)?,
            _ if wanted.contains(&field) => {
                return Err(DecodeError("wrong wire type for a known field"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes a `ListPodResourcesResponse`.
pub fn decode_list(buf: &[u8]) -> Result<Vec<Pod>, DecodeError> {
    let mut pods = Vec::new();
    fields(buf, &[1], |field, b| {
        if field == 1 {
            pods.push(decode_pod(b)?);
        }
        Ok(())
    })?;
    Ok(pods)
}

fn decode_pod(buf: &[u8]) -> Result<Pod, DecodeError> {
    let mut pod = Pod::default();
    fields(buf, &[1, 2, 3], |field, b| {
        match field {
            1 => pod.name = string(b),
            2 => pod.namespace = string(b),
            3 => pod.containers.push(decode_container(b)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(pod)
}

fn decode_container(buf: &[u8]) -> Result<Container, DecodeError> {
    let mut c = Container::default();
    fields(buf, &[1, 2], |field, b| {
        match field {
            1 => c.name = string(b),
            2 => c.devices.push(decode_devices(b)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(c)
}

fn decode_devices(buf: &[u8]) -> Result<Devices, DecodeError> {
    let mut d = Devices::default();
    fields(buf, &[1, 2, 3], |field, b| {
        match field {
            1 => d.resource = string(b),
            2 => d.ids.push(string(b)),
            _ => {}
        }
        Ok(())
    })?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal encoder for the tests (length-delimited fields only, plus
    /// a varint field to check skipping).
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn devices(resource: &str, ids: &[&str]) -> Vec<u8> {
        let mut m = Vec::new();
        bytes(1, resource.as_bytes(), &mut m);
        for id in ids {
            bytes(2, id.as_bytes(), &mut m);
        }
        // topology { nodes { ID: 1 } }
        let mut node = Vec::new();
        varint(1 << 3, &mut node);
        varint(1, &mut node);
        let mut topo = Vec::new();
        bytes(1, &node, &mut topo);
        bytes(3, &topo, &mut m);
        m
    }

    #[test]
    fn decodes_pods_containers_devices_and_skips_the_rest() {
        let mut c = Vec::new();
        bytes(1, b"trainer", &mut c);
        bytes(2, &devices("nvidia.com/gpu", &["GPU-a", "GPU-b"]), &mut c);
        // cpu_ids = 3 (packed int64), memory = 4: skipped.
        bytes(3, &[1, 2, 3], &mut c);
        let mut pod = Vec::new();
        bytes(1, b"job-0", &mut pod);
        bytes(2, b"ml", &mut pod);
        bytes(3, &c, &mut pod);
        // An unknown varint field from a newer kubelet.
        varint(9 << 3, &mut pod);
        varint(300, &mut pod);
        let mut msg = Vec::new();
        bytes(1, &pod, &mut msg);
        bytes(1, &[], &mut msg);
        let pods = decode_list(&msg).unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].name, "job-0");
        assert_eq!(pods[0].namespace, "ml");
        assert_eq!(pods[0].containers[0].name, "trainer");
        assert_eq!(
            pods[0].containers[0].devices,
            vec![Devices {
                resource: "nvidia.com/gpu".into(),
                ids: vec!["GPU-a".into(), "GPU-b".into()],
            }]
        );
        assert_eq!(pods[1], Pod::default());
        assert_eq!(decode_list(&[]).unwrap(), vec![]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        // Truncated length, a length past the end, wire type 3, field 0,
        // an endless varint, a known field with the wrong wire type.
        for bad in [
            &[0x0a][..],
            &[0x0a, 0x05, 0x01],
            &[0x0b],
            &[0x02, 0x00],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x08, 0x01],
        ] {
            assert!(decode_list(bad).is_err(), "{bad:?}");
        }
        // Nested garbage is found too.
        let mut msg = Vec::new();
        bytes(1, &[0x1a, 0x09, 0x00], &mut msg);
        assert!(decode_list(&msg).is_err());
    }
}
