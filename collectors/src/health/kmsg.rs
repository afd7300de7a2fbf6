//! The kernel log: the lines the health checks act on (NVRM Xid lines, "GPU
//! has fallen off the bus", NVSwitch SXid lines, hung tasks, OOM kills), read
//! from `/dev/kmsg` or, for fixtures, a plain file.
//!
//! `/dev/kmsg` is opened non-blocking: each `read` returns one record, and
//! `EAGAIN` says there is nothing new, so a sample never waits on it (no
//! worker thread is needed). The first read of a fresh open starts at the
//! oldest record the kernel still holds, so a restarted agent sees this
//! boot's events again; their timestamps (microseconds since boot) make
//! them the same events, not new ones. A file is read from where the last
//! read stopped (from the start again if it shrank); its lines may be
//! `/dev/kmsg` records (`6,1234,5678901,-;text`), `dmesg` lines
//! (`[ 5678.901234] text`) or bare text (no timestamp: taken as seen when
//! read).

use std::fs::File;
use std::io::{ErrorKind as IoKind, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::util::io_error;
use crate::CollectError;

/// Most records read in one sample: a flood of kernel messages costs one
/// sample a bounded time; the rest is read at the next.
pub const MAX_RECORDS: usize = 20_000;

/// What a kernel log line says, for the health checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `NVRM: Xid (PCI:0000:18:00): 79, ...`: the GPU's PCI address
    /// (normalised by [`norm_bus`]) and the XID.
    Xid { bus: String, xid: u64 },
    /// `... GPU has fallen off the bus` without an Xid number.
    FallenOff { bus: String },
    /// `nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 24007, Fatal, ...`.
    SXid {
        device: String,
        code: u64,
        fatal: bool,
    },
    /// `INFO: task NAME:PID blocked for more than N seconds.`
    HungTask { task: String },
    /// `Out of memory: Killed process PID (NAME)` (and the cgroup form).
    OomKill { process: String },
}

/// One line that says something: its time in seconds since boot, when the
/// line has one, and what it says.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Seconds since boot (the kmsg or dmesg timestamp).
    pub uptime: Option<f64>,
    /// What it says.
    pub event: Event,
}

/// A PCI address as `dddd:bb:dd` (domain, bus, device; lower case, the
/// function dropped): NVRM writes `0000:18:00`, NVML `00000000:18:00.0`,
/// sysfs `0000:18:00.0`. `None` when `s` is not one.
pub fn norm_bus(s: &str) -> Option<String> {
    let s = s.trim().trim_start_matches("PCI:");
    let s = s.split('.').next()?;
    let parts: Vec<&str> = s.split(':').collect();
    let (domain, bus, dev) = match parts.as_slice() {
        [d, b, v] => (*d, *b, *v),
        [b, v] => ("0", *b, *v),
        _ => return None,
    };
    let hex = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_hexdigit())
    };
    if !hex(domain, 8) || !hex(bus, 2) || !hex(dev, 2) {
        return None;
    }
    let domain = u32::from_str_radix(domain, 16).ok()?;
    Some(format!(
        "{:04x}:{}:{}",
        domain & 0xffff,
        bus.to_ascii_lowercase(),
        dev.to_ascii_lowercase()
    ))
}

/// The leading number of `s` (after spaces).
fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// The text inside `PCI:...` up to `)` or `:` + space, from `s`.
fn pci_in(s: &str) -> Option<String> {
    let at = s.find("PCI:")?;
    let rest = &s[at + 4..];
    let end = rest.find([')', ' ', ',']).unwrap_or(rest.len());
    norm_bus(rest[..end].trim_end_matches(':'))
}

/// Splits a line into its timestamp (seconds since boot) and its text.
fn split_time(line: &str) -> (Option<f64>, &str) {
    // /dev/kmsg: "PRI,SEQ,USEC,FLAGS[,...];TEXT"
    if let Some((head, text)) = line.split_once(';') {
        let fields: Vec<&str> = head.split(',').collect();
        if fields.len() >= 4 && fields[..3].iter().all(|f| f.parse::<u64>().is_ok()) {
            let usec: u64 = fields[2].parse().unwrap_or(0);
            return (Some(usec as f64 / 1e6), text);
        }
    }
    // dmesg: "[ 5678.901234] TEXT"
    if let Some(rest) = line.trim_start().strip_prefix('[') {
        if let Some((ts, text)) = rest.split_once(']') {
            if let Ok(t) = ts.trim().parse::<f64>() {
                if t.is_finite() && t >= 0.0 {
                    return (Some(t), text.trim_start());
                }
            }
        }
    }
    (None, line)
}

/// What `line` says, if it is one of the lines the checks act on.
pub fn parse_line(line: &str) -> Option<Record> {
    // Continuation lines of a kmsg record (" SUBSYSTEM=pci") say nothing.
    if line.starts_with(' ') && line.contains('=') {
        return None;
    }
    let (uptime, text) = split_time(line);
    let event = if let Some(at) = text.find("SXid (") {
        let after = &text[at + 6..];
        let (_, rest) = after.split_once("):")?;
        let code = leading_number(rest)?;
        let device = text[..at]
            .trim_end()
            .trim_end_matches(':')
            .rsplit(' ')
            .next()
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .or_else(|| pci_in(after))
            .unwrap_or_else(|| "nvswitch".to_owned());
        let lower = rest.to_ascii_lowercase();
        // The first line of an SXid says Fatal or Non-fatal; the lines after
        // it (Severity, Data) are details of the same error.
        if !lower.contains("fatal") {
            return None;
        }
        let fatal = !lower.contains("non-fatal");
        Event::SXid {
            device,
            code,
            fatal,
        }
    } else if let Some(at) = text.find("Xid (") {
        let after = &text[at + 5..];
        let (inside, rest) = after.split_once("):")?;
        Event::Xid {
            bus: pci_in(inside).unwrap_or_default(),
            xid: leading_number(rest)?,
        }
    } else if text.contains("fallen off the bus") {
        let bus = pci_in(text)
            .or_else(|| {
                // "NVRM: GPU 0000:18:00.0: GPU has fallen off the bus."
                let at = text.find("GPU ")?;
                norm_bus(text[at + 4..].split(": ").next()?)
            })
            .unwrap_or_default();
        Event::FallenOff { bus }
    } else if let Some(at) = text.find("INFO: task ") {
        let rest = &text[at + 11..];
        let (task, tail) = rest.split_once(" blocked for more than")?;
        let _ = tail;
        Event::HungTask {
            task: task.to_owned(),
        }
    } else if let Some(at) = text.find("Killed process ") {
        let rest = &text[at + 15..];
        let end = rest.find(')').map_or(rest.len(), |i| i + 1);
        Event::OomKill {
            process: rest[..end].trim_end_matches(',').to_owned(),
        }
    } else {
        return None;
    };
    Some(Record { uptime, event })
}

/// Reads what is new in the kernel log (or a file standing for it).
#[derive(Debug)]
pub struct Reader {
    path: PathBuf,
    file: Option<File>,
    device: bool,
    /// Read position in a file; an unfinished last line waits here.
    pos: u64,
    partial: String,
}

impl Reader {
    /// A reader of `path`; nothing is opened until the first read.
    pub fn new(path: &Path) -> Reader {
        Reader {
            path: path.to_owned(),
            file: None,
            device: false,
            pos: 0,
            partial: String::new(),
        }
    }

    /// The path read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lines written since the last read (at most [`MAX_RECORDS`]).
    pub fn read_new(&mut self) -> Result<Vec<String>, CollectError> {
        if self.file.is_none() {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
                .map_err(|e| io_error(&self.path, &e))?;
            self.device = f
                .metadata()
                .map(|m| m.file_type().is_char_device())
                .unwrap_or(false);
            self.file = Some(f);
            self.pos = 0;
            self.partial.clear();
        }
        let device = self.device;
        let file = self.file.as_mut().expect("opened above");
        if device {
            read_records(file, &self.path)
        } else {
            let r = read_file(file, &mut self.pos, &mut self.partial);
            r.map_err(|e| io_error(&self.path, &e))
        }
    }
}

/// One record per `read` from /dev/kmsg until EAGAIN.
fn read_records(file: &mut File, path: &Path) -> Result<Vec<String>, CollectError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while out.len() < MAX_RECORDS {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                // A record's first line is its message; the rest are
                // dictionary lines (" KEY=value").
                if let Some(first) = rec.lines().next() {
                    out.push(first.to_owned());
                }
            }
            Err(e) if e.kind() == IoKind::WouldBlock => break,
            // EPIPE: records were overwritten before they were read; the
            // next read goes on with the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == IoKind::Interrupted => continue,
            Err(e) => return Err(io_error(path, &e)),
        }
    }
    Ok(out)
}

/// The complete lines of a file after `pos`.
fn read_file(file: &mut File, pos: &mut u64, partial: &mut String) -> std::io::Result<Vec<String>> {
    let len = file.metadata()?.len();
    if len < *pos {
        // Truncated or replaced: start over.
        *pos = 0;
        partial.clear();
    }
    file.seek(SeekFrom::Start(*pos))?;
    let mut bytes = Vec::new();
    file.take(64 * 1024 * 1024).read_to_end(&mut bytes)?;
    *pos += bytes.len() as u64;
    partial.push_str(&String::from_utf8_lossy(&bytes));
    let mut out: Vec<String> = Vec::new();
    let complete = match partial.rfind('\n') {
        Some(i) => i + 1,
        None => return Ok(out),
    };
    let rest = partial.split_off(complete);
    out.extend(partial.lines().map(str::to_owned));
    *partial = rest;
    if out.len() > MAX_RECORDS {
        out.drain(..out.len() - MAX_RECORDS);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_that_matter() {
        let r = parse_line("4,1234,5678901234,-;NVRM: Xid (PCI:0000:5d:00): 79, pid=1234, name=python3, GPU has fallen off the bus.").unwrap();
        assert_eq!(r.uptime, Some(5678.901234));
        assert_eq!(
            r.event,
            Event::Xid {
                bus: "0000:5d:00".into(),
                xid: 79
            }
        );
        let r = parse_line("[  812.5] NVRM: Xid (PCI:0000:18:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at partition 2").unwrap();
        assert_eq!(r.uptime, Some(812.5));
        assert_eq!(
            r.event,
            Event::Xid {
                bus: "0000:18:00".into(),
                xid: 48
            }
        );
        assert_eq!(
            parse_line("nvidia-nvswitch3: SXid (PCI:0000:07:00.0): 24007, Fatal, Link 44 sourcetrack timeout error (First)").unwrap().event,
            Event::SXid { device: "nvidia-nvswitch3".into(), code: 24007, fatal: true }
        );
        assert_eq!(
            parse_line("nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)").unwrap().event,
            Event::SXid { device: "nvidia-nvswitch0".into(), code: 12028, fatal: false }
        );
        assert_eq!(
            parse_line("NVRM: GPU 0000:db:00.0: GPU has fallen off the bus.")
                .unwrap()
                .event,
            Event::FallenOff {
                bus: "0000:db:00".into()
            }
        );
        assert_eq!(
            parse_line("INFO: task python3:41234 blocked for more than 122 seconds.")
                .unwrap()
                .event,
            Event::HungTask {
                task: "python3:41234".into()
            }
        );
        assert_eq!(
            parse_line("Out of memory: Killed process 4242 (python3) total-vm:123kB, anon-rss:1kB")
                .unwrap()
                .event,
            Event::OomKill {
                process: "4242 (python3)".into()
            }
        );
        assert_eq!(
            parse_line(
                "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Severity 0 Engine instance 32"
            ),
            None
        );
        assert_eq!(parse_line("usb 1-1: new high-speed USB device"), None);
        assert_eq!(parse_line(" SUBSYSTEM=pci"), None);
        assert_eq!(parse_line("NVRM: Xid (PCI:0000:18:00): x"), None);
    }

    #[test]
    fn normalises_pci_addresses() {
        assert_eq!(norm_bus("00000000:18:00.0").as_deref(), Some("0000:18:00"));
        assert_eq!(norm_bus("0000:DB:00.0").as_deref(), Some("0000:db:00"));
        assert_eq!(norm_bus("PCI:0000:5d:00").as_deref(), Some("0000:5d:00"));
        assert_eq!(norm_bus("18:00").as_deref(), Some("0000:18:00"));
        for bad in ["", "x", "0000:zz:00.0", "1:2:3:4"] {
            assert_eq!(norm_bus(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_file_is_read_from_where_it_stopped() {
        let dir = std::env::temp_dir().join(format!("accel-kmsg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kmsg");
        std::fs::write(&path, "one\ntwo\nthr").unwrap();
        let mut r = Reader::new(&path);
        assert_eq!(r.read_new().unwrap(), ["one", "two"]);
        assert!(r.read_new().unwrap().is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"ee\nfour\n").unwrap();
        assert_eq!(r.read_new().unwrap(), ["three", "four"]);
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(r.read_new().unwrap(), ["new"]);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Reader::new(&dir.join("none")).read_new().is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(line in crate::testing::mutated_text(&[
            "4,1234,5678901234,-;NVRM: Xid (PCI:0000:5d:00): 79, pid=1234, GPU has fallen off the bus.",
            "nvidia-nvswitch3: SXid (PCI:0000:07:00.0): 24007, Fatal, Link 44",
            "[  812.5] INFO: task python3:41234 blocked for more than 122 seconds.",
            "Out of memory: Killed process 4242 (python3)",
        ])) {
            let _ = parse_line(&line);
            let _ = norm_bus(&line);
        }
    }
}
