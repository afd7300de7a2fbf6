//! The I/O of `accel-agent storage-test`: aligned buffers, direct I/O with
//! its fallback, and the four patterns, each as fio would run it with
//! `ioengine=psync` (one synchronous call at a time per job).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::Progress;

/// The block of the checkpoint save and load: 1 MiB, as `torch.save`'s
/// buffered writer and fio's `bs=1M`.
pub const SEQ_BLOCK: usize = 1 << 20;
/// The block of the random reads: 4 KiB, fio's `bs=4k`.
pub const RAND_BLOCK: usize = 4096;
/// The size of one file of the small-file data set: 100 KiB (an encoded
/// image, a tokenised shard of a few thousand tokens).
pub const SMALL_FILE: usize = 100 * 1024;
/// The alignment direct I/O wants of buffers, offsets and lengths (the
/// logical block size of every common device is 512 or 4096).
pub const ALIGN: usize = 4096;

/// Set by SIGINT or SIGTERM: every loop checks it between two I/Os.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// The signal that set [`STOP`].
pub static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// What stops a pattern before its end.
#[derive(Debug)]
pub enum Failure {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// An I/O error, with what was being done.
    Io(String),
}

impl Failure {
    fn io(what: impl std::fmt::Display, e: io::Error) -> Failure {
        Failure::Io(format!("{what}: {e}"))
    }
}

fn check_stop() -> Result<(), Failure> {
    if STOP.load(Ordering::Relaxed) {
        Err(Failure::Interrupted)
    } else {
        Ok(())
    }
}

/// A heap buffer aligned for direct I/O, filled with bytes that no
/// storage layer can compress or deduplicate.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned memory with no interior sharing.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// `len` bytes (a multiple of [`ALIGN`], not zero) aligned to [`ALIGN`],
    /// filled from `seed`.
    pub fn new(len: usize, seed: u64) -> AlignedBuf {
        assert!(len > 0 && len % ALIGN == 0, "aligned length");
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("valid layout");
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let mut b = AlignedBuf { ptr, len };
        let mut rng = Rng::new(seed);
        for chunk in b.as_mut().chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        b
    }

    /// Marks every 512-byte sector of the buffer with `n` (a block number)
    /// and the sector's index, as fio's `scramble_buffers` does, so that no
    /// two sectors written are the same: storage that deduplicates (a
    /// VM's host, an array) gets nothing to skip.
    fn stamp(&mut self, n: u64) {
        for (i, sector) in self.as_mut().chunks_mut(512).enumerate() {
            sector[..8].copy_from_slice(&(n << 24 | i as u64).to_le_bytes());
        }
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsMut<[u8]> for AlignedBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, ALIGN).expect("valid layout");
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// xorshift64*: offsets and buffer contents, not cryptography.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Opens `path` for reading, with O_DIRECT when `direct`.
fn open_read(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Creates `path` (it must not exist) for writing, with O_DIRECT when
/// `direct`.
fn create(path: &Path, direct: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

/// Drops `f`'s pages from the page cache (clean pages only: after an
/// fsync, all of them), so that a buffered read goes to the storage.
fn drop_cache(f: &File) {
    // SAFETY: a plain syscall on an open descriptor; its failure only
    // leaves pages cached, which the report already says may happen.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Whether the filesystem of `dir` takes direct I/O: opening with O_DIRECT
/// and writing one aligned block both succeed. `Err` for another failure
/// (the directory is not writable, the disk is full).
pub fn supports_direct(dir: &Path) -> io::Result<bool> {
    let path = dir.join("direct-io-check");
    drop(create(&path, false)?);
    let r = (|| {
        let mut f = match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(false),
            Err(e) => return Err(e),
        };
        match f.write_all(AlignedBuf::new(ALIGN, 1).as_ref()) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = std::fs::remove_file(&path);
    r
}

/// The checkpoint save: `size` bytes (a multiple of [`SEQ_BLOCK`]) written
/// to a new file in 1 MiB blocks, then fsync; the time includes the fsync.
pub fn seq_write(
    path: &Path,
    size: u64,
    direct: bool,
    progress: &mut Progress,
) -> Result<Duration, Failure> {
    let mut f = create(path, direct).map_err(|e| Failure::io(path.display(), e))?;
    let mut buf = AlignedBuf::new(SEQ_BLOCK, 0x5eed);
    let blocks = size / SEQ_BLOCK as u64;
    let start = Instant::now();
    for i in 0..blocks {
        check_stop()?;
        buf.stamp(i);
        f.write_all(buf.as_ref())
            .map_err(|e| Failure::io(format_args!("writing {}", path.display()), e))?;
        progress.update(|| {
            format!(
                "checkpoint save: {} of {}",
                super::human_bytes((i + 1) * SEQ_BLOCK as u64),
                super::human_bytes(size)
            )
        });
    }
    progress.update(|| "checkpoint save: fsync".into());
    f.sync_all()
        .map_err(|e| Failure::io(format_args!("fsync of {}", path.display()), e))?;
    Ok(start.elapsed())
}

/// The checkpoint load: the file read from start to end in 1 MiB blocks.
pub fn seq_read(
    path: &Path,
    size: u64,
    direct: bool,
    progress: &mut Progress,
) -> Result<Duration, Failure> {
    let mut f = open_read(path, direct).map_err(|e| Failure::io(path.display(), e))?;
    if !direct {
        drop_cache(&f);
    }
    let mut buf = AlignedBuf::new(SEQ_BLOCK, 0);
    let blocks = size / SEQ_BLOCK as u64;
    let start = Instant::now();
    for i in 0..blocks {
        check_stop()?;
        f.read_exact(buf.as_mut())
            .map_err(|e| Failure::io(format_args!("reading {}", path.display()), e))?;
        progress.update(|| {
            format!(
                "checkpoint load: {} of {}",
                super::human_bytes((i + 1) * SEQ_BLOCK as u64),
                super::human_bytes(size)
            )
        });
    }
    Ok(start.elapsed())
}

/// Waits for the reader threads of a timed pattern, showing the rate of
/// `count()` (`unit`) and the time spent against `duration`.
fn wait_showing<T>(
    threads: &[std::thread::JoinHandle<T>],
    progress: &mut Progress,
    start: Instant,
    duration: Duration,
    pattern: &str,
    unit: &str,
    count: impl Fn() -> f64,
) {
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        progress.update(|| {
            let s = start.elapsed().as_secs_f64();
            format!(
                "{pattern}: {:.0} {unit}, {:.0} of {:.0} s",
                count() / s.max(1e-3),
                s.min(duration.as_secs_f64()),
                duration.as_secs_f64()
            )
        });
    }
}

/// What the random reads measured.
pub struct RandomReads {
    /// Reads done, all jobs together.
    pub ios: u64,
    /// Wall time of the pattern.
    pub elapsed: Duration,
    /// Every read's latency, in nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
}

/// Random 4 KiB reads of the checkpoint file by `jobs` threads, one read
/// at a time each, for `duration`.
pub fn rand_read(
    path: &Path,
    size: u64,
    direct: bool,
    jobs: usize,
    duration: Duration,
    progress: &mut Progress,
) -> Result<RandomReads, Failure> {
    let blocks = size / RAND_BLOCK as u64;
    if !direct {
        drop_cache(&open_read(path, false).map_err(|e| Failure::io(path.display(), e))?);
    }
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..jobs)
        .map(|j| {
            let path = path.to_owned();
            let done = Arc::clone(&done);
            std::thread::Builder::new()
                .name("rand-read".into())
                .spawn(move || -> Result<Vec<u64>, Failure> {
                    let f = open_read(&path, direct).map_err(|e| Failure::io(path.display(), e))?;
                    let mut buf = AlignedBuf::new(RAND_BLOCK, 0);
                    let mut rng = Rng::new(j as u64 + 1);
                    let mut lat = Vec::with_capacity(1 << 16);
                    while Instant::now() < end {
                        check_stop()?;
                        let off = (rng.next() % blocks) * RAND_BLOCK as u64;
                        let t = Instant::now();
                        f.read_exact_at(buf.as_mut(), off).map_err(|e| {
                            Failure::io(format_args!("reading {} at {off}", path.display()), e)
                        })?;
                        lat.push(t.elapsed().as_nanos() as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(lat)
                })
                .map_err(|e| Failure::io("starting a reader thread", e))
        })
        .collect::<Result<_, _>>()?;
    wait_showing(
        &threads,
        progress,
        start,
        duration,
        "random reads",
        "IOPS",
        || done.load(Ordering::Relaxed) as f64,
    );
    let elapsed = start.elapsed();
    let mut latencies_ns = Vec::new();
    for t in threads {
        latencies_ns.extend(join(t)?);
    }
    latencies_ns.sort_unstable();
    Ok(RandomReads {
        ios: latencies_ns.len() as u64,
        elapsed,
        latencies_ns,
    })
}

fn join<T>(t: std::thread::JoinHandle<Result<T, Failure>>) -> Result<T, Failure> {
    t.join()
        .unwrap_or_else(|_| Err(Failure::Io("a reader thread panicked".into())))
}

/// The small-file data set's files, `count` of [`SMALL_FILE`] bytes in
/// `dir`, written buffered and synced (not timed), then dropped from the
/// page cache when reads will be buffered.
pub fn make_small_files(
    dir: &Path,
    count: usize,
    direct: bool,
    progress: &mut Progress,
) -> Result<Vec<PathBuf>, Failure> {
    std::fs::create_dir(dir).map_err(|e| Failure::io(dir.display(), e))?;
    let mut buf = AlignedBuf::new(SMALL_FILE, 0xda7a);
    let mut paths = Vec::with_capacity(count);
    for i in 0..count {
        check_stop()?;
        let p = dir.join(format!("{i:06}.bin"));
        buf.stamp(i as u64);
        let mut f = create(&p, false).map_err(|e| Failure::io(p.display(), e))?;
        f.write_all(buf.as_ref())
            .map_err(|e| Failure::io(format_args!("writing {}", p.display()), e))?;
        paths.push(p);
        progress.update(|| format!("small files: writing {} of {count}", i + 1));
    }
    progress.update(|| "small files: sync".into());
    let d = File::open(dir).map_err(|e| Failure::io(dir.display(), e))?;
    // SAFETY: a plain syscall on an open descriptor.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        return Err(Failure::io(
            format_args!("syncfs of {}", dir.display()),
            io::Error::last_os_error(),
        ));
    }
    if !direct {
        for p in &paths {
            if let Ok(f) = File::open(p) {
                drop_cache(&f);
            }
        }
    }
    Ok(paths)
}

/// What the small-file reads measured.
pub struct SmallFiles {
    /// Files read whole, all readers together.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Wall time of the pattern.
    pub elapsed: Duration,
}

/// `jobs` readers each open, read whole and close the next file of a
/// shuffled order of `paths` (a data loader's workers on a map-style data
/// set), for `duration`.
pub fn small_files(
    paths: Vec<PathBuf>,
    direct: bool,
    jobs: usize,
    duration: Duration,
    progress: &mut Progress,
) -> Result<SmallFiles, Failure> {
    let mut order = paths;
    let mut rng = Rng::new(42);
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let order = Arc::new(order);
    let next = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + duration;
    let threads: Vec<_> = (0..jobs)
        .map(|_| {
            let (order, next, bytes) = (Arc::clone(&order), Arc::clone(&next), Arc::clone(&bytes));
            std::thread::Builder::new()
                .name("small-files".into())
                .spawn(move || -> Result<u64, Failure> {
                    let mut buf = AlignedBuf::new(SMALL_FILE, 0);
                    let mut files = 0;
                    while Instant::now() < end {
                        check_stop()?;
                        let p = &order[next.fetch_add(1, Ordering::Relaxed) % order.len()];
                        let mut f =
                            open_read(p, direct).map_err(|e| Failure::io(p.display(), e))?;
                        let mut got = 0;
                        loop {
                            let n = f.read(&mut buf.as_mut()[got..]).map_err(|e| {
                                Failure::io(format_args!("reading {}", p.display()), e)
                            })?;
                            if n == 0 || got + n == SMALL_FILE {
                                got += n;
                                break;
                            }
                            got += n;
                        }
                        files += 1;
                        bytes.fetch_add(got as u64, Ordering::Relaxed);
                    }
                    Ok(files)
                })
                .map_err(|e| Failure::io("starting a reader thread", e))
        })
        .collect::<Result<_, _>>()?;
    wait_showing(
        &threads,
        progress,
        start,
        duration,
        "small files",
        "files/s",
        || next.load(Ordering::Relaxed) as f64,
    );
    let elapsed = start.elapsed();
    let mut files = 0;
    for t in threads {
        files += join(t)?;
    }
    Ok(SmallFiles {
        files,
        bytes: bytes.load(Ordering::Relaxed),
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_distinct() {
        let a = AlignedBuf::new(SEQ_BLOCK, 1);
        let b = AlignedBuf::new(SEQ_BLOCK, 2);
        assert_eq!(a.as_ref().as_ptr() as usize % ALIGN, 0);
        assert_ne!(a.as_ref(), b.as_ref());
        assert!(a.as_ref().iter().filter(|&&x| x == 0).count() < SEQ_BLOCK / 64);
    }
}
