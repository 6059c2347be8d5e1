//! [`CronSlot`]: the last slot a cron entry fired, as stored beside the jobs (an
//! [`crate::storage::EntryKind::Cron`] entry under the entry's name, JSON) and as
//! [`crate::Jobs::cron_slots`] reads it back.

use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// The last slot an entry fired, with the expression and zone it was a slot of: a stored slot
/// of another expression or zone is not this entry's (it was changed), and is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronSlot {
    /// The entry's name.
    pub name: String,
    /// The slot, µs since the Unix epoch.
    pub slot: Micros,
    /// The expression it was a slot of.
    pub expression: String,
    /// The zone that expression was read in.
    pub timezone: String,
}

/// The stored value: the slot without the name (the entry's key).
#[derive(Serialize, Deserialize)]
struct Value {
    slot: Micros,
    expression: String,
    timezone: String,
}

impl CronSlot {
    /// The value stored under the entry's name.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let value = Value {
            slot: self.slot,
            expression: self.expression.clone(),
            timezone: self.timezone.clone(),
        };
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// The slot stored under `name` as `bytes`; `None` if they do not decode (a damaged entry
    /// is treated as no entry: the next slot fires, none is repeated).
    pub(crate) fn decode(name: &str, bytes: &[u8]) -> Option<CronSlot> {
        let Value { slot, expression, timezone } = serde_json::from_slice(bytes).ok()?;
        Some(CronSlot { name: name.to_string(), slot, expression, timezone })
    }
}
