//! Maps a partner file and reports rows per second (a measurement aid, not a test):
//! `cargo run --release -p settle-adapters --example map_file -- MAPPING.toml FILE`.

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mapping), Some(file)) = (args.get(1), args.get(2)) else {
        return Err("usage: map_file MAPPING.toml FILE".into());
    };
    let mapping = settle_adapters::Mapping::from_toml(&std::fs::read_to_string(mapping)?)?;
    let started = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    for row in settle_adapters::Rows::new(mapping, std::fs::File::open(file)?, file)? {
        let row = row?;
        rows += 1;
        bytes = row.bytes_read;
        std::hint::black_box(settle_adapters::canonical_json(&row.tx));
    }
    let ms = started.elapsed().as_millis().max(1);
    eprintln!("{rows} rows, {bytes} bytes in {ms} ms: {} rows/s", u128::from(rows) * 1000 / ms);
    Ok(())
}
