//! The cost of the password-strength check (SPEC §9: bounded whatever the input).
//!
//! zxcvbn's cost grows with the square of the length and steeply with the number of
//! distinct l33t characters; a crafted 128-character password cost over a second when it
//! was estimated whole. Latchkey estimates bounded windows instead
//! (`latchkey::domain::password::strength_windows`). This measures, in one run on one
//! thread: ordinary passwords, a family of crafted worst cases (every length step and
//! every count of distinct l33t characters), the old whole-password estimate of the worst
//! of them, and one argon2id hash at the default cost, which every new password pays
//! anyway. Figures are reported as ratios to that hash (the machine is shared and noisy,
//! so absolute times drift between runs; ratios measured in the same run do not).
//!
//! Run it with `scripts/bench-strength` (`--quick` for fewer repetitions). Exit code 0
//! only when the worst case costs at most `--max-ratio` (default 2) argon2 hashes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    hint::black_box,
    process::ExitCode,
    time::{Duration, Instant},
};

use argon2::{Algorithm, Argon2, Params, Version};
use latchkey::domain::{NewPassword, PasswordPolicy};

const EMAIL: &str = "someone@example.com";
const L33T: &str = "4@8({[<3691!|70$5+%2";
/// The same characters, the ones that stand for several letters first (`1 | 7` are each
/// two letters, so they multiply the substitutions zxcvbn tries).
const L33T_AMBIGUOUS: &str = "1|7!+4@$5692%{[<(308";

/// The median time of `runs` calls of `f`.
fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Crafted inputs: `len` characters cycling through `distinct` l33t characters, with and
/// without letters between them (letters make the l33t substitutions match words).
fn crafted() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (order, l33t, counts) in [
        ("", L33T, &[4, 8, 12, 16, 20][..]),
        ("ambiguous ", L33T_AMBIGUOUS, &[6, 8, 10][..]),
    ] {
        let l33t: Vec<char> = l33t.chars().collect();
        crafted_from(&mut out, order, &l33t, counts);
    }
    out
}

fn crafted_from(out: &mut Vec<(String, String)>, order: &str, l33t: &[char], counts: &[usize]) {
    for &distinct in counts {
        for len in [32, 64, 96, 128] {
            let bare: String = l33t[..distinct].iter().cycle().take(len).collect();
            out.push((format!("{len} chars, {distinct} {order}l33t, bare"), bare));
            let mixed: String = l33t[..distinct]
                .iter()
                .zip("passwordletmein".chars().cycle())
                .flat_map(|(l, c)| [*l, c])
                .cycle()
                .take(len)
                .collect();
            out.push((
                format!("{len} chars, {distinct} {order}l33t, with letters"),
                mixed,
            ));
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let max_ratio: f64 = args
        .iter()
        .position(|a| a == "--max-ratio")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(2.0);
    let runs = if quick { 3 } else { 9 };
    let policy = PasswordPolicy { min_chars: 15 };
    let check = |pw: &str| {
        let password = NewPassword::parse(pw, None, policy).unwrap();
        black_box(password.check_strength(EMAIL).is_ok());
    };

    // The baseline: one argon2id hash at the default cost (m=19456 KiB, t=2, p=1).
    let argon2 = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19_456, 2, 1, Some(32)).unwrap(),
    );
    let mut out = [0u8; 32];
    let hash = median(runs, || {
        argon2
            .hash_password_into(
                b"correct horse battery staple",
                b"saltsaltsaltsalt",
                &mut out,
            )
            .unwrap();
    });
    let ratio = |d: Duration| d.as_secs_f64() / hash.as_secs_f64();

    println!("# Strength-check cost\n");
    println!("Baseline: one argon2id hash (m=19456, t=2, p=1) = {hash:.2?} (median of {runs}).\n");
    println!("| input | median | × argon2 hash |");
    println!("|---|---:|---:|");
    for (name, pw) in [
        ("ordinary: 4 words", "plum tractor violet cobalt"),
        (
            "ordinary: l33t phrase",
            "Tr0ub4dor&3 is n0t a g00d p4ssw0rd!",
        ),
        (
            "ordinary: 64 random",
            "kQ9vX2mZpL7wR4tY8nB3cF6hJ1dG5sA0eU2iO9yT4rE7wQ3zX8cV6bN1mK5lP0jH",
        ),
    ] {
        let d = median(runs, || check(pw));
        println!("| {name} | {d:.2?} | {:.2} |", ratio(d));
    }
    println!("\n| crafted input | bounded check | × hash | whole estimate (before) | × hash |");
    println!("|---|---:|---:|---:|---:|");
    let mut worst = (String::new(), Duration::ZERO);
    let mut worst_whole = (String::new(), Duration::ZERO);
    for (name, pw) in crafted() {
        let d = median(runs, || check(&pw));
        // What it cost estimated whole, as before the bound (once: it can take seconds).
        let start = Instant::now();
        black_box(zxcvbn::zxcvbn(&pw, &[EMAIL, "someone", "latchkey"]).score());
        let whole = start.elapsed();
        println!(
            "| {name} | {d:.2?} | {:.2} | {whole:.2?} | {:.2} |",
            ratio(d),
            ratio(whole)
        );
        if d > worst.1 {
            worst = (name.clone(), d);
        }
        if whole > worst_whole.1 {
            worst_whole = (name, whole);
        }
    }
    println!(
        "\nWorst case of the bounded check: {} = {:.2?}, {:.2} argon2 hashes.\n\
         Worst case estimated whole (before the bound): {} = {:.2?}, {:.2} argon2 hashes.",
        worst.0,
        worst.1,
        ratio(worst.1),
        worst_whole.0,
        worst_whole.1,
        ratio(worst_whole.1),
    );
    if ratio(worst.1) <= max_ratio {
        println!("Within target: at most {max_ratio} argon2 hashes.");
        ExitCode::SUCCESS
    } else {
        println!("OVER TARGET: more than {max_ratio} argon2 hashes.");
        ExitCode::FAILURE
    }
}
