//! `husk cp`: copy files between the host and a container (runtime/container/cp.rs).

use std::path::Path;

use anyhow::{bail, Result};
use clap::Args;
use husk::runtime::container::cp::{self, CopyDirection};
use husk::runtime::Runtime;

#[derive(Debug, Args)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH or a host path.
    pub source: String,
    /// CONTAINER:DEST_PATH or a host path.
    pub destination: String,
}

fn split(arg: &str) -> Option<(&str, &str)> {
    // Docker's rule: a colon before any slash names a container.
    let colon = arg.find(':')?;
    if arg[..colon].contains('/') || colon == 0 {
        return None;
    }
    Some((&arg[..colon], &arg[colon + 1..]))
}

pub fn cp(runtime: &Runtime, args: CpArgs) -> Result<i32> {
    let (container, path, host, direction) = match (split(&args.source), split(&args.destination)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (Some((c, p)), None) => (c, p, &args.destination, CopyDirection::FromContainer),
        (None, Some((c, p))) => (c, p, &args.source, CopyDirection::IntoContainer),
        (None, None) => bail!("must specify at least one container source"),
    };
    cp::copy(runtime, container, path, Path::new(host), direction)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_follow_dockers_colon_rule() {
        assert_eq!(split("web:/etc/hosts"), Some(("web", "/etc/hosts")));
        assert_eq!(split("./a:b"), None);
        assert_eq!(split("/tmp/x"), None);
        assert_eq!(split(":x"), None);
    }
}
