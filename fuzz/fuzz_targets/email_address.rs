//! The address parser on arbitrary input: it never panics, and what it accepts is one
//! canonical, mailable, header-safe ASCII address that parses to itself again.
#![no_main]

use latchkey::domain::{EmailAddress, email::MAX_EMAIL_LEN};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(address) = EmailAddress::parse(raw) {
        let s = address.as_str();
        assert!(s.is_ascii() && s.len() <= MAX_EMAIL_LEN, "{s:?}");
        assert!(!s.bytes().any(|b| b.is_ascii_control() || b == b' '), "{s:?}");
        assert_eq!(s.matches('@').count(), 1, "{s:?}");
        assert!(!s.contains("..") && !s.contains("=?") && !s.contains(".@"), "{s:?}");
        assert_eq!(EmailAddress::parse(s), Ok(address.clone()));
    }
});
