//! Benchmarks of the core (placeholder until the bench workloads land).
fn main() {}
