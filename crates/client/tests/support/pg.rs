//! Databases of a test's own on the throwaway PostgreSQL cluster that `scripts/test.sh`
//! starts (`eval "$(scripts/pg.sh start)"` sets `FERRY_TEST_DATABASE_URL` by hand). Made and
//! dropped with `psql`, which comes with the cluster.

use std::process::Command;

const URL_VAR: &str = "FERRY_TEST_DATABASE_URL";

/// The admin URL of the test cluster; a test without one fails (it is not skipped).
pub fn admin_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: start a throwaway PostgreSQL with \
             `eval \"$(scripts/pg.sh start)\"` (scripts/test.sh does)"
        )
    })
}

fn psql(url: &str, sql: &str) {
    let out = Command::new("psql")
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .expect("running psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `url` with its database replaced by `db`.
pub fn with_db(url: &str, db: &str) -> String {
    let start = url.find("://").expect("a URL") + 3;
    let path = url[start..].find('/').map_or(url.len(), |i| start + i);
    let query = url[path..]
        .find('?')
        .map(|i| &url[path + i..])
        .unwrap_or("");
    format!("{}/{db}{query}", &url[..path])
}

/// A database of one test's own, dropped when this goes out of scope.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    pub fn create(tag: &str) -> TestDb {
        let admin = admin_url();
        let name = format!("ferry_{tag}_{:016x}", rand_u64());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        TestDb {
            url: with_db(&admin, &name),
            name,
            admin,
        }
    }

    /// Runs `sql` in this database.
    pub fn exec(&self, sql: &str) {
        psql(&self.url, sql);
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .args([
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}
