//! The in-memory reference store passes the whole conformance suite.

outbox_testkit::conformance_suite!(outbox_testkit::MemoryFactory::default());
