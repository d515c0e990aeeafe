//! A serial accelerometer without hardware: creates a pseudo-terminal
//! pair, prints the path of its serial end, and writes one device of the
//! shipped recording into it as firmware would, paced at 50 Hz
//! (`accelwatch::source::serial::sim`, which tests/it/serial.rs exercises).
//!
//! ```sh
//! cargo run --example serial_sim -- [--speed 1] [--format csv|binary] [--link /tmp/accel0] [--loop]
//! ```
//!
//! Then point `[[input.serial.ports]] path` at the printed path (or the
//! `--link`). `csv` writes `ax,ay,az` lines (no device time, as most
//! sketches print them); `binary` writes frames of 10 int16 samples at
//! 1/4096 g per LSB (set `input.binary_i16_scale = 0.000244140625`).

use std::path::PathBuf;
use std::time::Duration;

use accelwatch::source::serial::sim::{self, SimFormat};

struct Args {
    speed: f64,
    format: SimFormat,
    link: Option<PathBuf>,
    repeat: bool,
    data: PathBuf,
    device: String,
}

fn usage() -> ! {
    eprintln!(
        "usage: serial_sim [--speed X] [--format csv|binary] [--link PATH] [--loop] \
         [--data CSV] [--device ID]"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut args = Args {
        speed: 1.0,
        format: SimFormat::Csv,
        link: None,
        repeat: false,
        data: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/watch/demo.csv"),
        device: "watch-9".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match arg.as_str() {
            "--speed" => {
                args.speed = value().parse().unwrap_or_else(|_| usage());
                if !(args.speed > 0.0 && args.speed.is_finite()) {
                    usage()
                }
            }
            "--format" => {
                args.format = match value().as_str() {
                    "csv" => SimFormat::Csv,
                    "binary" => SimFormat::Binary,
                    _ => usage(),
                }
            }
            "--link" => args.link = Some(value().into()),
            "--loop" => args.repeat = true,
            "--data" => args.data = value().into(),
            "--device" => args.device = value(),
            _ => usage(),
        }
    }
    args
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let rows = sim::recording_rows(&args.data, &args.device).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let (mut master, _slave, path) = sim::pty_pair().expect("create a pseudo-terminal pair");
    if let Some(link) = &args.link {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&path, link).expect("create the link");
        println!("{} -> {path}", link.display());
    } else {
        println!("{path}");
    }
    eprintln!(
        "writing {} samples of {} as {:?} at {} Hz; Ctrl-C to stop",
        rows.len(),
        args.device,
        args.format,
        50.0 * args.speed
    );
    loop {
        tokio::select! {
            played = sim::play(&mut master, &rows, args.format, 50.0, args.speed) => {
                played.expect("write to the pty")
            }
            _ = tokio::signal::ctrl_c() => return,
        }
        if !args.repeat {
            break;
        }
    }
    // Let the reader drain before the pty disappears.
    tokio::time::sleep(Duration::from_secs(1)).await;
}
