//! librdkafka's mock cluster as a stand-alone broker for `bench/run.sh` (which measures
//! `storagetapper tail` into Kafka): prints its bootstrap address, then serves until killed.
//! In memory, one broker; topics are auto-created with 4 partitions.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    println!("{}", mock.bootstrap_servers());
    loop {
        std::thread::park();
    }
}
