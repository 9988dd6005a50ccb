//! The password policy of SPEC §8 (NIST SP 800-63B-4, OWASP): a length range counted in
//! Unicode code points after NFKC normalisation, no composition rules, never truncated,
//! and a strength estimate from `zxcvbn` that refuses weak and common passwords.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

/// The longest password accepted, in code points (SPEC §8).
pub const MAX_PASSWORD_CHARS: usize = 128;

/// The product name, given to the estimator so "latchkey2024…" counts as weak.
const PRODUCT_NAME: &str = "latchkey";

/// The configured policy.
#[derive(Clone, Copy, Debug)]
pub struct PasswordPolicy {
    pub min_chars: usize,
}

/// Why a new password was refused, in plain words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordProblem {
    TooShort { min: usize },
    TooLong,
    Mismatch,
    Weak { reason: String },
}

impl PasswordProblem {
    /// A fixed label for the audit trail: what kind of problem, never anything that hints
    /// at the password itself (the strength checker's advice could).
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooShort { .. } => "new password too short",
            Self::TooLong => "new password too long",
            Self::Mismatch => "new passwords did not match",
            Self::Weak { .. } => "new password too weak",
        }
    }
}

impl fmt::Display for PasswordProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort { min } => write!(
                f,
                "Use at least {min} characters. A few unrelated words with spaces make a long \
                 password that is easy to remember."
            ),
            Self::TooLong => write!(f, "Use at most {MAX_PASSWORD_CHARS} characters."),
            Self::Mismatch => f.write_str("The two passwords do not match."),
            Self::Weak { reason } => f.write_str(reason),
        }
    }
}

/// A new password that meets the policy, NFKC-normalised and ready to hash.
pub struct NewPassword(String);

impl NewPassword {
    /// Checks length and confirmation. The strength estimate is separate
    /// ([`NewPassword::check_strength`]) because it costs CPU and runs off the async workers.
    pub fn parse(
        raw: &str,
        confirmation: Option<&str>,
        policy: PasswordPolicy,
    ) -> Result<Self, PasswordProblem> {
        let normalised: String = raw.nfkc().collect();
        let chars = normalised.chars().count();
        if chars < policy.min_chars {
            return Err(PasswordProblem::TooShort {
                min: policy.min_chars,
            });
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(PasswordProblem::TooLong);
        }
        if let Some(confirmation) = confirmation {
            let confirmation: String = confirmation.nfkc().collect();
            if confirmation != normalised {
                return Err(PasswordProblem::Mismatch);
            }
        }
        Ok(Self(normalised))
    }

    /// Refuses guessable passwords (zxcvbn score below 3), with the account's email and the
    /// product name as words an attacker would try first.
    ///
    /// zxcvbn's cost grows with the square of the length and, steeply, with how many of
    /// its l33t characters (`4 @ 8 ( { [ < 3 6 9 1 ! | 7 0 $ 5 + % 2`) occur: a crafted
    /// 128-character password took over a second. So it estimates [`strength_windows`]
    /// of the password instead, and accepts when any one is strong: the whole is at least
    /// as hard to guess as any part of it. A real password is one window (the whole), so
    /// for it nothing changes; the bound only bites on crafted input. Worst case measured
    /// by `scripts/bench-strength`.
    pub fn check_strength(&self, email: &str) -> Result<(), PasswordProblem> {
        let local = email.split('@').next().unwrap_or_default();
        let inputs = [email, local, PRODUCT_NAME];
        let mut first = None;
        for window in strength_windows(&self.0) {
            let entropy = zxcvbn::zxcvbn(window, &inputs);
            if entropy.score() >= zxcvbn::Score::Three {
                return Ok(());
            }
            first.get_or_insert(entropy);
        }
        let feedback = first.as_ref().and_then(|e| e.feedback());
        let reason = feedback
            .and_then(|f| f.warning().map(|w| w.to_string()))
            .map(|w| format!("This password is too easy to guess: {w}"))
            .unwrap_or_else(|| "This password is too easy to guess.".to_owned());
        let hint = feedback
            .and_then(|f| f.suggestions().first().map(|s| s.to_string()))
            .unwrap_or_else(|| "Add another word or two that are uncommon.".to_owned());
        Err(PasswordProblem::Weak {
            reason: format!("{} {hint}", reason.trim_end_matches('.').to_owned() + "."),
        })
    }

    /// The normalised password, for the hasher only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The longest window the strength estimate sees, in characters.
pub const STRENGTH_WINDOW_CHARS: usize = 64;

/// The most distinct l33t characters in one window.
pub const STRENGTH_WINDOW_L33T: usize = 8;

/// The characters zxcvbn reads as l33t substitutions (its own table, zxcvbn 3).
const L33T_CHARS: &str = "4@8({[<3691!|70$5+%2";

/// Consecutive, non-overlapping pieces of `password` that together cover it, each at
/// most [`STRENGTH_WINDOW_CHARS`] long and holding at most [`STRENGTH_WINDOW_L33T`]
/// distinct l33t characters: the pieces whose strength zxcvbn estimates cheaply.
pub fn strength_windows(password: &str) -> Vec<&str> {
    let mut windows = Vec::new();
    let mut start = 0;
    let mut chars = 0;
    let mut l33t: Vec<char> = Vec::new();
    for (at, c) in password.char_indices() {
        let is_l33t = L33T_CHARS.contains(c);
        let new_l33t = is_l33t && !l33t.contains(&c);
        if chars == STRENGTH_WINDOW_CHARS || (new_l33t && l33t.len() == STRENGTH_WINDOW_L33T) {
            windows.push(&password[start..at]);
            (start, chars) = (at, 0);
            l33t.clear();
        }
        if is_l33t && !l33t.contains(&c) {
            l33t.push(c);
        }
        chars += 1;
    }
    if start < password.len() || windows.is_empty() {
        windows.push(&password[start..]);
    }
    windows
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword([redacted])")
    }
}

/// A password typed at sign-in or as the "current password": only normalised and bounded,
/// since the policy may have changed since it was set.
pub struct SubmittedPassword(String);

impl SubmittedPassword {
    /// Normalises; over-long input is refused before it reaches the hasher.
    pub fn parse(raw: &str) -> Option<Self> {
        if raw.is_empty() || raw.len() > MAX_PASSWORD_CHARS * 4 {
            return None;
        }
        Some(Self(raw.nfkc().collect()))
    }

    /// Stands in for a missing password so sign-in still runs one verification (which
    /// cannot succeed: no stored password is empty).
    pub fn absent() -> Self {
        Self(String::new())
    }

    /// The normalised password, for the verifier only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SubmittedPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubmittedPassword([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PasswordPolicy = PasswordPolicy { min_chars: 15 };

    #[test]
    fn length_is_counted_in_code_points_after_nfkc() {
        // 15 code points of which many are multi-byte: accepted.
        assert!(NewPassword::parse("ééééééééééééééé", None, POLICY).is_ok());
        assert_eq!(
            NewPassword::parse("short one", None, POLICY).unwrap_err(),
            PasswordProblem::TooShort { min: 15 }
        );
        assert_eq!(
            NewPassword::parse(&"x".repeat(129), None, POLICY).unwrap_err(),
            PasswordProblem::TooLong
        );
    }

    #[test]
    fn compatibility_forms_normalise_to_the_same_password() {
        // U+FB01 "ﬁ" is NFKC-equal to "fi".
        let a = NewPassword::parse("ﬁnal orbit lantern cobalt", None, POLICY).unwrap();
        let b = NewPassword::parse("final orbit lantern cobalt", None, POLICY).unwrap();
        assert_eq!(a.expose(), b.expose());
    }

    #[test]
    fn confirmation_must_match() {
        assert_eq!(
            NewPassword::parse(
                "correct horse battery",
                Some("correct horse battary"),
                POLICY
            )
            .unwrap_err(),
            PasswordProblem::Mismatch
        );
    }

    #[test]
    fn common_and_personal_passwords_are_weak() {
        for weak in [
            "passwordpassword",
            "aaaaaaaaaaaaaaaa",
            "alice.smith@example.com",
            "latchkeylatchkey1",
        ] {
            let p = NewPassword::parse(weak, None, POLICY).unwrap();
            assert!(
                p.check_strength("alice.smith@example.com").is_err(),
                "{weak}"
            );
        }
        let strong = NewPassword::parse("plum tractor violet oasis", None, POLICY).unwrap();
        assert!(strong.check_strength("alice@example.com").is_ok());
    }

    #[test]
    fn a_real_password_is_estimated_whole() {
        for pw in [
            "correct horse battery staple",
            "Tr0ub4dor&3 is n0t a g00d p4ssw0rd!",
            &"x".repeat(64),
        ] {
            assert_eq!(strength_windows(pw), vec![pw]);
        }
    }

    #[test]
    fn a_crafted_password_is_cut_into_cheap_windows_and_still_judged() {
        // 128 characters cycling through every l33t character: over a second whole.
        let crafted: String = L33T_CHARS.chars().cycle().take(128).collect();
        let windows = strength_windows(&crafted);
        assert!(windows.len() > 2, "{windows:?}");
        // Still judged: repeated weak words are refused, and a strong passphrase is
        // accepted whatever crafted tail follows it.
        let weak = NewPassword::parse(&"p4ssw0rd".repeat(16), None, POLICY).unwrap();
        assert!(weak.check_strength("a@example.com").is_err());
        let tail: String = crafted.chars().take(90).collect();
        let strong =
            NewPassword::parse(&format!("quartz lantern mosaic orbit {tail}"), None, POLICY)
                .unwrap();
        assert!(strong.check_strength("a@example.com").is_ok());
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn windows_cover_the_password_in_order_within_their_bounds(
                pw in "[a-z4@8({\\[<3691!|70$5+%2 ]{0,128}"
            ) {
                let windows = strength_windows(&pw);
                prop_assert_eq!(windows.concat(), pw.clone());
                for w in &windows {
                    prop_assert!(w.chars().count() <= STRENGTH_WINDOW_CHARS);
                    let mut l33t: Vec<char> = w.chars().filter(|c| L33T_CHARS.contains(*c)).collect();
                    l33t.sort_unstable();
                    l33t.dedup();
                    prop_assert!(l33t.len() <= STRENGTH_WINDOW_L33T);
                    prop_assert!(!w.is_empty() || pw.is_empty());
                }
            }
        }
    }
}
