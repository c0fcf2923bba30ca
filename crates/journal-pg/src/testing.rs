//! Throwaway PostgreSQL clusters for tests (the `testing` feature): a real server in a
//! temporary directory on a free loopback port, stopped and deleted on drop.
//!
//! The binaries come from `/usr/lib/postgresql/15/bin` (Debian's `postgresql-15`, which
//! `scripts/test-deps` installs) or `$PUENTE_PG_BIN`. Missing binaries fail the test: they are
//! never a reason to skip. `initdb` refuses to run as root, so as root every PostgreSQL
//! program runs as the `postgres` user (`runuser -u postgres --`; the package makes the user)
//! and the directory is handed to it.
//!
//! Helpers panic with what went wrong (and the server log's tail): they are for tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where the PostgreSQL binaries are unless `PUENTE_PG_BIN` says otherwise.
pub const PG_BIN_DEFAULT: &str = "/usr/lib/postgresql/15/bin";
/// The environment variable naming another binary directory.
pub const PG_BIN_ENV: &str = "PUENTE_PG_BIN";
/// How long a start may take before the test fails.
pub const START_DEADLINE_MS: u64 = 60_000;
/// Pause between two readiness probes.
const READY_POLL_MS: u64 = 20;
/// Free ports tried before giving up (another process may take the port between our probe
/// and the server's bind).
const START_ATTEMPTS: u32 = 3;
/// Lines of the server log shown when something fails.
const LOG_TAIL_LINES: usize = 40;

/// One running (or stopped) PostgreSQL cluster; dropping it stops the server at once and
/// deletes its directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    running: bool,
}

impl Cluster {
    /// `initdb` and start a cluster on a free loopback port; returns once it accepts
    /// connections. Panics (naming `scripts/test-deps` when the binaries are missing).
    pub fn start() -> Cluster {
        let bin =
            std::env::var_os(PG_BIN_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(PG_BIN_DEFAULT));
        for program in ["initdb", "pg_ctl", "pg_isready", "postgres"] {
            if !bin.join(program).is_file() {
                panic!(
                    "PostgreSQL's {program} is not in {} (set {PG_BIN_ENV} to another directory): \
                     scripts/test-deps installs postgresql-15",
                    bin.display()
                );
            }
        }
        let as_postgres_user = effective_uid_is_root();
        let dir = match tempfile::Builder::new().prefix("puente-pg-").tempdir() {
            Ok(dir) => dir,
            Err(error) => panic!("making a temporary directory for PostgreSQL: {error}"),
        };
        let mut cluster = Cluster { dir, bin, port: 0, as_postgres_user, running: false };
        if let Err(error) = std::fs::create_dir(cluster.socket_dir()) {
            panic!("making {}: {error}", cluster.socket_dir().display());
        }
        if as_postgres_user {
            run_checked(
                Command::new("chown").arg("-R").arg("postgres:postgres").arg(cluster.dir.path()),
                "chown",
            );
        }
        let data = cluster.data_dir();
        let mut initdb = cluster.pg("initdb");
        initdb.arg("-D").arg(&data).args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"]);
        // initdb's own files need no fsync for a throwaway cluster; the server runs with
        // fsync=on and synchronous_commit=on.
        initdb.arg("--no-sync");
        cluster.check(initdb, "initdb");
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            cluster.port = free_port();
            match cluster.try_start() {
                Ok(()) => return cluster,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("PostgreSQL did not start in {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of another database of this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` (letters, digits, '_') and returns its URL: tests can share a
    /// cluster, each in its own database.
    pub async fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?}"
        );
        let (client, connection) = match tokio_postgres::connect(&self.url(), tokio_postgres::NoTls).await {
            Ok(pair) => pair,
            Err(error) => panic!("connecting to {}: {error}", self.url()),
        };
        let task = tokio::spawn(connection);
        if let Err(error) = client.batch_execute(&format!("CREATE DATABASE {name}")).await {
            panic!("CREATE DATABASE {name}: {error}");
        }
        drop(client);
        let _ = task.await;
        self.url_for(name)
    }

    /// Stops the server: `fast` (clients are disconnected, a clean shutdown) or, with
    /// `immediate`, like a crash (recovery from the WAL at the next start).
    pub fn stop(&mut self, immediate: bool) {
        let mut pg_ctl = self.pg("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir()).args(["-m", if immediate { "immediate" } else { "fast" }]);
        pg_ctl.args(["-w", "-t", &(START_DEADLINE_MS / 1000).to_string(), "stop"]);
        self.check(pg_ctl, "pg_ctl stop");
        self.running = false;
    }

    /// Starts a stopped server again on the same port.
    pub fn start_again(&mut self) {
        if let Err(failure) = self.try_start() {
            panic!("{failure}");
        }
    }

    /// `stop(immediate)` then `start_again()`: every client connection breaks.
    pub fn restart(&mut self, immediate: bool) {
        self.stop(immediate);
        self.start_again();
    }

    fn try_start(&mut self) -> Result<(), String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c shared_buffers=16MB -c max_connections=40",
            self.port,
            self.socket_dir().display()
        );
        let mut pg_ctl = self.pg("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir()).arg("-l").arg(self.log_path()).arg("-o").arg(options);
        pg_ctl.args(["-w", "-t", &(START_DEADLINE_MS / 1000).to_string(), "start"]);
        let output = run(&mut pg_ctl, "pg_ctl start");
        if !output.status.success() {
            return Err(format!(
                "pg_ctl start on port {}: {}{}",
                self.port,
                describe(&output),
                self.log_tail()
            ));
        }
        self.running = true;
        // pg_ctl -w waits too; this checks what tests need, a TCP connection on the port.
        let deadline = Instant::now() + Duration::from_millis(START_DEADLINE_MS);
        loop {
            let mut probe = Command::new(self.bin.join("pg_isready"));
            probe.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-t", "1"]);
            if run(&mut probe, "pg_isready").status.success() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "PostgreSQL on port {} accepted no connection within {START_DEADLINE_MS} ms{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A PostgreSQL program, run as the `postgres` user when we are root.
    fn pg(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            Command::new(path)
        }
    }

    fn check(&self, mut command: Command, what: &str) {
        let output = run(&mut command, what);
        if !output.status.success() {
            panic!("{what} failed: {}{}", describe(&output), self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        match std::fs::read_to_string(self.log_path()) {
            Ok(log) => {
                let lines: Vec<&str> = log.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                format!("\n--- server log ({}) ---\n{}", self.log_path().display(), tail.join("\n"))
            }
            Err(_) => String::new(),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let mut pg_ctl = self.pg("pg_ctl");
            pg_ctl.arg("-D").arg(self.data_dir()).args(["-m", "immediate", "-w", "stop"]);
            match pg_ctl.output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!("pg_ctl stop: {}", describe(&output)),
                Err(error) => eprintln!("pg_ctl stop: {error}"),
            }
        }
        // The TempDir deletes the directory.
    }
}

fn run(command: &mut Command, what: &str) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(error) => panic!("running {what} ({command:?}): {error}"),
    }
}

fn run_checked(command: &mut Command, what: &str) {
    let output = run(command, what);
    if !output.status.success() {
        panic!("{what} failed: {}", describe(&output));
    }
}

fn describe(output: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}

fn effective_uid_is_root() -> bool {
    let output = run(Command::new("id").arg("-u"), "id -u");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(listener) => listener,
        Err(error) => panic!("binding a loopback port: {error}"),
    };
    match listener.local_addr() {
        Ok(address) => address.port(),
        Err(error) => panic!("reading the bound port: {error}"),
    }
}
