//! What `rlsd train` draws on a terminal, run through the real binary on a
//! pseudo-terminal: under `rlsd train | tee log` (stdout piped, stderr a
//! terminal) no progress-bar frame reaches the terminal, only plain lines;
//! with both on a terminal the bar is drawn; and the table's header is not
//! printed when the run is refused at start-up.

mod common;
#[path = "common/timed.rs"]
mod timed;

use std::fs::File;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A pseudo-terminal: the master end (read what the child drew) and the
/// slave end (hand it to the child as stdout and/or stderr).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize {
        ws_row: 40,
        ws_col: 160,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new descriptors into the out-pointers; the
    // name and termios arguments may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Everything the child writes to the terminal, read until every slave end
/// is closed (Linux then answers EIO).
fn read_terminal(master: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = File::from(master);
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    })
}

/// `rlsd train` of three tiny steps into `out_dir`.
fn train_cmd(model: &Path, out_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rlsd"));
    cmd.args(["train", "--model", model.to_str().unwrap()]);
    for set in [
        "runtime.steps=3".to_string(),
        "rollout.batch_prompts=2".into(),
        "rollout.group_size=2".into(),
        "rollout.max_new_tokens=6".into(),
        format!("runtime.out_dir={}", out_dir.display()),
    ] {
        cmd.args(["--set", &set]);
    }
    cmd.env("TERM", "xterm-256color")
        .env("NO_COLOR", "1")
        .env_remove("RLSD_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

/// The bar's own text: `step N/3 [===>   ]`.
fn has_bar_frame(text: &str) -> bool {
    (0..=3).any(|n| text.contains(&format!("step {n}/3 [")))
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`) and carriage
/// returns, as a person reads the terminal.
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.next() == Some('[') {
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
            }
            '\r' => out.push('\n'),
            c => out.push(c),
        }
    }
    out
}

fn header_lines(text: &str) -> usize {
    plain(text)
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.starts_with(&["step", "reward", "acc"])
        })
        .count()
}

#[test]
fn piped_stdout_gets_plain_lines_and_the_terminal_no_bar_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    common::pretrain_tiny(&model);
    let limit = Duration::from_secs(300);

    // `rlsd train | tee log`: stdout a pipe, stderr the terminal.
    let (master, slave) = pty();
    let reader = read_terminal(master);
    let out_dir = tmp.path().join("tee");
    let mut cmd = train_cmd(&model, &out_dir);
    cmd.stdout(Stdio::piped()).stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let mut pipe = child.stdout.take().unwrap();
    let piped = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    });
    let status = timed::wait_within(&mut child, limit, "rlsd train | tee");
    let stdout = piped.join().unwrap();
    let terminal = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{stdout}\n{terminal}");
    assert!(
        !has_bar_frame(&terminal),
        "bar frames on the terminal:\n{terminal:?}"
    );
    assert!(
        !terminal.contains("\x1b["),
        "escape codes on the terminal:\n{terminal:?}"
    );
    assert!(
        !stdout.contains('\r') && !stdout.contains('\x1b'),
        "{stdout:?}"
    );
    assert_eq!(header_lines(&stdout), 1, "{stdout}");
    for step in 1..=3 {
        assert_eq!(
            stdout
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(&step.to_string()))
                .count(),
            1,
            "step {step}:\n{stdout}"
        );
    }

    // Both on the terminal: the bar is drawn (so the check above can fail).
    let (master, slave) = pty();
    let reader = read_terminal(master);
    let mut cmd = train_cmd(&model, &tmp.path().join("tty"));
    let slave_out = slave.try_clone().unwrap();
    cmd.stdout(Stdio::from(slave_out))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let status = timed::wait_within(&mut child, limit, "rlsd train on a terminal");
    let terminal = String::from_utf8_lossy(&reader.join().unwrap()).into_owned();
    assert!(status.success(), "{terminal}");
    assert!(
        has_bar_frame(&terminal),
        "no bar on a terminal:\n{terminal:?}"
    );
    assert_eq!(header_lines(&terminal), 1, "{terminal}");

    // A run refused at start-up (the folder holds a run) prints no header.
    let out = timed::output_within(&mut train_cmd(&model, &out_dir), limit);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("already holds a run"), "{stderr}");
    assert_eq!(
        header_lines(&stdout),
        0,
        "header before a refusal:\n{stdout}"
    );
}
