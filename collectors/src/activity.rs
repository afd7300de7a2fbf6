//! What a collector's sample is doing right now, so that when a sample
//! hangs the sampler's watchdog can name the call (`GPU 3: power
//! (nvmlDeviceGetPowerUsage, the power limits)`), not only the collector.
//!
//! The collector sets it before each part of its sample that may block; the
//! watchdog reads it from another thread. A mutex around two words: taken
//! a few dozen times per sample, never contended but by the watchdog.

use std::sync::{Arc, Mutex, PoisonError};

/// A part of a sample: the device it is on, if any, and what it calls.
type Part = (Option<u32>, &'static str);

/// The current part of a collector's sample.
#[derive(Clone, Debug, Default)]
pub struct Activity(Arc<Mutex<Option<Part>>>);

impl Activity {
    /// Says the sample is now in `what`, on `device` where there is one.
    pub fn set(&self, device: Option<u32>, what: &'static str) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((device, what));
    }

    /// Says the sample is between parts (nothing that may block).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The current part, for a log line: `"GPU 3: power (...)"`, `"NVML
    /// init"`, or `None` when the collector did not say.
    pub fn describe(&self) -> Option<String> {
        let now = *self.0.lock().unwrap_or_else(PoisonError::into_inner);
        now.map(|(device, what)| match device {
            Some(d) => format!("GPU {d}: {what}"),
            None => what.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_part_set_is_described() {
        let a = Activity::default();
        assert_eq!(a.describe(), None);
        let seen_by_watchdog = a.clone();
        a.set(Some(3), "power (nvmlDeviceGetPowerUsage)");
        assert_eq!(
            seen_by_watchdog.describe().as_deref(),
            Some("GPU 3: power (nvmlDeviceGetPowerUsage)")
        );
        a.set(None, "NVML init (nvmlInit_v2)");
        assert_eq!(
            seen_by_watchdog.describe().as_deref(),
            Some("NVML init (nvmlInit_v2)")
        );
        a.clear();
        assert_eq!(seen_by_watchdog.describe(), None);
    }
}
