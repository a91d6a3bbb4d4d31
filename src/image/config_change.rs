//! `--change` instructions for `husk import`, as `docker import` takes them: the Dockerfile
//! instructions that only touch the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
//! STOPSIGNAL, USER, VOLUME, WORKDIR).

use serde_json::{json, Map, Value};

use super::ImageError;

/// Apply one instruction to the `config` object of an image config (Docker's field names).
pub fn apply(config: &mut Map<String, Value>, change: &str) -> Result<(), ImageError> {
    let bad = |why: &str| ImageError::InvalidChange(change.to_string(), why.to_string());
    let trimmed = change.trim();
    let (instruction, rest) = match trimmed.split_once(char::is_whitespace) {
        Some((i, r)) => (i, r.trim()),
        None => (trimmed, ""),
    };
    if rest.is_empty() {
        return Err(bad("missing arguments"));
    }
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), json!(command_form(rest).map_err(|e| bad(&e))?));
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), json!(command_form(rest).map_err(|e| bad(&e))?));
        }
        "ENV" => {
            let env = config.entry("Env").or_insert_with(|| json!([]));
            let list = env.as_array_mut().ok_or_else(|| bad("Env is not a list"))?;
            for (key, value) in key_values(rest).map_err(|e| bad(&e))? {
                list.retain(|v| v.as_str().and_then(|s| s.split_once('=')).map(|(k, _)| k) != Some(&key));
                list.push(json!(format!("{key}={value}")));
            }
        }
        "LABEL" => {
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            let map = labels.as_object_mut().ok_or_else(|| bad("Labels is not a map"))?;
            for (key, value) in key_values(rest).map_err(|e| bad(&e))? {
                map.insert(key, json!(value));
            }
        }
        "EXPOSE" => {
            let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            let map = ports.as_object_mut().ok_or_else(|| bad("ExposedPorts is not a map"))?;
            for port in rest.split_whitespace() {
                let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.parse::<u16>().is_err() || !["tcp", "udp", "sctp"].contains(&proto) {
                    return Err(bad("ports look like 80 or 53/udp"));
                }
                map.insert(format!("{number}/{proto}"), json!({}));
            }
        }
        "VOLUME" => {
            let volumes = config.entry("Volumes").or_insert_with(|| json!({}));
            let map = volumes.as_object_mut().ok_or_else(|| bad("Volumes is not a map"))?;
            let paths: Vec<String> = if rest.starts_with('[') {
                serde_json::from_str(rest).map_err(|e| bad(&format!("JSON list: {e}")))?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for path in paths {
                map.insert(path, json!({}));
            }
        }
        "USER" => {
            config.insert("User".into(), json!(rest));
        }
        "WORKDIR" => {
            if !rest.starts_with('/') {
                return Err(bad("WORKDIR must be an absolute path"));
            }
            config.insert("WorkingDir".into(), json!(rest));
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(rest));
        }
        other => {
            return Err(bad(&format!(
                "{other} is not allowed; use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME or WORKDIR"
            )))
        }
    }
    Ok(())
}

/// Exec form `["a","b"]` as is; shell form wrapped in `/bin/sh -c`.
fn command_form(rest: &str) -> Result<Vec<String>, String> {
    if rest.starts_with('[') {
        serde_json::from_str(rest)
            .map_err(|e| format!("exec form must be a JSON list of strings: {e}"))
    } else {
        Ok(vec!["/bin/sh".into(), "-c".into(), rest.into()])
    }
}

/// `K=V K2="v 2"` pairs, or the legacy single `K V...` form.
fn key_values(rest: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (key, value) = rest
            .split_once(char::is_whitespace)
            .ok_or("expected KEY=VALUE or KEY VALUE")?;
        return Ok(vec![(key.to_string(), value.trim().to_string())]);
    }
    let mut pairs = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match (quote, c) {
                (None, c) if c.is_whitespace() => break,
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (_, '\\') => {
                    chars.next();
                    if let Some(escaped) = chars.next() {
                        word.push(escaped);
                    }
                    continue;
                }
                (_, c) => word.push(c),
            }
            chars.next();
        }
        if quote.is_some() {
            return Err("unterminated quote".into());
        }
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
        if key.is_empty() {
            return Err("empty key".into());
        }
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(changes: &[&str]) -> Map<String, Value> {
        let mut config = Map::new();
        for c in changes {
            apply(&mut config, c).unwrap();
        }
        config
    }

    #[test]
    fn cmd_entrypoint_env_and_friends() {
        let c = applied(&[
            r#"CMD ["/bin/sh", "-c", "echo hi"]"#,
            "ENTRYPOINT /init --flag",
            "ENV A=1 B=\"two words\"",
            "ENV LEGACY some value",
            "ENV A=3",
            "LABEL maintainer=me",
            "EXPOSE 80 53/udp",
            "WORKDIR /srv",
            "USER nobody",
            "VOLUME /data",
        ]);
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c", "/init --flag"]));
        assert_eq!(c["Env"], json!(["B=two words", "LEGACY=some value", "A=3"]));
        assert_eq!(c["Labels"], json!({"maintainer": "me"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["WorkingDir"], json!("/srv"));
        assert_eq!(c["User"], json!("nobody"));
        assert_eq!(c["Volumes"], json!({"/data": {}}));
    }

    #[test]
    fn bad_changes_are_refused() {
        let mut config = Map::new();
        for bad in [
            "RUN echo",
            "CMD",
            "CMD [\"unterminated",
            "EXPOSE http",
            "WORKDIR rel",
            "ENV A=\"x",
        ] {
            assert!(apply(&mut config, bad).is_err(), "{bad}");
        }
    }
}
