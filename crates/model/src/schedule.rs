//! Cron expressions of schedule triggers: checked here, fired by the scheduler.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// Parses a 5-field, 6-field (leading seconds) or descriptor (`@hourly`) cron expression.
pub fn parse_cron(expression: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
        .map_err(|err| format!("invalid cron expression `{expression}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::parse_cron;

    #[test]
    fn accepts_five_and_six_fields_and_descriptors() {
        for ok in [
            "0 */6 * * *",
            "*/10 * * * * *",
            "@hourly",
            "@daily",
            "0 9 * * MON-FRI",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in ["", "61 * * * *", "* * *", "@sometimes", "* * * * * * * *"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }
}
