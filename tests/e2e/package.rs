//! The Debian package: `cargo deb` builds it from `[package.metadata.deb]`,
//! and it is checked the way dpkg would see it: its file list and
//! conffiles, its maintainer scripts, and, unpacked into a scratch root,
//! the unit (`systemd-analyze verify --root`), the sysusers and tmpfiles
//! snippets applied there, and the example config read by the agent.
//!
//! The package is built around the binary under test (`--no-build`, with a
//! scratch target directory holding it as `release/accel-agent`), so the
//! test costs seconds, not a release build. `cargo deb` alone builds the
//! real release package (docs/install.md).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::systemd::{exposure, verify_clean};
use crate::util::{bin, fixtures, require, root, Agent, TempDir};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {}\n{text}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Builds the package into `dir` and returns its path.
fn build_deb(dir: &Path) -> PathBuf {
    require("cargo-deb");
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(bin(), target.join("release/accel-agent")).unwrap();
    let out = dir.join("out");
    let built = Command::new("cargo")
        .current_dir(root())
        .env("CARGO_TARGET_DIR", &target)
        .args(["deb", "--no-build", "--offline", "--fast", "--output"])
        .arg(&out)
        .output()
        .expect("run cargo deb");
    let log = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "cargo deb: {}\n{log}", built.status);
    // A unit or snippet it did not find is only a warning to cargo-deb.
    assert!(!log.contains("warning"), "cargo deb warned:\n{log}");
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 1, "{debs:?}");
    debs.into_iter().next().unwrap()
}

/// A scratch root standing for the host the package is installed on: the
/// host's systemd units (targets the unit is ordered against) and `kill`
/// (its ExecReload=), with the package unpacked on top.
fn scratch_root(dir: &Path, deb: &Path) -> PathBuf {
    let r = dir.join("root");
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::create_dir_all(r.join("usr/bin")).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    run(Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/")));
    std::fs::copy("/usr/bin/kill", r.join("usr/bin/kill")).unwrap();
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&r));
    r
}

#[test]
fn deb_installs_a_verified_service() {
    require("dpkg-deb");
    let dir = TempDir::new("deb");
    let deb = build_deb(&dir.0);

    // What it holds.
    let list = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut expected = vec![
        "./usr/bin/accel-agent".to_owned(),
        "./usr/lib/systemd/system/accel-agent.service".into(),
        "./usr/lib/sysusers.d/accel-agent.conf".into(),
        "./usr/lib/tmpfiles.d/accel-agent.conf".into(),
        "./etc/default/accel-agent".into(),
        "./usr/share/doc/accel-agent/examples/accel-agent.toml".into(),
        "./usr/share/doc/accel-agent/install.md".into(),
        "./usr/share/doc/accel-agent/copyright".into(),
    ];
    for (src, dest, ext) in [
        ("dashboards", "./usr/share/accel-agent/dashboards", "json"),
        ("dashboards/rules", "./usr/share/accel-agent/rules", "yml"),
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(root().join(src)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|e| e == ext) {
                let name = p.file_name().unwrap().to_str().unwrap();
                expected.push(format!("{dest}/{name}"));
                n += 1;
            }
        }
        assert!(n > 0, "no {ext} files in {src}");
    }
    for f in &expected {
        assert!(
            files.contains(&f.as_str()),
            "the package lacks {f}:\n{list}"
        );
    }

    // How dpkg treats it: the environment file is a conffile (local
    // changes survive upgrades); the scripts create the user, the
    // /etc/accel-agent directory, then enable and start the service.
    let control = dir.0.join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/default/accel-agent");
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    let order = [
        "systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} accel-agent.conf",
        "systemd-tmpfiles --create accel-agent.conf",
        "deb-systemd-helper enable accel-agent.service",
        "deb-systemd-invoke $_dh_action accel-agent.service",
    ]
    .map(|s| {
        postinst
            .find(s)
            .unwrap_or_else(|| panic!("postinst lacks {s:?}:\n{postinst}"))
    });
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "postinst steps out of order:\n{postinst}"
    );
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(
        fields.lines().any(|l| l.starts_with("Depends:")
            && l.contains("libc6")
            && l.contains("systemd | systemd-standalone-sysusers")),
        "{fields}"
    );

    // Installed: the unit verifies against the unpacked files (its
    // ExecStart= must be the packaged binary) and scores as in the tree.
    let r = scratch_root(&dir.0, &deb);
    let root_arg = format!("--root={}", r.display());
    let unit = r.join("usr/lib/systemd/system/accel-agent.service");
    verify_clean(&[&root_arg], &unit);
    let (score, report) = exposure(&[&root_arg], Path::new("accel-agent.service"));
    assert!(
        score <= crate::systemd::MAX_EXPOSURE,
        "exposure {score}:\n{report}"
    );
    let out = Command::new(r.join("usr/bin/accel-agent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("accel-agent "));

    // The snippets, applied as the postinst does: a system user with no
    // login, and /etc/accel-agent readable by its group only.
    require("systemd-sysusers");
    run(Command::new("systemd-sysusers")
        .arg(&root_arg)
        .arg("accel-agent.conf"));
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let user = passwd
        .lines()
        .find(|l| l.starts_with("accel-agent:"))
        .unwrap_or_else(|| panic!("no accel-agent user:\n{passwd}"));
    let fields: Vec<&str> = user.split(':').collect();
    let uid: u32 = fields[2].parse().unwrap();
    assert!(uid > 0 && uid < 1000, "not a system uid: {user}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "{user}");
    let group = std::fs::read_to_string(r.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("accel-agent:x:"))
        .and_then(|rest| rest.split(':').next())
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no accel-agent group:\n{group}"));
    // Creating a root-owned directory needs root, as the postinst has.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        run(Command::new("systemd-tmpfiles")
            .arg(&root_arg)
            .args(["--create", "accel-agent.conf"]));
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(r.join("etc/accel-agent")).unwrap();
        assert!(m.is_dir());
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o750, 0, gid));
    }

    // The example config is one the agent accepts.
    let example = r.join("usr/share/doc/accel-agent/examples/accel-agent.toml");
    let agent = Agent::start(&[
        &format!("--config.file={}", example.display()),
        &format!("--path.procfs={}", fixtures().join("proc").display()),
    ]);
    assert_eq!(agent.get("/-/healthy").status, 200);
    let status = agent.terminate(Duration::from_secs(5)).expect("exit");
    assert!(status.success());
}
