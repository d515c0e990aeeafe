//! A consumer that only counts: subscribes to a topic filter, takes every
//! message the broker delivers and does nothing with it. It sets what the
//! broker (and rumqttc's reading, the daemon's own) can pass on a machine,
//! the bound on any consumer's throughput there.
//!
//! ```sh
//! cargo run --release --example mqtt_count -- --port 1883 --topic 'sensors/+/accel'
//! ```
//!
//! It prints `ready` once subscribed, then, after `--idle` seconds without
//! a message following the first, one JSON line:
//! `{"messages": ..., "bytes": ..., "seconds": ...}` (seconds from the
//! first message to the last). It then waits for its standard input to
//! close, so the caller can read its CPU time and peak RSS in /proc.

use std::time::{Duration, Instant};

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Debug, Parser)]
#[command(about = "Counts the messages an MQTT broker delivers on a topic filter")]
pub struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[arg(long, default_value = "sensors/+/accel")]
    pub topic: String,
    /// Seconds without a message, after the first, that end the count.
    #[arg(long, default_value_t = 1.0)]
    pub idle: f64,
}

/// What was delivered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counted {
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// From the first message to the last.
    pub seconds: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let counted = match count(&args, || println!("ready")).await {
        Ok(counted) => counted,
        Err(error) => {
            eprintln!("mqtt_count: {error}");
            std::process::exit(1);
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "messages": counted.messages,
            "bytes": counted.bytes,
            "seconds": counted.seconds,
        })
    );
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

/// Subscribes, calls `subscribed` once the broker has acknowledged, and
/// counts until `--idle` seconds pass without a message after the first.
pub async fn count(args: &Args, subscribed: impl FnOnce()) -> Result<Counted, String> {
    let mut options = MqttOptions::new("mqtt-count", &args.host, args.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe(&args.topic, QoS::AtMostOnce)
        .await
        .map_err(|e| e.to_string())?;
    let idle = Duration::from_secs_f64(args.idle);
    let mut subscribed = Some(subscribed);
    let (mut messages, mut bytes) = (0u64, 0u64);
    let (mut first, mut last) = (None::<Instant>, Instant::now());
    loop {
        let event = match first {
            None => eventloop.poll().await,
            Some(_) => match tokio::time::timeout(idle, eventloop.poll()).await {
                Ok(event) => event,
                Err(_) => break,
            },
        };
        match event.map_err(|e| e.to_string())? {
            Event::Incoming(Packet::SubAck(_)) => {
                if let Some(subscribed) = subscribed.take() {
                    subscribed();
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                last = Instant::now();
                first.get_or_insert(last);
                messages += 1;
                bytes += publish.payload.len() as u64;
            }
            _ => {}
        }
    }
    Ok(Counted {
        messages,
        bytes,
        seconds: first.map_or(0.0, |first| (last - first).as_secs_f64()),
    })
}
