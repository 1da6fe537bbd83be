//! The reload history of the node's certificates and tokens, which the
//! reloader ([`crate::reload`]) writes and `GET /v1/status` reads.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::Serialize;

/// One material's reload history, as `GET /v1/status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MaterialStatus {
    /// The files it is read from.
    pub files: Vec<String>,
    /// Unix ms of the last load attempt (the start counts as one).
    pub last_attempt_ms: Option<u64>,
    /// Unix ms of the last load that was adopted.
    pub last_success_ms: Option<u64>,
    /// Why the last attempt failed; none when it succeeded.
    pub last_error: Option<String>,
}

/// Every material's reload history, by name: `api_tls`, `api_tokens`,
/// `node_cert`.
#[derive(Debug, Default)]
pub struct ReloadStatus {
    materials: Mutex<BTreeMap<&'static str, MaterialStatus>>,
}

impl ReloadStatus {
    /// A copy of the history.
    pub fn snapshot(&self) -> BTreeMap<&'static str, MaterialStatus> {
        self.materials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a load attempt of material `name` from `files`.
    pub(crate) fn note(&self, name: &'static str, files: &[PathBuf], result: &Result<(), String>) {
        let now = crate::clock::now_ms();
        let mut m = self.materials.lock().unwrap_or_else(|p| p.into_inner());
        let s = m.entry(name).or_default();
        s.files = files.iter().map(|p| p.display().to_string()).collect();
        s.last_attempt_ms = Some(now);
        match result {
            Ok(()) => {
                s.last_success_ms = Some(now);
                s.last_error = None;
            }
            Err(e) => s.last_error = Some(e.clone()),
        }
    }
}
