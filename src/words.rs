//! Durations and browsers in plain words, for pages and emails alike ("1 hour and 30
//! minutes", "Firefox on Linux"). Below both the web pages and the mail messages, so
//! neither imports the other for them.

/// "1 hour", "30 minutes", "2 days", "1 hour and 30 minutes".
pub fn lifetime_in_words(d: std::time::Duration) -> String {
    fn unit(n: u64, one: &str) -> String {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    }
    let secs = d.as_secs();
    if secs < 60 {
        return unit(secs.max(1), "second");
    }
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    let parts: Vec<String> = [(days, "day"), (hours, "hour"), (minutes, "minute")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| unit(n, u))
        .collect();
    match parts.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => unit(secs, "second"),
    }
}

/// A coarse browser name from a User-Agent header, for the "was this you?" lines.
pub fn browser_name(user_agent: &str) -> String {
    let ua = user_agent;
    let browser = if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("OPR/") {
        "Opera"
    } else if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Chrome/") || ua.contains("Chromium/") {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else if ua.is_empty() {
        return "an unknown browser".to_owned();
    } else {
        "another program"
    };
    let os = if ua.contains("Android") {
        " on Android"
    } else if ua.contains("iPhone") || ua.contains("iPad") {
        " on iOS"
    } else if ua.contains("Windows") {
        " on Windows"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        " on macOS"
    } else if ua.contains("Linux") {
        " on Linux"
    } else {
        ""
    };
    format!("{browser}{os}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lifetimes_read_naturally() {
        assert_eq!(lifetime_in_words(Duration::from_secs(3600)), "1 hour");
        assert_eq!(
            lifetime_in_words(Duration::from_secs(5400)),
            "1 hour and 30 minutes"
        );
        assert_eq!(lifetime_in_words(Duration::from_secs(1)), "1 second");
        assert_eq!(lifetime_in_words(Duration::from_secs(2 * 86_400)), "2 days");
    }

    #[test]
    fn browsers_are_named_coarsely() {
        let ff = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
        assert_eq!(browser_name(ff), "Firefox on Linux");
        assert_eq!(browser_name(""), "an unknown browser");
    }
}
