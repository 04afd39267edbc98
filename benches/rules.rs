//! Placeholder replaced by the rules benchmarks.
fn main() {}
