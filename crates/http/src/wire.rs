//! The HTTP API's contract: every request and answer body, shared by the
//! handlers that send them and by `ship`, which reads them back. Field
//! names are the API's JSON; scripts that read it keep working.

use serde::{Deserialize, Serialize};

/// `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
}
