//! What the database connectors share: the names they may put into SQL, the
//! login templates that map an Airlock user to a database login, and the
//! passwords they mint.
//!
//! Role, user and login names cannot be bound as parameters in `GRANT`,
//! `CREATE ROLE` and friends, so they are formatted into the statement text.
//! That is only safe for values that were checked first: every such value is
//! an [`Ident`], which can only be built by [`Ident::parse`], and the only way
//! to get one into SQL is through its quoting methods. The allowed alphabet is
//! deliberately narrower than what either database accepts, so that quoting is
//! trivially correct rather than cleverly correct.

use airlock_core::{RequestId, Timestamp, UserId};
use rand::distr::Alphanumeric;
use rand::Rng;

use crate::{rfc3339, ConnectorError};

/// Longest name accepted: PostgreSQL truncates identifiers at 63 bytes
/// (`NAMEDATALEN - 1`), which would silently turn two names into one.
pub(crate) const MAX_NAME_LEN: usize = 63;

/// Prefix of every login a temporary-login grant creates. Logins with it
/// belong to Airlock: the request id follows it.
pub const TEMP_LOGIN_PREFIX: &str = "airlock_";

/// The placeholder a login template replaces with the Airlock user id.
pub const USER_PLACEHOLDER: &str = "{user}";

/// Length of a minted password: 32 alphanumerics are about 190 bits.
const PASSWORD_LEN: usize = 32;

/// How a database connector gives a user access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Make the user's existing database login a member of the managed roles,
    /// and remove it again on revoke.
    Grant,
    /// Create a login for this one request, a member of the managed roles,
    /// hand its password to the requester, and drop it on revoke.
    TemporaryLogin,
}

/// A name that is safe to quote into SQL: 1 to 63 characters from
/// `[A-Za-z0-9_$.-]`, starting with a letter or `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Ident(String);

impl Ident {
    /// Checks `value`; `what` names it in the error (`role`, `login`...).
    pub(crate) fn parse(what: &str, value: &str) -> Result<Ident, ConnectorError> {
        check_name(value).map_err(|why| {
            ConnectorError::Permanent(format!(
                "{what} `{value}` cannot be used as a database name: {why}"
            ))
        })?;
        Ok(Ident(value.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// `"name"` for PostgreSQL. The alphabet excludes `"`, but doubling it
    /// anyway keeps this correct on its own terms.
    pub(crate) fn pg(&self) -> String {
        format!("\"{}\"", self.0.replace('"', "\"\""))
    }

    /// `` `name` `` for a MariaDB identifier (a role).
    pub(crate) fn backticked(&self) -> String {
        format!("`{}`", self.0.replace('`', "``"))
    }

    /// `'name'` for the user part of a MariaDB account name. The alphabet
    /// has neither `'` nor `\`, the two characters that matter in a MariaDB
    /// string literal whatever `sql_mode` says.
    pub(crate) fn single_quoted(&self) -> String {
        format!("'{}'", self.0.replace('\'', "''"))
    }
}

impl std::fmt::Display for Ident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '.' | '-')
}

/// Why `value` is not an acceptable name, if it is not.
fn check_name(value: &str) -> Result<(), String> {
    let Some(first) = value.chars().next() else {
        return Err("it is empty".to_owned());
    };
    if value.len() > MAX_NAME_LEN {
        return Err(format!(
            "it is {} bytes long, more than {MAX_NAME_LEN}",
            value.len()
        ));
    }
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err("it must start with a letter or `_`".to_owned());
    }
    if let Some(bad) = value.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "it contains {bad:?}; only letters, digits, `_`, `$`, `.` and `-` are allowed"
        ));
    }
    Ok(())
}

/// Parses a list of managed role names; at least one is required.
pub(crate) fn parse_roles(roles: &[String]) -> Result<Vec<Ident>, ConnectorError> {
    if roles.is_empty() {
        return Err(ConnectorError::Permanent(
            "at least one role must be configured".to_owned(),
        ));
    }
    let mut parsed = Vec::with_capacity(roles.len());
    for role in roles {
        let role = Ident::parse("role", role)?;
        if !parsed.contains(&role) {
            parsed.push(role);
        }
    }
    Ok(parsed)
}

/// Maps an Airlock user id to the name of an existing database login, e.g.
/// `{user}` or `app_{user}`. The fixed parts are checked when the connector
/// is built; the result of each expansion is checked again, because user ids
/// may contain characters (`@`) that logins may not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginTemplate(String);

impl LoginTemplate {
    pub(crate) fn parse(template: &str) -> Result<LoginTemplate, ConnectorError> {
        let bad = |why: &str| {
            ConnectorError::Permanent(format!("login template `{template}` cannot be used: {why}"))
        };
        if !template.contains(USER_PLACEHOLDER) {
            return Err(bad("it must contain `{user}`"));
        }
        let fixed: String = template.split(USER_PLACEHOLDER).collect();
        if let Some(c) = fixed.chars().find(|c| !is_name_char(*c)) {
            return Err(bad(&format!(
                "its fixed part contains {c:?}; only letters, digits, `_`, `$`, `.` and `-` are allowed"
            )));
        }
        if fixed.len() >= MAX_NAME_LEN {
            return Err(bad(&format!(
                "its fixed part leaves no room for a user id within {MAX_NAME_LEN} bytes"
            )));
        }
        Ok(LoginTemplate(template.to_owned()))
    }

    /// The login for `user`, or a `Permanent` error naming both.
    pub(crate) fn expand(&self, user: &UserId) -> Result<Ident, ConnectorError> {
        let login = self.0.replace(USER_PLACEHOLDER, user.as_str());
        check_name(&login).map_err(|why| {
            ConnectorError::Permanent(format!(
                "login `{login}` for user `{user}` (from template `{}`) cannot be used as a database name: {why}",
                self.0
            ))
        })?;
        Ok(Ident(login))
    }
}

/// The login a temporary-login grant creates for `request_id`.
pub(crate) fn temp_login(request_id: &RequestId) -> Result<Ident, ConnectorError> {
    Ident::parse(
        "temporary login",
        &format!("{TEMP_LOGIN_PREFIX}{}", request_id.as_str()),
    )
}

/// The request a login was created for, if it is a temporary login.
pub(crate) fn request_id_of_login(login: &str) -> Option<RequestId> {
    login
        .strip_prefix(TEMP_LOGIN_PREFIX)
        .and_then(|id| RequestId::parse(id).ok())
}

/// A fresh random password from `[A-Za-z0-9]`, an alphabet that needs no
/// quoting in any SQL dialect. `rand::rng()` is a CSPRNG seeded from the OS.
pub(crate) fn new_password() -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect()
}

/// `ts` as an RFC 3339 literal (`2026-01-02T03:04:05Z`) checked to contain
/// nothing but digits, `-`, `:`, `T` and `Z`, so it can go into a statement.
pub(crate) fn timestamp_literal(ts: Timestamp) -> Result<String, ConnectorError> {
    let text = rfc3339(ts);
    if text.is_empty()
        || !text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | 'Z'))
    {
        return Err(ConnectorError::Permanent(format!(
            "expiry `{text}` is not a plain rfc 3339 timestamp"
        )));
    }
    Ok(text)
}

/// A string literal for text built from already validated ids (letters,
/// digits, spaces and `-_.@:`); anything else is refused rather than escaped.
pub(crate) fn plain_literal(text: &str) -> Result<String, ConnectorError> {
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '@' | ':')))
    {
        return Err(ConnectorError::Permanent(format!(
            "text `{text}` contains {c:?} and cannot be written as a literal"
        )));
    }
    Ok(format!("'{text}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_safe_alphabet_are_accepted_and_quoted() {
        let role = Ident::parse("role", "app_ro.v2-x$").unwrap();
        assert_eq!(role.pg(), "\"app_ro.v2-x$\"");
        assert_eq!(role.backticked(), "`app_ro.v2-x$`");
        assert_eq!(role.single_quoted(), "'app_ro.v2-x$'");
        assert!(Ident::parse("role", &"a".repeat(63)).is_ok());
    }

    #[test]
    fn hostile_or_odd_names_are_permanent_errors_naming_the_value() {
        for bad in [
            "a\"; DROP ROLE x; --",
            "",
            &"a".repeat(64),
            "1abc",
            "a b",
            "a'b",
            "a`b",
            "a\\b",
            "é",
        ] {
            let err = Ident::parse("role", bad).unwrap_err();
            assert!(!err.is_retryable(), "{err}");
            assert!(err.message().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn templates_check_fixed_parts_and_expansions() {
        let t = LoginTemplate::parse("app_{user}").unwrap();
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(t.expand(&alice).unwrap().as_str(), "app_alice");
        let err = t
            .expand(&UserId::parse("svc.deploy@corp").unwrap())
            .unwrap_err();
        assert!(err.message().contains("`app_svc.deploy@corp`"), "{err}");
        for bad in ["alice", "x\"{user}", "{user}'", "{user} x", "{user}{x}"] {
            let err = LoginTemplate::parse(bad).unwrap_err();
            assert!(!err.is_retryable(), "{err}");
            assert!(err.message().contains(&format!("`{bad}`")), "{err}");
        }
    }

    #[test]
    fn temporary_logins_round_trip_their_request_id() {
        let id = RequestId::parse("rabc23").unwrap();
        let login = temp_login(&id).unwrap();
        assert_eq!(login.as_str(), "airlock_rabc23");
        assert_eq!(request_id_of_login(login.as_str()), Some(id));
        assert_eq!(request_id_of_login("alice"), None);
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_fresh() {
        let a = new_password();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, new_password());
    }

    #[test]
    fn literals_refuse_anything_that_would_need_escaping() {
        assert_eq!(
            plain_literal("airlock request r1 for a@b").unwrap(),
            "'airlock request r1 for a@b'"
        );
        assert!(plain_literal("it's").is_err());
        assert_eq!(
            timestamp_literal(Timestamp::from_unix_millis(1_700_000_000_999)).unwrap(),
            "2023-11-14T22:13:20Z"
        );
    }
}
