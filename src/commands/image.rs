//! Image verbs: pull, push, images / image ls, image inspect, tag, rmi / image rm,
//! image prune, load, save, import, login, logout.

use std::fs::File;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use husk::image::archive::{self, ImportOptions};
use husk::image::auth::{self, Credentials};
use husk::image::registry::{self, PullOptions};
use husk::image::store::not_found_as_no_such;
use husk::image::{ImageError, Reference, Store, StoredImage};
use serde_json::{json, Value};

/// Top-level image verbs, flattened into husk's `Command`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// List images
    Images(ListArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageSubcommand),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RemoveArgs),
    /// Load images from a tar archive (docker-archive or OCI layout)
    Load(LoadArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Import the contents of a tarball to create a filesystem image
    Import(ImportArgs),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImageSubcommand {
    /// List images
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Display detailed information on one or more images
    Inspect(InspectArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RemoveArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Load images from a tar archive
    Load(LoadArgs),
    /// Save one or more images to a tar archive
    Save(SaveArgs),
    /// Import the contents of a tarball to create a filesystem image
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry (host[:port]) to reach over plain HTTP; loopback registries always are.
    #[arg(
        long = "insecure-registry",
        env = "HUSK_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// NAME[:TAG|@DIGEST]
    pub name: String,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// NAME[:TAG]
    pub name: String,
    /// Suppress verbose output
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only images matching REPOSITORY[:TAG]
    pub reference: Option<String>,
    /// Show all images (husk keeps no intermediate images, so the same as the default)
    #[arg(short, long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Go-template subset: {{.Field.Sub}} and {{json .Field}}
    #[arg(short, long)]
    pub format: Option<String>,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Force removal: untag images used by containers, delete images with several tags
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all images not used by a container, not just dangling ones
    #[arg(short, long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to a file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Tarball of a root filesystem (plain, gzip or zstd), or - for stdin
    pub file: String,
    /// REPOSITORY[:TAG] for the new image
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, ...)
    #[arg(short, long = "change")]
    pub changes: Vec<String>,
    /// Commit message recorded in the image history
    #[arg(short, long)]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host[:port]; Docker Hub when omitted
    pub server: Option<String>,
    #[arg(short, long)]
    pub username: Option<String>,
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host[:port]; Docker Hub when omitted
    pub server: Option<String>,
}

pub fn run(root: &Path, command: ImageCommand) -> Result<i32> {
    use ImageSubcommand as S;
    match command {
        ImageCommand::Pull(args) | ImageCommand::Image(S::Pull(args)) => pull(root, args),
        ImageCommand::Push(args) | ImageCommand::Image(S::Push(args)) => push(root, args),
        ImageCommand::Images(args) | ImageCommand::Image(S::Ls(args)) => list(root, args),
        ImageCommand::Image(S::Inspect(args)) => inspect(root, args),
        ImageCommand::Tag(args) | ImageCommand::Image(S::Tag(args)) => tag(root, args),
        ImageCommand::Rmi(args) | ImageCommand::Image(S::Rm(args)) => remove(root, args),
        ImageCommand::Image(S::Prune(args)) => prune(root, args),
        ImageCommand::Load(args) | ImageCommand::Image(S::Load(args)) => load(root, args),
        ImageCommand::Save(args) | ImageCommand::Image(S::Save(args)) => save(root, args),
        ImageCommand::Import(args) | ImageCommand::Image(S::Import(args)) => import(root, args),
        ImageCommand::Login(args) => login(args),
        ImageCommand::Logout(args) => logout(args),
    }
}

fn options(quiet: bool, registry: RegistryArgs) -> PullOptions {
    PullOptions {
        quiet,
        insecure_registries: registry.insecure_registries,
        docker_config_dir: None,
        progress_to_stderr: false,
        events: None,
    }
}

fn pull(root: &Path, args: PullArgs) -> Result<i32> {
    let store = Store::open(root)?;
    registry::pull(&store, &args.name, &options(args.quiet, args.registry))?;
    if args.quiet {
        // Docker's `pull -q` prints the fully qualified name it pulled.
        let reference = Reference::parse(&args.name)?;
        match &reference.digest {
            Some(digest) => println!("{}@{digest}", reference.full_name()),
            None => println!("{}", reference.full_tagged()),
        }
    }
    Ok(0)
}

fn push(root: &Path, args: PushArgs) -> Result<i32> {
    let store = Store::open(root)?;
    registry::push(&store, &args.name, &options(args.quiet, args.registry))?;
    Ok(0)
}

// ---- images ---------------------------------------------------------------------------

struct Row {
    repository: String,
    tag: String,
    digest: String,
    id: String,
    created: String,
    size: String,
}

fn list(root: &Path, args: ListArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let filter = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()?;
    let filter_has_tag = args.reference.as_deref().is_some_and(|r| {
        let last = r.rsplit('/').next().unwrap_or(r);
        last.contains(':')
    });
    let mut images = store.images()?;
    images.sort_by(|a, b| b.created.cmp(&a.created));
    let mut rows = Vec::new();
    let mut seen_ids = Vec::new();
    for image in &images {
        let id = if args.no_trunc {
            image.id.clone()
        } else {
            image.short_id().to_string()
        };
        let mut names: Vec<(String, String)> = image
            .repo_tags
            .iter()
            .map(|t| {
                let r = Reference::parse(t).expect("stored tags parse");
                (r.familiar_name(), r.tag_or_default().to_string())
            })
            .collect();
        if names.is_empty() {
            let repos: Vec<String> = image
                .repo_digests
                .iter()
                .filter_map(|d| Reference::parse(d).ok().map(|r| r.familiar_name()))
                .collect();
            names = if repos.is_empty() {
                vec![("<none>".into(), "<none>".into())]
            } else {
                repos.into_iter().map(|r| (r, "<none>".into())).collect()
            };
        }
        for (repository, tag) in names {
            if let Some(filter) = &filter {
                if repository != filter.familiar_name()
                    || (filter_has_tag && Some(tag.as_str()) != filter.tag.as_deref())
                {
                    continue;
                }
            }
            let digest = image
                .repo_digests
                .iter()
                .filter_map(|d| Reference::parse(d).ok())
                .find(|r| r.familiar_name() == repository)
                .and_then(|r| r.digest)
                .unwrap_or_else(|| "<none>".into());
            rows.push(Row {
                repository,
                tag,
                digest,
                id: id.clone(),
                created: image
                    .created
                    .as_deref()
                    .map_or_else(|| "N/A".into(), human_age),
                size: human_size(image.size),
            });
        }
    }
    if args.quiet {
        for row in rows {
            if !seen_ids.contains(&row.id) {
                println!("{}", row.id);
                seen_ids.push(row.id);
            }
        }
        return Ok(0);
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(header.into_iter().map(String::from).collect());
    for row in rows {
        let mut cells = vec![row.repository, row.tag];
        if args.digests {
            cells.push(row.digest);
        }
        cells.extend([row.id, row.created, row.size]);
        table.push(cells);
    }
    print_table(&table);
    Ok(0)
}

/// Through the same Docker-style table as every other listing.
fn print_table(table: &[Vec<String>]) {
    let Some((header, rows)) = table.split_first() else {
        return;
    };
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut out = husk::display::Table::new(&header);
    for row in rows {
        out.row(row.clone());
    }
    let _ = io::stdout().lock().write_all(out.render().as_bytes());
}

/// go-units' HumanDuration + " ago", as Docker prints CREATED.
pub fn human_age(created: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(created) {
        Ok(created) => husk::display::ago(created.with_timezone(&chrono::Utc)),
        Err(_) => "N/A".into(),
    }
}

use husk::display::human_size;

// ---- inspect --------------------------------------------------------------------------

pub fn inspect_value(store: &Store, image: &StoredImage) -> Result<Value> {
    let config = serde_json::to_value(&image.config)?;
    let lower_dirs: Vec<String> = image
        .layers
        .iter()
        .rev()
        .filter_map(|l| store.layer_dir(&l.diff_id).ok())
        .filter(|d| d.is_dir())
        .map(|d| d.display().to_string())
        .collect();
    Ok(json!({
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": "",
        "Comment": config["history"].get(0).and_then(|h| h.get("comment")).cloned().unwrap_or(json!("")),
        "Created": image.created,
        "Author": config.get("author").cloned().unwrap_or(json!("")),
        "Config": config.get("config").cloned().unwrap_or(json!({})),
        "Architecture": config["architecture"],
        "Os": config["os"],
        "Size": image.size,
        "GraphDriver": {
            "Name": "overlay",
            "Data": if lower_dirs.len() == image.layers.len() { json!({"LowerDir": lower_dirs.join(":")}) } else { json!(null) },
        },
        "RootFS": {
            "Type": "layers",
            "Layers": image.layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        },
        "Descriptor": {
            "mediaType": image.manifest_media_type,
            "digest": image.manifest_digest,
        },
    }))
}

fn inspect(root: &Path, args: InspectArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let mut values = Vec::new();
    let mut failed = false;
    for name in &args.images {
        match store.lookup(name).map_err(not_found_as_no_such) {
            Ok(image) => values.push(inspect_value(&store, &image)?),
            Err(e) => {
                eprintln!("husk: {e}");
                failed = true;
            }
        }
    }
    super::print_inspected(args.format.as_deref(), &values)?;
    Ok(if failed { 1 } else { 0 })
}

/// The small part of Go templates people use with inspect: `{{.A.B}}` and `{{json .A}}`.
pub fn render_template(template: &str, value: &Value) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .context("unterminated {{ in --format")?
            + start;
        let action = rest[start + 2..end].trim();
        if let Some(path) = action.strip_prefix("range ") {
            // `{{range .Map}}BODY{{end}}`: BODY once per element (a map's values in key
            // order), with `.` the element, as Go's text/template does.
            let (body, after) = range_body(&rest[end + 2..])?;
            match lookup(value, path.trim(), action)? {
                Value::Array(items) => {
                    for item in items {
                        out.push_str(&render_template(body, item)?);
                    }
                }
                Value::Object(map) => {
                    for item in map.values() {
                        out.push_str(&render_template(body, item)?);
                    }
                }
                _ => {}
            }
            rest = after;
            continue;
        }
        let (as_json, path) = match action.strip_prefix("json ") {
            Some(path) => (true, path.trim()),
            None => (false, action),
        };
        let current = lookup(value, path, action)?;
        out.push_str(&if as_json {
            serde_json::to_string(current)?
        } else {
            go_print(current)
        });
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// `.A.B` in `value` (null when missing, as Go prints `<no value>`).
fn lookup<'v>(value: &'v Value, path: &str, action: &str) -> Result<&'v Value> {
    let path = path
        .strip_prefix('.')
        .with_context(|| format!("unsupported template action {action:?}"))?;
    let mut current = value;
    for key in path.split('.').filter(|k| !k.is_empty()) {
        current = current.get(key).unwrap_or(&Value::Null);
    }
    Ok(current)
}

/// Split the text after a `{{range ...}}` into its body and what follows its `{{end}}`,
/// counting nested ranges.
fn range_body(text: &str) -> Result<(&str, &str)> {
    let mut depth = 0;
    let mut at = 0;
    while let Some(open) = text[at..].find("{{") {
        let open = at + open;
        let close = text[open..]
            .find("}}")
            .context("unterminated {{ in --format")?
            + open;
        let action = text[open + 2..close].trim();
        if action.starts_with("range ") {
            depth += 1;
        } else if action == "end" {
            if depth == 0 {
                return Ok((&text[..open], &text[close + 2..]));
            }
            depth -= 1;
        }
        at = close + 2;
    }
    anyhow::bail!("{{{{range}}}} without {{{{end}}}} in --format")
}

fn go_print(value: &Value) -> String {
    match value {
        Value::Null => "<no value>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_print).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(map) => {
            format!(
                "map[{}]",
                map.iter()
                    .map(|(k, v)| format!("{k}:{}", go_print(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        other => other.to_string(),
    }
}

// ---- tag, rmi, prune ------------------------------------------------------------------

fn tag(root: &Path, args: TagArgs) -> Result<i32> {
    let store = Store::open(root)?;
    store.tag(&args.source, &args.target)?;
    Ok(0)
}

fn remove(root: &Path, args: RemoveArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let mut status = 0;
    for name in &args.images {
        match remove_one(&store, name, args.force) {
            Ok(removals) => {
                for removal in removals {
                    match removal {
                        Removal::Untagged(name) => println!("Untagged: {name}"),
                        Removal::Deleted(id) => println!("Deleted: {id}"),
                    }
                }
            }
            Err(e) => {
                eprintln!("husk: {e:#}");
                status = 1;
            }
        }
    }
    Ok(status)
}

/// What `rmi` did, in Docker's order: names untagged, then the image deleted.
pub enum Removal {
    Untagged(String),
    Deleted(String),
}

/// `rmi NAME`: untag it, and delete the image when no name and no container is left on it
/// (`force` takes the last name even from an image in use, and every name from an image
/// named several times).
pub fn remove_one(
    store: &Store,
    name: &str,
    force: bool,
) -> Result<Vec<Removal>, husk::runtime::RuntimeError> {
    let image = store.lookup(name).map_err(not_found_as_no_such)?;
    let in_use = husk::container::images_in_use(store.root())
        .map_err(husk::runtime::RuntimeError::io("reading container records"))?
        .contains(&image.id);
    let untagged_all =
        |names: Vec<String>| names.into_iter().map(Removal::Untagged).collect::<Vec<_>>();
    let by_name = Reference::parse(name).ok().filter(|r| {
        let tagged = r.digest.is_none() && image.repo_tags.contains(&r.familiar_tagged());
        let digested = r.digest.is_some() && image.repo_digests.contains(&r.to_string());
        tagged || digested
    });
    let mut untagged = Vec::new();
    if let Some(reference) = by_name {
        let last_name = image.repo_tags.len() + usize::from(reference.digest.is_some()) <= 1;
        if last_name && in_use && !force {
            return Err(ImageError::Conflict(format!(
                "unable to remove repository reference {name:?} (must force) - a container is using its referenced image {}",
                image.short_id()
            )).into());
        }
        store.untag_name(&reference)?;
        untagged.push(reference.to_string());
        if !last_name || in_use {
            return Ok(untagged_all(untagged));
        }
    } else {
        if image.repo_tags.len() > 1 && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is referenced in multiple repositories",
                image.short_id()
            )).into());
        }
        if in_use && !force {
            return Err(ImageError::Conflict(format!(
                "unable to delete {} (must be forced) - image is being used by a container",
                image.short_id()
            ))
            .into());
        }
        for tag in &image.repo_tags {
            store.untag_name(&Reference::parse(tag)?)?;
            untagged.push(tag.clone());
        }
        if in_use {
            return Ok(untagged_all(untagged));
        }
    }
    untagged.extend(image.repo_digests.iter().cloned());
    store.delete_manifest(&image.manifest_digest)?;
    let mut removals = untagged_all(untagged);
    removals.push(Removal::Deleted(image.id));
    Ok(removals)
}

fn prune(root: &Path, args: PruneArgs) -> Result<i32> {
    if !args.force {
        let what = if args.all {
            "all images without at least one container associated to them"
        } else {
            "all dangling images"
        };
        eprint!("WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ");
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            return Ok(0);
        }
    }
    let store = Store::open(root)?;
    let in_use = husk::container::images_in_use(root).context("reading container records")?;
    let mut deleted = Vec::new();
    for image in store.images()? {
        let dangling = image.repo_tags.is_empty();
        if (dangling || args.all) && !in_use.contains(&image.id) {
            for tag in &image.repo_tags {
                println!("untagged: {tag}");
            }
            store.remove_manifest_entries(&image.manifest_digest)?;
            deleted.push(image.id.clone());
        }
    }
    let reclaimed = store.collect_garbage()?;
    if !deleted.is_empty() {
        println!("Deleted Images:");
        for id in &deleted {
            println!("deleted: {id}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(0)
}

// ---- load, save, import ---------------------------------------------------------------

fn load(root: &Path, args: LoadArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let input: Box<dyn Read> = match &args.input {
        Some(path) => {
            Box::new(File::open(path).with_context(|| format!("opening {}", path.display()))?)
        }
        None => {
            if io::stdin().is_terminal() {
                bail!(
                    "requested load from stdin, but stdin is empty; use -i FILE or redirect a file"
                );
            }
            Box::new(io::stdin().lock())
        }
    };
    let loaded = archive::load(&store, input)?;
    if !args.quiet {
        for item in loaded {
            if item.names.is_empty() {
                println!("Loaded image ID: {}", item.image.id);
            }
            for name in item.names {
                println!("Loaded image: {name}");
            }
        }
    }
    Ok(0)
}

fn save(root: &Path, args: SaveArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let mut images = Vec::new();
    for name in &args.images {
        let image = store.lookup(name).map_err(not_found_as_no_such)?;
        let named = Reference::parse(name)
            .ok()
            .filter(|r| r.digest.is_none() && image.repo_tags.contains(&r.familiar_tagged()));
        images.push((image, named));
    }
    match &args.output {
        Some(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp = dir.join(format!(
                ".{}.husk-save-{}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            let result = (|| -> Result<()> {
                let file =
                    File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                archive::save(&store, &images, &file)?;
                file.sync_all()?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?;
        }
        None => {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            archive::save(&store, &images, io::stdout().lock())?;
        }
    }
    Ok(0)
}

fn import(root: &Path, args: ImportArgs) -> Result<i32> {
    let store = Store::open(root)?;
    let tag = args
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()?;
    if tag.as_ref().is_some_and(|t| t.digest.is_some()) {
        bail!("invalid reference format: an imported image cannot be named by digest");
    }
    let options = ImportOptions {
        changes: args.changes,
        message: args.message,
    };
    let image = if args.file == "-" {
        archive::import(&store, io::stdin().lock(), tag.as_ref(), &options)?
    } else {
        let file = File::open(&args.file).with_context(|| format!("opening {}", args.file))?;
        archive::import(&store, file, tag.as_ref(), &options)?
    };
    println!("{}", image.id);
    Ok(0)
}

// ---- login, logout --------------------------------------------------------------------

fn login(args: LoginArgs) -> Result<i32> {
    let server = args.server.clone().unwrap_or_else(|| "docker.io".into());
    let username = match args.username {
        Some(u) => u,
        None => {
            if args.password_stdin || !io::stdin().is_terminal() {
                bail!("Must provide --username with --password-stdin");
            }
            eprint!("Username: ");
            let mut line = String::new();
            io::stdin().lock().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    let password = match (args.password, args.password_stdin) {
        (Some(_), true) => bail!("--password and --password-stdin are mutually exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
            p
        }
        (None, _) => {
            if !args.password_stdin {
                eprint!("Password: ");
            }
            let mut line = String::new();
            io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    if username.is_empty() || password.is_empty() {
        bail!("username and password must not be empty");
    }
    let opts = options(false, args.registry);
    registry::login(&server, &Credentials { username, password }, &opts)?;
    println!("Login Succeeded");
    Ok(0)
}

fn logout(args: LogoutArgs) -> Result<i32> {
    let server = args.server.unwrap_or_else(|| "docker.io".into());
    let dir = auth::config_dir(None);
    if auth::remove(&dir, &server)? {
        println!("Removing login credentials for {}", auth::auth_key(&server));
    } else {
        println!("Not logged in to {server}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::render_template;
    use serde_json::json;

    #[test]
    fn templates_range_over_maps_and_lists_and_nest() {
        let value = json!({
            "NetworkSettings": {"Networks": {
                "b": {"IPAddress": "10.86.0.2", "Aliases": ["db", "store"]},
                "a": {"IPAddress": "10.87.0.2", "Aliases": []}
            }},
            "Name": "web"
        });
        // A map's values in key order, fields read relative to each; text around kept.
        assert_eq!(
            render_template(
                "{{.Name}}:{{range .NetworkSettings.Networks}} {{.IPAddress}}{{end}}!",
                &value
            )
            .unwrap(),
            "web: 10.87.0.2 10.86.0.2!"
        );
        // Nested, over a list of strings (`.` is the element).
        assert_eq!(
            render_template(
                "{{range .NetworkSettings.Networks}}[{{range .Aliases}}{{.}},{{end}}]{{end}}",
                &value
            )
            .unwrap(),
            "[][db,store,]"
        );
        assert!(render_template("{{range .Name}}x", &value).is_err());
    }
}
