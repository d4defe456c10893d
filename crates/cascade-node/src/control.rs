//! The node's local control socket, `cascade-control.sock` in its data
//! directory. A running node holds its store exclusively; operators' local
//! commands (backup) reach it through this socket, which only users with
//! access to the data directory can open.
//!
//! Protocol: the client sends one line, `backup`; the node answers `ok` and
//! the backup stream, or `error <message>`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cascade_store::Store;

/// The socket's name in a data directory.
pub const SOCKET: &str = "cascade-control.sock";

pub fn socket_path(data: &Path) -> PathBuf {
    data.join(SOCKET)
}

/// Serves the control socket for `store` until `stop` is set. Each
/// connection is handled on its own thread.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(store: Arc<Store>, data: &Path) -> std::io::Result<ControlServer> {
        let path = socket_path(data);
        // A socket left by a node that died is stale: nobody can be
        // listening, since this node holds the store's lock.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new().name("control".into()).spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let store = store.clone();
                            let _ = std::thread::Builder::new()
                                .name("control-conn".into())
                                .spawn(move || serve(&store, stream));
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                    }
                }
            })?
        };
        Ok(ControlServer {
            path,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(store: &Store, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut out = std::io::BufWriter::new(stream);
    match line.trim() {
        "backup" => {
            let _ = out.write_all(b"ok\n");
            if let Err(e) = store.backup(&mut out) {
                // The stream is cut; the client's checksum check catches it.
                let _ = writeln!(out, "error {e}");
            }
        }
        other => {
            let _ = writeln!(out, "error unknown request {other:?}");
        }
    }
    let _ = out.flush();
}

/// Asks the node running on `data` for a backup, writing it to `out` as it
/// arrives; its size. On an error what was written is not a backup.
pub fn request_backup(data: &Path, out: &mut impl Write) -> Result<u64, String> {
    let path = socket_path(data);
    let mut stream = UnixStream::connect(&path).map_err(|e| {
        format!(
            "the store in {} is in use, and its node does not answer on {}: {e}",
            data.display(),
            path.display()
        )
    })?;
    let io = |e: std::io::Error| format!("the control socket {}: {e}", path.display());
    stream.write_all(b"backup\n").map_err(io)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(io)?;
    if let Some(message) = status.trim().strip_prefix("error ") {
        return Err(format!("the node refused the backup: {message}"));
    }
    if status.trim() != "ok" {
        return Err(format!("unexpected answer from the node: {status:?}"));
    }
    // Copied as it arrives and checked at its end: `out` is not a backup
    // unless this returns `Ok`.
    Store::copy_backup(reader, out).map_err(|e| e.to_string())
}
