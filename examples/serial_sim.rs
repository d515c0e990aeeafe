//! A serial accelerometer without hardware: creates a pseudo-terminal
//! pair, prints the path of its serial end, and writes one device of the
//! shipped recording into it as firmware would, paced at 50 Hz.
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

use accelwatch::serial::framing::encode_samples;
use tokio::io::AsyncWriteExt;
use tokio_serial::SerialStream;

struct Args {
    speed: f64,
    binary: bool,
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
        binary: false,
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
                args.binary = match value().as_str() {
                    "csv" => false,
                    "binary" => true,
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

/// `ax, ay, az` of every row of `device` in a `device,t_ms,...,ax,ay,az,...` file.
fn rows(args: &Args) -> Vec<[f64; 3]> {
    let text = std::fs::read_to_string(&args.data)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", args.data.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {}", args.data.display()))
    };
    let (device, ax, ay, az) = (col("device"), col("ax"), col("ay"), col("az"));
    let rows: Vec<[f64; 3]> = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(device) == Some(&args.device.as_str()))
        .map(|f| [ax, ay, az].map(|i| f[i].parse().unwrap_or(0.0)))
        .collect();
    assert!(!rows.is_empty(), "no rows of device {}", args.device);
    rows
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = args();
    let rows = rows(&args);
    let (mut master, mut slave) = SerialStream::pair().expect("create a pseudo-terminal pair");
    // Our end of the slave stays open (so writes never hit a closed pty)
    // but must not keep the daemon from opening it.
    slave.set_exclusive(false).expect("shared slave");
    let path = tokio_serial::SerialPort::name(&slave).expect("the slave has a path");
    if let Some(link) = &args.link {
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&path, link).expect("create the link");
        println!("{} -> {path}", link.display());
    } else {
        println!("{path}");
    }
    eprintln!(
        "writing {} samples of {} as {} at {} Hz; Ctrl-C to stop",
        rows.len(),
        args.device,
        if args.binary {
            "binary frames"
        } else {
            "csv lines"
        },
        50.0 * args.speed
    );
    // Binary frames carry 10 samples; text goes line by line.
    let per_write = if args.binary { 10 } else { 1 };
    let period = Duration::from_secs_f64(per_write as f64 / 50.0 / args.speed);
    let mut tick = tokio::time::interval(period);
    loop {
        for chunk in rows.chunks(per_write) {
            tick.tick().await;
            let bytes = if args.binary {
                let values: Vec<i16> = chunk
                    .iter()
                    .flatten()
                    .map(|v| (v * 4096.0).round().clamp(-32768.0, 32767.0) as i16)
                    .collect();
                encode_samples(&values)
            } else {
                let [ax, ay, az] = chunk[0];
                format!("{ax},{ay},{az}\r\n").into_bytes()
            };
            tokio::select! {
                written = master.write_all(&bytes) => written.expect("write to the pty"),
                _ = tokio::signal::ctrl_c() => return,
            }
        }
        if !args.repeat {
            break;
        }
    }
    // Let the reader drain before the pty disappears.
    tokio::time::sleep(Duration::from_secs(1)).await;
}
