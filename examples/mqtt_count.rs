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
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, default_value = "sensors/+/accel")]
    topic: String,
    /// Seconds without a message, after the first, that end the count.
    #[arg(long, default_value_t = 1.0)]
    idle: f64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let mut options = MqttOptions::new("mqtt-count", &args.host, args.port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client
        .subscribe(&args.topic, QoS::AtMostOnce)
        .await
        .expect("the subscription queued");
    let idle = Duration::from_secs_f64(args.idle);
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
        match event {
            Ok(Event::Incoming(Packet::SubAck(_))) => println!("ready"),
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                last = Instant::now();
                first.get_or_insert(last);
                messages += 1;
                bytes += publish.payload.len() as u64;
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("mqtt_count: {error}");
                std::process::exit(1);
            }
        }
    }
    let seconds = first.map_or(0.0, |first| (last - first).as_secs_f64());
    println!(
        "{}",
        serde_json::json!({"messages": messages, "bytes": bytes, "seconds": seconds})
    );
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}
