//! Log output: logfmt (the Prometheus exporters' default) or JSON, on stderr.

use std::fmt;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, Registry};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// `ts=… level=info msg="…" key=value`
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// The level filter's reload handle, set by [`init`].
static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

/// Installs the global logger. Safe to call more than once (later calls are
/// ignored), which keeps tests that start the agent in-process simple.
pub fn init(level: tracing::Level, format: LogFormat) {
    let (filter, handle) = reload::Layer::new(LevelFilter::from_level(level));
    let logfmt = (format == LogFormat::Logfmt).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Logfmt)
    });
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .json()
            .flatten_event(true)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logfmt)
        .with(json)
        .try_init();
    if installed.is_ok() {
        let _ = LEVEL.set(handle);
    }
}

/// Changes the log threshold of the logger [`init`] installed (a SIGHUP
/// reload); false when there is none.
pub fn set_level(level: tracing::Level) -> bool {
    LEVEL
        .get()
        .is_some_and(|h| h.modify(|f| *f = LevelFilter::from_level(level)).is_ok())
}

/// The logfmt line format.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        w.write_str("ts=")?;
        SystemTime.format_time(&mut w)?;
        let meta = event.metadata();
        write!(w, " level={}", meta.level().as_str().to_ascii_lowercase())?;
        let mut v = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut v);
        v.result?;
        writeln!(w)
    }
}

struct Fields<'a, 'b> {
    w: &'a mut Writer<'b>,
    result: fmt::Result,
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c.is_control())
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let key = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.result = if needs_quotes(value) {
            write!(self.w, " {key}={value:?}")
        } else {
            write!(self.w, " {key}={value}")
        };
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_str(field, &value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record_str(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record_str(field, &value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record_str(field, if value { "true" } else { "false" });
    }
}
