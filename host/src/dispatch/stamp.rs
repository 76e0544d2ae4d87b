//! When bytes really crossed the socket.
//!
//! A timestamp taken where a response is parsed includes however long that
//! task waited for a CPU after the bytes arrived: on a loaded client it is
//! most of the measurement error (milliseconds at hundreds of streams on two
//! cores). So every connection is a [`StampedStream`]: reads go through
//! `recvmsg` with `SO_TIMESTAMPNS`, and the kernel says when the last segment
//! of each read reached the socket; writes note when a request's first byte was
//! handed to the kernel. The parser reads both from the connection's
//! [`Stamps`], which hyper hands to every response as an extension, and what it
//! loses by being late becomes the run's *read-path delay*, a reported figure
//! instead of a hidden error.
//!
//! One limit is the kernel's: a read that drains several segments carries the
//! stamp of the last one, so chunks that share a read are stamped late by up
//! to the gap between them. They are counted, never hidden.
//!
//! `unsafe` is allowed here only for `setsockopt`, `recvmsg` and its control
//! messages, which no socket crate exposes for an uninitialised read buffer.
#![allow(unsafe_code)]

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use tokio::io::{AsyncWrite, Interest};
use tokio::net::TcpStream;

/// Where arrival times come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RxClock {
    /// The kernel's receive timestamp of the read that delivered the bytes.
    #[default]
    Kernel,
    /// The moment the response parser got the bytes (what other harnesses do).
    Application,
}

#[derive(Debug, Default)]
struct State {
    /// A write has happened since the last read that returned data.
    writing: bool,
    /// When the current request's first byte went to `write`.
    write_started: Option<Instant>,
    /// Arrival of the newest kernel-stamped read, and that read's number.
    last_arrival: Option<(Instant, u64)>,
    /// Reads that returned data so far.
    reads: u64,
}

/// What one connection's socket calls saw, shared with its responses.
#[derive(Debug, Clone, Default)]
pub struct Stamps(Arc<Mutex<State>>);

/// The newest read's arrival and its sequence number on the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub at: Instant,
    pub read: u64,
}

impl Stamps {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_write(&self, at: Instant) {
        let mut s = self.lock();
        if !s.writing {
            s.writing = true;
            s.write_started = Some(at);
        }
    }

    fn on_read(&self, arrival: Option<Instant>) {
        let mut s = self.lock();
        s.writing = false;
        s.reads += 1;
        // An unstamped read (timestamps are switched on lazily by the kernel)
        // must not inherit an older read's stamp: the parser then uses its own clock.
        s.last_arrival = arrival.map(|at| (at, s.reads));
    }

    /// When the request now on this connection started to be written.
    pub fn request_written(&self) -> Option<Instant> {
        self.lock().write_started
    }

    /// The newest kernel-stamped read, if the socket gives stamps.
    pub fn last_arrival(&self) -> Option<Arrival> {
        self.lock()
            .last_arrival
            .map(|(at, read)| Arrival { at, read })
    }
}

/// Asks the kernel to stamp every segment this socket receives.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid fd, an int option and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One non-blocking `recvmsg` into `buf`: bytes read and, when the socket
/// stamps, the arrival of the last segment read, on the monotonic clock.
pub fn recv_stamped(
    fd: RawFd,
    buf: &mut [MaybeUninit<u8>],
) -> io::Result<(usize, Option<Instant>)> {
    // Room for one timespec cmsg (and a spare), aligned for cmsghdr.
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is its documented initial state.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: iov points at `buf` (writable, its length), control at `control`.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut arrival = None;
    // SAFETY: the CMSG_* walk stays within msg_controllen, set by the kernel.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                arrival = Some(to_monotonic(ts));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, arrival))
}

/// Polls one [`recv_stamped`] on a tokio socket until it has bytes (or EOF,
/// or an error), for any reader that wants arrival stamps.
pub fn poll_recv_stamped(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [MaybeUninit<u8>],
) -> Poll<io::Result<(usize, Option<Instant>)>> {
    let fd = sock.as_raw_fd();
    let want = buf.len();
    loop {
        ready!(sock.poll_read_ready(cx))?;
        let mut got = None;
        // A short read drained the socket: reporting WouldBlock from the
        // closure makes tokio forget the readiness (as its own TcpStream
        // does), instead of the next poll paying a recvmsg that fails.
        let r = sock.try_io(Interest::READABLE, || {
            let (n, arrival) = recv_stamped(fd, buf)?;
            got = Some((n, arrival));
            if n > 0 && n < want {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        });
        match (r, got) {
            (_, Some(read)) => return Poll::Ready(Ok(read)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => continue,
            (Err(e), None) => return Poll::Ready(Err(e)),
            (Ok(()), None) => unreachable!("the closure ran and set `got`"),
        }
    }
}

/// [`poll_recv_stamped`] into an initialised buffer, for readers that keep
/// their bytes in a plain `[u8]`.
pub fn poll_recv_stamped_init(
    sock: &TcpStream,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<(usize, Option<Instant>)>> {
    // SAFETY: `MaybeUninit<u8>` has `u8`'s layout, and recvmsg only ever
    // writes initialised bytes into it, so `buf` stays initialised.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    poll_recv_stamped(sock, cx, uninit)
}

/// Kernel stamps are wall-clock; the harness measures on the monotonic clock.
/// Both are read now, so only the wall clock's slew since arrival (parts per
/// million of a delay that is itself milliseconds) enters the conversion. The
/// wall clock is read between two monotonic reads, and again if this thread
/// lost its CPU in between, so the pair is at most a few µs apart.
fn to_monotonic(stamp: libc::timespec) -> Instant {
    let ns = |t: &libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
    let mut pair = None;
    for _ in 0..4 {
        let before = Instant::now();
        let mut wall = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid clock id and a valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut wall) };
        let after = Instant::now();
        let gap = after - before;
        pair = Some((before + gap / 2, ns(&wall)));
        if gap < Duration::from_micros(20) {
            break;
        }
    }
    let (now, wall) = pair.expect("the loop runs at least once");
    let delay = wall - ns(&stamp);
    // A stepped wall clock gives a negative or absurd delay; fall back to now.
    if (0..10_000_000_000).contains(&delay) {
        now.checked_sub(Duration::from_nanos(delay as u64))
            .unwrap_or(now)
    } else {
        now
    }
}

/// A TCP connection that records [`Stamps`] for hyper.
pub struct StampedStream {
    inner: TcpStream,
    stamps: Stamps,
}

impl StampedStream {
    /// Stamps are asked for whichever clock is reported: with the
    /// application clock they still measure its read-path delay.
    pub fn new(inner: TcpStream) -> Self {
        if let Err(e) = enable_rx_timestamps(inner.as_raw_fd()) {
            tracing::warn!("receive timestamps unavailable ({e}); arrivals are read times");
        }
        StampedStream {
            inner,
            stamps: Stamps::default(),
        }
    }
}

impl Read for StampedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        // SAFETY: recv only writes initialised bytes into the slice, and
        // `advance` is called with exactly the count it wrote.
        let unfilled = unsafe { buf.as_mut() };
        let (n, arrival) = ready!(poll_recv_stamped(&me.inner, cx, unfilled))?;
        if n > 0 {
            me.stamps.on_read(arrival);
        }
        unsafe { buf.advance(n) };
        Poll::Ready(Ok(()))
    }
}

impl Write for StampedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.stamps.on_write(Instant::now());
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        me.stamps.on_write(Instant::now());
        Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connection for StampedStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.stamps.clone())
    }
}

/// hyper's own connector (DNS, timeouts, `TCP_NODELAY`) with every
/// connection wrapped in a [`StampedStream`].
#[derive(Clone)]
pub struct StampingConnector(pub HttpConnector);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for StampingConnector {
    type Response = StampedStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<StampedStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.0.call(dst);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(StampedStream::new(io.into_inner()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn kernel_stamps_precede_a_late_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tx = TcpStream::connect(addr).await.unwrap();
        let (rx, _) = listener.accept().await.unwrap();
        enable_rx_timestamps(rx.as_raw_fd()).unwrap();
        // The kernel switches stamping on from a work queue: probe until it has.
        let mut buf = [MaybeUninit::uninit(); 64];
        for _ in 0..200 {
            tx.write_all(b"p").await.unwrap();
            rx.readable().await.unwrap();
            if let Ok((_, Some(_))) = recv_stamped(rx.as_raw_fd(), &mut buf) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let written = Instant::now();
        tx.write_all(b"hello").await.unwrap();
        let returned = Instant::now();
        // The reader is 30 ms late; the stamp must still say when it arrived.
        std::thread::sleep(Duration::from_millis(30));
        rx.readable().await.unwrap();
        let (n, arrival) = recv_stamped(rx.as_raw_fd(), &mut buf).unwrap();
        let read_at = Instant::now();
        assert_eq!(n, 5);
        let arrival = arrival.expect("loopback TCP gives receive timestamps");
        // Loopback queues to the peer inside the write call. The wall-to-
        // monotonic conversion may be off by a clock read or two (µs).
        let slack = Duration::from_micros(200);
        assert!(arrival + slack >= written, "stamped before the write");
        assert!(
            arrival <= returned + slack,
            "stamped after the write returned"
        );
        assert!(read_at - arrival >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn unstamped_sockets_give_no_arrival() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (rx, _) = listener.accept().await.unwrap();
        tx.write_all(b"x").await.unwrap();
        rx.readable().await.unwrap();
        let mut buf = [MaybeUninit::uninit(); 8];
        let (n, arrival) = recv_stamped(rx.as_raw_fd(), &mut buf).unwrap();
        assert_eq!((n, arrival), (1, None));
    }

    #[test]
    fn a_request_is_stamped_at_its_first_write_after_a_read() {
        let s = Stamps::default();
        let t0 = Instant::now();
        s.on_write(t0);
        s.on_write(t0 + Duration::from_millis(1));
        assert_eq!(s.request_written(), Some(t0));
        s.on_read(Some(t0 + Duration::from_millis(2)));
        let t3 = t0 + Duration::from_millis(3);
        s.on_write(t3);
        assert_eq!(s.request_written(), Some(t3));
        assert_eq!(
            s.last_arrival(),
            Some(Arrival {
                at: t0 + Duration::from_millis(2),
                read: 1
            })
        );
        s.on_read(None);
        assert_eq!(s.last_arrival(), None, "an unstamped read has no arrival");
    }
}
