//! What can go wrong setting up or running a server.

use std::net::SocketAddr;

use crate::app::AppShape;

/// Errors of setting up or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The app is not an HTTP app.
    #[error("`{}` is a {shape}, which cannot serve HTTP; run it with `wisp run`", path.display())]
    NotHttp {
        /// The app.
        path: std::path::PathBuf,
        /// What it is.
        shape: AppShape,
    },
    /// Linking failed (e.g. the app imports something the host does not provide).
    #[error("failed to prepare `{}` for instantiation", path.display())]
    Prepare {
        /// The app.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: wasmtime::Error,
    },
    /// A granted directory could not be opened.
    #[error(transparent)]
    Grants(#[from] crate::wasi::WasiError),
    /// The listening socket could not be set up.
    #[error("failed to listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}
