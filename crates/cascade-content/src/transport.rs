//! TCP for node and agent connections: read through a buffer (rustls
//! reads 4 KB at a time from its transport), without Nagle's delay.

use hyper_util::rt::TokioIo;
use tonic::transport::Uri;

/// Connects `Endpoint::connect_with_connector` to the address of its
/// URI over a `Buffered` stream; the endpoint's own TLS runs on top.
pub fn connector()
-> impl tower::Service<Uri, Response = TokioIo<Buffered>, Error = std::io::Error, Future: Send> + Send + Clone + 'static
{
    tower::service_fn(|uri: Uri| async move {
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        Ok(TokioIo::new(Buffered::new(tcp)))
    })
}

/// A TCP stream read through a 256 KB buffer. rustls asks its transport
/// for at most 4 KB at a time; without a buffer beneath it a content
/// transfer costs one `recv` system call per 4 KB.
#[derive(Debug)]
pub struct Buffered(tokio::io::BufReader<tokio::net::TcpStream>);

impl Buffered {
    pub fn new(tcp: tokio::net::TcpStream) -> Buffered {
        Buffered(tokio::io::BufReader::with_capacity(256 * 1024, tcp))
    }
}

impl tokio::io::AsyncRead for Buffered {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Buffered {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Buffered {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().connect_info()
    }
}
