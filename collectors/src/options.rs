//! A collector's options: one typed struct per collector, declared in its
//! module with clap's derive (`#[derive(clap::Args)]`), every flag spelt out
//! in full (`--collector.gpu.max-processes`) with its id equal to its long
//! name, so that the config file can use the same names as TOML keys.
//!
//! The agent assembles its command line from the registry
//! ([`crate::registry`]): each [`Spec`](crate::Spec) carries an
//! [`OptionsSpec`] made by [`options`], which adds the struct's flags to the
//! command and reads them back as a `Box<dyn CollectorOptions>`. A reload
//! compares the typed values ([`CollectorOptions::same`]).
//!
//! The value parsers shared by the flags (durations, intervals, ratios,
//! regexes) live here too.

use std::any::Any;
use std::fmt;
use std::time::Duration;

/// A collector's parsed options, type-erased so the registry can hold them;
/// [`BuildContext::options`](crate::BuildContext::options) gives the typed
/// struct back. Implemented for every `Clone + PartialEq + Debug` struct.
pub trait CollectorOptions: Any + Send + Sync + fmt::Debug {
    /// Whether `other` holds the same settings (same type, equal values).
    fn same(&self, other: &dyn CollectorOptions) -> bool;
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn CollectorOptions>;
    /// For downcasting to the collector's own struct.
    fn as_any(&self) -> &dyn Any;
    /// For changing the struct after parsing (`profile --pid`).
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + fmt::Debug + Clone + PartialEq> CollectorOptions for T {
    fn same(&self, other: &dyn CollectorOptions) -> bool {
        other.as_any().downcast_ref::<T>() == Some(self)
    }
    fn clone_box(&self) -> Box<dyn CollectorOptions> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

// No `Clone` or `PartialEq` for `Box<dyn CollectorOptions>`: the box would
// then meet the blanket impl's bounds itself, and `as_any` on a box would
// give the box, not the struct. Use `clone_box` and `same`.

/// How the agent handles one collector's options without knowing their type.
#[derive(Clone, Copy)]
pub struct OptionsSpec {
    /// Adds the struct's flags to a command.
    pub augment: fn(clap::Command) -> clap::Command,
    /// Reads them back from the matches of that command.
    pub from_matches: fn(&clap::ArgMatches) -> Result<Box<dyn CollectorOptions>, String>,
    /// Its defaults (see [`defaults`]).
    pub defaults: fn() -> Box<dyn CollectorOptions>,
}

impl fmt::Debug for OptionsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OptionsSpec")
    }
}

/// The [`OptionsSpec`] of the options struct `T`.
pub const fn options<T>() -> OptionsSpec
where
    T: clap::Args + clap::FromArgMatches + CollectorOptions,
{
    OptionsSpec {
        augment: <T as clap::Args>::augment_args,
        from_matches: from_matches::<T>,
        defaults: boxed_defaults::<T>,
    }
}

fn from_matches<T>(m: &clap::ArgMatches) -> Result<Box<dyn CollectorOptions>, String>
where
    T: clap::FromArgMatches + CollectorOptions,
{
    T::from_arg_matches(m)
        .map(|t| Box::new(t) as Box<dyn CollectorOptions>)
        .map_err(|e| {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("bad arguments");
            line.strip_prefix("error: ").unwrap_or(line).to_owned()
        })
}

fn boxed_defaults<T>() -> Box<dyn CollectorOptions>
where
    T: clap::Args + clap::FromArgMatches + CollectorOptions,
{
    Box::new(defaults::<T>())
}

/// The defaults of options struct `T`: its flags parsed from an empty
/// command line (what a collector built without the agent, in a test, gets).
pub fn defaults<T>() -> T
where
    T: clap::Args + clap::FromArgMatches,
{
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true));
    let m = cmd
        .try_get_matches_from(std::iter::empty::<String>())
        .expect("every option has a default or is optional");
    T::from_arg_matches(&m).expect("defaults parse")
}

/// A collector with no options of its own. (`group(skip)`: several
/// collectors share it, and clap's default group would be named twice.)
#[derive(clap::Args, Clone, Debug, Default, PartialEq)]
#[group(skip)]
pub struct NoOptions {}

/// The shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Parses a Prometheus-style duration: `100ms`, `5s`, `1m`, `1h`, `1d`, or
/// combinations such as `1m30s`. A sum past what a [`Duration`] holds is an
/// error, not a panic.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 100ms, 5s, 1m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total = total
            .checked_add(unit)
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// A duration of at least [`MIN_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!("{s} is shorter than the minimum of 100ms"));
    }
    Ok(d)
}

/// Checks a regular expression and keeps its text (compiled by the
/// collector when it is built).
pub fn parse_regex(s: &str) -> Result<String, String> {
    regex::Regex::new(s).map(|_| s.to_owned()).map_err(|e| {
        format!(
            "bad regex {s:?}: {}",
            e.to_string().lines().last().unwrap_or("")
        )
    })
}

/// Any path, the empty one included (clap's own path parser refuses ""; an
/// empty path means "off" for the flags that take one).
pub fn parse_path(s: &str) -> Result<std::path::PathBuf, String> {
    Ok(std::path::PathBuf::from(s))
}

/// A number between 0 and 1.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// A rate of at least one event per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate of at least 1 event per second"
        )),
    }
}

/// Writes a duration as the shortest flag value that reads back to it
/// (`5s`, `100ms`), for defaults shown in `--help`.
pub fn humanize(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        for bad in ["", "5", "s", "5x", "-1s", "1.5s", "1sé"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_interval("50ms").is_err());
        // Parts that add up past Duration::MAX: an error, not an overflow
        // panic.
        let huge = "18446744073709551615d18446744073709551615d";
        assert!(parse_duration(huge).unwrap_err().contains("too long"));
    }

    proptest::proptest! {
        #[test]
        fn duration_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_duration(&s);
            let _ = parse_interval(&s);
        }

        #[test]
        fn duration_parser_never_panics_on_digits_and_units(
            s in "([0-9]{1,25}(ms|s|m|h|d|x)){0,4}"
        ) {
            let _ = parse_duration(&s);
        }
    }

    #[derive(clap::Args, Clone, Debug, PartialEq)]
    struct Demo {
        #[arg(
            id = "collector.demo.size",
            long = "collector.demo.size",
            default_value = "3"
        )]
        size: usize,
    }

    #[test]
    fn typed_options_round_trip() {
        let spec = options::<Demo>();
        let cmd = (spec.augment)(clap::Command::new("t"));
        let m = cmd
            .try_get_matches_from(["t", "--collector.demo.size=5"])
            .unwrap();
        let got = (spec.from_matches)(&m).unwrap();
        assert_eq!(got.as_any().downcast_ref::<Demo>().unwrap().size, 5);
        let d: Box<dyn CollectorOptions> = Box::new(defaults::<Demo>());
        assert!(!got.same(&*d));
        assert!(d.same(&Demo { size: 3 }));
        assert!(!d.same(&NoOptions {}));
    }
}
