//! A load generator: N devices publishing batches of accelerometer samples
//! to an MQTT broker, in either payload format, at a set rate or flat out.
//!
//! ```sh
//! cargo run --release --example loadgen -- --port 1883 --devices 100 \
//!     --format json --batch 100 --rate 0 --duration 10
//! ```
//!
//! - `--format json` sends JSON batches, `{"t0": ..., "interval_ms": ...,
//!   "values": [[ax, ay, az], ...]}`; `--format binary` sends the binary
//!   batch (`AWB1`, int16 at `--lsb-per-unit`, 4096 by default: point the
//!   daemon's `input.binary_i16_scale` at its inverse, 0.000244140625).
//! - `--rate HZ` is samples per second per device, the messages of all
//!   devices spread evenly over each batch period; `--rate 0` publishes flat
//!   out. Each device's timestamps move on by `1000 / rate` ms a sample (20
//!   ms flat out) from the wall clock at the start; `--wall-clock` stamps
//!   each batch so its last sample is the send time instead (never going
//!   back).
//! - The samples are the shipped recording (`--source demo`,
//!   data/watch/demo.csv, each device starting at its own seeded place) or
//!   seeded synthetic motion (`--source synthetic`): the same seed sends the
//!   same payloads.
//! - JSON values are written with 6 decimals (`-1.083608`), or with
//!   `--digits N` significant digits: `--digits 17` writes them as Python's
//!   `json.dumps` writes a float made from a float32 reading
//!   (`-1.0836080312728882`), the costliest numbers for a parser.
//! - `--connections K` spreads the devices over K connections (device i on
//!   connection i mod K, client ids `<client-id>-0` .. `-K-1`): mosquitto
//!   reads one packet of each ready connection a turn of its loop, so a
//!   single connection caps what a flat-out run offers at its turn rate.
//! - It stops after `--duration` seconds or `--messages` messages, whichever
//!   comes first, and prints what it sent: one line for people, then one
//!   JSON line (`{"messages": ..., "samples": ..., ...}`) for scripts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use accelwatch::decode::{BinaryHeader, BinaryType};
use clap::{Parser, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Binary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    Demo,
    Synthetic,
}

#[derive(Debug, Parser)]
#[command(about = "Publishes N devices' accelerometer batches to an MQTT broker")]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Devices, named `<prefix>0` .. `<prefix>N-1`.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    #[arg(long, default_value = "dev-")]
    pub prefix: String,
    /// `{device}` is replaced by the device id.
    #[arg(long, default_value = "sensors/{device}/accel")]
    pub topic: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Samples per message.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Samples per second per device; 0: flat out.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages to send at most (all devices together).
    #[arg(long)]
    pub messages: Option<u64>,
    #[arg(long, value_enum, default_value = "demo")]
    pub source: Source,
    /// The recording for `--source demo`.
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// int16 counts per channel unit in binary payloads.
    #[arg(long, default_value_t = 4096.0)]
    pub lsb_per_unit: f64,
    /// Stamp each batch's last sample with the send time.
    #[arg(long)]
    pub wall_clock: bool,
    /// MQTT QoS of the publications (0 or 1).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    #[arg(long, default_value = "loadgen")]
    pub client_id: String,
    /// Connections the devices are spread over (device i on i mod K).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Significant digits of each JSON value (1 to 17); without it, 6 decimals.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=17))]
    pub digits: Option<u8>,
}

const CHANNELS: usize = 3;

/// One recording of 3-channel samples, cut into `batch`-sample blocks;
/// every block's values are encoded once, so sending costs a timestamp.
struct Blocks {
    json: Vec<String>,
    binary: Vec<Vec<u8>>,
}

fn demo_recording(path: &std::path::Path) -> Vec<[f32; CHANNELS]> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", path.display()))
    };
    let (ax, ay, az) = (col("ax"), col("ay"), col("az"));
    lines
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let n = |i: usize| f[i].parse::<f32>().expect("a number");
            [n(ax), n(ay), n(az)]
        })
        .collect()
}

/// A minute of wrist-like motion at 50 Hz: gravity, a few slow swings, noise.
fn synthetic_recording(rng: &mut ChaCha8Rng) -> Vec<[f32; CHANNELS]> {
    let freqs: [f32; CHANNELS] = std::array::from_fn(|_| rng.random_range(0.3..2.5));
    let amps: [f32; CHANNELS] = std::array::from_fn(|_| rng.random_range(0.05..0.6));
    (0..3000)
        .map(|i| {
            let t = i as f32 / 50.0;
            std::array::from_fn(|c| {
                let gravity = [0.0, 0.0, 1.0][c];
                let swing = amps[c] * (std::f32::consts::TAU * freqs[c] * t).sin();
                gravity + swing + rng.random_range(-0.02..0.02)
            })
        })
        .collect()
}

/// `value` with 6 decimals, or widened to f64 (as Python's `float()` of a
/// float32) with `digits` significant digits, positional from 1e-4 up to
/// 1e16 and with an exponent outside, as Python's repr writes it.
fn json_number(value: f32, digits: Option<u8>) -> String {
    let Some(digits) = digits else {
        return format!("{value:.6}");
    };
    let scientific = format!("{:.*e}", usize::from(digits) - 1, f64::from(value));
    let (mantissa, exp) = scientific.split_once('e').expect("an exponent");
    let exp: i32 = exp.parse().expect("an integer exponent");
    let sign = if mantissa.starts_with('-') { "-" } else { "" };
    let figures = mantissa.trim_start_matches('-').replace('.', "");
    if !(-4..16).contains(&exp) {
        return format!("{mantissa}e{exp:+03}");
    }
    if exp < 0 {
        return format!("{sign}0.{}{figures}", "0".repeat((-exp - 1) as usize));
    }
    let int_len = exp as usize + 1;
    if figures.len() > int_len {
        format!("{sign}{}.{}", &figures[..int_len], &figures[int_len..])
    } else {
        format!("{sign}{figures}{}.0", "0".repeat(int_len - figures.len()))
    }
}

impl Blocks {
    fn new(
        recording: &[[f32; CHANNELS]],
        batch: usize,
        lsb_per_unit: f64,
        digits: Option<u8>,
    ) -> Self {
        assert!(
            recording.len() >= batch,
            "the recording has {} samples, fewer than a batch of {batch}",
            recording.len()
        );
        let chunks: Vec<&[[f32; CHANNELS]]> = recording.chunks_exact(batch).collect();
        let json = chunks
            .iter()
            .map(|chunk| {
                let rows: Vec<String> = chunk
                    .iter()
                    .map(|s| {
                        let [x, y, z] = s.map(|v| json_number(v, digits));
                        format!("[{x},{y},{z}]")
                    })
                    .collect();
                format!("\"values\":[{}]}}", rows.join(","))
            })
            .collect();
        let binary = chunks
            .iter()
            .map(|chunk| {
                chunk
                    .iter()
                    .flatten()
                    .flat_map(|v| {
                        let count = (*v as f64 * lsb_per_unit)
                            .round()
                            .clamp(i16::MIN as f64, i16::MAX as f64)
                            as i16;
                        count.to_le_bytes()
                    })
                    .collect()
            })
            .collect();
        Self { json, binary }
    }

    fn len(&self) -> usize {
        self.json.len()
    }

    fn payload(&self, format: Format, block: usize, t0_ms: f64, interval_ms: f64) -> Vec<u8> {
        match format {
            Format::Json => {
                let values = &self.json[block];
                let mut payload = String::with_capacity(values.len() + 48);
                payload.push_str(&format!(
                    "{{\"t0\":{t0_ms:.1},\"interval_ms\":{interval_ms},"
                ));
                payload.push_str(values);
                payload.into_bytes()
            }
            Format::Binary => {
                let values = &self.binary[block];
                let header = BinaryHeader {
                    value_type: BinaryType::I16,
                    channels: CHANNELS as u16,
                    samples: (values.len() / (2 * CHANNELS)) as u32,
                    t0_ms,
                    interval_ms: interval_ms as f32,
                };
                let mut payload = Vec::with_capacity(BinaryHeader::LEN + values.len());
                payload.extend_from_slice(&header.to_bytes());
                payload.extend_from_slice(values);
                payload
            }
        }
    }
}

struct Device {
    topic: String,
    /// The block it sends next.
    block: usize,
    /// The timestamp of its next sample.
    next_t_ms: f64,
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// What was sent.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub messages: u64,
    pub samples: u64,
    pub bytes: u64,
    /// From the first publication to the DISCONNECT after the last.
    pub seconds: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let Sent {
        messages,
        samples,
        bytes,
        seconds,
    } = match run(&args).await {
        Ok(sent) => sent,
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::exit(1);
        }
    };
    let format = match args.format {
        Format::Json => "json",
        Format::Binary => "binary",
    };
    println!(
        "loadgen: sent {messages} {format} messages ({samples} samples, {:.1} MB) from {} \
         devices in {seconds:.2} s: {:.0} samples/s",
        bytes as f64 / 1e6,
        args.devices,
        samples as f64 / seconds,
    );
    println!(
        "{}",
        serde_json::json!({
            "format": format,
            "devices": args.devices,
            "connections": args.connections,
            "batch": args.batch,
            "rate_hz": args.rate,
            "messages": messages,
            "samples": samples,
            "bytes": bytes,
            "seconds": seconds,
            "samples_per_s": samples as f64 / seconds,
        })
    );
}

/// Connects, publishes until `--duration` or `--messages`, disconnects.
pub async fn run(args: &Args) -> Result<Sent, String> {
    if args.devices == 0 || args.batch == 0 || args.qos > 1 {
        return Err("--devices and --batch must be over 0, --qos 0 or 1".into());
    }
    if args.connections == 0 || args.connections > args.devices {
        return Err(format!(
            "--connections {} must be 1 to --devices ({})",
            args.connections, args.devices
        ));
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(format!("--rate {} is not a rate", args.rate));
    }
    if !(args.duration.is_finite() && args.duration >= 0.0) {
        return Err(format!("--duration {} is not a duration", args.duration));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let recording = match args.source {
        Source::Demo => demo_recording(&args.data.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/watch/demo.csv")
        })),
        Source::Synthetic => synthetic_recording(&mut rng),
    };
    let blocks = Blocks::new(&recording, args.batch, args.lsb_per_unit, args.digits);
    let interval_ms = if args.rate > 0.0 {
        1000.0 / args.rate
    } else {
        20.0
    };
    let start_ms = unix_ms().floor();
    let mut devices: Vec<Device> = (0..args.devices)
        .map(|i| Device {
            topic: args
                .topic
                .replace("{device}", &format!("{}{i}", args.prefix)),
            block: rng.random_range(0..blocks.len()),
            next_t_ms: start_ms,
        })
        .collect();

    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::with_capacity(args.connections);
    let mut connections = Vec::with_capacity(args.connections);
    for k in 0..args.connections {
        let id = if args.connections == 1 {
            args.client_id.clone()
        } else {
            format!("{}-{k}", args.client_id)
        };
        let (client, connection) = connect(args, &id, acked.clone()).await?;
        clients.push(client);
        connections.push(connection);
    }

    let qos = if args.qos == 1 {
        QoS::AtLeastOnce
    } else {
        QoS::AtMostOnce
    };
    let limit = args.messages.unwrap_or(u64::MAX);
    let duration = Duration::from_secs_f64(args.duration);
    // Flat out, or one message every `spacing` (all devices in turn).
    let spacing = (args.rate > 0.0)
        .then(|| Duration::from_secs_f64(args.batch as f64 / args.rate / args.devices as f64));
    let started = Instant::now();
    let (mut messages, mut bytes) = (0u64, 0u64);
    while messages < limit && started.elapsed() < duration {
        if let Some(spacing) = spacing {
            let due = started + spacing.mul_f64(messages as f64);
            // Timers are coarse: sleep only when well ahead.
            if due > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let index = (messages % args.devices as u64) as usize;
        let device = &mut devices[index];
        let batch_span = (args.batch - 1) as f64 * interval_ms;
        let t0 = if args.wall_clock {
            (unix_ms() - batch_span).max(device.next_t_ms)
        } else {
            device.next_t_ms
        };
        let payload = blocks.payload(args.format, device.block, t0, interval_ms);
        device.next_t_ms = t0 + batch_span + interval_ms;
        device.block = (device.block + 1) % blocks.len();
        bytes += payload.len() as u64;
        clients[index % args.connections]
            .publish(&device.topic, qos, false, payload)
            .await
            .map_err(|error| format!("publish: {error}"))?;
        messages += 1;
    }
    // At QoS 1, wait for every PUBACK first: closing a socket with unread
    // acks in it sends a reset, and the broker may then drop the last
    // publishes it had not read yet.
    if qos == QoS::AtLeastOnce {
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.load(std::sync::atomic::Ordering::Relaxed) < messages
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Every message is written out before the DISCONNECT.
    for client in &clients {
        let _ = client.disconnect().await;
    }
    for connection in connections {
        let _ = tokio::time::timeout(Duration::from_secs(10), connection).await;
    }
    Ok(Sent {
        messages,
        samples: messages * args.batch as u64,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One connection of the generator, its event loop spawned; resolves once
/// the broker has accepted it. PUBACKs are counted in `acked`.
async fn connect(
    args: &Args,
    client_id: &str,
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<(AsyncClient, tokio::task::JoinHandle<()>), String> {
    let mut options = MqttOptions::new(client_id, &args.host, args.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_inflight(1000);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    // Real devices each have a connection of their own; on one shared
    // connection Nagle's algorithm would hold their messages back and send
    // them in bursts a delayed ACK (~40 ms) apart.
    let mut network = eventloop.network_options();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (connected_tx, connected_rx) = tokio::sync::oneshot::channel();
    let connection = tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if let Some(tx) = connected.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(error) => {
                    eprintln!("loadgen: connection: {error}");
                    return;
                }
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(10), connected_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .is_none()
    {
        return Err(format!(
            "no connection to {}:{} within 10 s",
            args.host, args.port
        ));
    }
    Ok((client, connection))
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn json_numbers_have_the_digits_asked_for() {
        assert_eq!(json_number(-1.083608, None), "-1.083608");
        assert_eq!(json_number(-1.083608, Some(17)), "-1.0836080312728882");
        assert_eq!(json_number(0.5, Some(17)), "0.50000000000000000");
        assert_eq!(json_number(12.25, Some(3)), "12.2");
        assert_eq!(json_number(1e-5, Some(17)), "9.9999997473787516e-06");
        assert_eq!(json_number(-0.00025, Some(2)), "-0.00025");
        for v in [-19.5f32, -1.083608, 0.0, 1e-5, 3.3e-4, 7.25] {
            let text = json_number(v, Some(17));
            let figures = text.split('e').next().unwrap();
            let significant = figures.trim_start_matches(['-', '0', '.']);
            let count = significant.chars().filter(char::is_ascii_digit).count();
            assert_eq!(count, if v == 0.0 { 0 } else { 17 }, "{text}");
            assert_eq!(text.parse::<f64>().unwrap() as f32, v, "{text}");
        }
    }
}
