//! The whole conformance suite against a real Redis Cluster (three masters, started by
//! `./scripts/services.sh`), each outbox spread over 8 partitions.

mod support;

outbox_testkit::conformance_suite!(support::RedisFactory::cluster(8));
