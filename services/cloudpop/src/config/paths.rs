//! Relative paths in a configuration file are relative to the file's folder, so that a
//! file and the certificates beside it work from any working directory. Paths from
//! environment variables and built-in defaults stay relative to the working directory.

use std::path::Path;

use toml::{Table, Value};

/// Every option that holds a path, as its keys from the top of the file. `tls.sni` entries
/// are handled apart: they are an array of tables.
const PATH_OPTIONS: [&[&str]; 7] = [
    &["data_dir"],
    &["users", "file"],
    &["store", "path"],
    &["store", "s3", "secret_access_key_file"],
    &["auth", "admin_token_file"],
    &["tls", "cert"],
    &["tls", "key"],
];

/// Rewrites each relative path of `table` (read from a file in `base`) as `base/path`.
/// Values of the wrong type are left alone for deserialization to report.
pub fn resolve_relative(table: &mut Table, base: &Path) {
    if base.as_os_str().is_empty() {
        // The file is in the working directory: nothing changes.
        return;
    }
    for option in PATH_OPTIONS {
        if let Some(value) = lookup(table, option) {
            rebase(value, base);
        }
    }
    if let Some(Value::Array(entries)) = lookup(table, &["tls", "sni"]) {
        for entry in entries {
            if let Value::Table(entry) = entry {
                for key in ["cert", "key"] {
                    if let Some(value) = entry.get_mut(key) {
                        rebase(value, base);
                    }
                }
            }
        }
    }
}

fn lookup<'t>(table: &'t mut Table, keys: &[&str]) -> Option<&'t mut Value> {
    let (last, parents) = keys.split_last()?;
    let mut node = table;
    for key in parents {
        node = node.get_mut(*key)?.as_table_mut()?;
    }
    node.get_mut(*last)
}

fn rebase(value: &mut Value, base: &Path) {
    if let Value::String(path) = value
        && Path::new(path.as_str()).is_relative()
        && !path.is_empty()
    {
        *path = base.join(path.as_str()).to_string_lossy().into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_move_absolute_ones_stay() {
        let mut table: Table = r#"
            data_dir = "data"
            [tls]
            cert = "certs/a.pem"
            key = "/etc/key.pem"
            [[tls.sni]]
            domains = ["x"]
            cert = "sni.pem"
            key = "sni.key"
        "#
        .parse()
        .unwrap();
        resolve_relative(&mut table, Path::new("/srv/pop"));
        assert_eq!(table["data_dir"].as_str(), Some("/srv/pop/data"));
        assert_eq!(table["tls"]["cert"].as_str(), Some("/srv/pop/certs/a.pem"));
        assert_eq!(table["tls"]["key"].as_str(), Some("/etc/key.pem"));
        assert_eq!(
            table["tls"]["sni"][0]["key"].as_str(),
            Some("/srv/pop/sni.key")
        );
    }
}
