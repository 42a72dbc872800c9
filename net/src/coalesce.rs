//! Yamux frame headers sent with the bytes that follow them.
//!
//! Yamux writes each frame as two writes: its 12-byte header, then its
//! body. Over TLS every write becomes at least one record and one send to
//! the socket, so each data frame cost a 12-byte record of its own (with
//! 22 bytes of record overhead) and a second system call, and the holder a
//! second wake-up. [`Coalesce`] holds a short write back and hands it to
//! the socket together with the next write, as one vectored write: rustls
//! seals the two into the same records. A flush or close sends what is
//! held. Noise buffers writes until a flush itself, so over noise the
//! vectored write simply arrives in two parts, as before.

use std::{
    io::{self, IoSlice, IoSliceMut},
    pin::Pin,
    task::{ready, Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};

/// Writes up to this long are held back for the next write. Yamux's
/// header is 12 bytes; a frame body is never this short unless the frame
/// is a tiny one, which then travels with the next frame's header.
pub(crate) const HELD: usize = 32;

/// A socket whose short writes wait for the next write (see the module).
#[derive(Debug)]
pub(crate) struct Coalesce<C> {
    inner: C,
    held: [u8; HELD],
    held_len: usize,
}

impl<C> Coalesce<C> {
    pub(crate) fn new(inner: C) -> Self {
        Coalesce {
            inner,
            held: [0; HELD],
            held_len: 0,
        }
    }
}

impl<C: AsyncWrite + Unpin> Coalesce<C> {
    /// Writes out what is held.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.held_len > 0 {
            let held = self.held.get(..self.held_len).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, held))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.forget_held(n);
        }
        Poll::Ready(Ok(()))
    }

    /// Drops the first `n` held bytes, which the socket took.
    fn forget_held(&mut self, n: usize) {
        let n = n.min(self.held_len);
        self.held.copy_within(n..self.held_len, 0);
        self.held_len -= n;
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Coalesce<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held_len == 0 {
            if let Some(slot) = this.held.get_mut(..buf.len()) {
                slot.copy_from_slice(buf);
                this.held_len = buf.len();
                return Poll::Ready(Ok(buf.len()));
            }
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        while this.held_len > 0 {
            let held = this.held.get(..this.held_len).unwrap_or_default();
            let parts = [IoSlice::new(held), IoSlice::new(buf)];
            let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, &parts))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let of_buf = n.saturating_sub(this.held_len);
            this.forget_held(n);
            if of_buf > 0 {
                return Poll::Ready(Ok(of_buf));
            }
        }
        // The socket took exactly the held bytes.
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.inner).poll_close(cx)
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for Coalesce<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_read_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{executor::block_on, AsyncWriteExt};

    /// A socket that records each write call's parts and takes at most
    /// `limit` bytes per call.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<Vec<Vec<u8>>>,
        limit: Option<usize>,
        flushes: usize,
    }

    impl Recorder {
        fn bytes(&self) -> Vec<u8> {
            self.calls.iter().flatten().flatten().copied().collect()
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let mut room = this.limit.unwrap_or(usize::MAX);
            let mut call = Vec::new();
            for b in bufs {
                let take = b.len().min(room);
                room -= take;
                if take > 0 {
                    call.push(b[..take].to_vec());
                }
            }
            let n = call.iter().map(Vec::len).sum();
            this.calls.push(call);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.get_mut().flushes += 1;
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn a_frame_header_reaches_the_socket_in_one_call_with_its_body() {
        let mut socket = Coalesce::new(Recorder::default());
        let header = [7u8; 12];
        let body = vec![9u8; 60 * 1024];
        block_on(async {
            socket.write_all(&header).await.unwrap();
            socket.write_all(&body).await.unwrap();
            socket.flush().await.unwrap();
        });
        let inner = &socket.inner;
        assert_eq!(inner.calls.len(), 1, "one write call for header and body");
        assert_eq!(inner.calls[0], vec![header.to_vec(), body]);
        assert_eq!(inner.flushes, 1);
    }

    #[test]
    fn a_flush_or_close_sends_a_held_header_alone() {
        let mut socket = Coalesce::new(Recorder::default());
        block_on(async {
            socket.write_all(&[1u8; 12]).await.unwrap();
            assert!(socket.inner.calls.is_empty(), "held until the next write");
            socket.flush().await.unwrap();
            socket.write_all(&[2u8; 12]).await.unwrap();
            socket.close().await.unwrap();
        });
        assert_eq!(socket.inner.bytes(), [[1u8; 12], [2u8; 12]].concat());
        assert_eq!(socket.inner.calls.len(), 2);
    }

    #[test]
    fn bytes_arrive_whole_and_in_order_when_the_socket_takes_few_at_a_time() {
        for limit in [1, 5, 12, 13, 100] {
            let mut socket = Coalesce::new(Recorder {
                limit: Some(limit),
                ..Recorder::default()
            });
            let mut sent = Vec::new();
            block_on(async {
                for (i, len) in [12usize, 300, 12, 12, 5, 0, 40, 12].into_iter().enumerate() {
                    let part = vec![i as u8; len];
                    socket.write_all(&part).await.unwrap();
                    sent.extend(part);
                }
                socket.flush().await.unwrap();
            });
            assert_eq!(socket.inner.bytes(), sent, "limit {limit}");
        }
    }
}
