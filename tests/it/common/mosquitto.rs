//! A real mosquitto broker on a free 127.0.0.1 port, test clients of it,
//! and the messages they receive.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{write, Child, Run};

fn mosquitto_binary() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the MQTT tests need a real broker: install the Debian package mosquitto \
                 (apt-get install mosquitto), or run .ci/run as root"
            )
        })
}

/// A port nobody listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto process of our own; killed on drop.
pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// `users`: (name, password) pairs; any makes the broker refuse
    /// anonymous clients.
    pub fn start_with(users: &[(&str, &str)]) -> Self {
        Self::start_conf(users, |_| String::new())
    }

    /// `extra` writes more config (e.g. a TLS listener) into the broker's
    /// directory, after the plain listener.
    pub fn start_conf(users: &[(&str, &str)], extra: impl FnOnce(&Path) -> String) -> Self {
        Self::start_full(users, false, extra)
    }

    /// A broker that keeps its clients' persistent sessions (and their
    /// queued QoS 1 messages) across a restart, even after SIGKILL: it
    /// saves them every second.
    pub fn start_persistent() -> Self {
        Self::start_persistent_conf("")
    }

    /// A persistent broker with more config, e.g. `queue_qos0_messages true`.
    pub fn start_persistent_conf(extra: &str) -> Self {
        Self::start_full(&[], true, |_| extra.to_string())
    }

    fn start_full(
        users: &[(&str, &str)],
        persistent: bool,
        extra: impl FnOnce(&Path) -> String,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let persistence = if persistent {
            // A broker started as root runs as the user mosquitto, which
            // must be able to write its database here.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
            format!(
                "persistence true\npersistence_location {}/\nautosave_interval 1\n",
                dir.path().display()
            )
        } else {
            "persistence false\n".to_string()
        };
        let mut conf = format!(
            "per_listener_settings false\n{persistence}max_queued_messages 100000\n\
             message_size_limit 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
             log_type information\nlog_type subscribe\nlistener {port} 127.0.0.1\n"
        );
        if users.is_empty() {
            conf.push_str("allow_anonymous true\n");
        } else {
            let passwords = dir.path().join("passwords");
            for (i, (user, password)) in users.iter().enumerate() {
                let mut cmd = Command::new("mosquitto_passwd");
                cmd.arg("-b");
                if i == 0 {
                    cmd.arg("-c");
                }
                let out = cmd
                    .arg(&passwords)
                    .arg(user)
                    .arg(password)
                    .run_within(Duration::from_secs(30))
                    .expect("mosquitto_passwd (Debian package mosquitto)");
                assert!(out.status.success(), "{out:?}");
            }
            conf.push_str(&format!(
                "allow_anonymous false\npassword_file {}\n",
                passwords.display()
            ));
        }
        conf.push_str(&extra(dir.path()));
        write(&dir.path().join("mosquitto.conf"), &conf);
        let mut broker = Self {
            port,
            dir,
            child: None,
        };
        broker.restart();
        broker
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Child::spawn(
            Command::new(mosquitto_binary())
                .arg("-c")
                .arg(self.dir.path().join("mosquitto.conf"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(self.log_path()).unwrap()),
        );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the broker (SIGSTOP freezes it, SIGCONT thaws it).
    pub fn signal(&self, signal: libc::c_int) {
        self.child
            .as_ref()
            .expect("a running broker")
            .signal(signal);
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }

    /// What the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the broker logged `client_id`'s subscription to
    /// `filter` (`log_type subscribe` is logged once the subscription is in
    /// place).
    pub async fn wait_subscribed(&self, client_id: &str, filter: &str) {
        let needle = format!(" {client_id} ");
        super::wait_until(
            Duration::from_secs(30),
            &format!("{client_id}'s subscription to {filter}"),
            || {
                let found = self
                    .log()
                    .lines()
                    .any(|l| l.contains(&needle) && l.trim_end().ends_with(filter));
                async move { found }
            },
        )
        .await;
    }

    /// A test client of this broker (see [`client`]).
    pub async fn client(&self, id: &str, topics: &[&str]) -> (AsyncClient, Messages) {
        client(self.port, id, topics).await
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a test client's connection reports.
#[derive(Debug)]
pub enum Got {
    Connected,
    Subscribed,
    Message(String, Vec<u8>),
}

pub type Messages = mpsc::UnboundedReceiver<Got>;

/// How long a test client waits for its connection and subscriptions.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// A test client; reconnects by itself and subscribes to `topics` on every
/// connect. Returns once connected (and subscribed, if asked to).
pub async fn client(port: u16, id: &str, topics: &[&str]) -> (AsyncClient, Messages) {
    client_with(port, id, topics, true).await
}

/// A test client with a persistent session (`clean_session = false`): a
/// broker that keeps sessions queues its QoS 1 messages while it is away.
pub async fn persistent_client(port: u16, id: &str, topics: &[&str]) -> (AsyncClient, Messages) {
    client_with(port, id, topics, false).await
}

async fn client_with(
    port: u16,
    id: &str,
    topics: &[&str],
    clean_session: bool,
) -> (AsyncClient, Messages) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_clean_session(clean_session);
    options.set_max_packet_size(8 << 20, 8 << 20);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    let wanted = topics.len();
    let subscriber = client.clone();
    tokio::spawn(async move {
        loop {
            let got = match events.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                    for topic in &topics {
                        subscriber.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
                    }
                    Got::Connected
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => Got::Subscribed,
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    Got::Message(p.topic.clone(), p.payload.to_vec())
                }
                Ok(_) => continue,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.send(got).is_err() {
                return;
            }
        }
    });
    // Wait for the connection and every SubAck (one per topic).
    let mut pending = wanted + 1;
    let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
    while pending > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Got::Connected | Got::Subscribed)) => pending -= 1,
            Ok(Some(Got::Message(..))) => {}
            Ok(None) => panic!("test client {id}: its task ended"),
            Err(_) => {
                panic!("test client {id}: not connected and subscribed in {CLIENT_DEADLINE:?}")
            }
        }
    }
    (client, rx)
}

/// Waits for the client behind `rx` to be subscribed again (after a
/// reconnection).
pub async fn resubscribed(rx: &mut Messages) {
    let deadline = tokio::time::Instant::now() + CLIENT_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Got::Subscribed)) => return,
            Ok(Some(_)) => {}
            Ok(None) => panic!("subscriber gone"),
            Err(_) => panic!("the test client did not subscribe again in {CLIENT_DEADLINE:?}"),
        }
    }
}

/// Publishes at QoS 1.
pub async fn publish(client: &AsyncClient, topic: &str, payload: Vec<u8>) {
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
}

/// How long [`Received::until`] waits.
pub const RECEIVE_DEADLINE: Duration = Duration::from_secs(90);

/// Messages received, as (topic, JSON).
#[derive(Default)]
pub struct Received(pub Vec<(String, Value)>);

impl Received {
    /// Receives until `done` holds; fails naming `what` after
    /// [`RECEIVE_DEADLINE`].
    pub async fn until(&mut self, rx: &mut Messages, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + RECEIVE_DEADLINE;
        while !done(self) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Got::Message(topic, payload))) => {
                    let value = serde_json::from_slice(&payload).expect("JSON payload");
                    self.0.push((topic, value));
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("subscriber gone"),
                Err(_) => panic!(
                    "timed out waiting for {what}; got {} messages",
                    self.0.len()
                ),
            }
        }
    }

    pub fn on(&self, topic: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, v)| v)
            .collect()
    }
}
