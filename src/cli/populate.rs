//! `eventvault populate`: fills a store offline with realistic registration records, through
//! the registry (so the bus gets its messages too), for benchmarks and demos.

use std::time::Instant;

use serde_json::{json, Value};

use crate::config::Options;
use crate::registry::{parse_records, Registry, MAX_BATCH};
use crate::startup::{self, Purpose, Started};
use crate::store;

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Linus",
    "Margaret",
    "Dennis",
    "Barbara",
    "Ken",
    "Frances",
    "Alan",
    "Radia",
    "Guido",
    "Hedy",
    "Donald",
    "Katherine",
    "Edsger",
    "Sophie",
];
const LAST: [&str; 16] = [
    "Lovelace", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen", "Turing",
    "Perlman", "Rossum", "Lamarr", "Knuth", "Johnson", "Dijkstra", "Wilson",
];
const CITIES: [&str; 8] = ["Lyon", "Berlin", "Lisbon", "Oslo", "Toronto", "Osaka", "Nairobi", "Santiago"];
const TICKETS: [&str; 4] = ["standard", "early-bird", "student", "speaker"];
const SIZES: [&str; 5] = ["XS", "S", "M", "L", "XL"];
const DIETS: [&str; 4] = ["none", "vegetarian", "vegan", "gluten-free"];
const SOURCES: [&str; 4] = ["website", "newsletter", "partner", "social"];

/// SplitMix64: fast, deterministic, and good enough to make records differ.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// A registration-like record: 16 fields, about 300 bytes of JSON.
fn record(rng: &mut Rng, n: u64) -> Value {
    let (first, last) = (rng.pick(&FIRST), rng.pick(&LAST));
    json!({
        "firstName": first,
        "lastName": last,
        "email": format!("{}.{}{}@example.com", first.to_lowercase(), last.to_lowercase(), n),
        "phone": format!("+33 6 {:02} {:02} {:02} {:02}", rng.next() % 100, rng.next() % 100, rng.next() % 100, rng.next() % 100),
        "ticket": rng.pick(&TICKETS),
        "price": (rng.next() % 50_000) as f64 / 100.0,
        "currency": "EUR",
        "city": rng.pick(&CITIES),
        "company": format!("{} {} GmbH", rng.pick(&LAST), rng.pick(&CITIES)),
        "tshirt": rng.pick(&SIZES),
        "diet": rng.pick(&DIETS),
        "source": rng.pick(&SOURCES),
        "checkedIn": rng.next().is_multiple_of(3),
        "marketingOptIn": rng.next().is_multiple_of(2),
        "reference": format!("{:016x}", rng.next()),
        "seat": rng.next() % 5000,
    })
}

/// Fills the store with `records` records spread over `events` new events (at least one:
/// `--events` is checked when it is parsed). The store is opened as the server opens it,
/// migrations included (see [`startup::open`]).
pub fn run(opts: &Options, records: u64, events: u64, seed: u64) -> anyhow::Result<()> {
    let Started { backups, lock: _lock } = startup::open(opts, Purpose::Populate)?;
    let store = backups.store().clone();
    let registry = Registry::new(store.clone());
    let started = Instant::now();
    let mut rng = Rng(seed);
    let ids: Vec<String> = (0..events)
        .map(|i| {
            let name = format!("{} Conference {}", rng.pick(&CITIES), 2000 + i);
            let event = registry.create_event(
                json!({"name": name, "city": rng.pick(&CITIES), "capacity": records / events}),
            )?;
            Ok(event.to_value()?["id"].as_str().unwrap_or_default().to_owned())
        })
        .collect::<anyhow::Result<_>>()?;
    let mut written = 0u64;
    let mut next_report = Instant::now();
    while written < records {
        let event = &ids[(written / MAX_BATCH as u64 % events) as usize];
        let n = (records - written).min(MAX_BATCH as u64);
        // The records go in as a client's batch would: one JSON array, parsed by the registry.
        let body = serde_json::to_vec(&(0..n).map(|i| record(&mut rng, written + i)).collect::<Vec<_>>())?;
        registry.create_records(event, "registrations", parse_records(&body, true)?)?;
        written += n;
        if next_report.elapsed().as_secs() >= 5 {
            eprintln!("populate: {written} of {records} records");
            next_report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!("populate: {written} records written in {secs:.1} s; waiting for compactions to settle");
    store.settle()?;
    store.close()?;
    let size = dir_size(&store::db_path(&opts.storage_dir));
    println!(
        "{}",
        json!({
            "records": records,
            "events": events,
            "seconds": (secs * 100.0).round() / 100.0,
            "recordsPerSecond": (records as f64 / secs.max(1e-9)).round(),
            "storeBytes": size,
        })
    );
    Ok(())
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_look_like_registrations() {
        let mut rng = Rng(7);
        let r = record(&mut rng, 1);
        let fields = r.as_object().unwrap().len();
        assert!((10..=20).contains(&fields), "{fields} fields");
        let size = r.to_string().len();
        assert!((250..=380).contains(&size), "{size} bytes: {r}");
    }
}
