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

/// Sets the variables `srun` gives task `rank` of `world` on node `node`
/// (its `local`-th task there, `per_node` tasks a node), with the job
/// script's MASTER_ADDR and MASTER_PORT, and `restarts` requeues so far.
pub fn as_slurm_task(command: &mut Command, task: SlurmTask, port: u16) {
    command
        .env("SLURM_PROCID", task.rank.to_string())
        .env("SLURM_NTASKS", task.world.to_string())
        .env("SLURM_NODEID", task.node.to_string())
        .env("SLURM_LOCALID", task.local.to_string())
        .env("SLURM_TASKS_PER_NODE", task.per_node.to_string())
        .env("SLURM_RESTART_COUNT", task.restarts.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("OMP_NUM_THREADS", "1");
}

/// One task of a Slurm job step, as `srun` places it.
#[derive(Debug, Clone, Copy)]
pub struct SlurmTask {
    pub rank: usize,
    pub world: usize,
    pub node: usize,
    pub local: usize,
    pub per_node: usize,
    pub restarts: u32,
}

/// A child whose stderr is read as it comes, each line with the instant it arrived.
pub struct Watched {
    pub child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stdout: Option<std::thread::JoinHandle<String>>,
}

impl Watched {
    pub fn spawn(command: &mut Command) -> Self {
        let mut child =
            command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut out, &mut text);
            text
        });
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push((Instant::now(), line));
            }
        });
        Self { child, lines, reader: Some(reader), stdout: Some(stdout) }
    }

    /// When a stderr line containing `text` arrived, waiting up to `limit` for it.
    pub fn wait_for_line(&self, text: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((at, _)) = self.lines.lock().unwrap().iter().find(|(_, l)| l.contains(text)) {
                return *at;
            }
            assert!(Instant::now() < deadline, "no line with {text:?} within {limit:?}: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// Waits for the child (killed after `limit`); its status, stdout and stderr.
    pub fn finish(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not finish within {limit:?}: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = self.stdout.take().map(|t| t.join().unwrap()).unwrap_or_default();
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        (status, stdout + &self.stderr())
    }
}
