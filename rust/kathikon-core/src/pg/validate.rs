//! What `PostgreSQL` cannot store that the embedded store can: a NUL character in text. A
//! `text` value refuses one outright, and a `\u0000` escape in args or meta could not be
//! compared as `jsonb` by the `@>` filters, so both are refused at insert, naming the value.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::NewJob;

/// [`NewJob::validate`], and no NUL character anywhere `PostgreSQL` would store it.
pub fn validate(new: &NewJob) -> Result<()> {
    new.validate()?;
    let refuse = |what: &str| {
        Err(Error::InvalidJob(format!(
            "{what} contains a NUL character (\\0), which PostgreSQL cannot store; remove it \
             (or use the embedded store)"
        )))
    };
    if new.queue.contains('\0') {
        return refuse("the queue name");
    }
    if new.worker.contains('\0') {
        return refuse("the worker name");
    }
    if let Some(tag) = new.tags.iter().find(|t| t.contains('\0')) {
        return refuse(&format!("the tag {tag:?}"));
    }
    for (what, text) in [("args", &new.args), ("meta", &new.meta)] {
        // Only a `\u0000` escape can put a NUL into JSON text (a raw one is not JSON).
        if text.contains("u0000") && serde_json::from_str::<Value>(text).is_ok_and(|v| has_nul(&v))
        {
            return refuse(what);
        }
    }
    Ok(())
}

fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
