//! Parsers of the per-process files under /proc/PID, shared by the agent's
//! own `process_*` series ([`crate::process`]) and the training processes'
//! `accel_process_*` series ([`crate::workload`]), so the two read a file
//! the same way.

use crate::util::parse_u64;
use crate::CollectError;

/// The fields of /proc/PID/stat the process series need, as the kernel
/// writes them (ticks, pages, bytes).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Minor page faults (field 10).
    pub minflt: u64,
    /// Major page faults (field 12).
    pub majflt: u64,
    /// User time in clock ticks (field 14).
    pub utime: u64,
    /// System time in clock ticks (field 15).
    pub stime: u64,
    /// Threads (field 20).
    pub threads: u64,
    /// Start time in clock ticks after boot (field 22).
    pub starttime: u64,
    /// Virtual memory size in bytes (field 23).
    pub vsize: u64,
    /// Resident set in pages (field 24).
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat. The command name (field 2) is in parentheses and
/// may itself hold spaces and ')', so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Result<Stat, CollectError> {
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| CollectError::parse("stat: no command name"))?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state).
    let at = |n: usize| {
        f.get(n - 3)
            .ok_or_else(|| CollectError::parse(format!("stat: no field {n}")))
            .and_then(|v| parse_u64(v, &format_args!("stat field {n}")))
    };
    Ok(Stat {
        minflt: at(10)?,
        majflt: at(12)?,
        utime: at(14)?,
        stime: at(15)?,
        threads: at(20)?,
        starttime: at(22)?,
        vsize: at(23)?,
        rss_pages: at(24)?,
    })
}

/// `read_bytes` and `write_bytes` of /proc/PID/io: bytes the process made
/// the storage layer fetch and send.
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((get("read_bytes:")?, get("write_bytes:")?))
}

/// Voluntary and involuntary context switches of one task's status file.
pub fn parse_ctxt(text: &str) -> (u64, u64) {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        get("voluntary_ctxt_switches:"),
        get("nonvoluntary_ctxt_switches:"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 7 0 250 75 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line).unwrap(),
            Stat {
                minflt: 100,
                majflt: 7,
                utime: 250,
                stime: 75,
                threads: 7,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            }
        );
        assert!(parse_stat("4242 (x) S 1 2").is_err());
        assert!(parse_stat("no parens").is_err());
        // A value the kernel would never write is refused, not wrapped.
        assert!(parse_stat(&line.replace(" 250 ", " -250 ")).is_err());
    }

    #[test]
    fn parses_io_and_status() {
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io("rchar: 1\n"), None);
        let st = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxt(st), (12, 3));
    }
}
