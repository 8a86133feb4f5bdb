//! Measuring: per-stream reception (loss by sequence gaps, RFC 3550
//! interarrival jitter, each packet's transit above the stream's minimum),
//! histograms, and CPU from /proc.
//!
//! Packets cross a transcoder, so no send time can ride in the payload:
//! a packet's *transit* is its arrival time minus its media time (its
//! place in the stream, 20 ms per sequence number), and what a relay adds
//! to it beyond the stream's smallest transit is its *added jitter* (the
//! first packets of a stream only set that minimum): the queueing the
//! relay and the kernel add, and any unevenness of the sender.

use serde::Serialize;

/// Seconds of the run the peak series covers.
pub const SERIES_SECONDS: usize = 7200;

/// The largest added jitter of any packet in each second of the run (µs,
/// by arrival, seconds since the media threads' epoch): at the far ends
/// and at the browsers. Shows when a relay stalled, and how often.
pub static PEAK_AT_FAR: [std::sync::atomic::AtomicU32; SERIES_SECONDS] = [const { std::sync::atomic::AtomicU32::new(0) }; SERIES_SECONDS];
pub static PEAK_AT_BROWSER: [std::sync::atomic::AtomicU32; SERIES_SECONDS] = [const { std::sync::atomic::AtomicU32::new(0) }; SERIES_SECONDS];

/// Packets of a measured stream that only set its minimum transit.
pub const WARMUP: u32 = 25;

/// A histogram of microseconds, to three significant figures (decision 0030).
pub type Histogram = hdrhistogram::Histogram<u64>;

/// An empty histogram up to an hour (`saturating_record` counts a larger
/// value as an hour).
pub fn histogram() -> Histogram {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("an hour to three significant figures")
}

/// Percentiles of a histogram, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    /// Each percentile is the top of the histogram's bucket that holds it
    /// (never an underestimate), but never above the largest value; all 0
    /// when the histogram is empty.
    pub fn of(h: &Histogram) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let at = |p: f64| h.value_at_percentile(p).min(h.max());
        Percentiles { count: h.len(), p50: at(50.0), p99: at(99.0), p999: at(99.9), max: h.max() }
    }
}

/// One direction of one call as its receiver sees it.
///
/// A packet's media time is its sequence number times 20 ms (every sender
/// here sends 20 ms packets, and relays keep sequence gaps), not its RTP
/// timestamp: the timestamps are checked on their own (`ts_span`), since a
/// transcoding relay that keeps the input codec's timestamp increments
/// would otherwise show as seconds of jitter.
#[derive(Debug, Default)]
pub struct Reception {
    /// Every packet, measured or not.
    pub all: u64,
    /// Measured packets, and the extended sequence numbers they span.
    pub measured: u64,
    first_seq: u64,
    max_seq: u64,
    /// RTP timestamp units between the first measured packet and the
    /// highest sequence number's.
    first_ts: i64,
    ts_at_max: i64,
    /// For extending 16-bit sequence numbers and 32-bit timestamps.
    last_seq16: Option<u16>,
    seq_ext: u64,
    last_ts32: Option<u32>,
    ts_ext: i64,
    min_transit: i64,
    warm: u32,
    last_transit: Option<i64>,
    /// The senders' pause count at this stream's last packet.
    pauses: u64,
    /// RFC 3550 §6.4.1 interarrival jitter, µs.
    pub jitter_us: f64,
}

impl Reception {
    /// Extends a 16-bit sequence number (plain RTP).
    pub fn extend_seq(&mut self, seq: u16) -> u64 {
        match self.last_seq16 {
            None => self.seq_ext = seq as u64 + (1 << 16),
            Some(last) => self.seq_ext = (self.seq_ext as i64 + seq.wrapping_sub(last) as i16 as i64) as u64,
        }
        self.last_seq16 = Some(seq);
        self.seq_ext
    }

    /// A packet: its extended sequence number, RTP timestamp and arrival
    /// (µs on one clock); `jitter` gets its added jitter when measured.
    /// After a pause of the senders (`pauses` moved on), the stream's
    /// transit is measured from a fresh baseline: the pause moved it.
    #[allow(clippy::too_many_arguments)]
    pub fn packet(&mut self, seq: u64, ts: u32, arrival_us: i64, measuring: bool, ptime_us: i64, pauses: u64, jitter: &mut Histogram, peaks: &[std::sync::atomic::AtomicU32]) {
        self.all += 1;
        match self.last_ts32 {
            None => self.ts_ext = ts as i64,
            Some(last) => self.ts_ext += ts.wrapping_sub(last) as i32 as i64,
        }
        self.last_ts32 = Some(ts);
        if !measuring {
            return;
        }
        if self.measured == 0 {
            (self.first_seq, self.max_seq, self.first_ts, self.ts_at_max) = (seq, seq, self.ts_ext, self.ts_ext);
        } else if seq > self.max_seq {
            (self.max_seq, self.ts_at_max) = (seq, self.ts_ext);
        }
        self.measured += 1;
        if pauses != self.pauses {
            self.pauses = pauses;
            self.warm = 0;
            self.last_transit = None;
        }
        let transit = arrival_us - (seq as i64 - self.first_seq as i64) * ptime_us;
        if let Some(last) = self.last_transit {
            let d = (transit - last).abs() as f64;
            self.jitter_us += (d - self.jitter_us) / 16.0;
        }
        self.last_transit = Some(transit);
        if self.warm < WARMUP {
            self.min_transit = if self.warm == 0 { transit } else { self.min_transit.min(transit) };
            self.warm += 1;
        } else {
            self.min_transit = self.min_transit.min(transit);
            let added = (transit - self.min_transit) as u64;
            jitter.saturating_record(added);
            if let Some(slot) = peaks.get((arrival_us / 1_000_000).max(0) as usize) {
                slot.fetch_max(added.min(u32::MAX as u64) as u32, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    /// Packets expected from the measured sequence numbers' span.
    pub fn expected(&self) -> u64 {
        if self.measured == 0 {
            0
        } else {
            self.max_seq - self.first_seq + 1
        }
    }

    /// RTP timestamp units over the measured sequence span.
    pub fn ts_span(&self) -> i64 {
        self.ts_at_max - self.first_ts
    }
}

/// CPU ticks (user + system) of a process, all its threads; None when it is gone.
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of a process's threads and how many there are, by thread
/// name (`comm`) without its digits (`media-0`…`media-3` are `media-`).
pub fn thread_ticks(pid: u32) -> std::collections::BTreeMap<String, (u64, usize)> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        let dir = t.path();
        let (Ok(comm), Ok(stat)) = (std::fs::read_to_string(dir.join("comm")), std::fs::read_to_string(dir.join("stat"))) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let name: String = comm.trim().chars().filter(|c| !c.is_ascii_digit()).collect();
        let e = out.entry(name.trim_end_matches([' ', '-', '_', '#']).to_owned()).or_insert((0, 0));
        e.0 += ticks;
        e.1 += 1;
    }
    out
}

/// Datagrams dropped at the UDP sockets a process holds (full receive
/// buffers), by local port, from the `drops` column of /proc/net/udp and
/// udp6; sockets closed meanwhile take their counts with them.
pub fn udp_drops_of(pid: u32) -> std::collections::HashMap<u16, u64> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(inode) = link.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                    if let Ok(i) = inode.parse::<u64>() {
                        inodes.insert(i);
                    }
                }
            }
        }
    }
    let mut drops = std::collections::HashMap::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(inode), Some(d)) = (f.get(9).and_then(|v| v.parse::<u64>().ok()), f.last().and_then(|v| v.parse::<u64>().ok())) else { continue };
            // local_address is ADDR:PORT in hex.
            let port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok()).unwrap_or(0);
            if inodes.contains(&inode) {
                *drops.entry(port).or_default() += d;
            }
        }
    }
    drops
}

/// (busy, total) ticks of the whole machine.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else { return (0, 0) };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Ticks per second of /proc's CPU figures.
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Datagrams the kernel dropped for full UDP receive buffers (all sockets).
pub fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let rows: Vec<Vec<&str>> = snmp.lines().filter(|l| l.starts_with("Udp:")).map(|l| l.split_whitespace().collect()).collect();
    if rows.len() < 2 {
        return 0;
    }
    rows[0].iter().position(|h| *h == "RcvbufErrors").and_then(|i| rows[1].get(i)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_a_thousandth_and_never_below() {
        let mut h = histogram();
        for us in [5, 15, 25, 35, 45, 55, 65, 75, 85, 150_500] {
            h.saturating_record(us);
        }
        let p = Percentiles::of(&h);
        assert_eq!((p.count, p.p50, p.p99), (10, 45, p.max));
        assert!((150_500..=150_650).contains(&p.max), "{p:?}");
        assert_eq!(Percentiles::of(&histogram()).p99, 0, "an empty histogram");
    }

    #[test]
    fn gaps_and_jitter() {
        let mut r = Reception::default();
        let mut h = histogram();
        // 40 packets 20 ms apart in RTP time, one missing, arrivals steady
        // but for one packet 3 ms late.
        for i in 0..40u16 {
            if i == 30 {
                continue;
            }
            let seq = r.extend_seq(i.wrapping_add(65_500));
            let late = if i == 35 { 3_000 } else { 0 };
            r.packet(seq, (i as u32).wrapping_mul(960).wrapping_sub(5_000), 1_000 + i as i64 * 20_000 + late, true, 20_000, 0, &mut h, &[]);
        }
        assert_eq!(r.measured, 39);
        assert_eq!(r.expected(), 40);
        assert_eq!(h.len(), 39 - WARMUP as u64);
        assert_eq!(h.max(), h.highest_equivalent(3_000), "one packet 3 ms late");
        assert!(r.jitter_us > 0.0);
        assert_eq!(r.ts_span(), 39 * 960);
    }
}
