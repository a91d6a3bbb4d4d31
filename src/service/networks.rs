//! The network routes: list, inspect, create, remove, prune on `husk network`'s store, and
//! connect/disconnect as `husk network connect|disconnect` run by the service (the CLI's one
//! path for joining a running container, in both isolations' rules).

use std::collections::{BTreeMap, HashMap};

use husk::network::{Network, NetworkError, NetworkRequest, Networks, Subnet, DEFAULT_NETWORK};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{empty, json, Body, Service, ServiceError};
use crate::commands::network::{users, value};

impl From<NetworkError> for ServiceError {
    fn from(err: NetworkError) -> Self {
        let text = err.to_string();
        match err {
            NetworkError::NotFound(_) => ServiceError::NotFound(text),
            NetworkError::NameInUse(_)
            | NetworkError::InUse { .. }
            | NetworkError::Overlap(_)
            | NetworkError::Taken { .. } => ServiceError::Conflict(text),
            NetworkError::InvalidName(_)
            | NetworkError::InvalidSubnet(_)
            | NetworkError::Address(_)
            | NetworkError::Predefined(_)
            | NetworkError::PoolExhausted => ServiceError::BadRequest(text),
            _ => ServiceError::Internal(text),
        }
    }
}

fn store(service: &Service) -> Result<Networks, ServiceError> {
    Ok(Networks::open(&service.runtime.root)?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    driver: String,
    internal: bool,
    #[serde(rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    ipam: Option<Ipam>,
    options: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct Ipam {
    driver: String,
    config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct IpamConfig {
    subnet: String,
    gateway: String,
    #[serde(rename = "IPRange")]
    ip_range: String,
}

/// `POST /networks/create`: a bridge network, with at most one IPv4 subnet.
pub fn create(service: &Service, body: &[u8]) -> Result<Response<Body>, ServiceError> {
    let body: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid JSON in the network body: {e}")))?;
    let refuse =
        |field: &str| ServiceError::BadRequest(format!("{field} is not supported by husk"));
    if !matches!(body.driver.as_str(), "" | "bridge") {
        return Err(ServiceError::NotFound(format!(
            "plugin \"{}\" not found: husk networks use the bridge driver",
            body.driver
        )));
    }
    if body.internal {
        return Err(refuse("Internal"));
    }
    if body.enable_ipv6 {
        return Err(refuse("EnableIPv6"));
    }
    if body.options.as_ref().is_some_and(|o| !o.is_empty()) {
        return Err(refuse("Options"));
    }
    let ipam = body.ipam.unwrap_or_default();
    if !matches!(ipam.driver.as_str(), "" | "default") {
        return Err(refuse(&format!("IPAM driver {:?}", ipam.driver)));
    }
    let configs = ipam.config.unwrap_or_default();
    if configs.len() > 1 {
        return Err(refuse("more than one IPAM config"));
    }
    let (mut subnet, mut gateway) = (None, None);
    if let Some(config) = configs.first() {
        if !config.ip_range.is_empty() {
            return Err(refuse("IPAM IPRange"));
        }
        if !config.subnet.is_empty() {
            subnet = Some(
                config
                    .subnet
                    .parse::<Subnet>()
                    .map_err(|e| ServiceError::BadRequest(e.to_string()))?,
            );
        }
        if !config.gateway.is_empty() {
            gateway = Some(config.gateway.parse().map_err(|_| {
                ServiceError::BadRequest(format!("invalid gateway {:?}", config.gateway))
            })?);
        }
    }
    let network = store(service)?.create(NetworkRequest {
        name: body.name,
        subnet,
        gateway,
        labels: body.labels.unwrap_or_default(),
    })?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": network.id, "Warning": ""}),
    ))
}

fn matches_filters(network: &Network, filters: &HashMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, values)| match key.as_str() {
        "label" => values
            .iter()
            .all(|l| husk::container::spec::labels_match(&network.labels, l)),
        "name" => values.iter().any(|v| network.name.contains(v.as_str())),
        "id" => values.iter().any(|v| network.id.starts_with(v.as_str())),
        _ => values.iter().any(|v| v == "bridge" || v == "local"), // driver, scope
    })
}

fn check_filters(
    filters: &HashMap<String, Vec<String>>,
    allowed: &[&str],
) -> Result<(), ServiceError> {
    for key in filters.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(ServiceError::BadRequest(format!(
                "invalid filter '{key}': husk filters networks by {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// `GET /networks`, with Docker's filters name, id, label, driver and scope.
pub fn list(
    service: &Service,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, ServiceError> {
    check_filters(filters, &["name", "id", "label", "driver", "scope"])?;
    let root = &service.runtime.root;
    let list: Vec<Value> = store(service)?
        .list()?
        .iter()
        .filter(|n| matches_filters(n, filters))
        .map(|n| value(root, n))
        .collect();
    Ok(json(StatusCode::OK, &Value::Array(list)))
}

/// `GET /networks/{id}`.
pub fn inspect(service: &Service, key: &str) -> Result<Response<Body>, ServiceError> {
    let network = store(service)?.find(key)?;
    Ok(json(
        StatusCode::OK,
        &value(&service.runtime.root, &network),
    ))
}

/// `DELETE /networks/{id}`: refused while a container (running or not) is on it.
pub fn remove(service: &Service, key: &str) -> Result<Response<Body>, ServiceError> {
    let networks = store(service)?;
    let network = networks.find(key)?;
    let on_it = users(&service.runtime.root, &network)
        .map_err(|e| ServiceError::Internal(e.to_string()))?;
    if !on_it.is_empty() {
        return Err(ServiceError::Conflict(format!(
            "error while removing network: network {} id {} has active endpoints ({})",
            network.name,
            network.id,
            on_it.join(", ")
        )));
    }
    networks.remove(&network.id)?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /networks/prune`: every network but the default one that no container is on.
pub fn prune(
    service: &Service,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Response<Body>, ServiceError> {
    check_filters(filters, &["label"])?;
    let networks = store(service)?;
    let mut deleted = Vec::new();
    for network in networks.list()? {
        if network.name == DEFAULT_NETWORK
            || !network.endpoints.is_empty()
            || !matches_filters(&network, filters)
        {
            continue;
        }
        let on_it = users(&service.runtime.root, &network)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        if on_it.is_empty() {
            networks.remove(&network.id)?;
            deleted.push(network.name);
        }
    }
    Ok(json(StatusCode::OK, &json!({ "NetworksDeleted": deleted })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ConnectBody {
    container: String,
    force: bool,
    endpoint_config: Option<EndpointConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpam>,
    pub links: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointIpam {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `POST /networks/{id}/connect` and `/disconnect`: `husk network connect|disconnect`, its
/// one-line refusal as the answer's message.
pub fn connect(
    service: &Service,
    key: &str,
    body: &[u8],
    disconnect: bool,
) -> Result<Response<Body>, ServiceError> {
    let body: ConnectBody = serde_json::from_slice(body)
        .map_err(|e| ServiceError::BadRequest(format!("invalid JSON in the connect body: {e}")))?;
    let network = store(service)?.find(key)?;
    let record = service.runtime.containers()?.find(&body.container)?;
    let mut command = service.husk_command()?;
    command.arg("network");
    if disconnect {
        command.arg("disconnect");
        if body.force {
            command.arg("--force");
        }
    } else {
        command.arg("connect");
        let endpoint = body.endpoint_config.unwrap_or_default();
        if endpoint.links.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ServiceError::BadRequest(
                "Links is not supported by husk".into(),
            ));
        }
        for alias in endpoint.aliases.unwrap_or_default() {
            command.arg(format!("--alias={alias}"));
        }
        if let Some(ipam) = endpoint.ipam_config {
            if !ipam.ipv6_address.is_empty() {
                return Err(ServiceError::BadRequest(
                    "IPv6Address is not supported by husk".into(),
                ));
            }
            if !ipam.ipv4_address.is_empty() {
                command.arg(format!("--ip={}", ipam.ipv4_address));
            }
        }
    }
    let out = command
        .arg(&network.id)
        .arg(&record.id)
        .output()
        .map_err(|e| ServiceError::Internal(format!("running husk network: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().last().unwrap_or("husk network failed").trim();
        return Err(ServiceError::BadRequest(
            line.trim_start_matches("husk: ").to_string(),
        ));
    }
    Ok(empty(StatusCode::OK))
}
