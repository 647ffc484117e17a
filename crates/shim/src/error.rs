//! The one error of the Task API boundary and its one mapping to ttrpc's
//! status codes. Every layer returns a [`TaskError`] (or an error it turns
//! into one with a kind); only the daemon's adapter converts it.

use containerd_shim::protos::ttrpc::{self, Code};

/// What kind of failure a [`TaskError`] is; each maps to one ttrpc code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such container or process.
    NotFound,
    /// A container or exec id in use.
    AlreadyExists,
    /// The call does not fit the process's state (start twice, delete a
    /// running process, pause a stopped one).
    FailedPrecondition,
    /// The request or the bundle is wrong: the spec, the module, the stdio.
    InvalidArgument,
    /// Something Wisp does not do (a Wasm terminal, checkpoint).
    Unimplemented,
    /// The host failed: cgroups, runc, mounts.
    Internal,
    /// A process did not stop in time.
    DeadlineExceeded,
}

/// A failed Task call: its kind and a message naming what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TaskError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type TaskResult<T> = Result<T, TaskError>;

impl TaskError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("{what}: not found"))
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn unimplemented(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unimplemented, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// An invalid-argument error with `e`'s whole source chain.
    pub fn invalid_chain(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::invalid(wisp_runtime::error_chain(e))
    }

    /// `context: e` as an internal error (the common case of a host call).
    pub fn internal_io(context: &str, e: impl std::fmt::Display) -> Self {
        Self::internal(format!("{context}: {e}"))
    }
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        let code = match e.kind {
            ErrorKind::NotFound => Code::NOT_FOUND,
            ErrorKind::AlreadyExists => Code::ALREADY_EXISTS,
            ErrorKind::FailedPrecondition => Code::FAILED_PRECONDITION,
            ErrorKind::InvalidArgument => Code::INVALID_ARGUMENT,
            ErrorKind::Unimplemented => Code::UNIMPLEMENTED,
            ErrorKind::Internal => Code::INTERNAL,
            ErrorKind::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_code_and_keeps_the_message() {
        let e: ttrpc::Error = TaskError::not_found("container x").into();
        let ttrpc::Error::RpcStatus(status) = e else {
            panic!("not a status: {e:?}");
        };
        assert_eq!(status.code(), Code::NOT_FOUND);
        assert_eq!(status.message, "container x: not found");
    }
}
