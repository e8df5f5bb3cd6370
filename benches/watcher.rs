//! The heartbeat watcher at scale: W simulated ranks on one TCPStore (this
//! process hosts it), each publishing its heartbeat every 250 ms from its
//! own thread and its own store client, its main loop moving every 100 ms,
//! and each running the real watcher, always "in flight", so that every
//! check is judged. Reports the store requests per second (beats and
//! checks, counted by the native clients), the latency of one check (one
//! `multiGet` of every rank's key) and the false losses: any verdict at all,
//! since every simulated rank is alive and moving.
//!
//! `cargo bench --bench watcher` (60 s at each of W = 8, 64, 256);
//! `ASL_WATCH_SECONDS` and `ASL_WATCH_WORLDS` (comma-separated) change them.

use asl::distributed::{Liveness, LostRank, StoreAddress, StoreServer, WatchSetup, Watcher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Measured {
    world: usize,
    seconds: f64,
    requests_per_second: f64,
    checks: u64,
    p50: Duration,
    p99: Duration,
    false_losses: u64,
}

fn simulate(world: usize, seconds: u64) -> Measured {
    let timeout = Duration::from_secs(30);
    let server = StoreServer::start(timeout).expect("a store can be hosted");
    let ranks: Vec<Arc<Liveness>> = (0..world)
        .map(|rank| Arc::new(Liveness::connect("127.0.0.1", server.port(), "bench", rank, world, timeout).unwrap()))
        .collect();
    let in_flight = Arc::new(AtomicUsize::new(1));
    let losses = Arc::new(AtomicU64::new(0));
    let watchers: Vec<Watcher> = ranks
        .iter()
        .enumerate()
        .map(|(rank, liveness)| {
            let setup = WatchSetup {
                rank,
                world,
                heartbeat_timeout: Duration::from_secs(30),
                stall_timeout: Duration::from_secs(5),
                store: StoreAddress { address: format!("127.0.0.1:{}", server.port()), host: "this process".into() },
                in_flight: Arc::clone(&in_flight),
            };
            let losses = Arc::clone(&losses);
            let on_lost = Box::new(move |lost: LostRank| {
                eprintln!("false loss: {lost}");
                losses.fetch_add(1, Ordering::SeqCst);
            });
            Watcher::start(Arc::clone(liveness), setup, on_lost)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let main_loops = {
        let (ranks, stop) = (ranks.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut step = 0;
            while !stop.load(Ordering::SeqCst) {
                step += 1;
                ranks.iter().for_each(|r| r.record_progress(Some(step)));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    // Counted from after the start-up, in which every client connected.
    std::thread::sleep(Duration::from_secs(1));
    let requests = |ranks: &[Arc<Liveness>]| ranks.iter().map(|r| r.requests()).sum::<u64>();
    let (started, before) = (Instant::now(), requests(&ranks));
    let checks_before: u64 = watchers.iter().map(|w| w.times().checks.load(Ordering::Relaxed)).sum();
    std::thread::sleep(Duration::from_secs(seconds));
    let elapsed = started.elapsed().as_secs_f64();
    let made = requests(&ranks) - before;
    let checks: u64 = watchers.iter().map(|w| w.times().checks.load(Ordering::Relaxed)).sum::<u64>() - checks_before;
    // Every watcher's checks in one histogram.
    let merged = asl::distributed::CheckTimes::default();
    for watcher in &watchers {
        for (into, from) in merged.buckets.iter().zip(&watcher.times().buckets) {
            into.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
    // The verdicts are in; the watchers go before the main loops stop moving.
    let false_losses = losses.load(Ordering::SeqCst);
    in_flight.store(0, Ordering::SeqCst);
    drop(watchers);
    stop.store(true, Ordering::SeqCst);
    main_loops.join().unwrap();
    drop(ranks);
    Measured {
        world,
        seconds: elapsed,
        requests_per_second: made as f64 / elapsed,
        checks,
        p50: merged.quantile(0.5),
        p99: merged.quantile(0.99),
        false_losses,
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark skipped outside `cargo bench`");
        return;
    }
    let seconds = std::env::var("ASL_WATCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let worlds: Vec<usize> = std::env::var("ASL_WATCH_WORLDS")
        .unwrap_or_else(|_| "8,64,256".into())
        .split(',')
        .filter_map(|w| w.trim().parse().ok())
        .collect();
    println!("| W | seconds | store requests/s | per rank | checks | check latency p50 | p99 | false losses |");
    println!("|---|---|---|---|---|---|---|---|");
    for world in worlds {
        let m = simulate(world, seconds);
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {} | < {:.2} ms | < {:.2} ms | {} |",
            m.world,
            m.seconds,
            m.requests_per_second,
            m.requests_per_second / m.world as f64,
            m.checks,
            m.p50.as_secs_f64() * 1e3,
            m.p99.as_secs_f64() * 1e3,
            m.false_losses
        );
    }
}
