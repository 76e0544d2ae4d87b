//! When bytes really crossed the socket.
//!
//! A timestamp taken where a response is parsed includes however long that
//! task waited for a CPU after the bytes arrived: on a loaded client it is
//! most of the measurement error (milliseconds at hundreds of streams on two
//! cores). So every read goes through `recvmsg` with `SO_TIMESTAMPNS`, and
//! the kernel says when the last segment of each read reached the socket.
//! The client ([`super::h1`]) hands each read's stamp to the parser with its
//! bytes, and what the parser loses by being late becomes the run's
//! *read-path delay*, a reported figure instead of a hidden error.
//!
//! One limit is the kernel's: a read that drains several segments carries the
//! stamp of the last one, so chunks that share a read are stamped late by up
//! to the gap between them. They are counted, never hidden.
//!
//! `unsafe` is allowed here only for `setsockopt`, `recvmsg` and its control
//! messages, which no socket crate exposes for an uninitialised read buffer.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Where arrival times come from.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RxClock {
    /// The kernel's receive timestamp of the read that delivered the bytes.
    #[default]
    Kernel,
    /// The moment the response parser got the bytes (what other harnesses do).
    Application,
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
}
