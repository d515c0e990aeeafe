//! JSON lines to stdout or a file.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::Sink;
use crate::record::Output;

pub struct JsonlSink {
    writer: BufWriter<Box<dyn Write + Send>>,
}

impl JsonlSink {
    /// `-` is stdout; anything else a file, appended to.
    pub fn open(target: &str) -> Result<Self, (PathBuf, std::io::Error)> {
        let writer: Box<dyn Write + Send> = if target == "-" {
            Box::new(std::io::stdout())
        } else {
            let path = PathBuf::from(target);
            Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| (path, e))?,
            )
        };
        Ok(Self::new(writer))
    }

    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self {
            writer: BufWriter::new(writer),
        }
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        output.write_json(&mut self.writer)?;
        self.writer.write_all(b"\n")
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}
