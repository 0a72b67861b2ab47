//! GFS retention: which backups a policy of `last`, `hourly`, `daily`, `weekly`, `monthly`
//! and `yearly` counts keeps, with the semantics of restic's `forget` (restic
//! `internal/data/snapshot_policy.go`, whose test vectors are ours, see the tests), plus two
//! rules of ours: a pinned backup (`keep`) and the newest backup are never removed.
//!
//! restic's rules, which the vectors pin down: backups are taken newest first; each bucket
//! (the hour, day, ISO week, month or year of a backup, in UTC; for `last`, every backup) keeps
//! the newest backup of each period until its count runs out, and a count that has not run
//! out also keeps the oldest backup of all, so that what is kept reaches as far back as it
//! can. A backup is kept when any bucket keeps it.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

/// How many periods of one kind a policy keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The newest this many (0: none).
    Count(u32),
    /// Every one.
    All,
}

/// A GFS policy. [`Policy::default`] is 10 last, 24 hourly, 7 daily, 4 weekly, 12 monthly and
/// 7 yearly (the retention of seed 001).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The newest backups, whatever their times.
    pub last: Limit,
    /// The newest backup of each hour.
    pub hourly: Limit,
    /// The newest backup of each day.
    pub daily: Limit,
    /// The newest backup of each ISO week.
    pub weekly: Limit,
    /// The newest backup of each month.
    pub monthly: Limit,
    /// The newest backup of each year.
    pub yearly: Limit,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            last: Limit::Count(10),
            hourly: Limit::Count(24),
            daily: Limit::Count(7),
            weekly: Limit::Count(4),
            monthly: Limit::Count(12),
            yearly: Limit::Count(7),
        }
    }
}

/// The periods backups are bucketed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    /// Every backup is its own period.
    Last,
    /// The hour.
    Hourly,
    /// The day.
    Daily,
    /// The ISO week.
    Weekly,
    /// The month.
    Monthly,
    /// The year.
    Yearly,
}

const BUCKETS: [Bucket; 6] =
    [Bucket::Last, Bucket::Hourly, Bucket::Daily, Bucket::Weekly, Bucket::Monthly, Bucket::Yearly];

impl Bucket {
    /// The period of the `nr`-th newest backup, taken at `t`.
    fn period(self, t: DateTime<Utc>, nr: usize) -> i64 {
        let (y, m, d, h) =
            (i64::from(t.year()), i64::from(t.month()), i64::from(t.day()), i64::from(t.hour()));
        match self {
            Bucket::Last => nr as i64,
            Bucket::Hourly => y * 1_000_000 + m * 10_000 + d * 100 + h,
            Bucket::Daily => y * 10_000 + m * 100 + d,
            Bucket::Weekly => {
                let week = t.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Bucket::Monthly => y * 100 + m,
            Bucket::Yearly => y,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Bucket::Last => "last",
            Bucket::Hourly => "hourly",
            Bucket::Daily => "daily",
            Bucket::Weekly => "weekly",
            Bucket::Monthly => "monthly",
            Bucket::Yearly => "yearly",
        }
    }
}

impl Policy {
    fn limit(&self, bucket: Bucket) -> Limit {
        match bucket {
            Bucket::Last => self.last,
            Bucket::Hourly => self.hourly,
            Bucket::Daily => self.daily,
            Bucket::Weekly => self.weekly,
            Bucket::Monthly => self.monthly,
            Bucket::Yearly => self.yearly,
        }
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A bucket keeps it: the newest of its period, or (`oldest`) the oldest backup of all
    /// while the bucket's count has not run out.
    Bucket {
        /// Which.
        bucket: Bucket,
        /// Kept as the oldest backup.
        oldest: bool,
    },
    /// It is pinned (`keep`).
    Pinned,
    /// It is the newest backup.
    Newest,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Bucket { bucket, oldest: false } => write!(f, "{}", bucket.name()),
            Reason::Bucket { bucket, oldest: true } => write!(f, "oldest {}", bucket.name()),
            Reason::Pinned => f.write_str("pinned"),
            Reason::Newest => f.write_str("newest"),
        }
    }
}

/// What the policy decided for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Kept (else removed).
    pub keep: bool,
    /// Why it is kept; empty when it is removed.
    pub reasons: Vec<Reason>,
    /// What is left of each count after this backup (`None`: keeps all), in the order of
    /// [`Bucket`]: last, hourly, daily, weekly, monthly, yearly.
    pub left: [Option<u32>; 6],
}

/// A backup, as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// When it was taken.
    pub time: DateTime<Utc>,
    /// Pinned (`keep`): never removed.
    pub pinned: bool,
}

/// restic's `ApplyPolicy` over backup times sorted newest first (equal times in any order):
/// one decision per time, in that order.
pub fn apply(policy: &Policy, newest_first: &[DateTime<Utc>]) -> Vec<Decision> {
    let mut left: [Option<u32>; 6] = BUCKETS.map(|b| match policy.limit(b) {
        Limit::Count(n) => Some(n),
        Limit::All => None,
    });
    let mut last_period: [Option<i64>; 6] = [None; 6];
    let oldest = newest_first.len().saturating_sub(1);
    newest_first
        .iter()
        .enumerate()
        .map(|(nr, &time)| {
            let mut reasons = Vec::new();
            for (i, bucket) in BUCKETS.into_iter().enumerate() {
                if left[i] == Some(0) {
                    continue;
                }
                let period = bucket.period(time, nr);
                let new_period = last_period[i] != Some(period);
                if new_period || nr == oldest {
                    reasons.push(Reason::Bucket { bucket, oldest: !new_period });
                    last_period[i] = Some(period);
                    if let Some(n) = &mut left[i] {
                        *n -= 1;
                    }
                }
            }
            Decision { keep: !reasons.is_empty(), reasons, left }
        })
        .collect()
}

/// Our retention: restic's policy over `candidates` (sorted here, newest first; the decisions
/// come back in that order, with the candidate each is about), and then a pinned backup and
/// the newest backup are kept whatever the policy says.
pub fn decide(policy: &Policy, candidates: &[Candidate]) -> Vec<(Candidate, Decision)> {
    let mut sorted = candidates.to_vec();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.time));
    let times: Vec<DateTime<Utc>> = sorted.iter().map(|c| c.time).collect();
    let mut decisions = apply(policy, &times);
    for (nr, (candidate, decision)) in sorted.iter().zip(decisions.iter_mut()).enumerate() {
        if candidate.pinned {
            decision.reasons.push(Reason::Pinned);
        }
        if nr == 0 {
            decision.reasons.push(Reason::Newest);
        }
        decision.keep = !decision.reasons.is_empty();
    }
    sorted.into_iter().zip(decisions).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn pinned_and_newest_are_never_removed() {
        let none = Policy {
            last: Limit::Count(0),
            hourly: Limit::Count(0),
            daily: Limit::Count(0),
            weekly: Limit::Count(0),
            monthly: Limit::Count(0),
            yearly: Limit::Count(0),
        };
        let candidates = [
            Candidate { time: at("2026-01-01T00:00:00Z"), pinned: true },
            Candidate { time: at("2026-01-03T00:00:00Z"), pinned: false },
            Candidate { time: at("2026-01-02T00:00:00Z"), pinned: false },
        ];
        let decided = decide(&none, &candidates);
        let kept: Vec<(String, bool, String)> = decided
            .iter()
            .map(|(c, d)| {
                let why = d.reasons.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
                (c.time.to_rfc3339(), d.keep, why)
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("2026-01-03T00:00:00+00:00".into(), true, "newest".into()),
                ("2026-01-02T00:00:00+00:00".into(), false, String::new()),
                ("2026-01-01T00:00:00+00:00".into(), true, "pinned".into()),
            ]
        );
    }

    #[test]
    fn two_years_of_hourly_backups_under_the_default_policy() {
        // One backup an hour for two years: the default keeps the newest 24 hours, 7 days,
        // 4 weeks, 12 months and the years, each period's newest backup, and the oldest.
        let end = at("2026-11-22T12:00:00Z");
        let candidates: Vec<Candidate> = (0..2 * 365 * 24)
            .map(|h| Candidate { time: end - chrono::Duration::hours(h), pinned: false })
            .collect();
        let decided = decide(&Policy::default(), &candidates);
        let kept: Vec<DateTime<Utc>> = decided.iter().filter(|(_, d)| d.keep).map(|(c, _)| c.time).collect();
        // 24 hours (the last 10 among them); the days back to 11-16; the weeks ending 11-15,
        // 11-08 and 11-01; the months back to December 2025; 2024's newest; and the oldest
        // backup of all, kept because the yearly count has not run out.
        assert!(kept.contains(&end));
        assert!(kept.contains(&(end - chrono::Duration::hours(23))));
        assert!(
            !kept.contains(&(end - chrono::Duration::hours(24))),
            "the 25th hour is not the newest of its day"
        );
        assert!(kept.contains(&at("2026-11-21T23:00:00Z")), "yesterday's newest");
        assert!(kept.contains(&at("2025-12-31T23:00:00Z")), "2025's newest");
        assert!(kept.contains(&candidates.last().unwrap().time), "the oldest");
        assert!(kept.len() <= 10 + 24 + 7 + 4 + 12 + 7 + 1, "{} kept", kept.len());
        assert_eq!(kept.len(), 45, "{kept:?}");
    }

    /// The backup times of restic's `TestApplyPolicy` (`internal/data/snapshot_policy_test.go`).
    const RESTIC_TIMES: &[&str] = &[
        "2014-09-01 10:20:30",
        "2014-09-02 10:20:30",
        "2014-09-05 10:20:30",
        "2014-09-06 10:20:30",
        "2014-09-08 10:20:30",
        "2014-09-09 10:20:30",
        "2014-09-10 10:20:30",
        "2014-09-11 10:20:30",
        "2014-09-20 10:20:30",
        "2014-09-22 10:20:30",
        "2014-08-08 10:20:30",
        "2014-08-10 10:20:30",
        "2014-08-12 10:20:30",
        "2014-08-13 10:20:30",
        "2014-08-13 10:20:30.1",
        "2014-08-15 10:20:30",
        "2014-08-18 10:20:30",
        "2014-08-20 10:20:30",
        "2014-08-21 10:20:30",
        "2014-08-22 10:20:30",
        "2014-10-01 10:20:30",
        "2014-10-02 10:20:30",
        "2014-10-05 10:20:30",
        "2014-10-06 10:20:30",
        "2014-10-08 10:20:30",
        "2014-10-09 10:20:30",
        "2014-10-10 10:20:30",
        "2014-10-11 10:20:30",
        "2014-10-20 10:20:30",
        "2014-10-22 10:20:30",
        "2014-11-08 10:20:30",
        "2014-11-10 10:20:30",
        "2014-11-12 10:20:30",
        "2014-11-13 10:20:30",
        "2014-11-13 10:20:30.1",
        "2014-11-15 10:20:30",
        "2014-11-18 10:20:30",
        "2014-11-20 10:20:30",
        "2014-11-21 10:20:30",
        "2014-11-22 10:20:30",
        "2015-09-01 10:20:30",
        "2015-09-02 10:20:30",
        "2015-09-05 10:20:30",
        "2015-09-06 10:20:30",
        "2015-09-08 10:20:30",
        "2015-09-09 10:20:30",
        "2015-09-10 10:20:30",
        "2015-09-11 10:20:30",
        "2015-09-20 10:20:30",
        "2015-09-22 10:20:30",
        "2015-08-08 10:20:30",
        "2015-08-10 10:20:30",
        "2015-08-12 10:20:30",
        "2015-08-13 10:20:30",
        "2015-08-13 10:20:30.1",
        "2015-08-15 10:20:30",
        "2015-08-18 10:20:30",
        "2015-08-20 10:20:30",
        "2015-08-21 10:20:30",
        "2015-08-22 10:20:30",
        "2015-10-01 10:20:30",
        "2015-10-02 10:20:30",
        "2015-10-05 10:20:30",
        "2015-10-06 10:20:30",
        "2015-10-08 10:20:30",
        "2015-10-09 10:20:30",
        "2015-10-10 10:20:30",
        "2015-10-11 10:20:30",
        "2015-10-20 10:20:30",
        "2015-10-22 10:20:30",
        "2015-10-22 10:20:30",
        "2015-10-22 10:20:30",
        "2015-10-22 10:20:30",
        "2015-10-22 10:20:30",
        "2015-11-08 10:20:30",
        "2015-11-10 10:20:30",
        "2015-11-12 10:20:30",
        "2015-11-13 10:20:30",
        "2015-11-13 10:20:30.1",
        "2015-11-15 10:20:30",
        "2015-11-18 10:20:30",
        "2015-11-20 10:20:30",
        "2015-11-21 10:20:30",
        "2015-11-22 10:20:30",
        "2016-01-01 01:02:03",
        "2016-01-01 01:03:03",
        "2016-01-01 07:08:03",
        "2016-01-03 07:02:03",
        "2016-01-04 10:23:03",
        "2016-01-04 11:23:03",
        "2016-01-04 12:23:03",
        "2016-01-04 12:24:03",
        "2016-01-04 12:28:03",
        "2016-01-04 12:30:03",
        "2016-01-04 16:23:03",
        "2016-01-05 09:02:03",
        "2016-01-06 08:02:03",
        "2016-01-07 10:02:03",
        "2016-01-08 20:02:03",
        "2016-01-09 21:02:03",
        "2016-01-12 21:02:03",
        "2016-01-12 21:08:03",
        "2016-01-18 12:02:03",
    ];

    fn limit(n: i64) -> Limit {
        if n < 0 {
            Limit::All
        } else {
            Limit::Count(n as u32)
        }
    }

    /// restic's policies by their index in `TestApplyPolicy` (those that use tags or `within`,
    /// which eventvault does not have, are left out): [last, hourly, daily, weekly, monthly,
    /// yearly].
    const RESTIC_POLICIES: &[(usize, [i64; 6])] = &[
        (0, [0, 0, 0, 0, 0, 0]),
        (1, [10, 0, 0, 0, 0, 0]),
        (2, [15, 0, 0, 0, 0, 0]),
        (3, [99, 0, 0, 0, 0, 0]),
        (4, [200, 0, 0, 0, 0, 0]),
        (5, [0, 20, 0, 0, 0, 0]),
        (6, [0, 0, 3, 0, 0, 0]),
        (7, [0, 0, 10, 0, 0, 0]),
        (8, [0, 0, 30, 0, 0, 0]),
        (9, [5, 0, 5, 0, 0, 0]),
        (10, [2, 0, 10, 0, 0, 0]),
        (11, [0, 0, 0, 2, 0, 0]),
        (12, [0, 0, 0, 4, 0, 0]),
        (13, [0, 0, 3, 4, 0, 0]),
        (14, [0, 0, 0, 0, 6, 0]),
        (15, [0, 0, 2, 2, 6, 0]),
        (16, [0, 0, 0, 0, 0, 10]),
        (17, [0, 0, 7, 2, 3, 10]),
        (36, [-1, 0, 0, 0, 0, 0]),
        (37, [-1, -1, 0, 0, 0, 0]),
        (38, [0, -1, 0, 0, 0, 0]),
        (39, [0, 0, 3, 2, -1, -1]),
    ];

    /// restic's golden file: the backups kept, newest first, and why, as restic words it.
    fn golden(index: usize) -> Vec<(DateTime<Utc>, Vec<String>, [i64; 6])> {
        let path =
            format!("{}/tests/data/restic-policy/policy_keep_snapshots_{index}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let reasons = value["reasons"].as_array().cloned().unwrap_or_default();
        assert_eq!(reasons.len(), value["keep"].as_array().map_or(0, Vec::len), "{path}");
        reasons
            .iter()
            .map(|r| {
                let time = at(r["snapshot"]["time"].as_str().unwrap());
                let matches =
                    r["matches"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_owned()).collect();
                let c = &r["counters"];
                let counters = ["last", "hourly", "daily", "weekly", "monthly", "yearly"]
                    .map(|k| c[k].as_i64().unwrap_or(0));
                (time, matches, counters)
            })
            .collect()
    }

    /// A reason as restic words it.
    fn restic_words(reason: &Reason) -> String {
        match reason {
            Reason::Bucket { bucket, oldest } => {
                format!("{}{} snapshot", if *oldest { "oldest " } else { "" }, bucket.name())
            }
            other => other.to_string(),
        }
    }

    #[test]
    fn restic_forget_vectors() {
        let mut times: Vec<DateTime<Utc>> =
            RESTIC_TIMES.iter().map(|t| at(&format!("{}Z", t.replace(' ', "T")))).collect();
        // restic sorts newest first, stably; equal times are indistinguishable here.
        times.sort_by(|a, b| b.cmp(a));
        for (index, counts) in RESTIC_POLICIES {
            let [last, hourly, daily, weekly, monthly, yearly] = counts.map(limit);
            let policy = Policy { last, hourly, daily, weekly, monthly, yearly };
            let decisions = apply(&policy, &times);
            let kept: Vec<(DateTime<Utc>, Vec<String>, [i64; 6])> = times
                .iter()
                .zip(&decisions)
                .filter(|(_, d)| d.keep)
                .map(|(t, d)| {
                    let words = d.reasons.iter().map(restic_words).collect();
                    let left = d.left.map(|l| l.map_or(-1, i64::from));
                    // restic reports a count that keeps all as -1, and one that was 0 as 0.
                    let left = std::array::from_fn(|i| if counts[i] == 0 { 0 } else { left[i] });
                    (*t, words, left)
                })
                .collect();
            assert_eq!(kept, golden(*index), "restic policy {index}");
        }
    }
}
