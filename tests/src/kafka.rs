//! Apache Kafka clusters of a test's own: one or three KRaft nodes (broker
//! and controller in one process each), run by `services/kafka/node` from
//! the jars `scripts/setup` installs, on free ports and in a temporary
//! folder, so that a test can stop or kill them without troubling others.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::process::free_port;

/// One node's process and where it listens.
struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
    data: PathBuf,
    child: Option<Child>,
}

/// A Kafka cluster of this test's own; its processes are killed and its
/// data removed when it is dropped.
pub struct KafkaCluster {
    nodes: Vec<Node>,
    voters: String,
    replication: usize,
    root: PathBuf,
}

/// The cluster id every node of one cluster is formatted with.
const CLUSTER_ID: &str = "MkU3OEVBNTcwNTJENDM2Qg";

fn node_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../services/kafka/node")
}

impl KafkaCluster {
    /// Starts `size` nodes, all voters of the controller quorum; topics and
    /// the internal ones are replicated `size` times (with 3 or more nodes,
    /// `min.insync.replicas=2`). Fails the test when the cluster does not
    /// answer within two minutes.
    pub fn start(size: usize) -> Self {
        let root =
            std::env::temp_dir().join(format!("eshop-kafka-{}", uuid::Uuid::now_v7().simple()));
        let nodes: Vec<Node> = (1..=size)
            .map(|i| Node {
                id: i32::try_from(i).expect("node id"),
                port: free_port(),
                controller_port: free_port(),
                data: root.join(format!("node-{i}")),
                child: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            nodes,
            voters,
            replication: size,
            root,
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_until_serving(Duration::from_secs(120));
        cluster
    }

    fn spawn(&mut self, index: usize) {
        let node = &self.nodes[index];
        std::fs::create_dir_all(&node.data).expect("node folder");
        let output = std::fs::File::create(node.data.join("stdout.log")).expect("node log");
        let child = Command::new(node_script())
            .args(["--id", &node.id.to_string()])
            .args(["--port", &node.port.to_string()])
            .args(["--controller-port", &node.controller_port.to_string()])
            .args(["--voters", &self.voters])
            .args(["--cluster-id", CLUSTER_ID])
            .args(["--replication", &self.replication.to_string()])
            .args(["--heap", "384m"])
            .arg("--data")
            .arg(&node.data)
            .stdin(Stdio::null())
            .stdout(Stdio::from(output.try_clone().expect("node log")))
            .stderr(Stdio::from(output))
            .spawn()
            .expect("services/kafka/node runs (scripts/setup installs Kafka)");
        self.nodes[index].child = Some(child);
    }

    /// `host:port,…` of every node, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every running node is a broker that the cluster's
    /// metadata lists.
    pub fn wait_until_serving(&mut self, deadline: Duration) {
        let started = Instant::now();
        let running: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect();
        loop {
            for node in &mut self.nodes {
                if let Some(child) = &mut node.child
                    && let Ok(Some(status)) = child.try_wait()
                {
                    panic!(
                        "Kafka node {} exited ({status}); see {}",
                        node.id,
                        node.data.display()
                    );
                }
            }
            if let Ok(brokers) = self.brokers()
                && running.iter().all(|id| brokers.contains(id))
            {
                return;
            }
            assert!(
                started.elapsed() < deadline,
                "the Kafka cluster did not answer in {deadline:?}; see the logs under {}",
                self.root.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn client(&self) -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("metadata client")
    }

    /// The ids of the brokers the cluster's metadata lists.
    fn brokers(&self) -> Result<Vec<i32>, rdkafka::error::KafkaError> {
        let metadata = self.client().fetch_metadata(None, Duration::from_secs(2))?;
        Ok(metadata.brokers().iter().map(|b| b.id()).collect())
    }

    /// The node id that leads `partition` of `topic` now.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let metadata = self
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|leader| *leader >= 0)
    }

    fn node(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("a node of this cluster")
    }

    /// `kill -9` of node `id`: no shutdown, no flush.
    pub fn kill(&mut self, id: i32) {
        if let Some(mut child) = self.node(id).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal (`-STOP`, `-CONT`, …) to node `id`'s process.
    pub fn signal(&self, id: i32, signal: &str) {
        let node = self
            .nodes
            .iter()
            .find(|n| n.id == id)
            .expect("a node of this cluster");
        let pid = node.child.as_ref().expect("a running node").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal} {pid}");
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let ids: Vec<i32> = self.nodes.iter().map(|n| n.id).collect();
        for id in ids {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}
