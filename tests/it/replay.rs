//! Replay pacing, on tokio's paused clock: every device starts together and
//! is paced by its own timestamps, scaled by the speed.

use std::time::Duration;

use crate::common::*;
use accelwatch::config::Config;
use accelwatch::source::replay::Replay;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

fn two_devices(dir: &std::path::Path) -> Config {
    let mut text = String::from("device,t_ms,ax,ay,az\n");
    for i in 0..10 {
        text += &format!("a,{},{i},0,0\n", i * 20);
        // Device b's clock starts elsewhere: only its own spacing matters.
        text += &format!("b,{},0,{i},0\n", 5000 + i * 40);
    }
    let path = dir.join("two.csv");
    write(&path, &text);
    let mut config = Config::default();
    config.input.replay.path = path;
    config
}

async fn arrivals(config: &Config) -> Vec<(String, String, Duration)> {
    let replay = Replay::open(&config.input).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    let (_stop, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let task = tokio::spawn(replay.run(tx, stop_rx));
    let mut out = Vec::new();
    while let Some(frame) = rx.recv().await {
        out.push((
            frame.device.to_string(),
            String::from_utf8(frame.payload).unwrap(),
            start.elapsed(),
        ));
    }
    assert_eq!(task.await.unwrap(), 20);
    out
}

#[tokio::test(start_paused = true)]
async fn devices_start_together_and_follow_their_own_clocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = two_devices(dir.path());
    config.input.replay.speed = 2.0;
    let frames = arrivals(&config).await;
    let at = |device: &str, n: usize| frames.iter().filter(|f| f.0 == device).nth(n).unwrap().2;
    assert!(at("b", 0) < Duration::from_millis(1), "b starts with a");
    // a: 9 * 20 ms at 2x = 90 ms; b: 9 * 40 ms at 2x = 180 ms.
    assert_eq!(at("a", 9).as_millis(), 90);
    assert_eq!(at("b", 9).as_millis(), 180);
    assert_eq!(
        frames.iter().find(|f| f.0 == "b").unwrap().1,
        "5000,0,0,0",
        "payload is the recorded sample"
    );
}

#[tokio::test(start_paused = true)]
async fn speed_zero_sends_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = two_devices(dir.path());
    config.input.replay.speed = 0.0;
    let frames = arrivals(&config).await;
    assert_eq!(frames.len(), 20);
    assert!(frames.iter().all(|f| f.2 < Duration::from_millis(1)));
}

#[tokio::test(start_paused = true)]
async fn a_loop_keeps_time_rising_and_stops_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = two_devices(dir.path());
    config.input.replay.speed = 1.0;
    config.input.replay.repeat = true;
    let replay = Replay::open(&config.input).unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(replay.run(tx, stop_rx));
    let mut last_t_a = -1.0;
    for _ in 0..50 {
        let frame = rx.recv().await.unwrap();
        if &*frame.device == "a" {
            let t: f64 = String::from_utf8(frame.payload)
                .unwrap()
                .split(',')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(t > last_t_a, "{t} after {last_t_a}");
            last_t_a = t;
        }
    }
    assert!(last_t_a > 180.0, "the second pass continues the clock");
    stop.send(true).unwrap();
    let sent = tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
    assert!(sent >= 50);
}
