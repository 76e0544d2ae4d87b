//! The docker CLI, run with a deadline. Used only best effort: a missing CLI, a
//! stopped daemon or an unknown container becomes a reason, never an abort.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

/// Runs `program args…`, killing it at `timeout`. Returns stdout on exit 0.
pub fn run_with_timeout(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    run_output(program, args, timeout).map(|(out, _)| out)
}

/// Like [`run_with_timeout`], returning stdout and stderr.
pub fn run_output(
    program: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("{program}: not installed"),
            _ => format!("{program}: {e}"),
        })?;
    // Readers on their own threads: a chatty child must not block on a full pipe
    // while we wait for it.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let status = crate::common::wait_with_deadline(&mut child, timeout)
        .map_err(|e| format!("{program}: {e}"))?;
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        None => Err(format!(
            "{program} {}: timed out after {:?}",
            args.join(" "),
            timeout
        )),
        Some(s) if s.success() => Ok((stdout, stderr)),
        Some(s) => Err(format!(
            "{program} {}: {s}: {}",
            args.join(" "),
            String::from_utf8_lossy(&stderr).trim()
        )),
    }
}

pub fn docker(args: &[&str], timeout: Duration) -> Result<Vec<u8>, String> {
    run_with_timeout("docker", args, timeout)
}

/// The host PID of a running container's init process, for its cgroup.
pub fn container_pid(name: &str, timeout: Duration) -> Result<u32, String> {
    let out = docker(&["inspect", "-f", "{{.State.Pid}}", name], timeout)?;
    let s = String::from_utf8_lossy(&out);
    match s.trim().parse::<u32>() {
        Ok(0) => Err(format!("container {name} is not running")),
        Ok(p) => Ok(p),
        Err(_) => Err(format!(
            "docker inspect {name}: unexpected pid {:?}",
            s.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_program_is_a_reason() {
        let e =
            run_with_timeout("sparkhost-no-such-tool", &[], Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("not installed"), "{e}");
    }

    #[test]
    fn timeout_kills_the_child() {
        let t = std::time::Instant::now();
        let e = run_with_timeout("sleep", &["5"], Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn stdout_and_failure() {
        assert_eq!(
            run_with_timeout("sh", &["-c", "echo hi"], Duration::from_secs(5)).unwrap(),
            b"hi\n"
        );
        let e = run_with_timeout(
            "sh",
            &["-c", "echo oops >&2; exit 3"],
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.contains("oops"), "{e}");
    }
}
