//! Connection strings without their passwords, for logs and errors.

/// What a password is replaced with.
pub const REDACTED: &str = "***";

/// `url` with every password replaced by [`REDACTED`]: the URL form
/// (`postgres://user:secret@host/db`, `?password=secret`) and the key/value form
/// (`host=h password=secret`, `password='se cret'`). Every log line and error that mentions a
/// connection string goes through this.
pub fn redact_url(url: &str) -> String {
    let trimmed = url.trim_start();
    let lower = trimmed.to_ascii_lowercase();
    if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        redact_uri(trimmed)
    } else {
        redact_key_values(trimmed)
    }
}

fn redact_uri(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_owned();
    };
    let (scheme, rest) = url.split_at(scheme_end);
    // The authority ends at the query; a password may hold '/' or '@', so the user info ends
    // at the last '@' before the query.
    let query_at = rest.find('?').unwrap_or(rest.len());
    let (before_query, query) = rest.split_at(query_at);
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    match before_query.rfind('@') {
        Some(at) => {
            let user_info = &before_query[..at];
            match user_info.find(':') {
                Some(colon) => {
                    out.push_str(&user_info[..=colon]);
                    out.push_str(REDACTED);
                }
                None => out.push_str(user_info),
            }
            out.push_str(&before_query[at..]);
        }
        None => out.push_str(before_query),
    }
    if let Some(params) = query.strip_prefix('?') {
        out.push('?');
        let redacted: Vec<String> = params
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={REDACTED}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&redacted.join("&"));
    }
    out
}

/// The libpq key/value form: `key = value` pairs separated by white space, values bare or in
/// single quotes with backslash escapes.
fn redact_key_values(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        // A key, then optional spaces, '=', optional spaces, a value.
        let key_start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        out.push_str(&key);
        while i < chars.len() && chars[i].is_whitespace() {
            out.push(chars[i]);
            i += 1;
        }
        if i >= chars.len() || chars[i] != '=' {
            continue;
        }
        out.push('=');
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            out.push(chars[i]);
            i += 1;
        }
        let value_start = i;
        if i < chars.len() && chars[i] == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                i += 1;
            }
        }
        let i_end = i.min(chars.len());
        if key.eq_ignore_ascii_case("password") {
            out.push_str(REDACTED);
        } else {
            out.extend(&chars[value_start..i_end]);
        }
        i = i_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_password_is_replaced() {
        assert_eq!(
            redact_url("postgres://puente:s3cret@db.example:5432/ledger"),
            "postgres://puente:***@db.example:5432/ledger"
        );
        assert_eq!(
            redact_url("postgresql://u:p@h/d?sslmode=require"),
            "postgresql://u:***@h/d?sslmode=require"
        );
    }

    #[test]
    fn uri_password_with_at_slash_and_colon_is_replaced_whole() {
        let redacted = redact_url("postgres://u:p@ss/w:rd@h:5432/d");
        assert_eq!(redacted, "postgres://u:***@h:5432/d");
        assert!(!redacted.contains("ss/w"));
    }

    #[test]
    fn uri_without_password_is_unchanged() {
        for url in ["postgres://postgres@127.0.0.1:5432/postgres", "postgres://h/d", "postgresql://"] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn uri_password_parameter_is_replaced() {
        assert_eq!(
            redact_url("postgres://u@h/d?sslmode=disable&password=topsecret&application_name=x"),
            "postgres://u@h/d?sslmode=disable&password=***&application_name=x"
        );
        assert_eq!(redact_url("POSTGRES://u:a@h/d?PASSWORD=b"), "POSTGRES://u:***@h/d?PASSWORD=***");
    }

    #[test]
    fn key_value_password_is_replaced() {
        assert_eq!(
            redact_url("host=db port=5432 password=hunter2 user=puente"),
            "host=db port=5432 password=*** user=puente"
        );
        assert_eq!(
            redact_url("host=db password = 'with space\\' q' user=u"),
            "host=db password = *** user=u"
        );
        assert_eq!(redact_url("Password=x"), "Password=***");
        assert_eq!(redact_url("host=db dbname=d"), "host=db dbname=d");
    }

    #[test]
    fn no_secret_survives_any_form() {
        let secret = "Zq9secretZq9";
        for url in [
            format!("postgres://u:{secret}@h/d"),
            format!("postgresql://u@h/d?password={secret}"),
            format!("host=h password={secret}"),
            format!("host=h password='{secret}'"),
            format!("  password={secret} host=h"),
        ] {
            let redacted = redact_url(&url);
            assert!(!redacted.contains(secret), "{url} -> {redacted}");
            assert!(redacted.contains(REDACTED), "{url} -> {redacted}");
        }
    }
}
