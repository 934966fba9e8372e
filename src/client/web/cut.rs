//! Cutting a connection of the web feed off while the server is blocked
//! writing to it: a consumer that fell too far behind is closed at once,
//! so it never holds the feed's memory or slows the others (the web feed's
//! module comment).

use futures::task::AtomicWaker;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The kernel's send buffer per connection: bounds what a stalled consumer
/// holds besides its queue, and lets a stall show up as one.
const SEND_BUFFER: usize = 64 * 1024;

/// A connection's "close now" switch.
#[derive(Default)]
pub(super) struct Cut {
    cut: AtomicBool,
    waker: AtomicWaker,
}

impl Cut {
    /// Closes the connection; true the first time.
    pub(super) fn cut(&self) -> bool {
        let first = !self.cut.swap(true, Ordering::SeqCst);
        self.waker.wake();
        first
    }

    /// Registers the connection's task; an error once cut.
    fn check(&self, cx: &Context<'_>) -> io::Result<()> {
        self.waker.register(cx.waker());
        if self.cut.load(Ordering::SeqCst) {
            Err(io::Error::new(io::ErrorKind::ConnectionAborted, "cut off"))
        } else {
            Ok(())
        }
    }
}

/// The connection's switch, as the handlers see it (a request extension).
#[derive(Clone)]
pub(super) struct ConnCut(pub(super) Arc<Cut>);

/// The next connection, set up for the feed.
pub(super) async fn accept(listener: &tokio::net::TcpListener) -> CutIo {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
                return CutIo {
                    stream,
                    cut: Arc::new(Cut::default()),
                };
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, not spin.
                tracing::warn!("web feed: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub(super) struct CutIo {
    stream: tokio::net::TcpStream,
    pub(super) cut: Arc<Cut>,
}

impl AsyncRead for CutIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CutIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.cut.check(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
