//! Resolving Docker's `-u user[:group]` against the container's own /etc/passwd and
//! /etc/group, as Docker does (never the host's databases).

use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
}

/// The identity the container process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: every group listing the user by name.
    pub additional_gids: Vec<u32>,
    /// From passwd, used for $HOME when the spec sets none.
    pub home: Option<String>,
}

/// Resolve `spec` ("name", "uid", "name:group", "uid:gid", ...) using the passwd and group
/// files found under `root` (missing files count as empty, like Docker).
pub fn resolve(spec: &str, root: &Path) -> Result<ResolvedUser, UserError> {
    let passwd = read_bounded(&root.join("etc/passwd"));
    let group = read_bounded(&root.join("etc/group"));
    resolve_in(spec, &passwd, &group)
}

/// Databases larger than this are not real passwd files; reading stops there.
const MAX_DB_BYTES: u64 = 4 << 20;

fn read_bounded(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(MAX_DB_BYTES).read_to_string(&mut text);
    }
    text
}

pub fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(f), _) => {
            let uid = f[2]
                .parse()
                .map_err(|_| UserError::UnknownUser(user_part.to_string()))?;
            let gid = f[3]
                .parse()
                .map_err(|_| UserError::UnknownUser(user_part.to_string()))?;
            (
                uid,
                gid,
                Some(f[0].to_string()),
                f.get(5).map(|h| h.to_string()),
            )
        }
        // A numeric uid need not exist in passwd; Docker then runs it with gid 0.
        (None, Ok(uid)) => (uid, 0, None, None),
        (None, Err(_)) => return Err(UserError::UnknownUser(user_part.to_string())),
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match groups.iter().find(|f| f[0] == g) {
            Some(f) => f[2]
                .parse()
                .map_err(|_| UserError::UnknownGroup(g.to_string()))?,
            None => g
                .parse()
                .map_err(|_| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group_part) {
        for f in &groups {
            let members = f.get(3).copied().unwrap_or_default();
            if members.split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1000::/srv/app:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app,other\naudio:x:29:app\n";

    #[test]
    fn resolves_names_numbers_and_groups() {
        let app = resolve_in("app", PASSWD, GROUP).unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.additional_gids, [10, 29]);
        assert_eq!(app.home.as_deref(), Some("/srv/app"));

        let nobody = resolve_in("65534", PASSWD, GROUP).unwrap();
        assert_eq!((nobody.uid, nobody.gid), (65534, 65534));

        let unknown_uid = resolve_in("4242", PASSWD, GROUP).unwrap();
        assert_eq!((unknown_uid.uid, unknown_uid.gid), (4242, 0));

        let with_group = resolve_in("app:nogroup", PASSWD, GROUP).unwrap();
        assert_eq!((with_group.uid, with_group.gid), (1000, 65534));
        assert!(
            with_group.additional_gids.is_empty(),
            "explicit group replaces the list"
        );

        let numeric = resolve_in("1:2", PASSWD, GROUP).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (1, 2));
    }

    #[test]
    fn unknown_names_are_errors_with_docker_wording() {
        let err = resolve_in("ghost", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find user ghost: no matching entries in passwd file"
        );
        let err = resolve_in("app:ghosts", PASSWD, GROUP).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to find group ghosts: no matching entries in group file"
        );
        assert!(
            resolve_in("app", "", "").is_err(),
            "no passwd file, no names"
        );
    }
}
