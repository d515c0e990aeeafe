//! A sink that keeps every output in memory.

use std::sync::{Arc, Mutex};

use accelwatch::record::{AlertRecord, Output, WindowRecord};
use accelwatch::sink::Sink;

/// Collects outputs in memory; clones share the collection.
#[derive(Clone, Default)]
pub struct Collect(Arc<Mutex<Vec<Output>>>);

impl Sink for Collect {
    fn name(&self) -> &'static str {
        "collect"
    }
    fn write(&mut self, output: &Output) -> std::io::Result<()> {
        self.0.lock().unwrap().push(output.clone());
        Ok(())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Collect {
    /// How many outputs (windows, alerts, statuses) arrived.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// The window records of `device`, in arrival order.
    pub fn windows_of(&self, device: &str) -> Vec<WindowRecord> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|o| match o {
                Output::Window(w) if &*w.device == device => Some(w.clone()),
                _ => None,
            })
            .collect()
    }

    /// The alert records, in arrival order.
    pub fn alerts(&self) -> Vec<AlertRecord> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some(a.clone()),
                _ => None,
            })
            .collect()
    }
}

impl Collect {
    /// Every output, in arrival order.
    pub fn outputs(&self) -> Vec<Output> {
        self.0.lock().unwrap().clone()
    }
}
