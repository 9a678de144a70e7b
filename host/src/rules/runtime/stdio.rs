//! A guest's stdout and stderr, sent line by line to the host's `tracing`
//! log, tagged with the plugin's name. Components built by componentize-py
//! and componentize-js print through WASI; their output must end up in the
//! host's logs, not on the host's own stdout (which may carry data).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Which guest stream a line came from.
#[derive(Clone, Copy, Debug)]
pub enum Which {
    Stdout,
    Stderr,
}

/// The `StdoutStream` given to WASI for one plugin's stdout or stderr.
#[derive(Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    which: Which,
}

impl LogStream {
    pub fn new(plugin: &str, which: Which) -> Self {
        Self {
            plugin: plugin.into(),
            which,
        }
    }
}

/// Longest line kept; longer output is cut into pieces of this size so a
/// guest cannot make the host buffer without bound.
const MAX_LINE: usize = 8 * 1024;

/// One open stream: buffers a partial line until its newline arrives.
pub struct LineWriter {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while let Some(nl) = memchr::memchr(b'\n', bytes) {
            self.pending.extend_from_slice(&bytes[..nl]);
            self.emit();
            bytes = &bytes[nl + 1..];
        }
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= MAX_LINE {
            let rest = self.pending.split_off(MAX_LINE);
            self.emit();
            self.pending = rest;
        }
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.pending);
        let line = line.trim_end_matches('\r');
        let plugin = &*self.stream.plugin;
        match self.stream.which {
            Which::Stdout => tracing::info!(plugin, stream = "stdout", "{line}"),
            Which::Stderr => tracing::warn!(plugin, stream = "stderr", "{line}"),
        }
        self.pending.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.emit();
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }
}

impl LogStream {
    fn writer(&self) -> LineWriter {
        LineWriter {
            stream: self.clone(),
            pending: Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
