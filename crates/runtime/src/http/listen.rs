//! Listening sockets for the server.

use std::net::SocketAddr;

use tokio::net::TcpListener;

use crate::http::error::ServeError;

/// Binds a listening socket with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> Result<TcpListener, ServeError> {
    bind_group(addr, backlog, false)
}

/// [`bind`], joining the SO_REUSEPORT group of `addr` when `reuseport` (this
/// process's other listeners on it; the kernel only groups sockets of one user).
pub fn bind_group(
    addr: SocketAddr,
    backlog: u32,
    reuseport: bool,
) -> Result<TcpListener, ServeError> {
    let err = |source| ServeError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    // Lets a restarted server rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(err)?;
    if reuseport {
        socket.set_reuseport(true).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}
