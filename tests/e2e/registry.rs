//! Sharing components through a real OCI registry: Debian's
//! `docker-registry` (CNCF distribution) started per test on a free
//! loopback port, its storage in a temporary directory. Push, pull by tag
//! and by digest, `run` and `report` from the registry, the stored layout
//! as `skopeo` sees it, a tampered blob, a registry that is down or answers
//! 401/404, credentials from the environment and a Docker config file, and
//! pinning in matrix files.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

use super::{read_json, repo, sparkhost, synthetic, text, workload};

/// A `docker-registry` process serving one temporary storage directory,
/// killed and removed when dropped.
struct Registry {
    child: Child,
    port: u16,
    dir: TempDir,
}

const USER: &str = "sparkuser";
const PASSWORD: &str = "pw-Secret-4711";

impl Registry {
    /// Without authentication.
    fn start() -> Registry {
        Self::start_with("")
    }

    /// With `auth: htpasswd` and one user, [`USER`] / [`PASSWORD`] (bcrypt).
    fn start_with_auth() -> Registry {
        Self::start_with("htpasswd")
    }

    /// Over TLS with a self-signed certificate, at `<dir>/ca.pem`.
    fn start_with_tls() -> Registry {
        Self::start_with("tls")
    }

    fn start_with(auth: &str) -> Registry {
        let bin = which("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if auth == "htpasswd" {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new(which("htpasswd"))
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .unwrap();
            assert!(out.status.success(), "htpasswd: {out:?}");
            std::fs::write(&htpasswd, &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: sparkhost-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        if auth == "tls" {
            // A private CA's certificate (self-signed here) for 127.0.0.1.
            let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let (cert, key) = (dir.path().join("ca.pem"), dir.path().join("key.pem"));
            std::fs::write(&cert, ck.cert.pem()).unwrap();
            std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry starts");
        let r = Registry { child, port, dir };
        r.wait_listening();
        r
    }

    /// Readiness, not timing: the registry accepts connections.
    fn wait_listening(&self) {
        for _ in 0..200 {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry never listened: {}", self.log());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn reference(&self, repo_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_tag}", self.port)
    }

    /// The file holding blob `digest` in the registry's storage.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(bin: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "{bin} is missing: run scripts/install-test-deps.sh (Debian packages docker-registry, skopeo, apache2-utils)"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256_file(p: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
}

/// The value after `key ` on a line of `push`/`pull` output.
fn field(out: &Output, key: &str) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no `{key}` line in {}", text(out)))
}

fn ok(out: Output) -> Output {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    out
}

fn fails(out: Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn push(file: &Path, reference: &str, cache: &Path, more: &[&str]) -> Output {
    let mut args = vec!["push", file.to_str().unwrap(), reference, "--plain-http"];
    args.extend_from_slice(more);
    sparkhost(&args, cache)
}

fn skopeo_raw(reference: &str, config: bool) -> Value {
    let docker = reference.replacen("oci://", "docker://", 1);
    let mut cmd = Command::new(which("skopeo"));
    cmd.args(["inspect", "--raw", "--tls-verify=false"]);
    if config {
        cmd.arg("--config");
    }
    let out = cmd.arg(&docker).output().unwrap();
    assert!(out.status.success(), "skopeo: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A short run of `wasm` on the in-process simulator.
fn sim_run(wasm: &str, root: &Path, run_id: &str, cache: &Path, more: &[&str]) -> Output {
    let mut args = vec![
        "run",
        wasm,
        "--endpoint",
        "sim:tiny",
        "--tier-mode",
        "B0",
        "--requests",
        "4",
        "--warmup",
        "0",
        "--max-tokens",
        "16",
        "--param",
        "set=short",
        "--param",
        "short-range=20:40",
        "--no-telemetry",
        "--results-root",
        root.to_str().unwrap(),
        "--run-id",
        run_id,
        "--quiet",
    ];
    args.extend_from_slice(more);
    sparkhost(&args, cache)
}

#[test]
fn push_pull_by_tag_and_digest_and_run_from_the_registry() {
    let reg = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let sha = sha256_file(&wasm);
    let tag_ref = reg.reference("sparkhost/synthetic:0.1.0");
    let out = ok(push(
        &wasm,
        &tag_ref,
        cache.path(),
        &[
            "--source",
            "https://example.com/sparkhost",
            "--revision",
            "abc123",
            "--annotation",
            "com.example.team=kv",
        ],
    ));
    let manifest_digest = field(&out, "manifest");
    assert_eq!(field(&out, "component"), format!("sha256:{sha}"));
    let pinned = field(&out, "pinned");
    assert_eq!(
        pinned,
        reg.reference(&format!("sparkhost/synthetic@{manifest_digest}"))
    );

    // What the registry stores, as another OCI tool sees it.
    let m = skopeo_raw(&tag_ref, false);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{m:#}");
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], format!("sha256:{sha}"));
    let a = &m["annotations"];
    assert_eq!(a["org.opencontainers.image.title"], "synthetic");
    assert!(
        !a["org.opencontainers.image.version"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(
        !a["org.opencontainers.image.description"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        a["org.opencontainers.image.source"],
        "https://example.com/sparkhost"
    );
    assert_eq!(a["org.opencontainers.image.revision"], "abc123");
    assert_eq!(a["com.example.team"], "kv");
    assert_eq!(a["dev.sparkhost.wit.world"], "sparkhost:workload/workload");
    assert_eq!(a["dev.sparkhost.wit.version"], "0.1.0");
    let c = skopeo_raw(&tag_ref, true);
    assert_eq!(c["architecture"], "wasm");
    assert_eq!(c["os"], "wasip2");
    assert_eq!(c["layerDigests"][0], format!("sha256:{sha}"));
    assert_eq!(
        c["component"]["target"],
        "sparkhost:workload/workload@0.1.0"
    );
    assert!(
        c["component"]["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "sparkhost:workload/planner@0.1.0"),
        "{c:#}"
    );

    // Pull by tag, then by digest into an empty cache: the same bytes.
    let work = tempfile::tempdir().unwrap();
    let by_tag = work.path().join("by-tag.wasm");
    let out = ok(sparkhost(
        &[
            "pull",
            &tag_ref,
            "--plain-http",
            "-o",
            by_tag.to_str().unwrap(),
        ],
        cache.path(),
    ));
    assert_eq!(field(&out, "manifest"), manifest_digest);
    assert_eq!(
        std::fs::read(&by_tag).unwrap(),
        std::fs::read(&wasm).unwrap()
    );
    let other_cache = tempfile::tempdir().unwrap();
    let by_digest = work.path().join("by-digest.wasm");
    let out = ok(sparkhost(
        &[
            "pull",
            &pinned,
            "--plain-http",
            "-o",
            by_digest.to_str().unwrap(),
        ],
        other_cache.path(),
    ));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("from the cache"));
    assert_eq!(sha256_file(&by_digest), sha);
    let out = ok(sparkhost(
        &["pull", &pinned, "--plain-http"],
        other_cache.path(),
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(from the cache)"),
        "{}",
        text(&out)
    );

    // inspect and run straight from the registry; the run records the
    // digest the tag resolved to, and its report generator came from the
    // registry too.
    let out = ok(sparkhost(
        &["inspect", &tag_ref, "--plain-http", "--json"],
        cache.path(),
    ));
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["sha256"], sha);
    assert_eq!(info["oci"]["manifest_digest"], manifest_digest);
    let gen_ref = reg.reference("sparkhost/report-default:0.1.0");
    let out = ok(push(
        &workload("report-default"),
        &gen_ref,
        cache.path(),
        &[],
    ));
    let gen_digest = field(&out, "manifest");
    let results = tempfile::tempdir().unwrap();
    let out = sim_run(
        &tag_ref,
        results.path(),
        "from-registry",
        cache.path(),
        &["--plain-http", "--report-generator", &gen_ref],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = results.path().join("from-registry");
    let manifest = read_json(&dir.join("manifest.json"));
    let w = &manifest["workload"];
    assert_eq!(w["path"], tag_ref.as_str());
    assert_eq!(w["sha256"], sha);
    assert_eq!(w["oci"]["reference"], tag_ref.as_str());
    assert_eq!(w["oci"]["tag"], "0.1.0");
    assert_eq!(w["oci"]["manifest_digest"], manifest_digest);
    assert_eq!(w["oci"]["layer_digest"], format!("sha256:{sha}"));
    assert_eq!(w["oci"]["pinned"], pinned.as_str());
    assert_eq!(
        manifest["report_generator_oci"]["manifest_digest"],
        gen_digest
    );
    let rm: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(rm["generator"]["path"], gen_ref.as_str());
    assert_eq!(rm["generator"]["oci"]["manifest_digest"], gen_digest);
    assert!(dir.join("report.md").is_file());

    // A pin that does not match refuses to run, naming both digests.
    let wrong = "0".repeat(64);
    let out = sim_run(
        &tag_ref,
        results.path(),
        "pinned-wrong",
        cache.path(),
        &["--plain-http", "--workload-sha256", &wrong],
    );
    let err = fails(out);
    assert!(err.contains(&sha) && err.contains(&wrong), "{err}");
    assert!(!results.path().join("pinned-wrong").exists());
}

#[test]
fn a_tampered_blob_is_refused() {
    let reg = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let sha = sha256_file(&wasm);
    let r = reg.reference("sparkhost/synthetic:tampered");
    ok(push(&wasm, &r, cache.path(), &[]));
    // Same size, one byte changed: only the digest can tell.
    let blob = reg.blob_file(&format!("sha256:{sha}"));
    let mut bytes = std::fs::read(&blob).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let err = fails(sparkhost(&["pull", &r, "--plain-http"], fresh.path()));
    assert!(err.contains("not what its digest says"), "{err}");
    assert!(err.contains(&format!("sha256:{sha}")), "{err}");
    let cached = fresh.path().join(format!("oci/blobs/sha256-{sha}.wasm"));
    assert!(!cached.exists(), "a refused blob must not be cached");
    let results = tempfile::tempdir().unwrap();
    let err = fails(sim_run(
        &r,
        results.path(),
        "t",
        fresh.path(),
        &["--plain-http"],
    ));
    assert!(err.contains("not what its digest says"), "{err}");
}

#[test]
fn down_401_and_404_registries_get_clear_errors_and_credentials_work() {
    let cache = tempfile::tempdir().unwrap();
    // Down: nothing listens on the port.
    let down = format!("oci://127.0.0.1:{}/sparkhost/w:1", free_port());
    let err = fails(sparkhost(&["pull", &down, "--plain-http"], cache.path()));
    assert!(
        err.contains("cannot reach registry") && err.contains("is the registry running"),
        "{err}"
    );
    // Plain HTTP to a remote registry is refused before anything is sent.
    let err = fails(sparkhost(
        &["pull", "oci://registry.example.com/w:1", "--plain-http"],
        cache.path(),
    ));
    assert!(
        err.contains("only allowed for a loopback registry"),
        "{err}"
    );
    // --plain-http with no oci:// component is not silently ignored.
    let err = fails(sparkhost(
        &["inspect", synthetic().to_str().unwrap(), "--plain-http"],
        cache.path(),
    ));
    assert!(err.contains("--plain-http applies to oci://"), "{err}");

    let reg = Registry::start_with_auth();
    let wasm = synthetic();
    let r = reg.reference("sparkhost/synthetic:1");
    // 401 without credentials, with a hint.
    let err = fails(push(&wasm, &r, cache.path(), &[]));
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("SPARKHOST_REGISTRY_USERNAME"), "{err}");
    // With credentials from the environment.
    let with_env = |args: &[&str], user: &str, pass: &str| {
        Command::new(env!("CARGO_BIN_EXE_sparkhost"))
            .args(args)
            .env("SPARKHOST_CACHE_DIR", cache.path())
            .env("SPARKHOST_REGISTRY_USERNAME", user)
            .env("SPARKHOST_REGISTRY_PASSWORD", pass)
            .env("DOCKER_CONFIG", cache.path().join("no-docker"))
            .output()
            .unwrap()
    };
    let wasm_s = wasm.to_str().unwrap();
    ok(with_env(
        &["push", wasm_s, &r, "--plain-http"],
        USER,
        PASSWORD,
    ));
    // A wrong password: 401, and the secret is not repeated.
    let wrong = "wrong-Secret-0815";
    let out = with_env(&["pull", &r, "--plain-http"], USER, wrong);
    let err = fails(out);
    assert!(err.contains("401") && err.contains(USERNAME_HINT), "{err}");
    assert!(!err.contains(wrong), "the password leaked: {err}");
    // Anonymous pull: 401 too.
    let err = fails(sparkhost(&["pull", &r, "--plain-http"], cache.path()));
    assert!(err.contains("401"), "{err}");

    // Credentials from a Docker config file.
    let docker = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let registry_key = format!("127.0.0.1:{}", reg.port);
    std::fs::write(
        docker.path().join("config.json"),
        serde_json::json!({"auths": {registry_key: {"auth": auth}}}).to_string(),
    )
    .unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args(["pull", &r, "--plain-http"])
        .env("SPARKHOST_CACHE_DIR", fresh.path())
        .env("DOCKER_CONFIG", docker.path())
        .env_remove("SPARKHOST_REGISTRY_USERNAME")
        .env_remove("SPARKHOST_REGISTRY_PASSWORD")
        .output()
        .unwrap();
    let out = ok(out);
    assert!(!String::from_utf8_lossy(&out.stdout).contains(PASSWORD));

    // 404: a tag and a repository that do not exist.
    let err = fails(with_env(
        &[
            "pull",
            &reg.reference("sparkhost/synthetic:nope"),
            "--plain-http",
        ],
        USER,
        PASSWORD,
    ));
    assert!(
        err.contains("404") || err.contains("ManifestUnknown"),
        "{err}"
    );
    let err = fails(with_env(
        &[
            "pull",
            &reg.reference("sparkhost/missing:1"),
            "--plain-http",
        ],
        USER,
        PASSWORD,
    ));
    assert!(err.contains("404"), "{err}");
}

const USERNAME_HINT: &str = "refused the credentials from SPARKHOST_REGISTRY_USERNAME";

#[test]
fn a_shared_report_generator_regenerates_a_report_offline() {
    let reg = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let gen_ref = reg.reference("sparkhost/report-default:0.1.0");
    let out = ok(push(
        &workload("report-default"),
        &gen_ref,
        cache.path(),
        &[],
    ));
    let pinned = field(&out, "pinned");
    let digest = field(&out, "manifest");
    ok(sparkhost(&["pull", &pinned, "--plain-http"], cache.path()));
    drop(reg);
    // The registry is gone: the pinned generator comes from the cache.
    let run = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("tests/fixtures/run-basic"), run.path());
    let out = ok(sparkhost(
        &[
            "report",
            run.path().to_str().unwrap(),
            "--generator",
            &pinned,
        ],
        cache.path(),
    ));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("report.md"),
        "{}",
        text(&out)
    );
    let rm: Value = serde_json::from_str(
        &std::fs::read_to_string(run.path().join("report_manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(rm["generator"]["path"], pinned.as_str());
    assert_eq!(rm["generator"]["oci"]["manifest_digest"], digest);
    assert_eq!(
        rm["generator"]["sha256"],
        sha256_file(&workload("report-default"))
    );
    // A tag needs the registry to resolve: said so, not served stale.
    let err = fails(sparkhost(
        &[
            "report",
            run.path().to_str().unwrap(),
            "--generator",
            &gen_ref,
            "--plain-http",
        ],
        cache.path(),
    ));
    assert!(err.contains("cannot reach registry"), "{err}");
}

#[test]
fn matrix_files_pin_components_by_digest() {
    let reg = Registry::start();
    let cache = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let sha = sha256_file(&wasm);
    let r = reg.reference("sparkhost/synthetic:m");
    ok(push(&wasm, &r, cache.path(), &[]));
    let dir = tempfile::tempdir().unwrap();
    let wrong = "ab".repeat(32);
    let write = |name: &str, path: &str, pin: &str| {
        let f = dir.path().join(name);
        let mut file = std::fs::File::create(&f).unwrap();
        write!(
            file,
            "name = \"{name}\"\nresults_root = \"{}\"\nargs = [\"--endpoint\", \"sim:tiny\", \"--tier-mode\", \"B0\", \"--requests\", \"2\", \"--warmup\", \"0\", \"--max-tokens\", \"16\", \"--param\", \"set=short\", \"--param\", \"short-range=20:40\", \"--no-telemetry\", \"--no-report\"]\n\n[[workload]]\npath = \"{path}\"\nsha256 = \"{pin}\"\n",
            dir.path().join(format!("{name}-results")).display()
        )
        .unwrap();
        f
    };
    // A wrong pin, on a registry reference and on a path: nothing runs.
    for (name, path, more) in [
        ("oci-wrong", r.as_str(), &["--plain-http"][..]),
        ("file-wrong", wasm.to_str().unwrap(), &[][..]),
    ] {
        let f = write(name, path, &wrong);
        let mut args = vec!["matrix", f.to_str().unwrap()];
        args.extend_from_slice(more);
        let err = fails(sparkhost(&args, cache.path()));
        assert!(err.contains(&sha) && err.contains(&wrong), "{name}: {err}");
        assert!(!dir.path().join(format!("{name}-results")).exists());
    }
    // The right pin on a tag: the cell runs the digest the tag resolved to.
    let f = write("oci-right", &r, &format!("sha256:{sha}"));
    let out = sparkhost(
        &["matrix", f.to_str().unwrap(), "--plain-http"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let index = read_json(&dir.path().join("oci-right-results/matrix_index.json"));
    let run_dir = PathBuf::from(index["cells"][0]["run_dir"].as_str().unwrap());
    let manifest = read_json(&run_dir.join("manifest.json"));
    assert_eq!(manifest["workload"]["sha256"], sha);
    assert!(
        manifest["workload"]["path"]
            .as_str()
            .unwrap()
            .contains("@sha256:"),
        "the cell runs the pinned reference: {manifest:#}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A registry whose certificate comes from a private CA: refused with a
/// hint naming SPARKHOST_REGISTRY_CA_CERT, trusted once it points at the CA,
/// and a CA file that holds no certificate is named as such.
#[test]
fn a_private_ca_registry_is_trusted_through_the_ca_variable() {
    let cache = tempfile::tempdir().unwrap();
    let reg = Registry::start_with_tls();
    let ca = reg.dir.path().join("ca.pem");
    let wasm = synthetic();
    let r = reg.reference("sparkhost/synthetic:tls");
    let with_ca = |args: &[&str], ca: Option<&Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sparkhost"));
        cmd.args(args)
            .env("SPARKHOST_CACHE_DIR", cache.path())
            .env("DOCKER_CONFIG", cache.path().join("no-docker"));
        if let Some(ca) = ca {
            cmd.env("SPARKHOST_REGISTRY_CA_CERT", ca);
        }
        cmd.output().unwrap()
    };
    let wasm_s = wasm.to_str().unwrap();
    let err = fails(with_ca(&["push", wasm_s, &r], None));
    assert!(err.contains("SPARKHOST_REGISTRY_CA_CERT"), "{err}");
    let out = ok(with_ca(&["push", wasm_s, &r], Some(&ca)));
    let digest = field(&out, "manifest");
    let pulled = cache.path().join("pulled.wasm");
    ok(with_ca(
        &["pull", &r, "-o", pulled.to_str().unwrap()],
        Some(&ca),
    ));
    assert_eq!(sha256_file(&pulled), sha256_file(&wasm));
    assert!(digest.starts_with("sha256:"), "{digest}");
    let junk = cache.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = fails(with_ca(&["pull", &r], Some(&junk)));
    assert!(err.contains("holds no PEM certificate"), "{err}");
}
