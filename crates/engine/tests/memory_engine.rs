//! The in-memory engine passes the shared engine conformance suite.

#[test]
fn memory_engine_conforms() {
    murakumo_engine::conformance::run_all(murakumo_engine::MemoryEngine::new);
}
