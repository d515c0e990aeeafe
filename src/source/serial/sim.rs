//! A serial accelerometer without hardware: a pseudo-terminal pair whose
//! serial end the daemon opens by path, and a writer that plays one device
//! of a recording into the other end as firmware would, paced at its rate.
//! `examples/serial_sim.rs` runs it from the command line.

use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_serial::SerialStream;

use super::framing::encode_samples;

/// Binary frames carry this many samples; text goes line by line.
pub const SAMPLES_PER_FRAME: usize = 10;

/// int16 counts per g in the binary frames (set `input.binary_i16_scale`
/// to its inverse, 1/4096).
pub const COUNTS_PER_G: f64 = 4096.0;

/// What the simulated device sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimFormat {
    /// `ax,ay,az` lines, without device time, as most sketches print them.
    Csv,
    /// Frames of [`SAMPLES_PER_FRAME`] int16 samples at [`COUNTS_PER_G`].
    Binary,
}

/// `ax, ay, az` of every row of `device` in a CSV with those columns and a
/// `device` column.
pub fn recording_rows(path: &Path, device: &str) -> Result<Vec<[f64; 3]>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| format!("no column {name} in {}", path.display()))
    };
    let (d, ax, ay, az) = (col("device")?, col("ax")?, col("ay")?, col("az")?);
    let rows: Vec<[f64; 3]> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(d) == Some(&device))
        .map(|f| [ax, ay, az].map(|i| f.get(i).and_then(|v| v.parse().ok()).unwrap_or(0.0)))
        .collect();
    if rows.is_empty() {
        return Err(format!("no rows of device {device} in {}", path.display()));
    }
    Ok(rows)
}

/// A pseudo-terminal pair: the end to write into, a plain handle that
/// keeps the serial end open (so writes never meet a pty without a
/// reader), and the serial end's path for the daemon to open. The serial
/// port handle the pair came with is closed: it holds a lock that would
/// keep the daemon out.
pub fn pty_pair() -> std::io::Result<(SerialStream, std::fs::File, String)> {
    let (master, slave) = SerialStream::pair()?;
    let path = tokio_serial::SerialPort::name(&slave)
        .ok_or_else(|| std::io::Error::other("the pty's serial end has no path"))?;
    let keeper = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)?;
    drop(slave);
    Ok((master, keeper, path))
}

/// The bytes of one write: a CSV line of one sample, or a binary frame.
pub fn encode(rows: &[[f64; 3]], format: SimFormat) -> Vec<u8> {
    match format {
        SimFormat::Binary => {
            let values: Vec<i16> = rows
                .iter()
                .flatten()
                .map(|v| (v * COUNTS_PER_G).round().clamp(-32768.0, 32767.0) as i16)
                .collect();
            encode_samples(&values)
        }
        SimFormat::Csv => rows
            .iter()
            .flat_map(|[ax, ay, az]| format!("{ax},{ay},{az}\r\n").into_bytes())
            .collect(),
    }
}

/// Writes `rows` once, paced at `rate_hz × speed` samples per second.
pub async fn play(
    master: &mut SerialStream,
    rows: &[[f64; 3]],
    format: SimFormat,
    rate_hz: f64,
    speed: f64,
) -> std::io::Result<()> {
    let per_write = match format {
        SimFormat::Binary => SAMPLES_PER_FRAME,
        SimFormat::Csv => 1,
    };
    let period = Duration::from_secs_f64(per_write as f64 / rate_hz / speed);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for chunk in rows.chunks(per_write) {
        tick.tick().await;
        master.write_all(&encode(chunk, format)).await?;
    }
    master.flush().await
}
