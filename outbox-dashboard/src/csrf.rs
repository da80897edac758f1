//! CSRF protection by double submit: every page sets (or keeps) a random token in a
//! `SameSite=Strict`, `HttpOnly` cookie and puts the same token in its forms; a `POST` is accepted
//! only when the form's token equals the cookie's. Another site can neither read the cookie nor
//! make the browser send it with a cross-site request.

use axum::http::HeaderMap;
use axum::http::header::COOKIE;

/// The cookie's name.
pub(crate) const COOKIE_NAME: &str = "outbox_csrf";

/// The token the request's cookie carries, if any (32 hex digits).
pub(crate) fn from_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new random token.
pub(crate) fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The `Set-Cookie` value for `token`, scoped to the dashboard's path.
pub(crate) fn set_cookie(token: &str, base: &str) -> String {
    let path = if base.is_empty() { "/" } else { base };
    format!("{COOKIE_NAME}={token}; Path={path}; SameSite=Strict; HttpOnly")
}

/// Whether a form's token matches the cookie's (compared without early exit).
pub(crate) fn matches(headers: &HeaderMap, submitted: Option<&str>) -> bool {
    let (Some(cookie), Some(form)) = (from_cookie(headers), submitted) else {
        return false;
    };
    cookie.len() == form.len()
        && cookie
            .bytes()
            .zip(form.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::{COOKIE, matches, new_token};
    use axum::http::HeaderMap;

    #[test]
    fn token_must_match_the_cookie() {
        let token = new_token();
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            format!("a=b; outbox_csrf={token}")
                .parse()
                .expect("a header value"),
        );
        assert!(matches(&headers, Some(&token)));
        assert!(!matches(&headers, Some(&new_token())));
        assert!(!matches(&headers, None));
        assert!(!matches(&HeaderMap::new(), Some(&token)));
    }
}
