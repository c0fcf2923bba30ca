//! Checks of the deployment files in deploy/ that can be made without Docker or a cluster:
//! every YAML and TOML file parses, the config files are accepted by a real `puente serve`,
//! key facts hold, and `systemd-analyze verify` passes on the units (where it is installed).

use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::support::{Server, temp_dir};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every file under `dir`, recursively, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn with_extension(extensions: &[&str]) -> Vec<PathBuf> {
    files(&deploy_dir())
        .into_iter()
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| extensions.contains(&e)))
        .collect()
}

/// Every document of a YAML file (multi-document files have several).
fn yaml(relative: &str) -> Vec<Yaml> {
    let path = deploy_dir().join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn strings(value: &Yaml) -> Vec<&str> {
    value.as_vec().map(|v| v.iter().filter_map(Yaml::as_str).collect()).unwrap_or_default()
}

#[test]
fn every_yaml_and_toml_file_parses() {
    let yamls = with_extension(&["yml", "yaml"]);
    assert!(yamls.len() >= 7, "{yamls:?}");
    for path in &yamls {
        let text = std::fs::read_to_string(path).unwrap();
        let documents =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!documents.is_empty(), "{}: no document", path.display());
        for document in &documents {
            assert!(document.as_hash().is_some(), "{}: a document is not a mapping", path.display());
        }
    }
    let tomls = with_extension(&["toml"]);
    assert!(!tomls.is_empty());
    for path in &tomls {
        let text = std::fs::read_to_string(path).unwrap();
        toml::from_str::<toml::Table>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    // The config embedded in the ConfigMap is TOML too.
    toml::from_str::<toml::Table>(&configmap_toml()).unwrap();
}

fn configmap_toml() -> String {
    let documents = yaml("k8s/configmap.yaml");
    documents[0]["data"]["puente.toml"].as_str().unwrap().to_owned()
}

#[test]
fn the_config_files_are_accepted_by_the_server() {
    let dir = temp_dir();
    let configmap = dir.path().join("configmap.toml");
    std::fs::write(&configmap, configmap_toml()).unwrap();
    let example = deploy_dir().join("puente.example.toml");
    for (i, config) in [example, configmap].iter().enumerate() {
        let data = dir.path().join(format!("data-{i}"));
        // The flags keep the listen address, data directory and metrics port test-local.
        let server =
            Server::try_start(&data, &["--config", config.to_str().unwrap(), "--metrics-listen", "off"])
                .unwrap_or_else(|log| panic!("{} refused: {log}", config.display()));
        drop(server);
    }
}

#[test]
fn dockerfile_builds_in_stages_and_runs_as_a_non_root_user() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let from: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "{from:?}");
    assert!(from[0].contains("rust:") && from[0].contains(" AS builder"));
    assert!(from[1].contains("-slim"));
    assert!(text.contains("cargo build --release --locked -p puente"));
    assert!(text.contains("useradd --system --uid 10001"));
    let user = text.lines().rfind(|l| l.starts_with("USER ")).unwrap();
    assert_eq!(user, "USER 10001:10001");
    assert!(text.contains("EXPOSE 50051 9464"));
    assert!(text.contains("VOLUME [\"/var/lib/puente\"]"));
    assert!(text.contains("HEALTHCHECK") && text.contains("STOPSIGNAL SIGTERM"));
    // Reconciliation validates the banks' documents with xmllint at run time.
    assert!(text.contains("libxml2-utils"), "the runtime image carries xmllint");
    let ignore =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target") && ignore.lines().any(|l| l == ".git"));
}

#[test]
fn compose_runs_the_server_and_the_settlement_batch() {
    let compose = &yaml("docker-compose.yml")[0];
    let server = &compose["services"]["puente"];
    assert_eq!(server["build"]["dockerfile"].as_str(), Some("deploy/Dockerfile"));
    assert_eq!(server["stop_signal"].as_str(), Some("SIGTERM"));
    assert!(strings(&server["volumes"]).iter().any(|v| v.ends_with(":/var/lib/puente")));
    let settlement = &compose["services"]["settlement"];
    assert_eq!(strings(&settlement["profiles"]), ["batch"]);
    assert_eq!(strings(&settlement["command"]), ["settlement", "run", "--server", "puente:50051"]);
}

#[test]
fn kubernetes_manifests_hold_the_essentials() {
    let kustomization = &yaml("k8s/kustomization.yaml")[0];
    for resource in strings(&kustomization["resources"]) {
        assert!(deploy_dir().join("k8s").join(resource).is_file(), "{resource} is listed but missing");
    }

    let set = &yaml("k8s/statefulset.yaml")[0];
    assert_eq!(set["kind"].as_str(), Some("StatefulSet"));
    assert_eq!(set["spec"]["replicas"].as_i64(), Some(1), "the store is embedded: one replica");
    let claims = set["spec"]["volumeClaimTemplates"].as_vec().unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0]["metadata"]["name"].as_str(), Some("data"));
    let pod = &set["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(10001));
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_vec().unwrap();
    assert!(mounts.iter().any(|m| m["name"].as_str() == Some("data")
        && m["mountPath"].as_str() == Some("/var/lib/puente")));
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(container[probe]["grpc"]["port"].as_i64(), Some(50051), "{probe}");
    }
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"].as_bool(), Some(true));
    let services = yaml("k8s/service.yaml");
    let service_names: Vec<&str> = services.iter().filter_map(|d| d["metadata"]["name"].as_str()).collect();
    assert!(service_names.contains(&set["spec"]["serviceName"].as_str().unwrap()), "{service_names:?}");

    let cron = &yaml("k8s/cronjob.yaml")[0];
    assert_eq!(cron["kind"].as_str(), Some("CronJob"));
    assert_eq!(cron["spec"]["timeZone"].as_str(), Some("America/Mexico_City"));
    assert_eq!(cron["spec"]["schedule"].as_str(), Some("0 17 * * *"));
    assert_eq!(cron["spec"]["concurrencyPolicy"].as_str(), Some("Forbid"));
    let job = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(strings(&job["containers"][0]["args"]), ["settlement", "run", "--server", "puente:50051"]);
    assert_eq!(job["securityContext"]["runAsNonRoot"].as_bool(), Some(true));

    let secret = &yaml("k8s/secret.yaml")[0];
    assert_eq!(secret["kind"].as_str(), Some("Secret"));
    assert!(secret["data"].as_hash().is_some_and(|d| d.is_empty()), "the Secret is a placeholder");
}

#[test]
fn systemd_units_verify() {
    let units = deploy_dir().join("systemd");
    let timer = std::fs::read_to_string(units.join("puente-settlement.timer")).unwrap();
    assert!(timer.lines().any(|l| l == "OnCalendar=*-*-* 17:00:00 America/Mexico_City"));
    let settlement = std::fs::read_to_string(units.join("puente-settlement.service")).unwrap();
    assert!(settlement.lines().any(|l| l == "Type=oneshot"));
    let server = std::fs::read_to_string(units.join("puente.service")).unwrap();
    for line in ["KillSignal=SIGTERM", "StateDirectory=puente", "ProtectSystem=strict", "NoNewPrivileges=yes"]
    {
        assert!(server.lines().any(|l| l == line), "{line}");
    }

    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("skipped: systemd-analyze not installed (scripts/test installs it: scripts/test-deps)");
        return;
    };
    // verify insists that ExecStart's binary exists: point the copies at the one just built.
    let dir = temp_dir();
    let mut paths = Vec::new();
    for name in ["puente.service", "puente-settlement.service", "puente-settlement.timer"] {
        let text = std::fs::read_to_string(units.join(name)).unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text.replace("/usr/local/bin/puente", env!("CARGO_BIN_EXE_puente"))).unwrap();
        paths.push(path);
    }
    let output = Command::new(&analyze).arg("verify").args(&paths).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    // verify exits 0 on unknown keys and bad values, which it reports on stderr.
    assert!(output.status.success() && stderr.trim().is_empty(), "systemd-analyze verify:\n{stderr}");

    let output =
        Command::new(&analyze).args(["calendar", "*-*-* 17:00:00 America/Mexico_City"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

fn which(program: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).ok_or(())
}

/// A key of a Compose service, directly or through its `<<` merge (YAML merge keys are
/// Compose's, not the YAML parser's).
fn service_key<'a>(service: &'a Yaml, key: &str) -> &'a Yaml {
    let own = &service[key];
    if own.is_badvalue() { &service["<<"][key] } else { own }
}

#[test]
fn the_two_node_deployments_share_one_journal_of_record() {
    // Compose: PostgreSQL and two nodes, each with its own volume, name and advertised address.
    let compose = &yaml("ha/docker-compose.yml")[0];
    let services = &compose["services"];
    assert_eq!(services["postgres"]["image"].as_str(), Some("postgres:15"));
    assert!(strings(&services["postgres"]["command"]).contains(&"synchronous_commit=on"));
    let mut volumes = Vec::new();
    for (name, other) in [("puente-a", "puente-b"), ("puente-b", "puente-a")] {
        let node = &services[name];
        assert_eq!(service_key(node, "build")["dockerfile"].as_str(), Some("deploy/Dockerfile"));
        assert!(strings(service_key(node, "env_file")).iter().any(|f| f.ends_with("/journal.env")));
        let env = &node["environment"];
        assert_eq!(env["PUENTE_NODE_ID"].as_str(), Some(name));
        assert_eq!(env["PUENTE_ADVERTISE"].as_str(), Some(format!("{name}:50051").as_str()));
        assert_ne!(env["PUENTE_NODE_ID"].as_str(), services[other]["environment"]["PUENTE_NODE_ID"].as_str());
        let volume = strings(&node["volumes"]).into_iter().find(|v| v.ends_with(":/var/lib/puente")).unwrap();
        volumes.push(volume.to_owned());
        assert_eq!(
            service_key(node, "depends_on")["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
    }
    assert_ne!(volumes[0], volumes[1], "each node has its own data volume");

    // Kubernetes: the overlay patches the StatefulSet to two replicas that take the URL from a
    // Secret, advertise their own DNS names and are ready only while they lead.
    let kustomization = &yaml("k8s/ha/kustomization.yaml")[0];
    assert!(strings(&kustomization["resources"]).contains(&".."));
    let patch = &yaml("k8s/ha/statefulset-patch.yaml")[0];
    assert_eq!(
        patch["metadata"]["name"].as_str(),
        yaml("k8s/statefulset.yaml")[0]["metadata"]["name"].as_str()
    );
    assert_eq!(patch["spec"]["replicas"].as_i64(), Some(2));
    let container = &patch["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"].as_str(), Some("puente"));
    assert_eq!(container["readinessProbe"]["grpc"]["service"].as_str(), Some("puente.v1.Leader"));
    let env = container["env"].as_vec().unwrap();
    let var = |name: &str| {
        env.iter().find(|e| e["name"].as_str() == Some(name)).unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(
        var("PUENTE_JOURNAL_URL")["valueFrom"]["secretKeyRef"]["name"].as_str(),
        Some("puente-journal")
    );
    assert!(var("PUENTE_ADVERTISE")["value"].as_str().unwrap().contains("$(POD_NAME)"));
    assert_eq!(var("PUENTE_NODE_ID")["value"].as_str(), Some("$(POD_NAME)"));
    let secret = &yaml("k8s/ha/secret.yaml")[0];
    assert_eq!(secret["metadata"]["name"].as_str(), Some("puente-journal"));
    assert!(secret["data"].as_hash().is_some_and(|d| d.is_empty()), "the Secret is a placeholder");
    // The probe's service name is the one the server reports.
    assert_eq!(puente_server::LEADER_HEALTH_SERVICE, "puente.v1.Leader");
}
