//! `accel_uname_info`, `accel_os_info`, `accel_os_version` and
//! `accel_dmi_info`: what the machine is, as node_exporter's `uname`, `os`
//! and `dmi` collectors name it. uname(2) gives the kernel; os-release
//! (`<rootfs>/etc/os-release`, else `<rootfs>/usr/lib/os-release`) the
//! distribution; `<sysfs>/class/dmi/id/` the hardware (vendor, product,
//! BIOS), each file a label when it can be read: the serials and the UUID
//! are root-only on most kernels, and a label whose file cannot be read is
//! left out, as node_exporter leaves it out.
//!
//! On a training fleet these are the join keys of "which nodes run the old
//! kernel / BIOS / image": a node that misbehaves is often the one whose
//! identity differs from its peers'.

use std::path::{Path, PathBuf};

use crate::options::options;
use crate::util::{io_error, read_attr};
use crate::{BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, Sample, Spec};

/// The identity collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "identity",
    help: "kernel (uname), distribution (os-release) and hardware (DMI) identity",
    default_enabled: true,
    default_interval: crate::HOST_INTERVAL,
    options: options::<IdentityOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_uname_", "accel_os_", "accel_dmi_"],
    outside: &[],
    build,
};

/// Settings of the identity collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct IdentityOptions {
    /// The root filesystem os-release is read under.
    #[arg(
        id = "collector.identity.rootfs",
        long = "collector.identity.rootfs",
        value_name = "PATH",
        help = "Root of the filesystem whose etc/os-release (else usr/lib/os-release) names the distribution [default: --path.rootfs].",
        value_parser = crate::options::parse_path
    )]
    pub rootfs: Option<PathBuf>,
}

/// `accel_uname_info`.
pub const UNAME: FamilyDef = FamilyDef::gauge(
    "accel_uname_info",
    "Labeled system information as provided by the uname system call.",
)
.labels(&[
    "sysname",
    "release",
    "version",
    "machine",
    "nodename",
    "domainname",
])
.doc("always 1; the kernel's name, release, build, architecture, host and NIS domain names")
.source("`uname(2)`")
.equivalent("`node_uname_info`");
/// `accel_os_info`.
pub const OS_INFO: FamilyDef = FamilyDef::gauge(
    "accel_os_info",
    "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, image_version, name, pretty_name, variant, variant_id, version, version_codename, version_id.",
)
.labels(&OS_LABELS)
.doc("always 1; the os-release fields (a field not in the file is an empty label)")
.source("`/etc/os-release`, else `/usr/lib/os-release` (under `--collector.identity.rootfs`, default `--path.rootfs`)")
.equivalent("`node_os_info`");
/// `accel_os_version`.
pub const OS_VERSION: FamilyDef = FamilyDef::gauge(
    "accel_os_version",
    "Metric containing the major.minor part of the OS version.",
)
.labels(&["id", "id_like", "name"])
.doc("the leading `major.minor` of `VERSION_ID` as a number; left out when there is none")
.source("os-release `VERSION_ID`")
.equivalent("`node_os_version`");
/// `accel_dmi_info`.
pub const DMI_INFO: FamilyDef = FamilyDef::gauge(
    "accel_dmi_info",
    "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, chassis_serial, chassis_vendor, chassis_version, product_family, product_name, product_serial, product_sku, product_uuid, product_version, system_vendor if provided by DMI.",
)
.labels(&DMI_LABELS)
.doc("always 1; one label per readable DMI file (unreadable ones, such as the root-only serials, are left out); absent without DMI")
.source("`/sys/class/dmi/id/*`")
.equivalent("`node_dmi_info`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[UNAME, OS_INFO, OS_VERSION, DMI_INFO];

/// `accel_os_info`'s labels and the os-release keys they come from.
const OS_KEYS: [(&str, &str); 12] = [
    ("build_id", "BUILD_ID"),
    ("id", "ID"),
    ("id_like", "ID_LIKE"),
    ("image_id", "IMAGE_ID"),
    ("image_version", "IMAGE_VERSION"),
    ("name", "NAME"),
    ("pretty_name", "PRETTY_NAME"),
    ("variant", "VARIANT"),
    ("variant_id", "VARIANT_ID"),
    ("version", "VERSION"),
    ("version_codename", "VERSION_CODENAME"),
    ("version_id", "VERSION_ID"),
];
const OS_LABELS: [&str; 12] = {
    let mut out = [""; 12];
    let mut i = 0;
    while i < 12 {
        out[i] = OS_KEYS[i].0;
        i += 1;
    }
    out
};

/// `accel_dmi_info`'s labels and the files under class/dmi/id they come
/// from.
const DMI_FILES: [(&str, &str); 20] = [
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("system_vendor", "sys_vendor"),
];
const DMI_LABELS: [&str; 20] = {
    let mut out = [""; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = DMI_FILES[i].0;
        i += 1;
    }
    out
};

/// The identity collector.
pub struct Identity {
    os_release: [PathBuf; 2],
    dmi: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let root = ctx
        .options::<IdentityOptions>()
        .rootfs
        .as_ref()
        .unwrap_or(&ctx.paths.rootfs);
    Ok(Built::Ready(Box::new(Identity {
        os_release: [root.join("etc/os-release"), root.join("usr/lib/os-release")],
        dmi: ctx.paths.sysfs.join("class/dmi/id"),
    })))
}

/// The key-value pairs of an os-release file (os-release(5): shell-style
/// `KEY=value`, the value bare, in double quotes with `\` escaping `"`,
/// `\`, `$` and `` ` ``, or in single quotes). Comments and blank lines are
/// skipped; any other line is an error.
pub fn parse_os_release(text: &str) -> Result<Vec<(String, String)>, CollectError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let bad = |why: &str| CollectError::parse(format!("os-release line {}: {why}", n + 1));
        let (key, raw) = line.split_once('=').ok_or_else(|| bad("no '='"))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(bad("bad key"));
        }
        let value = if let Some(rest) = raw.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = rest.chars();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated \"")),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\' | '$' | '`')) => v.push(c),
                        Some(c) => {
                            v.push('\\');
                            v.push(c);
                        }
                        None => return Err(bad("unterminated \"")),
                    },
                    Some(c) => v.push(c),
                }
            }
            if !chars.as_str().trim().is_empty() {
                return Err(bad("text after the closing quote"));
            }
            v
        } else if let Some(rest) = raw.strip_prefix('\'') {
            let (v, after) = rest.split_once('\'').ok_or_else(|| bad("unterminated '"))?;
            if !after.trim().is_empty() {
                return Err(bad("text after the closing quote"));
            }
            v.to_owned()
        } else {
            raw.trim().to_owned()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// node_exporter's `major.minor` of VERSION_ID: the leading digits, a dot
/// and the digits after it (`^[0-9]+\.?[0-9]*`), or `None`.
pub fn major_minor(version_id: &str) -> Option<f64> {
    let int = version_id.bytes().take_while(u8::is_ascii_digit).count();
    if int == 0 {
        return None;
    }
    let mut end = int;
    if version_id.as_bytes().get(int) == Some(&b'.') {
        end = int
            + 1
            + version_id[int + 1..]
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
    }
    version_id[..end].trim_end_matches('.').parse().ok()
}

/// uname(2)'s six strings, in [`UNAME`]'s label order.
fn uname() -> Result<[String; 6], CollectError> {
    // SAFETY: utsname is arrays of c_char (all-zero is valid); uname fills
    // each with a NUL-terminated string within its length, and the pointer
    // is valid and exclusive for the call.
    let u = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            let err = std::io::Error::last_os_error();
            return Err(CollectError::new(ErrorKind::Io, format!("uname: {err}")));
        }
        u
    };
    let s = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    Ok([
        s(&u.sysname),
        s(&u.release),
        s(&u.version),
        s(&u.machine),
        s(&u.nodename),
        s(&u.domainname),
    ])
}

/// The first os-release file that exists, or `None` when neither does.
fn read_os_release(paths: &[PathBuf]) -> Result<Option<String>, CollectError> {
    for p in paths {
        match std::fs::read(p) {
            Ok(b) => return Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_error(p, &e)),
        }
    }
    Ok(None)
}

/// The DMI labels whose files can be read, in [`DMI_FILES`] order; `None`
/// when `dir` does not exist (no DMI: a VM without SMBIOS, an ARM board).
fn read_dmi(dir: &Path, out: &mut Sample) -> Option<Vec<(&'static str, String)>> {
    if !dir.is_dir() {
        return None;
    }
    let mut labels = Vec::new();
    for (label, file) in DMI_FILES {
        match read_attr(&dir.join(file)) {
            Ok(Some(v)) => labels.push((label, v)),
            Ok(None) => {}
            // Root-only files (serials, UUID): left out, as node_exporter.
            Err(e) if e.kind == ErrorKind::Permission => {}
            Err(e) => out.error(e),
        }
    }
    Some(labels)
}

impl Collector for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let u = uname()?;
        let labels: Vec<(&'static str, &str)> = UNAME
            .labels
            .iter()
            .zip(&u)
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        out.add(&UNAME).add(&labels, 1.0);

        let os = read_os_release(&self.os_release)
            .and_then(|t| t.map(|t| parse_os_release(&t)).transpose());
        match os {
            Ok(Some(pairs)) => {
                let get = |key: &str| {
                    pairs
                        .iter()
                        .rev()
                        .find(|(k, _)| k == key)
                        .map_or("", |(_, v)| v.as_str())
                };
                let labels: Vec<(&'static str, &str)> =
                    OS_KEYS.iter().map(|(l, k)| (*l, get(k))).collect();
                out.add(&OS_INFO).add(&labels, 1.0);
                if let Some(v) = major_minor(get("VERSION_ID")).filter(|v| *v > 0.0) {
                    out.add(&OS_VERSION).add(
                        &[
                            ("id", get("ID")),
                            ("id_like", get("ID_LIKE")),
                            ("name", get("NAME")),
                        ],
                        v,
                    );
                }
            }
            Ok(None) => {}
            Err(e) => out.error(e),
        }

        if let Some(labels) = read_dmi(&self.dmi, out) {
            let labels: Vec<(&'static str, &str)> =
                labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            out.add(&DMI_INFO).add(&labels, 1.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_os_release() {
        let text = "# comment\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nID=ubuntu\nID_LIKE=debian\nPRETTY_NAME='Ubuntu 22.04.4 LTS'\nexport VARIANT=\"a \\\"b\\\" \\$c \\\\ \\x\"\n\n";
        assert_eq!(
            parse_os_release(text).unwrap(),
            [
                ("NAME".into(), "Ubuntu".into()),
                ("VERSION_ID".into(), "22.04".into()),
                ("ID".into(), "ubuntu".into()),
                ("ID_LIKE".into(), "debian".into()),
                ("PRETTY_NAME".into(), "Ubuntu 22.04.4 LTS".into()),
                ("VARIANT".into(), "a \"b\" $c \\ \\x".into()),
            ]
        );
        for bad in [
            "NAME",
            "=x",
            "NAME=\"x",
            "NAME='x",
            "NAME=\"x\" y",
            "NA ME=x",
        ] {
            assert!(parse_os_release(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn major_minor_as_node_exporter() {
        for (id, want) in [
            ("22.04", Some(22.04)),
            ("12", Some(12.0)),
            ("8.10.2", Some(8.1)),
            ("7.", Some(7.0)),
            ("2023.09-rc", Some(2023.09)),
            ("rolling", None),
            ("", None),
            (".5", None),
        ] {
            assert_eq!(major_minor(id), want, "{id:?}");
        }
    }

    #[test]
    fn reads_the_kernel_and_the_fixtures() {
        let u = uname().unwrap();
        assert_eq!(u[0], "Linux");
        assert!(!u[2].is_empty());
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
        let mut s = Sample::new();
        let dmi = read_dmi(&fx.join("sys/class/dmi/id"), &mut s).unwrap();
        assert!(s.errors().is_empty());
        assert!(
            dmi.contains(&("system_vendor", "Supermicro".into())),
            "{dmi:?}"
        );
        assert!(
            !dmi.iter().any(|(k, _)| *k == "product_serial"),
            "no file, no label"
        );
        assert!(read_dmi(&fx.join("nothing"), &mut s).is_none());
        let os = read_os_release(&[fx.join("etc/none"), fx.join("etc/os-release")])
            .unwrap()
            .unwrap();
        assert!(parse_os_release(&os).is_ok());
        assert_eq!(read_os_release(&[fx.join("etc/none")]).unwrap(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn parsers_never_panic(s in "\\PC{0,120}") {
            let _ = parse_os_release(&s);
            if let Some(v) = major_minor(&s) {
                prop_assert!(v.is_finite() && v >= 0.0);
            }
        }

        #[test]
        fn os_release_like_input(
            lines in proptest::collection::vec(
                ("[A-Z_]{1,8}", "[\"']?[a-zA-Z0-9 .\\\\\"$'-]{0,12}[\"']?"),
                0..8,
            )
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            if let Ok(pairs) = parse_os_release(&text) {
                prop_assert_eq!(pairs.len(), lines.len());
            }
        }
    }
}
