//! The limits on connections and requests: `--web.max-connections` (the
//! longest idle connection closed first), `--web.max-requests` (503
//! beyond it), the header and idle deadlines, and the stream wrapper that
//! tells them when bytes arrive.

use super::*;

/// The two deadlines of a connection without a request in flight.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// From the first byte of a request to the end of its headers.
    pub(super) header: Duration,
    /// From accept, or the end of the last response, to the first byte of
    /// the next request.
    pub(super) idle: Duration,
}

/// The open connections, for `--web.max-connections`.
pub(super) struct Connections {
    pub(super) max: usize,
    pub(super) epoch: Instant,
    pub(super) next_id: AtomicU64,
    pub(super) open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// One open connection, as the limits see it.
pub(super) struct Conn {
    pub(super) id: u64,
    pub(super) epoch: Instant,
    /// Requests in flight on it (more than one only when pipelined).
    pub(super) busy: AtomicUsize,
    /// Milliseconds since `epoch` when it last became idle (accepted, or
    /// its last response written).
    pub(super) idle_since: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the first byte of the next
    /// request arrived; 0 while none has.
    pub(super) head_since: AtomicU64,
    /// Set when it is closed to make room.
    pub(super) killed: Notify,
    /// Set when the first byte of a request arrives.
    pub(super) head_started: Notify,
}

impl Connections {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new connection, closing the longest idle one if the
    /// bound is reached; `None` when every open connection is busy.
    pub(super) fn admit(&self) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.max > 0 && open.len() >= self.max {
            let victim = open
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| (c.idle_since.load(Ordering::Acquire), c.id))
                .map(|c| c.id)?;
            if let Some(c) = open.remove(&victim) {
                tracing::debug!(
                    "--web.max-connections reached: closing the longest idle connection"
                );
                c.killed.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = ms(self.epoch);
        let c = Arc::new(Conn {
            id,
            epoch: self.epoch,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(0),
            killed: Notify::new(),
            head_started: Notify::new(),
        });
        open.insert(id, c.clone());
        Some(c)
    }

    pub(super) fn remove(&self, c: &Conn) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c.id);
    }
}

pub(super) fn ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Conn {
    /// A request's headers are complete: it is busy until the returned
    /// marker is dropped (its response written).
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        Busy(self.clone())
    }

    /// Bytes arrived: if the connection was idle, a request has begun.
    pub(super) fn read_some(&self) {
        if self.busy.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, ms(self.epoch) + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// How long until one of its deadlines may have passed; `None` while a
    /// request is in flight (no deadline then).
    pub(super) fn wait(&self, l: Limits) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = ms(self.epoch);
        let due = match self.head_since.load(Ordering::Acquire) {
            0 => self.idle_since.load(Ordering::Acquire) + l.idle.as_millis() as u64,
            h => h - 1 + l.header.as_millis() as u64,
        };
        Some(Duration::from_millis(due.saturating_sub(now) + 1))
    }

    /// Why it must be closed now, if it must.
    pub(super) fn expired(&self, l: Limits) -> Option<&'static str> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = ms(self.epoch);
        match self.head_since.load(Ordering::Acquire) {
            0 if now >= self.idle_since.load(Ordering::Acquire) + l.idle.as_millis() as u64 => {
                Some("idle for --web.idle-timeout")
            }
            0 => None,
            h if now >= h - 1 + l.header.as_millis() as u64 => {
                Some("request headers not received within --web.header-timeout")
            }
            _ => None,
        }
    }
}

/// Marks a connection busy while a request is served.
pub(super) struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(ms(c.epoch), Ordering::Release);
        c.busy.fetch_sub(1, Ordering::AcqRel);
        // The idle deadline starts now: wake the connection's task.
        c.head_started.notify_one();
    }
}

/// What a request holds until its response is written.
pub(super) struct Guard {
    pub(super) _permit: Option<OwnedSemaphorePermit>,
    pub(super) _busy: Busy,
}

/// A response body that releases its request's slot once written (hyper
/// drops the body when it has sent the last of it, or the connection ends).
pub(super) struct Served {
    pub(super) body: Full<Bytes>,
    pub(super) _guard: Guard,
}

impl http_body::Body for Served {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A plain or TLS stream.
pub(super) enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// A connection's stream that tells its [`Conn`] when bytes arrive, so the
/// header deadline runs from a request's first byte and not while the
/// connection sits idle between keep-alive requests.
pub(super) struct Tracked {
    pub(super) inner: Io,
    pub(super) conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The answer to a request beyond `--web.max-requests`.
pub(super) fn too_many_requests(max: usize) -> Response<Full<Bytes>> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("503 too many concurrent requests (--web.max-requests={max})\n"),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}
