//! `accel_vmstat_<field>`: the kernel's virtual-memory event counters from
//! /proc/vmstat, the fields node_exporter's `vmstat` collector exports by
//! default (its `--collector.vmstat.fields` default
//! `^(oom_kill|pgpg|pswp|pg.*fault).*`): OOM kills, page faults, paging
//! and swapping.
//!
//! On a training node, `oom_kill` going up while GPUs are allocated is a
//! rank killed for host memory (a data loader's worker, a pinned-memory
//! buffer), which the job sees only as an NCCL timeout; major faults and
//! swap-in show a host short of page cache for the dataset.
//!
//! The fields are a fixed list, not a regex flag: every family is declared
//! in the table below, by its literal name. node_exporter types them
//! `untyped`; the agent types them `gauge` (the framework declares gauges,
//! counters and histograms, and a counter's name must end in `_total`,
//! which would break the name). PromQL treats both alike: `rate()` and
//! `increase()` work on them as on node_exporter's.

use std::path::PathBuf;

use crate::options::{options, NoOptions};
use crate::util::{parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The vmstat collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "vmstat",
    help: "OOM kills, page faults, paging and swapping from /proc/vmstat",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_vmstat_"],
    outside: &[],
    build,
};

/// `accel_vmstat_oom_kill`.
pub const OOM_KILL: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_oom_kill",
    "/proc/vmstat information field oom_kill.",
)
.doc("processes killed by the OOM killer since boot (a count that only rises)")
.source("`/proc/vmstat` `oom_kill`")
.equivalent("`node_vmstat_oom_kill`");
/// `accel_vmstat_pgfault`.
pub const PGFAULT: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pgfault",
    "/proc/vmstat information field pgfault.",
)
.doc("page faults, minor and major, since boot")
.source("`/proc/vmstat` `pgfault`")
.equivalent("`node_vmstat_pgfault`");
/// `accel_vmstat_pgmajfault`.
pub const PGMAJFAULT: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pgmajfault",
    "/proc/vmstat information field pgmajfault.",
)
.doc("major page faults (read from disk) since boot")
.source("`/proc/vmstat` `pgmajfault`")
.equivalent("`node_vmstat_pgmajfault`");
/// `accel_vmstat_pgpgin`.
pub const PGPGIN: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pgpgin",
    "/proc/vmstat information field pgpgin.",
)
.doc("KiB paged in from block devices since boot")
.source("`/proc/vmstat` `pgpgin`")
.equivalent("`node_vmstat_pgpgin`");
/// `accel_vmstat_pgpgout`.
pub const PGPGOUT: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pgpgout",
    "/proc/vmstat information field pgpgout.",
)
.doc("KiB paged out to block devices since boot")
.source("`/proc/vmstat` `pgpgout`")
.equivalent("`node_vmstat_pgpgout`");
/// `accel_vmstat_pswpin`.
pub const PSWPIN: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pswpin",
    "/proc/vmstat information field pswpin.",
)
.doc("pages swapped in since boot")
.source("`/proc/vmstat` `pswpin`")
.equivalent("`node_vmstat_pswpin`");
/// `accel_vmstat_pswpout`.
pub const PSWPOUT: FamilyDef = FamilyDef::gauge(
    "accel_vmstat_pswpout",
    "/proc/vmstat information field pswpout.",
)
.doc("pages swapped out since boot")
.source("`/proc/vmstat` `pswpout`")
.equivalent("`node_vmstat_pswpout`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    OOM_KILL, PGFAULT, PGMAJFAULT, PGPGIN, PGPGOUT, PSWPIN, PSWPOUT,
];

/// The /proc/vmstat fields read, in the file's order, and their families.
const FIELDS: [(&str, &FamilyDef); 7] = [
    ("pgpgin", &PGPGIN),
    ("pgpgout", &PGPGOUT),
    ("pswpin", &PSWPIN),
    ("pswpout", &PSWPOUT),
    ("pgfault", &PGFAULT),
    ("pgmajfault", &PGMAJFAULT),
    ("oom_kill", &OOM_KILL),
];

/// The vmstat collector.
pub struct Vmstat {
    path: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    Ok(Built::Ready(Box::new(Vmstat {
        path: ctx.paths.procfs.join("vmstat"),
    })))
}

/// The values of [`FIELDS`] found in /proc/vmstat, by index; a field the
/// kernel does not write (`oom_kill` before 4.13) is `None`. A field given
/// twice or with a bad value is an error.
pub fn parse_vmstat(text: &str) -> Result<[Option<u64>; 7], CollectError> {
    let mut out = [None; 7];
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        let Some(i) = FIELDS.iter().position(|(k, _)| *k == key) else {
            continue;
        };
        let (Some(v), None) = (fields.next(), fields.next()) else {
            return Err(CollectError::parse(format!(
                "/proc/vmstat: {key}: want one value in {line:?}"
            )));
        };
        if out[i].is_some() {
            return Err(CollectError::parse(format!("/proc/vmstat: {key} twice")));
        }
        out[i] = Some(parse_u64(v, &format_args!("/proc/vmstat {key}"))?);
    }
    Ok(out)
}

impl Collector for Vmstat {
    fn name(&self) -> &'static str {
        "vmstat"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let values = parse_vmstat(&read_to_string(&self.path)?)?;
        if values.iter().all(Option::is_none) {
            return Err(CollectError::parse(
                "/proc/vmstat: none of pgpgin, pgpgout, pswpin, pswpout, pgfault, pgmajfault, oom_kill",
            ));
        }
        out.add_known(FIELDS.iter().map(|(_, f)| *f).zip(values));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_default_fields() {
        let text = "nr_free_pages 1\npgpgin 84942213\npgpgout 110959572\npswpin 7\npswpout 9\npgfault 135225499\npgmajfault 28654\npgfault_extra 3\noom_kill 2\nthp_fault_alloc 5\n";
        assert_eq!(
            parse_vmstat(text).unwrap(),
            [
                Some(84942213),
                Some(110959572),
                Some(7),
                Some(9),
                Some(135225499),
                Some(28654),
                Some(2)
            ]
        );
        // oom_kill before Linux 4.13: left out, not an error.
        assert_eq!(parse_vmstat("pgfault 1\n").unwrap()[6], None);
        assert_eq!(parse_vmstat("").unwrap(), [None; 7]);
        for bad in [
            "oom_kill\n",
            "oom_kill -1\n",
            "oom_kill 1 2\n",
            "oom_kill 1.5\n",
            "pgfault 1\npgfault 2\n",
        ] {
            assert!(parse_vmstat(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = parse_vmstat(&s);
        }

        #[test]
        fn vmstat_like_input_parses_what_it_holds(
            lines in proptest::collection::vec(
                ("(pgpgin|pgpgout|pswpin|pswpout|pgfault|pgmajfault|oom_kill|nr_dirty)", proptest::option::of(any::<u64>())),
                0..12,
            )
        ) {
            let text: String = lines
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k} {v}\n"),
                    None => format!("{k} x\n"),
                })
                .collect();
            let fields: Vec<_> = lines.iter().filter(|(k, _)| k != "nr_dirty").collect();
            let distinct: std::collections::BTreeSet<_> = fields.iter().map(|(k, _)| k).collect();
            let ok = distinct.len() == fields.len() && fields.iter().all(|(_, v)| v.is_some());
            match parse_vmstat(&text) {
                Ok(values) => {
                    prop_assert!(ok);
                    for (k, v) in fields {
                        let i = FIELDS.iter().position(|(f, _)| f == k).unwrap();
                        prop_assert_eq!(values[i], *v);
                    }
                }
                Err(_) => prop_assert!(!ok),
            }
        }
    }
}
