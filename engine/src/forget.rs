//! Forget: which snapshots a retention policy keeps, and the removal of the
//! others. Forgetting removes snapshot records only; the data they alone
//! referred to stays until a prune removes it.
//!
//! Snapshots are grouped (by host and paths unless told otherwise) and each
//! group is judged on its own, newest first, as restic and borg do: a
//! snapshot is kept when any rule keeps it. Calendar buckets (hour, day,
//! ISO week, month, year) are taken in UTC.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use kith_storage::{Handle, Kind};

use crate::id::SnapshotId;
use crate::lock;
use crate::repo::Repository;
use crate::snapshot::Snapshot;
use crate::{Error, Result};

/// How many snapshots each rule keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// The newest n.
    pub last: Option<u32>,
    /// The newest of each of the last n hours that have snapshots.
    pub hourly: Option<u32>,
    /// Likewise per day.
    pub daily: Option<u32>,
    /// Likewise per ISO week.
    pub weekly: Option<u32>,
    /// Likewise per month.
    pub monthly: Option<u32>,
    /// Likewise per year.
    pub yearly: Option<u32>,
    /// Everything this close to the group's newest snapshot.
    pub within: Option<Duration>,
    /// Everything carrying one of these tags.
    pub tags: Vec<String>,
}

impl RetentionPolicy {
    /// True when no rule is set (which would forget everything).
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
            && self.hourly.is_none()
            && self.daily.is_none()
            && self.weekly.is_none()
            && self.monthly.is_none()
            && self.yearly.is_none()
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// How snapshots are grouped before the policy applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// Separate groups per host.
    pub host: bool,
    /// Separate groups per set of paths.
    pub paths: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
        }
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its group key (host and paths, as grouped).
    pub group: String,
    /// Kept or forgotten.
    pub keep: bool,
    /// The rules that keep it.
    pub reasons: Vec<String>,
}

/// Days since 1970-01-01 to (year, month), proleptic Gregorian, UTC.
fn year_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

fn buckets(time_ns: i64) -> [i64; 5] {
    let secs = time_ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let (year, month) = year_month(days);
    // 1970-01-01 was a Thursday; weeks start on Monday, as ISO weeks do.
    let week = (days + 3).div_euclid(7);
    [secs.div_euclid(3600), days, week, year * 12 + month, year]
}

/// What a snapshot is grouped by: host and paths themselves, so that a
/// path holding a comma or a host holding a space, which print alike, never
/// join another group.
type GroupId<'a> = (Option<&'a str>, Option<&'a [String]>);

fn group_id(s: &Snapshot, by: GroupBy) -> GroupId<'_> {
    (
        by.host.then_some(s.host.as_str()),
        by.paths.then_some(s.paths.as_slice()),
    )
}

/// The group as printed.
fn group_key(s: &Snapshot, by: GroupBy) -> String {
    let mut key = String::new();
    if by.host {
        key.push_str(&s.host);
    }
    if by.paths {
        key.push(' ');
        key.push_str(&s.paths.join(","));
    }
    key
}

/// Applies `policy` to `snapshots`; decisions come newest first per group.
pub fn apply_policy(
    snapshots: &[(SnapshotId, Snapshot)],
    policy: &RetentionPolicy,
    group_by: GroupBy,
) -> Vec<Decision> {
    let mut groups: BTreeMap<GroupId<'_>, Vec<&(SnapshotId, Snapshot)>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_id(&s.1, group_by)).or_default().push(s);
    }
    let mut out = Vec::new();
    for mut list in groups.into_values() {
        list.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(b.0.cmp(&a.0)));
        let group = list
            .first()
            .map(|s| group_key(&s.1, group_by))
            .unwrap_or_default();
        let newest = list.first().map(|s| s.1.time).unwrap_or(0);
        let rules = [
            ("hourly", policy.hourly),
            ("daily", policy.daily),
            ("weekly", policy.weekly),
            ("monthly", policy.monthly),
            ("yearly", policy.yearly),
        ];
        let mut seen: [HashSet<i64>; 5] = Default::default();
        for (i, (id, s)) in list.iter().map(|s| (&s.0, &s.1)).enumerate() {
            let mut reasons = Vec::new();
            if policy.last.is_some_and(|n| (i as u64) < u64::from(n)) {
                reasons.push("last".to_owned());
            }
            let b = buckets(s.time);
            for ((name, limit), (seen, bucket)) in rules.iter().zip(seen.iter_mut().zip(b)) {
                if let Some(n) = limit {
                    if seen.len() < *n as usize && seen.insert(bucket) {
                        reasons.push((*name).to_owned());
                    }
                }
            }
            if let Some(within) = policy.within {
                let age = newest.saturating_sub(s.time);
                if age <= i64::try_from(within.as_nanos()).unwrap_or(i64::MAX) {
                    reasons.push("within".to_owned());
                }
            }
            if s.tags.iter().any(|t| policy.tags.contains(t)) {
                reasons.push("tag".to_owned());
            }
            out.push(Decision {
                id: *id,
                group: group.clone(),
                keep: !reasons.is_empty(),
                reasons,
            });
        }
    }
    out
}

/// Parses durations like `2y5m7d3h` or `90s`: years (365 days), `m` months
/// (30 days), `w` weeks, `d` days, `h` hours, `min` minutes, `s` seconds and
/// `ms` milliseconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let mut total = Duration::ZERO;
    let trimmed = text.trim();
    let mut rest = trimmed;
    if rest.is_empty() {
        return Err(Error::InvalidInput(format!(
            "duration {text:?}: give a number and a unit, e.g. 7d or 30min"
        )));
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + unit_len]);
        let n: u64 = number.parse().map_err(|_| {
            Error::InvalidInput(format!(
                "duration {text:?}: expected a number before {unit:?}"
            ))
        })?;
        let one = match unit {
            "y" => Duration::from_secs(365 * 24 * 3600),
            "m" => Duration::from_secs(30 * 24 * 3600),
            "w" => Duration::from_secs(7 * 24 * 3600),
            "d" => Duration::from_secs(24 * 3600),
            "h" => Duration::from_secs(3600),
            "min" => Duration::from_secs(60),
            "s" => Duration::from_secs(1),
            "ms" => Duration::from_millis(1),
            "" => {
                return Err(Error::InvalidInput(format!(
                    "duration {text:?}: every number needs a unit (y, m, w, d, h, min, s, ms)"
                )))
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "duration {text:?}: unknown unit {other:?} (use y, m, w, d, h, min, s, ms)"
                )))
            }
        };
        total = total.saturating_add(one.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)));
        rest = &rest[digits + unit_len..];
    }
    Ok(total)
}

/// What `forget` did or would do.
#[derive(Clone, Debug, Default)]
pub struct ForgetReport {
    /// Every verdict.
    pub decisions: Vec<Decision>,
    /// Snapshots removed (none on a dry run).
    pub removed: Vec<SnapshotId>,
}

/// Removes the snapshots `policy` does not keep (or exactly `ids`), under an
/// exclusive lock; with `dry_run`, only reports.
pub async fn forget(
    repo: &Repository,
    policy: &RetentionPolicy,
    group_by: GroupBy,
    ids: &[SnapshotId],
    dry_run: bool,
) -> Result<ForgetReport> {
    repo.secret("forgetting snapshots")?;
    if policy.is_empty() && ids.is_empty() {
        return Err(Error::InvalidInput(
            "no policy given: say what to keep (--keep-last, --keep-daily, …) or which snapshots to forget".into(),
        ));
    }
    let work = || async {
        let (snapshots, _) = repo.snapshots().await?;
        let decisions = if ids.is_empty() {
            apply_policy(&snapshots, policy, group_by)
        } else {
            snapshots
                .iter()
                .map(|(id, s)| Decision {
                    id: *id,
                    group: group_key(s, group_by),
                    keep: !ids.contains(id),
                    reasons: Vec::new(),
                })
                .collect()
        };
        let mut removed = Vec::new();
        if !dry_run {
            for d in decisions.iter().filter(|d| !d.keep) {
                repo.backend()
                    .delete(&Handle::new(Kind::Snapshot, d.id.to_hex())?)
                    .await?;
                removed.push(d.id);
            }
        }
        Ok(ForgetReport { decisions, removed })
    };
    if dry_run {
        work().await
    } else {
        lock::with_lock(repo, true, "forget", work).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::BlobId;
    use crate::snapshot::BackupSummary;

    const HOUR: i64 = 3_600_000_000_000;
    const DAY: i64 = 24 * HOUR;

    fn snap(i: u8, time: i64, host: &str, tags: &[&str]) -> (SnapshotId, Snapshot) {
        let (id, mut s) = of_paths(i, time, host, &["/data"]);
        s.tags = tags.iter().map(|t| t.to_string()).collect();
        (id, s)
    }

    fn of_paths(i: u8, time: i64, host: &str, paths: &[&str]) -> (SnapshotId, Snapshot) {
        (
            SnapshotId([i; 32]),
            Snapshot {
                time,
                host: host.into(),
                user: "u".into(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
                tags: Vec::new(),
                tree: BlobId([0; 32]),
                parent: None,
                summary: BackupSummary::default(),
                program: "kith".into(),
                original: None,
            },
        )
    }

    fn kept(d: &[Decision]) -> Vec<u8> {
        let mut k: Vec<u8> = d.iter().filter(|d| d.keep).map(|d| d.id.0[0]).collect();
        k.sort();
        k
    }

    // 2026-01-01T00:00:00Z
    const T0: i64 = 1_767_225_600 * 1_000_000_000;

    #[test]
    fn keep_last_keeps_the_newest_per_group() {
        let s: Vec<_> = (0..5)
            .map(|i| snap(i, T0 + i64::from(i) * HOUR, "a", &[]))
            .chain([snap(9, T0, "b", &[])])
            .collect();
        let p = RetentionPolicy {
            last: Some(2),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply_policy(&s, &p, GroupBy::default())),
            vec![3, 4, 9]
        );
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_of_the_last_days() {
        // Two snapshots a day for four days.
        let s: Vec<_> = (0..8)
            .map(|i| {
                snap(
                    i,
                    T0 + i64::from(i / 2) * DAY + i64::from(i % 2) * HOUR,
                    "a",
                    &[],
                )
            })
            .collect();
        let p = RetentionPolicy {
            daily: Some(3),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply_policy(&s, &p, GroupBy::default())),
            vec![3, 5, 7]
        );
    }

    const MINUTE: i64 = 60_000_000_000;
    const SECOND: i64 = 1_000_000_000;

    /// Hours are calendar hours (UTC), not spans back from the newest
    /// snapshot; only hours that have snapshots count; each keeps its
    /// newest.
    #[test]
    fn keep_hourly_keeps_the_newest_of_each_of_the_last_hours_that_have_snapshots() {
        let s = vec![
            snap(1, T0 + 10 * MINUTE, "a", &[]),
            snap(2, T0 + 50 * MINUTE, "a", &[]),
            // The last instant of the second hour, and the first of the third.
            snap(3, T0 + 2 * HOUR - SECOND, "a", &[]),
            snap(4, T0 + 2 * HOUR, "a", &[]),
            // Nothing in the fourth and fifth hours.
            snap(5, T0 + 5 * HOUR + 30 * MINUTE, "a", &[]),
        ];
        let hourly = |n| RetentionPolicy {
            hourly: Some(n),
            ..Default::default()
        };
        // Hours 5, 2 and 1: the empty hours 3 and 4 are skipped, and 3 and
        // 4 are an hour apart in time but fall in two hours.
        assert_eq!(
            kept(&apply_policy(&s, &hourly(3), GroupBy::default())),
            vec![3, 4, 5]
        );
        // One more hour: the first, where 2 is newer than 1.
        let d = apply_policy(&s, &hourly(4), GroupBy::default());
        assert_eq!(kept(&d), vec![2, 3, 4, 5]);
        assert!(d.iter().filter(|d| d.keep).all(|d| d.reasons == ["hourly"]));
        assert_eq!(
            kept(&apply_policy(&s, &hourly(1), GroupBy::default())),
            vec![5]
        );
    }

    /// Before 1970 hours still start on the hour: the nanosecond before
    /// the epoch is in the hour before it, with the rest of that hour.
    #[test]
    fn keep_hourly_puts_times_before_1970_in_the_right_hour() {
        let s = vec![
            snap(1, -HOUR + 1, "a", &[]),
            snap(2, -1, "a", &[]),
            snap(3, 0, "a", &[]),
        ];
        let p = RetentionPolicy {
            hourly: Some(5),
            ..Default::default()
        };
        assert_eq!(kept(&apply_policy(&s, &p, GroupBy::default())), vec![2, 3]);
    }

    /// Grouped by paths alone, hosts that back up the same paths share a
    /// group and different paths never do; by host alone, the reverse;
    /// by nothing, everything is one group.
    #[test]
    fn grouping_by_paths_joins_hosts_and_separates_path_sets() {
        let s = vec![
            of_paths(1, T0, "alpha", &["/data"]),
            of_paths(2, T0 + HOUR, "beta", &["/data"]),
            of_paths(3, T0 + 2 * HOUR, "alpha", &["/home"]),
            of_paths(4, T0 + 3 * HOUR, "alpha", &["/data", "/home"]),
            of_paths(5, T0 - HOUR, "beta", &["/home"]),
        ];
        let last = RetentionPolicy {
            last: Some(1),
            ..Default::default()
        };
        let by = |host, paths| GroupBy { host, paths };
        let d = apply_policy(&s, &last, by(false, true));
        // /data: 2 over 1 (other host, same group); /home: 3 over 5;
        // /data and /home together: a group of its own.
        assert_eq!(kept(&d), vec![2, 3, 4]);
        let group = |i: u8| d.iter().find(|d| d.id.0[0] == i).unwrap().group.clone();
        assert_eq!(group(1), group(2));
        assert_eq!(group(3), group(5));
        assert_ne!(group(1), group(3));
        assert_ne!(group(4), group(1));
        assert_ne!(group(4), group(3));
        assert!(
            !group(1).contains("alpha") && !group(2).contains("beta"),
            "no host in {:?}",
            group(1)
        );

        assert_eq!(kept(&apply_policy(&s, &last, by(true, false))), vec![2, 4]);
        assert_eq!(kept(&apply_policy(&s, &last, by(false, false))), vec![4]);
        assert_eq!(
            kept(&apply_policy(&s, &last, GroupBy::default())),
            vec![1, 2, 3, 4, 5],
            "host and paths: every snapshot is alone"
        );
    }

    /// A path with a comma in its name is not two paths, and a host name
    /// with a space is not a host and a path: groups are told apart by
    /// host and paths themselves, not by the key printed for them.
    #[test]
    fn snapshots_whose_printed_group_keys_coincide_stay_in_separate_groups() {
        let s = vec![
            of_paths(1, T0, "h", &["/data", "/old"]),
            of_paths(2, T0 + HOUR, "h", &["/data,/old"]),
            of_paths(3, T0, "h /x", &["/y"]),
            of_paths(4, T0 + HOUR, "h", &["/x /y"]),
        ];
        let last = RetentionPolicy {
            last: Some(1),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply_policy(&s, &last, GroupBy::default())),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn weekly_monthly_yearly_and_within_and_tags_combine() {
        let s = vec![
            snap(1, T0 - 400 * DAY, "a", &[]),
            snap(2, T0 - 40 * DAY, "a", &[]),
            snap(3, T0 - 10 * DAY, "a", &["keep"]),
            snap(4, T0 - 9 * DAY, "a", &[]),
            snap(5, T0 - HOUR, "a", &[]),
            snap(6, T0, "a", &[]),
        ];
        // T0 is the first hour of 2026: snapshot 5, an hour earlier, is the newest of 2025.
        let p = RetentionPolicy {
            yearly: Some(5),
            ..Default::default()
        };
        assert_eq!(
            kept(&apply_policy(&s, &p, GroupBy::default())),
            vec![1, 5, 6]
        );
        let p = RetentionPolicy {
            monthly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&apply_policy(&s, &p, GroupBy::default())), vec![5, 6]);
        // 2025-12-31 and 2026-01-01 share an ISO week; 2025-12-23 is the week before.
        let p = RetentionPolicy {
            weekly: Some(2),
            ..Default::default()
        };
        assert_eq!(kept(&apply_policy(&s, &p, GroupBy::default())), vec![4, 6]);
        let p = RetentionPolicy {
            within: Some(Duration::from_secs(2 * 3600)),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let d = apply_policy(&s, &p, GroupBy::default());
        assert_eq!(kept(&d), vec![3, 5, 6]);
        assert!(d.iter().any(|d| d.id.0[0] == 3 && d.reasons == ["tag"]));
    }

    #[test]
    fn calendar_buckets_match_known_dates() {
        // 2024-02-29T12:00:00Z, a leap day.
        let t = 1_709_208_000i64 * 1_000_000_000;
        let [_, days, _, month, year] = buckets(t);
        assert_eq!(year, 2024);
        assert_eq!(month, 2024 * 12 + 2);
        assert_eq!(days, 19_782);
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(-1), (1969, 12));
    }

    #[test]
    fn durations_parse_with_units_and_refuse_garbage() {
        assert_eq!(
            parse_duration("1d2h").unwrap(),
            Duration::from_secs(26 * 3600)
        );
        assert_eq!(
            parse_duration("1y").unwrap(),
            Duration::from_secs(365 * 24 * 3600)
        );
        assert_eq!(parse_duration("2min30s").unwrap(), Duration::from_secs(150));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        for bad in [
            "",
            "5",
            "3x",
            "d",
            "1d 2h",
            "-1d",
            "3日",
            "日",
            "2dé",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        // The parser slices by byte counts of ASCII runs; any text, however
        // far from a duration, gets an answer and never a panic.
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
