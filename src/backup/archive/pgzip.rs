//! Parallel gzip for archives: the stream is cut into chunks that worker threads compress as
//! independent gzip members, written in order. A concatenation of gzip members is itself a
//! valid gzip file (RFC 1952), so `gzip -t`, `tar -xzf` and every multi-member reader accept
//! it, and compression uses every core.
//!
//! The workers run at a lower CPU priority, so a backup yields to request handling. Memory is
//! bounded: at most `2 × threads` chunks are in flight.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::write::GzEncoder;
use flate2::Compression;

/// Bytes of the stream per gzip member.
const CHUNK: usize = 2 << 20;

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

/// A `Write` that gzips what it is given on worker threads.
pub struct ParallelGz<W: Write> {
    out: Option<W>,
    buf: Vec<u8>,
    jobs: Option<SyncSender<Job>>,
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    workers: Vec<JoinHandle<()>>,
    max_pending: usize,
    wrote_any: bool,
}

impl<W: Write> ParallelGz<W> {
    /// Compresses into `out` at `level` on `threads` workers.
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::sync_channel::<Job>(threads);
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = rx.clone();
                std::thread::spawn(move || {
                    lower_priority();
                    loop {
                        let job = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok((data, reply)) = job else { return };
                        let _ = reply.send(compress(&data, level));
                    }
                })
            })
            .collect();
        ParallelGz {
            out: Some(out),
            buf: Vec::with_capacity(CHUNK),
            jobs: Some(tx),
            pending: VecDeque::new(),
            workers,
            max_pending: 2 * threads,
            wrote_any: false,
        }
    }

    fn submit(&mut self, data: Vec<u8>) -> io::Result<()> {
        let (reply, result) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("compression already finished"))?;
        jobs.send((data, reply)).map_err(|_| io::Error::other("a compression worker stopped"))?;
        self.pending.push_back(result);
        self.wrote_any = true;
        while self.pending.len() > self.max_pending {
            self.write_oldest()?;
        }
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        if let Some(result) = self.pending.pop_front() {
            let member = result.recv().map_err(|_| io::Error::other("a compression worker stopped"))??;
            self.out
                .as_mut()
                .ok_or_else(|| io::Error::other("compression already finished"))?
                .write_all(&member)?;
        }
        Ok(())
    }

    /// Compresses what is left, writes every member, stops the workers and returns `out`.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.buf.is_empty() || !self.wrote_any {
            let rest = std::mem::take(&mut self.buf);
            self.submit(rest)?;
        }
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
        let mut out = self.out.take().ok_or_else(|| io::Error::other("compression already finished"))?;
        out.flush()?;
        Ok(out)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
            self.submit(full)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for ParallelGz<W> {
    fn drop(&mut self) {
        // On an error path: stop the workers without writing anything more.
        self.jobs = None;
        self.pending.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn compress(data: &[u8], level: u32) -> io::Result<Vec<u8>> {
    // The store's table files are mostly Zstd-compressed already: deflating them again costs
    // a lot of CPU for nothing. A chunk whose bytes look random is stored instead (deflate's
    // stored blocks are still standard gzip).
    let level = if looks_compressed(data) { 0 } else { level };
    let mut encoder =
        GzEncoder::new(Vec::with_capacity(data.len() + data.len() / 64 + 64), Compression::new(level));
    encoder.write_all(data)?;
    encoder.finish()
}

/// Whether a sample of `data` has the byte entropy of compressed data (close to 8 bits per
/// byte). Text, JSON and LZ4 output stay well below; Zstd and deflate output do not.
fn looks_compressed(data: &[u8]) -> bool {
    const SAMPLE: usize = 64 << 10;
    if data.len() < 4096 {
        return false;
    }
    let step = (data.len() / SAMPLE).max(1);
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for &b in data.iter().step_by(step).take(SAMPLE) {
        counts[b as usize] += 1;
        n += 1;
    }
    let n = f64::from(n);
    let entropy: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum();
    entropy > 7.9
}

/// Puts the calling thread in the `SCHED_IDLE` class: it runs only on CPU time that nothing
/// else wants, and any request thread that wakes up preempts it at once. (A nice value is not
/// enough: a nice thread still holds the CPU for a whole scheduler slice, a few milliseconds
/// of added latency for the request that waits.) Only call it on threads that end with the
/// work: an unprivileged process cannot leave `SCHED_IDLE` again.
pub fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread; failure just leaves the priority as is.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) != 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
        }
    }
}

/// Runs `f` on a fresh thread at lower priority and waits for it: the thread ends with the
/// work, so the priority change never leaks into a pooled thread.
pub fn at_low_priority<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            lower_priority();
            f()
        });
        match worker.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn random_bytes_look_compressed_and_json_does_not() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(looks_compressed(&random));
        let json = br#"{"firstName":"Ada","lastName":"Lovelace","email":"ada@example.com"}"#.repeat(20_000);
        assert!(!looks_compressed(&json));
        let mut gz = ParallelGz::new(Vec::new(), 6, 2);
        gz.write_all(&random).unwrap();
        let stored = gz.finish().unwrap();
        assert!(stored.len() < random.len() + random.len() / 100, "stored, not inflated");
    }

    #[test]
    fn members_decode_to_the_input() {
        let input: Vec<u8> = (0..(5 * CHUNK + 123)).map(|i| (i % 251) as u8).collect();
        let mut gz = ParallelGz::new(Vec::new(), 1, 2);
        for piece in input.chunks(100_000) {
            gz.write_all(piece).unwrap();
        }
        let out = gz.finish().unwrap();
        let mut decoded = Vec::new();
        flate2::read::MultiGzDecoder::new(out.as_slice()).read_to_end(&mut decoded).unwrap();
        assert_eq!(decoded, input);
        let empty = ParallelGz::new(Vec::new(), 6, 2).finish().unwrap();
        assert!(!empty.is_empty(), "an empty stream is still a gzip member");
    }
}
