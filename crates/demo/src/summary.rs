//! The final table: counts only.

use wa_sandbox::Stats;

use crate::patients::Answered;
use crate::progress::Counts;

/// A two-column table, labels left-aligned, numbers right-aligned.
#[derive(Debug, Default)]
pub struct Table {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl Table {
    pub fn section(&mut self, title: &str) -> &mut Self {
        self.sections.push((title.to_owned(), Vec::new()));
        self
    }

    pub fn row(&mut self, label: &str, value: impl ToString) -> &mut Self {
        if self.sections.is_empty() {
            self.section("");
        }
        if let Some((_, rows)) = self.sections.last_mut() {
            rows.push((label.to_owned(), value.to_string()));
        }
        self
    }

    pub fn render(&self) -> String {
        let rows = self.sections.iter().flat_map(|(_, rows)| rows);
        let label_width = rows.clone().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        let value_width = rows.map(|(_, v)| v.chars().count()).max().unwrap_or(0);
        let width = label_width + 2 + value_width;
        let mut out = String::new();
        for (title, rows) in &self.sections {
            if !title.is_empty() {
                out.push_str(&format!("{title}\n{}\n", "-".repeat(width.max(title.chars().count()))));
            }
            for (label, value) in rows {
                let pad = label_width - label.chars().count();
                out.push_str(&format!("{label}{}  {value:>value_width$}\n", " ".repeat(pad)));
            }
            out.push('\n');
        }
        out
    }
}

/// The summary of a run.
pub fn summary_table(counts: &Counts, answered: &Answered, stats: Option<&Stats>) -> Table {
    let mut t = Table::default();
    t.section("Careline (PostgreSQL)")
        .row("planned (jobs total)", counts.planned)
        .row(
            "skipped (too late / quiet hours)",
            format!("{} ({} / {})", counts.skipped, counts.skipped_too_late, counts.skipped_quiet_hours),
        )
        .row("revoked (moved or cancelled)", counts.revoked)
        .row("sent (sends accepted)", counts.sent)
        .row("delivered", counts.delivered)
        .row("read", counts.read)
        .row("confirmed", counts.confirmed)
        .row("reschedule requested", counts.reschedule_requested)
        .row("cancel requested", counts.cancel_requested)
        .row("cancelled by hospital", counts.cancelled_by_hospital)
        .row("opted out (STOP)", counts.opted_out)
        .row("suppressed - no consent", counts.suppressed_no_consent)
        .row("suppressed - opted out", counts.suppressed_opted_out)
        .row("suppressed - other reasons", counts.suppressed_other)
        .row("failed", counts.failed)
        .row("outcome unknown", counts.unknown)
        .row("due, not yet handled", counts.due_waiting + counts.in_flight);
    t.section("Simulated patients (replies sent)")
        .row("tapped Confirm", answered.confirm)
        .row("tapped Reschedule", answered.reschedule)
        .row("typed STOP", answered.stop)
        .row("replies the sandbox refused", answered.failed);
    let s = t.section("wa-sandbox (GET /_sandbox/stats)");
    match stats {
        Some(stats) => {
            s.row("send requests", stats.requests)
                .row("accepted", stats.accepted)
                .row("refused", stats.refused)
                .row(
                    "limit violations (throughput / pair)",
                    format!("{} ({} / {})", stats.violations.total, stats.violations.throughput, stats.violations.pair),
                )
                .row("webhook events delivered", stats.webhooks.delivered_events)
                .row(
                    "webhook events pending / given up",
                    format!("{} / {}", stats.webhooks.pending, stats.webhooks.gave_up_events),
                );
            for (code, n) in &stats.refused_by_code {
                s.row(&format!("refused with code {code}"), n);
            }
        }
        None => {
            s.row("stats", "unavailable");
        }
    }
    t
}

/// The run's verdict: `Ok` when something was sent and the sandbox saw no limit violation.
pub fn verdict(counts: &Counts, stats: Option<&Stats>) -> Result<(), String> {
    let Some(stats) = stats else {
        return Err("wa-sandbox's stats could not be read".to_owned());
    };
    if counts.sent == 0 {
        return Err("nothing was sent (sends accepted = 0)".to_owned());
    }
    if stats.violations.total > 0 {
        return Err(format!(
            "wa-sandbox saw {} limit violations ({} throughput, {} pair)",
            stats.violations.total, stats.violations.throughput, stats.violations.pair
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_labels_and_numbers() {
        let mut t = Table::default();
        t.section("S").row("a", 1).row("longer label", 12345);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "a                 1");
        assert_eq!(lines[3], "longer label  12345");
    }

    #[test]
    fn a_run_that_sent_nothing_or_broke_a_limit_fails() {
        let mut counts = Counts::default();
        let mut stats = Stats::default();
        assert!(verdict(&counts, Some(&stats)).unwrap_err().contains("nothing was sent"));
        counts.sent = 3;
        assert!(verdict(&counts, Some(&stats)).is_ok());
        stats.violations.total = 1;
        assert!(verdict(&counts, Some(&stats)).unwrap_err().contains("violations"));
        assert!(verdict(&counts, None).is_err());
    }
}
