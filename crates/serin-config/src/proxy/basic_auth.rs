//! The BasicAuth filter's section checked into [`BasicAuthConfig`]: an
//! htpasswd file whose every user has a bcrypt hash, names unique.

use std::collections::BTreeSet;
use std::path::Path;

use super::hash_file::HashFile;
use super::model::{BasicAuthConfig, BasicAuthUser, defaults};
use super::raw;
use super::validate::header_name;
use crate::error::Problems;

/// `None` when the section cannot make a filter (reported already).
pub(super) fn validate(
    raw: &raw::BasicAuth,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<BasicAuthConfig> {
    let forward_user_header = raw.forward_user_header.as_ref().map(|h| header_name(h, p));
    let realm = match &raw.realm {
        // It is written into a quoted string of the challenge.
        Some(r) if r.is_empty() || r.chars().any(|c| c == '"' || c == '\\' || c.is_control()) => {
            r.report(
                p,
                "realm must be non-empty text without `\"`, `\\` or control characters",
            );
            None
        }
        Some(r) => Some(r.to_string()),
        None => Some(defaults::BASIC_AUTH_REALM.to_string()),
    };
    let file = HashFile::read(&raw.htpasswd, base_dir, p)?;
    let users = users(&file, p);
    Some(BasicAuthConfig {
        htpasswd: file.path.clone(),
        realm: realm?,
        users: users?,
        forward_user_header: match forward_user_header {
            Some(h) => Some(h?),
            None => None,
        },
    })
}

/// The `user:hash` lines of an htpasswd file; every line with a problem is
/// reported.
fn users(file: &HashFile<'_>, p: &mut Problems) -> Option<Vec<BasicAuthUser>> {
    let mut names = BTreeSet::new();
    let mut users = Vec::with_capacity(file.lines.len());
    let mut ok = true;
    for (line, text) in &file.lines {
        let Some((name, hash)) = text.split_once(':') else {
            file.report(p, *line, "expected `user:hash`");
            ok = false;
            continue;
        };
        if let Err(why) = user_problem(name, hash) {
            file.report(p, *line, why);
            ok = false;
        } else if !names.insert(name) {
            file.report(p, *line, format!("user `{name}` is given twice"));
            ok = false;
        } else {
            users.push(BasicAuthUser {
                name: name.to_string(),
                bcrypt: hash.to_string(),
            });
        }
    }
    if ok && users.is_empty() {
        // Fail closed would refuse every request: surely a mistake.
        file.report_file(p, "the file has no users");
        return None;
    }
    ok.then_some(users)
}

/// Why a user's line cannot be used: its name, or a hash that is not
/// bcrypt (MD5-crypt `$apr1$`, SHA-1 `{SHA}` and crypt(3) are weak, and
/// refused rather than guessed at).
fn user_problem(name: &str, hash: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name must not be empty".into());
    }
    let bcrypt = ["$2y$", "$2b$", "$2a$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix));
    if !bcrypt {
        return Err(format!(
            "user `{name}`: only bcrypt hashes ($2y$, $2b$, $2a$) are accepted (make one with `htpasswd -B`)"
        ));
    }
    // `$2y$` + 2-digit cost + `$` + 22 characters of salt + 31 of hash.
    let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
    let well_formed = hash.len() == 60
        && hash.as_bytes().get(6) == Some(&b'$')
        && cost.is_some_and(|c| (4..=31).contains(&c))
        && hash[7..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
    if !well_formed {
        return Err(format!("user `{name}`: not a well-formed bcrypt hash"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::user_problem;

    #[test]
    fn only_well_formed_bcrypt_hashes_are_accepted() {
        let good = "$2y$05$abcdefghijklmnopqrstuu5Bz0y7aMVPzN5k3ZJr1BB2zBqXCcFJy";
        assert_eq!(good.len(), 60);
        let cases = [
            ("alice", good.to_string(), Ok(())),
            ("alice", good.replacen("$2y$", "$2b$", 1), Ok(())),
            ("alice", good.replacen("$2y$", "$2a$", 1), Ok(())),
            ("", good.to_string(), Err("a user name")),
            (
                "bob",
                "$apr1$abc$def".to_string(),
                Err("user `bob`: only bcrypt"),
            ),
            (
                "bob",
                "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=".to_string(),
                Err("user `bob`: only bcrypt"),
            ),
            (
                "bob",
                good.replacen("$05$", "$99$", 1),
                Err("user `bob`: not a well-formed"),
            ),
            (
                "bob",
                good[..59].to_string(),
                Err("user `bob`: not a well-formed"),
            ),
        ];
        for (name, hash, expected) in cases {
            let got = user_problem(name, &hash);
            match (&got, expected) {
                (Ok(()), Ok(())) => {}
                (Err(g), Err(e)) => assert!(g.starts_with(e), "{name}:{hash}: {g}"),
                _ => panic!("{name}:{hash}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
