//! One read buffer per worker thread: sockets are read into it and what
//! arrived is copied into a buffer of exactly that size.
//!
//! Why: reading straight into a connection's `BytesMut` meant reserving
//! 4 KiB (client) and 8 KiB (upstream) for every request, since an idle
//! connection keeps no buffer and the last answer's bytes still share the
//! previous one. Allocations that large take mimalloc's slow path
//! (callgrind: ~350 instructions each, about 4 % of a request), while a
//! request head or a small answer is a few hundred bytes: copying those
//! out of a warm buffer costs less than the allocation, and a small
//! exact-size allocation stays on the fast path. Large bodies pay one
//! copy per read of up to [`SCRATCH_BYTES`], about what the allocation of
//! a read buffer cost them before.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};

/// What one read can take: larger than a typical head with its small
/// body, and what a large body streams in per read.
pub const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Reads what `io` has (waiting for it) and appends it to `dst`; `0` at
/// the end of the stream. A read that does not fill the scratch clears the
/// socket's readiness as a direct read would (epoll is edge-triggered).
pub fn poll_read_into<R: AsyncRead + ?Sized>(
    io: Pin<&mut R>,
    cx: &mut Context<'_>,
    dst: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(scratch);
        std::task::ready!(io.poll_read(cx, &mut read))?;
        let filled = read.filled();
        dst.extend_from_slice(filled);
        Poll::Ready(Ok(filled.len()))
    })
}

/// [`poll_read_into`] that does not wait: `WouldBlock` when nothing is
/// there.
pub fn try_read_into(socket: &tokio::net::TcpStream, dst: &mut BytesMut) -> io::Result<usize> {
    SCRATCH.with_borrow_mut(|scratch| {
        let n = socket.try_read(scratch)?;
        dst.extend_from_slice(&scratch[..n]);
        Ok(n)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn what_arrives_is_appended_whole_and_exactly_sized() {
        let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
        let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&sent).await.unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        let mut got = BytesMut::from(&b"before:"[..]);
        loop {
            let n = std::future::poll_fn(|cx| poll_read_into(Pin::new(&mut rx), cx, &mut got))
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(n <= SCRATCH_BYTES);
            if n == 0 {
                break;
            }
        }
        assert_eq!(&got[..7], b"before:");
        assert_eq!(&got[7..], &sent[..]);
    }

    #[tokio::test]
    async fn a_read_of_a_few_bytes_allocates_a_few_bytes() {
        let (mut tx, mut rx) = tokio::io::duplex(1024);
        tx.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut got = BytesMut::new();
        let n = std::future::poll_fn(|cx| poll_read_into(Pin::new(&mut rx), cx, &mut got))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n, 18);
        assert!(got.capacity() < 1024, "capacity {}", got.capacity());
    }
}
