//! Error fingerprints: dead letters that failed the same way share one, whatever ids, numbers or
//! addresses their messages carry.

/// The handler that gave up and its last error, normalized: runs of digits and hexadecimal ids
/// become `#`, so `"timeout after 3012 ms for 0193…"` and `"timeout after 12 ms for 0194…"` agree.
pub(crate) fn normalize(handler: &str, error: &str) -> String {
    let mut out = String::with_capacity(handler.len() + error.len() + 1);
    out.push_str(handler);
    out.push(':');
    let mut in_token = false;
    for word in error.split_inclusive(|c: char| !c.is_ascii_alphanumeric()) {
        let (token, sep) = match word.char_indices().last() {
            Some((i, c)) if !c.is_ascii_alphanumeric() => (&word[..i], &word[i..]),
            _ => (word, ""),
        };
        // A token with a digit in it is a number, an id or a code position: variable.
        if token.chars().any(|c| c.is_ascii_digit()) {
            if !in_token {
                out.push('#');
            }
            in_token = sep.is_empty() || sep == "-";
        } else {
            out.push_str(&token.to_lowercase());
            in_token = false;
        }
        if !(in_token && sep == "-") {
            out.push_str(sep);
        }
    }
    out
}

/// A short, stable name for a normalized error: 8 hexadecimal digits (FNV-1a, 32 bits).
pub(crate) fn fingerprint(handler: &str, error: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in normalize(handler, error).bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::{fingerprint, normalize};

    #[test]
    fn variable_parts_do_not_change_the_fingerprint() {
        let a =
            "SMTP 550 for user 17: timeout after 3012 ms (id 0193f1c2-7a9b-7c3d-8e4f-0123456789ab)";
        let b =
            "SMTP 550 for user 4: timeout after 12 ms (id 0194aaaa-7a9b-7c3d-8e4f-0123456789ff)";
        assert_eq!(normalize("mail", a), normalize("mail", b));
        assert_eq!(fingerprint("mail", a), fingerprint("mail", b));
        assert_eq!(
            normalize("mail", a),
            "mail:smtp # for user #: timeout after # ms (id #)"
        );
    }

    #[test]
    fn different_failures_or_handlers_differ() {
        assert_ne!(
            fingerprint("mail", "mailbox unavailable"),
            fingerprint("mail", "connection refused")
        );
        assert_ne!(
            fingerprint("mail", "connection refused"),
            fingerprint("crm", "connection refused")
        );
        assert_eq!(fingerprint("mail", "x").len(), 8);
    }
}
