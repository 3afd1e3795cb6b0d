//! Input rules, with messages a user can act on.

/// Usernames: 3 to 32 characters of `A-Z a-z 0-9 _ . -`.
pub fn username(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if name.is_empty() {
        return Err("username cannot be blank".into());
    }
    if !(3..=32).contains(&len) {
        return Err(format!(
            "username must be 3 to 32 characters long, not {len}"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "username may contain only letters, digits, '_', '.' and '-', not {bad:?}"
        ));
    }
    Ok(())
}

/// Passwords: 8 to 1024 bytes.
pub fn password(password: &str) -> Result<(), String> {
    let len = password.len();
    if len < 8 {
        return Err("password must be at least 8 bytes long".into());
    }
    if len > 1024 {
        return Err("password must be at most 1024 bytes long".into());
    }
    Ok(())
}

/// Emails: `local@domain.tld`, at most 254 characters, no spaces.
pub fn email(email: &str) -> Result<(), String> {
    let invalid = || {
        Err(format!(
            "email {email:?} is not an address like name@example.com"
        ))
    };
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid();
    }
    let Some((local, domain)) = email.split_once('@') else {
        return invalid();
    };
    if local.is_empty()
        || local.len() > 64
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return invalid();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["huohuo", "a_b", "x.y-z", "abc", &"a".repeat(32)] {
            assert!(username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "ab",
            &"a".repeat(33),
            "huo huo",
            "名字名字",
            "a;drop",
            "a'b",
        ] {
            assert!(username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords() {
        assert!(password("12345678").is_ok());
        assert!(password(&"x".repeat(1024)).is_ok());
        assert!(password("1234567").is_err());
        assert!(password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn emails() {
        for ok in ["a@b.co", "huo.huo+tag@example.com"] {
            assert!(email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@.b", "a@b..c", "a@b.c.",
        ] {
            assert!(email(bad).is_err(), "{bad}");
        }
    }
}
