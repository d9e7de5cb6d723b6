//! A connection that lets h2 write a small gRPC message and what follows it in one write.
//!
//! h2 writes the payload of a DATA frame at or above a threshold straight from the message
//! (chained after its frame header, no copy), and must then write it out before it takes the
//! next frame: a unary response (HEADERS, DATA, trailers) becomes two TLS records and two
//! `writev` calls, a request three. The threshold is 256 bytes on a connection that reports
//! vectored writes, as `tokio_rustls` streams do, and 1 KiB on one that does not.
//! [`WholeFrames`] reports none, so messages under 1 KiB (a `Sign` response, a follower's
//! answer to `AppendEntries`) are copied into h2's buffer with their neighbours and go out in
//! one record and one system call. Larger payloads are written in two calls (the buffered
//! frames, then the payload) instead of one vectored call.
//!
//! The servers' connections use it (`server_tls::incoming`). The clients' (`pool`) do not:
//! there it saved writes but no CPU, since on loopback what a write costs is mostly the
//! receiver's wake-up, which a message needs however many writes carry it
//! (docs/performance.md, item 32).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// `T`, reporting no vectored writes (see the module documentation).
#[derive(Debug)]
pub struct WholeFrames<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for WholeFrames<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WholeFrames<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        false
    }
}

impl<T: Connected> Connected for WholeFrames<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn it_reports_no_vectored_writes_and_passes_bytes_through() {
        let (a, b) = tokio::io::duplex(64);
        let (mut a, mut b) = (WholeFrames(a), WholeFrames(b));
        assert!(!a.is_write_vectored());
        a.write_all(b"frame").await.unwrap();
        a.flush().await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"frame");
    }
}
