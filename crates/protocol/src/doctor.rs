//! The report of `vdesk-agent doctor` and `vdesk-controller doctor`, shared by both binaries:
//! one line per check (ok / warn / FAIL, what was found, how to fix a problem), the same report
//! as JSON for scripts (`--json`; the shape is documented in docs/operations.md, "Diagnose"),
//! and the exit status (0 when nothing failed). No secret ever goes into a check's text.

use serde::{Deserialize, Serialize};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works, but something is worth a look (or could not be checked).
    Warn,
    /// Broken: the daemon will not work (or not fully) until it is fixed.
    Fail,
}

impl Status {
    /// `ok`, `warn` or `FAIL`, as the text report prints it.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A short stable name, e.g. `display`, `controller.secret` (scripts may match on it).
    pub name: String,
    pub status: Status,
    /// What was found, one line.
    pub detail: String,
    /// How to fix it (for `warn` and `fail`): the package, flag or file. `None` when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(name: &str, detail: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, detail, None)
    }
    pub fn warn(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, detail, Some(fix.into()))
    }
    pub fn fail(name: &str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, detail, Some(fix.into()))
    }
    fn new(name: &str, status: Status, detail: impl Into<String>, fix: Option<String>) -> Self {
        Self {
            name: name.to_owned(),
            status,
            detail: one_line(&detail.into()),
            fix: fix.map(|f| one_line(&f)).filter(|f| !f.is_empty()),
        }
    }
}

/// Newlines and other control characters out, so that each check stays one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The whole report: `{"program", "version", "healthy", "checks": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `vdesk-agent` or `vdesk-controller`.
    pub program: String,
    pub version: String,
    /// No check failed (warnings allowed): the exit status is 0.
    pub healthy: bool,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn new(program: &str, version: &str, checks: Vec<Check>) -> Self {
        Self {
            program: program.to_owned(),
            version: version.to_owned(),
            healthy: checks.iter().all(|c| c.status != Status::Fail),
            checks,
        }
    }

    /// 0 when healthy, 1 when a check failed.
    pub fn exit_code(&self) -> u8 {
        if self.healthy {
            0
        } else {
            1
        }
    }

    /// The text report: a line per check (`ok   name: detail`), the fix indented under a
    /// problem, then a summary line.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            out.push_str(&format!(
                "{:<4} {}: {}\n",
                c.status.label(),
                c.name,
                c.detail
            ));
            if let Some(fix) = &c.fix {
                out.push_str(&format!("     fix: {fix}\n"));
            }
        }
        let count = |s| self.checks.iter().filter(|c| c.status == s).count();
        out.push_str(&format!(
            "{} {}: {} ok, {} warn, {} failed\n",
            self.program,
            if self.healthy {
                "healthy"
            } else {
                "NOT healthy"
            },
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail)
        ));
        out
    }

    /// The JSON report (one object, pretty-printed).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }
}

/// `turn:host:port?transport=udp` -> `host:port` (3478, or 5349 for `turns:`/`stuns:`).
pub fn ice_host_port(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once(':')?;
    let rest = rest.trim_start_matches("//");
    let rest = rest.split(['?', '/']).next()?;
    let default = if scheme.ends_with('s') { 5349 } else { 3478 };
    if rest.is_empty() {
        return None;
    }
    if rest.starts_with('[') {
        return Some(if rest.contains("]:") {
            rest.to_owned()
        } else {
            format!("{rest}:{default}")
        });
    }
    Some(match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => rest.to_owned(),
        _ => format!("{rest}:{default}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_unless_a_check_fails_and_lines_stay_lines() {
        let r = Report::new(
            "vdesk-x",
            "1",
            vec![
                Check::ok("a", "fine"),
                Check::warn("b", "meh\nsecond", "do this"),
            ],
        );
        assert!(r.healthy);
        assert_eq!(r.exit_code(), 0);
        assert!(
            r.text().contains("warn b: meh second\n     fix: do this\n"),
            "{}",
            r.text()
        );
        let r = Report::new("vdesk-x", "1", vec![Check::fail("c", "broken", "fix it")]);
        assert_eq!(r.exit_code(), 1);
        let v: serde_json::Value = serde_json::from_str(&r.json()).expect("json");
        assert_eq!(v["healthy"], false);
        assert_eq!(v["checks"][0]["status"], "fail");
        assert_eq!(v["checks"][0]["fix"], "fix it");
        assert!(Report::new("p", "1", vec![Check::ok("a", "x")])
            .json()
            .find("\"fix\"")
            .is_none());
    }

    #[test]
    fn ice_urls_give_host_and_port() {
        assert_eq!(
            ice_host_port("stun:1.2.3.4:3478").as_deref(),
            Some("1.2.3.4:3478")
        );
        assert_eq!(
            ice_host_port("turn:t.example?transport=udp").as_deref(),
            Some("t.example:3478")
        );
        assert_eq!(
            ice_host_port("turns:t.example").as_deref(),
            Some("t.example:5349")
        );
        assert_eq!(ice_host_port("stun:[::1]:9").as_deref(), Some("[::1]:9"));
        assert_eq!(ice_host_port("stun:"), None);
    }
}
