//! Who a GPU is: `accel_gpu_info` (uuid, name, PCI bus id, serial, VBIOS,
//! driver and CUDA versions), read once per GPU and NVML session, since
//! none of it changes while the driver is loaded; and `accel_gpu_up`.

use nvml_wrapper::{Device, Nvml};

use super::sample::GpuSample;
use crate::FamilyDef;

pub const INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_info",
    "Identity of each GPU; always 1. Join on gpu and uuid.",
)
.labels(&["gpu", "uuid", "name", "pci_bus_id", "serial", "vbios_version", "driver_version", "cuda_driver_version", "vendor"])
.doc("always 1. Read once per GPU and NVML session. A value NVML cannot give is `\"\"`, except the UUID: a GPU whose UUID cannot be read is handled as lost. `cuda_driver_version` is `major.minor` (`12.4`), `pci_bus_id` NVML's form (`00000000:18:00.0`). `vendor` is `nvidia` or `amd`; on AMD (docs/amd.md) `uuid` is `unique_id`, `name` `product_name`, `serial` `serial_number`, `vbios_version` `vbios_version`, `driver_version` the amdgpu module's version (`\"\"` for the in-tree driver), `cuda_driver_version` `\"\"`")
.source("`nvmlDeviceGetUUID`, `nvmlDeviceGetName`, `nvmlDeviceGetPciInfo_v3` (`busId`), `nvmlDeviceGetSerial`, `nvmlDeviceGetVbiosVersion`, `nvmlSystemGetDriverVersion`, `nvmlSystemGetCudaDriverVersion_v2`")
.equivalent("labels on every dcgm-exporter series (`modelName`, `UUID`, `pci_bus_id`, `DCGM_FI_DRIVER_VERSION`); fields `DCGM_FI_DEV_NAME`, `DCGM_FI_DEV_UUID`, `DCGM_FI_DEV_PCI_BUSID`, `DCGM_FI_DEV_SERIAL`, `DCGM_FI_DEV_VBIOS_VERSION`, `DCGM_FI_DRIVER_VERSION`, `DCGM_FI_CUDA_DRIVER_VERSION`");

pub const UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_up",
    "1 when the GPU answered this sample, 0 when it is lost.",
)
.labels(&["gpu", "uuid"])
.doc("1 when the GPU answered this sample, 0 while it is lost")
.source("`nvmlDeviceGetHandleByIndex_v2` and every call of the sample (`NVML_ERROR_GPU_IS_LOST`)");

/// Reads the labels of `accel_gpu_info` (`gpu` and `uuid` first); `None`
/// when the UUID cannot be read or the GPU was lost meanwhile.
pub(super) fn identity(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    nvml: &Nvml,
) -> Option<Vec<(&'static str, String)>> {
    let uuid = g.get("nvmlDeviceGetUUID", dev.uuid())?;
    let mut info = vec![("gpu", g.index.to_string()), ("uuid", uuid)];
    let text = |g: &mut GpuSample<'_>, what, r| g.get(what, r).unwrap_or_default();
    info.push(("name", text(g, "nvmlDeviceGetName", dev.name())));
    let bus = g
        .get("nvmlDeviceGetPciInfo", dev.pci_info())
        .map(|p| p.bus_id)
        .unwrap_or_default();
    info.push(("pci_bus_id", bus));
    info.push(("serial", text(g, "nvmlDeviceGetSerial", dev.serial())));
    info.push((
        "vbios_version",
        text(g, "nvmlDeviceGetVbiosVersion", dev.vbios_version()),
    ));
    info.push((
        "driver_version",
        text(g, "nvmlSystemGetDriverVersion", nvml.sys_driver_version()),
    ));
    let cuda = g
        .get(
            "nvmlSystemGetCudaDriverVersion",
            nvml.sys_cuda_driver_version(),
        )
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
        .unwrap_or_default();
    info.push(("cuda_driver_version", cuda));
    info.push(("vendor", "nvidia".to_owned()));
    if g.lost {
        return None;
    }
    Some(info)
}
