//! Yamux over the secure channel, with frames sized to fill noise's
//! frames, and each frame's header handed to the channel together with
//! its body ([`Coalesce`], which matters over TLS).
//!
//! A yamux connection writes each frame and then flushes its socket, and
//! over noise every flush seals one noise frame and sends it. Yamux's
//! default cuts writes into 16 KiB frames, so a shard moved in 16 KiB
//! noise frames: four seals, four `sendto`s and four wake-ups of the
//! holder where one would do. Frames here carry up to [`FRAME_BODY`]
//! bytes, which with yamux's 12-byte header still fit the 65,519 bytes a
//! noise frame carries. libp2p's own yamux upgrade does not expose the
//! frame size, so this module drives the `yamux` crate itself.
//!
//! The wire protocol is yamux 1.0.0 unchanged: a frame may be as long as
//! the receiver's window allows, and the window starts at 256 KiB. Peers
//! with libp2p's stock upgrade read these frames as any other.

use std::{
    collections::VecDeque,
    io, iter,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use futures::{future, ready, AsyncRead, AsyncWrite};
use libp2p::core::{
    muxing::{StreamMuxer, StreamMuxerEvent},
    upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo},
};

use crate::coalesce::Coalesce;

/// Largest body of one yamux data frame: 60 KiB, under noise's 65,519-byte
/// payload with the 12-byte yamux header.
pub(crate) const FRAME_BODY: usize = 60 * 1024;

const _: () = assert!(crate::shard::CHUNK.is_multiple_of(FRAME_BODY));

/// Inbound streams opened by the remote that wait to be taken; more are
/// dropped (the remote sees a reset).
const MAX_WAITING_INBOUND: usize = 256;

/// The yamux upgrade kith's TCP transport negotiates as `/yamux/1.0.0`.
#[derive(Clone, Debug)]
pub(crate) struct Config(yamux::Config);

impl Default for Config {
    fn default() -> Self {
        let mut cfg = yamux::Config::default();
        cfg.set_split_send_size(FRAME_BODY);
        // As with libp2p's upgrade: a stream closed for reading stays closed.
        cfg.set_read_after_close(false);
        Config(cfg)
    }
}

impl UpgradeInfo for Config {
    type Info = &'static str;
    type InfoIter = iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        iter::once("/yamux/1.0.0")
    }
}

impl<C> InboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            Coalesce::new(io),
            self.0,
            yamux::Mode::Server,
        ))))
    }
}

impl<C> OutboundConnectionUpgrade<C> for Config
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer<C>;
    type Error = io::Error;
    type Future = future::Ready<Result<Muxer<C>, io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        future::ready(Ok(Muxer::new(yamux::Connection::new(
            Coalesce::new(io),
            self.0,
            yamux::Mode::Client,
        ))))
    }
}

/// A yamux connection as a libp2p stream muxer.
#[derive(Debug)]
pub(crate) struct Muxer<C> {
    connection: yamux::Connection<Coalesce<C>>,
    /// Streams the remote opened while the swarm polled the connection for
    /// other reasons; handed out by `poll_inbound`.
    waiting: VecDeque<yamux::Stream>,
    inbound_waker: Option<Waker>,
}

impl<C> Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    fn new(connection: yamux::Connection<Coalesce<C>>) -> Self {
        Muxer {
            connection,
            waiting: VecDeque::new(),
            inbound_waker: None,
        }
    }

    /// Drives the connection until the remote opens a stream.
    fn next_inbound(&mut self, cx: &mut Context<'_>) -> Poll<Result<yamux::Stream, Error>> {
        match ready!(self.connection.poll_next_inbound(cx)) {
            Some(Ok(stream)) => Poll::Ready(Ok(stream)),
            Some(Err(e)) => Poll::Ready(Err(Error(e))),
            None => Poll::Ready(Err(Error(yamux::ConnectionError::Closed))),
        }
    }
}

impl<C> StreamMuxer for Muxer<C>
where
    C: AsyncRead + AsyncWrite + Unpin + 'static,
{
    type Substream = yamux::Stream;
    type Error = Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        if let Some(stream) = self.waiting.pop_front() {
            return Poll::Ready(Ok(stream));
        }
        if let Poll::Ready(r) = self.next_inbound(cx) {
            return Poll::Ready(r);
        }
        self.inbound_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.connection.poll_new_outbound(cx).map_err(Error)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx).map_err(Error)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        let this = self.get_mut();
        // The swarm polls here to keep the connection moving; a stream the
        // remote opens meanwhile waits for `poll_inbound`.
        let stream = ready!(this.next_inbound(cx))?;
        if this.waiting.len() < MAX_WAITING_INBOUND {
            this.waiting.push_back(stream);
            if let Some(waker) = this.inbound_waker.take() {
                waker.wake();
            }
        } else {
            tracing::warn!("dropping an inbound stream: {MAX_WAITING_INBOUND} already wait");
        }
        // More may be ready: ask to be polled again rather than loop here.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A yamux connection failed.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct Error(yamux::ConnectionError);

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e.0 {
            yamux::ConnectionError::Io(e) => e,
            other => io::Error::other(other),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::{Arc, Mutex};

    use futures::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::compat::TokioAsyncReadCompatExt;

    use super::*;

    /// Passes writes through and keeps a copy of every byte written.
    struct Recorder<T> {
        inner: T,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl<T: AsyncRead + Unpin> AsyncRead for Recorder<T> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl<T: AsyncWrite + Unpin> AsyncWrite for Recorder<T> {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    /// Body lengths of the data frames in a yamux byte stream.
    fn data_frames(mut wire: &[u8]) -> Vec<usize> {
        let mut bodies = Vec::new();
        while wire.len() >= 12 {
            let kind = wire[1];
            let len = u32::from_be_bytes(wire[8..12].try_into().unwrap()) as usize;
            wire = &wire[12..];
            if kind == 0 {
                bodies.push(len);
                wire = &wire[len..];
            }
        }
        bodies
    }

    #[tokio::test]
    async fn a_large_write_leaves_in_frames_of_sixty_kib() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dial = tokio::net::TcpStream::connect(addr);
        let (dialed, accepted) = tokio::join!(dial, listener.accept());
        let written = Arc::new(Mutex::new(Vec::new()));
        let client_io = Recorder {
            inner: dialed.unwrap().compat(),
            written: Arc::clone(&written),
        };
        let mut client =
            yamux::Connection::new(client_io, Config::default().0, yamux::Mode::Client);
        let mut server = yamux::Connection::new(
            accepted.unwrap().0.compat(),
            Config::default().0,
            yamux::Mode::Server,
        );

        let data: Vec<u8> = (0..crate::shard::CHUNK * 2).map(|i| i as u8).collect();
        let received = tokio::spawn(async move {
            let mut stream = future::poll_fn(|cx| server.poll_next_inbound(cx))
                .await
                .unwrap()
                .unwrap();
            let driver = tokio::spawn(async move {
                while let Some(Ok(_)) = future::poll_fn(|cx| server.poll_next_inbound(cx)).await {}
            });
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            driver.abort();
            got
        });
        let mut stream = future::poll_fn(|cx| client.poll_new_outbound(cx))
            .await
            .unwrap();
        let driver = tokio::spawn(async move {
            while let Some(Ok(_)) = future::poll_fn(|cx| client.poll_next_inbound(cx)).await {}
        });
        for chunk in data.chunks(crate::shard::CHUNK) {
            stream.write_all(chunk).await.unwrap();
        }
        stream.close().await.unwrap();
        assert!(received.await.unwrap() == data, "the bytes differ");
        driver.abort();

        let frames = data_frames(&written.lock().unwrap());
        let full = frames.iter().filter(|&&n| n == FRAME_BODY).count();
        assert!(frames.iter().all(|&n| n <= FRAME_BODY), "{frames:?}");
        // Window updates may cut a frame short now and then, but most
        // leave whole.
        assert!(full * FRAME_BODY >= data.len() / 2, "{frames:?}");
    }
}
