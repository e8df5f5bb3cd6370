//! Measurements in a child process of their own, so that one's peak RSS
//! does not include another's.

use std::io::Read;
use std::process::Command;

/// Runs this benchmark binary again with `--child` and `args`, behind
/// `wrapper` (a command such as strace, or nothing): its stdout, and the
/// peak RSS in MB of the process waited for.
pub fn run_child(wrapper: &[&str], args: &[&str]) -> (String, f64) {
    let exe = std::env::current_exe().unwrap();
    let mut command = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(&exe);
            command
        }
        None => Command::new(&exe),
    };
    // Reaped by wait4 below, which also gives the child's own peak RSS (std's wait does not).
    #[allow(clippy::zombie_processes)]
    let mut child = command.arg("--child").args(args).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut report = String::new();
    child.stdout.take().unwrap().read_to_string(&mut report).unwrap();
    // SAFETY: waits for the child spawned above, once, filling a zeroed rusage with its own figures.
    let (status, peak_mb) = unsafe {
        let (mut status, mut usage): (i32, libc::rusage) = (0, std::mem::zeroed());
        libc::wait4(child.id() as i32, &mut status, 0, &mut usage);
        (status, usage.ru_maxrss as f64 / 1024.0)
    };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child {args:?} failed");
    (report, peak_mb)
}
