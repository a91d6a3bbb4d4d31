//! Registry credentials in Docker's client config (`$DOCKER_CONFIG/config.json`, default
//! `~/.docker/config.json`): `{"auths": {"<host>": {"auth": base64("user:password")}}}`.
//! Docker Hub's key is "https://index.docker.io/v1/". Other keys in the file are preserved.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::{json, Value};

use super::reference::{DOCKER_HUB_DOMAIN, DOCKER_HUB_REGISTRY};
use super::ImageError;

pub const DOCKER_HUB_AUTH_KEY: &str = "https://index.docker.io/v1/";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The directory holding config.json: the explicit one, else $DOCKER_CONFIG, else ~/.docker.
pub fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".docker")
}

/// The key a registry's credentials are stored under.
pub fn auth_key(server: &str) -> String {
    let server = server
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = server.split('/').next().unwrap_or(server);
    if host == DOCKER_HUB_DOMAIN || host == DOCKER_HUB_REGISTRY || host == "index.docker.io" {
        DOCKER_HUB_AUTH_KEY.to_string()
    } else {
        host.to_string()
    }
}

fn read_config(path: &Path) -> Result<Value, ImageError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::DockerConfig {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(ImageError::io("reading", path)(e)),
    }
}

/// Credentials stored for `server` (a registry host or Docker Hub alias), if any.
pub fn lookup(dir: &Path, server: &str) -> Result<Option<Credentials>, ImageError> {
    let path = dir.join("config.json");
    let config = read_config(&path)?;
    let key = auth_key(server);
    // Docker asks a credential helper first when one is configured for this registry.
    let helper = config
        .get("credHelpers")
        .and_then(|h| h.get(&key))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        return from_helper(helper, &key);
    }
    let Some(entry) = config.get("auths").and_then(|a| {
        a.get(&key)
            .or_else(|| a.get(format!("https://{key}").as_str()))
            .or_else(|| a.get(format!("http://{key}").as_str()))
    }) else {
        return Ok(None);
    };
    let invalid = |reason: &str| ImageError::DockerConfig {
        path: path.clone(),
        reason: format!("{key}: {reason}"),
    };
    if let Some(auth) = entry
        .get("auth")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth)
            .map_err(|_| invalid("auth is not base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| invalid("auth is not UTF-8"))?;
        let (username, password) = decoded
            .split_once(':')
            .ok_or_else(|| invalid("auth is not user:password"))?;
        return Ok(Some(Credentials {
            username: username.into(),
            password: password.into(),
        }));
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.into(),
            password: p.into(),
        })),
        _ => Ok(None),
    }
}

/// Run `docker-credential-<helper> get` (the docker-credential-helpers protocol): the
/// server on stdin, `{"Username": .., "Secret": ..}` on stdout; "not found" means none.
fn from_helper(helper: &str, key: &str) -> Result<Option<Credentials>, ImageError> {
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{helper}");
    let failed = |reason: String| ImageError::DockerConfig {
        path: PathBuf::from(&program),
        reason,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| failed(format!("cannot run the configured credential helper: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(key.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("get {key} failed: {}", stdout.trim())));
    }
    let value: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| failed(format!("unreadable answer: {e}")))?;
    match (
        value.get("Username").and_then(Value::as_str),
        value.get("Secret").and_then(Value::as_str),
    ) {
        (Some(username), Some(secret)) if !secret.is_empty() => Ok(Some(Credentials {
            username: username.into(),
            password: secret.into(),
        })),
        _ => Ok(None),
    }
}

/// Store credentials for `server`, keeping the rest of the file. Written 0600, atomically.
pub fn store(dir: &Path, server: &str, credentials: &Credentials) -> Result<(), ImageError> {
    let path = dir.join("config.json");
    let mut config = read_config(&path)?;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", credentials.username, credentials.password));
    let object = config
        .as_object_mut()
        .ok_or_else(|| ImageError::DockerConfig {
            path: path.clone(),
            reason: "not a JSON object".into(),
        })?;
    let auths = object.entry("auths").or_insert_with(|| json!({}));
    let auths = auths
        .as_object_mut()
        .ok_or_else(|| ImageError::DockerConfig {
            path: path.clone(),
            reason: "\"auths\" is not an object".into(),
        })?;
    auths.insert(auth_key(server), json!({ "auth": auth }));
    write_config(dir, &config)
}

/// Remove credentials for `server`. Returns whether there were any.
pub fn remove(dir: &Path, server: &str) -> Result<bool, ImageError> {
    let path = dir.join("config.json");
    let mut config = read_config(&path)?;
    let key = auth_key(server);
    let removed = config
        .get_mut("auths")
        .and_then(Value::as_object_mut)
        .is_some_and(|auths| auths.remove(&key).is_some());
    if removed {
        write_config(dir, &config)?;
    }
    Ok(removed)
}

fn write_config(dir: &Path, config: &Value) -> Result<(), ImageError> {
    fs::create_dir_all(dir).map_err(ImageError::io("creating", dir))?;
    let path = dir.join("config.json");
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let bytes = serde_json::to_vec_pretty(config).map_err(|e| ImageError::Json(e.to_string()))?;
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(ImageError::io("writing", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_remove_round_trip_keeps_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("config.json"),
            r#"{"detachKeys":"ctrl-x","auths":{}}"#,
        )
        .unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: "p:w".into(),
        };
        store(dir.path(), "127.0.0.1:5000", &creds).unwrap();
        store(dir.path(), "docker.io", &creds).unwrap();
        assert_eq!(
            lookup(dir.path(), "127.0.0.1:5000").unwrap(),
            Some(creds.clone())
        );
        assert_eq!(
            lookup(dir.path(), "registry-1.docker.io").unwrap(),
            Some(creds)
        );
        let raw: Value =
            serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(raw["detachKeys"], "ctrl-x");
        assert!(raw["auths"][DOCKER_HUB_AUTH_KEY]["auth"].is_string());
        assert!(remove(dir.path(), "127.0.0.1:5000").unwrap());
        assert!(!remove(dir.path(), "127.0.0.1:5000").unwrap());
        assert_eq!(lookup(dir.path(), "127.0.0.1:5000").unwrap(), None);
    }
}
