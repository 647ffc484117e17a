//! What the CRI tier's pods are made of: container configs as kubelet
//! writes them, the CRI log format, and plain HTTP to a pod.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;

use super::RUNC;

/// kubelet's ContainerConfig for a container `name` of `image`: log path
/// `<name>/<attempt>.log`, the pod's network and ipc, a pid namespace of its own.
pub fn container(name: &str, image: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        log_path: format!("{name}/0.log"),
        labels: HashMap::from([("io.kubernetes.container.name".into(), name.into())]),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 2,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(kubelet_namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// What kubelet asks for by default: the pod's network and ipc, a pid
/// namespace per container.
pub fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The pid namespace of a pod (shareProcessNamespace) or a container.
pub fn share_pids(pod: Option<&mut PodSandboxConfig>, container: Option<&mut ContainerConfig>) {
    let pod_ns = pod
        .and_then(|p| p.linux.as_mut())
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut());
    let container_ns = container
        .and_then(|c| c.linux.as_mut())
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut());
    for ns in pod_ns.into_iter().chain(container_ns) {
        ns.pid = NamespaceMode::Pod as i32;
    }
}

/// The web container of the benchmarks' pods: busybox httpd on 8080 under
/// runc, the Wasm app (listening on 8080) otherwise.
pub fn web_container(handler: &str, image: &str) -> ContainerConfig {
    let mut config = container("web", image);
    if handler == RUNC {
        config.command = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]
            .map(String::from)
            .to_vec();
    } else {
        env(&mut config, &[("PORT", "8080")]);
    }
    config
}

pub fn env(config: &mut ContainerConfig, pairs: &[(&str, &str)]) {
    config.envs.extend(pairs.iter().map(|(k, v)| KeyValue {
        key: k.to_string(),
        value: v.to_string(),
    }));
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub stream: String,
    /// `F` (full line) or `P` (partial).
    pub tag: String,
    pub text: String,
}

/// Parses `<RFC3339Nano> <stdout|stderr> <F|P> <text>` lines.
pub fn parse_cri_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(4, ' ');
            let _time = parts.next()?;
            Some(LogLine {
                stream: parts.next()?.into(),
                tag: parts.next()?.into(),
                text: parts.next().unwrap_or_default().into(),
            })
        })
        .collect()
}

/// An HTTP/1.0 GET (no chunking); `(status, body)`, or None if nothing accepts.
pub fn http_get(ip: &str, port: u16, path: &str) -> Option<(u16, String)> {
    let addr = format!("{ip}:{port}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Polls `http_get` until it answers 200 (a readiness probe); the body.
#[track_caller]
pub fn wait_ready(ip: &str, port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http_get(ip, port, path) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{ip}:{port}{path} never answered 200"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
