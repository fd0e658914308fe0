//! What this binary is: version, the commit it was built from, and when.

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("SMH_GATEWAY_COMMIT");
pub const BUILD_DATE: &str = env!("SMH_GATEWAY_BUILD_DATE");
/// `--version`'s text.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SMH_GATEWAY_COMMIT"),
    ", built ",
    env!("SMH_GATEWAY_BUILD_DATE"),
    ")"
);
