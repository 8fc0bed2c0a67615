//! settle-loadtest: pushes realistic traffic at a Settle node and measures it.
fn main() {}
