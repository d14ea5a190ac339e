//! A socket with something attached to it for as long as it lives (a connection slot, a read
//! budget): [`With`] writes straight through to the socket and reads through its attachment's
//! [`ReadThrough`], which by default reads straight through too. One pass-through instead of one
//! per wrapper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How reads reach the socket (straight through unless an attachment says otherwise).
pub(crate) trait ReadThrough {
    fn poll_read_through<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(io).poll_read(cx, buf)
    }
}

/// `io` with `attached`, dropped together.
pub(crate) struct With<IO, A> {
    pub io: IO,
    pub attached: A,
}

impl<IO: AsyncRead + Unpin, A: ReadThrough + Unpin> AsyncRead for With<IO, A> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        me.attached.poll_read_through(&mut me.io, cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin, A: Unpin> AsyncWrite for With<IO, A> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
