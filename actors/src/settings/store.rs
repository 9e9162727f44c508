//! Writing the settings files safely: every write is atomic (a temporary
//! file in the same directory, flushed to disk, renamed over the old one,
//! then the directory flushed), is preceded by a timestamped backup of the
//! old file in `configs/backups/`, and holds one lock, so two concurrent
//! writes are applied one after the other and neither is lost: a mutex in
//! the process and an `flock` on `configs/.settings.lock` across processes
//! (several nodes on one volume). The last `keep` backups of each file are
//! kept; a restore never prunes the backup it restores.
//!
//! A backup's id is its file name in the backups directory,
//! `<UTC timestamp>-<file>`, e.g. `20261202T073012.345678Z-mcp_servers.yaml`.
//! A restore only ever opens a name it found listed in that directory, so
//! no id can reach outside it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use super::{AGENTS_FILE, MCP_FILE, PROMPT_FILE};

/// The files the API writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub enum SettingsFile {
    /// `mcp_servers.yaml`.
    #[serde(rename = "mcp_servers.yaml")]
    Mcp,
    /// `NOVA_SYSTEM_PROMPT.md`.
    #[serde(rename = "NOVA_SYSTEM_PROMPT.md")]
    Prompt,
    /// `agents.yaml`.
    #[serde(rename = "agents.yaml")]
    Agents,
}

impl SettingsFile {
    /// Its file name.
    pub fn name(self) -> &'static str {
        match self {
            SettingsFile::Mcp => MCP_FILE,
            SettingsFile::Prompt => PROMPT_FILE,
            SettingsFile::Agents => AGENTS_FILE,
        }
    }

    fn from_backup_id(id: &str) -> Option<SettingsFile> {
        [SettingsFile::Mcp, SettingsFile::Prompt, SettingsFile::Agents]
            .into_iter()
            .find(|f| id.ends_with(&format!("-{}", f.name())))
    }
}

/// One backup, as `GET /api/config/backups` lists it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct BackupInfo {
    /// The id to restore it by.
    pub id: String,
    /// Which file it is a copy of.
    pub file: SettingsFile,
    /// When it was taken, RFC 3339.
    pub created: String,
    /// Its size.
    pub bytes: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request was wrong (a bad id, content that does not validate);
    /// nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such backup (or entry).
    #[error("{0}")]
    NotFound(String),
    /// The disk said no.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The settings files and their backups.
#[derive(Debug)]
pub struct Store {
    config_dir: PathBuf,
    prompts_dir: PathBuf,
    backups_dir: PathBuf,
    keep: usize,
    lock: Mutex<()>,
}

/// Replaces `path` with `contents` atomically: readers see the old file or
/// the new one, never a mix, and after a crash one of the two is on disk.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("settings");
    // A random name, created exclusively: two writers (two nodes on one
    // volume, where every container is pid 1) never share a temporary file.
    let temp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename is durable only once the directory is.
    File::open(dir)?.sync_all()
}

impl Store {
    /// The files in `config_dir` and `prompts_dir`, backups in
    /// `config_dir/backups`, the last `keep` of each file kept.
    pub fn new(config_dir: &Path, prompts_dir: &Path, keep: usize) -> Store {
        Store {
            config_dir: config_dir.to_path_buf(),
            prompts_dir: prompts_dir.to_path_buf(),
            backups_dir: config_dir.join("backups"),
            keep: keep.max(1),
            lock: Mutex::new(()),
        }
    }

    /// Where `file` lives.
    pub fn path(&self, file: SettingsFile) -> PathBuf {
        match file {
            SettingsFile::Mcp => self.config_dir.join(MCP_FILE),
            SettingsFile::Prompt => self.prompts_dir.join(PROMPT_FILE),
            SettingsFile::Agents => self.config_dir.join(AGENTS_FILE),
        }
    }

    /// The file's text; empty when it does not exist.
    pub fn read(&self, file: SettingsFile) -> io::Result<String> {
        match fs::read_to_string(self.path(file)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            other => other,
        }
    }

    /// Holds the lock: this process's, and the lock file's (`flock`), so
    /// writers in other processes on the same volume wait their turn too.
    fn lock(&self) -> io::Result<(std::sync::MutexGuard<'_, ()>, File)> {
        let guard = self.lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        fs::create_dir_all(&self.config_dir)?;
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.config_dir.join(".settings.lock"))?;
        file.lock()?;
        Ok((guard, file))
    }

    /// Reads the file, lets `edit` make the new text from the current one,
    /// backs the current one up and writes the new one; all under the lock.
    /// Returns the new text. An `edit` error, or an edit that changes
    /// nothing, writes nothing.
    pub fn update(
        &self,
        file: SettingsFile,
        edit: impl FnOnce(&str) -> Result<String, StoreError>,
    ) -> Result<String, StoreError> {
        let _lock = self.lock()?;
        let current = self.read(file)?;
        let new = edit(&current)?;
        if new == current {
            // Nothing to write: no backup, no event.
            return Ok(new);
        }
        self.backup(file, None)?;
        write_atomic(&self.path(file), new.as_bytes())?;
        Ok(new)
    }

    /// Copies the current file (if any) into the backups directory and
    /// prunes old backups, never `keep_id` (the one being restored).
    fn backup(&self, file: SettingsFile, keep_id: Option<&str>) -> io::Result<()> {
        let path = self.path(file);
        if !path.exists() {
            return Ok(());
        }
        fs::create_dir_all(&self.backups_dir)?;
        let stamp: String = humantime::format_rfc3339_micros(SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| *c != '-' && *c != ':')
            .collect();
        let mut id = format!("{stamp}-{}", file.name());
        let mut n = 1;
        while self.backups_dir.join(&id).exists() {
            id = format!("{stamp}.{n}-{}", file.name());
            n += 1;
        }
        fs::copy(&path, self.backups_dir.join(&id))?;
        let mut old: Vec<BackupInfo> =
            self.backups()?.into_iter().filter(|b| b.file == file && Some(b.id.as_str()) != keep_id).collect();
        // Newest first: everything past `keep` goes.
        for stale in old.drain(self.keep.min(old.len())..) {
            fs::remove_file(self.backups_dir.join(stale.id))?;
        }
        Ok(())
    }

    /// Every backup, newest first.
    pub fn backups(&self) -> io::Result<Vec<BackupInfo>> {
        let entries = match fs::read_dir(&self.backups_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut list = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else { continue };
            let Some(file) = SettingsFile::from_backup_id(&id) else { continue };
            let meta = entry.metadata()?;
            if !meta.is_file() {
                continue;
            }
            let created = meta.modified().map(|t| humantime::format_rfc3339_millis(t).to_string()).unwrap_or_default();
            list.push(BackupInfo { id, file, created, bytes: meta.len() });
        }
        // Ids start with the UTC timestamp, so they sort by age.
        list.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(list)
    }

    /// Restores backup `id` over its file, after checking its content with
    /// `check` (an MCP or agents backup that no longer validates is refused); the file
    /// it replaces is backed up first. Returns which file was restored.
    pub fn restore(
        &self,
        id: &str,
        check: impl FnOnce(SettingsFile, &str) -> Result<(), StoreError>,
    ) -> Result<SettingsFile, StoreError> {
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(StoreError::Invalid(format!("'{}' is not a backup id", id.escape_default())));
        }
        let _lock = self.lock()?;
        // Only a name found in the listing is ever opened.
        let backup = self
            .backups()?
            .into_iter()
            .find(|b| b.id == id)
            .ok_or_else(|| StoreError::NotFound(format!("no backup '{id}'")))?;
        let text = fs::read_to_string(self.backups_dir.join(&backup.id))?;
        check(backup.file, &text)?;
        self.backup(backup.file, Some(&backup.id))?;
        write_atomic(&self.path(backup.file), text.as_bytes())?;
        Ok(backup.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(keep: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (configs, prompts) = (dir.path().join("configs"), dir.path().join("prompts"));
        fs::create_dir_all(&configs).unwrap();
        fs::create_dir_all(&prompts).unwrap();
        let store = Store::new(&configs, &prompts, keep);
        (dir, store)
    }

    #[test]
    fn an_update_backs_up_the_old_file_and_keeps_the_last_n() {
        let (_dir, store) = store(2);
        for n in 0..4 {
            store.update(SettingsFile::Mcp, |_| Ok(format!("# v{n}\n"))).unwrap();
        }
        assert_eq!(store.read(SettingsFile::Mcp).unwrap(), "# v3\n");
        let backups = store.backups().unwrap();
        assert_eq!(backups.len(), 2, "{backups:?}");
        let newest = fs::read_to_string(store.backups_dir.join(&backups[0].id)).unwrap();
        assert_eq!(newest, "# v2\n");
        let restored = store.restore(&backups[1].id, |_, _| Ok(())).unwrap();
        assert_eq!(restored, SettingsFile::Mcp);
        assert_eq!(store.read(SettingsFile::Mcp).unwrap(), "# v1\n");
    }

    #[test]
    fn restore_refuses_ids_that_are_not_listed_backups() {
        let (dir, store) = store(5);
        fs::write(dir.path().join("secret-mcp_servers.yaml"), "x").unwrap();
        for id in ["../secret-mcp_servers.yaml", "..", "/etc/passwd", "a/b-mcp_servers.yaml", "", "x-mcp_servers.yaml"]
        {
            let err = store.restore(id, |_, _| Ok(())).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_) | StoreError::NotFound(_)), "{id}: {err}");
        }
    }

    #[test]
    fn a_failed_check_or_edit_changes_nothing() {
        let (_dir, store) = store(5);
        store.update(SettingsFile::Prompt, |_| Ok("one".into())).unwrap();
        store.update(SettingsFile::Prompt, |_| Ok("two".into())).unwrap();
        let err = store.update(SettingsFile::Prompt, |_| Err(StoreError::Invalid("no".into())));
        assert!(err.is_err());
        let id = store.backups().unwrap()[0].id.clone();
        assert!(store.restore(&id, |_, _| Err(StoreError::Invalid("no".into()))).is_err());
        assert_eq!(store.read(SettingsFile::Prompt).unwrap(), "two");
        assert_eq!(store.backups().unwrap().len(), 1);
    }
}
