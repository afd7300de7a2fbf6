//! `accel_edac_*`: host memory ECC error counts per memory controller and
//! chip-select row, from `<sysfs>/devices/system/edac/mc/mc<N>/`, named as
//! node_exporter's `edac` collector names them. Errors the driver cannot
//! place on a row (`ce_noinfo_count`, `ue_noinfo_count`) are the
//! `csrow="unknown"` series, as node_exporter has them.
//!
//! On a training node, correctable errors that keep rising point at a DIMM
//! to replace before it turns uncorrectable, which panics the host or kills
//! the job mid-step. No EDAC driver (`mc` absent): absent.

use std::path::{Path, PathBuf};

use crate::options::{options, NoOptions};
use crate::util::{io_error, parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The edac collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "edac",
    help: "host memory ECC errors per memory controller and csrow from /sys/devices/system/edac",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_edac_"],
    outside: &[],
    build,
};

/// `accel_edac_correctable_errors_total`.
pub const CE: FamilyDef = FamilyDef::counter(
    "accel_edac_correctable_errors_total",
    "Total correctable memory errors.",
)
.labels(&["controller"])
.doc("corrected ECC errors of the memory controller since boot")
.source("`/sys/devices/system/edac/mc/mc<controller>/ce_count`")
.equivalent("`node_edac_correctable_errors_total`");
/// `accel_edac_uncorrectable_errors_total`.
pub const UE: FamilyDef = FamilyDef::counter(
    "accel_edac_uncorrectable_errors_total",
    "Total uncorrectable memory errors.",
)
.labels(&["controller"])
.doc("uncorrectable ECC errors of the memory controller since boot")
.source("`/sys/devices/system/edac/mc/mc<controller>/ue_count`")
.equivalent("`node_edac_uncorrectable_errors_total`");
/// `accel_edac_csrow_correctable_errors_total`.
pub const CSROW_CE: FamilyDef = FamilyDef::counter(
    "accel_edac_csrow_correctable_errors_total",
    "Total correctable memory errors for this csrow.",
)
.labels(&["controller", "csrow"])
.doc("corrected errors of one chip-select row (`unknown`: not attributable to a row)")
.source("`mc<controller>/csrow<csrow>/ce_count`, `mc<controller>/ce_noinfo_count`")
.equivalent("`node_edac_csrow_correctable_errors_total`");
/// `accel_edac_csrow_uncorrectable_errors_total`.
pub const CSROW_UE: FamilyDef = FamilyDef::counter(
    "accel_edac_csrow_uncorrectable_errors_total",
    "Total uncorrectable memory errors for this csrow.",
)
.labels(&["controller", "csrow"])
.doc("uncorrectable errors of one chip-select row (`unknown`: not attributable to a row)")
.source("`mc<controller>/csrow<csrow>/ue_count`, `mc<controller>/ue_noinfo_count`")
.equivalent("`node_edac_csrow_uncorrectable_errors_total`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[CE, UE, CSROW_CE, CSROW_UE];

/// The edac collector.
pub struct Edac {
    mc: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let mc = ctx.paths.sysfs.join("devices/system/edac/mc");
    Ok(Built::if_dir(mc, |mc| Box::new(Edac { mc })))
}

/// The number of an `mc<N>...` / `csrow<N>...` directory name (the leading
/// digits after `prefix`, as node_exporter's glob and regex take them), or
/// `None` for other names.
pub fn numbered<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    (digits > 0).then(|| &rest[..digits])
}

/// One counter file.
fn count(path: &Path) -> Result<f64, CollectError> {
    let text = read_to_string(path)?;
    Ok(parse_u64(text.trim(), &path.display())? as f64)
}

/// Subdirectories of `dir` named `<prefix><N>...`, with their numbers, in
/// name order.
fn numbered_dirs(dir: &Path, prefix: &str) -> Result<Vec<(String, PathBuf)>, CollectError> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, &e))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = numbered(name.to_str()?, prefix)?.to_owned();
            Some((n, e.path()))
        })
        .collect();
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// One controller's series, or the first error (its series are then left
/// out, as node_exporter fails on them).
fn controller(dir: &Path, mc: &str, out: &mut Sample) -> Result<(), CollectError> {
    let ce = count(&dir.join("ce_count"))?;
    let ce_noinfo = count(&dir.join("ce_noinfo_count"))?;
    let ue = count(&dir.join("ue_count"))?;
    let ue_noinfo = count(&dir.join("ue_noinfo_count"))?;
    let mut rows = Vec::new();
    for (row, path) in numbered_dirs(dir, "csrow")? {
        rows.push((
            row,
            count(&path.join("ce_count"))?,
            count(&path.join("ue_count"))?,
        ));
    }
    out.add(&CE).add(&[("controller", mc)], ce);
    out.add(&UE).add(&[("controller", mc)], ue);
    out.add(&CSROW_CE)
        .add(&[("controller", mc), ("csrow", "unknown")], ce_noinfo);
    out.add(&CSROW_UE)
        .add(&[("controller", mc), ("csrow", "unknown")], ue_noinfo);
    for (row, ce, ue) in &rows {
        out.add(&CSROW_CE)
            .add(&[("controller", mc), ("csrow", row)], *ce);
        out.add(&CSROW_UE)
            .add(&[("controller", mc), ("csrow", row)], *ue);
    }
    Ok(())
}

impl Collector for Edac {
    fn name(&self) -> &'static str {
        "edac"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        for (mc, dir) in numbered_dirs(&self.mc, "mc")? {
            if let Err(e) = controller(&dir, &mc, out) {
                out.error(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_and_absence() {
        assert_eq!(numbered("mc0", "mc"), Some("0"));
        assert_eq!(numbered("csrow12", "csrow"), Some("12"));
        assert_eq!(numbered("mc1x", "mc"), Some("1"));
        for bad in ["mc", "mcx", "power", "dimm0"] {
            assert_eq!(numbered(bad, "mc"), None, "{bad:?}");
        }
        let paths = crate::Paths {
            sysfs: PathBuf::from("/nonexistent-sysfs"),
            ..Default::default()
        };
        let options = (SPEC.options.defaults)();
        let built = crate::build_with(&SPEC, &paths, &*options, &Default::default()).unwrap();
        assert!(matches!(built, Built::Absent(_)));
    }

    #[test]
    fn a_broken_controller_is_an_error_not_a_panic() {
        let dir = std::env::temp_dir().join(format!("edac-test-{}", std::process::id()));
        let mc = dir.join("mc0");
        std::fs::create_dir_all(&mc).unwrap();
        std::fs::write(mc.join("ce_count"), "x\n").unwrap();
        let mut s = Sample::new();
        assert!(controller(&mc, "0", &mut s).is_err());
        assert!(s.families().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn numbered_never_panics(s in "\\PC{0,20}") {
            if let Some(n) = numbered(&s, "mc") {
                prop_assert!(!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
