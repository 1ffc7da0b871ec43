//! A Hugging Face hub for tests: a hand-written HTTP/1.1 server on 127.0.0.1 serving the hub's file
//! route, `GET /{repo}/resolve/{revision}/{file}`, for repos the test publishes, with the headers the
//! `hf-hub` client reads (`etag`, `x-repo-commit`, `content-range` for ranges). It logs every request
//! with its `Range`, and can cut one download short (drop the connection) or stall it (so the test can
//! kill the downloading process) after a given number of bytes.
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::Digest;

/// What the next full download of a file does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Sends `after` bytes of `file`, then closes the connection (once).
    Drop { file: String, after: usize },
    /// Sends `after` bytes of `file`, then closes the connection (every time).
    Cut { file: String, after: usize },
    /// Sends `after` bytes of `file`, then waits without closing (every time).
    Stall { file: String, after: usize },
}

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    log: Vec<String>,
    fault: Option<Fault>,
    /// Bytes of the faulty file sent so far.
    sent: usize,
}

/// The server; it runs until the test process ends (each test has its own, on its own port).
#[derive(Clone)]
pub struct TestHub {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
}

/// The commit every repo of the test hub is at.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

impl TestHub {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let s = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || serve(stream, &s));
            }
        });
        Self { endpoint, state }
    }

    /// Publishes `file` of `repo` (`owner/name`).
    pub fn put(&self, repo: &str, file: &str, bytes: Vec<u8>) {
        self.state.lock().unwrap().files.insert(format!("{repo}/{file}"), bytes);
    }

    /// Publishes every file of the folder `dir` as `repo`.
    pub fn put_dir(&self, repo: &str, dir: &Path) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                self.put(repo, path.file_name().unwrap().to_str().unwrap(), std::fs::read(&path).unwrap());
            }
        }
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut s = self.state.lock().unwrap();
        s.fault = fault;
        s.sent = 0;
    }

    /// Bytes of the faulty file sent so far.
    pub fn sent(&self) -> usize {
        self.state.lock().unwrap().sent
    }

    /// Every request so far, as `PATH range=RANGE`.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }
}

/// An address on which nothing listens: a hub that is offline.
pub fn offline_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut out = stream;
    let found = {
        let mut s = state.lock().unwrap();
        s.log.push(format!("{path} range={}", range.as_deref().unwrap_or("-")));
        // /{owner}/{name}/resolve/{revision}/{file}
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        match parts.as_slice() {
            [owner, name, "resolve", _rev, file] => {
                s.files.get(&format!("{owner}/{name}/{file}")).cloned().map(|b| (b, file.to_string(), s.fault.clone()))
            }
            _ => None,
        }
    };
    let Some((bytes, file, fault)) = found else {
        let _ = out.write_all(
            b"HTTP/1.1 404 Not Found\r\nx-error-code: EntryNotFound\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
        return;
    };
    let total = bytes.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")).and_then(|r| r.split_once('-')) {
        Some((a, b)) => {
            let a: usize = a.parse().unwrap_or(0);
            let b: usize = if b.is_empty() { total - 1 } else { b.parse::<usize>().unwrap().min(total - 1) };
            (a, b)
        }
        None => (0, total - 1),
    };
    let etag: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    let status = if range.is_some() { "206 Partial Content" } else { "200 OK" };
    let head = format!(
        "HTTP/1.1 {status}\r\netag: \"{etag}\"\r\nx-repo-commit: {COMMIT}\r\ncontent-range: bytes {start}-{end}/{total}\r\n\
         content-length: {}\r\naccept-ranges: bytes\r\nconnection: close\r\n\r\n",
        end + 1 - start
    );
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let body = &bytes[start..=end];
    // Metadata probes (`bytes=0-0`) are never faulty.
    let faulty = match &fault {
        Some(Fault::Drop { file: f, after } | Fault::Cut { file: f, after } | Fault::Stall { file: f, after })
            if *f == file && body.len() > 1 =>
        {
            Some((*after, matches!(fault, Some(Fault::Stall { .. }))))
        }
        _ => None,
    };
    match faulty {
        Some((after, stall)) => {
            let n = after.min(body.len());
            let _ = out.write_all(&body[..n]);
            let _ = out.flush();
            {
                let mut s = state.lock().unwrap();
                s.sent += n;
                if matches!(s.fault, Some(Fault::Drop { .. })) {
                    s.fault = None;
                }
            }
            if stall {
                std::thread::sleep(Duration::from_secs(60));
            }
            let _ = out.shutdown(std::net::Shutdown::Both);
        }
        None => {
            let _ = out.write_all(body);
        }
    }
}
