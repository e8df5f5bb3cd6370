//! Launching several `asl` processes as torchrun would: each with its
//! RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and a free MASTER_PORT.

use std::net::TcpListener;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Sets the launch variables of `rank` of `world` on `command`.
pub fn as_rank(command: &mut Command, rank: usize, world: usize, port: u16) {
    command
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("LOCAL_WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1");
}

/// Starts `world` ranks of `command(rank)` and waits for all of them, at most `limit`.
pub fn run_ranks(world: usize, limit: Duration, command: impl Fn(usize) -> Command) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|rank| {
            let mut c = command(rank);
            as_rank(&mut c, rank, world, port);
            c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    wait_all(children, limit)
}

pub fn wait_all(mut children: Vec<Child>, limit: Duration) -> Vec<Output> {
    let deadline = Instant::now() + limit;
    while children.iter_mut().any(|c| c.try_wait().unwrap().is_none()) {
        if Instant::now() > deadline {
            children.iter_mut().for_each(|c| drop(c.kill()));
            panic!("the ranks did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}
