//! One `nvmlDeviceGetFieldValues` call per GPU per sample.
//!
//! The driver charges a base per call and a part per field (about 0.09 ms
//! and 0.11 ms on an H200, tests/nvml-sim/src/cost.rs): every part of a
//! sample that reads fields (PCIe byte counters, memory temperature,
//! violation times, NVLink counters) asks for its fields here first, and
//! the batch is fetched once, before the parts read their answers.

use std::ops::Range;

use nvml_wrapper::Device;

use super::raw;

/// The fields of one GPU's sample, and once fetched their answers.
#[derive(Default)]
pub(super) struct Batch {
    wanted: Vec<(u32, u32)>,
    /// `None` until fetched; `Err` with the NVML code of the whole call.
    answers: Option<Result<Vec<Result<f64, u32>>, u32>>,
}

impl Batch {
    /// Asks for `fields` (field id, scope id); returns where their answers
    /// will be.
    pub(super) fn want(&mut self, fields: &[(u32, u32)]) -> Range<usize> {
        let start = self.wanted.len();
        self.wanted.extend_from_slice(fields);
        start..self.wanted.len()
    }

    /// Makes the one call (none when nothing was asked).
    pub(super) fn fetch(&mut self, raw: Option<&raw::Raw>, dev: &Device<'_>) {
        if self.wanted.is_empty() {
            return;
        }
        self.answers = Some(match raw {
            Some(raw) => raw.field_values(dev, &self.wanted),
            None => Err(raw::NOT_FOUND),
        });
    }

    /// The answers at `at`: each field's value or NVML code, or the code of
    /// the whole call.
    pub(super) fn get(&self, at: &Range<usize>) -> Result<&[Result<f64, u32>], u32> {
        match &self.answers {
            Some(Ok(v)) => v.get(at.clone()).ok_or(raw::NOT_FOUND),
            Some(Err(code)) => Err(*code),
            None => Err(raw::NOT_FOUND),
        }
    }

    /// How many fields were asked for (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.wanted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_address_each_parts_answers() {
        let mut b = Batch::default();
        let a = b.want(&[(197, 0), (198, 0)]);
        let c = b.want(&[(82, 0)]);
        assert_eq!((a.clone(), c.clone(), b.len()), (0..2, 2..3, 3));
        assert_eq!(b.get(&a), Err(raw::NOT_FOUND), "not fetched yet");
        b.answers = Some(Ok(vec![Ok(1.0), Ok(2.0), Err(raw::NOT_SUPPORTED)]));
        assert_eq!(b.get(&a).unwrap(), &[Ok(1.0), Ok(2.0)]);
        assert_eq!(b.get(&c).unwrap(), &[Err(raw::NOT_SUPPORTED)]);
        b.answers = Some(Err(raw::GPU_IS_LOST));
        assert_eq!(b.get(&c), Err(raw::GPU_IS_LOST));
    }
}
