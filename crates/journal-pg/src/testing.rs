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
//!
//! # A primary with a synchronous standby
//!
//! [`Cluster::start_primary`] starts a cluster set up for streaming replication whose commits
//! wait for one synchronous standby (`synchronous_standby_names = '*'`,
//! `synchronous_commit = on`); [`Cluster::start_standby_of`] copies it with `pg_basebackup -R`
//! (through a replication slot of its own) and returns once the primary reports it as its
//! `sync` standby, streaming. Until a standby is attached, every commit on such a primary
//! waits (that is the zero-loss setting), so make databases after `start_standby_of`; they
//! replicate to the standby. [`Cluster::kill`] stops a server like a crash and
//! [`Cluster::promote`] turns a standby into a primary; [`multi_host_url`] names several
//! clusters in one URL with `target_session_attrs=read-write`, so a client connects to
//! whichever of them accepts writes. A promoted standby has no synchronous standby of its own:
//! it commits alone.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
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
/// WAL senders of a primary (and of its standbys: a hot standby needs at least its primary's).
const MAX_WAL_SENDERS: u32 = 5;
/// The programs every cluster needs.
const PROGRAMS: [&str; 6] = ["initdb", "pg_ctl", "pg_isready", "postgres", "pg_basebackup", "psql"];
/// Numbers the standbys of this process (their `application_name` and replication slot).
static STANDBYS: AtomicU32 = AtomicU32::new(0);

/// One running (or stopped) PostgreSQL cluster; dropping it stops the server at once and
/// deletes its directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    as_postgres_user: bool,
    running: bool,
    /// `name=value` server settings given on its command line at every start, after the
    /// common ones (never copied by `pg_basebackup`, unlike the configuration files).
    settings: Vec<String>,
}

impl Cluster {
    /// `initdb` and start a cluster on a free loopback port; returns once it accepts
    /// connections. Panics (naming `scripts/test-deps` when the binaries are missing).
    pub fn start() -> Cluster {
        let cluster = Cluster::prepare(Vec::new());
        cluster.initdb();
        cluster.start_on_a_free_port()
    }

    /// Like [`Cluster::start`], set up as the primary of streaming replication with one
    /// synchronous standby: `wal_level = replica`, `max_wal_senders`,
    /// `synchronous_standby_names = '*'` (any one standby), `synchronous_commit = on`, and
    /// replication connections from 127.0.0.1 allowed without a password. **Every commit waits
    /// until a standby confirmed it flushed the commit**: attach one with
    /// [`Cluster::start_standby_of`] before writing anything (`create_database` included).
    pub fn start_primary() -> Cluster {
        let mut settings = replication_settings();
        settings.push("synchronous_standby_names=*".to_owned());
        let cluster = Cluster::prepare(settings);
        cluster.initdb();
        cluster.allow_replication_from_loopback();
        cluster.start_on_a_free_port()
    }

    /// A streaming hot standby of `primary` (made by [`Cluster::start_primary`]):
    /// `pg_basebackup -R` over a new physical replication slot into a directory of its own,
    /// started on its own port; returns once the primary's `pg_stat_replication` shows it
    /// `streaming` in `sync` state (bounded by [`START_DEADLINE_MS`]). It is read-only until
    /// [`Cluster::promote`]; it has no `synchronous_standby_names`, so once promoted it
    /// commits without waiting for anyone.
    pub fn start_standby_of(primary: &Cluster) -> Cluster {
        assert!(primary.running, "the primary on port {} is not running", primary.port);
        let name = format!("puente_standby_{}", STANDBYS.fetch_add(1, Ordering::Relaxed) + 1);
        let mut settings = replication_settings();
        settings.push("hot_standby=on".to_owned());
        let standby = Cluster::prepare(settings);
        let source = format!("host=127.0.0.1 port={} user=postgres application_name={name}", primary.port);
        let mut basebackup = standby.pg("pg_basebackup");
        basebackup.arg("-D").arg(standby.data_dir()).args(["-d", &source]);
        // -R: standby.signal and primary_conninfo (with our application_name) and
        // primary_slot_name; -C -S: a slot keeps the primary's WAL until the standby has it.
        basebackup.args(["-R", "-X", "stream", "-C", "-S", &name, "--checkpoint=fast", "--no-sync"]);
        let output = run(&mut basebackup, "pg_basebackup");
        if !output.status.success() {
            panic!(
                "pg_basebackup from port {} failed: {}{}",
                primary.port,
                describe(&output),
                primary.log_tail()
            );
        }
        let standby = standby.start_on_a_free_port();
        let query = format!(
            "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = '{name}'"
        );
        let deadline = Instant::now() + Duration::from_millis(START_DEADLINE_MS);
        loop {
            let seen = match primary.psql(&query) {
                Ok(state) if state == "streaming sync" => return standby,
                Ok(state) => state,
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                panic!(
                    "the standby {name} on port {} was not a streaming synchronous standby of port {} \
                     within {START_DEADLINE_MS} ms (last seen: {seen:?}){}{}",
                    standby.port,
                    primary.port,
                    standby.log_tail(),
                    primary.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    /// `pg_ctl promote -w`: a standby ends recovery and accepts writes. Returns once a new
    /// session sees it out of recovery (`pg_ctl -w` waits for the control file, which says so
    /// a moment earlier), bounded by [`START_DEADLINE_MS`].
    pub fn promote(&mut self) {
        let mut pg_ctl = self.pg("pg_ctl");
        pg_ctl.arg("-D").arg(self.data_dir());
        pg_ctl.args(["-w", "-t", &(START_DEADLINE_MS / 1000).to_string(), "promote"]);
        self.check(pg_ctl, "pg_ctl promote");
        let deadline = Instant::now() + Duration::from_millis(START_DEADLINE_MS);
        while self.is_in_recovery() {
            if Instant::now() >= deadline {
                panic!(
                    "port {} still in recovery {START_DEADLINE_MS} ms after pg_ctl promote{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(READY_POLL_MS));
        }
    }

    /// Stops the server like a crash (`pg_ctl stop -m immediate`): no shutdown checkpoint,
    /// every connection cut, no commit in flight acknowledged.
    pub fn kill(&mut self) {
        self.stop(true);
    }

    /// Whether the server is a standby still in recovery (`pg_is_in_recovery()`).
    pub fn is_in_recovery(&self) -> bool {
        match self.psql("SELECT pg_is_in_recovery()") {
            Ok(answer) if answer == "t" => true,
            Ok(answer) if answer == "f" => false,
            Ok(answer) => panic!("pg_is_in_recovery() on port {}: {answer:?}", self.port),
            Err(error) => panic!("pg_is_in_recovery() on port {}: {error}", self.port),
        }
    }

    /// The tempdir, its socket directory, owned by `postgres` when we are root; nothing in
    /// the data directory yet.
    fn prepare(settings: Vec<String>) -> Cluster {
        let bin =
            std::env::var_os(PG_BIN_ENV).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(PG_BIN_DEFAULT));
        for program in PROGRAMS {
            if !bin.join(program).is_file() {
                panic!(
                    "PostgreSQL's {program} is not in {} (set {PG_BIN_ENV} to another directory): \
                     scripts/test-deps installs postgresql-15",
                    bin.display()
                );
            }
        }
        for setting in &settings {
            // They go through pg_ctl's shell in single quotes.
            assert!(!setting.contains('\''), "setting {setting:?}");
        }
        let as_postgres_user = effective_uid_is_root();
        // As root the cluster runs as `postgres`, which must reach the directory: under /tmp
        // (world-searchable) rather than a TMPDIR that may be root's own.
        let made = if as_postgres_user {
            tempfile::Builder::new().prefix("puente-pg-").tempdir_in("/tmp")
        } else {
            tempfile::Builder::new().prefix("puente-pg-").tempdir()
        };
        let dir = match made {
            Ok(dir) => dir,
            Err(error) => panic!("making a temporary directory for PostgreSQL: {error}"),
        };
        let cluster = Cluster { dir, bin, port: 0, as_postgres_user, running: false, settings };
        if let Err(error) = std::fs::create_dir(cluster.socket_dir()) {
            panic!("making {}: {error}", cluster.socket_dir().display());
        }
        if as_postgres_user {
            run_checked(
                Command::new("chown").arg("-R").arg("postgres:postgres").arg(cluster.dir.path()),
                "chown",
            );
        }
        cluster
    }

    fn initdb(&self) {
        let mut initdb = self.pg("initdb");
        initdb.arg("-D").arg(self.data_dir()).args([
            "--auth=trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        // initdb's own files need no fsync for a throwaway cluster; the server runs with
        // fsync=on and synchronous_commit=on.
        initdb.arg("--no-sync");
        self.check(initdb, "initdb");
    }

    /// `host replication all 127.0.0.1/32 trust` in pg_hba.conf (initdb's `--auth=trust`
    /// writes it; this makes sure).
    fn allow_replication_from_loopback(&self) {
        let path = self.data_dir().join("pg_hba.conf");
        let hba = match std::fs::read_to_string(&path) {
            Ok(hba) => hba,
            Err(error) => panic!("reading {}: {error}", path.display()),
        };
        let allowed = hba.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields == ["host", "replication", "all", "127.0.0.1/32", "trust"]
        });
        if !allowed {
            let mut hba = hba;
            hba.push_str("\nhost replication all 127.0.0.1/32 trust\n");
            if let Err(error) = std::fs::write(&path, hba) {
                panic!("writing {}: {error}", path.display());
            }
        }
    }

    fn start_on_a_free_port(mut self) -> Cluster {
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            match self.try_start() {
                Ok(()) => return self,
                Err(failure) => last_failure = failure,
            }
        }
        panic!("PostgreSQL did not start in {START_ATTEMPTS} attempts: {last_failure}");
    }

    /// One value from `sql` on database `postgres` (`psql -At`), or why not.
    fn psql(&self, sql: &str) -> Result<String, String> {
        let mut psql = Command::new(self.bin.join("psql"));
        psql.args(["-X", "-A", "-t", "-q", "-h", "127.0.0.1", "-p", &self.port.to_string()]);
        psql.args(["-U", "postgres", "-d", "postgres", "-c", sql]).env("PGCONNECT_TIMEOUT", "5");
        let output = run(&mut psql, "psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(describe(&output))
        }
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
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on \
             -c shared_buffers=16MB -c max_connections=40",
            self.port,
            self.socket_dir().display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c '{setting}'"));
        }
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

/// One URL naming every cluster in `clusters`, in that order, with
/// `target_session_attrs=read-write`: `postgres://postgres@127.0.0.1:P1,127.0.0.1:P2/database?...`.
/// A client tries the hosts in order and keeps the first that accepts writes (tokio-postgres
/// asks `SHOW transaction_read_only` and refuses a read-only server before any statement).
pub fn multi_host_url(clusters: &[&Cluster], database: &str) -> String {
    assert!(!clusters.is_empty(), "no cluster");
    let hosts: Vec<String> = clusters.iter().map(|cluster| format!("127.0.0.1:{}", cluster.port)).collect();
    format!("postgres://postgres@{}/{database}?target_session_attrs=read-write", hosts.join(","))
}

/// The settings a primary and its standbys share (a hot standby needs at least its primary's
/// `max_wal_senders`).
fn replication_settings() -> Vec<String> {
    vec!["wal_level=replica".to_owned(), format!("max_wal_senders={MAX_WAL_SENDERS}")]
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
