//! The VM backend's side of the guest agent connection.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

pub use rootfs_agent::client::{AgentClient, Process, ProcessIo};
pub use rootfs_agent::protocol::{ProcessSpec, ReadyInfo, Rlimit, StartRequest};

use super::VmError;

/// Wrap a connected console socket in an agent session (waits for the agent's Ready).
pub fn connect_agent(conn: UnixStream) -> Result<AgentClient, VmError> {
    let writer = conn
        .try_clone()
        .map_err(|e| VmError::Agent(format!("cloning the agent socket: {e}")))?;
    AgentClient::connect(conn, writer).map_err(VmError::from)
}

/// Run the container process in the guest behind `conn` with the given stdio and return its
/// exit code (shell style: 128+N after signal N, 127 not found, 126 not executable).
pub fn run_in_guest(
    conn: UnixStream,
    start: StartRequest,
    stdin: Option<Box<dyn Read + Send>>,
    stdout: Box<dyn Write + Send>,
    stderr: Box<dyn Write + Send>,
) -> Result<i32, VmError> {
    let client = connect_agent(conn)?;
    let process = client.start(
        &start,
        ProcessIo {
            stdin,
            stdout,
            stderr,
        },
    )?;
    Ok(process.wait()?)
}
