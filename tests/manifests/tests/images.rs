//! The offline images (`hostnic-images`): built from this workspace's binaries with no base
//! image, imported with `ctr images import` into a private containerd, and run by runc with a
//! read-only root filesystem: the operator as its image user, the agent, and the agent
//! DaemonSet's own installer containers from the rendered manifests (command, env, mounts,
//! read-only root): the init container installs `hostnic`, `loopback` and `portmap` into a host
//! directory, and `cni-config` writes the conflist once the agent's socket answers STATUS ready
//! (asked with the plugin inside the image), and keeps it when stopped.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use hostnic_manifests_tests::ctr::{Ctr, Images, Kubelet, wait_until};
use hostnic_manifests_tests::status_agent::StatusAgent;
use hostnic_manifests_tests::{manifests_dir, render};
use hostnic_tests::containerd::{CniSetup, Containerd};
use hostnic_tests::images;
use hostnic_tests::netns::TestNetns;
use hostnic_tests::privilege::require_root;

#[test]
fn the_offline_images_import_into_containerd_and_run_read_only() {
    if !require_root("the_offline_images_import_into_containerd_and_run_read_only") {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("hn-images-")
        .tempdir()
        .unwrap();
    // A containerd of our own (the CNI config is irrelevant: ctr run uses none).
    let node = TestNetns::new("images");
    let cni = CniSetup {
        conflist_name: "99-loopback.conflist".into(),
        conflist: r#"{"cniVersion":"1.0.0","name":"lo","plugins":[{"type":"loopback"}]}"#.into(),
        plugins: vec![],
    };
    let containerd = Containerd::start(&node.path(), &cni).unwrap();
    // Containerd::start serves its socket here.
    let ctr = Ctr {
        socket: containerd.dir().join("containerd.sock"),
    };
    let images = Images::import(&ctr, dir.path(), "test");
    let (operator_ref, agent_ref) = (images.operator.as_str(), images.agent.as_str());
    let inputs = &images.inputs;
    let listed = ctr.ok(&["images", "ls", "-q"]);
    for r in [operator_ref, agent_ref] {
        assert!(listed.lines().any(|l| l == r), "{r} not imported: {listed}");
    }

    // The operator, as the image's user (65532), read-only: every library it loads is there.
    let help = ctr.ok_printing(&[
        "run",
        "--rm",
        "--read-only",
        operator_ref,
        "hn-img-operator",
        images::OPERATOR_BIN,
        "--help",
    ]);
    assert!(help.contains("--metrics-addr"), "{help}");
    // The operator reads its credentials as the Deployment gives them (Secret files 0440,
    // group 65532 by fsGroup) and gets past them to the Kubernetes client, which has nothing
    // to connect to here; a root-only file it cannot read: it is not root.
    let secret = dir.path().join("qingcloud");
    fs::create_dir_all(&secret).unwrap();
    let config = secret.join("config.yaml");
    fs::write(
        &config,
        "qy_access_key_id: 'KEYID'\nqy_secret_access_key: 'SECRET'\nzone: 'pek3a'\n",
    )
    .unwrap();
    let root_only = secret.join("root-only.yaml");
    fs::copy(&config, &root_only).unwrap();
    std::os::unix::fs::chown(&config, Some(0), Some(65532)).unwrap();
    fs::set_permissions(&config, fs::Permissions::from_mode(0o440)).unwrap();
    fs::set_permissions(&root_only, fs::Permissions::from_mode(0o400)).unwrap();
    let mount = format!(
        "type=bind,src={},dst=/etc/qingcloud,options=rbind:ro",
        secret.display()
    );
    let start = |id: &str, file: &str| -> String {
        let out = ctr.run_printing(&[
            "run",
            "--rm",
            "--read-only",
            "--mount",
            &mount,
            operator_ref,
            id,
            images::OPERATOR_BIN,
            &format!("--cloud-config=/etc/qingcloud/{file}"),
        ]);
        assert!(!out.status.success(), "the operator ran without a cluster");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let log = start("hn-img-operator-secret", "config.yaml");
    assert!(!log.contains("read cloud credentials"), "{log}");
    assert!(log.to_lowercase().contains("kube"), "{log}");
    let log = start("hn-img-operator-rootonly", "root-only.yaml");
    assert!(
        log.contains("read cloud credentials") && log.contains("ermission denied"),
        "{log}"
    );
    // The agent too.
    let help = ctr.ok_printing(&[
        "run",
        "--rm",
        "--read-only",
        agent_ref,
        "hn-img-agent",
        images::AGENT_BIN,
        "--help",
    ]);
    assert!(help.contains("--health-addr"), "{help}");
    // Its `iptables` loads the extensions of the Service route's rule (in the container's own
    // netns: `ctr run` makes one; privileged for NET_ADMIN, as the DaemonSet runs it).
    let listed = ctr.ok_printing(&[
        "run",
        "--rm",
        "--read-only",
        "--privileged",
        agent_ref,
        "hn-img-iptables",
        "/bin/sh",
        "-c",
        "iptables -t nat -A POSTROUTING -m conntrack --ctstate DNAT --ctorigdst 10.96.0.0/12 \
         -j MASQUERADE --random-fully && iptables -t nat -S POSTROUTING",
    ]);
    assert!(
        listed.contains("--ctorigdst 10.96.0.0/12 -j MASQUERADE --random-fully"),
        "{listed}"
    );

    // The DaemonSet's installer containers as the manifests render them, on host directories.
    let objs = render::kustomize(&manifests_dir()).unwrap();
    let ds = objs
        .iter()
        .find(|o| o["kind"] == "DaemonSet")
        .expect("the agent DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    let conflist = objs
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("the conflist ConfigMap")["data"]
        .as_object()
        .unwrap()
        .clone();
    let host: BTreeMap<&str, PathBuf> = ["cni-bin", "cni-conf", "cni-conflist", "run-hostnic"]
        .into_iter()
        .map(|v| (v, dir.path().join(format!("host-{v}"))))
        .collect();
    for d in host.values() {
        fs::create_dir_all(d).unwrap();
    }
    for (file, text) in &conflist {
        fs::write(host["cni-conflist"].join(file), text.as_str().unwrap()).unwrap();
    }
    let kubelet = Kubelet {
        volumes: host.clone(),
        ..Kubelet::default()
    };
    // The init container: plugins into the host's bin dir.
    let init = &spec["initContainers"][0];
    let mut args = vec!["run".to_owned(), "--rm".to_owned()];
    args.extend(kubelet.run_options(init));
    args.extend([agent_ref.to_owned(), "hn-img-install".to_owned()]);
    args.extend(kubelet.command(init));
    ctr.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, source) in [
        ("hostnic", inputs.plugin.clone()),
        ("loopback", inputs.cni_plugins.join("loopback")),
        ("portmap", inputs.cni_plugins.join("portmap")),
    ] {
        assert_eq!(
            fs::read(host["cni-bin"].join(name)).unwrap(),
            fs::read(&source).unwrap(),
            "{name}"
        );
    }
    assert_eq!(fs::read_dir(&host["cni-conf"]).unwrap().count(), 0);

    // cni-config, next to an agent that is not ready yet.
    let writer = spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "cni-config")
        .expect("the cni-config container");
    let socket_env = writer["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HOSTNIC_SOCKET")
        .and_then(|e| e["value"].as_str())
        .unwrap();
    let socket_name = socket_env.rsplit('/').next().unwrap();
    let agent_socket = StatusAgent::start(&host["run-hostnic"].join(socket_name)).unwrap();
    let mut args = vec!["run".to_owned(), "-d".to_owned()];
    args.extend(kubelet.run_options(writer));
    args.extend([agent_ref.to_owned(), "hn-img-cni-config".to_owned()]);
    args.extend(kubelet.command(writer));
    ctr.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_until("two STATUS questions from the container", || {
        agent_socket.asked() >= 2
    });
    assert_eq!(
        fs::read_dir(&host["cni-conf"]).unwrap().count(),
        0,
        "conflist written while the agent says not ready"
    );
    agent_socket.ready.store(true, Ordering::SeqCst);
    let (file, text) = conflist.iter().next().unwrap();
    let installed = host["cni-conf"].join(file);
    wait_until("the conflist", || installed.exists());
    assert_eq!(
        fs::read_to_string(&installed).unwrap(),
        text.as_str().unwrap()
    );
    // Stopped as the kubelet stops it: it exits, and the conflist stays.
    ctr.ok(&["task", "kill", "hn-img-cni-config"]);
    wait_until("cni-config to exit", || {
        ctr.run(&["task", "delete", "hn-img-cni-config"])
            .status
            .success()
    });
    ctr.ok(&["container", "delete", "hn-img-cni-config"]);
    assert!(installed.exists());
    images.remove(&ctr);
    drop(containerd);
}
