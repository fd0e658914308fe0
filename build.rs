//! Stamps the binary with the commit it was built from and the build date,
//! for `--version`, the start-up log line and `smh_gateway_build_info`.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Re-stamp when HEAD moves (a commit, a checkout), not on every build.
    // A worktree has its own HEAD but shares the branches (common dir).
    for (flag, paths) in [
        ("--git-dir", &["HEAD"][..]),
        ("--git-common-dir", &["refs/heads", "packed-refs"][..]),
    ] {
        if let Some(dir) = git(&["rev-parse", flag]) {
            for path in paths {
                let p = std::path::Path::new(&dir).join(path);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // Reproducible builds set SOURCE_DATE_EPOCH; otherwise, now.
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    println!("cargo:rustc-env=SMH_GATEWAY_COMMIT={commit}");
    println!(
        "cargo:rustc-env=SMH_GATEWAY_BUILD_DATE={}",
        civil_date(secs / 86_400)
    );
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (Howard Hinnant's
/// days-to-civil algorithm, proleptic Gregorian).
fn civil_date(days: u64) -> String {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
