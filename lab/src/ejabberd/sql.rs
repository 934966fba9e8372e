//! The lab's SQL pubsub store ([`super::EjabberdOptions::pubsub_sql`]): one SQLite
//! file in the lab's directory for every node, made with the schema the
//! installed ejabberd ships; how many items it holds; and a lock that makes
//! it busy, as a shared database can be.

use super::{io, Ejabberd, EjabberdError};
use crate::install::Install;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// The SQL pubsub store held locked ([`Ejabberd::lock_sql_store`]); the
/// lock ends with [`SqlLock::release`], or with the `sqlite3` child, which
/// drop kills.
pub struct SqlLock {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
}

impl SqlLock {
    /// Ends the transaction and waits for `sqlite3` to exit.
    pub fn release(mut self) -> Result<(), EjabberdError> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin
                .write_all(b"COMMIT;\n.quit\n")
                .map_err(io("writing to sqlite3"))?;
        }
        self.child.wait().map_err(io("waiting for sqlite3"))?;
        Ok(())
    }
}

impl Drop for SqlLock {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The file of the SQL pubsub store ([`super::EjabberdOptions::pubsub_sql`]), in
/// the lab's directory.
pub(super) const PUBSUB_DB: &str = "pubsub.db";

/// Creates the SQLite file of the SQL pubsub store with the schema the
/// installed ejabberd ships (`lite.sql`): 23.01 does not create its tables.
pub(super) fn create_sql_store(install: &Install, db: &Path) -> Result<(), EjabberdError> {
    let schema = install.path("/usr/share/ejabberd/sql/lite.sql");
    let driver = install.path("/usr/lib/erlang/lib");
    let has_driver = |dir: &Path| {
        std::fs::read_dir(dir).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("p1_sqlite3-"))
        })
    };
    if !has_driver(&driver) && !has_driver(Path::new("/usr/lib/erlang/lib")) {
        return Err(EjabberdError::Startup(
            "ejabberd's SQLite driver is not installed (no p1_sqlite3 in /usr/lib/erlang/lib): \
             apt-get install erlang-p1-sqlite3"
                .into(),
        ));
    }
    let text = std::fs::read_to_string(&schema).map_err(io(format!(
        "reading ejabberd's SQLite schema {}",
        schema.display()
    )))?;
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            EjabberdError::Startup(format!(
                "running sqlite3 to create the SQL pubsub store failed ({e}): apt-get install sqlite3"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(io("writing the schema to sqlite3"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io("waiting for sqlite3"))?;
    if !out.status.success() {
        return Err(EjabberdError::Startup(format!(
            "sqlite3 {} < {} failed: {}",
            db.display(),
            schema.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Ejabberd {
    /// Items in the SQL pubsub store, every node's together (None when
    /// mod_pubsub stores in Mnesia): that the items really are in SQL.
    pub fn sql_items(&self) -> Result<Option<usize>, EjabberdError> {
        if !self.options.pubsub_sql {
            return Ok(None);
        }
        let db = self.dir.path().join(PUBSUB_DB);
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg("select count(*) from pubsub_item")
            .stdin(Stdio::null())
            .output()
            .map_err(io("running sqlite3 (apt-get install sqlite3)"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        match text.trim().parse() {
            Ok(n) if out.status.success() => Ok(Some(n)),
            _ => Err(EjabberdError::Sql(format!(
                "counting the items in {} failed: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
        }
    }

    /// Holds the SQL pubsub store locked for writing (an SQLite
    /// transaction begun `IMMEDIATE`, in a `sqlite3` child) until
    /// [`SqlLock::release`]: ejabberd still reads nodes and items meanwhile,
    /// but each pubsub transaction that writes fails, and the request gets
    /// `internal-server-error` ("Database failure"), as when a shared
    /// database is busy. (An exclusive lock would fail the reads too:
    /// ejabberd then answers a publish `item-not-found`, as if the node
    /// were gone.)
    pub fn lock_sql_store(&self) -> Result<SqlLock, EjabberdError> {
        if !self.options.pubsub_sql {
            return Err(EjabberdError::Sql(
                "lock_sql_store: mod_pubsub stores in Mnesia here (set pubsub_sql)".into(),
            ));
        }
        let mut child = Command::new("sqlite3")
            .arg("-bail")
            .arg(self.dir.path().join(PUBSUB_DB))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io("running sqlite3 (apt-get install sqlite3)"))?;
        let mut lock = SqlLock {
            stdin: child.stdin.take(),
            child,
        };
        let Some(stdin) = lock.stdin.as_mut() else {
            return Err(EjabberdError::Sql(
                "sqlite3 started without its stdin".into(),
            ));
        };
        stdin
            .write_all(b".timeout 10000\nBEGIN IMMEDIATE;\nSELECT 'locked';\n")
            .map_err(io("writing to sqlite3"))?;
        // `-bail`: a failed BEGIN ends sqlite3 before the SELECT answers.
        let mut line = String::new();
        if let Some(out) = lock.child.stdout.take() {
            BufReader::new(out)
                .read_line(&mut line)
                .map_err(io("reading sqlite3's answer"))?;
        }
        if line.trim() != "locked" {
            let mut err = String::new();
            if let Some(mut e) = lock.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(EjabberdError::Sql(format!(
                "sqlite3 could not lock the SQL pubsub store: {}",
                err.trim()
            )));
        }
        Ok(lock)
    }
}
